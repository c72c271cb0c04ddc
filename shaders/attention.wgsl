// Causal attention of one sequence's chunk over its cache, flash-style: keys in tiles of 64
// positions with an online softmax (running max and sum), so scores are never stored whole.
// Split-K (flash-decoding): grid (n_rows, n_head, n_split); workgroup z covers keys
// [first + z·span, first + (z+1)·span) of its row. With one split it writes the normalised
// output; with several it writes (max, sum, unnormalised acc) to `part` for attn_merge.wgsl.
// Thread t owns output dims t, t+64, … (head_dim ≤ 256).
// Cache layout per position: [k (n_head_kv·head_dim_k) | v (n_head_kv·head_dim_v)].

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
}

@group(0) @binding(0) var<uniform> p: AttnParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> kv: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>;

const WG: u32 = 64u;
const TILE: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> ps: array<f32, TILE>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let rr = wg.x;
    let h = wg.y;
    let z = wg.z;
    let kvh = h / (p.n_head / p.n_head_kv);
    let row = p.start_row + rr;
    let pos = p.start_pos + rr;
    for (var d = tid; d < p.head_dim_k; d += WG) {
        qs[d] = qkv[row * p.qkv_stride + h * p.head_dim_k + d];
    }
    var first = 0u;
    if p.window != 0u && pos + 1u > p.window {
        first = pos + 1u - p.window;
    }
    let lo = first + z * p.span;
    let hi = min(pos + 1u, lo + p.span);
    var m = NEG;
    var l = 0.0;
    var acc = array<f32, 4>();
    workgroupBarrier();
    for (var t0 = lo; t0 < hi; t0 += TILE) {
        let t = t0 + tid;
        var s = NEG;
        if t < hi {
            let kb = t * p.kv_stride + kvh * p.head_dim_k;
            var dotv = 0.0;
            for (var d = 0u; d < p.head_dim_k; d += 4u) {
                dotv += dot(vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u]),
                            vec4<f32>(kv[kb + d], kv[kb + d + 1u], kv[kb + d + 2u], kv[kb + d + 3u]));
            }
            s = dotv * p.scale;
            if p.softcap > 0.0 {
                s = p.softcap * tanh(s / p.softcap);
            }
        }
        red[tid] = s;
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st >>= 1u) {
            if tid < st {
                red[tid] = max(red[tid], red[tid + st]);
            }
            workgroupBarrier();
        }
        let m_new = max(m, red[0]);
        workgroupBarrier();
        let alpha = exp(m - m_new);
        var pt = 0.0;
        if t < hi {
            pt = exp(s - m_new);
        }
        ps[tid] = pt;
        red[tid] = pt;
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st >>= 1u) {
            if tid < st {
                red[tid] += red[tid + st];
            }
            workgroupBarrier();
        }
        l = l * alpha + red[0];
        let nt = min(TILE, hi - t0);
        for (var i = 0u; i < 4u; i++) {
            let d = tid + i * WG;
            if d < p.head_dim_v {
                var a = acc[i] * alpha;
                let vb = t0 * p.kv_stride + p.k_dim + kvh * p.head_dim_v + d;
                for (var u = 0u; u < nt; u++) {
                    a += ps[u] * kv[vb + u * p.kv_stride];
                }
                acc[i] = a;
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    if p.n_split == 1u {
        for (var i = 0u; i < 4u; i++) {
            let d = tid + i * WG;
            if d < p.head_dim_v {
                out[row * p.out_stride + h * p.head_dim_v + d] = acc[i] / l;
            }
        }
    } else {
        let pb = ((rr * p.n_head + h) * p.n_split + z) * (p.head_dim_v + 2u);
        if tid == 0u {
            part[pb] = m;
            part[pb + 1u] = l;
        }
        for (var i = 0u; i < 4u; i++) {
            let d = tid + i * WG;
            if d < p.head_dim_v {
                part[pb + 2u + d] = acc[i];
            }
        }
    }
}
