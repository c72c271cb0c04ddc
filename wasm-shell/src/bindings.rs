//! The JS-facing API (wasm-bindgen). Errors are thrown as JS `Error`s; nothing here panics.
//!
//! ```js
//! const loader = new ModelLoader(size);          // size: Content-Length or File.size, or undefined
//! for await (const chunk of stream) loader.push(chunk);
//! const engine = loader.finish({ nCtx: 2048 });  // the loader is spent afterwards
//! await engine.useBackend("auto");               // WebGPU when there is an adapter, else the CPU
//! engine.start("Once upon a time", { n: 32, temperature: 0 });
//! while (!(await engine.stepAsync((text, id) => post(text, id)))) await yieldToEventLoop();
//! engine.stats();                                // { ids, text, decodeTokS, prefillMs, … }
//! ```
//!
//! `step` (synchronous) is the CPU path's; `stepAsync` works on both and, on WebGPU, resolves
//! after the step's readback (`map_async`) has come back through the event loop.

use std::cell::{RefCell, RefMut};
use std::rc::Rc;

use chord_engine::{ActivationPrecision, EngineOptions, SamplingParams};
use chord_resources::tokenizer::ChatMessage;
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;

use crate::session::{AsyncStep, GenConfig, Loader, Prompt, Report, Session, ShellError};

fn err(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// Largest model file the wasm32 build can hold: the GGUF lives in one `Vec<u8>`, and Rust
/// caps one allocation at `isize::MAX` bytes (2 GiB − 1 on wasm32). The whole heap (model, KV
/// cache, activations) must also fit in wasm32's 4 GiB of linear memory.
pub const MAX_MODEL_BYTES: u64 = isize::MAX as u64;

/// `maxModelBytes()`: see [`MAX_MODEL_BYTES`].
#[wasm_bindgen(js_name = maxModelBytes)]
pub fn max_model_bytes() -> f64 {
    MAX_MODEL_BYTES as f64
}

/// The compute backend of this build: `"cpu-simd128"` when built with wasm SIMD, else `"cpu"`.
#[wasm_bindgen]
pub fn backend() -> String {
    if cfg!(target_feature = "simd128") {
        "cpu-simd128".into()
    } else {
        "cpu".into()
    }
}

/// Whether this build has the WebGPU path (the `gpu` feature).
#[wasm_bindgen(js_name = gpuBuild)]
pub fn gpu_build() -> bool {
    cfg!(feature = "gpu")
}

/// The crate version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").into()
}

/// A whole non-negative number that fits in a `u64` (and is exact in an `f64`).
fn whole(key: &str, v: f64) -> Result<u64, JsValue> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0 {
        Ok(v as u64)
    } else {
        Err(err(format!("{key} must be a whole number ≥ 0 (got {v})")))
    }
}

/// `obj[key]` as a number; `undefined`/`null` (or no object at all) give `None`.
fn num(obj: &JsValue, key: &str) -> Result<Option<f64>, JsValue> {
    if !obj.is_object() {
        return Ok(None);
    }
    let v = Reflect::get(obj, &JsValue::from_str(key))?;
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_f64()
        .map(Some)
        .ok_or_else(|| err(format!("option {key} must be a number")))
}

fn uint(obj: &JsValue, key: &str) -> Result<Option<u64>, JsValue> {
    num(obj, key)?.map(|v| whole(key, v)).transpose()
}

fn usize_opt(obj: &JsValue, key: &str) -> Result<Option<usize>, JsValue> {
    uint(obj, key)?
        .map(|v| usize::try_from(v).map_err(|_| err(format!("{key} is too large"))))
        .transpose()
}

