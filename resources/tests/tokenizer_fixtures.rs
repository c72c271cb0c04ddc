//! Token ids must equal llama.cpp's, case for case.
//!
//! * `fixtures/tokenizer/*.json`: cases tokenized by llama.cpp with
//!   `(add_special=false, parse_special=false)` and `(true, true)`; raw-byte cases
//!   (`text = null`) go through `encode_bytes`.
//! * llama.cpp's own `models/ggml-vocab-*.gguf.inp/.out` pairs (`add_special=false`,
//!   `parse_special=false`), for every vocabulary the tokenizer supports.
//!
//! A vocabulary file that is not on disk is skipped with a note, not failed.

use std::path::{Path, PathBuf};

use chord_resources::gguf::GgufFile;
use chord_resources::paths;
use chord_resources::tokenizer::{Tokenizer, TokenizerError};
use serde_json::Value;

/// Where a fixture's `file` lives: `$CHORD_REF/...` under the llama.cpp reference kit,
/// anything else in the models directory.
fn locate(file: &str) -> PathBuf {
    if let Some(rest) = file.strip_prefix("$CHORD_REF/") {
        paths::llama_ref_dir().join(rest)
    } else {
        paths::models_dir().join(file)
    }
}

fn load(path: &Path) -> Result<Tokenizer, String> {
    let f = GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Tokenizer::from_gguf(&f).map_err(|e| format!("{}: {e}", path.display()))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digit"))
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn tokenizer_fixtures_match_llama_cpp() {
    let dir = paths::fixtures_dir().join("tokenizer");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());

    let mut failures = Vec::new();
    let mut checked_vocabs = 0;
    for fixture in files {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(&fixture).expect("read fixture"))
                .expect("fixture JSON");
        let vocab = doc["vocab"].as_str().expect("vocab");
        let path = locate(doc["file"].as_str().expect("file"));
        if !path.exists() {
            println!("{vocab}: SKIPPED, {} not found", path.display());
            continue;
        }
        let tok = load(&path).unwrap_or_else(|e| panic!("{vocab}: {e}"));
        assert_eq!(
            tok.model(),
            doc["tokenizer_model"].as_str().unwrap(),
            "{vocab}: model"
        );
        assert_eq!(
            tok.add_bos(),
            doc["add_bos"].as_bool().unwrap(),
            "{vocab}: add_bos"
        );
        assert_eq!(
            tok.add_eos(),
            doc["add_eos"].as_bool().unwrap(),
            "{vocab}: add_eos"
        );
        assert_eq!(
            tok.n_vocab() as u64,
            doc["n_vocab"].as_u64().unwrap(),
            "{vocab}: n_vocab"
        );

        let cases = doc["cases"].as_array().expect("cases");
        let mut passed = 0;
        for case in cases {
            let text = match case["text"].as_str() {
                Some(t) => t.as_bytes().to_vec(),
                None => hex(case["text_hex"].as_str().expect("text_hex")),
            };
            let plain = tok.encode_bytes(&text, false, false);
            let special = tok.encode_bytes(&text, true, true);
            if let Some(t) = case["text"].as_str() {
                assert_eq!(
                    tok.encode(t, false, false),
                    plain,
                    "encode and encode_bytes differ"
                );
            }
            let (want_plain, want_special) = (ids(&case["ids_plain"]), ids(&case["ids_special"]));
            if plain == want_plain && special == want_special {
                passed += 1;
            } else {
                failures.push(format!(
                    "{vocab} case {} ({}) {:?}:\n  plain   got {plain:?}\n          want {want_plain:?}\n  special got {special:?}\n          want {want_special:?}",
                    case["id"],
                    case["category"].as_str().unwrap_or(""),
                    String::from_utf8_lossy(&text),
                ));
            }
        }
        println!("{vocab}: {passed}/{} cases match", cases.len());
        checked_vocabs += 1;
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{checked_vocabs} vocabularies checked");
}

/// llama.cpp's `read_tests` from tests/test-tokenizer-0.cpp: inputs separated by
/// `\n__ggml_vocab_test__\n`, outputs one line each.
fn read_upstream(inp: &[u8], out: &str) -> Vec<(Vec<u8>, Vec<u32>)> {
    const SEP: &[u8] = b"\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].windows(SEP.len()).position(|w| w == SEP) {
            Some(n) => {
                inputs.push(inp[pos..pos + n].to_vec());
                pos += n + SEP.len();
            }
            None => {
                inputs.push(inp[pos..].to_vec());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "input and output counts differ"
    );
    inputs.into_iter().zip(outputs).collect()
}

