//! Teacher-forced fidelity of the forward pass against llama.cpp and the float64 reference.
//!
//! For every SmolLM2 fixture (`../shared/reference/fixtures/models/*.json`) whose model file is in
//! the cache, each prompt's `teacher_forced.ids` is evaluated in one pass by a world built with
//! the real step schedule; the engine's argmax is compared with llama.cpp's at every position and
//! the engine's logits with numpy's float64 logits for numpy's top-10 ids.
//! Missing model files are skipped (with a note), as the reference kit asks.

use std::sync::Arc;

use bevy_ecs::prelude::*;
use chord_resources::gguf::GgufFile;
use chord_resources::paths::{fixtures_dir, models_dir};
use chord_systems::components::Event;
use chord_systems::kernels::matmul::ActivationPrecision;
use chord_systems::sampling::{SamplingParams, argmax};
use chord_systems::schedule::{init_world, step_schedule};
use chord_systems::systems::{EngineSettings, Request, RequestQueue, Vocab};
use chord_systems::weights::ModelWeights;
use crossbeam_channel::unbounded;
use serde_json::Value;

struct Harness {
    world: World,
    step: Schedule,
    tx: crossbeam_channel::Sender<Request>,
    n_vocab: usize,
}

impl Harness {
    fn new(path: &std::path::Path, precision: ActivationPrecision) -> Harness {
        Self::with_world_setup(path, precision, |_| {})
    }

    /// A harness whose world is changed by `setup` after `init_world` (the GPU path).
    fn with_world_setup(
        path: &std::path::Path,
        precision: ActivationPrecision,
        setup: impl FnOnce(&mut World),
    ) -> Harness {
        let file = Arc::new(GgufFile::open(path).expect("open model"));
        let weights = ModelWeights::from_gguf(file).expect("weights");
        let n_vocab = weights.config.n_vocab;
        let (tx, rx) = unbounded();
        let mut world = World::new();
        let settings = EngineSettings {
            n_batch: 64,
            n_ctx: 2048,
            precision,
            ..Default::default()
        };
        init_world(
            &mut world,
            weights,
            Vocab::default(),
            settings,
            RequestQueue(rx),
        );
        setup(&mut world);
        Harness {
            world,
            step: step_schedule(),
            tx,
            n_vocab,
        }
    }

