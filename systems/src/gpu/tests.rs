//! GPU kernels against their CPU twins on random data, and naga validation of every shader.
//!
//! Without an adapter the kernel tests print why and pass, unless `CHORD_REQUIRE_GPU=1`
//! (CI, with lavapipe), where a missing adapter fails them.

use std::sync::OnceLock;

use chord_resources::GgmlType;
use chord_resources::config::RopeStyle;
use half::f16;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use wgpu::util::DeviceExt;

use super::kernels::*;
use super::upload::GpuMatrix;
use super::{GpuContext, shaders, uniform_bytes};
use crate::components::KvView;
use crate::kernels::matmul::{ActivationPrecision, WeightView, matmul};
use crate::kernels::{activation, attention, norm, rope};

/// The fixed-parameter attention module replaces whole fields only (`p.n_head` is a prefix of
/// `p.n_head_kv`) and leaves the per-step ones to the uniform.
#[test]
fn static_attention_replaces_whole_fields_only() {
    let st = AttnParams {
        n_head: 14,
        n_head_kv: 2,
        head_dim_k: 64,
        head_dim_v: 64,
        qkv_stride: 1152,
        out_stride: 896,
        kv_stride: 256,
        k_dim: 128,
        scale: 0.125,
        softcap: 0.0,
        n_rot: 64,
        neox: 1,
        ..Default::default()
    };
    let src = shaders::attention_module_static(false, false, &st);
    for gone in [
        "p.n_head",
        "p.head_dim_k",
        "p.kv_stride",
        "p.scale",
        "p.neox",
    ] {
        let left = src.match_indices(gone).any(|(i, _)| {
            !src[i + gone.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        });
        assert!(!left, "{gone} still read from the uniform");
    }
    for kept in ["p.start_pos", "p.n_split", "p.window", "p.table_base"] {
        assert!(src.contains(kept), "{kept} should stay per step");
    }
    assert!(src.contains("(14u) / (2u)"), "n_head / n_head_kv");
    naga_validated("attention_static", &src);
}

#[test]
fn every_shader_validates_with_naga() {
    for (name, src) in shaders::all_modules() {
        naga_validated(&name, &src);
    }
}

/// `src` parsed and validated by naga (panics naming `name` otherwise).
fn naga_validated(name: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        // unpack2x16float, core WGSL, is this capability in naga; subgroups for the
        // subgroup matmul (used only where the device has them).
        naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
            | naga::valid::Capabilities::SHADER_FLOAT16
            | naga::valid::Capabilities::SUBGROUP,
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    module
}

/// The decode matvecs with their parameters compiled in (`with_params`): the uniform is gone
/// (the forward pass binds them without binding 0), and the constant matches the WGSL struct,
/// field for field (a mismatch fails validation here instead of at pipeline creation).
#[test]
fn matvecs_with_compiled_parameters_validate_and_bind_no_uniform() {
    let p = MmParams {
        rows: 2048,
        cols: 1536,
        row_words: 216,
        in_mode: IN_RMSNORM,
        out_mode: OUT_BIAS,
        x_stride: 1536,
        y_stride: 2048,
        eps: 1e-6,
        tpr: 4,
        rpg: 1,
        rows_b: 1536,
        row_words_b: 336,
        ..Default::default()
    };
    let singles = shaders::TYPES.into_iter().map(|t| (t, None));
    let pairs = shaders::MATVEC_PAIRS.into_iter().map(|(a, b)| (a, Some(b)));
    for (ty, pair) in singles.chain(pairs) {
        for subgroups in [false, true] {
            let Some(module) = shaders::matvec_module_of(ty, pair, subgroups) else {
                continue;
            };
            let src = with_params(&module, &p);
            let name = format!("matvec {ty} {pair:?} subgroups {subgroups}");
            assert!(!src.contains("var<uniform> p"), "{name}: uniform left");
            let parsed = naga_validated(&name, &src);
            assert!(
                !parsed
                    .global_variables
                    .iter()
                    .any(|(_, v)| v.binding.as_ref().is_some_and(|b| b.binding == 0)),
                "{name}: something is still bound at 0"
            );
        }
    }
}

/// Workgroup storage of every module the browser may compile (no subgroups, no f16, the 64×64
/// tiles) stays within WebGPU's default limit, 16 KiB: a device that grants no more must still
/// create every pipeline.
#[test]
fn browser_shaders_fit_the_default_workgroup_storage() {
    for (name, src) in shaders::all_modules() {
        if name.contains("subgroup")
            || name.contains("_sg1")
            || name.contains("f16")
            || name.contains("tiled128")
        {
            continue;
        }
        let module = naga::front::wgsl::parse_str(&src).expect("parses");
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("layout");
        let bytes: u32 = module
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
            .map(|(_, v)| layouter[v.ty].size)
            .sum();
        assert!(bytes <= 16384, "{name}: {bytes} bytes of workgroup storage");
    }
}

fn ctx() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new(true) {
        Ok(c) => {
            eprintln!("GPU tests on {}", c.describe());
            Some(c)
        }
        Err(e) => {
            if std::env::var("CHORD_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("CHORD_REQUIRE_GPU=1 but {e}");
            }
            eprintln!("skipping GPU kernel tests: {e}");
            None
        }
    })
    .as_ref()
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

fn randn(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((r.next_u32() as f32 / u32::MAX as f32) * 2.0 - 1.0) * scale)
        .collect()
}

/// Random weights of `ty` (`rows × cols`), with the block scales set to sane f16 values.
fn random_weights(r: &mut ChaCha8Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    match ty {
        GgmlType::F32 => bytemuck::cast_slice(&randn(r, rows * cols, 1.0)).to_vec(),
        GgmlType::F16 => randn(r, rows * cols, 1.0)
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => {
            let bs = ty.type_size();
            let n = rows * cols / ty.block_size() * bs;
            let mut bytes: Vec<u8> = (0..n).map(|_| r.next_u32() as u8).collect();
            for block in bytes.chunks_exact_mut(bs) {
                let d = f16::from_f32(0.01 + (r.next_u32() % 100) as f32 * 1e-3).to_le_bytes();
                let m = f16::from_f32(-0.05 + (r.next_u32() % 100) as f32 * 1e-3).to_le_bytes();
                match ty {
                    GgmlType::Q6K => block[bs - 2..].copy_from_slice(&d),
                    GgmlType::Q4_1 | GgmlType::Q4K => {
                        block[..2].copy_from_slice(&d);
                        block[2..4].copy_from_slice(&m);
                    }
                    _ => block[..2].copy_from_slice(&d),
                }
            }
            bytes
        }
    }
}

fn storage_init(c: &GpuContext, data: &[u8]) -> wgpu::Buffer {
    c.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
}

fn uniform_init(c: &GpuContext, data: &[u8]) -> wgpu::Buffer {
    c.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: data,
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// Record into one compute pass with `record`, then read `out` back.
fn record_and_read(
    c: &GpuContext,
    out: &wgpu::Buffer,
    record: impl FnOnce(&mut wgpu::ComputePass<'_>),
) -> Vec<u8> {
    let read = c.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: out.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = c.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        record(&mut pass);
    }
    enc.copy_buffer_to_buffer(out, 0, &read, 0, out.size());
    c.queue.submit([enc.finish()]);
    super::forward::read_back_for_tests(c, &read)
}

/// Run one dispatch and read `out` back.
fn run(
    c: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer],
    groups: (u32, u32, u32),
    out: &wgpu::Buffer,
) -> Vec<u8> {
    run_from(c, pipeline, 0, buffers, groups, out)
}

