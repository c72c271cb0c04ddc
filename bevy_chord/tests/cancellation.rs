//! Despawning an NPC (or cancelling its request) frees its sequence in the engine, whether it
//! was decoding or still in prefill, and a thousand short requests leave nothing behind.

mod common;

use std::time::Duration;

use bevy_chord::{
    ActivationPrecision, CancelDialogue, ChatMessage, ChordPlugin, DialogueRequest, EngineOptions,
    FinishReason, SamplingParams, Speaking,
};
use bevy_ecs::prelude::*;
use common::{Log, app, run_until, stats, tiny_model, warm_up};

const PERSONA: &str = "You are an old fisherman who tells long stories about the sea.";
const LIMIT: Duration = Duration::from_secs(180);

fn request(npc: Entity, question: &str, max_tokens: usize) -> DialogueRequest {
    DialogueRequest::ask(npc, PERSONA, None, question)
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(max_tokens)
}

/// Until the worker and the engine are idle; then the engine's world must hold as many
/// entities as it did idle before (`baseline`).
fn settle(app: &mut bevy_app::App, baseline: u32) {
    run_until(app, LIMIT, |app| stats(app).idle);
    let s = stats(app);
    assert_eq!(s.engine_active, 0, "sequences left in the engine");
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.engine_entities, baseline, "entities left in the engine");
}

fn tokens_of(app: &bevy_app::App, npc: Entity) -> usize {
    let log = app.world().resource::<Log>();
    log.tokens.iter().filter(|t| t.npc == npc).count()
}

#[test]
fn despawning_mid_reply_frees_the_sequence() {
    let Some(model) = tiny_model() else { return };
    let mut app = app(ChordPlugin::new(model));
    let baseline = warm_up(&mut app);
    let npcs: Vec<_> = (0..8).map(|_| app.world_mut().spawn_empty().id()).collect();
    for (i, &npc) in npcs.iter().enumerate() {
        app.world_mut()
            .write_message(request(npc, &format!("Tell me story number {i}."), 64));
    }
    // Until every NPC is mid-reply.
    run_until(&mut app, LIMIT, |app| {
        npcs.iter().all(|&n| tokens_of(app, n) > 0)
    });
    assert!(app.world().get::<Speaking>(npcs[0]).is_some());
    assert!(stats(&app).engine_active > 0);
    let (gone, kept) = npcs.split_at(4);
    let before: Vec<usize> = gone.iter().map(|&n| tokens_of(&app, n)).collect();
    for &n in gone {
        app.world_mut().despawn(n);
    }
    // One more is cancelled by message: it gets a Cancelled Done, its partial text included.
    app.world_mut()
        .write_message(CancelDialogue { npc: kept[0] });
    // And one is asked something else: its reply so far ends Cancelled, a new one follows.
    app.world_mut()
        .write_message(request(kept[1], "Never mind. Good day!", 4));
    settle(&mut app, baseline);

    let log = app.world().resource::<Log>();
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    for (&n, &b) in gone.iter().zip(&before) {
        assert_eq!(tokens_of(&app, n), b, "tokens arrived after the despawn");
        assert!(
            log.done.iter().all(|d| d.npc != n),
            "no Done for a despawned NPC"
        );
    }
    let cancelled = log.done.iter().find(|d| d.npc == kept[0]).unwrap();
    assert_eq!(cancelled.reason, FinishReason::Cancelled);
    assert!(!cancelled.text.is_empty() || tokens_of(&app, kept[0]) > 0);
    assert!(app.world().get::<Speaking>(kept[0]).is_none());
    let replaced: Vec<_> = log.done.iter().filter(|d| d.npc == kept[1]).collect();
    assert_eq!(replaced.len(), 2);
    assert_eq!(replaced[0].reason, FinishReason::Cancelled);
    assert_ne!(replaced[1].reason, FinishReason::Cancelled);
    assert!(replaced[1].stats.n_generated <= 4);
    for &n in &kept[1..] {
        let d = log
            .done
            .iter()
            .rfind(|d| d.npc == n)
            .expect("kept NPCs finish");
        assert_ne!(d.reason, FinishReason::Cancelled);
        assert!(app.world().get::<Speaking>(n).is_none());
    }
    let s = stats(&app);
    assert_eq!(s.cancelled, 6);
    assert_eq!(s.replies, 3);
}

