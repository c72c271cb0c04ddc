//! Integer dot products of quantized weight rows with quantized activation rows, the way
//! llama.cpp's CPU backend does them.
//!
//! The f32 activations of a matmul are quantized once ([`quantize_activations`]) into the
//! 8-bit format that the weight type pairs with (ggml's `vec_dot_type`: Q8_0 for
//! Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants); each output is then one
//! integer dot per block, scaled by the two block scales.
//!
//! Kernels, one per (weight type, ISA), chosen once per process ([`isa`]):
//!
//! | ISA | file | types |
//! |---|---|---|
//! | x86-64 AVX-512 VNNI + VL (`vpdpbusd`; run-time detected) | `x86.rs` | Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 |
//! | x86-64 AVX2 + FMA + F16C (run-time detected) | `x86.rs` | all ten |
//! | wasm32 simd128 (compile-time `target_feature`) | `wasm.rs` | Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 |
//! | scalar: `chord_resources::quant::dot_q8` | `scalar.rs` | all ten (fallback) |
//!
//! A type without a kernel for the best ISA takes the next one down (K-quants on a VNNI CPU
//! run the AVX2 kernels). The ten types: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K.
//!
//! Every kernel computes `R` (1..=[`MAX_ROWS`]) activation rows per pass over a weight row,
//! so a prefill batch decodes each weight block once for up to four tokens, and
//! [`matmul_rows`] widens the activations' f16 block scales to f32 once for all weight rows.
//! The integer part of every block is exact; only the order of the float accumulation
//! differs from the scalar reference (the tests bound the difference).

use std::ops::Range;
use std::sync::OnceLock;

use chord_resources::GgmlType;

pub mod gemm;
mod scalar;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

/// Activation rows one kernel call processes per pass over a weight row.
pub const MAX_ROWS: usize = 4;

/// `vec_dot_fn`'s result: `w_row · act_row` for a row of `k` elements.
pub type VecDotFn = fn(k: usize, w_row: &[u8], act_row: &[u8]) -> f32;

/// Activation rows as the kernels read them.
#[derive(Clone, Copy, Debug)]
struct Acts<'a> {
    /// Row `r`'s blocks start at `bytes[r·stride]`.
    bytes: &'a [u8],
    stride: usize,
    /// Q8_0 / Q8_1 rows: every block's f16 `(d, s)` widened to f32 (`s = 0` for Q8_0), row
    /// `r`'s `nb` blocks from `scales[r·nb]`. Empty for Q8_K, whose `d` is an f32 already.
    scales: &'a [[f32; 2]],
}

/// One (type, ISA) kernel: `out[r] = w · row r of acts` for `r < R` over `nb` blocks, where
/// `R` is the position of the function in its [`Rows`] table (so `out.len() >= R`).
///
/// Callers check every length first ([`check_lengths`]); kernels still index with bounds
/// checks, so a wrong length panics rather than reads out of bounds.
///
/// # Safety
/// The CPU must support the kernel's ISA: the table it came from is that of an ISA in
/// [`available_isas`].
type RowsFn = unsafe fn(nb: usize, w: &[u8], acts: Acts<'_>, out: &mut [f32]);

/// A type's kernels for 1, 2, 3 and 4 activation rows.
type Rows = [RowsFn; MAX_ROWS];

/// One (type, ISA) decode kernel: `out[j] = w_j · act_0` for the `out.len()` weight rows of
/// `w`, `w_row` bytes apart, computed by the ISA's one-row kernel (the same bits as
/// [`Rows`]`[0]` row by row, without a call per row).
///
/// # Safety
/// As [`RowsFn`]; `w` holds `out.len()` rows and `acts` one row (callers check).
type MatvecFn = unsafe fn(nb: usize, w: &[u8], w_row: usize, acts: Acts<'_>, out: &mut [f32]);

/// Instruction sets a kernel can be built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable code (the scalar reference).
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI (256-bit `vpdpbusd`).
    Avx512Vnni,
    /// wasm32 compiled with `target_feature = "simd128"`.
    Simd128,
}

/// Weight types that have quantized-activation kernels, in table order.
const TYPES: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Position of `ty` in [`TYPES`].
const fn type_index(ty: GgmlType) -> Option<usize> {
    Some(match ty {
        GgmlType::Q4_0 => 0,
        GgmlType::Q4_1 => 1,
        GgmlType::Q5_0 => 2,
        GgmlType::Q5_1 => 3,
        GgmlType::Q8_0 => 4,
        GgmlType::Q2K => 5,
        GgmlType::Q3K => 6,
        GgmlType::Q4K => 7,
        GgmlType::Q5K => 8,
        GgmlType::Q6K => 9,
        _ => return None,
    })
}

/// ggml's `vec_dot_type`: the activation format weight type `w_ty` is multiplied with, for
/// the types that have kernels here.
const fn activation_type(w_ty: GgmlType) -> Option<GgmlType> {
    match w_ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Some(GgmlType::Q8_0),
        GgmlType::Q4_1 | GgmlType::Q5_1 => Some(GgmlType::Q8_1),
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            Some(GgmlType::Q8K)
        }
        _ => None,
    }
}

