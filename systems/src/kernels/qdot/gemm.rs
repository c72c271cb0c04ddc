//! Prefill GEMM: eight weight rows at a time against many activation rows, with the weights
//! decoded once per eight-row tile into interleaved unsigned codes.
//!
//! The row kernels of this module's parent decode a weight block once per four activation
//! rows and spend a convert, a multiply and an FMA per (weight row, activation row, block) on
//! partial sums that are only added up at the end. Here a tile of 8 weight rows is first
//! decoded into [`chord_resources::quant::decode_codes`]' form — unsigned codes with a scale
//! and bias per 16- or 32-element group — laid out so that one 32-byte register holds four
//! consecutive codes of each of the 8 rows. One `vpdpbusd` of that register with four
//! activation bytes broadcast to every lane adds four products to each row's sum, so after a
//! group each i32 lane holds the complete group dot of one (weight row, activation row) pair,
//! and the float scaling is paid once per 8 outputs instead of once per output.
//!
//! The codes' offset is taken out exactly: each lane starts at `−offset·Σa` (the activation
//! group's sum), so the integer part equals `Σ q·a` of the row kernels; only where the float
//! scaling happens differs (the tests bound the difference). The decode costs a pass over the
//! tile's weights, repaid over the activation rows, so the GEMM runs from [`MIN_ROWS`]
//! activation rows up: decode steps, speculative verification groups (≤ `MAX_DRAFT + 1`
//! rows per sequence) and small batches keep the row kernels, and so their bits.

use std::ops::Range;

use chord_resources::GgmlType;
use chord_resources::quant::{CodeLayout, code_layout, decode_activation_codes, decode_codes};

use super::{Isa, activation_type, best};

/// Activation rows from which [`matmul_rows`] takes over from the row kernels.
pub const MIN_ROWS: usize = crate::speculative::MAX_DRAFT + 2;

/// Weight rows per tile (the i32 lanes of one 256-bit register).
pub const TILE: usize = 8;

/// Activation rows per kernel pass over a tile.
pub(super) const PASS: usize = 8;

/// Bytes of a row of `k` elements of `ty` (`k` a whole number of blocks).
fn row_len(ty: GgmlType, k: usize) -> usize {
    k / ty.block_size() * ty.type_size()
}

/// Per activation row and code group: what the kernel broadcasts.
#[derive(Clone, Copy, Debug, Default)]
// Read by the x86 kernels only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct ActGroup {
    /// `−offset · Σ a` over the group: the lanes' starting value.
    pub neg_offset_sum: i32,
    /// The activation scale of the group's block.
    pub d: f32,
    /// `d · Σ a`, multiplied with the weights' per-group bias.
    pub d_sum: f32,
}

/// Whether [`matmul_rows`] serves `w_ty` on this CPU.
pub fn supported(w_ty: GgmlType) -> bool {
    best().isa == Isa::Avx512Vnni && code_layout(w_ty).is_some() && activation_type(w_ty).is_some()
}

/// Activation rows in the GEMM's layout for weights of one type: built once per matrix
/// product (not once per thread's share of the rows) and read by every thread.
pub struct GemmActs {
    w_ty: GgmlType,
    n: usize,
    k: usize,
    /// `[pass][group][quad]`, each a quad of every row of the pass.
    quads: Vec<PassQuad>,
    /// `[pass][group]`.
    groups: Vec<[ActGroup; PASS]>,
}

/// Four activation bytes of each row of a pass.
type PassQuad = [[u8; 4]; PASS];

impl GemmActs {
    /// `n` activation rows `act` (written by `quantize_activations(w_ty, …)`) for the GEMM
    /// against `w_ty` weights, or `None` where the GEMM does not apply (fewer than
    /// [`MIN_ROWS`] rows, or a CPU or type it does not serve).
    pub fn new(w_ty: GgmlType, act: &[u8], n: usize, k: usize) -> Option<GemmActs> {
        if n < MIN_ROWS || !supported(w_ty) {
            return None;
        }
        let (layout, act_ty) = (code_layout(w_ty)?, activation_type(w_ty)?);
        let (quads, groups) = prepare_activations(act_ty, layout, act, n, k);
        Some(GemmActs {
            w_ty,
            n,
            k,
            quads,
            groups,
        })
    }

    /// The weight type these activations were prepared for.
    pub fn weight_type(&self) -> GgmlType {
        self.w_ty
    }
}

/// `out_block[r·rows.len() + (j − rows.start)] = w_j · act_r` for the activations of `acts`
/// (same layout as [`super::matmul_rows`]). `w` is the whole matrix of `acts`' weight type.
///
/// # Panics
/// If `w`, `rows` or `out_block` do not fit the shapes.
pub fn matmul_rows(w: &[u8], acts: &GemmActs, rows: Range<usize>, out_block: &mut [f32]) {
    let Some(layout) = code_layout(acts.w_ty) else {
        unreachable!("GemmActs::new checked the type")
    };
    let w_row = row_len(acts.w_ty, acts.k);
    assert!(
        rows.end * w_row <= w.len() && out_block.len() >= acts.n * rows.len(),
        "qdot gemm: rows {rows:?} of {} bytes or an output of {} floats do not fit",
        w.len(),
        out_block.len()
    );
    match (layout.group, layout.has_bias) {
        (32, false) => run::<8, false>(w, acts, rows, out_block),
        (32, true) => run::<8, true>(w, acts, rows, out_block),
        (16, false) => run::<4, false>(w, acts, rows, out_block),
        (_, _) => run::<4, true>(w, acts, rows, out_block),
    }
}