/// `run` with the buffers bound from binding `first` on (1: a matvec with its parameters
/// compiled in, `Kernels::matvec_for`).
fn run_from(
    c: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    first: u32,
    buffers: &[&wgpu::Buffer],
    groups: (u32, u32, u32),
    out: &wgpu::Buffer,
) -> Vec<u8> {
    let numbered: Vec<_> = (first..)
        .zip(buffers.iter().map(|b| b.as_entire_binding()))
        .collect();
    let bg = bind_at(&c.device, pipeline, &numbered);
    record_and_read(c, out, |pass| {
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
    })
}

/// The tiled matmul (bindings 0..=7) over `grid`, then its split-K reduction (bindings 0, 3,
/// 5, 6, 7) where given; returns `out`.
fn run_tiled(
    c: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer; 8],
    grid: (u32, u32, u32),
    reduce: Option<(&wgpu::ComputePipeline, (u32, u32))>,
    out: &wgpu::Buffer,
) -> Vec<u8> {
    let all: Vec<_> = buffers.iter().map(|b| b.as_entire_binding()).collect();
    let bg = bind(&c.device, pipeline, &all);
    let rb = reduce.map(|(rp, _)| {
        let used: Vec<_> = [0u32, 3, 5, 6, 7]
            .into_iter()
            .map(|i| (i, buffers[i as usize].as_entire_binding()))
            .collect();
        bind_at(&c.device, rp, &used)
    });
    record_and_read(c, out, |pass| {
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(grid.0, grid.1, grid.2);
        if let (Some((rp, (rx, ry))), Some(rb)) = (reduce, rb.as_ref()) {
            pass.set_pipeline(rp);
            pass.set_bind_group(0, rb, &[]);
            pass.dispatch_workgroups(rx, ry, 1);
        }
    })
}

fn f32s(b: &[u8]) -> Vec<f32> {
    bytemuck::cast_slice(b).to_vec()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: gpu {g} vs cpu {w} (scale {scale})"
        );
    }
}

/// Bindings 0 and 2 … 6 of a product kernel (matmul_params.wgsl's order): the parameters `p`,
/// x, y (holding `y0`), the norm weights, the bias and a step buffer of `n` rows with logit
/// rows `logit_rows`; `with(w)` adds the weights as binding 1.
struct ProductBufs {
    ub: wgpu::Buffer,
    xb: wgpu::Buffer,
    yb: wgpu::Buffer,
    nb: wgpu::Buffer,
    bb: wgpu::Buffer,
    sb: wgpu::Buffer,
}

impl ProductBufs {
    #[allow(clippy::too_many_arguments)]
    fn new(
        c: &GpuContext,
        p: &MmParams,
        x: &[f32],
        y0: &[f32],
        nw: &[f32],
        bias: &[f32],
        n: usize,
        logit_rows: &[u32],
    ) -> Self {
        ProductBufs {
            ub: uniform_init(c, &uniform_bytes(p).unwrap()),
            xb: storage_init(c, bytemuck::cast_slice(x)),
            yb: storage_init(c, bytemuck::cast_slice(y0)),
            nb: storage_init(c, bytemuck::cast_slice(nw)),
            bb: storage_init(c, bytemuck::cast_slice(bias)),
            sb: step_buf(c, n, &[], logit_rows),
        }
    }

    fn with<'a>(&'a self, w: &'a wgpu::Buffer) -> [&'a wgpu::Buffer; 7] {
        [
            &self.ub, w, &self.xb, &self.yb, &self.nb, &self.bb, &self.sb,
        ]
    }
}

/// Step buffer with `n` rows (tokens / positions / logit rows given).
fn step_buf(c: &GpuContext, n: usize, tokens: &[u32], logit_rows: &[u32]) -> wgpu::Buffer {
    let cap = n.max(tokens.len()).max(logit_rows.len()).max(1);
    let mut s = vec![0u32; 4 + 3 * cap];
    s[0] = n as u32;
    s[1] = logit_rows.len() as u32;
    s[2] = cap as u32;
    s[4..4 + tokens.len()].copy_from_slice(tokens);
    s[4 + 2 * cap..4 + 2 * cap + logit_rows.len()].copy_from_slice(logit_rows);
    storage_init(c, bytemuck::cast_slice(&s))
}

/// The CPU twin of a fused GPU product: `view` against the `n` rows of `x` (each `cols` wide, or
/// `2·cols` in the gated mode: gate then up) after the input mode (`act` 1: GELU-tanh, else
/// SiLU), plus `bias`, plus `y0` where the product accumulates.
fn cpu_twin(
    view: WeightView<'_>,
    mode: u32,
    act: u32,
    x: &[f32],
    nw: &[f32],
    bias: &[f32],
    y0: Option<&[f32]>,
) -> Vec<f32> {
    let (rows, cols) = (view.rows, view.cols);
    let xw = if mode == IN_GATED { 2 * cols } else { cols };
    let n = x.len() / xw;
    let act_fn = if act == 1 {
        activation::gelu_tanh
    } else {
        activation::silu
    };
    let xin: Vec<f32> = match mode {
        IN_RMSNORM => {
            let mut o = vec![0.0; n * cols];
            norm::rms_norm(x, nw, 1e-5, &mut o);
            o
        }
        IN_GATED => x
            .chunks_exact(xw)
            .flat_map(|row| {
                let mut g = row[..cols].to_vec();
                activation::gated(&mut g, &row[cols..], act_fn);
                g
            })
            .collect(),
        _ => x.to_vec(),
    };
    let mut want = vec![0.0; n * rows];
    matmul(view, &xin, &mut want, ActivationPrecision::F32);
    for (i, v) in want.iter_mut().enumerate() {
        *v += bias[i % rows];
        if let Some(y0) = y0 {
            *v += y0[i];
        }
    }
    want
}

