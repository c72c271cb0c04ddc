//! GGUF v2/v3 reader and writer.

pub mod value;

pub use value::{Value, ValueType};
