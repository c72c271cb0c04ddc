// Merge the split-K partials of attention.wgsl: out = Σ_z acc_z·e^(m_z−M) / Σ_z l_z·e^(m_z−M).
// Grid (n_rows, n_head); splits that saw no keys have l = 0 and m = −3e38 (weight 0).

struct AttnParams {
    n_head: u32,
    n_head_kv: u32,
    head_dim_k: u32,
    head_dim_v: u32,
    qkv_stride: u32,
    out_stride: u32,
    kv_stride: u32,
    k_dim: u32,
    start_row: u32,
    n_rows: u32,
    start_pos: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    n_split: u32,
    span: u32,
    fuse: u32,
    n_rot: u32,
    neox: u32,
    table_base: u32,
}

@group(0) @binding(0) var<uniform> p: AttnParams;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let rr = wg.x;
    let h = wg.y;
    let row = p.start_row + rr;
    let stride = p.head_dim_v + 2u;
    let base = (rr * p.n_head + h) * p.n_split * stride;
    var mx = -3.0e38;
    for (var z = 0u; z < p.n_split; z++) {
        mx = max(mx, part[base + z * stride]);
    }
    var l = 0.0;
    for (var z = 0u; z < p.n_split; z++) {
        l += part[base + z * stride + 1u] * exp(part[base + z * stride] - mx);
    }
    for (var d = tid; d < p.head_dim_v; d += 64u) {
        var a = 0.0;
        for (var z = 0u; z < p.n_split; z++) {
            a += part[base + z * stride + 2u + d] * exp(part[base + z * stride] - mx);
        }
        out[row * p.out_stride + h * p.head_dim_v + d] = a / l;
    }
}
