//! Hostile and malformed GGUF input: every case must give a typed error,
//! quickly, without panicking or allocating according to the claimed sizes.

use std::time::{Duration, Instant};

use chord_resources::GgmlType;
use chord_resources::gguf::{
    GgufError, GgufFile, GgufStreamLoader, GgufWriter, MAX_METADATA_VALUES, MAX_NESTING, Value,
    ValueType,
};

/// Hand-assembled GGUF bytes.
#[derive(Clone, Default)]
struct Raw(Vec<u8>);

impl Raw {
    /// Magic, version 3 and the two counts.
    fn header(n_tensors: u64, n_kv: u64) -> Raw {
        Raw::default()
            .bytes(b"GGUF")
            .u32(3)
            .u64(n_tensors)
            .u64(n_kv)
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn str(self, s: &[u8]) -> Raw {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A key/value pair with a u32 value.
    fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.str(key.as_bytes()).u32(ValueType::U32 as u32).u32(v)
    }
    /// A tensor info.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Zero padding to a multiple of `align`, then `n` data bytes.
    fn data(mut self, align: usize, n: usize) -> Raw {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + n, 0x5a);
        self
    }
}

/// Parse with `from_bytes` and with the stream loader (with and without the
/// length announced, in 5-byte chunks); all three must fail, quickly. Returns
/// the `from_bytes` error.
fn must_fail(bytes: &[u8]) -> GgufError {
    let t0 = Instant::now();
    let err = match GgufFile::from_bytes(bytes.to_vec()) {
        Ok(_) => panic!("accepted hostile input"),
        Err(e) => e,
    };
    for announce in [true, false] {
        let mut l = GgufStreamLoader::new();
        if announce {
            l = l.with_expected_len(bytes.len() as u64);
        }
        let streamed = bytes
            .chunks(5)
            .try_for_each(|c| l.push(c))
            .and_then(|()| l.finish());
        assert!(
            streamed.is_err(),
            "stream loader accepted hostile input ({err})"
        );
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    err
}

/// A small but complete file: every value type, three tensors.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .expect("md");
    w.add_metadata("a.u8", Value::U8(1)).expect("md");
    w.add_metadata("a.i16", Value::I16(-2)).expect("md");
    w.add_metadata("a.f64", Value::F64(0.5)).expect("md");
    w.add_metadata("a.bool", Value::Bool(true)).expect("md");
    w.add_metadata(
        "a.arr",
        Value::Array(
            ValueType::Array,
            vec![
                Value::Array(ValueType::String, vec![Value::String("x".into())]),
                Value::Array(ValueType::U64, vec![]),
            ],
        ),
    )
    .expect("md");
    w.add_tensor("a", &[32, 2], GgmlType::Q8_0, vec![1u8; 68])
        .expect("t");
    w.add_tensor("b", &[3], GgmlType::F32, vec![2u8; 12])
        .expect("t");
    w.add_tensor("c", &[256], GgmlType::Q4K, vec![3u8; 144])
        .expect("t");
    w.to_bytes().expect("write")
}

#[test]
fn every_prefix_of_a_file_is_rejected() {
    let bytes = small_file();
    let f = GgufFile::from_bytes(bytes.clone()).expect("full file");
    // The writer pads after the last tensor: prefixes that only lose padding stay valid.
    let needed = f
        .tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes)
        .max()
        .expect("tensors");
    assert!(needed < bytes.len() as u64);
    for len in 0..bytes.len() {
        let prefix = &bytes[..len];
        let res = GgufFile::from_bytes(prefix.to_vec());
        let mut l = GgufStreamLoader::new();
        let streamed = l.push(prefix).and_then(|()| l.finish());
        if (len as u64) < needed {
            let err = res.expect_err("prefix accepted");
            assert!(
                matches!(
                    err,
                    GgufError::Truncated { .. }
                        | GgufError::TooMany { .. }
                        | GgufError::TensorOutOfBounds { .. }
                ),
                "prefix {len}: {err}"
            );
            assert!(streamed.is_err(), "stream accepted prefix {len}");
        } else {
            assert_eq!(res.expect("padding-only cut").tensors(), f.tensors());
            assert_eq!(streamed.expect("stream").tensors(), f.tensors());
        }
        // Announcing the full length and stopping early is always an error.
        let mut l = GgufStreamLoader::new().with_expected_len(bytes.len() as u64);
        assert!(
            l.push(prefix).and_then(|()| l.finish()).is_err(),
            "announced, prefix {len}"
        );
    }
}

