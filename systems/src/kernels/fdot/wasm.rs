//! wasm32 simd128 kernels for the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Compiled only with `target_feature = "simd128"`, so the intrinsics need no run-time
//! check; the only unsafe code is the two loads. A block decodes to eight `v128` of four
//! f32: the quants widened i8 → i16 → i32 → f32, then `q·d` and `+ m` (simd128 has no fused
//! multiply-add; every weight still equals the reference `dequantize`'s), multiplied into
//! the activation rows' accumulators.

use core::arch::wasm32::*;
use std::ops::Range;

use chord_resources::GgmlType;
use half::f16;

use super::{Legacy, MAX_ROWS, RUN, tiled_rows};

/// Whether this file has a kernel for `ty`.
pub(super) fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
}

/// [`super::matmul_rows_f32`] for a type this file [`supports`] (panics on another), `k` a
/// multiple of 32, rows of `row_bytes` bytes. Lengths were checked by the caller; slice
/// indexing panics rather than reading out of bounds if they were not.
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
    let (r, o) = (rows, out);
    match ty {
        GgmlType::Q4_0 => gemm::<4, false>(w, row_bytes, k, x, n, r, o),
        GgmlType::Q4_1 => gemm::<4, true>(w, row_bytes, k, x, n, r, o),
        GgmlType::Q5_0 => gemm::<5, false>(w, row_bytes, k, x, n, r, o),
        GgmlType::Q5_1 => gemm::<5, true>(w, row_bytes, k, x, n, r, o),
        GgmlType::Q8_0 => gemm::<8, false>(w, row_bytes, k, x, n, r, o),
        other => panic!("fdot wasm: no kernel for {other}"),
    }
}

/// The `N` bytes of `s` at `off` (panics if out of bounds).
#[inline(always)]
fn at<const N: usize>(s: &[u8], off: usize) -> &[u8; N] {
    match s.get(off..).and_then(|t| t.first_chunk::<N>()) {
        Some(a) => a,
        None => panic!("fdot: {N} bytes at {off} outside a {}-byte slice", s.len()),
    }
}

#[inline(always)]
fn load16(b: &[u8; 16]) -> v128 {
    // SAFETY: `b` is 16 readable bytes; `v128_load` has no alignment requirement.
    unsafe { v128_load(b.as_ptr().cast()) }
}

#[inline(always)]
fn load4f(x: &[f32; 4]) -> v128 {
    // SAFETY: `x` is 4 readable f32 (16 bytes); `v128_load` has no alignment requirement.
    unsafe { v128_load(x.as_ptr().cast()) }
}

/// The f16 in `b`, widened (exact) into all four lanes.
#[inline(always)]
fn f16x4(b: &[u8; 2]) -> v128 {
    f32x4_splat(f16::from_le_bytes(*b).to_f32())
}

/// Bit `j` of the little-endian u32 in `bits` → byte `j % 16` of half `j / 16`: 0xFF where
/// set, 0 where clear (the Q5 formats' `qh`).
#[inline(always)]
fn expand_bits(bits: &[u8; 4]) -> [v128; 2] {
    let v = u32x4_splat(u32::from_le_bytes(*bits));
    let probe = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    // Byte j of half h takes byte 2h + j/8 of `bits`, then tests bit j%8.
    let half = |i: u8| {
        let j = i + 1;
        let spread = u8x16(i, i, i, i, i, i, i, i, j, j, j, j, j, j, j, j);
        i8x16_eq(v128_and(i8x16_swizzle(v, spread), probe), probe)
    };
    [half(0), half(2)]
}

/// 16 signed byte quants of format `Legacy<BITS, MIN>` → their 16 values `q·d (+ m)`, four
/// per vector (`m` is added only by the formats that have an offset).
#[inline(always)]
fn widen16<const BITS: u8, const MIN: bool>(q: v128, d: v128, m: v128) -> [v128; 4] {
    let (lo, hi) = (i16x8_extend_low_i8x16(q), i16x8_extend_high_i8x16(q));
    [
        i32x4_extend_low_i16x8(lo),
        i32x4_extend_high_i16x8(lo),
        i32x4_extend_low_i16x8(hi),
        i32x4_extend_high_i16x8(hi),
    ]
    .map(|v| {
        let v = f32x4_mul(f32x4_convert_i32x4(v), d);
        if MIN || Legacy::<BITS, MIN>::BIAS != 0 {
            f32x4_add(v, m)
        } else {
            v
        }
    })
}

