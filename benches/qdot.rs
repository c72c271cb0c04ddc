//! Quantized matmul throughput (single thread), in GB/s of weight bytes, next to plain
//! memory-read baselines measured in the same run.
//!
//! `cargo bench -p chord-systems --bench qdot` (add `-- qdot/q4_0` etc. to filter).
//!
//! - `qdot/<type>/n1`, `n8`: `matmul_rows` over a 576 × 1536 matrix (every row) with 1 or 8
//!   activation rows. The matrix (0.5–1.8 MB) stays in L2/L3 between iterations, so this is
//!   the kernel's compute ceiling.
//! - `qdot/<type>/n1_stream`: the same, cycling through ~128 MB of distinct matrices, so the
//!   weights come from DRAM as in decode of a real model.
//! - `mem/sum_f32_l2` and `mem/sum_f32_dram`: summing a 1 MB (cache-resident) and a 256 MB f32
//!   buffer: what a kernel that only had to read its bytes could reach.
//! - `fdot/<type>/n1`, `n4`, `n8`: the same matrices through the default f32-activation kernels
//!   (`fdot::matmul_rows_f32`, exact math): decode, one verification group, prefill.
//! - `gemm/<int8|f32>/<type>/n128`: prefill, 128 activation rows against the same matrix
//!   (from 34 rows the kernels switch to the tiled GEMMs), in multiply-adds per second.
//! - `quantize/<act type>`: `quantize_activations` of 8 rows of 1536.

use std::hint::black_box;
use std::time::Duration;

use chord_resources::GgmlType;
use chord_systems::kernels::fdot::matmul_rows_f32;
use chord_systems::kernels::qdot::{matmul_rows, quantize_activations};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod weights;
use weights::bytes;

fn weights(ty: GgmlType, seed: u64, rows: usize) -> Vec<u8> {
    weights::random(ty, seed, rows, K)
}

const M: usize = 576;
const K: usize = 1536;
const STREAM_BYTES: usize = 128 << 20;

/// Weight types in the order the engine cares about them.
const TYPES: [GgmlType; 10] = [
    GgmlType::Q8_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q4_0,
    GgmlType::Q6K,
    GgmlType::Q4K,
    GgmlType::Q5_1,
    GgmlType::Q5K,
    GgmlType::Q3K,
    GgmlType::Q2K,
];

fn activations(ty: GgmlType, n: usize) -> Vec<u8> {
    let x: Vec<f32> = bytes(99, n * K)
        .iter()
        .map(|&b| f32::from(b) / 64.0 - 2.0)
        .collect();
    let mut act = Vec::new();
    quantize_activations(ty, &x, K, &mut act);
    act
}

/// Sum with 32 independent lanes, so the adds keep up with the loads.
fn sum_f32(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let chunks = x.chunks_exact(32);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn memory_baselines(c: &mut Criterion) {
    let mut g = c.benchmark_group("mem");
    for (name, bytes) in [("sum_f32_l2", 1 << 20), ("sum_f32_dram", 256 << 20)] {
        let buf: Vec<f32> = (0..bytes / 4).map(|i| (i % 7) as f32).collect();
        g.throughput(Throughput::BytesDecimal(bytes as u64));
        g.bench_function(name, |b| b.iter(|| sum_f32(black_box(&buf))));
    }
    g.finish();
}

fn matmuls(c: &mut Criterion) {
    let mut g = c.benchmark_group("qdot");
    for ty in TYPES {
        let name = ty.name();
        let w = weights(ty, 7, M);
        g.throughput(Throughput::BytesDecimal(w.len() as u64));
        for n in [1, 8] {
            let act = activations(ty, n);
            let mut out = vec![0.0f32; n * M];
            g.bench_function(format!("{name}/n{n}"), |b| {
                b.iter(|| matmul_rows(ty, black_box(&w), M, K, black_box(&act), n, 0..M, &mut out))
            });
        }
        // Many distinct matrices, visited in turn: the weights stream from DRAM.
        let copies = STREAM_BYTES / w.len();
        let big = w.repeat(copies);
        let act = activations(ty, 1);
        let mut out = vec![0.0f32; M];
        let mut next = 0;
        g.bench_function(format!("{name}/n1_stream"), |b| {
            b.iter(|| {
                let mat = &big[next * w.len()..(next + 1) * w.len()];
                next = (next + 1) % copies;
                matmul_rows(ty, black_box(mat), M, K, black_box(&act), 1, 0..M, &mut out)
            })
        });
    }
    g.finish();
}

fn f32_matmuls(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdot");
    for ty in TYPES {
        let name = ty.name();
        let w = weights(ty, 7, M);
        g.throughput(Throughput::BytesDecimal(w.len() as u64));
        for n in [1, 4, 8] {
            let x: Vec<f32> = bytes(11, n * K)
                .iter()
                .map(|&b| f32::from(b) / 64.0 - 2.0)
                .collect();
            let mut out = vec![0.0f32; n * M];
            g.bench_function(format!("{name}/n{n}"), |b| {
                b.iter(|| matmul_rows_f32(ty, black_box(&w), K, black_box(&x), n, 0..M, &mut out))
            });
        }
    }
    g.finish();
}

fn gemms(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    let n = 128;
    g.throughput(Throughput::Elements((n * M * K) as u64));
    let x: Vec<f32> = bytes(13, n * K)
        .iter()
        .map(|&b| f32::from(b) / 64.0 - 2.0)
        .collect();
    let mut out = vec![0.0f32; n * M];
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ] {
        let name = ty.name();
        let w = weights(ty, 7, M);
        let mut act = Vec::new();
        quantize_activations(ty, &x, K, &mut act);
        g.bench_function(format!("int8/{name}/n{n}"), |b| {
            b.iter(|| matmul_rows(ty, black_box(&w), M, K, black_box(&act), n, 0..M, &mut out))
        });
        g.bench_function(format!("f32/{name}/n{n}"), |b| {
            b.iter(|| matmul_rows_f32(ty, black_box(&w), K, black_box(&x), n, 0..M, &mut out))
        });
    }
    g.finish();
}

fn quantizers(c: &mut Criterion) {
    let mut g = c.benchmark_group("quantize");
    let n = 8;
    let x: Vec<f32> = bytes(5, n * K)
        .iter()
        .map(|&b| f32::from(b) / 64.0 - 2.0)
        .collect();
    g.throughput(Throughput::Elements((n * K) as u64));
    for (name, ty) in [
        ("q8_0", GgmlType::Q8_0),
        ("q8_1", GgmlType::Q4_1),
        ("q8_k", GgmlType::Q4K),
    ] {
        let mut out = Vec::new();
        g.bench_function(name, |b| {
            b.iter(|| quantize_activations(ty, black_box(&x), K, &mut out))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = memory_baselines, matmuls, f32_matmuls, gemms, quantizers }
criterion_main!(benches);
