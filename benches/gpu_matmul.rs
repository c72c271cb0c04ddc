//! GPU matrix products as the forward pass records them (`gpu::forward::MatmulProbe`: same
//! kernel choice, lanes and grid), in GB/s of weight bytes (decode) or multiply-adds per second
//! (prefill), on the shapes of the models the GPU targets are set on.
//!
//! `cargo bench -p chord-systems --bench gpu_matmul` (needs a GPU adapter; a software one is
//! used only with `CHORD_BENCH_SOFTWARE=1`). Each iteration records 64 (decode) or 4 (prefill) products in one
//! compute pass (dependent, as in a layer: they write the same output) and waits for them;
//! the weights are copied until the copies exceed the GPU's L2, and cycled.
//!
//! - `gpu_decode/<model>/<matrix>`: one activation row (a decode step).
//! - `gpu_prefill/<model>/<matrix>`: 512 activation rows (a prompt).
//! - `gpu_stream/…`: plain reads of 2–64 MB per dispatch, and of Q4_K-shaped blocks as the
//!   matvec reads them: the bandwidth a product of that size could reach.
//! - `gpu_floor/…`: the fixed cost of a dependent dispatch (bare, shared memory, barriers,
//!   bindings, a parameter read from a uniform buffer).

use std::time::Duration;

use chord_resources::GgmlType;
use chord_systems::gpu::GpuContext;
use chord_systems::gpu::forward::MatmulProbe;
use chord_systems::gpu::kernels::{IN_GATED, IN_PLAIN, IN_RMSNORM};
use chord_systems::kernels::matmul::WeightView;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod weights;

/// More than the L2 of the GPUs measured (50 MB on an H100).
const MIN_BYTES: usize = 256 << 20;

/// (model, matrix, type, rows, cols, input mode): the products of one layer.
const SHAPES: [(&str, &str, GgmlType, usize, usize, u32); 20] = [
    // Next to nothing to read: the fixed cost of a dependent matvec.
    ("floor", "32x256", GgmlType::F32, 32, 256, IN_PLAIN),
    ("floor", "64x256", GgmlType::Q4K, 64, 256, IN_RMSNORM),
    ("smollm2", "qkv", GgmlType::Q4_1, 960, 576, IN_RMSNORM),
    ("smollm2", "gate_up", GgmlType::Q4_1, 3072, 576, IN_RMSNORM),
    ("smollm2", "down", GgmlType::Q4_1, 576, 1536, IN_GATED),
    ("qwen05", "qkv", GgmlType::Q8_0, 1152, 896, IN_RMSNORM),
    ("qwen05", "out", GgmlType::Q5_0, 896, 896, IN_PLAIN),
    ("qwen05", "gate_up", GgmlType::Q5_0, 9728, 896, IN_RMSNORM),
    ("qwen05", "down", GgmlType::Q6K, 896, 4864, IN_GATED),
    ("qwen15", "qkv", GgmlType::Q4K, 2048, 1536, IN_RMSNORM),
    ("qwen15", "out", GgmlType::Q4K, 1536, 1536, IN_PLAIN),
    ("qwen15", "gate_up", GgmlType::Q4K, 17920, 1536, IN_RMSNORM),
    ("qwen15", "down", GgmlType::Q6K, 1536, 8960, IN_GATED),
    // Q4_K_M keeps Q6_K for some layers' down projections and Q4_K for the others.
    ("qwen15", "down", GgmlType::Q4K, 1536, 8960, IN_GATED),
    ("qwen15", "lm_head", GgmlType::Q6K, 151936, 1536, IN_RMSNORM),
    // One large square-ish shape per type: what each decoder streams at, shape effects aside.
    ("stream", "8192x4096", GgmlType::F32, 8192, 4096, IN_PLAIN),
    ("stream", "8192x4096", GgmlType::F16, 8192, 4096, IN_PLAIN),
    ("stream", "8192x4096", GgmlType::Q8_0, 8192, 4096, IN_PLAIN),
    ("stream", "8192x4096", GgmlType::Q4K, 8192, 4096, IN_PLAIN),
    ("stream", "8192x4096", GgmlType::Q6K, 8192, 4096, IN_PLAIN),
];

