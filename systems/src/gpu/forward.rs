//! The GPU forward pass as ECS systems in the same step and layer sets as the CPU systems.
//!
//! Per step: `gpu_embed` writes the step's tokens, positions, RoPE table and per-sequence
//! parameters (queued writes), opens the step's command encoder and records the embedding
//! gather; the layer schedule's GPU systems record each layer's passes (QKV with the RMSNorm
//! fused, RoPE + K/V store, attention over the sequence's GPU cache, output projection with the
//! residual add fused, gate/up with the norm fused, down with SiLU·mul and the residual fused);
//! `gpu_logits` records the final norm + LM head for the rows that need logits (and an argmax
//! when every sampler is greedy, or a top-k when every sampler keeps few candidates), submits
//! and requests the readback of what sampling needs (`map_async`); `gpu_readback` takes it.
//!
//! A whole step ([`StepPhase::Whole`], native) waits for the readback with `device.poll` on its
//! own submit and pipelines greedy decoding: before waiting, `gpu_logits` records and submits
//! the next decode step (an [`Ahead`] whose embedding reads the argmax on the GPU), which the
//! next step uses if its batch is exactly that one. A step run in parts (the browser:
//! `Front`, `Readback`, `Back`) never blocks and never records a step ahead.

use std::num::NonZeroU64;

use bevy_ecs::prelude::*;
use chord_resources::config::{FfnActivation, RopeScaling, RopeStyle};
use wgpu::util::DeviceExt;

use super::kernels::*;
use super::profile::{IDLE, Profiler};
use super::readback::{ReadbackWait, take_mapped};
use super::upload::{GpuMatrix, f32_buffer, supported_type};
use super::{GpuContext, GpuError, shaders, uniform_bytes};
use crate::backend::GpuActive;
use crate::batch::{CurrentLayer, SeqChunk, StepBatch};
use crate::components::{GenState, KvCache, SamplerState, Tokens};
use crate::kernels::matmul::WeightView;
use crate::kernels::rope;
use crate::schedule::{LayerSystems, StepPhase, StepSystems};
use crate::systems::{EngineSettings, LayerSchedule, PrefixCache, build_batch};
use crate::weights::ModelWeights;

/// A product's bindings (matmul_params.wgsl's order, from binding 0) numbered, less binding 0:
/// for the kernels with their parameters compiled in.
fn numbered_without_params<'a>(
    entries: &[wgpu::BindingResource<'a>],
) -> Vec<(u32, wgpu::BindingResource<'a>)> {
    (0u32..).zip(entries.iter().cloned()).skip(1).collect()
}

/// One recorded dispatch: pipeline, bind group, workgroup grid.
struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    groups: (u32, u32),
    /// The grid's x is the step's row count (`groups.0` ignored).
    per_row: bool,
    /// The tiled matmul of the same product, used when a step has at least `TILED_MIN_ROWS`
    /// activation rows.
    tiled: Option<TiledDispatch>,
    /// The decode matvec of the same product (pipeline, bind group, grid), used when a step has
    /// exactly one activation row.
    matvec: Option<(wgpu::ComputePipeline, wgpu::BindGroup, (u32, u32))>,
    /// One-row steps skip this part: the previous part's two-part matvec covers it.
    matvec_skip: bool,
}

/// A product's tiled matmul: the product, and with split-K its reduction.
struct TiledDispatch {
    main: (wgpu::ComputePipeline, wgpu::BindGroup),
    reduce: Option<(wgpu::ComputePipeline, wgpu::BindGroup)>,
    /// Output features, split-K parts (`tiled_splits`), tile size.
    rows: u32,
    splits: u32,
    tile: u32,
}

/// The split-K parts buffer the tiled matmuls share (`part` in matmul_tiled.wgsl): `floats`
/// f32, for steps of at most `cap` activation rows.
pub(crate) struct SplitScratch {
    buf: wgpu::Buffer,
    floats: usize,
    cap: u32,
}

impl SplitScratch {
    /// Room for `MAX_SPLITS` parts of `cap` rows × `max_rows` features (within one binding).
    fn new(ctx: &GpuContext, cap: usize, max_rows: usize) -> SplitScratch {
        let floats = (MAX_SPLITS as usize * cap * (max_rows + 1))
            .min(ctx.max_binding() as usize / 4)
            .max(4);
        SplitScratch {
            buf: storage(
                ctx,
                "split-K parts",
                4 * floats,
                wgpu::BufferUsages::empty(),
            ),
            floats,
            cap: cap as u32,
        }
    }
}

struct LayerPlan {
    qkv: Vec<Dispatch>,
    out: Vec<Dispatch>,
    gate_up: Vec<Dispatch>,
    down: Vec<Dispatch>,
    table: usize,
    window: u32,
}

/// Shapes the systems need.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n_embd: usize,
    q_dim: usize,
    k_dim: usize,
    v_dim: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    n_rot: usize,
    n_vocab: usize,
    n_layer: usize,
    neox: bool,
    scale: f32,
    softcap: f32,
}

impl Dims {
    fn qkv(&self) -> usize {
        self.q_dim + self.k_dim + self.v_dim
    }
    fn kv_stride(&self) -> usize {
        self.k_dim + self.v_dim
    }
    /// Attention's parameters that the model fixes (the rest zero): what the compiled
    /// attention kernel holds as constants and every step's uniform repeats.
    fn attn_fixed(&self) -> AttnParams {
        AttnParams {
            n_head: self.n_head as u32,
            n_head_kv: self.n_head_kv as u32,
            head_dim_k: self.head_dim_k as u32,
            head_dim_v: self.head_dim_v as u32,
            qkv_stride: self.qkv() as u32,
            out_stride: self.attn_out() as u32,
            kv_stride: self.kv_stride() as u32,
            k_dim: self.k_dim as u32,
            scale: self.scale,
            softcap: self.softcap,
            n_rot: self.n_rot as u32,
            neox: self.neox as u32,
            ..Default::default()
        }
    }
    fn attn_out(&self) -> usize {
        self.n_head * self.head_dim_v
    }
}

