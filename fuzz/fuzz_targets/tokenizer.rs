//! The tokenizer on arbitrary text, token ids and chat templates: encoding with every
//! `(add_special, parse_special)` combination, llama.cpp's round trips, `StreamDecoder`
//! against `decode`, and `render_chat_template` always returning. See
//! `resources/tests/tokenizer_support/check.rs` (shared with the regression test that
//! replays `resources/tests/fuzz_regressions/tokenizer/`) for the input layout.
//!
//! Vocabularies load once, lazily, from `$CHORD_MODELS` and the llama.cpp reference kit
//! (`$CHORD_REF`); inputs for a vocabulary that is not on disk do nothing.
#![no_main]

#[path = "../../resources/tests/tokenizer_support/check.rs"]
mod check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check::check(data);
});
