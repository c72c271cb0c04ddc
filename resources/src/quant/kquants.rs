//! The 256-element super-block formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the activation
//! format Q8_K.
//!
//! Each weight format is a byte-slice view that unpacks to [`Ints256`]: one integer quant per
//! element plus a scale (and, for Q2_K/Q4_K/Q5_K, a min) per 16 elements. Every K-quant
//! dequantizes as `(d·scale)·q − dmin·min` in ggml, and every generic K-quant dot product is an
//! integer sum of `scale·q8·q` plus a `bsums·min` correction, so both are written once here
//! against `Ints256` instead of once per format.

use half::f16;

use super::Block;
use super::QuantError;
use super::fp::{Fields, concat, fp16_to_fp32, nearest_int, parse_block};
use crate::{GgmlType, QK_K};

/// Elements per scale group (the finest granularity of any K-quant scale or of Q8_K `bsums`).
const GROUP: usize = 16;
const GROUPS: usize = QK_K / GROUP;

/// One super-block as integers: `value[e] = (d·scales[e/16])·q[e] − dmin·mins[e/16]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ints256 {
    pub d: f32,
    pub scales: [i8; GROUPS],
    /// `(dmin, mins)` for the formats with mins (Q2_K, Q4_K, Q5_K).
    pub mins: Option<(f32, [u8; GROUPS])>,
    pub q: [i8; QK_K],
}

impl Ints256 {
    /// `dequantize_row_q{2..6}_K` / `dequantize_row_q8_K`: per group `dl = d·scale`,
    /// `ml = dmin·min`, then `dl·q − ml` per element.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let (groups, _) = out.as_chunks_mut::<GROUP>();
        let (qs, _) = self.q.as_chunks::<GROUP>();
        for (g, (out16, q16)) in groups.iter_mut().zip(qs).enumerate() {
            let dl = self.d * f32::from(self.scales[g]);
            let ml = self.mins.map(|(dmin, mins)| dmin * f32::from(mins[g]));
            for (o, &q) in out16.iter_mut().zip(q16) {
                let v = dl * f32::from(q);
                *o = match ml {
                    Some(ml) => v - ml,
                    None => v,
                };
            }
        }
    }
}

/// Unpack the block of type `ty` in `raw` (exactly `ty.type_size()` bytes).
pub(crate) fn unpack(ty: GgmlType, raw: &[u8]) -> Result<Ints256, QuantError> {
    Ok(match ty {
        GgmlType::Q2K => BlockQ2K::parse(raw)?.unpack(),
        GgmlType::Q3K => BlockQ3K::parse(raw)?.unpack(),
        GgmlType::Q4K => BlockQ4K::parse(raw)?.unpack(),
        GgmlType::Q5K => BlockQ5K::parse(raw)?.unpack(),
        GgmlType::Q6K => BlockQ6K::parse(raw)?.unpack(),
        GgmlType::Q8K => BlockQ8K::parse(raw)?.unpack(),
        other => return Err(QuantError::UnsupportedType(other)),
    })
}

// ---------------------------------------------------------------------------------------------
// Shared layouts. Elements go in runs of 32: run r = e/32 of a 128-element half h = e/128 takes
// bit-plane r%4 of the 32 bytes at 32·h (2-bit formats), and run r of the 64-element chunk
// c = e/64 takes nibble r%2 of the 32 bytes at 32·c (4-bit formats). A 32-byte high-bit mask
// gives element e bit e/32 of byte e%32.

/// Element `e`'s 2-bit field of a Q2_K / Q3_K `qs`.
fn crumb(qs: &[u8; QK_K / 4], e: usize) -> u8 {
    (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3
}

/// Element `e`'s nibble of a Q4_K / Q5_K `qs`.
fn nibble(qs: &[u8; QK_K / 2], e: usize) -> u8 {
    (qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 0xF
}

/// Element `e`'s bit of a 32-byte high-bit mask (Q3_K `hmask`, Q5_K `qh`).
fn high_bit(mask: &[u8; QK_K / 8], e: usize) -> u8 {
    (mask[e % 32] >> (e / 32)) & 1
}

/// ggml's `get_scale_min_k4`: 6-bit scale and min `j` (0..8) of the 12 packed bytes of
/// Q4_K / Q5_K.
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K / Q5_K scales and mins, one per 32 elements, spread over the 16-element groups.
fn k4_scales_mins(scales: &[u8; 12]) -> ([i8; GROUPS], [u8; GROUPS]) {
    let pairs: [(u8, u8); 8] = std::array::from_fn(|j| get_scale_min_k4(j, scales));
    (
        std::array::from_fn(|g| pairs[g / 2].0 as i8),
        std::array::from_fn(|g| pairs[g / 2].1),
    )
}

// ---------------------------------------------------------------------------------------------
// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.

/// `block_q2_K`: `scales: [u8; 16]`, `qs: [u8; 64]`, `d: f16`, `dmin: f16`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ2K<'a> {
    pub scales: &'a [u8; GROUPS],
    pub qs: &'a [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

impl<'a> Block<'a> for BlockQ2K<'a> {
    const TYPE: GgmlType = GgmlType::Q2K;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                scales: f.bytes()?,
                qs: f.bytes()?,
                d: f.f16()?,
                dmin: f.f16()?,
            })
        })
    }
}