/// Everything on the GPU that is not per-sequence, plus the step's open encoder.
#[derive(Resource)]
pub struct GpuForward {
    pub ctx: GpuContext,
    dims: Dims,
    /// Rows per step (n_batch) and logits rows per submit.
    cap: usize,
    lcap: usize,
    step_buf: wgpu::Buffer,
    table_buf: wgpu::Buffer,
    qkv: wgpu::Buffer,
    attn: wgpu::Buffer,
    /// Split-K attention partials of one chunk.
    part: wgpu::Buffer,
    logits: wgpu::Buffer,
    argmax: wgpu::Buffer,
    logits_read: wgpu::Buffer,
    /// Argmax readbacks, used in turn: one can be mapped while the next step's copy into the
    /// other is pending.
    argmax_read: [wgpu::Buffer; 2],
    /// Which of `argmax_read` the last submitted step copies into.
    parity: usize,
    /// Pipelined greedy decoding: the next decode step, recorded and submitted before this
    /// step's ids were read back (its embedding takes them from the GPU's argmax).
    ahead: Option<Ahead>,
    /// This step is the one submitted ahead by the step before (gpu_logits only reads back).
    current: Option<Ahead>,
    /// The ids of the last greedy readback (what a step recorded ahead fed itself).
    last_ids: Vec<u32>,
    /// `CHORD_GPU_PIPELINE=0`: no step is recorded ahead.
    pipeline_on: bool,
    /// Steps recorded ahead that their batch used, and that it dropped.
    pub ahead_used: u64,
    pub ahead_dropped: u64,
    /// CPU seconds spent recording and submitting steps ahead (`CHORD_GPU_STATS` prints the mean).
    ahead_record_s: f64,
    embed: Vec<Dispatch>,
    layers: Vec<LayerPlan>,
    head: Vec<Dispatch>,
    argmax_binds: ArgmaxBinds,
    /// Top-k candidates of the logits rows, and their readback.
    topk: TopkPasses,
    topk_read: wgpu::Buffer,
    /// `CHORD_GPU_NO_TOPK=1`: sampling steps read whole logits rows.
    topk_on: bool,
    argmax_params: wgpu::Buffer,
    argmax_mask: wgpu::Buffer,
    /// Distinct RoPE bases (one table each) .
    bases: Vec<f32>,
    encoder: Option<wgpu::CommandEncoder>,
    /// The step's one compute pass (on `encoder`; ended before the readback copy).
    pass: Option<wgpu::ComputePass<'static>>,
    /// `CHORD_GPU_PROFILE`: step start, and (steps, record seconds, wait seconds) so far.
    profile: Option<(web_time::Instant, u64, f64, f64)>,
    /// `CHORD_GPU_REPEAT=system:k` (profiling): record that layer system's passes k times, so
    /// the step time grows by (k−1)·n_layer times its GPU cost. Results are then meaningless.
    repeat: Option<(String, usize)>,
    /// Rows recorded in the open encoder.
    n_rows: usize,
    /// The step's logits readback in flight (between `gpu_logits` and `gpu_readback`).
    readback: Option<StepReadback>,
    /// `CHORD_GPU_PROFILE` on a device with timestamps inside passes: per-kernel GPU time.
    prof: Option<Profiler>,
    /// Submit the step's work every this many layers (0: once per step), so the GPU starts on
    /// the first layers while the CPU records the rest (`CHORD_GPU_SUBMIT_LAYERS`).
    submit_every: usize,
    /// One-row chunks do RoPE and the K/V store inside attention (`CHORD_GPU_FUSE_ROPE=0`: off).
    fuse_rope: bool,
    /// The attention kernel with this model's fixed parameters compiled in
    /// (`CHORD_GPU_ATTN_STATIC=0`: the generic one, parameters from the uniform).
    attention: Option<wgpu::ComputePipeline>,
    /// Each further submit of a step covers this many times the layers of the one before
    /// (`CHORD_GPU_SUBMIT_GROWTH`, default 2: with 1 layer first, submits after 1, 3, 7, 15).
    submit_growth: usize,
    /// Steps recorded ahead are submitted in chunks too (`CHORD_GPU_AHEAD_CHUNKS=1`).
    ahead_chunks: bool,
    /// Fewest keys per attention split (`CHORD_GPU_ATTN_SPAN`): fewer splits save the merge.
    attn_span: usize,
    /// The caches hold f16 (`--kv f16` on a device with SHADER_F16), else f32.
    kv_f16: bool,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Layers of the first submit, growth of the next ones, fewest keys per attention split.
pub const DEFAULT_SUBMIT_GROWTH: usize = 2;
pub const DEFAULT_ATTN_SPAN: usize = 64;

/// Whether a step submits after `done` of `n_layer` layers: chunks of `first`, `first·growth`,
/// `first·growth²`, … layers (`first` = 0: one submit per step).
pub fn submit_after(done: usize, n_layer: usize, first: usize, growth: usize) -> bool {
    if first == 0 || done >= n_layer {
        return false;
    }
    let mut at = 0;
    let mut chunk = first;
    while at < done {
        at += chunk;
        chunk = chunk.saturating_mul(growth.max(1));
    }
    at == done
}

impl Drop for GpuForward {
    fn drop(&mut self) {
        if let Some(p) = &self.prof {
            eprint!("{}", p.report());
        }
        if std::env::var_os("CHORD_GPU_STATS").is_some() {
            eprintln!(
                "gpu: {} steps recorded ahead used, {} dropped; recording one took {:.3} ms on \
                 the CPU (mean)",
                self.ahead_used,
                self.ahead_dropped,
                1e3 * self.ahead_record_s / self.ahead_used.max(1) as f64
            );
        }
    }
}

/// Layers per submit unless `CHORD_GPU_SUBMIT_LAYERS` says otherwise.
pub const DEFAULT_SUBMIT_LAYERS: usize = 2;

/// A decode step recorded and submitted ahead: one row per sequence at the given positions.
struct Ahead {
    /// (sequence, position of its row), in batch order.
    chunks: Vec<(Entity, usize)>,
    /// The argmax readback its ids go to, and the submit that writes them.
    parity: usize,
    submission: wgpu::SubmissionIndex,
}

/// A sequence's K/V cache on the GPU: one buffer per layer, `[cap × (k_dim + v_dim)]` f32, and
/// the bind groups of its RoPE-store and attention dispatches.
#[derive(Component)]
pub struct GpuKv {
    pub cap: usize,
    /// Held so the caches outlive every bind group recorded into a step.
    _kv: Vec<wgpu::Buffer>,
    params: wgpu::Buffer,
    rope: Vec<wgpu::BindGroup>,
    attn: Vec<wgpu::BindGroup>,
    merge: Vec<wgpu::BindGroup>,
}

const SLOT: u64 = 256;
/// Bytes bound of each slot (the largest parameter struct, AttnParams, is 80).
const PARAMS_BINDING: u64 = 128;
/// Most ids a greedy step can mask out on the GPU (logit bias −∞).
const MAX_MASK: usize = 1024;

fn storage(ctx: &GpuContext, label: &str, bytes: usize, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (bytes.max(16) as u64).next_multiple_of(16),
        usage: wgpu::BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

fn uniform(ctx: &GpuContext, bytes: &[u8]) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// Why the model cannot run on the GPU path (None: it can).
pub fn check_supported(w: &ModelWeights) -> Result<(), GpuError> {
    let c = &w.config;
    let no = |why: String| {
        Err(GpuError::Unsupported(format!(
            "{:?} ({}): {why}",
            c.arch, c.name
        )))
    };
    if c.attn_temperature.is_some() {
        return no("attention temperature".into());
    }
    if c.final_logit_softcap.is_some() {
        return no("final logit soft-capping".into());
    }
    // (attention.wgsl reads and writes the cache four values at a time.)
    if c.head_dim_k > 256
        || c.head_dim_v > 256
        || !c.head_dim_k.is_multiple_of(16)
        || !c.head_dim_v.is_multiple_of(4)
    {
        return no("head dimension above 256 or not a multiple of 16 (keys) / 4 (values)".into());
    }
    if !c.n_embd.is_multiple_of(8) || !c.n_ff.is_multiple_of(4) {
        return no("embedding or FFN width not a multiple of 8 / 4".into());
    }
    if c.n_head_kv == 0 || !c.n_head.is_multiple_of(c.n_head_kv) {
        return no("heads not a multiple of KV heads".into());
    }
    for l in &w.layers {
        if l.q_norm.is_some() || l.k_norm.is_some() {
            return no("QK-norm".into());
        }
        if l.post_attn_norm.is_some() || l.post_ffn_norm.is_some() {
            return no("post-norms".into());
        }
        let mats = l
            .qkv
            .parts
            .iter()
            .chain(&l.gate_up.parts)
            .chain([&l.attn_output, &l.down]);
        for t in mats {
            if !supported_type(t.ty) {
                return no(format!("weight type {} ({})", t.ty, t.name));
            }
        }
    }
    for t in [&w.token_embd, &w.output] {
        if !supported_type(t.ty) {
            return no(format!("weight type {} ({})", t.ty, t.name));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn matmul_dispatches(
    ctx: &GpuContext,
    m: &GpuMatrix,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    nw: Option<&wgpu::Buffer>,
    bias: Option<&wgpu::Buffer>,
    step: &wgpu::Buffer,
    dummy: &wgpu::Buffer,
    scratch: &SplitScratch,
    base: MmParams,
    mv_modes: Option<(u32, u32)>,
) -> Result<Vec<Dispatch>, GpuError> {
    let mut out = Vec::new();
    for part in &m.parts {
        let mut p = base;
        p.rows = part.rows as u32;
        p.cols = part.cols as u32;
        p.row_words = part.row_words as u32;
        p.y_offset = base.y_offset + part.row_offset as u32;
        p.bias_offset = part.row_offset as u32;
        p.tpr = matmul_tpr(p.rows, p.cols);
        // With subgroups, rows whose chunks one subgroup covers in a single unrolled step
        // (cols ≤ 4 · 8 · subgroup size) keep their lanes within a subgroup and take the
        // subgroup kernel: on the H200, SmolLM2's 576-wide QKV and output projections went from
        // 11.6 / 11.1 to 10.4 µs (profiled). Longer rows keep more lanes and the shared-memory
        // kernel (its down projection, 1536 wide: 12.8 µs against 15.0 capped).
        // `CHORD_GPU_TPR_CAP`: 1 always caps, 0 never.
        if let Some(sg) = ctx.subgroup {
            let cap = match env_usize("CHORD_GPU_TPR_CAP", 2) {
                0 => false,
                1 => true,
                _ => p.cols <= 32 * sg,
            };
            if cap {
                p.tpr = p.tpr.min(sg.max(16));
            }
        }
        // The subgroup kernel when a row group fits in one subgroup; long rows that want more
        // lanes than a subgroup has keep the shared-memory kernel and all their lanes.
        let sg = ctx
            .subgroup
            .filter(|&sg| p.tpr <= sg && ctx.kernels.matmul_subgroup.contains_key(&part.ty));
        if bias.is_some() {
            p.out_mode |= OUT_BIAS;
        }
        // Split-K for the tiled kernel where the parts fit the scratch buffer.
        let large = ctx.kernels.tiled_large;
        let (ti, splits) = tiled_choice(p.rows, p.cols, scratch.cap, large);
        let tile = shaders::TILES[ti];
        let fit = scratch.floats / (scratch.cap as usize * (part.rows + 1)).max(1);
        p.splits = splits.min(fit as u32).max(1);
        let ub = uniform(ctx, &uniform_bytes(&p)?);
        let kernels = if sg.is_some() {
            &ctx.kernels.matmul_subgroup
        } else {
            &ctx.kernels.matmul
        };
        let pipeline = kernels
            .get(&part.ty)
            .ok_or_else(|| GpuError::Unsupported(format!("weight type {}", part.ty)))?
            .clone();
        let entries = [
            ub.as_entire_binding(),
            part.buf.as_entire_binding(),
            x.as_entire_binding(),
            y.as_entire_binding(),
            nw.unwrap_or(dummy).as_entire_binding(),
            bias.unwrap_or(dummy).as_entire_binding(),
            step.as_entire_binding(),
        ];
        let bind = bind(&ctx.device, &pipeline, &entries);
        let tiled = ctx
            .kernels
            .matmul_tiled
            .get(&part.ty)
            .filter(|_| part.cols.is_multiple_of(32))
            .map(|tv| {
                let (main, reduce) = &tv[ti];
                let mut numbered: Vec<_> = (0u32..).zip(entries.iter().cloned()).collect();
                numbered.push((7, scratch.buf.as_entire_binding()));
                let main_bind = bind_at(&ctx.device, main, &numbered);
                let reduce = (p.splits > 1).then(|| {
                    let used = numbered
                        .into_iter()
                        .filter(|(i, _)| [0, 3, 5, 6, 7].contains(i));
                    let b = bind_at(&ctx.device, reduce, &used.collect::<Vec<_>>());
                    (reduce.clone(), b)
                });
                TiledDispatch {
                    main: (main.clone(), main_bind),
                    reduce,
                    rows: p.rows,
                    splits: p.splits,
                    tile,
                }
            });
        // `CHORD_GPU_NO_MATVEC=1`: decode steps keep the row-group kernels.
        let matvec = matvec_tpr(part.ty, p.rows, p.cols)
            .filter(|_| std::env::var_os("CHORD_GPU_NO_MATVEC").is_none())
            .map(|tpr| -> Result<_, GpuError> {
                let mut rpg = matvec_rpg(p.rows, tpr);
                let mut grid = matvec_grid(p.rows, tpr, rpg);
                let (mut in_mode, mut out_mode) = (p.in_mode, p.out_mode);
                if let Some((i, o)) = mv_modes {
                    (in_mode, out_mode) = (i, o);
                    // OUT_GLU: one row per row group, gate and up rows in the same workgroup
                    // (its grid covers all 2 · up_offset rows as before).
                    if o & OUT_GLU != 0 {
                        rpg = 1;
                        grid = matvec_grid(p.rows, tpr, 1);
                    }
                }
                let mp_params = MmParams {
                    tpr,
                    rpg,
                    in_mode,
                    out_mode,
                    ..p
                };
                if matvec_params_compiled() {
                    let Some(cp) = ctx
                        .kernels
                        .matvec_for(&ctx.device, part.ty, None, &mp_params)
                    else {
                        return Ok(None);
                    };
                    let bg = bind_at(&ctx.device, &cp, &numbered_without_params(&entries));
                    return Ok(Some((cp, bg, grid)));
                }
                let Some(mp) = ctx.kernels.matvec_uniform(&ctx.device, part.ty, None) else {
                    return Ok(None);
                };
                let ub = uniform(ctx, &uniform_bytes(&mp_params)?);
                let mut entries = entries.clone();
                entries[0] = ub.as_entire_binding();
                let bg = super::kernels::bind(&ctx.device, &mp, &entries);
                Ok(Some((mp, bg, grid)))
            })
            .transpose()?
            .flatten();
        out.push(Dispatch {
            pipeline,
            bind,
            groups: matmul_grid(p.rows, p.tpr),
            per_row: false,
            tiled,
            matvec,
            matvec_skip: false,
        });
    }
    // Two parts of K-quant types (a Q4_K_M fused QKV with a Q6_K v): one matvec dispatch for
    // both on the first part's dispatch, the second skipped for one-row steps
    // (`CHORD_GPU_NO_PAIR=1`: two dispatches).
    if let ([a, b], [da, db]) = (&m.parts[..], &mut out[..]) {
        let pair = shaders::MATVEC_PAIRS.contains(&(a.ty, b.ty))
            && a.cols == b.cols
            && b.row_offset == a.row_offset + a.rows
            && da.matvec.is_some()
            && std::env::var_os("CHORD_GPU_NO_PAIR").is_none();
        let rows = (a.rows + b.rows) as u32;
        let cols = a.cols as u32;
        let tpr = matvec_tpr(a.ty, rows, cols).zip(matvec_tpr(b.ty, rows, cols));
        if pair && let Some((ta, tb)) = tpr {
            let tpr = ta.max(tb);
            let mut p = base;
            p.rows = rows;
            p.cols = cols;
            p.row_words = a.row_words as u32;
            p.y_offset = base.y_offset + a.row_offset as u32;
            p.bias_offset = a.row_offset as u32;
            p.tpr = tpr;
            p.rpg = 1;
            p.rows_b = a.rows as u32;
            p.row_words_b = b.row_words as u32;
            if bias.is_some() {
                p.out_mode |= OUT_BIAS;
            }
            // Bindings 1 … 7; binding 0, the parameters, only where they are not compiled in.
            let buffers = [
                a.buf.as_entire_binding(),
                x.as_entire_binding(),
                y.as_entire_binding(),
                nw.unwrap_or(dummy).as_entire_binding(),
                bias.unwrap_or(dummy).as_entire_binding(),
                step.as_entire_binding(),
                b.buf.as_entire_binding(),
            ];
            let pipeline_bind = if matvec_params_compiled() {
                ctx.kernels
                    .matvec_for(&ctx.device, a.ty, Some(b.ty), &p)
                    .map(|cp| {
                        let numbered: Vec<_> = (1u32..).zip(buffers.iter().cloned()).collect();
                        let bg = bind_at(&ctx.device, &cp, &numbered);
                        (cp, bg)
                    })
            } else {
                match ctx.kernels.matvec_uniform(&ctx.device, a.ty, Some(b.ty)) {
                    Some(mp) => {
                        let ub = uniform(ctx, &uniform_bytes(&p)?);
                        let mut entries = vec![ub.as_entire_binding()];
                        entries.extend(buffers.iter().cloned());
                        let bg = bind(&ctx.device, &mp, &entries);
                        Some((mp, bg))
                    }
                    None => None,
                }
            };
            if let Some((mp, bg)) = pipeline_bind {
                da.matvec = Some((mp, bg, matvec_grid(rows, tpr, 1)));
                db.matvec_skip = true;
            }
        }
    }
    Ok(out)
}

impl GpuForward {
    /// Upload the weights and build every step-independent dispatch.
    pub fn new(
        ctx: GpuContext,
        w: &ModelWeights,
        settings: &EngineSettings,
    ) -> Result<Self, GpuError> {
        check_supported(w)?;
        let c = &w.config;
        let dims = Dims {
            n_embd: c.n_embd,
            q_dim: c.q_dim(),
            k_dim: c.k_dim(),
            v_dim: c.v_dim(),
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim_k: c.head_dim_k,
            head_dim_v: c.head_dim_v,
            n_rot: c.n_rot,
            n_vocab: c.n_vocab,
            n_layer: c.n_layer,
            neox: c.rope_style == RopeStyle::Neox,
            scale: c.attn_scale,
            softcap: c.attn_logit_softcap.unwrap_or(0.0),
        };
        let d = dims;
        let kv_f16 = settings.kv_precision == crate::components::KvPrecision::F16
            && ctx.kernels.attention_f16.is_some()
            && ctx.kernels.rope_store_f16.is_some();
        let cap = settings.n_batch.max(1);
        let max_bind = ctx.max_binding() as usize;
        let lcap = cap
            .min(((256usize << 20) / (4 * d.n_vocab)).max(1))
            .min((max_bind / (4 * d.n_vocab)).max(1));
        let mut bases: Vec<f32> = Vec::new();
        for l in &c.layers {
            if !bases.contains(&l.rope_base) {
                bases.push(l.rope_base);
            }
        }
        let copy_dst = wgpu::BufferUsages::COPY_DST;
        let copy_src = wgpu::BufferUsages::COPY_SRC;
        let step_buf = storage(&ctx, "step", 4 * (4 + 3 * cap), copy_dst);
        let table_buf = storage(
            &ctx,
            "rope table",
            4 * bases.len() * cap * d.n_rot.max(2),
            copy_dst,
        );
        let x = storage(&ctx, "x", 4 * cap * d.n_embd, wgpu::BufferUsages::empty());
        let qkv = storage(&ctx, "qkv", 4 * cap * d.qkv(), wgpu::BufferUsages::empty());
        let attn = storage(
            &ctx,
            "attn",
            4 * cap * d.attn_out(),
            wgpu::BufferUsages::empty(),
        );
        let part = storage(
            &ctx,
            "attention partials",
            4 * cap.max(MAX_PARTIALS) * d.n_head * (d.head_dim_v + 2),
            wgpu::BufferUsages::empty(),
        );
        let gu = storage(
            &ctx,
            "gate_up",
            4 * cap * 2 * c.n_ff,
            wgpu::BufferUsages::empty(),
        );
        let logits = storage(&ctx, "logits", 4 * lcap * d.n_vocab, copy_src);
        let argmax = storage(&ctx, "argmax", 4 * lcap, copy_src);
        let read = |label: &str, size: u64| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let logits_read = read("logits readback", logits.size());
        let argmax_read = [0, 1].map(|_| read("argmax readback", argmax.size()));
        let dummy = f32_buffer(&ctx, "dummy", &[0.0; 4]);
        // Split-K parts for the QKV, output and down products (larger ones split where
        // they fit).
        let scratch = SplitScratch::new(&ctx, cap, d.qkv().max(d.n_embd));

        // Embedding gather (one dispatch per part of the table).
        let emb = GpuMatrix::upload(&ctx, &w.token_embd.name, &[w.token_embd.view(w)])?;
        let mut embed = Vec::new();
        for part in &emb.parts {
            let p = EmbParams {
                rows: part.rows as u32,
                cols: part.cols as u32,
                row_words: part.row_words as u32,
                scale: c.embedding_scale.unwrap_or(1.0),
                row_offset: part.row_offset as u32,
                n_vocab: d.n_vocab as u32,
                ..Default::default()
            };
            let ub = uniform(&ctx, &uniform_bytes(&p)?);
            let pipeline = ctx
                .kernels
                .get_rows
                .get(&part.ty)
                .ok_or_else(|| GpuError::Unsupported(format!("weight type {}", part.ty)))?
                .clone();
            let bind = bind(
                &ctx.device,
                &pipeline,
                &[
                    ub.as_entire_binding(),
                    part.buf.as_entire_binding(),
                    step_buf.as_entire_binding(),
                    x.as_entire_binding(),
                ],
            );
            embed.push(Dispatch {
                pipeline,
                bind,
                groups: (1, 1),
                per_row: true,
                tiled: None,
                matvec: None,
                matvec_skip: false,
            });
        }

        let glu_on = std::env::var("CHORD_GPU_GLU").as_deref() != Ok("0")
            && std::env::var_os("CHORD_GPU_NO_MATVEC").is_none();
        let attention = (std::env::var("CHORD_GPU_ATTN_STATIC").as_deref() != Ok("0")).then(|| {
            ctx.kernels
                .attention_static(&ctx.device, kv_f16, &d.attn_fixed())
        });
        let act = match c.ffn_activation {
            FfnActivation::Silu => 0,
            FfnActivation::GeluTanh => 1,
        };
        let mut layers = Vec::with_capacity(d.n_layer);
        for (il, l) in w.layers.iter().enumerate() {
            let views: Vec<_> = l.qkv.parts.iter().map(|t| t.view(w)).collect();
            let qkv_m = GpuMatrix::upload(&ctx, &format!("blk.{il}.qkv"), &views)?;
            let attn_norm = f32_buffer(&ctx, "attn_norm", &l.attn_norm);
            let bias = l.qkv_bias.as_ref().map(|b| f32_buffer(&ctx, "qkv bias", b));
            let normed = MmParams {
                in_mode: IN_RMSNORM,
                x_stride: d.n_embd as u32,
                eps: c.rms_eps,
                ..Default::default()
            };
            let qkv_d = matmul_dispatches(
                &ctx,
                &qkv_m,
                &x,
                &qkv,
                Some(&attn_norm),
                bias.as_ref(),
                &step_buf,
                &dummy,
                &scratch,
                MmParams {
                    y_stride: d.qkv() as u32,
                    ..normed
                },
                None,
            )?;
            let out_m = GpuMatrix::upload(&ctx, &l.attn_output.name, &[l.attn_output.view(w)])?;
            let out_d = matmul_dispatches(
                &ctx,
                &out_m,
                &attn,
                &x,
                None,
                None,
                &step_buf,
                &dummy,
                &scratch,
                MmParams {
                    in_mode: IN_PLAIN,
                    out_mode: OUT_ACCUMULATE,
                    x_stride: d.attn_out() as u32,
                    y_stride: d.n_embd as u32,
                    ..Default::default()
                },
                None,
            )?;
            let views: Vec<_> = l.gate_up.parts.iter().map(|t| t.view(w)).collect();
            let gu_m = GpuMatrix::upload(&ctx, &format!("blk.{il}.gate_up"), &views)?;
            let ffn_norm = f32_buffer(&ctx, "ffn_norm", &l.ffn_norm);
            let down_m = GpuMatrix::upload(&ctx, &l.down.name, &[l.down.view(w)])?;
            // Decode steps: gate/up writes act(gate)·up (OUT_GLU) and down stages it as it is,
            // where both are one-part matvecs (`CHORD_GPU_GLU=0`: down computes it).
            let glu = match (&gu_m.parts[..], &down_m.parts[..]) {
                ([g], [dn]) => {
                    glu_on
                        && g.rows == 2 * c.n_ff
                        // (a workgroup needs two row groups or more: gate and up)
                        && matvec_tpr(g.ty, g.rows as u32, g.cols as u32).is_some_and(|t| t <= 128)
                        && matvec_tpr(dn.ty, dn.rows as u32, dn.cols as u32).is_some()
                }
                _ => false,
            };
            let gu_d = matmul_dispatches(
                &ctx,
                &gu_m,
                &x,
                &gu,
                Some(&ffn_norm),
                None,
                &step_buf,
                &dummy,
                &scratch,
                MmParams {
                    y_stride: 2 * c.n_ff as u32,
                    up_offset: c.n_ff as u32,
                    act,
                    ..normed
                },
                glu.then_some((IN_RMSNORM, OUT_GLU)),
            )?;
            let down_d = matmul_dispatches(
                &ctx,
                &down_m,
                &gu,
                &x,
                None,
                None,
                &step_buf,
                &dummy,
                &scratch,
                MmParams {
                    in_mode: IN_GATED,
                    out_mode: OUT_ACCUMULATE,
                    x_stride: 2 * c.n_ff as u32,
                    y_stride: d.n_embd as u32,
                    up_offset: c.n_ff as u32,
                    act,
                    ..Default::default()
                },
                glu.then_some((IN_PLAIN, OUT_ACCUMULATE)),
            )?;
            let lc = &c.layers[il];
            layers.push(LayerPlan {
                qkv: qkv_d,
                out: out_d,
                gate_up: gu_d,
                down: down_d,
                table: bases.iter().position(|&b| b == lc.rope_base).unwrap_or(0),
                window: lc.window.unwrap_or(0) as u32,
            });
        }
        let head_m = if w.output.name == w.token_embd.name {
            emb
        } else {
            GpuMatrix::upload(&ctx, &w.output.name, &[w.output.view(w)])?
        };
        let out_norm = f32_buffer(&ctx, "output_norm", &w.output_norm);
        let head = matmul_dispatches(
            &ctx,
            &head_m,
            &x,
            &logits,
            Some(&out_norm),
            None,
            &step_buf,
            &dummy,
            &scratch,
            MmParams {
                in_mode: IN_RMSNORM,
                x_stride: d.n_embd as u32,
                y_stride: d.n_vocab as u32,
                eps: c.rms_eps,
                gather: 1,
                ..Default::default()
            },
            None,
        )?;
        let argmax_params = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("argmax params"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let argmax_mask = storage(&ctx, "argmax mask", 4 * MAX_MASK, copy_dst);
        let argmax_part = storage(
            &ctx,
            "argmax partials",
            8 * lcap * ARGMAX_GROUPS as usize,
            wgpu::BufferUsages::empty(),
        );
        let argmax_binds = ArgmaxBinds::new(
            &ctx.device,
            &ctx.kernels,
            &argmax_params,
            &logits,
            &argmax,
            &argmax_mask,
            &argmax_part,
        );
        let topk = TopkPasses::new(&ctx, &logits, &argmax_mask, lcap, d.n_vocab);
        let topk_read = read("topk readback", (8 * lcap * TOPK_K) as u64);
        Ok(GpuForward {
            topk,
            topk_read,
            topk_on: std::env::var_os("CHORD_GPU_NO_TOPK").is_none(),
            ctx,
            dims,
            cap,
            lcap,
            step_buf,
            table_buf,
            qkv,
            attn,
            part,
            logits,
            argmax,
            logits_read,
            argmax_read,
            parity: 0,
            ahead: None,
            current: None,
            last_ids: Vec::new(),
            pipeline_on: std::env::var("CHORD_GPU_PIPELINE").as_deref() != Ok("0"),
            ahead_used: 0,
            ahead_dropped: 0,
            ahead_record_s: 0.0,
            embed,
            layers,
            head,
            argmax_binds,
            argmax_params,
            argmax_mask,
            bases,
            encoder: None,
            pass: None,
            repeat: std::env::var("CHORD_GPU_REPEAT").ok().and_then(|v| {
                let (name, k) = v.split_once(':')?;
                Some((name.to_string(), k.parse().ok()?))
            }),
            profile: std::env::var_os("CHORD_GPU_PROFILE")
                .map(|_| (web_time::Instant::now(), 0, 0.0, 0.0)),
            n_rows: 0,
            readback: None,
            prof: None,
            submit_every: env_usize("CHORD_GPU_SUBMIT_LAYERS", DEFAULT_SUBMIT_LAYERS),
            submit_growth: env_usize("CHORD_GPU_SUBMIT_GROWTH", DEFAULT_SUBMIT_GROWTH),
            ahead_chunks: std::env::var("CHORD_GPU_AHEAD_CHUNKS").as_deref() == Ok("1"),
            attn_span: env_usize("CHORD_GPU_ATTN_SPAN", DEFAULT_ATTN_SPAN),
            kv_f16,
            fuse_rope: std::env::var("CHORD_GPU_FUSE_ROPE").as_deref() != Ok("0"),
            attention,
        })
        .map(|mut f| {
            if std::env::var_os("CHORD_GPU_PROFILE").is_some() {
                f.enable_profiler();
            }
            f
        })
    }

    /// A GPU cache for one sequence holding up to `cap` positions.
    pub fn new_kv(&self, cap: usize) -> Result<GpuKv, GpuError> {
        let d = self.dims;
        let ctx = &self.ctx;
        let cap = cap.max(1);
        let mut kv = Vec::with_capacity(d.n_layer);
        let mut rope_b = Vec::with_capacity(d.n_layer);
        let mut attn_b = Vec::with_capacity(d.n_layer);
        let mut merge_b = Vec::with_capacity(d.n_layer);
        let elem = self.kv_elem_bytes();
        let (rope_k, attn_k) = self.kv_kernels();
        if (elem * cap * d.kv_stride()) as u64 > ctx.max_binding() {
            return Err(GpuError::Unsupported(format!(
                "a {cap}-position cache exceeds the binding limit"
            )));
        }
        let params = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kv params"),
            size: SLOT * 2 * d.n_layer as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let slot = |i: u64| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &params,
                offset: i * SLOT,
                size: NonZeroU64::new(PARAMS_BINDING),
            })
        };
        for il in 0..d.n_layer {
            let buf = storage(
                ctx,
                "kv",
                elem * cap * d.kv_stride(),
                wgpu::BufferUsages::empty(),
            );
            rope_b.push(bind(
                &ctx.device,
                rope_k,
                &[
                    slot(2 * il as u64),
                    self.qkv.as_entire_binding(),
                    buf.as_entire_binding(),
                    self.table_buf.as_entire_binding(),
                ],
            ));
            attn_b.push(bind(
                &ctx.device,
                attn_k,
                &[
                    slot(2 * il as u64 + 1),
                    self.qkv.as_entire_binding(),
                    buf.as_entire_binding(),
                    self.attn.as_entire_binding(),
                    self.part.as_entire_binding(),
                    self.table_buf.as_entire_binding(),
                ],
            ));
            merge_b.push(bind(
                &ctx.device,
                &ctx.kernels.attn_merge,
                &[
                    slot(2 * il as u64 + 1),
                    self.part.as_entire_binding(),
                    self.attn.as_entire_binding(),
                ],
            ));
            kv.push(buf);
        }
        Ok(GpuKv {
            cap,
            _kv: kv,
            params,
            rope: rope_b,
            attn: attn_b,
            merge: merge_b,
        })
    }

    /// Turn the per-kernel timestamp profiler on (false: the device cannot write timestamps
    /// inside passes). The tallies are printed when the forward pass is dropped.
    pub fn enable_profiler(&mut self) -> bool {
        if self.prof.is_none() {
            self.prof = Profiler::new(&self.ctx);
        }
        self.prof.is_some()
    }

    /// The profiler's tables so far (None when it is off).
    pub fn profile_report(&self) -> Option<String> {
        self.prof.as_ref().map(|p| p.report())
    }

    /// Bytes of one sequence's cache per position (all layers).
    pub fn kv_bytes_per_pos(&self) -> usize {
        self.kv_elem_bytes() * self.dims.kv_stride() * self.dims.n_layer
    }

    /// Whether the caches hold f16 (`--kv f16` on a device with SHADER_F16).
    pub fn kv_f16(&self) -> bool {
        self.kv_f16
    }

    fn kv_elem_bytes(&self) -> usize {
        if self.kv_f16 { 2 } else { 4 }
    }

    /// The RoPE-store and attention pipelines for this cache precision.
    fn kv_kernels(&self) -> (&wgpu::ComputePipeline, &wgpu::ComputePipeline) {
        let k = &self.ctx.kernels;
        let (r, a) = match (&k.rope_store_f16, &k.attention_f16) {
            (Some(r), Some(a)) if self.kv_f16 => (r, a),
            _ => (&k.rope_store, &k.attention),
        };
        (r, self.attention.as_ref().unwrap_or(a))
    }
}

fn debug_sync(g: &mut GpuForward, what: &str) {
    if std::env::var_os("CHORD_GPU_SYNC").is_none() {
        return;
    }
    g.pass = None;
    if let Some(enc) = g.encoder.take() {
        let t = std::time::Instant::now();
        g.ctx.queue.submit([enc.finish()]);
        let _ = g.ctx.device.poll(wgpu::PollType::wait_indefinitely());
        eprintln!("gpu sync {what}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3);
        open_step(g);
    }
}

/// Open the step's encoder and its compute pass.
fn open_step(g: &mut GpuForward) {
    let mut enc = g
        .ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("step"),
        });
    let mut pass = enc
        .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
        .forget_lifetime();
    if let Some(p) = g.prof.as_mut() {
        p.stamp(&mut pass, IDLE);
    }
    g.pass = Some(pass);
    g.encoder = Some(enc);
}

/// Submit what the step has recorded so far and open a fresh encoder, so the GPU works on the
/// first layers while the CPU records the rest.
fn flush(g: &mut GpuForward) {
    g.pass = None;
    if let Some(enc) = g.encoder.take() {
        g.ctx.queue.submit([enc.finish()]);
        open_step(g);
    }
}

fn reps(g: &GpuForward, what: &str) -> usize {
    match &g.repeat {
        Some((name, k)) if name == what => *k,
        _ => 1,
    }
}

/// Record `ds` (one timestamp labelled `what` after them when profiling).
fn record(
    pass: &mut wgpu::ComputePass<'static>,
    prof: &mut Option<Profiler>,
    ds: &[Dispatch],
    n_rows: u32,
    what: &'static str,
) {
    record_plain(pass, ds, n_rows);
    if let Some(p) = prof.as_mut() {
        p.stamp(pass, what);
    }
}

fn record_plain(pass: &mut wgpu::ComputePass<'static>, ds: &[Dispatch], n_rows: u32) {
    for dsp in ds {
        if let Some(t) = dsp.tiled.as_ref().filter(|_| n_rows >= TILED_MIN_ROWS) {
            let (gx, gy, gz) = tiled_grid(t.tile, t.rows, n_rows, t.splits);
            pass.set_pipeline(&t.main.0);
            pass.set_bind_group(0, &t.main.1, &[]);
            pass.dispatch_workgroups(gx, gy, gz);
            if let Some((rp, rb)) = &t.reduce {
                let (rx, ry) = tiled_reduce_grid(t.rows, n_rows);
                pass.set_pipeline(rp);
                pass.set_bind_group(0, rb, &[]);
                pass.dispatch_workgroups(rx, ry, 1);
            }
            continue;
        }
        if n_rows == 1 && dsp.matvec_skip {
            continue;
        }
        if let Some((mp, mb, (x, y))) = dsp.matvec.as_ref().filter(|_| n_rows == 1) {
            pass.set_pipeline(mp);
            pass.set_bind_group(0, mb, &[]);
            pass.dispatch_workgroups(*x, *y, 1);
            continue;
        }
        pass.set_pipeline(&dsp.pipeline);
        pass.set_bind_group(0, &dsp.bind, &[]);
        let (x, y) = if dsp.per_row { (n_rows, 1) } else { dsp.groups };
        pass.dispatch_workgroups(x, y, 1);
    }
}

/// Give each new sequence its GPU cache, sized to what it can ever hold.
pub fn gpu_attach_kv(
    mut commands: Commands,
    gpu: Res<GpuForward>,
    mut seqs: Query<(Entity, &mut KvCache, &Tokens, &GenState), Without<GpuKv>>,
) {
    for (e, mut kv, tokens, g) in seqs.iter_mut() {
        let total = tokens.evaluated.len() + tokens.pending.len();
        let need = if g.score_all {
            total
        } else {
            total + g.max_new_tokens + 1
        };
        let cap = need.next_multiple_of(64).min(kv.max_len).max(1);
        match gpu.new_kv(cap) {
            Ok(gkv) => {
                kv.max_len = cap;
                commands.entity(e).insert(gkv);
            }
            Err(err) => {
                // Nothing can be evaluated without a cache: the sequence ends at once.
                eprintln!("chord: GPU cache allocation failed: {err}");
                kv.max_len = 0;
            }
        }
    }
}

/// Queue the writes of a step's inputs: the step buffer (row count, tokens, positions, logit
/// rows), the RoPE table of each row and every chunk's per-layer RoPE-store and attention
/// parameters. They land before the next submit, so a step's writes must follow every submit of
/// the step before.
#[allow(clippy::too_many_arguments)]
fn upload_step(
    g: &GpuForward,
    weights: &ModelWeights,
    settings: &EngineSettings,
    chunks: &[SeqChunk],
    tokens: &[u32],
    positions: &[usize],
    logit_rows: &[usize],
    kvs: &Query<&GpuKv>,
) {
    let n = positions.len();
    let d = g.dims;
    let cap = g.cap;
    // step: [n_rows, n_logit, cap, 0, tokens[cap], positions[cap], logit_rows[cap]]
    let mut step = vec![0u32; 4 + 3 * cap];
    step[0] = n as u32;
    step[1] = logit_rows.len().min(g.lcap) as u32;
    step[2] = cap as u32;
    for (i, &t) in tokens.iter().take(cap).enumerate() {
        step[4 + i] = t;
    }
    for (i, &pos) in positions.iter().take(cap).enumerate() {
        step[4 + cap + i] = pos as u32;
    }
    for (i, &r) in logit_rows.iter().take(cap).enumerate() {
        step[4 + 2 * cap + i] = r as u32;
    }
    let q = &g.ctx.queue;
    q.write_buffer(&g.step_buf, 0, bytemuck::cast_slice(&step[..4 + 3 * cap]));
    // RoPE cos/sin per row, computed exactly as the CPU path's `apply_rope`.
    let c = &weights.config;
    let long_ctx = match c.rope_scaling {
        RopeScaling::LongRope {
            original_context, ..
        } => settings.n_ctx > original_context as usize,
        _ => false,
    };
    let factors = match (&weights.rope_freqs, &weights.rope_factors) {
        (Some(freqs), _) => Some(freqs.as_slice()),
        (None, Some((short, long))) => Some(if long_ctx { long } else { short }.as_slice()),
        (None, None) => None,
    };
    let nr = d.n_rot;
    for (ti, &base) in g.bases.iter().enumerate() {
        let mut ext = rope::RopeExt::plain(c.rope_scaling.freq_scale());
        ext.attn_factor = c.rope_attn_factor;
        if let RopeScaling::Yarn {
            original_context,
            beta_fast,
            beta_slow,
            ..
        } = c.rope_scaling
        {
            ext.ext_factor = 1.0;
            ext.corr_dims = rope::yarn_corr_dims(nr, original_context, base, beta_fast, beta_slow);
        }
        let mut table = vec![0.0f32; n * nr];
        for (r, &pos) in positions.iter().enumerate() {
            let a = rope::rope_angles_ext(pos, nr, base, factors, &ext);
            table[r * nr..r * nr + nr / 2].copy_from_slice(&a.cos);
            table[r * nr + nr / 2..(r + 1) * nr].copy_from_slice(&a.sin);
        }
        q.write_buffer(
            &g.table_buf,
            (4 * ti * cap * nr) as u64,
            bytemuck::cast_slice(&table),
        );
    }
    // Per-sequence, per-layer parameters of RoPE-store and attention.
    for ch in chunks {
        let Ok(kv) = kvs.get(ch.entity) else { continue };
        let mut bytes = vec![0u8; (SLOT as usize) * 2 * d.n_layer];
        let (n_split, span) = attention_splits(ch.start_pos + ch.n_rows, ch.n_rows, g.attn_span);
        for (il, lp) in g.layers.iter().enumerate() {
            let rp = RopeParams {
                n_head: d.n_head as u32,
                n_head_kv: d.n_head_kv as u32,
                head_dim_k: d.head_dim_k as u32,
                head_dim_v: d.head_dim_v as u32,
                qkv_stride: d.qkv() as u32,
                q_dim: d.q_dim as u32,
                k_dim: d.k_dim as u32,
                n_rot: nr as u32,
                neox: d.neox as u32,
                start_row: ch.start_row as u32,
                n_rows: ch.n_rows as u32,
                start_pos: ch.start_pos as u32,
                table_base: (lp.table * cap * nr) as u32,
                kv_stride: d.kv_stride() as u32,
                ..Default::default()
            };
            let ap = AttnParams {
                start_row: ch.start_row as u32,
                n_rows: ch.n_rows as u32,
                start_pos: ch.start_pos as u32,
                window: lp.window,
                n_split,
                span,
                fuse: (g.fuse_rope && ch.n_rows == 1) as u32,
                table_base: (lp.table * cap * nr) as u32,
                ..d.attn_fixed()
            };
            for (k, bytes_k) in [uniform_bytes(&rp), uniform_bytes(&ap)]
                .into_iter()
                .enumerate()
            {
                if let Ok(u) = bytes_k {
                    let off = (2 * il + k) * SLOT as usize;
                    bytes[off..off + u.len()].copy_from_slice(&u);
                }
            }
        }
        q.write_buffer(&kv.params, 0, &bytes);
    }
}

/// Whether the decode step recorded ahead (`g.ahead`) is exactly this batch: the same
/// sequences in the same order, one row each at the positions it assumed, their tokens the ids
/// it took from the GPU, every row's logits wanted.
fn ahead_matches(g: &GpuForward, b: &StepBatch) -> bool {
    let Some(a) = &g.ahead else { return false };
    a.chunks.len() == b.chunks.len()
        && b.tokens == g.last_ids
        && b.logit_rows.len() == b.chunks.len()
        && b.chunks
            .iter()
            .zip(&a.chunks)
            .enumerate()
            .all(|(i, (ch, &(e, pos)))| {
                ch.entity == e
                    && ch.n_rows == 1
                    && ch.start_row == i
                    && ch.start_pos == pos
                    && ch.logits_from == 0
                    && ch.n_draft == 0
                    && b.logit_rows[i] == i
            })
}

/// Upload the step's inputs, open the step's encoder and gather the embeddings (nothing when
/// the step was recorded and submitted ahead by the step before).
pub fn gpu_embed(
    mut gpu: ResMut<GpuForward>,
    batch: Res<StepBatch>,
    weights: Res<ModelWeights>,
    settings: Res<EngineSettings>,
    kvs: Query<&GpuKv>,
    phase: Option<Res<StepPhase>>,
) {
    let g = &mut *gpu;
    let b = &*batch;
    let n = b.tokens.len();
    g.pass = None;
    g.encoder = None;
    g.n_rows = n;
    g.current = None;
    if let Some(p) = g.profile.as_mut() {
        p.0 = web_time::Instant::now();
    }
    // Only whole steps use a step recorded ahead (a split step drops one left by a whole step
    // before it and records its own).
    let whole = phase.is_none_or(|p| *p == StepPhase::Whole);
    if whole && ahead_matches(g, b) {
        g.current = g.ahead.take();
        g.ahead_used += 1;
        return;
    }
    // A step recorded ahead for another batch is dropped: it wrote only scratch buffers and
    // cache positions that are not committed (the real step rewrites them).
    if g.ahead.take().is_some() {
        g.ahead_dropped += 1;
    }
    if n == 0 || n > g.cap {
        return;
    }
    upload_step(
        g,
        &weights,
        &settings,
        &b.chunks,
        &b.tokens,
        &b.positions,
        &b.logit_rows,
        &kvs,
    );
    open_step(g);
    if let Some(pass) = g.pass.as_mut() {
        record(pass, &mut g.prof, &g.embed, n as u32, "embed");
    }
    debug_sync(g, "embed");
}

/// QKV projection with the attention RMSNorm fused (and qwen2's biases).
pub fn gpu_qkv(mut gpu: ResMut<GpuForward>, layer: Res<CurrentLayer>) {
    let g = &mut *gpu;
    let k = reps(g, "qkv");
    if let (Some(enc), Some(lp)) = (g.pass.as_mut(), g.layers.get(layer.0)) {
        for _ in 0..k {
            record(enc, &mut g.prof, &lp.qkv, g.n_rows as u32, "qkv (+norm)");
        }
    }
    debug_sync(g, "qkv");
}

/// RoPE on q and k; rotated K and V written into each sequence's GPU cache.
pub fn gpu_rope(
    mut gpu: ResMut<GpuForward>,
    layer: Res<CurrentLayer>,
    batch: Res<StepBatch>,
    kvs: Query<&GpuKv>,
) {
    let g = &mut *gpu;
    let d = g.dims;
    let k = reps(g, "rope");
    let rope_k = g.kv_kernels().0.clone();
    let Some(pass) = g.pass.as_mut() else {
        return;
    };
    for _ in 0..k {
        pass.set_pipeline(&rope_k);
        for ch in &batch.chunks {
            let Ok(kv) = kvs.get(ch.entity) else { continue };
            if g.fuse_rope && ch.n_rows == 1 {
                // Done inside attention (AttnParams::fuse).
                continue;
            }
            if let Some(bg) = kv.rope.get(layer.0) {
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(ch.n_rows as u32, (d.n_head + d.n_head_kv) as u32, 1);
                if let Some(p) = g.prof.as_mut() {
                    p.stamp(pass, "rope + kv store");
                }
            }
        }
    }
    debug_sync(g, "rope");
}

/// Attention of each sequence's rows over its GPU cache.
pub fn gpu_attend(
    mut gpu: ResMut<GpuForward>,
    layer: Res<CurrentLayer>,
    batch: Res<StepBatch>,
    kvs: Query<&GpuKv>,
) {
    let g = &mut *gpu;
    let d = g.dims;
    let k = reps(g, "attend");
    let attn_k = g.kv_kernels().1.clone();
    let Some(pass) = g.pass.as_mut() else {
        return;
    };
    for ch in batch
        .chunks
        .iter()
        .flat_map(|ch| std::iter::repeat_n(ch, k))
    {
        let Ok(kv) = kvs.get(ch.entity) else { continue };
        let (n_split, _) = attention_splits(ch.start_pos + ch.n_rows, ch.n_rows, g.attn_span);
        if let (Some(bg), Some(mg)) = (kv.attn.get(layer.0), kv.merge.get(layer.0)) {
            pass.set_pipeline(&attn_k);
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(ch.n_rows as u32, d.n_head as u32, n_split);
            if let Some(p) = g.prof.as_mut() {
                p.stamp(pass, "attention");
            }
            if n_split > 1 {
                pass.set_pipeline(&g.ctx.kernels.attn_merge);
                pass.set_bind_group(0, mg, &[]);
                pass.dispatch_workgroups(ch.n_rows as u32, d.n_head as u32, 1);
                if let Some(p) = g.prof.as_mut() {
                    p.stamp(pass, "attn merge");
                }
            }
        }
    }
    debug_sync(g, "attend");
}

/// Output projection, residual add fused.
pub fn gpu_attn_output(mut gpu: ResMut<GpuForward>, layer: Res<CurrentLayer>) {
    let g = &mut *gpu;
    let k = reps(g, "out");
    if let (Some(enc), Some(lp)) = (g.pass.as_mut(), g.layers.get(layer.0)) {
        for _ in 0..k {
            record(
                enc,
                &mut g.prof,
                &lp.out,
                g.n_rows as u32,
                "attn out (+res)",
            );
        }
    }
    debug_sync(g, "attn_output");
}

/// FFN: gate/up with the RMSNorm fused, then down with act(gate)·up and the residual fused.
pub fn gpu_ffn(mut gpu: ResMut<GpuForward>, layer: Res<CurrentLayer>) {
    let g = &mut *gpu;
    let (kg, kd) = (reps(g, "gate_up"), reps(g, "down"));
    if let (Some(enc), Some(lp)) = (g.pass.as_mut(), g.layers.get(layer.0)) {
        for _ in 0..kg {
            record(
                enc,
                &mut g.prof,
                &lp.gate_up,
                g.n_rows as u32,
                "gate/up (+norm)",
            );
        }
        for _ in 0..kd {
            record(
                enc,
                &mut g.prof,
                &lp.down,
                g.n_rows as u32,
                "down (+act,res)",
            );
        }
    }
    debug_sync(g, "ffn");
    if submit_after(layer.0 + 1, g.dims.n_layer, g.submit_every, g.submit_growth) {
        flush(g);
    }
}

/// Map `buf`'s first `bytes` bytes after the work that writes them was submitted.
pub(crate) fn read_back_bytes(
    ctx: &GpuContext,
    buf: &wgpu::Buffer,
    bytes: u64,
) -> Result<Vec<u8>, GpuError> {
    read_back(ctx, buf, bytes)
}

fn read_back(ctx: &GpuContext, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>, GpuError> {
    read_back_after(ctx, buf, bytes, None)
}

/// [`read_back`] of what submit `after` writes, without waiting for later submits.
fn read_back_after(
    ctx: &GpuContext,
    buf: &wgpu::Buffer,
    bytes: u64,
    after: Option<wgpu::SubmissionIndex>,
) -> Result<Vec<u8>, GpuError> {
    ReadbackWait::request_after(&ctx.device, buf, bytes, after).wait_blocking()?;
    take_mapped(buf, bytes)
}

/// What a step's logits readback holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadKind {
    /// One argmax id per row (greedy), in `argmax_read[parity]`.
    Argmax { parity: usize },
    /// The `TOPK_K` best (logit, id) pairs per row.
    Topk,
    /// Whole logits rows.
    Logits,
}

/// The step's logits readback: the group of logit rows in flight and what is left.
struct StepReadback {
    wait: ReadbackWait,
    kind: ReadKind,
    n_mask: u32,
    n_logit: usize,
    /// Rows before this group, and rows in it.
    done: usize,
    m: usize,
    t_submit: web_time::Instant,
    /// Its submit resolved the profiler's timestamps (collected once it is read back).
    profiled: bool,
}

/// Rows `first..` of the step's logits become one-hot at the read-back argmax ids (greedy
/// sampling of a one-hot row picks exactly that id); the ids are kept for a step recorded ahead.
fn set_greedy_ids(g: &mut GpuForward, b: &mut StepBatch, raw: &[u8], first: usize) {
    let n_vocab = g.dims.n_vocab;
    let ids: &[u32] = bytemuck::cast_slice(raw);
    for (i, &id) in ids.iter().enumerate() {
        let r = first + i;
        if let Some(v) = b
            .logits
            .get_mut(r * n_vocab..(r + 1) * n_vocab)
            .and_then(|row| row.get_mut(id as usize))
        {
            *v = 1.0;
        }
    }
    g.last_ids.clear();
    g.last_ids.extend_from_slice(ids);
}

/// Whether the next step can be recorded before this greedy step's ids are read back: every
/// chunk's one logits row is its last row (so argmax row i feeds sequence i), no drafts, the
/// next position fits each GPU cache, and no profiling or debugging switch is on.
fn can_pipeline(g: &GpuForward, b: &StepBatch, kvs: &Query<&GpuKv>) -> bool {
    g.pipeline_on
        && g.prof.is_none()
        && g.repeat.is_none()
        && std::env::var_os("CHORD_GPU_SYNC").is_none()
        && !b.chunks.is_empty()
        && b.chunks.len() <= g.cap.min(g.lcap)
        && b.logit_rows.len() == b.chunks.len()
        && b.chunks.iter().enumerate().all(|(i, ch)| {
            ch.n_draft == 0
                && ch.n_rows > 0
                && ch.logits_from + 1 == ch.n_rows
                && ch.first_logit == i
                && b.logit_rows[i] == ch.start_row + ch.n_rows - 1
                && kvs
                    .get(ch.entity)
                    .is_ok_and(|kv| ch.start_pos + ch.n_rows < kv.cap)
        })
}

/// Record and submit the next decode step of `b`'s sequences (one row each, one position
/// further) before this step's ids are read back: its embedding gathers the rows of the ids
/// this step's argmax leaves on the GPU. The next step's schedule run finds it in `g.ahead`
/// (`gpu_embed` checks that its batch is this one) and only reads its ids back.
fn record_ahead(
    g: &mut GpuForward,
    weights: &ModelWeights,
    settings: &EngineSettings,
    b: &StepBatch,
    kvs: &Query<&GpuKv>,
) {
    let t0 = web_time::Instant::now();
    let next: Vec<SeqChunk> = b
        .chunks
        .iter()
        .enumerate()
        .map(|(i, ch)| SeqChunk {
            entity: ch.entity,
            start_row: i,
            n_rows: 1,
            start_pos: ch.start_pos + ch.n_rows,
            logits_from: 0,
            first_logit: i,
            n_draft: 0,
        })
        .collect();
    let m = next.len();
    let positions: Vec<usize> = next.iter().map(|c| c.start_pos).collect();
    let rows: Vec<usize> = (0..m).collect();
    // Every submit of this step is queued, so these writes cannot reach it.
    upload_step(g, weights, settings, &next, &[], &positions, &rows, kvs);
    let (rope_k, attn_k) = g.kv_kernels();
    let (rope_k, attn_k) = (rope_k.clone(), attn_k.clone());
    let d = g.dims;
    let new_pass = |enc: &mut wgpu::CommandEncoder| {
        enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default())
            .forget_lifetime()
    };
    let mut enc = g
        .ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("step ahead"),
        });
    // The tokens: this step's argmax ids, in the step buffer's token slots.
    enc.copy_buffer_to_buffer(&g.argmax, 0, &g.step_buf, 16, 4 * m as u64);
    let mut pass = new_pass(&mut enc);
    record_plain(&mut pass, &g.embed, m as u32);
    for (il, lp) in g.layers.iter().enumerate() {
        record_plain(&mut pass, &lp.qkv, m as u32);
        for ch in &next {
            let Ok(kv) = kvs.get(ch.entity) else { continue };
            if !g.fuse_rope
                && let Some(bg) = kv.rope.get(il)
            {
                pass.set_pipeline(&rope_k);
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(1, (d.n_head + d.n_head_kv) as u32, 1);
            }
            let (n_split, _) = attention_splits(ch.start_pos + 1, 1, g.attn_span);
            if let (Some(bg), Some(mg)) = (kv.attn.get(il), kv.merge.get(il)) {
                pass.set_pipeline(&attn_k);
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(1, d.n_head as u32, n_split);
                if n_split > 1 {
                    pass.set_pipeline(&g.ctx.kernels.attn_merge);
                    pass.set_bind_group(0, mg, &[]);
                    pass.dispatch_workgroups(1, d.n_head as u32, 1);
                }
            }
        }
        record_plain(&mut pass, &lp.out, m as u32);
        record_plain(&mut pass, &lp.gate_up, m as u32);
        record_plain(&mut pass, &lp.down, m as u32);
        // A step recorded ahead is submitted whole unless `CHORD_GPU_AHEAD_CHUNKS=1`: the GPU is
        // still busy with the step before it while the CPU records this one, so chunks only
        // add gaps between submits (qwen2.5-1.5B on an H200: 425 → 443 tok/s, RESULTS.md).
        if g.ahead_chunks && submit_after(il + 1, d.n_layer, g.submit_every, g.submit_growth) {
            drop(pass);
            g.ctx.queue.submit([enc.finish()]);
            enc = g
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            pass = new_pass(&mut enc);
        }
    }
    record_plain(&mut pass, &g.head, m as u32);
    // (The argmax parameters, m rows and the mask, are this step's.)
    g.argmax_binds
        .record(&mut pass, &g.ctx.kernels, m as u32, ARGMAX_GROUPS);
    drop(pass);
    g.parity ^= 1;
    let parity = g.parity;
    enc.copy_buffer_to_buffer(&g.argmax, 0, &g.argmax_read[parity], 0, 4 * m as u64);
    let submission = g.ctx.queue.submit([enc.finish()]);
    g.ahead = Some(Ahead {
        chunks: next.iter().map(|c| (c.entity, c.start_pos)).collect(),
        parity,
        submission,
    });
    g.ahead_record_s += t0.elapsed().as_secs_f64();
}

