//! GGUF v2/v3 reader and writer.
//!
//! * [`GgufFile`]: a parsed, validated file, memory-mapped ([`GgufFile::open`])
//!   or in memory ([`GgufFile::from_bytes`]); tensor data is borrowed, never copied.
//! * [`GgufStreamLoader`]: builds a [`GgufFile`] from chunks arriving in file
//!   order (browser `fetch`), with one buffer of the final size.
//! * [`GgufWriter`]: writes valid v3 files.

mod error;
mod reader;
mod stream;
pub mod value;
mod writer;

pub use error::GgufError;
pub use reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufFile, MAX_DIMS, MAX_METADATA_VALUES,
    MAX_NESTING, TensorInfo,
};
pub use stream::{DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_HEADER_BYTES, GgufStreamLoader};
pub use value::{Value, ValueType};
pub use writer::GgufWriter;
