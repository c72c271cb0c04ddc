//! x86-64 kernels: AVX2 + FMA + F16C.
//!
//! Every format implements [`Format`]: a block is `RUNS` runs of 32 elements, and a run
//! decodes to four `__m256` of weights. Quantized formats produce a run as 32 byte quants
//! plus a scale and offset per 16-element half ([`Quants`]), which one shared helper
//! ([`widen`]) turns into `q·d + m`; the centred formats (Q4_0, Q5_0, Q3_K, Q6_K) fold their
//! centring into `m`, exactly. F32/F16/BF16 just load and convert. One generic kernel
//! ([`dot_rows`]) multiplies the decoded runs into f32 accumulators for 1–4 activation rows.
//!
//! Every function here is a `#[target_feature]` function (the [`Format`] methods are
//! `unsafe fn`s, as trait methods with target features must be): only `mod.rs` calls into
//! this file, after [`detected`]. Memory is touched only through the bounds-checked slice
//! helpers below (`at`, `load16`, `load8f`, `load8f_bytes`, `store8f`), whose `unsafe` blocks
//! each access exactly the array they are given.
//!
//! Hot code calls closures only directly, never through `array::map` / `from_fn`: those std
//! adapters have no target features, so a closure with intrinsics is not inlined into them
//! and every call would cross a function boundary (spilling the vector registers).

use std::arch::x86_64::*;
use std::ops::Range;

use chord_resources::GgmlType;

use super::{GEMM_PASS, GemmActs, Legacy, MAX_ROWS, RUN, tiled_rows};

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

/// `$body` with `$F` the [`Format`] of weight type `$ty` (panics on a type without one).
macro_rules! with_format {
    ($ty:expr, $F:ident => $body:expr) => {
        match $ty {
            GgmlType::F32 => {
                type $F = F32;
                $body
            }
            GgmlType::F16 => {
                type $F = F16;
                $body
            }
            GgmlType::BF16 => {
                type $F = Bf16;
                $body
            }
            GgmlType::Q4_0 => {
                type $F = Legacy<4, false>;
                $body
            }
            GgmlType::Q4_1 => {
                type $F = Legacy<4, true>;
                $body
            }
            GgmlType::Q5_0 => {
                type $F = Legacy<5, false>;
                $body
            }
            GgmlType::Q5_1 => {
                type $F = Legacy<5, true>;
                $body
            }
            GgmlType::Q8_0 => {
                type $F = Legacy<8, false>;
                $body
            }
            GgmlType::Q2K => {
                type $F = Q2K;
                $body
            }
            GgmlType::Q3K => {
                type $F = Q3K;
                $body
            }
            GgmlType::Q4K => {
                type $F = Q4K;
                $body
            }
            GgmlType::Q5K => {
                type $F = Q5K;
                $body
            }
            GgmlType::Q6K => {
                type $F = Q6K;
                $body
            }
            other => panic!("fdot x86: no kernel for {other}"),
        }
    };
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
    with_format!(ty, F => gemm::<F>(w, row_bytes, k, x, n, rows, out))
}

/// [`super::matmul_rows_gemm`]: the prefill GEMM on activations prepared once per product.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn matmul_rows_gemm(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    acts: &GemmActs,
    rows: Range<usize>,
    out: &mut [f32],
) {
    with_format!(ty, F => gemm_tiled::<F>(w, row_bytes, acts, rows, out))
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

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn store8f(dst: &mut [f32; 8], v: __m256) {
    // SAFETY: `dst` is 8 writable f32; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
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

/// [`field`] of the 16 bytes at `off` and of those at `off + 16` of `s` (the two halves of a
/// run).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn field_pair(s: &[u8], off: usize, shift: usize, mask: u8) -> [__m128i; 2] {
    [
        field(load16(at(s, off)), shift, mask),
        field(load16(at(s, off + 16)), shift, mask),
    ]
}

/// [`test_bit`] of the 16 bytes at `off` and of those at `off + 16` of `s`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn test_bit_pair(s: &[u8], off: usize, bit: usize) -> [__m128i; 2] {
    [
        test_bit(load16(at(s, off)), bit),
        test_bit(load16(at(s, off + 16)), bit),
    ]
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
        let f = |off| load8f_bytes(at(b, off));
        [f(0), f(32), f(64), f(96)]
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
        let f = |off| _mm256_cvtph_ps(load16(at(b, off)));
        [f(0), f(16), f(32), f(48)]
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
        let f = |off| {
            let wide = _mm256_cvtepu16_epi32(load16(at(b, off)));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        };
        [f(0), f(16), f(32), f(48)]
    }
}

