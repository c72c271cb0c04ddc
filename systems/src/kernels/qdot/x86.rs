//! x86-64 kernels: AVX2 + FMA + F16C for every type, and the legacy formats once more with
//! AVX-512 VNNI + VL (256-bit `vpdpbusd`).
//!
//! Every function here is a safe `#[target_feature]` function: calling one from code that
//! has not established the features is `unsafe`, which only `mod.rs` does, after
//! [`detected`] / [`detected_vnni`]. Memory is only touched through the bounds-checked slice
//! helpers below (`at`, `load16`, `load32`, `load8f`, `store32`), so the kernels themselves
//! are safe code. Each kernel is compiled with exactly the features of its ISA so that every
//! helper inlines into it (`#[inline(always)]` cannot be combined with `#[target_feature]`).
//!
//! Integer dots use `maddubs` (u8 × i8 → pairs of i16) then `madd` (pairs of i16 → i32), or
//! one `vpdpbusd` (u8 × i8, four products summed into i32, no saturation) with VNNI.
//! `maddubs` saturates at ±32767; every caller keeps a pair's sum below that: 8-bit signed
//! weights go through the sign trick (|w| ≤ 128, |a| ≤ 127 → 2·128·127 = 32512) and the
//! unsigned K-quant fields are at most 63 (2·63·127 = 16002). Activations come from the
//! quantizers here, whose values lie in −127..=127.

use std::arch::x86_64::*;

use chord_resources::GgmlType;

use super::{Acts, MatvecFn, Rows};

/// Whether this CPU runs the AVX2 kernels of this file.
pub(super) fn detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Whether this CPU runs the AVX-512 VNNI kernels too.
pub(super) fn detected_vnni() -> bool {
    detected()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

// ---------------------------------------------------------------------------------------------
// Memory: fixed-size views of byte slices, and the only unsafe code of the file (the loads
// and the store, each reading or writing exactly the array it is given).

/// The `N` bytes of `s` at `off` (panics if out of bounds; callers checked the lengths).
#[inline(always)]
fn at<const N: usize>(s: &[u8], off: usize) -> &[u8; N] {
    match s.get(off..).and_then(|t| t.first_chunk::<N>()) {
        Some(a) => a,
        None => panic!("qdot: {N} bytes at {off} outside a {}-byte slice", s.len()),
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
fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Eight floats of `x` from `off`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load8f(x: &[f32], off: usize) -> __m256 {
    let Some(v) = x.get(off..).and_then(|t| t.first_chunk::<8>()) else {
        panic!("qdot: 8 floats at {off} outside {}", x.len())
    };
    // SAFETY: `v` is 8 readable f32 (32 bytes); `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn store32(dst: &mut [u8; 32], v: __m256i) {
    // SAFETY: `dst` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

/// The little-endian f16 at `off`, widened (F16C; exact) into all eight lanes.
///
/// Broadcasting the 16 bits first keeps this a pure vector sequence: converting in lane 0
/// and broadcasting after lets LLVM merge the load into a `vpinsrw` whose untouched lanes
/// come from an arbitrary register, often an accumulator, which serialises the blocks.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16x8_at(s: &[u8], off: usize) -> __m256 {
    let h = u16::from_le_bytes(*at::<2>(s, off));
    _mm256_cvtph_ps(_mm_set1_epi16(h as i16))
}

/// The little-endian f32 at `off`, in all eight lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f32x8_at(s: &[u8], off: usize) -> __m256 {
    _mm256_set1_ps(f32::from_le_bytes(*at::<4>(s, off)))
}

/// `x` rounded to the nearest f16 (ties to even, as `GGML_FP32_TO_FP16`), as stored bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16_bytes(x: f32) -> [u8; 2] {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
    (_mm_extract_epi16::<0>(h) as u16).to_le_bytes()
}

/// Row `r`'s activation blocks: `nb` blocks of `ATS` bytes from `bytes[r·stride]`.
#[inline(always)]
fn act_blocks<'a, const ATS: usize, const R: usize>(
    acts: &Acts<'a>,
    nb: usize,
) -> [&'a [[u8; ATS]]; R] {
    std::array::from_fn(|r| &acts.bytes[r * acts.stride..].as_chunks::<ATS>().0[..nb])
}

/// Row `r`'s widened `(d, s)` activation scales: `nb` of them from `scales[r·nb]`.
#[inline(always)]
fn act_scales<'a, const R: usize>(acts: &Acts<'a>, nb: usize) -> [&'a [[f32; 2]]; R] {
    std::array::from_fn(|r| &acts.scales[r * nb..(r + 1) * nb])
}

