//! Every kernel of every ISA this CPU runs, against `chord_resources::quant`'s scalar
//! transcription of ggml's generic kernels.
//!
//! Tolerance: the integer block sums are exact in every kernel; only the order of the f32
//! accumulation differs. So a result must lie within `1e-5 · (|ref| + Σ|wᵢ·aᵢ|)` of the
//! reference, `Σ|wᵢ·aᵢ|` (from the dequantized rows) being the scale of the terms whose
//! rounding errors can add up. `matmul_rows` runs the same per-row arithmetic as `vec_dot`,
//! so those two must agree bit for bit. Activation quantizers must match the reference bytes
//! exactly.

use chord_resources::GgmlType;
use chord_resources::quant;
use half::f16;

use super::*;

/// splitmix64: a small deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Activation-like values: mostly small, a few large outliers.
    fn activations(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = self.unit() * 2.0;
                if self.next_u64().is_multiple_of(61) {
                    v * 40.0
                } else {
                    v
                }
            })
            .collect()
    }
}

/// Byte offsets of each format's f16 scale fields (d, and dmin / m where present).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        other => panic!("no weight layout for {other}"),
    }
}

/// `m` weight rows of `k` elements: random bytes (every bit pattern of quants and packed
/// scales), with the f16 scale fields overwritten by finite values (random f16 bytes can be
/// NaN or infinite).
fn random_weights(rng: &mut Rng, ty: GgmlType, m: usize, k: usize) -> Vec<u8> {
    let mut w = rng.bytes(m * k / ty.block_size() * ty.type_size());
    for block in w.chunks_exact_mut(ty.type_size()) {
        for &off in f16_fields(ty) {
            let v = rng.unit() * 0.05;
            block[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
    }
    w
}

/// Weights as ggml's reference quantizer writes them (legacy formats), else random bytes.
fn weights(rng: &mut Rng, ty: GgmlType, m: usize, k: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; m * k / ty.block_size() * ty.type_size()];
    let src: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
    match quant::quantize(ty, &src, &mut bytes) {
        Ok(()) => bytes,
        Err(_) => random_weights(rng, ty, m, k),
    }
}

fn act_type(ty: GgmlType) -> GgmlType {
    activation_type(ty).expect("kernel type")
}

/// `Σ|wᵢ·aᵢ|` of one weight row and one activation row, dequantized.
fn magnitude(ty: GgmlType, w: &[u8], a: &[u8], k: usize) -> f64 {
    let mut wf = vec![0.0f32; k];
    let mut af = vec![0.0f32; k];
    quant::dequantize(ty, w, &mut wf).unwrap();
    quant::dequantize(act_type(ty), a, &mut af).unwrap();
    wf.iter()
        .zip(&af)
        .map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs())
        .sum()
}

fn assert_close(got: f32, reference: f32, mag: f64, what: &str) {
    let tol = 1e-5 * (f64::from(reference).abs() + mag);
    let err = (f64::from(got) - f64::from(reference)).abs();
    assert!(
        got.is_finite() && err <= tol,
        "{what}: got {got}, reference {reference}, |err| {err:e} > {tol:e}"
    );
}

/// The k values exercised per type: one block, a few blocks (odd count too), a model row,
/// and a long row (more blocks than `with_acts` widens on the stack).
fn ks(ty: GgmlType) -> Vec<usize> {
    let bs = ty.block_size();
    vec![bs, 2 * bs, 3 * bs, 1536, 9216]
}

#[test]
fn activation_formats_are_ggmls_vec_dot_types() {
    for ty in TYPES {
        assert_eq!(
            activation_type(ty),
            Some(quant::activation_type(ty)),
            "{ty}"
        );
    }
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_1,
        GgmlType::Q8K,
    ] {
        assert_eq!(activation_type(ty), None, "{ty}");
        assert!(vec_dot_fn(ty).is_none(), "{ty}");
    }
}

