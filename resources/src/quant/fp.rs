//! Scalar conversions and small helpers, spelled the way ggml spells them.
//!
//! Every function here is a transcription of a ggml macro or inline function; the
//! point is bit-for-bit agreement with ggml's reference (non-SIMD) code.

use half::f16;

use super::QuantError;
use crate::GgmlType;

/// `GGML_FP16_TO_FP32`: exact widening.
#[inline]
pub fn fp16_to_fp32(h: f16) -> f32 {
    h.to_f32()
}

/// `GGML_FP32_TO_FP16` (`ggml_compute_fp32_to_fp16` in ggml-impl.h): round to nearest even,
/// overflow to ±inf, subnormals kept. ggml maps every NaN to `sign | 0x7E00`; `half` would keep
/// payload bits, so NaN is handled here.
#[inline]
pub fn fp32_to_fp16(x: f32) -> f16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        f16::from_bits(sign | 0x7E00)
    } else {
        f16::from_f32(x)
    }
}

/// `GGML_BF16_TO_FP32`: the 16 bits become the high half of an f32.
#[inline]
pub fn bf16_to_fp32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// `GGML_FP32_TO_BF16` (`ggml_compute_fp32_to_bf16`): round to nearest even; NaN keeps its
/// high bits and is forced quiet.
#[inline]
pub fn fp32_to_bf16(x: f32) -> u16 {
    let i = x.to_bits();
    if i & 0x7fff_ffff > 0x7f80_0000 {
        return ((i >> 16) | 64) as u16;
    }
    (i.wrapping_add(0x7fff + ((i >> 16) & 1)) >> 16) as u16
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the 1.5·2²³ trick.
/// Exact for |x| ≤ 4194303; outside that (and for NaN) it returns what ggml returns.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let val = x + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// C's `MAX(a, b)` macro: `a > b ? a : b` (so a NaN `b` wins, unlike `f32::max`).
#[inline]
pub(crate) fn c_max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `d ? 1.0f/d : 0.0f` — the inverse scale used by every ggml quantizer (NaN counts as true).
#[inline]
pub(crate) fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// The bytes of `parts` laid end to end in an `N`-byte block (the writer's side of [`Fields`]).
/// The parts must add up to exactly `N` bytes; every caller passes fixed-size fields.
pub(crate) fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut rest: &mut [u8] = &mut out;
    for part in parts {
        let (head, tail) = rest.split_at_mut(part.len().min(rest.len()));
        head.copy_from_slice(&part[..head.len()]);
        rest = tail;
    }
    debug_assert!(rest.is_empty() && parts.iter().map(|p| p.len()).sum::<usize>() == N);
    out
}

/// Reads the fields of one block in order; every read is bounds-checked and `None` on short input.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn bytes<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn f16(&mut self) -> Option<f16> {
        self.bytes::<2>().map(|b| f16::from_le_bytes(*b))
    }

    pub(crate) fn f32(&mut self) -> Option<f32> {
        self.bytes::<4>().map(|b| f32::from_le_bytes(*b))
    }
}

