//! A tiny deterministic random-weight llama model with a byte-level BPE vocabulary and a
//! ChatML template, built in memory: the browser tests need a real GGUF without reading disk.
//! Its matrices are Q4_1 and Q8_0 so the quantized kernels run in the wasm build too.

use chord_resources::GgmlType;
use chord_resources::config::tensor_names::{self, Block};
use chord_resources::gguf::{GgufWriter, Value, ValueType};
use chord_resources::quant::quantize;

const N_EMBD: usize = 64;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const N_FF: usize = 128;
const N_LAYER: usize = 2;

/// GPT-2's byte → printable character map (byte-level BPE vocabularies store tokens this way).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// SplitMix64 in [-1, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The vocabulary: 256 byte tokens, three merges, then `<|endoftext|>`, `<|im_start|>`,
/// `<|im_end|>` (control tokens; `<|im_end|>` ends generation).
fn vocab() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let merges = ["h e", "l l", "l o"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(s.into());
        types.push(3);
    }
    (
        tokens.into_iter().map(Value::String).collect(),
        types.into_iter().map(Value::I32).collect(),
        merges.iter().map(|m| Value::String((*m).into())).collect(),
    )
}

/// Bytes of the tiny model (always the same).
pub fn tiny_model() -> Vec<u8> {
    build().unwrap_or_default()
}

fn build() -> Result<Vec<u8>, String> {
    build_inner().map_err(|e| e.to_string())
}

fn build_inner() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (tokens, types, merges) = vocab();
    let n_vocab = tokens.len();
    let eos = (n_vocab - 1) as u32; // <|im_end|>
    let mut w = GgufWriter::new();
    let a = "llama";
    w.add_metadata("general.architecture", Value::String(a.into()))?;
    w.add_metadata("general.name", Value::String("tiny-llama-test".into()))?;
    for (k, v) in [
        ("context_length", 128u32),
        ("embedding_length", N_EMBD as u32),
        ("feed_forward_length", N_FF as u32),
        ("block_count", N_LAYER as u32),
        ("attention.head_count", N_HEAD as u32),
        ("attention.head_count_kv", N_HEAD_KV as u32),
        ("rope.dimension_count", (N_EMBD / N_HEAD) as u32),
    ] {
        w.add_metadata(format!("{a}.{k}"), Value::U32(v))?;
    }
    w.add_metadata(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    )?;
    w.add_metadata(format!("{a}.rope.freq_base"), Value::F32(10000.0))?;
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()))?;
    w.add_metadata("tokenizer.ggml.pre", Value::String("default".into()))?;
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(ValueType::String, tokens),
    )?;
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types),
    )?;
    w.add_metadata(
        "tokenizer.ggml.merges",
        Value::Array(ValueType::String, merges),
    )?;
    w.add_metadata("tokenizer.ggml.bos_token_id", Value::U32(eos - 2))?;
    w.add_metadata("tokenizer.ggml.eos_token_id", Value::U32(eos))?;
    w.add_metadata("tokenizer.ggml.add_bos_token", Value::Bool(false))?;
    w.add_metadata(
        "tokenizer.chat_template",
        Value::String(
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n\
             {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
                .into(),
        ),
    )?;

    let mut rng = Rng(0x5EED);
    // A matrix whose outputs have standard deviation ≈ `gain` for unit-RMS inputs.
    let mut mat = |rows: usize, cols: usize, gain: f32, ty: GgmlType| -> Result<Vec<u8>, String> {
        let s = gain * (3.0 / cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols).map(|_| s * rng.uniform()).collect();
        let n = ty
            .row_bytes((rows * cols) as u64)
            .ok_or("bad tensor size")?;
        let mut out = vec![0u8; n as usize];
        quantize(ty, &v, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    };
    let dims = |cols: usize, rows: usize| [cols as u64, rows as u64];
    let ones = |n: usize| -> Vec<u8> { (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect() };
    let (q8, q4, f32t) = (GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::F32);
    let hd = N_EMBD / N_HEAD;
    let kv = N_HEAD_KV * hd;

    let embd = mat(n_vocab, N_EMBD, (N_EMBD as f32 / 3.0).sqrt(), q8)?;
    w.add_tensor(tensor_names::TOKEN_EMBD, &dims(N_EMBD, n_vocab), q8, embd)?;
    w.add_tensor(
        tensor_names::OUTPUT_NORM,
        &[N_EMBD as u64],
        f32t,
        ones(N_EMBD),
    )?;
    let out = mat(n_vocab, N_EMBD, 3.0, q4)?;
    w.add_tensor(tensor_names::OUTPUT, &dims(N_EMBD, n_vocab), q4, out)?;
    for il in 0..N_LAYER {
        let ty = if il % 2 == 0 { q4 } else { q8 };
        let n = |b: Block| b.name(il);
        w.add_tensor(n(Block::AttnNorm), &[N_EMBD as u64], f32t, ones(N_EMBD))?;
        w.add_tensor(
            n(Block::AttnQ),
            &dims(N_EMBD, N_EMBD),
            ty,
            mat(N_EMBD, N_EMBD, 1.5, ty)?,
        )?;
        w.add_tensor(
            n(Block::AttnK),
            &dims(N_EMBD, kv),
            ty,
            mat(kv, N_EMBD, 1.5, ty)?,
        )?;
        w.add_tensor(
            n(Block::AttnV),
            &dims(N_EMBD, kv),
            ty,
            mat(kv, N_EMBD, 1.0, ty)?,
        )?;
        w.add_tensor(
            n(Block::AttnOutput),
            &dims(N_EMBD, N_EMBD),
            ty,
            mat(N_EMBD, N_EMBD, 1.0, ty)?,
        )?;
        w.add_tensor(n(Block::FfnNorm), &[N_EMBD as u64], f32t, ones(N_EMBD))?;
        w.add_tensor(
            n(Block::FfnGate),
            &dims(N_EMBD, N_FF),
            ty,
            mat(N_FF, N_EMBD, 1.0, ty)?,
        )?;
        w.add_tensor(
            n(Block::FfnUp),
            &dims(N_EMBD, N_FF),
            ty,
            mat(N_FF, N_EMBD, 1.0, ty)?,
        )?;
        w.add_tensor(
            n(Block::FfnDown),
            &dims(N_FF, N_EMBD),
            ty,
            mat(N_EMBD, N_FF, 1.0, ty)?,
        )?;
    }
    Ok(w.to_bytes()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection() {
        let chars: std::collections::HashSet<char> = (0..=255u8).map(byte_char).collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
    }

    #[test]
    fn tiny_model_is_a_valid_gguf() {
        let bytes = tiny_model();
        assert!(!bytes.is_empty());
        assert_eq!(bytes, tiny_model());
        let f = chord_resources::gguf::GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.architecture(), Some("llama"));
    }
}
