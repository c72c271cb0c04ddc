//! The `chord` command lines and JSON shapes other tooling relies on.

use std::process::Command;

use chord_resources::paths::{fixtures_dir, models_dir};
use serde_json::Value;

fn chord() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chord"))
}

fn tiny() -> Option<std::path::PathBuf> {
    let p = models_dir().join("derived/tiny-smollm2-4L-q8_0.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skip: {} not present", p.display());
        None
    }
}

fn json_out(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("run chord");
    assert!(
        out.status.success(),
        "chord failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn info_json_describes_the_model() {
    let Some(m) = tiny() else { return };
    let v = json_out(chord().arg("info").arg(&m).arg("--json"));
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["hyperparameters"]["n_layer"], 4);
    assert_eq!(v["hyperparameters"]["n_embd"], 576);
    assert_eq!(v["tokenizer"]["model"], "gpt2");
    let embd = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .unwrap();
    assert_eq!(embd["shape"], serde_json::json!([576, 49152]));
}

#[test]
fn tokenize_matches_the_fixture_ids() {
    let Some(m) = tiny() else { return };
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("tokenizer/SmolLM2-135M-Instruct.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for case in fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["text"].is_string())
        .take(12)
    {
        let f = dir.path().join("t.txt");
        std::fs::write(&f, case["text"].as_str().unwrap()).unwrap();
        let plain = json_out(
            chord()
                .args(["tokenize", "--model"])
                .arg(&m)
                .arg("--file")
                .arg(&f),
        );
        assert_eq!(plain, case["ids_plain"], "case {}", case["id"]);
        let special = json_out(
            chord()
                .args(["tokenize", "--add-special", "--parse-special", "--model"])
                .arg(&m)
                .arg("--file")
                .arg(&f),
        );
        assert_eq!(special, case["ids_special"], "case {}", case["id"]);
    }
}

#[test]
fn generate_json_and_score_shapes() {
    let Some(m) = tiny() else { return };
    let v = json_out(
        chord()
            .args([
                "generate",
                "--prompt",
                "Once upon a time",
                "-n",
                "5",
                "--temp",
                "0",
                "--json",
                "--model",
            ])
            .arg(&m),
    );
    for key in ["prompt_ids", "ids", "text", "prefill_tok_s", "decode_tok_s"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["ids"].as_array().unwrap().len(), 5);

    // Teacher-forced: the top-1 after the prompt must be the first greedy token.
    let mut ids: Vec<Value> = v["prompt_ids"].as_array().unwrap().clone();
    ids.extend(v["ids"].as_array().unwrap().iter().cloned());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ids.json");
    std::fs::write(&f, serde_json::to_string(&ids).unwrap()).unwrap();
    let s = json_out(
        chord()
            .args(["score", "--top-k", "3", "--model"])
            .arg(&m)
            .arg("--ids-file")
            .arg(&f),
    );
    let rows = s.as_array().unwrap();
    assert_eq!(rows.len(), ids.len());
    assert!(rows.iter().all(|r| r.as_array().unwrap().len() == 3));
    let n_prompt = v["prompt_ids"].as_array().unwrap().len();
    for k in 0..5 {
        assert_eq!(rows[n_prompt - 1 + k][0][0], v["ids"][k], "position {k}");
        let (a, b) = (
            rows[n_prompt - 1 + k][0][1].as_f64().unwrap(),
            rows[n_prompt - 1 + k][1][1].as_f64().unwrap(),
        );
        assert!(a >= b, "highest first");
    }
}

#[test]
fn errors_are_clear_and_exit_nonzero() {
    let out = chord()
        .args(["generate", "--model", "/nonexistent.gguf", "--prompt", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read model"));
    let Some(m) = tiny() else { return };
    let out = chord()
        .args(["generate", "-n", "0", "--prompt", "x", "--model"])
        .arg(&m)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
    let out = chord()
        .args(["generate", "--top-p", "7", "--prompt", "x", "--model"])
        .arg(&m)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_p"));
    assert!(!out.status.success());
}