/// Generation options from `{ n, temperature, topK, topP, minP, repeatPenalty, repeatLastN,
/// seed, stop }`; missing keys take `chord generate`'s defaults.
fn gen_config(opts: &JsValue) -> Result<GenConfig, JsValue> {
    let mut c = GenConfig::default();
    let s: &mut SamplingParams = &mut c.sampling;
    if let Some(n) = usize_opt(opts, "n")? {
        c.max_new_tokens = n;
    }
    if let Some(v) = num(opts, "temperature")? {
        s.temperature = v as f32;
    }
    if let Some(v) = usize_opt(opts, "topK")? {
        s.top_k = v;
    }
    if let Some(v) = num(opts, "topP")? {
        s.top_p = v as f32;
    }
    if let Some(v) = num(opts, "minP")? {
        s.min_p = v as f32;
    }
    if let Some(v) = num(opts, "repeatPenalty")? {
        s.repeat_penalty = v as f32;
    }
    if let Some(v) = usize_opt(opts, "repeatLastN")? {
        s.penalty_last_n = v;
    }
    if let Some(v) = uint(opts, "seed")? {
        s.seed = v;
    }
    if opts.is_object() {
        let stop = Reflect::get(opts, &JsValue::from_str("stop"))?;
        if !stop.is_undefined() && !stop.is_null() {
            if !Array::is_array(&stop) {
                return Err(err("option stop must be an array of strings"));
            }
            c.stop = Array::from(&stop)
                .iter()
                .map(|v| {
                    v.as_string()
                        .ok_or_else(|| err("stop entries must be strings"))
                })
                .collect::<Result<_, _>>()?;
        }
    }
    Ok(c)
}

fn messages(v: &JsValue) -> Result<Vec<ChatMessage>, JsValue> {
    if !Array::is_array(v) {
        return Err(err("messages must be an array of {role, content}"));
    }
    Array::from(v)
        .iter()
        .map(|m| {
            let field = |k: &str| -> Result<String, JsValue> {
                let v = if m.is_object() {
                    Reflect::get(&m, &JsValue::from_str(k))?
                } else {
                    JsValue::UNDEFINED
                };
                v.as_string()
                    .ok_or_else(|| err(format!("each message needs a string {k}")))
            };
            Ok(ChatMessage::new(field("role")?, field("content")?))
        })
        .collect()
}

fn set(obj: &Object, key: &str, v: impl Into<JsValue>) {
    // Reflect.set on a plain fresh object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), &v.into());
}

fn ids_array(ids: &[u32]) -> Array {
    ids.iter().map(|&i| JsValue::from(i)).collect()
}

fn report_object(r: &Report) -> Object {
    let o = Object::new();
    set(&o, "promptTokens", r.prompt_ids.len() as u32);
    set(&o, "promptIds", ids_array(&r.prompt_ids));
    set(&o, "ids", ids_array(&r.ids));
    set(&o, "text", r.text.as_str());
    set(&o, "nGenerated", r.ids.len() as u32);
    set(&o, "finish", r.finish.as_str());
    set(&o, "prefillMs", r.prefill_s * 1e3);
    set(&o, "decodeMs", r.decode_s * 1e3);
    set(&o, "prefillTokS", r.prefill_tok_s);
    set(&o, "decodeTokS", r.decode_tok_s);
    set(
        &o,
        "firstTokenMs",
        r.first_token_s
            .map_or(JsValue::NULL, |s| JsValue::from(s * 1e3)),
    );
    set(&o, "totalMs", r.total_s * 1e3);
    o
}

/// Builds an engine from a model streamed in chunks (see [`crate::session::Loader`]).
#[wasm_bindgen]
pub struct ModelLoader {
    inner: Loader,
}

