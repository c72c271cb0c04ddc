// Q4_K for matvec.wgsl: the 36-word blocks read as 9 vec4 (header: [d, dmin] and the 12 scale
// bytes; then qs, 8 × 16 bytes). Each of a block's 2 lanes takes the header and four 16-byte
// loads of qs (64 bytes in flight per block: a memory-bound kernel's bandwidth follows the bytes
// each thread has in flight): part p covers pairs 2p and 2p + 1, pair j being group 2j (low
// nibbles of its 32 bytes) and group 2j + 1 (high nibbles); value d·sc·q − dmin·m, summed as
// d·sc·Σqx − dmin·m·Σx.
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

const BW: u32 = 256u;
const LPB: u32 = 2u;

// The (scale, min) pairs of groups 2·pair and 2·pair + 1 (ggml's get_scale_min_k4), as 16-bit
// pairs of bytes (scales, mins), byte-parallel and without indexing the header dynamically (that
// puts it in local memory on some compilers).
fn q4k_scale_min(h: vec4<u32>, pair: u32) -> vec2<u32> {
    let sh = 16u * (pair % 2u);
    let a = (h.y >> sh) & 0xFFFFu;
    let b = (h.z >> sh) & 0xFFFFu;
    let c = (h.w >> sh) & 0xFFFFu;
    let low = pair < 2u;
    let sc = select((c & 0x0F0Fu) | ((a >> 2u) & 0x3030u), a & 0x3F3Fu, low);
    let mn = select(((c >> 4u) & 0x0F0Fu) | ((b >> 2u) & 0x3030u), b & 0x3F3Fu, low);
    return vec2<u32>(sc, mn);
}

// Σ q·x over the 4 weights of each nibble of word qw (against a: low, b: high).
fn q4k_word(qw: u32, a: vec4<f32>, b: vec4<f32>) -> vec2<f32> {
    let lo = bytes_f32(qw & 0x0F0F0F0Fu);
    let hi = bytes_f32((qw >> 4u) & 0x0F0F0F0Fu);
    return vec2<f32>(dot(lo, a), dot(hi, b));
}

// One pair j of the block at vec4 bb with header h: its 32 bytes q0, q1 against the staged
// values at vec4 xl (group 2j) and xl + 8 (group 2j + 1).
fn q4k_pair(h: vec4<u32>, j: u32, q0: vec4<u32>, q1: vec4<u32>, xl: u32) -> f32 {
    let qx = q4k_word(q0.x, xv(xl), xv(xl + 8u)) + q4k_word(q0.y, xv(xl + 1u), xv(xl + 9u))
        + q4k_word(q0.z, xv(xl + 2u), xv(xl + 10u)) + q4k_word(q0.w, xv(xl + 3u), xv(xl + 11u))
        + q4k_word(q1.x, xv(xl + 4u), xv(xl + 12u)) + q4k_word(q1.y, xv(xl + 5u), xv(xl + 13u))
        + q4k_word(q1.z, xv(xl + 6u), xv(xl + 14u)) + q4k_word(q1.w, xv(xl + 7u), xv(xl + 15u));
    let g = xl / 4u;
    let sl = xsum(g) + xsum(g + 1u);
    let sh = xsum(g + 2u) + xsum(g + 3u);
    let sm = q4k_scale_min(h, j);
    let dm = unpack2x16float(h.x);
    let sc = vec2<f32>(f32(sm.x & 0xFFu), f32(sm.x >> 8u));
    let mn = vec2<f32>(f32(sm.y & 0xFFu), f32(sm.y >> 8u));
    return dm.x * dot(sc, qx) - dm.y * dot(mn, vec2<f32>(sl, sh));
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let bb = wrow / 4u + blk * 9u;
    let j = 2u * part;
    // Every load first: 80 bytes in flight.
    let h = w[bb];
    let a0 = w[bb + 1u + 2u * j];
    let a1 = w[bb + 2u + 2u * j];
    let b0 = w[bb + 3u + 2u * j];
    let b1 = w[bb + 4u + 2u * j];
    return q4k_pair(h, j, a0, a1, xo + 16u * j) + q4k_pair(h, j + 1u, b0, b1, xo + 16u * j + 16u);
}
