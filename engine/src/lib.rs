//! wasm-chord's public API: load a GGUF model, generate (blocking, streaming, batched), chat,
//! score and measure perplexity. Every request becomes an entity in a bevy_ecs `World`; one
//! call of the step `Schedule` advances all active requests together.
//!
//! ```no_run
//! use chord_engine::{Engine, GenerateParams};
//! let mut engine = Engine::load("model.gguf").unwrap();
//! let out = engine.generate("Once upon a time", &GenerateParams::greedy(32)).unwrap();
//! println!("{}", out.text);
//! ```

mod backend;
pub mod models;

#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;
use std::sync::Arc;

use bevy_ecs::prelude::*;
use crossbeam_channel::{Receiver, Sender, unbounded};

use chord_resources::gguf::{GgufError, GgufFile};
use chord_resources::tokenizer::{ChatMessage, Tokenizer, TokenizerError};
use chord_systems::components::GenState;
use chord_systems::schedule::{init_world, step_schedule};
use chord_systems::systems::{CancelFlag, EngineSettings, Request, RequestQueue, Vocab};
use chord_systems::weights::{ModelWeights, WeightsError};

pub use chord_systems::backend::Backend;
pub use chord_systems::components::{Event, FinishReason, KvPrecision, SeqStats};
#[cfg(feature = "gpu")]
pub use chord_systems::gpu::{GpuContext, GpuError, ReadbackWait};
pub use chord_systems::kernels::matmul::ActivationPrecision;
pub use chord_systems::sampling::{InvalidParam, SamplingParams};
use chord_systems::schedule::StepPhase;
pub use chord_systems::speculative::{DraftSource, MAX_DRAFT, SpeculateParams};

/// Everything that can go wrong in the public API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read model {path}: {source}")]
    Open { path: String, source: GgufError },
    #[error("invalid model: {0}")]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Weights(#[from] WeightsError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("the prompt is empty (no tokens)")]
    EmptyPrompt,
    #[error("the prompt has {n_prompt} tokens but the context holds {n_ctx}")]
    PromptTooLong { n_prompt: usize, n_ctx: usize },
    #[error("the number of tokens to generate must be at least 1")]
    ZeroTokens,
    #[error(transparent)]
    InvalidParam(#[from] InvalidParam),
    #[error("token id {id} is outside the vocabulary ({n_vocab} tokens)")]
    BadToken { id: u32, n_vocab: usize },
    #[error("invalid option {0}")]
    InvalidOption(String),
    #[error("GPU backend: {0}")]
    Gpu(String),
    #[error("the model has no chat template")]
    NoChatTemplate,
    #[error("the request ended without a result")]
    Disconnected,
    #[error("speculative decoding with a draft model was asked for, but none is loaded")]
    NoDraftModel,
    #[error("the draft model cannot draft for this model: {0}")]
    DraftMismatch(String),
}

/// Engine-wide options.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Context length per sequence (0 = the model's training context, capped at 4096).
    pub n_ctx: usize,
    /// Most tokens evaluated per step across all sequences.
    pub n_batch: usize,
    /// Compute threads (0 = all cores).
    pub threads: usize,
    /// Quantized activations (fast, ggml's arithmetic) or f32 activations (exact math).
    pub precision: ActivationPrecision,
    /// Activations of the speculative-decoding draft model (default int8: it only proposes,
    /// the model's own pass decides, so output does not depend on it).
    pub draft_precision: ActivationPrecision,
    /// K/V cache element type (f32 exact, f16 half the memory).
    pub kv_precision: KvPrecision,
    /// Keep the compute threads spinning between the parallel jobs of a step (hand-off in well
    /// under a microsecond instead of a few per job). They never spin between steps.
    pub spin_threads: bool,
    /// CPU, GPU, or a real GPU when there is one (`Auto`).
    pub backend: Backend,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            n_ctx: 0,
            n_batch: 512,
            threads: 0,
            precision: ActivationPrecision::F32,
            draft_precision: ActivationPrecision::Q8,
            kv_precision: KvPrecision::F32,
            spin_threads: true,
            backend: Backend::Cpu,
        }
    }
}