/// A block's `d` and `m`, in every lane.
struct Scale {
    d: __m256,
    m: __m256,
}

/// The 32-element formats (see [`Legacy`] for the layout).
impl<const BITS: u8, const MIN: bool> Format for Legacy<BITS, MIN> {
    const BYTES: usize = Self::BLOCK_BYTES;
    const RUNS: usize = 1;
    type Header = Scale;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn header(b: &[u8]) -> Scale {
        let d = f16x8(at(b, 0));
        // The centred formats' `(q − BIAS)·d` is `q·d + m` with `m = −BIAS·d`, exact (a power
        // of two times d), so one fused multiply-add rounds it as the reference rounds
        // `(q − BIAS)·d`, and the quants stay unsigned.
        let m = if MIN {
            f16x8(at(b, 2))
        } else {
            _mm256_mul_ps(d, _mm256_set1_ps(-f32::from(Self::BIAS)))
        };
        Scale { d, m }
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
        widen(Quants {
            q,
            d: [h.d; 2],
            m: [h.m; 2],
        })
    }
}

/// A K-quant super-block's scales per 16-element group `g`: `value = q·d[g] + m[g]`
/// (`d[g] = d·scale[g]`; `m[g]` see [`Offset`]).
struct KScales {
    d: [f32; 16],
    m: [f32; 16],
}

/// Where a K-quant's offsets `m[g]` come from.
enum Offset {
    /// `−dmin·mins[g]`, the mins as 16 bytes (Q2_K, Q4_K, Q5_K).
    Mins(f32, __m128i),
    /// `−bias·d[g]`: Q3_K's and Q6_K's centring of their quants. `bias` is a power of two,
    /// so `m[g]` is exact and one fused multiply-add of the unsigned quant rounds
    /// `(q − bias)·d[g]` exactly as the reference does.
    Bias(f32),
}

impl KScales {
    /// From the 16 group scales as signed bytes (every K-quant scale and min fits in i8).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn new(d: f32, scales: __m128i, offset: Offset) -> Self {
        let mut out = Self {
            d: [0.0; 16],
            m: [0.0; 16],
        };
        let dv = bytes_times(scales, _mm256_set1_ps(d));
        let mv = match offset {
            Offset::Mins(dmin, mins) => bytes_times(mins, _mm256_set1_ps(-dmin)),
            Offset::Bias(bias) => {
                let f = _mm256_set1_ps(-bias);
                [_mm256_mul_ps(dv[0], f), _mm256_mul_ps(dv[1], f)]
            }
        };
        let (d8, _) = out.d.as_chunks_mut::<8>();
        let (m8, _) = out.m.as_chunks_mut::<8>();
        for i in 0..2 {
            store8f(&mut d8[i], dv[i]);
            store8f(&mut m8[i], mv[i]);
        }
        out
    }

    /// Q4_K / Q5_K: eight 6-bit (scale, min) pairs, one per 32 elements, in the 12 bytes at
    /// offset 4 (ggml's `get_scale_min_k4`, unpacked with its `kmask` word shuffle).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn k4(b: &[u8], d: f32, dmin: f32) -> Self {
        let packed: &[u8; 12] = at(b, 4);
        let u = |i: usize| u32::from_le_bytes(*at::<4>(packed, 4 * i));
        let (u0, u1, u2) = (u(0), u(1), u(2));
        const LOW6: u32 = 0x3f3f_3f3f;
        const LOW4: u32 = 0x0f0f_0f0f;
        const LOW2: u32 = 0x0303_0303;
        // Scales 0..4 and mins 0..4 are the low 6 bits of bytes 0..4 and 4..8; pair j ≥ 4
        // takes its low 4 bits from byte j + 4 and its top two from the top bits of bytes
        // j − 4 (scale) and j (min).
        let scales = [u0 & LOW6, (u2 & LOW4) | (((u0 >> 6) & LOW2) << 4)];
        let mins = [u1 & LOW6, ((u2 >> 4) & LOW4) | (((u1 >> 6) & LOW2) << 4)];
        // One value per 32 elements → one per 16-element group: each byte twice.
        let per_group = |w: [u32; 2]| {
            let v = _mm_cvtsi64_si128((u64::from(w[1]) << 32 | u64::from(w[0])) as i64);
            _mm_unpacklo_epi8(v, v)
        };
        Self::new(d, per_group(scales), Offset::Mins(dmin, per_group(mins)))
    }
}

