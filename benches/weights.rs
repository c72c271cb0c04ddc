//! Filler weights for the benches (shared by `qdot` and `gpu_matmul`).

use chord_resources::GgmlType;

/// Deterministic filler bytes (xorshift).
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// `rows × cols` weights of `ty`: filler bytes with every block scale set to 0.01.
/// (F32 and F16: values in [-1, 1).)
pub fn random(ty: GgmlType, seed: u64, rows: usize, cols: usize) -> Vec<u8> {
    let unit = |b: &u8| f32::from(*b) / 128.0 - 1.0;
    match ty {
        GgmlType::F32 => {
            return bytes(seed, rows * cols)
                .iter()
                .flat_map(|b| unit(b).to_le_bytes())
                .collect();
        }
        GgmlType::F16 => {
            return bytes(seed, rows * cols)
                .iter()
                .flat_map(|b| half::f16::from_f32(unit(b)).to_le_bytes())
                .collect();
        }
        _ => {}
    }
    let mut w = bytes(seed, rows * cols / ty.block_size() * ty.type_size());
    for block in w.chunks_exact_mut(ty.type_size()) {
        for &off in ty.f16_scale_fields() {
            block[off..off + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    w
}