fn context() -> Option<GpuContext> {
    let software = std::env::var_os("CHORD_BENCH_SOFTWARE").is_some();
    match GpuContext::new(software) {
        Ok(c) => {
            eprintln!("gpu_matmul on {}", c.describe());
            Some(c)
        }
        Err(e) => {
            eprintln!("gpu_matmul: no GPU ({e}); nothing measured");
            None
        }
    }
}

/// `reps` products per iteration (the LM head only for decode: a prompt needs one logits row).
fn bench(c: &mut Criterion, ctx: &GpuContext, group: &str, n_rows: usize, reps: usize) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for (model, name, ty, rows, cols, mode) in SHAPES {
        if n_rows > 1 && (name == "lm_head" || model == "stream" || model == "floor") {
            continue;
        }
        let data = weights::random(ty, 7, rows, cols);
        let view = WeightView {
            ty,
            rows,
            cols,
            data: &data,
        };
        let probe = match MatmulProbe::new(ctx, view, n_rows, mode, MIN_BYTES) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{model}/{name}: {e}");
                continue;
            }
        };
        if n_rows == 1 {
            g.throughput(Throughput::BytesDecimal(probe.weight_bytes * reps as u64));
        } else {
            g.throughput(Throughput::Elements((rows * cols * n_rows * reps) as u64));
        }
        g.bench_function(format!("{model}/{name}_{ty}"), |b| {
            b.iter(|| probe.run(ctx, reps))
        });
    }
    g.finish();
}

/// The floor under a dependent dispatch: `reps` dispatches of a kernel that adds 1 to each of
/// `wgs × 256` floats of one buffer (each dispatch waits for the one before it).
fn floor(c: &mut Criterion, ctx: &GpuContext, reps: usize) {
    // The kernel alone, then with 12 KiB of workgroup memory (as the matvec stages), then with
    // that and three barriers (as the staging has).
    const PLAIN: &str = "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
        @compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) {\n\
        y[g.x] = y[g.x] + 1.0; }";
    const SHARED: &str = "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
        var<workgroup> s: array<vec4<f32>, 768>;\n\
        @compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>,\n\
        @builtin(local_invocation_index) l: u32) {\n\
        s[l] = vec4<f32>(y[g.x]);\n\
        /*B*/\n\
        y[g.x] = s[(l + 1u) % 256u].x + 1.0; }";
    let barrier = SHARED.replace(
        "/*B*/",
        "workgroupBarrier(); s[l + 256u] = s[l]; workgroupBarrier(); s[l + 512u] = s[l + 256u]; workgroupBarrier();",
    );
    let kernels = [
        ("", PLAIN.to_string()),
        ("_shared", SHARED.replace("/*B*/", "workgroupBarrier();")),
        ("_3barriers", barrier),
    ];
    let mut g = c.benchmark_group("gpu_floor");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for (kind, src) in kernels {
        let pipeline = plain_pipeline(ctx, "floor", &src);
        floor_runs(&mut g, ctx, &pipeline, kind, reps);
    }
    floor_bindings(&mut g, ctx, reps);
    floor_params(&mut g, ctx, reps);
    g.finish();
}