    /// Logits after every prefix of `ids` (`[len × n_vocab]`).
    fn score(&mut self, ids: &[u32]) -> Vec<f32> {
        let (tx, rx) = unbounded();
        self.tx
            .send(Request {
                prompt: ids.to_vec(),
                params: SamplingParams::greedy(),
                max_new_tokens: 0,
                stop_strings: vec![],
                score_all: true,
                share_prefix: 0,
                speculate: None,
                cancel: Default::default(),
                sink: tx,
            })
            .unwrap();
        let mut out = vec![f32::NAN; ids.len() * self.n_vocab];
        loop {
            self.step.run(&mut self.world);
            for ev in rx.try_iter() {
                match ev {
                    Event::Logits {
                        start_pos, logits, ..
                    } => {
                        out[start_pos * self.n_vocab..][..logits.len()].copy_from_slice(&logits);
                    }
                    Event::Done { .. } => {
                        assert!(out.iter().all(|v| v.is_finite()), "every position scored");
                        return out;
                    }
                    Event::Token { .. } => panic!("scoring must not sample"),
                }
            }
        }
    }
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

struct Figures {
    positions: usize,
    /// Positions where exact float64 math (the fixture's numpy run) agrees with llama.cpp.
    exact_math_agree_llamacpp: usize,
    agree_llamacpp: usize,
    agree_numpy: usize,
    max_abs_numpy: f32,
    max_abs_llamacpp: f32,
}

fn run_fixture(name: &str, precision: ActivationPrecision) -> Option<Figures> {
    run_fixture_with(name, precision, |p| Some(Harness::new(p, precision)))
}

fn run_fixture_with(
    name: &str,
    precision: ActivationPrecision,
    make: impl FnOnce(&std::path::Path) -> Option<Harness>,
) -> Option<Figures> {
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("models").join(name)).unwrap(),
    )
    .unwrap();
    let path = models_dir().join(fx["file"].as_str().unwrap());
    if !path.is_file() {
        eprintln!("skip {name}: {} not present", path.display());
        return None;
    }
    let mut h = make(&path)?;
    let mut f = Figures {
        positions: 0,
        exact_math_agree_llamacpp: 0,
        agree_llamacpp: 0,
        agree_numpy: 0,
        max_abs_numpy: 0.0,
        max_abs_llamacpp: 0.0,
    };
    for p in fx["prompts"].as_array().unwrap() {
        let tf = &p["teacher_forced"];
        f.exact_math_agree_llamacpp += p["stats"]["top1_agree_llamacpp_forced_vs_numpy"]
            .as_u64()
            .unwrap() as usize;
        let ids = ids_of(&tf["ids"]);
        let logits = h.score(&ids);
        let llama = ids_of(&tf["llamacpp"]["argmax"]);
        let np_argmax = ids_of(&tf["numpy_f64"]["argmax"]);
        for pos in 0..ids.len() {
            let row = &logits[pos * h.n_vocab..(pos + 1) * h.n_vocab];
            let ours = argmax(row);
            f.positions += 1;
            f.agree_llamacpp += (ours == llama[pos]) as usize;
            f.agree_numpy += (ours == np_argmax[pos]) as usize;
            for pair in tf["llamacpp"]["top"][pos].as_array().unwrap() {
                let id = pair[0].as_u64().unwrap() as usize;
                let want = pair[1].as_f64().unwrap() as f32;
                f.max_abs_llamacpp = f.max_abs_llamacpp.max((row[id] - want).abs());
            }
            for pair in tf["numpy_f64"]["top"][pos].as_array().unwrap() {
                let id = pair[0].as_u64().unwrap() as usize;
                let want = pair[1].as_f64().unwrap() as f32;
                f.max_abs_numpy = f.max_abs_numpy.max((row[id] - want).abs());
            }
        }
    }
    eprintln!(
        "{name} [{precision:?}]: top-1 = llama.cpp at {}/{} ({:.1}%) [exact math: {}], = float64 at {}/{} ({:.1}%), max |Δ| vs float64 top-10 {:.2e}, vs llama.cpp top-10 {:.2e}",
        f.agree_llamacpp,
        f.positions,
        100.0 * f.agree_llamacpp as f64 / f.positions as f64,
        f.exact_math_agree_llamacpp,
        f.agree_numpy,
        f.positions,
        100.0 * f.agree_numpy as f64 / f.positions as f64,
        f.max_abs_numpy,
        f.max_abs_llamacpp
    );
    Some(f)
}

/// The project's bar, on the default (f32-activation) path:
/// - top-1 agreement with llama.cpp ≥ 95 % of positions, or — where exact float64 math itself
///   agrees with llama.cpp less often — at least as often as exact math;
/// - within 2e-3 of float64 on numpy's top-10 logits.
///
/// The optional int8-activation path (`ActivationPrecision::Q8`, ggml's arithmetic) is checked
/// against looser sanity bounds only: it drifts from exact math as far as llama.cpp does, but
/// not in the same direction as the llama.cpp build that made the fixtures, so on some files it
/// agrees with llama.cpp less often than exact math (Q4_0, Q5_K_M, Q6_K: 91.7–94.7 %). That is why
/// it is not the default.
fn check_quantized(name: &str) {
    for precision in [ActivationPrecision::F32, ActivationPrecision::Q8] {
        let Some(f) = run_fixture(name, precision) else {
            return;
        };
        let rate = f.agree_llamacpp as f64 / f.positions as f64;
        let exact = f.exact_math_agree_llamacpp as f64 / f.positions as f64;
        let vs_numpy = f.agree_numpy as f64 / f.positions as f64;
        match precision {
            ActivationPrecision::F32 => {
                assert!(
                    rate >= 0.95f64.min(exact),
                    "{name}: top-1 agreement with llama.cpp {rate:.3} below both 0.95 and exact math's {exact:.3}"
                );
                assert!(
                    f.max_abs_numpy <= 2e-3,
                    "{name}: logits off float64 by {}",
                    f.max_abs_numpy
                );
            }
            ActivationPrecision::Q8 => {
                assert!(
                    rate >= 0.90,
                    "{name} q8: top-1 agreement with llama.cpp {rate:.3}"
                );
                assert!(
                    vs_numpy >= 0.85,
                    "{name} q8: top-1 agreement with float64 {vs_numpy:.3}"
                );
                // qwen2.5-1.5B's position-0 attention-sink outlier wipes out int8 activation
                // blocks (reference kit §3 fact 4): llama.cpp is off by up to 7 there too.
                let bound = if name.contains("1.5b") { 8.0 } else { 4.0 };
                assert!(
                    f.max_abs_numpy <= bound,
                    "{name} q8: logits off float64 by {}",
                    f.max_abs_numpy
                );
            }
        }
    }
}

