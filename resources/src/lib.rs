//! wasm-chord's data layer: GGUF files, quantized block formats, model configuration and tokenizer.
//!
//! Nothing in here runs a model; `chord-systems` and `chord-engine` build on these types.

pub mod config;
pub mod ggml_type;
pub mod gguf;
pub mod paths;
pub mod quant;
pub mod tokenizer;

pub use ggml_type::{GgmlType, QK_K};
