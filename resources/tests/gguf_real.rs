//! Real model files from `$CHORD_MODELS` (skipped when absent).
//!
//! Expected values were read with gguf-py 0.19.0 (`gguf.GGUFReader`); the
//! hashes are FNV-1a 64 over the tensor's bytes.

use std::path::PathBuf;
use std::time::Instant;

use chord_resources::GgmlType;
use chord_resources::gguf::{GgufFile, GgufStreamLoader, GgufWriter, Value};
use chord_resources::paths::models_dir;

/// (name, type, dims, offset relative to data section, n_bytes, fnv1a64)
type TensorCheck = (&'static str, GgmlType, &'static [u64], u64, u64, u64);

struct Expect {
    file: &'static str,
    arch: &'static str,
    name: &'static str,
    block_count: u64,
    n_tensors: usize,
    n_kv: usize,
    data_offset: u64,
    file_size: u64,
    vocab: usize,
    first_tokens: [&'static str; 3],
    bos: u32,
    token_embd: (GgmlType, [u64; 2], u64),
    checked: [TensorCheck; 2],
}

const SMOLLM: Expect = Expect {
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    arch: "llama",
    name: "Smollm2 135M 8k Lc100K Mix1 Ep2",
    block_count: 30,
    n_tensors: 272,
    n_kv: 33,
    data_offset: 1_785_664,
    file_size: 98_362_432,
    vocab: 49152,
    first_tokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    bos: 1,
    token_embd: (GgmlType::Q8_0, [576, 49152], 30_081_024),
    checked: [
        (
            "output_norm.weight",
            GgmlType::F32,
            &[576],
            96_574_464,
            2304,
            0xea81_4bed_6299_e304,
        ),
        (
            "blk.0.attn_q.weight",
            GgmlType::Q4_1,
            &[576, 576],
            32_020_992,
            207_360,
            0xaadb_c77c_88f4_1a2d,
        ),
    ],
};

const QWEN: Expect = Expect {
    file: "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
    arch: "qwen2",
    name: "Qwen2.5 Coder 0.5B Instruct AWQ",
    block_count: 24,
    n_tensors: 291,
    n_kv: 26,
    data_offset: 5_947_776,
    file_size: 491_400_064,
    vocab: 151_936,
    first_tokens: ["!", "\"", "#"],
    bos: 151_643,
    token_embd: (GgmlType::Q5_0, [896, 151_936], 93_592_576),
    checked: [
        (
            "output_norm.weight",
            GgmlType::F32,
            &[896],
            485_448_704,
            3584,
            0x0586_4886_003f_682c,
        ),
        (
            "blk.0.attn_q.weight",
            GgmlType::Q5_0,
            &[896, 896],
            248_445_184,
            551_936,
            0x78f6_aab4_172b_7847,
        ),
    ],
};

/// Largest header of the three (262k-token vocabulary); tensors not in name order.
const GEMMA3: Expect = Expect {
    file: "gemma-3-270m-q4_k_m.gguf",
    arch: "gemma3",
    name: "Gemma 3 270m",
    block_count: 18,
    n_tensors: 236,
    n_kv: 33,
    data_offset: 6_525_120,
    file_size: 253_113_024,
    vocab: 262_144,
    first_tokens: ["<pad>", "<eos>", "<bos>"],
    bos: 2,
    token_embd: (GgmlType::Q8_0, [640, 262_144], 178_257_920),
    checked: [
        (
            "output_norm.weight",
            GgmlType::F32,
            &[640],
            0,
            2560,
            0x11c2_2e7a_cf60_d9d7,
        ),
        (
            "blk.0.attn_q.weight",
            GgmlType::Q5_0,
            &[640, 1024],
            178_745_344,
            450_560,
            0xaea7_15d7_b4b8_a286,
        ),
    ],
};

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn model_path(file: &str) -> Option<PathBuf> {
    let path = models_dir().join(file);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipping: {} not found", path.display());
        None
    }
}

