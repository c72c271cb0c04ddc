// Decode matvec, one activation row: y[j] = Σ_k W[j][k] · in(x)[k].
//
// The activation row is staged in shared memory once per workgroup (matvec_stage.wgsl), so the
// inner loop reads each weight once, with the widest loads its block layout allows, and each
// lane decodes the scales of its part of a block once.
//
// Prepended with one matvec_<type>.wgsl (binding 1 `w`; BW weights per block, LPB lanes per
// block; `block_load`, one lane's loads of its part of a block as an `MvBlk`, `block_compute`,
// their dot product with the staged values, and `block_dot`, the two in one), matmul_params.wgsl, matvec_stage.wgsl and one matvec_reduce_*.wgsl
// (`row_group_sum`, `workgroup_sum`). `tpr` lanes (a power of two, a multiple of LPB) per output
// feature; a row group of them takes `rpg` (1 … 4) features, WG / tpr apart, so a workgroup
// covers rpg · WG / tpr features (grid: `matvec_grid`).

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32/*SG_PARAMS*/
) {
    /*SG_INIT*/
    let tpr = p.tpr;
    let rpg = p.rpg;
    let lane = tid % tpr;
    let gap = WG / tpr;
    // Row r (0 … rpg − 1) of this row group: j0 + r · gap.
    let j0 = (wg.x + wg.y * nwg.x) * gap * rpg + tid / tpr;
    var xb = 0u;
    if p.gather != 0u {
        xb = step[4u + 2u * step[2]] * p.x_stride;
    }
    // Blocks per iteration of a row group; this lane's part of each.
    let bpi = tpr / LPB;
    let part = lane % LPB;
    var acc = vec4<f32>(0.0);
    var ss = 0.0;
    for (var k0 = 0u; k0 < p.cols; k0 += KC) {
        let kc = min(KC, p.cols - k0);
        // KC and cols are whole blocks, so every chunk is.
        let b0 = k0 / BW;
        let nb = kc / BW;
        let wrow = j0 * p.row_words;
        // One row per row group: this lane's first block of the chunk is loaded before the
        // staging (its latency hides behind the staging's), each next block while the lane
        // computes the one before.
        let piped = rpg == 1u && j0 < p.rows;
        var b = lane / LPB;
        var cur: MvBlk;
        if piped && b < nb {
            cur = block_load(wrow, b0 + b, part);
        }
        ss += stage_chunk(xb, k0, kc, tid);
        /*Q8_STAGE*/
        if rpg == 1u {
            if piped {
                for (; b < nb; b += bpi) {
                    var next = cur;
                    if b + bpi < nb {
                        next = block_load(wrow, b0 + b + bpi, part);
                    }
                    acc.x += block_compute(cur, part, b * (BW / 4u));
                    cur = next;
                }
            }
        } else {
            // One block of each of the rows in flight per iteration.
            for (var b = lane / LPB; b < nb; b += bpi) {
                let xo = b * (BW / 4u);
                if j0 < p.rows {
                    acc.x += block_dot(j0 * p.row_words, b0 + b, part, xo);
                }
                if j0 + gap < p.rows {
                    acc.y += block_dot((j0 + gap) * p.row_words, b0 + b, part, xo);
                }
                if rpg > 2u && j0 + 2u * gap < p.rows {
                    acc.z += block_dot((j0 + 2u * gap) * p.row_words, b0 + b, part, xo);
                }
                if rpg > 3u && j0 + 3u * gap < p.rows {
                    acc.w += block_dot((j0 + 3u * gap) * p.row_words, b0 + b, part, xo);
                }
            }
        }
    }
    var q = 0.0;
    if p.in_mode == 1u {
        q = workgroup_sum(tid, ss);
    }
    for (var r = 0u; r < rpg; r++) {
        let a = select(select(select(acc.w, acc.z, r == 2u), acc.y, r == 1u), acc.x, r == 0u);
        let v = row_group_sum(tid, a, tpr);
        let j = j0 + r * gap;
        if j < p.rows && lane == 0u {
            store_y(0u, j, v, q);
        }
    }
}
