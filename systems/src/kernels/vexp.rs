//! `exp` eight lanes at a time (AVX2 + FMA), for softmax and SiLU.
//!
//! libm's `expf` costs a call per element (~20 cycles with the spills around it), which made
//! the exponentials a fifth of prefill attention. This is the usual range reduction
//! `eˣ = 2ⁿ · eʳ` (`n = round(x·log₂e)`, `r = x − n·ln2` in two FMA steps, `|r| ≤ ln2/2`) with
//! a degree-7 Taylor polynomial for `eʳ` (truncation error < 2⁻²⁷ relative), so results are
//! within 2 ulp of the exact value (the tests check against f64). Below −87.3 (where f32
//! results become subnormal) it returns 0; above 88.7, +∞; NaN stays NaN.
//!
//! Every caller uses it for every row it serves, so results do not depend on how rows are
//! batched.

use std::arch::x86_64::*;

/// Whether this CPU runs [`exp8`].
pub fn detected() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `eˣ` per lane (see the module docs for its accuracy and range).
///
/// # Safety
/// Callers without the `avx2,fma` target features must have checked [`detected`].
#[target_feature(enable = "avx2,fma")]
#[inline]
pub fn exp8(x: __m256) -> __m256 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2⁹.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let hi = _mm256_set1_ps(88.722_83);
    let lo = _mm256_set1_ps(-87.336_55);
    let xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    // eʳ = 1 + r + r²/2 + … + r⁷/5040, Horner.
    let c = |v: f32| _mm256_set1_ps(v);
    let mut p = c(1.0 / 5040.0);
    p = _mm256_fmadd_ps(p, r, c(1.0 / 720.0));
    p = _mm256_fmadd_ps(p, r, c(1.0 / 120.0));
    p = _mm256_fmadd_ps(p, r, c(1.0 / 24.0));
    p = _mm256_fmadd_ps(p, r, c(1.0 / 6.0));
    p = _mm256_fmadd_ps(p, r, c(0.5));
    p = _mm256_fmadd_ps(p, r, c(1.0));
    p = _mm256_fmadd_ps(p, r, c(1.0));
    // 2ⁿ: n + 127 into the exponent field (n ∈ [−126, 128] after the clamp; 128 gives +∞
    // through the overflow test below).
    let ni = _mm256_cvtps_epi32(n);
    let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_min_epi32(ni, _mm256_set1_epi32(127)),
        _mm256_set1_epi32(127),
    )));
    // n = 128 (x near the top of the range): 2¹²⁸ = 2¹²⁷ · 2.
    let twice = _mm256_cmp_ps::<_CMP_GT_OQ>(n, c(127.5));
    let p = _mm256_blendv_ps(p, _mm256_add_ps(p, p), twice);
    let mut y = _mm256_mul_ps(p, pow2);
    // Overflow → +∞, underflow → 0, NaN → NaN.
    y = _mm256_blendv_ps(y, c(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, hi));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo));
    _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
}

/// `gate[i] = silu(gate[i]) · up[i]` with [`exp8`] (`silu(x) = x / (1 + e⁻ˣ)`); the tail past
/// a multiple of 8 goes through the same lanes (padded).
pub fn silu_gated(gate: &mut [f32], up: &[f32]) {
    assert!(detected(), "vexp: AVX2/FMA missing");
    assert_eq!(gate.len(), up.len(), "silu_gated: lengths differ");
    // SAFETY: AVX2 and FMA were just detected; the lengths were checked.
    unsafe { silu_gated_avx2(gate, up) }
}

#[target_feature(enable = "avx2,fma")]
fn silu_gated_avx2(gate: &mut [f32], up: &[f32]) {
    let one = _mm256_set1_ps(1.0);
    let mut g8 = [0.0f32; 8];
    let mut u8 = [0.0f32; 8];
    for (g, u) in gate.chunks_mut(8).zip(up.chunks(8)) {
        g8[..g.len()].copy_from_slice(g);
        u8[..u.len()].copy_from_slice(u);
        // SAFETY: `g8`/`u8` are 8 readable and writable f32; unaligned access is allowed.
        let (x, uv) = unsafe { (_mm256_loadu_ps(g8.as_ptr()), _mm256_loadu_ps(u8.as_ptr())) };
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(g8.as_mut_ptr(), _mm256_mul_ps(s, uv)) };
        let n = g.len();
        g.copy_from_slice(&g8[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp_lanes(x: [f32; 8]) -> [f32; 8] {
        assert!(detected());
        let mut out = [0.0f32; 8];
        // SAFETY: AVX2/FMA detected; `x`/`out` are 8 f32.
        unsafe {
            let v = exp8(_mm256_loadu_ps(x.as_ptr()));
            _mm256_storeu_ps(out.as_mut_ptr(), v);
        }
        out
    }

    #[test]
    fn exp8_is_within_two_ulp_of_f64_and_handles_the_edges() {
        if !detected() {
            eprintln!("skipped: no AVX2/FMA");
            return;
        }
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let lanes: [f32; 8] = std::array::from_fn(|i| x + i as f32 * 0.001_37);
            for (xi, yi) in lanes.iter().zip(exp_lanes(lanes)) {
                let exact = f64::from(*xi).exp();
                let ulp = f64::from(f32::EPSILON) * exact;
                worst = worst.max((f64::from(yi) - exact).abs() / ulp);
            }
            x += 0.0173;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        eprintln!("exp8: worst error {worst:.2} ulp over [-87, 88.5]");
        let e = exp_lanes([
            0.0,
            -200.0,
            200.0,
            f32::NAN,
            f32::NEG_INFINITY,
            f32::INFINITY,
            1.0,
            -1.0,
        ]);
        assert_eq!(e[0], 1.0);
        assert_eq!(e[1], 0.0);
        assert_eq!(e[2], f32::INFINITY);
        assert!(e[3].is_nan());
        assert_eq!(e[4], 0.0);
        assert_eq!(e[5], f32::INFINITY);
        assert!((e[6] - std::f32::consts::E).abs() <= 2.0 * f32::EPSILON * 3.0);
    }

    #[test]
    fn silu_gated_matches_the_scalar_definition() {
        if !detected() {
            eprintln!("skipped: no AVX2/FMA");
            return;
        }
        let n = 37; // a tail past the last full 8
        let mut g: Vec<f32> = (0..n).map(|i| (i as f32 - 18.0) * 0.7).collect();
        let u: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 * 0.1).collect();
        let want: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(&x, &v)| crate::kernels::activation::silu(x) * v)
            .collect();
        silu_gated(&mut g, &u);
        for (a, b) in g.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-6),
                "{a} vs {b}"
            );
        }
    }
}
