//! The forward pass as ordered systems.
//!
//! Step schedule: admit → batch → embed → layers (the layer schedule, run once per layer) →
//! final norm → logits → sample → emit. Layer schedule: attention norm → QKV (+bias) → [QK-norm]
//! → RoPE → attention (writes K/V into each sequence's cache, then reads it in place) → output
//! projection (+[post-norm]) + residual → FFN norm → FFN (+[post-norm]) + residual.

use bevy_ecs::prelude::*;
use crossbeam_channel::{Receiver, Sender};
use web_time::Instant;

use chord_resources::config::RopeScaling;

use crate::batch::{SeqChunk, StepBatch};
use crate::components::Event;
use crate::components::*;
use crate::kernels::matmul::ActivationPrecision;
use crate::kernels::{activation, attention, matmul, norm, rope};
use crate::sampling::{self, SamplingParams};
use crate::slot::{ModelSlot, Slotted};
use crate::weights::{ModelWeights, Projection};

/// A generation (or scoring) request as it travels over the request channel.
#[derive(Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_new_tokens: usize,
    pub stop_strings: Vec<String>,
    /// Teacher forcing: send logits of every position, generate nothing.
    pub score_all: bool,
    /// Set by the requester to stop the sequence at the next step (even mid-prefill).
    pub cancel: CancelFlag,
    /// The first `share_prefix` prompt tokens are a shared prefix (persona / system prompt):
    /// their K/V are taken from [`PrefixCache`] when present, and stored there otherwise.
    pub share_prefix: usize,
    /// Speculative decoding for this request, if any.
    pub speculate: Option<crate::speculative::SpeculateParams>,
    pub sink: Sender<Event>,
}

/// K/V of shared prompt prefixes, computed once and copied into every later sequence that
/// starts with the same tokens. Least recently used entries go first.
#[derive(Resource, Debug)]
pub struct PrefixCache {
    pub entries: Vec<CachedPrefix>,
    pub max_entries: usize,
    clock: u64,
}

impl Default for PrefixCache {
    fn default() -> Self {
        PrefixCache {
            entries: Vec::new(),
            max_entries: 16,
            clock: 0,
        }
    }
}

/// One cached prefix: its tokens and per-layer K/V rows.
#[derive(Debug)]
pub struct CachedPrefix {
    pub tokens: Vec<u32>,
    pub k: Vec<KvBuf>,
    pub v: Vec<KvBuf>,
    last_used: u64,
}

impl PrefixCache {
    fn lookup(&mut self, tokens: &[u32]) -> Option<&CachedPrefix> {
        self.clock += 1;
        let clock = self.clock;
        let e = self.entries.iter_mut().find(|e| e.tokens == tokens)?;
        e.last_used = clock;
        Some(e)
    }

    fn insert(&mut self, tokens: Vec<u32>, k: Vec<KvBuf>, v: Vec<KvBuf>) {
        if self.entries.iter().any(|e| e.tokens == tokens) || self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries
            && let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
        {
            self.entries.swap_remove(i);
        }
        self.clock += 1;
        self.entries.push(CachedPrefix {
            tokens,
            k,
            v,
            last_used: self.clock,
        });
    }

    /// Bytes held by all entries.
    pub fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| {
                e.k.iter()
                    .chain(&e.v)
                    .map(KvBuf::capacity_bytes)
                    .sum::<usize>()
            })
            .sum()
    }
}

/// A sequence whose first `len` tokens are a shareable prefix; `stored` once the cache has it.
#[derive(Component, Debug)]
pub struct PrefixShare {
    pub len: usize,
    pub stored: bool,
}

/// A request's cancellation flag, shared between the requester and its entity.
#[derive(Component, Clone, Debug, Default)]
pub struct CancelFlag(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Incoming requests.
#[derive(Resource)]
pub struct RequestQueue(pub Receiver<Request>);

/// Step-level settings.
#[derive(Resource, Debug, Clone)]
pub struct EngineSettings {
    /// Most rows evaluated in one step (prefill chunks are cut to fit).
    pub n_batch: usize,
    /// Most positions a sequence may hold (prompt + generated).
    pub n_ctx: usize,
    /// Quantized (ggml-like, fast) or f32 (exact) activations in matrix products.
    pub precision: ActivationPrecision,
    /// The same for the speculative-decoding draft model. It only proposes tokens (the target
    /// decides), so it defaults to the faster int8 activations.
    pub draft_precision: ActivationPrecision,
    /// Element type of every sequence's K/V cache.
    pub kv_precision: KvPrecision,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            n_batch: 512,
            n_ctx: 4096,
            precision: ActivationPrecision::F32,
            draft_precision: ActivationPrecision::Q8,
            kv_precision: KvPrecision::F32,
        }
    }
}

