//! CPU kernels. Each takes plain slices (shapes in the docs) and splits its rows across
//! bevy_tasks' `ComputeTaskPool`; none of them knows about the ECS.

pub mod activation;
pub mod attention;
pub mod fdot;
pub mod matmul;
pub mod norm;
pub mod parallel;
pub mod qdot;
pub mod rope;
#[cfg(target_arch = "x86_64")]
pub mod vexp;

/// Dot product of two equal-length f32 slices, with 8 independent accumulators so the
/// compiler can keep them in vector registers. On x86-64 CPUs with AVX2 the same code runs
/// compiled for AVX2 (one 8-lane register instead of two SSE halves; the sum order, and so the
/// result, is the same: Rust never contracts `a * b + c` into an FMA).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[inline(always)]
pub(crate) fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a · x` (AVX2 where available, as [`dot`]).
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        unsafe { axpy_avx2(y, a, x) };
        return;
    }
    axpy_portable(y, a, x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_portable(y, a, x);
}

#[inline(always)]
pub(crate) fn axpy_portable(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn simd_builds_give_the_portable_bits() {
        // The AVX2 builds of dot/axpy must not change a single result (batch invariance and
        // fidelity rest on the exact sum order).
        let a: Vec<f32> = (0..203).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let b: Vec<f32> = (0..203).map(|i| (i as f32 * 0.11).cos()).collect();
        assert_eq!(
            super::dot(&a, &b).to_bits(),
            super::dot_portable(&a, &b).to_bits()
        );
        let mut y1 = b.clone();
        let mut y2 = b.clone();
        super::axpy(&mut y1, 0.731, &a);
        super::axpy_portable(&mut y2, 0.731, &a);
        assert_eq!(y1, y2);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((super::dot(&a, &b) as f64 - naive).abs() < 1e-4);
    }
}
