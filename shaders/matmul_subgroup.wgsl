// The matmul of matmul.wgsl with the lanes of a row group summed by subgroup shuffles instead
// of a shared-memory tree: no barriers. Used when the adapter has subgroups; the host keeps
// tpr ≤ the subgroup size (lanes of a row group then share a subgroup) and prepends one
// quant_*.wgsl and matmul_common.wgsl. (wgpu's SUBGROUP feature enables the builtins; naga 30 rejects `enable`.)

// 256 threads: `tpr` threads (a "row group", a power of two from 16 to 256) per output
// feature, 256 / tpr features per workgroup; the host picks tpr so narrow matrices with long
// rows still spread over enough workgroups.
const WG: u32 = 256u;
const RT: u32 = 8u;

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
        // Decode: one activation row, scalar sums, four chunks' loads in flight per lane.
        var xr = 0u;
        if p.gather != 0u {
            xr = step[logit_base];
        }
        var acc = vec2<f32>(0.0);
        if valid {
            acc = decode_lane_sum(wrow, xr * p.x_stride, lane, tpr, nchunks);
        }
        for (var o = tpr / 2u; o > 0u; o >>= 1u) {
            acc.x += subgroupShuffleXor(acc.x, o);
            acc.y += subgroupShuffleXor(acc.y, o);
        }
        if valid && lane == 0u {
            store_y(0u, j, acc.x, acc.y);
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
        // Butterfly over the row group's lanes: every lane ends with the sums; lane r keeps
        // activation row r's.
        var v = 0.0;
        var q = 0.0;
        for (var rr = 0u; rr < nr; rr++) {
            var a = acc[rr];
            var b = ss[rr];
            for (var o = tpr / 2u; o > 0u; o >>= 1u) {
                a += subgroupShuffleXor(a, o);
                b += subgroupShuffleXor(b, o);
            }
            if lane == rr {
                v = a;
                q = b;
            }
        }
        if valid && lane < nr {
            if p.in_mode == 1u {
                v *= 1.0 / sqrt(q / f32(p.cols) + p.eps);
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
    }
}
