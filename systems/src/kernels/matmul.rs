//! Quantized weight × f32 activation products.
//!
//! `out[r][j] = Σ_k w[j][k] · x[r][k]` with `w` a quantized matrix of `m` rows × `k` columns
//! (one GGUF tensor with dims `[k, m]`), `x` `[n × k]`, `out` `[n × m]`, all row-major.
//! Each weight row is decoded once and reused for all `n` activation rows, so prefill reads
//! the weights once per step however many tokens are in the batch.

use chord_resources::GgmlType;
use chord_resources::quant;

use super::{fdot, parallel, qdot};

/// How activations meet quantized weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActivationPrecision {
    /// Quantize activations to Q8_0 / Q8_1 / Q8_K and use integer dot products, as ggml does.
    /// Faster, but as far from exact math as llama.cpp's own 8-bit arithmetic — and in a
    /// different direction from any given llama.cpp build, so it agrees less often with it.
    Q8,
    /// Keep activations in f32 against the dequantized weights: exact math to ~5e-5, which is
    /// what our fidelity bar against llama.cpp is measured with. The default.
    #[default]
    F32,
}

/// A borrowed quantized matrix.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    /// Output features (rows of the weight).
    pub rows: usize,
    /// Input features (elements per row).
    pub cols: usize,
    pub data: &'a [u8],
}

impl WeightView<'_> {
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// Dequantize row `j` into `dst` (len `cols`).
    pub fn dequantize_row(&self, j: usize, dst: &mut [f32]) {
        let rb = self.row_bytes();
        let src = &self.data[j * rb..(j + 1) * rb];
        // Shapes were validated when the weights were loaded; a failure here is a bug.
        if let Err(e) = quant::dequantize(self.ty, src, dst) {
            panic!("dequantize {} row {j}: {e}", self.ty);
        }
    }
}

/// `out = x · wᵀ` (see module docs). `x.len() == n·cols`, `out.len() == n·rows`.
/// F32/F16/BF16 weights always take the f32 path.
pub fn matmul(w: WeightView<'_>, x: &[f32], out: &mut [f32], precision: ActivationPrecision) {
    matmul_many(&[w], x, &mut [out], precision);
}

