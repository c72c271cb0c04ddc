//! Writer → reader round trips, memory-mapped opening, and the stream loader.

use chord_resources::GgmlType;
use chord_resources::gguf::{
    DEFAULT_ALIGNMENT, GgufError, GgufFile, GgufStreamLoader, GgufWriter, MAX_NESTING, Value,
    ValueType,
};

/// xorshift64*: deterministic test data without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn scalars() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(u8::MAX)),
        ("t.i8", Value::I8(i8::MIN)),
        ("t.u16", Value::U16(0xbeef)),
        ("t.i16", Value::I16(-12345)),
        ("t.u32", Value::U32(u32::MAX)),
        ("t.i32", Value::I32(i32::MIN)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool.true", Value::Bool(true)),
        ("t.bool.false", Value::Bool(false)),
        ("t.string", Value::String("héllo ✓ \u{1F600}".into())),
        ("t.string.empty", Value::String(String::new())),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.f32.inf", Value::F32(f32::NEG_INFINITY)),
    ]
}

fn all_type_ids() -> [ValueType; 13] {
    use ValueType::*;
    [
        U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
    ]
}

/// Metadata covering every value type, arrays of every element type, empty
/// arrays of every element type, and nested arrays.
fn rich_metadata() -> Vec<(String, Value)> {
    let mut md: Vec<(String, Value)> = scalars()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (k, v) in scalars() {
        if let Some(t) = k.strip_prefix("t.") {
            md.push((
                format!("arr.{t}"),
                Value::Array(v.value_type(), vec![v.clone(), v.clone(), v]),
            ));
        }
    }
    for ty in all_type_ids() {
        md.push((format!("empty.{ty:?}"), Value::Array(ty, Vec::new())));
    }
    let strings = |xs: &[&str]| {
        Value::Array(
            ValueType::String,
            xs.iter().map(|s| Value::String((*s).to_owned())).collect(),
        )
    };
    md.push((
        "nested.2".into(),
        Value::Array(
            ValueType::Array,
            vec![
                strings(&["a", "bc"]),
                strings(&[]),
                Value::Array(ValueType::U8, vec![Value::U8(7)]),
            ],
        ),
    ));
    // MAX_NESTING levels of arrays: the deepest the reader accepts.
    let mut deep = Value::Array(ValueType::I32, vec![Value::I32(-1), Value::I32(2)]);
    for _ in 1..MAX_NESTING {
        deep = Value::Array(ValueType::Array, vec![deep.clone(), deep]);
    }
    md.push(("nested.max".into(), deep));
    md.push((
        "nested.empty".into(),
        Value::Array(ValueType::Array, Vec::new()),
    ));
    md
}

#[test]
fn every_value_type_round_trips() {
    let md = rich_metadata();
    let mut w = GgufWriter::new();
    for (k, v) in &md {
        w.add_metadata(k.clone(), v.clone()).expect("add");
    }
    let bytes = w.to_bytes().expect("write");
    assert_eq!(bytes.len() as u64, w.file_len().expect("len"));
    let f = GgufFile::from_bytes(bytes).expect("read");
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), DEFAULT_ALIGNMENT);
    assert_eq!(f.metadata(), md.as_slice());
    for (k, v) in &md {
        assert_eq!(f.get(k), Some(v), "{k}");
    }
    assert!(f.tensors().is_empty());
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.data_offset(), f.file_size());
}

#[test]
fn float_bit_patterns_survive() {
    let nan32 = f32::from_bits(0x7fc0_1234);
    let nan64 = f64::from_bits(0x7ff8_0000_dead_beef);
    let mut w = GgufWriter::new();
    w.add_metadata("nan32", Value::F32(nan32)).expect("add");
    w.add_metadata("nan64", Value::F64(nan64)).expect("add");
    w.add_metadata("negzero", Value::F32(-0.0)).expect("add");
    let f = GgufFile::from_bytes(w.to_bytes().expect("write")).expect("read");
    let Some(Value::F32(a)) = f.get("nan32") else {
        panic!("nan32")
    };
    let Some(Value::F64(b)) = f.get("nan64") else {
        panic!("nan64")
    };
    let Some(Value::F32(c)) = f.get("negzero") else {
        panic!("negzero")
    };
    assert_eq!(a.to_bits(), nan32.to_bits());
    assert_eq!(b.to_bits(), nan64.to_bits());
    assert_eq!(c.to_bits(), (-0.0f32).to_bits());
}