#[test]
fn matmul_matches_cpu_for_every_type_and_mode() {
    let Some(c) = ctx() else { return };
    eprintln!(
        "subgroups: {:?}; 128 × 128 tiles: {}",
        c.subgroup, c.kernels.tiled_large
    );
    let mut r = rng();
    let rows = 37;
    // 70 activation rows (tiles of 8), and one row (the decode path: four chunks in flight per
    // lane, then a remainder loop: 60 or 96 chunks of 8).
    let shapes = |ty: GgmlType| {
        [
            (512, 70),
            (if ty.block_size() == 256 { 768 } else { 480 }, 1),
        ]
    };
    for (ty, (cols, n)) in shaders::TYPES
        .into_iter()
        .flat_map(|ty| shapes(ty).map(|s| (ty, s)))
    {
        let data = random_weights(&mut r, ty, rows, cols);
        let view = WeightView {
            ty,
            rows,
            cols,
            data: &data,
        };
        let m = GpuMatrix::upload(c, "w", &[view]).expect("upload");
        assert_eq!(m.parts.len(), 1);
        let part = &m.parts[0];
        // The shared-memory kernel, and the subgroup one where the device has subgroups (its
        // lane count stays within the smallest subgroup, at least 8).
        // (pipeline, most lanes per feature; or None for a tiled kernel: its tile size,
        // split-K parts and reduction).
        let mut variants = vec![(&c.kernels.matmul[&ty], Some(64u32), 0, 1, None)];
        if let (Some(sg), Some(k)) = (c.subgroup, c.kernels.matmul_subgroup.get(&ty)) {
            variants.push((k, Some(sg.min(64)), 0, 1, None));
        }
        // The tiled kernels, every tile size the device runs, whole and in 3 split-K parts
        // (tpr unused; cols % 32 = 0).
        if cols % 32 == 0 {
            for ((k, reduce), tile) in c.kernels.matmul_tiled[&ty].iter().zip(shaders::TILES) {
                variants.push((k, None, tile, 1, None));
                variants.push((k, None, tile, 3, Some(reduce)));
            }
        }
        for (pipeline, max_tpr, tile, splits, reduce) in variants {
            for mode in [IN_PLAIN, IN_RMSNORM, IN_GATED] {
                let xw = if mode == IN_GATED { 2 * cols } else { cols };
                // The gated mode alternates SiLU and GELU(tanh) by weight type.
                let act = (ty as u32) % 2;
                let x = randn(&mut r, n * xw, 1.0);
                let nw = randn(&mut r, cols, 1.5);
                let bias = randn(&mut r, rows, 0.5);
                let y0 = randn(&mut r, n * rows, 1.0);
                let accumulate = mode == IN_GATED;
                let want = cpu_twin(
                    view,
                    mode,
                    act,
                    &x,
                    &nw,
                    &bias,
                    accumulate.then_some(&y0[..]),
                );
                let p = MmParams {
                    rows: rows as u32,
                    cols: cols as u32,
                    row_words: part.row_words as u32,
                    in_mode: mode,
                    out_mode: OUT_BIAS | if accumulate { OUT_ACCUMULATE } else { 0 },
                    x_stride: xw as u32,
                    y_stride: rows as u32,
                    eps: 1e-5,
                    up_offset: cols as u32,
                    act,
                    ..Default::default()
                };
                // Every lane count the host may pick gives the same result.
                let tpr = match max_tpr {
                    None => 16,
                    Some(m) => [16u32, 32, 64][(mode as usize + ty as usize) % 3].min(m),
                };
                let p = MmParams { tpr, splits, ..p };
                let b = ProductBufs::new(c, &p, &x, &y0, &nw, &bias, n, &[]);
                let got = match max_tpr {
                    None => {
                        let pb = storage_init(c, &vec![0u8; 4 * splits as usize * n * (rows + 1)]);
                        let [ub, w, xb, yb, nb, bb, sb] = b.with(&part.buf);
                        let bufs = [ub, w, xb, yb, nb, bb, sb, &pb];
                        let grid = tiled_grid(tile, rows as u32, n as u32, splits);
                        let red = reduce.map(|r| (r, tiled_reduce_grid(rows as u32, n as u32)));
                        run_tiled(c, pipeline, &bufs, grid, red, &b.yb)
                    }
                    Some(_) => {
                        let (gx, gy) = matmul_grid(rows as u32, tpr);
                        run(c, pipeline, &b.with(&part.buf), (gx, gy, 1), &b.yb)
                    }
                };
                assert_close(
                    &format!(
                        "matmul {ty} {n}x{cols} mode {mode} tpr {tpr} lanes {max_tpr:?} tile {tile} \
                         splits {splits}"
                    ),
                    &f32s(&got),
                    &want,
                    2e-4,
                );
            }
        }
    }
}

#[test]
fn matvec_block_sizes_match_the_shaders() {
    for ty in shaders::TYPES {
        let src = shaders::matvec_source(ty).expect("every GPU type has a matvec");
        let (bw, lpb) = matvec_block(ty).expect("and its block size");
        assert!(src.contains(&format!("const BW: u32 = {bw}u;")), "{ty} BW");
        assert!(
            src.contains(&format!("const LPB: u32 = {lpb}u;")),
            "{ty} LPB"
        );
    }
    // 6 Q4_K blocks of 2 lanes: 4 lanes, 3 iterations of 2 blocks; 280 workgroups.
    assert_eq!(matvec_tpr(GgmlType::Q4K, 17920, 1536), Some(4));
    // 35 blocks a row (a down projection): 64 lanes, 384 workgroups.
    assert_eq!(matvec_tpr(GgmlType::Q6K, 1536, 8960), Some(64));
    assert_eq!(matvec_tpr(GgmlType::Q4K, 1536, 8960), Some(64));
    assert_eq!(matvec_tpr(GgmlType::Q4K, 17920, 100), None);
    // 960 rows of 18 Q4_1 blocks: 4 lanes would leave 15 workgroups; 32 lanes give 120.
    assert_eq!(matvec_tpr(GgmlType::Q4_1, 960, 576), Some(32));
    // 3072 rows of them: 8 lanes, 96 workgroups.
    assert_eq!(matvec_tpr(GgmlType::Q4_1, 3072, 576), Some(8));
}

/// Native modules are compiled without naga's runtime checks (`pipeline_checked`'s unsafe
/// block): the same kernel built both ways gives the same bits, for every lane count and mode.
#[test]
fn trusted_modules_compute_what_checked_ones_do() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    let (ty, rows, cols) = (GgmlType::Q4K, 37, 5 * 256);
    let src = shaders::matvec_module(ty, c.subgroup.is_some()).expect("a Q4_K matvec");
    let build = |checked| pipeline_checked(&c.device, "matvec", &src, "main", false, checked);
    let (checked, trusted) = (build(true), build(false));
    let data = random_weights(&mut r, ty, rows, cols);
    let view = WeightView {
        ty,
        rows,
        cols,
        data: &data,
    };
    let m = GpuMatrix::upload(c, "w", &[view]).expect("upload");
    let part = &m.parts[0];
    for (mode, tpr) in [(IN_PLAIN, 2), (IN_RMSNORM, 8), (IN_GATED, 64)] {
        let xw = if mode == IN_GATED { 2 * cols } else { cols };
        let x = randn(&mut r, xw, 1.0);
        let nw = randn(&mut r, cols, 1.5);
        let bias = randn(&mut r, rows, 0.5);
        let p = MmParams {
            rows: rows as u32,
            cols: cols as u32,
            row_words: part.row_words as u32,
            in_mode: mode,
            out_mode: OUT_BIAS,
            x_stride: xw as u32,
            y_stride: rows as u32,
            eps: 1e-5,
            up_offset: cols as u32,
            tpr,
            rpg: 1,
            ..Default::default()
        };
        let outs: Vec<Vec<u8>> = [&checked, &trusted]
            .iter()
            .map(|pipeline| {
                let b = ProductBufs::new(c, &p, &x, &vec![0.0; rows], &nw, &bias, 1, &[0]);
                let (gx, gy) = matvec_grid(rows as u32, tpr, 1);
                run(c, pipeline, &b.with(&part.buf), (gx, gy, 1), &b.yb)
            })
            .collect();
        assert!(
            f32s(&outs[0]).iter().any(|v| *v != 0.0),
            "mode {mode}: no output"
        );
        assert_eq!(outs[0], outs[1], "mode {mode}, {tpr} lanes");
    }
}

