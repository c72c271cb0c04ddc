//! The models' embedded chat templates, rendered for the chat prompts of
//! `fixtures/models/*.json` (made with jinja2, `add_generation_prompt=True`), must give the
//! fixture's prompt text, and that text tokenized with `parse_special` must give exactly
//! the fixture's `prompt_ids`.

use std::path::PathBuf;

use chord_resources::gguf::GgufFile;
use chord_resources::paths;
use chord_resources::tokenizer::{ChatMessage, Tokenizer, render_chat_template};
use serde_json::Value;

#[test]
fn chat_prompts_render_and_tokenize_like_the_fixtures() {
    let dir = paths::fixtures_dir().join("models");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();

    let mut checked = 0;
    let mut plain_checked = 0;
    let mut templates_seen = Vec::new();
    for fixture in files {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(&fixture).expect("read")).expect("JSON");
        let name = fixture.file_stem().unwrap().to_string_lossy().into_owned();
        let prompts: Vec<&Value> = doc["prompts"]
            .as_array()
            .map(|ps| ps.iter().collect())
            .unwrap_or_default();
        if prompts.is_empty() {
            continue;
        }
        let path = paths::models_dir().join(doc["file"].as_str().expect("file"));
        if !path.exists() {
            println!("{name}: SKIPPED, {} not found", path.display());
            continue;
        }
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tok = Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
        for p in &prompts {
            // every prompt (plain or chat) was tokenized with add_special and parse_special
            let want: Vec<u32> = p["prompt_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                tok.encode(p["text"].as_str().unwrap(), true, true),
                want,
                "{name} / {}",
                p["name"]
            );
            plain_checked += 1;
        }
        let chats: Vec<&&Value> = prompts.iter().filter(|p| !p["chat"].is_null()).collect();
        if chats.is_empty() {
            continue;
        }
        let template = tok
            .chat_template()
            .unwrap_or_else(|| panic!("{name}: no chat template"));
        for p in chats {
            let messages: Vec<ChatMessage> = p["chat"]
                .as_array()
                .expect("chat messages")
                .iter()
                .map(|m| {
                    ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap())
                })
                .collect();
            let rendered = tok
                .apply_chat_template(&messages, true)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                rendered,
                p["text"].as_str().unwrap(),
                "{name} / {}: rendered prompt",
                p["name"]
            );
            let want: Vec<u32> = p["prompt_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                tok.encode(&rendered, true, true),
                want,
                "{name} / {}: prompt ids",
                p["name"]
            );
            println!("{name} / {}: {} tokens match", p["name"], want.len());
            checked += 1;
        }
        if !templates_seen.contains(&template.to_string()) {
            templates_seen.push(template.to_string());
        }
    }
    println!("{plain_checked} prompts tokenized like the fixtures");
    println!(
        "{checked} chat prompts checked, {} distinct templates",
        templates_seen.len()
    );
}

#[test]
fn smollm_template_without_generation_prompt() {
    let path = paths::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        println!("SKIPPED: {} not found", path.display());
        return;
    }
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let template = tok.chat_template().unwrap();
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
    ];
    let s = render_chat_template(template, &messages, false, "", "").unwrap();
    assert_eq!(
        s,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    );
    let ids = tok.encode(&s, true, true);
    assert_eq!(
        ids.iter()
            .filter(|&&id| id == tok.token_id(b"<|im_start|>").unwrap())
            .count(),
        3
    );
    assert!(tok.is_eog(tok.token_id(b"<|im_end|>").unwrap()));
}
