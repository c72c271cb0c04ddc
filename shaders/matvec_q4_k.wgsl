// Q4_K for matvec.wgsl: the 36-word blocks read as 9 vec4 (header: [d, dmin] and the 12 scale
// bytes; then qs, 8 × 16 bytes). Each of a block's 8 lanes takes one 16-byte load of qs: part p
// covers 16 weights of group 2⌊p/2⌋ (low nibbles) and the same 16 of group 2⌊p/2⌋ + 1 (high
// nibbles); value d·sc·q − dmin·m, summed as d·sc·Σqx − dmin·m·Σx.
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

const BW: u32 = 256u;
const LPB: u32 = 8u;

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
    let lo = vec4<f32>(unpack4xU8(qw & 0x0F0F0F0Fu));
    let hi = vec4<f32>(unpack4xU8((qw >> 4u) & 0x0F0F0F0Fu));
    return vec2<f32>(dot(lo, a), dot(hi, b));
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let bb = wrow / 4u + blk * 9u;
    let h = w[bb];
    let pair = part / 2u;
    let half = part % 2u;
    let q = w[bb + 1u + 2u * pair + half];
    let dm = unpack2x16float(h.x);
    let sm = q4k_scale_min(h, pair);
    let xl = xo + 16u * pair + 4u * half;
    let a0 = xv(xl);
    let a1 = xv(xl + 1u);
    let a2 = xv(xl + 2u);
    let a3 = xv(xl + 3u);
    let b0 = xv(xl + 8u);
    let b1 = xv(xl + 9u);
    let b2 = xv(xl + 10u);
    let b3 = xv(xl + 11u);
    let qx = q4k_word(q.x, a0, b0) + q4k_word(q.y, a1, b1) + q4k_word(q.z, a2, b2)
        + q4k_word(q.w, a3, b3);
    let one = vec4<f32>(1.0);
    let sl = dot(a0 + a1 + a2 + a3, one);
    let sh = dot(b0 + b1 + b2 + b3, one);
    let sc = vec2<f32>(f32(sm.x & 0xFFu), f32(sm.x >> 8u));
    let mn = vec2<f32>(f32(sm.y & 0xFFu), f32(sm.y >> 8u));
    return dm.x * dot(sc, qx) - dm.y * dot(mn, vec2<f32>(sl, sh));
}