#[test]
fn matvec_matches_cpu_for_every_type_mode_and_lane_count() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    let rows = 37;
    for ty in shaders::TYPES {
        let (bw, lpb) = matvec_block(ty).expect("every GPU type has a matvec");
        let bw = bw as usize;
        // One staged chunk, and a row longer than a chunk (3072 values) ending in a part.
        for cols in [3 * bw, (4096 / bw + 3) * bw] {
            let data = random_weights(&mut r, ty, rows, cols);
            let view = WeightView {
                ty,
                rows,
                cols,
                data: &data,
            };
            let m = GpuMatrix::upload(c, "w", &[view]).expect("upload");
            let part = &m.parts[0];
            let pipeline = &c
                .kernels
                .matvec_uniform(&c.device, ty, None)
                .expect("matvec");
            for mode in [IN_PLAIN, IN_RMSNORM, IN_GATED] {
                let xw = if mode == IN_GATED { 2 * cols } else { cols };
                let act = (ty as u32) % 2;
                // Three activation rows; the normed mode reads row 2 through the logit-row
                // gather (as the LM head does), the others row 0.
                let x = randn(&mut r, 3 * xw, 1.0);
                let gather = mode == IN_RMSNORM;
                let xr = if gather { 2 } else { 0 };
                let nw = randn(&mut r, cols, 1.5);
                let bias = randn(&mut r, rows, 0.5);
                let y0 = randn(&mut r, rows, 1.0);
                let accumulate = mode == IN_GATED;
                let want = cpu_twin(
                    view,
                    mode,
                    act,
                    &x[xr * xw..(xr + 1) * xw],
                    &nw,
                    &bias,
                    accumulate.then_some(&y0[..]),
                );
                // Every lane count, and rows per row group cycling through 1 … 4.
                let mut tpr = lpb;
                while tpr <= 256 {
                    let rpg = 1 + (tpr.trailing_zeros() + mode) % 4;
                    let p = MmParams {
                        rows: rows as u32,
                        cols: cols as u32,
                        row_words: part.row_words as u32,
                        in_mode: mode,
                        out_mode: OUT_BIAS | if accumulate { OUT_ACCUMULATE } else { 0 },
                        x_stride: xw as u32,
                        y_stride: rows as u32,
                        eps: 1e-5,
                        up_offset: cols as u32,
                        act,
                        gather: gather as u32,
                        tpr,
                        rpg,
                        ..Default::default()
                    };
                    let b = ProductBufs::new(c, &p, &x, &y0, &nw, &bias, 3, &[xr as u32]);
                    let (gx, gy) = matvec_grid(rows as u32, tpr, rpg);
                    let bufs = b.with(&part.buf);
                    let got = run(c, pipeline, &bufs, (gx, gy, 1), &b.yb);
                    let what = format!("matvec {ty} {cols} mode {mode} tpr {tpr} rpg {rpg}");
                    assert_close(&what, &f32s(&got), &want, 2e-4);
                    // The parameters compiled in, at the lane count the forward pass picks.
                    if Some(tpr) == matvec_tpr(ty, rows as u32, cols as u32) {
                        let cp = c
                            .kernels
                            .matvec_for(&c.device, ty, None, &p)
                            .expect("matvec");
                        let b = ProductBufs::new(c, &p, &x, &y0, &nw, &bias, 3, &[xr as u32]);
                        let got = run_from(c, &cp, 1, &b.with(&part.buf)[1..], (gx, gy, 1), &b.yb);
                        assert_close(&format!("{what} compiled"), &f32s(&got), &want, 2e-4);
                    }
                    tpr *= 2;
                }
            }
        }
    }
}

/// The decode matvec's OUT_GLU mode (gate/up writing act(gate)·up) for every type, both
/// activations, plain and normed input, at every lane count: the CPU's gate and up products
/// through the same activation; and the compiled-parameter kernel at the forward pass's lanes.
#[test]
fn matvec_glu_output_matches_cpu_gated_activation() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    let n_ff = 45;
    let rows = 2 * n_ff;
    for ty in shaders::TYPES {
        let (bw, lpb) = matvec_block(ty).expect("every GPU type has a matvec");
        let cols = 5 * bw as usize;
        let data = random_weights(&mut r, ty, rows, cols);
        let view = WeightView {
            ty,
            rows,
            cols,
            data: &data,
        };
        let m = GpuMatrix::upload(c, "gate_up", &[view]).expect("upload");
        let part = &m.parts[0];
        let pipeline = c
            .kernels
            .matvec_uniform(&c.device, ty, None)
            .expect("matvec");
        for (mode, act) in [(IN_RMSNORM, 0u32), (IN_PLAIN, 1)] {
            let x = randn(&mut r, cols, 1.0);
            let nw = randn(&mut r, cols, 1.5);
            let zero = vec![0.0; rows];
            let gu = cpu_twin(view, mode, 0, &x, &nw, &zero, None);
            let act_fn = if act == 1 {
                activation::gelu_tanh
            } else {
                activation::silu
            };
            let mut want = gu[..n_ff].to_vec();
            activation::gated(&mut want, &gu[n_ff..], act_fn);
            let mut tpr = lpb;
            while tpr <= 128 {
                let p = MmParams {
                    rows: rows as u32,
                    cols: cols as u32,
                    row_words: part.row_words as u32,
                    in_mode: mode,
                    out_mode: OUT_GLU,
                    x_stride: cols as u32,
                    y_stride: rows as u32,
                    eps: 1e-5,
                    up_offset: n_ff as u32,
                    act,
                    tpr,
                    rpg: 1,
                    ..Default::default()
                };
                // y starts as NaN: the up half is never written, the gate half always.
                let y0 = vec![f32::NAN; rows];
                let b = ProductBufs::new(c, &p, &x, &y0, &nw, &zero, 1, &[]);
                let (gx, gy) = matvec_grid(rows as u32, tpr, 1);
                let got = f32s(&run(c, &pipeline, &b.with(&part.buf), (gx, gy, 1), &b.yb));
                let what = format!("glu matvec {ty} mode {mode} act {act} tpr {tpr}");
                assert_close(&what, &got[..n_ff], &want, 2e-4);
                assert!(
                    got[n_ff..].iter().all(|v| v.is_nan()),
                    "{what}: wrote past n_ff"
                );
                if Some(tpr) == matvec_tpr(ty, rows as u32, cols as u32) {
                    let cp = c
                        .kernels
                        .matvec_for(&c.device, ty, None, &p)
                        .expect("matvec");
                    let b = ProductBufs::new(c, &p, &x, &y0, &nw, &zero, 1, &[]);
                    let got = f32s(&run_from(
                        c,
                        &cp,
                        1,
                        &b.with(&part.buf)[1..],
                        (gx, gy, 1),
                        &b.yb,
                    ));
                    assert_close(&format!("{what} compiled"), &got[..n_ff], &want, 2e-4);
                }
                tpr *= 2;
            }
        }
    }
}

#[test]
fn matvec_pair_matches_cpu_for_both_orders_and_modes() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    let cols = 768;
    for (ta, tb) in shaders::MATVEC_PAIRS {
        let (ra, rb) = (37, 21);
        let da = random_weights(&mut r, ta, ra, cols);
        let db = random_weights(&mut r, tb, rb, cols);
        let va = WeightView {
            ty: ta,
            rows: ra,
            cols,
            data: &da,
        };
        let vb = WeightView {
            ty: tb,
            rows: rb,
            cols,
            data: &db,
        };
        let m = GpuMatrix::upload(c, "w", &[va, vb]).expect("upload");
        assert_eq!(m.parts.len(), 2, "{ta} + {tb}: two parts");
        let pipeline = &c
            .kernels
            .matvec_uniform(&c.device, ta, Some(tb))
            .expect("pair");
        for mode in [IN_PLAIN, IN_RMSNORM, IN_GATED] {
            let xw = if mode == IN_GATED { 2 * cols } else { cols };
            let x = randn(&mut r, xw, 1.0);
            let nw = randn(&mut r, cols, 1.5);
            let bias = randn(&mut r, ra + rb, 0.5);
            let y0 = randn(&mut r, ra + rb, 1.0);
            let accumulate = mode == IN_GATED;
            let mut want = cpu_twin(va, mode, 0, &x, &nw, &bias[..ra], None);
            want.extend(cpu_twin(vb, mode, 0, &x, &nw, &bias[ra..], None));
            if accumulate {
                for (w, y) in want.iter_mut().zip(&y0) {
                    *w += y;
                }
            }
            // Lane counts that are multiples of both parts' lanes per block.
            for tpr in [4u32, 16, 64] {
                let p = MmParams {
                    rows: (ra + rb) as u32,
                    cols: cols as u32,
                    row_words: m.parts[0].row_words as u32,
                    in_mode: mode,
                    out_mode: OUT_BIAS | if accumulate { OUT_ACCUMULATE } else { 0 },
                    x_stride: xw as u32,
                    y_stride: (ra + rb) as u32,
                    eps: 1e-5,
                    up_offset: cols as u32,
                    tpr,
                    rpg: 1,
                    rows_b: ra as u32,
                    row_words_b: m.parts[1].row_words as u32,
                    ..Default::default()
                };
                let b = ProductBufs::new(c, &p, &x, &y0, &nw, &bias, 1, &[0]);
                let (gx, gy) = matvec_grid((ra + rb) as u32, tpr, 1);
                let [ub, wa, xb, yb, nb, bb, sb] = b.with(&m.parts[0].buf);
                let bufs = [ub, wa, xb, yb, nb, bb, sb, &m.parts[1].buf];
                let got = run(c, pipeline, &bufs, (gx, gy, 1), &b.yb);
                let what = format!("matvec pair {ta}+{tb} mode {mode} tpr {tpr}");
                assert_close(&what, &f32s(&got), &want, 2e-4);
                // The parameters compiled in (a fresh output: the run above accumulated).
                let cp = c
                    .kernels
                    .matvec_for(&c.device, ta, Some(tb), &p)
                    .expect("pair");
                let b = ProductBufs::new(c, &p, &x, &y0, &nw, &bias, 1, &[0]);
                let [_, wa, xb, yb, nb, bb, sb] = b.with(&m.parts[0].buf);
                let bufs = [wa, xb, yb, nb, bb, sb, &m.parts[1].buf];
                let got = run_from(c, &cp, 1, &bufs, (gx, gy, 1), &b.yb);
                assert_close(&format!("{what} compiled"), &f32s(&got), &want, 2e-4);
            }
        }
    }
}