/// The instruction sets this CPU can run, best first (always ends with [`Isa::Scalar`]).
pub fn available_isas() -> Vec<Isa> {
    [Isa::Avx512Vnni, Isa::Avx2, Isa::Simd128, Isa::Scalar]
        .into_iter()
        .filter(|&isa| supported(isa))
        .collect()
}

/// Whether this CPU (x86: run-time detection) or build (wasm: `target_feature`) runs `isa`.
fn supported(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::detected(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::detected_vnni(),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Simd128 => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// The ISA the kernels run with on this CPU: detected once, then cached.
///
/// The environment variable `CHORD_QDOT_ISA` (`avx512vnni`, `avx2`, `simd128` or `scalar`),
/// read at that moment, caps it at a lower ISA for comparisons and debugging; a name this
/// CPU cannot run, or an unknown one, is ignored.
pub fn isa() -> Isa {
    best().isa
}

impl Isa {
    /// The lower-case name `CHORD_QDOT_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Simd128 => "simd128",
        }
    }
}

/// [`available_isas`], from the one `CHORD_QDOT_ISA` names (when it names one) down.
fn allowed_isas() -> Vec<Isa> {
    let mut isas = available_isas();
    let wanted = std::env::var("CHORD_QDOT_ISA").unwrap_or_default();
    if let Some(at) = isas
        .iter()
        .position(|isa| isa.name() == wanted.trim().to_ascii_lowercase())
    {
        isas.drain(..at);
    }
    isas
}

/// The kernels of `isa` for `ty`, if that ISA has them (no CPU check: see [`RowsFn`]).
fn rows_for(isa: Isa, ty: GgmlType) -> Option<Rows> {
    match isa {
        Isa::Scalar => scalar::rows(ty),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::rows(ty),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::rows_vnni(ty),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Simd128 => wasm::rows(ty),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Per type, the best kernels this CPU supports.
struct Table {
    isa: Isa,
    rows: [Rows; TYPES.len()],
    /// Decode kernels, where the ISA that gave `rows` has them.
    matvec: [Option<MatvecFn>; TYPES.len()],
}

/// The decode kernel of `isa` for `ty`, if it has one (no CPU check: see [`MatvecFn`]).
fn matvec_for(isa: Isa, ty: GgmlType) -> Option<MatvecFn> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::matvec(ty, false),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::matvec(ty, true),
        _ => {
            let _ = ty;
            None
        }
    }
}