fn check(e: &Expect, f: &GgufFile) {
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.architecture(), Some(e.arch));
    assert_eq!(f.get_str("general.name"), Some(e.name));
    assert_eq!(
        f.get_u64(&format!("{}.block_count", e.arch)),
        Some(e.block_count)
    );
    assert_eq!(
        f.get("tokenizer.ggml.bos_token_id"),
        Some(&Value::U32(e.bos))
    );
    assert_eq!(f.tensors().len(), e.n_tensors);
    assert_eq!(f.metadata().len(), e.n_kv);
    assert_eq!(f.data_offset(), e.data_offset);
    assert_eq!(f.file_size(), e.file_size);
    assert_eq!(f.metadata()[0].0, "general.architecture");

    let tokens = f.get_array("tokenizer.ggml.tokens").expect("tokens array");
    assert_eq!(tokens.len(), e.vocab);
    for (tok, want) in tokens.iter().zip(e.first_tokens) {
        assert_eq!(tok.as_str(), Some(want));
    }
    assert!(matches!(
        f.get("tokenizer.ggml.tokens"),
        Some(Value::Array(chord_resources::gguf::ValueType::String, _))
    ));

    let embd = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(embd.ty, e.token_embd.0);
    assert_eq!(embd.dims, e.token_embd.1);
    assert_eq!(embd.n_bytes, e.token_embd.2);
    assert_eq!(embd.row_len(), e.token_embd.1[0]);
    assert_eq!(embd.n_rows(), e.token_embd.1[1]);
    assert_eq!(embd.n_elements(), e.token_embd.1[0] * e.token_embd.1[1]);
    assert_eq!(f.tensor_data(embd).len() as u64, embd.n_bytes);

    for (name, ty, dims, offset, n_bytes, hash) in e.checked {
        let t = f.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            (t.ty, t.dims.as_slice(), t.offset, t.n_bytes),
            (ty, dims, offset, n_bytes),
            "{name}"
        );
        let bytes = f.tensor_bytes(name).expect("bytes");
        assert_eq!(fnv1a64(bytes), hash, "{name} data hash");
    }
    // The whole data section is covered: the last tensor ends at the end of the file.
    let end = f
        .tensors()
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap_or(0);
    assert_eq!(f.data_offset() + end, f.file_size());
    assert!(f.tensor("no.such.tensor").is_none());
    assert!(f.get("no.such.key").is_none());
}

fn run(e: &Expect) {
    let Some(path) = model_path(e.file) else {
        return;
    };
    let t0 = Instant::now();
    let f = GgufFile::open(&path).expect("open");
    let dt = t0.elapsed();
    eprintln!(
        "{}: opened (mmap + parse + validate) in {:.2} ms, {} tensors, {} kv",
        e.file,
        dt.as_secs_f64() * 1e3,
        f.tensors().len(),
        f.metadata().len()
    );
    assert!(f.is_mapped());
    check(e, &f);

    // The canonical writer layout is gguf-py's: rewriting gives the same bytes.
    let t0 = Instant::now();
    let rewritten = GgufWriter::from_file(&f)
        .and_then(|w| w.to_bytes())
        .expect("rewrite");
    eprintln!(
        "{}: rewritten in {:.0} ms",
        e.file,
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        rewritten == f.as_bytes(),
        "rewritten file differs from the original"
    );

    // Streaming in 1 MiB chunks gives the same file.
    let t0 = Instant::now();
    let mut loader = GgufStreamLoader::new().with_expected_len(f.file_size());
    for chunk in f.as_bytes().chunks(1 << 20) {
        loader.push(chunk).expect("push");
    }
    let streamed = loader.finish().expect("finish");
    eprintln!(
        "{}: streamed in {:.0} ms",
        e.file,
        t0.elapsed().as_secs_f64() * 1e3
    );
    check(e, &streamed);
    assert!(!streamed.is_mapped());
    assert!(streamed.as_bytes() == f.as_bytes());
}

#[test]
fn smollm2_135m_q4_1() {
    run(&SMOLLM);
}

#[test]
fn qwen25_coder_05b_q4_k_m() {
    run(&QWEN);
}

#[test]
fn gemma3_270m_q4_k_m() {
    run(&GEMMA3);
}
