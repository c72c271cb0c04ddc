//! Tokenizers built from `tokenizer.ggml.*` metadata, producing the same token ids as
//! llama.cpp (`llama-vocab.cpp`).
//!
//! * SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`: Llama 2, Phi-3, Gemma):
//!   score-driven merges, `<0xXX>` byte fallback, `▁` for spaces, optional space prefix.
//! * Byte-level BPE (`"gpt2"`: Llama 3, Qwen2, SmolLM, GPT-2, ...): merges by rank after a
//!   pre-tokenizer chosen by `tokenizer.ggml.pre`, on GPT-2's byte-to-unicode mapping.
//!
//! Control, user-defined and unknown tokens are split out of the text before the model
//! runs (llama.cpp `tokenizer_st_partition`); control and unknown ones only when
//! `parse_special` is set.
//!
//! [`Tokenizer::from_data`] builds everything from a plain [`TokenizerData`];
//! [`Tokenizer::from_gguf`] only fills that struct from a GGUF file.

mod bpe;
mod chat;
mod gguf_load;
mod pretokenize;
mod spm;
mod stream;
mod unicode;
mod unicode_table;

use std::collections::{BTreeSet, HashMap};

pub use chat::{ChatMessage, render_chat_template};
pub use stream::StreamDecoder;

use bpe::Bpe;
use pretokenize::PreTokenizer;

/// Errors building a tokenizer or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("missing metadata key `{0}`")]
    MissingKey(&'static str),
    #[error("metadata key `{key}` has the wrong type (expected {expected})")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("`{key}` has {got} entries but the vocabulary has {n_tokens} tokens")]
    ShortArray {
        key: &'static str,
        got: usize,
        n_tokens: usize,
    },
    #[error("unsupported tokenizer model `{0}`")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer `{0}`")]
    UnsupportedPreTokenizer(String),
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("the vocabulary has {0} tokens, more than 32-bit ids can address")]
    VocabTooLarge(usize),
    #[error("BPE vocabulary without `tokenizer.ggml.merges`")]
    MissingMerges,
    #[error("invalid pre-tokenizer expression {0}")]
    Regex(String),
    #[error("chat template: {0}")]
    Template(String),
}

/// Per-token attribute bits, as llama.cpp's `llama_token_attr`.
pub mod attr {
    pub const UNDEFINED: u16 = 0;
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const NORMALIZED: u16 = 1 << 6;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
    pub const SINGLE_WORD: u16 = 1 << 9;
}

