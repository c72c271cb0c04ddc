//! Deterministic tiny random-weight GGUF models in the tensor layout llama.cpp expects.
//!
//! No real phi3 or Mistral weights can be had in this environment, so the architecture tests
//! build small models with our own [`GgufWriter`]: F32 weights from a seeded generator (so
//! llama.cpp's CPU matmuls are f32 and the comparison is near exact), and the tokenizer metadata
//! of one of llama.cpp's `models/ggml-vocab-*.gguf` files so llama.cpp loads them as ordinary
//! models. The same spec and seed always give the same bytes.

use chord_resources::GgmlType;
use chord_resources::config::tensor_names::{self, Block};
use chord_resources::gguf::{GgufError, GgufFile, GgufWriter, Value};

/// SplitMix64: tiny, seedable, identical on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// Shape and options of a tiny model.
#[derive(Clone, Debug)]
pub struct TinySpec {
    /// `general.architecture` (and the prefix of the hyperparameter keys).
    pub arch: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    /// `rope.dimension_count` (≤ n_embd / n_head).
    pub n_rot: usize,
    pub rope_base: f32,
    pub n_ctx_train: u32,
    /// Phi-3 layout: one `attn_qkv` tensor and `ffn_up` holding [gate | up] (2·n_ff rows).
    pub fused: bool,
    /// No `output.weight`: the token embedding is the LM head.
    pub tied: bool,
    /// Write `rope_factors_short.weight` / `rope_factors_long.weight` (n_rot/2 each).
    pub long_rope_factors: bool,
    /// Write `rope_freqs.weight` (n_rot/2 per-pair factors, Llama 3.1 style).
    pub rope_freqs: bool,
    /// Further `<arch>.*` keys (suffix after the arch prefix), e.g. `attention.sliding_window`.
    pub extra: Vec<(&'static str, Value)>,
    pub seed: u64,
}

impl TinySpec {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Build the model; the tokenizer (`tokenizer.*` keys) is copied from `vocab`, and n_vocab is
/// its token count.
pub fn build(spec: &TinySpec, vocab: &GgufFile) -> Result<Vec<u8>, GgufError> {
    let n_vocab = vocab
        .get_array("tokenizer.ggml.tokens")
        .map(<[Value]>::len)
        .expect("vocabulary file has tokenizer.ggml.tokens");
    let (d, hd) = (spec.n_embd, spec.head_dim());
    let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_head_kv * hd);
    let mut rng = Rng::new(spec.seed);
    let mut w = GgufWriter::new();
    let a = spec.arch;
    w.add_metadata("general.architecture", Value::String(a.into()))?;
    w.add_metadata("general.name", Value::String(format!("tiny-{a}")))?;
    let u32_keys = [
        ("context_length", spec.n_ctx_train),
        ("embedding_length", d as u32),
        ("feed_forward_length", spec.n_ff as u32),
        ("block_count", spec.n_layer as u32),
        ("attention.head_count", spec.n_head as u32),
        ("attention.head_count_kv", spec.n_head_kv as u32),
        ("rope.dimension_count", spec.n_rot as u32),
    ];
    for (k, v) in u32_keys {
        w.add_metadata(format!("{a}.{k}"), Value::U32(v))?;
    }
    w.add_metadata(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    )?;
    w.add_metadata(format!("{a}.rope.freq_base"), Value::F32(spec.rope_base))?;
    for (k, v) in &spec.extra {
        w.add_metadata(format!("{a}.{k}"), v.clone())?;
    }
    for (k, v) in vocab.metadata() {
        if k.starts_with("tokenizer.") {
            w.add_metadata(k.clone(), v.clone())?;
        }
    }

    // A linear map whose outputs have standard deviation ≈ `gain` for unit-RMS inputs.
    let matrix = |rng: &mut Rng, rows: usize, cols: usize, gain: f32| -> Vec<u8> {
        let s = gain * (3.0 / cols as f32).sqrt();
        f32_bytes(
            &(0..rows * cols)
                .map(|_| s * rng.uniform())
                .collect::<Vec<_>>(),
        )
    };
    let norm = |rng: &mut Rng, n: usize| -> Vec<u8> {
        f32_bytes(
            &(0..n)
                .map(|_| 1.0 + 0.2 * rng.uniform())
                .collect::<Vec<_>>(),
        )
    };
    let dims = |cols: usize, rows: usize| [cols as u64, rows as u64];
    let f32t = GgmlType::F32;