/// Final norm + LM head for the rows that need logits, one submit for the whole step, and the
/// readback requested (`map_async`): an argmax per row when all those sequences sample greedily,
/// else the logits. [`gpu_readback`] takes the mapped bytes.
pub fn gpu_logits(
    mut gpu: ResMut<GpuForward>,
    mut batch: ResMut<StepBatch>,
    seqs: Query<(&SamplerState, &GenState)>,
    weights: Res<ModelWeights>,
    settings: Res<EngineSettings>,
    kvs: Query<&GpuKv>,
    phase: Option<Res<StepPhase>>,
) {
    let g = &mut *gpu;
    let b = &mut *batch;
    // Whole steps (native) pipeline greedy decoding; the parts of a split step (the browser)
    // never record a step ahead.
    let whole = phase.is_none_or(|p| *p == StepPhase::Whole);
    let mut pass = g.pass.take();
    g.readback = None;
    let enc_open = g.encoder.take();
    let current = g.current.take();
    if enc_open.is_none() && current.is_none() {
        return;
    }
    let n_logit = b.logit_rows.len();
    let n_vocab = g.dims.n_vocab;
    b.logits.clear();
    if n_logit == 0 {
        drop(pass);
        if let Some(enc) = enc_open {
            g.ctx.queue.submit([enc.finish()]);
        }
        if let Some(p) = g.prof.as_mut() {
            p.clear();
        }
        return;
    }
    // Greedy on the GPU when every sampler is plain greedy, with at most one shared list of
    // masked ids (bias -inf); top-k candidates when every sampler is plain and greedy or
    // keeps at most TOPK_K candidates; anything else reads the logits back for the CPU sampler.
    let mut mask: Option<Vec<u32>> = None;
    let mut all_greedy = true;
    let plain = b
        .chunks
        .iter()
        .filter(|ch| ch.n_rows > ch.logits_from)
        .all(|ch| {
            seqs.get(ch.entity).is_ok_and(|(s, gs)| {
                let p = &s.params;
                let ids: Option<Vec<u32>> = p
                    .logit_bias
                    .iter()
                    .map(|&(id, bias)| (bias == f32::NEG_INFINITY).then_some(id))
                    .collect();
                let same_mask = match (ids, &mask) {
                    (Some(ids), None) => {
                        mask = Some(ids);
                        true
                    }
                    (Some(ids), Some(m)) => &ids == m,
                    (None, _) => false,
                };
                let greedy = p.temperature <= 0.0;
                all_greedy &= greedy;
                !gs.score_all
                    && (greedy || (1..=TOPK_K).contains(&p.top_k))
                    && p.repeat_penalty == 1.0
                    && p.frequency_penalty == 0.0
                    && p.presence_penalty == 0.0
                    && same_mask
            })
        })
        && mask.as_ref().is_none_or(|m| m.len() <= MAX_MASK);
    let greedy = plain && all_greedy;
    let topk = plain && !all_greedy && g.topk_on;
    let mask = mask.unwrap_or_default();
    if (greedy || topk) && !mask.is_empty() {
        g.ctx
            .queue
            .write_buffer(&g.argmax_mask, 0, bytemuck::cast_slice(&mask));
    }
    b.logits.resize(n_logit * n_vocab, 0.0);
    let enc = match (enc_open, current) {
        (_, Some(cur)) if greedy => {
            // Submitted ahead by the step before (whole steps only): record the next step,
            // then request this one's ids, waiting only for its own submit.
            if whole && can_pipeline(g, b, &kvs) {
                record_ahead(g, &weights, &settings, b, &kvs);
            }
            let bytes = 4 * n_logit as u64;
            let wait = ReadbackWait::request_after(
                &g.ctx.device,
                &g.argmax_read[cur.parity],
                bytes,
                Some(cur.submission),
            );
            g.readback = Some(StepReadback {
                wait,
                kind: ReadKind::Argmax { parity: cur.parity },
                n_mask: mask.len() as u32,
                n_logit,
                done: 0,
                m: n_logit,
                t_submit: web_time::Instant::now(),
                profiled: false,
            });
            return;
        }
        (Some(enc), _) => enc,
        (None, _) => {
            // (Not greedy after all: recompute the head from the residual the step left.)
            let mut enc = g
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            pass = Some(
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                    .forget_lifetime(),
            );
            enc
        }
    };
    let kind = if greedy {
        ReadKind::Argmax { parity: 0 }
    } else if topk {
        ReadKind::Topk
    } else {
        ReadKind::Logits
    };
    submit_logits(g, b, enc, pass.take(), kind, mask.len() as u32, n_logit, 0);
    // The next decode step goes to the GPU before this one's ids come back (whole steps: a
    // split step's readback is awaited by the browser, which then resumes; nothing is ahead).
    if greedy && whole && n_logit <= g.lcap && can_pipeline(g, b, &kvs) {
        record_ahead(g, &weights, &settings, b, &kvs);
    }
}