/// Parameters of one generation.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops when the text contains one of these (the stop string is not returned).
    pub stop: Vec<String>,
    /// Add BOS/EOS as the model's metadata asks.
    pub add_special: bool,
    /// Recognise special tokens (`<|im_start|>` …) written in the prompt text.
    pub parse_special: bool,
    /// Text the prompt starts with that many requests share (a persona or system prompt): its
    /// K/V is computed once, cached, and copied into every later request that starts with it.
    pub shared_prefix: Option<String>,
    /// Speculative decoding: draft tokens (from the loaded draft model or by prompt lookup)
    /// verified in one batched pass. Greedy output is identical with or without it; sampled
    /// output has the same distribution.
    pub speculate: Option<SpeculateParams>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_new_tokens: 128,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            add_special: true,
            parse_special: true,
            shared_prefix: None,
            speculate: None,
        }
    }
}

impl GenerateParams {
    /// Greedy decoding of at most `n` tokens.
    pub fn greedy(n: usize) -> Self {
        GenerateParams {
            max_new_tokens: n,
            sampling: SamplingParams::greedy(),
            ..Default::default()
        }
    }
}

/// Result of a finished generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub stats: SeqStats,
}

/// Perplexity by llama.cpp's method.
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    pub ppl: f64,
    /// Perplexity of each chunk.
    pub chunks: Vec<f64>,
    pub n_tokens: usize,
}

/// A loaded model with its world and schedule.
pub struct Engine {
    world: World,
    step: Schedule,
    requests: Sender<Request>,
    tokenizer: Arc<Tokenizer>,
    n_ctx: usize,
    spin_threads: bool,
    active: QueryState<&'static GenState>,
    /// A step run in parts ([`Engine::step_begin`]) is in progress.
    split: bool,
}

/// How far a step run in parts ([`Engine::step_begin`], [`Engine::step_resume`]) got.
#[derive(Debug)]
pub enum StepProgress {
    /// The step is complete: its events are on the requests' channels.
    Done,
    /// The step waits for its GPU readback: await it (or, natively,
    /// [`ReadbackWait::wait_blocking`]), then call [`Engine::step_resume`].
    #[cfg(feature = "gpu")]
    Waiting(ReadbackWait),
}

