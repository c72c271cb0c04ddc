//! GGUF header parsing and the validated, zero-copy [`GgufFile`].
//!
//! Layout (little-endian):
//!
//! ```text
//! "GGUF" u32 version u64 tensor_count u64 kv_count
//! kv_count × { string key, u32 value_type, value }
//! tensor_count × { string name, u32 n_dims, n_dims × u64 dim, u32 ggml_type, u64 offset }
//! padding to general.alignment (default 32)
//! data section: tensor data at the (aligned) offsets
//! ```
//!
//! A string is `u64 len` + `len` UTF-8 bytes; an array is `u32 elem_type`,
//! `u64 count`, then the elements.
//!
//! Every count in the header is untrusted: it is checked against the bytes
//! that can still follow before anything is allocated for it.

use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use super::error::GgufError;
use super::value::{Value, ValueType};
use crate::GgmlType;

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Metadata key holding the alignment (a u32).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Deepest array nesting accepted (an array of arrays has depth 2).
pub const MAX_NESTING: usize = 8;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Most metadata values (array elements included, over the whole file).
///
/// Every [`Value`] takes 32 bytes in memory, so without this bound a file
/// made of one large u8 array would cost 32× its size to parse; with it,
/// parsed metadata stays under 256 MiB plus the strings' bytes. Real
/// vocabularies stay far below: 262k tokens with scores and types plus 500k
/// merges are about 1.3M values.
pub const MAX_METADATA_VALUES: u64 = 1 << 23;

/// Smallest encoding of one tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// Smallest encoding of one key/value pair: key length, type, a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Preallocate at most this many elements from any count in the file.
const MAX_PREALLOC: usize = 4096;

/// Where one tensor lives in the file and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape in ggml order: `dims[0]` is the row length (`ne0`, contiguous),
    /// `dims[1]` the number of rows, and so on. Between 0 and 4 entries.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes (`row_bytes(dims[0]) × dims[1..].product()`).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (the product of all dims; 1 for zero dims).
    ///
    /// Saturates at `u64::MAX` for a hand-made info whose dims overflow;
    /// infos from a [`GgufFile`] are checked to fit an i64.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Number of rows: the product of `dims[1..]` (1 for a vector).
    /// Saturates like [`TensorInfo::n_elements`].
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Elements per row: `dims[0]` (1 for a zero-dimensional tensor).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Bytes per row, `n_bytes / n_rows`.
    pub fn row_bytes(&self) -> u64 {
        self.ty.row_bytes(self.row_len()).unwrap_or(0)
    }
}

/// A header parse that needs more bytes than are present yet.
#[derive(Debug)]
pub(crate) enum ParseError {
    /// The bytes up to `needed` (absolute offset) have not arrived.
    NeedMore {
        needed: u64,
        what: &'static str,
        offset: u64,
    },
    /// The header is invalid whatever follows.
    Fatal(GgufError),
}

impl From<GgufError> for ParseError {
    fn from(e: GgufError) -> Self {
        ParseError::Fatal(e)
    }
}

impl ParseError {
    /// Convert for a caller that has the whole file: missing bytes are truncation.
    pub(crate) fn into_final(self) -> GgufError {
        match self {
            ParseError::NeedMore { what, offset, .. } => GgufError::Truncated { what, offset },
            ParseError::Fatal(e) => e,
        }
    }
}

/// Everything in front of the data section, parsed and indexed.
#[derive(Debug)]
pub(crate) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub meta_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// End of the last tensor's data, relative to the data section.
    pub data_end: u64,
}

