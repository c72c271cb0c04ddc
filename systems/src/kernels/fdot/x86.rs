//! x86-64 kernels: AVX2 + FMA + F16C.
//!
//! Every format implements [`Format`]: a block is `RUNS` runs of 32 elements, and a run
//! decodes to four `__m256` of weights. Quantized formats produce a run as 32 signed byte
//! quants plus a scale and offset per 16-element half ([`Quants`]), which one shared helper
//! ([`widen`]) turns into `q·d + m`; F32/F16/BF16 just load and convert. One generic kernel
//! ([`dot_rows`]) multiplies the decoded runs into f32 accumulators for 1–4 activation rows.
//!
//! Every function here is a `#[target_feature]` function: only `mod.rs` calls into this file,
//! after [`detected`]. Memory is touched only through the bounds-checked slice helpers below
//! (`at`, `load16`, `load8f`, `load8f_bytes`), whose `unsafe` blocks each read exactly the
//! array they are given.

use std::arch::x86_64::*;
use std::ops::Range;

use chord_resources::GgmlType;
use chord_resources::quant::get_scale_min_k4;

use super::{MAX_ROWS, RUN};

/// Whether this CPU runs the kernels of this file.
pub(super) fn detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Whether this file has a kernel for `ty`.
pub(super) fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K
    )
}

/// [`super::matmul_rows_f32`] for a type this file [`supports`] (panics on another), `k` a
/// multiple of 32, rows of `row_bytes` bytes. Lengths were checked by the caller; the
/// kernels' own slice indexing panics rather than reading out of bounds if they were not.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_rows(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    k: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let g = Gemm {
        w,
        row_bytes,
        k,
        x,
        n,
    };
    match ty {
        GgmlType::F32 => g.run::<F32>(rows, out),
        GgmlType::F16 => g.run::<F16>(rows, out),
        GgmlType::BF16 => g.run::<Bf16>(rows, out),
        GgmlType::Q4_0 => g.run::<Legacy<4, false>>(rows, out),
        GgmlType::Q4_1 => g.run::<Legacy<4, true>>(rows, out),
        GgmlType::Q5_0 => g.run::<Legacy<5, false>>(rows, out),
        GgmlType::Q5_1 => g.run::<Legacy<5, true>>(rows, out),
        GgmlType::Q8_0 => g.run::<Legacy<8, false>>(rows, out),
        GgmlType::Q2K => g.run::<Q2K>(rows, out),
        GgmlType::Q3K => g.run::<Q3K>(rows, out),
        GgmlType::Q4K => g.run::<Q4K>(rows, out),
        GgmlType::Q5K => g.run::<Q5K>(rows, out),
        GgmlType::Q6K => g.run::<Q6K>(rows, out),
        other => panic!("fdot x86: no kernel for {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Memory: fixed-size views of slices, and the only unsafe code of the file (each load reads
// exactly the array it is given).

/// The `N` bytes of `s` at `off` (panics if out of bounds).
#[inline(always)]
fn at<const N: usize>(s: &[u8], off: usize) -> &[u8; N] {
    match s.get(off..).and_then(|t| t.first_chunk::<N>()) {
        Some(a) => a,
        None => panic!("fdot: {N} bytes at {off} outside a {}-byte slice", s.len()),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load8f(x: &[f32; 8]) -> __m256 {
    // SAFETY: `x` is 8 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

/// Eight little-endian f32 stored as bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load8f_bytes(b: &[u8; 32]) -> __m256 {
    // SAFETY: `b` is 32 readable bytes (8 f32, little-endian like x86); `loadu` has no
    // alignment requirement.
    unsafe { _mm256_loadu_ps(b.as_ptr().cast()) }
}

/// The f16 in `b` widened (exact) into all eight lanes. Broadcasting the 16 bits before the
/// conversion keeps it a pure vector sequence (no partial-register merge into an
/// accumulator).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16x8(b: &[u8; 2]) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(*b)))
}

/// The f16 in `b` as an f32 (exact).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16_to_f32(b: &[u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(*b))))
}

// ---------------------------------------------------------------------------------------------
// Shared decoding helpers.

/// `(v >> shift) & mask` in every byte: a bit field of each byte. The shift is done on 16-bit
/// lanes, so `mask` must keep only bits that stayed in their byte (`shift + width ≤ 8`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn field(v: __m128i, shift: usize, mask: u8) -> __m128i {
    let count = _mm_cvtsi32_si128(shift as i32);
    _mm_and_si128(_mm_srl_epi16(v, count), _mm_set1_epi8(mask as i8))
}

/// 0xFF in each byte of `v` that has bit `bit` set, else 0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn test_bit(v: __m128i, bit: usize) -> __m128i {
    let probe = _mm_set1_epi8((1u8 << bit) as i8);
    _mm_cmpeq_epi8(_mm_and_si128(v, probe), probe)
}

