// y[r][j] = Σ_k W[j][k] · in(x)[r][k]: a group of lanes per output feature (see below);
// activation rows in tiles of RT so each weight chunk is decoded once per tile. Prepended with one
// quant_*.wgsl, which supplies `load8(row_word, chunk)`, and matmul_common.wgsl (MmParams, the
// bindings, the input modes: silu4/gelu4, load_x).

// 256 threads: `tpr` threads (a "row group", a power of two from 16 to 256) per output
// feature, 256 / tpr features per workgroup; the host picks tpr so narrow matrices with long
// rows still spread over enough workgroups.
const WG: u32 = 256u;
const RT: u32 = 8u;

// Per activation row of the tile: partial dot products, then sums of squares.
var<workgroup> red: array<f32, 4096>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let tpr = p.tpr;
    let lane = tid % tpr;
    let j = (wg.x + wg.y * nwg.x) * (WG / tpr) + tid / tpr;
    let valid = j < p.rows;
    let n = select(step[0], step[1], p.gather != 0u);
    let logit_base = 4u + 2u * step[2];
    let nchunks = p.cols / 8u;
    let wrow = j * p.row_words;
    if n == 1u {
        // Decode: one activation row, four chunks' loads in flight per lane, then the tree.
        var xr = 0u;
        if p.gather != 0u {
            xr = step[logit_base];
        }
        var acc = vec2<f32>(0.0);
        if valid {
            acc = decode_lane_sum(wrow, xr * p.x_stride, lane, tpr, nchunks);
        }
        red[tid] = acc.x;
        red[RT * WG + tid] = acc.y;
        workgroupBarrier();
        for (var s = tpr / 2u; s > 0u; s >>= 1u) {
            if lane < s {
                red[tid] += red[tid + s];
                red[RT * WG + tid] += red[RT * WG + tid + s];
            }
            workgroupBarrier();
        }
        if valid && lane == 0u {
            store_y(0u, j, red[tid], red[RT * WG + tid]);
        }
        return;
    }
    for (var r0 = 0u; r0 < n; r0 += RT) {
        var acc = array<f32, RT>();
        var ss = array<f32, RT>();
        let nr = min(RT, n - r0);
        if valid {
            for (var c = lane; c < nchunks; c += tpr) {
                let wv = load8(wrow, c);
                var n0 = vec4<f32>(1.0);
                var n1 = vec4<f32>(1.0);
                if p.in_mode == 1u {
                    n0 = nw[2u * c];
                    n1 = nw[2u * c + 1u];
                }
                for (var rr = 0u; rr < nr; rr++) {
                    var xr = r0 + rr;
                    if p.gather != 0u {
                        xr = step[logit_base + xr];
                    }
                    let base = xr * p.x_stride + c * 8u;
                    let a0 = load_x(base);
                    let a1 = load_x(base + 4u);
                    acc[rr] += dot(wv[0], a0 * n0) + dot(wv[1], a1 * n1);
                    ss[rr] += dot(a0, a0) + dot(a1, a1);
                }
            }
        }
        // Reduce each row group's lanes (only the live activation rows).
        for (var rr = 0u; rr < nr; rr++) {
            red[rr * WG + tid] = acc[rr];
            red[(RT + rr) * WG + tid] = ss[rr];
        }
        workgroupBarrier();
        for (var s = tpr / 2u; s > 0u; s >>= 1u) {
            if lane < s {
                for (var i = 0u; i < nr; i++) {
                    red[i * WG + tid] += red[i * WG + tid + s];
                    if p.in_mode == 1u {
                        red[(RT + i) * WG + tid] += red[(RT + i) * WG + tid + s];
                    }
                }
            }
            workgroupBarrier();
        }
        // Lane l of the group writes activation row l of the tile.
        let gbase = tid - lane;
        if valid && lane < nr {
            var v = red[lane * WG + gbase];
            if p.in_mode == 1u {
                let ms = red[(RT + lane) * WG + gbase] / f32(p.cols);
                v *= 1.0 / sqrt(ms + p.eps);
            }
            if (p.out_mode & 1u) != 0u {
                v += bias[p.bias_offset + j];
            }
            let yi = (r0 + lane) * p.y_stride + p.y_offset + j;
            if (p.out_mode & 2u) != 0u {
                v += y[yi];
            }
            y[yi] = v;
        }
        workgroupBarrier();
    }
}