// ---------------------------------------------------------------------------------------------
// Register helpers shared by all kernels.

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hmax_ps(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

/// Per i32 lane, the sum of four adjacent `u[i]·s[i]` (u8 × i8; see the module docs on
/// saturation).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// [`dot_u8i8`] in one `vpdpbusd` (which does not saturate).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn dot_u8i8_vnni(u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
}

/// 16 bytes of packed nibbles → 32 bytes: the low nibbles (elements 0..16), then the high
/// nibbles (elements 16..32): the legacy formats' element order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn nibbles32(qs: &[u8; 16]) -> __m256i {
    let v = load16(qs);
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(v), v),
        _mm256_set1_epi8(0x0F),
    )
}

/// Bit `j` of `bits` → byte `j`: 0xFF where set, 0 where clear.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bits32(bits: u32) -> __m256i {
    // Byte j takes byte j/8 of `bits`, then tests bit j%8.
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
    let probe = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(bytes, probe), probe)
}

/// `v` holds the same eight i16 in both 128-bit lanes; the result holds i16 `lo` in every
/// position of the low lane and i16 `hi` in every position of the high lane. With the
/// K-quants' 32-element runs this gives the scale of each 16-element group of a run.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn splat_i16(v: __m256i, lo: usize, hi: usize) -> __m256i {
    let pick = |i: usize| (((2 * i + 1) << 8) | (2 * i)) as i16;
    _mm256_shuffle_epi8(
        v,
        _mm256_set_m128i(_mm_set1_epi16(pick(hi)), _mm_set1_epi16(pick(lo))),
    )
}

/// The same 128 bits in both lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn both_lanes(v: __m128i) -> __m256i {
    _mm256_set_m128i(v, v)
}

/// `_mm256_srli_epi16::<N>` spelled shorter (bytes keep their own bits as long as callers
/// mask to the bits that did not cross a byte boundary).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn shr16<const N: i32>(v: __m256i) -> __m256i {
    _mm256_srli_epi16::<N>(v)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn shl16<const N: i32>(v: __m256i) -> __m256i {
    _mm256_slli_epi16::<N>(v)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn and8(v: __m256i, mask: u8) -> __m256i {
    _mm256_and_si256(v, _mm256_set1_epi8(mask as i8))
}

// ---------------------------------------------------------------------------------------------
// Legacy formats × Q8_0 / Q8_1: one 32-element block at a time.

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

/// Whether `KIND`'s decoded quants are signed (paired with the sign trick) or unsigned (with
/// an offset `m`, paired with Q8_1's `s = d·Σq`).
const fn legacy_signed(kind: u8) -> bool {
    matches!(kind, Q4_0 | Q5_0 | Q8_0)
}

/// One weight block: `(quants, d, m)`, quants as 32 bytes (i8 if signed, else u8), `d` and
/// `m` (zero for the signed formats) in every lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn legacy_block<const KIND: u8>(b: &[u8]) -> (__m256i, __m256, __m256) {
    let d = f16x8_at(b, 0);
    let zero = _mm256_setzero_ps();
    match KIND {
        // d, qs[16]: nibble − 8.
        Q4_0 => (
            _mm256_sub_epi8(nibbles32(at(b, 2)), _mm256_set1_epi8(8)),
            d,
            zero,
        ),
        // d, m, qs[16]: nibble.
        Q4_1 => (nibbles32(at(b, 4)), d, f16x8_at(b, 2)),
        // d, qh[4], qs[16]: (nibble | fifth bit << 4) − 16, i.e. the nibble where the fifth
        // bit is set and nibble | 0xF0 (as i8: nibble − 16) where it is clear.
        Q5_0 => {
            let high = bits32(u32::from_le_bytes(*at(b, 2)));
            let q = _mm256_or_si256(
                nibbles32(at(b, 6)),
                _mm256_andnot_si256(high, _mm256_set1_epi8(0xF0_u8 as i8)),
            );
            (q, d, zero)
        }
        // d, m, qh[4], qs[16]: nibble | fifth bit << 4.
        Q5_1 => {
            let high = bits32(u32::from_le_bytes(*at(b, 4)));
            (
                _mm256_or_si256(nibbles32(at(b, 8)), and8(high, 0x10)),
                d,
                f16x8_at(b, 2),
            )
        }
        // d, qs[32] (i8).
        _ => (load32(at(b, 2)), d, zero),
    }
}

