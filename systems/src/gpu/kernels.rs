//! Compiled pipelines and the uniform structs of each kernel (encoded with encase).

use std::collections::HashMap;
use std::sync::Mutex;

use chord_resources::GgmlType;
use encase::ShaderType;

use super::shaders;

#[derive(ShaderType, Clone, Copy, Debug, Default)]
pub struct MmParams {
    pub rows: u32,
    pub cols: u32,
    pub row_words: u32,
    pub in_mode: u32,
    pub out_mode: u32,
    pub x_stride: u32,
    pub y_stride: u32,
    pub y_offset: u32,
    pub bias_offset: u32,
    pub gather: u32,
    pub eps: f32,
    pub up_offset: u32,
    pub act: u32,
    pub tpr: u32,
    /// Matvec only: rows per row group (1 … 4), each workgroup covering `rpg · 256 / tpr` rows.
    pub rpg: u32,
    /// Split-K parts of the tiled matmul (0 or 1: none).
    pub splits: u32,
    /// Two-part matvec (matvec_pair.wgsl): the first row of the second part, its words per row.
    pub rows_b: u32,
    pub row_words_b: u32,
    pub _p0: u32,
    pub _p1: u32,
}

pub const IN_PLAIN: u32 = 0;
pub const IN_RMSNORM: u32 = 1;
pub const IN_GATED: u32 = 2;
pub const OUT_BIAS: u32 = 1;
pub const OUT_ACCUMULATE: u32 = 2;
/// Decode matvec only: [gate; up] weights, output act(gate)·up (matvec.wgsl).
pub const OUT_GLU: u32 = 4;

#[derive(ShaderType, Clone, Copy, Debug, Default)]
pub struct EmbParams {
    pub rows: u32,
    pub cols: u32,
    pub row_words: u32,
    pub scale: f32,
    pub row_offset: u32,
    pub n_vocab: u32,
    pub _p0: u32,
    pub _p1: u32,
}

#[derive(ShaderType, Clone, Copy, Debug, Default)]
pub struct RopeParams {
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim_k: u32,
    pub head_dim_v: u32,
    pub qkv_stride: u32,
    pub q_dim: u32,
    pub k_dim: u32,
    pub n_rot: u32,
    pub neox: u32,
    pub start_row: u32,
    pub n_rows: u32,
    pub start_pos: u32,
    pub table_base: u32,
    pub kv_stride: u32,
    pub _p0: u32,
    pub _p1: u32,
}

#[derive(ShaderType, Clone, Copy, Debug, Default)]
pub struct AttnParams {
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim_k: u32,
    pub head_dim_v: u32,
    pub qkv_stride: u32,
    pub out_stride: u32,
    pub kv_stride: u32,
    pub k_dim: u32,
    pub start_row: u32,
    pub n_rows: u32,
    pub start_pos: u32,
    pub window: u32,
    pub scale: f32,
    pub softcap: f32,
    pub n_split: u32,
    pub span: u32,
    /// RoPE and the K/V store fused (one-row chunks; see attention.wgsl).
    pub fuse: u32,
    pub n_rot: u32,
    pub neox: u32,
    pub table_base: u32,
}

#[derive(ShaderType, Clone, Copy, Debug, Default)]
pub struct ArgmaxParams {
    pub n_vocab: u32,
    pub n_rows: u32,
    pub n_mask: u32,
    /// Slices per row of the first pass (at most [`ARGMAX_GROUPS`]).
    pub n_groups: u32,
}

#[derive(ShaderType, Clone, Copy, Debug, Default)]
pub struct TopkParams {
    pub n_in: u32,
    pub n_slices: u32,
    pub n_rows: u32,
    pub mode: u32,
    pub n_mask: u32,
    pub in_stride: u32,
    pub _p0: u32,
    pub _p1: u32,
}

/// Candidates per row the top-k kernel keeps (`K` in topk.wgsl), and entries one of its
/// workgroups sorts (`SLICE`).
pub const TOPK_K: usize = 64;
pub const TOPK_SLICE: usize = 1024;

