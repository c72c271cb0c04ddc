//! Quantized block formats: dequantize, dot with f32, quantize (scalar reference code).
//!
//! Everything here follows ggml's portable reference code bit for bit — `dequantize_row_*` and
//! `quantize_row_*_ref` in ggml-quants.c, and the `ggml_vec_dot_*_generic` kernels of
//! ggml-cpu/quants.c — including its fp16/bf16 conversions and the order of float operations
//! wherever that order changes the rounding. It is written for clarity, not speed: SIMD kernels
//! elsewhere are tested against it.
//!
//! Layout:
//! - `legacy`: the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1),
//! - `kquants`: the 256-element super-block formats (Q2_K … Q6_K, Q8_K),
//! - `float`: F32, F16, BF16,
//! - `fp`: the scalar conversions and helpers they share.
//!
//! Each block format has one byte-slice view (`BlockQ4_0`, …, implementing [`Block`]) that is the
//! only place its layout is read, and unpacks to a common integer form from which
//! dequantization and the integer dot products are computed for the whole family.
//!
//! Inputs from outside (slice lengths) are validated up front and reported as [`QuantError`];
//! nothing here panics on any bytes. Non-finite inputs to the quantizers give the same result as
//! ggml where ggml's C is defined; where it is undefined behaviour in C (float→int conversion
//! out of range) Rust's saturating conversion is what you get.

mod codes;
mod float;
mod fp;
mod kquants;
mod legacy;

use crate::GgmlType;

pub use codes::{CodeLayout, code_layout, decode_activation_codes, decode_codes};
pub use fp::{bf16_to_fp32, fp16_to_fp32, fp32_to_bf16, fp32_to_fp16};
pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, get_scale_min_k4};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// Why a quantization routine refused its input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// A buffer does not have the length the other arguments imply.
    #[error("{ty}: {what}: expected {expected}, got {actual}")]
    LengthMismatch {
        ty: GgmlType,
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A length is not a whole number of blocks (`what` says of what: elements or bytes).
    #[error("{ty}: {what} {len} is not a multiple of {multiple}")]
    NotBlockMultiple {
        ty: GgmlType,
        what: &'static str,
        len: usize,
        multiple: usize,
    },
    /// The operation is not implemented for this type.
    #[error("{0}: not supported by this operation")]
    UnsupportedType(GgmlType),
}

/// A typed, borrowed view of one block of a ggml format, parsed from its little-endian bytes.
pub trait Block<'a>: Sized {
    /// The format of this block.
    const TYPE: GgmlType;
    /// Parse exactly `TYPE.type_size()` bytes; any other length is a
    /// [`QuantError::LengthMismatch`].
    fn parse(raw: &'a [u8]) -> Result<Self, QuantError>;
}

/// Which code handles a type.
#[derive(Clone, Copy)]
enum Family {
    Float,
    Block32,
    Block256,
}

fn family(ty: GgmlType) -> Family {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Family::Float,
        GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::Q8_1 => Family::Block32,
        GgmlType::Q2K
        | GgmlType::Q3K
        | GgmlType::Q4K
        | GgmlType::Q5K
        | GgmlType::Q6K
        | GgmlType::Q8K => Family::Block256,
    }
}

/// Check that `n` elements of `ty` are whole blocks and take exactly `bytes` bytes; returns
/// nothing useful beyond the check. `what` names the byte buffer in the error.
fn expect_bytes(
    ty: GgmlType,
    n: usize,
    bytes: usize,
    what: &'static str,
) -> Result<(), QuantError> {
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            what: "element count",
            len: n,
            multiple: bs,
        });
    }
    match (n / bs).checked_mul(ty.type_size()) {
        Some(expected) if expected == bytes => Ok(()),
        expected => Err(QuantError::LengthMismatch {
            ty,
            what,
            expected: expected.unwrap_or(usize::MAX),
            actual: bytes,
        }),
    }
}

