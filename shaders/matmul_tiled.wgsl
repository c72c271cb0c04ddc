// Tiled matmul for many activation rows (prefill, scoring): a workgroup computes a square tile
// of BT output features × BT activation rows (BT = 64 or 128, a constant the host prepends:
// `tiled_module` in shaders.rs), BK = BT/8 columns per step. Each of the (BT/8)² threads
// accumulates 8 features × 8 rows in registers (16 vec4, named, never indexed: no local memory).
// Per K step every thread decodes one 8-weight chunk (norm weights folded in) and loads two
// activation vec4 into registers for the next step while the current one, in shared memory
// (two buffers, stored transposed: [k][feature], [k][row]), is multiplied: one barrier a step.
// Same parameters, bindings and modes as matmul.wgsl (prepended with one quant_*.wgsl and
// matmul_common.wgsl); grid (⌈rows/BT⌉, ⌈n/BT⌉, splits) (`tiled_grid` in kernels.rs);
// cols % BK = 0.
//
// Split-K (p.splits = S > 1, for products with too few tiles to fill the GPU): workgroup z
// takes steps [z·steps/S, (z+1)·steps/S) and writes its raw sums to part[(z·n + r)·rows + j]
// and its rows' Σx² to part[S·n·rows + z·n + r]; the `reduce` entry point then adds the S
// parts in order (deterministic) and applies the epilogue. part[] holds S·n·(rows + 1).

const NT: u32 = (BT / 8u) * (BT / 8u);
const BK: u32 = BT / 8u;
const BT4: u32 = BT / 4u;
const BT8: u32 = BT / 8u;

var<workgroup> ws: array<vec4<f32>, 2u * BK * BT4>;  // [buf][k][feature/4]
var<workgroup> xs: array<vec4<f32>, 2u * BK * BT4>;  // [buf][k][row/4]
// After the last step, ws holds each thread's Σx² (ssq_of): 32 KiB of shared memory in all
// with 128 × 128 tiles (Metal's and most browsers' limit), 16 KiB with 64 × 64 (WebGPU's
// default limit).

fn ssq_of(t: u32) -> f32 {
    return ws[t / 4u][t % 4u];
}

@group(0) @binding(7) var<storage, read_write> part: array<f32>;

// This thread's share of one K step, read from global memory.
struct Stage {
    w0: vec4<f32>,
    w1: vec4<f32>,
    x0: vec4<f32>,
    x1: vec4<f32>,
}

// One step: BK columns from k0. Weights: thread → feature tid % BT, chunk tid / BT of the
// step. Activations: row tid % BT, vec4 tid / BT and tid / BT + BK/8 (NT = BT · BK/8 threads
// and BK/4 vec4 a row).
fn fetch(tid: u32, j0: u32, r0: u32, n: u32, k0: u32) -> Stage {
    var s: Stage;
    let f = tid % BT;
    let j = j0 + f;
    s.w0 = vec4<f32>(0.0);
    s.w1 = vec4<f32>(0.0);
    if j < p.rows {
        let c = k0 / 8u + tid / BT;
        let wv = load8(j * p.row_words, c);
        s.w0 = wv[0];
        s.w1 = wv[1];
        if p.in_mode == 1u {
            s.w0 *= nw[2u * c];
            s.w1 *= nw[2u * c + 1u];
        }
    }
    let rr = tid % BT;
    s.x0 = vec4<f32>(0.0);
    s.x1 = vec4<f32>(0.0);
    if r0 + rr < n {
        var xr = r0 + rr;
        if p.gather != 0u {
            xr = step[4u + 2u * step[2] + xr];
        }
        let base = xr * p.x_stride + k0;
        s.x0 = load_x(base + (tid / BT) * 4u);
        s.x1 = load_x(base + (tid / BT + BK / 8u) * 4u);
    }
    return s;
}

