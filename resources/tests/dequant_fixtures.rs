//! The quantized block formats against llama.cpp: bit-exact dequantization of the reference
//! kit's fixtures (`fixtures/dequant/*.json`, made with ggml's `to_float`), and the quantizers
//! and dot products against their definitions.

use std::path::PathBuf;

use base64::Engine;
use chord_resources::quant::{self, QuantError};
use chord_resources::{GgmlType, QK_K, paths};

// ---------------------------------------------------------------------------------------------
// Helpers

/// splitmix64: a tiny seeded generator, so every run tests the same data.
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

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Test data with the shapes that matter to a block quantizer: a different scale per block,
/// outliers of either sign, constant blocks, blocks of zeros, exact zeros and exact ties.
fn activations(rng: &mut Rng, n: usize, block: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    for b in 0..n / block {
        let scale = 10f32.powf(rng.unit() * 3.0 - 1.0);
        let kind = if b < 4 { b as u64 } else { rng.below(8) };
        for i in 0..block {
            let v = match kind {
                0 => 0.0,
                1 => scale,
                2 => {
                    if i % 2 == 0 {
                        0.0
                    } else {
                        -scale
                    }
                }
                3 => (i as f32 - 7.5) * scale, // many exact .5 steps
                4 if i == 3 => 20.0 * scale,
                5 if i == 7 => -20.0 * scale,
                _ => rng.unit() * scale,
            };
            x.push(v);
        }
    }
    x
}

/// Byte offsets of the f16 scale fields inside one block.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::F16 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        GgmlType::F32 | GgmlType::BF16 | GgmlType::Q8K => &[],
    }
}

/// A row of `nblocks` random blocks of `ty`: random quant bits with finite, varied scales.
fn random_row(ty: GgmlType, nblocks: usize, rng: &mut Rng) -> Vec<u8> {
    let mut row = Vec::with_capacity(nblocks * ty.type_size());
    for _ in 0..nblocks {
        let mut block: Vec<u8> = (0..ty.type_size()).map(|_| rng.next_u64() as u8).collect();
        for &at in f16_fields(ty) {
            let v = rng.unit() * 10f32.powf(rng.unit() * 2.0 - 2.0);
            block[at..at + 2].copy_from_slice(&quant::fp32_to_fp16(v).to_le_bytes());
        }
        match ty {
            GgmlType::F32 => block.copy_from_slice(&(rng.unit() * 4.0).to_le_bytes()),
            GgmlType::BF16 => {
                block.copy_from_slice(&quant::fp32_to_bf16(rng.unit() * 4.0).to_le_bytes())
            }
            GgmlType::Q8K => block[..4].copy_from_slice(&(rng.unit() * 0.01).to_le_bytes()),
            _ => {}
        }
        row.extend_from_slice(&block);
    }
    row
}

fn dequantized(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0.0; n];
    quant::dequantize(ty, bytes, &mut out).unwrap();
    out
}

fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
    quant::quantize(ty, x, &mut out).unwrap();
    out
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    quant::fp16_to_fp32(half::f16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

fn sequential_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |s, (x, y)| s + x * y)
}

// ---------------------------------------------------------------------------------------------
// Fixtures

struct Fixture {
    file: PathBuf,
    ty: GgmlType,
    /// Elements per row.
    n: usize,
    nrows: usize,
    raw: Vec<u8>,
    /// ggml's f32 values, all rows.
    values: Vec<f32>,
    /// The same values as shortest decimals.
    decimals: Vec<f32>,
}

impl Fixture {
    fn row_bytes(&self) -> usize {
        self.raw.len() / self.nrows
    }

    fn rows(&self) -> impl Iterator<Item = &[u8]> {
        self.raw.chunks_exact(self.row_bytes())
    }
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn fixtures() -> Vec<Fixture> {
    let dir = paths::fixtures_dir().join("dequant");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "dequant fixtures missing at {} ({e}); see the reference kit README",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            let j: serde_json::Value = serde_json::from_str(&text).unwrap();
            let name = j["type"].as_str().unwrap();
            let ty = GgmlType::from_name(name)
                .unwrap_or_else(|| panic!("{}: unknown type {name}", file.display()));
            let int = |k: &str| {
                j[k].as_u64()
                    .unwrap_or_else(|| panic!("{}: {k}", file.display())) as usize
            };
            assert_eq!(int("ggml_type"), ty.id() as usize, "{}", file.display());
            assert_eq!(int("block_size"), ty.block_size(), "{}", file.display());
            assert_eq!(int("type_size"), ty.type_size(), "{}", file.display());
            let n = j["ne"][0].as_u64().unwrap() as usize;
            assert_eq!(
                ty.row_bytes(n as u64),
                Some(int("row_bytes") as u64),
                "{}",
                file.display()
            );
            let nrows = int("nrows");
            let raw = hex(j["raw_hex"].as_str().unwrap());
            assert_eq!(raw.len(), nrows * int("row_bytes"), "{}", file.display());
            let packed = base64::engine::general_purpose::STANDARD
                .decode(j["values_f32_le_base64"].as_str().unwrap())
                .unwrap();
            let values: Vec<f32> = packed
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(values.len(), nrows * n, "{}", file.display());
            let rows = j["values"].as_array().unwrap();
            assert_eq!(rows.len(), nrows);
            let decimals: Vec<f32> = rows
                .iter()
                .flat_map(|r| r.as_array().unwrap())
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            Fixture {
                file,
                ty,
                n,
                nrows,
                raw,
                values,
                decimals,
            }
        })
        .collect()
}

#[test]
fn fixtures_cover_every_type_llama_cpp_exported() {
    let types: Vec<GgmlType> = fixtures().iter().map(|f| f.ty).collect();
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ] {
        assert!(types.contains(&ty), "no fixture for {ty}");
    }
}

