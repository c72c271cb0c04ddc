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
    rope_angles_ext(pos, n_rot, base, freq_factors, &RopeExt::plain(scale))
}

/// The scaling parameters of ggml's `ggml_rope_ext` that shape the angles and magnitudes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeExt {
    /// Multiplier of every angle (1 / scaling factor).
    pub freq_scale: f32,
    /// YaRN mix: 0 = plain interpolation, 1 = YaRN (extrapolate high-frequency pairs).
    pub ext_factor: f32,
    /// YaRN correction range `[low, high]` in pairs (see [`yarn_corr_dims`]).
    pub corr_dims: [f32; 2],
    /// Magnitude multiplier of cos/sin (llama.cpp's `attn_factor`).
    pub attn_factor: f32,
}

impl RopeExt {
    pub fn plain(freq_scale: f32) -> RopeExt {
        RopeExt {
            freq_scale,
            ext_factor: 0.0,
            corr_dims: [0.0, 0.0],
            attn_factor: 1.0,
        }
    }
}

/// ggml's `ggml_rope_yarn_corr_dims`: the pairs between which YaRN ramps from extrapolation
/// (fast-rotating pairs, fewer than `beta_fast` turns over `n_ctx_orig`) to interpolation.
pub fn yarn_corr_dims(
    n_rot: usize,
    n_ctx_orig: u32,
    base: f32,
    beta_fast: f32,
    beta_slow: f32,
) -> [f32; 2] {
    let corr_dim = |n_turns: f32| {
        n_rot as f32 * (n_ctx_orig as f32 / (n_turns * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let start = corr_dim(beta_fast).floor();
    let end = corr_dim(beta_slow).ceil();
    [start.max(0.0), end.min(n_rot as f32 - 1.0)]
}

/// [`rope_angles`] with ggml's full `rope_yarn`: per pair, θ_extrap = θ / freq_factor,
/// θ_interp = freq_scale · θ_extrap, mixed by YaRN's ramp when `ext_factor` ≠ 0 (which also
/// scales the magnitude by 1 + 0.1·ln(1/freq_scale)); cos and sin are multiplied by the magnitude.
pub fn rope_angles_ext(
    pos: usize,
    n_rot: usize,
    base: f32,
    freq_factors: Option<&[f32]>,
    ext: &RopeExt,
) -> RopeAngles {
    let half = n_rot / 2;
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut mscale = ext.attn_factor;
    if ext.ext_factor != 0.0 {
        mscale *= 1.0 + 0.1 * (1.0 / ext.freq_scale).ln();
    }
    let [low, high] = ext.corr_dims;
    let mut theta = pos as f32;
    let mut cos = Vec::with_capacity(half);
    let mut sin = Vec::with_capacity(half);
    for i in 0..half {
        let ff = freq_factors.and_then(|f| f.get(i)).copied().unwrap_or(1.0);
        let theta_extrap = theta / ff;
        let theta_interp = ext.freq_scale * theta_extrap;
        let t = if ext.ext_factor != 0.0 {
            let y = (i as f32 - low) / (high - low).max(0.001);
            let ramp_mix = (1.0 - y.clamp(0.0, 1.0)) * ext.ext_factor;
            theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix
        } else {
            theta_interp
        };
        cos.push(t.cos() * mscale);
        sin.push(t.sin() * mscale);
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

    #[test]
    fn yarn_keeps_fast_pairs_and_interpolates_slow_ones() {
        // ggml: corr dims floor(20.94) and ceil(45.03) for 128 dims, 4096 context, base 1e4.
        assert_eq!(yarn_corr_dims(128, 4096, 10000.0, 32.0, 1.0), [20.0, 46.0]);
        let corr_dims = yarn_corr_dims(128, 4096, 10000.0, 32.0, 1.0);
        let ext = RopeExt {
            freq_scale: 0.25,
            ext_factor: 1.0,
            corr_dims,
            attn_factor: 1.0,
        };
        let yarn = rope_angles_ext(100, 128, 10000.0, None, &ext);
        let plain = rope_angles(100, 128, 10000.0, None, 1.0);
        let linear = rope_angles(100, 128, 10000.0, None, 0.25);
        let m = 1.0 + 0.1 * 4f32.ln();
        // Pair 0 (below the ramp) keeps its angle, pair 63 (above it) is interpolated; both
        // carry the magnitude 1 + 0.1 ln 4.
        assert!((yarn.cos[0] - m * plain.cos[0]).abs() < 1e-5);
        assert!((yarn.sin[63] - m * linear.sin[63]).abs() < 1e-5);
        // Without YaRN, rope_angles_ext is rope_angles with cos/sin scaled by attn_factor.
        let ext = RopeExt {
            attn_factor: 2.0,
            ..RopeExt::plain(0.5)
        };
        let a = rope_angles_ext(9, 16, 10000.0, Some(&[1.0, 3.0]), &ext);
        let b = rope_angles(9, 16, 10000.0, Some(&[1.0, 3.0]), 0.5);
        assert!(a.cos.iter().zip(&b.cos).all(|(x, y)| *x == 2.0 * y));
    }
}
