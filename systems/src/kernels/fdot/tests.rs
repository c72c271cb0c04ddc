//! Every kernel of every ISA this CPU runs, against the scalar reference
//! `chord_resources::quant::dot_f32` (dequantize, then an f32 sum in index order).
//!
//! Tolerance: the kernels compute the same products, in a different order (and with
//! `q·d + m` fused), so a result must lie within `1e-5 · Σ|wᵢ·xᵢ|` of the reference, the sum
//! (from the dequantized row, in f64) being the scale of the terms whose rounding errors add
//! up.

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

/// Byte offsets of the scale fields of the formats `quant::quantize` cannot write, as
/// `(offset, is_f32)`.
fn scale_fields(ty: GgmlType) -> &'static [(usize, bool)] {
    match ty {
        GgmlType::Q4K | GgmlType::Q5K => &[(0, false), (2, false)],
        GgmlType::Q2K => &[(80, false), (82, false)],
        GgmlType::Q3K => &[(108, false)],
        GgmlType::Q6K => &[(208, false)],
        other => panic!("{other} has a quantizer"),
    }
}

/// `m` rows of `k` elements of `ty`: ggml's reference quantizer where there is one, else
/// random bytes (every bit pattern of quants and packed scales) with finite, sane f16 scales.
fn weights(rng: &mut Rng, ty: GgmlType, m: usize, k: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; m * ty.row_bytes(k as u64).unwrap() as usize];
    let src: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
    if quant::quantize(ty, &src, &mut bytes).is_ok() {
        return bytes;
    }
    bytes.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
    for block in bytes.chunks_exact_mut(ty.type_size()) {
        for &(off, is_f32) in scale_fields(ty) {
            let v = rng.unit() * 0.05;
            if is_f32 {
                block[off..off + 4].copy_from_slice(&v.to_le_bytes());
            } else {
                block[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
    }
    bytes
}

/// `Σ|wᵢ·xᵢ|` of one weight row (dequantized) and one activation row.
fn magnitude(ty: GgmlType, w: &[u8], x: &[f32]) -> f64 {
    let mut wf = vec![0.0f32; x.len()];
    quant::dequantize(ty, w, &mut wf).unwrap();
    wf.iter()
        .zip(x)
        .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
        .sum()
}

/// Runs `isa`'s kernels on `rows` of an `m × k` matrix and `n` activation rows and checks
/// every output against the reference.
#[allow(clippy::too_many_arguments)]
fn check_case(
    rng: &mut Rng,
    isa: Isa,
    ty: GgmlType,
    m: usize,
    k: usize,
    n: usize,
    rows: Range<usize>,
) {
    let w = weights(rng, ty, m, k);
    let x = rng.activations(n * k);
    let rb = w.len() / m;
    let len = rows.len();
    let mut out = vec![f32::NAN; n * len + 3];
    matmul_rows_with(isa, ty, &w, k, &x, n, rows.clone(), &mut out);
    for r in 0..n {
        let xr = &x[r * k..(r + 1) * k];
        for (jj, j) in rows.clone().enumerate() {
            let row = &w[j * rb..(j + 1) * rb];
            let reference = quant::dot_f32(ty, row, xr).unwrap();
            let got = out[r * len + jj];
            let tol = 1e-5 * magnitude(ty, row, xr);
            let err = (f64::from(got) - f64::from(reference)).abs();
            assert!(
                got.is_finite() && err <= tol,
                "{isa:?} {ty} k={k} n={n} rows={rows:?}: out[{r}][{j}] = {got}, reference \
                 {reference}, |err| {err:e} > {tol:e}"
            );
        }
    }
    // Past `n × rows.len()` nothing is written.
    assert!(
        out[n * len..].iter().all(|v| v.is_nan()),
        "{isa:?} {ty}: wrote past the block"
    );
}

#[test]
fn every_type_every_isa_matches_dequantize_then_dot() {
    let mut rng = Rng(0x5eed_fd07);
    for isa in available_isas() {
        for ty in GgmlType::ALL {
            let bs = ty.block_size();
            // One block, a few (odd count too), a model-sized row; for the float types also a
            // length that is not whole 32-element runs (the portable path).
            let mut ks = vec![bs.max(32), 2 * bs.max(32), 3 * bs.max(32), 1536];
            if bs == 1 {
                ks.extend([8, 40]);
            }
            for k in ks {
                for n in [1, 2, 3, 5] {
                    check_case(&mut rng, isa, ty, 7, k, n, 0..7);
                    check_case(&mut rng, isa, ty, 7, k, n, 2..5);
                }
            }
        }
    }
}

#[test]
fn row_tiles_and_row_groups_cover_everything() {
    // Rows long enough that a tile holds few of them, and more activation rows than one
    // group of four, with a range that starts inside a tile.
    let mut rng = Rng(7);
    for isa in available_isas() {
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q6K, GgmlType::F16] {
            check_case(&mut rng, isa, ty, 41, 4096, 9, 3..38);
            check_case(&mut rng, isa, ty, 41, 256, 6, 0..41);
        }
    }
}

#[test]
fn prefill_gemm_matches_dequantize_then_dot() {
    // From GEMM_MIN_ROWS activation rows the x86 kernels take the tiled GEMM: every type, a
    // partial last pass and tile, a range starting inside the matrix.
    let mut rng = Rng(0x9e33);
    for isa in available_isas() {
        for ty in GgmlType::ALL {
            let k = 2 * ty.block_size().max(32);
            check_case(&mut rng, isa, ty, 15, k, GEMM_MIN_ROWS + 3, 1..14);
        }
        check_case(&mut rng, isa, GgmlType::Q4K, 9, 2048, GEMM_MIN_ROWS, 0..9);
    }
}

#[test]
fn prefill_gemm_rows_do_not_depend_on_their_batch() {
    // Within the GEMM a row's outputs are one FMA chain each: the same bits whichever pass or
    // batch the row lands in (a long prompt split into steps of different sizes).
    let mut rng = Rng(0x51de);
    let (ty, m, k) = (GgmlType::Q4_1, 13, 256);
    let w = weights(&mut rng, ty, m, k);
    let n = GEMM_MIN_ROWS + 20;
    let x = rng.activations(n * k);
    for isa in available_isas() {
        let mut all = vec![0.0f32; n * m];
        matmul_rows_with(isa, ty, &w, k, &x, n, 0..m, &mut all);
        // The last GEMM_MIN_ROWS rows on their own: other passes, other positions in a pass.
        let skip = n - GEMM_MIN_ROWS;
        let mut tail = vec![0.0f32; GEMM_MIN_ROWS * m];
        matmul_rows_with(
            isa,
            ty,
            &w,
            k,
            &x[skip * k..],
            GEMM_MIN_ROWS,
            0..m,
            &mut tail,
        );
        let a: Vec<u32> = all[skip * m..].iter().map(|v| v.to_bits()).collect();
        let b: Vec<u32> = tail.iter().map(|v| v.to_bits()).collect();
        assert_eq!(a, b, "{isa:?}");
    }
}

#[test]
fn a_row_gives_the_same_bits_alone_or_tiled_with_others() {
    // Batch invariance: decode (one row), prefill (tiles of up to four rows) and speculative
    // verification must agree bit for bit, or batching could flip a greedy token.
    let mut rng = Rng(0xba7c);
    for isa in available_isas() {
        for ty in GgmlType::ALL {
            let k = 2 * ty.block_size().max(32);
            let m = 5;
            let w = weights(&mut rng, ty, m, k);
            for n in [2, 3, 4, 7] {
                let x = rng.activations(n * k);
                let mut together = vec![0.0f32; n * m];
                matmul_rows_with(isa, ty, &w, k, &x, n, 0..m, &mut together);
                for r in 0..n {
                    let mut alone = vec![0.0f32; m];
                    matmul_rows_with(isa, ty, &w, k, &x[r * k..(r + 1) * k], 1, 0..m, &mut alone);
                    let got: Vec<u32> = together[r * m..(r + 1) * m]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect();
                    let want: Vec<u32> = alone.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(
                        got, want,
                        "{isa:?} {ty}: row {r} of {n} differs from the row alone"
                    );
                }
            }
        }
    }
}

#[test]
fn empty_ranges_and_zero_rows_write_nothing() {
    let mut rng = Rng(9);
    for isa in available_isas() {
        check_case(&mut rng, isa, GgmlType::Q4_1, 4, 64, 0, 0..4);
        check_case(&mut rng, isa, GgmlType::Q4_1, 4, 64, 3, 2..2);
    }
}

#[test]
fn special_weight_values_follow_the_reference() {
    // Zero, negative zero, subnormal and extreme f16 / bf16 weights convert exactly.
    let vals: Vec<f32> = [0.0f32, -0.0, 6.0e-8, -6.1e-5, 65504.0, -2.5, 1.0e-3, 3.0e38]
        .iter()
        .cycle()
        .take(64)
        .copied()
        .collect();
    let x: Vec<f32> = (0..64)
        .map(|i| {
            if i % 8 == 7 {
                0.0
            } else {
                1.0 - i as f32 / 64.0
            }
        })
        .collect();
    for isa in available_isas() {
        for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
            let vals: Vec<f32> = if ty == GgmlType::F16 {
                vals.iter().map(|v| v.min(65504.0)).collect()
            } else {
                vals.clone()
            };
            let mut w = vec![0u8; ty.row_bytes(64).unwrap() as usize];
            quant::quantize(ty, &vals, &mut w).unwrap();
            let mut out = [0.0f32; 1];
            matmul_rows_with(isa, ty, &w, 64, &x, 1, 0..1, &mut out);
            let reference = quant::dot_f32(ty, &w, &x).unwrap();
            let tol = 1e-5 * magnitude(ty, &w, &x);
            assert!(
                (f64::from(out[0]) - f64::from(reference)).abs() <= tol,
                "{isa:?} {ty}: {} vs {reference}",
                out[0]
            );
        }
    }
}

