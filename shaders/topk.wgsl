// The K best (value, id) of each logits row, best first, in the sampler's order (larger value
// first, equal values by lower id; NaN logits and masked ids are never candidates), so a
// sampling step with top-k ≤ K reads back K pairs instead of the row.
// One pass: grid (n_rows, n_slices); workgroup s sorts slice s of its row's input (at most
// SLICE entries) in shared memory (bitonic) and writes its K best to `out[row][s][0..K]`.
// The first pass reads the logits (mode 0); later passes read the pairs of the one before
// (mode 1), until one slice per row is left.

struct TopkParams {
    n_in: u32,
    n_slices: u32,
    n_rows: u32,
    mode: u32,
    n_mask: u32,
    in_stride: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: TopkParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> pairs_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> pairs_out: array<u32>;
@group(0) @binding(4) var<storage, read> mask: array<u32>;

const K: u32 = 64u;
const SLICE: u32 = 1024u;
const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

var<workgroup> sv: array<f32, SLICE>;
var<workgroup> si: array<u32, SLICE>;

fn masked(i: u32) -> bool {
    for (var k = 0u; k < p.n_mask; k++) {
        if mask[k] == i {
            return true;
        }
    }
    return false;
}

// Does entry a come before entry b? (NONE ids last.)
fn before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    return ai != NONE && (bi == NONE || av > bv || (av == bv && ai < bi));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.x;
    let s = wg.y;
    let lo = s * SLICE;
    for (var t = tid; t < SLICE; t += WG) {
        let i = lo + t;
        var v = 0.0;
        var id = NONE;
        if i < p.n_in {
            if p.mode == 0u {
                v = logits[r * p.in_stride + i];
                id = i;
                // NaN by its bits (WGSL may assume comparisons never see NaN).
                if (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u || masked(i) {
                    id = NONE;
                }
            } else {
                let b = 2u * (r * p.in_stride + i);
                v = bitcast<f32>(pairs_in[b]);
                id = pairs_in[b + 1u];
            }
        }
        sv[t] = v;
        si[t] = id;
    }
    workgroupBarrier();
    // Bitonic sort, best first.
    for (var size = 2u; size <= SLICE; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var t = tid; t < SLICE / 2u; t += WG) {
                let i = 2u * t - (t & (stride - 1u));
                let j = i + stride;
                let up = (i & size) == 0u;
                let vi = sv[i];
                let ii = si[i];
                let vj = sv[j];
                let ij = si[j];
                var swap = before(vj, ij, vi, ii);
                if !up {
                    swap = before(vi, ii, vj, ij);
                }
                if swap {
                    sv[i] = vj;
                    si[i] = ij;
                    sv[j] = vi;
                    si[j] = ii;
                }
            }
            workgroupBarrier();
        }
    }
    if r < p.n_rows {
        for (var t = tid; t < K; t += WG) {
            let o = 2u * ((r * p.n_slices + s) * K + t);
            pairs_out[o] = bitcast<u32>(sv[t]);
            pairs_out[o + 1u] = si[t];
        }
    }
}