/// Record the head (and the argmax or top-k) for logit rows `done..` (at most `lcap`) into
/// `enc`, copy the result to its readback buffer, submit, and request the mapping (waiting on
/// this submit only). `pass`: the step's open pass (first group); later groups open their own.
#[allow(clippy::too_many_arguments)]
fn submit_logits(
    g: &mut GpuForward,
    b: &StepBatch,
    mut enc: wgpu::CommandEncoder,
    mut pass: Option<wgpu::ComputePass<'static>>,
    kind: ReadKind,
    n_mask: u32,
    n_logit: usize,
    done: usize,
) {
    let n_vocab = g.dims.n_vocab;
    let m = (n_logit - done).min(g.lcap);
    if done > 0 {
        // Later groups of scoring rows: a fresh submit each, with the step's logit rows
        // shifted (queued writes land before the submit that follows them).
        let mut hdr = [0u32; 2];
        hdr[0] = g.n_rows as u32;
        hdr[1] = m as u32;
        g.ctx
            .queue
            .write_buffer(&g.step_buf, 0, bytemuck::cast_slice(&hdr));
        let rows: Vec<u32> = b
            .logit_rows
            .iter()
            .skip(done)
            .take(m)
            .map(|&r| r as u32)
            .collect();
        g.ctx.queue.write_buffer(
            &g.step_buf,
            (4 * (4 + 2 * g.cap)) as u64,
            bytemuck::cast_slice(&rows),
        );
        let mut p = enc
            .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
            .forget_lifetime();
        if let Some(pr) = g.prof.as_mut() {
            pr.stamp(&mut p, IDLE);
        }
        pass = Some(p);
    }
    let kh = reps(g, "head");
    if let Some(p) = pass.as_mut() {
        for _ in 0..kh {
            record(p, &mut g.prof, &g.head, m as u32, "lm head (+norm)");
        }
    }
    let kind = match kind {
        ReadKind::Argmax { .. } => {
            let p = ArgmaxParams {
                n_vocab: n_vocab as u32,
                n_rows: m as u32,
                n_mask,
                n_groups: ARGMAX_GROUPS,
            };
            if let Ok(u) = uniform_bytes(&p) {
                g.ctx.queue.write_buffer(&g.argmax_params, 0, &u);
            }
            if let Some(p) = pass.as_mut() {
                g.argmax_binds
                    .record(p, &g.ctx.kernels, m as u32, ARGMAX_GROUPS);
                if let Some(pr) = g.prof.as_mut() {
                    pr.stamp(p, "argmax");
                }
            }
            g.parity ^= 1;
            ReadKind::Argmax { parity: g.parity }
        }
        ReadKind::Topk => {
            // The K best (value, id) per row; the rest of the row becomes NaN, which the
            // sampler never considers: with top-k ≤ K (or greedy), no penalties and only −∞
            // biases, its candidates are the same ids with the same logits.
            g.topk.write_params(&g.ctx.queue, m as u32, n_mask);
            if let Some(p) = pass.as_mut() {
                g.topk.record(p, &g.ctx.kernels, m as u32);
                if let Some(pr) = g.prof.as_mut() {
                    pr.stamp(p, "top-k");
                }
            }
            ReadKind::Topk
        }
        ReadKind::Logits => ReadKind::Logits,
    };
    drop(pass);
    if let Some(pr) = g.prof.as_ref() {
        pr.resolve(&mut enc);
    }
    let (src, dst, bytes) = match kind {
        ReadKind::Argmax { parity } => (&g.argmax, &g.argmax_read[parity], 4 * m as u64),
        ReadKind::Topk => (g.topk.out(), &g.topk_read, (8 * m * TOPK_K) as u64),
        ReadKind::Logits => (&g.logits, &g.logits_read, (4 * m * n_vocab) as u64),
    };
    enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes);
    let idx = g.ctx.queue.submit([enc.finish()]);
    let t_submit = web_time::Instant::now();
    if matches!(kind, ReadKind::Argmax { .. })
        && let Some(p) = g.profile.as_mut()
    {
        p.1 += 1;
        p.2 += (t_submit - p.0).as_secs_f64();
    }
    let wait = ReadbackWait::request_after(&g.ctx.device, dst, bytes, Some(idx));
    g.readback = Some(StepReadback {
        wait,
        kind,
        n_mask,
        n_logit,
        done,
        m,
        t_submit,
        profiled: true,
    });
}

