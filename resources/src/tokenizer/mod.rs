//! Tokenizers built from `tokenizer.ggml.*` metadata.