/// The floor with seven bindings as the matvec has (a uniform and six storage buffers, one
/// value read from each): one bind group for every dispatch, then a bind group of its own per
/// dispatch (as each product of the forward pass has), then own groups differing only in the
/// uniform buffer.
fn floor_bindings(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ctx: &GpuContext,
    reps: usize,
) {
    const SRC: &str = "struct P { a: u32, b: u32, c: u32, d: u32 }\n\
        @group(0) @binding(0) var<uniform> p: P;\n\
        @group(0) @binding(1) var<storage, read> b1: array<f32>;\n\
        @group(0) @binding(2) var<storage, read> b2: array<f32>;\n\
        @group(0) @binding(3) var<storage, read_write> y: array<f32>;\n\
        @group(0) @binding(4) var<storage, read> b4: array<f32>;\n\
        @group(0) @binding(5) var<storage, read> b5: array<f32>;\n\
        @group(0) @binding(6) var<storage, read> b6: array<f32>;\n\
        @compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) {\n\
        let i = g.x % p.a;\n\
        y[g.x] = y[g.x] + b1[i] + b2[i] + b4[i] + b5[i] + b6[i]; }";
    let pipeline = plain_pipeline(ctx, "floor7", SRC);
    let wgs = 96u32;
    let storage = |bytes: u64| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("floor7"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let uniform = || {
        use wgpu::util::DeviceExt;
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("floor7 p"),
                contents: bytemuck::cast_slice(&[64u32, 0, 0, 0]),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    };
    let y = storage(u64::from(wgs) * 256 * 4);
    let shared_inputs: Vec<wgpu::Buffer> = (0..5).map(|_| storage(1 << 16)).collect();
    let group = |u: &wgpu::Buffer, ins: &[&wgpu::Buffer]| {
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: u.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: y.as_entire_binding(),
            },
        ];
        for (b, buf) in [1u32, 2, 4, 5, 6].into_iter().zip(ins) {
            entries.push(wgpu::BindGroupEntry {
                binding: b,
                resource: buf.as_entire_binding(),
            });
        }
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("floor7"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    };
    let shared_refs: Vec<&wgpu::Buffer> = shared_inputs.iter().collect();
    let u0 = uniform();
    let one = vec![group(&u0, &shared_refs)];
    let own_bufs: Vec<(wgpu::Buffer, Vec<wgpu::Buffer>)> = (0..reps)
        .map(|_| (uniform(), (0..5).map(|_| storage(1 << 16)).collect()))
        .collect();
    let own: Vec<wgpu::BindGroup> = own_bufs
        .iter()
        .map(|(u, ins)| group(u, &ins.iter().collect::<Vec<_>>()))
        .collect();
    let own_uniforms: Vec<wgpu::Buffer> = (0..reps).map(|_| uniform()).collect();
    let own_u: Vec<wgpu::BindGroup> = own_uniforms
        .iter()
        .map(|u| group(u, &shared_refs))
        .collect();
    for (kind, groups) in [
        ("7bind_one", &one),
        ("7bind_own", &own),
        ("7bind_own_uniform", &own_u),
    ] {
        time_dispatches(
            g,
            ctx,
            &format!("_{kind}_{wgs}wg"),
            &pipeline,
            groups,
            wgs,
            reps,
        );
    }
}

/// `gpu_stream/<kind>_<MB>MB`: what a plain read of a product's weight bytes can stream, with
/// no decoding: `reps` dependent dispatches each reading `mb` MB (16-byte loads, consecutive
/// lanes on consecutive vec4s), windows cycled past the L2. Kinds: `oneshot4` (every thread
/// issues 4 loads and exits, as the decode matvec's lanes do) and `loop4` (528 workgroups
/// stepping over the window with 4 loads in flight; 2 or 8 loads streamed within ±10 % of 4 on
/// an H200).
fn stream(c: &mut Criterion, ctx: &GpuContext, reps: usize) {
    const SRC: &str = "@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;\n\
        @group(0) @binding(1) var<storage, read_write> y: array<u32>;\n\
        const U: u32 = 4u;\n\
        @compute @workgroup_size(256) fn main(@builtin(workgroup_id) wg: vec3<u32>,\n\
        @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {\n\
        let n = arrayLength(&w);\n\
        let g = wg.x + wg.y * nwg.x;\n\
        let step = nwg.x * nwg.y * 256u * U;\n\
        var acc = vec4<u32>(0u);\n\
        for (var base = g * 256u * U + l; base < n; base += step) {\n\
            var v: array<vec4<u32>, U>;\n\
            for (var u = 0u; u < U; u++) { v[u] = w[min(base + u * 256u, n - 1u)]; }\n\
            for (var u = 0u; u < U; u++) { acc ^= v[u]; }\n\
        }\n\
        let a = acc.x ^ acc.y ^ acc.z ^ acc.w;\n\
        if a == 0x9E3779B9u { y[l] = a; } }";
    let mut g = c.benchmark_group("gpu_stream");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    let buffer = |label, size| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let y = buffer("stream y", 1024);
    let w = buffer("stream w", STREAM_BYTES);
    let pipeline = plain_pipeline(ctx, "stream", SRC);
    for mb in [2u64, 8, 16, 64] {
        let bytes = mb << 20;
        let groups = stream_windows(ctx, &pipeline, &w, &y, bytes, reps);
        let oneshot = (bytes / (16 * 256 * 4)) as u32;
        for (kind, wgs) in [("oneshot4", oneshot), ("loop4", 528)] {
            g.throughput(Throughput::Bytes(bytes * reps as u64));
            let name = format!("{kind}_{mb}MB");
            time_in(&mut g, ctx, &name, &pipeline, &groups, wgs, reps);
        }
    }
    stream_blocks(&mut g, ctx, &w, &y, reps);
    g.finish();
}