/// Take the step's mapped readback into the batch's logits (greedy: a one-hot row per id;
/// top-k: the candidates, NaN elsewhere), submitting the next group of logit rows while there
/// are more. In a whole step ([`StepPhase::Whole`], native) it waits for each mapping with
/// `device.poll` (on its own submit only: a step recorded ahead may be queued behind it); in
/// the [`StepPhase::Readback`] part of a split step (the browser) it never blocks: a mapping
/// not complete yet stays in flight for [`GpuForward::readback_wait`].
pub fn gpu_readback(
    mut gpu: ResMut<GpuForward>,
    mut batch: ResMut<StepBatch>,
    phase: Option<Res<StepPhase>>,
) {
    let g = &mut *gpu;
    let b = &mut *batch;
    let blocking = phase.is_none_or(|p| *p == StepPhase::Whole);
    let n_vocab = g.dims.n_vocab;
    while let Some(rb) = g.readback.take() {
        if !blocking && !rb.wait.is_ready() {
            g.readback = Some(rb);
            return;
        }
        let (buf, bytes) = match rb.kind {
            ReadKind::Argmax { parity } => (&g.argmax_read[parity], 4 * rb.m as u64),
            ReadKind::Topk => (&g.topk_read, (8 * rb.m * TOPK_K) as u64),
            ReadKind::Logits => (&g.logits_read, (4 * rb.m * n_vocab) as u64),
        };
        let result = rb
            .wait
            .wait_blocking()
            .and_then(|()| take_mapped(buf, bytes));
        // The step's timestamps (native profiling; a split step never blocks on them).
        if rb.profiled
            && let Some(pr) = g.prof.as_mut()
        {
            if blocking {
                if let Err(e) = pr.collect(&g.ctx, g.n_rows == 1) {
                    eprintln!("chord: profile readback: {e}");
                }
            } else {
                pr.clear();
            }
        }
        if matches!(rb.kind, ReadKind::Argmax { .. })
            && let Some(p) = g.profile.as_mut()
        {
            p.3 += rb.t_submit.elapsed().as_secs_f64();
            if p.1.is_multiple_of(64) {
                eprintln!(
                    "gpu profile: {} greedy steps, record {:.3} ms/step, wait {:.3} ms/step",
                    p.1,
                    1e3 * p.2 / p.1 as f64,
                    1e3 * p.3 / p.1 as f64
                );
            }
        }
        let rows = rb.done * n_vocab..(rb.done + rb.m) * n_vocab;
        let fits = b.logits.get(rows.clone()).is_some();
        match (result, rb.kind) {
            // Greedy sampling of a one-hot row picks exactly this id.
            (Ok(raw), ReadKind::Argmax { .. }) if fits => set_greedy_ids(g, b, &raw, rb.done),
            (Ok(raw), ReadKind::Topk) if fits => {
                let words: &[u32] = bytemuck::cast_slice(&raw);
                let out = &mut b.logits[rows];
                for (row, cands) in out
                    .chunks_exact_mut(n_vocab)
                    .zip(words.chunks_exact(2 * TOPK_K))
                {
                    row.fill(f32::NAN);
                    for pair in cands.chunks_exact(2) {
                        if let Some(v) = row.get_mut(pair[1] as usize) {
                            *v = f32::from_bits(pair[0]);
                        }
                    }
                }
            }
            (Ok(raw), ReadKind::Logits) if fits => {
                b.logits[rows].copy_from_slice(bytemuck::cast_slice(&raw));
            }
            // The rows keep zero logits; say why once per failed step.
            (Err(e), _) => eprintln!("chord: {e}"),
            (Ok(_), _) => eprintln!("chord: GPU readback: the step's logits changed size"),
        }
        let done = rb.done + rb.m;
        if done < rb.n_logit {
            let enc = g
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            submit_logits(g, b, enc, None, rb.kind, rb.n_mask, rb.n_logit, done);
        }
    }
}

