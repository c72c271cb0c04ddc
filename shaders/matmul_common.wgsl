// What the row-group matmul kernels share (matmul.wgsl, matmul_subgroup.wgsl, matmul_tiled.wgsl)
// beyond matmul_params.wgsl: the 8-weight chunk dot product over `load8` of the quant_*.wgsl
// decoder in front, which reads the weights as words.

@group(0) @binding(1) var<storage, read> w: array<u32>;

// One 8-element chunk c of a weight row against activation row base xb (n = 1 kernels):
// (dot with in(x)·norm, sum of squares of x).
fn chunk_dot(wrow: u32, xb: u32, c: u32) -> vec2<f32> {
    let wv = load8(wrow, c);
    var n0 = vec4<f32>(1.0);
    var n1 = vec4<f32>(1.0);
    if p.in_mode == 1u {
        n0 = nw[2u * c];
        n1 = nw[2u * c + 1u];
    }
    let a0 = load_x(xb + c * 8u);
    let a1 = load_x(xb + c * 8u + 4u);
    return vec2<f32>(dot(wv[0], a0 * n0) + dot(wv[1], a1 * n1), dot(a0, a0) + dot(a1, a1));
}

// One lane's share of a decode row (n = 1): chunks lane, lane + tpr, … of weight row wrow
// against activation row base xb, four chunks' loads in flight per iteration.
fn decode_lane_sum(wrow: u32, xb: u32, lane: u32, tpr: u32, nchunks: u32) -> vec2<f32> {
    var acc = vec2<f32>(0.0);
    var c = lane;
    for (; c + 3u * tpr < nchunks; c += 4u * tpr) {
        let d0 = chunk_dot(wrow, xb, c);
        let d1 = chunk_dot(wrow, xb, c + tpr);
        let d2 = chunk_dot(wrow, xb, c + 2u * tpr);
        let d3 = chunk_dot(wrow, xb, c + 3u * tpr);
        acc += (d0 + d1) + (d2 + d3);
    }
    for (; c < nchunks; c += tpr) {
        acc += chunk_dot(wrow, xb, c);
    }
    return acc;
}