// A step into shared buffer `buf`.
fn put(buf: u32, tid: u32, s: Stage) {
    let f = tid % BT;
    let kb = buf * BK;
    let kw = kb + (tid / BT) * 8u;
    let wi = kw * BT4 + f / 4u;
    let l = f % 4u;
    ws[wi][l] = s.w0.x;
    ws[wi + BT4][l] = s.w0.y;
    ws[wi + 2u * BT4][l] = s.w0.z;
    ws[wi + 3u * BT4][l] = s.w0.w;
    ws[wi + 4u * BT4][l] = s.w1.x;
    ws[wi + 5u * BT4][l] = s.w1.y;
    ws[wi + 6u * BT4][l] = s.w1.z;
    ws[wi + 7u * BT4][l] = s.w1.w;
    let xi0 = (kb + (tid / BT) * 4u) * BT4 + f / 4u;
    xs[xi0][l] = s.x0.x;
    xs[xi0 + BT4][l] = s.x0.y;
    xs[xi0 + 2u * BT4][l] = s.x0.z;
    xs[xi0 + 3u * BT4][l] = s.x0.w;
    let xi1 = xi0 + (BK / 2u) * BT4;
    xs[xi1][l] = s.x1.x;
    xs[xi1 + BT4][l] = s.x1.y;
    xs[xi1 + 2u * BT4][l] = s.x1.z;
    xs[xi1 + 3u * BT4][l] = s.x1.w;
}

// Output row r (local row rl) for features j, j+1, j+2, j+3 (vector v): 1/rms, bias, residual;
// with split-K, the raw sums of split z into part[].
fn out4(r: u32, rl: u32, n: u32, j: u32, v: vec4<f32>, z: u32) {
    if r >= n {
        return;
    }
    if p.splits > 1u {
        let pb = (z * n + r) * p.rows;
        for (var i = 0u; i < 4u; i++) {
            if j + i < p.rows {
                part[pb + j + i] = v[i];
            }
        }
        return;
    }
    var scale = 1.0;
    if p.in_mode == 1u {
        var q = 0.0;
        for (var t = rl; t < NT; t += BT) {
            q += ssq_of(t);
        }
        scale = 1.0 / sqrt(q / f32(p.cols) + p.eps);
    }
    let o = v * scale;
    let yb = r * p.y_stride + p.y_offset;
    for (var i = 0u; i < 4u; i++) {
        let jj = j + i;
        if jj < p.rows {
            var e = o[i];
            if (p.out_mode & 1u) != 0u {
                e += bias[p.bias_offset + jj];
            }
            if (p.out_mode & 2u) != 0u {
                e += y[yb + jj];
            }
            y[yb + jj] = e;
        }
    }
}

