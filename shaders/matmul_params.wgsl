// What every matrix-product kernel shares (matmul.wgsl, matmul_subgroup.wgsl, matmul_tiled.wgsl,
// matvec.wgsl): parameters, bindings other than the weights (binding 1, declared by the weight
// decoder in front: words for quant_*.wgsl, wider for matvec_*.wgsl), the fused input modes and
// the output epilogue.
//
// in_mode 0: x as is. 1: RMSNorm fused: x·norm_w, the row's 1/rms applied at the end.
// 2: gated activation fused: act(x[k]) · x[k + up_offset] (SiLU, or GELU-tanh when act = 1).
// out_mode bit 0: + bias[bias_offset + j]; bit 1: accumulate into y (residual add).
// gather != 0: activation row r is step.logit_rows[r] and n = step.n_logit.

struct MmParams {
    rows: u32,
    cols: u32,
    row_words: u32,
    in_mode: u32,
    out_mode: u32,
    x_stride: u32,
    y_stride: u32,
    y_offset: u32,
    bias_offset: u32,
    gather: u32,
    eps: f32,
    up_offset: u32,
    act: u32,
    tpr: u32,
    rpg: u32,
    // Split-K parts of the tiled matmul (1: none; see matmul_tiled.wgsl).
    splits: u32,
    // matvec_pair.wgsl: the first row of the second part, and its words per row.
    rows_b: u32,
    row_words_b: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: MmParams;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> nw: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> step: array<u32>;

fn silu4(v: vec4<f32>) -> vec4<f32> {
    return v / (1.0 + exp(-v));
}

fn gelu4(v: vec4<f32>) -> vec4<f32> {
    let t = tanh(0.7978846 * v * (1.0 + 0.044715 * v * v));
    return 0.5 * v * (1.0 + t);
}

// `base` is an element index, a multiple of 4 (strides and offsets are).
fn load_x(base: u32) -> vec4<f32> {
    let v = x[base / 4u];
    if p.in_mode == 2u {
        let up = x[(base + p.up_offset) / 4u];
        if p.act == 1u {
            return gelu4(v) * up;
        }
        return silu4(v) * up;
    }
    return v;
}

// y[r][j] epilogue: 1/rms for the fused RMSNorm (q = Σx²), bias, residual accumulate.
fn store_y(r: u32, j: u32, dot_v: f32, q: f32) {
    var v = dot_v;
    if p.in_mode == 1u {
        v *= 1.0 / sqrt(q / f32(p.cols) + p.eps);
    }
    if (p.out_mode & 1u) != 0u {
        v += bias[p.bias_offset + j];
    }
    let yi = r * p.y_stride + p.y_offset + j;
    if (p.out_mode & 2u) != 0u {
        v += y[yi];
    }
    y[yi] = v;
}