/// The top-k passes for rows of `n_vocab` logits: (entries per row read, slices) of each pass,
/// until one slice is left.
pub fn topk_passes(n_vocab: usize) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    let mut n = n_vocab.max(1);
    loop {
        let slices = n.div_ceil(TOPK_SLICE);
        v.push((n as u32, slices as u32));
        if slices == 1 {
            return v;
        }
        n = slices * TOPK_K;
    }
}

/// Slices of a logits row that the argmax's first pass reduces in parallel.
pub const ARGMAX_GROUPS: u32 = 64;

/// Most split-K partial rows (rows × splits) attention writes per chunk.
pub const MAX_PARTIALS: usize = 64;

/// Key splits and keys per split for a chunk of `n_rows` rows ending at `kv_len` positions,
/// each split at least `min_span` keys: decode spreads a long cache over up to 64 workgroups
/// per head; prefill has rows enough.
/// Up to `2 · min_span` keys stay in one split: a second workgroup per head would cost the
/// merge dispatch, which is dearer than walking the second tile.
pub fn attention_splits(kv_len: usize, n_rows: usize, min_span: usize) -> (u32, u32) {
    let max_split = (MAX_PARTIALS / n_rows.max(1)).max(1);
    let min_span = min_span.max(1);
    let n_split = if kv_len <= 2 * min_span {
        1
    } else {
        kv_len.div_ceil(min_span).clamp(1, max_split)
    };
    let span = kv_len.div_ceil(n_split).max(1);
    (n_split as u32, span as u32)
}

/// Lanes per output feature for a `rows × cols` matmul: 16, doubled (up to 256, and while
/// there are 8-element chunks for every lane) until there are at least 256 workgroups.
pub fn matmul_tpr(rows: u32, cols: u32) -> u32 {
    let mut tpr = 16u32;
    while tpr < 256 && rows.div_ceil(256 / tpr) < 256 && tpr * 2 <= cols / 8 {
        tpr *= 2;
    }
    tpr
}

/// The workgroup grid of a matmul over `rows` output features with `tpr` lanes each.
pub fn matmul_grid(rows: u32, tpr: u32) -> (u32, u32) {
    grid(rows.div_ceil(256 / tpr))
}

/// A measurement override from the environment, if set to a number.
fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The decode matvec's (weights per block, lanes per block) for `ty`: the `BW` and `LPB` of its
/// matvec_*.wgsl.
pub fn matvec_block(ty: GgmlType) -> Option<(u32, u32)> {
    Some(match ty {
        GgmlType::Q4K => (256, 2),
        GgmlType::Q6K => (256, 4),
        GgmlType::F32 => (32, 2),
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::F16 => {
            (32, 1)
        }
        _ => return None,
    })
}

/// Lanes per output feature for the decode matvec of a `rows × cols` matrix of `ty` (None: the
/// matvec does not take it, `cols` not being whole blocks). A power of two and a multiple of the
/// lanes per block, at most 32 (a workgroup then holds at least 8 rows to share the staged
/// activations): the largest that gives each lane at least 3 blocks and leaves at most 1/8 of
/// the lane-iterations idle (a row of 6 Q4_K blocks, 2 lanes each: 4 lanes, 3 iterations);
/// then doubled while that leaves fewer than 96 workgroups (256 and up to 64 lanes for rows of
/// 4096 columns and more) and there are blocks for the new lanes (small matrices are
/// latency-bound: more workgroups, more loads in flight at once).
/// Chosen from decode throughput on an H200 (`benches/gpu_matmul.rs`, RESULTS.md).
pub fn matvec_tpr(ty: GgmlType, rows: u32, cols: u32) -> Option<u32> {
    let (bw, lpb) = matvec_block(ty)?;
    if cols == 0 || !cols.is_multiple_of(bw) {
        return None;
    }
    let nb = cols / bw;
    // `CHORD_GPU_MV_TPR` (measurements): that many lanes, at least a block's.
    if let Some(t) = env_u32("CHORD_GPU_MV_TPR") {
        return Some(t.clamp(lpb, 256).next_power_of_two());
    }
    let mut best = lpb;
    let mut tpr = lpb;
    while tpr <= 32 {
        let bpi = tpr / lpb;
        let slots = nb.div_ceil(bpi) * bpi;
        if 3 * bpi <= nb && 8 * (slots - nb) <= slots {
            best = tpr;
        }
        tpr *= 2;
    }
    // Rows of 4096 columns and more (down projections: their staging is the longest) gain from
    // more workgroups: up to 64 lanes and 256 workgroups (qwen2.5-1.5B's 1536 × 8960 down on an
    // H200: Q4_K 281 → 341 GB/s, Q6_K 415 → 506).
    let (cap, target) = if cols >= 4096 { (64, 256) } else { (32, 96) };
    while best < cap && rows.div_ceil(256 / best) < target && best / lpb < nb {
        best *= 2;
    }
    Some(best)
}