#[test]
fn this_cpu_uses_its_best_isa() {
    let isas = available_isas();
    assert_eq!(isas.last(), Some(&Isa::Scalar));
    assert_eq!(isa(), isas[0]);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        assert!(isas.contains(&Isa::Avx2));
        let vnni = is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("avx512vnni");
        assert_eq!(isa(), if vnni { Isa::Avx512Vnni } else { Isa::Avx2 });
        // The K-quants have no VNNI kernels: they must still get the AVX2 ones, not scalar.
        let k_kernels = best().rows[type_index(GgmlType::Q4K).unwrap()];
        let avx2 = rows_for(Isa::Avx2, GgmlType::Q4K).unwrap();
        assert!(std::ptr::fn_addr_eq(k_kernels[0], avx2[0]));
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    assert_eq!(isas, [Isa::Simd128, Isa::Scalar]);
}

/// Quantize with `isa`'s quantizer, row by row.
fn quantize_with(isa: Isa, w_ty: GgmlType, x: &[f32], k: usize) -> Vec<u8> {
    let act = act_type(w_ty);
    let row = act.row_bytes(k as u64).unwrap() as usize;
    let mut out = vec![0u8; x.len() / k * row];
    for (src, dst) in x.chunks_exact(k).zip(out.chunks_exact_mut(row)) {
        quantize_row(isa, act, src, dst);
    }
    out
}

fn reference_quantize(w_ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let act = act_type(w_ty);
    let mut out = vec![0u8; act.row_bytes(x.len() as u64).unwrap() as usize];
    quant::quantize(act, x, &mut out).unwrap();
    out
}

#[test]
fn activation_quantizers_match_the_reference_bytes() {
    let mut rng = Rng(1);
    for isa in available_isas() {
        for w_ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4K] {
            for k in [256, 1536] {
                let x = rng.activations(3 * k);
                assert_eq!(
                    quantize_with(isa, w_ty, &x, k),
                    reference_quantize(w_ty, &x),
                    "{isa:?} {w_ty} k={k}"
                );
            }
        }
    }
}

#[test]
fn activation_quantizers_round_ties_like_the_reference() {
    // Q8_0/Q8_1: amax 127 gives d = 1, so x·id = x and halves are ties (roundf: away from 0).
    let mut x: Vec<f32> = (0..256).map(|i| (i % 64) as f32 - 32.5).collect();
    x[0] = 127.0;
    x[40] = -0.5;
    x[41] = 0.5;
    x[42] = 126.5;
    // Q8_K: the first of the largest magnitudes is −127 (the later +127 must not win), so
    // iscale = 1 and halves are ties (nearest_int: to even).
    let mut xk = x.clone();
    xk[0] = -127.0;
    xk[1] = 127.0;
    // An all-zero block and a block with a single non-zero value.
    let mut zeros = vec![0.0f32; 512];
    zeros[300] = -3.0;
    for isa in available_isas() {
        for (w_ty, input) in [
            (GgmlType::Q4_0, &x),
            (GgmlType::Q4_1, &x),
            (GgmlType::Q4K, &xk),
        ] {
            assert_eq!(
                quantize_with(isa, w_ty, input, 256),
                reference_quantize(w_ty, input),
                "{isa:?} {w_ty}"
            );
        }
        for w_ty in [GgmlType::Q8_0, GgmlType::Q5_1, GgmlType::Q6K] {
            assert_eq!(
                quantize_with(isa, w_ty, &zeros, 512),
                reference_quantize(w_ty, &zeros),
                "{isa:?} {w_ty}"
            );
        }
    }
}

#[test]
fn quantize_activations_writes_whole_rows() {
    let mut rng = Rng(2);
    let x = rng.activations(5 * 512);
    let mut out = vec![7u8; 3];
    quantize_activations(GgmlType::Q6K, &x, 512, &mut out);
    assert_eq!(out, reference_quantize(GgmlType::Q6K, &x));
    quantize_activations(GgmlType::Q5_0, &x, 512, &mut out);
    assert_eq!(out, reference_quantize(GgmlType::Q5_0, &x));
    quantize_activations(GgmlType::Q8_0, &[], 512, &mut out);
    assert!(out.is_empty());
}

