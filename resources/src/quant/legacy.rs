//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//!
//! Each format is a byte-slice view ([`BlockQ4_0`] …) that knows its layout, a quantizer that
//! writes that layout (`quantize_row_*_ref`), and an `unpack` to [`Ints32`] — the block's
//! integer quants and float scales — from which dequantization and the integer dot products
//! are computed once for all formats.

use half::f16;

use super::Block;
use super::QuantError;
use super::fp::{Fields, c_max, concat, fp16_to_fp32, fp32_to_fp16, inverse_or_zero, parse_block};
use crate::GgmlType;

/// Elements per block of every format in this file (ggml's QK4_0 … QK8_1).
pub const QK: usize = 32;

/// One 32-element block as integers: `value[i] = q[i]·d`, plus `m` for the formats with an offset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Ints32 {
    pub d: f32,
    pub m: Option<f32>,
    pub q: [i8; QK],
}

impl Ints32 {
    /// `dequantize_row_*`: `q·d` (as `x0*d` in C: int to float, then one multiply), `+ m`.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        for (o, &q) in out.iter_mut().zip(&self.q) {
            let v = f32::from(q) * self.d;
            *o = match self.m {
                Some(m) => v + m,
                None => v,
            };
        }
    }
}

/// Unpack the block of type `ty` in `raw` (exactly `ty.type_size()` bytes).
pub(crate) fn unpack(ty: GgmlType, raw: &[u8]) -> Result<Ints32, QuantError> {
    Ok(match ty {
        GgmlType::Q4_0 => BlockQ4_0::parse(raw)?.unpack(),
        GgmlType::Q4_1 => BlockQ4_1::parse(raw)?.unpack(),
        GgmlType::Q5_0 => BlockQ5_0::parse(raw)?.unpack(),
        GgmlType::Q5_1 => BlockQ5_1::parse(raw)?.unpack(),
        GgmlType::Q8_0 => BlockQ8_0::parse(raw)?.unpack(),
        GgmlType::Q8_1 => BlockQ8_1::parse(raw)?.unpack(),
        other => return Err(QuantError::UnsupportedType(other)),
    })
}

// ---------------------------------------------------------------------------------------------
// Shared bit packing: element j < 16 lives in the low nibble of qs[j], element j + 16 in the
// high nibble; the fifth bit of element j (Q5_*) is bit j of the little-endian u32 `qh`.

fn low_and_high_nibbles(qs: &[u8; QK / 2]) -> [u8; QK] {
    std::array::from_fn(|j| {
        if j < QK / 2 {
            qs[j] & 0x0F
        } else {
            qs[j - QK / 2] >> 4
        }
    })
}

fn with_fifth_bits(qs: &[u8; QK / 2], qh: &[u8; 4]) -> [u8; QK] {
    let qh = u32::from_le_bytes(*qh);
    let low = low_and_high_nibbles(qs);
    std::array::from_fn(|j| low[j] | ((((qh >> j) & 1) as u8) << 4))
}

fn offset(q: [u8; QK], by: i8) -> [i8; QK] {
    q.map(|v| v as i8 - by)
}

fn as_i8(qs: &[u8; QK]) -> [i8; QK] {
    qs.map(|b| b as i8)
}

/// Fold 4-bit values into bytes as `quantize_row_q4_*_ref` does: `qs[j] = xi0 | xi1 << 4`
/// (no masking: ggml does not mask either).
fn pack_nibbles(q: &[u8; QK]) -> [u8; QK / 2] {
    std::array::from_fn(|j| q[j] | (q[j + QK / 2] << 4))
}

/// `quantize_row_q5_*_ref`: low nibbles masked into `qs`, fifth bits into `qh`.
fn pack_five_bits(q: &[u8; QK]) -> ([u8; QK / 2], [u8; 4]) {
    let qs = std::array::from_fn(|j| (q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4));
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |acc, (j, &v)| acc | (u32::from((v & 0x10) >> 4) << j));
    (qs, qh.to_le_bytes())
}

/// `(amax, max)`: largest magnitude and the signed value that has it (first one wins, as in
/// `if (amax < fabsf(v))`).
fn signed_absmax(x: &[f32; QK]) -> (f32, f32) {
    x.iter().fold((0.0f32, 0.0f32), |(amax, max), &v| {
        if amax < v.abs() {
            (v.abs(), v)
        } else {
            (amax, max)
        }
    })
}

/// `(min, max)` with ggml's start values and comparisons.
fn min_max(x: &[f32; QK]) -> (f32, f32) {
    x.iter().fold((f32::MAX, -f32::MAX), |(min, max), &v| {
        (if v < min { v } else { min }, if v > max { v } else { max })
    })
}

/// `amax = MAX(amax, fabsf(v))` over the block.
fn absmax(x: &[f32; QK]) -> f32 {
    x.iter().fold(0.0f32, |amax, &v| c_max(amax, v.abs()))
}

