//! The JS-facing API (wasm-bindgen). Errors are thrown as JS `Error`s; nothing here panics.
//!
//! ```js
//! const loader = new ModelLoader(size);          // size: Content-Length or File.size, or undefined
//! for await (const chunk of stream) loader.push(chunk);
//! const engine = loader.finish({ nCtx: 2048 });  // the loader is spent afterwards
//! engine.start("Once upon a time", { n: 32, temperature: 0 });
//! while (!engine.step((text, id) => post(text, id))) await yieldToEventLoop();
//! engine.stats();                                // { ids, text, decodeTokS, prefillMs, … }
//! ```

use chord_engine::{ActivationPrecision, EngineOptions, SamplingParams};
use chord_resources::tokenizer::ChatMessage;
use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::prelude::*;

use crate::session::{GenConfig, Loader, Prompt, Report, Session};

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
        Ok(ChordEngine { session })
    }
}

/// A loaded model; one generation at a time, advanced by `step`.
#[wasm_bindgen]
pub struct ChordEngine {
    session: Session,
}

#[wasm_bindgen]
impl ChordEngine {
    /// `{ arch, name, nLayer, nEmbd, nHead, nVocab, nCtx, nCtxTrain, fileBytes,
    /// hasChatTemplate, buildMs, backend }`
    pub fn info(&self) -> Object {
        let e = self.session.engine();
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
        set(&o, "buildMs", self.session.build_s() * 1e3);
        set(&o, "backend", backend());
        o
    }

    /// Start a raw text completion (tokenized as `chord generate`: BOS as the model asks,
    /// special tokens recognised). `options`: see [`gen_config`].
    pub fn start(&mut self, prompt: &str, options: JsValue) -> Result<(), JsValue> {
        let cfg = gen_config(&options)?;
        self.session.start(Prompt::Text(prompt), &cfg).map_err(err)
    }

    /// Start a chat reply: `messages` is `[{role, content}, …]`, rendered with the model's
    /// chat template.
    #[wasm_bindgen(js_name = startChat)]
    pub fn start_chat(&mut self, messages_js: JsValue, options: JsValue) -> Result<(), JsValue> {
        let cfg = gen_config(&options)?;
        let msgs = messages(&messages_js)?;
        self.session.start(Prompt::Chat(&msgs), &cfg).map_err(err)
    }

    /// One engine step; `onToken(text, id)` is called for each new token (returning `false`
    /// stops the generation; a throw stops it and is rethrown). Returns `true` when the
    /// generation is over (then `stats()` has its figures).
    pub fn step(&mut self, on_token: &Function) -> Result<bool, JsValue> {
        let mut thrown = None;
        let done = self
            .session
            .step(|id, text| {
                match on_token.call2(&JsValue::NULL, &JsValue::from_str(text), &id.into()) {
                    Ok(v) => v != JsValue::FALSE,
                    Err(e) => {
                        thrown = Some(e);
                        false
                    }
                }
            })
            .map_err(err)?;
        match thrown {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Stop the running generation (kept tokens stay in `stats()`); harmless when idle.
    pub fn stop(&mut self) {
        self.session.stop();
    }

    #[wasm_bindgen(getter)]
    pub fn running(&self) -> bool {
        self.session.is_running()
    }

    /// Figures of the last finished or stopped generation, or `null`:
    /// `{ ids, promptIds, promptTokens, text, nGenerated, finish, prefillMs, decodeMs,
    /// prefillTokS, decodeTokS, firstTokenMs, totalMs }`.
    pub fn stats(&self) -> JsValue {
        self.session
            .last_report()
            .map_or(JsValue::NULL, |r| report_object(r).into())
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
        Ok(self.stats())
    }

    /// Token ids of `text` (`addSpecial`: BOS as the model asks; special tokens recognised).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.session.engine().tokenize(text, add_special, true)
    }

    /// The chat prompt text for `messages`.
    #[wasm_bindgen(js_name = renderChat)]
    pub fn render_chat(&self, messages_js: JsValue) -> Result<String, JsValue> {
        let msgs = messages(&messages_js)?;
        self.session.engine().render_chat(&msgs).map_err(err)
    }
}
