//! The weight formats as unsigned integer codes, for integer matrix–matrix kernels.
//!
//! Every quantized weight format decodes to `value[e] = scale[g]·(code[e] − offset) +
//! bias[g]` with `code` an unsigned byte, one `(scale, bias)` per group `g` of
//! [`CodeLayout::group`] elements, and one `offset` per format. An integer kernel multiplies
//! the unsigned codes with signed 8-bit activations (`u8 × i8`, as `vpdpbusd` does) and takes the
//! offset out exactly in integers through the activations' group sums:
//! `Σ (code − offset)·a = Σ code·a − offset·Σ a`.
//!
//! | format | group | offset | bias |
//! |---|---|---|---|
//! | Q4_0 / Q5_0 / Q8_0 | 32 | 8 / 16 / 128 | none |
//! | Q4_1 / Q5_1 | 32 | 0 | `m` |
//! | Q4_K / Q5_K | 32 | 0 | `−dmin·min` |
//! | Q2_K | 16 | 0 | `−dmin·min` |
//! | Q3_K / Q6_K | 16 | 4 / 32 | none |
//!
//! The scales are `d` (legacy formats) or `d·scale` (K-quants) in f32: the integer part is
//! exact, only where the float scaling happens differs from ggml's kernels.

use super::{QuantError, expect_bytes, kquants, legacy};
use crate::GgmlType;

/// How a format's codes are grouped (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeLayout {
    /// Elements per `(scale, bias)` pair: 16 or 32.
    pub group: usize,
    /// Subtracted from every code to give the signed quant.
    pub offset: u8,
    /// Whether the format has a per-group bias (otherwise every bias is 0).
    pub has_bias: bool,
}

/// The code layout of weight type `ty`, or `None` for the float types and the activation
/// formats (Q8_1, Q8_K).
pub const fn code_layout(ty: GgmlType) -> Option<CodeLayout> {
    let (group, offset, has_bias) = match ty {
        GgmlType::Q4_0 => (32, 8, false),
        GgmlType::Q5_0 => (32, 16, false),
        GgmlType::Q8_0 => (32, 128, false),
        GgmlType::Q4_1 | GgmlType::Q5_1 => (32, 0, true),
        GgmlType::Q4K | GgmlType::Q5K => (32, 0, true),
        GgmlType::Q2K => (16, 0, true),
        GgmlType::Q3K => (16, 4, false),
        GgmlType::Q6K => (16, 32, false),
        _ => return None,
    };
    Some(CodeLayout {
        group,
        offset,
        has_bias,
    })
}

/// Decode one weight row of `ty` (`row`: whole blocks of `n` elements in all) into `codes`
/// (len `n`), `scales` and `biases` (len `n / group` each).
pub fn decode_codes(
    ty: GgmlType,
    row: &[u8],
    codes: &mut [u8],
    scales: &mut [f32],
    biases: &mut [f32],
) -> Result<(), QuantError> {
    let layout = code_layout(ty).ok_or(QuantError::UnsupportedType(ty))?;
    let n = codes.len();
    expect_bytes(ty, n, row.len(), "row bytes")?;
    let groups = n / layout.group;
    for (what, len) in [("scales", scales.len()), ("biases", biases.len())] {
        if len != groups {
            return Err(QuantError::LengthMismatch {
                ty,
                what,
                expected: groups,
                actual: len,
            });
        }
    }
    let off = layout.offset as i16;
    let code = |q: i8| (i16::from(q) + off) as u8;
    let bs = ty.block_size();
    let per_block = bs / layout.group;
    for (b, raw) in row.chunks_exact(ty.type_size()).enumerate() {
        let codes = &mut codes[b * bs..(b + 1) * bs];
        let (scales, biases) = (
            &mut scales[b * per_block..(b + 1) * per_block],
            &mut biases[b * per_block..(b + 1) * per_block],
        );
        if bs == legacy::QK {
            let ints = legacy::unpack(ty, raw)?;
            for (c, &q) in codes.iter_mut().zip(&ints.q) {
                *c = code(q);
            }
            scales[0] = ints.d;
            biases[0] = ints.m.unwrap_or(0.0);
        } else {
            let ints = kquants::unpack(ty, raw)?;
            for (c, &q) in codes.iter_mut().zip(&ints.q) {
                *c = code(q);
            }
            // Scales are kept per 16 elements; a 32-element group takes its first (the
            // formats with 32-element groups repeat each scale and min twice).
            let step = layout.group / 16;
            for g in 0..per_block {
                let s = ints.scales[g * step];
                scales[g] = ints.d * f32::from(s);
                biases[g] = ints
                    .mins
                    .map_or(0.0, |(dmin, mins)| -(dmin * f32::from(mins[g * step])));
            }
        }
    }
    Ok(())
}