#[test]
fn fixtures_dequantize_bit_for_bit() {
    for fx in fixtures() {
        assert_eq!(fx.values.len(), fx.decimals.len());
        for (i, (a, b)) in fx.values.iter().zip(&fx.decimals).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{}: decimal {i} disagrees with base64",
                fx.file.display()
            );
        }
        let mut got = vec![f32::NAN; fx.n];
        for (r, row) in fx.rows().enumerate() {
            quant::dequantize(fx.ty, row, &mut got).unwrap();
            let want = &fx.values[r * fx.n..(r + 1) * fx.n];
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{} row {r} element {i}: {g} vs ggml {w}",
                    fx.file.display()
                );
            }
        }
    }
}

#[test]
fn fixtures_dot_f32_is_dequantize_then_sum() {
    let mut rng = Rng(7);
    for fx in fixtures() {
        let x: Vec<f32> = (0..fx.n).map(|_| rng.unit()).collect();
        for (r, row) in fx.rows().enumerate() {
            let want = sequential_dot(&fx.values[r * fx.n..(r + 1) * fx.n], &x);
            let got = quant::dot_f32(fx.ty, row, &x).unwrap();
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{} row {r}",
                fx.file.display()
            );
        }
    }
}

/// ggml's reference quantizers are idempotent on their own output: quantizing the dequantized
/// blocks gives back the same bytes (the absmax element comes back as exactly −8·d or ±127·d,
/// so `d` is recomputed exactly). A strong end-to-end check of layout, rounding and fp16.
#[test]
fn requantizing_fixture_blocks_reproduces_the_bytes() {
    let fxs = fixtures();
    let mut checked = Vec::new();
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_1] {
        let fx = fxs.iter().find(|f| f.ty == ty).unwrap();
        for (r, row) in fx.rows().enumerate() {
            let back = quantized(ty, &fx.values[r * fx.n..(r + 1) * fx.n]);
            for (b, (got, want)) in back
                .chunks(ty.type_size())
                .zip(row.chunks(ty.type_size()))
                .enumerate()
            {
                assert_eq!(got, want, "{ty} row {r} block {b}");
            }
        }
        checked.push(ty);
    }
    assert_eq!(checked.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Quantizers

/// Per-element error bound of each quantizer, in terms of the block's own (unrounded) scale as
/// ggml computes it and the stored f16 fields: half a step for the rounding, plus what rounding
/// `d` (and `m`) to f16 moves the largest quant.
#[test]
fn quantize_dequantize_error_is_within_half_a_step() {
    let mut rng = Rng(42);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8K,
    ] {
        let bs = ty.block_size();
        let x = activations(&mut rng, 64 * QK_K, bs);
        let q = quantized(ty, &x);
        let y = dequantized(ty, &q);
        for (b, ((xb, yb), blk)) in x
            .chunks(bs)
            .zip(y.chunks(bs))
            .zip(q.chunks(ty.type_size()))
            .enumerate()
        {
            let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let (min, max) = xb
                .iter()
                .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            // (step, largest |quant|, extra from the stored min, clamped top step?)
            let (step, qmax, m_err) = match ty {
                GgmlType::Q4_0 => (amax / 8.0, 8.0, 0.0),
                GgmlType::Q5_0 => (amax / 16.0, 16.0, 0.0),
                GgmlType::Q4_1 => ((max - min) / 15.0, 15.0, (f16_at(blk, 2) - min).abs()),
                GgmlType::Q5_1 => ((max - min) / 31.0, 31.0, (f16_at(blk, 2) - min).abs()),
                GgmlType::Q8_0 | GgmlType::Q8_1 => (amax / 127.0, 127.0, 0.0),
                _ => (amax / 127.0, 127.0, 0.0), // Q8_K: d stored as f32
            };
            let d_stored = if ty == GgmlType::Q8K {
                step
            } else {
                f16_at(blk, 0).abs()
            };
            let d_err = qmax * (d_stored - step).abs();
            // Q4_0/Q5_0 have levels -qmax..qmax-1 in units of the signed d = max/-qmax: values
            // past qmax - 1/2 on the side opposite the absmax are clamped, up to a full step off.
            let signed_max = xb
                .iter()
                .fold(0.0f32, |m, &v| if m.abs() < v.abs() { v } else { m });
            let signed_d = signed_max / -qmax;
            for (i, (xv, yv)) in xb.iter().zip(yb).enumerate() {
                let err = (xv - yv).abs();
                let clamped =
                    matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0) && xv / signed_d > qmax - 0.51;
                let half = if clamped { 1.0 } else { 0.5 };
                let bound = step * (half + 1e-4) + d_err + m_err + 1e-30;
                assert!(
                    err <= bound,
                    "{ty} block {b} element {i}: x={xv} got {yv} err {err} > {bound}"
                );
            }
            if amax == 0.0 {
                assert!(
                    yb.iter().all(|&v| v == 0.0),
                    "{ty} block {b}: zeros must stay zero"
                );
            }
        }
    }
}