// ---------------------------------------------------------------------------------------------
// Q4_0: d (f16), qs[16]. value = (nibble - 8)·d.

/// `block_q4_0`: `d: f16`, `qs: [u8; 16]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_0<'a> {
    pub d: f16,
    pub qs: &'a [u8; QK / 2],
}

impl<'a> Block<'a> for BlockQ4_0<'a> {
    const TYPE: GgmlType = GgmlType::Q4_0;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                d: f.f16()?,
                qs: f.bytes()?,
            })
        })
    }
}

impl BlockQ4_0<'_> {
    pub(crate) fn unpack(&self) -> Ints32 {
        Ints32 {
            d: fp16_to_fp32(self.d),
            m: None,
            q: offset(low_and_high_nibbles(self.qs), 8),
        }
    }
}

/// `quantize_row_q4_0_ref`: `d = max / -8` where `max` is the signed absmax, so that element
/// maps to nibble 0 (−8); `q = MIN(15, (int8_t)(x/d + 8.5))`.
pub(crate) fn quantize_q4_0(x: &[f32; QK]) -> [u8; 18] {
    let (_, max) = signed_absmax(x);
    let d = max / -8.0;
    let id = inverse_or_zero(d);
    let q: [u8; QK] = std::array::from_fn(|j| ((x[j] * id + 8.5) as i8).min(15) as u8);
    concat(&[&fp32_to_fp16(d).to_le_bytes(), &pack_nibbles(&q)])
}

// ---------------------------------------------------------------------------------------------
// Q4_1: d (f16), m (f16), qs[16]. value = nibble·d + m.

/// `block_q4_1`: `d: f16`, `m: f16`, `qs: [u8; 16]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_1<'a> {
    pub d: f16,
    pub m: f16,
    pub qs: &'a [u8; QK / 2],
}

impl<'a> Block<'a> for BlockQ4_1<'a> {
    const TYPE: GgmlType = GgmlType::Q4_1;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                d: f.f16()?,
                m: f.f16()?,
                qs: f.bytes()?,
            })
        })
    }
}

impl BlockQ4_1<'_> {
    pub(crate) fn unpack(&self) -> Ints32 {
        Ints32 {
            d: fp16_to_fp32(self.d),
            m: Some(fp16_to_fp32(self.m)),
            q: offset(low_and_high_nibbles(self.qs), 0),
        }
    }
}

/// `quantize_row_q4_1_ref`: `d = (max - min)/15`, `q = MIN(15, (int8_t)((x - min)/d + 0.5))`.
pub(crate) fn quantize_q4_1(x: &[f32; QK]) -> [u8; 20] {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse_or_zero(d);
    let q: [u8; QK] = std::array::from_fn(|j| (((x[j] - min) * id + 0.5) as i8).min(15) as u8);
    concat(&[
        &fp32_to_fp16(d).to_le_bytes(),
        &fp32_to_fp16(min).to_le_bytes(),
        &pack_nibbles(&q),
    ])
}

// ---------------------------------------------------------------------------------------------
// Q5_0: d (f16), qh[4], qs[16]. value = (5-bit - 16)·d.

/// `block_q5_0`: `d: f16`, `qh: [u8; 4]` (fifth bits, little-endian u32), `qs: [u8; 16]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_0<'a> {
    pub d: f16,
    pub qh: &'a [u8; 4],
    pub qs: &'a [u8; QK / 2],
}

impl<'a> Block<'a> for BlockQ5_0<'a> {
    const TYPE: GgmlType = GgmlType::Q5_0;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                d: f.f16()?,
                qh: f.bytes()?,
                qs: f.bytes()?,
            })
        })
    }
}

impl BlockQ5_0<'_> {
    pub(crate) fn unpack(&self) -> Ints32 {
        Ints32 {
            d: fp16_to_fp32(self.d),
            m: None,
            q: offset(with_fifth_bits(self.qs, self.qh), 16),
        }
    }
}

/// `quantize_row_q5_0_ref`: `d = max / -16`, `q = MIN(31, (int8_t)(x/d + 16.5))`.
pub(crate) fn quantize_q5_0(x: &[f32; QK]) -> [u8; 22] {
    let (_, max) = signed_absmax(x);
    let d = max / -16.0;
    let id = inverse_or_zero(d);
    let q: [u8; QK] = std::array::from_fn(|j| ((x[j] * id + 16.5) as i8).min(31) as u8);
    let (qs, qh) = pack_five_bits(&q);
    concat(&[&fp32_to_fp16(d).to_le_bytes(), &qh, &qs])
}

// ---------------------------------------------------------------------------------------------
// Q5_1: d (f16), m (f16), qh[4], qs[16]. value = 5-bit·d + m.