/// Little-endian cursor over the bytes received so far of a file of
/// (at most) `total` bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Length of the whole file, `u64::MAX` when unknown.
    total: u64,
    /// Metadata values created so far.
    values: u64,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Bytes that can still follow in the whole file.
    fn remaining_total(&self) -> u64 {
        self.total.saturating_sub(self.offset())
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], ParseError> {
        let offset = self.offset();
        let needed = offset
            .checked_add(n)
            .ok_or(GgufError::Truncated { what, offset })?;
        if needed > self.total {
            return Err(GgufError::Truncated { what, offset }.into());
        }
        let end = usize::try_from(needed).map_err(|_| GgufError::Truncated { what, offset })?;
        match self.buf.get(self.pos..end) {
            Some(bytes) => {
                self.pos = end;
                Ok(bytes)
            }
            None => Err(ParseError::NeedMore {
                needed,
                what,
                offset,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        let [b] = self.array::<1>(what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<String, ParseError> {
        let len = self.u64(what)?;
        let offset = self.offset();
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 { what, offset }.into()),
        }
    }

    /// Fail unless `count` items of at least `min_bytes` each can still fit.
    fn check_count(&self, count: u64, min_bytes: u64, what: &'static str) -> Result<(), GgufError> {
        match count.checked_mul(min_bytes) {
            Some(n) if n <= self.remaining_total() => Ok(()),
            _ => Err(GgufError::TooMany { what, count }),
        }
    }

    fn count_values(&mut self, n: u64) -> Result<(), GgufError> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_METADATA_VALUES {
            return Err(GgufError::TooMany {
                what: "metadata values",
                count: self.values,
            });
        }
        Ok(())
    }

    fn value_type(&mut self) -> Result<ValueType, ParseError> {
        let offset = self.offset();
        let id = self.u32("value type")?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType { id, offset }.into())
    }

    /// One value of type `ty`; `depth` is the number of enclosing arrays.
    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value, ParseError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8("u8 value")?),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array("i8 value")?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16 value")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16 value")?)),
            ValueType::U32 => Value::U32(self.u32("u32 value")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32 value")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32 value")?)),
            ValueType::U64 => Value::U64(self.u64("u64 value")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64 value")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64 value")?)),
            ValueType::Bool => {
                let offset = self.offset();
                match self.u8("bool value")? {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    byte => return Err(GgufError::InvalidBool { byte, offset }.into()),
                }
            }
            ValueType::String => Value::String(self.string("string value")?),
            ValueType::Array => {
                let offset = self.offset();
                if depth >= MAX_NESTING {
                    return Err(GgufError::NestingTooDeep { offset }.into());
                }
                let elem_ty = self.value_type()?;
                let count = self.u64("array length")?;
                self.check_count(count, min_encoded_size(elem_ty), "array elements")?;
                self.count_values(count)?;
                let cap = usize::try_from(count)
                    .unwrap_or(usize::MAX)
                    .min(MAX_PREALLOC);
                let mut elems = Vec::with_capacity(cap);
                for _ in 0..count {
                    elems.push(self.value(elem_ty, depth + 1)?);
                }
                Value::Array(elem_ty, elems)
            }
        })
    }
}

/// Fewest bytes one value of type `ty` takes in a file.
fn min_encoded_size(ty: ValueType) -> u64 {
    match ty {
        ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
        ValueType::U16 | ValueType::I16 => 2,
        ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
        ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
        ValueType::Array => 4 + 8,
    }
}

/// `v` rounded up to a multiple of the power of two `align`.
pub(crate) fn align_up(v: u64, align: u64) -> Option<u64> {
    let mask = align - 1;
    v.checked_add(mask).map(|x| x & !mask)
}