/// Dims for a tensor of type `ty` with `n_dims` dimensions.
fn dims_for(ty: GgmlType, n_dims: usize, rng: &mut Rng) -> Vec<u64> {
    let mut dims = Vec::new();
    for i in 0..n_dims {
        if i == 0 {
            dims.push(ty.block_size() as u64 * (1 + rng.below(3)) as u64);
        } else {
            dims.push(1 + rng.below(3) as u64);
        }
    }
    dims
}

/// (name, dims, type, data) of a tensor.
type TensorSpec = (String, Vec<u64>, GgmlType, Vec<u8>);

fn tensor_file(alignment: u32, seed: u64) -> (Vec<u8>, Vec<TensorSpec>) {
    let mut rng = Rng(seed);
    let mut tensors = Vec::new();
    for (i, ty) in GgmlType::ALL.iter().copied().enumerate() {
        // 0..=4 dims; a 0-dimensional scalar only where one element is a whole block.
        let n_dims = if ty.block_size() == 1 {
            i % 5
        } else {
            1 + i % 4
        };
        let dims = dims_for(ty, n_dims, &mut rng);
        let n = ty
            .row_bytes(dims.first().copied().unwrap_or(1))
            .expect("row")
            * dims.iter().skip(1).product::<u64>();
        tensors.push((
            format!("tensor.{i}.{}", ty.name()),
            dims,
            ty,
            rng.bytes(n as usize),
        ));
    }
    // A tensor with a zero dimension has no data.
    tensors.push(("empty".into(), vec![32, 0], GgmlType::Q8_0, Vec::new()));
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("test".into()))
        .expect("md");
    w.set_alignment(alignment).expect("alignment");
    for (name, dims, ty, data) in &tensors {
        w.add_tensor(name.clone(), dims, *ty, data.as_slice())
            .expect("tensor");
    }
    (w.to_bytes().expect("write"), tensors)
}

#[test]
fn tensors_of_every_type_and_alignment_round_trip() {
    for (seed, alignment) in [1u32, 8, 32, 64, 4096].into_iter().enumerate() {
        let (bytes, tensors) = tensor_file(alignment, seed as u64 + 1);
        let f = GgufFile::from_bytes(bytes).expect("read");
        assert_eq!(f.alignment(), u64::from(alignment));
        assert_eq!(f.get("general.alignment"), Some(&Value::U32(alignment)));
        assert_eq!(f.data_offset() % u64::from(alignment), 0);
        assert_eq!(f.tensors().len(), tensors.len());
        for ((name, dims, ty, data), info) in tensors.iter().zip(f.tensors()) {
            assert_eq!(&info.name, name);
            assert_eq!(&info.dims, dims);
            assert_eq!(info.ty, *ty);
            assert_eq!(info.offset % u64::from(alignment), 0, "{name}");
            assert_eq!(info.n_bytes, data.len() as u64);
            assert_eq!(info.n_elements(), dims.iter().product::<u64>());
            assert_eq!(info.row_len(), dims.first().copied().unwrap_or(1));
            assert_eq!(info.n_rows() * info.row_bytes(), info.n_bytes);
            assert_eq!(f.tensor_data(info), data.as_slice(), "{name}");
            assert_eq!(f.tensor_bytes(name), Some(data.as_slice()));
            assert_eq!(f.tensor(name), Some(info));
        }
    }
}

#[test]
fn version_2_files_are_read() {
    let (mut bytes, tensors) = tensor_file(32, 9);
    bytes[4] = 2;
    let f = GgufFile::from_bytes(bytes).expect("v2");
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), tensors.len());
}