#[wasm_bindgen]
impl ModelLoader {
    /// `expectedLen`: the file's size if known (then the buffer is sized once and a
    /// header that does not fit fails early). Sizes over `maxModelBytes()` are refused.
    #[wasm_bindgen(constructor)]
    pub fn new(expected_len: Option<f64>) -> Result<ModelLoader, JsValue> {
        let len = expected_len.map(|v| whole("expectedLen", v)).transpose()?;
        if let Some(n) = len.filter(|&n| n > MAX_MODEL_BYTES) {
            return Err(err(format!(
                "the model is {n} bytes; this wasm32 build holds at most {MAX_MODEL_BYTES} bytes (2 GiB − 1) in one buffer"
            )));
        }
        Ok(ModelLoader {
            inner: Loader::new(len),
        })
    }

    /// Append the next chunk (file order).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsValue> {
        self.inner.push(chunk).map_err(err)
    }

    #[wasm_bindgen(getter, js_name = bytesReceived)]
    pub fn bytes_received(&self) -> f64 {
        self.inner.bytes_received() as f64
    }

    /// The final size, once known.
    #[wasm_bindgen(getter, js_name = totalLen)]
    pub fn total_len(&self) -> Option<f64> {
        self.inner.total_len().map(|n| n as f64)
    }

    #[wasm_bindgen(getter, js_name = headerParsed)]
    pub fn header_parsed(&self) -> bool {
        self.inner.header_parsed()
    }

    /// Check the file is complete and build the engine. `options`: `{ nCtx, nBatch,
    /// precision }` (0 / missing: the model's context capped at 4096, 512, and `"f32"`: exact
    /// math as `chord generate`; `"q8"`: int8 activations, ggml's arithmetic).
    pub fn finish(&mut self, options: JsValue) -> Result<ChordEngine, JsValue> {
        let mut opts = EngineOptions {
            threads: 1,
            ..EngineOptions::default()
        };
        if let Some(n) = usize_opt(&options, "nCtx")? {
            opts.n_ctx = n;
        }
        if let Some(n) = usize_opt(&options, "nBatch")? {
            opts.n_batch = n;
        }
        if options.is_object() {
            let p = Reflect::get(&options, &JsValue::from_str("precision"))?;
            opts.precision = match p.as_string().as_deref() {
                _ if p.is_undefined() || p.is_null() => ActivationPrecision::F32,
                Some("f32") => ActivationPrecision::F32,
                Some("q8") => ActivationPrecision::Q8,
                _ => return Err(err("precision must be \"f32\" or \"q8\"")),
            };
        }
        let session = self.inner.finish(opts).map_err(err)?;
        Ok(ChordEngine {
            session: Rc::new(RefCell::new(session)),
        })
    }
}

/// A loaded model; one generation at a time, advanced by `step` or `stepAsync`.
///
/// The session is shared with the promises of `stepAsync` and `useBackend` (they hold it only
/// between their awaits, never across one), so a `stop()` from the worker's message loop can
/// arrive while a GPU readback is in flight.
#[wasm_bindgen]
pub struct ChordEngine {
    session: Rc<RefCell<Session>>,
}

fn busy() -> JsValue {
    err("the engine is busy (called from inside its own token callback)")
}

fn borrow(session: &Rc<RefCell<Session>>) -> Result<RefMut<'_, Session>, JsValue> {
    session.try_borrow_mut().map_err(|_| busy())
}

