//! Eight NPCs in a village, each asking the model something on its own timer and printing the
//! reply as it streams in, while the frame loop keeps its pace.
//!
//! ```text
//! cargo run --release -p bevy_chord --example npc_dialogue -- [--model PATH] [--frames N]
//!     [--headless] [--fps F] [--max-tokens N]
//! ```
//!
//! `--frames N` stops after N frames (default: run until Ctrl-C). `--headless` prints the
//! replies on stderr and, at the end, one line of JSON statistics on stdout:
//! `{"frames", "max_frame_ms", "p99_frame_ms", "replies", "tokens", "prefill_tokens_saved", …}`.
//! The default model is SmolLM2-135M-Instruct Q4_1 (fetched into the cache on first use).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_app::{AppExit, PluginsState, TaskPoolPlugin};
use bevy_chord::{
    ChordPlugin, ChordStats, DialogueDone, DialogueError, DialogueHistory, DialogueRequest,
    SamplingParams, Speaking,
};
use bevy_diagnostic::FrameCountPlugin;
use bevy_ecs::prelude::*;
use bevy_time::{Time, TimePlugin, Timer, TimerMode};

/// Two personas, four NPCs each: each persona's K/V is computed once and shared.
const PERSONAS: [&str; 2] = [
    "You are a guard at the gate of the village of Oakvale. You are loyal, tired and \
     suspicious of strangers. Answer in one or two short sentences.",
    "You are a merchant in the market square of Oakvale. You are friendly, talkative and \
     always trying to sell something. Answer in one or two short sentences.",
];
const NAMES: [&str; 8] = [
    "Guard Brom",
    "Trader Lia",
    "Guard Tessa",
    "Trader Odo",
    "Guard Finn",
    "Trader Mara",
    "Guard Hal",
    "Trader Wren",
];
const QUESTIONS: [&str; 8] = [
    "What news from the road today?",
    "Have you seen anything strange lately?",
    "What should a traveller know about Oakvale?",
    "Who is the most important person in the village?",
    "What is the weather going to be like?",
    "Where can I find a good meal?",
    "What worries you most these days?",
    "Tell me something nobody else knows.",
];