fn best() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let isas = allowed_isas();
        let rows = TYPES.map(|ty| {
            isas.iter()
                .find_map(|&isa| rows_for(isa, ty))
                .unwrap_or_else(|| unreachable!("the scalar kernels cover every type in TYPES"))
        });
        // The decode kernel of the same ISA as the row kernels (the same bits).
        let matvec = TYPES.map(|ty| {
            let isa = isas
                .iter()
                .copied()
                .find(|&isa| rows_for(isa, ty).is_some())?;
            matvec_for(isa, ty)
        });
        Table {
            isa: isas[0],
            rows,
            matvec,
        }
    })
}

/// Validated shapes of one kernel call.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// The activation format.
    act_ty: GgmlType,
    /// Blocks per row.
    nb: usize,
    /// Bytes per weight row.
    w_row: usize,
    /// Bytes per activation row.
    act_row: usize,
}

impl Shape {
    /// Whether the kernels read the activations' scales from [`Acts::scales`].
    fn widened_scales(&self) -> bool {
        matches!(self.act_ty, GgmlType::Q8_0 | GgmlType::Q8_1)
    }
}

/// The shapes for rows of `k` elements of `w_ty`. Panics (with the reason) on a type without
/// kernels or a `k` that is not a whole number of blocks.
fn shape(w_ty: GgmlType, k: usize) -> Shape {
    let act_ty = activation_type(w_ty)
        .unwrap_or_else(|| panic!("qdot: no quantized-activation kernel for {w_ty}"));
    let bs = w_ty.block_size();
    assert!(
        k.is_multiple_of(bs),
        "qdot: k = {k} is not a multiple of the {w_ty} block size {bs}"
    );
    let nb = k / bs;
    Shape {
        act_ty,
        nb,
        w_row: nb * w_ty.type_size(),
        act_row: nb * act_ty.type_size(),
    }
}

/// Blocks whose scales [`with_acts`] widens on the stack rather than in a `Vec`.
const STACK_SCALES: usize = 128;