/// Rows per row group for the matvec with `tpr` lanes per row: as many (up to 4) as keep at
/// least 512 workgroups, so the activations staged once per workgroup serve more weight rows
/// (`CHORD_GPU_MV_RPG` overrides, for measurements).
pub fn matvec_rpg(rows: u32, tpr: u32) -> u32 {
    if let Some(r) = env_u32("CHORD_GPU_MV_RPG") {
        return r.clamp(1, 4);
    }
    let mut rpg = 1;
    while rpg < 4 && rows.div_ceil(2 * rpg * 256 / tpr) >= 512 {
        rpg *= 2;
    }
    rpg
}

/// The workgroup grid of a matvec over `rows` features, `tpr` lanes and `rpg` rows per row group.
pub fn matvec_grid(rows: u32, tpr: u32, rpg: u32) -> (u32, u32) {
    grid(rows.div_ceil(rpg * 256 / tpr))
}

/// Activation rows from which the tiled matmul is used.
pub const TILED_MIN_ROWS: u32 = 16;

/// Most split-K parts of a tiled product.
pub const MAX_SPLITS: u32 = 8;

/// Workgroups a tiled product aims for (with 64-thread workgroups, about 8 per SM of an H100):
/// products with fewer tiles split their columns (`tiled_splits`).
pub const TILED_TARGET_GROUPS: u32 = 1024;

/// Columns each split-K part at least takes.
pub const MIN_SPLIT_COLS: u32 = 128;

/// Split-K parts for a tiled product of `rows` features × `cols` columns over `n_rows`
/// activation rows with `tile × tile` tiles: enough for `TILED_TARGET_GROUPS` workgroups, at
/// most `MAX_SPLITS`, each at least `MIN_SPLIT_COLS` columns (`CHORD_GPU_SPLITS=1`: never).
pub fn tiled_splits(tile: u32, rows: u32, cols: u32, n_rows: u32) -> u32 {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("CHORD_GPU_SPLITS").is_ok_and(|v| v == "1")) {
        return 1;
    }
    let (gx, gy) = tile_grid(tile, rows, n_rows);
    let want = TILED_TARGET_GROUPS.div_ceil((gx * gy).max(1));
    want.min(MAX_SPLITS).min(cols / MIN_SPLIT_COLS).max(1)
}

/// The grid of the tiled matmul with `tile × tile` outputs per workgroup and `splits` split-K
/// parts (z).
pub fn tiled_grid(tile: u32, rows: u32, n_rows: u32, splits: u32) -> (u32, u32, u32) {
    let (x, y) = tile_grid(tile, rows, n_rows);
    (x, y, splits.max(1))
}

fn tile_grid(tile: u32, rows: u32, n_rows: u32) -> (u32, u32) {
    (rows.div_ceil(tile), n_rows.div_ceil(tile))
}