/// `block_q5_1`: `d: f16`, `m: f16`, `qh: [u8; 4]`, `qs: [u8; 16]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_1<'a> {
    pub d: f16,
    pub m: f16,
    pub qh: &'a [u8; 4],
    pub qs: &'a [u8; QK / 2],
}

impl<'a> Block<'a> for BlockQ5_1<'a> {
    const TYPE: GgmlType = GgmlType::Q5_1;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                d: f.f16()?,
                m: f.f16()?,
                qh: f.bytes()?,
                qs: f.bytes()?,
            })
        })
    }
}

impl BlockQ5_1<'_> {
    pub(crate) fn unpack(&self) -> Ints32 {
        Ints32 {
            d: fp16_to_fp32(self.d),
            m: Some(fp16_to_fp32(self.m)),
            q: offset(with_fifth_bits(self.qs, self.qh), 0),
        }
    }
}

/// `quantize_row_q5_1_ref`: `d = (max - min)/31`, `q = (uint8_t)((x - min)/d + 0.5)` (no clamp).
pub(crate) fn quantize_q5_1(x: &[f32; QK]) -> [u8; 24] {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse_or_zero(d);
    let q: [u8; QK] = std::array::from_fn(|j| ((x[j] - min) * id + 0.5) as u8);
    let (qs, qh) = pack_five_bits(&q);
    concat(&[
        &fp32_to_fp16(d).to_le_bytes(),
        &fp32_to_fp16(min).to_le_bytes(),
        &qh,
        &qs,
    ])
}

// ---------------------------------------------------------------------------------------------
// Q8_0: d (f16), qs[32] (i8). value = q·d.

/// `block_q8_0`: `d: f16`, `qs: [i8; 32]` (kept as bytes).
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_0<'a> {
    pub d: f16,
    pub qs: &'a [u8; QK],
}

impl<'a> Block<'a> for BlockQ8_0<'a> {
    const TYPE: GgmlType = GgmlType::Q8_0;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                d: f.f16()?,
                qs: f.bytes()?,
            })
        })
    }
}

impl BlockQ8_0<'_> {
    pub(crate) fn unpack(&self) -> Ints32 {
        Ints32 {
            d: fp16_to_fp32(self.d),
            m: None,
            q: as_i8(self.qs),
        }
    }
}

/// `d = amax/127` and `q = roundf(x/d)` (half away from zero), shared by Q8_0 and Q8_1.
fn quantize_8bit(x: &[f32; QK]) -> (f32, [i8; QK]) {
    let d = absmax(x) / 127.0;
    let id = inverse_or_zero(d);
    (d, x.map(|v| (v * id).round() as i8))
}

/// `quantize_row_q8_0_ref`.
pub(crate) fn quantize_q8_0(x: &[f32; QK]) -> [u8; 34] {
    let (d, q) = quantize_8bit(x);
    concat(&[&fp32_to_fp16(d).to_le_bytes(), &q.map(|v| v as u8)])
}

// ---------------------------------------------------------------------------------------------
// Q8_1: d (f16), s (f16) = d·Σq, qs[32] (i8). value = q·d; `s` only serves the dot products.

/// `block_q8_1`: `d: f16`, `s: f16` (`d·Σqs`, computed with the unrounded d), `qs: [i8; 32]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_1<'a> {
    pub d: f16,
    pub s: f16,
    pub qs: &'a [u8; QK],
}

impl<'a> Block<'a> for BlockQ8_1<'a> {
    const TYPE: GgmlType = GgmlType::Q8_1;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                d: f.f16()?,
                s: f.f16()?,
                qs: f.bytes()?,
            })
        })
    }
}

impl BlockQ8_1<'_> {
    /// ggml has no `dequantize_row_q8_1`; the natural reading `q·d` is used.
    pub(crate) fn unpack(&self) -> Ints32 {
        Ints32 {
            d: fp16_to_fp32(self.d),
            m: None,
            q: as_i8(self.qs),
        }
    }
}

/// `quantize_row_q8_1_ref`: as Q8_0, plus `s = fp16((Σq)·d)`.
pub(crate) fn quantize_q8_1(x: &[f32; QK]) -> [u8; 36] {
    let (d, q) = quantize_8bit(x);
    let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
    concat(&[
        &fp32_to_fp16(d).to_le_bytes(),
        &fp32_to_fp16(sum as f32 * d).to_le_bytes(),
        &q.map(|v| v as u8),
    ])
}

// ---------------------------------------------------------------------------------------------
// Integer dot products against Q8_0 / Q8_1 activations (ggml_vec_dot_*_q8_*_generic).

/// Activation block: Q8_0 (`s` unused) or Q8_1.
struct Act32 {
    d: f32,
    s: f32,
    q: [i8; QK],
}

