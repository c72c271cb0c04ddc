// Q6_K for matvec.wgsl (53 words per block, see quant_q6_k.wgsl). Each of a block's 4 lanes
// takes four words of ql at l, four at l + 32 and four of qh (l = 16·(p mod 2) … + 15 in the
// 128-half ⌊p/2⌋; 60 bytes in flight per block): 64 weights in four runs of 16, 32 apart, each
// with its own scale; value d·sc·(q − 32).
@group(0) @binding(1) var<storage, read> w: array<u32>;

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
    let b = wrow + blk * 53u;
    let n = part / 2u;
    let s = part % 2u;
    let la = b + 16u * n + 4u * s;
    let lh = b + 32u + 8u * n + 4u * s;
    // Every load first.
    let a0 = w[la];
    let a1 = w[la + 1u];
    let a2 = w[la + 2u];
    let a3 = w[la + 3u];
    let c0 = w[la + 8u];
    let c1 = w[la + 9u];
    let c2 = w[la + 10u];
    let c3 = w[la + 11u];
    let h0 = w[lh];
    let h1 = w[lh + 1u];
    let h2 = w[lh + 2u];
    let h3 = w[lh + 3u];
    let s01 = bitcast<i32>(w[b + 48u + 2u * n]);
    let s23 = bitcast<i32>(w[b + 49u + 2u * n]);
    let d = unpack2x16float(w[b + 52u]).x;
    let xb = xo + 32u * n + 4u * s;
    let r0 = q6k_word(a0, c0, h0, xv(xb), xv(xb + 8u), xv(xb + 16u), xv(xb + 24u));
    let r1 = q6k_word(a1, c1, h1, xv(xb + 1u), xv(xb + 9u), xv(xb + 17u), xv(xb + 25u));
    let r2 = q6k_word(a2, c2, h2, xv(xb + 2u), xv(xb + 10u), xv(xb + 18u), xv(xb + 26u));
    let r3 = q6k_word(a3, c3, h3, xv(xb + 3u), xv(xb + 11u), xv(xb + 19u), xv(xb + 27u));
    let qx = r0 + r1 + r2 + r3;
    // The four runs are 16 values each, starting at a multiple of 16.
    let g = xb / 4u;
    let sx = vec4<f32>(xsum(g), xsum(g + 2u), xsum(g + 4u), xsum(g + 6u));
    // Scales 8n + s + {0, 2} (word s01) and 8n + 4 + s + {0, 2} (word s23).
    let si = s * 8u;
    let sc = vec4<f32>(f32(extractBits(s01, si, 8u)), f32(extractBits(s01, si + 16u, 8u)),
                       f32(extractBits(s23, si, 8u)), f32(extractBits(s23, si + 16u, 8u)));
    return d * dot(sc, qx - 32.0 * sx);
}