impl Engine {
    /// Memory-map and load a GGUF model with default options (not on wasm32: no files there;
    /// use [`Engine::from_file`] with a streamed [`GgufFile`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: impl AsRef<Path>) -> Result<Engine, EngineError> {
        Self::load_with(path, EngineOptions::default())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_with(path: impl AsRef<Path>, opts: EngineOptions) -> Result<Engine, EngineError> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|source| EngineError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_file(Arc::new(file), opts)
    }

    /// Load from an in-memory GGUF image (wasm, tests).
    pub fn from_bytes(bytes: Vec<u8>, opts: EngineOptions) -> Result<Engine, EngineError> {
        Self::from_file(Arc::new(GgufFile::from_bytes(bytes)?), opts)
    }

    /// Build the world around an opened file.
    pub fn from_file(file: Arc<GgufFile>, opts: EngineOptions) -> Result<Engine, EngineError> {
        if opts.n_batch == 0 {
            return Err(EngineError::InvalidOption(
                "n_batch must be at least 1".into(),
            ));
        }
        chord_systems::kernels::parallel::init_compute_pool(opts.threads);
        let weights = ModelWeights::from_gguf(file.clone())?;
        let tokenizer = Arc::new(Tokenizer::from_gguf(&file)?);
        let n_ctx = if opts.n_ctx == 0 {
            weights.config.n_ctx_train.min(4096)
        } else {
            opts.n_ctx
        };
        let n_vocab = weights.config.n_vocab;
        let vocab = Vocab {
            pieces: (0..n_vocab as u32)
                .map(|id| tokenizer.token_to_piece(id, false))
                .collect(),
            is_eog: (0..n_vocab as u32).map(|id| tokenizer.is_eog(id)).collect(),
        };
        let (tx, rx) = unbounded();
        let mut world = World::new();
        init_world(
            &mut world,
            weights,
            vocab,
            EngineSettings {
                n_batch: opts.n_batch,
                n_ctx,
                precision: opts.precision,
                draft_precision: opts.draft_precision,
                kv_precision: opts.kv_precision,
            },
            RequestQueue(rx),
        );
        backend::select(&mut world, opts.backend)?;
        let active = world.query::<&GenState>();
        Ok(Engine {
            world,
            step: step_schedule(),
            requests: tx,
            tokenizer,
            n_ctx,
            spin_threads: opts.spin_threads,
            active,
            split: false,
        })
    }

    /// Load a draft model for speculative decoding (requests then ask for it with
    /// [`GenerateParams::speculate`]). It must share this model's vocabulary.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_draft(&mut self, path: impl AsRef<Path>) -> Result<(), EngineError> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|source| EngineError::Open {
            path: path.display().to_string(),
            source,
        })?;
        self.set_draft(Arc::new(file))
    }

    /// [`Engine::load_draft`] from an opened file.
    pub fn set_draft(&mut self, file: Arc<GgufFile>) -> Result<(), EngineError> {
        let weights = ModelWeights::from_gguf(file.clone())?;
        let draft_tok = Tokenizer::from_gguf(&file)?;
        check_same_vocab(&self.tokenizer, &draft_tok)?;
        chord_systems::speculative::insert_draft_model(&mut self.world, weights);
        Ok(())
    }

    /// Activations of the draft model's matrix products (see
    /// [`EngineOptions::draft_precision`]).
    pub fn set_draft_precision(&mut self, precision: ActivationPrecision) {
        self.world.resource_mut::<EngineSettings>().draft_precision = precision;
    }

    /// Whether a draft model is loaded.
    pub fn has_draft_model(&self) -> bool {
        self.world
            .contains_resource::<chord_systems::slot::DraftWeights>()
    }

    /// The draft model's weights, if one is loaded.
    pub fn draft_weights(&self) -> Option<&ModelWeights> {
        self.world
            .get_resource::<chord_systems::slot::DraftWeights>()
            .map(|d| &d.0)
    }

    pub fn weights(&self) -> &ModelWeights {
        self.world.resource::<ModelWeights>()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Context length per sequence.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.tokenizer.encode(text, add_special, parse_special)
    }

    fn check_prompt(&self, ids: &[u32], extra: usize) -> Result<(), EngineError> {
        if ids.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let n_vocab = self.weights().config.n_vocab;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(EngineError::BadToken { id, n_vocab });
        }
        if ids.len() + extra > self.n_ctx {
            return Err(EngineError::PromptTooLong {
                n_prompt: ids.len(),
                n_ctx: self.n_ctx,
            });
        }
        Ok(())
    }

    /// Queue a generation for already-tokenized `prompt`; its events arrive on the returned
    /// channel as [`Engine::step`] runs. Dropping the receiver cancels the request: its entity
    /// (and K/V cache) is freed at the next step, even in the middle of a prefill.
    pub fn submit(
        &mut self,
        prompt: Vec<u32>,
        params: &GenerateParams,
    ) -> Result<EventReceiver, EngineError> {
        if params.max_new_tokens == 0 {
            return Err(EngineError::ZeroTokens);
        }
        params.sampling.validate(self.weights().config.n_vocab)?;
        if let Some(spec) = &params.speculate {
            if let Some(why) = spec.invalid() {
                return Err(EngineError::InvalidOption(why));
            }
            if spec.source == DraftSource::Model && !self.has_draft_model() {
                return Err(EngineError::NoDraftModel);
            }
        }
        self.check_prompt(&prompt, 0)?;
        let share_prefix = match &params.shared_prefix {
            Some(text) => {
                let ids = self.tokenize(text, params.add_special, params.parse_special);
                ids.iter().zip(&prompt).take_while(|(a, b)| a == b).count()
            }
            None => 0,
        };
        let (tx, rx) = unbounded();
        let cancel = CancelFlag::default();
        let req = Request {
            share_prefix,
            cancel: cancel.clone(),
            speculate: params.speculate,
            prompt,
            params: params.sampling.clone(),
            max_new_tokens: params.max_new_tokens,
            stop_strings: params.stop.clone(),
            score_all: false,
            sink: tx,
        };
        self.requests
            .send(req)
            .map_err(|_| EngineError::Disconnected)?;
        Ok(EventReceiver { rx, cancel })
    }

    /// Whether any request is queued or running.
    pub fn has_work(&mut self) -> bool {
        !self.requests.is_empty() || self.active.iter(&self.world).next().is_some()
    }

    /// Sequences admitted and not finished yet (each is an entity holding its KV cache).
    pub fn active_sequences(&mut self) -> usize {
        self.active.iter(&self.world).count()
    }

    /// Entities in the engine's world. Every request is one until it finishes or is cancelled,
    /// so once idle this is back to its value after loading (a diagnostic for leaks).
    pub fn entity_count(&self) -> u32 {
        self.world.entity_count()
    }

    /// Run one step of every active sequence. (A step begun with [`Engine::step_begin`] is
    /// finished instead, waiting for its GPU readback; in the browser, where that cannot be
    /// waited for, it is left in flight.)
    pub fn step(&mut self) {
        if self.split {
            self.finish_split_step();
            return;
        }
        self.run_step();
    }

    fn run_step(&mut self) {
        let (step, world) = (&mut self.step, &mut self.world);
        if self.spin_threads {
            chord_systems::kernels::parallel::with_team(|| step.run(world));
        } else {
            step.run(world);
        }
    }

    /// Run one part of the step schedule.
    fn run_phase(&mut self, phase: StepPhase) {
        self.world.insert_resource(phase);
        self.run_step();
        self.world.insert_resource(StepPhase::Whole);
    }

    fn finish_split_step(&mut self) {
        #[cfg(feature = "gpu")]
        while let StepProgress::Waiting(w) = self.step_resume() {
            if let Err(e) = w.wait_blocking()
                && !w.is_ready()
            {
                eprintln!("chord: {e}");
                return;
            }
        }
        #[cfg(not(feature = "gpu"))]
        self.step_resume();
    }

    /// Begin one step that never blocks on the GPU (the browser's WebGPU path): it runs up to
    /// the submit of the step's command buffer and returns [`StepProgress::Waiting`] with the
    /// readback to await before [`Engine::step_resume`]. On the CPU the whole step runs and
    /// this is [`Engine::step`]. Begun while a step is in progress, it resumes that one.
    pub fn step_begin(&mut self) -> StepProgress {
        if self.split {
            return self.step_resume();
        }
        #[cfg(feature = "gpu")]
        if self
            .world
            .contains_resource::<chord_systems::gpu::GpuForward>()
        {
            self.split = true;
            self.run_phase(StepPhase::Front);
            return self.step_resume();
        }
        self.run_step();
        StepProgress::Done
    }

    /// Continue a step begun with [`Engine::step_begin`] once its readback is ready: take the
    /// readback (another may follow: scoring rows beyond one readback), then sample and emit.
    /// Without a step in progress this does nothing.
    pub fn step_resume(&mut self) -> StepProgress {
        if !self.split {
            return StepProgress::Done;
        }
        #[cfg(feature = "gpu")]
        {
            self.run_phase(StepPhase::Readback);
            let wait = self
                .world
                .get_resource::<chord_systems::gpu::GpuForward>()
                .and_then(|g| g.readback_wait());
            if let Some(w) = wait {
                return StepProgress::Waiting(w);
            }
        }
        self.run_phase(StepPhase::Back);
        self.split = false;
        StepProgress::Done
    }

    /// Whether a step begun with [`Engine::step_begin`] has not finished yet.
    pub fn step_in_progress(&self) -> bool {
        self.split
    }

    /// Move the forward pass onto the GPU of `ctx` (made with [`GpuContext::new_async`]; in the
    /// browser the adapter and device can only be requested asynchronously, so the engine is
    /// built on the CPU and moved here). Refused while requests are running, and for models
    /// the GPU path does not support (the engine then stays on the CPU).
    #[cfg(feature = "gpu")]
    pub fn install_gpu(&mut self, ctx: GpuContext) -> Result<(), EngineError> {
        if self.has_work() || self.split {
            return Err(EngineError::InvalidOption(
                "the backend cannot change while requests are running".into(),
            ));
        }
        if self.gpu_adapter().is_some() {
            return Err(EngineError::InvalidOption(
                "the engine already runs on the GPU".into(),
            ));
        }
        chord_systems::gpu::install(&mut self.world, ctx)
            .map_err(|e| EngineError::Gpu(e.to_string()))
    }

    /// Why this model cannot run on the GPU path (`Ok`: it can), without touching a device.
    #[cfg(feature = "gpu")]
    pub fn gpu_supported(&self) -> Result<(), EngineError> {
        chord_systems::gpu::forward::check_supported(self.weights())
            .map_err(|e| EngineError::Gpu(e.to_string()))
    }

    /// The GPU adapter running the forward pass, or `None` on the CPU.
    pub fn gpu_adapter(&self) -> Option<String> {
        #[cfg(feature = "gpu")]
        if let Some(g) = self.world.get_resource::<chord_systems::gpu::GpuForward>() {
            return Some(g.ctx.describe());
        }
        None
    }

    /// Step until no request is left.
    pub fn run_until_idle(&mut self) {
        while self.has_work() {
            self.step();
        }
    }

    /// Generate from a text prompt and wait for the result.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
    ) -> Result<Output, EngineError> {
        let mut v = self.generate_batch(&[(prompt, params.clone())])?;
        v.pop().ok_or(EngineError::Disconnected)
    }

    /// Generate from already-tokenized ids.
    pub fn generate_ids(
        &mut self,
        prompt: Vec<u32>,
        params: &GenerateParams,
    ) -> Result<Output, EngineError> {
        let rx = self.submit(prompt.clone(), params)?;
        self.run_until_idle();
        collect(prompt, &rx)
    }

    /// Stream a generation: the iterator runs steps as it is pulled and yields each event.
    pub fn stream(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
    ) -> Result<TokenStream<'_>, EngineError> {
        let ids = self.tokenize(prompt, params.add_special, params.parse_special);
        let rx = self.submit(ids, params)?;
        Ok(TokenStream {
            engine: self,
            rx,
            done: false,
        })
    }

    /// Run several generations concurrently (one entity each, batched every step).
    pub fn generate_batch<S: AsRef<str>>(
        &mut self,
        requests: &[(S, GenerateParams)],
    ) -> Result<Vec<Output>, EngineError> {
        let mut pending = Vec::with_capacity(requests.len());
        for (prompt, params) in requests {
            let ids = self.tokenize(prompt.as_ref(), params.add_special, params.parse_special);
            pending.push(ids);
        }
        let mut rxs = Vec::with_capacity(requests.len());
        for (ids, (_, params)) in pending.iter().zip(requests) {
            rxs.push(self.submit(ids.clone(), params)?);
        }
        self.run_until_idle();
        pending
            .into_iter()
            .zip(&rxs)
            .map(|(ids, rx)| collect(ids, rx))
            .collect()
    }

    /// Render `messages` with the model's chat template and generate the assistant's reply.
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        params: &GenerateParams,
    ) -> Result<Output, EngineError> {
        let prompt = self.render_chat(messages)?;
        let params = GenerateParams {
            parse_special: true,
            add_special: false,
            ..params.clone()
        };
        self.generate(&prompt, &params)
    }

    /// The chat prompt text for `messages` (generation prompt appended).
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        if self.tokenizer.chat_template().is_none() {
            return Err(EngineError::NoChatTemplate);
        }
        Ok(self.tokenizer.apply_chat_template(messages, true)?)
    }

    /// Teacher-forced evaluation of `ids` in one pass: `f(position, logits)` for every position
    /// (the distribution after `ids[0..=position]`).
    pub fn score_with(
        &mut self,
        ids: &[u32],
        mut f: impl FnMut(usize, &[f32]),
    ) -> Result<(), EngineError> {
        self.check_prompt(ids, 0)?;
        let (tx, rx) = unbounded();
        let req = Request {
            prompt: ids.to_vec(),
            params: SamplingParams::greedy(),
            max_new_tokens: 0,
            stop_strings: Vec::new(),
            score_all: true,
            share_prefix: 0,
            speculate: None,
            cancel: Default::default(),
            sink: tx,
        };
        self.requests
            .send(req)
            .map_err(|_| EngineError::Disconnected)?;
        loop {
            if self.has_work() {
                self.step();
            }
            let mut finished = false;
            for ev in rx.try_iter() {
                match ev {
                    Event::Logits {
                        start_pos,
                        n_vocab,
                        logits,
                    } => {
                        for (i, row) in logits.chunks_exact(n_vocab).enumerate() {
                            f(start_pos + i, row);
                        }
                    }
                    Event::Done { reason, .. } => {
                        if reason != FinishReason::Scored {
                            return Err(EngineError::Disconnected);
                        }
                        finished = true;
                    }
                    Event::Token { .. } => {}
                }
            }
            if finished {
                return Ok(());
            }
            if !self.has_work() {
                return Err(EngineError::Disconnected);
            }
        }
    }

    /// Top-`k` `(id, logit)` pairs at every position of `ids`, highest first (ties: lower id).
    pub fn score(&mut self, ids: &[u32], k: usize) -> Result<Vec<Vec<(u32, f32)>>, EngineError> {
        let mut out = vec![Vec::new(); ids.len()];
        self.score_with(ids, |pos, logits| out[pos] = top_k(logits, k))?;
        Ok(out)
    }

    /// Perplexity of `text` by llama-perplexity's method: chunks of `n_ctx` tokens, each from an
    /// empty cache (first token replaced by BOS when the vocabulary adds one), scoring the
    /// next-token log-probability at positions `n_ctx/2 .. n_ctx-1`.
    pub fn perplexity(&mut self, text: &str, n_ctx: usize) -> Result<Perplexity, EngineError> {
        if n_ctx < 4 {
            return Err(EngineError::InvalidOption(format!(
                "perplexity context {n_ctx} is too small"
            )));
        }
        if n_ctx > self.n_ctx {
            return Err(EngineError::PromptTooLong {
                n_prompt: n_ctx,
                n_ctx: self.n_ctx,
            });
        }
        let tokens = self.tokenizer.encode(text, true, false);
        let n_chunk = tokens.len() / n_ctx;
        if n_chunk == 0 {
            return Err(EngineError::PromptTooLong {
                n_prompt: tokens.len(),
                n_ctx,
            });
        }
        let bos = if self.tokenizer.add_bos() {
            self.tokenizer.bos()
        } else {
            None
        };
        let first = n_ctx / 2;
        let mut total_nll = 0.0f64;
        let mut count = 0usize;
        let mut chunks = Vec::with_capacity(n_chunk);
        for c in 0..n_chunk {
            let mut ids = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                ids[0] = b;
            }
            let targets = ids.clone();
            let mut nll = 0.0f64;
            let mut n = 0usize;
            self.score_with(&ids, |pos, logits| {
                if pos >= first && pos + 1 < n_ctx {
                    nll += -log_softmax_at(logits, targets[pos + 1] as usize);
                    n += 1;
                }
            })?;
            chunks.push((nll / n as f64).exp());
            total_nll += nll;
            count += n;
        }
        Ok(Perplexity {
            ppl: (total_nll / count as f64).exp(),
            chunks,
            n_tokens: tokens.len(),
        })
    }
}