#[test]
fn zero_blocks_quantize_to_zero_scale() {
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8K,
    ] {
        let q = quantized(ty, &vec![0.0; ty.block_size()]);
        let d = if ty == GgmlType::Q8K {
            f32::from_le_bytes([q[0], q[1], q[2], q[3]])
        } else {
            f16_at(&q, 0)
        };
        // Q4_0/Q5_0 compute d = max / -8 (-16) with max = 0: ggml stores -0.0 and its zeros
        // dequantize to (8 - 8)·-0.0 = -0.0.
        let negative = matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0);
        assert_eq!(
            d.to_bits(),
            if negative { 0x8000_0000 } else { 0 },
            "{ty}: d"
        );
        let zero = if negative { -0.0f32 } else { 0.0 };
        assert!(
            dequantized(ty, &q)
                .iter()
                .all(|v| v.to_bits() == zero.to_bits()),
            "{ty}"
        );
    }
    // Q4_0 encodes 0 as nibble 8, Q5_0 as 16 (low nibble 0, fifth bit set), Q8_0 as 0.
    assert!(
        quantized(GgmlType::Q4_0, &[0.0; 32])[2..]
            .iter()
            .all(|&b| b == 0x88)
    );
    let q5 = quantized(GgmlType::Q5_0, &[0.0; 32]);
    assert_eq!(&q5[2..6], &[0xFF; 4]);
    assert!(q5[6..].iter().all(|&b| b == 0));
    assert_eq!(quantized(GgmlType::Q8K, &[0.0; 256]), vec![0u8; 292]);
}