struct Args {
    model: Option<PathBuf>,
    frames: Option<u64>,
    headless: bool,
    fps: f64,
    max_tokens: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model: None,
        frames: None,
        headless: false,
        fps: 60.0,
        max_tokens: 48,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--model" => args.model = Some(PathBuf::from(value("--model")?)),
            "--frames" => {
                let v = value("--frames")?;
                args.frames = Some(v.parse().map_err(|_| format!("bad --frames {v}"))?);
            }
            "--fps" => {
                let v = value("--fps")?;
                args.fps = v.parse().map_err(|_| format!("bad --fps {v}"))?;
            }
            "--max-tokens" => {
                let v = value("--max-tokens")?;
                args.max_tokens = v.parse().map_err(|_| format!("bad --max-tokens {v}"))?;
            }
            "--headless" => args.headless = true,
            "-h" | "--help" => {
                return Err(
                    "usage: npc_dialogue [--model PATH] [--frames N] [--headless] \
                            [--fps F (0 = unpaced)] [--max-tokens N]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[derive(Component)]
struct Npc {
    name: &'static str,
    persona: &'static str,
    timer: Timer,
    seed: u64,
    asked: usize,
}

#[derive(Resource)]
struct Settings {
    headless: bool,
    max_tokens: usize,
}

fn spawn_npcs(mut commands: Commands) {
    for (i, name) in NAMES.iter().enumerate() {
        commands.spawn(Npc {
            name,
            persona: PERSONAS[i % 2],
            // Staggered: the first questions come 0.3 s apart, then every 2-4 s.
            timer: Timer::from_seconds(0.3 * (i + 1) as f32, TimerMode::Once),
            seed: i as u64,
            asked: 0,
        });
    }
}

fn ask(
    time: Res<Time>,
    settings: Res<Settings>,
    stats: Res<ChordStats>,
    mut npcs: Query<(Entity, &mut Npc, Option<&DialogueHistory>), Without<Speaking>>,
    mut requests: MessageWriter<DialogueRequest>,
    mut exit: MessageWriter<AppExit>,
) {
    if let Some(e) = &stats.load_error {
        eprintln!("{e}");
        exit.write(AppExit::error());
        return;
    }
    if !stats.ready {
        return;
    }
    for (e, mut npc, history) in &mut npcs {
        npc.timer.tick(time.delta());
        if !npc.timer.is_finished() {
            continue;
        }
        let question = QUESTIONS[(npc.seed as usize + npc.asked) % QUESTIONS.len()];
        npc.asked += 1;
        let wait = 2.0 + (npc.seed % 4) as f32 * 0.5;
        npc.timer = Timer::from_seconds(wait, TimerMode::Once);
        // Keep the last exchange only: short prompts, fast prefill.
        let recent = history.map(|h| DialogueHistory {
            turns: h.turns[h.turns.len().saturating_sub(2)..].to_vec(),
        });
        let sampling = SamplingParams {
            temperature: 0.7,
            seed: npc.seed * 1000 + npc.asked as u64,
            ..Default::default()
        };
        requests.write(
            DialogueRequest::ask(e, npc.persona, recent.as_ref(), question)
                .with_sampling(sampling)
                .with_max_tokens(settings.max_tokens),
        );
        if !settings.headless {
            let _ = writeln!(std::io::stdout(), "> {} is asked: {question}", npc.name);
        }
    }
}

/// Prints each reply once its last token has streamed in (the tokens of eight NPCs arrive
/// interleaved; `DialogueDone` carries the assembled text).
fn show(
    settings: Res<Settings>,
    npcs: Query<&Npc>,
    mut done: MessageReader<DialogueDone>,
    mut errors: MessageReader<DialogueError>,
) {
    let name = |e: Entity| npcs.get(e).map(|n| n.name).unwrap_or("?");
    let mut out: Box<dyn Write> = if settings.headless {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    for d in done.read() {
        let _ = writeln!(
            out,
            "[{}] {} ({} tokens, {} of {} prompt tokens reused, {})",
            name(d.npc),
            d.text.trim(),
            d.stats.n_generated,
            d.stats.n_prefix_reused,
            d.stats.n_prompt,
            d.reason.as_str()
        );
    }
    for e in errors.read() {
        let _ = writeln!(out, "[{}] error: {}", name(e.npc), e.error);
    }
}

/// Runs the frames (paced to `fps`), timing each `update`; prints the JSON when headless.
fn runner(frames: Option<u64>, fps: f64, headless: bool) -> impl FnOnce(App) -> AppExit {
    move |mut app: App| {
        while app.plugins_state() == PluginsState::Adding {
            std::thread::yield_now();
        }
        app.finish();
        app.cleanup();
        let period = (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps));
        let start = Instant::now();
        let mut times = Vec::new();
        let mut next = Instant::now();
        let exit = loop {
            let t = Instant::now();
            app.update();
            times.push(t.elapsed().as_secs_f64());
            if let Some(exit) = app.should_exit() {
                break exit;
            }
            if frames.is_some_and(|n| times.len() as u64 >= n) {
                break AppExit::Success;
            }
            if let Some(p) = period {
                next += p;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        };
        if headless {
            let s = app.world().resource::<ChordStats>();
            let json = stats_json(&times, s, start.elapsed().as_secs_f64());
            let _ = writeln!(std::io::stdout(), "{json}");
        }
        exit
    }
}

fn stats_json(times: &[f64], s: &ChordStats, wall_s: f64) -> serde_json::Value {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(i).copied().unwrap_or(0.0) * 1e3
    };
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    serde_json::json!({
        "frames": times.len(),
        "max_frame_ms": pct(1.0),
        "p99_frame_ms": pct(0.99),
        "mean_frame_ms": mean * 1e3,
        "replies": s.replies,
        "tokens": s.tokens,
        "prefill_tokens_saved": s.prefill_tokens_saved,
        "prompt_tokens": s.prompt_tokens,
        "requests": s.requests,
        "engine_steps": s.engine_steps,
        "mean_step_ms": s.mean_step_s() * 1e3,
        "max_step_ms": s.engine_step_s_max * 1e3,
        "wall_s": wall_s,
        "load_error": s.load_error,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let model = match args.model {
        Some(m) => m,
        None => match chord_engine::models::default_model(|m| eprintln!("{m}")) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let exit = App::new()
        // MinimalPlugins, with a runner that times every frame.
        .add_plugins((
            TaskPoolPlugin::default(),
            FrameCountPlugin,
            TimePlugin,
            ChordPlugin::new(model),
        ))
        .insert_resource(Settings {
            headless: args.headless,
            max_tokens: args.max_tokens,
        })
        .add_systems(Startup, spawn_npcs)
        .add_systems(Update, (ask, show))
        .set_runner(runner(args.frames, args.fps, args.headless))
        .run();
    match exit {
        AppExit::Success => ExitCode::SUCCESS,
        AppExit::Error(_) => ExitCode::FAILURE,
    }
}
