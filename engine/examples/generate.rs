//! Generate text from a prompt, streaming tokens as they come.
//!
//! `cargo run --release --example generate -- [MODEL] [PROMPT]` (default model fetched on first use).

use std::io::Write;

use chord_engine::{Engine, Event, GenerateParams, models};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = match args.next() {
        Some(p) => p.into(),
        None => models::default_model(|m| eprintln!("{m}"))?,
    };
    let prompt = args
        .next()
        .unwrap_or_else(|| "Once upon a time".to_string());
    let mut engine = Engine::load(model)?;
    print!("{prompt}");
    for event in engine.stream(&prompt, &GenerateParams::greedy(64))? {
        match event {
            Event::Token { text, .. } => {
                print!("{text}");
                std::io::stdout().flush()?;
            }
            Event::Done { reason, stats } => {
                println!();
                eprintln!(
                    "[{} tokens, {:.1} tok/s, {}]",
                    stats.n_generated,
                    stats.decode_tok_s(),
                    reason.as_str()
                );
            }
            Event::Logits { .. } => {}
        }
    }
    Ok(())
}
