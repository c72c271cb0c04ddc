//! The browser-independent part of the shell: streamed loading and a step-at-a-time generation
//! that a Web Worker can interleave with its message loop (so a stop message gets through).
//! Plain Rust, so it is unit-tested natively as well as in Chromium.

use std::sync::Arc;

use chord_engine::{
    Engine, EngineError, EngineOptions, Event, FinishReason, GenerateParams, SamplingParams,
    StepProgress,
};
use chord_resources::gguf::{GgufError, GgufStreamLoader};
use chord_resources::tokenizer::ChatMessage;
use web_time::Instant;

/// Everything the shell can fail with; the bindings turn it into a JS `Error`.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("invalid model: {0}")]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the loader has already built its engine")]
    LoaderSpent,
    #[error("a generation is already running (stop it first)")]
    Busy,
    #[error("the generation ended without a result")]
    Disconnected,
    #[error("{0}")]
    Invalid(String),
}

/// Assembles a model from byte chunks as they arrive (download, OPFS, `File.stream()`), holding
/// it exactly once: one buffer of the final size, filled in place.
#[derive(Debug)]
pub struct Loader {
    inner: Option<GgufStreamLoader>,
}

impl Loader {
    /// `expected_len`: the file's size when known (`Content-Length`, `File.size`); the buffer is
    /// then sized by it and a header that does not fit fails at once.
    pub fn new(expected_len: Option<u64>) -> Loader {
        let mut l = GgufStreamLoader::new();
        if let Some(n) = expected_len {
            l = l.with_expected_len(n);
        }
        Loader { inner: Some(l) }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ShellError> {
        self.inner
            .as_mut()
            .ok_or(ShellError::LoaderSpent)?
            .push(chunk)?;
        Ok(())
    }

    pub fn bytes_received(&self) -> u64 {
        self.inner.as_ref().map_or(0, |l| l.bytes_received())
    }

    /// The final size, once known (announced, or read from the header).
    pub fn total_len(&self) -> Option<u64> {
        self.inner.as_ref().and_then(|l| l.total_len())
    }

    pub fn header_parsed(&self) -> bool {
        self.inner.as_ref().is_some_and(|l| l.header_parsed())
    }

    /// Check the file is complete and build the engine around it (no copy).
    pub fn finish(&mut self, opts: EngineOptions) -> Result<Session, ShellError> {
        let loader = self.inner.take().ok_or(ShellError::LoaderSpent)?;
        let file = loader.finish()?;
        let t = Instant::now();
        let engine = Engine::from_file(Arc::new(file), opts)?;
        Ok(Session::new(engine, t.elapsed().as_secs_f64()))
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenConfig {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
}

impl Default for GenConfig {
    fn default() -> Self {
        let p = GenerateParams::default();
        GenConfig {
            max_new_tokens: p.max_new_tokens,
            sampling: p.sampling,
            stop: p.stop,
        }
    }
}

/// The prompt of a generation.
#[derive(Clone, Debug)]
pub enum Prompt<'a> {
    /// Raw text completion, tokenized as `chord generate` does (BOS as the model asks, special
    /// tokens recognised).
    Text(&'a str),
    /// A conversation rendered with the model's chat template (generation prompt appended).
    Chat(&'a [ChatMessage]),
}

/// The figures of one finished (or stopped) generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    /// Prompt evaluation time, from admission to the first token (engine clock).
    pub prefill_s: f64,
    /// From the first token to the end.
    pub decode_s: f64,
    pub prefill_tok_s: f64,
    /// Tokens after the first per second of decoding (as `chord generate --json`).
    pub decode_tok_s: f64,
    /// From [`Session::start`] to the first token (tokenization included).
    pub first_token_s: Option<f64>,
    pub total_s: f64,
}

struct Active {
    rx: chord_engine::EventReceiver,
    run: Run,
}

/// What a running generation has produced so far.
struct Run {
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
    text: String,
    started: Instant,
    first_token: Option<Instant>,
}

impl Run {
    fn report(
        self,
        finish: FinishReason,
        stats: Option<chord_engine::SeqStats>,
        now: Instant,
    ) -> Report {
        let first_token_s = self
            .first_token
            .map(|t| t.duration_since(self.started).as_secs_f64());
        let (prefill_s, decode_s, prefill_tok_s, decode_tok_s) = match stats {
            Some(s) => (s.prefill_s, s.decode_s, s.prefill_tok_s(), s.decode_tok_s()),
            None => {
                // Stopped: the engine's figures went to the dropped channel; use ours.
                let prefill = first_token_s.unwrap_or(0.0);
                let decode = self
                    .first_token
                    .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
                let n_prompt = self.prompt_ids.len() as f64;
                let n_dec = self.ids.len().saturating_sub(1) as f64;
                (
                    prefill,
                    decode,
                    if prefill > 0.0 {
                        n_prompt / prefill
                    } else {
                        0.0
                    },
                    if decode > 0.0 { n_dec / decode } else { 0.0 },
                )
            }
        };
        Report {
            prompt_ids: self.prompt_ids,
            ids: self.ids,
            text: self.text,
            finish,
            prefill_s,
            decode_s,
            prefill_tok_s,
            decode_tok_s,
            first_token_s,
            total_s: now.duration_since(self.started).as_secs_f64(),
        }
    }
}

/// Where [`Session::step_begin`] / [`Session::step_resume`] left a step.
#[derive(Debug)]
pub enum AsyncStep {
    /// The step is complete; `true` once the generation is over (as [`Session::step`]).
    Done(bool),
    /// The GPU readback is in flight: await it, then [`Session::step_resume`].
    #[cfg(feature = "gpu")]
    Waiting(chord_engine::ReadbackWait),
}

/// A loaded engine and at most one running generation, advanced one engine step per
/// [`Session::step`] (or, never blocking on the GPU, [`Session::step_begin`] +
/// [`Session::step_resume`]).
pub struct Session {
    engine: Engine,
    active: Option<Active>,
    last: Option<Report>,
    build_s: f64,
    /// A stop asked for while a step was in flight: done when that step completes.
    stop_requested: bool,
    /// WebGPU errors no error scope caught (validation, out of memory, device loss), recorded by
    /// the device's handler; a step that sees a new one fails with it.
    gpu_errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// How many of `gpu_errors` were reported already.
    gpu_errors_seen: usize,
}

impl Session {
    pub fn new(engine: Engine, build_s: f64) -> Session {
        Session {
            engine,
            active: None,
            last: None,
            build_s,
            stop_requested: false,
            gpu_errors: Default::default(),
            gpu_errors_seen: 0,
        }
    }

    /// Move the engine onto `ctx`'s GPU ([`Engine::install_gpu`]), recording the device's
    /// uncaptured errors (in the browser they would otherwise only reach the console).
    #[cfg(feature = "gpu")]
    pub fn install_gpu(&mut self, ctx: chord_engine::GpuContext) -> Result<(), ShellError> {
        let errors = self.gpu_errors.clone();
        ctx.device
            .on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
                if let Ok(mut v) = errors.lock() {
                    v.push(e.to_string());
                }
            }));
        self.engine.install_gpu(ctx)?;
        Ok(())
    }