/// Token pieces for the emit system: bytes of each token (special tokens render empty) and
/// whether it ends generation.
#[derive(Resource, Debug, Default)]
pub struct Vocab {
    pub pieces: Vec<Vec<u8>>,
    pub is_eog: Vec<bool>,
}

/// Timing of a sequence (not part of the public output).
#[derive(Component, Debug)]
pub struct Timing {
    pub admitted: Instant,
    pub first_token: Option<Instant>,
}

/// Tokens chosen this step, waiting to be emitted: one, or with speculation the accepted drafts
/// (already in the cache) followed by the target's own token.
#[derive(Component, Debug)]
pub struct Sampled(pub Vec<u32>);

/// Spawn an entity for each queued request.
pub fn admit_requests(
    mut commands: Commands,
    queue: Res<RequestQueue>,
    weights: Res<ModelWeights>,
    settings: Res<EngineSettings>,
    mut prefixes: ResMut<PrefixCache>,
) {
    let c = &weights.config;
    for req in queue.0.try_iter() {
        let n_prompt = req.prompt.len();
        let mut kv = KvCache::new(c.n_layer, settings.n_ctx, settings.kv_precision);
        let mut evaluated = Vec::with_capacity(n_prompt + req.max_new_tokens);
        let mut pending = req.prompt;
        // At least one prompt token is evaluated, so the last position has logits.
        let share = req.share_prefix.min(n_prompt.saturating_sub(1));
        let mut reused = 0;
        if share > 0
            && let Some(hit) = prefixes.lookup(&pending[..share])
        {
            kv.k.clone_from(&hit.k);
            kv.v.clone_from(&hit.v);
            kv.len = share;
            evaluated.extend(pending.drain(..share));
            reused = share;
        }
        let mut e = commands.spawn((
            Tokens {
                evaluated,
                pending,
                n_prompt,
            },
            kv,
            SamplerState::new(req.params),
            GenState {
                max_new_tokens: req.max_new_tokens,
                n_generated: 0,
                stop_strings: req.stop_strings,
                text: String::new(),
                finish: None,
                score_all: req.score_all,
                stats: SeqStats {
                    n_prompt,
                    n_prefix_reused: reused,
                    ..Default::default()
                },
            },
            OutputSink(req.sink),
            req.cancel,
            TextStream::default(),
            Timing {
                admitted: Instant::now(),
                first_token: None,
            },
        ));
        if let Some(spec) = req.speculate
            && !req.score_all
        {
            e.insert(crate::speculative::Speculation::new(spec));
        }
        if share > 0 {
            e.insert(PrefixShare {
                len: share,
                stored: reused > 0,
            });
        }
    }
}