impl GpuForward {
    /// The step's readback still in flight after [`gpu_readback`] ran in a split step's
    /// readback part: await it, then run that part again.
    pub fn readback_wait(&self) -> Option<ReadbackWait> {
        self.readback.as_ref().map(|r| r.wait.clone())
    }
}

/// The GPU systems of the step schedule (run only while [`GpuForward`] exists).
pub fn add_step_systems(s: &mut Schedule) {
    s.add_systems((
        gpu_attach_kv
            .in_set(StepSystems::Batch)
            .before(build_batch)
            .run_if(resource_exists::<GpuForward>),
        gpu_embed
            .in_set(StepSystems::Embed)
            .run_if(resource_exists::<GpuForward>),
        gpu_logits
            .in_set(StepSystems::Logits)
            .run_if(resource_exists::<GpuForward>),
        gpu_readback
            .in_set(StepSystems::Readback)
            .run_if(resource_exists::<GpuForward>),
    ));
}

/// The layer schedule of the GPU path: the same sets as the CPU one (the norms are fused into
/// the projections that follow them, so `AttnNorm` and `FfnNorm` are empty).
pub fn gpu_layer_schedule() -> Schedule {
    let mut s = crate::schedule::empty_layer_schedule();
    s.add_systems((
        gpu_qkv.in_set(LayerSystems::Qkv),
        gpu_rope.in_set(LayerSystems::Rope),
        gpu_attend.in_set(LayerSystems::Attention),
        gpu_attn_output.in_set(LayerSystems::AttnOutput),
        gpu_ffn.in_set(LayerSystems::Ffn),
    ));
    s
}