/// The grid of the split-K reduction (`reduce` in matmul_tiled.wgsl): one thread per output.
pub fn tiled_reduce_grid(rows: u32, n_rows: u32) -> (u32, u32) {
    grid((rows * n_rows).div_ceil(256))
}

/// The tiled matmul of a `rows × cols` product over steps of at most `cap` rows: (index into
/// `shaders::TILES` / `Kernels::matmul_tiled`, split-K parts). Products that need split-K with
/// 64 × 64 tiles (fewer than `TILED_TARGET_GROUPS` of them) take 128 × 128 ones, unless those
/// leave more than a tenth of the features idle; `CHORD_GPU_TILE=64|128` forces a size.
/// (H200, 512 rows, split-K: 128 × 128 tiles were 10–17 % faster on the QKV and down
/// products of qwen2.5 and SmolLM2's QKV, 3–5 % slower on the gate/up ones, 18 % slower on
/// SmolLM2's down, 576 features: 4.5 tiles.)
/// Without `large` (the device cannot run them: `Kernels::tiled_large`) 64 × 64 always.
pub fn tiled_choice(rows: u32, cols: u32, cap: u32, large: bool) -> (usize, u32) {
    static FORCED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| {
        std::env::var("CHORD_GPU_TILE")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let (gx, gy) = tile_grid(64, rows, cap);
    let large = large
        && match forced {
            Some(t) => t == 128,
            None => gx * gy < TILED_TARGET_GROUPS && rows.next_multiple_of(128) * 10 <= rows * 11,
        };
    let i = usize::from(large);
    (i, tiled_splits(shaders::TILES[i], rows, cols, cap))
}

/// Workgroups along x at most (the rest goes to y).
pub const MAX_GROUPS_X: u32 = 32768;

/// A 2-D grid covering `n` workgroups.
pub fn grid(n: u32) -> (u32, u32) {
    let x = n.clamp(1, MAX_GROUPS_X);
    (x, n.div_ceil(x).max(1))
}

/// All pipelines, compiled once per device.
pub struct Kernels {
    pub matmul: HashMap<GgmlType, wgpu::ComputePipeline>,
    /// The tiled matmuls (many activation rows), per tile size of `shaders::TILES`: product
    /// and split-K reduction.
    /// and split-K reduction (only the first where not `tiled_large`).
    pub matmul_tiled: HashMap<GgmlType, Vec<(wgpu::ComputePipeline, wgpu::ComputePipeline)>>,
    /// The device runs 128 × 128 tiles (256 invocations, 32 KiB of workgroup memory).
    pub tiled_large: bool,
    /// The subgroup-reduction matmuls (empty without subgroups).
    pub matmul_subgroup: HashMap<GgmlType, wgpu::ComputePipeline>,
    /// The decode matvecs compiled so far ([`Kernels::matvec_for`], [`Kernels::matvec_uniform`])
    /// and the attention kernels with a model's parameters ([`Kernels::attention_static`]), by
    /// source: compiled on first use, as a model needs only a few of them.
    matvecs: Mutex<HashMap<String, wgpu::ComputePipeline>>,
    /// Subgroup sums in the matvecs.
    subgroups: bool,
    /// Subgroup reductions in attention (`CHORD_GPU_ATTN_TREE=1`: shared-memory trees).
    attn_subgroups: bool,
    pub get_rows: HashMap<GgmlType, wgpu::ComputePipeline>,
    pub rope_store: wgpu::ComputePipeline,
    pub attention: wgpu::ComputePipeline,
    /// The same over an f16 cache (devices with SHADER_F16).
    pub rope_store_f16: Option<wgpu::ComputePipeline>,
    pub attention_f16: Option<wgpu::ComputePipeline>,
    pub attn_merge: wgpu::ComputePipeline,
    /// Argmax, first pass (best of each slice of a row) and second (best of the slices).
    pub argmax: wgpu::ComputePipeline,
    pub argmax_final: wgpu::ComputePipeline,
    /// One pass of the top-k candidates (topk.wgsl).
    pub topk: wgpu::ComputePipeline,
}

/// Whether the decode matvecs take their parameters as compiled-in constants
/// ([`Kernels::matvec_for`]); `CHORD_GPU_MV_UNIFORM=1`: from a uniform buffer.
pub fn matvec_params_compiled() -> bool {
    std::env::var_os("CHORD_GPU_MV_UNIFORM").is_none()
}

/// `src` (a module with matmul_params.wgsl) with the parameters `p` as a constant in place of
/// the uniform at binding 0: the compiler folds them, and no dispatch waits for a uniform load
/// before its first address (H200, same call: qwen2.5-0.5B decode +13 %, RESULTS.md).
pub fn with_params(src: &str, p: &MmParams) -> String {
    let words = |xs: &[u32]| {
        xs.iter()
            .map(|x| format!("{x}u"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let before = [
        p.rows,
        p.cols,
        p.row_words,
        p.in_mode,
        p.out_mode,
        p.x_stride,
        p.y_stride,
        p.y_offset,
        p.bias_offset,
        p.gather,
    ];
    let after = [
        p.up_offset,
        p.act,
        p.tpr,
        p.rpg,
        p.splits,
        p.rows_b,
        p.row_words_b,
        p._p0,
        p._p1,
    ];
    // `{:?}` writes the shortest decimal that reads back as the same f32.
    let decl = format!(
        "const p = MmParams({}, {:?}f, {});",
        words(&before),
        p.eps,
        words(&after)
    );
    src.replace(PARAMS_BINDING, &decl)
}

/// The parameters' declaration in matmul_params.wgsl.
const PARAMS_BINDING: &str = "@group(0) @binding(0) var<uniform> p: MmParams;";

/// Compile `src`'s entry point `main`.
pub fn pipeline(device: &wgpu::Device, name: &str, src: &str) -> wgpu::ComputePipeline {
    pipeline_entry(device, name, src, "main")
}

fn pipeline_entry(
    device: &wgpu::Device,
    name: &str,
    src: &str,
    entry: &str,
) -> wgpu::ComputePipeline {
    pipeline_opts(device, name, src, entry, true)
}

/// Compile `src`'s `entry`; `zero_shared`: zero the workgroup memory first (WebGPU's default).
/// Native modules are compiled without naga's runtime checks unless `CHORD_GPU_CHECKED=1`.
fn pipeline_opts(
    device: &wgpu::Device,
    name: &str,
    src: &str,
    entry: &str,
    zero_shared: bool,
) -> wgpu::ComputePipeline {
    let checked = std::env::var_os("CHORD_GPU_CHECKED").is_some();
    pipeline_checked(device, name, src, entry, zero_shared, checked)
}

/// `pipeline_opts` with naga's runtime checks on or off.
pub(crate) fn pipeline_checked(
    device: &wgpu::Device,
    name: &str,
    src: &str,
    entry: &str,
    zero_shared: bool,
    checked: bool,
) -> wgpu::ComputePipeline {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    };
    let module = if checked {
        device.create_shader_module(desc)
    } else {
        // SAFETY: `create_shader_module_trusted` drops naga's clamp on every shared-array
        // index and its counter in every loop (storage buffers stay bounds-checked by the
        // driver's robust buffer access on Vulkan). That is sound for these kernels: every
        // index into a shared array is below its size by construction (staging indices below
        // KC / 4, the XOR swizzles only permute within groups of 8, head dims ≤ 256 are
        // checked by `forward::check_supported`, reductions below WG), and every loop runs to
        // a bound taken from its parameters, which the host derives from validated shapes.
        // Every kernel test runs these modules; `trusted_modules_compute_what_checked_ones_do`
        // compares the two builds bit for bit. The checks cost 7 % of qwen2.5-1.5B's decode
        // on an H200 (RESULTS.md). WebGPU in the browser ignores this and always checks.
        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    };
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            zero_initialize_workgroup_memory: zero_shared,
            ..Default::default()
        },
        cache: None,
    })
}

