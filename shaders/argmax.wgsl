// Index of the largest logit of each logits row (ties: the lowest index; NaN never wins),
// so a greedy decode step reads back one u32 per sequence. The first n_mask ids of `mask`
// are never chosen (a sampler's logit bias of −∞, e.g. a benchmark masking end-of-generation).

struct ArgmaxParams {
    n_vocab: u32,
    n_rows: u32,
    n_mask: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: ArgmaxParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;

fn masked(i: u32) -> bool {
    for (var k = 0u; k < p.n_mask; k++) {
        if mask[k] == i {
            return true;
        }
    }
    return false;
}

const WG: u32 = 256u;
var<workgroup> bv: array<f32, WG>;
var<workgroup> bi: array<u32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.x;
    var best = -3.4e38;
    var idx = 0xffffffffu;
    for (var i = tid; i < p.n_vocab; i += WG) {
        let v = logits[r * p.n_vocab + i];
        if (v > best || (idx == 0xffffffffu && v == best)) && masked(i) {
            continue;
        }
        if v > best || (idx == 0xffffffffu && v == best) {
            best = v;
            idx = i;
        }
    }
    bv[tid] = best;
    bi[tid] = idx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if tid < s {
            let ov = bv[tid + s];
            let oi = bi[tid + s];
            if oi != 0xffffffffu && (bi[tid] == 0xffffffffu || ov > bv[tid] || (ov == bv[tid] && oi < bi[tid])) {
                bv[tid] = ov;
                bi[tid] = oi;
            }
        }
        workgroupBarrier();
    }
    if tid == 0u && r < p.n_rows {
        out[r] = select(bi[0], 0u, bi[0] == 0xffffffffu);
    }
}