impl BlockQ2K<'_> {
    pub(crate) fn unpack(&self) -> Ints256 {
        Ints256 {
            d: fp16_to_fp32(self.d),
            scales: self.scales.map(|s| (s & 0xF) as i8),
            mins: Some((fp16_to_fp32(self.dmin), self.scales.map(|s| s >> 4))),
            q: std::array::from_fn(|e| crumb(self.qs, e) as i8),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q3_K: hmask[32], qs[64], scales[12] (16 × 6 bits, biased by 32), d.

/// `block_q3_K`: `hmask: [u8; 32]`, `qs: [u8; 64]`, `scales: [u8; 12]`, `d: f16`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ3K<'a> {
    pub hmask: &'a [u8; QK_K / 8],
    pub qs: &'a [u8; QK_K / 4],
    pub scales: &'a [u8; 12],
    pub d: f16,
}

impl<'a> Block<'a> for BlockQ3K<'a> {
    const TYPE: GgmlType = GgmlType::Q3K;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                hmask: f.bytes()?,
                qs: f.bytes()?,
                scales: f.bytes()?,
                d: f.f16()?,
            })
        })
    }
}

/// The 16 signed Q3_K scales: scale i has low nibble `scales[i % 8]` (low half for i < 8, high
/// half after) and high two bits `scales[8 + i % 4] >> 2·(i / 4)`, minus 32 — the bytewise
/// reading of ggml's `kmask1`/`kmask2` word shuffle.
fn q3_k_scales(scales: &[u8; 12]) -> [i8; GROUPS] {
    std::array::from_fn(|i| {
        let low = if i < 8 {
            scales[i] & 0xF
        } else {
            scales[i - 8] >> 4
        };
        let high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

impl BlockQ3K<'_> {
    pub(crate) fn unpack(&self) -> Ints256 {
        Ints256 {
            d: fp16_to_fp32(self.d),
            scales: q3_k_scales(self.scales),
            mins: None,
            // A clear high bit subtracts 4.
            q: std::array::from_fn(|e| {
                crumb(self.qs, e) as i8 - if high_bit(self.hmask, e) == 1 { 0 } else { 4 }
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_K: d, dmin, scales[12] (8 × 6-bit scale + 8 × 6-bit min), qs[128].

/// `block_q4_K`: `d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qs: [u8; 128]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K<'a> {
    pub d: f16,
    pub dmin: f16,
    pub scales: &'a [u8; 12],
    pub qs: &'a [u8; QK_K / 2],
}

impl<'a> Block<'a> for BlockQ4K<'a> {
    const TYPE: GgmlType = GgmlType::Q4K;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                d: f.f16()?,
                dmin: f.f16()?,
                scales: f.bytes()?,
                qs: f.bytes()?,
            })
        })
    }
}

impl BlockQ4K<'_> {
    pub(crate) fn unpack(&self) -> Ints256 {
        let (scales, mins) = k4_scales_mins(self.scales);
        Ints256 {
            d: fp16_to_fp32(self.d),
            scales,
            mins: Some((fp16_to_fp32(self.dmin), mins)),
            q: std::array::from_fn(|e| nibble(self.qs, e) as i8),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q5_K: d, dmin, scales[12], qh[32], qs[128].

/// `block_q5_K`: `d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qh: [u8; 32]`, `qs: [u8; 128]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5K<'a> {
    pub d: f16,
    pub dmin: f16,
    pub scales: &'a [u8; 12],
    pub qh: &'a [u8; QK_K / 8],
    pub qs: &'a [u8; QK_K / 2],
}

impl<'a> Block<'a> for BlockQ5K<'a> {
    const TYPE: GgmlType = GgmlType::Q5K;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                d: f.f16()?,
                dmin: f.f16()?,
                scales: f.bytes()?,
                qh: f.bytes()?,
                qs: f.bytes()?,
            })
        })
    }
}

