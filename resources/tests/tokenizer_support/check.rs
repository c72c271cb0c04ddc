//! The tokenizer checks shared by the `tokenizer` fuzz target
//! (`fuzz/fuzz_targets/tokenizer.rs`) and the regression replay test
//! (`resources/tests/tokenizer_fuzz_regressions.rs`).
//!
//! Input layout: the first byte selects what runs, the rest is the payload.
//!
//! * `sel & 7` in `0..=5`: a vocabulary (see [`VOCABS`]); `sel & 7` in `6..=7`: a chat
//!   template.
//! * vocabulary, `(sel >> 4) & 3 == 3`: the payload is a list of little-endian `u24` token
//!   ids (out of range ones included), decoded every way there is.
//! * vocabulary, otherwise: the payload is text. `encode_bytes` runs with all four
//!   `(add_special, parse_special)` combinations; every id must be in range and each id
//!   list must decode the same through [`StreamDecoder`] (fed one id at a time) as through
//!   `decode` / `detokenize`. For valid UTF-8 without special-token text, the llama.cpp
//!   round trip of the vocabulary's kind is checked (see [`check_round_trip`]), and the
//!   one with special tokens parsed and rendered (see [`check_special_round_trip`]).
//! * `sel & 8` picks `special = true` for the decoders.
//! * chat template: the payload (lossy UTF-8) is the template, rendered for a small
//!   conversation; it must return `Ok` or `Err` (never panic, never run away: minijinja's
//!   fuel limit, set by the library, bounds it).
//!
//! A vocabulary whose file is missing is skipped (see [`vocab`]).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use chord_resources::gguf::GgufFile;
use chord_resources::paths;
use chord_resources::tokenizer::{
    ChatMessage, StreamDecoder, Tokenizer, attr, render_chat_template,
};

/// Vocabularies by selector: `(name, where)`; `where` is relative to the llama.cpp
/// reference kit's `models/` for `ggml-vocab-*` files, else to the models directory.
pub const VOCABS: [&str; 6] = [
    "ggml-vocab-llama-spm.gguf",
    "ggml-vocab-phi-3.gguf",
    "ggml-vocab-qwen2.gguf",
    "ggml-vocab-llama-bpe.gguf",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m-q4_k_m.gguf",
];

pub fn vocab_path(i: usize) -> PathBuf {
    let file = VOCABS[i];
    if file.starts_with("ggml-vocab-") {
        paths::llama_ref_dir()
            .join("llama.cpp-src/models")
            .join(file)
    } else {
        paths::models_dir().join(file)
    }
}

/// A loaded vocabulary and the texts that exclude an input from the round-trip check.
pub struct Loaded {
    pub name: &'static str,
    pub tok: Tokenizer,
    /// texts of all tokens that are not plain `NORMAL` ones (control, user-defined,
    /// unknown, unused, byte tokens), to find in raw or model-side (escaped) text
    non_normal: Trie,
    /// the same for `parse_special = true`: the tokens that are not split out of the text
    /// cleanly (see [`splits_cleanly`]) and are not plain `NORMAL` ones
    unsplittable: Trie,
    /// bytes that have no token of their own
    missing_bytes: [bool; 256],
}

static LOADED: [OnceLock<Option<Loaded>>; 6] = [
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
];

