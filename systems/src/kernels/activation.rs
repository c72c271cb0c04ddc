//! Gated FFN activations.

use chord_resources::config::FfnActivation;

/// SiLU(x) = x · σ(x).
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU with the tanh approximation (ggml's `ggml_gelu_f32`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// The FFN's gate: `gate[i] = act(gate[i]) · up[i]` with the model's activation; SiLU takes
/// the vector exponential on x86 ([`super::vexp`]: within a few ulp of the scalar definition,
/// and the same for every row).
pub fn gated_ffn(act: FfnActivation, gate: &mut [f32], up: &[f32]) {
    match act {
        FfnActivation::Silu => {
            #[cfg(target_arch = "x86_64")]
            if super::vexp::detected() {
                super::vexp::silu_gated(gate, up);
                return;
            }
            gated(gate, up, silu)
        }
        FfnActivation::GeluTanh => gated(gate, up, gelu_tanh),
    }
}

/// `gate[i] = act(gate[i]) · up[i]` elementwise (in place in `gate`).
pub fn gated(gate: &mut [f32], up: &[f32], act: fn(f32) -> f32) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = act(*g) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert!((silu(0.0)).abs() < 1e-7);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        let mut g = [1.0, 2.0];
        gated(&mut g, &[3.0, 4.0], silu);
        assert!((g[0] - silu(1.0) * 3.0).abs() < 1e-6);
        assert!((g[1] - silu(2.0) * 4.0).abs() < 1e-6);
    }
}