/// log softmax(logits)[target], max-subtracted with a double sum (as llama-perplexity).
pub fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (logits.get(target).copied().unwrap_or(f32::NEG_INFINITY) - max) as f64 - sum.ln()
}

/// The `k` highest `(id, logit)` pairs, highest first, ties to the lower id.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let k = k.min(v.len());
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k > 0 && k < v.len() {
        v.select_nth_unstable_by(k - 1, cmp);
    }
    v.truncate(k);
    v.sort_by(cmp);
    v
}

fn collect(prompt_ids: Vec<u32>, rx: &Receiver<Event>) -> Result<Output, EngineError> {
    let mut ids = Vec::new();
    let mut text = String::new();
    for ev in rx.try_iter() {
        match ev {
            Event::Token { id, text: t } => {
                ids.push(id);
                text.push_str(&t);
            }
            Event::Done { reason, stats } => {
                return Ok(Output {
                    prompt_ids,
                    ids,
                    text,
                    finish: reason,
                    stats,
                });
            }
            Event::Logits { .. } => {}
        }
    }
    Err(EngineError::Disconnected)
}

/// The event channel of one request ([`Engine::submit`]); dereferences to the crossbeam
/// `Receiver`. Dropping it cancels the request.
#[derive(Debug)]
pub struct EventReceiver {
    rx: Receiver<Event>,
    cancel: CancelFlag,
}

