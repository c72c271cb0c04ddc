//! wasm32 simd128 kernels for the legacy formats (compiled only with
//! `target_feature = "simd128"`, so every intrinsic is available unconditionally).
//!
//! simd128 has no u8 × i8 multiply-add, so quants are widened to i16 and multiplied with
//! `i32x4_dot_i16x8` (exact: |q·a| ≤ 128·127, pair sums fit i32). Weight blocks are widened
//! once and reused for every activation row.

use core::arch::wasm32::*;

use chord_resources::GgmlType;

use super::{Acts, Rows, scalar};

/// The `N` bytes of `s` at `off` (panics if out of bounds; callers checked the lengths).
#[inline(always)]
fn at<const N: usize>(s: &[u8], off: usize) -> &[u8; N] {
    match s.get(off..).and_then(|t| t.first_chunk::<N>()) {
        Some(a) => a,
        None => panic!("qdot: {N} bytes at {off} outside a {}-byte slice", s.len()),
    }
}

#[inline(always)]
fn load16(b: &[u8; 16]) -> v128 {
    // SAFETY: `b` is 16 readable bytes; `v128_load` reads unaligned.
    unsafe { v128_load(b.as_ptr().cast()) }
}

/// Four floats of `x` from `off`.
#[inline(always)]
fn load4f(x: &[f32], off: usize) -> v128 {
    let Some(v) = x.get(off..).and_then(|t| t.first_chunk::<4>()) else {
        panic!("qdot: 4 floats at {off} outside {}", x.len())
    };
    // SAFETY: `v` is 4 readable f32 (16 bytes); `v128_load` reads unaligned.
    unsafe { v128_load(v.as_ptr().cast()) }
}

#[inline(always)]
fn f16_at(s: &[u8], off: usize) -> f32 {
    half::f16::from_le_bytes(*at(s, off)).to_f32()
}