/// Everything a tokenizer is built from: the `tokenizer.ggml.*` metadata (plus
/// `general.name` / `general.architecture`, which llama.cpp uses for a few per-model
/// token attributes). `None` means "not in the file": llama.cpp's per-model defaults apply.
#[derive(Debug, Clone, Default)]
pub struct TokenizerData {
    /// `tokenizer.ggml.model`: `"llama"` (SentencePiece), `"gpt2"` (byte-level BPE) or `"gemma4"`.
    pub model: String,
    /// `tokenizer.ggml.pre` (BPE pre-tokenizer name).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, as bytes.
    pub tokens: Vec<Vec<u8>>,
    /// `tokenizer.ggml.scores`.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (`llama_token_type` values).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` (`"left right"` lines, lowest rank first).
    pub merges: Option<Vec<Vec<u8>>>,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
    pub eot: Option<u64>,
    pub eom: Option<u64>,
    pub unk: Option<u64>,
    pub sep: Option<u64>,
    pub pad: Option<u64>,
    pub mask: Option<u64>,
    pub fim_pre: Option<u64>,
    pub fim_suf: Option<u64>,
    pub fim_mid: Option<u64>,
    pub fim_pad: Option<u64>,
    pub fim_rep: Option<u64>,
    pub fim_sep: Option<u64>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_sep: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub remove_extra_whitespaces: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.architecture`.
    pub architecture: Option<String>,
}

/// Token table shared by the algorithms.
#[derive(Debug)]
pub(crate) struct Vocab {
    tokens: Vec<Box<[u8]>>,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    index: HashMap<Box<[u8]>, u32>,
    /// SentencePiece byte-fallback token of each byte
    byte_tokens: [Option<u32>; 256],
}

impl Vocab {
    #[inline]
    pub(crate) fn lookup(&self, text: &[u8]) -> Option<u32> {
        self.index.get(text).copied()
    }

    #[inline]
    pub(crate) fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }

    #[inline]
    pub(crate) fn byte_token(&self, b: u8) -> Option<u32> {
        self.byte_tokens[b as usize]
    }

    fn attr(&self, id: u32) -> u16 {
        self.attrs
            .get(id as usize)
            .copied()
            .unwrap_or(attr::UNDEFINED)
    }
}

#[derive(Debug)]
enum Model {
    Spm,
    Bpe(Bpe),
}

/// A piece of the input after special tokens were split out.
#[derive(Debug, Clone, Copy)]
enum Fragment {
    Text { start: usize, end: usize },
    Token(u32),
}

/// Byte trie over the special-token texts, to find which of them occur in a text at all.
#[derive(Debug, Default)]
struct SpecialTrie {
    /// children of each node, sorted by byte
    children: Vec<Vec<(u8, u32)>>,
    /// indices into `Tokenizer::special` of the texts ending at each node
    ends: Vec<Vec<u32>>,
}

impl SpecialTrie {
    fn new(texts: impl Iterator<Item = (u32, impl AsRef<[u8]>)>) -> SpecialTrie {
        let mut t = SpecialTrie {
            children: vec![Vec::new()],
            ends: vec![Vec::new()],
        };
        for (k, text) in texts {
            let mut node = 0usize;
            for &b in text.as_ref() {
                node = match t.children[node].binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => t.children[node][i].1 as usize,
                    Err(i) => {
                        let new = t.children.len();
                        t.children[node].insert(i, (b, new as u32));
                        t.children.push(Vec::new());
                        t.ends.push(Vec::new());
                        new
                    }
                };
            }
            t.ends[node].push(k);
        }
        t
    }

    /// Marks in `present` every text that occurs somewhere in `hay`.
    fn mark_present(&self, hay: &[u8], present: &mut [bool]) {
        for start in 0..hay.len() {
            let mut node = 0usize;
            for &b in &hay[start..] {
                match self.children[node].binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => node = self.children[node][i].1 as usize,
                    Err(_) => break,
                }
                for &k in &self.ends[node] {
                    present[k as usize] = true;
                }
            }
        }
    }
}

/// A tokenizer with llama.cpp's behaviour for one vocabulary.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    model_name: String,
    pre_name: String,
    /// control / user-defined / unknown tokens, longest text first
    special: Vec<u32>,
    special_trie: SpecialTrie,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    sep: Option<u32>,
    pad: Option<u32>,
    mask: Option<u32>,
    fim: [Option<u32>; 6],
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_sep: bool,
    add_space_prefix: bool,
    remove_extra_whitespaces: bool,
    clean_spaces: bool,
    escape_whitespaces: bool,
    chat_template: Option<String>,
}

// llama.cpp's auto-detection lists (token texts), highest priority first.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

impl Tokenizer {
    /// Builds the tokenizer of a GGUF file from its `tokenizer.ggml.*` metadata.
    pub fn from_gguf(f: &crate::gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_data(gguf_load::data_from_gguf(f)?)
    }

    /// Builds a tokenizer from plain data, applying llama.cpp's defaults and fix-ups.
    pub fn from_data(data: TokenizerData) -> Result<Tokenizer, TokenizerError> {
        let n_tokens = data.tokens.len();
        if n_tokens == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(n_tokens).is_err() || n_tokens == u32::MAX as usize {
            return Err(TokenizerError::VocabTooLarge(n_tokens));
        }

        // -- model type and its defaults
        struct Defaults {
            bos: Option<u32>,
            eos: Option<u32>,
            unk: Option<u32>,
            add_bos: bool,
            add_space_prefix: bool,
            clean_spaces: bool,
            escape_whitespaces: bool,
        }
        let mut pre_name = data.pre.clone().unwrap_or_default();
        let mut gemma4_pre = false;
        let (model, mut d) = match data.model.as_str() {
            "llama" => (
                Model::Spm,
                Defaults {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    add_bos: true,
                    add_space_prefix: true,
                    clean_spaces: false,
                    escape_whitespaces: true,
                },
            ),
            "gpt2" | "gemma4" => {
                let gemma4 = data.model == "gemma4";
                if gemma4 {
                    pre_name = "gemma4".to_string();
                }
                let merges = data.merges.as_ref().ok_or(TokenizerError::MissingMerges)?;
                let (pre, flags) = PreTokenizer::for_name(&pre_name)?;
                let mut bpe = Bpe::new(
                    merges.iter().map(|m| m.as_slice()),
                    pre,
                    flags.ignore_merges,
                );
                bpe.whole_newline_words = flags.gemma4;
                gemma4_pre = flags.gemma4;
                let bos = if gemma4 || flags.no_bos {
                    None
                } else {
                    Some(11)
                };
                (
                    Model::Bpe(bpe),
                    Defaults {
                        bos,
                        eos: if gemma4 { None } else { Some(11) },
                        unk: None,
                        add_bos: flags.add_bos,
                        add_space_prefix: false,
                        clean_spaces: flags.clean_spaces,
                        escape_whitespaces: flags.escape_whitespaces,
                    },
                )
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        if let Some(v) = data.add_space_prefix {
            d.add_space_prefix = v;
        }

        // -- token table
        let scores = match &data.scores {
            Some(s) if s.len() < n_tokens => {
                return Err(TokenizerError::ShortArray {
                    key: "tokenizer.ggml.scores",
                    got: s.len(),
                    n_tokens,
                });
            }
            Some(s) => s[..n_tokens].to_vec(),
            None => vec![0.0; n_tokens],
        };
        let mut attrs = match &data.token_types {
            Some(t) if t.len() < n_tokens => {
                return Err(TokenizerError::ShortArray {
                    key: "tokenizer.ggml.token_type",
                    got: t.len(),
                    n_tokens,
                });
            }
            Some(t) => t[..n_tokens]
                .iter()
                .map(|&ty| match ty {
                    1 => attr::NORMAL,
                    2 => attr::UNKNOWN,
                    3 => attr::CONTROL,
                    4 => attr::USER_DEFINED,
                    5 => attr::UNUSED,
                    6 => attr::BYTE,
                    _ => attr::UNDEFINED,
                })
                .collect(),
            None => vec![attr::NORMAL; n_tokens],
        };
        let mut tokens: Vec<Box<[u8]>> = Vec::with_capacity(n_tokens);
        let mut index = HashMap::with_capacity(n_tokens);
        for (i, t) in data.tokens.into_iter().enumerate() {
            let t: Box<[u8]> = if t.is_empty() {
                format!("[EMPTY_{i}]").into_bytes().into()
            } else {
                t.into()
            };
            // later duplicates win, as in llama.cpp
            index.insert(t.clone(), i as u32);
            tokens.push(t);
        }
        let valid = |id: u32| (id as usize) < n_tokens;
        let n = n_tokens as u64;

        // -- special ids: default unless the metadata names a token in range
        let pick = |default: Option<u32>, meta: Option<u64>| -> Option<u32> {
            match meta {
                Some(m) if m < n => Some(m as u32),
                _ => default.filter(|&id| valid(id)),
            }
        };
        let bos = pick(d.bos, data.bos);
        let eos = pick(d.eos, data.eos);
        let mut eot = pick(None, data.eot);
        let mut eom = pick(None, data.eom);
        let unk = pick(d.unk, data.unk);
        // SentencePiece byte fallback: `<0xXX>`, else the byte itself (llama.cpp aborts when
        // neither exists; the unknown token is used instead)
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = index
                .get(format!("<0x{b:02X}>").as_bytes())
                .or_else(|| index.get(&[b as u8][..]))
                .copied()
                .or(unk);
        }
        let sep = pick(None, data.sep);
        let pad = pick(None, data.pad);
        let mask = pick(None, data.mask);
        let mut fim = [
            pick(None, data.fim_pre),
            pick(None, data.fim_suf),
            pick(None, data.fim_mid),
            pick(None, data.fim_pad),
            pick(None, data.fim_rep),
            pick(None, data.fim_sep),
        ];
        let mut add_bos = data.add_bos.unwrap_or(d.add_bos);
        let add_eos = data.add_eos.unwrap_or(false);
        let add_sep = data.add_sep.unwrap_or(false);
        if gemma4_pre {
            add_bos = true;
        }

        // -- auto-detection of end-of-turn / FIM tokens by text (marks them as control)
        let find_text =
            |texts: &[&str]| texts.iter().find_map(|t| index.get(t.as_bytes()).copied());
        {
            let mut detect = |slot: &mut Option<u32>, texts: &[&str]| {
                if slot.is_none()
                    && let Some(id) = find_text(texts)
                {
                    *slot = Some(id);
                    attrs[id as usize] |= attr::CONTROL;
                }
            };
            detect(&mut eot, EOT_TEXTS);
            detect(&mut eom, EOM_TEXTS);
            let [pre, suf, mid, fpad, rep, fsep] = &mut fim;
            detect(pre, FIM_PRE_TEXTS);
            detect(suf, FIM_SUF_TEXTS);
            detect(mid, FIM_MID_TEXTS);
            detect(fpad, FIM_PAD_TEXTS);
            detect(rep, FIM_REP_TEXTS);
            detect(fsep, FIM_SEP_TEXTS);
        }

        // control tokens named "unused..." are unused (for duplicated texts, the id the text
        // maps to, as llama.cpp walks its text -> id map)
        for (i, (t, a)) in tokens.iter().zip(attrs.iter_mut()).enumerate() {
            if *a & attr::CONTROL != 0
                && contains(t, b"unused")
                && index.get(t) == Some(&(i as u32))
            {
                *a |= attr::UNUSED;
            }
        }

        // -- end-of-generation set
        let mut eog: BTreeSet<u32> = fim[3..].iter().flatten().copied().collect();
        for text in EOG_TEXTS {
            if let Some(&id) = index.get(text.as_bytes()) {
                eog.insert(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = index.get(text.as_bytes()) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        let eog_with = |eog: &BTreeSet<u32>, text: &str| {
            eog.iter()
                .copied()
                .find(|&id| &*tokens[id as usize] == text.as_bytes())
        };
        // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation
        if let Some(end) = eog_with(&eog, "<|end|>") {
            let has = |t: &str| eog_with(&eog, t).is_some();
            let call = has("<|call|>") || has("<|calls|>");
            if call && (has("<|return|>") || has("<|flush|>")) {
                eog.remove(&end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        if eog_with(&eog, "<|tool_response>").is_some()
            && let Some(s) = eog_with(&eog, "</s>")
        {
            eog.remove(&s);
            attrs[s as usize] = attr::NORMAL;
        }

        // -- special tokens, longest first
        let mut special: Vec<u32> = (0..n_tokens as u32)
            .filter(|&id| {
                attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()));

        // -- per-model attributes llama.cpp sets by name
        let name = data.name.as_deref().unwrap_or("").to_lowercase();
        let arch = data.architecture.as_deref().unwrap_or("");
        let set_attr = |attrs: &mut Vec<u16>, text: &str, bit: u16, on: bool| {
            if let Some(&id) = index.get(text.as_bytes()) {
                if on {
                    attrs[id as usize] |= bit;
                } else {
                    attrs[id as usize] &= !bit;
                }
            }
        };
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre_name.contains(p))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|a| arch.contains(a))
        {
            set_attr(&mut attrs, "<mask>", attr::LSTRIP, true);
        } else if name.contains("phi-3") || name.contains("phi3") {
            for &id in &special {
                attrs[id as usize] |= attr::RSTRIP;
            }
            set_attr(&mut attrs, "</s>", attr::RSTRIP, true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set_attr(&mut attrs, t, attr::RSTRIP, false);
            }
        } else if name.contains("modern-bert") {
            set_attr(&mut attrs, "[MASK]", attr::LSTRIP, true);
        }

        let special_trie = SpecialTrie::new(
            special
                .iter()
                .enumerate()
                .map(|(k, &id)| (k as u32, tokens[id as usize].clone())),
        );

        let vocab = Vocab {
            tokens,
            scores,
            attrs,
            index,
            byte_tokens,
        };
        Ok(Tokenizer {
            vocab,
            model,
            model_name: data.model,
            pre_name,
            special,
            special_trie,
            bos,
            eos,
            eot,
            eom,
            unk,
            sep,
            pad,
            mask,
            fim,
            eog,
            add_bos,
            add_eos,
            add_sep,
            add_space_prefix: d.add_space_prefix,
            remove_extra_whitespaces: data.remove_extra_whitespaces.unwrap_or(false),
            clean_spaces: d.clean_spaces,
            escape_whitespaces: d.escape_whitespaces,
            chat_template: data.chat_template,
        })
    }

    // ------------------------------------------------------------------ encoding

    /// Tokenizes UTF-8 text like `llama_tokenize(text, add_special, parse_special)`.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.encode_bytes(text.as_bytes(), add_special, parse_special)
    }

    /// Tokenizes raw bytes (possibly invalid UTF-8) exactly as llama.cpp does: BPE
    /// vocabularies see each invalid byte as U+FFFD, SentencePiece ones fall back to byte
    /// tokens.
    pub fn encode_bytes(&self, text: &[u8], add_special: bool, parse_special: bool) -> Vec<u32> {
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            self.partition(text, parse_special)
        };
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        match &self.model {
            Model::Spm => {
                if add_special
                    && self.add_bos
                    && let Some(bos) = self.bos
                {
                    out.push(bos);
                }
                let mut prev_special = true;
                let mut buf = Vec::new();
                for f in fragments {
                    match f {
                        Fragment::Text { start, end } => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push(b' ');
                            }
                            buf.extend_from_slice(&text[start..end]);
                            let escaped = escape_whitespace(&buf);
                            spm::tokenize(&self.vocab, &escaped, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                if add_special
                    && self.add_bos
                    && let Some(bos) = self.bos
                {
                    out.push(bos);
                }
                for f in fragments {
                    match f {
                        Fragment::Text { start, end } => {
                            let piece = &text[start..end];
                            if self.escape_whitespaces {
                                bpe.tokenize(&self.vocab, &escape_whitespace(piece), &mut out);
                            } else {
                                bpe.tokenize(&self.vocab, piece, &mut out);
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special
            && self.add_eos
            && let Some(eos) = self.eos
        {
            out.push(eos);
        }
        out
    }

    /// Splits special tokens out of `text` (llama.cpp `tokenizer_st_partition`): each special
    /// token, longest first, splits every remaining text fragment at its occurrences,
    /// honouring its lstrip/rstrip attributes.
    fn partition(&self, text: &[u8], parse_special: bool) -> Vec<Fragment> {
        let mut fragments = vec![Fragment::Text {
            start: 0,
            end: text.len(),
        }];
        let mut present = vec![false; self.special.len()];
        self.special_trie.mark_present(text, &mut present);
        for (k, &id) in self.special.iter().enumerate() {
            if !present[k] {
                continue;
            }
            let a = self.vocab.attr(id);
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = &*self.vocab.tokens[id as usize];
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for f in fragments {
                let Fragment::Text { mut start, end } = f else {
                    next.push(f);
                    continue;
                };
                loop {
                    let Some(m) = find(&text[start..end], needle).map(|p| p + start) else {
                        if end > start {
                            next.push(Fragment::Text { start, end });
                        }
                        break;
                    };
                    let mut left_end = m;
                    if a & attr::LSTRIP != 0 {
                        while left_end > start && is_c_space(text[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > start {
                        next.push(Fragment::Text {
                            start,
                            end: left_end,
                        });
                    }
                    next.push(Fragment::Token(id));
                    start = m + needle.len();
                    if a & attr::RSTRIP != 0 {
                        while start < end && is_c_space(text[start]) {
                            start += 1;
                        }
                    }
                    if start >= end {
                        break;
                    }
                }
            }
            fragments = next;
        }
        fragments
    }

    // ------------------------------------------------------------------ decoding

    /// The bytes token `id` stands for, like `llama_token_to_piece(id, lstrip = 0, special)`:
    /// with `special = false`, control and unknown tokens give nothing. Out-of-range ids
    /// give nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(text) = self.vocab.tokens.get(id as usize) else {
            return Vec::new();
        };
        let a = self.vocab.attr(id);
        if a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return if special { text.to_vec() } else { Vec::new() };
        }
        if a & attr::USER_DEFINED != 0 {
            return text.to_vec();
        }
        if a & attr::NORMAL != 0 {
            return match &self.model {
                Model::Bpe(_) if !self.escape_whitespaces => gpt2_decode(text),
                _ => unescape_whitespace(text),
            };
        }
        if a & attr::BYTE != 0 {
            return byte_of_token(text).map(|b| vec![b]).unwrap_or_default();
        }
        Vec::new()
    }

    /// Concatenated pieces of `ids`, like `llama_detokenize(remove_special = false,
    /// unparse_special = special)`: the first piece loses one leading space when the
    /// vocabulary adds a space prefix, and BPE vocabularies clean up spaces before
    /// punctuation where llama.cpp does.
    pub fn detokenize(&self, ids: &[u32], special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_to_piece(id, special);
            let strip = i == 0 && self.add_space_prefix && piece.first() == Some(&b' ');
            out.extend_from_slice(&piece[strip as usize..]);
        }
        if self.clean_spaces {
            out = clean_up_spaces(&out);
        }
        out
    }

