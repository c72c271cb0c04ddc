//! The GPU backend end to end (lavapipe in CI): greedy generation on the GPU gives the CPU's
//! tokens. Skips with a note when no adapter is found, unless `CHORD_REQUIRE_GPU=1`.
#![cfg(feature = "gpu")]

use chord_engine::{Backend, Engine, EngineOptions, GenerateParams};
use chord_resources::paths::models_dir;

/// The tests' engine options: a 64-token context on `backend`.
fn opts(backend: Backend) -> EngineOptions {
    EngineOptions {
        n_ctx: 64,
        backend,
        ..Default::default()
    }
}

/// `path` loaded on the GPU, or `None` (with a note) when there is no GPU backend — a
/// failure instead under `CHORD_REQUIRE_GPU=1`.
fn load_gpu(path: &std::path::Path) -> Option<Engine> {
    match Engine::load_with(path, opts(Backend::Gpu)) {
        Ok(e) => Some(e),
        Err(e) => {
            if std::env::var("CHORD_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("CHORD_REQUIRE_GPU=1 but the GPU backend failed: {e}");
            }
            eprintln!("skip: no GPU backend ({e})");
            None
        }
    }
}

#[test]
fn gpu_greedy_matches_cpu_on_tiny_models() {
    for rel in [
        "derived/tiny-smollm2-4L-q8_0.gguf",
        "derived/tiny-smollm2-4L-q4_0.gguf",
    ] {
        let path = models_dir().join(rel);
        if !path.is_file() {
            eprintln!("skip: {} not present", path.display());
            continue;
        }
        let Some(mut gpu) = load_gpu(&path) else {
            return;
        };
        let mut cpu = Engine::load_with(&path, opts(Backend::Cpu)).expect("load on CPU");
        let prompt = "The capital of France is";
        let params = GenerateParams::greedy(4);
        let g = gpu.generate(prompt, &params).expect("GPU generate");
        let c = cpu.generate(prompt, &params).expect("CPU generate");
        assert_eq!(g.ids.len(), 4, "{rel}: four tokens generated");
        assert_eq!(
            g.ids, c.ids,
            "{rel}: GPU greedy tokens differ from the CPU's"
        );
    }
}

/// Several sequences in one step (each with its own GPU cache and attention dispatches): the
/// batch's greedy tokens equal each prompt's CPU generation.
#[test]
fn gpu_batch_matches_cpu() {
    let path = models_dir().join("derived/tiny-smollm2-4L-q8_0.gguf");
    if !path.is_file() {
        eprintln!("skip: {} not present", path.display());
        return;
    }
    let Some(mut gpu) = load_gpu(&path) else {
        return;
    };
    let mut cpu = Engine::load_with(&path, opts(Backend::Cpu)).expect("load on CPU");
    let prompts = ["Once upon a time", "The capital of France is a city"];
    let reqs: Vec<_> = prompts
        .iter()
        .map(|p| (*p, GenerateParams::greedy(3)))
        .collect();
    let outs = gpu.generate_batch(&reqs).expect("GPU batch");
    assert_eq!(outs.len(), 2);
    for (p, out) in prompts.iter().zip(&outs) {
        let c = cpu
            .generate(p, &GenerateParams::greedy(3))
            .expect("CPU generate");
        assert_eq!(
            out.ids, c.ids,
            "{p:?}: batched GPU tokens differ from the CPU's"
        );
    }
}

