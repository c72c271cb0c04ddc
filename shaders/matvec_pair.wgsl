// Decode matvec over a projection stored as two parts of different weight types (a fused QKV
// whose v is Q6_K and q, k Q4_K, say), in one dispatch instead of two: rows below `rows_b` come
// from the first part (binding 1, matvec_<type>.wgsl's `block_dot`), the rest from the second
// (binding 7 `w_b`, its decoder renamed `block_dot_b`, BW_B, LPB_B; same BW). One row per row
// group, `tpr` a multiple of both parts' lanes per block. Prepended like matvec.wgsl, plus the
// second decoder.

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32/*SG_PARAMS*/
) {
    /*SG_INIT*/
    let tpr = p.tpr;
    let lane = tid % tpr;
    let j = (wg.x + wg.y * nwg.x) * (WG / tpr) + tid / tpr;
    var xb = 0u;
    if p.gather != 0u {
        xb = step[4u + 2u * step[2]] * p.x_stride;
    }
    let in_b = j >= p.rows_b;
    let lpb = select(LPB, LPB_B, in_b);
    let bpi = tpr / lpb;
    let part = lane % lpb;
    let wrow = select(j * p.row_words, (j - p.rows_b) * p.row_words_b, in_b);
    var acc = 0.0;
    var ss = 0.0;
    for (var k0 = 0u; k0 < p.cols; k0 += KC) {
        let kc = min(KC, p.cols - k0);
        ss += stage_chunk(xb, k0, kc, tid);
        let b0 = k0 / BW;
        let nb = kc / BW;
        if j < p.rows {
            for (var b = lane / lpb; b < nb; b += bpi) {
                if in_b {
                    acc += block_dot_b(wrow, b0 + b, part, b * (BW / 4u));
                } else {
                    acc += block_dot(wrow, b0 + b, part, b * (BW / 4u));
                }
            }
        }
    }
    var q = 0.0;
    if p.in_mode == 1u {
        q = workgroup_sum(tid, ss);
    }
    let v = row_group_sum(tid, acc, tpr);
    if j < p.rows && lane == 0u {
        store_y(0u, j, v, q);
    }
}