/// Bit `j` of the little-endian u32 in `bits` → byte `j % 16` of half `j / 16`: 0xFF where
/// set, 0 where clear (the legacy Q5 formats' `qh`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn expand_bits(bits: &[u8; 4]) -> [__m128i; 2] {
    let v = _mm_set1_epi32(i32::from_le_bytes(*bits));
    // Byte j of half h takes byte 2h + j/8 of `bits`, then tests bit j%8.
    let probe = _mm_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let half = |spread: i64| {
        let bytes = _mm_shuffle_epi8(v, _mm_set_epi64x(spread + 0x0101_0101_0101_0101, spread));
        _mm_cmpeq_epi8(_mm_and_si128(bytes, probe), probe)
    };
    [half(0), half(0x0202_0202_0202_0202)]
}

/// The two nibbles of 16 packed bytes: low nibbles (elements 0..16), high nibbles (16..32).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn nibbles(qs: &[u8; 16]) -> [__m128i; 2] {
    let v = load16(qs);
    [field(v, 0, 0x0F), field(v, 4, 0x0F)]
}

/// `q | 0x10` where `set` is 0xFF: the fifth bit of the Q5 formats.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn fifth_bit(q: __m128i, set: __m128i) -> __m128i {
    _mm_or_si128(q, _mm_and_si128(set, _mm_set1_epi8(0x10)))
}

/// 32 quants as signed bytes in two 16-element halves, and per half the scale `d` and the
/// offset `m` of `value = q·d + m` (in every lane).
struct Quants {
    q: [__m128i; 2],
    d: [__m256; 2],
    m: [__m256; 2],
}

/// Eight signed bytes (the low 8 of `q`) → `q·d + m` as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn affine8(q: __m128i, d: __m256, m: __m256) -> __m256 {
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d, m)
}

/// A run of [`Quants`] → its 32 values, eight per vector, in element order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn widen(qs: Quants) -> [__m256; 4] {
    let [q0, q1] = qs.q;
    [
        affine8(q0, qs.d[0], qs.m[0]),
        affine8(_mm_unpackhi_epi64(q0, q0), qs.d[0], qs.m[0]),
        affine8(q1, qs.d[1], qs.m[1]),
        affine8(_mm_unpackhi_epi64(q1, q1), qs.d[1], qs.m[1]),
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

// ---------------------------------------------------------------------------------------------
// Formats.

/// One weight format's decoder.
trait Format {
    /// Bytes per block.
    const BYTES: usize;
    /// 32-element runs per block.
    const RUNS: usize;
    /// What a block's runs share (its scales), decoded once per block.
    type Header;
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C. `block` is `BYTES` long (else this panics).
    unsafe fn header(block: &[u8]) -> Self::Header;
    /// Run `r < RUNS` of `block` as 32 f32 weights.
    ///
    /// # Safety
    /// As [`Format::header`].
    unsafe fn run(block: &[u8], h: &Self::Header, r: usize) -> [__m256; 4];
}

/// F32 weights, taken 32 at a time.
struct F32;

impl Format for F32 {
    const BYTES: usize = 4 * RUN;
    const RUNS: usize = 1;
    type Header = ();

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(_: &[u8]) {}

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], _: &(), _: usize) -> [__m256; 4] {
        std::array::from_fn(|c| load8f_bytes(at(b, 32 * c)))
    }
}

/// F16 weights (F16C conversion: exact).
struct F16;

impl Format for F16 {
    const BYTES: usize = 2 * RUN;
    const RUNS: usize = 1;
    type Header = ();

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(_: &[u8]) {}

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], _: &(), _: usize) -> [__m256; 4] {
        std::array::from_fn(|c| _mm256_cvtph_ps(load16(at(b, 16 * c))))
    }
}

/// BF16 weights: the 16 bits become the high half of an f32.
struct Bf16;