#[test]
fn public_entry_uses_the_detected_isa() {
    assert_eq!(isa(), available_isas()[0]);
    let mut rng = Rng(11);
    let (m, k, n) = (5, 64, 2);
    let w = weights(&mut rng, GgmlType::Q4_1, m, k);
    let x = rng.activations(n * k);
    let mut a = vec![0.0f32; n * m];
    let mut b = vec![0.0f32; n * m];
    matmul_rows_f32(GgmlType::Q4_1, &w, k, &x, n, 0..m, &mut a);
    matmul_rows_with(isa(), GgmlType::Q4_1, &w, k, &x, n, 0..m, &mut b);
    assert_eq!(a, b);
}

#[test]
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn simd128_kernels_are_available() {
    use GgmlType::*;
    assert_eq!(available_isas(), [Isa::Simd128, Isa::Scalar]);
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
        assert!(wasm::supports(ty), "{ty}");
    }
    assert!(!wasm::supports(Q4K) && !wasm::supports(F16));
}

#[test]
#[cfg(target_arch = "x86_64")]
fn x86_kernels_cover_the_weight_types() {
    use GgmlType::*;
    for ty in [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K,
    ] {
        assert!(x86::supports(ty), "{ty}");
    }
    assert!(!x86::supports(Q8_1) && !x86::supports(Q8K));
}