#[test]
fn smollm2_q4_1() {
    check_quantized("SmolLM2-135M-Instruct.Q4_1.json");
}

#[test]
fn smollm2_f16_matches_float64() {
    if let Some(f) = run_fixture(
        "smollm2-135m-instruct-from-q4_1.f16.json",
        ActivationPrecision::Q8,
    ) {
        assert!(
            f.max_abs_numpy <= 1e-2,
            "F16 logits off float64 by {}",
            f.max_abs_numpy
        );
        assert!(f.agree_llamacpp as f64 / f.positions as f64 >= 0.95);
    }
}

#[test]
fn smollm2_q8_0() {
    check_quantized("smollm2-135m-instruct-from-q4_1.q8_0.json");
}

#[test]
fn smollm2_q4_0() {
    check_quantized("smollm2-135m-instruct-from-q4_1.q4_0.json");
}

#[test]
fn smollm2_q4_k_m() {
    check_quantized("smollm2-135m-instruct-from-q4_1.q4_k_m.json");
}

#[test]
fn smollm2_q5_k_m() {
    check_quantized("smollm2-135m-instruct-from-q4_1.q5_k_m.json");
}

#[test]
fn smollm2_q6_k() {
    check_quantized("smollm2-135m-instruct-from-q4_1.q6_k.json");
}

#[test]
fn smollm2_q3_k_m() {
    check_quantized("smollm2-135m-instruct-from-q4_1.q3_k_m.json");
}

#[test]
fn tiny_4_layer_models() {
    check_quantized("tiny-smollm2-4L-q4_0.json");
    check_quantized("tiny-smollm2-4L-q8_0.json");
}

#[test]
fn gemma3_270m() {
    check_quantized("gemma-3-270m-q4_k_m.json");
}

#[test]
fn qwen2_5_coder_0_5b() {
    check_quantized("qwen2.5-coder-0.5b-instruct-awq-q4_k_m.json");
}

/// 1.1 GB model: `cargo test --release -p chord-systems --test forward_fixtures -- --ignored qwen2_5_coder_1_5b`
#[test]
#[ignore]
fn qwen2_5_coder_1_5b() {
    check_quantized("qwen2.5-coder-1.5b-instruct-q4_k_m.json");
}

/// The GPU path (wgpu; lavapipe in CI) on the SmolLM2 Q4_1 fixture: the same bar as the CPU's
/// f32 path. Skips with a note without an adapter, unless `CHORD_REQUIRE_GPU=1`.
#[cfg(feature = "gpu")]
#[test]
fn gpu_smollm2_q4_1() {
    let name = "SmolLM2-135M-Instruct.Q4_1.json";
    let f = run_fixture_with(name, ActivationPrecision::F32, |path| {
        let ctx = match chord_systems::gpu::GpuContext::new(true) {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("CHORD_REQUIRE_GPU").as_deref() == Ok("1") {
                    panic!("CHORD_REQUIRE_GPU=1 but {e}");
                }
                eprintln!("skip {name} on the GPU: {e}");
                return None;
            }
        };
        eprintln!("GPU: {}", ctx.describe());
        Some(Harness::with_world_setup(
            path,
            ActivationPrecision::F32,
            |w| {
                chord_systems::gpu::install(w, ctx).expect("install the GPU path");
            },
        ))
    });
    let Some(f) = f else { return };
    let rate = f.agree_llamacpp as f64 / f.positions as f64;
    let exact = f.exact_math_agree_llamacpp as f64 / f.positions as f64;
    assert!(
        rate >= 0.95f64.min(exact),
        "GPU {name}: top-1 agreement with llama.cpp {rate:.3} below both 0.95 and exact math's {exact:.3}"
    );
    assert!(
        f.max_abs_numpy <= 2e-3,
        "GPU {name}: logits off float64 by {}",
        f.max_abs_numpy
    );
}
