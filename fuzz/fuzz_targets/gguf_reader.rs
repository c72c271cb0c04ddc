//! `GgufFile::from_bytes` on arbitrary bytes, cross-checked against the
//! stream loader and the writer; see `resources/tests/gguf_support/check.rs`
//! (shared with the regression test that replays
//! `resources/tests/fuzz_regressions/`).
#![no_main]

#[path = "../../resources/tests/gguf_support/check.rs"]
mod check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check::check(data);
});