#[test]
fn upstream_vocab_tests_match() {
    let dir = paths::llama_ref_dir().join("llama.cpp-src/models");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("SKIPPED: {} not found", dir.display());
        return;
    };
    let mut vocabs: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".gguf"))
        .filter(|p| {
            p.with_file_name(format!("{}.inp", p.file_name().unwrap().to_string_lossy()))
                .exists()
        })
        .collect();
    vocabs.sort();

    let mut failures = Vec::new();
    let mut checked = 0;
    for path in vocabs {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tok = match Tokenizer::from_gguf(&f) {
            Ok(t) => t,
            Err(
                e @ (TokenizerError::UnsupportedModel(_)
                | TokenizerError::UnsupportedPreTokenizer(_)),
            ) => {
                println!("{name}: not supported ({e}), skipped");
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        let inp = std::fs::read(path.with_file_name(format!("{name}.inp"))).expect("read .inp");
        let out =
            std::fs::read_to_string(path.with_file_name(format!("{name}.out"))).expect("read .out");
        let tests = read_upstream(&inp, &out);
        let mut passed = 0;
        for (text, want) in &tests {
            let got = tok.encode_bytes(text, false, false);
            if &got == want {
                passed += 1;
            } else {
                failures.push(format!(
                    "{name} {:?}:\n  got  {got:?}\n  want {want:?}",
                    String::from_utf8_lossy(text)
                ));
            }
        }
        println!("{name}: {passed}/{} cases match", tests.len());
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{checked} upstream vocabularies checked");
}

#[test]
fn tokenizes_the_perplexity_text_quickly() {
    let text_path = paths::fixtures_dir().join("ppl-public.txt");
    let Ok(text) = std::fs::read_to_string(&text_path) else {
        println!("SKIPPED: {} not found", text_path.display());
        return;
    };
    let big = text.repeat(16);
    // llama-perplexity's token counts (add_special=true, parse_special=false)
    let ppl_token_counts: Vec<(String, u64)> =
        std::fs::read_to_string(paths::fixtures_dir().join("perplexity.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|d| d["results"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Some((r["file"].as_str()?.to_string(), r["n_tokens"].as_u64()?)))
            .collect();
    for model in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
    ] {
        let path = paths::models_dir().join(model);
        if !path.exists() {
            println!("{model}: SKIPPED, not found");
            continue;
        }
        let t0 = std::time::Instant::now();
        let tok = load(&path).unwrap();
        let t_load = t0.elapsed();
        let t0 = std::time::Instant::now();
        let ids = tok.encode(&text, true, false);
        let t_text = t0.elapsed();
        let t0 = std::time::Instant::now();
        let big_ids = tok.encode(&big, true, false);
        let t_big = t0.elapsed();
        println!(
            "{model}: load {t_load:?}; {} bytes -> {} tokens in {t_text:?}; {} bytes -> {} tokens in {t_big:?}",
            text.len(),
            ids.len(),
            big.len(),
            big_ids.len()
        );
        assert!(
            t_text.as_secs_f64() < 1.0,
            "{model}: {t_text:?} for the perplexity text"
        );
        assert!(ids.len() > text.len() / 8 && ids.len() < text.len());
        if let Some((_, n)) = ppl_token_counts.iter().find(|(f, _)| f == model) {
            assert_eq!(
                ids.len() as u64,
                *n,
                "{model}: token count of the perplexity text"
            );
            println!("{model}: {n} tokens, as llama-perplexity counted");
        }
        // the text round-trips (no BOS piece, the first piece keeps or drops the space prefix)
        let plain = tok.encode(&text, false, false);
        assert_eq!(tok.decode(&plain), text, "{model}: decode(encode(text))");
    }
}

/// Differential check against a dump of the llama.cpp reference driver
/// (`ref tok VOCAB ADD_SPECIAL PARSE_SPECIAL FILE...`): set `CHORD_TOK_CASES` to a JSON list
/// of `{vocab, add_special, parse_special, text_hex, ids}`.
#[test]
#[ignore = "needs a case dump from the reference driver (CHORD_TOK_CASES)"]
fn reference_driver_dump_matches() {
    let Some(file) = std::env::var_os("CHORD_TOK_CASES") else {
        println!("SKIPPED: CHORD_TOK_CASES not set");
        return;
    };
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("read cases")).expect("JSON");
    let mut tokenizers: std::collections::HashMap<String, Tokenizer> =
        std::collections::HashMap::new();
    let mut failures = Vec::new();
    let cases = cases.as_array().expect("case list");
    for case in cases {
        let vocab = case["vocab"].as_str().unwrap();
        if !tokenizers.contains_key(vocab) {
            tokenizers.insert(vocab.to_string(), load(Path::new(vocab)).unwrap());
        }
        let tok = &tokenizers[vocab];
        let text = hex(case["text_hex"].as_str().unwrap());
        let (a, p) = (
            case["add_special"].as_bool().unwrap(),
            case["parse_special"].as_bool().unwrap(),
        );
        let got = tok.encode_bytes(&text, a, p);
        let want = ids(&case["ids"]);
        // pieces as `llama_token_to_piece(id, lstrip = 0, special = true)`
        if let Some(pieces) = case["pieces_hex"].as_array() {
            for (&id, piece) in want.iter().zip(pieces) {
                let want_piece = hex(piece.as_str().unwrap());
                if tok.token_to_piece(id, true) != want_piece {
                    failures.push(format!(
                        "{vocab}: piece of {id}: got {:?} want {want_piece:?}",
                        tok.token_to_piece(id, true)
                    ));
                }
            }
        }
        if got != want {
            failures.push(format!(
                "{vocab} ({a},{p}) {:?}\n  got  {got:?}\n  want {want:?}",
                String::from_utf8_lossy(&text)
            ));
        }
    }
    println!(
        "{} of {} cases match",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
