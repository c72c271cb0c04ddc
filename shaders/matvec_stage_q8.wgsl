// 8-bit activations for the decode matvec (`--precision q8`, native only: the arrays below take
// the workgroup past WebGPU's default 16 KiB): after matvec_stage.wgsl has staged a chunk in
// f32, each 256 values become one Q8_K block as ggml's quantize_row_q8_K makes it (scale
// amax/127, values rounded half to even, sums of each 16), so the K-quant decoders
// (matvec_q8_<type>.wgsl) multiply bytes with dot4I8Packed: one instruction for four weights
// (VK_KHR_shader_integer_dot_product) instead of a conversion and a multiply-add each.
//
// ggml scales by −127/max with max the signed value of largest magnitude; +127/amax is that
// for a negative max, and for a positive one it negates every value, the scale and the sums,
// which leaves each product — and the matvec — bit for bit the same.

// The chunk's values, 16 per vec4 (4 per word), vec4 i at xqsw(i).
var<workgroup> xq: array<vec4<u32>, 192>;
// Σ of each 16 quantized values (ggml's bsums).
var<workgroup> qsum16: array<i32, 192>;
// Each 256-value block's scale.
var<workgroup> dq: array<f32, 12>;
// Each 16 values' largest magnitude, for the blocks' maxima.
var<workgroup> amx: array<f32, 192>;

// Where vec4 i of xq is stored: its low 3 bits XORed with the block (bits 4 …) and bit 3, so
// the lanes of a phase that read the same vec4 of neighbouring blocks hit different banks.
fn xqsw(i: u32) -> u32 {
    return i ^ (((i >> 4u) ^ ((i >> 1u) & 4u)) & 7u);
}

// Quantized values 16i … 16i + 15 of the chunk.
fn xqv(i: u32) -> vec4<u32> {
    return xq[xqsw(i)];
}

// Quantize the staged chunk of kc values (a multiple of 256): every invocation calls it.
fn stage_q8(kc: u32, tid: u32) {
    let ng = kc / 16u;
    var v0 = vec4<f32>(0.0);
    var v1 = vec4<f32>(0.0);
    var v2 = vec4<f32>(0.0);
    var v3 = vec4<f32>(0.0);
    if tid < ng {
        v0 = xv(4u * tid);
        v1 = xv(4u * tid + 1u);
        v2 = xv(4u * tid + 2u);
        v3 = xv(4u * tid + 3u);
        let a = max(max(abs(v0), abs(v1)), max(abs(v2), abs(v3)));
        amx[tid] = max(max(a.x, a.y), max(a.z, a.w));
    }
    workgroupBarrier();
    if tid < ng {
        let first = tid & ~15u;
        var am = 0.0;
        for (var i = 0u; i < 16u; i++) {
            am = max(am, amx[first + i]);
        }
        var q = vec4<u32>(0u);
        var s = 0;
        var d = 0.0;
        if am > 0.0 {
            let iscale = 127.0 / am;
            let hi = vec4<i32>(127);
            let q0 = min(vec4<i32>(round(v0 * iscale)), hi);
            let q1 = min(vec4<i32>(round(v1 * iscale)), hi);
            let q2 = min(vec4<i32>(round(v2 * iscale)), hi);
            let q3 = min(vec4<i32>(round(v3 * iscale)), hi);
            s = dot(q0 + q1 + q2 + q3, vec4<i32>(1));
            q = vec4<u32>(pack4xI8(q0), pack4xI8(q1), pack4xI8(q2), pack4xI8(q3));
            d = 1.0 / iscale;
        }
        xq[xqsw(tid)] = q;
        qsum16[tid] = s;
        if tid % 16u == 0u {
            dq[tid / 16u] = d;
        }
    }
    workgroupBarrier();
}