    let embd: Vec<f32> = (0..n_vocab * d).map(|_| rng.uniform()).collect();
    w.add_tensor(
        tensor_names::TOKEN_EMBD,
        &dims(d, n_vocab),
        f32t,
        f32_bytes(&embd),
    )?;
    w.add_tensor(
        tensor_names::OUTPUT_NORM,
        &[d as u64],
        f32t,
        norm(&mut rng, d),
    )?;
    if !spec.tied {
        let out = matrix(&mut rng, n_vocab, d, 3.0);
        w.add_tensor(tensor_names::OUTPUT, &dims(d, n_vocab), f32t, out)?;
    }
    if spec.long_rope_factors {
        let half = spec.n_rot / 2;
        // Short factors near 1; long factors growing with the dimension, as in Phi-3 128k.
        let short: Vec<f32> = (0..half)
            .map(|_| 1.0 + 0.25 * rng.uniform().abs())
            .collect();
        let long: Vec<f32> = (0..half)
            .map(|i| 1.0 + 4.0 * i as f32 + rng.uniform().abs())
            .collect();
        w.add_tensor(
            tensor_names::ROPE_FACTORS_SHORT,
            &[half as u64],
            f32t,
            f32_bytes(&short),
        )?;
        w.add_tensor(
            tensor_names::ROPE_FACTORS_LONG,
            &[half as u64],
            f32t,
            f32_bytes(&long),
        )?;
    }
    if spec.rope_freqs {
        let half = spec.n_rot / 2;
        // Llama 3.1's shape: 1 for fast pairs, up to the scaling factor (8) for slow ones.
        let freqs: Vec<f32> = (0..half)
            .map(|i| 1.0 + 7.0 * (i as f32 / (half - 1) as f32).powi(2))
            .collect();
        w.add_tensor(
            tensor_names::ROPE_FREQS,
            &[half as u64],
            f32t,
            f32_bytes(&freqs),
        )?;
    }
    for il in 0..spec.n_layer {
        let n = |b: Block| b.name(il);
        w.add_tensor(n(Block::AttnNorm), &[d as u64], f32t, norm(&mut rng, d))?;
        // q and k with gain 1.5 give attention scores of spread ~2: neither uniform nor one-hot.
        let q = matrix(&mut rng, q_dim, d, 1.5);
        let k = matrix(&mut rng, kv_dim, d, 1.5);
        let v = matrix(&mut rng, kv_dim, d, 1.0);
        if spec.fused {
            let qkv = [q, k, v].concat();
            w.add_tensor(n(Block::AttnQkv), &dims(d, q_dim + 2 * kv_dim), f32t, qkv)?;
        } else {
            w.add_tensor(n(Block::AttnQ), &dims(d, q_dim), f32t, q)?;
            w.add_tensor(n(Block::AttnK), &dims(d, kv_dim), f32t, k)?;
            w.add_tensor(n(Block::AttnV), &dims(d, kv_dim), f32t, v)?;
        }
        let o = matrix(&mut rng, d, q_dim, 1.0);
        w.add_tensor(n(Block::AttnOutput), &dims(q_dim, d), f32t, o)?;
        w.add_tensor(n(Block::FfnNorm), &[d as u64], f32t, norm(&mut rng, d))?;
        let gate = matrix(&mut rng, spec.n_ff, d, 1.0);
        let up = matrix(&mut rng, spec.n_ff, d, 1.0);
        if spec.fused {
            let gate_up = [gate, up].concat();
            w.add_tensor(n(Block::FfnUp), &dims(d, 2 * spec.n_ff), f32t, gate_up)?;
        } else {
            w.add_tensor(n(Block::FfnGate), &dims(d, spec.n_ff), f32t, gate)?;
            w.add_tensor(n(Block::FfnUp), &dims(d, spec.n_ff), f32t, up)?;
        }
        let down = matrix(&mut rng, d, spec.n_ff, 1.0);
        w.add_tensor(n(Block::FfnDown), &dims(spec.n_ff, d), f32t, down)?;
    }
    w.to_bytes()
}