/// Move the world's forward pass onto `ctx`: upload the weights, swap in the GPU layer
/// schedule and switch the step schedule's CPU systems off. The prefix cache is disabled
/// (its K/V would live on the CPU).
pub fn install(world: &mut World, ctx: GpuContext) -> Result<(), GpuError> {
    let fwd = {
        let w = world.resource::<ModelWeights>();
        let settings = world.resource::<EngineSettings>();
        GpuForward::new(ctx, w, settings)?
    };
    world.insert_resource(fwd);
    world.insert_resource(LayerSchedule(gpu_layer_schedule()));
    world.insert_resource(GpuActive);
    if let Some(mut p) = world.get_resource_mut::<PrefixCache>() {
        p.max_entries = 0;
        p.entries.clear();
    }
    Ok(())
}

#[cfg(test)]
pub(crate) fn read_back_for_tests(ctx: &GpuContext, buf: &wgpu::Buffer) -> Vec<u8> {
    read_back(ctx, buf, buf.size()).expect("readback")
}

/// One matrix product as the forward pass records it (same kernel choice, lanes and grid), over
/// its own buffers: what `benches/gpu_matmul.rs` times. Several copies of the weights are
/// uploaded and cycled so a timed run reads them from memory rather than the GPU's L2.
pub struct MatmulProbe {
    copies: Vec<Vec<Dispatch>>,
    n_rows: u32,
    /// Weight bytes one product reads.
    pub weight_bytes: u64,
}

