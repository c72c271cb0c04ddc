//! Generation never holds up a frame: with replies streaming for 8 NPCs the update loop keeps
//! its normal rate, and no frame takes as long as an engine decode step.

mod common;

use std::time::{Duration, Instant};

use bevy_chord::{ChordPlugin, DialogueRequest, SamplingParams};
use common::{Log, app, stats, tiny_model};

const PERSONA: &str = "You are a guard at the gate of Oakvale. You answer in one short sentence.";
const QUESTIONS: [&str; 8] = [
    "Who goes there?",
    "Is the road north safe?",
    "When does the gate close?",
    "Have you seen a thief?",
    "Where can I buy bread?",
    "What is your name?",
    "Why are you so tired?",
    "Can I pass?",
];

#[test]
fn frames_keep_their_rate_while_8_npcs_generate() {
    let Some(model) = tiny_model() else { return };
    let mut app = app(ChordPlugin::new(model));
    let npcs: Vec<_> = (0..8).map(|_| app.world_mut().spawn_empty().id()).collect();

    // The loop's normal rate: 1 ms apart, nothing generating.
    let pace = Duration::from_millis(1);
    let frame = |app: &mut bevy_app::App| {
        let t = Instant::now();
        app.update();
        let d = t.elapsed();
        std::thread::sleep(pace);
        d
    };
    let t = Instant::now();
    let idle_frames = 200;
    for _ in 0..idle_frames {
        frame(&mut app);
    }
    let idle_rate = idle_frames as f64 / t.elapsed().as_secs_f64();

    for (&npc, q) in npcs.iter().zip(QUESTIONS) {
        let req = DialogueRequest::ask(npc, PERSONA, None, q)
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(48);
        app.world_mut().write_message(req);
    }
    let t = Instant::now();
    let mut frames = Vec::new();
    while app.world().resource::<Log>().done.len() < npcs.len() {
        frames.push(frame(&mut app));
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "replies never finished"
        );
    }
    let busy_s = t.elapsed().as_secs_f64();
    let busy_rate = frames.len() as f64 / busy_s;
    let s = stats(&app);
    let log = app.world().resource::<Log>();
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    assert_eq!(s.replies, 8);
    assert!(s.tokens >= 8, "every NPC got at least one token");
    assert!(s.engine_steps >= 2, "generation took several steps");
    let max_frame = frames
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    let mean_step = s.mean_step_s();
    eprintln!(
        "idle {idle_rate:.0} frames/s, generating {busy_rate:.0} frames/s over {busy_s:.2} s; \
         {} frames, {} steps (mean {:.2} ms, max {:.2} ms), max frame {:.3} ms, {} tokens",
        frames.len(),
        s.engine_steps,
        mean_step * 1e3,
        s.engine_step_s_max * 1e3,
        max_frame * 1e3,
        s.tokens
    );
    // The loop keeps (at least half) its rate: the frames never wait for a step...
    assert!(
        busy_rate >= idle_rate * 0.5,
        "frame rate fell from {idle_rate:.0}/s to {busy_rate:.0}/s while generating"
    );
    assert!(
        frames.len() as u64 >= s.engine_steps,
        "fewer frames ({}) than decode steps ({})",
        frames.len(),
        s.engine_steps
    );
    // ...and frames do not wait for decode steps: 99 % of frames are shorter than an average
    // step, and even the longest (which the OS may pre-empt on a loaded 2-core machine) is
    // shorter than the longest step.
    let mut sorted = frames.clone();
    sorted.sort();
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)].as_secs_f64();
    assert!(
        p99 < mean_step,
        "99th-percentile frame {:.3} ms, mean decode step {:.3} ms",
        p99 * 1e3,
        mean_step * 1e3
    );
    assert!(
        max_frame < s.engine_step_s_max,
        "a frame took {:.3} ms, the longest decode step {:.3} ms",
        max_frame * 1e3,
        s.engine_step_s_max * 1e3
    );
}