fn unpack_activation(act_ty: GgmlType, raw: &[u8]) -> Result<Act32, QuantError> {
    match act_ty {
        GgmlType::Q8_0 => {
            let b = BlockQ8_0::parse(raw)?;
            Ok(Act32 {
                d: fp16_to_fp32(b.d),
                s: 0.0,
                q: as_i8(b.qs),
            })
        }
        GgmlType::Q8_1 => {
            let b = BlockQ8_1::parse(raw)?;
            Ok(Act32 {
                d: fp16_to_fp32(b.d),
                s: fp16_to_fp32(b.s),
                q: as_i8(b.qs),
            })
        }
        other => Err(QuantError::UnsupportedType(other)),
    }
}

/// One block's contribution, with each ggml generic kernel's own operation order:
/// - q4_0·q8_0: `sumi*dx*dy` = `(sumi·dx)·dy`
/// - q5_0·q8_0, q8_0·q8_0: `(dx·dy)·sumi`
/// - q4_1·q8_1, q5_1·q8_1: `(dx·dy)·sumi + m·s`
fn block_dot(ty: GgmlType, w: &Ints32, a: &Act32) -> f32 {
    let sumi: i32 =
        w.q.iter()
            .zip(&a.q)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
    match (ty, w.m) {
        (GgmlType::Q4_0, _) => sumi as f32 * w.d * a.d,
        (_, Some(m)) => (w.d * a.d) * sumi as f32 + m * a.s,
        (_, None) => (w.d * a.d) * sumi as f32,
    }
}

/// Dot of a row of `ty` blocks with a row of `act_ty` blocks; lengths already validated.
pub(crate) fn dot_q8(
    ty: GgmlType,
    act_ty: GgmlType,
    row: &[u8],
    act: &[u8],
) -> Result<f32, QuantError> {
    let mut sumf = 0.0f32;
    for (w, a) in row
        .chunks_exact(ty.type_size())
        .zip(act.chunks_exact(act_ty.type_size()))
    {
        sumf += block_dot(ty, &unpack(ty, w)?, &unpack_activation(act_ty, a)?);
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_cover_exactly_type_size() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q8_1,
        ] {
            let raw = vec![0u8; ty.type_size()];
            assert!(unpack(ty, &raw).is_ok(), "{ty}");
            assert!(unpack(ty, &raw[1..]).is_err(), "{ty}");
            let mut long = raw.clone();
            long.push(0);
            assert!(unpack(ty, &long).is_err(), "{ty}");
        }
        assert_eq!(
            unpack(GgmlType::Q4K, &[0; 144]),
            Err(QuantError::UnsupportedType(GgmlType::Q4K))
        );
    }

    #[test]
    fn q5_layout_puts_fifth_bits_in_qh() {
        // d = 1.0, qh = bit 0 and bit 17 set, qs[0] = 0x21, qs[1] = 0x0F.
        let mut raw = [0u8; 22];
        raw[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        raw[2..6].copy_from_slice(&((1u32 << 0) | (1u32 << 17)).to_le_bytes());
        raw[6] = 0x21;
        raw[7] = 0x0F;
        let b = BlockQ5_0::parse(&raw).unwrap().unpack();
        assert_eq!(b.q[0], (0x1 | 0x10) - 16);
        assert_eq!(b.q[16], 0x2 - 16);
        assert_eq!(b.q[1], 0xF - 16);
        assert_eq!(b.q[17], 0x10 - 16);
        assert_eq!(b.q[2], -16);
        // And the quantizer's packing is the exact inverse for in-range values.
        let q: [u8; QK] = std::array::from_fn(|j| (b.q[j] + 16) as u8);
        let (qs, qh) = pack_five_bits(&q);
        assert_eq!(&qh, &raw[2..6]);
        assert_eq!(&qs[..], &raw[6..]);
    }

    #[test]
    fn block_dot_follows_each_kernels_operation_order() {
        let w = Ints32 {
            d: 0.1,
            m: None,
            q: [1; QK],
        };
        let a = Act32 {
            d: 0.3,
            s: 0.0,
            q: [3; QK],
        };
        let sumi = 96.0f32;
        assert_eq!(
            block_dot(GgmlType::Q4_0, &w, &a).to_bits(),
            (sumi * 0.1 * 0.3f32).to_bits()
        );
        assert_eq!(
            block_dot(GgmlType::Q8_0, &w, &a).to_bits(),
            ((0.1f32 * 0.3) * sumi).to_bits()
        );
        let wm = Ints32 {
            d: 0.1,
            m: Some(0.5),
            q: [1; QK],
        };
        let am = Act32 {
            d: 0.3,
            s: 7.0,
            q: [3; QK],
        };
        assert_eq!(
            block_dot(GgmlType::Q4_1, &wm, &am),
            (0.1f32 * 0.3) * sumi + 0.5 * 7.0
        );
    }
}