/// A step run in parts around its readback (what the browser does: submit, await the
/// `map_async`, resume) gives the same greedy tokens as whole steps, whether the readback is
/// waited for with `device.poll` or polled as a future; a stop between parts is clean.
#[test]
fn split_steps_match_whole_steps() {
    use chord_engine::StepProgress;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let path = models_dir().join("derived/tiny-smollm2-4L-q4_0.gguf");
    if !path.is_file() {
        eprintln!("skip: {} not present", path.display());
        return;
    }
    let Some(mut gpu) = load_gpu(&path) else {
        return;
    };
    assert!(gpu.gpu_adapter().is_some());
    let prompt = "The capital of France is";
    let params = GenerateParams::greedy(6);
    let whole = gpu.generate(prompt, &params).expect("GPU generate");
    let cpu = Engine::load_with(&path, opts(Backend::Cpu))
        .expect("load on CPU")
        .generate(prompt, &params)
        .expect("CPU generate");
    assert_eq!(whole.ids, cpu.ids, "whole GPU steps differ from the CPU");
    for as_future in [false, true] {
        let ids = gpu.tokenize(prompt, true, true);
        let rx = gpu.submit(ids, &params).expect("submit");
        let mut n_waits = 0;
        while gpu.has_work() {
            let mut p = gpu.step_begin();
            while let StepProgress::Waiting(mut w) = p {
                assert!(gpu.step_in_progress());
                n_waits += 1;
                if as_future {
                    let mut cx = Context::from_waker(Waker::noop());
                    loop {
                        match std::pin::Pin::new(&mut w).poll(&mut cx) {
                            Poll::Ready(r) => break r.expect("readback"),
                            Poll::Pending => std::thread::yield_now(),
                        }
                    }
                } else {
                    w.wait_blocking().expect("readback");
                }
                assert!(w.is_ready());
                p = gpu.step_resume();
            }
            assert!(!gpu.step_in_progress());
        }
        let ids: Vec<u32> = rx
            .try_iter()
            .filter_map(|e| match e {
                chord_engine::Event::Token { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, cpu.ids, "split steps (future: {as_future}) differ");
        assert_eq!(n_waits, 6, "one readback per step");
    }
    // Stop mid-generation between the parts of a step: the step finishes, the request is
    // cancelled at the next one, and the engine is usable again.
    let ids = gpu.tokenize(prompt, true, true);
    let rx = gpu
        .submit(ids, &GenerateParams::greedy(20))
        .expect("submit");
    assert!(matches!(gpu.step_begin(), StepProgress::Waiting(_)));
    drop(rx);
    gpu.step(); // finishes the step in flight (blocking wait natively)
    assert!(!gpu.step_in_progress());
    gpu.run_until_idle();
    assert_eq!(gpu.active_sequences(), 0);
    let again = gpu.generate(prompt, &params).expect("generate after stop");
    assert_eq!(again.ids, cpu.ids);
}

/// Past 64 cached positions (attention split over several workgroups, RoPE and the K/V store
/// fused into decode attention), with an f32 cache and, where the device has SHADER_F16, an f16
/// one: greedy tokens equal the CPU's with the same cache precision.
#[test]
fn gpu_long_context_and_f16_cache_match_cpu() {
    use chord_engine::KvPrecision;
    let path = models_dir().join("derived/tiny-smollm2-4L-q8_0.gguf");
    if !path.is_file() {
        eprintln!("skip: {} not present", path.display());
        return;
    }
    let f16 = match chord_systems::gpu::GpuContext::new(true) {
        Ok(c) => c.f16,
        Err(e) => {
            if std::env::var("CHORD_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("CHORD_REQUIRE_GPU=1 but {e}");
            }
            eprintln!("skip: no GPU adapter ({e})");
            return;
        }
    };
    let mut precisions = vec![KvPrecision::F32];
    if f16 {
        precisions.push(KvPrecision::F16);
    }
    let prompt = "One two three four five six seven eight nine ten. ".repeat(8);
    for kv in precisions {
        let opts = |backend| EngineOptions {
            n_ctx: 256,
            backend,
            kv_precision: kv,
            ..Default::default()
        };
        let mut gpu = Engine::load_with(&path, opts(Backend::Gpu)).expect("load on the GPU");
        let mut cpu = Engine::load_with(&path, opts(Backend::Cpu)).expect("load on CPU");
        let params = GenerateParams::greedy(12);
        let g = gpu.generate(&prompt, &params).expect("GPU generate");
        let c = cpu.generate(&prompt, &params).expect("CPU generate");
        assert!(
            g.prompt_ids.len() > 64,
            "{} prompt tokens",
            g.prompt_ids.len()
        );
        assert_eq!(g.ids.len(), 12);
        assert_eq!(
            g.ids, c.ids,
            "{kv:?} cache: GPU greedy tokens differ from the CPU's"
        );
    }
}

/// Sampling with top-k ≤ 64 reads back the GPU's top-k candidates instead of the logits rows:
/// the same seed draws the CPU's tokens (the candidates' logits agree to ~1e-5, far from moving
/// a draw across a probability boundary on this prompt).
#[test]
fn gpu_top_k_sampling_matches_cpu() {
    let path = models_dir().join("derived/tiny-smollm2-4L-q8_0.gguf");
    if !path.is_file() {
        eprintln!("skip: {} not present", path.display());
        return;
    }
    let Some(mut gpu) = load_gpu(&path) else {
        return;
    };
    let mut cpu = Engine::load_with(&path, opts(Backend::Cpu)).expect("load on CPU");
    for (seed, top_k) in [(1u64, 40usize), (2, 64), (3, 5)] {
        let params = GenerateParams {
            max_new_tokens: 12,
            sampling: chord_engine::SamplingParams {
                top_k,
                seed,
                temperature: 1.5,
                ..Default::default()
            },
            ..Default::default()
        };
        let g = gpu
            .generate("Once upon a time", &params)
            .expect("GPU generate");
        let c = cpu
            .generate("Once upon a time", &params)
            .expect("CPU generate");
        assert_eq!(g.ids, c.ids, "seed {seed} top-k {top_k}");
    }
}

/// Split steps (the browser's path: no step recorded ahead, top-k and greedy readbacks awaited
/// between parts) after pipelined whole steps: seeded top-k sampling and greedy decoding in
/// parts give the CPU's tokens, one readback per step, and whole steps afterwards still do.
#[test]
fn split_steps_with_top_k_and_after_pipelined_steps_match_cpu() {
    use chord_engine::StepProgress;
    let path = models_dir().join("derived/tiny-smollm2-4L-q8_0.gguf");
    if !path.is_file() {
        eprintln!("skip: {} not present", path.display());
        return;
    }
    let Some(mut gpu) = load_gpu(&path) else {
        return;
    };
    let mut cpu = Engine::load_with(&path, opts(Backend::Cpu)).expect("load on CPU");
    let prompt = "Once upon a time";
    let sampled = GenerateParams {
        max_new_tokens: 10,
        sampling: chord_engine::SamplingParams {
            top_k: 40,
            seed: 7,
            temperature: 1.5,
            ..Default::default()
        },
        ..Default::default()
    };
    let greedy = GenerateParams::greedy(10);
    for params in [&greedy, &sampled, &greedy] {
        let want = cpu.generate(prompt, params).expect("CPU generate").ids;
        // Whole (pipelined when greedy) steps first, so a step recorded ahead may be pending
        // when the split steps begin.
        let whole = gpu.generate(prompt, params).expect("GPU generate").ids;
        assert_eq!(whole, want, "whole steps differ from the CPU");
        let ids = gpu.tokenize(prompt, true, true);
        let rx = gpu.submit(ids, params).expect("submit");
        let mut n_steps = 0;
        let mut n_waits = 0;
        while gpu.has_work() {
            n_steps += 1;
            let mut p = gpu.step_begin();
            while let StepProgress::Waiting(w) = p {
                n_waits += 1;
                w.wait_blocking().expect("readback");
                p = gpu.step_resume();
            }
        }
        let got: Vec<u32> = rx
            .try_iter()
            .filter_map(|e| match e {
                chord_engine::Event::Token { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(got, want, "split steps differ from the CPU");
        assert_eq!(n_waits, n_steps, "one readback per split step");
    }
}