/// Vocabulary `i`, loaded on first use; `None` (with a note on stderr, once) when its
/// file is absent. A file that exists but does not load is a failure.
pub fn vocab(i: usize) -> Option<&'static Loaded> {
    LOADED[i]
        .get_or_init(|| {
            let path = vocab_path(i);
            if !path.exists() {
                eprintln!(
                    "tokenizer check: {} not found, vocabulary {i} skipped",
                    path.display()
                );
                return None;
            }
            let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let tok =
                Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut non_normal = Trie::default();
            let mut unsplittable = Trie::default();
            for id in 0..tok.n_vocab() as u32 {
                let text = tok.token_text(id).expect("id in range");
                let a = tok.token_attr(id);
                if a == attr::NORMAL {
                    continue;
                }
                let clean = splits_cleanly(&tok, text) && a & (attr::LSTRIP | attr::RSTRIP) == 0;
                // split out with parse_special = false: user-defined tokens only
                if !(clean && a == attr::USER_DEFINED) {
                    non_normal.insert(text);
                }
                // with parse_special = true: control, user-defined and unknown ones
                if !(clean && a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0) {
                    unsplittable.insert(text);
                }
            }
            // bytes without a token of their own (byte-level BPE: the byte's GPT-2
            // character; SentencePiece: `<0xXX>`): llama.cpp drops them (or uses the
            // unknown token), so text with them does not round-trip
            let mut missing_bytes = [false; 256];
            for (b, missing) in missing_bytes.iter_mut().enumerate() {
                let text = match tok.model() {
                    "gpt2" => gpt2_encode(&[b as u8]),
                    _ => format!("<0x{b:02X}>").into_bytes(),
                };
                *missing = tok.token_id(&text).is_none();
            }
            Some(Loaded {
                name: VOCABS[i],
                tok,
                non_normal,
                unsplittable,
                missing_bytes,
            })
        })
        .as_ref()
}

/// Whether a special token (control, user-defined or unknown; split out of the raw text
/// before the model runs, its piece is its text) keeps the round trip where it is split
/// out, as far as its text goes: not when the vocabulary adds a space prefix after it, nor
/// when a merge on the model side can land on it (its text could occur there without
/// occurring in the raw text): SentencePiece text with `▁`, byte-level BPE text that is
/// not plain ASCII. (lstrip / rstrip attributes are checked by the caller.)
fn splits_cleanly(tok: &Tokenizer, text: &[u8]) -> bool {
    match tok.model() {
        "llama" => !tok.add_space_prefix() && !contains(text, SPM_SPACE),
        "gpt2" => text.is_ascii(),
        _ => false,
    }
}

/// Runs the checks selected by `data[0]` on the rest; panics on a violation.
pub fn check(data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let special = sel & 8 != 0;
    match sel & 7 {
        i @ 0..=5 => {
            let Some(v) = vocab(i as usize) else {
                return;
            };
            if (sel >> 4) & 3 == 3 {
                let ids: Vec<u32> = payload
                    .chunks(3)
                    .map(|c| c.iter().rev().fold(0u32, |acc, &b| acc << 8 | u32::from(b)))
                    .collect();
                check_decoders(v, &ids, special);
            } else {
                check_text(v, payload, special);
            }
        }
        _ => check_chat_template(sel, payload),
    }
}

fn check_text(v: &Loaded, text: &[u8], special: bool) {
    let tok = &v.tok;
    let n_vocab = tok.n_vocab();
    for (add_special, parse_special) in [(false, false), (false, true), (true, false), (true, true)]
    {
        let ids = tok.encode_bytes(text, add_special, parse_special);
        for &id in &ids {
            assert!(
                (id as usize) < n_vocab,
                "{}: id {id} out of range (add_special={add_special}, parse_special={parse_special})",
                v.name
            );
        }
        if let Ok(s) = std::str::from_utf8(text) {
            assert_eq!(
                tok.encode(s, add_special, parse_special),
                ids,
                "{}: encode and encode_bytes differ",
                v.name
            );
        }
        check_decoders(v, &ids, special);
    }
    if let Ok(s) = std::str::from_utf8(text) {
        check_round_trip(v, s);
        check_special_round_trip(v, s);
    }
}

