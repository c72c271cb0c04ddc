//! The JS API in a dedicated Web Worker of headless Chromium (where the page runs the engine):
//! `wasm-shell/test.sh` runs these with wasm-bindgen-test-runner and ChromeDriver.
#![cfg(target_arch = "wasm32")]

use chord_engine::{Engine, EngineOptions, GenerateParams};
use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use wasm_shell::bindings::{
    ChordEngine, MAX_MODEL_BYTES, ModelLoader, backend, gpu_build, max_model_bytes,
};
use wasm_shell::testing::tiny_model;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap()
}

fn ids_of(stats: &JsValue) -> Vec<u32> {
    Array::from(&get(stats, "ids"))
        .iter()
        .map(|v| v.as_f64().unwrap() as u32)
        .collect()
}

/// Load the tiny model through the JS API in uneven chunks (as a download delivers them).
fn load(expected: bool) -> ChordEngine {
    let bytes = tiny_model();
    let len = expected.then_some(bytes.len() as f64);
    let mut loader = ModelLoader::new(len).unwrap();
    let mut at = 0;
    for size in [1usize, 3, 20, 4096, 65_537].iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + size).min(bytes.len());
        // Through a real Uint8Array, as the worker passes fetch chunks.
        let chunk = Uint8Array::from(&bytes[at..end]);
        loader.push(&chunk.to_vec()).unwrap();
        at = end;
    }
    assert_eq!(loader.bytes_received(), bytes.len() as f64);
    assert!(loader.header_parsed());
    assert_eq!(loader.total_len(), Some(bytes.len() as f64));
    loader.finish(obj(&[("nCtx", 64.into())])).unwrap()
}

/// A JS `(text, id) => …` that records into `window`-less globals of this closure's array.
fn recorder(log: &Array, ret: &str) -> Function {
    let f = Function::new_with_args(
        "log",
        &format!("return (t, id) => {{ log.push([t, id]); {ret} }}"),
    );
    f.call1(&JsValue::NULL, log).unwrap().into()
}

#[wasm_bindgen_test]
fn build_facts() {
    assert_eq!(backend(), "cpu-simd128", "build with RUSTFLAGS +simd128");
    assert!(gpu_build(), "built with the gpu feature (WebGPU path)");
    assert_eq!(max_model_bytes(), (1u64 << 31) as f64 - 1.0);
    assert_eq!(MAX_MODEL_BYTES, i32::MAX as u64);
    // Where the page runs the engine.
    let scope = js_sys::global().constructor().name();
    assert_eq!(String::from(scope), "DedicatedWorkerGlobalScope");
}

#[wasm_bindgen_test]
fn streamed_load_generates_the_engines_greedy_ids() {
    for expected in [true, false] {
        let mut e = load(expected);
        let log = Array::new();
        let stats = e
            .generate(
                "hello world",
                obj(&[("n", 8.into()), ("temperature", 0.into())]),
                &recorder(&log, "return true;"),
            )
            .unwrap();
        let ids = ids_of(&stats);
        assert_eq!(ids.len(), 8);
        assert_eq!(get(&stats, "finish").as_string().unwrap(), "length");
        assert!(get(&stats, "decodeTokS").as_f64().unwrap() >= 0.0);
        assert!(get(&stats, "firstTokenMs").as_f64().is_some());
        // The callback saw every token, in order.
        let seen: Vec<u32> = log
            .iter()
            .map(|p| Array::from(&p).get(1).as_f64().unwrap() as u32)
            .collect();
        assert_eq!(seen, ids);
        // Same as the engine's own blocking generate on an in-memory image.
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
        assert_eq!(ids, direct.ids);
        let text: String = log
            .iter()
            .map(|p| Array::from(&p).get(0).as_string().unwrap())
            .collect();
        assert_eq!(get(&stats, "text").as_string().unwrap(), text);
        assert_eq!(text, direct.text);
    }
}

#[wasm_bindgen_test]
fn info_and_chat() {
    let mut e = load(true);
    let info = e.info().unwrap();
    assert_eq!(get(&info, "arch").as_string().unwrap(), "llama");
    assert_eq!(get(&info, "nCtx").as_f64().unwrap(), 64.0);
    assert_eq!(get(&info, "hasChatTemplate"), JsValue::TRUE);
    let msgs: JsValue =
        Array::of1(&obj(&[("role", "user".into()), ("content", "hi".into())])).into();
    let rendered = e.render_chat(msgs.clone()).unwrap();
    assert!(rendered.ends_with("<|im_start|>assistant\n"), "{rendered}");
    e.start_chat(msgs, obj(&[("n", 3.into()), ("temperature", 0.into())]))
        .unwrap();
    let log = Array::new();
    while !e.step(&recorder(&log, "")).unwrap() {}
    let stats = e.stats().unwrap();
    assert_eq!(
        Array::from(&get(&stats, "promptIds")).length() as usize,
        e.tokenize(&rendered, false).unwrap().len()
    );
    assert!(e.start_chat(JsValue::from(3), JsValue::UNDEFINED).is_err());
    let bad: JsValue = Array::of1(&obj(&[("role", "user".into())])).into();
    assert!(e.start_chat(bad, JsValue::UNDEFINED).is_err());
}