/// Several products of the same activations in one parallel dispatch (Q, K and V; gate and
/// up): `outs[i] = x · ws[i]ᵀ`. The weight rows of all matrices are split across threads as
/// one range, and activations are quantized once per activation format.
pub fn matmul_many(
    ws: &[WeightView<'_>],
    x: &[f32],
    outs: &mut [&mut [f32]],
    precision: ActivationPrecision,
) {
    let Some(k) = ws.first().map(|w| w.cols) else {
        return;
    };
    let n = x.len() / k;
    debug_assert_eq!(x.len(), n * k);
    debug_assert!(ws.iter().all(|w| w.cols == k));
    debug_assert!(
        ws.iter()
            .zip(outs.iter())
            .all(|(w, o)| o.len() == n * w.rows)
    );
    if n == 0 {
        return;
    }
    // Quantized activations, one buffer per activation format in use.
    let mut acts: Vec<(GgmlType, Vec<u8>)> = Vec::new();
    let act_of: Vec<Option<usize>> = ws
        .iter()
        .map(|w| {
            if precision != ActivationPrecision::Q8 || qdot::vec_dot_fn(w.ty).is_none() {
                return None;
            }
            let at = quant::activation_type(w.ty);
            Some(match acts.iter().position(|(t, _)| *t == at) {
                Some(i) => i,
                None => {
                    let mut buf = Vec::new();
                    qdot::quantize_activations(w.ty, x, k, &mut buf);
                    acts.push((at, buf));
                    acts.len() - 1
                }
            })
        })
        .collect();
    // Prefill: activations in the GEMMs' layouts, once for all threads (per int8 weight type;
    // one transposed copy for the f32 path).
    let mut int8_gemm_of: Vec<Option<usize>> = vec![None; ws.len()];
    let mut int8_by_type: Vec<qdot::gemm::GemmActs> = Vec::new();
    for (pi, w) in ws.iter().enumerate() {
        let Some(ai) = act_of[pi] else { continue };
        if let Some(i) = int8_by_type.iter().position(|g| g.weight_type() == w.ty) {
            int8_gemm_of[pi] = Some(i);
        } else if let Some(g) = qdot::gemm::GemmActs::new(w.ty, &acts[ai].1, n, k) {
            int8_by_type.push(g);
            int8_gemm_of[pi] = Some(int8_by_type.len() - 1);
        }
    }
    let f32_gemm = if ws
        .iter()
        .zip(&act_of)
        .any(|(w, a)| a.is_none() && fdot::gemm_supports(w.ty))
    {
        fdot::GemmActs::new(x, n, k)
    } else {
        None
    };
    let mut offsets = Vec::with_capacity(ws.len() + 1);
    offsets.push(0usize);
    for w in ws {
        offsets.push(offsets[offsets.len() - 1] + w.rows);
    }
    let total = offsets[ws.len()];
    let acts = &acts;
    let (int8_by_type, int8_gemm_of, f32_gemm) = (&int8_by_type, &int8_gemm_of, &f32_gemm);
    // Each part gets the output columns of its weight rows as disjoint row segments, computes
    // its block in a reused per-thread buffer and copies it into them: no zeroed block per
    // product and no serial scatter after the parallel section.
    let ranges = parallel::part_ranges(total, k * n);
    let mut parts: Vec<Vec<PartOut<'_>>> = ranges.iter().map(|_| Vec::new()).collect();
    for (pi, out) in outs.iter_mut().enumerate() {
        let (lo, hi) = (offsets[pi], offsets[pi + 1]);
        let m = hi - lo;
        // The parts that cover some of this matrix's rows, with their local row ranges.
        let mine: Vec<(usize, std::ops::Range<usize>)> = ranges
            .iter()
            .enumerate()
            .filter_map(|(p, r)| {
                let (a, b) = (r.start.max(lo), r.end.min(hi));
                (a < b).then(|| (p, a - lo..b - lo))
            })
            .collect();
        let first: Vec<usize> = mine
            .iter()
            .map(|(p, rows)| {
                parts[*p].push(PartOut {
                    matrix: pi,
                    rows: rows.clone(),
                    segments: Vec::with_capacity(n),
                });
                parts[*p].len() - 1
            })
            .collect();
        for row in out.chunks_mut(m).take(n) {
            let mut rest = row;
            for ((p, rows), &e) in mine.iter().zip(&first) {
                let (seg, tail) = rest.split_at_mut(rows.len());
                parts[*p][e].segments.push(seg);
                rest = tail;
            }
        }
    }
    let acts = &acts;
    let (int8_by_type, int8_gemm_of, f32_gemm) = (&int8_by_type, &int8_gemm_of, &f32_gemm);
    parallel::for_parts(parts, |_, outs: Vec<PartOut<'_>>| {
        for PartOut {
            matrix: pi,
            rows,
            segments,
        } in outs
        {
            let w = &ws[pi];
            let len = rows.len();
            BLOCK.with_borrow_mut(|buf| {
                if buf.len() < n * len {
                    buf.resize(n * len, 0.0);
                }
                let block = &mut buf[..n * len];
                match (act_of[pi], int8_gemm_of[pi], f32_gemm) {
                    (Some(_), Some(gi), _) => {
                        qdot::gemm::matmul_rows(w.data, &int8_by_type[gi], rows.clone(), block)
                    }
                    (None, _, Some(g)) if fdot::gemm_supports(w.ty) => {
                        fdot::matmul_rows_gemm(w.ty, w.data, g, rows.clone(), block)
                    }
                    (Some(ai), _, _) => qdot::matmul_rows(
                        w.ty,
                        w.data,
                        w.rows,
                        k,
                        &acts[ai].1,
                        n,
                        rows.clone(),
                        block,
                    ),
                    (None, _, _) => {
                        fdot::matmul_rows_f32(w.ty, w.data, k, x, n, rows.clone(), block)
                    }
                }
                for (seg, src) in segments.into_iter().zip(block.chunks_exact(len)) {
                    seg.copy_from_slice(src);
                }
            });
        }
    });
}

/// One part's share of one output matrix: weight rows `rows` of matrix `matrix`, and for
/// each activation row the output segment of those columns.
struct PartOut<'a> {
    matrix: usize,
    rows: std::ops::Range<usize>,
    segments: Vec<&'a mut [f32]>,
}

thread_local! {
    /// The `[n × rows]` block a part's kernel writes before it is copied out (reused, so not
    /// zeroed per product: every kernel writes every element of its block).
    static BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_matmul_matches_naive() {
        let (m, k, n) = (67, 64, 3);
        let wf: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let bytes: Vec<u8> = wf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let x: Vec<f32> = (0..n * k).map(|i| ((i * 31) % 7) as f32 - 3.0).collect();
        let mut out = vec![0.0; n * m];
        matmul(
            WeightView {
                ty: GgmlType::F32,
                rows: m,
                cols: k,
                data: &bytes,
            },
            &x,
            &mut out,
            ActivationPrecision::F32,
        );
        for r in 0..n {
            for j in 0..m {
                let e: f32 = (0..k).map(|i| wf[j * k + i] * x[r * k + i]).sum();
                assert!((out[r * m + j] - e).abs() < 1e-3, "{r} {j}");
            }
        }
    }
}