/// `StreamDecoder` fed one id at a time gives `decode`'s text, except where `detokenize`
/// deliberately differs from concatenating pieces (llama.cpp does the same):
/// * with a space prefix, `detokenize` drops one leading space of the first piece;
/// * BPE vocabularies that clean up spaces drop the space in " ." " ," " !" " ?" " '" ...
fn check_decoders(v: &Loaded, ids: &[u32], special: bool) {
    let tok = &v.tok;
    let mut concat = Vec::new();
    for &id in ids {
        concat.extend_from_slice(&tok.token_to_piece(id, special));
    }
    let mut dec = StreamDecoder::new(special);
    let mut streamed = String::new();
    for &id in ids {
        streamed.push_str(&dec.push(tok, id));
    }
    streamed.push_str(&dec.flush());
    assert!(!dec.has_pending(), "{}: pending bytes after flush", v.name);
    assert_eq!(
        streamed,
        String::from_utf8_lossy(&concat),
        "{}: StreamDecoder differs from the concatenated pieces of {ids:?}",
        v.name
    );

    let detok = tok.detokenize(ids, special);
    if !special {
        assert_eq!(
            tok.decode(ids),
            String::from_utf8_lossy(&detok),
            "{}: decode differs from detokenize",
            v.name
        );
    }
    let mut expected = concat.as_slice();
    if tok.add_space_prefix()
        && let Some(&first) = ids.first()
        && tok.token_to_piece(first, special).first() == Some(&b' ')
    {
        expected = &expected[1..];
    }
    if tok.model() != "llama" && has_cleanup_pattern(expected) {
        return;
    }
    assert!(
        detok == expected,
        "{}: detokenize({ids:?}) = {:?}, pieces give {:?}",
        v.name,
        String::from_utf8_lossy(&detok),
        String::from_utf8_lossy(expected)
    );
    let mut streamed = streamed.as_str();
    if expected.len() < concat.len() {
        streamed = &streamed[1..];
    }
    if !special {
        assert_eq!(
            streamed,
            tok.decode(ids),
            "{}: StreamDecoder differs from decode for {ids:?}",
            v.name
        );
    }
}

/// Where llama.cpp's `clean_up_tokenization_spaces` may change the text.
fn has_cleanup_pattern(t: &[u8]) -> bool {
    t.windows(2)
        .any(|w| w[0] == b' ' && matches!(w[1], b'?' | b'!' | b'.' | b',' | b'\''))
}

/// The round trip that holds in llama.cpp for valid UTF-8 text in which no token other
/// than a plain `NORMAL` one (or a user-defined one that [`splits_cleanly`]) can be found
/// (such tokens are split out, or a merge can land on them, and their pieces are not
/// their text, or are nothing) and whose bytes all have a token of their own (llama.cpp
/// drops a byte without one; SentencePiece only needs them for the byte fallback, but
/// requiring them always is simpler):
/// * SentencePiece (`llama`): pieces concatenate to the text, after a space when the
///   vocabulary adds a space prefix (and the text is not empty); `detokenize` drops that
///   space again. Text containing `▁` is skipped (it is how spaces are escaped).
/// * byte-level BPE (`gpt2`): pieces concatenate to the text; `detokenize` returns it
///   unless space clean-up may apply.
pub fn check_round_trip(v: &Loaded, text: &str) {
    let tok = &v.tok;
    let bytes = text.as_bytes();
    let model_side: Vec<u8> = match tok.model() {
        "llama" => {
            if text.contains('\u{2581}') {
                return;
            }
            let mut t = String::new();
            if tok.add_space_prefix() && !text.is_empty() {
                t.push(' ');
            }
            t.push_str(text);
            t.replace(' ', "\u{2581}").into_bytes()
        }
        "gpt2" => gpt2_encode(bytes),
        _ => return,
    };
    if v.non_normal.occurs_in(bytes)
        || v.non_normal.occurs_in(&model_side)
        || bytes.iter().any(|&b| v.missing_bytes[b as usize])
    {
        return;
    }
    let ids = tok.encode(text, false, false);
    let mut concat = Vec::new();
    for &id in &ids {
        concat.extend_from_slice(&tok.token_to_piece(id, false));
    }
    let mut want = Vec::new();
    if tok.model() == "llama" && tok.add_space_prefix() && !text.is_empty() {
        want.push(b' ');
    }
    want.extend_from_slice(bytes);
    assert!(
        concat == want,
        "{}: pieces of encode({text:?}) = {ids:?} give {:?}",
        v.name,
        String::from_utf8_lossy(&concat)
    );
    let detok = tok.detokenize(&ids, false);
    if tok.model() == "llama" || !has_cleanup_pattern(bytes) {
        assert!(
            detok == bytes,
            "{}: detokenize(encode({text:?})) = {:?}",
            v.name,
            String::from_utf8_lossy(&detok)
        );
    }
}