/// Defines a legacy kernel `$kernel::<KIND, TS, ATS, R>` for `R` rows (`TS` bytes per weight
/// block, `ATS` per activation block) compiled with `$features`, whose integer dot is `$dot`.
/// Each instance carries its own feature set so that every helper inlines into it.
macro_rules! legacy_kernel {
    ($features:literal, $kernel:ident, $dot:ident) => {
        #[target_feature(enable = $features)]
        #[inline]
        fn $kernel<const KIND: u8, const TS: usize, const ATS: usize, const R: usize>(
            nb: usize,
            w: &[u8],
            acts: Acts<'_>,
            out: &mut [f32],
        ) {
            let wb = &w.as_chunks::<TS>().0[..nb];
            let scales = act_scales::<R>(&acts, nb);
            let rows = act_blocks::<ATS, R>(&acts, nb);
            // Two accumulator sets, for even and odd blocks, so consecutive blocks' FMAs
            // don't wait on each other.
            let mut acc = [[_mm256_setzero_ps(); R]; 2];
            // `m·s` in every lane, for the formats with an offset.
            let mut summs = [_mm256_setzero_ps(); R];
            for i0 in (0..nb).step_by(2) {
                for (h, acc) in acc.iter_mut().enumerate() {
                    let i = i0 + h;
                    if i >= nb {
                        break;
                    }
                    let (q, d, m) = legacy_block::<KIND>(&wb[i]);
                    // Sign trick: |q| (u8) · (a with q's sign) (i8) = q·a.
                    let uq = if legacy_signed(KIND) {
                        _mm256_sign_epi8(q, q)
                    } else {
                        q
                    };
                    for r in 0..R {
                        let a: &[u8; ATS] = &rows[r][i];
                        let y = load32(at(a, ATS - 32));
                        let sy = if legacy_signed(KIND) {
                            _mm256_sign_epi8(y, q)
                        } else {
                            y
                        };
                        let p = _mm256_cvtepi32_ps($dot(uq, sy));
                        let [da, sa] = scales[r][i];
                        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(da)), p, acc[r]);
                        if !legacy_signed(KIND) {
                            summs[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(sa), summs[r]);
                        }
                    }
                }
            }
            for r in 0..R {
                let sum = hsum_ps(_mm256_add_ps(acc[0][r], acc[1][r]));
                out[r] = sum + _mm256_cvtss_f32(summs[r]);
            }
        }
    };
}

legacy_kernel!("avx2,fma,f16c", legacy, dot_u8i8);
legacy_kernel!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    legacy_vnni,
    dot_u8i8_vnni
);

// ---------------------------------------------------------------------------------------------
// K-quants × Q8_K. A super-block is 8 runs of 32 elements; each run is unpacked once into 32
// u8 and multiplied with every row's 32 activations (`maddubs`), then with the scales of its
// two 16-element groups (`madd`) into an i32 sum per row. Offsets are folded in through the
// activations' 16-element sums `bsums`: Q3_K (q − 4) and Q6_K (q − 32) subtract
// `offset·Σ scale·bsum` from the integer sum; Q2_K/Q4_K/Q5_K subtract `dmin·Σ min·bsum`.

/// Q8_K: d (f32), qs[256], bsums[16] (i16).
const Q8K_BYTES: usize = 292;
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 260;

/// `isum[r] += madd(maddubs(u, run `run` of row r), scales)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn add_run<const R: usize>(
    isum: &mut [__m256i; R],
    ys: &[&[u8; Q8K_BYTES]; R],
    run: usize,
    u: __m256i,
    scales: __m256i,
) {
    for r in 0..R {
        let y = load32(at(ys[r], Q8K_QS + 32 * run));
        isum[r] = _mm256_add_epi32(
            isum[r],
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), scales),
        );
    }
}

/// `isum[r] −= (Σ_g scales[g]·bsums_r[g]) << SHIFT`: the offset `2^SHIFT` of Q3_K / Q6_K.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sub_offset<const SHIFT: i32, const R: usize>(
    isum: &mut [__m256i; R],
    ys: &[&[u8; Q8K_BYTES]; R],
    scales16: __m256i,
) {
    for r in 0..R {
        let bsums = load32(at(ys[r], Q8K_BSUMS));
        isum[r] = _mm256_sub_epi32(
            isum[r],
            _mm256_slli_epi32::<SHIFT>(_mm256_madd_epi16(bsums, scales16)),
        );
    }
}

