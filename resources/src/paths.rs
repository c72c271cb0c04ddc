//! Where models, fixtures and the llama.cpp reference kit live on disk.
//!
//! Models are never stored in the repository: they live in a cache directory
//! (`$CHORD_MODELS`, default `~/.cache/wasm-chord/models`).

use std::path::PathBuf;

/// Directory holding GGUF models: `$CHORD_MODELS`, else `$HOME/.cache/wasm-chord/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHORD_MODELS") {
        return PathBuf::from(dir);
    }
    cache_root().join("models")
}

/// Directory of the llama.cpp reference driver: `$CHORD_REF`, else `$HOME/.cache/wasm-chord/llama-ref`.
pub fn llama_ref_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHORD_REF") {
        return PathBuf::from(dir);
    }
    cache_root().join("llama-ref")
}

fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("wasm-chord")
}

/// The shared reference kit: `$CHORD_REFERENCE_KIT`, else `../shared/reference` next to the
/// workspace, else `shared/reference` inside it.
pub fn reference_kit_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHORD_REFERENCE_KIT") {
        return PathBuf::from(dir);
    }
    let beside = workspace_root().join("../shared/reference");
    let inside = workspace_root().join("shared/reference");
    if !beside.is_dir() && inside.is_dir() {
        inside
    } else {
        beside
    }
}

/// `fixtures/` of the reference kit.
pub fn fixtures_dir() -> PathBuf {
    reference_kit_dir().join("fixtures")
}

/// The workspace root (the directory above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