#[test]
fn corrupting_any_header_byte_never_panics() {
    let bytes = small_file();
    let header_len = GgufFile::from_bytes(bytes.clone())
        .expect("ok")
        .data_offset() as usize;
    let mut n_err = 0;
    for pos in 0..header_len {
        for v in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[pos] = v;
            let res = GgufFile::from_bytes(b.clone());
            let mut l = GgufStreamLoader::new().with_expected_len(b.len() as u64);
            let streamed = l.push(&b).and_then(|()| l.finish());
            assert_eq!(res.is_ok(), streamed.is_ok(), "byte {pos} = {v:#x}");
            n_err += usize::from(res.is_err());
        }
    }
    // Most corruptions are detected (the rest hit values or padding).
    assert!(n_err > header_len, "{n_err} errors for {header_len} bytes");
}

#[test]
fn bad_magic_and_versions() {
    let err = must_fail(&Raw::default().bytes(b"GGML").u32(3).u64(0).u64(0).0);
    assert!(
        matches!(err, GgufError::BadMagic(m) if &m == b"GGML"),
        "{err}"
    );
    for v in [0u32, 1, 4, 0xdead_beef] {
        let err = must_fail(&Raw::default().bytes(b"GGUF").u32(v).u64(0).u64(0).0);
        assert!(
            matches!(err, GgufError::UnsupportedVersion(x) if x == v),
            "{err}"
        );
    }
    // A big-endian file: version and counts byte-swapped.
    let be = Raw::default()
        .bytes(b"GGUF")
        .bytes(&3u32.to_be_bytes())
        .bytes(&[0; 16]);
    assert!(matches!(must_fail(&be.0), GgufError::BigEndian));
    assert!(matches!(
        must_fail(b""),
        GgufError::Truncated {
            what: "magic",
            offset: 0
        }
    ));
    assert!(matches!(
        must_fail(b"GGUF\x03\0\0"),
        GgufError::Truncated {
            what: "version",
            offset: 4
        }
    ));
}

#[test]
fn absurd_counts_fail_fast() {
    for n in [1u64 << 60, u64::MAX, 1000] {
        let err = must_fail(&Raw::header(n, 0).0);
        assert!(
            matches!(err, GgufError::TooMany { what: "tensors", count } if count == n),
            "{err}"
        );
        let err = must_fail(&Raw::header(0, n).0);
        assert!(
            matches!(err, GgufError::TooMany { what: "metadata entries", count } if count == n),
            "{err}"
        );
    }
    // Array of 2^60 u64 elements; array of 2^61 arrays.
    for (elem, n) in [
        (ValueType::U64, 1u64 << 60),
        (ValueType::Array, 1 << 61),
        (ValueType::U8, u64::MAX),
    ] {
        let raw = Raw::header(0, 1)
            .str(b"k")
            .u32(ValueType::Array as u32)
            .u32(elem as u32)
            .u64(n)
            .bytes(&[0; 64]);
        let err = must_fail(&raw.0);
        assert!(
            matches!(err, GgufError::TooMany { what: "array elements", count } if count == n),
            "{err}"
        );
    }
    // String lengths: 2^63, u64::MAX (offset overflow), and one byte too many.
    let body = [b'a'; 20];
    for len in [1u64 << 63, u64::MAX, 21] {
        let raw = Raw::header(0, 1).u64(len).bytes(&body);
        let err = must_fail(&raw.0);
        assert!(
            matches!(
                err,
                GgufError::Truncated {
                    what: "metadata key",
                    offset: 32
                }
            ),
            "{err}"
        );
        let raw = Raw::header(0, 1)
            .str(b"k")
            .u32(ValueType::String as u32)
            .u64(len)
            .bytes(&body);
        let err = must_fail(&raw.0);
        assert!(
            matches!(
                err,
                GgufError::Truncated {
                    what: "string value",
                    ..
                }
            ),
            "{err}"
        );
    }
    let raw = Raw::header(1, 0).u64(1 << 62).bytes(&[b'x'; 40]);
    assert!(matches!(
        must_fail(&raw.0),
        GgufError::Truncated {
            what: "tensor name",
            ..
        }
    ));
}