/// The GEMM for groups of `Q` quads (`4·Q` elements), with or without biases.
///
/// Layouts, all per code group `g` so that the kernel reads fixed-size arrays:
/// - a weight tile: `codes[g][quad][row i][4]` (one 32-byte register per quad), `scales[g][i]`,
///   `biases[g][i]`;
/// - a pass of activation rows: `quads[g][quad][row r][4]` (each row's four bytes broadcast
///   from memory by the kernel), `groups[g][r]`.
fn run<const Q: usize, const BIAS: bool>(
    w: &[u8],
    acts: &GemmActs,
    rows: Range<usize>,
    out_block: &mut [f32],
) {
    let (w_ty, k, n) = (acts.w_ty, acts.k, acts.n);
    let ng = k / (4 * Q);
    let (act_quads, _) = acts.quads.as_chunks::<Q>();
    let w_row = row_len(w_ty, k);
    let len = rows.len();
    let mut codes = vec![[[0u8; 32]; Q]; ng];
    let mut scales = vec![[0.0f32; TILE]; ng];
    let mut biases = vec![[0.0f32; TILE]; ng];
    let mut row_codes = vec![0u8; k];
    let (mut row_scales, mut row_biases) = (vec![0.0f32; ng], vec![0.0f32; ng]);
    let mut tmp = [[0.0f32; TILE]; PASS];
    for j0 in rows.clone().step_by(TILE) {
        let valid = (rows.end - j0).min(TILE);
        for i in 0..TILE {
            if i < valid {
                let j = j0 + i;
                if let Err(e) = decode_codes(
                    w_ty,
                    &w[j * w_row..(j + 1) * w_row],
                    &mut row_codes,
                    &mut row_scales,
                    &mut row_biases,
                ) {
                    // Shapes were validated when the weights were loaded.
                    panic!("qdot gemm: decode {w_ty} row {j}: {e}");
                }
            } else {
                row_codes.fill(0);
                row_scales.fill(0.0);
                row_biases.fill(0.0);
            }
            for (g, (quads, src)) in codes
                .iter_mut()
                .zip(row_codes.chunks_exact(4 * Q))
                .enumerate()
            {
                for (quad, four) in quads.iter_mut().zip(src.chunks_exact(4)) {
                    quad[4 * i..4 * i + 4].copy_from_slice(four);
                }
                scales[g][i] = row_scales[g];
                biases[g][i] = row_biases[g];
            }
        }
        let jj = j0 - rows.start;
        for (p, (pa, pg)) in act_quads
            .chunks_exact(ng)
            .zip(acts.groups.chunks_exact(ng))
            .enumerate()
        {
            let r0 = p * PASS;
            kernel::<Q, BIAS>(&codes, &scales, &biases, pa, pg, &mut tmp);
            for (r, t) in tmp.iter().enumerate().take(n - r0) {
                out_block[(r0 + r) * len + jj..(r0 + r) * len + jj + valid]
                    .copy_from_slice(&t[..valid]);
            }
        }
    }
}

/// The activation rows in passes of [`PASS`] rows (the last padded with copies of row
/// `n − 1`): signed codes as bytes `[pass][g][quad][row][4]`, and group sums and scales
/// `[pass][g][row]`.
fn prepare_activations(
    act_ty: GgmlType,
    layout: CodeLayout,
    act: &[u8],
    n: usize,
    k: usize,
) -> (Vec<PassQuad>, Vec<[ActGroup; PASS]>) {
    let g = layout.group;
    let ng = k / g;
    let bs = act_ty.block_size();
    let act_row = row_len(act_ty, k);
    let passes = n.div_ceil(PASS);
    let q = g / 4;
    let mut codes = vec![[[0u8; 4]; PASS]; passes * ng * q];
    let mut groups = vec![[ActGroup::default(); PASS]; passes * ng];
    let mut signed = vec![0i8; k];
    let mut scales = vec![0.0f32; k / bs];
    for r in 0..passes * PASS {
        let src = r.min(n - 1);
        // Padding rows repeat the last row's decoded codes.
        if r == src
            && let Err(e) = decode_activation_codes(
                act_ty,
                &act[src * act_row..(src + 1) * act_row],
                &mut signed,
                &mut scales,
            )
        {
            panic!("qdot gemm: activation row {src}: {e}");
        }
        let (p, pr) = (r / PASS, r % PASS);
        for gi in 0..ng {
            let vals = &signed[gi * g..(gi + 1) * g];
            let quads = &mut codes[(p * ng + gi) * q..(p * ng + gi + 1) * q];
            for (quad, four) in quads.iter_mut().zip(vals.chunks_exact(4)) {
                quad[pr] = std::array::from_fn(|t| four[t] as u8);
            }
            let sum: i32 = vals.iter().map(|&v| i32::from(v)).sum();
            let d = scales[gi * g / bs];
            groups[p * ng + gi][pr] = ActGroup {
                neg_offset_sum: -i32::from(layout.offset) * sum,
                d,
                d_sum: d * sum as f32,
            };
        }
    }
    (codes, groups)
}

/// One pass of [`PASS`] activation rows over a decoded tile of [`TILE`] weight rows.
fn kernel<const Q: usize, const BIAS: bool>(
    codes: &[[[u8; 32]; Q]],
    scales: &[[f32; TILE]],
    biases: &[[f32; TILE]],
    act: &[[PassQuad; Q]],
    groups: &[[ActGroup; PASS]],
    out: &mut [[f32; TILE]; PASS],
) {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(super::x86::detected_vnni(), "qdot gemm without VNNI");
        // SAFETY: AVX-512 F/BW/VL/VNNI with AVX2/FMA/F16C were just detected; the kernel only
        // reads through fixed-size array references.
        unsafe { super::x86::gemm_tile::<Q, BIAS>(codes, scales, biases, act, groups, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (codes, scales, biases, act, groups, out);
        unreachable!("supported() is false off x86-64")
    }
}