/// Calls `f` with the first `n` activation rows of `act` (rows `s.act_row` apart) as
/// [`Acts`], their f16 block scales widened to f32 first where the format has them.
fn with_acts<T>(s: Shape, act: &[u8], n: usize, f: impl FnOnce(Acts<'_>) -> T) -> T {
    let count = if s.widened_scales() { n * s.nb } else { 0 };
    let mut stack = [[0.0f32; 2]; STACK_SCALES];
    let mut heap = Vec::new();
    let scales = if count <= STACK_SCALES {
        &mut stack[..count]
    } else {
        heap.resize(count, [0.0f32; 2]);
        &mut heap[..]
    };
    let ts = s.act_ty.type_size();
    let with_s = s.act_ty == GgmlType::Q8_1;
    // A short `act` leaves trailing zeros here; `check_lengths` rejects it before any kernel.
    for (block, sc) in act.chunks_exact(ts).zip(scales.iter_mut()) {
        let f16_at = |i: usize| half::f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
        *sc = [f16_at(0), if with_s { f16_at(2) } else { 0.0 }];
    }
    f(Acts {
        bytes: act,
        stride: s.act_row,
        scales,
    })
}

/// Panics unless `w` holds a weight row, `acts` holds `rows` activation rows (and their
/// scales) and `out` has room for `rows` results. After this no kernel index is out of bounds.
fn check_lengths(s: Shape, w: &[u8], acts: &Acts<'_>, rows: usize, out: &[f32]) {
    assert!(
        w.len() >= s.w_row,
        "qdot: weight row has {} bytes, needs {}",
        w.len(),
        s.w_row
    );
    assert!((1..=MAX_ROWS).contains(&rows) && out.len() >= rows);
    assert!(
        rows == 1 || acts.stride >= s.act_row,
        "qdot: activation stride {} < row bytes {}",
        acts.stride,
        s.act_row
    );
    let need = (rows - 1) * acts.stride + s.act_row;
    assert!(
        acts.bytes.len() >= need,
        "qdot: activations have {} bytes, need {need}",
        acts.bytes.len()
    );
    if s.widened_scales() {
        assert!(
            acts.scales.len() >= rows * s.nb,
            "qdot: missing activation scales"
        );
    }
}

/// Run `kernels` for `out.len()` activation rows after checking every length.
///
/// `kernels` must come from [`rows_for`] with an ISA of [`available_isas`] (the [`best`]
/// table, or the tests' per-ISA tables).
fn run_rows(kernels: &Rows, s: Shape, w: &[u8], acts: Acts<'_>, out: &mut [f32]) {
    let rows = out.len();
    check_lengths(s, w, &acts, rows, out);
    // SAFETY: `kernels` is the table of an ISA this CPU supports (the contract above, kept by
    // every caller in this module); lengths were checked above.
    unsafe { kernels[rows - 1](s.nb, w, acts, out) }
}

/// Quantize activation rows `x` (`[n × k]`, `k` a multiple of the block size) into the format
/// `activation_type(w_ty)` (ggml's `vec_dot_type`), replacing the contents of `out` with
/// `n` rows of `row_bytes(k)` bytes each. The bytes are exactly those of ggml's reference
/// quantizers (`quantize_row_q8_0_ref`, `_q8_1_ref`, `_q8_K_ref`).
///
/// # Panics
/// If `w_ty` has no kernel here (F32/F16/BF16 stay on the f32 path), or `k` is not a
/// multiple of the block size, or `x.len()` is not a multiple of `k`.
pub fn quantize_activations(w_ty: GgmlType, x: &[f32], k: usize, out: &mut Vec<u8>) {
    let s = shape(w_ty, k);
    let Some(act_ty) = activation_type(w_ty) else {
        unreachable!("shape() checked the type")
    };
    out.clear();
    if k == 0 {
        return;
    }
    assert!(
        x.len().is_multiple_of(k),
        "qdot: {} activations are not whole rows of {k}",
        x.len()
    );
    out.resize(x.len() / k * s.act_row, 0);
    for (src, dst) in x.chunks_exact(k).zip(out.chunks_exact_mut(s.act_row)) {
        quantize_row(best().isa, act_ty, src, dst);
    }
}

/// One activation row with the quantizer of `isa` (falling back to the scalar reference).
fn quantize_row(isa: Isa, act_ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => {
            assert!(x86::detected());
            // SAFETY: AVX2, FMA and F16C were just checked; `quantize_row` checks lengths.
            unsafe { x86::quantize_row(act_ty, src, dst) }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Simd128 => wasm::quantize_row(act_ty, src, dst),
        _ => scalar::quantize_row(act_ty, src, dst),
    }
}

/// The dot kernel for weight type `w_ty` on this CPU's best ISA, or `None` for a type with no
/// quantized-activation kernel (F32, F16, BF16, Q8_1, Q8_K).
///
/// The returned function computes `w_row · act_row` for a row of `k` elements, `act_row`
/// quantized by [`quantize_activations`]. It panics if `k` is not a multiple of the block
/// size or either row is shorter than `k` elements.
pub fn vec_dot_fn(w_ty: GgmlType) -> Option<VecDotFn> {
    Some(match w_ty {
        GgmlType::Q4_0 => vec_dot::<0>,
        GgmlType::Q4_1 => vec_dot::<1>,
        GgmlType::Q5_0 => vec_dot::<2>,
        GgmlType::Q5_1 => vec_dot::<3>,
        GgmlType::Q8_0 => vec_dot::<4>,
        GgmlType::Q2K => vec_dot::<5>,
        GgmlType::Q3K => vec_dot::<6>,
        GgmlType::Q4K => vec_dot::<7>,
        GgmlType::Q5K => vec_dot::<8>,
        GgmlType::Q6K => vec_dot::<9>,
        _ => return None,
    })
}

/// [`vec_dot_fn`]'s functions: `I` is the type's position in [`TYPES`].
fn vec_dot<const I: usize>(k: usize, w_row: &[u8], act_row: &[u8]) -> f32 {
    let s = shape(TYPES[I], k);
    let mut out = [0.0f32];
    with_acts(s, act_row, 1, |acts| {
        run_rows(&best().rows[I], s, w_row, acts, &mut out)
    });
    out[0]
}

/// Weight bytes of one tile of rows (see [`matmul_rows`]).
const TILE_BYTES: usize = 8 * 1024;

/// `out_block[r·rows.len() + (j − rows.start)] = w_j · act_r` for every activation row
/// `r < n` and weight row `j` in `rows`.
///
/// `w` is the whole `[m × k]` matrix of `w_ty` (`m` rows of `row_bytes(k)`), `act` the `n`
/// rows written by [`quantize_activations`], `out_block` `[n × rows.len()]` row-major. Each
/// weight row is decoded once per four activation rows.
///
/// # Panics
/// On a type without kernels, `k` not a multiple of the block size, `rows` outside `0..m`,
/// or `w`, `act` or `out_block` shorter than these shapes need.
#[allow(clippy::too_many_arguments)]
pub fn matmul_rows(
    w_ty: GgmlType,
    w: &[u8],
    m: usize,
    k: usize,
    act: &[u8],
    n: usize,
    rows: Range<usize>,
    out_block: &mut [f32],
) {
    let s = shape(w_ty, k);
    let Some(ti) = type_index(w_ty) else {
        unreachable!("shape() checked the type")
    };
    let len = rows.len();
    assert!(
        rows.end <= m,
        "qdot: rows {rows:?} outside a matrix of {m} rows"
    );
    assert!(
        w.len() >= m * s.w_row,
        "qdot: weights have {} bytes, need {}",
        w.len(),
        m * s.w_row
    );
    assert!(
        act.len() >= n * s.act_row,
        "qdot: activations have {} bytes, need {}",
        act.len(),
        n * s.act_row
    );
    assert!(
        out_block.len() >= n * len,
        "qdot: out_block has {} floats, needs {}",
        out_block.len(),
        n * len
    );
    if let Some(acts) = gemm::GemmActs::new(w_ty, act, n, k) {
        gemm::matmul_rows(w, &acts, rows, out_block);
        return;
    }
    let kernels = &best().rows[ti];
    if n == 1
        && len > 0
        && let Some(matvec) = best().matvec[ti]
    {
        with_acts(s, act, 1, |acts| {
            check_lengths(s, &w[rows.start * s.w_row..], &acts, 1, &out_block[..len]);
            let w_rows = &w[rows.start * s.w_row..rows.end * s.w_row];
            // SAFETY: `matvec` comes from the table of an ISA this CPU supports (see `best`);
            // `w_rows` holds exactly `len` rows and the lengths were checked above.
            unsafe { matvec(s.nb, w_rows, s.w_row, acts, &mut out_block[..len]) }
        });
        return;
    }
    // Weight rows go in tiles that stay in L1 while every group of activation rows passes
    // over them, so the activations stream from L2 once per tile rather than once per weight
    // row (prefill). Each output is the same `run_rows` call either way: same bits.
    let tile = (TILE_BYTES / s.w_row.max(1)).max(1);
    with_acts(s, act, n, |all| {
        let mut tmp = [0.0f32; MAX_ROWS];
        let mut j0 = rows.start;
        while j0 < rows.end {
            let j1 = (j0 + tile).min(rows.end);
            for r0 in (0..n).step_by(MAX_ROWS) {
                let acts = Acts {
                    bytes: &all.bytes[r0 * s.act_row..],
                    stride: s.act_row,
                    scales: all.scales.get(r0 * s.nb..).unwrap_or_default(),
                };
                for j in j0..j1 {
                    let w_row = &w[j * s.w_row..(j + 1) * s.w_row];
                    let out = &mut tmp[..(n - r0).min(MAX_ROWS)];
                    run_rows(kernels, s, w_row, acts, out);
                    let jj = j - rows.start;
                    for (r, &v) in out.iter().enumerate() {
                        out_block[(r0 + r) * len + jj] = v;
                    }
                }
            }
            j0 = j1;
        }
    });
}