/// Runs `isa`'s kernels for `ty` with 1..=4 rows and checks every result against the
/// reference.
fn check_kernels(isa: Isa, ty: GgmlType, w: &[u8], act: &[u8], k: usize, what: &str) {
    let kernels = rows_for(isa, ty).expect("kernels");
    let s = shape(ty, k);
    let n = act.len() / s.act_row;
    for rows in 1..=MAX_ROWS.min(n) {
        let mut out = vec![f32::NAN; rows];
        with_acts(s, act, rows, |acts| {
            run_rows(&kernels, s, w, acts, &mut out)
        });
        for (r, &got) in out.iter().enumerate() {
            let a = &act[r * s.act_row..(r + 1) * s.act_row];
            let reference = quant::dot_q8(ty, w, a).unwrap();
            assert_close(
                got,
                reference,
                magnitude(ty, w, a, k),
                &format!("{isa:?} {ty} {what} k={k} R={rows} r={r}"),
            );
        }
    }
}

#[test]
fn every_kernel_matches_the_reference() {
    let mut rng = Rng(3);
    for isa in available_isas() {
        for ty in TYPES {
            if rows_for(isa, ty).is_none() {
                continue;
            }
            for k in ks(ty) {
                for trial in 0..3 {
                    let w = if trial == 0 {
                        weights(&mut rng, ty, 1, k)
                    } else {
                        random_weights(&mut rng, ty, 1, k)
                    };
                    let x = rng.activations(MAX_ROWS * k);
                    let act = reference_quantize(ty, &x);
                    check_kernels(isa, ty, &w, &act, k, &format!("trial {trial}"));
                }
            }
        }
    }
}