impl Format for Bf16 {
    const BYTES: usize = 2 * RUN;
    const RUNS: usize = 1;
    type Header = ();

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(_: &[u8]) {}

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], _: &(), _: usize) -> [__m256; 4] {
        std::array::from_fn(|c| {
            let wide = _mm256_cvtepu16_epi32(load16(at(b, 16 * c)));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        })
    }
}

/// The 32-element formats, laid out as `d: f16`, `m: f16` (if `MIN`), `qh: [u8; 4]` (if
/// `BITS == 5`), then the quants (`BITS == 8`: 32 i8; else 16 bytes of nibbles). Q4_0 =
/// `<4, false>`, Q4_1 = `<4, true>`, Q5_0 = `<5, false>`, Q5_1 = `<5, true>`, Q8_0 =
/// `<8, false>`; the formats without a min are centred (`q − 8`, `q − 16`).
struct Legacy<const BITS: u8, const MIN: bool>;

impl<const BITS: u8, const MIN: bool> Legacy<BITS, MIN> {
    const QH: usize = if MIN { 4 } else { 2 };
    const QS: usize = Self::QH + if BITS == 5 { 4 } else { 0 };
    const BIAS: i8 = if MIN || BITS == 8 { 0 } else { 1 << (BITS - 1) };
}

/// A block's `d` and `m` (zero without a min), in every lane.
struct Scale {
    d: __m256,
    m: __m256,
}

impl<const BITS: u8, const MIN: bool> Format for Legacy<BITS, MIN> {
    const BYTES: usize = Self::QS + if BITS == 8 { 32 } else { 16 };
    const RUNS: usize = 1;
    type Header = Scale;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(b: &[u8]) -> Scale {
        Scale {
            d: f16x8(at(b, 0)),
            m: if MIN {
                f16x8(at(b, 2))
            } else {
                _mm256_setzero_ps()
            },
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], h: &Scale, _: usize) -> [__m256; 4] {
        let mut q = if BITS == 8 {
            [load16(at(b, Self::QS)), load16(at(b, Self::QS + 16))]
        } else {
            nibbles(at(b, Self::QS))
        };
        if BITS == 5 {
            let high = expand_bits(at(b, Self::QH));
            q = [fifth_bit(q[0], high[0]), fifth_bit(q[1], high[1])];
        }
        if Self::BIAS != 0 {
            let bias = _mm_set1_epi8(Self::BIAS);
            q = q.map(|v| _mm_sub_epi8(v, bias));
        }
        widen(Quants {
            q,
            d: [h.d; 2],
            m: [h.m; 2],
        })
    }
}

/// A K-quant super-block's scales per 16-element group `g`: `value = q·d[g] + m[g]`
/// (`d[g] = d·scale[g]`, `m[g] = −dmin·min[g]`, 0 without mins).
struct KScales {
    d: [f32; 16],
    m: [f32; 16],
}

impl KScales {
    /// `d·scales[g]` and `−dmin·mins[g]`.
    #[inline(always)]
    fn new(d: f32, scales: [i8; 16], mins: Option<(f32, [u8; 16])>) -> Self {
        let (dmin, mins) = mins.unwrap_or((0.0, [0; 16]));
        Self {
            d: scales.map(|s| d * f32::from(s)),
            m: mins.map(|v| -(dmin * f32::from(v))),
        }
    }

    /// Q4_K / Q5_K: eight 6-bit (scale, min) pairs, one per 32 elements.
    #[inline(always)]
    fn k4(b: &[u8], d: f32, dmin: f32) -> Self {
        let packed: &[u8; 12] = at(b, 4);
        let pairs: [(u8, u8); 8] = std::array::from_fn(|j| get_scale_min_k4(j, packed));
        Self::new(
            d,
            std::array::from_fn(|g| pairs[g / 2].0 as i8),
            Some((dmin, std::array::from_fn(|g| pairs[g / 2].1))),
        )
    }
}

/// Run `r` of a K-quant block: quants `q` (element order), scales of groups `2r`, `2r + 1`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k_run(q: [__m128i; 2], h: &KScales, r: usize) -> [__m256; 4] {
    let g = 2 * r;
    widen(Quants {
        q,
        d: [_mm256_set1_ps(h.d[g]), _mm256_set1_ps(h.d[g + 1])],
        m: [_mm256_set1_ps(h.m[g]), _mm256_set1_ps(h.m[g + 1])],
    })
}