/// The streamed buffer: more than the L2 of the GPUs measured, and whole windows of 64 MB.
const STREAM_BYTES: u64 = 320 << 20;

/// A compute pipeline of `src`'s `main` with its layout derived from the shader.
fn plain_pipeline(ctx: &GpuContext, label: &str, src: &str) -> wgpu::ComputePipeline {
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
    ctx.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
}

/// Bind groups of `pipeline` over consecutive `bytes`-long windows of `w` (each starting at a
/// multiple of 256 bytes; at most `reps` of them) as binding 0, and `y` as binding 1.
fn stream_windows(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    w: &wgpu::Buffer,
    y: &wgpu::Buffer,
    bytes: u64,
    reps: usize,
) -> Vec<wgpu::BindGroup> {
    let stride = bytes.next_multiple_of(256);
    let windows = (STREAM_BYTES / stride).min(reps as u64);
    (0..windows)
        .map(|i| {
            ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("stream"),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: w,
                            offset: i * stride,
                            size: std::num::NonZeroU64::new(bytes),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: y.as_entire_binding(),
                    },
                ],
            })
        })
        .collect()
}

/// `gpu_stream/q4k_<layout>_<MB>MB`: Q4_K-sized blocks (144 bytes: a 16-byte header and 128
/// bytes of quants) read as the decode matvec's lanes read them, two lanes per block, each the
/// header and its half of the quants (`aos`: blocks one after another, so a warp's load touches
/// 16 places 144 bytes apart), or with each workgroup's 128 blocks stored as their headers then
/// the quants interleaved so that consecutive lanes read consecutive 16 bytes (`soa`).
fn stream_blocks(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ctx: &GpuContext,
    w: &wgpu::Buffer,
    y: &wgpu::Buffer,
    reps: usize,
) {
    const SRC: &str = "@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;\n\
        @group(0) @binding(1) var<storage, read_write> y: array<u32>;\n\
        @compute @workgroup_size(256) fn main(@builtin(workgroup_id) wg: vec3<u32>,\n\
        @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {\n\
        let wid = wg.x + wg.y * nwg.x;\n\
        if (wid + 1u) * 1152u > arrayLength(&w) { return; }\n\
        /*LOAD*/\n\
        let acc = h ^ q0 ^ q1 ^ q2 ^ q3;\n\
        let a = acc.x ^ acc.y ^ acc.z ^ acc.w;\n\
        if a == 0x9E3779B9u { y[l] = a; } }";
    const AOS: &str = "let bb = (wid * 128u + l / 2u) * 9u; let q = bb + 1u + 4u * (l % 2u);\n\
        let h = w[bb]; let q0 = w[q]; let q1 = w[q + 1u]; let q2 = w[q + 2u]; let q3 = w[q + 3u];";
    const SOA: &str = "let base = wid * 1152u; let q = base + 128u + l;\n\
        let h = w[base + l / 2u]; let q0 = w[q]; let q1 = w[q + 256u]; let q2 = w[q + 512u];\n\
        let q3 = w[q + 768u];";
    for (layout, load) in [("aos", AOS), ("soa", SOA)] {
        let pipeline = plain_pipeline(ctx, "stream q4k", &SRC.replace("/*LOAD*/", load));
        for mb in [2u64, 16, 64] {
            // Whole workgroups of 128 blocks (18432 bytes).
            let wgs = ((mb << 20) / 18432) as u32;
            let bytes = u64::from(wgs) * 18432;
            let groups = stream_windows(ctx, &pipeline, w, y, bytes, reps);
            g.throughput(Throughput::Bytes(bytes * reps as u64));
            let name = format!("q4k_{layout}_{mb}MB");
            time_in(g, ctx, &name, &pipeline, &groups, wgs, reps);
        }
    }
}