impl BlockQ5K<'_> {
    pub(crate) fn unpack(&self) -> Ints256 {
        let (scales, mins) = k4_scales_mins(self.scales);
        Ints256 {
            d: fp16_to_fp32(self.d),
            scales,
            mins: Some((fp16_to_fp32(self.dmin), mins)),
            q: std::array::from_fn(|e| (nibble(self.qs, e) | (high_bit(self.qh, e) << 4)) as i8),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q6_K: ql[128], qh[64], scales[16] (i8), d.

/// `block_q6_K`: `ql: [u8; 128]`, `qh: [u8; 64]`, `scales: [i8; 16]` (kept as bytes), `d: f16`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K<'a> {
    pub ql: &'a [u8; QK_K / 2],
    pub qh: &'a [u8; QK_K / 4],
    pub scales: &'a [u8; GROUPS],
    pub d: f16,
}

impl<'a> Block<'a> for BlockQ6K<'a> {
    const TYPE: GgmlType = GgmlType::Q6K;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            Some(Self {
                ql: f.bytes()?,
                qh: f.bytes()?,
                scales: f.bytes()?,
                d: f.f16()?,
            })
        })
    }
}

impl BlockQ6K<'_> {
    /// Element `e = 128·h + 32·r + l`: low nibble `r/2` of `ql[64·h + 32·(r%2) + l]`, high two
    /// bits `qh[32·h + l] >> 2·r`, minus 32.
    fn quant(&self, e: usize) -> i8 {
        let (h, r, l) = (e / 128, (e / 32) % 4, e % 32);
        let low = (self.ql[64 * h + 32 * (r % 2) + l] >> (4 * (r / 2))) & 0xF;
        let high = (self.qh[32 * h + l] >> (2 * r)) & 3;
        (low | (high << 4)) as i8 - 32
    }

    pub(crate) fn unpack(&self) -> Ints256 {
        Ints256 {
            d: fp16_to_fp32(self.d),
            scales: self.scales.map(|s| s as i8),
            mins: None,
            q: std::array::from_fn(|e| self.quant(e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q8_K: d (f32), qs[256] (i8), bsums[16] (i16, sum of each 16 qs).

/// `block_q8_K`: `d: f32`, `qs: [i8; 256]` (kept as bytes), `bsums: [i16; 16]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K<'a> {
    pub d: f32,
    pub qs: &'a [u8; QK_K],
    pub bsums: [i16; GROUPS],
}

impl<'a> Block<'a> for BlockQ8K<'a> {
    const TYPE: GgmlType = GgmlType::Q8K;
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError> {
        parse_block(Self::TYPE, raw, |f: &mut Fields<'a>| {
            let d = f.f32()?;
            let qs = f.bytes()?;
            let sums: &[u8; 2 * GROUPS] = f.bytes()?;
            let (pairs, _) = sums.as_chunks::<2>();
            let bsums = std::array::from_fn(|g| pairs.get(g).map_or(0, |p| i16::from_le_bytes(*p)));
            Some(Self { d, qs, bsums })
        })
    }
}

impl BlockQ8K<'_> {
    fn quants(&self) -> [i8; QK_K] {
        self.qs.map(|b| b as i8)
    }

    /// `dequantize_row_q8_K`: `d·q` (a scale of 1 per group: `(d·1)·q` is `d·q` exactly).
    pub(crate) fn unpack(&self) -> Ints256 {
        Ints256 {
            d: self.d,
            scales: [1; GROUPS],
            mins: None,
            q: self.quants(),
        }
    }
}

/// `quantize_row_q8_K_ref`: `iscale = -127/max` with `max` the signed absmax (so that element
/// maps to −127 and `d` has the opposite sign of `max`), `q = MIN(127, nearest_int(iscale·x))`,
/// `d = 1/iscale`, `bsums` the sums of 16. An all-zero block is all zero bytes (ggml writes
/// `d = 0` and zero `qs` and leaves `bsums` unwritten; zero is their only consistent value).
pub(crate) fn quantize_q8_k(x: &[f32; QK_K]) -> [u8; 292] {
    let (amax, max) = x.iter().fold((0.0f32, 0.0f32), |(amax, max), &v| {
        if v.abs() > amax {
            (v.abs(), v)
        } else {
            (amax, max)
        }
    });
    if amax == 0.0 {
        return [0; 292];
    }
    let iscale = -127.0 / max;
    let q: [i8; QK_K] = x.map(|v| nearest_int(iscale * v).min(127) as i8);
    let (groups, _) = q.as_chunks::<GROUP>();
    let bsums: Vec<u8> = groups
        .iter()
        .flat_map(|g| g.iter().map(|&v| i16::from(v)).sum::<i16>().to_le_bytes())
        .collect();
    concat(&[&(1.0 / iscale).to_le_bytes(), &q.map(|v| v as u8), &bsums])
}