/// Decode a row of whole blocks, handing the values to `visit` in order, a block (or a run of
/// scalars) at a time.
fn decode(ty: GgmlType, src: &[u8], mut visit: impl FnMut(&[f32])) -> Result<(), QuantError> {
    match family(ty) {
        Family::Float => float::decode(ty, src, &mut visit)?,
        Family::Block32 => {
            let mut buf = [0.0f32; legacy::QK];
            for raw in src.chunks_exact(ty.type_size()) {
                legacy::unpack(ty, raw)?.dequantize(&mut buf);
                visit(&buf);
            }
        }
        Family::Block256 => {
            let mut buf = [0.0f32; crate::QK_K];
            for raw in src.chunks_exact(ty.type_size()) {
                kquants::unpack(ty, raw)?.dequantize(&mut buf);
                visit(&buf);
            }
        }
    }
    Ok(())
}

/// Dequantize `n` elements (a whole number of blocks) from `src` (exactly `row_bytes(n)` bytes)
/// into `dst` (len `n`), as ggml's `to_float` does. Every type is supported; Q8_1 (which ggml
/// cannot dequantize) reads as `d·q`, Q8_K as `d·q`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    expect_bytes(ty, dst.len(), src.len(), "source bytes")?;
    let mut out = dst.iter_mut();
    decode(ty, src, |vals| {
        for (v, o) in vals.iter().zip(&mut out) {
            *o = *v;
        }
    })
}

/// Dot product of one quantized row with the f32 vector `x` (len `n`), computed in f32 exactly
/// as dequantize-then-sum: `Σ dequantized[i]·x[i]`, accumulated in index order.
pub fn dot_f32(ty: GgmlType, row: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    expect_bytes(ty, x.len(), row.len(), "row bytes")?;
    let mut xs = x.iter();
    let mut sum = 0.0f32;
    decode(ty, row, |vals| {
        for (v, xi) in vals.iter().zip(&mut xs) {
            sum += v * xi;
        }
    })?;
    Ok(sum)
}

/// Quantize `src` (a whole number of blocks) into `dst` (exactly `row_bytes(src.len())` bytes)
/// with ggml's reference quantizer: `quantize_row_{q4_0,q4_1,q5_0,q5_1,q8_0,q8_1,q8_K}_ref`, and
/// the plain conversions for F32/F16/BF16. The K-quant weight formats (Q2_K … Q6_K) are
/// [`QuantError::UnsupportedType`].
///
/// Q8_0 / Q8_1 / Q8_K are also what ggml does to activations before a quantized matmul
/// (`from_float` of the [`activation_type`]); on x86 ggml's SIMD activation quantizers give the
/// same bytes as these reference ones for finite input.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => encode_rows(ty, src, dst, float::encode_f32),
        GgmlType::F16 => encode_rows(ty, src, dst, float::encode_f16),
        GgmlType::BF16 => encode_rows(ty, src, dst, float::encode_bf16),
        GgmlType::Q4_0 => encode_rows(ty, src, dst, legacy::quantize_q4_0),
        GgmlType::Q4_1 => encode_rows(ty, src, dst, legacy::quantize_q4_1),
        GgmlType::Q5_0 => encode_rows(ty, src, dst, legacy::quantize_q5_0),
        GgmlType::Q5_1 => encode_rows(ty, src, dst, legacy::quantize_q5_1),
        GgmlType::Q8_0 => encode_rows(ty, src, dst, legacy::quantize_q8_0),
        GgmlType::Q8_1 => encode_rows(ty, src, dst, legacy::quantize_q8_1),
        GgmlType::Q8K => encode_rows(ty, src, dst, kquants::quantize_q8_k),
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            Err(QuantError::UnsupportedType(ty))
        }
    }
}