#[test]
fn matmul_gathers_logit_rows() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    let (rows, cols, n) = (70, 64, 5);
    let ty = GgmlType::Q8_0;
    let data = random_weights(&mut r, ty, rows, cols);
    let view = WeightView {
        ty,
        rows,
        cols,
        data: &data,
    };
    let m = GpuMatrix::upload(c, "w", &[view]).unwrap();
    let x = randn(&mut r, n * cols, 1.0);
    let gather = [4u32, 1];
    let mut want = vec![0.0; gather.len() * rows];
    let xs: Vec<f32> = gather
        .iter()
        .flat_map(|&g| x[g as usize * cols..(g as usize + 1) * cols].to_vec())
        .collect();
    matmul(view, &xs, &mut want, ActivationPrecision::F32);
    let p = MmParams {
        rows: rows as u32,
        cols: cols as u32,
        row_words: m.parts[0].row_words as u32,
        x_stride: cols as u32,
        y_stride: rows as u32,
        gather: 1,
        tpr: 16,
        ..Default::default()
    };
    let ub = uniform_init(c, &uniform_bytes(&p).unwrap());
    let xb = storage_init(c, bytemuck::cast_slice(&x));
    let yb = storage_init(c, &vec![0u8; 4 * gather.len() * rows]);
    let dummy = storage_init(c, &[0u8; 16]);
    let sb = step_buf(c, n, &[], &gather);
    let got = run(
        c,
        &c.kernels.matmul[&ty],
        &[&ub, &m.parts[0].buf, &xb, &yb, &dummy, &dummy, &sb],
        (matmul_grid(rows as u32, 16).0, 1, 1),
        &yb,
    );
    assert_close("gathered matmul", &f32s(&got), &want, 2e-4);
    // One logits row (decode) through the subgroup kernel's one-row path.
    if let (Some(sg), Some(k)) = (c.subgroup, c.kernels.matmul_subgroup.get(&ty)) {
        let tpr = sg.min(16);
        let p = MmParams { tpr, ..p };
        let ub = uniform_init(c, &uniform_bytes(&p).unwrap());
        let yb = storage_init(c, &vec![0u8; 4 * rows]);
        let sb = step_buf(c, n, &[], &gather[..1]);
        let got = run(
            c,
            k,
            &[&ub, &m.parts[0].buf, &xb, &yb, &dummy, &dummy, &sb],
            (matmul_grid(rows as u32, tpr).0, 1, 1),
            &yb,
        );
        assert_close("gathered one-row matmul", &f32s(&got), &want[..rows], 2e-4);
    }
}

#[test]
fn get_rows_matches_cpu_dequantize_for_every_type() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    let (rows, cols) = (9, 256);
    let tokens = [3u32, 0, 8, 3, 100];
    for ty in shaders::TYPES {
        let data = random_weights(&mut r, ty, rows, cols);
        let view = WeightView {
            ty,
            rows,
            cols,
            data: &data,
        };
        let m = GpuMatrix::upload(c, "emb", &[view]).unwrap();
        let p = EmbParams {
            rows: rows as u32,
            cols: cols as u32,
            row_words: m.parts[0].row_words as u32,
            scale: 2.0,
            row_offset: 0,
            n_vocab: rows as u32,
            ..Default::default()
        };
        let ub = uniform_init(c, &uniform_bytes(&p).unwrap());
        let sb = step_buf(c, tokens.len(), &tokens, &[]);
        let out = storage_init(c, &vec![0u8; 4 * tokens.len() * cols]);
        let got = run(
            c,
            &c.kernels.get_rows[&ty],
            &[&ub, &m.parts[0].buf, &sb, &out],
            (tokens.len() as u32, 1, 1),
            &out,
        );
        let mut want = vec![0.0; tokens.len() * cols];
        for (i, &t) in tokens.iter().enumerate() {
            let row = &mut want[i * cols..(i + 1) * cols];
            view.dequantize_row((t as usize).min(rows - 1), row);
            row.iter_mut().for_each(|v| *v *= 2.0);
        }
        assert_close(&format!("get_rows {ty}"), &f32s(&got), &want, 1e-6);
    }
}