/// The 2-bit field of run `r` from `qs` (Q2_K / Q3_K: bit-plane `r % 4` of the 32 bytes at
/// `32·(r / 4)`), as two halves.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn crumbs(qs: &[u8], r: usize) -> [__m128i; 2] {
    let base = 32 * (r / 4);
    [0, 16].map(|h| field(load16(at(qs, base + h)), 2 * (r % 4), 3))
}

/// Q2_K: `scales[16]` (low nibble scale, high nibble min), `qs[64]`, `d`, `dmin`.
struct Q2K;

impl Format for Q2K {
    const BYTES: usize = 84;
    const RUNS: usize = 8;
    type Header = KScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(b: &[u8]) -> KScales {
        let sc: &[u8; 16] = at(b, 0);
        KScales::new(
            f16_to_f32(at(b, 80)),
            sc.map(|s| (s & 0xF) as i8),
            Some((f16_to_f32(at(b, 82)), sc.map(|s| s >> 4))),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], h: &KScales, r: usize) -> [__m256; 4] {
        k_run(crumbs(at::<64>(b, 16), r), h, r)
    }
}

/// Q3_K: `hmask[32]`, `qs[64]`, `scales[12]` (16 × 6 bits, biased by 32), `d`. A clear
/// high bit subtracts 4.
struct Q3K;

impl Format for Q3K {
    const BYTES: usize = 110;
    const RUNS: usize = 8;
    type Header = KScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(b: &[u8]) -> KScales {
        let s: &[u8; 12] = at(b, 96);
        // Scale i: low nibble of s[i % 8] (high half for i ≥ 8), high two bits from
        // s[8 + i % 4] >> 2·(i / 4).
        let scales = std::array::from_fn(|i| {
            let low = if i < 8 { s[i] & 0xF } else { s[i - 8] >> 4 };
            let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
            (low | (high << 4)) as i8 - 32
        });
        KScales::new(f16_to_f32(at(b, 108)), scales, None)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], h: &KScales, r: usize) -> [__m256; 4] {
        let low = crumbs(at::<64>(b, 32), r);
        let four = _mm_set1_epi8(4);
        let q = [0, 1].map(|i| {
            let set = test_bit(load16(at(b, 16 * i)), r);
            _mm_sub_epi8(low[i], _mm_andnot_si128(set, four))
        });
        k_run(q, h, r)
    }
}

/// Q4_K: `d`, `dmin`, `scales[12]`, `qs[128]` (run r: nibble `r % 2` of the 32 bytes at
/// `32·(r / 2)`).
struct Q4K;

/// Run `r`'s nibbles of a Q4_K / Q5_K `qs`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k4_nibbles(qs: &[u8; 128], r: usize) -> [__m128i; 2] {
    let base = 32 * (r / 2);
    [0, 16].map(|h| field(load16(at(qs, base + h)), 4 * (r % 2), 0x0F))
}