/// The tiled matmul of weight type `ty` with `tile × tile` tiles: (product, split-K
/// reduction).
pub fn tiled_pipelines(
    device: &wgpu::Device,
    ty: GgmlType,
    tile: u32,
) -> (wgpu::ComputePipeline, wgpu::ComputePipeline) {
    let q = shaders::quant_source(ty).expect("a GPU weight type");
    let src = shaders::tiled_module(q, tile);
    let name = format!("matmul_tiled{tile}_{ty}");
    // Every shared-memory word is written before it is read.
    let main = pipeline_opts(device, &name, &src, "main", false);
    let reduce = pipeline_opts(device, &name, &src, "reduce", false);
    (main, reduce)
}

impl Kernels {
    /// The decode matvec of `ty` (or, with `pair`, the two-part matvec of `ty` then `pair`)
    /// with `p` compiled in ([`with_params`]): no binding 0. Compiled once per distinct `p`
    /// (a model has a handful of product shapes).
    pub fn matvec_for(
        &self,
        device: &wgpu::Device,
        ty: GgmlType,
        pair: Option<GgmlType>,
        p: &MmParams,
    ) -> Option<wgpu::ComputePipeline> {
        let src = with_params(&shaders::matvec_module_of(ty, pair, self.subgroups)?, p);
        Some(self.matvec_cached(device, &format!("matvec_{ty}_compiled"), src))
    }

