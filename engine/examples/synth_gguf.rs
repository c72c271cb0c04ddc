//! A GGUF with a real model's structure — its metadata, tokenizer, tensor names, shapes and
//! types — and random weights: for timing a model on a machine the real file is costly to copy
//! to (the GPU benches ship ~60 MiB per call). Decode and prefill time do not depend on the
//! weights' values (`chord bench` masks end-of-generation tokens; llama-bench samples nothing),
//! so a synthetic copy times like the real file. Its text is noise.
//!
//! ```text
//! cargo run --release -p chord-engine --example synth_gguf -- header REAL.gguf SKELETON
//! cargo run --release -p chord-engine --example synth_gguf -- fill SKELETON OUT.gguf [SEED]
//! ```
//!
//! `header` keeps the bytes before the data section (a few MiB) and the real file's length;
//! `fill` writes every tensor's bytes as random blocks of its type with small finite scales
//! (norm weights near 1), at the real file's offsets.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use chord_resources::GgmlType;
use chord_resources::gguf::{GgufFile, TensorInfo};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// Uniform in [-1, 1).
fn unit(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// The bytes of one tensor.
fn tensor_bytes(t: &TensorInfo, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let n = t.n_bytes as usize;
    let mut out = vec![0u8; n];
    match t.ty {
        GgmlType::F32 => {
            let norm = t.name.contains("norm");
            for v in out.chunks_exact_mut(4) {
                let x = if norm {
                    1.0 + 0.1 * unit(rng)
                } else {
                    0.02 * unit(rng)
                };
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for v in out.chunks_exact_mut(2) {
                let x = half::f16::from_f32(0.02 * unit(rng));
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for v in out.chunks_exact_mut(2) {
                let x = half::bf16::from_f32(0.02 * unit(rng));
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
        ty => {
            rng.fill_bytes(&mut out);
            for block in out.chunks_exact_mut(ty.type_size()) {
                for &f in ty.f16_scale_fields() {
                    let d = half::f16::from_f32(0.002 * (1.5 + unit(rng)));
                    block[f..f + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
        }
    }
    out
}

fn header(real: &str, skeleton: &str) -> Result<(), String> {
    let file = GgufFile::open(real).map_err(|e| format!("{real}: {e}"))?;
    let prefix = &file.as_bytes()[..file.data_offset() as usize];
    let mut out = BufWriter::new(File::create(skeleton).map_err(|e| e.to_string())?);
    out.write_all(prefix).map_err(|e| e.to_string())?;
    out.write_all(&file.file_size().to_le_bytes())
        .map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    eprintln!(
        "{skeleton}: {} header bytes of a {}-byte file, {} tensors",
        prefix.len(),
        file.file_size(),
        file.tensors().len()
    );
    Ok(())
}

fn fill(skeleton: &str, out_path: &str, seed: u64) -> Result<(), String> {
    let bytes = std::fs::read(skeleton).map_err(|e| format!("{skeleton}: {e}"))?;
    let split = bytes
        .len()
        .checked_sub(8)
        .ok_or_else(|| format!("{skeleton}: too short"))?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[split..]);
    let total = u64::from_le_bytes(len) as usize;
    let prefix = &bytes[..split];
    if total < prefix.len() {
        return Err(format!("{skeleton}: length {total} below its header"));
    }
    // Parse the header over a zero-filled data section of the real length.
    let mut padded = prefix.to_vec();
    padded.resize(total, 0);
    let file = GgufFile::from_bytes(padded).map_err(|e| format!("{skeleton}: {e}"))?;
    let data_offset = file.data_offset();
    let mut tensors: Vec<TensorInfo> = file.tensors().to_vec();
    drop(file);
    tensors.sort_by_key(|t| t.offset);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = BufWriter::new(File::create(out_path).map_err(|e| e.to_string())?);
    out.write_all(prefix).map_err(|e| e.to_string())?;
    let mut at = data_offset;
    for t in &tensors {
        let start = data_offset + t.offset;
        if start < at {
            return Err(format!("{}: overlaps the tensor before it", t.name));
        }
        out.write_all(&vec![0u8; (start - at) as usize])
            .map_err(|e| e.to_string())?;
        out.write_all(&tensor_bytes(t, &mut rng))
            .map_err(|e| e.to_string())?;
        at = start + t.n_bytes;
    }
    out.write_all(&vec![0u8; (total as u64).saturating_sub(at) as usize])
        .map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    eprintln!("{out_path}: {total} bytes, {} tensors", tensors.len());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["header", real, skeleton] => header(real, skeleton),
        ["fill", skeleton, out] => fill(skeleton, out, 0x5eed),
        ["fill", skeleton, out, seed] => seed
            .parse()
            .map_err(|e| format!("seed {seed}: {e}"))
            .and_then(|s| fill(skeleton, out, s)),
        _ => Err(
            "usage: synth_gguf header REAL.gguf SKELETON | fill SKELETON OUT.gguf [SEED]".into(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synth_gguf: {e}");
            ExitCode::FAILURE
        }
    }
}
