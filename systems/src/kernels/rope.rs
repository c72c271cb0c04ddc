//! Rotary position embeddings, normal (adjacent pairs) and NEOX (halves) style.

use chord_resources::config::RopeStyle;

/// Precomputed rotation for one position: `cos[i], sin[i]` for pair i < n_rot/2.
pub struct RopeAngles {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// Angles for position `pos`: θ_i = pos · base^(-2i/n_rot) / freq_factor_i, computed the way ggml's
/// `ggml_rope_cache_init` does (θ multiplied by theta_scale step by step in f32).
pub fn rope_angles(
    pos: usize,
    n_rot: usize,
    base: f32,
    freq_factors: Option<&[f32]>,
    scale: f32,
) -> RopeAngles {
    let half = n_rot / 2;
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    let mut cos = Vec::with_capacity(half);
    let mut sin = Vec::with_capacity(half);
    for i in 0..half {
        let ff = freq_factors.and_then(|f| f.get(i)).copied().unwrap_or(1.0);
        let t = scale * theta / ff;
        cos.push(t.cos());
        sin.push(t.sin());
        theta *= theta_scale;
    }
    RopeAngles { cos, sin }
}

/// Rotate every head of `x` (`n_heads × head_dim`, first `n_rot` dims of each head) in place.
pub fn apply_rope(x: &mut [f32], head_dim: usize, n_rot: usize, style: RopeStyle, a: &RopeAngles) {
    let half = n_rot / 2;
    for head in x.chunks_exact_mut(head_dim) {
        match style {
            RopeStyle::Normal => {
                for i in 0..half {
                    let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = x0 * a.cos[i] - x1 * a.sin[i];
                    head[2 * i + 1] = x0 * a.sin[i] + x1 * a.cos[i];
                }
            }
            RopeStyle::Neox => {
                for i in 0..half {
                    let (x0, x1) = (head[i], head[i + half]);
                    head[i] = x0 * a.cos[i] - x1 * a.sin[i];
                    head[i + half] = x0 * a.sin[i] + x1 * a.cos[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let a0 = rope_angles(0, 4, 10000.0, None, 1.0);
        let mut x = [1.0, 2.0, 3.0, 4.0];
        apply_rope(&mut x, 4, 4, RopeStyle::Normal, &a0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
        let a = rope_angles(7, 4, 10000.0, None, 1.0);
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let mut y = [1.0f32, 2.0, 3.0, 4.0];
            apply_rope(&mut y, 4, 4, style, &a);
            let n: f32 = y.iter().map(|v| v * v).sum();
            assert!((n - 30.0).abs() < 1e-4);
        }
        // NORM rotates (x0, x1) by 7 radians for pair 0.
        let mut y = [1.0f32, 0.0, 0.0, 0.0];
        apply_rope(&mut y, 4, 4, RopeStyle::Normal, &a);
        assert!((y[0] - 7f32.cos()).abs() < 1e-6 && (y[1] - 7f32.sin()).abs() < 1e-6);
        // NEOX pairs dimension 0 with dimension 2.
        let mut z = [1.0f32, 0.0, 0.0, 0.0];
        apply_rope(&mut z, 4, 4, RopeStyle::Neox, &a);
        assert!((z[2] - 7f32.sin()).abs() < 1e-6 && z[1] == 0.0);
    }
}