    /// The decode matvec of `ty` (or the two-part one of `ty` then `pair`) reading its
    /// parameters from the uniform at binding 0 (`CHORD_GPU_MV_UNIFORM=1`).
    pub fn matvec_uniform(
        &self,
        device: &wgpu::Device,
        ty: GgmlType,
        pair: Option<GgmlType>,
    ) -> Option<wgpu::ComputePipeline> {
        let src = shaders::matvec_module_of(ty, pair, self.subgroups)?;
        Some(self.matvec_cached(device, &format!("matvec_{ty}"), src))
    }

    /// The attention kernel over an f32 or f16 cache with a model's fixed parameters compiled
    /// in (`shaders::attention_module_static`), compiled once per context and shape.
    pub fn attention_static(
        &self,
        device: &wgpu::Device,
        f16: bool,
        fixed: &AttnParams,
    ) -> wgpu::ComputePipeline {
        let src = shaders::attention_module_static(f16, self.attn_subgroups, fixed);
        self.compiled_once(device, "attention_static", src, true)
    }

    /// The decode matvec `src`, compiled once per context. (Every shared word of a matvec is
    /// written before it is read — staging, sums, reductions — so it skips the zeroing.)
    fn matvec_cached(
        &self,
        device: &wgpu::Device,
        name: &str,
        src: String,
    ) -> wgpu::ComputePipeline {
        self.compiled_once(device, name, src, false)
    }