/// End of a super-block: `acc[r] += (d·d_r)·isum[r]`, and with mins
/// `acc_min[r] += (dmin·d_r)·Σ_g mins16[g]·bsums_r[g]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn finish_superblock<const R: usize>(
    acc: &mut [__m256; R],
    acc_min: &mut [__m256; R],
    isum: &[__m256i; R],
    ys: &[&[u8; Q8K_BYTES]; R],
    d: __m256,
    mins: Option<(__m256, __m256i)>,
) {
    for r in 0..R {
        let ad = f32x8_at(ys[r], 0);
        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, ad), _mm256_cvtepi32_ps(isum[r]), acc[r]);
        if let Some((dmin, mins16)) = mins {
            let bsums = load32(at(ys[r], Q8K_BSUMS));
            let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins16));
            acc_min[r] = _mm256_fmadd_ps(_mm256_mul_ps(dmin, ad), m, acc_min[r]);
        }
    }
}

/// Q4_K / Q5_K's 12 packed bytes → 8 six-bit scales (bytes 0..8) and 8 six-bit mins (bytes
/// 8..16): ggml's `utmp` word shuffle (`get_scale_min_k4` for all j at once).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k4_scales_mins(s: &[u8; 12]) -> __m128i {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes(*at(s, 4 * i));
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let mins_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let mins_lo = u1 & KMASK1;
    let scales_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let scales_lo = u0 & KMASK1;
    _mm_set_epi32(
        mins_hi as i32,
        mins_lo as i32,
        scales_hi as i32,
        scales_lo as i32,
    )
}

/// Q3_K's 12 packed bytes → 16 signed six-bit scales (ggml's `kmask1`/`kmask2` shuffle, −32).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn q3_k_scales(s: &[u8; 12]) -> __m128i {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let word = |i: usize| u32::from_le_bytes(*at(s, 4 * i));
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let s2 = ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    let s3 = ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    let s0 = (a0 & KMASK2) | ((tmp & KMASK1) << 4);
    let s1 = (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    _mm_sub_epi8(
        _mm_set_epi32(s3 as i32, s2 as i32, s1 as i32, s0 as i32),
        _mm_set1_epi8(32),
    )
}

/// `[m0, m0, m1, m1, …, m7, m7]`: one min (i16) per 32-element run, spread over its two
/// 16-element groups to meet `bsums`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn per_group(mins8: __m128i) -> __m256i {
    _mm256_set_m128i(
        _mm_unpackhi_epi16(mins8, mins8),
        _mm_unpacklo_epi16(mins8, mins8),
    )
}

/// Drives a K-quant kernel: `superblock` adds one weight super-block (block `i` of the row)
/// for `R` rows. Returns `Σ acc − Σ acc_min` per row.
macro_rules! k_kernel {
    ($name:ident, $ts:expr, |$b:ident, $ys:ident, $acc:ident, $acc_min:ident| $body:block) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        fn $name<const R: usize>(nb: usize, w: &[u8], acts: Acts<'_>, out: &mut [f32]) {
            let wb = &w.as_chunks::<{ $ts }>().0[..nb];
            let acts = act_blocks::<Q8K_BYTES, R>(&acts, nb);
            let mut $acc = [_mm256_setzero_ps(); R];
            let mut $acc_min = [_mm256_setzero_ps(); R];
            for (i, $b) in wb.iter().enumerate() {
                let mut $ys = [&acts[0][i]; R];
                for r in 1..R {
                    $ys[r] = &acts[r][i];
                }
                let $b: &[u8] = $b;
                $body
            }
            for r in 0..R {
                out[r] = hsum_ps($acc[r]) - hsum_ps($acc_min[r]);
            }
        }
    };
}

// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), d, dmin.
k_kernel!(q2_k, 84, |b, ys, acc, acc_min| {
    let packed = load16(at(b, 0));
    let scales = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
    let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(
        _mm_srli_epi16::<4>(packed),
        _mm_set1_epi8(0x0F),
    ));
    let mut isum = [_mm256_setzero_si256(); R];
    for h in 0..2 {
        let sc = both_lanes(_mm_cvtepu8_epi16(if h == 0 {
            scales
        } else {
            _mm_srli_si128::<8>(scales)
        }));
        let mut q = load32(at(b, 16 + 32 * h));
        for r in 0..4 {
            add_run(
                &mut isum,
                &ys,
                4 * h + r,
                and8(q, 3),
                splat_i16(sc, 2 * r, 2 * r + 1),
            );
            q = shr16::<2>(q);
        }
    }
    finish_superblock(
        &mut acc,
        &mut acc_min,
        &isum,
        &ys,
        f16x8_at(b, 80),
        Some((f16x8_at(b, 82), mins16)),
    );
});

