//! [`GgufWriter`]: build a GGUF v3 file from metadata and tensors.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;

use super::error::GgufError;
use super::reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufFile, MAX_DIMS, MAX_NESTING, align_up,
    tensor_n_bytes,
};
use super::value::{Value, ValueType};
use crate::GgmlType;

/// One tensor waiting to be written.
#[derive(Debug)]
struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF v3 file.
///
/// Metadata keeps insertion order; tensors are laid out in insertion order,
/// each at an offset that is a multiple of the alignment, with zero padding
/// after every tensor (the layout llama.cpp and gguf-py produce). Tensor data
/// may be borrowed (`&'a [u8]`) or owned (`Vec<u8>`).
///
/// ```
/// use chord_resources::gguf::{GgufFile, GgufWriter, Value};
/// use chord_resources::GgmlType;
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.architecture", Value::String("llama".into()))?;
/// w.add_tensor("x", &[2], GgmlType::F32, vec![0u8; 8])?;
/// let file = GgufFile::from_bytes(w.to_bytes()?)?;
/// assert_eq!(file.architecture(), Some("llama"));
/// # Ok::<(), chord_resources::gguf::GgufError>(())
/// ```
#[derive(Debug)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
    alignment: u64,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty file with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// A writer holding `file`'s metadata and tensors (data borrowed), which
    /// rewrites it in the canonical packed layout.
    pub fn from_file(file: &'a GgufFile) -> Result<Self, GgufError> {
        let mut w = Self::new();
        for (key, value) in file.metadata() {
            w.add_metadata(key.clone(), value.clone())?;
        }
        for t in file.tensors() {
            w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t))?;
        }
        Ok(w)
    }

    /// Append a metadata entry.
    ///
    /// Fails on a duplicate key, an array whose elements are not all of its
    /// element type, arrays nested deeper than [`MAX_NESTING`], or a
    /// `general.alignment` that is not a power-of-two `Value::U32` (a valid
    /// one sets the alignment, like [`GgufWriter::set_alignment`]).
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: Value,
    ) -> Result<&mut Self, GgufError> {
        let key = key.into();
        if self.keys.contains(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        check_value(&key, &value, 0)?;
        if key == ALIGNMENT_KEY {
            self.alignment = alignment_from_value(&value)?;
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Set the alignment of the data section and tensor offsets, recording it
    /// as `general.alignment` (replacing an earlier value in place).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self, GgufError> {
        let value = Value::U32(alignment);
        self.alignment = alignment_from_value(&value)?;
        match self.metadata.iter_mut().find(|(k, _)| k == ALIGNMENT_KEY) {
            Some((_, v)) => *v = value,
            None => {
                self.keys.insert(ALIGNMENT_KEY.to_owned());
                self.metadata.push((ALIGNMENT_KEY.to_owned(), value));
            }
        }
        Ok(self)
    }

    /// The alignment the file will be written with.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Append a tensor of shape `dims` (ggml order: `dims[0]` is the row
    /// length) and type `ty`; `data` must hold exactly its bytes.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        let data = data.into();
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor(name));
        }
        let n_dims = u32::try_from(dims.len()).unwrap_or(u32::MAX);
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, n_dims });
        }
        let expected = tensor_n_bytes(&name, dims, ty)?;
        if expected != data.len() as u64 {
            return Err(GgufError::TensorSizeMismatch {
                name,
                expected,
                actual: data.len() as u64,
            });
        }
        self.names.insert(name.clone());
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// Offsets (relative to the data section) the tensors will get, and the
    /// padded size of the data section.
    fn layout(&self) -> Result<(Vec<u64>, u64), GgufError> {
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut pos = 0u64;
        for t in &self.tensors {
            offsets.push(pos);
            pos = pos
                .checked_add(t.data.len() as u64)
                .and_then(|end| align_up(end, self.alignment))
                .ok_or_else(|| GgufError::DimOverflow {
                    name: t.name.clone(),
                })?;
        }
        Ok((offsets, pos))
    }

    /// Size of the header (before padding) in bytes.
    fn header_len(&self) -> u64 {
        let mut n = 4 + 4 + 8 + 8;
        for (k, v) in &self.metadata {
            n += 8 + k.len() as u64 + 4 + encoded_len(v);
        }
        for t in &self.tensors {
            n += 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8;
        }
        n
    }

    /// Total size of the file [`GgufWriter::write_to`] produces.
    pub fn file_len(&self) -> Result<u64, GgufError> {
        let (_, data_len) = self.layout()?;
        align_up(self.header_len(), self.alignment)
            .and_then(|h| h.checked_add(data_len))
            .ok_or(GgufError::TooLarge {
                what: "GGUF file",
                size: u64::MAX,
                limit: u64::MAX,
            })
    }

    /// Write the file to `w`; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, mut w: W) -> Result<u64, GgufError> {
        let (offsets, _) = self.layout()?;
        let mut out = Counting {
            inner: &mut w,
            written: 0,
        };
        out.write_all(&GGUF_MAGIC)?;
        out.write_all(&3u32.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(&mut out, key)?;
            out.write_all(&(value.value_type() as u32).to_le_bytes())?;
            write_value(&mut out, value)?;
        }
        for (t, offset) in self.tensors.iter().zip(&offsets) {
            write_string(&mut out, &t.name)?;
            out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&t.ty.id().to_le_bytes())?;
            out.write_all(&offset.to_le_bytes())?;
        }
        self.pad(&mut out)?;
        for t in &self.tensors {
            out.write_all(&t.data)?;
            self.pad(&mut out)?;
        }
        out.flush()?;
        Ok(out.written)
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let len = self.file_len()?;
        let cap = usize::try_from(len).map_err(|_| GgufError::TooLarge {
            what: "GGUF file",
            size: len,
            limit: usize::MAX as u64,
        })?;
        let mut v = Vec::new();
        v.try_reserve_exact(cap)
            .map_err(|_| GgufError::OutOfMemory { bytes: len })?;
        self.write_to(&mut v)?;
        Ok(v)
    }

    fn pad(&self, out: &mut Counting<'_, impl Write>) -> Result<(), GgufError> {
        const ZEROS: [u8; 64] = [0; 64];
        let target = align_up(out.written, self.alignment).unwrap_or(out.written);
        let mut n = target - out.written;
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            out.write_all(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

/// A writer that counts bytes.
struct Counting<'w, W: Write> {
    inner: &'w mut W,
    written: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn alignment_from_value(value: &Value) -> Result<u64, GgufError> {
    match value {
        Value::U32(a) if a.is_power_of_two() => Ok(u64::from(*a)),
        Value::U32(a) => Err(GgufError::BadAlignment(format!(
            "{a} is not a power of two"
        ))),
        other => Err(GgufError::WrongValueType {
            key: ALIGNMENT_KEY.to_owned(),
            expected: ValueType::U32,
            found: other.value_type(),
        }),
    }
}

/// Check that arrays are homogeneous and not nested too deeply (same rule as the reader).
fn check_value(key: &str, value: &Value, depth: usize) -> Result<(), GgufError> {
    if let Value::Array(elem_ty, elems) = value {
        if depth >= MAX_NESTING {
            return Err(GgufError::NestingTooDeep { offset: 0 });
        }
        for e in elems {
            if e.value_type() != *elem_ty {
                return Err(GgufError::ArrayTypeMismatch {
                    key: key.to_owned(),
                    expected: *elem_ty,
                    found: e.value_type(),
                });
            }
            check_value(key, e, depth + 1)?;
        }
    }
    Ok(())
}

/// Encoded size of a value (without its type id).
fn encoded_len(value: &Value) -> u64 {
    match value {
        Value::U8(_) | Value::I8(_) | Value::Bool(_) => 1,
        Value::U16(_) | Value::I16(_) => 2,
        Value::U32(_) | Value::I32(_) | Value::F32(_) => 4,
        Value::U64(_) | Value::I64(_) | Value::F64(_) => 8,
        Value::String(s) => 8 + s.len() as u64,
        Value::Array(_, elems) => 4 + 8 + elems.iter().map(encoded_len).sum::<u64>(),
    }
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, value: &Value) -> std::io::Result<()> {
    match value {
        Value::U8(v) => w.write_all(&v.to_le_bytes()),
        Value::I8(v) => w.write_all(&v.to_le_bytes()),
        Value::U16(v) => w.write_all(&v.to_le_bytes()),
        Value::I16(v) => w.write_all(&v.to_le_bytes()),
        Value::U32(v) => w.write_all(&v.to_le_bytes()),
        Value::I32(v) => w.write_all(&v.to_le_bytes()),
        Value::F32(v) => w.write_all(&v.to_le_bytes()),
        Value::U64(v) => w.write_all(&v.to_le_bytes()),
        Value::I64(v) => w.write_all(&v.to_le_bytes()),
        Value::F64(v) => w.write_all(&v.to_le_bytes()),
        Value::Bool(b) => w.write_all(&[u8::from(*b)]),
        Value::String(s) => write_string(w, s),
        Value::Array(elem_ty, elems) => {
            w.write_all(&(*elem_ty as u32).to_le_bytes())?;
            w.write_all(&(elems.len() as u64).to_le_bytes())?;
            for e in elems {
                write_value(w, e)?;
            }
            Ok(())
        }
    }
}