#[test]
fn rope_store_and_attention_match_cpu() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    // An f32 cache, and an f16 one where the device has SHADER_F16 (values rounded when
    // stored: the CPU twin then reads the same rounded values).
    let mut precisions = vec![false];
    if c.f16 {
        precisions.push(true);
    } else {
        eprintln!("no SHADER_F16 on {}: f32 cache only", c.describe());
    }
    let cases = [
        (RopeStyle::Normal, 4, 2, 64, 64),
        (RopeStyle::Neox, 6, 2, 128, 128),
        (RopeStyle::Neox, 2, 1, 32, 16),
    ];
    for (f16, (style, n_head, n_head_kv, hd, n_rot)) in
        precisions.into_iter().flat_map(|f| cases.map(|cs| (f, cs)))
    {
        let (rope_k, attn_k) = if f16 {
            match (&c.kernels.rope_store_f16, &c.kernels.attention_f16) {
                (Some(a), Some(b)) => (a, b),
                _ => panic!("SHADER_F16 without the f16 cache kernels"),
            }
        } else {
            (&c.kernels.rope_store, &c.kernels.attention)
        };
        let rnd = |v: &[f32]| -> Vec<f32> {
            if f16 {
                v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
            } else {
                v.to_vec()
            }
        };
        let up = |v: &[f32]| -> wgpu::Buffer {
            if f16 {
                let h: Vec<u16> = v.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
                storage_init(c, bytemuck::cast_slice(&h))
            } else {
                storage_init(c, bytemuck::cast_slice(v))
            }
        };
        let down = |b: &[u8]| -> Vec<f32> {
            if f16 {
                let h: &[u16] = bytemuck::cast_slice(b);
                h.iter().map(|&x| f16::from_bits(x).to_f32()).collect()
            } else {
                f32s(b)
            }
        };
        let tol_kv = if f16 { 2e-3 } else { 1e-5 };
        // The shared-memory-tree attention too (the kernels hold the subgroup one where the
        // device has subgroups).
        let tree = pipeline(
            &c.device,
            "attention_tree",
            &shaders::attention_module(f16, false),
        );
        let (qd, kd, vd) = (n_head * hd, n_head_kv * hd, n_head_kv * hd);
        let stride = qd + kd + vd;
        // And the kernel with the case's fixed parameters compiled in (as the forward pass
        // builds it).
        let statics = AttnParams {
            n_head: n_head as u32,
            n_head_kv: n_head_kv as u32,
            head_dim_k: hd as u32,
            head_dim_v: hd as u32,
            qkv_stride: stride as u32,
            out_stride: qd as u32,
            kv_stride: (kd + vd) as u32,
            k_dim: kd as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            softcap: 0.0,
            n_rot: n_rot as u32,
            neox: (style == RopeStyle::Neox) as u32,
            ..Default::default()
        };
        let fixed = c.kernels.attention_static(&c.device, f16, &statics);
        let attn_variants = [attn_k, &tree, &fixed];
        // A chunk of 5 rows at positions 70..75 after 70 cached positions (two key tiles).
        let (start_pos, n_rows, start_row) = (70usize, 5usize, 1usize);
        let total_rows = start_row + n_rows;
        let cap = 96;
        let qkv = randn(&mut r, total_rows * stride, 1.0);
        let mut cache = rnd(&randn(&mut r, cap * (kd + vd), 1.0));
        let base = 10000.0;
        let mut table = vec![0.0f32; total_rows * n_rot];
        let mut cpu_q = qkv.clone();
        for rr in 0..n_rows {
            let row = start_row + rr;
            let pos = start_pos + rr;
            let a = rope::rope_angles(pos, n_rot, base, None, 1.0);
            table[row * n_rot..row * n_rot + n_rot / 2].copy_from_slice(&a.cos);
            table[row * n_rot + n_rot / 2..(row + 1) * n_rot].copy_from_slice(&a.sin);
            let q = &mut cpu_q[row * stride..row * stride + qd + kd];
            rope::apply_rope(&mut q[..qd], hd, n_rot, style, &a);
            rope::apply_rope(&mut q[qd..], hd, n_rot, style, &a);
        }
        let mut want_cache = cache.clone();
        for rr in 0..n_rows {
            let row = start_row + rr;
            let dst = (start_pos + rr) * (kd + vd);
            want_cache[dst..dst + kd]
                .copy_from_slice(&cpu_q[row * stride + qd..row * stride + qd + kd]);
            want_cache[dst + kd..dst + kd + vd]
                .copy_from_slice(&qkv[row * stride + qd + kd..(row + 1) * stride]);
        }
        let want_cache = rnd(&want_cache);
        let rp = RopeParams {
            n_head: n_head as u32,
            n_head_kv: n_head_kv as u32,
            head_dim_k: hd as u32,
            head_dim_v: hd as u32,
            qkv_stride: stride as u32,
            q_dim: qd as u32,
            k_dim: kd as u32,
            n_rot: n_rot as u32,
            neox: (style == RopeStyle::Neox) as u32,
            start_row: start_row as u32,
            n_rows: n_rows as u32,
            start_pos: start_pos as u32,
            table_base: 0,
            kv_stride: (kd + vd) as u32,
            ..Default::default()
        };
        let ub = uniform_init(c, &uniform_bytes(&rp).unwrap());
        let qb = storage_init(c, bytemuck::cast_slice(&qkv));
        let kvb = up(&cache);
        let tb = storage_init(c, bytemuck::cast_slice(&table));
        let groups = (n_rows as u32, (n_head + n_head_kv) as u32, 1);
        let got_kv = run(c, rope_k, &[&ub, &qb, &kvb, &tb], groups, &kvb);
        assert_close(
            &format!("kv cache {style:?} f16 {f16}"),
            &down(&got_kv),
            &want_cache,
            tol_kv,
        );
        let got_q = f32s(&super::forward::read_back_for_tests(c, &copy_of(c, &qb)));
        for row in start_row..total_rows {
            assert_close(
                &format!("rotated q {style:?}"),
                &got_q[row * stride..row * stride + qd],
                &cpu_q[row * stride..row * stride + qd],
                1e-5,
            );
        }
        // Decode with RoPE and the K/V store fused into attention: the chunk's last row alone,
        // from the unrotated q/k, over a cache that lacks its position (poisoned there).
        let last = total_rows - 1;
        let pos = start_pos + n_rows - 1;
        let kvs = kd + vd;
        for (ak, (window, n_split)) in attn_variants
            .into_iter()
            .flat_map(|ak| [(0usize, 1u32), (0, 3), (40, 2)].map(|w| (ak, w)))
        {
            let mut poisoned = want_cache.clone();
            poisoned[pos * kvs..(pos + 1) * kvs].fill(f32::NAN);
            let shape = attention::AttentionShape {
                n_head,
                n_head_kv,
                head_dim_k: hd,
                head_dim_v: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                window: (window > 0).then_some(window),
                softcap: None,
            };
            let ks: Vec<f32> = (0..=pos)
                .flat_map(|t| want_cache[t * kvs..t * kvs + kd].to_vec())
                .collect();
            let vs: Vec<f32> = (0..=pos)
                .flat_map(|t| want_cache[t * kvs + kd..(t + 1) * kvs].to_vec())
                .collect();
            let mut want = vec![0.0; qd];
            attention::attention(
                &cpu_q[last * stride..last * stride + qd],
                &[pos],
                KvView::F32(&ks),
                KvView::F32(&vs),
                shape,
                &mut want,
            );
            let ap = AttnParams {
                n_head: n_head as u32,
                n_head_kv: n_head_kv as u32,
                head_dim_k: hd as u32,
                head_dim_v: hd as u32,
                qkv_stride: stride as u32,
                out_stride: qd as u32,
                kv_stride: kvs as u32,
                k_dim: kd as u32,
                start_row: last as u32,
                n_rows: 1,
                start_pos: pos as u32,
                window: window as u32,
                scale: shape.scale,
                softcap: 0.0,
                n_split,
                span: ((pos + 1).min(if window > 0 { window } else { pos + 1 }) as u32)
                    .div_ceil(n_split),
                fuse: 1,
                n_rot: n_rot as u32,
                neox: (style == RopeStyle::Neox) as u32,
                table_base: 0,
            };
            let ub = uniform_init(c, &uniform_bytes(&ap).unwrap());
            let qb = storage_init(c, bytemuck::cast_slice(&qkv));
            let kvb = up(&poisoned);
            let out = storage_init(c, &vec![0u8; 4 * total_rows * qd]);
            let part = storage_init(c, &vec![0u8; 4 * n_head * n_split as usize * (hd + 2)]);
            let groups = (1, n_head as u32, n_split);
            let bufs = [&ub, &qb, &kvb, &out, &part, &tb];
            let mut got = f32s(&run(c, ak, &bufs, groups, &out));
            if n_split > 1 {
                let g2 = (1, n_head as u32, 1);
                got = f32s(&run(
                    c,
                    &c.kernels.attn_merge,
                    &[&ub, &part, &out],
                    g2,
                    &out,
                ));
            }
            let what =
                format!("fused attention {style:?} f16 {f16} window {window} splits {n_split}");
            assert_close(&what, &got[last * qd..(last + 1) * qd], &want, 1e-4);
            let got_kv = down(&super::forward::read_back_for_tests(c, &copy_of(c, &kvb)));
            assert_close(&format!("{what}: cache"), &got_kv, &want_cache, tol_kv);
        }
        cache = want_cache;
        // Attention of the chunk over the cache (keys 0..=pos).
        for (ak, (window, n_split)) in attn_variants
            .into_iter()
            .flat_map(|ak| [(0usize, 1u32), (30, 1), (0, 3), (30, 4)].map(|w| (ak, w)))
        {
            let shape = attention::AttentionShape {
                n_head,
                n_head_kv,
                head_dim_k: hd,
                head_dim_v: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                window: (window > 0).then_some(window),
                softcap: None,
            };
            let q_rows: Vec<f32> = (start_row..total_rows)
                .flat_map(|row| cpu_q[row * stride..row * stride + qd].to_vec())
                .collect();
            let positions: Vec<usize> = (start_pos..start_pos + n_rows).collect();
            let ks: Vec<f32> = (0..cap)
                .flat_map(|t| cache[t * (kd + vd)..t * (kd + vd) + kd].to_vec())
                .collect();
            let vs: Vec<f32> = (0..cap)
                .flat_map(|t| cache[t * (kd + vd) + kd..(t + 1) * (kd + vd)].to_vec())
                .collect();
            let mut want = vec![0.0; n_rows * qd];
            attention::attention(
                &q_rows,
                &positions,
                KvView::F32(&ks),
                KvView::F32(&vs),
                shape,
                &mut want,
            );
            let ap = AttnParams {
                n_head: n_head as u32,
                n_head_kv: n_head_kv as u32,
                head_dim_k: hd as u32,
                head_dim_v: hd as u32,
                qkv_stride: stride as u32,
                out_stride: qd as u32,
                kv_stride: (kd + vd) as u32,
                k_dim: kd as u32,
                start_row: start_row as u32,
                n_rows: n_rows as u32,
                start_pos: start_pos as u32,
                window: window as u32,
                scale: shape.scale,
                softcap: 0.0,
                n_split,
                span: ((start_pos + n_rows) as u32).div_ceil(n_split),
                ..Default::default()
            };
            let ub = uniform_init(c, &uniform_bytes(&ap).unwrap());
            let qb = storage_init(c, bytemuck::cast_slice(&cpu_q));
            let kvb = up(&cache);
            let out = storage_init(c, &vec![0u8; 4 * total_rows * qd]);
            let part = storage_init(
                c,
                &vec![0u8; 4 * n_rows * n_head * n_split as usize * (hd + 2)],
            );
            let groups = (n_rows as u32, n_head as u32, n_split);
            let attn_bufs = [&ub, &qb, &kvb, &out, &part, &tb];
            let mut got = f32s(&run(c, ak, &attn_bufs, groups, &out));
            if n_split > 1 {
                let merge_bufs = [&ub, &part, &out];
                let g2 = (n_rows as u32, n_head as u32, 1);
                got = f32s(&run(c, &c.kernels.attn_merge, &merge_bufs, g2, &out));
            }
            assert_close(
                &format!("attention {style:?} f16 {f16} window {window} splits {n_split}"),
                &got[start_row * qd..total_rows * qd],
                &want,
                1e-4,
            );
        }
    }
}

