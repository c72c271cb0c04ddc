//! Public API behaviour: batching, seeds, streaming, errors, perplexity against llama.cpp.

use chord_engine::{
    Engine, EngineError, EngineOptions, Event, FinishReason, GenerateParams, SamplingParams,
};
use chord_resources::gguf::{GgufWriter, Value};
use chord_resources::paths::{fixtures_dir, models_dir};

fn model(rel: &str) -> Option<std::path::PathBuf> {
    let p = models_dir().join(rel);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skip: {} not present", p.display());
        None
    }
}

/// The 4-layer SmolLM2 (fast; text is gibberish but deterministic).
fn tiny() -> Option<Engine> {
    model("derived/tiny-smollm2-4L-q8_0.gguf").map(|p| Engine::load(p).expect("load tiny model"))
}

const PROMPTS: [&str; 8] = [
    "The capital of France is",
    "Once upon a time",
    "fn main() {",
    "List three colors:",
    "The quick brown fox",
    "1, 2, 3, 4,",
    "Water boils at",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
];

#[test]
fn batch_equals_single_runs() {
    let Some(mut engine) = tiny() else { return };
    let params = GenerateParams::greedy(12);
    let singles: Vec<_> = PROMPTS
        .iter()
        .map(|p| engine.generate(p, &params).unwrap())
        .collect();
    let requests: Vec<_> = PROMPTS.iter().map(|p| (*p, params.clone())).collect();
    let batch = engine.generate_batch(&requests).unwrap();
    assert_eq!(batch.len(), PROMPTS.len());
    for (s, b) in singles.iter().zip(&batch) {
        assert!(!s.ids.is_empty());
        assert_eq!(s.prompt_ids, b.prompt_ids);
        assert_eq!(s.ids, b.ids, "batched ids differ from the single run");
        assert_eq!(s.text, b.text);
    }
    // Small prefill chunks (prompts split across steps, mixed with decode rows) change nothing.
    let path = models_dir().join("derived/tiny-smollm2-4L-q8_0.gguf");
    let mut chunked = Engine::load_with(
        path,
        EngineOptions {
            n_batch: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let batch2 = chunked.generate_batch(&requests).unwrap();
    for (s, b) in singles.iter().zip(&batch2) {
        assert_eq!(s.ids, b.ids, "chunked prefill changed the result");
    }
}

#[test]
fn seeds_reproduce_and_differ() {
    let Some(mut engine) = tiny() else { return };
    let with_seed = |seed| GenerateParams {
        max_new_tokens: 16,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    let a = engine.generate("Once upon a time", &with_seed(1)).unwrap();
    let b = engine.generate("Once upon a time", &with_seed(1)).unwrap();
    let c = engine.generate("Once upon a time", &with_seed(2)).unwrap();
    assert_eq!(a.ids, b.ids);
    assert_eq!(a.text, b.text);
    assert_ne!(a.ids, c.ids);
}

#[test]
fn streaming_yields_tokens_then_done() {
    let Some(mut engine) = tiny() else { return };
    let whole = engine
        .generate("The quick brown fox", &GenerateParams::greedy(8))
        .unwrap();
    let events: Vec<Event> = engine
        .stream("The quick brown fox", &GenerateParams::greedy(8))
        .unwrap()
        .collect();
    let ids: Vec<u32> = events
        .iter()
        .filter_map(|e| {
            if let Event::Token { id, .. } = e {
                Some(*id)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(ids, whole.ids);
    assert!(matches!(
        events.last(),
        Some(Event::Done {
            reason: FinishReason::Length,
            ..
        })
    ));
    assert_eq!(whole.finish, FinishReason::Length);
    assert_eq!(whole.ids.len(), 8);
}

#[test]
fn stop_strings_cut_the_output() {
    let Some(mut engine) = tiny() else { return };
    let full = engine
        .generate("Once upon a time", &GenerateParams::greedy(24))
        .unwrap();
    // Pick a stop string from the middle of the greedy text.
    let chars: Vec<char> = full.text.chars().collect();
    if chars.len() < 8 {
        return;
    }
    let stop: String = chars[4..7].iter().collect();
    let params = GenerateParams {
        stop: vec![stop.clone()],
        ..GenerateParams::greedy(24)
    };
    let cut = engine.generate("Once upon a time", &params).unwrap();
    assert_eq!(cut.finish, FinishReason::Stop);
    assert!(!cut.text.contains(&stop));
    assert!(full.text.starts_with(&cut.text));
    assert_eq!(cut.text, full.text[..full.text.find(&stop).unwrap()]);
}

#[test]
fn bad_requests_are_typed_errors() {
    let Some(mut engine) = tiny() else { return };
    assert!(matches!(
        engine.generate("", &GenerateParams::greedy(4)),
        Err(EngineError::EmptyPrompt)
    ));
    assert!(matches!(
        engine.generate("hi", &GenerateParams::greedy(0)),
        Err(EngineError::ZeroTokens)
    ));
    let bad = GenerateParams {
        sampling: SamplingParams {
            temperature: -1.0,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        engine.generate("hi", &bad),
        Err(EngineError::InvalidParam(_))
    ));
    let bad = GenerateParams {
        sampling: SamplingParams {
            top_p: 1.5,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        engine.generate("hi", &bad),
        Err(EngineError::InvalidParam(_))
    ));
    let long = "word ".repeat(engine.n_ctx() + 10);
    assert!(matches!(
        engine.generate(&long, &GenerateParams::greedy(1)),
        Err(EngineError::PromptTooLong { .. })
    ));
    assert!(matches!(
        engine.score(&[u32::MAX], 1),
        Err(EngineError::BadToken { .. })
    ));
    // The engine still works after refusing requests.
    assert_eq!(
        engine
            .generate("hi", &GenerateParams::greedy(2))
            .unwrap()
            .ids
            .len(),
        2
    );
}

#[test]
fn generation_stops_at_the_context_limit() {
    let Some(path) = model("derived/tiny-smollm2-4L-q8_0.gguf") else {
        return;
    };
    let mut engine = Engine::load_with(
        path,
        EngineOptions {
            n_ctx: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let bias: Vec<(u32, f32)> = (0..engine.weights().config.n_vocab as u32)
        .filter(|&id| engine.tokenizer().is_eog(id))
        .map(|id| (id, f32::NEG_INFINITY))
        .collect();
    let params = GenerateParams {
        sampling: SamplingParams {
            logit_bias: bias,
            ..SamplingParams::greedy()
        },
        ..GenerateParams::greedy(100)
    };
    let out = engine.generate("Once upon a time", &params).unwrap();
    assert_eq!(out.finish, FinishReason::Context);
    assert_eq!(
        out.prompt_ids.len() + out.ids.len(),
        17,
        "fills the 16 positions, plus the last sampled token"
    );
}

#[test]
fn missing_and_invalid_model_files() {
    assert!(matches!(
        Engine::load("/nonexistent/model.gguf"),
        Err(EngineError::Open { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a gguf file at all").unwrap();
    assert!(matches!(Engine::load(&junk), Err(EngineError::Open { .. })));

    // A valid GGUF of an architecture we do not run.
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("mamba".into()))
        .unwrap();
    let bytes = w.to_bytes().unwrap();
    let err = Engine::from_bytes(bytes, EngineOptions::default())
        .err()
        .expect("must fail");
    assert_eq!(err.to_string(), "unsupported architecture: mamba");
}

/// llama-perplexity's number for `model` at `n_ctx` must be matched within 1 %.
fn check_perplexity(model_file: &str, fixture_model: &str, n_ctx: u64) {
    let Some(path) = model(model_file) else {
        return;
    };
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("perplexity.json")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(fixtures_dir().join("ppl-public.txt")).unwrap();
    let r = fx["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == fixture_model && r["n_ctx"] == n_ctx)
        .expect("perplexity fixture");
    let mut engine = Engine::load_with(
        path,
        EngineOptions {
            n_ctx: n_ctx as usize,
            ..Default::default()
        },
    )
    .unwrap();
    // The text's token ids double as a long tokenizer test.
    let want_tokens: Vec<u32> = r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(engine.tokenize(&text, true, false), want_tokens);
    let p = engine.perplexity(&text, n_ctx as usize).unwrap();
    let llama = r["ppl"].as_f64().unwrap();
    let exact = r["numpy_f64"]["ppl"].as_f64().unwrap();
    eprintln!(
        "{fixture_model} n_ctx {n_ctx}: perplexity {:.4}; llama.cpp {llama:.4} ({:+.3}%), float64 {exact:.4} ({:+.3}%)",
        p.ppl,
        100.0 * (p.ppl / llama - 1.0),
        100.0 * (p.ppl / exact - 1.0)
    );
    assert_eq!(p.chunks.len() as u64, r["n_chunk"].as_u64().unwrap());
    assert!(
        (p.ppl / llama - 1.0).abs() < 0.01,
        "perplexity {} vs llama.cpp {llama}",
        p.ppl
    );
    assert!(
        (p.ppl / exact - 1.0).abs() < 0.002,
        "perplexity {} vs float64 {exact}",
        p.ppl
    );
}

#[test]
fn perplexity_smollm2_matches_llama_cpp() {
    check_perplexity(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q4_1",
        128,
    );
    check_perplexity(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q4_1",
        512,
    );
}

#[test]
fn perplexity_qwen2_5_0_5b_matches_llama_cpp() {
    check_perplexity(
        "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-awq-q4_k_m",
        128,
    );
    check_perplexity(
        "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-awq-q4_k_m",
        512,
    );
}

#[test]
fn shared_prefix_is_computed_once_and_changes_nothing() {
    let Some(mut engine) = tiny() else { return };
    let persona =
        "<|im_start|>system\nYou are Brom, a grumpy blacksmith in a small village.<|im_end|>\n";
    let questions = [
        "Where is the inn?",
        "Can you fix my sword?",
        "What is your name?",
    ];
    let prompt =
        |q: &str| format!("{persona}<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
    let plain: Vec<_> = questions
        .iter()
        .map(|q| {
            engine
                .generate(&prompt(q), &GenerateParams::greedy(10))
                .unwrap()
        })
        .collect();
    let shared = GenerateParams {
        shared_prefix: Some(persona.to_string()),
        ..GenerateParams::greedy(10)
    };
    let first = engine.generate(&prompt(questions[0]), &shared).unwrap();
    assert_eq!(
        first.stats.n_prefix_reused, 0,
        "the first request computes the prefix"
    );
    assert_eq!(first.ids, plain[0].ids);
    let requests: Vec<_> = questions
        .iter()
        .map(|q| (prompt(q), shared.clone()))
        .collect();
    let outs = engine.generate_batch(&requests).unwrap();
    let n_persona = engine.tokenize(persona, true, true).len();
    for (o, p) in outs.iter().zip(&plain) {
        assert_eq!(
            o.ids, p.ids,
            "greedy output must not change with a shared prefix"
        );
        assert_eq!(o.stats.n_prefix_reused, n_persona, "prefill tokens saved");
    }
}

#[test]
fn f16_kv_cache_halves_memory_and_keeps_greedy_output() {
    let Some(path) = model("derived/tiny-smollm2-4L-q8_0.gguf") else {
        return;
    };
    let mut a = Engine::load(&path).unwrap();
    let opts = EngineOptions {
        kv_precision: chord_engine::KvPrecision::F16,
        ..Default::default()
    };
    let mut b = Engine::load_with(&path, opts).unwrap();
    let mut same = 0;
    for p in PROMPTS {
        let (x, y) = (
            a.generate(p, &GenerateParams::greedy(8)).unwrap(),
            b.generate(p, &GenerateParams::greedy(8)).unwrap(),
        );
        same += (x.ids == y.ids) as usize;
    }
    // Rounding K/V to f16 may flip a near-tie late in a continuation, but rarely.
    assert!(
        same >= PROMPTS.len() - 2,
        "only {same} of {} greedy continuations agree",
        PROMPTS.len()
    );
}

#[test]
fn dropping_the_receiver_cancels_even_mid_prefill() {
    let Some(path) = model("derived/tiny-smollm2-4L-q8_0.gguf") else {
        return;
    };
    let mut engine = Engine::load_with(
        path,
        EngineOptions {
            n_batch: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let prompt = engine.tokenize(
        &"a long prompt that takes several prefill steps ".repeat(4),
        true,
        true,
    );
    assert!(prompt.len() > 12);
    let rx = engine.submit(prompt, &GenerateParams::greedy(8)).unwrap();
    engine.step();
    assert_eq!(engine.active_sequences(), 1);
    assert!(rx.try_recv().is_err(), "still in prefill: no token yet");
    drop(rx);
    engine.step();
    assert_eq!(
        engine.active_sequences(),
        0,
        "the cancelled sequence is freed at the next step"
    );
    assert!(!engine.has_work());
}