#[inline(always)]
fn hsum_f32x4(v: v128) -> f32 {
    (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
        + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
}

#[inline(always)]
fn hsum_i32x4(v: v128) -> i32 {
    i32x4_extract_lane::<0>(v)
        + i32x4_extract_lane::<1>(v)
        + i32x4_extract_lane::<2>(v)
        + i32x4_extract_lane::<3>(v)
}

/// 32 quants as four i16x8 (elements 0..8, 8..16, 16..24, 24..32).
type Wide = [v128; 4];

/// Two i8x16 (elements 0..16, 16..32) widened to i16.
#[inline(always)]
fn widen(lo: v128, hi: v128) -> Wide {
    [
        i16x8_extend_low_i8x16(lo),
        i16x8_extend_high_i8x16(lo),
        i16x8_extend_low_i8x16(hi),
        i16x8_extend_high_i8x16(hi),
    ]
}

/// Σ w[i]·a[i] over 32 elements, as four i32 partial sums.
#[inline(always)]
fn dot32(w: &Wide, a: &Wide) -> v128 {
    let s01 = i32x4_add(i32x4_dot_i16x8(w[0], a[0]), i32x4_dot_i16x8(w[1], a[1]));
    let s23 = i32x4_add(i32x4_dot_i16x8(w[2], a[2]), i32x4_dot_i16x8(w[3], a[3]));
    i32x4_add(s01, s23)
}

/// 16 packed nibbles → (low nibbles = elements 0..16, high nibbles = elements 16..32).
#[inline(always)]
fn nibbles(qs: &[u8; 16]) -> (v128, v128) {
    let v = load16(qs);
    (v128_and(v, u8x16_splat(0x0F)), u8x16_shr(v, 4))
}

/// Bit `j` of `bits` → byte `j` (16 bytes): 0xFF where set.
#[inline(always)]
fn bits16(bits: u16) -> v128 {
    let bytes = i8x16_swizzle(
        u16x8_splat(bits),
        i8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
    );
    let probe = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    i8x16_eq(v128_and(bytes, probe), probe)
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

/// One weight block: `(quants widened, d, m)` (`m` = 0 for the formats without an offset).
#[inline(always)]
fn legacy_block<const KIND: u8>(b: &[u8]) -> (Wide, f32, f32) {
    let d = f16_at(b, 0);
    match KIND {
        Q4_0 => {
            let (lo, hi) = nibbles(at(b, 2));
            let eight = i8x16_splat(8);
            (widen(i8x16_sub(lo, eight), i8x16_sub(hi, eight)), d, 0.0)
        }
        Q4_1 => {
            let (lo, hi) = nibbles(at(b, 4));
            (widen(lo, hi), d, f16_at(b, 2))
        }
        Q5_0 => {
            let qh = u32::from_le_bytes(*at(b, 2));
            let (lo, hi) = nibbles(at(b, 6));
            // Clear fifth bit: nibble | 0xF0 = nibble − 16 as i8.
            let f0 = u8x16_splat(0xF0);
            let lo = v128_or(lo, v128_andnot(f0, bits16(qh as u16)));
            let hi = v128_or(hi, v128_andnot(f0, bits16((qh >> 16) as u16)));
            (widen(lo, hi), d, 0.0)
        }
        Q5_1 => {
            let qh = u32::from_le_bytes(*at(b, 4));
            let (lo, hi) = nibbles(at(b, 8));
            let x10 = u8x16_splat(0x10);
            let lo = v128_or(lo, v128_and(x10, bits16(qh as u16)));
            let hi = v128_or(hi, v128_and(x10, bits16((qh >> 16) as u16)));
            (widen(lo, hi), d, f16_at(b, 2))
        }
        _ => (widen(load16(at(b, 2)), load16(at(b, 18))), d, 0.0),
    }
}

/// Legacy kernel for `R` rows: `TS` bytes per weight block, `ATS` per activation block.
fn legacy<const KIND: u8, const TS: usize, const ATS: usize, const R: usize>(
    nb: usize,
    w: &[u8],
    acts: Acts<'_>,
    out: &mut [f32],
) {
    let wb = &w.as_chunks::<TS>().0[..nb];
    let rows: [&[[u8; ATS]]; R] =
        std::array::from_fn(|r| &acts.bytes[r * acts.stride..].as_chunks::<ATS>().0[..nb]);
    let scales: [&[[f32; 2]]; R] = std::array::from_fn(|r| &acts.scales[r * nb..(r + 1) * nb]);
    let mut acc = [f32x4_splat(0.0); R];
    let mut summs = [0.0f32; R];
    for (i, b) in wb.iter().enumerate() {
        let (q, d, m) = legacy_block::<KIND>(b);
        for r in 0..R {
            let a: &[u8; ATS] = &rows[r][i];
            let y = widen(load16(at(a, ATS - 32)), load16(at(a, ATS - 16)));
            let p = f32x4_convert_i32x4(dot32(&q, &y));
            let [da, sa] = scales[r][i];
            acc[r] = f32x4_add(acc[r], f32x4_mul(f32x4_splat(d * da), p));
            summs[r] += m * sa;
        }
    }
    for r in 0..R {
        out[r] = hsum_f32x4(acc[r]) + summs[r];
    }
}

/// `[f::<…, 1>, …, f::<…, 4>]`: a kernel's instances for 1..=4 rows.
macro_rules! rows4 {
    ($f:ident $(, $c:expr)*) => {
        [$f::<$({ $c },)* 1>, $f::<$({ $c },)* 2>, $f::<$({ $c },)* 3>, $f::<$({ $c },)* 4>]
    };
}

/// The simd128 kernels for `ty` (the legacy formats; the K-quants use the scalar ones).
pub(super) fn rows(ty: GgmlType) -> Option<Rows> {
    let rows: Rows = match ty {
        GgmlType::Q4_0 => rows4!(legacy, Q4_0, 18, 34),
        GgmlType::Q4_1 => rows4!(legacy, Q4_1, 20, 36),
        GgmlType::Q5_0 => rows4!(legacy, Q5_0, 22, 34),
        GgmlType::Q5_1 => rows4!(legacy, Q5_1, 24, 36),
        GgmlType::Q8_0 => rows4!(legacy, Q8_0, 34, 34),
        _ => return None,
    };
    Some(rows)
}

/// `roundf` (halves away from zero), exactly: truncate, then step away from zero when the
/// dropped fraction (exact) is at least one half.
#[inline(always)]
fn round_away(v: v128) -> v128 {
    let t = f32x4_trunc(v);
    let frac = f32x4_abs(f32x4_sub(v, t));
    let step = v128_or(v128_and(v, f32x4_splat(-0.0)), f32x4_splat(1.0));
    f32x4_add(t, v128_and(f32x4_ge(frac, f32x4_splat(0.5)), step))
}

/// `quantize_row_q8_0_ref` / `quantize_row_q8_1_ref` of one 32-element block into `y`.
fn quantize_q8_32(x: &[f32], y: &mut [u8], with_sum: bool) {
    let mut m = f32x4_splat(0.0);
    for c in 0..8 {
        m = f32x4_pmax(m, f32x4_abs(load4f(x, 4 * c)));
    }
    let amax = f32x4_extract_lane::<0>(m)
        .max(f32x4_extract_lane::<1>(m))
        .max(f32x4_extract_lane::<2>(m).max(f32x4_extract_lane::<3>(m)));
    let d = amax / 127.0;
    let id = f32x4_splat(if d != 0.0 { 1.0 / d } else { 0.0 });
    let q: [v128; 8] =
        std::array::from_fn(|c| i32x4_trunc_sat_f32x4(round_away(f32x4_mul(load4f(x, 4 * c), id))));
    let q16: [v128; 4] = std::array::from_fn(|j| i16x8_narrow_i32x4(q[2 * j], q[2 * j + 1]));
    let q8 = [
        i8x16_narrow_i16x8(q16[0], q16[1]),
        i8x16_narrow_i16x8(q16[2], q16[3]),
    ];
    y[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    let qs_at = if with_sum {
        let sum = q.iter().fold(i32x4_splat(0), |s, &v| i32x4_add(s, v));
        y[2..4].copy_from_slice(&half::f16::from_f32(hsum_i32x4(sum) as f32 * d).to_le_bytes());
        4
    } else {
        2
    };
    for (j, &v) in q8.iter().enumerate() {
        let Some(dst) = y
            .get_mut(qs_at + 16 * j..)
            .and_then(|t| t.first_chunk_mut::<16>())
        else {
            panic!("qdot: Q8 block of {} bytes", y.len())
        };
        store16(dst, v);
    }
}

#[inline(always)]
fn store16(dst: &mut [u8; 16], v: v128) {
    // SAFETY: `dst` is 16 writable bytes; `v128_store` writes unaligned.
    unsafe { v128_store(dst.as_mut_ptr().cast(), v) }
}

/// One activation row of `act_ty`; Q8_K (only used by the scalar K-quant kernels here)
/// goes to the scalar reference.
pub(super) fn quantize_row(act_ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    match act_ty {
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            let ts = act_ty.type_size();
            assert!(
                src.len().is_multiple_of(32) && dst.len() == src.len() / 32 * ts,
                "qdot: quantize_row shapes"
            );
            for (x, y) in src.chunks_exact(32).zip(dst.chunks_exact_mut(ts)) {
                quantize_q8_32(x, y, act_ty == GgmlType::Q8_1);
            }
        }
        _ => scalar::quantize_row(act_ty, src, dst),
    }
}
