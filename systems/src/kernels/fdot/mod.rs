//! Quantized weight rows × f32 activation rows, in f32: the exact ("f32 precision") matmul.
//!
//! `chord_resources::quant::dequantize` followed by an f32 dot product is the reference; the
//! kernels here compute the same sums without the intermediate row: each block of weights is
//! decoded into vector registers (value `q·d + m`, or the plain conversion for
//! F32/F16/BF16) and multiplied straight into f32 accumulators for up to [`MAX_ROWS`]
//! activation rows at once (decode once, use four times). Only the order of the f32
//! accumulation (and a fused `q·d + m`) differs from the reference; the tests bound the
//! difference by `1e-5 · Σ|wᵢ·xᵢ|`.
//!
//! Kernels, chosen once per process ([`isa`]):
//!
//! | ISA | file | types |
//! |---|---|---|
//! | x86-64 AVX2 + FMA + F16C (run-time detected) | `x86.rs` | F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K |
//! | wasm32 simd128 (compile-time `target_feature`) | `wasm.rs` | Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 |
//! | portable: `quant::dequantize` into a stack buffer + [`super::dot`] | here | every type |
//!
//! A type (or a row length) a SIMD kernel does not cover takes the portable path.

use std::ops::Range;
use std::sync::OnceLock;

use chord_resources::GgmlType;
use chord_resources::quant;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

/// Activation rows a kernel multiplies per pass over a weight row.
pub const MAX_ROWS: usize = 4;

/// Activation rows from which the x86 kernels switch to a tiled GEMM (prefill): its sums run
/// in a different order from the row kernels', so decode steps and speculative verification
/// groups (≤ `MAX_DRAFT + 1` rows per sequence) stay below it and keep the row kernels' bits.
pub const GEMM_MIN_ROWS: usize = crate::speculative::MAX_DRAFT + 2;

/// Activation rows per pass of the prefill GEMM.
const GEMM_PASS: usize = 16;

/// Activation rows in the prefill GEMM's layout — transposed in passes of [`GEMM_PASS`]
/// rows, `xt[p·k + e][r] = x[(p·GEMM_PASS + r)·k + e]` (rows past `n` zero) — built once per
/// matrix product and read by every thread.
// Read by the x86 kernels only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct GemmActs {
    n: usize,
    k: usize,
    xt: Vec<[f32; GEMM_PASS]>,
}

impl GemmActs {
    /// The `n` rows of `x` (`[n × k]`) for [`matmul_rows_gemm`], or `None` where the GEMM
    /// does not apply: fewer than [`GEMM_MIN_ROWS`] rows, `k` not whole 32-element runs, or
    /// no SIMD GEMM on this CPU.
    pub fn new(x: &[f32], n: usize, k: usize) -> Option<GemmActs> {
        let ok = n >= GEMM_MIN_ROWS && k > 0 && k.is_multiple_of(RUN) && x.len() >= n * k;
        (ok && isa() == Isa::Avx2).then(|| GemmActs::transpose(x, n, k))
    }

    fn transpose(x: &[f32], n: usize, k: usize) -> GemmActs {
        let passes = n.div_ceil(GEMM_PASS);
        let mut xt = vec![[0.0f32; GEMM_PASS]; passes * k];
        for (r, xr) in x.chunks_exact(k).take(n).enumerate() {
            let (p, pr) = (r / GEMM_PASS, r % GEMM_PASS);
            for (t, &v) in xt[p * k..(p + 1) * k].iter_mut().zip(xr) {
                t[pr] = v;
            }
        }
        GemmActs { n, k, xt }
    }
}

/// Whether [`matmul_rows_gemm`] serves weight type `ty` (given a [`GemmActs`]).
pub fn gemm_supports(ty: GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa() == Isa::Avx2 && x86::supports(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        false
    }
}

/// [`matmul_rows_f32`] with activations prepared once by [`GemmActs::new`]: the same output
/// as `matmul_rows_f32` gives for those `n ≥ GEMM_MIN_ROWS` rows.
///
/// # Panics
/// If `ty` is not [`gemm_supports`]ed, or `w`, `rows` or `out_block` do not fit the shapes.
pub fn matmul_rows_gemm(
    ty: GgmlType,
    w: &[u8],
    acts: &GemmActs,
    rows: Range<usize>,
    out_block: &mut [f32],
) {
    assert!(gemm_supports(ty), "fdot: no GEMM for {ty}");
    let row_bytes = acts.k / ty.block_size() * ty.type_size();
    assert!(
        rows.end * row_bytes <= w.len() && out_block.len() >= acts.n * rows.len(),
        "fdot gemm: rows {rows:?} of {} bytes or an output of {} floats do not fit",
        w.len(),
        out_block.len()
    );
    #[cfg(target_arch = "x86_64")]
    {
        assert!(x86::detected());
        // SAFETY: AVX2, FMA and F16C were just checked; the lengths above.
        unsafe { x86::matmul_rows_gemm(ty, w, row_bytes, acts, rows, out_block) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, rows, out_block);
        unreachable!("gemm_supports is false off x86-64")
    }
}

