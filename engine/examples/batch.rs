//! Generate for several prompts at once: each is an entity, all advance in the same steps.
//!
//! `cargo run --release --example batch -- [MODEL]`

use chord_engine::{Engine, GenerateParams, models};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = match std::env::args().nth(1) {
        Some(p) => p.into(),
        None => models::default_model(|m| eprintln!("{m}"))?,
    };
    let mut engine = Engine::load(model)?;
    let prompts = [
        "The capital of France is",
        "Rust is a language that",
        "Once upon a time",
        "def fibonacci(n):",
    ];
    let requests: Vec<_> = prompts
        .iter()
        .map(|p| (*p, GenerateParams::greedy(32)))
        .collect();
    let t = std::time::Instant::now();
    let outputs = engine.generate_batch(&requests)?;
    let total: usize = outputs.iter().map(|o| o.ids.len()).sum();
    for (p, o) in prompts.iter().zip(&outputs) {
        println!("--- {p}{}\n", o.text);
    }
    eprintln!(
        "{total} tokens for {} prompts in {:.2} s",
        prompts.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