    /// The GPU errors recorded so far (see [`Session::install_gpu`]).
    pub fn gpu_errors(&self) -> Vec<String> {
        self.gpu_errors
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// A GPU error recorded since the last check: the running generation is stopped and the
    /// error returned.
    fn check_gpu_errors(&mut self) -> Result<(), ShellError> {
        let new = match self.gpu_errors.lock() {
            Ok(v) if v.len() > self.gpu_errors_seen => {
                let e = v[self.gpu_errors_seen..].join("; ");
                self.gpu_errors_seen = v.len();
                e
            }
            _ => return Ok(()),
        };
        self.stop();
        Err(ShellError::Invalid(format!("GPU error: {new}")))
    }

    /// The engine, to change its backend ([`Engine::install_gpu`]) before generating.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Seconds `Engine::from_file` took (weights and tokenizer set up; the bytes were in).
    pub fn build_s(&self) -> f64 {
        self.build_s
    }

    pub fn is_running(&self) -> bool {
        self.active.is_some()
    }

    /// The last finished or stopped generation.
    pub fn last_report(&self) -> Option<&Report> {
        self.last.as_ref()
    }

    /// Queue a generation; tokens come out of [`Session::step`].
    pub fn start(&mut self, prompt: Prompt<'_>, cfg: &GenConfig) -> Result<(), ShellError> {
        if self.active.is_some() {
            return Err(ShellError::Busy);
        }
        let started = Instant::now();
        let (text, add_special) = match prompt {
            Prompt::Text(t) => (t.to_string(), true),
            Prompt::Chat(messages) => (self.engine.render_chat(messages)?, false),
        };
        let params = GenerateParams {
            max_new_tokens: cfg.max_new_tokens,
            sampling: cfg.sampling.clone(),
            stop: cfg.stop.clone(),
            add_special,
            parse_special: true,
            ..Default::default()
        };
        let prompt_ids = self.engine.tokenize(&text, add_special, true);
        let rx = self.engine.submit(prompt_ids.clone(), &params)?;
        self.active = Some(Active {
            rx,
            run: Run {
                prompt_ids,
                ids: Vec::new(),
                text: String::new(),
                started,
                first_token: None,
            },
        });
        Ok(())
    }

    /// Run one engine step (the whole prompt, or one new token) and hand each new token to
    /// `on_token(id, text)`; `on_token` returning `false` stops the generation. Returns `true`
    /// once the generation is over (also when none was running).
    pub fn step(&mut self, on_token: impl FnMut(u32, &str) -> bool) -> Result<bool, ShellError> {
        if self.active.is_none() {
            return Ok(true);
        }
        if self.engine.step_in_progress() {
            return Err(ShellError::Busy);
        }
        #[cfg(target_arch = "wasm32")]
        if self.engine.gpu_adapter().is_some() {
            return Err(ShellError::Invalid(
                "on WebGPU the engine steps with stepAsync (a readback cannot block)".into(),
            ));
        }
        if self.engine.has_work() {
            self.engine.step();
        }
        self.after_step(on_token)
    }

    /// [`Session::step`] that never blocks on the GPU: on the GPU path it returns
    /// [`AsyncStep::Waiting`] once the step's command buffer is submitted; await the readback,
    /// then call [`Session::step_resume`]. On the CPU it is `step`.
    pub fn step_begin(
        &mut self,
        on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<AsyncStep, ShellError> {
        if self.active.is_none() {
            return Ok(AsyncStep::Done(true));
        }
        if self.engine.step_in_progress() {
            return Err(ShellError::Busy);
        }
        if self.engine.has_work() {
            match self.engine.step_begin() {
                StepProgress::Done => {}
                #[cfg(feature = "gpu")]
                StepProgress::Waiting(w) => return Ok(AsyncStep::Waiting(w)),
            }
        }
        self.after_step(on_token).map(AsyncStep::Done)
    }

    /// Continue the step of [`Session::step_begin`] after its readback; tokens go to
    /// `on_token` as in [`Session::step`]. A stop asked for meanwhile happens after them.
    pub fn step_resume(
        &mut self,
        on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<AsyncStep, ShellError> {
        match self.engine.step_resume() {
            StepProgress::Done => {}
            #[cfg(feature = "gpu")]
            StepProgress::Waiting(w) => return Ok(AsyncStep::Waiting(w)),
        }
        self.check_gpu_errors()?;
        let done = self.after_step(on_token);
        if std::mem::take(&mut self.stop_requested) {
            // The step's tokens were handed out; the stop keeps them.
            self.stop();
            return done.map(|_| AsyncStep::Done(true));
        }
        done.map(AsyncStep::Done)
    }

    /// Hand the events of the step that just ran to `on_token` and the report.
    fn after_step(
        &mut self,
        mut on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<bool, ShellError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(true);
        };
        let mut done = None;
        let mut keep_going = true;
        for ev in active.rx.try_iter() {
            match ev {
                Event::Token { id, text } => {
                    let run = &mut active.run;
                    if run.first_token.is_none() {
                        run.first_token = Some(Instant::now());
                    }
                    run.ids.push(id);
                    run.text.push_str(&text);
                    if !on_token(id, &text) {
                        keep_going = false;
                        break;
                    }
                }
                Event::Done { reason, stats } => done = Some((reason, stats)),
                Event::Logits { .. } => {}
            }
        }
        if let Some((reason, stats)) = done {
            if let Some(a) = self.active.take() {
                self.last = Some(a.run.report(reason, Some(stats), Instant::now()));
            }
            return Ok(true);
        }
        if !keep_going {
            self.stop();
            return Ok(true);
        }
        if !self.engine.has_work() {
            self.active = None;
            return Err(ShellError::Disconnected);
        }
        Ok(false)
    }

    /// Stop the running generation (if any): its request is cancelled and the engine stepped
    /// until idle (at most the rest of a prompt chunk). The report keeps what was generated.
    /// While a step is in flight (between [`Session::step_begin`] and the end of
    /// [`Session::step_resume`]) the stop happens when that step completes.
    pub fn stop(&mut self) {
        if self.active.is_none() {
            return;
        }
        if self.engine.step_in_progress() {
            self.stop_requested = true;
            return;
        }
        let Some(active) = self.active.take() else {
            return;
        };
        let now = Instant::now();
        // Dropping the receiver makes the engine cancel the sequence at its next token.
        drop(active.rx);
        while self.engine.has_work() {
            self.engine.step();
        }
        self.last = Some(active.run.report(FinishReason::Cancelled, None, now));
    }

    /// Run a generation to its end (tests, scripts): `start`, then `step` until done.
    pub fn generate(
        &mut self,
        prompt: Prompt<'_>,
        cfg: &GenConfig,
        mut on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<Report, ShellError> {
        self.start(prompt, cfg)?;
        while !self.step(&mut on_token)? {}
        self.last.clone().ok_or(ShellError::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_model;

    fn session() -> Session {
        let bytes = tiny_model();
        let mut l = Loader::new(Some(bytes.len() as u64));
        for c in bytes.chunks(777) {
            l.push(c).unwrap();
        }
        l.finish(EngineOptions {
            n_ctx: 64,
            threads: 1,
            ..Default::default()
        })
        .unwrap()
    }

    fn greedy(n: usize) -> GenConfig {
        GenConfig {
            max_new_tokens: n,
            sampling: SamplingParams::greedy(),
            stop: Vec::new(),
        }
    }

    #[test]
    fn stepping_matches_blocking_generate() {
        let mut s = session();
        let mut seen = Vec::new();
        let r = s
            .generate(Prompt::Text("hello world"), &greedy(8), |id, _| {
                seen.push(id);
                true
            })
            .unwrap();
        assert_eq!(r.ids, seen);
        assert_eq!(r.ids.len(), 8);
        assert_eq!(r.finish, FinishReason::Length);
        let direct = Engine::from_bytes(
            tiny_model(),
            EngineOptions {
                n_ctx: 64,
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap()
        .generate("hello world", &GenerateParams::greedy(8))
        .unwrap();
        assert_eq!(r.ids, direct.ids);
        assert_eq!(r.prompt_ids, direct.prompt_ids);
        assert!(r.first_token_s.is_some());
    }

    #[test]
    fn stop_from_the_callback_and_from_outside() {
        let mut s = session();
        let r = s
            .generate(Prompt::Text("abc"), &greedy(20), |_, _| false)
            .unwrap();
        assert_eq!(r.finish, FinishReason::Cancelled);
        assert_eq!(r.ids.len(), 1);
        assert!(!s.is_running());
        s.start(Prompt::Text("abc"), &greedy(20)).unwrap();
        assert!(matches!(
            s.start(Prompt::Text("x"), &greedy(2)),
            Err(ShellError::Busy)
        ));
        assert!(!s.step(|_, _| true).unwrap());
        assert!(!s.step(|_, _| true).unwrap());
        s.stop();
        let r = s.last_report().unwrap();
        assert_eq!(r.finish, FinishReason::Cancelled);
        assert_eq!(r.ids.len(), 2);
        // The engine is idle and usable again.
        let again = s.generate(Prompt::Text("abc"), &greedy(3), |_, _| true);
        assert_eq!(again.unwrap().ids.len(), 3);
        // Stepping or stopping with nothing running is harmless.
        assert!(s.step(|_, _| true).unwrap());
        s.stop();
    }

    #[test]
    fn step_begin_on_the_cpu_is_step() {
        let mut s = session();
        let mut a = Vec::new();
        s.generate(Prompt::Text("hello"), &greedy(5), |id, _| {
            a.push(id);
            true
        })
        .unwrap();
        s.start(Prompt::Text("hello"), &greedy(5)).unwrap();
        let mut b = Vec::new();
        loop {
            match s.step_begin(|id, _| {
                b.push(id);
                true
            }) {
                Ok(AsyncStep::Done(true)) => break,
                Ok(AsyncStep::Done(false)) => {}
                #[cfg(feature = "gpu")]
                Ok(AsyncStep::Waiting(_)) => panic!("the CPU path never waits"),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(a, b);
    }

    /// The GPU path stepped in parts (as the browser does, here waiting natively on lavapipe):
    /// the CPU's ids; a stop while a step is in flight takes effect after that step.
    #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
    #[test]
    fn split_gpu_steps_and_stop_in_flight() {
        let ctx = match chord_engine::GpuContext::new(true) {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("CHORD_REQUIRE_GPU").as_deref() == Ok("1") {
                    panic!("CHORD_REQUIRE_GPU=1 but {e}");
                }
                eprintln!("skip: {e}");
                return;
            }
        };
        let mut cpu = session();
        let want = cpu
            .generate(Prompt::Text("hello world"), &greedy(6), |_, _| true)
            .unwrap()
            .ids;
        let device = ctx.device.clone();
        let mut s = session();
        s.install_gpu(ctx).unwrap();
        let run = |s: &mut Session, stop_after: Option<usize>| {
            let mut ids = Vec::new();
            let mut p = s.step_begin(|id, _| {
                ids.push(id);
                true
            });
            loop {
                match p.unwrap() {
                    AsyncStep::Done(true) => break,
                    AsyncStep::Done(false) => {
                        p = s.step_begin(|id, _| {
                            ids.push(id);
                            true
                        })
                    }
                    AsyncStep::Waiting(w) => {
                        assert!(matches!(s.step(|_, _| true), Err(ShellError::Busy)));
                        if stop_after == Some(ids.len()) {
                            s.stop();
                            assert!(s.is_running(), "the stop waits for the step in flight");
                        }
                        w.wait_blocking().unwrap();
                        p = s.step_resume(|id, _| {
                            ids.push(id);
                            true
                        });
                    }
                }
            }
            ids
        };
        s.start(Prompt::Text("hello world"), &greedy(6)).unwrap();
        assert_eq!(run(&mut s, None), want);
        s.start(Prompt::Text("hello world"), &greedy(6)).unwrap();
        let ids = run(&mut s, Some(2));
        assert_eq!(ids, want[..3], "the step in flight keeps its token");
        let r = s.last_report().unwrap();
        assert_eq!(r.finish, FinishReason::Cancelled);
        assert_eq!(r.ids, want[..3]);
        assert!(!s.is_running());
        assert!(s.gpu_errors().is_empty());
        // An uncaptured device error (here a buffer with invalid usage) is recorded, and the
        // next step fails with it instead of going on with bad results.
        let _bad = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("invalid on purpose"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        assert_eq!(s.gpu_errors().len(), 1);
        s.start(Prompt::Text("hello world"), &greedy(6)).unwrap();
        let err = loop {
            match s.step_begin(|_, _| true) {
                Ok(AsyncStep::Waiting(w)) => {
                    w.wait_blocking().unwrap();
                    match s.step_resume(|_, _| true) {
                        Err(e) => break e,
                        Ok(AsyncStep::Done(false)) => {}
                        Ok(other) => panic!("{other:?}"),
                    }
                }
                other => panic!("{other:?}"),
            }
        };
        assert!(err.to_string().contains("GPU error"), "{err}");
        assert!(!s.is_running(), "the generation is stopped");
        // Reported once: the engine (untouched by that buffer) goes on with the CPU's ids.
        let again = s.generate(Prompt::Text("hello world"), &greedy(2), |_, _| true);
        assert_eq!(again.unwrap().ids, want[..2]);
    }

    #[test]
    fn chat_prompt_uses_the_template() {
        let mut s = session();
        let msgs = [ChatMessage::new("user", "hi")];
        let r = s
            .generate(Prompt::Chat(&msgs), &greedy(2), |_, _| true)
            .unwrap();
        let rendered = s.engine().render_chat(&msgs).unwrap();
        assert_eq!(r.prompt_ids, s.engine().tokenize(&rendered, false, true));
    }

    #[test]
    fn loader_errors_are_values() {
        let mut l = Loader::new(None);
        assert!(l.push(b"not a gguf file at all, definitely not").is_err());
        let mut l = Loader::new(None);
        assert!(matches!(
            l.finish(EngineOptions::default()),
            Err(ShellError::Gguf(_))
        ));
        assert!(matches!(l.push(b"x"), Err(ShellError::LoaderSpent)));
        // Truncated: the header is fine but the data never arrives.
        let bytes = tiny_model();
        let mut l = Loader::new(Some(bytes.len() as u64));
        l.push(&bytes[..bytes.len() / 2]).unwrap();
        assert!(l.header_parsed());
        assert_eq!(l.total_len(), Some(bytes.len() as u64));
        assert!(l.finish(EngineOptions::default()).is_err());
        // Invalid sampling parameters are refused before anything runs.
        let mut s = session();
        let mut cfg = greedy(2);
        cfg.sampling.top_p = 2.0;
        assert!(s.start(Prompt::Text("a"), &cfg).is_err());
        assert!(!s.is_running());
    }
}
