// Decode matvec, one activation row: y[j] = Σ_k W[j][k] · in(x)[k].
//
// The activation row is staged in shared memory once per workgroup (matvec_stage.wgsl), so the
// inner loop reads each weight once, with the widest loads its block layout allows, and each
// lane decodes the scales of its part of a block once.
//
// Prepended with one matvec_<type>.wgsl (binding 1 `w`; BW weights per block, LPB lanes per
// block and `block_dot`, the dot product of one lane's part of a block with the staged
// values), matmul_params.wgsl, matvec_stage.wgsl and one matvec_reduce_*.wgsl
// (`row_group_sum`, `workgroup_sum`). `tpr` lanes (a power of two, a multiple of LPB) per output
// feature; a row group of them takes `rpg` (1 … 4) features, WG / tpr apart, so a workgroup
// covers rpg · WG / tpr features (grid: `matvec_grid`).
//
// out_mode bit 2 (OUT_GLU, one row per row group): the weights are [gate; up] (up rows from
// up_offset on) and the output is the gated activation act(gate_k)·up_k, k < up_offset: the
// first half of a workgroup's row groups take gate rows k, the second half the up rows
// k + up_offset, and the gate row's lane 0 stores the product (the down projection then stages
// these values as they are, instead of every one of its workgroups recomputing them from both
// halves). rpg = 1, tpr ≤ 128 (two row groups or more); the grid is that of all 2 · up_offset
// rows.

// OUT_GLU: the up rows' sums, for the gate rows of the same workgroup.
var<workgroup> glu_up: array<f32, 128>;

// act(g)·u of a gate and an up sum (q = Σx² for the fused RMSNorm).
fn store_glu(k: u32, g: f32, u: f32, q: f32) {
    var s = 1.0;
    if p.in_mode == 1u {
        s = 1.0 / sqrt(q / f32(p.cols) + p.eps);
    }
    let gv = vec4<f32>(g * s);
    var a = silu4(gv).x;
    if p.act == 1u {
        a = gelu4(gv).x;
    }
    y[p.y_offset + k] = a * (u * s);
}

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
    var j0 = (wg.x + wg.y * nwg.x) * gap * rpg + tid / tpr;
    let glu = (p.out_mode & 4u) != 0u;
    // OUT_GLU: pair k of the workgroup's gap / 2, gate (first half) or up row.
    let half = gap / 2u;
    let rg = tid / tpr;
    let k_glu = (wg.x + wg.y * nwg.x) * half + rg % half;
    if glu {
        j0 = k_glu + (rg / half) * p.up_offset;
    }
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
        ss += stage_chunk(xb, k0, kc, tid);
        // KC and cols are whole blocks, so every chunk is.
        let b0 = k0 / BW;
        let nb = kc / BW;
        if rpg == 1u {
            if j0 < p.rows {
                let wrow = j0 * p.row_words;
                var b = lane / LPB;
                // Two blocks' loads in flight per iteration.
                for (; b + bpi < nb; b += 2u * bpi) {
                    let d0 = block_dot(wrow, b0 + b, part, b * (BW / 4u));
                    let d1 = block_dot(wrow, b0 + b + bpi, part, (b + bpi) * (BW / 4u));
                    acc.x += d0 + d1;
                }
                if b < nb {
                    acc.x += block_dot(wrow, b0 + b, part, b * (BW / 4u));
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
    if glu {
        let v = row_group_sum(tid, acc.x, tpr);
        if lane == 0u && rg >= half {
            glu_up[rg - half] = v;
        }
        workgroupBarrier();
        if lane == 0u && rg < half && k_glu < p.up_offset {
            store_glu(k_glu, v, glu_up[rg], q);
        }
        return;
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