/// Parse everything in front of the data section from `buf`, the first bytes
/// of a file of `total` bytes (`u64::MAX` when unknown).
pub(crate) fn parse_header(buf: &[u8], total: u64) -> Result<Header, ParseError> {
    let mut c = Cursor {
        buf,
        pos: 0,
        total,
        values: 0,
    };
    let magic = c.array::<4>("magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic(magic).into());
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        let swapped = version.swap_bytes();
        if version & 0xffff == 0 && (1..=3).contains(&swapped) {
            return Err(GgufError::BigEndian.into());
        }
        return Err(GgufError::UnsupportedVersion(version).into());
    }
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata count")?;
    // Both sections follow: each needs its minimum size.
    c.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, "tensors")?;
    c.check_count(kv_count, MIN_KV_BYTES, "metadata entries")?;
    c.count_values(kv_count)?;

    let kv_cap = usize::try_from(kv_count)
        .unwrap_or(usize::MAX)
        .min(MAX_PREALLOC);
    let mut metadata = Vec::with_capacity(kv_cap);
    let mut meta_index = HashMap::with_capacity(kv_cap);
    for _ in 0..kv_count {
        let key = c.string("metadata key")?;
        let ty = c.value_type()?;
        let value = c.value(ty, 0)?;
        if meta_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey(key).into());
        }
        meta_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match meta_index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => return Err(GgufError::BadAlignment(format!("{v:?}")).into()),
    };

    let t_cap = usize::try_from(tensor_count)
        .unwrap_or(usize::MAX)
        .min(MAX_PREALLOC);
    let mut tensors = Vec::with_capacity(t_cap);
    let mut tensor_index = HashMap::with_capacity(t_cap);
    for _ in 0..tensor_count {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, n_dims }.into());
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dimension")?);
        }
        let id = c.u32("tensor type")?;
        let offset = c.u64("tensor offset")?;
        let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            id,
        })?;
        let n_bytes = tensor_n_bytes(&name, &dims, ty)?;
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor(name).into());
        }
        tensor_index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }

    let header_end = c.offset();
    let data_offset = align_up(header_end, alignment).ok_or(GgufError::Truncated {
        what: "data section",
        offset: header_end,
    })?;
    let data_end = check_tensor_layout(&tensors, alignment)?;
    Ok(Header {
        version,
        metadata,
        meta_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
        data_end,
    })
}

/// Byte size of a tensor of shape `dims` and type `ty`, checking that the
/// row length is whole blocks and that nothing overflows.
///
/// The product of the *non-zero* dims must fit in an i64 (ggml keeps counts
/// in i64). Checking non-zero dims, not the plain product, matters: a zero
/// dim makes the product 0, but `n_rows()` (the product of `dims[1..]`) of
/// `[0, 2^40, 2^40]` would still overflow.
pub(crate) fn tensor_n_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    let overflow = || GgufError::DimOverflow {
        name: name.to_owned(),
    };
    let mut nonzero: u64 = 1;
    for &d in dims.iter().filter(|&&d| d != 0) {
        nonzero = nonzero.checked_mul(d).ok_or_else(overflow)?;
    }
    if nonzero > i64::MAX as u64 {
        return Err(overflow());
    }
    let row_len = dims.first().copied().unwrap_or(1);
    if !row_len.is_multiple_of(ty.block_size() as u64) {
        return Err(GgufError::BadRowLength {
            name: name.to_owned(),
            ty,
            row_len,
        });
    }
    let row_bytes = ty.row_bytes(row_len).ok_or_else(overflow)?;
    // Cannot overflow: a sub-product of the checked non-zero product, or 0.
    let rows = dims
        .iter()
        .skip(1)
        .fold(1u64, |acc, &d| acc.saturating_mul(d));
    row_bytes.checked_mul(rows).ok_or_else(overflow)
}

/// Check alignment and overlaps of the tensors' data ranges; returns the end
/// of the last range (relative to the data section).
fn check_tensor_layout(tensors: &[TensorInfo], alignment: u64) -> Result<u64, GgufError> {
    let mut ranges = Vec::with_capacity(tensors.len());
    let mut data_end = 0u64;
    for t in tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let end = t
            .offset
            .checked_add(t.n_bytes)
            .ok_or_else(|| GgufError::TensorOutOfBounds {
                name: t.name.clone(),
                offset: t.offset,
                n_bytes: t.n_bytes,
                data_len: u64::MAX,
            })?;
        data_end = data_end.max(end);
        if t.n_bytes > 0 {
            ranges.push((t.offset, end, t));
        }
    }
    ranges.sort_unstable_by_key(|&(start, end, _)| (start, end));
    for pair in ranges.windows(2) {
        if let [(_, prev_end, prev), (start, _, cur)] = pair
            && start < prev_end
        {
            return Err(GgufError::TensorOverlap {
                first: prev.name.clone(),
                second: cur.name.clone(),
            });
        }
    }
    Ok(data_end)
}

