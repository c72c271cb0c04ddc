//! Speculative decoding end to end: greedy output is identical with and without drafts (a
//! draft model, prompt lookup, single and batched requests), sampled output is reproducible,
//! and incompatible draft models are refused.

use chord_engine::{
    DraftSource, Engine, EngineError, GenerateParams, SamplingParams, SpeculateParams,
};
use chord_resources::paths::{fixtures_dir, models_dir};
use serde_json::Value;

fn path(rel: &str) -> Option<std::path::PathBuf> {
    let p = models_dir().join(rel);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skip: {} not present", p.display());
        None
    }
}

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Four layers of the same model: a weak draft, so drafts are both accepted and rejected.
const TINY: &str = "derived/tiny-smollm2-4L-q8_0.gguf";

/// Prompt ids of the kit's fixture prompts for `model` (llama.cpp's tokenization).
fn fixture_prompts(model: &str) -> Vec<(String, Vec<u32>, Vec<u32>)> {
    let text = std::fs::read_to_string(fixtures_dir().join(format!("models/{model}.json")))
        .expect("fixture file");
    let v: Value = serde_json::from_str(&text).expect("fixture JSON");
    let ids = |x: &Value| -> Vec<u32> {
        x.as_array()
            .expect("id array")
            .iter()
            .map(|i| i.as_u64().expect("id") as u32)
            .collect()
    };
    v["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("?").to_string(),
                ids(&p["prompt_ids"]),
                ids(&p["llamacpp_greedy"]["ids"]),
            )
        })
        .collect()
}

fn greedy(n: usize, speculate: Option<SpeculateParams>) -> GenerateParams {
    GenerateParams {
        speculate,
        ..GenerateParams::greedy(n)
    }
}

#[test]
fn greedy_output_is_identical_with_a_draft_model_and_with_lookup() {
    let (Some(target), Some(draft)) = (path(SMOL), path(TINY)) else {
        return;
    };
    let mut engine = Engine::load(target).unwrap();
    engine.load_draft(draft).unwrap();
    let mut drafted = 0;
    let mut accepted = 0;
    for (name, prompt, llama) in fixture_prompts("SmolLM2-135M-Instruct.Q4_1") {
        let plain = engine
            .generate_ids(prompt.clone(), &greedy(64, None))
            .unwrap();
        assert_eq!(plain.ids.len(), 64.min(plain.ids.len()));
        for spec in [
            SpeculateParams::draft_model(6),
            SpeculateParams::lookup(8),
            SpeculateParams {
                adaptive: false,
                ..SpeculateParams::draft_model(3)
            },
        ] {
            let out = engine
                .generate_ids(prompt.clone(), &greedy(64, Some(spec)))
                .unwrap();
            assert_eq!(out.ids, plain.ids, "{name} {spec:?}: ids differ");
            assert_eq!(out.text, plain.text);
            assert_eq!(out.finish, plain.finish);
            if spec.source == DraftSource::Model {
                assert!(
                    out.stats.n_drafted > 0,
                    "{name}: the draft model proposed nothing"
                );
                drafted += out.stats.n_drafted;
                accepted += out.stats.n_draft_accepted;
            }
        }
        let agree = plain
            .ids
            .iter()
            .zip(&llama)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!("{name}: first {agree} greedy tokens equal llama.cpp's");
    }
    // The weak draft is right sometimes and wrong sometimes: both paths ran.
    assert!(accepted > 0 && accepted < drafted, "{accepted}/{drafted}");
}

#[test]
fn batched_speculative_requests_equal_single_runs() {
    let (Some(target), Some(draft)) = (path(SMOL), path(TINY)) else {
        return;
    };
    let mut engine = Engine::load(target).unwrap();
    engine.load_draft(draft).unwrap();
    let prompts = [
        "The capital of France is",
        "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return",
        "One, two, three, four, five, six,",
        "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n",
    ];
    let singles: Vec<_> = prompts
        .iter()
        .map(|p| engine.generate(p, &greedy(40, None)).unwrap())
        .collect();
    // Mixed: some requests draft with the model, some by lookup, one not at all.
    let specs = [
        Some(SpeculateParams::draft_model(5)),
        Some(SpeculateParams::lookup(6)),
        Some(SpeculateParams::draft_model(8)),
        None,
    ];
    let requests: Vec<_> = prompts
        .iter()
        .zip(specs)
        .map(|(p, s)| (*p, greedy(40, s)))
        .collect();
    let batch = engine.generate_batch(&requests).unwrap();
    for ((s, b), p) in singles.iter().zip(&batch).zip(prompts) {
        assert_eq!(s.ids, b.ids, "{p:?}: batched speculative ids differ");
    }
    assert!(batch[0].stats.n_drafted > 0 && batch[2].stats.n_drafted > 0);
    assert_eq!(batch[3].stats.n_drafted, 0);
}