// Q3_K: hmask[32], qs[64] (2-bit), scales[12] (16 × 6-bit), d. q = crumb + 4·hbit − 4.
k_kernel!(q3_k, 110, |b, ys, acc, acc_min| {
    let scales = q3_k_scales(at(b, 96));
    let mut hm = load32(at(b, 0));
    let mut isum = [_mm256_setzero_si256(); R];
    for h in 0..2 {
        let sc = both_lanes(_mm_cvtepi8_epi16(if h == 0 {
            scales
        } else {
            _mm_srli_si128::<8>(scales)
        }));
        let mut q = load32(at(b, 32 + 32 * h));
        for r in 0..4 {
            // Run 4h + r: bits 2r..2r+2 of qs, bit 4h + r of hmask (moved to bit 2).
            let u = _mm256_or_si256(and8(q, 3), and8(shl16::<2>(hm), 4));
            add_run(
                &mut isum,
                &ys,
                4 * h + r,
                u,
                splat_i16(sc, 2 * r, 2 * r + 1),
            );
            q = shr16::<2>(q);
            hm = shr16::<1>(hm);
        }
    }
    sub_offset::<2, R>(&mut isum, &ys, _mm256_cvtepi8_epi16(scales));
    finish_superblock(&mut acc, &mut acc_min, &isum, &ys, f16x8_at(b, 108), None);
});

// Q4_K: d, dmin, scales[12], qs[128]: chunk c of 32 bytes holds run 2c (low nibbles) and run
// 2c + 1 (high nibbles); one scale and min per run.
k_kernel!(q4_k, 144, |b, ys, acc, acc_min| {
    let sm = k4_scales_mins(at(b, 4));
    let sc = both_lanes(_mm_cvtepu8_epi16(sm));
    let mins16 = per_group(_mm_cvtepu8_epi16(_mm_srli_si128::<8>(sm)));
    let mut isum = [_mm256_setzero_si256(); R];
    for c in 0..4 {
        let v = load32(at(b, 16 + 32 * c));
        add_run(
            &mut isum,
            &ys,
            2 * c,
            and8(v, 0x0F),
            splat_i16(sc, 2 * c, 2 * c),
        );
        add_run(
            &mut isum,
            &ys,
            2 * c + 1,
            and8(shr16::<4>(v), 0x0F),
            splat_i16(sc, 2 * c + 1, 2 * c + 1),
        );
    }
    finish_superblock(
        &mut acc,
        &mut acc_min,
        &isum,
        &ys,
        f16x8_at(b, 0),
        Some((f16x8_at(b, 2), mins16)),
    );
});

// Q5_K: d, dmin, scales[12], qh[32], qs[128]: as Q4_K plus bit `run` of qh as bit 4.
k_kernel!(q5_k, 176, |b, ys, acc, acc_min| {
    let sm = k4_scales_mins(at(b, 4));
    let sc = both_lanes(_mm_cvtepu8_epi16(sm));
    let mins16 = per_group(_mm_cvtepu8_epi16(_mm_srli_si128::<8>(sm)));
    let mut hb = load32(at(b, 16));
    let mut isum = [_mm256_setzero_si256(); R];
    for c in 0..4 {
        let v = load32(at(b, 48 + 32 * c));
        let lo = _mm256_or_si256(and8(v, 0x0F), and8(shl16::<4>(hb), 0x10));
        hb = shr16::<1>(hb);
        let hi = _mm256_or_si256(and8(shr16::<4>(v), 0x0F), and8(shl16::<4>(hb), 0x10));
        hb = shr16::<1>(hb);
        add_run(&mut isum, &ys, 2 * c, lo, splat_i16(sc, 2 * c, 2 * c));
        add_run(
            &mut isum,
            &ys,
            2 * c + 1,
            hi,
            splat_i16(sc, 2 * c + 1, 2 * c + 1),
        );
    }
    finish_superblock(
        &mut acc,
        &mut acc_min,
        &isum,
        &ys,
        f16x8_at(b, 0),
        Some((f16x8_at(b, 2), mins16)),
    );
});