#[test]
fn writer_rejects_invalid_input() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", Value::U8(1)).expect("first");
    assert!(
        matches!(w.add_metadata("k", Value::U8(2)), Err(GgufError::DuplicateKey(k)) if k == "k")
    );
    let mixed = Value::Array(ValueType::U8, vec![Value::U8(1), Value::U16(2)]);
    assert!(matches!(
        w.add_metadata("mixed", mixed),
        Err(GgufError::ArrayTypeMismatch {
            expected: ValueType::U8,
            found: ValueType::U16,
            ..
        })
    ));
    let mut deep = Value::Array(ValueType::U8, vec![]);
    for _ in 0..MAX_NESTING {
        deep = Value::Array(ValueType::Array, vec![deep]);
    }
    assert!(matches!(
        w.add_metadata("deep", deep),
        Err(GgufError::NestingTooDeep { .. })
    ));
    for bad in [0u32, 3, 48] {
        assert!(
            matches!(w.set_alignment(bad), Err(GgufError::BadAlignment(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        w.add_metadata("general.alignment", Value::U64(32)),
        Err(GgufError::WrongValueType {
            found: ValueType::U64,
            ..
        })
    ));
    w.add_tensor("t", &[32], GgmlType::F32, vec![0u8; 128])
        .expect("tensor");
    assert!(matches!(
        w.add_tensor("t", &[32], GgmlType::F32, vec![0u8; 128]),
        Err(GgufError::DuplicateTensor(_))
    ));
    assert!(matches!(
        w.add_tensor("short", &[32], GgmlType::F32, vec![0u8; 127]),
        Err(GgufError::TensorSizeMismatch {
            expected: 128,
            actual: 127,
            ..
        })
    ));
    assert!(matches!(
        w.add_tensor("dims5", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0u8; 4]),
        Err(GgufError::TooManyDims { n_dims: 5, .. })
    ));
    assert!(matches!(
        w.add_tensor("row", &[33], GgmlType::Q4_0, vec![0u8; 18]),
        Err(GgufError::BadRowLength { row_len: 33, .. })
    ));
    // Failed adds left nothing behind.
    let f = GgufFile::from_bytes(w.to_bytes().expect("write")).expect("read");
    assert_eq!(f.metadata().len(), 1);
    assert_eq!(f.tensors().len(), 1);
}

#[test]
fn set_alignment_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::U8(1)).expect("a");
    w.set_alignment(64).expect("64");
    w.add_metadata("b", Value::U8(2)).expect("b");
    w.set_alignment(16).expect("16");
    assert_eq!(w.alignment(), 16);
    let f = GgufFile::from_bytes(w.to_bytes().expect("write")).expect("read");
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "general.alignment", "b"]);
    assert_eq!(f.alignment(), 16);
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("chord-gguf-{tag}-{}.gguf", std::process::id()))
}

#[test]
fn open_memory_maps_the_same_file() {
    let (bytes, tensors) = tensor_file(64, 3);
    let path = temp_path("open");
    let mut file = std::fs::File::create(&path).expect("create");
    let mut w = GgufWriter::new();
    w.set_alignment(64).expect("alignment");
    w.add_metadata("general.architecture", Value::String("test".into()))
        .expect("md");
    // Same content as `tensor_file`, but metadata order differs: compare tensors only.
    for (name, dims, ty, data) in &tensors {
        w.add_tensor(name.clone(), dims, *ty, data.as_slice())
            .expect("tensor");
    }
    let written = w.write_to(&mut file).expect("write");
    drop(file);
    let mapped = GgufFile::open(&path).expect("open");
    let _ = std::fs::remove_file(&path);
    assert!(mapped.is_mapped());
    assert_eq!(mapped.file_size(), written);
    let owned = GgufFile::from_bytes(bytes).expect("from_bytes");
    assert_eq!(mapped.tensors(), owned.tensors());
    for t in mapped.tensors() {
        assert_eq!(mapped.tensor_data(t), owned.tensor_data(t));
    }
    assert_eq!(
        mapped.data_section().len() as u64,
        mapped.file_size() - mapped.data_offset()
    );
}