impl MatmulProbe {
    /// `view` (`rows × cols`) against `n_rows` activation rows of random values, input mode
    /// `in_mode` (`IN_PLAIN`, `IN_RMSNORM`, `IN_GATED`), the weights copied until the copies
    /// hold at least `min_bytes`.
    pub fn new(
        ctx: &GpuContext,
        view: WeightView<'_>,
        n_rows: usize,
        in_mode: u32,
        min_bytes: usize,
    ) -> Result<Self, GpuError> {
        let xw = if in_mode == IN_GATED {
            2 * view.cols
        } else {
            view.cols
        };
        // Small deterministic values: the sums stay finite whatever the weights.
        let x: Vec<f32> = (0..n_rows * xw)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
            .collect();
        let xb = f32_buffer(ctx, "probe x", &x);
        let nw = f32_buffer(ctx, "probe norm", &vec![1.0; view.cols]);
        let y = f32_buffer(ctx, "probe y", &vec![0.0; n_rows * view.rows]);
        let dummy = f32_buffer(ctx, "probe dummy", &[0.0; 4]);
        let scratch = SplitScratch::new(ctx, n_rows.max(1), view.rows);
        let mut s = vec![0u32; 4 + 3 * n_rows.max(1)];
        s[0] = n_rows as u32;
        s[1] = n_rows as u32;
        s[2] = n_rows.max(1) as u32;
        let step = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("probe step"),
                contents: bytemuck::cast_slice(&s),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let base = MmParams {
            in_mode,
            x_stride: xw as u32,
            y_stride: view.rows as u32,
            eps: 1e-5,
            up_offset: view.cols as u32,
            ..Default::default()
        };
        let weight_bytes = GpuMatrix::upload(ctx, "probe", &[view])?
            .parts
            .iter()
            .map(|p| p.buf.size())
            .sum::<u64>();
        let n_copies = (min_bytes as u64).div_ceil(weight_bytes.max(1)).max(1);
        let copies = (0..n_copies)
            .map(|_| {
                let m = GpuMatrix::upload(ctx, "probe", &[view])?;
                matmul_dispatches(
                    ctx,
                    &m,
                    &xb,
                    &y,
                    (in_mode == IN_RMSNORM).then_some(&nw),
                    None,
                    &step,
                    &dummy,
                    &scratch,
                    base,
                    None,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MatmulProbe {
            copies,
            n_rows: n_rows as u32,
            weight_bytes,
        })
    }

    /// Record the product `reps` times (cycling the weight copies) in one compute pass, submit
    /// and wait for the GPU.
    pub fn run(&self, ctx: &GpuContext, reps: usize) {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc
                .begin_compute_pass(&Default::default())
                .forget_lifetime();
            for i in 0..reps {
                record_plain(&mut pass, &self.copies[i % self.copies.len()], self.n_rows);
            }
        }
        ctx.queue.submit([enc.finish()]);
        let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
    }
}