#[test]
fn lookup_matches_plain_greedy_on_qwen() {
    let Some(p) = path("qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf") else {
        return;
    };
    let mut engine = Engine::load(p).unwrap();
    for (name, prompt, _) in fixture_prompts("qwen2.5-coder-0.5b-instruct-awq-q4_k_m") {
        let plain = engine
            .generate_ids(prompt.clone(), &greedy(48, None))
            .unwrap();
        let out = engine
            .generate_ids(prompt, &greedy(48, Some(SpeculateParams::lookup(8))))
            .unwrap();
        assert_eq!(out.ids, plain.ids, "{name}: lookup changed the output");
    }
}

#[test]
fn speculative_sampling_is_seeded_and_respects_the_token_budget() {
    let (Some(target), Some(draft)) = (path(SMOL), path(TINY)) else {
        return;
    };
    let mut engine = Engine::load(target).unwrap();
    engine.load_draft(draft).unwrap();
    let params = |seed| GenerateParams {
        max_new_tokens: 37,
        sampling: SamplingParams {
            seed,
            ..Default::default()
        },
        speculate: Some(SpeculateParams::draft_model(4)),
        ..Default::default()
    };
    let a = engine.generate("Once upon a time", &params(1)).unwrap();
    let b = engine.generate("Once upon a time", &params(1)).unwrap();
    let c = engine.generate("Once upon a time", &params(2)).unwrap();
    assert_eq!(a.ids, b.ids, "same seed, different output");
    assert_ne!(a.ids, c.ids, "different seeds, same output");
    for o in [&a, &c] {
        assert!(o.ids.len() <= 37);
        assert!(o.stats.n_drafted > 0);
    }
}

#[test]
fn incompatible_or_missing_draft_models_are_refused() {
    let (Some(target), Some(gemma)) = (path(SMOL), path("gemma-3-270m-q4_k_m.gguf")) else {
        return;
    };
    let mut engine = Engine::load(target).unwrap();
    let err = engine
        .generate("Hi", &greedy(4, Some(SpeculateParams::draft_model(4))))
        .unwrap_err();
    assert!(matches!(err, EngineError::NoDraftModel), "{err}");
    let err = engine.load_draft(gemma).unwrap_err();
    assert!(matches!(err, EngineError::DraftMismatch(_)), "{err}");
    assert!(!engine.has_draft_model());
    let err = engine
        .generate("Hi", &greedy(4, Some(SpeculateParams::lookup(0))))
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidOption(_)), "{err}");
}

#[test]
fn small_step_budgets_split_prompts_and_drafts_without_changing_output() {
    let (Some(target), Some(draft)) = (path(SMOL), path(TINY)) else {
        return;
    };
    let prompt = "def area(w, h):\n    return w * h\n\ndef perimeter(w, h):\n    return";
    let mut plain = Engine::load(&target).unwrap();
    let want = plain.generate(prompt, &greedy(30, None)).unwrap();
    // Five rows per step: the prompt (and the draft model's reading of it) takes several
    // steps, and drafts are cut to what fits next to the other sequence's rows.
    let mut small = Engine::load_with(
        &target,
        chord_engine::EngineOptions {
            n_batch: 5,
            ..Default::default()
        },
    )
    .unwrap();
    small.load_draft(draft).unwrap();
    let outs = small
        .generate_batch(&[
            (prompt, greedy(30, Some(SpeculateParams::draft_model(8)))),
            (prompt, greedy(30, Some(SpeculateParams::lookup(8)))),
        ])
        .unwrap();
    for o in &outs {
        assert_eq!(o.ids, want.ids);
    }
}

/// Speculation on the GPU backend (lavapipe in CI): the target verifies drafts on the GPU (its
/// cache is position-indexed, so a rollback is the next write), the draft model runs on the CPU.
#[cfg(feature = "gpu")]
#[test]
fn gpu_target_speculates_with_identical_greedy_output() {
    use chord_engine::{Backend, EngineOptions};
    let (Some(target), Some(draft)) = (path(TINY), path("derived/tiny-smollm2-4L-q4_0.gguf"))
    else {
        return;
    };
    let opts = EngineOptions {
        n_ctx: 128,
        backend: Backend::Gpu,
        ..Default::default()
    };
    let mut gpu = match Engine::load_with(&target, opts) {
        Ok(e) => e,
        Err(e) => {
            if std::env::var("CHORD_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("CHORD_REQUIRE_GPU=1 but the GPU backend failed: {e}");
            }
            eprintln!("skip: no GPU backend ({e})");
            return;
        }
    };
    gpu.load_draft(draft).unwrap();
    let prompt = "One, two, three, four, five, six, seven,";
    let plain = gpu.generate(prompt, &greedy(16, None)).unwrap();
    for spec in [SpeculateParams::lookup(4), SpeculateParams::draft_model(3)] {
        let out = gpu.generate(prompt, &greedy(16, Some(spec))).unwrap();
        assert_eq!(out.ids, plain.ids, "{spec:?}: GPU speculative ids differ");
        assert!(out.stats.n_drafted > 0, "{spec:?}: nothing was drafted");
    }
}