    /// Text of `ids` without control tokens; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.detokenize(ids, false)).into_owned()
    }

    /// A decoder that turns ids into text incrementally (see [`StreamDecoder`]).
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(false)
    }

    // ------------------------------------------------------------------ vocabulary

    pub fn n_vocab(&self) -> usize {
        self.vocab.tokens.len()
    }
    /// The stored text of token `id` (SentencePiece `▁`, GPT-2 byte-mapped code points).
    pub fn token_text(&self, id: u32) -> Option<&[u8]> {
        self.vocab.tokens.get(id as usize).map(|t| &**t)
    }
    /// The id of the token whose stored text is exactly `text`.
    pub fn token_id(&self, text: &[u8]) -> Option<u32> {
        self.vocab.lookup(text)
    }
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.vocab.scores.get(id as usize).copied()
    }
    /// Attribute bits of token `id` (see [`attr`]); `attr::UNDEFINED` when out of range.
    pub fn token_attr(&self, id: u32) -> u16 {
        self.vocab.attr(id)
    }
    pub fn is_control(&self, id: u32) -> bool {
        self.token_attr(id) & attr::CONTROL != 0
    }
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// All end-of-generation tokens.
    pub fn eog_tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn sep(&self) -> Option<u32> {
        self.sep
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    pub fn mask(&self) -> Option<u32> {
        self.mask
    }
    /// Fill-in-the-middle tokens: prefix, suffix, middle, pad, repo, file separator.
    pub fn fim_tokens(&self) -> [Option<u32>; 6] {
        self.fim
    }
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    pub fn add_sep(&self) -> bool {
        self.add_sep
    }
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
    /// Stored for completeness; llama.cpp does not apply it to SentencePiece/BPE models.
    pub fn remove_extra_whitespaces(&self) -> bool {
        self.remove_extra_whitespaces
    }
    /// `tokenizer.ggml.model`.
    pub fn model(&self) -> &str {
        &self.model_name
    }
    /// `tokenizer.ggml.pre` (empty when absent).
    pub fn pre(&self) -> &str {
        &self.pre_name
    }
    /// `tokenizer.chat_template`.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Renders the model's chat template for `messages` with its BOS/EOS texts.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| TokenizerError::Template("the model has no chat template".into()))?;
        let text_of = |id: Option<u32>| {
            id.and_then(|id| self.token_text(id))
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default()
        };
        render_chat_template(
            template,
            messages,
            add_generation_prompt,
            &text_of(self.bos),
            &text_of(self.eos),
        )
    }
}

