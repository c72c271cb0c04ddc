//! The unquantized element types F32, F16 and BF16 (block size 1).

use half::f16;

use super::QuantError;
use super::fp::{bf16_to_fp32, fp16_to_fp32, fp32_to_bf16, fp32_to_fp16};
use crate::GgmlType;

/// Values handed to the visitor at a time.
const RUN: usize = 64;

/// Decode `src` (whole elements of `ty`) and hand the values to `visit` in order, in runs.
pub(crate) fn decode(
    ty: GgmlType,
    src: &[u8],
    visit: &mut impl FnMut(&[f32]),
) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => decode_as(src, f32::from_le_bytes, visit),
        GgmlType::F16 => decode_as(src, |b: [u8; 2]| fp16_to_fp32(f16::from_le_bytes(b)), visit),
        GgmlType::BF16 => decode_as(src, |b: [u8; 2]| bf16_to_fp32(u16::from_le_bytes(b)), visit),
        other => return Err(QuantError::UnsupportedType(other)),
    }
    Ok(())
}

fn decode_as<const W: usize>(
    src: &[u8],
    conv: impl Fn([u8; W]) -> f32,
    visit: &mut impl FnMut(&[f32]),
) {
    let (elems, _) = src.as_chunks::<W>();
    let mut buf = [0.0f32; RUN];
    for run in elems.chunks(RUN) {
        let mut len = 0;
        for (b, e) in buf.iter_mut().zip(run) {
            *b = conv(*e);
            len += 1;
        }
        visit(buf.get(..len).unwrap_or_default());
    }
}

/// ggml's `from_float` for F32 (copy), F16 (`GGML_FP32_TO_FP16`) and BF16 (`GGML_FP32_TO_BF16`).
pub(crate) fn encode_f32(x: &[f32; 1]) -> [u8; 4] {
    x[0].to_le_bytes()
}

pub(crate) fn encode_f16(x: &[f32; 1]) -> [u8; 2] {
    fp32_to_fp16(x[0]).to_le_bytes()
}

pub(crate) fn encode_bf16(x: &[f32; 1]) -> [u8; 2] {
    fp32_to_bf16(x[0]).to_le_bytes()
}