/// Apply a block quantizer `QK` floats → `N` bytes over a row.
fn encode_rows<const QK: usize, const N: usize>(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    quantize_block: impl Fn(&[f32; QK]) -> [u8; N],
) -> Result<(), QuantError> {
    debug_assert_eq!((QK, N), (ty.block_size(), ty.type_size()), "{ty}");
    expect_bytes(ty, src.len(), dst.len(), "destination bytes")?;
    let (blocks, _) = src.as_chunks::<QK>();
    let (outs, _) = dst.as_chunks_mut::<N>();
    for (x, out) in blocks.iter().zip(outs) {
        *out = quantize_block(x);
    }
    Ok(())
}

/// The type ggml converts the other operand to before a dot product with weights of type `ty`
/// (`vec_dot_type` in ggml-cpu's type traits): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for
/// Q4_1/Q5_1 (and Q8_1), Q8_K for Q2_K … Q6_K, and the type itself for F32/F16/BF16.
/// Q8_K has no dot product in ggml (its table entry leaves `vec_dot_type` at 0, i.e. F32).
pub fn activation_type(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::F32 | GgmlType::Q8K => GgmlType::F32,
        GgmlType::F16 => GgmlType::F16,
        GgmlType::BF16 => GgmlType::BF16,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => GgmlType::Q8_1,
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            GgmlType::Q8K
        }
    }
}

/// Dot product of one weight row of type `ty` with one activation row already quantized to
/// [`activation_type`]`(ty)` (use [`quantize`]), computed as ggml's generic
/// `ggml_vec_dot_<ty>_<act>` kernel does: integer block sums, then f32 scaling and accumulation in
/// that kernel's order. Supported: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
///
/// `row` must be whole blocks and `act` the same number of activation blocks.
pub fn dot_q8(ty: GgmlType, row: &[u8], act: &[u8]) -> Result<f32, QuantError> {
    let act_ty = activation_type(ty);
    let supported = matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    );
    if !supported {
        return Err(QuantError::UnsupportedType(ty));
    }
    let ts = ty.type_size();
    if !row.len().is_multiple_of(ts) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            what: "row bytes",
            len: row.len(),
            multiple: ts,
        });
    }
    let n = row.len() / ts * ty.block_size();
    expect_bytes(act_ty, n, act.len(), "activation bytes")?;
    match family(ty) {
        Family::Block32 => legacy::dot_q8(ty, act_ty, row, act),
        Family::Block256 => kquants::dot_q8_k(ty, row, act),
        Family::Float => Err(QuantError::UnsupportedType(ty)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizers_write_whole_blocks_of_the_declared_size() {
        // encode_rows debug-asserts (QK, N) against the type table; run every quantizer once.
        for ty in GgmlType::ALL {
            let n = ty.block_size() * 2;
            let src: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 20.0).collect();
            let mut dst = vec![0xAAu8; ty.type_size() * 2];
            match quantize(ty, &src, &mut dst) {
                Ok(()) => {
                    let mut back = vec![f32::NAN; n];
                    dequantize(ty, &dst, &mut back).unwrap();
                    assert!(back.iter().all(|v| v.is_finite()), "{ty}");
                }
                Err(e) => assert_eq!(e, QuantError::UnsupportedType(ty)),
            }
        }
    }

    #[test]
    fn expect_bytes_reports_both_kinds_of_error() {
        assert_eq!(expect_bytes(GgmlType::Q4_0, 64, 36, "x"), Ok(()));
        assert_eq!(
            expect_bytes(GgmlType::Q4_0, 33, 36, "x"),
            Err(QuantError::NotBlockMultiple {
                ty: GgmlType::Q4_0,
                what: "element count",
                len: 33,
                multiple: 32
            })
        );
        assert_eq!(
            expect_bytes(GgmlType::Q4_0, 64, 35, "x"),
            Err(QuantError::LengthMismatch {
                ty: GgmlType::Q4_0,
                what: "x",
                expected: 36,
                actual: 35
            })
        );
        assert_eq!(expect_bytes(GgmlType::F32, 0, 0, "x"), Ok(()));
    }
}