#[wasm_bindgen_test]
fn stop_by_callback_by_call_and_by_throw() {
    let mut e = load(true);
    let greedy = || obj(&[("n", 20.into()), ("temperature", 0.into())]);
    // The callback returns false: one token, then cancelled.
    let log = Array::new();
    let stats = e
        .generate("abc", greedy(), &recorder(&log, "return false;"))
        .unwrap();
    assert_eq!(ids_of(&stats).len(), 1);
    assert_eq!(get(&stats, "finish").as_string().unwrap(), "cancelled");
    // stop() between steps (what the worker does on a stop message).
    e.start("abc", greedy()).unwrap();
    assert!(e.running().unwrap());
    assert!(
        e.start("abc", greedy()).is_err(),
        "one generation at a time"
    );
    assert!(!e.step(&recorder(&log, "")).unwrap());
    assert!(!e.step(&recorder(&log, "")).unwrap());
    e.stop().unwrap();
    assert!(!e.running().unwrap());
    assert_eq!(ids_of(&e.stats().unwrap()).len(), 2);
    // A throwing callback stops the generation and the exception comes back out.
    e.start("abc", greedy()).unwrap();
    let thrower: Function = Function::new_with_args("t, id", "throw new Error('boom ' + id)");
    let err = e.step(&thrower).unwrap_err();
    assert!(format!("{err:?}").contains("boom"));
    assert!(!e.running().unwrap());
    // Still usable.
    let stats = e
        .generate("abc", obj(&[("n", 2.into())]), &recorder(&log, ""))
        .unwrap();
    assert_eq!(ids_of(&stats).len(), 2);
}

#[wasm_bindgen_test]
fn bad_options_are_errors() {
    let mut e = load(true);
    let noop = recorder(&Array::new(), "");
    for bad in [
        obj(&[("n", "ten".into())]),
        obj(&[("n", (-1).into())]),
        obj(&[("n", 1.5.into())]),
        obj(&[("n", 0.into())]),
        obj(&[("temperature", (-1).into())]),
        obj(&[("topP", 2.into())]),
        obj(&[("seed", f64::NAN.into())]),
        obj(&[("stop", "x".into())]),
        obj(&[("stop", Array::of1(&3.into()).into())]),
    ] {
        assert!(e.generate("abc", bad, &noop).is_err());
        assert!(!e.running().unwrap());
    }
    assert!(e.start("", JsValue::UNDEFINED).is_err(), "empty prompt");
    let long = "x ".repeat(100);
    assert!(
        e.start(&long, JsValue::UNDEFINED).is_err(),
        "over the context"
    );
    // Engine options.
    let bytes = tiny_model();
    let mut l = ModelLoader::new(Some(bytes.len() as f64)).unwrap();
    l.push(&bytes).unwrap();
    assert!(l.finish(obj(&[("precision", "f16".into())])).is_err());
    for (k, v) in [("nCtx", JsValue::from(-3)), ("nBatch", JsValue::from(0))] {
        let mut l = ModelLoader::new(None).unwrap();
        l.push(&bytes).unwrap();
        assert!(l.finish(obj(&[(k, v)])).is_err(), "{k}");
    }
    let mut l = ModelLoader::new(None).unwrap();
    l.push(&bytes).unwrap();
    let mut q8 = l
        .finish(obj(&[("precision", "q8".into()), ("nCtx", 64.into())]))
        .unwrap();
    let stats = q8.generate("abc", obj(&[("n", 4.into())]), &noop).unwrap();
    assert_eq!(ids_of(&stats).len(), 4);
    // Options may be omitted entirely.
    e.start("abc", JsValue::UNDEFINED).unwrap();
    e.stop().unwrap();
}