/// Choose this step's rows: one token per decoding sequence, then prefill chunks within the budget.
#[allow(clippy::type_complexity)]
pub fn build_batch(
    mut batch: ResMut<StepBatch>,
    settings: Res<EngineSettings>,
    weights: Res<ModelWeights>,
    mut seqs: Query<(
        Entity,
        &Tokens,
        &mut GenState,
        &KvCache,
        &CancelFlag,
        Option<&crate::speculative::Speculation>,
    )>,
) {
    let b = &mut *batch;
    b.clear();
    let mut budget = settings.n_batch.max(1);
    // Cancelled sequences take no rows; emit_tokens reports and despawns them.
    for (_, _, mut g, _, cancel, _) in seqs.iter_mut() {
        if g.finish.is_none() && cancel.is_cancelled() {
            g.finish = Some(FinishReason::Cancelled);
        }
    }
    // Decoding sequences (one pending token) first so they never starve behind a long prompt.
    let mut order: Vec<(usize, Entity)> = seqs
        .iter()
        .filter(|(_, t, g, _, _, _)| g.finish.is_none() && !t.pending.is_empty())
        .map(|(e, t, _, _, _, _)| (t.pending.len(), e))
        .collect();
    order.sort_by_key(|&(n, e)| (n > 1, e));
    // Scoring returns logits for every row: keep its chunks small enough to bound memory.
    let max_logit_rows = ((256usize << 20) / (4 * weights.config.n_vocab)).max(1);
    let mut n_logit_rows = 0;
    for (_, e) in order {
        if budget == 0 {
            break;
        }
        let Ok((_, tokens, mut gen_state, kv, _, spec)) = seqs.get_mut(e) else {
            continue;
        };
        let start_pos = kv.len;
        let mut n = tokens.pending.len().min(budget);
        if gen_state.score_all {
            n = n.min(max_logit_rows.saturating_sub(n_logit_rows));
            if n == 0 {
                continue;
            }
        }
        if start_pos + n > kv.max_len {
            gen_state.finish = Some(FinishReason::Context);
            continue;
        }
        let last_chunk = n == tokens.pending.len();
        // Speculation: the drafts that fit follow the pending token, every row with logits.
        let drafts = match spec {
            Some(sp) if last_chunk => &sp.drafts[..sp.drafts.len().min(budget - n)],
            _ => &[][..],
        };
        if !drafts.is_empty() {
            let start_row = b.tokens.len();
            let n_rows = n + drafts.len();
            b.chunks.push(SeqChunk {
                entity: e,
                start_row,
                n_rows,
                start_pos,
                logits_from: n - 1,
                first_logit: b.logit_rows.len(),
                n_draft: drafts.len(),
            });
            b.tokens.extend_from_slice(&tokens.pending[..n]);
            b.tokens.extend_from_slice(drafts);
            b.positions.extend(start_pos..start_pos + n_rows);
            b.logit_rows.extend(start_row + n - 1..start_row + n_rows);
            budget -= n_rows;
            continue;
        }
        let logits_from = if gen_state.score_all {
            0
        } else if last_chunk {
            n - 1
        } else {
            n
        };
        let start_row = b.tokens.len();
        b.chunks.push(SeqChunk {
            entity: e,
            start_row,
            n_rows: n,
            start_pos,
            logits_from,
            first_logit: b.logit_rows.len(),
            n_draft: 0,
        });
        b.tokens.extend_from_slice(&tokens.pending[..n]);
        b.positions.extend(start_pos..start_pos + n);
        b.logit_rows.extend(start_row + logits_from..start_row + n);
        n_logit_rows += n - logits_from;
        budget -= n;
    }
}

/// `x[r] = token_embd[token[r]] (· embedding_scale)`.
pub fn embed<S: ModelSlot>(weights: Res<S::Weights>, mut batch: ResMut<S::Batch>) {
    let weights = weights.get();
    let b = batch.get_mut();
    let d = weights.config.n_embd;
    let n = b.tokens.len();
    resize(&mut b.x, n * d);
    let emb = weights.token_embd.view(weights);
    for (r, &t) in b.tokens.iter().enumerate() {
        let row = &mut b.x[r * d..(r + 1) * d];
        emb.dequantize_row((t as usize).min(emb.rows - 1), row);
        if let Some(s) = weights.config.embedding_scale {
            row.iter_mut().for_each(|v| *v *= s);
        }
    }
}

/// Run the layer schedule once per layer.
pub fn run_layers<S: ModelSlot>(world: &mut World) {
    let n_layer = world.resource::<S::Weights>().get().config.n_layer;
    world.resource_scope(|world, mut layers: Mut<S::Layers>| {
        for il in 0..n_layer {
            world.resource_mut::<S::Layer>().get_mut().0 = il;
            layers.get_mut().0.run(world);
        }
    });
}

/// The per-layer schedule, stored in the world so `run_layers` can run it.
#[derive(Resource)]
pub struct LayerSchedule(pub Schedule);

