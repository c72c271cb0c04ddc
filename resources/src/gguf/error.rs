//! Errors of the GGUF reader, stream loader and writer.

use super::value::ValueType;
use crate::GgmlType;

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Offsets are byte offsets from the start of the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Opening, mapping or writing the file failed.
    #[error("GGUF I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: magic is {0:02x?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),

    /// The version field is byte-swapped: a big-endian GGUF file.
    #[error("big-endian GGUF files are not supported")]
    BigEndian,

    /// Only versions 2 and 3 are read (v1 used 32-bit counts).
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),

    /// The file ends (or claims to end) before `what` is complete.
    #[error("GGUF file truncated while reading {what} at offset {offset}")]
    Truncated { what: &'static str, offset: u64 },

    /// A metadata value or array element type id is not one of `enum gguf_type`.
    #[error("unknown GGUF value type {id} at offset {offset}")]
    UnknownValueType { id: u32, offset: u64 },

    /// A tensor's ggml type id is not a supported [`GgmlType`].
    #[error("tensor {name:?} has unknown ggml type id {id}")]
    UnknownTensorType { name: String, id: u32 },

    /// A string (key, value or tensor name) is not valid UTF-8.
    #[error("invalid UTF-8 in {what} at offset {offset}")]
    InvalidUtf8 { what: &'static str, offset: u64 },

    /// A bool value is neither 0 nor 1.
    #[error("invalid bool byte {byte} at offset {offset}")]
    InvalidBool { byte: u8, offset: u64 },

    /// A count cannot possibly fit in the bytes that remain, or exceeds a hard limit.
    #[error("too many {what}: {count}")]
    TooMany { what: &'static str, count: u64 },

    /// A tensor has more than 4 dimensions.
    #[error("tensor {name:?} has {n_dims} dimensions (at most 4 allowed)")]
    TooManyDims { name: String, n_dims: u32 },

    /// The product of a tensor's dims (or its byte size) overflows.
    #[error("tensor {name:?}: element count or byte size overflows")]
    DimOverflow { name: String },

    /// The row length (`dims[0]`) is not a multiple of the type's block size.
    #[error("tensor {name:?}: row length {row_len} is not a multiple of the {ty} block size")]
    BadRowLength {
        name: String,
        ty: GgmlType,
        row_len: u64,
    },

    /// `general.alignment` is zero, not a power of two, or not a u32.
    #[error("invalid general.alignment: {0}")]
    BadAlignment(String),

    /// A tensor's data does not lie within the data section of the file.
    #[error(
        "tensor {name:?} (offset {offset}, {n_bytes} bytes) lies outside the {data_len}-byte data section"
    )]
    TensorOutOfBounds {
        name: String,
        offset: u64,
        n_bytes: u64,
        data_len: u64,
    },

    /// Two tensors' data ranges overlap.
    #[error("tensors {first:?} and {second:?} overlap")]
    TensorOverlap { first: String, second: String },

    /// A tensor offset is not a multiple of the alignment.
    #[error("tensor {name:?} offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },

    /// The same metadata key appears twice.
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),

    /// The same tensor name appears twice.
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),

    /// Arrays nested deeper than [`super::MAX_NESTING`].
    #[error("arrays nested too deeply at offset {offset}")]
    NestingTooDeep { offset: u64 },

    /// A size exceeds a configured limit or the address space (`usize`).
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },

    /// The allocation for the model buffer failed.
    #[error("could not allocate {bytes} bytes for the GGUF file")]
    OutOfMemory { bytes: u64 },

    /// More bytes were pushed into a stream loader than the announced length.
    #[error("stream received more than the announced {expected} bytes")]
    TooMuchData { expected: u64 },

    /// A [`super::GgufStreamLoader`] was used after it returned an error.
    #[error("stream loader used after an earlier error")]
    StreamFailed,

    /// Writer: an array's elements do not all have the declared element type.
    #[error("array for {key:?}: element of type {found:?} in an array of {expected:?}")]
    ArrayTypeMismatch {
        key: String,
        expected: ValueType,
        found: ValueType,
    },

    /// Writer: the byte buffer given for a tensor has the wrong length.
    #[error("tensor {name:?}: got {actual} bytes, its shape and type need {expected}")]
    TensorSizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },

    /// Writer: a metadata value has the wrong type for a well-known key.
    #[error("metadata key {key:?} must be {expected:?}, got {found:?}")]
    WrongValueType {
        key: String,
        expected: ValueType,
        found: ValueType,
    },
}