    /// `src`'s `main`, compiled once per context (`zero_shared` as in `pipeline_opts`).
    fn compiled_once(
        &self,
        device: &wgpu::Device,
        name: &str,
        src: String,
        zero_shared: bool,
    ) -> wgpu::ComputePipeline {
        // A poisoned lock only means another thread panicked while inserting: the map is
        // still valid.
        let mut cache = self.matvecs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pl) = cache.get(&src) {
            return pl.clone();
        }
        let pl = pipeline_opts(device, name, &src, "main", zero_shared);
        cache.insert(src, pl.clone());
        pl
    }

    pub fn new(device: &wgpu::Device, subgroups: bool, f16: bool) -> Kernels {
        // `CHORD_GPU_ATTN_TREE=1`: attention reduces with shared-memory trees even with subgroups.
        let attn_sg = subgroups && std::env::var_os("CHORD_GPU_ATTN_TREE").is_none();
        let mut matmul = HashMap::new();
        let mut matmul_subgroup = HashMap::new();
        let mut matmul_tiled = HashMap::new();
        let lim = device.limits();
        let tiled_large = lim.max_compute_workgroup_storage_size >= 32 << 10
            && lim.max_compute_invocations_per_workgroup >= 256
            && lim.max_compute_workgroup_size_x >= 256;
        let mut get_rows = HashMap::new();
        for ty in shaders::TYPES {
            if let Some(q) = shaders::quant_source(ty) {
                let src = shaders::matmul_module(q, shaders::MATMUL);
                matmul.insert(ty, pipeline(device, &format!("matmul_{ty}"), &src));
                let tiled = shaders::TILES[..1 + usize::from(tiled_large)]
                    .iter()
                    .map(|&t| tiled_pipelines(device, ty, t))
                    .collect();
                matmul_tiled.insert(ty, tiled);
                if subgroups {
                    let src = shaders::subgroup_matmul(q);
                    let name = format!("matmul_subgroup_{ty}");
                    matmul_subgroup.insert(ty, pipeline(device, &name, &src));
                }
                let src = format!("{q}\n{}", shaders::GET_ROWS);
                get_rows.insert(ty, pipeline(device, &format!("get_rows_{ty}"), &src));
            }
        }
        Kernels {
            matmul,
            matmul_subgroup,
            matvecs: Mutex::new(HashMap::new()),
            subgroups,
            attn_subgroups: attn_sg,
            matmul_tiled,
            tiled_large,
            get_rows,
            rope_store: pipeline(
                device,
                "rope_store",
                &shaders::kv_module(shaders::ROPE_STORE, false),
            ),
            attention: pipeline(
                device,
                "attention",
                &shaders::attention_module(false, attn_sg),
            ),
            rope_store_f16: f16.then(|| {
                let src = shaders::kv_module(shaders::ROPE_STORE, true);
                pipeline(device, "rope_store_f16", &src)
            }),
            attention_f16: f16.then(|| {
                let src = shaders::attention_module(true, attn_sg);
                pipeline(device, "attention_f16", &src)
            }),
            attn_merge: pipeline(device, "attn_merge", shaders::ATTN_MERGE),
            argmax: pipeline_entry(device, "argmax", shaders::ARGMAX, "partial"),
            topk: pipeline(device, "topk", shaders::TOPK),
            argmax_final: pipeline_entry(device, "argmax_final", shaders::ARGMAX, "reduce_slices"),
        }
    }
}