#[test]
fn extreme_quants_do_not_saturate() {
    // Every quant and scale field at its extremes (0x00, 0xFF, 0x80 fill), activations at ±127:
    // the largest partial sums any kernel forms.
    for isa in available_isas() {
        for ty in TYPES {
            if rows_for(isa, ty).is_none() {
                continue;
            }
            let k = 512;
            for fill in [0x00u8, 0xFF, 0x80, 0x7F] {
                let mut w = vec![fill; k / ty.block_size() * ty.type_size()];
                for block in w.chunks_exact_mut(ty.type_size()) {
                    for &off in f16_fields(ty) {
                        block[off..off + 2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
                    }
                }
                for sign in [1.0f32, -1.0] {
                    let x: Vec<f32> = (0..MAX_ROWS * k)
                        .map(|i| if i % 3 == 0 { -sign } else { sign })
                        .collect();
                    let x_flat = vec![sign; MAX_ROWS * k];
                    for input in [&x, &x_flat] {
                        let act = reference_quantize(ty, input);
                        check_kernels(isa, ty, &w, &act, k, &format!("fill {fill:#x} sign {sign}"));
                    }
                }
            }
        }
    }
}

#[test]
fn vec_dot_fn_matches_the_reference() {
    let mut rng = Rng(4);
    for ty in TYPES {
        let f = vec_dot_fn(ty).expect("kernel");
        for k in ks(ty) {
            let w = random_weights(&mut rng, ty, 1, k);
            let mut act = Vec::new();
            quantize_activations(ty, &rng.activations(k), k, &mut act);
            let reference = quant::dot_q8(ty, &w, &act).unwrap();
            assert_close(
                f(k, &w, &act),
                reference,
                magnitude(ty, &w, &act, k),
                &format!("{ty} k={k}"),
            );
        }
        // Zero-length rows are an empty sum.
        assert_eq!(f(0, &[], &[]), 0.0);
    }
}

#[test]
fn matmul_rows_equals_vec_dot_per_row() {
    let mut rng = Rng(5);
    let (m, k) = (7, 512);
    for ty in TYPES {
        let w = random_weights(&mut rng, ty, m, k);
        let row_bytes = w.len() / m;
        let dot = vec_dot_fn(ty).unwrap();
        for n in [1, 2, 3, 5, 8] {
            let mut act = Vec::new();
            quantize_activations(ty, &rng.activations(n * k), k, &mut act);
            let act_row = act.len() / n;
            for rows in [0..m, 2..5, 6..7, 3..3] {
                let len = rows.len();
                let mut out = vec![f32::NAN; n * len];
                matmul_rows(ty, &w, m, k, &act, n, rows.clone(), &mut out);
                for r in 0..n {
                    for (jj, j) in rows.clone().enumerate() {
                        let expect = dot(
                            k,
                            &w[j * row_bytes..(j + 1) * row_bytes],
                            &act[r * act_row..(r + 1) * act_row],
                        );
                        let got = out[r * len + jj];
                        assert_eq!(
                            got.to_bits(),
                            expect.to_bits(),
                            "{ty} n={n} rows={rows:?} r={r} j={j}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "activations have")]
fn short_activations_panic_instead_of_reading_past_the_end() {
    let w = vec![0u8; 2 * GgmlType::Q4_0.type_size()];
    let act = vec![0u8; GgmlType::Q8_0.type_size()];
    vec_dot_fn(GgmlType::Q4_0).unwrap()(64, &w, &act);
}

#[test]
#[should_panic(expected = "not a multiple")]
fn partial_blocks_panic() {
    let mut out = Vec::new();
    quantize_activations(GgmlType::Q4K, &[0.0; 300], 300, &mut out);
}

#[test]
#[should_panic(expected = "no quantized-activation kernel")]
fn float_weights_are_not_routed_here() {
    let mut out = vec![0.0; 1];
    matmul_rows(GgmlType::F16, &[0; 64], 1, 32, &[], 0, 0..1, &mut out);
}

// The prefill GEMM (`gemm.rs`) against the row kernels.

#[test]
fn gemm_matches_the_row_kernels_for_every_type() {
    if !TYPES.iter().any(|&t| gemm::supported(t)) {
        eprintln!("skipped: this CPU has no AVX-512 VNNI (the GEMM is not used here)");
        return;
    }
    let mut rng = Rng(0x6e33);
    let (m, k, n) = (21, 512, gemm::MIN_ROWS + 3);
    let x: Vec<f32> = (0..n * k)
        .map(|i| (((i * 7919) % 211) as f32 - 105.0) * 0.013)
        .collect();
    for ty in TYPES {
        assert!(gemm::supported(ty), "{ty}");
        let w = random_weights(&mut rng, ty, m, k);
        let mut act = Vec::new();
        quantize_activations(ty, &x, k, &mut act);
        // Rows 3..20: a start inside the matrix and a partial last tile.
        let rows = 3..20;
        let len = rows.len();
        let mut gemm = vec![f32::NAN; n * len];
        let acts = gemm::GemmActs::new(ty, &act, n, k).unwrap();
        gemm::matmul_rows(&w, &acts, rows.clone(), &mut gemm);
        // Reference: the row kernels, one activation row at a time.
        let f = vec_dot_fn(ty).unwrap();
        let ar = act_type(ty).type_size() * k / act_type(ty).block_size();
        for r in 0..n {
            for (jj, j) in rows.clone().enumerate() {
                let wr = ty.type_size() * k / ty.block_size();
                let e = f(k, &w[j * wr..(j + 1) * wr], &act[r * ar..(r + 1) * ar]);
                let g = gemm[r * len + jj];
                assert!(
                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{ty} act row {r} weight row {j}: gemm {g} vs row kernel {e}"
                );
            }
        }
    }
}

#[test]
fn the_engine_takes_the_gemm_from_min_rows_and_the_row_kernels_below() {
    // Below MIN_ROWS the output must be bit-identical to the row kernels (speculative
    // verification relies on it); from MIN_ROWS up the GEMM is used where supported.
    let mut rng = Rng(0x6e34);
    let ty = GgmlType::Q4_0;
    let (m, k) = (16, 256);
    let w = random_weights(&mut rng, ty, m, k);
    for n in [gemm::MIN_ROWS - 1, gemm::MIN_ROWS] {
        let x: Vec<f32> = (0..n * k).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
        let mut act = Vec::new();
        quantize_activations(ty, &x, k, &mut act);
        let mut out = vec![0.0f32; n * m];
        matmul_rows(ty, &w, m, k, &act, n, 0..m, &mut out);
        let f = vec_dot_fn(ty).unwrap();
        let ar = act_type(ty).type_size() * k / act_type(ty).block_size();
        let wr = ty.type_size() * k / ty.block_size();
        let same = (0..n).all(|r| {
            (0..m).all(|j| {
                let e = f(k, &w[j * wr..(j + 1) * wr], &act[r * ar..(r + 1) * ar]);
                e.to_bits() == out[r * m + j].to_bits()
            })
        });
        if n < gemm::MIN_ROWS {
            assert!(same, "n = {n}: row kernels must give their own bits");
        }
    }
}