#[test]
fn metadata_value_budget_is_enforced() {
    // One u8 array just over the limit, in a file large enough to hold it.
    let n = MAX_METADATA_VALUES;
    let raw = Raw::header(0, 1)
        .str(b"k")
        .u32(ValueType::Array as u32)
        .u32(ValueType::U8 as u32)
        .u64(n);
    let mut bytes = raw.0;
    bytes.resize(bytes.len() + n as usize, 0);
    let err = GgufFile::from_bytes(bytes).expect_err("over budget");
    assert!(
        matches!(
            err,
            GgufError::TooMany {
                what: "metadata values",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn tensor_shape_errors() {
    let file = |dims: &[u64], ty: u32| Raw::header(1, 0).tensor("t", dims, ty, 0).data(32, 64).0;
    // Products that overflow u64, exceed i64, or whose byte size overflows.
    for dims in [
        &[1u64 << 32, 1 << 32, 2][..],
        &[u64::MAX, 2],
        &[1 << 32, 1 << 31],
        &[1 << 62],
    ] {
        let err = must_fail(&file(dims, GgmlType::F32 as u32));
        assert!(
            matches!(err, GgufError::DimOverflow { ref name } if name == "t"),
            "{dims:?}: {err}"
        );
    }
    // Zero dims make the product 0, but sub-products like n_rows() must not
    // overflow either (found by the fuzzer).
    for dims in [
        &[0u64, 1 << 40, 1 << 40][..],
        &[1 << 40, 1 << 40, 0],
        &[0, 1 << 32, 1 << 31],
    ] {
        let err = must_fail(&file(dims, GgmlType::F32 as u32));
        assert!(
            matches!(err, GgufError::DimOverflow { .. }),
            "{dims:?}: {err}"
        );
    }
    let f = GgufFile::from_bytes(file(&[0, 1 << 31, 1 << 31], GgmlType::F32 as u32)).expect("fits");
    let t = f.tensor("t").expect("t");
    assert_eq!((t.n_elements(), t.n_rows(), t.n_bytes), (0, 1 << 62, 0));
    let err = must_fail(&file(&[1, 1, 1, 1, 1], 0));
    assert!(
        matches!(err, GgufError::TooManyDims { n_dims: 5, .. }),
        "{err}"
    );
    let err = must_fail(&Raw::header(1, 0).str(b"t").u32(u32::MAX).bytes(&[0; 64]).0);
    assert!(
        matches!(
            err,
            GgufError::TooManyDims {
                n_dims: u32::MAX,
                ..
            }
        ),
        "{err}"
    );
    let err = must_fail(&file(&[33], GgmlType::Q4_0 as u32));
    assert!(
        matches!(
            err,
            GgufError::BadRowLength {
                row_len: 33,
                ty: GgmlType::Q4_0,
                ..
            }
        ),
        "{err}"
    );
    for id in [4u32, 5, 16, 29, 31, 39, u32::MAX] {
        let err = must_fail(&file(&[32], id));
        assert!(
            matches!(err, GgufError::UnknownTensorType { id: x, ref name } if x == id && name == "t"),
            "{err}"
        );
    }
    // A valid baseline so the cases above fail for the intended reason.
    assert!(GgufFile::from_bytes(file(&[16], GgmlType::F32 as u32)).is_ok());
}

#[test]
fn tensor_placement_errors() {
    // Past EOF, by one byte and far away.
    for offset in [32u64, 1 << 40, u64::MAX - 31] {
        let raw = Raw::header(1, 0).tensor("t", &[16], 0, offset).data(32, 64);
        let err = must_fail(&raw.0);
        assert!(
            matches!(err, GgufError::TensorOutOfBounds { .. }),
            "{offset}: {err}"
        );
    }
    let raw = Raw::header(1, 0).tensor("t", &[16], 0, 8).data(32, 128);
    let err = must_fail(&raw.0);
    assert!(
        matches!(
            err,
            GgufError::MisalignedTensor {
                offset: 8,
                alignment: 32,
                ..
            }
        ),
        "{err}"
    );
    // Overlap, in either order, and a tensor inside another.
    for (oa, ob, nb) in [(0u64, 32u64, 16u64), (32, 0, 16), (0, 32, 1)] {
        let raw = Raw::header(2, 0)
            .tensor("a", &[16], 0, oa)
            .tensor("b", &[nb], 0, ob)
            .data(32, 256);
        let err = must_fail(&raw.0);
        assert!(matches!(err, GgufError::TensorOverlap { .. }), "{err}");
    }
    // Touching is fine; zero-sized tensors overlap nothing.
    let raw = Raw::header(3, 0)
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 32)
        .tensor("z", &[0, 4], 0, 32)
        .data(32, 64);
    let f = GgufFile::from_bytes(raw.0).expect("adjacent");
    assert_eq!(f.tensor_bytes("z"), Some(&[][..]));
    assert_eq!(f.tensor_bytes("b").map(<[u8]>::len), Some(32));
    // Tensors present but the padding before the data section is cut off.
    let raw = Raw::header(1, 0).tensor("t", &[0], 0, 0);
    assert!(matches!(
        must_fail(&raw.0),
        GgufError::Truncated {
            what: "data section padding",
            ..
        }
    ));
    let raw = Raw::header(2, 0)
        .tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .data(32, 64);
    assert!(matches!(must_fail(&raw.0), GgufError::DuplicateTensor(n) if n == "t"));
}

#[test]
fn alignment_errors() {
    for a in [0u32, 3, 48, 0x8000_0001] {
        let raw = Raw::header(0, 1).kv_u32("general.alignment", a);
        let err = must_fail(&raw.0);
        assert!(matches!(err, GgufError::BadAlignment(_)), "{a}: {err}");
    }
    let raw = Raw::header(0, 1)
        .str(b"general.alignment")
        .u32(ValueType::U64 as u32)
        .u64(32);
    assert!(matches!(must_fail(&raw.0), GgufError::BadAlignment(_)));
    // Alignment 64 makes an offset of 32 misaligned.
    let raw = Raw::header(1, 1)
        .kv_u32("general.alignment", 64)
        .tensor("t", &[4], 0, 32)
        .data(64, 128);
    assert!(matches!(
        must_fail(&raw.0),
        GgufError::MisalignedTensor { alignment: 64, .. }
    ));
    // Alignment 1: any offset.
    let raw = Raw::header(1, 1)
        .kv_u32("general.alignment", 1)
        .tensor("t", &[1], 0, 3)
        .data(1, 7);
    let f = GgufFile::from_bytes(raw.0).expect("alignment 1");
    assert_eq!(f.tensor("t").map(|t| t.offset), Some(3));
}

#[test]
fn value_errors() {
    let kv = |ty: u32, body: &[u8]| Raw::header(0, 1).str(b"k").u32(ty).bytes(body).0;
    for id in [13u32, 99, u32::MAX] {
        let err = must_fail(&kv(id, &[0; 16]));
        assert!(
            matches!(err, GgufError::UnknownValueType { id: x, offset: 33 } if x == id),
            "{err}"
        );
        // As an array element type.
        let mut body = id.to_le_bytes().to_vec();
        body.extend_from_slice(&1u64.to_le_bytes());
        let err = must_fail(&kv(ValueType::Array as u32, &body));
        assert!(
            matches!(err, GgufError::UnknownValueType { id: x, offset: 37 } if x == id),
            "{err}"
        );
    }
    let err = must_fail(&kv(ValueType::Bool as u32, &[2]));
    assert!(
        matches!(
            err,
            GgufError::InvalidBool {
                byte: 2,
                offset: 37
            }
        ),
        "{err}"
    );

    let bad_utf8: &[u8] = b"\xff\xfe";
    let err = must_fail(&Raw::header(0, 1).str(bad_utf8).u32(0).bytes(&[0]).0);
    assert!(
        matches!(
            err,
            GgufError::InvalidUtf8 {
                what: "metadata key",
                offset: 32
            }
        ),
        "{err}"
    );
    let err = must_fail(&kv(
        ValueType::String as u32,
        &Raw::default().str(b"ok\xc3").0,
    ));
    assert!(
        matches!(
            err,
            GgufError::InvalidUtf8 {
                what: "string value",
                ..
            }
        ),
        "{err}"
    );
    let raw = Raw::header(1, 0)
        .str(b"\xc0\xafname")
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .data(32, 16);
    assert!(matches!(
        must_fail(&raw.0),
        GgufError::InvalidUtf8 {
            what: "tensor name",
            ..
        }
    ));

    let raw = Raw::header(0, 2).kv_u32("dup", 1).kv_u32("dup", 2);
    assert!(matches!(must_fail(&raw.0), GgufError::DuplicateKey(k) if k == "dup"));
}

#[test]
fn nesting_is_capped() {
    let nested = |depth: usize| {
        let mut r = Raw::header(0, 1).str(b"k").u32(ValueType::Array as u32);
        for _ in 1..depth {
            r = r.u32(ValueType::Array as u32).u64(1);
        }
        r.u32(ValueType::U8 as u32).u64(1).bytes(&[7]).0
    };
    let f = GgufFile::from_bytes(nested(MAX_NESTING)).expect("max depth");
    let mut v = f.get("k").expect("k");
    for _ in 1..MAX_NESTING {
        v = v.as_array().and_then(|a| a.first()).expect("nested");
    }
    assert_eq!(v, &Value::Array(ValueType::U8, vec![Value::U8(7)]));
    assert!(matches!(
        must_fail(&nested(MAX_NESTING + 1)),
        GgufError::NestingTooDeep { .. }
    ));
    // Very deep nesting does not overflow the stack.
    assert!(matches!(
        must_fail(&nested(100_000)),
        GgufError::NestingTooDeep { .. }
    ));
}

#[test]
fn stream_with_unknown_length_waits_then_fails() {
    // 2^50 tensors (2^50 × 24 bytes fits a u64) and no announced length: the
    // loader can only wait for data; it buffers what arrives (nothing more)
    // and fails at the end.
    // The first tensor name claims 2^40 bytes.
    let raw = Raw::header(1 << 50, 0).u64(1 << 40).bytes(&[b'n'; 992]);
    let mut l = GgufStreamLoader::new();
    l.push(&raw.0).expect("waits for more");
    assert!(!l.header_parsed());
    assert_eq!(l.bytes_received(), 1024);
    assert!(matches!(
        l.finish(),
        Err(GgufError::TooMany {
            what: "tensors",
            ..
        })
    ));
    // With the length announced it fails as soon as the counts are in.
    let mut l = GgufStreamLoader::new().with_expected_len(1 << 20);
    let err = l.push(&raw.0[..24]).expect_err("fast");
    assert!(
        matches!(
            err,
            GgufError::TooMany {
                what: "tensors",
                ..
            }
        ),
        "{err}"
    );
    // 2^60 tensors cannot fit any file (2^60 × 24 overflows a u64): fails at once.
    let mut l = GgufStreamLoader::new();
    let err = l.push(&Raw::header(1 << 60, 0).0).expect_err("fast");
    assert!(
        matches!(
            err,
            GgufError::TooMany {
                what: "tensors",
                ..
            }
        ),
        "{err}"
    );
}