#[test]
fn open_missing_file_is_io_error() {
    let err = GgufFile::open(temp_path("missing-never-created")).expect_err("missing");
    assert!(
        matches!(err, GgufError::Io(ref e) if e.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

#[test]
fn open_empty_file_is_truncated() {
    let path = temp_path("empty");
    std::fs::write(&path, b"").expect("write");
    let res = GgufFile::open(&path);
    let _ = std::fs::remove_file(&path);
    assert!(
        matches!(res, Err(GgufError::Truncated { offset: 0, .. })),
        "{res:?}"
    );
}

/// A file with a large header (20k strings) and ~3 MiB of tensor data.
fn big_file() -> Vec<u8> {
    let mut rng = Rng(77);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("stream".into()))
        .expect("md");
    let tokens = (0..20_000)
        .map(|i| Value::String(format!("tok{i}")))
        .collect();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(ValueType::String, tokens),
    )
    .expect("tokens");
    for (i, ty) in [GgmlType::Q4K, GgmlType::F32, GgmlType::Q8_0]
        .into_iter()
        .enumerate()
    {
        let row = if ty.block_size() == 1 {
            256
        } else {
            ty.block_size() as u64 * 4
        };
        let dims = [row, 3000 + i as u64];
        let n = ty.row_bytes(dims[0]).expect("row") * dims[1];
        w.add_tensor(format!("t{i}"), &dims, ty, rng.bytes(n as usize))
            .expect("tensor");
    }
    w.to_bytes().expect("write")
}

fn assert_same(a: &GgufFile, b: &GgufFile) {
    assert_eq!(a.version(), b.version());
    assert_eq!(a.metadata(), b.metadata());
    assert_eq!(a.tensors(), b.tensors());
    assert_eq!(a.data_offset(), b.data_offset());
    assert_eq!(a.alignment(), b.alignment());
    for t in a.tensors() {
        assert!(a.tensor_data(t) == b.tensor_data(t), "{}", t.name);
    }
}

fn stream(bytes: &[u8], chunk_sizes: &mut dyn FnMut() -> usize, expected: bool) -> GgufFile {
    let mut loader = GgufStreamLoader::new();
    if expected {
        loader = loader.with_expected_len(bytes.len() as u64);
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_sizes().min(rest.len()));
        loader.push(chunk).expect("push");
        rest = tail;
    }
    assert_eq!(loader.bytes_received(), bytes.len() as u64);
    loader.finish().expect("finish")
}

/// The streamed file holds all of `bytes`, or without an announced length
/// everything up to the end of the last tensor (the writer pads after it).
fn assert_whole(f: &GgufFile, bytes: &[u8], expected_len: bool) {
    if expected_len {
        assert!(f.as_bytes() == bytes);
    } else {
        assert_eq!(bytes.len() - f.as_bytes().len(), 16);
        assert!(bytes.starts_with(f.as_bytes()));
    }
}

#[test]
fn stream_loader_matches_from_bytes_for_any_chunking() {
    let bytes = big_file();
    assert!(bytes.len() > 3 << 20);
    let reference = GgufFile::from_bytes(bytes.clone()).expect("from_bytes");
    let mut rng = Rng(5);
    for expected in [true, false] {
        for size in [1usize, 7, 1 << 20] {
            let f = stream(&bytes, &mut || size, expected);
            assert_same(&f, &reference);
            assert_whole(&f, &bytes, expected);
        }
        let f = stream(&bytes, &mut || 1 + rng.below(100_000), expected);
        assert_same(&f, &reference);
        assert_whole(&f, &bytes, expected);
    }
}

#[test]
fn stream_loader_parses_header_early() {
    let bytes = big_file();
    let reference = GgufFile::from_bytes(bytes.clone()).expect("from_bytes");
    let header_end = reference.data_offset() as usize;
    let mut loader = GgufStreamLoader::new();
    // Up to the header end, byte by byte: the header cannot be complete yet.
    for b in &bytes[..header_end - 32] {
        loader.push(std::slice::from_ref(b)).expect("push");
    }
    assert!(!loader.header_parsed());
    assert_eq!(loader.total_len(), None);
    // Attempts are spaced geometrically, so the header is recognised within
    // at most as many bytes again.
    let mut pushed = header_end - 32;
    while !loader.header_parsed() {
        loader.push(&bytes[pushed..pushed + 1]).expect("push");
        pushed += 1;
        assert!(pushed <= 2 * header_end + 64, "header not recognised");
    }
    // Without an announced length the size is the end of the last tensor,
    // which leaves out the writer's 16 bytes of padding after it.
    assert_eq!(loader.total_len(), Some(bytes.len() as u64 - 16));
    loader.push(&bytes[pushed..]).expect("rest");
    let f = loader.finish().expect("finish");
    assert_same(&f, &reference);
}

