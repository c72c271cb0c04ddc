//! Cost of the ECS schedule itself, next to a real decode step of the same model.
//!
//! `empty_step` runs the whole step schedule (admit → … → emit, the layer schedule n_layer
//! times) with no rows: every system is dispatched but has nothing to compute, so its time is
//! the per-step overhead of bevy_ecs. `decode_step` is one decode token of one sequence.
//! The ratio is printed at the end. Model: `$CHORD_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf`.

use std::sync::Arc;
use std::time::Instant;

use bevy_ecs::prelude::*;
use chord_resources::gguf::GgufFile;
use chord_resources::paths::models_dir;
use chord_systems::components::Event;
use chord_systems::sampling::SamplingParams;
use chord_systems::schedule::{init_world, step_schedule};
use chord_systems::systems::{EngineSettings, Request, RequestQueue, Vocab};
use chord_systems::weights::ModelWeights;
use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_channel::unbounded;

fn bench(c: &mut Criterion) {
    let path = models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let Ok(file) = GgufFile::open(&path) else {
        eprintln!("skip: {} not present", path.display());
        return;
    };
    chord_systems::kernels::parallel::init_compute_pool(2);
    let weights = ModelWeights::from_gguf(Arc::new(file)).expect("weights");
    let (tx, rx) = unbounded();
    let mut world = World::new();
    let settings = EngineSettings {
        n_ctx: 1 << 20,
        ..Default::default()
    };
    init_world(
        &mut world,
        weights,
        Vocab::default(),
        settings,
        RequestQueue(rx),
    );
    let mut step = step_schedule();
    step.run(&mut world);

    let t = Instant::now();
    let n = 2000;
    for _ in 0..n {
        step.run(&mut world);
    }
    let empty = t.elapsed().as_secs_f64() / n as f64;
    c.bench_function("empty_step (schedule overhead, 30 layers)", |b| {
        b.iter(|| step.run(&mut world))
    });

    // One sequence decoding for ever (no EOS in a Vocab without flags, huge max_new_tokens).
    let (sink, events) = unbounded();
    tx.send(Request {
        prompt: vec![1, 2, 3, 4],
        params: SamplingParams::greedy(),
        max_new_tokens: usize::MAX,
        stop_strings: vec![],
        score_all: false,
        share_prefix: 0,
        speculate: None,
        cancel: Default::default(),
        sink,
    })
    .expect("queue");
    step.run(&mut world);
    let t = Instant::now();
    let n = 50;
    for _ in 0..n {
        step.run(&mut world);
        events.try_iter().for_each(drop::<Event>);
    }
    let decode = t.elapsed().as_secs_f64() / n as f64;
    c.bench_function("decode_step (1 sequence)", |b| {
        b.iter(|| {
            step.run(&mut world);
            events.try_iter().for_each(drop::<Event>);
        })
    });
    eprintln!(
        "schedule overhead: {:.1} µs per step = {:.2}% of a {:.2} ms decode step",
        empty * 1e6,
        100.0 * empty / decode,
        decode * 1e3
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
