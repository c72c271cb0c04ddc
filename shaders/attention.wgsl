// Causal attention of one sequence's chunk over its cache, flash-style: keys in tiles of 64
// positions with an online softmax (running max and sum), so scores are never stored whole.
// Split-K (flash-decoding): grid (n_rows, n_head, n_split); workgroup z covers keys
// [first + z·span, first + (z+1)·span) of its row. With one split it writes the normalised
// output; with several it writes (max, sum, unnormalised acc) to `part` for attn_merge.wgsl.
// head_dim ≤ 256, head_dim_k a multiple of 16.
// Cache layout per position: [k (n_head_kv·head_dim_k) | v (n_head_kv·head_dim_v)], of KvT:
// the host prepends `alias KvT = f32;` or, with SHADER_F16 and an f16 cache, `enable f16;
// alias KvT = f16;` (values rounded to f16 when stored; all arithmetic stays f32).
// fuse != 0 (a one-row chunk, i.e. decode): RoPE and the K/V store are done here instead of by
// rope_store.wgsl: the workgroup rotates its query head and the row's key head itself (same
// arithmetic as rope_store), uses that key and value for position pos from shared memory, and
// the one workgroup per KV head whose key range holds pos (and whose head is the first of its
// group) writes them into the cache, which no other workgroup of the dispatch reads at pos.

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
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
// Read and written four values at a time (every head dim and offset is a multiple of 4).
@group(0) @binding(2) var<storage, read_write> kv: array<vec4<KvT>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>;
@group(0) @binding(5) var<storage, read> table: array<f32>;

// The host also prepends the tile reductions `tile_max(tid, v)` and `tile_sum(tid, v)` over the
// values of threads tid < TILE (called by every thread; shared-memory trees, or subgroup
// reductions where the device has subgroups: attn_reduce_*.wgsl).

