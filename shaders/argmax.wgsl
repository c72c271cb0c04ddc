// Index of the largest logit of each logits row (ties: the lowest index; NaN never wins),
// so a greedy decode step reads back one u32 per sequence. The first n_mask ids of `mask`
// are never chosen (a sampler's logit bias of −∞, e.g. a benchmark masking end-of-generation).
// Two passes: `partial` (grid n_rows × n_groups) leaves the best (value, id) of each slice of
// the row in `part`; `reduce_slices` (grid n_rows) reduces a row's n_groups candidates.

struct ArgmaxParams {
    n_vocab: u32,
    n_rows: u32,
    n_mask: u32,
    n_groups: u32,
}

@group(0) @binding(0) var<uniform> p: ArgmaxParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<u32>;

const NONE: u32 = 0xffffffffu;
const WG: u32 = 256u;
var<workgroup> bv: array<f32, WG>;
var<workgroup> bi: array<u32, WG>;

fn masked(i: u32) -> bool {
    for (var k = 0u; k < p.n_mask; k++) {
        if mask[k] == i {
            return true;
        }
    }
    return false;
}

// Does candidate (v, i) beat (w, j)? NONE ids never win and always lose.
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
    return i != NONE && (j == NONE || v > w || (v == w && i < j));
}

// Tree-reduce the workgroup's candidates into bv[0], bi[0].
fn reduce(tid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if tid < s && beats(bv[tid + s], bi[tid + s], bv[tid], bi[tid]) {
            bv[tid] = bv[tid + s];
            bi[tid] = bi[tid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.x;
    let g = wg.y;
    let span = (p.n_vocab + p.n_groups - 1u) / p.n_groups;
    let lo = g * span;
    let hi = min(lo + span, p.n_vocab);
    var best = -3.4e38;
    var idx = NONE;
    // Increasing ids per thread, strict >: the lowest id of equal values stays.
    for (var i = lo + tid; i < hi; i += WG) {
        let v = logits[r * p.n_vocab + i];
        if (v > best || (idx == NONE && v == best)) && !masked(i) {
            best = v;
            idx = i;
        }
    }
    bv[tid] = best;
    bi[tid] = idx;
    reduce(tid);
    if tid == 0u && r < p.n_rows {
        part[2u * (r * p.n_groups + g)] = bitcast<u32>(bv[0]);
        part[2u * (r * p.n_groups + g) + 1u] = bi[0];
    }
}

@compute @workgroup_size(256)
fn reduce_slices(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.x;
    var best = -3.4e38;
    var idx = NONE;
    for (var g = tid; g < p.n_groups; g += WG) {
        let v = bitcast<f32>(part[2u * (r * p.n_groups + g)]);
        let i = part[2u * (r * p.n_groups + g) + 1u];
        if beats(v, i, best, idx) {
            best = v;
            idx = i;
        }
    }
    bv[tid] = best;
    bi[tid] = idx;
    reduce(tid);
    if tid == 0u && r < p.n_rows {
        out[r] = select(bi[0], 0u, bi[0] == NONE);
    }
}