/// Elements in one SIMD "run": every format is decoded 32 elements at a time.
const RUN: usize = 32;

/// Instruction sets the kernels are built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable code: scalar dequantize, then [`super::dot`].
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// wasm32 compiled with `target_feature = "simd128"`.
    Simd128,
}

/// The instruction sets this CPU can run, best first (always ends with [`Isa::Scalar`]).
pub fn available_isas() -> Vec<Isa> {
    let simd: &[Option<Isa>] = &[
        #[cfg(target_arch = "x86_64")]
        x86::detected().then_some(Isa::Avx2),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Some(Isa::Simd128),
    ];
    simd.iter()
        .flatten()
        .copied()
        .chain([Isa::Scalar])
        .collect()
}

/// The ISA the kernels run with on this CPU: detected once, then cached.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| available_isas()[0])
}

/// Validated shapes of one call.
#[derive(Clone, Copy, Debug)]
struct Shape {
    ty: GgmlType,
    /// Elements per row.
    k: usize,
    /// Bytes per weight row.
    row_bytes: usize,
}

/// `out[r][jj] = Σ_k w[j][k]·x[r][k]` for `j` in `rows` (`jj = j − rows.start`) and `r < n`.
///
/// `w` is the whole matrix: `m ≥ rows.end` rows of `ty.row_bytes(k)` bytes; `x` is `[n × k]`
/// f32 and `out_block` `[n × rows.len()]`, both row-major. Every type
/// `chord_resources::quant::dequantize` reads is supported.
///
/// # Panics
/// If `k` is not a whole number of `ty` blocks, or `w`, `x` or `out_block` is shorter than
/// these shapes need.
pub fn matmul_rows_f32(
    ty: GgmlType,
    w: &[u8],
    k: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out_block: &mut [f32],
) {
    matmul_rows_with(isa(), ty, w, k, x, n, rows, out_block);
}

/// [`matmul_rows_f32`] with the kernels of `isa`, which must be one of [`available_isas`]
/// (the tests run every one this CPU has).
#[allow(clippy::too_many_arguments)]
fn matmul_rows_with(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    k: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out_block: &mut [f32],
) {
    let s = check(ty, w, k, x, n, &rows, out_block);
    let out_block = &mut out_block[..n * rows.len()];
    if out_block.is_empty() {
        return;
    }
    // Every SIMD kernel decodes whole 32-element runs.
    let simd_ok = k.is_multiple_of(RUN);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if simd_ok && x86::supports(ty) => {
            assert!(
                x86::detected(),
                "fdot: AVX2 kernels on a CPU without AVX2/FMA/F16C"
            );
            // SAFETY: AVX2, FMA and F16C were just checked; `check` validated every length.
            unsafe { x86::matmul_rows(ty, w, s.row_bytes, k, x, n, rows, out_block) }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Simd128 if simd_ok && wasm::supports(ty) => {
            wasm::matmul_rows(ty, w, s.row_bytes, k, x, n, rows, out_block)
        }
        _ => matmul_rows_portable(s, w, x, n, rows, out_block),
    }
}

/// The layout of the 32-element formats: `d: f16`, `m: f16` (if `MIN`), `qh: [u8; 4]` (if
/// `BITS == 5`), then the quants (`BITS == 8`: 32 i8; else 16 bytes of nibbles, element `j`
/// in the low nibble of byte `j`, element `j + 16` in the high one). Q4_0 = `<4, false>`,
/// Q4_1 = `<4, true>`, Q5_0 = `<5, false>`, Q5_1 = `<5, true>`, Q8_0 = `<8, false>`. The
/// SIMD files implement their decoders on it.
struct Legacy<const BITS: u8, const MIN: bool>;

impl<const BITS: u8, const MIN: bool> Legacy<BITS, MIN> {
    /// Offset of `qh`.
    const QH: usize = if MIN { 4 } else { 2 };
    /// Offset of the quants.
    const QS: usize = Self::QH + if BITS == 5 { 4 } else { 0 };
    /// Block size in bytes.
    const BLOCK_BYTES: usize = Self::QS + if BITS == 8 { 32 } else { 16 };
    /// What the formats without a min subtract from the unsigned 4- and 5-bit quants.
    const BIAS: i8 = if MIN || BITS == 8 { 0 } else { 1 << (BITS - 1) };
}