/// `gpu_floor/dispatch_dep_<kind>`: what a dependent parameter load costs a dispatch. The kernel
/// reads one value at an index that depends on a parameter from a uniform buffer (as every
/// product's parameters are), or on a constant. (Immediate data, set before each dispatch, cost
/// more than the uniform on an H200: 4.9–5.3 against 4.5 µs.)
fn floor_params(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ctx: &GpuContext,
    reps: usize,
) {
    const SRC: &str = "struct P { a: u32, b: u32, c: u32, d: u32 }\n\
        /*P*/\n\
        @group(0) @binding(1) var<storage, read> b1: array<f32>;\n\
        @group(0) @binding(3) var<storage, read_write> y: array<f32>;\n\
        @compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) {\n\
        y[g.x] = y[g.x] + b1[g.x % /*A*/]; }";
    let wgs = 96u32;
    let storage = |bytes: u64| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("floor_dep"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let y = storage(u64::from(wgs) * 256 * 4);
    let b1 = storage(1 << 16);
    let u = {
        use wgpu::util::DeviceExt;
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("floor_dep p"),
                contents: bytemuck::cast_slice(&[64u32, 0, 0, 0]),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    };
    for kind in ["uniform", "const"] {
        let src = match kind {
            "uniform" => SRC
                .replace("/*P*/", "@group(0) @binding(0) var<uniform> p: P;")
                .replace("/*A*/", "p.a"),
            _ => SRC.replace("/*P*/", "").replace("/*A*/", "64u"),
        };
        let pipeline = plain_pipeline(ctx, "floor_dep", &src);
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 1,
                resource: b1.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: y.as_entire_binding(),
            },
        ];
        if kind == "uniform" {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: u.as_entire_binding(),
            });
        }
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("floor_dep"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let name = format!("_dep_{kind}_{wgs}wg");
        time_dispatches(g, ctx, &name, &pipeline, &[bind], wgs, reps);
    }
}

/// `gpu_floor/dispatch{name}`: `reps` dependent dispatches of `wgs` workgroups in one pass,
/// cycling through `groups` (bound once when there is one), submitted and waited for.
fn time_dispatches(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ctx: &GpuContext,
    name: &str,
    pipeline: &wgpu::ComputePipeline,
    groups: &[wgpu::BindGroup],
    wgs: u32,
    reps: usize,
) {
    g.throughput(Throughput::Elements(reps as u64));
    time_in(
        g,
        ctx,
        &format!("dispatch{name}"),
        pipeline,
        groups,
        wgs,
        reps,
    );
}

/// `reps` dispatches of `pipeline` (bind groups cycled), as `name` in `g`; a grid of more than
/// 65535 workgroups is folded into two dimensions.
fn time_in(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ctx: &GpuContext,
    name: &str,
    pipeline: &wgpu::ComputePipeline,
    groups: &[wgpu::BindGroup],
    wgs: u32,
    reps: usize,
) {
    let (gx, gy) = if wgs > 65535 {
        (65535, wgs.div_ceil(65535))
    } else {
        (wgs, 1)
    };
    g.bench_function(name, |b| {
        b.iter(|| {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipeline);
                for i in 0..reps {
                    if i == 0 || groups.len() > 1 {
                        pass.set_bind_group(0, &groups[i % groups.len()], &[]);
                    }
                    pass.dispatch_workgroups(gx, gy, 1);
                }
            }
            ctx.queue.submit([enc.finish()]);
            let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
        })
    });
}

fn floor_runs(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    kind: &str,
    reps: usize,
) {
    for wgs in [1u32, 96, 1024] {
        let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("floor y"),
            size: u64::from(wgs) * 256 * 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("floor"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: buf.as_entire_binding(),
            }],
        });
        let name = format!("{kind}_{wgs}wg");
        time_dispatches(g, ctx, &name, pipeline, &[bind], wgs, reps);
    }
}

fn gpu(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    stream(c, &ctx, 64);
    floor(c, &ctx, 64);
    bench(c, &ctx, "gpu_decode", 1, 64);
    bench(c, &ctx, "gpu_prefill", 512, 4);
}

criterion_group!(benches, gpu);
criterion_main!(benches);