fn copy_of(c: &GpuContext, b: &wgpu::Buffer) -> wgpu::Buffer {
    let read = c.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: b.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = c.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(b, 0, &read, 0, b.size());
    c.queue.submit([enc.finish()]);
    read
}

#[test]
fn argmax_matches_cpu() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    let n_vocab = 1000;
    let mut logits = randn(&mut r, 3 * n_vocab, 5.0);
    // A tie (the lower id wins) and a NaN (never wins).
    logits[n_vocab + 10] = 50.0;
    logits[n_vocab + 900] = 50.0;
    logits[2 * n_vocab] = f32::NAN;
    let lb = storage_init(c, bytemuck::cast_slice(&logits));
    let out = storage_init(c, &[0u8; 12]);
    let run_masked = |mask: &[u32]| -> Vec<u32> {
        // 7 slices of 143 ids: ties and masks fall in different slices.
        let p = ArgmaxParams {
            n_vocab: n_vocab as u32,
            n_rows: 3,
            n_mask: mask.len() as u32,
            n_groups: 7,
        };
        let ub = uniform_init(c, &uniform_bytes(&p).unwrap());
        let mb = storage_init(c, bytemuck::cast_slice(&[mask, &[0u32]].concat()));
        let part = storage_init(c, &[0xffu8; 8 * 3 * 7]);
        let binds = ArgmaxBinds::new(&c.device, &c.kernels, &ub, &lb, &out, &mb, &part);
        let mut enc = c.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            binds.record(&mut pass, &c.kernels, 3, 7);
        }
        c.queue.submit([enc.finish()]);
        let raw = super::forward::read_back_for_tests(c, &copy_of(c, &out));
        bytemuck::cast_slice(&raw).to_vec()
    };
    let got = run_masked(&[]);
    let want: Vec<u32> = logits
        .chunks_exact(n_vocab)
        .map(crate::sampling::argmax)
        .collect();
    assert_eq!(got, want);
    assert_eq!(got[1], 10);
    // Masked ids (logit bias -inf) never win: id 10 leaves its tie partner 900.
    let mut biased = logits.clone();
    for row in biased.chunks_exact_mut(n_vocab) {
        row[10] = f32::NEG_INFINITY;
        row[want[0] as usize] = f32::NEG_INFINITY;
    }
    let want_masked: Vec<u32> = biased
        .chunks_exact(n_vocab)
        .map(crate::sampling::argmax)
        .collect();
    assert_eq!(run_masked(&[10, want[0]]), want_masked);
    assert_eq!(want_masked[1], 900);
}

#[test]
fn oversized_tensors_are_split_by_rows() {
    let Some(c) = ctx() else { return };
    // Splitting is driven by the binding limit; exercise it by uploading views whose fused
    // size would pass it with the real limit — check the row bookkeeping of fused parts.
    let mut r = rng();
    let a = random_weights(&mut r, GgmlType::Q8_0, 8, 64);
    let b = random_weights(&mut r, GgmlType::Q4_1, 4, 64);
    let va = WeightView {
        ty: GgmlType::Q8_0,
        rows: 8,
        cols: 64,
        data: &a,
    };
    let vb = WeightView {
        ty: GgmlType::Q4_1,
        rows: 4,
        cols: 64,
        data: &b,
    };
    let m = GpuMatrix::upload(c, "qkv", &[va, va, vb]).unwrap();
    let parts: Vec<(usize, usize)> = m.parts.iter().map(|p| (p.row_offset, p.rows)).collect();
    assert_eq!(parts, vec![(0, 16), (16, 4)]);
    // A Q4_0 part widens to Q8_0 and fuses with the others.
    let q4 = random_weights(&mut r, GgmlType::Q4_0, 4, 64);
    let vq = WeightView {
        ty: GgmlType::Q4_0,
        data: &q4,
        ..vb
    };
    let m = GpuMatrix::upload(c, "qkv", &[va, va, vq]).unwrap();
    let parts: Vec<(usize, usize)> = m.parts.iter().map(|p| (p.row_offset, p.rows)).collect();
    assert_eq!(parts, vec![(0, 20)]);
}

#[test]
fn profile_tally_charges_each_interval_to_its_label() {
    let mut t = super::profile::Tally::default();
    // Ticks of 2 ns: start, a after 10 ticks, b after 5 more, a again after 1 more.
    t.add(&["start", "a", "b", "a"], &[100, 110, 115, 116], 2.0);
    t.add(&["start", "a", "b", "a"], &[0, 10, 15, 16], 2.0);
    assert_eq!(t.steps, 2);
    assert_eq!(t.kinds["a"], (44.0, 4));
    assert_eq!(t.kinds["b"], (20.0, 2));
    assert!(!t.kinds.contains_key("start"));
    assert_eq!(t.ns_per_step(), 32.0);
    let table = t.table();
    let a = table.find("| a |").expect("row a");
    let b = table.find("| b |").expect("row b");
    assert!(a < b, "most expensive first:\n{table}");
}

