//! Filling [`TokenizerData`] from GGUF metadata.

use super::{TokenizerData, TokenizerError};
use crate::gguf::{GgufFile, Value};

const MODEL: &str = "tokenizer.ggml.model";
const PRE: &str = "tokenizer.ggml.pre";
const TOKENS: &str = "tokenizer.ggml.tokens";
const SCORES: &str = "tokenizer.ggml.scores";
const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const MERGES: &str = "tokenizer.ggml.merges";

/// Reads the `tokenizer.ggml.*` keys (and `general.name` / `general.architecture`).
/// Missing optional keys stay `None`; present keys of the wrong type are errors, except
/// special-token ids that are not non-negative integers, which llama.cpp also ignores.
pub(super) fn data_from_gguf(f: &GgufFile) -> Result<TokenizerData, TokenizerError> {
    let model = string(f, MODEL)?.ok_or(TokenizerError::MissingKey(MODEL))?;
    let tokens = match f.get(TOKENS) {
        None => return Err(TokenizerError::MissingKey(TOKENS)),
        Some(v) => strings(v, TOKENS)?,
    };
    let scores = match f.get(SCORES) {
        None => None,
        Some(v) => Some(
            array(v, SCORES, "array of f32 or i32")?
                .iter()
                .map(|x| match x {
                    Value::F32(s) => Ok(*s),
                    Value::I32(s) => Ok(*s as f32),
                    _ => Err(TokenizerError::WrongType {
                        key: SCORES,
                        expected: "array of f32 or i32",
                    }),
                })
                .collect::<Result<Vec<f32>, _>>()?,
        ),
    };
    let token_types = match f.get(TOKEN_TYPE) {
        None => None,
        Some(v) => Some(
            array(v, TOKEN_TYPE, "array of i32")?
                .iter()
                .map(|x| match x {
                    Value::I32(t) => Ok(*t),
                    _ => Err(TokenizerError::WrongType {
                        key: TOKEN_TYPE,
                        expected: "array of i32",
                    }),
                })
                .collect::<Result<Vec<i32>, _>>()?,
        ),
    };
    let merges = match f.get(MERGES) {
        None => None,
        Some(v) => Some(strings(v, MERGES)?),
    };
    let id = |key: &str| f.get(key).and_then(Value::as_u64);
    let flag = |key: &'static str| -> Result<Option<bool>, TokenizerError> {
        match f.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or(TokenizerError::WrongType {
                key,
                expected: "bool",
            }),
        }
    };
    Ok(TokenizerData {
        pre: string(f, PRE)?,
        tokens,
        scores,
        token_types,
        merges,
        bos: id("tokenizer.ggml.bos_token_id"),
        eos: id("tokenizer.ggml.eos_token_id"),
        eot: id("tokenizer.ggml.eot_token_id"),
        eom: id("tokenizer.ggml.eom_token_id"),
        unk: id("tokenizer.ggml.unknown_token_id"),
        sep: id("tokenizer.ggml.seperator_token_id"),
        pad: id("tokenizer.ggml.padding_token_id"),
        mask: id("tokenizer.ggml.mask_token_id"),
        // the deprecated prefix/suffix/middle keys override, as llama.cpp reads them last
        fim_pre: id("tokenizer.ggml.prefix_token_id").or(id("tokenizer.ggml.fim_pre_token_id")),
        fim_suf: id("tokenizer.ggml.suffix_token_id").or(id("tokenizer.ggml.fim_suf_token_id")),
        fim_mid: id("tokenizer.ggml.middle_token_id").or(id("tokenizer.ggml.fim_mid_token_id")),
        fim_pad: id("tokenizer.ggml.fim_pad_token_id"),
        fim_rep: id("tokenizer.ggml.fim_rep_token_id"),
        fim_sep: id("tokenizer.ggml.fim_sep_token_id"),
        add_bos: flag("tokenizer.ggml.add_bos_token")?,
        add_eos: flag("tokenizer.ggml.add_eos_token")?,
        add_sep: flag("tokenizer.ggml.add_sep_token")?,
        add_space_prefix: flag("tokenizer.ggml.add_space_prefix")?,
        remove_extra_whitespaces: flag("tokenizer.ggml.remove_extra_whitespaces")?,
        chat_template: string(f, "tokenizer.chat_template")?,
        name: string(f, "general.name")?,
        architecture: string(f, "general.architecture")?,
        model,
    })
}

fn string(f: &GgufFile, key: &'static str) -> Result<Option<String>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or(TokenizerError::WrongType {
                key,
                expected: "string",
            }),
    }
}

fn array<'a>(
    v: &'a Value,
    key: &'static str,
    expected: &'static str,
) -> Result<&'a [Value], TokenizerError> {
    v.as_array()
        .ok_or(TokenizerError::WrongType { key, expected })
}

fn strings(v: &Value, key: &'static str) -> Result<Vec<Vec<u8>>, TokenizerError> {
    array(v, key, "array of strings")?
        .iter()
        .map(|x| {
            x.as_str()
                .map(|s| s.as_bytes().to_vec())
                .ok_or(TokenizerError::WrongType {
                    key,
                    expected: "array of strings",
                })
        })
        .collect()
}