/// Check that every tensor lies inside a data section of `data_len` bytes.
pub(crate) fn check_tensor_bounds(tensors: &[TensorInfo], data_len: u64) -> Result<(), GgufError> {
    for t in tensors {
        // Overflow was ruled out by `check_tensor_layout`; treat it as out of bounds anyway.
        let fits = t
            .offset
            .checked_add(t.n_bytes)
            .is_some_and(|end| end <= data_len);
        if !fits {
            return Err(GgufError::TensorOutOfBounds {
                name: t.name.clone(),
                offset: t.offset,
                n_bytes: t.n_bytes,
                data_len,
            });
        }
    }
    Ok(())
}

/// The bytes behind a [`GgufFile`].
enum Storage {
    Owned(Vec<u8>),
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mapped(m) => m,
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mapped(m) => write!(f, "Mapped({} bytes)", m.len()),
        }
    }
}

/// A parsed and fully validated GGUF file (v2 or v3).
///
/// Construction checks every tensor (known type, whole blocks per row, no
/// overflow, aligned offset, inside the file, no overlap), so the accessors
/// cannot fail afterwards. Tensor data is never copied: [`GgufFile::tensor_data`]
/// returns a view into the memory map or the owned buffer.
#[derive(Debug)]
pub struct GgufFile {
    version: u32,
    metadata: Vec<(String, Value)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    storage: Storage,
}