/// Bind `buffers` (in binding order 0, 1, …) for `pipeline`'s group 0.
pub fn bind(
    device: &wgpu::Device,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[wgpu::BindingResource<'_>],
) -> wgpu::BindGroup {
    let numbered: Vec<_> = (0u32..).zip(buffers.iter().cloned()).collect();
    bind_at(device, pipeline, &numbered)
}

/// Bind `buffers` at the given binding numbers for `pipeline`'s group 0.
pub fn bind_at(
    device: &wgpu::Device,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[(u32, wgpu::BindingResource<'_>)],
) -> wgpu::BindGroup {
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
        .iter()
        .map(|(i, r)| wgpu::BindGroupEntry {
            binding: *i,
            resource: r.clone(),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &entries,
    })
}

/// The two bind groups of the argmax (`params`: [`ArgmaxParams`]; `part`: 2 words per row and
/// slice; `out`: one id per row).
pub struct ArgmaxBinds {
    pub partial: wgpu::BindGroup,
    pub last: wgpu::BindGroup,
}

impl ArgmaxBinds {
    pub fn new(
        device: &wgpu::Device,
        k: &Kernels,
        params: &wgpu::Buffer,
        logits: &wgpu::Buffer,
        out: &wgpu::Buffer,
        mask: &wgpu::Buffer,
        part: &wgpu::Buffer,
    ) -> ArgmaxBinds {
        ArgmaxBinds {
            partial: bind_at(
                device,
                &k.argmax,
                &[
                    (0, params.as_entire_binding()),
                    (1, logits.as_entire_binding()),
                    (3, mask.as_entire_binding()),
                    (4, part.as_entire_binding()),
                ],
            ),
            last: bind_at(
                device,
                &k.argmax_final,
                &[
                    (0, params.as_entire_binding()),
                    (2, out.as_entire_binding()),
                    (4, part.as_entire_binding()),
                ],
            ),
        }
    }

    /// Record both passes for `n_rows` rows split into `n_groups` slices.
    pub fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        k: &Kernels,
        n_rows: u32,
        n_groups: u32,
    ) {
        pass.set_pipeline(&k.argmax);
        pass.set_bind_group(0, &self.partial, &[]);
        pass.dispatch_workgroups(n_rows, n_groups, 1);
        pass.set_pipeline(&k.argmax_final);
        pass.set_bind_group(0, &self.last, &[]);
        pass.dispatch_workgroups(n_rows, 1, 1);
    }
}

/// The top-k passes over `lcap` logits rows of `n_vocab` (topk.wgsl): two candidate buffers
/// in turn, pass 0 reading the logits, each later pass the candidates of the one before.
pub struct TopkPasses {
    /// (bind group, params offset, entries per row read, slices) per pass.
    passes: Vec<(wgpu::BindGroup, u64, u32, u32)>,
    params: wgpu::Buffer,
    out: wgpu::Buffer,
}

/// Bytes between the parameter slots of consecutive passes (the uniform offset alignment).
const TOPK_SLOT: u64 = 256;

impl TopkPasses {
    /// `mask`: the ids never chosen (the argmax's mask buffer).
    pub fn new(
        ctx: &super::GpuContext,
        logits: &wgpu::Buffer,
        mask: &wgpu::Buffer,
        lcap: usize,
        n_vocab: usize,
    ) -> TopkPasses {
        let plan = topk_passes(n_vocab);
        let bytes = (8 * lcap.max(1) * plan[0].1 as usize * TOPK_K) as u64;
        let cand = [0, 1].map(|i| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(if i == 0 { "topk a" } else { "topk b" }),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        });
        let params = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("topk params"),
            size: TOPK_SLOT * plan.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut passes = Vec::new();
        for (i, &(n_in, slices)) in plan.iter().enumerate() {
            let (src, dst) = (&cand[(i + 1) % 2], &cand[i % 2]);
            let offset = i as u64 * TOPK_SLOT;
            let bg = bind(
                &ctx.device,
                &ctx.kernels.topk,
                &[
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset,
                        size: std::num::NonZeroU64::new(32),
                    }),
                    logits.as_entire_binding(),
                    src.as_entire_binding(),
                    dst.as_entire_binding(),
                    mask.as_entire_binding(),
                ],
            );
            passes.push((bg, offset, n_in, slices));
        }
        let [a, b] = cand;
        let out = if plan.len() % 2 == 1 { a } else { b };
        TopkPasses {
            passes,
            params,
            out,
        }
    }

    /// Queue the passes' parameters for `n_rows` rows and `n_mask` masked ids.
    pub fn write_params(&self, queue: &wgpu::Queue, n_rows: u32, n_mask: u32) {
        for (i, &(_, offset, n_in, n_slices)) in self.passes.iter().enumerate() {
            let p = TopkParams {
                n_in,
                n_slices,
                n_rows,
                mode: (i > 0) as u32,
                n_mask,
                in_stride: n_in,
                ..Default::default()
            };
            if let Ok(u) = super::uniform_bytes(&p) {
                queue.write_buffer(&self.params, offset, &u);
            }
        }
    }

    /// Record every pass for `n_rows` rows.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, k: &Kernels, n_rows: u32) {
        pass.set_pipeline(&k.topk);
        for (bg, _, _, slices) in &self.passes {
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(n_rows, *slices, 1);
        }
    }

    /// The buffer the last pass writes: per row, `TOPK_K` (value bits, id) pairs, best first
    /// (id `u32::MAX`: no candidate).
    pub fn out(&self) -> &wgpu::Buffer {
        &self.out
    }
}