fn resize(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

/// Run a projection whose output is `outs` side by side, `widths[i]` columns each: either one
/// tensor per output (one dispatch for all of them) or one fused tensor (phi3's `attn_qkv`,
/// `ffn_up`) whose output rows are split column-wise.
fn project(
    weights: &ModelWeights,
    p: &Projection,
    x: &[f32],
    outs: &mut [&mut Vec<f32>],
    widths: &[usize],
    prec: ActivationPrecision,
) {
    let n = x.len() / p.parts[0].cols;
    for (out, &w) in outs.iter_mut().zip(widths) {
        resize(out, n * w);
    }
    if p.parts.len() == outs.len() {
        let views: Vec<_> = p.parts.iter().map(|t| t.view(weights)).collect();
        let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        matmul::matmul_many(&views, x, &mut slices, prec);
    } else {
        let part = &p.parts[0];
        let mut fused = vec![0.0f32; n * part.rows];
        matmul::matmul(part.view(weights), x, &mut fused, prec);
        for r in 0..n {
            let mut col = r * part.rows;
            for (out, &w) in outs.iter_mut().zip(widths) {
                out[r * w..(r + 1) * w].copy_from_slice(&fused[col..col + w]);
                col += w;
            }
        }
    }
}

/// `xn = RMSNorm(x) · attn_norm`.
pub fn attn_norm<S: ModelSlot>(
    weights: Res<S::Weights>,
    layer: Res<S::Layer>,
    mut batch: ResMut<S::Batch>,
) {
    let weights = weights.get();
    let layer = layer.get();
    let b = batch.get_mut();
    resize(&mut b.xn, b.x.len());
    norm::rms_norm(
        &b.x,
        &weights.layers[layer.0].attn_norm,
        weights.config.rms_eps,
        &mut b.xn,
    );
}

/// `q, k, v = xn · W{q,k,v}ᵀ (+ bias)`.
pub fn qkv_projection<S: ModelSlot>(
    weights: Res<S::Weights>,
    layer: Res<S::Layer>,
    mut batch: ResMut<S::Batch>,
    settings: Res<EngineSettings>,
) {
    let weights = weights.get();
    let layer = layer.get();
    let prec = S::precision(&settings);
    let b = batch.get_mut();
    let lw = &weights.layers[layer.0];
    let c = &weights.config;
    project(
        weights,
        &lw.qkv,
        &b.xn,
        &mut [&mut b.q, &mut b.k, &mut b.v],
        &[c.q_dim(), c.k_dim(), c.v_dim()],
        prec,
    );
    if let Some(bias) = &lw.qkv_bias {
        let (qd, kd) = (c.q_dim(), c.k_dim());
        let (bq, rest) = bias.split_at(qd);
        let (bk, bv) = rest.split_at(kd);
        for (buf, bias) in [(&mut b.q, bq), (&mut b.k, bk), (&mut b.v, bv)] {
            for row in buf.chunks_exact_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(x, bb)| *x += bb);
            }
        }
    }
}

/// Per-head RMSNorm of q and k (gemma3's QK-norm).
pub fn qk_norm<S: ModelSlot>(
    weights: Res<S::Weights>,
    layer: Res<S::Layer>,
    mut batch: ResMut<S::Batch>,
) {
    let weights = weights.get();
    let layer = layer.get();
    let b = batch.get_mut();
    let lw = &weights.layers[layer.0];
    let eps = weights.config.rms_eps;
    if let Some(w) = &lw.q_norm {
        norm::rms_norm_inplace(&mut b.q, w, eps);
    }
    if let Some(w) = &lw.k_norm {
        norm::rms_norm_inplace(&mut b.k, w, eps);
    }
}

/// Rotate q and k by each row's position.
pub fn apply_rope<S: ModelSlot>(
    weights: Res<S::Weights>,
    layer: Res<S::Layer>,
    settings: Res<EngineSettings>,
    mut batch: ResMut<S::Batch>,
) {
    let weights = weights.get();
    let layer = layer.get();
    let b = batch.get_mut();
    let c = &weights.config;
    let base = c.layers[layer.0].rope_base;
    // Frequency factors as llama.cpp's `get_rope_factors`: `rope_freqs` if loaded, else the
    // LongRoPE set chosen once for the whole context: long when a sequence may hold more than
    // the original context, else short.
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
        ext.corr_dims = rope::yarn_corr_dims(c.n_rot, original_context, base, beta_fast, beta_slow);
    }
    let (qd, kd) = (c.q_dim(), c.k_dim());
    for (r, &pos) in b.positions.iter().enumerate() {
        let angles = rope::rope_angles_ext(pos, c.n_rot, base, factors, &ext);
        let q = &mut b.q[r * qd..(r + 1) * qd];
        rope::apply_rope(q, c.head_dim_k, c.n_rot, c.rope_style, &angles);
        if let Some(t) = c.attn_temperature {
            let s = t.at(pos);
            q.iter_mut().for_each(|v| *v *= s);
        }
        let k = &mut b.k[r * kd..(r + 1) * kd];
        rope::apply_rope(k, c.head_dim_k, c.n_rot, c.rope_style, &angles);
    }
}