/// 16 signed bytes times `f`, as two vectors of 8 f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bytes_times(v: __m128i, f: __m256) -> [__m256; 2] {
    let times = |h| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(h)), f);
    [times(v), times(_mm_unpackhi_epi64(v, v))]
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
    field_pair(qs, 32 * (r / 4), 2 * (r % 4), 3)
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
        let sc = load16(at(b, 0));
        KScales::new(
            f16_to_f32(at(b, 80)),
            field(sc, 0, 0x0F),
            Offset::Mins(f16_to_f32(at(b, 82)), field(sc, 4, 0x0F)),
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
        let u = |i: usize| u32::from_le_bytes(*at::<4>(s, 4 * i));
        let (u0, u1, high) = (u(0), u(1), u(2));
        const LOW4: u32 = 0x0f0f_0f0f;
        const LOW2: u32 = 0x0303_0303;
        // Scale i: low nibble of byte i % 8 (its high nibble for i ≥ 8), high two bits
        // `s[8 + i % 4] >> 2·(i / 4)` (ggml's `kmask` word shuffle), minus 32.
        let words = [
            (u0 & LOW4) | ((high & LOW2) << 4),
            (u1 & LOW4) | (((high >> 2) & LOW2) << 4),
            ((u0 >> 4) & LOW4) | (((high >> 4) & LOW2) << 4),
            ((u1 >> 4) & LOW4) | (((high >> 6) & LOW2) << 4),
        ]
        .map(|w| w as i32);
        let scales = _mm_sub_epi8(
            _mm_setr_epi32(words[0], words[1], words[2], words[3]),
            _mm_set1_epi8(32),
        );
        KScales::new(f16_to_f32(at(b, 108)), scales, Offset::Bias(4.0))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], h: &KScales, r: usize) -> [__m256; 4] {
        let low = crumbs(at::<64>(b, 32), r);
        // A set high bit adds 4 (and the offset subtracts 4 from every quant).
        let set = test_bit_pair(b, 0, r);
        let four = _mm_set1_epi8(4);
        let q3 = |i: usize| _mm_or_si128(low[i], _mm_and_si128(set[i], four));
        k_run([q3(0), q3(1)], h, r)
    }
}

/// Q4_K: `d`, `dmin`, `scales[12]`, `qs[128]` (run r: nibble `r % 2` of the 32 bytes at
/// `32·(r / 2)`).
struct Q4K;

/// Run `r`'s nibbles of a Q4_K / Q5_K `qs`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k4_nibbles(qs: &[u8; 128], r: usize) -> [__m128i; 2] {
    field_pair(qs, 32 * (r / 2), 4 * (r % 2), 0x0F)
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
        let set = test_bit_pair(b, 16, r);
        k_run([fifth_bit(low[0], set[0]), fifth_bit(low[1], set[1])], h, r)
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
        KScales::new(
            f16_to_f32(at(b, 208)),
            load16(at(b, 192)),
            Offset::Bias(32.0),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run(b: &[u8], h: &KScales, r: usize) -> [__m256; 4] {
        let (hh, rr) = (r / 4, r % 4);
        let low = field_pair(b, 64 * hh + 32 * (rr % 2), 4 * (rr / 2), 0x0F);
        let high = field_pair(b, 128 + 32 * hh, 2 * rr, 3);
        let q6 = |i: usize| _mm_or_si128(low[i], _mm_slli_epi16::<4>(high[i]));
        k_run([q6(0), q6(1)], h, r)
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel.

/// `[Σ w·x_r for r < R]`: one weight row (whole blocks of `F`) against `R` activation rows of
/// the same length. Each run is decoded once and multiplied into every row's accumulators.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_rows<F: Format, const R: usize>(w_row: &[u8], xs: [&[f32]; R]) -> [f32; R] {
    // Two independent accumulators per row keep FMAs in flight. The count must not depend on
    // `R`: a row's sum is then bit-identical whether it is evaluated alone (decode) or tiled
    // with others (prefill, batched sequences, speculative verification), so batching never
    // changes a greedy token.
    let lanes = 2;
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
    let mut out = [0.0f32; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        let mut s = a[0];
        for v in &a[1..lanes] {
            s = _mm256_add_ps(s, *v);
        }
        *o = hsum(s);
    }
    out
}

/// `out[r·len + j − rows.start] = w_j · x_r` for `F` weights (see
/// [`super::matmul_rows_f32`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn gemm<F: Format>(
    w: &[u8],
    row_bytes: usize,
    k: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    debug_assert!(k.is_multiple_of(F::RUNS * RUN));
    debug_assert_eq!(row_bytes, k / (F::RUNS * RUN) * F::BYTES);
    if n >= super::GEMM_MIN_ROWS {
        gemm_tiled::<F>(w, row_bytes, &GemmActs::transpose(x, n, k), rows, out);
        return;
    }
    tiled_rows(w, row_bytes, k, x, n, rows, out, |w_row, xs| {
        let mut res = [0.0f32; MAX_ROWS];
        match *xs {
            [a] => res[..1].copy_from_slice(&dot_rows::<F, 1>(w_row, [a])),
            [a, b] => res[..2].copy_from_slice(&dot_rows::<F, 2>(w_row, [a, b])),
            [a, b, c] => res[..3].copy_from_slice(&dot_rows::<F, 3>(w_row, [a, b, c])),
            [a, b, c, d] => res = dot_rows::<F, 4>(w_row, [a, b, c, d]),
            _ => unreachable!("tiled_rows passes 1..=MAX_ROWS activation rows"),
        }
        res
    });
}