/// Weight bytes one tile of rows may span, so that a tile and [`MAX_ROWS`] activation rows
/// stay in L1 while each of the tile's rows goes over each group of activation rows.
const TILE_BYTES: usize = 8 * 1024;

/// The loop the SIMD kernels share: `out[r·len + j − rows.start] = w_j · x_r`, with
/// `dot(w_j, xs)` returning `w_j · xs[i]` in its first `xs.len()` (1..=[`MAX_ROWS`]) entries.
/// Weight rows go in tiles of [`TILE_BYTES`]; each tile meets every group of up to
/// `MAX_ROWS` activation rows before the next tile.
///
/// Inlined into each ISA's entry point, so that `dot` is compiled (and inlined) with its
/// target features.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tiled_rows(
    w: &[u8],
    row_bytes: usize,
    k: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
    mut dot: impl FnMut(&[u8], &[&[f32]]) -> [f32; MAX_ROWS],
) {
    let len = rows.len();
    let tile = (TILE_BYTES / row_bytes.max(1)).max(1);
    let mut j0 = rows.start;
    while j0 < rows.end {
        let tile_rows = j0..(j0 + tile).min(rows.end);
        let mut r0 = 0;
        while r0 < n {
            let rn = (n - r0).min(MAX_ROWS);
            let xs: [&[f32]; MAX_ROWS] =
                std::array::from_fn(|r| x.get((r0 + r) * k..(r0 + r + 1) * k).unwrap_or(&[]));
            for j in tile_rows.clone() {
                let res = dot(&w[j * row_bytes..(j + 1) * row_bytes], &xs[..rn]);
                for (r, v) in res[..rn].iter().enumerate() {
                    out[(r0 + r) * len + (j - rows.start)] = *v;
                }
            }
            r0 += rn;
        }
        j0 = tile_rows.end;
    }
}

/// Checks every length; returns the shapes.
fn check(
    ty: GgmlType,
    w: &[u8],
    k: usize,
    x: &[f32],
    n: usize,
    rows: &Range<usize>,
    out_block: &[f32],
) -> Shape {
    let row_bytes = ty
        .row_bytes(k as u64)
        .and_then(|b| usize::try_from(b).ok())
        .unwrap_or_else(|| {
            panic!(
                "fdot: k = {k} is not a whole number of {ty} blocks of {}",
                ty.block_size()
            )
        });
    let w_need = rows.end.checked_mul(row_bytes);
    assert!(
        w_need.is_some_and(|need| w.len() >= need),
        "fdot: weights have {} bytes, rows {rows:?} of {row_bytes} need {w_need:?}",
        w.len()
    );
    assert!(
        n.checked_mul(k).is_some_and(|need| x.len() >= need),
        "fdot: activations have {} floats, need {n} × {k}",
        x.len()
    );
    assert!(
        n.checked_mul(rows.len())
            .is_some_and(|need| out_block.len() >= need),
        "fdot: out_block has {} floats, needs {n} × {}",
        out_block.len(),
        rows.len()
    );
    Shape { ty, k, row_bytes }
}

/// Elements the portable path dequantizes at a time (a multiple of every block size).
const PORTABLE_CHUNK: usize = 1024;

/// The portable path: each weight row is dequantized a chunk at a time into a stack buffer,
/// and every activation row is dotted with the chunk before the next one is decoded.
fn matmul_rows_portable(
    s: Shape,
    w: &[u8],
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out_block: &mut [f32],
) {
    let len = rows.len();
    let bs = s.ty.block_size();
    debug_assert!(PORTABLE_CHUNK.is_multiple_of(bs));
    let chunk_bytes = PORTABLE_CHUNK / bs * s.ty.type_size();
    let mut buf = [0.0f32; PORTABLE_CHUNK];
    out_block.fill(0.0);
    for (jj, j) in rows.enumerate() {
        let row = &w[j * s.row_bytes..(j + 1) * s.row_bytes];
        for (c, src) in row.chunks(chunk_bytes).enumerate() {
            let k0 = c * PORTABLE_CHUNK;
            let vals = &mut buf[..(s.k - k0).min(PORTABLE_CHUNK)];
            // `check` made the row whole blocks, so every chunk is too.
            if let Err(e) = quant::dequantize(s.ty, src, vals) {
                panic!("fdot: dequantize {} row {j}: {e}", s.ty);
            }
            for r in 0..n {
                let xr = &x[r * s.k + k0..r * s.k + k0 + vals.len()];
                out_block[r * len + jj] += super::dot(vals, xr);
            }
        }
    }
}
