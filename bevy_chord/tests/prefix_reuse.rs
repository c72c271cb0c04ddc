//! The persona's K/V is computed once and reused by every NPC with it; greedy replies are the
//! same as plain, unshared runs of the same chat prompts.

mod common;

use std::time::Duration;

use bevy_chord::{
    ChatMessage, ChordPlugin, DialogueRequest, FinishReason, SamplingParams, SpeculateParams,
};
use chord_engine::{Engine, GenerateParams};
use common::{Log, app, run_until, stats, tiny_model};

const PERSONAS: [&str; 2] = [
    "You are Brom, a grumpy blacksmith in a small village. You speak briefly.",
    "You are Lia, a cheerful herbalist who loves riddles.",
];
const QUESTIONS: [&str; 8] = [
    "Where is the inn?",
    "Can you fix my sword?",
    "What is your name?",
    "Do you sell potions?",
    "Tell me a riddle.",
    "Is it going to rain?",
    "Who is the mayor?",
    "What do you fear?",
];
const N_TOKENS: usize = 12;

/// Prompt ids as the plugin builds them, the shareable prefix length, and the plain output.
fn reference(engine: &mut Engine, persona: &str, question: &str) -> (usize, Vec<u32>, String) {
    let system = ChatMessage::new("system", persona);
    let prompt = engine
        .render_chat(&[system.clone(), ChatMessage::new("user", question)])
        .unwrap();
    let ids = engine.tokenize(&prompt, false, true);
    let prefix = engine
        .tokenizer()
        .apply_chat_template(&[system], false)
        .unwrap();
    assert!(
        prompt.starts_with(&prefix),
        "the system turn starts the prompt"
    );
    let prefix_ids = engine.tokenize(&prefix, false, true);
    let shared = prefix_ids
        .iter()
        .zip(&ids)
        .take_while(|(a, b)| a == b)
        .count()
        .min(ids.len() - 1);
    let out = engine
        .generate_ids(ids, &GenerateParams::greedy(N_TOKENS))
        .unwrap();
    assert_eq!(out.stats.n_prefix_reused, 0);
    (shared, out.ids, out.text)
}

#[test]
fn persona_prefix_is_computed_once_and_changes_nothing() {
    let Some(model) = tiny_model() else { return };
    let mut engine = Engine::load(&model).unwrap();
    let mut app = app(ChordPlugin::new(model));
    // NPC i has persona i % 2: four NPCs share each persona.
    let npcs: Vec<_> = (0..8).map(|_| app.world_mut().spawn_empty().id()).collect();
    let expected: Vec<_> = QUESTIONS
        .iter()
        .enumerate()
        .map(|(i, q)| reference(&mut engine, PERSONAS[i % 2], q))
        .collect();
    drop(engine);

    for (i, (&npc, q)) in npcs.iter().zip(QUESTIONS).enumerate() {
        let mut req = DialogueRequest::ask(npc, PERSONAS[i % 2], None, q)
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(N_TOKENS);
        // Half of them speculate by prompt lookup: the replies must not change.
        if i % 4 >= 2 {
            req = req.with_speculation(SpeculateParams::lookup(4));
        }
        app.world_mut().write_message(req);
    }
    run_until(&mut app, Duration::from_secs(120), |app| {
        app.world().resource::<Log>().done.len() == npcs.len()
    });

    let log = app.world().resource::<Log>();
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    let mut saved = 0;
    for (i, (&npc, (shared, ids, text))) in npcs.iter().zip(&expected).enumerate() {
        let got: Vec<u32> = log
            .tokens
            .iter()
            .filter(|t| t.npc == npc)
            .map(|t| t.id)
            .collect();
        assert_eq!(
            &got, ids,
            "NPC {i}: greedy ids differ from the unshared run"
        );
        let done = log.done.iter().find(|d| d.npc == npc).unwrap();
        assert_eq!(&done.text, text, "NPC {i}: text differs");
        assert_ne!(done.reason, FinishReason::Cancelled);
        // The first NPC of each persona computes the prefix, the other three copy it.
        let reused = if i < 2 { 0 } else { *shared };
        assert!(
            *shared > 10,
            "the persona is a real prefix ({shared} tokens)"
        );
        assert_eq!(
            done.stats.n_prefix_reused, reused,
            "NPC {i}: prefill tokens saved"
        );
        saved += reused;
    }
    let s = stats(&app);
    assert_eq!(s.prefill_tokens_saved, saved as u64);
    assert_eq!(s.replies, 8);

    // The history holds the conversation and the reply; the next request reuses the prefix
    // at once (it is cached now) and carries the history into the prompt.
    let npc = npcs[0];
    let history = app
        .world()
        .get::<bevy_chord::DialogueHistory>(npc)
        .cloned()
        .expect("history inserted after the reply");
    assert_eq!(history.turns.len(), 2);
    assert_eq!(history.turns[0], ChatMessage::new("user", QUESTIONS[0]));
    assert_eq!(history.last_reply(), Some(expected[0].2.as_str()));
    let req = DialogueRequest::ask(npc, PERSONAS[0], Some(&history), "And the stables?")
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(4);
    app.world_mut().write_message(req);
    run_until(&mut app, Duration::from_secs(60), |app| {
        app.world().resource::<Log>().done.len() == npcs.len() + 1
    });
    let log = app.world().resource::<Log>();
    let last = log.done.last().unwrap();
    assert_eq!(last.npc, npc);
    assert_eq!(last.stats.n_prefix_reused, expected[0].0);
    assert!(
        last.stats.n_prompt > expected[0].0 + 10,
        "the history is in the prompt"
    );
    let history = app.world().get::<bevy_chord::DialogueHistory>(npc).unwrap();
    assert_eq!(history.turns.len(), 4);
}
