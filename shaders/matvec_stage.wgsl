// The decode matvecs' activation staging (matvec.wgsl, matvec_pair.wgsl): the activation row
// is staged in shared memory once per workgroup, KC values at a time, with the input mode
// applied there (norm weights; SiLU/GELU · up computed once per value, not once per value per
// weight row), plus the sums of each 16 staged values; and what the block decoders share: the
// byte-to-float conversions and the 4-bit legacy word dot product.

const WG: u32 = 256u;
// Columns staged at a time: 12 KiB, so with the sums and the reductions' 1 KiB a workgroup
// stays within WebGPU's default 16 KiB of workgroup storage.
const KC: u32 = 3072u;

// Staged in(x) for columns k0 … k0 + KC of the current chunk.
var<workgroup> xs: array<vec4<f32>, 768>;
// Σ of each 16 staged values (the block decoders' min and offset terms need them per row; the
// values are the same for every row).
var<workgroup> xsum16: array<f32, 192>;

// Σ of staged values 16i … 16i + 15.
fn xsum(i: u32) -> f32 {
    return xsum16[i];
}

// The four bytes of q as floats without integer-to-float conversions (quarter-rate on some
// GPUs, and the decode matvecs convert every weight): each byte is placed in the mantissa of
// 2^23 and 2^23 taken off again, exactly.
fn bytes_f32(q: u32) -> vec4<f32> {
    let m = vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) & vec4<u32>(0xFFu);
    return bitcast<vec4<f32>>(m | vec4<u32>(0x4B000000u)) - vec4<f32>(8388608.0);
}

// The same for signed bytes: bias them by 128 (flip the sign bits), convert, take 128 off.
fn sbytes_f32(q: u32) -> vec4<f32> {
    return bytes_f32(q ^ 0x80808080u) - vec4<f32>(128.0);
}

// Σ q·x of word k (bytes 4k … 4k + 3 of qs) of a 4-bit legacy block (Q4_0, Q4_1, Q5_0): low nibbles against values
// 4k … (vec4 xo + k), high nibbles against 16 + 4k … (vec4 xo + 4 + k); `hi5` adds the fifth
// bits (bit 4 of each byte) of the low and high nibbles' values.
fn nib_word(q: u32, hi5: vec2<u32>, xo: u32, k: u32) -> f32 {
    let m = 0x0F0F0F0Fu;
    return dot(bytes_f32((q & m) | hi5.x), xv(xo + k))
        + dot(bytes_f32(((q >> 4u) & m) | hi5.y), xv(xo + 4u + k));
}

// Σ x over the block's 32 staged values at vec4 xo.
fn block_xsum(xo: u32) -> f32 {
    return xsum(xo / 4u) + xsum(xo / 4u + 1u);
}

// Where vec4 i of the chunk is stored: its low 3 bits XORed with bits 3 … 5 and 6 … 8, so the
// lanes of a phase that read vec4s 8, 16, 32 or 64 apart (a lane per block) hit different
// banks.
fn xsw(i: u32) -> u32 {
    return i ^ (((i >> 3u) ^ (i >> 6u)) & 7u);
}

// Staged values 4i … 4i + 3 of the current chunk.
fn xv(i: u32) -> vec4<f32> {
    return xs[xsw(i)];
}

// One staged vec4 before it is stored: in(x), and the norm weights in the normed mode.
struct Staged {
    v: vec4<f32>,
    n: vec4<f32>,
}

// Loads for vec4 i of the chunk at column k0 of the activation row at element xb (zero past
// the chunk's n4 vec4s).
fn stage_load(xb: u32, k0: u32, i: u32, n4: u32) -> Staged {
    var s = Staged(vec4<f32>(0.0), vec4<f32>(1.0));
    if i < n4 {
        s.v = load_x(xb + k0 + 4u * i);
        if p.in_mode == 1u {
            s.n = nw[k0 / 4u + i];
        }
    }
    return s;
}

// Store vec4 i (the norm weights applied); its Σ v² for the norm.
fn stage_store(i: u32, n4: u32, s: Staged) -> f32 {
    if i >= n4 {
        return 0.0;
    }
    xs[xsw(i)] = s.v * s.n;
    return dot(s.v, s.v);
}

// Stage columns k0 … k0 + kc of the activation row at element xb: every invocation of the
// workgroup calls it (it has barriers); returns this invocation's share of Σ x² (for the norm).
// Four values' loads in flight per thread (the gated mode's gate and up come from L2, and a loop
// that waited for each in turn made staging the longest part of long rows).
fn stage_chunk(xb: u32, k0: u32, kc: u32, tid: u32) -> f32 {
    var ss = 0.0;
    workgroupBarrier();
    let n4 = kc / 4u;
    for (var e = tid; e < n4; e += 4u * WG) {
        let v0 = stage_load(xb, k0, e, n4);
        let v1 = stage_load(xb, k0, e + WG, n4);
        let v2 = stage_load(xb, k0, e + 2u * WG, n4);
        let v3 = stage_load(xb, k0, e + 3u * WG, n4);
        ss += stage_store(e, n4, v0) + stage_store(e + WG, n4, v1) + stage_store(e + 2u * WG, n4, v2)
            + stage_store(e + 3u * WG, n4, v3);
    }
    workgroupBarrier();
    if tid < n4 / 4u {
        let i = 4u * tid;
        xsum16[tid] = dot(xv(i) + xv(i + 1u) + xv(i + 2u) + xv(i + 3u), vec4<f32>(1.0));
    }
    workgroupBarrier();
    return ss;
}