/// Parse one block of type `ty` from exactly `ty.type_size()` bytes with `read`, which takes
/// the fields in storage order. Fails (never panics) on any other length.
pub(crate) fn parse_block<'a, T>(
    ty: GgmlType,
    raw: &'a [u8],
    read: impl FnOnce(&mut Fields<'a>) -> Option<T>,
) -> Result<T, QuantError> {
    let mismatch = || QuantError::LengthMismatch {
        ty,
        what: "block bytes",
        expected: ty.type_size(),
        actual: raw.len(),
    };
    if raw.len() != ty.type_size() {
        return Err(mismatch());
    }
    let mut fields = Fields { rest: raw };
    let block = read(&mut fields).ok_or_else(mismatch)?;
    if fields.rest.is_empty() {
        Ok(block)
    } else {
        Err(mismatch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml_compute_fp32_to_fp16 transcribed literally (the FP16 library's bit trick).
    fn ggml_fp32_to_fp16_bits(f: f32) -> u16 {
        let scale_to_inf = f32::from_bits(0x7780_0000);
        let scale_to_zero = f32::from_bits(0x0880_0000);
        let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
        let w = f.to_bits();
        let shl1_w = w.wrapping_add(w);
        let sign = w & 0x8000_0000;
        let mut bias = shl1_w & 0xFF00_0000;
        if bias < 0x7100_0000 {
            bias = 0x7100_0000;
        }
        base += f32::from_bits((bias >> 1) + 0x0780_0000);
        let bits = base.to_bits();
        let exp_bits = (bits >> 13) & 0x0000_7C00;
        let mantissa_bits = bits & 0x0000_0FFF;
        let nonsign = exp_bits + mantissa_bits;
        ((sign >> 16)
            | if shl1_w > 0xFF00_0000 {
                0x7E00
            } else {
                nonsign
            }) as u16
    }

    #[test]
    fn fp16_conversion_matches_ggml_bit_trick() {
        // A stride co-prime with 2^32 visits every exponent and a spread of mantissas,
        // plus the edges explicitly.
        let mut checked = 0u32;
        let mut bits = 0u32;
        loop {
            let f = f32::from_bits(bits);
            assert_eq!(
                fp32_to_fp16(f).to_bits(),
                ggml_fp32_to_fp16_bits(f),
                "input bits {bits:#010x}"
            );
            checked += 1;
            let (next, wrapped) = bits.overflowing_add(40_009);
            if wrapped {
                break;
            }
            bits = next;
        }
        assert!(checked > 100_000);
        for f in [
            0.0f32,
            -0.0,
            65504.0,
            65520.0,
            -65520.0,
            65519.99,
            6.1035156e-5,
            5.9604645e-8,
            2.9802322e-8,
            2.9802326e-8,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::MIN_POSITIVE,
        ] {
            assert_eq!(
                fp32_to_fp16(f).to_bits(),
                ggml_fp32_to_fp16_bits(f),
                "{f:e}"
            );
        }
    }

    #[test]
    fn fp16_widening_is_exact() {
        for h in 0..=u16::MAX {
            let f = fp16_to_fp32(f16::from_bits(h));
            if !f.is_nan() {
                assert_eq!(fp32_to_fp16(f).to_bits(), h);
            }
        }
    }

    #[test]
    fn bf16_conversions() {
        assert_eq!(fp32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_fp32(0x3f80), 1.0);
        // 1 + 2^-8 is a tie between 0x3f80 and 0x3f81: to even.
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        // Largest finite rounds up to infinity.
        assert_eq!(fp32_to_bf16(f32::MAX), 0x7f80);
        // Signalling NaN is quietened, high bits kept.
        assert_eq!(fp32_to_bf16(f32::from_bits(0xff80_0001)), 0xffc0);
        for h in [0u16, 0x8000, 0x0001, 0x7f7f, 0xc2f7] {
            assert_eq!(fp32_to_bf16(bf16_to_fp32(h)), h);
        }
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (0.49999997, 0),
            (126.6, 127),
            (-127.0, -127),
            (4_194_303.0, 4_194_303),
            (-4_194_303.0, -4_194_303),
        ];
        for (x, want) in cases {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        // NaN: ggml's trick yields 0 (the quiet-NaN mantissa minus the bias).
        assert_eq!(nearest_int(f32::NAN), 0);
    }

    #[test]
    fn c_max_keeps_c_semantics() {
        assert_eq!(c_max(1.0, 2.0), 2.0);
        assert!(c_max(1.0, f32::NAN).is_nan());
        assert_eq!(c_max(f32::NAN, 1.0), 1.0);
        assert_eq!(inverse_or_zero(0.0), 0.0);
        assert_eq!(inverse_or_zero(-0.0), 0.0);
        assert_eq!(inverse_or_zero(0.25), 4.0);
        assert!(inverse_or_zero(f32::NAN).is_nan());
    }

    #[test]
    fn parse_block_rejects_wrong_lengths() {
        let raw = [0u8; 34];
        let ok = parse_block(GgmlType::Q8_0, &raw, |f| Some((f.f16()?, f.bytes::<32>()?)));
        assert!(ok.is_ok());
        let short = parse_block(GgmlType::Q8_0, &raw[..33], |f| {
            Some((f.f16()?, f.bytes::<32>()?))
        });
        assert_eq!(
            short.unwrap_err(),
            QuantError::LengthMismatch {
                ty: GgmlType::Q8_0,
                what: "block bytes",
                expected: 34,
                actual: 33
            }
        );
        // A reader that leaves bytes over is an error too (layout out of step with type_size).
        let partial = parse_block(GgmlType::Q8_0, &raw, |f| f.f16());
        assert!(partial.is_err());
    }
}