/// `haystack.find(needle)`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let p = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?
            + i;
        if &hay[p + 1..p + needle.len()] == rest {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// C `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

const SPM_SPACE: &[u8] = "\u{2581}".as_bytes();

/// Spaces to `▁`.
fn escape_whitespace(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    for &b in text {
        if b == b' ' {
            out.extend_from_slice(SPM_SPACE);
        } else {
            out.push(b);
        }
    }
    out
}

/// `▁` to spaces.
fn unescape_whitespace(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(SPM_SPACE) {
            out.push(b' ');
            i += SPM_SPACE.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

/// GPT-2 byte-level token text back to bytes; code points outside the byte map are
/// written like llama.cpp's `llama_decode_text` does (`[UNK_BYTE_0x..]`).
fn gpt2_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in unicode::decode_lenient(text) {
        match unicode::cpt_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut utf8 = Vec::new();
                unicode::push_utf8(&mut utf8, c);
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in utf8 {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text);
                out.push(b']');
            }
        }
    }
    out
}

/// The byte of a `<0xXX>` token.
fn byte_of_token(text: &[u8]) -> Option<u8> {
    let hex = text.get(3..5)?;
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// llama.cpp's `clean_up_tokenization_spaces` passes over detokenized text, done in
/// place the same way (the second pass blanks the space it skips, which the next step sees).
fn clean_up_spaces(text: &[u8]) -> Vec<u8> {
    let mut t = text.to_vec();
    // " ?", " !", " .", " ," lose the space
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    // " ' " becomes "'"
    let n = total;
    total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = t[i];
        if x == b'\'' && i + 1 < n && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    // " 's", " 'm", " 're", " 've" lose the space
    let n = total;
    total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = t[i + 1];
            if x1 == b't' || x1 == b'd' {
                // kept
            } else if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if i + 2 < n {
                let x2 = t[i + 2];
                if matches!((x1, x2), (b'r' | b'v', b'e')) {
                    total -= 1;
                }
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
    t
}

#[cfg(test)]
mod tests;