// 256 threads: scores with 4 threads per key (a quarter of the head each); values with
// head_dim_v / 4 threads per key group (4 dims each) and 256 / (head_dim_v / 4) key groups, so a
// thread's value loads of a tile (64 / groups keys) are few and independent.
const WG: u32 = 256u;
const TILE: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> sc: array<f32, WG>;
var<workgroup> ps: array<f32, TILE>;
var<workgroup> comb: array<f32, 1024>;
// fuse: the row's own (rotated) key and its value.
var<workgroup> kc: array<f32, MAX_HEAD_DIM>;
var<workgroup> vc: array<f32, MAX_HEAD_DIM>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32/*SG_PARAMS*/) {
    /*SG_INIT*/
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
    let fused = p.fuse != 0u;
    if fused {
        let q_dim = p.n_head * p.head_dim_k;
        let kb = row * p.qkv_stride + q_dim + kvh * p.head_dim_k;
        for (var d = tid; d < p.head_dim_k; d += WG) {
            kc[d] = qkv[kb + d];
        }
        let vb = row * p.qkv_stride + q_dim + p.k_dim + kvh * p.head_dim_v;
        for (var d = tid; d < p.head_dim_v; d += WG) {
            vc[d] = qkv[vb + d];
        }
        workgroupBarrier();
        let half = p.n_rot / 2u;
        if tid < half {
            var i0 = 2u * tid;
            var i1 = 2u * tid + 1u;
            if p.neox != 0u {
                i0 = tid;
                i1 = tid + half;
            }
            let tb = p.table_base + row * p.n_rot;
            let c = table[tb + tid];
            let s = table[tb + half + tid];
            let x0 = qs[i0];
            let x1 = qs[i1];
            qs[i0] = x0 * c - x1 * s;
            qs[i1] = x0 * s + x1 * c;
            let k0 = kc[i0];
            let k1 = kc[i1];
            kc[i0] = k0 * c - k1 * s;
            kc[i1] = k0 * s + k1 * c;
        }
        workgroupBarrier();
        if pos >= lo && pos < hi && h % (p.n_head / p.n_head_kv) == 0u {
            let dst = (pos * p.kv_stride + kvh * p.head_dim_k) / 4u;
            for (var d = tid; d < p.head_dim_k / 4u; d += WG) {
                kv[dst + d] = vec4<KvT>(vec4<f32>(kc[4u * d], kc[4u * d + 1u], kc[4u * d + 2u], kc[4u * d + 3u]));
            }
            let vd = (pos * p.kv_stride + p.k_dim + kvh * p.head_dim_v) / 4u;
            for (var d = tid; d < p.head_dim_v / 4u; d += WG) {
                kv[vd + d] = vec4<KvT>(vec4<f32>(vc[4u * d], vc[4u * d + 1u], vc[4u * d + 2u], vc[4u * d + 3u]));
            }
        }
    }
    let quarter = p.head_dim_k / 4u;
    let key = tid / 4u;
    let q4 = tid % 4u;
    // Values: vec4 d4 of the head, key group kg of n_groups.
    let n4 = p.head_dim_v / 4u;
    let n_groups = WG / n4;
    let d4 = tid % n4;
    let kg = tid / n4;
    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    workgroupBarrier();
    for (var t0 = lo; t0 < hi; t0 += TILE) {
        // Partial scores: thread (key, q4) dots a quarter of the head.
        let t = t0 + key;
        var part_dot = 0.0;
        if t < hi {
            let qb = q4 * quarter;
            if fused && t == pos {
                for (var d = 0u; d < quarter; d += 4u) {
                    part_dot += dot(vec4<f32>(qs[qb + d], qs[qb + d + 1u], qs[qb + d + 2u], qs[qb + d + 3u]),
                                    vec4<f32>(kc[qb + d], kc[qb + d + 1u], kc[qb + d + 2u], kc[qb + d + 3u]));
                }
            } else {
                let kb = (t * p.kv_stride + kvh * p.head_dim_k + q4 * quarter) / 4u;
                for (var d = 0u; d < quarter; d += 4u) {
                    part_dot += dot(vec4<f32>(qs[qb + d], qs[qb + d + 1u], qs[qb + d + 2u], qs[qb + d + 3u]),
                                    vec4<f32>(kv[kb + d / 4u]));
                }
            }
        }
        sc[tid] = part_dot;
        workgroupBarrier();
        let live = tid < TILE && t0 + tid < hi;
        var s = NEG;
        if live {
            s = (sc[4u * tid] + sc[4u * tid + 1u] + sc[4u * tid + 2u] + sc[4u * tid + 3u]) * p.scale;
            if p.softcap > 0.0 {
                s = p.softcap * tanh(s / p.softcap);
            }
        }
        let m_new = max(m, tile_max(tid, s));
        let alpha = exp(m - m_new);
        var pt = 0.0;
        if live {
            pt = exp(s - m_new);
        }
        if tid < TILE {
            ps[tid] = pt;
        }
        // (tile_sum's barrier also publishes ps.)
        l = l * alpha + tile_sum(tid, pt);
        let nt = min(TILE, hi - t0);
        // fuse: key pos (the last of the range) comes from shared memory, not the cache.
        let own = fused && pos >= t0 && pos < t0 + nt;
        let ncached = select(nt, pos - t0, own);
        if kg < n_groups {
            var a = acc * alpha;
            // Keys kg, kg + n_groups, …: four independent loads in flight per step.
            let vb = (t0 * p.kv_stride + p.k_dim + kvh * p.head_dim_v) / 4u + d4;
            let ks = p.kv_stride / 4u;
            let g = n_groups;
            var u = kg;
            for (; u + 3u * g < ncached; u += 4u * g) {
                let v0 = vec4<f32>(kv[vb + u * ks]);
                let v1 = vec4<f32>(kv[vb + (u + g) * ks]);
                let v2 = vec4<f32>(kv[vb + (u + 2u * g) * ks]);
                let v3 = vec4<f32>(kv[vb + (u + 3u * g) * ks]);
                a += ps[u] * v0 + ps[u + g] * v1 + ps[u + 2u * g] * v2 + ps[u + 3u * g] * v3;
            }
            for (; u < ncached; u += g) {
                a += ps[u] * vec4<f32>(kv[vb + u * ks]);
            }
            if own && (pos - t0) % g == kg {
                let o = 4u * d4;
                a += ps[pos - t0] * vec4<f32>(vc[o], vc[o + 1u], vc[o + 2u], vc[o + 3u]);
            }
            acc = a;
        }
        m = m_new;
        workgroupBarrier();
    }
    // Combine the key groups (in group order).
    if kg < n_groups {
        let o = kg * p.head_dim_v + 4u * d4;
        comb[o] = acc.x;
        comb[o + 1u] = acc.y;
        comb[o + 2u] = acc.z;
        comb[o + 3u] = acc.w;
    }
    workgroupBarrier();
    if tid < p.head_dim_v {
        let d = tid;
        var a = 0.0;
        for (var k = 0u; k < n_groups; k++) {
            a += comb[k * p.head_dim_v + d];
        }
        if p.n_split == 1u {
            out[row * p.out_stride + h * p.head_dim_v + d] = a / l;
        } else {
            part[((rr * p.n_head + h) * p.n_split + z) * (p.head_dim_v + 2u) + 2u + d] = a;
        }
    }
    if p.n_split > 1u && tid == 0u {
        let pb = ((rr * p.n_head + h) * p.n_split + z) * (p.head_dim_v + 2u);
        part[pb] = m;
        part[pb + 1u] = l;
    }
}