// ---------------------------------------------------------------------------------------------
// Prefill GEMM: a tile of `GJ` weight rows decoded once to f32, then an outer-product
// microkernel over passes of `GR` activation rows (transposed once per call), so each weight
// value is loaded once per `GR` rows and each activation value once per `GJ` rows: 12
// accumulators of 8 outputs each, two FMAs per broadcast weight.

/// Weight rows per tile (broadcast one at a time).
const GJ: usize = 6;
/// Activation rows per pass (two registers).
const GR: usize = GEMM_PASS;

/// Decode one weight row of `F` into `dst` (its `k` f32 values).
#[target_feature(enable = "avx2,fma,f16c")]
fn decode_row<F: Format>(w_row: &[u8], dst: &mut [f32]) {
    let block_elems = F::RUNS * RUN;
    for (block, out) in w_row
        .chunks_exact(F::BYTES)
        .zip(dst.chunks_exact_mut(block_elems))
    {
        // SAFETY: this function is compiled with (and only runs with) AVX2, FMA and F16C;
        // `block` is `F::BYTES` long.
        let h = unsafe { F::header(block) };
        for (run, out) in out.chunks_exact_mut(RUN).enumerate() {
            // SAFETY: as for `header`; `run < F::RUNS`.
            let wv = unsafe { F::run(block, &h, run) };
            let (chunks, _) = out.as_chunks_mut::<8>();
            for (c, v) in chunks.iter_mut().zip(wv) {
                store8f(c, v);
            }
        }
    }
}

/// `out[r·len + j − rows.start] = w_j · x_r` for `n ≥ GEMM_MIN_ROWS`. Each output is one
/// FMA chain over `k` in order: the same bits whatever the tile, pass or batch it falls in.
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_tiled<F: Format>(
    w: &[u8],
    row_bytes: usize,
    acts: &GemmActs,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let (k, n, xt) = (acts.k, acts.n, &acts.xt);
    let len = rows.len();
    // tile[e][i] = weight row j0 + i, element e.
    let mut tile = vec![[0.0f32; GJ]; k];
    let mut row = vec![0.0f32; k];
    for j0 in rows.clone().step_by(GJ) {
        let valid = (rows.end - j0).min(GJ);
        for i in 0..GJ {
            if i < valid {
                let j = j0 + i;
                decode_row::<F>(&w[j * row_bytes..(j + 1) * row_bytes], &mut row);
            } else {
                row.fill(0.0);
            }
            for (t, &v) in tile.iter_mut().zip(&row) {
                t[i] = v;
            }
        }
        let jj = j0 - rows.start;
        for (p, xp) in xt.chunks_exact(k).enumerate() {
            let acc = gemm_pass(&tile, xp);
            let mut vals = [[0.0f32; 8]; 2];
            for (i, acc_i) in acc.iter().enumerate().take(valid) {
                store8f(&mut vals[0], acc_i[0]);
                store8f(&mut vals[1], acc_i[1]);
                for r in 0..GR.min(n - p * GR) {
                    out[(p * GR + r) * len + jj + i] = vals[r / 8][r % 8];
                }
            }
        }
    }
}

/// `acc[i][h]` lanes `l` = `Σ_e tile[e][i] · xp[e][8h + l]`, in order of `e`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn gemm_pass(tile: &[[f32; GJ]], xp: &[[f32; GR]]) -> [[__m256; 2]; GJ] {
    let mut acc = [[_mm256_setzero_ps(); 2]; GJ];
    for (wv, xv) in tile.iter().zip(xp) {
        let (xh, _) = xv.as_chunks::<8>();
        let (x0, x1) = (load8f(&xh[0]), load8f(&xh[1]));
        for (a, &wi) in acc.iter_mut().zip(wv) {
            let b = _mm256_set1_ps(wi);
            a[0] = _mm256_fmadd_ps(b, x0, a[0]);
            a[1] = _mm256_fmadd_ps(b, x1, a[1]);
        }
    }
    acc
}