/// One block's 32 weights, in element order (see [`Legacy`] for the layout).
#[inline(always)]
fn decode<const BITS: u8, const MIN: bool>(b: &[u8]) -> [v128; 8] {
    let qs = Legacy::<BITS, MIN>::QS;
    let d = f16x4(at(b, 0));
    // The centred formats' `(q − bias)·d` is computed as `q·d + (−bias·d)`: both terms are
    // exact (a ≤ 5-bit integer times an f16), so their sum rounds once, like the
    // reference's product, and the quants need no subtraction.
    let bias = Legacy::<BITS, MIN>::BIAS;
    let m = if MIN {
        f16x4(at(b, 2))
    } else {
        f32x4_mul(d, f32x4_splat(-f32::from(bias)))
    };
    let mut q = if BITS == 8 {
        [load16(at(b, qs)), load16(at(b, qs + 16))]
    } else {
        let v = load16(at(b, qs));
        [v128_and(v, u8x16_splat(0x0F)), u8x16_shr(v, 4)]
    };
    if BITS == 5 {
        let high = expand_bits(at(b, Legacy::<BITS, MIN>::QH));
        q = [0, 1].map(|i| v128_or(q[i], v128_and(high[i], u8x16_splat(0x10))));
    }
    let [a, b] = [
        widen16::<BITS, MIN>(q[0], d, m),
        widen16::<BITS, MIN>(q[1], d, m),
    ];
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

#[inline(always)]
fn hsum(v: v128) -> f32 {
    f32x4_extract_lane::<0>(v)
        + f32x4_extract_lane::<1>(v)
        + f32x4_extract_lane::<2>(v)
        + f32x4_extract_lane::<3>(v)
}

/// `[Σ w·x_r for r < R]` for one weight row of whole blocks; each block is decoded once.
#[inline(always)]
fn dot_rows<const BITS: u8, const MIN: bool, const R: usize>(
    w_row: &[u8],
    xs: [&[f32]; R],
) -> [f32; R] {
    // Two accumulators per row hide the add latency. The count must not depend on `R`: a row's
    // sum is then bit-identical alone (decode) or tiled with others (prefill, batching,
    // speculative verification), so batching never changes a greedy token.
    let lanes = 2;
    let mut acc = [[f32x4_splat(0.0); 2]; R];
    let block_bytes = Legacy::<BITS, MIN>::BLOCK_BYTES;
    for (b, block) in w_row.chunks_exact(block_bytes).enumerate() {
        let wv = decode::<BITS, MIN>(block);
        for (acc_r, x) in acc.iter_mut().zip(xs) {
            let (xc, _) = x[b * RUN..(b + 1) * RUN].as_chunks::<4>();
            for (c, (w4, x4)) in wv.iter().zip(xc).enumerate() {
                let a = &mut acc_r[c % lanes];
                *a = f32x4_add(*a, f32x4_mul(*w4, load4f(x4)));
            }
        }
    }
    acc.map(|a| hsum(f32x4_add(a[0], a[1])))
}

/// `out[r·len + j − rows.start] = w_j · x_r` (see [`super::matmul_rows_f32`]).
#[allow(clippy::too_many_arguments)]
fn gemm<const BITS: u8, const MIN: bool>(
    w: &[u8],
    row_bytes: usize,
    k: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    debug_assert_eq!(row_bytes, k / RUN * Legacy::<BITS, MIN>::BLOCK_BYTES);
    tiled_rows(w, row_bytes, k, x, n, rows, out, |w_row, xs| {
        let mut res = [0.0f32; MAX_ROWS];
        match *xs {
            [a] => res[..1].copy_from_slice(&dot_rows::<BITS, MIN, 1>(w_row, [a])),
            [a, b] => res[..2].copy_from_slice(&dot_rows::<BITS, MIN, 2>(w_row, [a, b])),
            [a, b, c] => res[..3].copy_from_slice(&dot_rows::<BITS, MIN, 3>(w_row, [a, b, c])),
            [a, b, c, d] => res = dot_rows::<BITS, MIN, 4>(w_row, [a, b, c, d]),
            _ => unreachable!("tiled_rows passes 1..=MAX_ROWS activation rows"),
        }
        res
    });
}
