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
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("floor"),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("floor"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        floor_runs(&mut g, ctx, &pipeline, kind, reps);
    }
    floor_bindings(&mut g, ctx, reps);
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
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("floor7"),
            source: wgpu::ShaderSource::Wgsl(SRC.into()),
        });
    let pipeline = ctx
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("floor7"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
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
    g.bench_function(format!("dispatch{name}"), |b| {
        b.iter(|| {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipeline);
                for i in 0..reps {
                    if i == 0 || groups.len() > 1 {
                        pass.set_bind_group(0, &groups[i % groups.len()], &[]);
                    }
                    pass.dispatch_workgroups(wgs, 1, 1);
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
    floor(c, &ctx, 64);
    bench(c, &ctx, "gpu_decode", 1, 64);
    bench(c, &ctx, "gpu_prefill", 512, 4);
}

criterion_group!(benches, gpu);
criterion_main!(benches);
