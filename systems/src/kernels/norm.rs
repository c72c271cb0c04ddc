//! RMSNorm.

/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) * w` for every row r of `x` ([n × d], row-major).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let scale = rms_scale(xr, eps);
        for ((o, xi), wi) in or.iter_mut().zip(xr).zip(w) {
            *o = xi * scale * wi;
        }
    }
}

/// In-place variant of [`rms_norm`] (used for per-head QK-norm).
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for xr in x.chunks_exact_mut(d) {
        let scale = rms_scale(xr, eps);
        for (xi, wi) in xr.iter_mut().zip(w) {
            *xi = *xi * scale * wi;
        }
    }
}

/// 1/sqrt(mean(x²)+eps), summed in f64 as ggml's `ggml_compute_forward_rms_norm_f32` does
/// (it accumulates in `ggml_float` = double).
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|v| (*v as f64) * (*v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_rms_after_norm() {
        let x = [3.0f32, -4.0, 0.0, 5.0, 1.0, 2.0, -2.0, 7.0];
        let w = [1.0f32; 4];
        let mut out = [0.0f32; 8];
        super::rms_norm(&x, &w, 0.0, &mut out);
        for row in out.chunks(4) {
            let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / 4.0;
            assert!((ms - 1.0).abs() < 1e-5, "{ms}");
        }
        // Direction is preserved.
        assert!((out[0] / out[1] - 3.0 / -4.0).abs() < 1e-6);
    }
}