fn check_chat_template(sel: u8, payload: &[u8]) {
    let template = String::from_utf8_lossy(payload);
    let messages = [
        ChatMessage::new("system", "You are helpful."),
        ChatMessage::new("user", "Hi <b>there</b> {{ x }}"),
        ChatMessage::new("assistant", "  Hello!\n"),
        ChatMessage::new("user", ""),
    ];
    let n = usize::from((sel >> 4) & 3) + 1;
    let (bos, eos) = if sel & 0x40 != 0 {
        ("<s>", "</s>")
    } else {
        ("<|im_start|>", "<|im_end|>")
    };
    // must come back, Ok or Err
    let _ = render_chat_template(&template, &messages[..n], sel & 8 != 0, bos, eos);
}

const SPM_SPACE: &[u8] = "\u{2581}".as_bytes();

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// GPT-2's byte-to-unicode map applied to UTF-8 bytes.
fn gpt2_encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            u32::from(b)
        } else {
            // the others get 256, 257, ... in byte order
            let rank = (0..b)
                .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
                .count() as u32;
            256 + rank
        };
        let c = char::from_u32(cp).expect("valid code point");
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    out
}

/// Byte trie to find whether any of a set of byte strings occurs in a text.
#[derive(Default)]
struct Trie {
    /// children of each node, sorted by byte; node 0 is the root
    children: Vec<Vec<(u8, u32)>>,
    terminal: Vec<bool>,
}

impl Trie {
    fn insert(&mut self, s: &[u8]) {
        if self.children.is_empty() {
            self.children.push(Vec::new());
            self.terminal.push(false);
        }
        let mut node = 0usize;
        for &b in s {
            node = match self.children[node].binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.children[node][i].1 as usize,
                Err(i) => {
                    let new = self.children.len();
                    self.children[node].insert(i, (b, new as u32));
                    self.children.push(Vec::new());
                    self.terminal.push(false);
                    new
                }
            };
        }
        self.terminal[node] = true;
    }

    fn occurs_in(&self, hay: &[u8]) -> bool {
        if self.children.is_empty() {
            return false;
        }
        (0..hay.len()).any(|start| {
            let mut node = 0usize;
            for &b in &hay[start..] {
                match self.children[node].binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => node = self.children[node][i].1 as usize,
                    Err(_) => return false,
                }
                if self.terminal[node] {
                    return true;
                }
            }
            false
        })
    }
}

/// With `parse_special = true` and `special = true` pieces, text with special-token texts
/// in it round-trips too (in byte-level BPE vocabularies, and SentencePiece ones without
/// a space prefix), as long as every token found in it is split out cleanly (see
/// [`splits_cleanly`]) or a plain `NORMAL` one, and all its bytes have tokens.
pub fn check_special_round_trip(v: &Loaded, text: &str) {
    let tok = &v.tok;
    let bytes = text.as_bytes();
    let model_side: Vec<u8> = match tok.model() {
        "llama" if !tok.add_space_prefix() => {
            if text.contains('\u{2581}') {
                return;
            }
            text.replace(' ', "\u{2581}").into_bytes()
        }
        "gpt2" => gpt2_encode(bytes),
        _ => return,
    };
    if v.unsplittable.occurs_in(bytes)
        || v.unsplittable.occurs_in(&model_side)
        || bytes.iter().any(|&b| v.missing_bytes[b as usize])
    {
        return;
    }
    let ids = tok.encode(text, false, true);
    let mut concat = Vec::new();
    for &id in &ids {
        concat.extend_from_slice(&tok.token_to_piece(id, true));
    }
    assert!(
        concat == bytes,
        "{}: pieces of encode({text:?}, parse_special) = {ids:?} give {:?}",
        v.name,
        String::from_utf8_lossy(&concat)
    );
    if tok.model() == "llama" || !has_cleanup_pattern(bytes) {
        let detok = tok.detokenize(&ids, true);
        assert!(
            detok == bytes,
            "{}: detokenize(encode({text:?}, parse_special), special) = {:?}",
            v.name,
            String::from_utf8_lossy(&detok)
        );
    }
}