/// Run `f` (a step part) with `on_token(text, id)` as its token callback: returning `false`
/// stops the generation; a throw stops it and is rethrown.
fn with_callback<T>(
    on_token: &Function,
    f: impl FnOnce(&mut dyn FnMut(u32, &str) -> bool) -> Result<T, ShellError>,
) -> Result<T, JsValue> {
    let mut thrown = None;
    let out = f(&mut |id, text| match on_token.call2(
        &JsValue::NULL,
        &JsValue::from_str(text),
        &id.into(),
    ) {
        Ok(v) => v != JsValue::FALSE,
        Err(e) => {
            thrown = Some(e);
            false
        }
    })
    .map_err(err)?;
    match thrown {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// `{ backend: "webgpu" | "cpu", adapter, reason }` for `useBackend`.
fn backend_object(adapter: Option<String>, reason: Option<String>) -> JsValue {
    let o = Object::new();
    set(
        &o,
        "backend",
        if adapter.is_some() { "webgpu" } else { "cpu" },
    );
    set(&o, "adapter", adapter.map_or(JsValue::NULL, JsValue::from));
    set(&o, "reason", reason.map_or(JsValue::NULL, JsValue::from));
    o.into()
}

#[cfg(feature = "gpu")]
async fn use_backend(
    session: Rc<RefCell<Session>>,
    mode: chord_engine::Backend,
) -> Result<JsValue, JsValue> {
    use chord_engine::{Backend, GpuContext};
    let current = borrow(&session)?.engine().gpu_adapter();
    if mode == Backend::Cpu {
        return match current {
            Some(_) => Err(err(
                "the engine already runs on WebGPU; load the model again for the CPU",
            )),
            None => Ok(backend_object(None, None)),
        };
    }
    if current.is_some() {
        return Ok(backend_object(current, None));
    }
    // `gpu` fails with the reason; `auto` stays on the CPU and says why.
    let fallback = |why: String| -> Result<JsValue, JsValue> {
        if mode == Backend::Gpu {
            Err(err(format!("WebGPU: {why}")))
        } else {
            Ok(backend_object(None, Some(why)))
        }
    };
    if let Err(e) = borrow(&session)?.engine().gpu_supported() {
        return fallback(e.to_string());
    }
    if !has_navigator_gpu() {
        return fallback("this browser has no WebGPU (navigator.gpu is missing)".into());
    }
    // `auto` wants a hardware adapter (as the native `--backend auto`); `gpu` takes a software
    // one too (SwiftShader in headless Chromium).
    let ctx = match GpuContext::new_async(mode == Backend::Gpu).await {
        Ok(ctx) => ctx,
        Err(chord_engine::GpuError::NoAdapter(_)) => {
            return fallback(
                "the browser's WebGPU has no adapter here (requestAdapter gave none)".into(),
            );
        }
        Err(e) => return fallback(e.to_string()),
    };
    let mut s = borrow(&session)?;
    match s.install_gpu(ctx) {
        Ok(()) => Ok(backend_object(s.engine().gpu_adapter(), None)),
        Err(e) => fallback(e.to_string()),
    }
}

/// Whether the global scope (window or worker) has `navigator.gpu`.
#[cfg(feature = "gpu")]
fn has_navigator_gpu() -> bool {
    let nav = Reflect::get(&js_sys::global(), &JsValue::from_str("navigator"));
    nav.ok()
        .filter(JsValue::is_object)
        .and_then(|n| Reflect::get(&n, &JsValue::from_str("gpu")).ok())
        .is_some_and(|g| !g.is_undefined() && !g.is_null())
}

#[cfg(not(feature = "gpu"))]
async fn use_backend(
    _session: Rc<RefCell<Session>>,
    mode: chord_engine::Backend,
) -> Result<JsValue, JsValue> {
    match mode {
        chord_engine::Backend::Gpu => Err(err("WebGPU: this build has no GPU path")),
        chord_engine::Backend::Auto => Ok(backend_object(
            None,
            Some("this build has no GPU path".into()),
        )),
        chord_engine::Backend::Cpu => Ok(backend_object(None, None)),
    }
}

#[wasm_bindgen]
impl ChordEngine {
    /// `{ arch, name, nLayer, nEmbd, nHead, nVocab, nCtx, nCtxTrain, fileBytes,
    /// hasChatTemplate, buildMs, backend, adapter }` (`backend`: `"webgpu"` once `useBackend`
    /// moved the engine there, else [`backend()`]'s CPU name; `adapter`: the GPU's name or null).
    pub fn info(&self) -> Result<Object, JsValue> {
        let session = self.session.try_borrow().map_err(|_| busy())?;
        let e = session.engine();
        let w = e.weights();
        let c = &w.config;
        let o = Object::new();
        set(&o, "arch", w.file.architecture().unwrap_or("?"));
        set(&o, "name", c.name.as_str());
        set(&o, "nLayer", c.n_layer as u32);
        set(&o, "nEmbd", c.n_embd as u32);
        set(&o, "nHead", c.n_head as u32);
        set(&o, "nVocab", c.n_vocab as u32);
        set(&o, "nCtx", e.n_ctx() as u32);
        set(&o, "nCtxTrain", c.n_ctx_train as u32);
        set(&o, "fileBytes", w.file.file_size() as f64);
        set(
            &o,
            "hasChatTemplate",
            e.tokenizer().chat_template().is_some(),
        );
        set(&o, "buildMs", session.build_s() * 1e3);
        let adapter = e.gpu_adapter();
        set(
            &o,
            "backend",
            if adapter.is_some() {
                "webgpu".into()
            } else {
                backend()
            },
        );
        set(&o, "adapter", adapter.map_or(JsValue::NULL, JsValue::from));
        Ok(o)
    }

    /// Choose the backend: `"cpu"`, `"gpu"` (WebGPU, or a rejection saying why not) or
    /// `"auto"` (WebGPU on a hardware adapter when the browser has one and the model is
    /// supported there, else the CPU). Resolves to `{ backend: "webgpu" | "cpu", adapter,
    /// reason }` (`reason`: why `auto` stayed on the CPU). The adapter and device are requested
    /// asynchronously with the adapter's own limits; call it before generating.
    #[wasm_bindgen(js_name = useBackend)]
    pub fn use_backend(&self, mode: &str) -> Promise {
        let session = self.session.clone();
        let mode = mode.parse::<chord_engine::Backend>().map_err(err);
        wasm_bindgen_futures_or_resolve(async move { use_backend(session, mode?).await })
    }

    /// Start a raw text completion (tokenized as `chord generate`: BOS as the model asks,
    /// special tokens recognised). `options`: see [`gen_config`].
    pub fn start(&mut self, prompt: &str, options: JsValue) -> Result<(), JsValue> {
        let cfg = gen_config(&options)?;
        borrow(&self.session)?
            .start(Prompt::Text(prompt), &cfg)
            .map_err(err)
    }

    /// Start a chat reply: `messages` is `[{role, content}, …]`, rendered with the model's
    /// chat template.
    #[wasm_bindgen(js_name = startChat)]
    pub fn start_chat(&mut self, messages_js: JsValue, options: JsValue) -> Result<(), JsValue> {
        let cfg = gen_config(&options)?;
        let msgs = messages(&messages_js)?;
        borrow(&self.session)?
            .start(Prompt::Chat(&msgs), &cfg)
            .map_err(err)
    }

    /// One engine step; `onToken(text, id)` is called for each new token (returning `false`
    /// stops the generation; a throw stops it and is rethrown). Returns `true` when the
    /// generation is over (then `stats()` has its figures). CPU only: on WebGPU use
    /// `stepAsync`.
    pub fn step(&mut self, on_token: &Function) -> Result<bool, JsValue> {
        let mut s = borrow(&self.session)?;
        with_callback(on_token, |cb| s.step(cb))
    }

    /// `step` as a Promise of the same `true`/`false`, for both backends. On WebGPU the step's
    /// command buffer is submitted, the worker's event loop runs while the GPU works, and the
    /// promise resolves once the readback (`map_async`) is back and the token sampled; nothing
    /// blocks. A `stop()` meanwhile takes effect when the step completes (it then resolves
    /// `true`). One step at a time: a second call before the first resolves rejects.
    #[wasm_bindgen(js_name = stepAsync)]
    pub fn step_async(&self, on_token: Function) -> Promise {
        let session = self.session.clone();
        wasm_bindgen_futures_or_resolve(async move {
            let progress = {
                let mut s = borrow(&session)?;
                with_callback(&on_token, |cb| s.step_begin(cb))?
            };
            #[cfg(feature = "gpu")]
            let mut progress = progress;
            #[cfg(feature = "gpu")]
            while let AsyncStep::Waiting(w) = progress {
                // A failed mapping is reported when the step takes the readback.
                let _ = w.await;
                let mut s = borrow(&session)?;
                progress = with_callback(&on_token, |cb| s.step_resume(cb))?;
            }
            match progress {
                AsyncStep::Done(done) => Ok(JsValue::from_bool(done)),
                #[cfg(feature = "gpu")]
                AsyncStep::Waiting(_) => Err(err("the step is still waiting")),
            }
        })
    }

    /// WebGPU errors that no error scope caught (validation, out of memory, device loss), as
    /// strings; a `stepAsync` that sees a new one rejects with it and stops the generation.
    #[wasm_bindgen(js_name = gpuErrors)]
    pub fn gpu_errors(&self) -> Result<Vec<String>, JsValue> {
        Ok(self.session.try_borrow().map_err(|_| busy())?.gpu_errors())
    }

    /// Stop the running generation (kept tokens stay in `stats()`); harmless when idle. While
    /// a `stepAsync` is in flight the stop happens when that step completes.
    pub fn stop(&mut self) -> Result<(), JsValue> {
        borrow(&self.session)?.stop();
        Ok(())
    }

    #[wasm_bindgen(getter)]
    pub fn running(&self) -> Result<bool, JsValue> {
        Ok(self.session.try_borrow().map_err(|_| busy())?.is_running())
    }

    /// Figures of the last finished or stopped generation, or `null`:
    /// `{ ids, promptIds, promptTokens, text, nGenerated, finish, prefillMs, decodeMs,
    /// prefillTokS, decodeTokS, firstTokenMs, totalMs }`.
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        Ok(self
            .session
            .try_borrow()
            .map_err(|_| busy())?
            .last_report()
            .map_or(JsValue::NULL, |r| report_object(r).into()))
    }

    /// `start` + `step` until done, in one call (blocks the thread it runs on: workers and
    /// tests only). Returns `stats()`.
    pub fn generate(
        &mut self,
        prompt: &str,
        options: JsValue,
        on_token: &Function,
    ) -> Result<JsValue, JsValue> {
        self.start(prompt, options)?;
        while !self.step(on_token)? {}
        self.stats()
    }

    /// Token ids of `text` (`addSpecial`: BOS as the model asks; special tokens recognised).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, JsValue> {
        let s = self.session.try_borrow().map_err(|_| busy())?;
        Ok(s.engine().tokenize(text, add_special, true))
    }

    /// The chat prompt text for `messages`.
    #[wasm_bindgen(js_name = renderChat)]
    pub fn render_chat(&self, messages_js: JsValue) -> Result<String, JsValue> {
        let msgs = messages(&messages_js)?;
        let s = self.session.try_borrow().map_err(|_| busy())?;
        s.engine().render_chat(&msgs).map_err(err)
    }
}

/// A JS Promise of `fut` (with the `gpu` feature's `wasm-bindgen-futures`; without it the
/// futures here finish at their first poll, so they are run to completion at once).
#[cfg(feature = "gpu")]
fn wasm_bindgen_futures_or_resolve(
    fut: impl std::future::Future<Output = Result<JsValue, JsValue>> + 'static,
) -> Promise {
    wasm_bindgen_futures::future_to_promise(fut)
}

#[cfg(not(feature = "gpu"))]
fn wasm_bindgen_futures_or_resolve(
    fut: impl std::future::Future<Output = Result<JsValue, JsValue>> + 'static,
) -> Promise {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(v)) => Promise::resolve(&v),
        Poll::Ready(Err(e)) => Promise::reject(&e),
        Poll::Pending => Promise::reject(&err("unexpected pending step")),
    }
}