#[wasm_bindgen_test]
fn bad_models_are_errors_not_panics() {
    // Not a GGUF.
    let mut l = ModelLoader::new(None).unwrap();
    assert!(l.push(&[0u8; 64]).is_err());
    assert!(l.push(&[0u8; 4]).is_err(), "a failed loader stays failed");
    // Sizes the wasm32 build cannot hold, or nonsense sizes.
    assert!(ModelLoader::new(Some(3.0 * (1u64 << 30) as f64)).is_err());
    assert!(ModelLoader::new(Some(-1.0)).is_err());
    assert!(ModelLoader::new(Some(f64::NAN)).is_err());
    // Truncated download.
    let bytes = tiny_model();
    let mut l = ModelLoader::new(Some(bytes.len() as f64)).unwrap();
    l.push(&bytes[..bytes.len() - 10]).unwrap();
    assert!(l.finish(JsValue::UNDEFINED).is_err());
    assert!(l.finish(JsValue::UNDEFINED).is_err(), "spent");
    // More bytes than announced.
    let mut l = ModelLoader::new(Some(100.0)).unwrap();
    assert!(l.push(&bytes[..200]).is_err());
    // A header whose last tensor claims ~3 GiB: beyond one wasm32 allocation. The loader must
    // refuse it (try_reserve), not abort the module.
    let mut huge = tiny_model();
    let name = b"blk.1.ffn_down.weight";
    let at = huge
        .windows(name.len())
        .position(|w| w == name)
        .expect("tensor name in header");
    // name, n_dims: u32, dims[0]: u64, dims[1]: u64
    let dim1 = at + name.len() + 4 + 8;
    huge[dim1..dim1 + 8].copy_from_slice(&23_000_000u64.to_le_bytes());
    let mut l = ModelLoader::new(None).unwrap();
    let r = huge.chunks(4096).try_for_each(|c| l.push(c));
    assert!(r.is_err(), "3 GiB tensor accepted on wasm32");
    // And the module is still alive.
    let mut e = load(true);
    assert!(
        e.generate("ok", obj(&[("n", 1.into())]), &recorder(&Array::new(), ""))
            .is_ok()
    );
}

/// Await a `stepAsync` promise: `Ok(done)`, or the rejection.
async fn step_async(e: &ChordEngine, f: &Function) -> Result<bool, JsValue> {
    JsFuture::from(e.step_async(f.clone()))
        .await
        .map(|v| v.as_bool().unwrap())
}

/// The tiny model on WebGPU (SwiftShader in headless Chromium with `--enable-unsafe-webgpu`,
/// see `webdriver.json`): `useBackend("gpu")` must succeed — a missing adapter fails the test.
async fn load_gpu() -> ChordEngine {
    let e = load(true);
    let t = js_sys::Date::now();
    let r = JsFuture::from(e.use_backend("gpu")).await;
    console_log!("useBackend(gpu): {:.0} ms", js_sys::Date::now() - t);
    let r = match r {
        Ok(r) => r,
        Err(e) => panic!("WebGPU backend refused: {e:?}"),
    };
    assert_eq!(get(&r, "backend").as_string().unwrap(), "webgpu");
    let info = e.info().unwrap();
    assert_eq!(get(&info, "backend").as_string().unwrap(), "webgpu");
    assert!(get(&info, "adapter").as_string().is_some());
    e
}

/// The WebGPU tests share one engine: SwiftShader compiles the pipelines of each new device
/// for ~30 s on two busy cores.
#[wasm_bindgen_test]
async fn webgpu_path() {
    let mut gpu = load_gpu().await;
    webgpu_greedy_ids_equal_the_cpu(&mut gpu).await;
    webgpu_stop_during_generation(&mut gpu).await;
    assert_eq!(
        gpu.gpu_errors().unwrap(),
        Vec::<String>::new(),
        "uncaptured WebGPU errors"
    );
    // Going back to the CPU needs a fresh engine.
    assert!(JsFuture::from(gpu.use_backend("cpu")).await.is_err());
    assert!(JsFuture::from(gpu.use_backend("tpu")).await.is_err());
}

