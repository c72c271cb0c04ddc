// Decode matvec, one activation row: y[j] = Σ_k W[j][k] · in(x)[k].
//
// The activation row is staged in shared memory once per workgroup, KC values at a time, with
// the input mode applied there (norm weights; SiLU/GELU · up computed once per value, not once
// per weight row), so the inner loop reads each weight once, with the widest loads its block
// layout allows, and each lane decodes the scales of its part of a block once.
//
// Prepended with one matvec_<type>.wgsl (binding 1 `w`; BW weights per block, LPB lanes per
// block and `block_dot`, the dot product of one lane's part of a block with the staged
// values), matmul_params.wgsl, and one matvec_reduce_*.wgsl (`row_group_sum`,
// `workgroup_sum`). `tpr` lanes (a power of two, a multiple of LPB) per output feature; a row
// group of them takes `rpg` (1 … 4) features, WG / tpr apart, so a workgroup covers
// rpg · WG / tpr features (grid: `matvec_grid`).

const WG: u32 = 256u;
// Columns staged at a time: 12 KiB, so with the sums and the reductions' 1 KiB a workgroup
// stays within WebGPU's default 16 KiB of workgroup storage.
const KC: u32 = 3072u;

// Staged in(x) for columns k0 … k0 + KC of the current chunk.
var<workgroup> xs: array<vec4<f32>, 768>;
// Σ of each 16 staged values (the block decoders' min and offset terms need them per row; the
// values are the same for every row).
var<workgroup> xsum16: array<f32, 192>;

// Σ of staged values 16i … 16i + 15.
fn xsum(i: u32) -> f32 {
    return xsum16[i];
}

// The four bytes of q as floats without integer-to-float conversions (quarter-rate on some
// GPUs, and the decode matvecs convert every weight): each byte is placed in the mantissa of
// 2^23 and 2^23 taken off again, exactly.
fn bytes_f32(q: u32) -> vec4<f32> {
    let m = vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) & vec4<u32>(0xFFu);
    return bitcast<vec4<f32>>(m | vec4<u32>(0x4B000000u)) - vec4<f32>(8388608.0);
}

// The same for signed bytes: bias them by 128 (flip the sign bits), convert, take 128 off.
fn sbytes_f32(q: u32) -> vec4<f32> {
    return bytes_f32(q ^ 0x80808080u) - vec4<f32>(128.0);
}

// Where vec4 i of the chunk is stored: its low 3 bits XORed with bits 3 … 5 and 6 … 8, so the
// lanes of a phase that read vec4s 8, 16, 32 or 64 apart (a lane per block) hit different
// banks.
fn xsw(i: u32) -> u32 {
    return i ^ (((i >> 3u) ^ (i >> 6u)) & 7u);
}

// Staged values 4i … 4i + 3 of the current chunk.
fn xv(i: u32) -> vec4<f32> {
    return xs[xsw(i)];
}

// One staged vec4 before it is stored: in(x), and the norm weights in the normed mode.
struct Staged {
    v: vec4<f32>,
    n: vec4<f32>,
}

// Loads for vec4 i of the chunk at column k0 of the activation row at element xb (zero past
// the chunk's n4 vec4s).
fn stage_load(xb: u32, k0: u32, i: u32, n4: u32) -> Staged {
    var s = Staged(vec4<f32>(0.0), vec4<f32>(1.0));
    if i < n4 {
        s.v = load_x(xb + k0 + 4u * i);
        if p.in_mode == 1u {
            s.n = nw[k0 / 4u + i];
        }
    }
    return s;
}

// Store vec4 i (the norm weights applied); its Σ v² for the norm.
fn stage_store(i: u32, n4: u32, s: Staged) -> f32 {
    if i >= n4 {
        return 0.0;
    }
    xs[xsw(i)] = s.v * s.n;
    return dot(s.v, s.v);
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
        workgroupBarrier();
        // Four values' loads in flight per thread (the gated mode's gate and up come from L2, and
        // a loop that waits for each in turn made staging the longest part of long rows).
        let n4 = kc / 4u;
        for (var e = tid; e < n4; e += 4u * WG) {
            let v0 = stage_load(xb, k0, e, n4);
            let v1 = stage_load(xb, k0, e + WG, n4);
            let v2 = stage_load(xb, k0, e + 2u * WG, n4);
            let v3 = stage_load(xb, k0, e + 3u * WG, n4);
            ss += stage_store(e, n4, v0) + stage_store(e + WG, n4, v1) + stage_store(e + 2u * WG, n4, v2)
                + stage_store(e + 3u * WG, n4, v3);
        }
        workgroupBarrier();
        if tid < n4 / 4u {
            let i = 4u * tid;
            xsum16[tid] = dot(xv(i) + xv(i + 1u) + xv(i + 2u) + xv(i + 3u), vec4<f32>(1.0));
        }
        workgroupBarrier();
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
    for (var r = 0u; r < rpg; r++) {
        let a = select(select(select(acc.w, acc.z, r == 2u), acc.y, r == 1u), acc.x, r == 0u);
        let v = row_group_sum(tid, a, tpr);
        let j = j0 + r * gap;
        if j < p.rows && lane == 0u {
            store_y(0u, j, v, q);
        }
    }
}