/// Decode one activation row of `act_ty` (Q8_0, Q8_1 or Q8_K; `row`: whole blocks of `n`
/// elements) into its signed quants `codes` (len `n`) and one scale per block `scales`
/// (len `n / block_size`). Q8_1's stored sum is not read: callers sum the codes exactly.
pub fn decode_activation_codes(
    act_ty: GgmlType,
    row: &[u8],
    codes: &mut [i8],
    scales: &mut [f32],
) -> Result<(), QuantError> {
    let n = codes.len();
    expect_bytes(act_ty, n, row.len(), "row bytes")?;
    let bs = act_ty.block_size();
    if scales.len() != n / bs {
        return Err(QuantError::LengthMismatch {
            ty: act_ty,
            what: "scales",
            expected: n / bs,
            actual: scales.len(),
        });
    }
    for ((raw, c), s) in row
        .chunks_exact(act_ty.type_size())
        .zip(codes.chunks_exact_mut(bs))
        .zip(scales.iter_mut())
    {
        match act_ty {
            GgmlType::Q8_0 | GgmlType::Q8_1 => {
                let ints = legacy::unpack(act_ty, raw)?;
                c.copy_from_slice(&ints.q);
                *s = ints.d;
            }
            GgmlType::Q8K => {
                let ints = kquants::unpack(act_ty, raw)?;
                c.copy_from_slice(&ints.q);
                *s = ints.d;
            }
            other => return Err(QuantError::UnsupportedType(other)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;

    /// Deterministic bytes (xorshift).
    fn bytes(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A row of `blocks` valid blocks: random bytes with every f16 field set to a small
    /// finite value (random bytes would give NaN/inf scales).
    fn row(ty: GgmlType, blocks: usize) -> Vec<u8> {
        let mut r = bytes(ty.type_size() * blocks, 0x9E37_79B9_7F4A_7C15 ^ ty as u64);
        let f16_fields: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
            GgmlType::Q2K => &[80, 82],
            GgmlType::Q3K => &[108],
            GgmlType::Q6K => &[208],
            _ => &[],
        };
        for (b, block) in r.chunks_exact_mut(ty.type_size()).enumerate() {
            for (i, &off) in f16_fields.iter().enumerate() {
                let v = half::f16::from_f32(0.01 + 0.003 * (b + i) as f32);
                block[off..off + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        r
    }

    #[test]
    fn codes_reproduce_dequantize_for_every_format() {
        for ty in GgmlType::ALL {
            let Some(layout) = code_layout(ty) else {
                continue;
            };
            let n = ty.block_size() * 3;
            let raw = row(ty, 3);
            let mut expect = vec![0.0f32; n];
            dequantize(ty, &raw, &mut expect).unwrap();
            let mut codes = vec![0u8; n];
            let mut scales = vec![0.0f32; n / layout.group];
            let mut biases = vec![f32::NAN; n / layout.group];
            decode_codes(ty, &raw, &mut codes, &mut scales, &mut biases).unwrap();
            for e in 0..n {
                let g = e / layout.group;
                let q = f32::from(codes[e]) - f32::from(layout.offset);
                let v = scales[g] * q + biases[g];
                let tol = 1e-6 * (expect[e].abs() + scales[g].abs() * 64.0 + biases[g].abs());
                assert!(
                    (v - expect[e]).abs() <= tol,
                    "{ty} element {e}: {v} vs {}",
                    expect[e]
                );
                if !layout.has_bias {
                    assert_eq!(biases[g], 0.0, "{ty}");
                }
            }
        }
    }

    #[test]
    fn activation_codes_reproduce_dequantize() {
        for act_ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8K] {
            let n = 512;
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 101) as f32 * 0.05 - 2.4)
                .collect();
            let mut raw = vec![0u8; act_ty.type_size() * n / act_ty.block_size()];
            crate::quant::quantize(act_ty, &x, &mut raw).unwrap();
            let mut codes = vec![0i8; n];
            let mut scales = vec![0.0f32; n / act_ty.block_size()];
            decode_activation_codes(act_ty, &raw, &mut codes, &mut scales).unwrap();
            let mut expect = vec![0.0f32; n];
            dequantize(act_ty, &raw, &mut expect).unwrap();
            for e in 0..n {
                let v = f32::from(codes[e]) * scales[e / act_ty.block_size()];
                assert_eq!(v, expect[e], "{act_ty} {e}");
            }
        }
    }

    #[test]
    fn bad_lengths_and_types_are_errors() {
        let raw = row(GgmlType::Q4_0, 1);
        let (mut c, mut s, mut b) = (vec![0u8; 32], vec![0.0; 1], vec![0.0; 1]);
        assert!(decode_codes(GgmlType::Q4_0, &raw[..17], &mut c, &mut s, &mut b).is_err());
        assert!(decode_codes(GgmlType::Q4_0, &raw, &mut c, &mut s, &mut []).is_err());
        assert!(decode_codes(GgmlType::F16, &raw, &mut c, &mut s, &mut b).is_err());
        assert!(decode_codes(GgmlType::Q4_0, &raw, &mut c, &mut s, &mut b).is_ok());
        let mut a = vec![0i8; 32];
        assert!(decode_activation_codes(GgmlType::Q4_0, &raw, &mut a, &mut s).is_err());
    }
}