#[test]
fn stream_loader_drops_trailing_bytes_without_expected_len() {
    let mut bytes = big_file();
    let reference = GgufFile::from_bytes(bytes.clone()).expect("from_bytes");
    bytes.extend_from_slice(&[0xAA; 1000]);
    let f = stream(&bytes, &mut || 4096, false);
    assert_same(&f, &reference);
    // Without an announced length the file ends with the last tensor's data.
    let last = reference.tensors().last().expect("tensors");
    assert_eq!(
        f.file_size(),
        reference.data_offset() + last.offset + last.n_bytes
    );
    assert!(f.file_size() <= reference.file_size());
}

#[test]
fn stream_loader_errors() {
    let bytes = big_file();
    let len = bytes.len() as u64;

    // More than announced.
    let mut l = GgufStreamLoader::new().with_expected_len(len - 1);
    let err = l.push(&bytes).expect_err("too much");
    assert!(
        matches!(err, GgufError::TooMuchData { expected } if expected == len - 1),
        "{err}"
    );
    // Spent after an error.
    assert!(matches!(l.push(b"x"), Err(GgufError::StreamFailed)));
    assert!(matches!(l.push(b""), Err(GgufError::StreamFailed)));
    assert!(matches!(l.finish(), Err(GgufError::StreamFailed)));

    // Ends early.
    let mut l = GgufStreamLoader::new().with_expected_len(len);
    l.push(&bytes[..bytes.len() - 1]).expect("push");
    assert!(matches!(l.finish(), Err(GgufError::Truncated { .. })));
    let mut l = GgufStreamLoader::new();
    l.push(&bytes[..bytes.len() - 100]).expect("push");
    assert!(matches!(
        l.finish(),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
    let mut l = GgufStreamLoader::new();
    l.push(&bytes[..1000]).expect("push");
    // Cut inside the 20k-token array: its count no longer fits the file.
    let err = l.finish().expect_err("cut header");
    assert!(
        matches!(
            err,
            GgufError::TooMany {
                what: "array elements",
                count: 20_000
            }
        ),
        "{err}"
    );
    assert!(matches!(
        GgufStreamLoader::new().finish(),
        Err(GgufError::Truncated { offset: 0, .. })
    ));

    // Header larger than allowed.
    let mut l = GgufStreamLoader::new().with_max_header_bytes(4096);
    let err = l.push(&bytes).expect_err("header too large");
    assert!(
        matches!(err, GgufError::TooLarge { limit: 4096, .. }),
        "{err}"
    );

    // File larger than allowed.
    let mut l = GgufStreamLoader::new().with_max_file_bytes(1 << 20);
    let err = l.push(&bytes).expect_err("file too large");
    assert!(
        matches!(
            err,
            GgufError::TooLarge {
                limit: 0x10_0000,
                ..
            }
        ),
        "{err}"
    );

    // Bad magic fails on the first attempt, before the header could be complete.
    let mut l = GgufStreamLoader::new();
    let err = l
        .push(b"GGUX\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0")
        .expect_err("magic");
    assert!(matches!(err, GgufError::BadMagic(m) if &m == b"GGUX"));

    // An announced length too short for the tensors fails as soon as the header is in.
    let header_len = GgufFile::from_bytes(bytes.clone())
        .expect("ok")
        .data_offset() as usize;
    let mut l = GgufStreamLoader::new().with_expected_len(header_len as u64 + 10);
    let err = l.push(&bytes[..header_len + 10]).expect_err("layout");
    assert!(matches!(err, GgufError::TensorOutOfBounds { .. }), "{err}");
}

#[test]
fn zero_tensor_file_without_padding_is_accepted() {
    let mut w = GgufWriter::new();
    w.add_metadata("x", Value::U8(1)).expect("md");
    let mut bytes = w.to_bytes().expect("write");
    let padded = bytes.len();
    // Header is 24 + (8+1+4+1) = 38 bytes, padded to 64.
    bytes.truncate(38);
    let f = GgufFile::from_bytes(bytes.clone()).expect("unpadded");
    assert_eq!(f.data_offset(), padded as u64);
    assert!(f.data_section().is_empty());
    let s = stream(&bytes, &mut || 3, false);
    assert_eq!(s.get("x"), Some(&Value::U8(1)));
}