// Q6_K: ql[128], qh[64], scales[16] (i8), d. Element 128h + 32r + l: nibble r/2 of
// ql[64h + 32(r%2) + l], bits 2r..2r+2 of qh[32h + l]; q = that − 32.
k_kernel!(q6_k, 210, |b, ys, acc, acc_min| {
    let scales = load16(at(b, 192));
    let mut isum = [_mm256_setzero_si256(); R];
    for h in 0..2 {
        let sc = both_lanes(_mm_cvtepi8_epi16(if h == 0 {
            scales
        } else {
            _mm_srli_si128::<8>(scales)
        }));
        let ql0 = load32(at(b, 64 * h));
        let ql1 = load32(at(b, 64 * h + 32));
        let qh = load32(at(b, 128 + 32 * h));
        let runs = [
            _mm256_or_si256(and8(ql0, 0x0F), and8(shl16::<4>(qh), 0x30)),
            _mm256_or_si256(and8(ql1, 0x0F), and8(shl16::<2>(qh), 0x30)),
            _mm256_or_si256(and8(shr16::<4>(ql0), 0x0F), and8(qh, 0x30)),
            _mm256_or_si256(and8(shr16::<4>(ql1), 0x0F), and8(shr16::<2>(qh), 0x30)),
        ];
        for (r, &u) in runs.iter().enumerate() {
            add_run(
                &mut isum,
                &ys,
                4 * h + r,
                u,
                splat_i16(sc, 2 * r, 2 * r + 1),
            );
        }
    }
    sub_offset::<5, R>(&mut isum, &ys, _mm256_cvtepi8_epi16(scales));
    finish_superblock(&mut acc, &mut acc_min, &isum, &ys, f16x8_at(b, 208), None);
});

/// `[f::<…, 1>, f::<…, 2>, f::<…, 3>, f::<…, 4>]`: a kernel's instances for 1..=4 rows.
macro_rules! rows4 {
    ($f:ident $(, $c:expr)*) => {
        [$f::<$({ $c },)* 1>, $f::<$({ $c },)* 2>, $f::<$({ $c },)* 3>, $f::<$({ $c },)* 4>]
    };
}

/// Decode (one activation row) over many weight rows in one call: `$name::<..>(nb, w,
/// w_row, acts, out)` sets `out[j] = w_j · act_0` for the `out.len()` rows of `w`
/// (`w_row` bytes apart), each with the same one-row kernel as the tables (so the same
/// bits), without a call, a length check and an `Acts` copy per row.
macro_rules! matvec {
    ($features:literal, $name:ident, $kernel:ident $(, $c:ident: $t:ty)*) => {
        #[target_feature(enable = $features)]
        fn $name<$(const $c: $t,)*>(
            nb: usize,
            w: &[u8],
            w_row: usize,
            acts: Acts<'_>,
            out: &mut [f32],
        ) {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(w_row)) {
                let mut r = [0.0f32; 1];
                $kernel::<$($c,)* 1>(nb, row, acts, &mut r);
                *o = r[0];
            }
        }
    };
}

matvec!("avx2,fma,f16c", legacy_matvec, legacy, KIND: u8, TS: usize, ATS: usize);
matvec!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    legacy_vnni_matvec,
    legacy_vnni,
    KIND: u8,
    TS: usize,
    ATS: usize
);
matvec!("avx2,fma,f16c", q2_k_matvec, q2_k);
matvec!("avx2,fma,f16c", q3_k_matvec, q3_k);
matvec!("avx2,fma,f16c", q4_k_matvec, q4_k);
matvec!("avx2,fma,f16c", q5_k_matvec, q5_k);
matvec!("avx2,fma,f16c", q6_k_matvec, q6_k);

/// The decode kernel of `ty` for `isa` (AVX2 or AVX-512 VNNI; see [`matvec!`]).
pub(super) fn matvec(ty: GgmlType, vnni: bool) -> Option<MatvecFn> {
    Some(match (ty, vnni) {
        (GgmlType::Q4_0, false) => legacy_matvec::<Q4_0, 18, 34>,
        (GgmlType::Q4_1, false) => legacy_matvec::<Q4_1, 20, 36>,
        (GgmlType::Q5_0, false) => legacy_matvec::<Q5_0, 22, 34>,
        (GgmlType::Q5_1, false) => legacy_matvec::<Q5_1, 24, 36>,
        (GgmlType::Q8_0, false) => legacy_matvec::<Q8_0, 34, 34>,
        (GgmlType::Q4_0, true) => legacy_vnni_matvec::<Q4_0, 18, 34>,
        (GgmlType::Q4_1, true) => legacy_vnni_matvec::<Q4_1, 20, 36>,
        (GgmlType::Q5_0, true) => legacy_vnni_matvec::<Q5_0, 22, 34>,
        (GgmlType::Q5_1, true) => legacy_vnni_matvec::<Q5_1, 24, 36>,
        (GgmlType::Q8_0, true) => legacy_vnni_matvec::<Q8_0, 34, 34>,
        (GgmlType::Q2K, _) => q2_k_matvec,
        (GgmlType::Q3K, _) => q3_k_matvec,
        (GgmlType::Q4K, _) => q4_k_matvec,
        (GgmlType::Q5K, _) => q5_k_matvec,
        (GgmlType::Q6K, _) => q6_k_matvec,
        _ => return None,
    })
}