#[test]
fn despawning_during_prefill_frees_the_sequence() {
    let Some(model) = tiny_model() else { return };
    // Four prompt tokens a step: a long conversation takes many steps to prefill.
    let mut plugin = ChordPlugin::new(model);
    plugin.options = EngineOptions {
        n_batch: 4,
        ..Default::default()
    };
    let mut app = app(plugin);
    let baseline = warm_up(&mut app);
    let npc = app.world_mut().spawn_empty().id();
    let conversation: Vec<_> = (0..6)
        .flat_map(|i| {
            [
                ChatMessage::new("user", format!("What happened on day {i} at sea?")),
                ChatMessage::new(
                    "assistant",
                    "The waves were high and the nets came up empty.",
                ),
            ]
        })
        .chain([ChatMessage::new("user", "And then?")])
        .collect();
    let req = DialogueRequest::new(npc, PERSONA, conversation)
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(8);
    app.world_mut().write_message(req);
    // Until the engine has admitted it and run a few prefill steps.
    run_until(&mut app, LIMIT, |app| {
        let s = stats(app);
        s.engine_active == 1 && s.engine_steps >= 3
    });
    assert_eq!(tokens_of(&app, npc), 0, "still in prefill");
    app.world_mut().despawn(npc);
    settle(&mut app, baseline);
    let log = app.world().resource::<Log>();
    assert_eq!(tokens_of(&app, npc), 0);
    assert!(log.done.is_empty() && log.errors.is_empty());
    assert_eq!(stats(&app).cancelled, 1);
}

#[test]
fn a_thousand_short_requests_leave_nothing_behind() {
    let Some(model) = tiny_model() else { return };
    // Quantized activations: the fast path (exactness does not matter here).
    let mut plugin = ChordPlugin::new(model);
    plugin.options.precision = ActivationPrecision::Q8;
    let mut app = app(plugin);
    let baseline = warm_up(&mut app);
    let app_entities = app.world().entities().count_spawned();
    let (mut sent, mut despawned) = (0usize, 0usize);
    for wave in 0..20 {
        let npcs: Vec<_> = (0..50)
            .map(|_| app.world_mut().spawn_empty().id())
            .collect();
        for (i, &npc) in npcs.iter().enumerate() {
            let q = format!("Question {i} of wave {wave}?");
            app.world_mut()
                .write_message(request(npc, &q, 1 + (i + wave) % 2));
            sent += 1;
        }
        // One more NPC leaves before its request is even sent: it is never submitted.
        let early = app.world_mut().spawn_empty().id();
        app.world_mut().write_message(request(early, "Bye?", 2));
        app.world_mut().despawn(early);
        // Some NPCs leave while their request waits in the worker or is in prefill, some
        // while it decodes.
        app.update();
        for &n in npcs.iter().step_by(11) {
            app.world_mut().despawn(n);
            despawned += 1;
        }
        app.update();
        app.update();
        for &n in npcs.iter().skip(5).step_by(13) {
            if app.world_mut().get_entity(n).is_ok() {
                app.world_mut().despawn(n);
                despawned += 1;
            }
        }
        run_until(&mut app, LIMIT, |app| stats(app).in_flight == 0);
        for n in npcs {
            if app.world_mut().get_entity(n).is_ok() {
                app.world_mut().despawn(n);
            }
        }
    }
    settle(&mut app, baseline);
    assert_eq!(sent, 1000);
    let s = stats(&app);
    eprintln!("{s:?}");
    let log = app.world().resource::<Log>();
    assert!(
        log.errors.is_empty(),
        "{:?}",
        &log.errors[..log.errors.len().min(3)]
    );
    assert_eq!(s.failed, 0);
    assert_eq!(s.requests, sent as u64);
    assert_eq!(s.replies + s.cancelled, s.requests);
    assert!(s.replies > 800, "{} replies", s.replies);
    assert!(s.cancelled > 0 && despawned > 100);
    assert!(log.done.iter().all(|d| d.stats.n_generated <= 2));
    assert!(s.prefill_tokens_saved > 0, "the shared persona was reused");
    assert_eq!(app.world().entities().count_spawned(), app_entities);
}
