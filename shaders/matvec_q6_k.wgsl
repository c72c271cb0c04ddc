// Q6_K for matvec.wgsl, uploaded as 14 vec4 per block (upload.rs pads the 210 bytes to 224 so
// every field is 16-byte aligned): [ql: 128 bytes] [qh: 64] [scales: 16 × i8] [d: f16, pad].
// Each of a block's 4 lanes takes one vec4 of ql at l and one at l + 32 bytes, one of qh, the
// scales and d (l = 16·(p mod 2) … + 15 in the 128-half ⌊p/2⌋; five 16-byte loads): 64
// weights in four runs of 16, 32 apart, each with its own scale; value d·sc·(q − 32).
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

const BW: u32 = 256u;
const LPB: u32 = 4u;

// Σ q·x of one word of each run (ql words qa, qb and qh word qh; x1 … x4 the runs' staged
// values) as (Σq1x, Σq2x, Σq3x, Σq4x).
fn q6k_word(qa: u32, qb: u32, qh: u32, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
            x4: vec4<f32>) -> vec4<f32> {
    let q1 = (qa & 0x0F0F0F0Fu) | ((qh << 4u) & 0x30303030u);
    let q2 = (qb & 0x0F0F0F0Fu) | ((qh << 2u) & 0x30303030u);
    let q3 = ((qa >> 4u) & 0x0F0F0F0Fu) | (qh & 0x30303030u);
    let q4 = ((qb >> 4u) & 0x0F0F0F0Fu) | ((qh >> 2u) & 0x30303030u);
    return vec4<f32>(dot(bytes_f32(q1), x1), dot(bytes_f32(q2), x2), dot(bytes_f32(q3), x3),
                     dot(bytes_f32(q4), x4));
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let b = wrow / 4u + blk * 14u;
    let n = part / 2u;
    let s = part % 2u;
    // Every load first.
    let a = w[b + 4u * n + s];
    let c = w[b + 4u * n + s + 2u];
    let h = w[b + 8u + 2u * n + s];
    let sw = w[b + 12u];
    let dw = w[b + 13u].x;
    let xb = xo + 32u * n + 4u * s;
    let r0 = q6k_word(a.x, c.x, h.x, xv(xb), xv(xb + 8u), xv(xb + 16u), xv(xb + 24u));
    let r1 = q6k_word(a.y, c.y, h.y, xv(xb + 1u), xv(xb + 9u), xv(xb + 17u), xv(xb + 25u));
    let r2 = q6k_word(a.z, c.z, h.z, xv(xb + 2u), xv(xb + 10u), xv(xb + 18u), xv(xb + 26u));
    let r3 = q6k_word(a.w, c.w, h.w, xv(xb + 3u), xv(xb + 11u), xv(xb + 19u), xv(xb + 27u));
    let qx = r0 + r1 + r2 + r3;
    // The four runs are 16 values each, starting at a multiple of 16.
    let g = xb / 4u;
    let sx = vec4<f32>(xsum(g), xsum(g + 2u), xsum(g + 4u), xsum(g + 6u));
    // Scales 8n + s + {0, 2} (word 2n) and 8n + 4 + s + {0, 2} (word 2n + 1).
    let s01 = bitcast<i32>(select(sw.x, sw.z, n == 1u));
    let s23 = bitcast<i32>(select(sw.y, sw.w, n == 1u));
    let si = s * 8u;
    let sc = vec4<f32>(f32(extractBits(s01, si, 8u)), f32(extractBits(s01, si + 16u, 8u)),
                       f32(extractBits(s23, si, 8u)), f32(extractBits(s23, si + 16u, 8u)));
    return unpack2x16float(dw).x * dot(sc, qx - 32.0 * sx);
}