/// The AVX2 kernels for `ty`.
pub(super) fn rows(ty: GgmlType) -> Option<Rows> {
    let rows: Rows = match ty {
        GgmlType::Q4_0 => rows4!(legacy, Q4_0, 18, 34),
        GgmlType::Q4_1 => rows4!(legacy, Q4_1, 20, 36),
        GgmlType::Q5_0 => rows4!(legacy, Q5_0, 22, 34),
        GgmlType::Q5_1 => rows4!(legacy, Q5_1, 24, 36),
        GgmlType::Q8_0 => rows4!(legacy, Q8_0, 34, 34),
        GgmlType::Q2K => rows4!(q2_k),
        GgmlType::Q3K => rows4!(q3_k),
        GgmlType::Q4K => rows4!(q4_k),
        GgmlType::Q5K => rows4!(q5_k),
        GgmlType::Q6K => rows4!(q6_k),
        _ => return None,
    };
    Some(rows)
}

/// The AVX-512 VNNI kernels for `ty`: the legacy formats, whose integer dot is a plain
/// u8 × i8 sum. (The K-quants scale each 16-element group before summing, which `vpmaddwd`
/// with the scales already does in one step, so they keep their AVX2 kernels.)
pub(super) fn rows_vnni(ty: GgmlType) -> Option<Rows> {
    let rows: Rows = match ty {
        GgmlType::Q4_0 => rows4!(legacy_vnni, Q4_0, 18, 34),
        GgmlType::Q4_1 => rows4!(legacy_vnni, Q4_1, 20, 36),
        GgmlType::Q5_0 => rows4!(legacy_vnni, Q5_0, 22, 34),
        GgmlType::Q5_1 => rows4!(legacy_vnni, Q5_1, 24, 36),
        GgmlType::Q8_0 => rows4!(legacy_vnni, Q8_0, 34, 34),
        _ => return None,
    };
    Some(rows)
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers, bit-exact with ggml's reference ones.

/// `roundf` (halves away from zero), exactly: truncate, then step away from zero when the
/// dropped fraction (exact: `v − trunc(v)` loses no bits) is at least one half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn round_away(v: __m256) -> __m256 {
    let sign = _mm256_set1_ps(-0.0);
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    let step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0));
    _mm256_add_ps(
        t,
        _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5)), step),
    )
}

/// 32 i32 (in 4 vectors) → 32 i8 in order (saturating; callers' values fit).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn pack_i32x32(q: [__m256i; 4]) -> __m256i {
    // The packs work per 128-bit lane; the permute restores element order.
    let p = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Largest |x| over the block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn absmax(x: &[f32]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for c in 0..x.len() / 8 {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, load8f(x, 8 * c)));
    }
    hmax_ps(m)
}

/// `quantize_row_q8_0_ref` / `quantize_row_q8_1_ref` of one 32-element block into `y`
/// (34 or 36 bytes: d, [s,] qs).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn quantize_q8_32(x: &[f32], y: &mut [u8], with_sum: bool) {
    let d = absmax(x) / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let mut q = [_mm256_setzero_si256(); 4];
    for (c, qc) in q.iter_mut().enumerate() {
        *qc = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(load8f(x, 8 * c), id)));
    }
    y[0..2].copy_from_slice(&f16_bytes(d));
    let qs_at = if with_sum {
        let sum = hsum_epi32(_mm256_add_epi32(
            _mm256_add_epi32(q[0], q[1]),
            _mm256_add_epi32(q[2], q[3]),
        ));
        y[2..4].copy_from_slice(&f16_bytes(sum as f32 * d));
        4
    } else {
        2
    };
    let Some(qs) = y.get_mut(qs_at..).and_then(|t| t.first_chunk_mut::<32>()) else {
        panic!("qdot: Q8 block of {} bytes", y.len())
    };
    store32(qs, pack_i32x32(q));
}

