//! Replays every input in `tests/fuzz_regressions/tokenizer/` (found by the `tokenizer`
//! fuzz target) through the fuzz target's checks (`tokenizer_support/check.rs`), and runs
//! those checks on a few hand-written inputs. Vocabulary files that are not on disk are
//! skipped with a note.
//!
//! Setting `CHORD_WRITE_FUZZ_SEEDS=<dir>` also writes a seed corpus there (used for
//! `fuzz/corpus/tokenizer`): llama.cpp's vocabulary test texts for each vocabulary and
//! the chat templates of the models on disk.

#[path = "tokenizer_support/check.rs"]
mod support;

use std::path::PathBuf;

use chord_resources::gguf::GgufFile;
use chord_resources::paths;
use chord_resources::tokenizer::Tokenizer;

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/tokenizer")
}

/// Runs `f` on a thread with the stack of a fuzzer's main thread (test threads get 2 MiB).
fn with_big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn available() -> Vec<usize> {
    (0..support::VOCABS.len())
        .filter(|&i| support::vocab(i).is_some())
        .collect()
}

#[test]
fn replay_fuzz_regressions() {
    with_big_stack(|| {
        let dir = regressions_dir();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("tests/fuzz_regressions/tokenizer exists")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
            .collect();
        files.sort();
        for path in &files {
            let data = std::fs::read(path).expect("read regression input");
            let sel = data.first().copied().unwrap_or(0);
            if sel & 7 < 6 && support::vocab(usize::from(sel & 7)).is_none() {
                println!(
                    "{}: SKIPPED, {} not found",
                    path.display(),
                    support::vocab_path(usize::from(sel & 7)).display()
                );
                continue;
            }
            println!("replaying {} ({} bytes)", path.display(), data.len());
            support::check(&data);
        }
        println!("{} regression inputs", files.len());
    });
}

#[test]
fn checks_accept_plain_inputs() {
    with_big_stack(|| {
        let texts: [&[u8]; 9] = [
            b"",
            b"Hello world",
            b" Hello  world\n\n\tfoo ",
            "Grüße, 世界! 🦙 ünïcödé".as_bytes(),
            b"<s>hi</s> <|im_start|>user<|im_end|>",
            b"\xff\xfe invalid \xe2\x82 utf-8 \xc0",
            b"don't  . , ! ? 're 's",
            b"    indented\r\n\x00\x01 control",
            "ab\u{2581}cd".as_bytes(),
        ];
        let vocabs = available();
        if vocabs.is_empty() {
            println!("SKIPPED: no vocabulary file found");
        }
        for &i in &vocabs {
            for t in texts {
                for flags in [0u8, 8] {
                    let mut data = vec![i as u8 | flags];
                    data.extend_from_slice(t);
                    support::check(&data);
                    // the same bytes as token ids
                    data[0] |= 0x30;
                    support::check(&data);
                }
            }
            println!("{}: ok", support::VOCABS[i]);
        }
        for t in [
            &b"{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"[..],
            b"{{ raise_exception('no') }}",
            b"{% for",
            b"{{ messages[0].content.strip().split(' ') | tojson }}",
        ] {
            for sel in [6u8, 7 | 8 | 0x30 | 0x40] {
                let mut data = vec![sel];
                data.extend_from_slice(t);
                support::check(&data);
            }
        }
    });
}

/// Chat templates that would run for a very long time or use unbounded memory must fail
/// (minijinja fuel) instead.
#[test]
fn runaway_chat_templates_fail() {
    use chord_resources::tokenizer::{ChatMessage, TokenizerError, render_chat_template};
    with_big_stack(|| {
        let msgs = [ChatMessage::new("user", "hi")];
        for t in [
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            "{% for a in range(100000) %}{% set x = 'y' * 50000000 %}{% endfor %}",
            "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        ] {
            let start = std::time::Instant::now();
            let r = render_chat_template(t, &msgs, false, "", "");
            assert!(
                matches!(r, Err(TokenizerError::Template(_))),
                "{t}: expected an error, got {:?}",
                r.map(|s| s.len())
            );
            assert!(
                start.elapsed().as_secs() < 20,
                "{t}: took {:?}",
                start.elapsed()
            );
        }
    });
}

#[test]
fn write_seed_corpus() {
    let Some(dir) = std::env::var_os("CHORD_WRITE_FUZZ_SEEDS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("seed dir");
    let mut n = 0;
    let mut write = |data: Vec<u8>| {
        std::fs::write(dir.join(format!("seed-{n:04}")), data).expect("write seed");
        n += 1;
    };
    for i in 0..support::VOCABS.len() {
        let inp = if support::VOCABS[i].starts_with("ggml-vocab-") {
            support::vocab_path(i).with_extension("gguf.inp")
        } else {
            // the llama-bpe texts are the most varied
            support::vocab_path(3).with_extension("gguf.inp")
        };
        let Ok(text) = std::fs::read(&inp) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        for (k, case) in text.split("\n__ggml_vocab_test__\n").enumerate() {
            let mut data = vec![i as u8 | if k % 3 == 0 { 8 } else { 0 }];
            data.extend_from_slice(case.as_bytes());
            write(data);
        }
    }
    for file in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
    ] {
        let path = paths::models_dir().join(file);
        let Ok(f) = GgufFile::open(&path) else {
            continue;
        };
        let Ok(tok) = Tokenizer::from_gguf(&f) else {
            continue;
        };
        if let Some(t) = tok.chat_template() {
            for sel in [6u8, 7 | 8 | 0x30] {
                let mut data = vec![sel];
                data.extend_from_slice(t.as_bytes());
                write(data);
            }
        }
    }
    println!("{n} seeds written to {}", dir.display());
}