/// Greedy ids of the WebGPU path (one command buffer per step, readback awaited through the
/// event loop) equal the CPU path's, token by token; sampled ids too (top-k read back).
async fn webgpu_greedy_ids_equal_the_cpu(gpu: &mut ChordEngine) {
    let mut cpu = load(true);
    for prompt in ["hello world", "the quick brown fox jumps over"] {
        let opts = || obj(&[("n", 12.into()), ("temperature", 0.into())]);
        let cpu_stats = cpu
            .generate(prompt, opts(), &recorder(&Array::new(), ""))
            .unwrap();
        gpu.start(prompt, opts()).unwrap();
        let log = Array::new();
        let mut steps = 0;
        let t = js_sys::Date::now();
        while !step_async(gpu, &recorder(&log, "")).await.unwrap() {
            steps += 1;
        }
        console_log!("12 tokens on WebGPU: {:.0} ms", js_sys::Date::now() - t);
        let stats = gpu.stats().unwrap();
        let ids = ids_of(&stats);
        assert_eq!(ids.len(), 12, "{prompt:?}");
        assert_eq!(
            ids,
            ids_of(&cpu_stats),
            "{prompt:?}: WebGPU ids differ from the CPU's"
        );
        assert_eq!(steps, 11, "one stepAsync per token (prefill included)");
        assert_eq!(get(&stats, "text"), get(&cpu_stats, "text"));
        let seen: Vec<u32> = log
            .iter()
            .map(|p| Array::from(&p).get(1).as_f64().unwrap() as u32)
            .collect();
        assert_eq!(seen, ids);
    }
    // Sampled (non-greedy) generation, top-k 40 by default, reads the GPU's top-k candidates
    // back (a split step, awaited): the same seed gives the CPU's ids.
    let opts = || {
        obj(&[
            ("n", 8.into()),
            ("temperature", 0.8.into()),
            ("seed", 7.into()),
        ])
    };
    let c = cpu
        .generate("abc", opts(), &recorder(&Array::new(), ""))
        .unwrap();
    gpu.start("abc", opts()).unwrap();
    while !step_async(gpu, &recorder(&Array::new(), "")).await.unwrap() {}
    assert_eq!(ids_of(&gpu.stats().unwrap()), ids_of(&c));
    // The blocking step is refused on WebGPU (it cannot wait for a readback).
    gpu.start("abc", obj(&[("n", 2.into())])).unwrap();
    assert!(gpu.step(&recorder(&Array::new(), "")).is_err());
    gpu.stop().unwrap();
}

/// A stop arriving while a WebGPU step is in flight (between submit and readback, as the
/// worker's message loop delivers it) ends the generation after that step; a second
/// `stepAsync` meanwhile is refused; the engine is usable again.
async fn webgpu_stop_during_generation(gpu: &mut ChordEngine) {
    gpu.start("abc", obj(&[("n", 20.into()), ("temperature", 0.into())]))
        .unwrap();
    let log = Array::new();
    assert!(!step_async(gpu, &recorder(&log, "")).await.unwrap());
    let in_flight = JsFuture::from(gpu.step_async(recorder(&log, "")));
    // The promise has not resolved: the readback comes back through the event loop.
    assert!(gpu.running().unwrap());
    assert!(
        step_async(gpu, &recorder(&log, "")).await.is_err(),
        "one step at a time"
    );
    gpu.stop().unwrap();
    assert!(
        gpu.running().unwrap(),
        "the stop waits for the step in flight"
    );
    assert_eq!(in_flight.await.unwrap(), JsValue::TRUE);
    assert!(!gpu.running().unwrap());
    let stats = gpu.stats().unwrap();
    assert_eq!(get(&stats, "finish").as_string().unwrap(), "cancelled");
    assert_eq!(
        ids_of(&stats).len(),
        2,
        "the step in flight keeps its token"
    );
    assert_eq!(log.length(), 2);
    // The callback returning false stops too.
    gpu.start("abc", obj(&[("n", 20.into()), ("temperature", 0.into())]))
        .unwrap();
    assert!(
        step_async(gpu, &recorder(&Array::new(), "return false;"))
            .await
            .unwrap()
    );
    assert_eq!(ids_of(&gpu.stats().unwrap()).len(), 1);
    // Usable again, with the CPU's ids.
    let cpu_ids = ids_of(
        &load(true)
            .generate(
                "abc",
                obj(&[("n", 5.into()), ("temperature", 0.into())]),
                &recorder(&Array::new(), ""),
            )
            .unwrap(),
    );
    gpu.start("abc", obj(&[("n", 5.into()), ("temperature", 0.into())]))
        .unwrap();
    while !step_async(gpu, &recorder(&Array::new(), "")).await.unwrap() {}
    assert_eq!(ids_of(&gpu.stats().unwrap()), cpu_ids);
}

/// `auto` takes only a hardware adapter (like the native `--backend auto`): on SwiftShader, a
/// fallback adapter, it stays on the CPU and says why; `stepAsync` then runs the CPU path.
#[wasm_bindgen_test]
async fn webgpu_auto_skips_a_software_adapter() {
    let e = load(true);
    let r = JsFuture::from(e.use_backend("auto")).await.unwrap();
    let reason = get(&r, "reason").as_string().unwrap_or_default();
    assert_eq!(get(&r, "backend").as_string().unwrap(), "cpu", "{reason}");
    assert!(reason.contains("software adapter"), "{reason}");
    let r = JsFuture::from(e.use_backend("cpu")).await.unwrap();
    assert_eq!(get(&r, "backend").as_string().unwrap(), "cpu");
    let mut e = e;
    e.start("abc", obj(&[("n", 3.into())])).unwrap();
    while !step_async(&e, &recorder(&Array::new(), "")).await.unwrap() {}
    assert_eq!(ids_of(&e.stats().unwrap()).len(), 3);
}
