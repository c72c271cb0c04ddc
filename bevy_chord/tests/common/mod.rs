//! Shared test helpers: the tiny model, an app with the plugin, a log of dialogue messages.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_chord::{
    ChordPlugin, ChordStats, DialogueDone, DialogueError, DialogueRequest, DialogueToken,
};
use bevy_ecs::prelude::*;
use chord_resources::paths::models_dir;

/// The 4-layer SmolLM2 (fast; its text is gibberish but deterministic), if present.
pub fn tiny_model() -> Option<PathBuf> {
    let p = models_dir().join("derived/tiny-smollm2-4L-q8_0.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skip: {} not present", p.display());
        None
    }
}

/// Every dialogue message the app saw, in order.
#[derive(Resource, Default, Debug)]
pub struct Log {
    pub tokens: Vec<DialogueToken>,
    pub done: Vec<DialogueDone>,
    pub errors: Vec<DialogueError>,
}

fn record(
    mut log: ResMut<Log>,
    mut tokens: MessageReader<DialogueToken>,
    mut done: MessageReader<DialogueDone>,
    mut errors: MessageReader<DialogueError>,
) {
    log.tokens.extend(tokens.read().cloned());
    log.done.extend(done.read().cloned());
    log.errors.extend(errors.read().cloned());
}

/// An app with the plugin and the log, the model loaded.
pub fn app(plugin: ChordPlugin) -> App {
    let mut app = App::new();
    app.add_plugins(plugin)
        .init_resource::<Log>()
        .add_systems(Update, record);
    run_until(&mut app, Duration::from_secs(60), |app| {
        let s = app.world().resource::<ChordStats>();
        assert_eq!(s.load_error, None, "model failed to load");
        s.ready
    });
    app
}

/// Entities in the engine's world when idle, after one request has warmed it up (the first
/// step adds one of the engine's own).
pub fn warm_up(app: &mut App) -> u32 {
    let npc = app.world_mut().spawn_empty().id();
    let req = DialogueRequest::ask(npc, "Warm-up.", None, "Hi").with_max_tokens(1);
    app.world_mut().write_message(req);
    run_until(app, Duration::from_secs(60), |app| {
        let s = app.world().resource::<ChordStats>();
        s.replies == 1 && s.idle
    });
    app.world_mut().despawn(npc);
    let mut log = app.world_mut().resource_mut::<Log>();
    *log = Log::default();
    let mut s = app.world_mut().resource_mut::<ChordStats>();
    let entities = s.engine_entities;
    // Count from zero again.
    *s = ChordStats {
        ready: s.ready,
        n_ctx: s.n_ctx,
        engine_entities: s.engine_entities,
        ..Default::default()
    };
    entities
}

/// Update the app (1 ms apart) until `done` holds; panics after `limit` (a hang, not a timing).
pub fn run_until(app: &mut App, limit: Duration, mut done: impl FnMut(&mut App) -> bool) -> usize {
    let start = Instant::now();
    let mut frames = 0;
    loop {
        app.update();
        frames += 1;
        if done(app) {
            return frames;
        }
        assert!(
            start.elapsed() < limit,
            "gave up after {limit:?}: {:?}",
            app.world().resource::<ChordStats>()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn stats(app: &App) -> ChordStats {
    app.world().resource::<ChordStats>().clone()
}