/// Append this step's K/V to each sequence's cache, then attend over the cache in place.
pub fn attend<S: ModelSlot>(
    weights: Res<S::Weights>,
    layer: Res<S::Layer>,
    mut batch: ResMut<S::Batch>,
    mut caches: Query<&mut S::Kv>,
) {
    let weights = weights.get();
    let layer = layer.get();
    let b = batch.get_mut();
    let c = &weights.config;
    let il = layer.0;
    let (qd, kd, vd) = (c.q_dim(), c.k_dim(), c.v_dim());
    let od = c.n_head * c.head_dim_v;
    resize(&mut b.attn, b.tokens.len() * od);
    let shape = attention::AttentionShape {
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim_k: c.head_dim_k,
        head_dim_v: c.head_dim_v,
        scale: c.attn_scale,
        window: c.layers[il].window,
        softcap: c.attn_logit_softcap,
    };
    for ch in &b.chunks {
        let Ok(mut kv) = caches.get_mut(ch.entity) else {
            continue;
        };
        let rows = ch.start_row..ch.start_row + ch.n_rows;
        let kv = kv.get_mut();
        kv.k[il].truncate(ch.start_pos * kd);
        kv.v[il].truncate(ch.start_pos * vd);
        kv.k[il].extend_from_f32(&b.k[rows.start * kd..rows.end * kd]);
        kv.v[il].extend_from_f32(&b.v[rows.start * vd..rows.end * vd]);
        attention::attention(
            &b.q[rows.start * qd..rows.end * qd],
            &b.positions[rows.clone()],
            kv.k[il].view(),
            kv.v[il].view(),
            shape,
            &mut b.attn[rows.start * od..rows.end * od],
        );
    }
}

/// `x += [post_norm](attn · Woᵀ)`.
pub fn attn_output<S: ModelSlot>(
    weights: Res<S::Weights>,
    layer: Res<S::Layer>,
    mut batch: ResMut<S::Batch>,
    settings: Res<EngineSettings>,
) {
    let weights = weights.get();
    let layer = layer.get();
    let prec = S::precision(&settings);
    let b = batch.get_mut();
    let lw = &weights.layers[layer.0];
    resize(&mut b.proj, b.x.len());
    matmul::matmul(lw.attn_output.view(weights), &b.attn, &mut b.proj, prec);
    residual_add(
        &mut b.x,
        &mut b.proj,
        lw.post_attn_norm.as_deref(),
        weights.config.rms_eps,
    );
}

fn residual_add(x: &mut [f32], proj: &mut [f32], post_norm: Option<&[f32]>, eps: f32) {
    if let Some(w) = post_norm {
        norm::rms_norm_inplace(proj, w, eps);
    }
    x.iter_mut().zip(proj.iter()).for_each(|(a, p)| *a += p);
}

/// `xn = RMSNorm(x) · ffn_norm`.
pub fn ffn_norm<S: ModelSlot>(
    weights: Res<S::Weights>,
    layer: Res<S::Layer>,
    mut batch: ResMut<S::Batch>,
) {
    let weights = weights.get();
    let layer = layer.get();
    let b = batch.get_mut();
    norm::rms_norm(
        &b.x,
        &weights.layers[layer.0].ffn_norm,
        weights.config.rms_eps,
        &mut b.xn,
    );
}