// ---------------------------------------------------------------------------------------------
// Dot products against Q8_K activations (ggml_vec_dot_q{2..6}_K_q8_K_generic).

/// How a kernel turns its per-block integer sums into floats. The integer parts are exact and
/// order-free; only the float accumulation has to follow ggml.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accumulate {
    /// Q2_K: `sumf += dall·isum − dmin·summs` per block.
    Scalar,
    /// Q3_K … Q6_K: eight lanes `sums[l] += d·aux32[l]` (lane l = element index mod 8), with
    /// `sumf −= dmin·sumi` per block for the formats with mins, and `sumf += sums[l]` at the end.
    Lanes,
}

/// Dot of a row of `ty` super-blocks with a row of Q8_K blocks; lengths already validated.
pub(crate) fn dot_q8_k(ty: GgmlType, row: &[u8], act: &[u8]) -> Result<f32, QuantError> {
    let style = match ty {
        GgmlType::Q2K => Accumulate::Scalar,
        GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => Accumulate::Lanes,
        other => return Err(QuantError::UnsupportedType(other)),
    };
    let mut sumf = 0.0f32;
    let mut sums = [0.0f32; 8];
    for (w, a) in row
        .chunks_exact(ty.type_size())
        .zip(act.chunks_exact(GgmlType::Q8K.type_size()))
    {
        let w = unpack(ty, w)?;
        let a = BlockQ8K::parse(a)?;
        let a_q = a.quants();
        // Σ scale·q8·q, split into the eight lanes of the generic kernels.
        let mut aux32 = [0i32; 8];
        for (e, (&x, &y)) in w.q.iter().zip(&a_q).enumerate() {
            aux32[e % 8] += i32::from(w.scales[e / GROUP]) * (i32::from(x) * i32::from(y));
        }
        // Σ bsums·min: the min term, from the activation's stored group sums.
        let min_term = w.mins.map(|(dmin, mins)| {
            let sumi: i32 = a
                .bsums
                .iter()
                .zip(&mins)
                .map(|(&s, &m)| i32::from(s) * i32::from(m))
                .sum();
            (dmin * a.d, sumi)
        });
        match style {
            Accumulate::Scalar => {
                let isum: i32 = aux32.iter().sum();
                let (dmin, summs) = min_term.unwrap_or((0.0, 0));
                sumf += (a.d * w.d) * isum as f32 - dmin * summs as f32;
            }
            Accumulate::Lanes => {
                let d = w.d * a.d;
                for (s, &v) in sums.iter_mut().zip(&aux32) {
                    *s += d * v as f32;
                }
                if let Some((dmin, sumi)) = min_term {
                    sumf -= dmin * sumi as f32;
                }
            }
        }
    }
    if style == Accumulate::Lanes {
        for s in sums {
            sumf += s;
        }
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's in-place word shuffle for Q3_K scales (dequantize_row_q3_K), transcribed.
    fn q3_k_scales_ggml(scales: &[u8; 12]) -> [i8; 16] {
        const KMASK1: u32 = 0x0303_0303;
        const KMASK2: u32 = 0x0f0f_0f0f;
        let word = |i: usize| {
            u32::from_le_bytes([
                scales[4 * i],
                scales[4 * i + 1],
                scales[4 * i + 2],
                scales[4 * i + 3],
            ])
        };
        let mut aux = [word(0), word(1), word(2), 0];
        let tmp = aux[2];
        aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
        aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
        aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
        aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
        let bytes: Vec<u8> = aux.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::array::from_fn(|i| bytes[i] as i8 - 32)
    }

    /// ggml's `utmp` shuffle for Q4_K/Q5_K (ggml_vec_dot_q4_K_q8_K_generic), transcribed.
    fn k4_scales_mins_ggml(scales: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
        const KMASK1: u32 = 0x3f3f_3f3f;
        const KMASK2: u32 = 0x0f0f_0f0f;
        const KMASK3: u32 = 0x0303_0303;
        let word = |i: usize| {
            u32::from_le_bytes([
                scales[4 * i],
                scales[4 * i + 1],
                scales[4 * i + 2],
                scales[4 * i + 3],
            ])
        };
        let mut utmp = [word(0), word(1), word(2), 0];
        utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
        let uaux = utmp[1] & KMASK1;
        utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
        utmp[2] = uaux;
        utmp[0] &= KMASK1;
        let bytes: Vec<u8> = utmp.iter().flat_map(|w| w.to_le_bytes()).collect();
        (
            std::array::from_fn(|i| bytes[i]),
            std::array::from_fn(|i| bytes[8 + i]),
        )
    }

    fn pseudo_random_scales(seed: u64) -> [u8; 12] {
        let mut s = seed;
        std::array::from_fn(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
    }

    #[test]
    fn q3_k_scale_unpacking_matches_ggml_shuffle() {
        for seed in 0..2000 {
            let sc = pseudo_random_scales(seed);
            assert_eq!(q3_k_scales(&sc), q3_k_scales_ggml(&sc), "{sc:?}");
        }
        assert_eq!(q3_k_scales(&[0xFF; 12]), [31; 16]);
        assert_eq!(q3_k_scales(&[0; 12]), [-32; 16]);
    }

    #[test]
    fn get_scale_min_k4_matches_ggml_shuffle() {
        for seed in 0..2000 {
            let sc = pseudo_random_scales(seed);
            let (scales, mins) = k4_scales_mins_ggml(&sc);
            for j in 0..8 {
                assert_eq!(
                    get_scale_min_k4(j, &sc),
                    (scales[j], mins[j]),
                    "j={j} {sc:?}"
                );
            }
        }
        // Hand-checked: j = 5 takes the low nibble of byte 9 plus the top bits of byte 1,
        // and the high nibble of byte 9 plus the top bits of byte 5.
        let mut sc = [0u8; 12];
        sc[9] = 0xA7;
        sc[1] = 0b1100_0000;
        sc[5] = 0b0100_0000;
        assert_eq!(get_scale_min_k4(5, &sc), (0x7 | (3 << 4), 0xA | (1 << 4)));
    }

    #[test]
    fn element_order_of_the_bit_planes() {
        let mut qs = [0u8; 64];
        qs[33] = 0b1110_0100; // half 1, byte 1: planes 0..4 hold 0, 1, 2, 3
        assert_eq!(
            [
                crumb(&qs, 129),
                crumb(&qs, 161),
                crumb(&qs, 193),
                crumb(&qs, 225)
            ],
            [0, 1, 2, 3]
        );
        let mut q4 = [0u8; 128];
        q4[70] = 0x9C; // chunk 2, byte 6
        assert_eq!((nibble(&q4, 134), nibble(&q4, 166)), (0xC, 0x9));
        let mut mask = [0u8; 32];
        mask[5] = 0b1000_0001;
        assert_eq!(
            (
                high_bit(&mask, 5),
                high_bit(&mask, 229),
                high_bit(&mask, 37)
            ),
            (1, 1, 0)
        );
    }

    #[test]
    fn q6_k_element_layout() {
        let mut raw = [0u8; 210];
        // Element 128 + 96 + 3 = 227: h = 1, r = 3, l = 3 → high nibble of ql[64 + 32 + 3], bits 6..8 of qh[35].
        raw[99] = 0xB0;
        raw[128 + 35] = 0b1000_0000;
        let b = BlockQ6K::parse(&raw).unwrap();
        assert_eq!(b.quant(227), (0xB | (2 << 4)) - 32);
        assert_eq!(b.quant(226), -32);
    }

    #[test]
    fn views_cover_exactly_type_size() {
        for ty in [
            GgmlType::Q2K,
            GgmlType::Q3K,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
            GgmlType::Q8K,
        ] {
            let raw = vec![0u8; ty.type_size()];
            assert!(unpack(ty, &raw).is_ok(), "{ty}");
            assert!(unpack(ty, &raw[1..]).is_err(), "{ty}");
        }
        assert_eq!(
            unpack(GgmlType::Q8_0, &[0; 34]),
            Err(QuantError::UnsupportedType(GgmlType::Q8_0))
        );
    }

    #[test]
    fn q8_k_bsums_are_read_little_endian() {
        let mut raw = [0u8; 292];
        raw[260] = 0x34;
        raw[261] = 0x82;
        raw[290] = 0xFF;
        raw[291] = 0x7F;
        let b = BlockQ8K::parse(&raw).unwrap();
        assert_eq!(b.bsums[0], i16::from_le_bytes([0x34, 0x82]));
        assert_eq!(b.bsums[15], i16::MAX);
    }
}
