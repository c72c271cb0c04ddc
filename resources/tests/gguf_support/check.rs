//! The GGUF consistency check shared by the `gguf_reader` fuzz target
//! (`fuzz/fuzz_targets/gguf_reader.rs`) and the regression replay test
//! (`resources/tests/gguf_fuzz_regressions.rs`).
//!
//! For arbitrary bytes it checks that:
//! * nothing panics or allocates beyond the input's size;
//! * `from_bytes` and the stream loader (two chunks split at a point derived
//!   from the input, with and without the length announced) agree on
//!   accepting or rejecting the input;
//! * an accepted file re-serialises through `GgufWriter`, and the result
//!   parses and re-serialises to the same bytes (writer ∘ reader is stable).

use chord_resources::gguf::{GgufFile, GgufStreamLoader, GgufWriter};

/// Canonical bytes of a parsed file (compares NaN metadata by bits, unlike `==`).
fn canonical(f: &GgufFile) -> Vec<u8> {
    let w = GgufWriter::from_file(f).expect("a parsed file is always writable");
    w.to_bytes().expect("write to memory")
}

fn stream(data: &[u8], split: usize, announce: bool) -> Option<GgufFile> {
    let mut loader = GgufStreamLoader::new().with_max_file_bytes(64 << 20);
    if announce {
        loader = loader.with_expected_len(data.len() as u64);
    }
    let (a, b) = data.split_at(split);
    loader.push(a).ok()?;
    loader.push(b).ok()?;
    loader.finish().ok()
}

/// Run every check on `data`; panics on a violation. Returns whether the
/// input was accepted as a GGUF file.
pub fn check(data: &[u8]) -> bool {
    let split = match data.last() {
        Some(&b) => usize::from(b) * data.len() / 256,
        None => 0,
    };
    let direct = GgufFile::from_bytes(data.to_vec()).ok();
    let announced = stream(data, split, true);
    let unannounced = stream(data, split, false);
    assert_eq!(
        direct.is_some(),
        announced.is_some(),
        "announced stream disagrees"
    );
    assert_eq!(
        direct.is_some(),
        unannounced.is_some(),
        "unannounced stream disagrees"
    );
    let (Some(direct), Some(announced), Some(unannounced)) = (direct, announced, unannounced)
    else {
        return false;
    };
    assert!(announced.as_bytes() == data);
    assert!(data.starts_with(unannounced.as_bytes()));
    let canon = canonical(&direct);
    assert!(canon == canonical(&announced));
    assert!(canon == canonical(&unannounced));
    let reparsed = GgufFile::from_bytes(canon.clone()).expect("rewritten file parses");
    assert!(canonical(&reparsed) == canon, "rewrite is not stable");
    for t in direct.tensors() {
        assert_eq!(direct.tensor_data(t).len() as u64, t.n_bytes);
        assert!(reparsed.tensor_bytes(&t.name) == Some(direct.tensor_data(t)));
    }
    true
}