#[test]
fn absmax_element_lands_on_the_extreme_level() {
    // A positive absmax: Q4_0 uses d = max/-8, so it is nibble 0 (−8) and d is negative.
    let mut x = [0.25f32; 32];
    x[5] = 2.0;
    x[20] = -1.0;
    let q = quantized(GgmlType::Q4_0, &x);
    assert_eq!(f16_at(&q, 0), -0.25);
    assert_eq!(q[2 + 5] & 0x0F, 0);
    let y = dequantized(GgmlType::Q4_0, &q);
    assert_eq!(y[5], 2.0);
    assert_eq!(y[20], -1.0); // (12 - 8)·-0.25
    assert_eq!(y[0], 0.25); // 0.25/-0.25 = -1 → nibble 7 → -1·-0.25
    // The opposite extreme is clamped to nibble 15: -2.0 → 7·-0.25.
    x[20] = -2.0;
    let y = dequantized(GgmlType::Q4_0, &quantized(GgmlType::Q4_0, &x));
    assert_eq!(y[20], -1.75);

    // Q5_0: the same with -16.
    let mut x = [0.0f32; 32];
    x[31] = -3.2;
    let q = quantized(GgmlType::Q5_0, &x);
    assert_eq!(f16_at(&q, 0), quant::fp16_to_fp32(quant::fp32_to_fp16(0.2)));
    assert_eq!(q[6 + 15] >> 4, 0); // element 31: low nibble in the high half of qs[15]
    assert_eq!(q[5] >> 7, 0); // and its fifth bit (bit 31 of qh) clear

    // Q8_0: ±127 at the absmax, with d = amax/127 rounded to f16.
    let mut x = [0.0f32; 32];
    x[9] = -127.0 / 64.0;
    x[10] = 63.5 / 64.0;
    x[11] = -0.5 / 64.0;
    let q = quantized(GgmlType::Q8_0, &x);
    assert_eq!(f16_at(&q, 0), 1.0 / 64.0);
    assert_eq!(q[2 + 9] as i8, -127);
    assert_eq!(q[2 + 10] as i8, 64); // roundf: 63.5 rounds away from zero
    assert_eq!(q[2 + 11] as i8, -1); // and -0.5 too

    // Q8_1: s = (Σq)·d.
    let q1 = quantized(GgmlType::Q8_1, &x);
    assert_eq!(f16_at(&q1, 2), (-127 + 64 - 1) as f32 / 64.0);
    assert_eq!(&q1[4..], &q[2..]);

    // Q8_K: iscale = -127/max, so a positive absmax is -127 and d is negative.
    let mut x = [0.5f32; 256];
    x[100] = 4.0;
    let q = quantized(GgmlType::Q8K, &x);
    let d = f32::from_le_bytes([q[0], q[1], q[2], q[3]]);
    assert_eq!(d, 1.0 / (-127.0f32 / 4.0));
    assert_eq!(q[4 + 100] as i8, -127);
    assert_eq!(q[4] as i8, -16); // 0.5·-31.75 = -15.875
    let bsums: Vec<i16> = q[260..]
        .chunks(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(bsums[0], -16 * 16);
    assert_eq!(bsums[6], -16 * 15 - 127);

    // Q4_1 / Q5_1: the minimum is level 0 and the maximum the top level.
    let x: [f32; 32] = std::array::from_fn(|i| i as f32 * 0.5 - 3.0);
    for (ty, top) in [(GgmlType::Q4_1, 15.0), (GgmlType::Q5_1, 31.0)] {
        let q = quantized(ty, &x);
        let y = dequantized(ty, &q);
        assert_eq!(f16_at(&q, 2), -3.0, "{ty}");
        assert_eq!(y[0], -3.0, "{ty}");
        let d = f16_at(&q, 0);
        assert_eq!(y[31], top * d - 3.0, "{ty}");
    }
}

#[test]
fn float_types_round_trip() {
    let x = [
        1.0f32,
        -2.5,
        65504.0,
        1e-8,
        std::f32::consts::PI,
        -0.0,
        70000.0,
    ];
    let mut y = [0.0f32; 7];
    quant::dequantize(GgmlType::F32, &quantized(GgmlType::F32, &x), &mut y).unwrap();
    assert_eq!(x.map(f32::to_bits), y.map(f32::to_bits));
    quant::dequantize(GgmlType::F16, &quantized(GgmlType::F16, &x), &mut y).unwrap();
    assert_eq!(y, [1.0, -2.5, 65504.0, 0.0, 3.140625, -0.0, f32::INFINITY]);
    quant::dequantize(GgmlType::BF16, &quantized(GgmlType::BF16, &x), &mut y).unwrap();
    assert_eq!(y[..3], [1.0, -2.5, 65536.0]);
    assert_eq!(y[4], 3.140625);
}

// ---------------------------------------------------------------------------------------------
// Dot products

#[test]
fn dot_f32_is_dequantize_then_sum_for_every_type() {
    let mut rng = Rng(99);
    for ty in GgmlType::ALL {
        let nblocks = 2048 / ty.block_size().min(256) + 1;
        let row = random_row(ty, nblocks, &mut rng);
        let n = nblocks * ty.block_size();
        let x: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        let want = sequential_dot(&dequantized(ty, &row), &x);
        assert!(want.is_finite(), "{ty}");
        assert_eq!(
            quant::dot_f32(ty, &row, &x).unwrap().to_bits(),
            want.to_bits(),
            "{ty}"
        );
    }
    assert_eq!(quant::dot_f32(GgmlType::Q4K, &[], &[]), Ok(0.0));
}

fn dot_q8_types() -> [GgmlType; 10] {
    [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ]
}

/// The integer dot products agree with f64 math on the dequantized operands up to f32
/// rounding, and with f64 math on the unquantized activations up to the activation
/// quantization error `Σ|w|·|x − x̂|`.
#[test]
fn dot_q8_matches_f64_within_activation_error() {
    let mut rng = Rng(2024);
    for ty in dot_q8_types() {
        let act_ty = quant::activation_type(ty);
        for trial in 0..20 {
            let nblocks = 1 + rng.below(8) as usize;
            let n = nblocks * ty.block_size();
            let row = random_row(ty, nblocks, &mut rng);
            let x = activations(&mut rng, n, 32);
            let act = quantized(act_ty, &x);
            let w = dequantized(ty, &row);
            let a = dequantized(act_ty, &act);
            let got = f64::from(quant::dot_q8(ty, &row, &act).unwrap());

            let exact_qa: f64 = w
                .iter()
                .zip(&a)
                .map(|(&w, &a)| f64::from(w) * f64::from(a))
                .sum();
            let magnitude: f64 = w
                .iter()
                .zip(&a)
                .map(|(&w, &a)| (f64::from(w) * f64::from(a)).abs())
                .sum();
            // Scale-and-min formats add two block terms that can cancel; bound their size too.
            let block_max: f64 = w
                .chunks(ty.block_size())
                .zip(a.chunks(ty.block_size()))
                .map(|(wb, ab)| {
                    let wmax = wb.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
                    2.0 * wmax * ab.iter().map(|&v| f64::from(v).abs()).sum::<f64>()
                })
                .sum();
            // Q4_1/Q5_1 use the activation's stored s = f16(d·Σq) for the min term, not Σ of
            // the dequantized activations: that difference is ggml's, not rounding.
            let s_err: f64 = if act_ty == GgmlType::Q8_1 {
                row.chunks(ty.type_size())
                    .zip(act.chunks(act_ty.type_size()))
                    .map(|(wb, ab)| {
                        let sum_q: i32 = ab[4..].iter().map(|&b| i32::from(b as i8)).sum();
                        let exact_s = f64::from(f16_at(ab, 0)) * f64::from(sum_q);
                        f64::from(f16_at(wb, 2)).abs() * (f64::from(f16_at(ab, 2)) - exact_s).abs()
                    })
                    .sum()
            } else {
                0.0
            };
            let rounding = 1e-5 * (magnitude + block_max) + s_err + 1e-30;
            assert!(
                (got - exact_qa).abs() <= rounding,
                "{ty} trial {trial}: {got} vs f64 on dequantized operands {exact_qa} (tol {rounding})"
            );

            let exact: f64 = w
                .iter()
                .zip(&x)
                .map(|(&w, &x)| f64::from(w) * f64::from(x))
                .sum();
            let act_err: f64 = w
                .iter()
                .zip(x.iter().zip(&a))
                .map(|(&w, (&x, &a))| f64::from(w).abs() * f64::from(x - a).abs())
                .sum();
            assert!(
                (got - exact).abs() <= act_err + rounding,
                "{ty} trial {trial}: {got} vs exact {exact} (activation error {act_err})"
            );
        }
    }
}

/// Worked example: the integer kernel of Q8_0 against Q8_0 is `Σ qw·qa` scaled once.
#[test]
fn dot_q8_of_q8_0_is_one_integer_sum_per_block() {
    let w: Vec<f32> = (0..64).map(|i| (i as f32 - 31.0) / 16.0).collect();
    let x: Vec<f32> = (0..64).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    let row = quantized(GgmlType::Q8_0, &w);
    let act = quantized(GgmlType::Q8_0, &x);
    let mut want = 0.0f32;
    for (wb, ab) in row.chunks(34).zip(act.chunks(34)) {
        let sumi: i32 = wb[2..]
            .iter()
            .zip(&ab[2..])
            .map(|(&p, &q)| i32::from(p as i8) * i32::from(q as i8))
            .sum();
        want += sumi as f32 * (f16_at(wb, 0) * f16_at(ab, 0));
    }
    assert_eq!(
        quant::dot_q8(GgmlType::Q8_0, &row, &act).unwrap().to_bits(),
        want.to_bits()
    );
}

#[test]
fn activation_types_follow_ggml() {
    use GgmlType::*;
    let want = [
        (F32, F32),
        (F16, F16),
        (BF16, BF16),
        (Q4_0, Q8_0),
        (Q4_1, Q8_1),
        (Q5_0, Q8_0),
        (Q5_1, Q8_1),
        (Q8_0, Q8_0),
        (Q8_1, Q8_1),
        (Q2K, Q8K),
        (Q3K, Q8K),
        (Q4K, Q8K),
        (Q5K, Q8K),
        (Q6K, Q8K),
        (Q8K, F32),
    ];
    for (ty, act) in want {
        assert_eq!(quant::activation_type(ty), act, "{ty}");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn bad_lengths_are_typed_errors() {
    use GgmlType::*;
    let mut dst = vec![0.0f32; 64];
    // Source one byte short / long.
    assert_eq!(
        quant::dequantize(Q4_0, &[0; 35], &mut dst),
        Err(QuantError::LengthMismatch {
            ty: Q4_0,
            what: "source bytes",
            expected: 36,
            actual: 35
        })
    );
    assert!(matches!(
        quant::dequantize(Q4_0, &[0; 37], &mut dst),
        Err(QuantError::LengthMismatch { .. })
    ));
    // Element count not a whole number of blocks.
    assert_eq!(
        quant::dequantize(Q4K, &[0; 144], &mut dst),
        Err(QuantError::NotBlockMultiple {
            ty: Q4K,
            what: "element count",
            len: 64,
            multiple: 256
        })
    );
    assert!(matches!(
        quant::dequantize(F16, &[0; 3], &mut dst[..1]),
        Err(QuantError::LengthMismatch { .. })
    ));
    // dot_f32.
    assert!(matches!(
        quant::dot_f32(Q8_0, &[0; 34], &[0.0; 31]),
        Err(QuantError::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        quant::dot_f32(Q8_0, &[0; 33], &[0.0; 32]),
        Err(QuantError::LengthMismatch { .. })
    ));
    // quantize.
    assert_eq!(
        quant::quantize(Q4K, &[0.0; 256], &mut [0; 144]),
        Err(QuantError::UnsupportedType(Q4K))
    );
    assert!(matches!(
        quant::quantize(Q8_0, &[0.0; 33], &mut [0; 34]),
        Err(QuantError::NotBlockMultiple { .. })
    ));
    assert_eq!(
        quant::quantize(Q8K, &[0.0; 256], &mut [0; 291]),
        Err(QuantError::LengthMismatch {
            ty: Q8K,
            what: "destination bytes",
            expected: 292,
            actual: 291
        })
    );
    // dot_q8.
    assert_eq!(
        quant::dot_q8(F32, &[0; 4], &[0; 4]),
        Err(QuantError::UnsupportedType(F32))
    );
    assert_eq!(
        quant::dot_q8(Q8K, &[0; 292], &[0; 292]),
        Err(QuantError::UnsupportedType(Q8K))
    );
    assert_eq!(
        quant::dot_q8(Q4_0, &[0; 19], &[0; 34]),
        Err(QuantError::NotBlockMultiple {
            ty: Q4_0,
            what: "row bytes",
            len: 19,
            multiple: 18
        })
    );
    assert_eq!(
        quant::dot_q8(Q4_1, &[0; 40], &[0; 68]),
        Err(QuantError::LengthMismatch {
            ty: Q8_1,
            what: "activation bytes",
            expected: 72,
            actual: 68
        })
    );
    assert!(matches!(
        quant::dot_q8(Q6K, &[0; 210], &[0; 291]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert_eq!(quant::dot_q8(Q5_0, &[], &[]), Ok(0.0));
    // Block views.
    use quant::Block;
    assert!(quant::BlockQ4K::parse(&[0; 143]).is_err());
    assert!(quant::BlockQ8K::parse(&[0; 292]).is_ok());
    // The messages name the type and the numbers.
    let msg = quant::dequantize(Q4_0, &[0; 35], &mut dst)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Q4_0") && msg.contains("36") && msg.contains("35"),
        "{msg}"
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    // Any bytes of the right length decode; garbage scales give garbage floats, not panics.
    let mut rng = Rng(5);
    for ty in GgmlType::ALL {
        let bytes: Vec<u8> = (0..ty.type_size() * 3)
            .map(|_| rng.next_u64() as u8)
            .collect();
        let n = 3 * ty.block_size();
        let mut out = vec![0.0; n];
        quant::dequantize(ty, &bytes, &mut out).unwrap();
        let x = vec![1.0f32; n];
        quant::dot_f32(ty, &bytes, &x).unwrap();
        let act_ty = quant::activation_type(ty);
        let act: Vec<u8> = (0..act_ty.type_size() * 3)
            .map(|_| rng.next_u64() as u8)
            .collect();
        match quant::dot_q8(ty, &bytes, &act) {
            Ok(_) => assert!(dot_q8_types().contains(&ty)),
            Err(e) => assert_eq!(e, QuantError::UnsupportedType(ty)),
        }
    }
    // Non-finite input to the quantizers.
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8K,
    ] {
        let mut x = vec![1.0f32; ty.block_size()];
        x[1] = f32::NAN;
        x[2] = f32::INFINITY;
        x[3] = f32::NEG_INFINITY;
        let _ = quantized(ty, &x);
    }
}

// ---------------------------------------------------------------------------------------------
// Against ggml itself
//
// The reference kit ships llama.cpp's prebuilt ggml (`$CHORD_REF/lib`): libggml-base exports
// `quantize_row_*_ref` and `dequantize_row_*`, and the baseline x86-64 CPU variant
// libggml-cpu-x64 exports the `ggml_vec_dot_*_generic` kernels. A 60-line C driver runs them on
// the same deterministic inputs as this file; every output must agree bit for bit. Where the
// library or a C compiler is missing the live comparison is skipped, and the FNV-1a hashes of
// ggml's outputs recorded below (printed by the live test) still pin the results.

const GGML_DRIVER_C: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef void (*qfn)(const float *, void *, int64_t);
typedef void (*dfn)(const void *, float *, int64_t);
typedef void (*vfn)(int, float *, size_t, const void *, size_t, const void *, size_t, int);
#define Q(n) void n(const float *, void *, int64_t);
#define D(n) void n(const void *, float *, int64_t);
#define V(n) void n(int, float *, size_t, const void *, size_t, const void *, size_t, int);
Q(quantize_row_q4_0_ref) Q(quantize_row_q4_1_ref) Q(quantize_row_q5_0_ref) Q(quantize_row_q5_1_ref)
Q(quantize_row_q8_0_ref) Q(quantize_row_q8_1_ref) Q(quantize_row_q8_K_ref) Q(ggml_fp32_to_fp16_row)
Q(ggml_fp32_to_bf16_row_ref)
D(dequantize_row_q4_0) D(dequantize_row_q4_1) D(dequantize_row_q5_0) D(dequantize_row_q5_1)
D(dequantize_row_q8_0) D(dequantize_row_q2_K) D(dequantize_row_q3_K) D(dequantize_row_q4_K)
D(dequantize_row_q5_K) D(dequantize_row_q6_K) D(dequantize_row_q8_K) D(ggml_fp16_to_fp32_row)
D(ggml_bf16_to_fp32_row)
V(ggml_vec_dot_q4_0_q8_0_generic) V(ggml_vec_dot_q4_1_q8_1_generic) V(ggml_vec_dot_q5_0_q8_0_generic)
V(ggml_vec_dot_q5_1_q8_1_generic) V(ggml_vec_dot_q8_0_q8_0_generic) V(ggml_vec_dot_q2_K_q8_K_generic)
V(ggml_vec_dot_q3_K_q8_K_generic) V(ggml_vec_dot_q4_K_q8_K_generic) V(ggml_vec_dot_q5_K_q8_K_generic)
V(ggml_vec_dot_q6_K_q8_K_generic)
void ggml_cpu_init(void);
static const struct { int id, bs, ts; qfn q; dfn d; vfn v; } T[] = {
  {1, 1, 2, ggml_fp32_to_fp16_row, ggml_fp16_to_fp32_row, 0},
  {2, 32, 18, quantize_row_q4_0_ref, dequantize_row_q4_0, ggml_vec_dot_q4_0_q8_0_generic},
  {3, 32, 20, quantize_row_q4_1_ref, dequantize_row_q4_1, ggml_vec_dot_q4_1_q8_1_generic},
  {6, 32, 22, quantize_row_q5_0_ref, dequantize_row_q5_0, ggml_vec_dot_q5_0_q8_0_generic},
  {7, 32, 24, quantize_row_q5_1_ref, dequantize_row_q5_1, ggml_vec_dot_q5_1_q8_1_generic},
  {8, 32, 34, quantize_row_q8_0_ref, dequantize_row_q8_0, ggml_vec_dot_q8_0_q8_0_generic},
  {9, 32, 36, quantize_row_q8_1_ref, 0, 0},
  {10, 256, 84, 0, dequantize_row_q2_K, ggml_vec_dot_q2_K_q8_K_generic},
  {11, 256, 110, 0, dequantize_row_q3_K, ggml_vec_dot_q3_K_q8_K_generic},
  {12, 256, 144, 0, dequantize_row_q4_K, ggml_vec_dot_q4_K_q8_K_generic},
  {13, 256, 176, 0, dequantize_row_q5_K, ggml_vec_dot_q5_K_q8_K_generic},
  {14, 256, 210, 0, dequantize_row_q6_K, ggml_vec_dot_q6_K_q8_K_generic},
  {15, 256, 292, quantize_row_q8_K_ref, dequantize_row_q8_K, 0},
  {30, 1, 2, ggml_fp32_to_bf16_row_ref, ggml_bf16_to_fp32_row, 0},
};
static void *slurp(const char *path, long *len) {
  FILE *f = fopen(path, "rb"); if (!f) { perror(path); exit(2); }
  fseek(f, 0, SEEK_END); *len = ftell(f); fseek(f, 0, SEEK_SET);
  void *p = malloc(*len + 1); if (fread(p, 1, *len, f) != (size_t)*len) exit(2); fclose(f); return p;
}
static void spill(const char *path, const void *p, long len) {
  FILE *f = fopen(path, "wb"); if (!f || fwrite(p, 1, len, f) != (size_t)len) exit(2); fclose(f);
}
/* q ID in.f32 out | d ID in out.f32 | v ID NROWS w act out.f32 */
int main(int argc, char **argv) {
  ggml_cpu_init();
  if (argc < 5) return 2;
  int id = atoi(argv[2]), k = -1;
  for (int i = 0; i < (int)(sizeof T / sizeof T[0]); i++) if (T[i].id == id) k = i;
  if (k < 0) return 3;
  long len; void *in = argv[1][0] == 'v' ? 0 : slurp(argv[3], &len);
  if (argv[1][0] == 'q' && T[k].q) {
    long n = len / 4; long out = n / T[k].bs * T[k].ts; void *o = malloc(out);
    T[k].q(in, o, n); spill(argv[4], o, out);
  } else if (argv[1][0] == 'd' && T[k].d) {
    long n = len / T[k].ts * T[k].bs; float *o = malloc(n * 4);
    T[k].d(in, o, n); spill(argv[4], o, n * 4);
  } else if (argv[1][0] == 'v' && T[k].v && argc == 7) {
    int rows = atoi(argv[3]); long wl, al; char *w = slurp(argv[4], &wl), *a = slurp(argv[5], &al);
    int n = (int)(wl / rows / T[k].ts * T[k].bs); float *o = malloc(rows * 4);
    for (int r = 0; r < rows; r++) T[k].v(n, o + r, 0, w + r * (wl / rows), 0, a + r * (al / rows), 0, 1);
    spill(argv[6], o, rows * 4);
  } else return 4;
  return 0;
}
"#;

/// Build the driver against `$CHORD_REF/lib`, or say why not.
fn ggml_driver() -> Result<PathBuf, String> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return Err("the reference kit's ggml is an x86-64 Linux build".into());
    }
    let lib = paths::llama_ref_dir().join("lib");
    for so in ["libggml-base.so", "libggml-cpu-x64.so"] {
        if !lib.join(so).exists() {
            return Err(format!("{} not found", lib.join(so).display()));
        }
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ggml-driver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let src = dir.join("driver.c");
    let exe = dir.join("driver");
    std::fs::write(&src, GGML_DRIVER_C).map_err(|e| e.to_string())?;
    let status = std::process::Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg(format!("-L{}", lib.display()))
        .args(["-lggml-base", "-l:libggml-cpu-x64.so"])
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .status()
        .map_err(|e| format!("no C compiler: {e}"))?;
    assert!(status.success(), "compiling the ggml driver failed");
    Ok(exe)
}

fn run_driver(exe: &std::path::Path, args: &[String], inputs: &[(&str, &[u8])]) -> Vec<u8> {
    let dir = exe.parent().unwrap();
    for (name, bytes) in inputs {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let out = dir.join("out.bin");
    let mut cmd = std::process::Command::new(exe);
    cmd.current_dir(dir).args(args).arg(&out);
    let status = cmd.status().unwrap();
    assert!(status.success(), "ggml driver {args:?}: {status}");
    std::fs::read(out).unwrap()
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const QUANT_TYPES: [GgmlType; 9] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q8K,
];

const DEQUANT_TYPES: [GgmlType; 13] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
];

const DOT_ROWS: usize = 24;
const DOT_N: usize = 1024;

/// The deterministic inputs of the ggml comparison.
fn quant_input(ty: GgmlType) -> Vec<f32> {
    let mut x = activations(&mut Rng(1000 + u64::from(ty.id())), 64 * QK_K, 32);
    // Specials the float conversions must agree on (the block quantizers see them too).
    x[..8].copy_from_slice(&[
        65519.99,
        65520.0,
        5.9604645e-8,
        2.9802322e-8,
        1e-40,
        -0.0,
        3.0e38,
        -3.0e38,
    ]);
    if ty.block_size() > 1 {
        x[..8].fill(1.0);
    }
    x
}

fn dequant_input(ty: GgmlType) -> Vec<u8> {
    random_row(
        ty,
        64 * QK_K / ty.block_size(),
        &mut Rng(2000 + u64::from(ty.id())),
    )
}

fn dot_inputs(ty: GgmlType) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(3000 + u64::from(ty.id()));
    let w = random_row(ty, DOT_ROWS * DOT_N / ty.block_size(), &mut rng);
    let y = activations(&mut rng, DOT_ROWS * DOT_N, 32);
    let act = quantized(quant::activation_type(ty), &y);
    (w, act)
}

fn our_dots(ty: GgmlType, w: &[u8], act: &[u8]) -> Vec<u8> {
    let dots: Vec<f32> = w
        .chunks(w.len() / DOT_ROWS)
        .zip(act.chunks(act.len() / DOT_ROWS))
        .map(|(w, a)| quant::dot_q8(ty, w, a).unwrap())
        .collect();
    f32_bytes(&dots)
}

/// (type, FNV-1a of ggml's quantize output, of its dequantize output, of its vec_dot outputs),
/// 0 where ggml has no such function for the type. Printed by `agrees_with_ggml_library`.
const GGML_GOLDEN: [(GgmlType, u64, u64, u64); 14] = [
    (GgmlType::F16, 0x233cbba3e98612f9, 0x93df5d6f55c61265, 0),
    (
        GgmlType::Q4_0,
        0xa8fdb01b58c0fe87,
        0x0b594dd7ac3ce7d3,
        0x6bf5ae201474488b,
    ),
    (
        GgmlType::Q4_1,
        0x6f21bca3873fd5b4,
        0x8ef2746d861cd4b2,
        0x09dc2357f74685e3,
    ),
    (
        GgmlType::Q5_0,
        0x6374babd78aec497,
        0xd4240b1d7f4d3836,
        0x123ef8a26d66cb43,
    ),
    (
        GgmlType::Q5_1,
        0x00e7ef7559863995,
        0x8cfec6cab566a1de,
        0x05654370c98ab485,
    ),
    (
        GgmlType::Q8_0,
        0x3f57336a708d77ad,
        0x12fd19f09b80c6a2,
        0x9a38b55b5dc95e9a,
    ),
    (GgmlType::Q8_1, 0x4b41d732dbe173dc, 0, 0),
    (GgmlType::Q2K, 0, 0x8b46130029f1cf03, 0x3c4c43182456f161),
    (GgmlType::Q3K, 0, 0x64e4b0f8149aea07, 0xc0c0e4182320416e),
    (GgmlType::Q4K, 0, 0xa94955b150665f76, 0x2a08adae8bfa4b66),
    (GgmlType::Q5K, 0, 0x148fc87c8489ac03, 0x5917f7b479b8190f),
    (GgmlType::Q6K, 0, 0x17d40b96533f0508, 0x1cf3797e87edf1c5),
    (GgmlType::Q8K, 0x73a0c80fcfa74dd1, 0x9797dd90c82ef126, 0),
    (GgmlType::BF16, 0x248d4fe183c69393, 0x21b83df8622beca0, 0),
];

#[test]
fn agrees_with_ggml_library() {
    let exe = match ggml_driver() {
        Ok(exe) => exe,
        Err(why) => {
            eprintln!("skipping the live ggml comparison: {why}");
            return;
        }
    };
    let mut golden = Vec::new();
    for ty in GgmlType::ALL {
        let id = ty.id().to_string();
        let mut hashes = (0, 0, 0);
        if QUANT_TYPES.contains(&ty) {
            let x = quant_input(ty);
            let theirs = run_driver(
                &exe,
                &["q".into(), id.clone(), "in.f32".into()],
                &[("in.f32", &f32_bytes(&x))],
            );
            let ours = quantized(ty, &x);
            for (b, (o, t)) in ours
                .chunks(ty.type_size())
                .zip(theirs.chunks(ty.type_size()))
                .enumerate()
            {
                assert_eq!(
                    o,
                    t,
                    "{ty} quantize, block {b}: input {:?}",
                    &x[b * ty.block_size()..(b + 1) * ty.block_size()]
                );
            }
            assert_eq!(ours.len(), theirs.len());
            hashes.0 = fnv1a(&theirs);
        }
        if DEQUANT_TYPES.contains(&ty) {
            let raw = dequant_input(ty);
            let theirs = run_driver(
                &exe,
                &["d".into(), id.clone(), "in.bin".into()],
                &[("in.bin", &raw)],
            );
            let ours = f32_bytes(&dequantized(ty, &raw));
            assert_eq!(ours.len(), theirs.len());
            for (i, (o, t)) in ours.chunks(4).zip(theirs.chunks(4)).enumerate() {
                assert_eq!(o, t, "{ty} dequantize, element {i}");
            }
            hashes.1 = fnv1a(&theirs);
        }
        if dot_q8_types().contains(&ty) {
            let (w, act) = dot_inputs(ty);
            let args = [
                "v".into(),
                id.clone(),
                DOT_ROWS.to_string(),
                "w.bin".into(),
                "a.bin".into(),
            ];
            let theirs = run_driver(&exe, &args, &[("w.bin", &w), ("a.bin", &act)]);
            let ours = our_dots(ty, &w, &act);
            for (r, (o, t)) in ours.chunks(4).zip(theirs.chunks(4)).enumerate() {
                let (o, t) = (
                    f32::from_le_bytes(o.try_into().unwrap()),
                    f32::from_le_bytes(t.try_into().unwrap()),
                );
                assert_eq!(
                    o.to_bits(),
                    t.to_bits(),
                    "{ty} vec_dot row {r}: ours {o} ggml {t}"
                );
            }
            hashes.2 = fnv1a(&theirs);
        }
        if hashes != (0, 0, 0) {
            golden.push(format!(
                "    (GgmlType::{ty:?}, {:#018x}, {:#018x}, {:#018x}),",
                hashes.0, hashes.1, hashes.2
            ));
        }
    }
    eprintln!("ggml golden hashes:\n{}", golden.join("\n"));
    let recorded: Vec<String> = GGML_GOLDEN
        .iter()
        .map(|(ty, q, d, v)| format!("    (GgmlType::{ty:?}, {q:#018x}, {d:#018x}, {v:#018x}),"))
        .collect();
    assert_eq!(
        golden, recorded,
        "ggml's outputs changed: update GGML_GOLDEN"
    );
    let _ = std::fs::remove_dir_all(exe.parent().unwrap());
}

#[test]
fn matches_recorded_ggml_outputs() {
    for (ty, q, d, v) in GGML_GOLDEN {
        if q != 0 {
            assert_eq!(fnv1a(&quantized(ty, &quant_input(ty))), q, "{ty} quantize");
        }
        if d != 0 {
            assert_eq!(
                fnv1a(&f32_bytes(&dequantized(ty, &dequant_input(ty)))),
                d,
                "{ty} dequantize"
            );
        }
        if v != 0 {
            let (w, act) = dot_inputs(ty);
            assert_eq!(fnv1a(&our_dots(ty, &w, &act)), v, "{ty} vec_dot");
        }
    }
}

/// Operation order matters only when a product rounds: with an odd 15-bit `sumi` and full
/// f16 mantissas, `(sumi·dx)·dy` (ggml's q4_0 kernel) and `(dx·dy)·sumi` (q5_0, q8_0) differ.
#[test]
fn dot_q8_uses_each_kernels_float_order() {
    let (dx, dy) = (half::f16::from_bits(0x3c01), half::f16::from_bits(0x2001));
    let (fx, fy) = (dx.to_f32(), dy.to_f32());
    let mut act = dy.to_le_bytes().to_vec();
    act.extend([127u8; 31]);
    act.push(126);
    let sumi = (7 * (127 * 31 + 126)) as f32;
    let kernel_q4_0 = sumi * fx * fy;
    let kernel_q8_0 = (fx * fy) * sumi;
    assert_ne!(
        kernel_q4_0, kernel_q8_0,
        "the example must tell the two orders apart"
    );

    // Q4_0: all nibbles 15 → q = 7.
    let mut q4_0 = dx.to_le_bytes().to_vec();
    q4_0.extend([0xFF; 16]);
    assert_eq!(
        quant::dot_q8(GgmlType::Q4_0, &q4_0, &act).unwrap(),
        kernel_q4_0
    );
    // Q5_0: nibble 7 with the fifth bit set → 23 - 16 = 7.
    let mut q5_0 = dx.to_le_bytes().to_vec();
    q5_0.extend([0xFF; 4]);
    q5_0.extend([0x77; 16]);
    assert_eq!(
        quant::dot_q8(GgmlType::Q5_0, &q5_0, &act).unwrap(),
        kernel_q8_0
    );
    // Q8_0: q = 7.
    let mut q8_0 = dx.to_le_bytes().to_vec();
    q8_0.extend([7; 32]);
    assert_eq!(
        quant::dot_q8(GgmlType::Q8_0, &q8_0, &act).unwrap(),
        kernel_q8_0
    );
    // Q4_1 against Q8_1: (dx·dy)·sumi + m·s.
    let (m, s) = (half::f16::from_f32(-0.75), half::f16::from_f32(3.5));
    let mut q4_1 = dx.to_le_bytes().to_vec();
    q4_1.extend(m.to_le_bytes());
    q4_1.extend([0x77; 16]);
    let mut act1 = dy.to_le_bytes().to_vec();
    act1.extend(s.to_le_bytes());
    act1.extend(&act[2..]);
    assert_eq!(
        quant::dot_q8(GgmlType::Q4_1, &q4_1, &act1).unwrap(),
        kernel_q8_0 + m.to_f32() * s.to_f32()
    );
}