/// `x += [post_norm](act(xn·Wgᵀ) ⊙ (xn·Wuᵀ) · Wdᵀ)`.
pub fn ffn<S: ModelSlot>(
    weights: Res<S::Weights>,
    layer: Res<S::Layer>,
    mut batch: ResMut<S::Batch>,
    settings: Res<EngineSettings>,
) {
    let weights = weights.get();
    let layer = layer.get();
    let prec = S::precision(&settings);
    let b = batch.get_mut();
    let lw = &weights.layers[layer.0];
    let n_ff = weights.config.n_ff;
    project(
        weights,
        &lw.gate_up,
        &b.xn,
        &mut [&mut b.gate, &mut b.up],
        &[n_ff, n_ff],
        prec,
    );
    activation::gated_ffn(weights.config.ffn_activation, &mut b.gate, &b.up);
    matmul::matmul(lw.down.view(weights), &b.gate, &mut b.proj, prec);
    residual_add(
        &mut b.x,
        &mut b.proj,
        lw.post_ffn_norm.as_deref(),
        weights.config.rms_eps,
    );
}

/// Final norm and LM head for the rows that need logits.
pub fn compute_logits<S: ModelSlot>(
    weights: Res<S::Weights>,
    mut batch: ResMut<S::Batch>,
    settings: Res<EngineSettings>,
) {
    let weights = weights.get();
    let prec = S::precision(&settings);
    let b = batch.get_mut();
    let c = &weights.config;
    let d = c.n_embd;
    let n = b.logit_rows.len();
    let mut xs = vec![0.0f32; n * d];
    for (i, &r) in b.logit_rows.iter().enumerate() {
        norm::rms_norm(
            &b.x[r * d..(r + 1) * d],
            &weights.output_norm,
            c.rms_eps,
            &mut xs[i * d..(i + 1) * d],
        );
    }
    resize(&mut b.logits, n * c.n_vocab);
    matmul::matmul(weights.output.view(weights), &xs, &mut b.logits, prec);
    if let Some(cap) = c.final_logit_softcap {
        b.logits
            .iter_mut()
            .for_each(|l| *l = cap * (*l / cap).tanh());
    }
}

#[allow(clippy::type_complexity)]
/// Move evaluated rows into the caches' bookkeeping, then sample (or forward logits when scoring).
pub fn sample_tokens(
    mut commands: Commands,
    weights: Res<ModelWeights>,
    mut batch: ResMut<StepBatch>,
    mut prefixes: ResMut<PrefixCache>,
    mut seqs: Query<(
        &mut Tokens,
        &mut KvCache,
        &mut SamplerState,
        &mut GenState,
        &OutputSink,
        Option<&mut PrefixShare>,
    )>,
) {
    let b = &mut *batch;
    let c = &weights.config;
    let n_vocab = c.n_vocab;
    // Chunks with drafts are the verify system's.
    for ch in b.chunks.iter().filter(|c| c.n_draft == 0) {
        let Ok((mut tokens, mut kv, mut sampler, mut gen_state, sink, share)) =
            seqs.get_mut(ch.entity)
        else {
            continue;
        };
        commit_rows(&mut tokens, &mut kv, ch.start_pos, ch.n_rows);
        if let Some(mut share) = share
            && !share.stored
            && kv.len >= share.len
        {
            let (kd, vd, n) = (c.k_dim(), c.v_dim(), share.len);
            let k = kv.k.iter().map(|l| l.prefix(n * kd)).collect();
            let v = kv.v.iter().map(|l| l.prefix(n * vd)).collect();
            prefixes.insert(tokens.evaluated[..n].to_vec(), k, v);
            share.stored = true;
        }
        let n_logits = ch.n_rows - ch.logits_from;
        if n_logits == 0 {
            continue;
        }
        let logits = &mut b.logits[ch.first_logit * n_vocab..(ch.first_logit + n_logits) * n_vocab];
        if gen_state.score_all {
            let ev = Event::Logits {
                start_pos: ch.start_pos + ch.logits_from,
                n_vocab,
                logits: logits.to_vec(),
            };
            if sink.0.send(ev).is_err() {
                gen_state.finish = Some(FinishReason::Cancelled);
            } else if tokens.pending.is_empty() {
                gen_state.finish = Some(FinishReason::Scored);
            }
            continue;
        }
        let s = &mut *sampler;
        let id = sampling::sample(logits, &tokens.evaluated, &s.params, &mut s.rng);
        commands.entity(ch.entity).insert(Sampled(vec![id]));
    }
}

