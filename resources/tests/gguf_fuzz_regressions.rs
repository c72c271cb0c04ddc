//! Replays every input in `tests/fuzz_regressions/` (crashes found by the
//! `gguf_reader` fuzz target) through the fuzz target's checks.
//!
//! Setting `CHORD_WRITE_FUZZ_SEEDS=<dir>` also writes a seed corpus of small
//! valid files there (used for `fuzz/corpus/gguf_reader`).

#[path = "gguf_support/check.rs"]
mod support;

use std::path::PathBuf;

use chord_resources::GgmlType;
use chord_resources::gguf::{GgufWriter, Value, ValueType};

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions")
}

/// Small valid files covering the format's features.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .expect("md");
    out.push(w.to_bytes().expect("write"));
    w.add_metadata("llama.block_count", Value::U32(2))
        .expect("md");
    w.add_metadata("f", Value::F32(1.5)).expect("md");
    w.add_metadata("b", Value::Bool(true)).expect("md");
    w.add_metadata("i", Value::I64(-3)).expect("md");
    let toks = ["a", "b", "<s>"]
        .iter()
        .map(|s| Value::String((*s).into()))
        .collect();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(ValueType::String, toks),
    )
    .expect("md");
    let nested = Value::Array(
        ValueType::Array,
        vec![
            Value::Array(ValueType::U16, vec![Value::U16(1)]),
            Value::Array(ValueType::I8, vec![]),
        ],
    );
    w.add_metadata("nested", nested).expect("md");
    out.push(w.to_bytes().expect("write"));
    w.add_tensor("f32", &[4, 2], GgmlType::F32, vec![1u8; 32])
        .expect("t");
    w.add_tensor("q8", &[32], GgmlType::Q8_0, vec![2u8; 34])
        .expect("t");
    out.push(w.to_bytes().expect("write"));
    w.set_alignment(8).expect("alignment");
    w.add_tensor("q4k", &[256], GgmlType::Q4K, vec![3u8; 144])
        .expect("t");
    out.push(w.to_bytes().expect("write"));
    out
}

#[test]
fn checker_accepts_valid_files() {
    for (i, seed) in seeds().iter().enumerate() {
        assert!(support::check(seed), "seed {i} rejected");
        // A cut in the middle must be rejected without tripping the checks.
        assert!(
            !support::check(&seed[..seed.len() / 2]),
            "half of seed {i} accepted"
        );
    }
    if let Some(dir) = std::env::var_os("CHORD_WRITE_FUZZ_SEEDS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (i, seed) in seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}.gguf")), seed).expect("write seed");
        }
    }
}

#[test]
fn replay_fuzz_regressions() {
    let dir = regressions_dir();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz_regressions exists") {
        let path = entry.expect("dir entry").path();
        if !path.is_file() || path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let data = std::fs::read(&path).expect("read regression input");
        eprintln!("replaying {} ({} bytes)", path.display(), data.len());
        support::check(&data);
        n += 1;
    }
    eprintln!("{n} regression inputs replayed");
}