#[test]
fn profiler_reads_back_timestamps_written_inside_a_pass() {
    let Some(c) = ctx() else { return };
    let Some(mut prof) = super::profile::Profiler::new(c) else {
        eprintln!("skip: no timestamps inside passes on {}", c.describe());
        return;
    };
    // Real dispatches between the stamps: the argmax's passes over a random row.
    let n_vocab = 4096u32;
    let logits = randn(&mut rng(), n_vocab as usize, 1.0);
    let p = ArgmaxParams {
        n_vocab,
        n_rows: 1,
        n_mask: 0,
        n_groups: 4,
    };
    let ub = uniform_init(c, &uniform_bytes(&p).unwrap());
    let lb = storage_init(c, bytemuck::cast_slice(&logits));
    let out = storage_init(c, &[0u8; 16]);
    let mask = storage_init(c, &[0u8; 16]);
    let part = storage_init(c, &[0u8; 64]);
    let binds = ArgmaxBinds::new(&c.device, &c.kernels, &ub, &lb, &out, &mask, &part);
    for _ in 0..2 {
        let mut enc = c.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime();
            prof.stamp(&mut pass, super::profile::IDLE);
            binds.record(&mut pass, &c.kernels, 1, 4);
            prof.stamp(&mut pass, "argmax");
            binds.record(&mut pass, &c.kernels, 1, 4);
            prof.stamp(&mut pass, "argmax again");
        }
        assert_eq!(prof.pending(), 3);
        prof.resolve(&mut enc);
        c.queue.submit([enc.finish()]);
        prof.collect(c, true).expect("timestamps read back");
        assert_eq!(prof.pending(), 0);
    }
    let t = &prof.decode;
    assert_eq!(t.steps, 2);
    assert_eq!(t.kinds.len(), 2, "{:?}", t.kinds);
    for k in ["argmax", "argmax again"] {
        let (ns, n) = t.kinds[k];
        assert_eq!(n, 2);
        assert!(ns.is_finite() && ns >= 0.0, "{k}: {ns} ns");
    }
    assert!(prof.report().contains("| argmax |"));
    assert_eq!(prof.prefill.steps, 0);
}

#[test]
fn submits_split_a_step_into_growing_chunks() {
    use super::forward::submit_after;
    let at = |first, growth| -> Vec<usize> {
        (1..=30)
            .filter(|&d| submit_after(d, 30, first, growth))
            .collect()
    };
    assert_eq!(at(1, 2), [1, 3, 7, 15]);
    assert_eq!(at(2, 2), [2, 6, 14]);
    assert_eq!(at(4, 1), [4, 8, 12, 16, 20, 24, 28]);
    assert_eq!(at(0, 2), Vec::<usize>::new());
    // Never after the last layer (that submit is the step's own, with the readback).
    assert_eq!(at(5, 1).last(), Some(&25));
}

#[test]
fn topk_passes_match_the_samplers_order() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    // 5000 ids: 5 slices, then 320 candidates in one slice (two passes); 130 000: three.
    for n_vocab in [5000usize, 130_000] {
        let rows = 3;
        let mut logits = randn(&mut r, rows * n_vocab, 3.0);
        // Ties at the top (lower id first), a NaN (never a candidate), masked ids.
        logits[n_vocab + 4000] = 40.0;
        logits[n_vocab + 17] = 40.0;
        logits[n_vocab + 2500] = 40.0;
        logits[2 * n_vocab + 3] = f32::NAN;
        logits[2 * n_vocab + 4] = 50.0;
        let mask = [4u32, 77];
        logits[2 * n_vocab + 77] = 60.0;
        let lb = storage_init(c, bytemuck::cast_slice(&logits));
        let mb = storage_init(c, bytemuck::cast_slice(&[&mask[..], &[0u32]].concat()));
        let tk = TopkPasses::new(c, &lb, &mb, rows, n_vocab);
        tk.write_params(&c.queue, rows as u32, mask.len() as u32);
        let mut enc = c.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            tk.record(&mut pass, &c.kernels, rows as u32);
        }
        c.queue.submit([enc.finish()]);
        let raw = super::forward::read_back_for_tests(c, &copy_of(c, tk.out()));
        let words: &[u32] = bytemuck::cast_slice(&raw);
        for (row, l) in logits.chunks_exact(n_vocab).enumerate() {
            let mut want: Vec<(u32, f32)> = l
                .iter()
                .enumerate()
                .filter(|&(i, v)| !v.is_nan() && !mask.contains(&(i as u32)))
                .map(|(i, &v)| (i as u32, v))
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(TOPK_K);
            let got: Vec<(u32, f32)> = words[2 * TOPK_K * row..2 * TOPK_K * (row + 1)]
                .chunks_exact(2)
                .map(|p| (p[1], f32::from_bits(p[0])))
                .collect();
            assert_eq!(got, want, "n_vocab {n_vocab} row {row}");
        }
        assert_eq!(words[2 * TOPK_K + 1], 17, "ties: the lowest id first");
    }
}

#[test]
fn q4_0_and_q5_0_widen_to_q8_0_with_the_same_values() {
    let mut r = rng();
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        let data = random_weights(&mut r, ty, 4, 256);
        let wide = super::upload::to_q8_0(ty, &data).expect("widens");
        let mut a = vec![0.0f32; 4 * 256];
        let mut b = vec![0.0f32; 4 * 256];
        chord_resources::quant::dequantize(ty, &data, &mut a).unwrap();
        chord_resources::quant::dequantize(GgmlType::Q8_0, &wide, &mut b).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{ty}");
    }
    assert!(super::upload::to_q8_0(GgmlType::Q4_1, &[0u8; 20]).is_none());
    assert!(super::upload::to_q8_0(GgmlType::Q5_0, &[0u8; 21]).is_none());
}

#[test]
fn mixed_q5_0_and_q8_0_parts_fuse_into_one_dispatch() {
    let Some(c) = ctx() else { return };
    let mut r = rng();
    let cols = 256;
    let q = random_weights(&mut r, GgmlType::Q5_0, 40, cols);
    let v = random_weights(&mut r, GgmlType::Q8_0, 24, cols);
    let views = [
        WeightView {
            ty: GgmlType::Q5_0,
            rows: 40,
            cols,
            data: &q,
        },
        WeightView {
            ty: GgmlType::Q8_0,
            rows: 24,
            cols,
            data: &v,
        },
    ];
    let m = GpuMatrix::upload(c, "qkv", &views).expect("upload");
    assert_eq!(m.parts.len(), 1);
    assert_eq!((m.parts[0].ty, m.parts[0].rows), (GgmlType::Q8_0, 64));
    let x = randn(&mut r, cols, 1.0);
    let mut want = vec![0.0; 64];
    matmul(views[0], &x, &mut want[..40], ActivationPrecision::F32);
    matmul(views[1], &x, &mut want[40..], ActivationPrecision::F32);
    let p = MmParams {
        rows: 64,
        cols: cols as u32,
        row_words: m.parts[0].row_words as u32,
        x_stride: cols as u32,
        y_stride: 64,
        tpr: 16,
        ..Default::default()
    };
    let ub = uniform_init(c, &uniform_bytes(&p).unwrap());
    let xb = storage_init(c, bytemuck::cast_slice(&x));
    let yb = storage_init(c, &[0u8; 4 * 64]);
    let dummy = storage_init(c, &[0u8; 16]);
    let sb = step_buf(c, 1, &[], &[]);
    let got = run(
        c,
        &c.kernels.matmul[&GgmlType::Q8_0],
        &[&ub, &m.parts[0].buf, &xb, &yb, &dummy, &dummy, &sb],
        (matmul_grid(64, 16).0, 1, 1),
        &yb,
    );
    assert_close("fused Q5_0 + Q8_0", &f32s(&got), &want, 2e-4);
}