impl Format for Q4K {
    const BYTES: usize = 144;
    const RUNS: usize = 8;
    type Header = KScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(b: &[u8]) -> KScales {
        KScales::k4(b, f16_to_f32(at(b, 0)), f16_to_f32(at(b, 2)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], h: &KScales, r: usize) -> [__m256; 4] {
        k_run(k4_nibbles(at(b, 16), r), h, r)
    }
}

/// Q5_K: as Q4_K with `qh[32]` before `qs`: element `e`'s fifth bit is bit `e / 32` of
/// `qh[e % 32]`.
struct Q5K;

impl Format for Q5K {
    const BYTES: usize = 176;
    const RUNS: usize = 8;
    type Header = KScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(b: &[u8]) -> KScales {
        KScales::k4(b, f16_to_f32(at(b, 0)), f16_to_f32(at(b, 2)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], h: &KScales, r: usize) -> [__m256; 4] {
        let low = k4_nibbles(at(b, 48), r);
        let q = [0, 1].map(|i| fifth_bit(low[i], test_bit(load16(at(b, 16 + 16 * i)), r)));
        k_run(q, h, r)
    }
}

/// Q6_K: `ql[128]`, `qh[64]`, `scales[16]` (i8), `d`. Element `128·hh + 32·rr + l`: low
/// nibble `rr / 2` of `ql[64·hh + 32·(rr % 2) + l]`, high two bits `qh[32·hh + l] >> 2·rr`,
/// minus 32.
struct Q6K;

impl Format for Q6K {
    const BYTES: usize = 210;
    const RUNS: usize = 8;
    type Header = KScales;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(b: &[u8]) -> KScales {
        let sc: &[u8; 16] = at(b, 192);
        KScales::new(f16_to_f32(at(b, 208)), sc.map(|s| s as i8), None)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], h: &KScales, r: usize) -> [__m256; 4] {
        let (hh, rr) = (r / 4, r % 4);
        let bias = _mm_set1_epi8(32);
        let q = [0, 16].map(|l| {
            let low = field(load16(at(b, 64 * hh + 32 * (rr % 2) + l)), 4 * (rr / 2), 0x0F);
            let high = field(load16(at(b, 128 + 32 * hh + l)), 2 * rr, 3);
            _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16::<4>(high)), bias)
        });
        k_run(q, h, r)
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel.

/// `[Σ w·x_r for r < R]`: one weight row (whole blocks of `F`) against `R` activation rows of
/// the same length. Each run is decoded once and multiplied into every row's accumulators.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_rows<F: Format, const R: usize>(w_row: &[u8], xs: [&[f32]; R]) -> [f32; R] {
    // Independent accumulators per row, enough FMAs in flight to hide their latency.
    let lanes = if R == 1 { 4 } else { 2 };
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    let block_elems = F::RUNS * RUN;
    for (b, block) in w_row.chunks_exact(F::BYTES).enumerate() {
        // SAFETY: this function is compiled with (and only runs with) AVX2, FMA and F16C;
        // `block` is `F::BYTES` long.
        let h = unsafe { F::header(block) };
        for run in 0..F::RUNS {
            // SAFETY: as for `header`; `run < F::RUNS`.
            let wv = unsafe { F::run(block, &h, run) };
            let base = b * block_elems + run * RUN;
            for (acc_r, x) in acc.iter_mut().zip(xs) {
                let (xc, _) = x[base..base + RUN].as_chunks::<8>();
                for (c, (w8, x8)) in wv.iter().zip(xc).enumerate() {
                    let a = &mut acc_r[c % lanes];
                    *a = _mm256_fmadd_ps(*w8, load8f(x8), *a);
                }
            }
        }
    }
    acc.map(|a| {
        let mut s = a[0];
        for v in &a[1..lanes] {
            s = _mm256_add_ps(s, *v);
        }
        hsum(s)
    })
}

/// One matmul's operands: `w` rows of `row_bytes`, `x` `[n × k]`.
struct Gemm<'a> {
    w: &'a [u8],
    row_bytes: usize,
    k: usize,
    x: &'a [f32],
    n: usize,
}

/// Weight bytes a tile of rows may span, so that a tile and four activation rows stay in L1
/// while the tile's rows go over each group of four activation rows.
const TILE_BYTES: usize = 8 * 1024;

impl Gemm<'_> {
    /// `out[r·len + j − rows.start] = w_j · x_r` (see [`super::matmul_rows_f32`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn run<F: Format>(&self, rows: Range<usize>, out: &mut [f32]) {
        debug_assert!(self.k.is_multiple_of(F::RUNS * RUN));
        debug_assert_eq!(self.row_bytes, self.k / (F::RUNS * RUN) * F::BYTES);
        let len = rows.len();
        let tile = (TILE_BYTES / self.row_bytes.max(1)).max(1);
        let mut j0 = rows.start;
        while j0 < rows.end {
            let tile_rows = j0..(j0 + tile).min(rows.end);
            let mut r0 = 0;
            while r0 < self.n {
                let rn = (self.n - r0).min(MAX_ROWS);
                for j in tile_rows.clone() {
                    let w_row = &self.w[j * self.row_bytes..(j + 1) * self.row_bytes];
                    let x = |r: usize| &self.x[(r0 + r) * self.k..(r0 + r + 1) * self.k];
                    let mut res = [0.0f32; MAX_ROWS];
                    match rn {
                        1 => res[..1].copy_from_slice(&dot_rows::<F, 1>(w_row, [x(0)])),
                        2 => res[..2].copy_from_slice(&dot_rows::<F, 2>(w_row, [x(0), x(1)])),
                        3 => res[..3]
                            .copy_from_slice(&dot_rows::<F, 3>(w_row, [x(0), x(1), x(2)])),
                        _ => res = dot_rows::<F, 4>(w_row, [x(0), x(1), x(2), x(3)]),
                    }
                    for (r, v) in res[..rn].iter().enumerate() {
                        out[(r0 + r) * len + (j - rows.start)] = *v;
                    }
                }
                r0 += rn;
            }
            j0 = tile_rows.end;
        }
    }
}