#[test]
#[should_panic(expected = "not a whole number")]
fn rejects_partial_blocks() {
    let w = vec![0u8; 18];
    let mut out = [0.0f32; 1];
    matmul_rows_f32(GgmlType::Q4_0, &w, 31, &[0.0; 31], 1, 0..1, &mut out);
}

#[test]
#[should_panic(expected = "weights have")]
fn rejects_short_weights() {
    let w = vec![0u8; 18];
    let mut out = [0.0f32; 2];
    matmul_rows_f32(GgmlType::Q4_0, &w, 32, &[0.0; 32], 1, 0..2, &mut out);
}

#[test]
#[should_panic(expected = "activations have")]
fn rejects_short_activations() {
    let w = vec![0u8; 18];
    let mut out = [0.0f32; 2];
    matmul_rows_f32(GgmlType::Q4_0, &w, 32, &[0.0; 32], 2, 0..1, &mut out);
}

#[test]
#[should_panic(expected = "out_block has")]
fn rejects_short_output() {
    let w = vec![0u8; 36];
    let mut out = [0.0f32; 1];
    matmul_rows_f32(GgmlType::Q4_0, &w, 32, &[0.0; 32], 1, 0..2, &mut out);
}

/// Single-thread throughput per type and ISA, against the old path (scalar dequantize of each
/// row, then [`super::super::dot`]). Run with
/// `cargo test --release -p chord-systems --lib fdot::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn throughput() {
    use std::time::Instant;
    // FDOT_BENCH_MK=1536x576 sets the matrix (rows × columns); 2048 × 2048 by default.
    let (m, k) = std::env::var("FDOT_BENCH_MK")
        .ok()
        .and_then(|v| {
            let (m, k) = v.split_once('x')?;
            Some((m.parse().ok()?, k.parse().ok()?))
        })
        .unwrap_or((2048, 2048));
    let mut rng = Rng(3);
    // FDOT_BENCH_TYPES=q4_1,q8_0 limits the run to those types; FDOT_BENCH_FAST=1 to the
    // detected ISA (for profiling).
    let only = std::env::var("FDOT_BENCH_TYPES").unwrap_or_default();
    let fast = std::env::var_os("FDOT_BENCH_FAST").is_some();
    let isas = if fast { vec![isa()] } else { available_isas() };
    for ty in GgmlType::ALL {
        if !only.is_empty() && !only.split(',').any(|t| t == ty.name()) {
            continue;
        }
        let w = weights(&mut rng, ty, m, k);
        for n in [1, 4] {
            let x = rng.activations(n * k);
            let mut out = vec![0.0f32; n * m];
            let time = |f: &mut dyn FnMut()| {
                let mut best = f64::INFINITY;
                for _ in 0..if fast { 40 } else { 5 } {
                    let t = Instant::now();
                    f();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                w.len() as f64 / best / 1e9
            };
            let mut line = format!("{:5} n={n}", ty.name());
            for &isa in &isas {
                let gbs = time(&mut || matmul_rows_with(isa, ty, &w, k, &x, n, 0..m, &mut out));
                line += &format!("  {isa:?} {gbs:6.2} GB/s");
            }
            if fast {
                println!("{line}");
                continue;
            }
            let rb = w.len() / m;
            let mut buf = vec![0.0f32; k];
            let old = time(&mut || {
                for j in 0..m {
                    quant::dequantize(ty, &w[j * rb..(j + 1) * rb], &mut buf).unwrap();
                    for r in 0..n {
                        out[r * m + j] = crate::kernels::dot(&buf, &x[r * k..(r + 1) * k]);
                    }
                }
            });
            line += &format!("  old {old:6.2} GB/s");
            println!("{line}");
        }
    }
}