/// The first `n` pending tokens were evaluated at `start_pos..`: they move to `evaluated`, and
/// the cache holds their positions.
pub fn commit_rows(tokens: &mut Tokens, kv: &mut KvCache, start_pos: usize, n: usize) {
    let n = n.min(tokens.pending.len());
    let evaluated: Vec<u32> = tokens.pending.drain(..n).collect();
    tokens.evaluated.extend_from_slice(&evaluated);
    kv.len = start_pos + n;
}

/// Stream sampled tokens, apply stop conditions, finish and despawn completed sequences.
#[allow(clippy::type_complexity)]
pub fn emit_tokens(
    mut commands: Commands,
    vocab: Res<Vocab>,
    mut seqs: Query<(
        Entity,
        &mut Tokens,
        &mut GenState,
        &mut TextStream,
        &mut Timing,
        &OutputSink,
        Option<&Sampled>,
    )>,
) {
    for (e, mut tokens, mut gen_state, mut text_stream, mut timing, sink, sampled) in
        seqs.iter_mut()
    {
        let g = &mut *gen_state;
        if let Some(Sampled(ids)) = sampled {
            commands.entity(e).remove::<Sampled>();
            let now = Instant::now();
            if timing.first_token.is_none() {
                timing.first_token = Some(now);
                g.stats.prefill_s = (now - timing.admitted).as_secs_f64();
            }
            for &id in ids {
                g.n_generated += 1;
                g.stats.n_generated = g.n_generated;
                emit_one(id, g, &mut text_stream.0, &vocab, &sink.0);
                if g.finish.is_none() && g.n_generated >= g.max_new_tokens {
                    g.finish = Some(FinishReason::Length);
                }
                if g.finish.is_some() {
                    break;
                }
            }
            // The last token is evaluated next step (earlier ones of a speculative step already
            // are). A finished sequence is despawned below, so this matters only while running.
            if let Some(&last) = ids.last() {
                tokens.pending.push(last);
            }
        }
        if let Some(reason) = g.finish {
            if let Some(first) = timing.first_token {
                g.stats.decode_s = first.elapsed().as_secs_f64();
            } else {
                g.stats.prefill_s = timing.admitted.elapsed().as_secs_f64();
            }
            let tail = text_stream.0.flush();
            if !tail.is_empty() && reason != FinishReason::Stop {
                g.text.push_str(&tail);
            }
            let _ = sink.0.send(Event::Done {
                reason,
                stats: g.stats,
            });
            commands.entity(e).despawn();
        }
    }
}

/// Stream one generated token: its text (held back across partial UTF-8 characters, cut at a
/// stop string), or the end of generation.
fn emit_one(
    id: u32,
    g: &mut GenState,
    text_stream: &mut chord_resources::tokenizer::StreamDecoder,
    vocab: &Vocab,
    sink: &Sender<Event>,
) {
    if vocab.is_eog.get(id as usize).copied().unwrap_or(false) {
        // The end-of-generation token is reported (as llama.cpp's greedy ids include it) but adds no text.
        let _ = sink.send(Event::Token {
            id,
            text: String::new(),
        });
        g.finish = Some(FinishReason::Eos);
        return;
    }
    let piece = vocab
        .pieces
        .get(id as usize)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let text = text_stream.push_bytes(piece);
    let before = g.text.len();
    g.text.push_str(&text);
    let stop_hit = g
        .stop_strings
        .iter()
        .filter(|s| !s.is_empty())
        .find_map(|s| {
            // Only look where the new text could complete a stop string.
            let from = before.saturating_sub(s.len());
            let from = (from..=before)
                .find(|&i| g.text.is_char_boundary(i))
                .unwrap_or(before);
            g.text[from..].find(s.as_str()).map(|i| from + i)
        });
    let text = match stop_hit {
        Some(at) => {
            g.finish = Some(FinishReason::Stop);
            let keep = at.saturating_sub(before);
            let t = text[..keep.min(text.len())].to_string();
            g.text.truncate(at);
            t
        }
        None => text,
    };
    if sink.send(Event::Token { id, text }).is_err() {
        g.finish = Some(FinishReason::Cancelled);
    }
}
