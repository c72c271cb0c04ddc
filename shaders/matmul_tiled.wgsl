// Tiled matmul for many activation rows (prefill, scoring): a workgroup computes a tile of
// 64 output features × 64 activation rows, 32 columns at a time: the weight slice is decoded
// once into shared memory (norm weights folded in) and the activation slice loaded once, then
// each of the 256 threads accumulates 4 features × 4 rows. Same parameters, bindings and modes as
// matmul.wgsl (prepended with one quant_*.wgsl and matmul_common.wgsl); grid (⌈rows/64⌉, ⌈n/64⌉).

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;

var<workgroup> ws: array<vec4<f32>, 512>;  // [BK][BM/4]
var<workgroup> xs: array<vec4<f32>, 512>;  // [BK][BN/4]
var<workgroup> ssq: array<f32, 64>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let j0 = wg.x * BM;
    let r0 = wg.y * BN;
    let n = select(step[0], step[1], p.gather != 0u);
    let logit_base = 4u + 2u * step[2];
    let tx = tid % 16u;
    let ty = tid / 16u;
    var acc: array<vec4<f32>, 4>;
    if tid < 64u {
        ssq[tid] = 0.0;
    }
    for (var k0 = 0u; k0 < p.cols; k0 += BK) {
        // Weights: thread → (feature tid/4, chunk tid%4) of the slice; stored transposed.
        {
            let fr = tid / 4u;
            let ch = tid % 4u;
            let j = j0 + fr;
            var w0 = vec4<f32>(0.0);
            var w1 = vec4<f32>(0.0);
            if j < p.rows {
                let c = k0 / 8u + ch;
                let wv = load8(j * p.row_words, c);
                w0 = wv[0];
                w1 = wv[1];
                if p.in_mode == 1u {
                    w0 *= nw[2u * c];
                    w1 *= nw[2u * c + 1u];
                }
            }
            let kb = ch * 8u;
            let col = fr / 4u;
            let lane = fr % 4u;
            for (var i = 0u; i < 4u; i++) {
                ws[(kb + i) * 16u + col][lane] = w0[i];
                ws[(kb + 4u + i) * 16u + col][lane] = w1[i];
            }
        }
        // Activations: 64 rows × 32 columns = 512 vec4, two per thread.
        for (var e = tid; e < 512u; e += 256u) {
            let rr = e / 8u;
            let c4 = e % 8u;
            var v = vec4<f32>(0.0);
            if r0 + rr < n {
                var xr = r0 + rr;
                if p.gather != 0u {
                    xr = step[logit_base + xr];
                }
                v = load_x(xr * p.x_stride + k0 + c4 * 4u);
            }
            let col = rr / 4u;
            let lane = rr % 4u;
            for (var i = 0u; i < 4u; i++) {
                xs[(c4 * 4u + i) * 16u + col][lane] = v[i];
            }
        }
        workgroupBarrier();
        if p.in_mode == 1u && tid < 64u {
            var s = 0.0;
            let col = tid / 4u;
            let lane = tid % 4u;
            for (var k = 0u; k < BK; k++) {
                let v = xs[k * 16u + col][lane];
                s += v * v;
            }
            ssq[tid] += s;
        }
        for (var k = 0u; k < BK; k++) {
            let a = ws[k * 16u + tx];
            let b = xs[k * 16u + ty];
            acc[0] += a * b[0];
            acc[1] += a * b[1];
            acc[2] += a * b[2];
            acc[3] += a * b[3];
        }
        workgroupBarrier();
    }
    for (var jj = 0u; jj < 4u; jj++) {
        let r = r0 + ty * 4u + jj;
        if r >= n {
            continue;
        }
        var scale = 1.0;
        if p.in_mode == 1u {
            scale = 1.0 / sqrt(ssq[ty * 4u + jj] / f32(p.cols) + p.eps);
        }
        for (var i = 0u; i < 4u; i++) {
            let j = j0 + tx * 4u + i;
            if j < p.rows {
                var v = acc[jj][i] * scale;
                if (p.out_mode & 1u) != 0u {
                    v += bias[p.bias_offset + j];
                }
                let yi = r * p.y_stride + p.y_offset + j;
                if (p.out_mode & 2u) != 0u {
                    v += y[yi];
                }
                y[yi] = v;
            }
        }
    }
}
