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

// A lane's loads: four words of ql at l (a) and l + 32 (c), four of qh, its two scale words and
// d (60 bytes in flight).
struct Q6kBlk {
    a: vec4<u32>,
    c: vec4<u32>,
    h: vec4<u32>,
    s01: u32,
    s23: u32,
    d: u32,
}
alias MvBlk = Q6kBlk;

fn block_load(wrow: u32, blk: u32, part: u32) -> MvBlk {
    let b = wrow + blk * 53u;
    let n = part / 2u;
    let la = b + 16u * n + 4u * (part % 2u);
    let lh = b + 32u + 8u * n + 4u * (part % 2u);
    return MvBlk(vec4<u32>(w[la], w[la + 1u], w[la + 2u], w[la + 3u]),
                 vec4<u32>(w[la + 8u], w[la + 9u], w[la + 10u], w[la + 11u]),
                 vec4<u32>(w[lh], w[lh + 1u], w[lh + 2u], w[lh + 3u]),
                 w[b + 48u + 2u * n], w[b + 49u + 2u * n], w[b + 52u]);
}

fn block_compute(q: MvBlk, part: u32, xo: u32) -> f32 {
    let n = part / 2u;
    let s = part % 2u;
    let xb = xo + 32u * n + 4u * s;
    let r0 = q6k_word(q.a.x, q.c.x, q.h.x, xv(xb), xv(xb + 8u), xv(xb + 16u), xv(xb + 24u));
    let r1 = q6k_word(q.a.y, q.c.y, q.h.y, xv(xb + 1u), xv(xb + 9u), xv(xb + 17u), xv(xb + 25u));
    let r2 = q6k_word(q.a.z, q.c.z, q.h.z, xv(xb + 2u), xv(xb + 10u), xv(xb + 18u), xv(xb + 26u));
    let r3 = q6k_word(q.a.w, q.c.w, q.h.w, xv(xb + 3u), xv(xb + 11u), xv(xb + 19u), xv(xb + 27u));
    let qx = r0 + r1 + r2 + r3;
    // The four runs are 16 values each, starting at a multiple of 16.
    let g = xb / 4u;
    let sx = vec4<f32>(xsum(g), xsum(g + 2u), xsum(g + 4u), xsum(g + 6u));
    // Scales 8n + s + {0, 2} (word s01) and 8n + 4 + s + {0, 2} (word s23).
    let si = s * 8u;
    let s01 = bitcast<i32>(q.s01);
    let s23 = bitcast<i32>(q.s23);
    let sc = vec4<f32>(f32(extractBits(s01, si, 8u)), f32(extractBits(s01, si + 16u, 8u)),
                       f32(extractBits(s23, si, 8u)), f32(extractBits(s23, si + 16u, 8u)));
    return unpack2x16float(q.d).x * dot(sc, qx - 32.0 * sx);
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    return block_compute(block_load(wrow, blk, part), part, xo);
}
