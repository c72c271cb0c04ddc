// RoPE on one sequence's chunk of rows of the fused [q | k | v] activations, with the rotated
// K and the V of each row written into the sequence's cache at its position.
// Grid: (n_rows, n_head + n_head_kv). Workgroups y < n_head rotate a query head in place;
// the others rotate key head y − n_head into the cache and copy the matching value head.
// cos/sin come from a per-row table computed on the CPU exactly as the CPU path does.
// The cache holds KvT (f32, or f16 with SHADER_F16: see attention.wgsl).

struct RopeParams {
    n_head: u32,
    n_head_kv: u32,
    head_dim_k: u32,
    head_dim_v: u32,
    qkv_stride: u32,
    q_dim: u32,
    k_dim: u32,
    n_rot: u32,
    neox: u32,
    start_row: u32,
    n_rows: u32,
    start_pos: u32,
    table_base: u32,
    kv_stride: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: RopeParams;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> kv: array<KvT>;
@group(0) @binding(3) var<storage, read> table: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let rr = wg.x;
    if rr >= p.n_rows {
        return;
    }
    let row = p.start_row + rr;
    let half = p.n_rot / 2u;
    let tb = p.table_base + row * p.n_rot;
    let is_q = wg.y < p.n_head;
    var src: u32;
    var dst: u32;
    if is_q {
        src = row * p.qkv_stride + wg.y * p.head_dim_k;
        dst = src;
    } else {
        let h = wg.y - p.n_head;
        src = row * p.qkv_stride + p.q_dim + h * p.head_dim_k;
        dst = (p.start_pos + rr) * p.kv_stride + h * p.head_dim_k;
    }
    for (var i = tid; i < half; i += 64u) {
        var i0 = 2u * i;
        var i1 = 2u * i + 1u;
        if p.neox != 0u {
            i0 = i;
            i1 = i + half;
        }
        let c = table[tb + i];
        let s = table[tb + half + i];
        let x0 = qkv[src + i0];
        let x1 = qkv[src + i1];
        let y0 = x0 * c - x1 * s;
        let y1 = x0 * s + x1 * c;
        if is_q {
            qkv[dst + i0] = y0;
            qkv[dst + i1] = y1;
        } else {
            kv[dst + i0] = KvT(y0);
            kv[dst + i1] = KvT(y1);
        }
    }
    if !is_q {
        for (var d = p.n_rot + tid; d < p.head_dim_k; d += 64u) {
            kv[dst + d] = KvT(qkv[src + d]);
        }
        let h = wg.y - p.n_head;
        let vs = row * p.qkv_stride + p.q_dim + p.k_dim + h * p.head_dim_v;
        let vd = (p.start_pos + rr) * p.kv_stride + p.k_dim + h * p.head_dim_v;
        for (var d = tid; d < p.head_dim_v; d += 64u) {
            kv[vd + d] = KvT(qkv[vs + d]);
        }
    }
}
