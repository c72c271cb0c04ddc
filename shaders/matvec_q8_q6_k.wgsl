// Q6_K against 8-bit activations (matvec_stage_q8.wgsl) for matvec.wgsl: ggml's
// vec_dot_q6_K_q8_K. Same lanes and loads as matvec_q6_k.wgsl (4 lanes per block, four runs of
// 16 weights each); the 6-bit codes (0 … 63) meet the quantized values with dot4I8Packed and
// the offset of 32 comes off through the bsums: d_x · d · Σ sc·(Σqx − 32·Σx).
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 256u;
const LPB: u32 = 4u;

// The four runs' 6-bit codes of one word each (ql words qa, qb; qh word qh).
fn q6k_codes(qa: u32, qb: u32, qh: u32) -> vec4<u32> {
    return vec4<u32>((qa & 0x0F0F0F0Fu) | ((qh << 4u) & 0x30303030u),
                     (qb & 0x0F0F0F0Fu) | ((qh << 2u) & 0x30303030u),
                     ((qa >> 4u) & 0x0F0F0F0Fu) | (qh & 0x30303030u),
                     ((qb >> 4u) & 0x0F0F0F0Fu) | ((qh >> 2u) & 0x30303030u));
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
    let c0 = q6k_codes(q.a.x, q.c.x, q.h.x);
    let c1 = q6k_codes(q.a.y, q.c.y, q.h.y);
    let c2 = q6k_codes(q.a.z, q.c.z, q.h.z);
    let c3 = q6k_codes(q.a.w, q.c.w, q.h.w);
    // Run r: values 128n + 32r + 16s … + 15 = quantized vec4 xb + 2r.
    let xb = xo / 4u + 8u * n + s;
    let x0 = xqv(xb);
    let x1 = xqv(xb + 2u);
    let x2 = xqv(xb + 4u);
    let x3 = xqv(xb + 6u);
    let qx = vec4<i32>(
        dot4I8Packed(c0.x, x0.x) + dot4I8Packed(c1.x, x0.y) + dot4I8Packed(c2.x, x0.z)
            + dot4I8Packed(c3.x, x0.w),
        dot4I8Packed(c0.y, x1.x) + dot4I8Packed(c1.y, x1.y) + dot4I8Packed(c2.y, x1.z)
            + dot4I8Packed(c3.y, x1.w),
        dot4I8Packed(c0.z, x2.x) + dot4I8Packed(c1.z, x2.y) + dot4I8Packed(c2.z, x2.z)
            + dot4I8Packed(c3.z, x2.w),
        dot4I8Packed(c0.w, x3.x) + dot4I8Packed(c1.w, x3.y) + dot4I8Packed(c2.w, x3.z)
            + dot4I8Packed(c3.w, x3.w));
    let bs = vec4<i32>(qsum16[xb], qsum16[xb + 2u], qsum16[xb + 4u], qsum16[xb + 6u]);
    // Scales 8n + s + {0, 2} (word s01) and 8n + 4 + s + {0, 2} (word s23).
    let si = s * 8u;
    let s01 = bitcast<i32>(q.s01);
    let s23 = bitcast<i32>(q.s23);
    let sc = vec4<i32>(extractBits(s01, si, 8u), extractBits(s01, si + 16u, 8u),
                       extractBits(s23, si, 8u), extractBits(s23, si + 16u, 8u));
    return dq[xo / 64u] * unpack2x16float(q.d).x * f32(dot(sc, qx - 32 * bs));
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    return block_compute(block_load(wrow, blk, part), part, xo);
}