impl std::ops::Deref for EventReceiver {
    type Target = Receiver<Event>;

    fn deref(&self) -> &Receiver<Event> {
        &self.rx
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Events of one streamed generation; pulling runs engine steps.
pub struct TokenStream<'a> {
    engine: &'a mut Engine,
    rx: EventReceiver,
    done: bool,
}

impl Iterator for TokenStream<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if let Ok(ev) = self.rx.try_recv() {
                if matches!(ev, Event::Done { .. }) {
                    self.done = true;
                }
                return Some(ev);
            }
            if !self.engine.has_work() {
                self.done = true;
                return None;
            }
            self.engine.step();
        }
    }
}

/// Most vocabulary-size difference a draft model may have (llama.cpp allows the same: models of
/// one family often pad their vocabularies differently).
const MAX_DRAFT_VOCAB_DIFFERENCE: usize = 128;

/// A draft model can only propose ids the target reads the same way: the same special tokens
/// and identical token texts for every id both have.
fn check_same_vocab(target: &Tokenizer, draft: &Tokenizer) -> Result<(), EngineError> {
    let (nt, nd) = (target.n_vocab(), draft.n_vocab());
    if nt.abs_diff(nd) > MAX_DRAFT_VOCAB_DIFFERENCE {
        return Err(EngineError::DraftMismatch(format!(
            "vocabulary sizes {nd} (draft) and {nt} (target) differ by more than \
             {MAX_DRAFT_VOCAB_DIFFERENCE}"
        )));
    }
    if target.model() != draft.model() {
        return Err(EngineError::DraftMismatch(format!(
            "tokenizer models differ ({} draft, {} target)",
            draft.model(),
            target.model()
        )));
    }
    if target.bos() != draft.bos() || target.eos() != draft.eos() {
        return Err(EngineError::DraftMismatch(
            "BOS/EOS token ids differ".into(),
        ));
    }
    for id in 0..nt.min(nd) as u32 {
        let (t, d) = (target.token_text(id), draft.token_text(id));
        if t != d {
            let show =
                |x: Option<&[u8]>| String::from_utf8_lossy(x.unwrap_or_default()).into_owned();
            return Err(EngineError::DraftMismatch(format!(
                "token {id} is {:?} in the draft and {:?} in the target",
                show(d),
                show(t),
            )));
        }
    }
    Ok(())
}