@compute @workgroup_size(NT)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let j0 = wg.x * BT;
    let r0 = wg.y * BT;
    let n = select(step[0], step[1], p.gather != 0u);
    let tx = tid % BT8;
    let ty = tid / BT8;
    // c<h><r>: features BT/2·h + 4·tx .. +3, row BT/2·(r / 4) + 4·ty + r % 4.
    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c02 = vec4<f32>(0.0);
    var c03 = vec4<f32>(0.0);
    var c04 = vec4<f32>(0.0);
    var c05 = vec4<f32>(0.0);
    var c06 = vec4<f32>(0.0);
    var c07 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c12 = vec4<f32>(0.0);
    var c13 = vec4<f32>(0.0);
    var c14 = vec4<f32>(0.0);
    var c15 = vec4<f32>(0.0);
    var c16 = vec4<f32>(0.0);
    var c17 = vec4<f32>(0.0);
    var sq = 0.0;
    let all_steps = p.cols / BK;
    let nsplit = max(p.splits, 1u);
    let z = wg.z;
    let first = z * all_steps / nsplit;
    let steps = (z + 1u) * all_steps / nsplit - first;
    var s = fetch(tid, j0, r0, n, first * BK);
    sq += dot(s.x0, s.x0) + dot(s.x1, s.x1);
    put(0u, tid, s);
    workgroupBarrier();
    for (var st = 0u; st < steps; st++) {
        let cur = st % 2u;
        let more = st + 1u < steps;
        if more {
            s = fetch(tid, j0, r0, n, (first + st + 1u) * BK);
            sq += dot(s.x0, s.x0) + dot(s.x1, s.x1);
        }
        let kb = cur * BK * BT4;
        for (var k = 0u; k < BK; k++) {
            let o = kb + k * BT4;
            let a0 = ws[o + tx];
            let a1 = ws[o + BT8 + tx];
            let b0 = xs[o + ty];
            let b1 = xs[o + BT8 + ty];
            c00 += a0 * b0.x;
            c01 += a0 * b0.y;
            c02 += a0 * b0.z;
            c03 += a0 * b0.w;
            c04 += a0 * b1.x;
            c05 += a0 * b1.y;
            c06 += a0 * b1.z;
            c07 += a0 * b1.w;
            c10 += a1 * b0.x;
            c11 += a1 * b0.y;
            c12 += a1 * b0.z;
            c13 += a1 * b0.w;
            c14 += a1 * b1.x;
            c15 += a1 * b1.y;
            c16 += a1 * b1.z;
            c17 += a1 * b1.w;
        }
        if more {
            put(1u - cur, tid, s);
        }
        workgroupBarrier();
    }
    ws[tid / 4u][tid % 4u] = sq;
    workgroupBarrier();
    // Split-K: the split's Σx² of each row, once per row tile (feature tile 0).
    if nsplit > 1u && wg.x == 0u && tid < BT && r0 + tid < n {
        var q = 0.0;
        for (var t = tid; t < NT; t += BT) {
            q += ssq_of(t);
        }
        part[nsplit * n * p.rows + z * n + r0 + tid] = q;
    }
    let ja = j0 + tx * 4u;
    let jb = ja + BT / 2u;
    let ra = ty * 4u;
    let rb = ra + BT / 2u;
    out4(r0 + ra, ra, n, ja, c00, z);
    out4(r0 + ra + 1u, ra + 1u, n, ja, c01, z);
    out4(r0 + ra + 2u, ra + 2u, n, ja, c02, z);
    out4(r0 + ra + 3u, ra + 3u, n, ja, c03, z);
    out4(r0 + rb, rb, n, ja, c04, z);
    out4(r0 + rb + 1u, rb + 1u, n, ja, c05, z);
    out4(r0 + rb + 2u, rb + 2u, n, ja, c06, z);
    out4(r0 + rb + 3u, rb + 3u, n, ja, c07, z);
    out4(r0 + ra, ra, n, jb, c10, z);
    out4(r0 + ra + 1u, ra + 1u, n, jb, c11, z);
    out4(r0 + ra + 2u, ra + 2u, n, jb, c12, z);
    out4(r0 + ra + 3u, ra + 3u, n, jb, c13, z);
    out4(r0 + rb, rb, n, jb, c14, z);
    out4(r0 + rb + 1u, rb + 1u, n, jb, c15, z);
    out4(r0 + rb + 2u, rb + 2u, n, jb, c16, z);
    out4(r0 + rb + 3u, rb + 3u, n, jb, c17, z);
}

// Split-K: y[r][j] from the S parts (in order) and the epilogue; one thread per output, grid
// `kernels::grid(⌈n·rows/256⌉)`.
@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let n = select(step[0], step[1], p.gather != 0u);
    let idx = (wg.y * ng.x + wg.x) * 256u + lid;
    if idx >= n * p.rows {
        return;
    }
    let r = idx / p.rows;
    let j = idx % p.rows;
    var v = 0.0;
    var q = 0.0;
    let qb = p.splits * n * p.rows;
    for (var z = 0u; z < p.splits; z++) {
        v += part[(z * n + r) * p.rows + j];
        q += part[qb + z * n + r];
    }
    store_y(r, j, v, q);
}