/// `quantize_row_q8_K_ref` of one 256-element block into `y` (292 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn quantize_q8_k_256(x: &[f32], y: &mut [u8; Q8K_BYTES]) {
    let amax = absmax(x);
    if amax == 0.0 {
        y.fill(0);
        return;
    }
    // ggml keeps the signed value of the first element with the largest magnitude.
    let sign = _mm256_set1_ps(-0.0);
    let mut max = amax;
    for c in 0..32 {
        let hit = _mm256_cmp_ps::<_CMP_EQ_OQ>(
            _mm256_andnot_ps(sign, load8f(x, 8 * c)),
            _mm256_set1_ps(amax),
        );
        let mask = _mm256_movemask_ps(hit);
        if mask != 0 {
            max = x[8 * c + mask.trailing_zeros() as usize];
            break;
        }
    }
    let iscale = -127.0 / max;
    let is = _mm256_set1_ps(iscale);
    y[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for c in 0..8 {
        // nearest_int is round-half-even, as cvtps under the default rounding mode.
        let mut q = [_mm256_setzero_si256(); 4];
        for (j, qj) in q.iter_mut().enumerate() {
            let v = _mm256_cvtps_epi32(_mm256_mul_ps(load8f(x, 32 * c + 8 * j), is));
            *qj = _mm256_min_epi32(v, _mm256_set1_epi32(127));
        }
        for g in 0..2 {
            let sum = hsum_epi32(_mm256_add_epi32(q[2 * g], q[2 * g + 1])) as i16;
            let pos = Q8K_BSUMS + 2 * (2 * c + g);
            y[pos..pos + 2].copy_from_slice(&sum.to_le_bytes());
        }
        let Some(qs) = y
            .get_mut(Q8K_QS + 32 * c..)
            .and_then(|t| t.first_chunk_mut::<32>())
        else {
            unreachable!("32 bytes inside the 256 quants")
        };
        store32(qs, pack_i32x32(q));
    }
}

/// One activation row of `act_ty` (Q8_0, Q8_1 or Q8_K); `dst` is exactly its row bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn quantize_row(act_ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    let (bs, ts) = (act_ty.block_size(), act_ty.type_size());
    assert!(
        src.len().is_multiple_of(bs) && dst.len() == src.len() / bs * ts,
        "qdot: quantize_row shapes"
    );
    match act_ty {
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            for (x, y) in src.chunks_exact(32).zip(dst.chunks_exact_mut(ts)) {
                quantize_q8_32(x, y, act_ty == GgmlType::Q8_1);
            }
        }
        GgmlType::Q8K => {
            for (x, y) in src
                .chunks_exact(256)
                .zip(dst.as_chunks_mut::<Q8K_BYTES>().0)
            {
                quantize_q8_k_256(x, y);
            }
        }
        other => panic!("qdot: {other} is not an activation format"),
    }
}

// ---------------------------------------------------------------------------------------------
// Prefill GEMM tile (see `gemm.rs`): 8 weight rows in the i32 lanes of one register, 8
// activation rows per pass, code groups of `Q` quads, with or without per-group biases.

/// `out[r][i] = Σ_g scale[g][i]·d[g][r]·(Σ_e (code[e][i] − offset)·a_r[e]) + bias[g][i]·(d·Σa)[g][r]`.
///
/// Per group `g`: `codes[g][quad]` holds four consecutive codes of each of the 8 weight rows,
/// `act[g][quad][r]` activation row `r`'s four bytes at the same positions; the lanes of row
/// `r` start at `groups[g][r].neg_offset_sum`, which takes the codes' offset out exactly.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_tile<const Q: usize, const BIAS: bool>(
    codes: &[[[u8; 32]; Q]],
    scales: &[[f32; 8]],
    biases: &[[f32; 8]],
    act: &[[[[u8; 4]; 8]; Q]],
    groups: &[[super::gemm::ActGroup; 8]],
    out: &mut [[f32; 8]; 8],
) {
    const R: usize = 8;
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_bias = [_mm256_setzero_ps(); R];
    for ((((wg, s), b), ag), gg) in codes.iter().zip(scales).zip(biases).zip(act).zip(groups) {
        let mut isum: [__m256i; R] =
            std::array::from_fn(|r| _mm256_set1_epi32(gg[r].neg_offset_sum));
        for (wq, aq) in wg.iter().zip(ag) {
            let w = load32(wq);
            for r in 0..R {
                let x = _mm256_set1_epi32(i32::from_le_bytes(aq[r]));
                isum[r] = _mm256_dpbusd_epi32(isum[r], w, x);
            }
        }
        let s = load8f(s, 0);
        for r in 0..R {
            let sd = _mm256_mul_ps(s, _mm256_set1_ps(gg[r].d));
            acc[r] = _mm256_fmadd_ps(sd, _mm256_cvtepi32_ps(isum[r]), acc[r]);
        }
        if BIAS {
            let b = load8f(b, 0);
            for r in 0..R {
                acc_bias[r] = _mm256_fmadd_ps(b, _mm256_set1_ps(gg[r].d_sum), acc_bias[r]);
            }
        }
    }
    for r in 0..R {
        let v = _mm256_add_ps(acc[r], acc_bias[r]);
        // SAFETY: `out[r]` is 8 writable f32; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(out[r].as_mut_ptr(), v) }
    }
}