impl GgufFile {
    /// Memory-map and parse the file at `path` (native targets only).
    ///
    /// The map is read-only; tensor data is served from it without copying.
    /// The file must not be modified while the `GgufFile` is alive.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let file = std::fs::File::open(path.as_ref())?;
        // SAFETY: the map is read-only and private to this `GgufFile`. Mapping a
        // file is only unsound if another process truncates or rewrites it while
        // mapped; model files are treated as immutable, and this requirement is
        // documented on `open`. All reads go through bounds-checked slices.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Self::from_storage(Storage::Mapped(map))
    }

    /// Parse a file held in memory (wasm, tests). The buffer is kept, not copied.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let bytes = storage.bytes();
        let header = parse_header(bytes, bytes.len() as u64).map_err(ParseError::into_final)?;
        Self::from_header(header, storage)
    }

    /// Assemble a file from a parsed header and the whole file's bytes,
    /// checking that every tensor lies inside them.
    pub(crate) fn from_header_and_bytes(
        header: Header,
        bytes: Vec<u8>,
    ) -> Result<GgufFile, GgufError> {
        Self::from_header(header, Storage::Owned(bytes))
    }

    fn from_header(header: Header, storage: Storage) -> Result<GgufFile, GgufError> {
        let file_size = storage.bytes().len() as u64;
        let data_len = file_size.saturating_sub(header.data_offset);
        if !header.tensors.is_empty() && header.data_offset > file_size {
            return Err(GgufError::Truncated {
                what: "data section padding",
                offset: file_size,
            });
        }
        check_tensor_bounds(&header.tensors, data_len)?;
        Ok(GgufFile {
            version: header.version,
            metadata: header.metadata,
            meta_index: header.meta_index,
            tensors: header.tensors,
            tensor_index: header.tensor_index,
            alignment: header.alignment,
            data_offset: header.data_offset,
            storage,
        })
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section (header end rounded up to the alignment).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value stored under `key` (O(1)).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let &i = self.meta_index.get(key)?;
        self.metadata.get(i).map(|(_, v)| v)
    }

    /// The string stored under `key`, if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// The integer stored under `key` (any integer type), if non-negative.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// The array stored under `key`, if it is an array.
    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        self.get(key)?.as_array()
    }

    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name` (O(1)).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.tensor_index.get(name)?;
        self.tensors.get(i)
    }

    /// The data of `info` (`info.n_bytes` bytes), borrowed from the file.
    ///
    /// `info` should come from this file's [`GgufFile::tensors`]; a foreign
    /// info whose range lies outside this file gives an empty slice.
    ///
    /// The slice's file offset is a multiple of [`GgufFile::alignment`]; its
    /// address is too for memory-mapped files (page-aligned base), while an
    /// owned buffer only guarantees the allocator's alignment, so reinterpret
    /// it as wider types with `align_to`/`bytemuck`-style checked casts.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let range = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some((start, start.checked_add(info.n_bytes)?)))
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        range
            .and_then(|r| self.storage.bytes().get(r))
            .unwrap_or(&[])
    }

    /// The data of the tensor named `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The data section (from [`GgufFile::data_offset`] to the end of the file).
    pub fn data_section(&self) -> &[u8] {
        let start = usize::try_from(self.data_offset).unwrap_or(usize::MAX);
        self.storage.bytes().get(start..).unwrap_or(&[])
    }

    /// Whether the tensor data is memory-mapped (as opposed to held in a `Vec`).
    pub fn is_mapped(&self) -> bool {
        !matches!(self.storage, Storage::Owned(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-tensor file built by hand (no writer), 32-byte aligned.
    fn tiny_file() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&1u64.to_le_bytes()); // kv
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&(ValueType::U8 as u32).to_le_bytes());
        b.push(42);
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b't');
        b.extend_from_slice(&1u32.to_le_bytes()); // n_dims
        b.extend_from_slice(&2u64.to_le_bytes()); // dims[0]
        b.extend_from_slice(&(GgmlType::F32 as u32).to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes()); // offset
        b.resize(b.len().next_multiple_of(32), 0);
        b.extend_from_slice(&1.0f32.to_le_bytes());
        b.extend_from_slice(&(-2.0f32).to_le_bytes());
        b
    }

    #[test]
    fn from_bytes_parses_hand_built_file() {
        let f = GgufFile::from_bytes(tiny_file()).expect("valid");
        assert_eq!(f.get("k"), Some(&Value::U8(42)));
        assert_eq!(f.data_offset(), 96); // 24 + 14 (kv) + 33 (tensor info) = 71, padded
        let t = f.tensor("t").expect("tensor");
        assert_eq!(
            (t.n_elements(), t.n_rows(), t.row_len(), t.n_bytes),
            (2, 1, 2, 8)
        );
        let data = f.tensor_bytes("t").expect("data");
        assert_eq!(data.get(4..8), Some(&(-2.0f32).to_le_bytes()[..]));
        assert!(!f.is_mapped());
    }

    /// Exercises the `unsafe` memory map in `open`.
    #[test]
    fn open_maps_the_file() {
        let bytes = tiny_file();
        let path =
            std::env::temp_dir().join(format!("chord-gguf-unit-{}.gguf", std::process::id()));
        std::fs::write(&path, &bytes).expect("write temp file");
        let f = GgufFile::open(&path);
        let _ = std::fs::remove_file(&path);
        let f = f.expect("open");
        assert!(f.is_mapped());
        assert_eq!(f.as_bytes(), bytes.as_slice());
        assert_eq!(f.tensor_bytes("t").map(<[u8]>::len), Some(8));
        // Page-aligned map: the tensor's address is aligned like its offset.
        let addr = f.tensor_bytes("t").map_or(1, |d| d.as_ptr() as usize);
        assert_eq!(addr % 32, 0);
    }

    #[test]
    fn foreign_tensor_info_gives_empty_slice() {
        let f = GgufFile::from_bytes(tiny_file()).expect("valid");
        let foreign = TensorInfo {
            name: "x".into(),
            dims: vec![1 << 20],
            ty: GgmlType::F32,
            offset: u64::MAX - 3,
            n_bytes: 1 << 22,
        };
        assert!(f.tensor_data(&foreign).is_empty());
    }

    #[test]
    fn file_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GgufFile>();
        assert_send_sync::<super::super::GgufStreamLoader>();
    }
}
