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
    let (m, k) = (w.rows, w.cols);
    let n = x.len() / k;
    debug_assert_eq!(x.len(), n * k);
    debug_assert_eq!(out.len(), n * m);
    if n == 0 {
        return;
    }
    if precision == ActivationPrecision::Q8 && qdot::vec_dot_fn(w.ty).is_some() {
        let mut act = Vec::new();
        qdot::quantize_activations(w.ty, x, k, &mut act);
        let parts = parallel::map_ranges(m, k * n, |range| {
            let mut block = vec![0.0f32; n * range.len()];
            qdot::matmul_rows(w.ty, w.data, m, k, &act, n, range, &mut block);
            block
        });
        scatter(parts, n, m, out);
        return;
    }
    // Each part owns a contiguous range of weight rows and returns its [n × len] block,
    // computed by the fused decode-and-multiply f32 kernels.
    let parts = parallel::map_ranges(m, k * n, |range| {
        let mut block = vec![0.0f32; n * range.len()];
        fdot::matmul_rows_f32(w.ty, w.data, k, x, n, range, &mut block);
        block
    });
    scatter(parts, n, m, out);
}

/// Copy per-range `[n × len]` blocks into their columns of `out` `[n × m]`.
fn scatter(parts: Vec<(std::ops::Range<usize>, Vec<f32>)>, n: usize, m: usize, out: &mut [f32]) {
    for (range, block) in parts {
        let len = range.len();
        for r in 0..n {
            out[r * m + range.start..r * m + range.end]
                .copy_from_slice(&block[r * len..(r + 1) * len]);
        }
    }
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
