//! The portable fallback: ggml's generic arithmetic, straight from `chord_resources::quant`.

use chord_resources::GgmlType;
use chord_resources::quant;

use super::{Acts, Rows, TYPES, activation_type, type_index};

/// `out[r] = dot_q8(w, act_r)` for `r < R`, with `TYPES[I]` weights (the reference reads the
/// activation scales from the block bytes itself).
fn dot_rows<const I: usize, const R: usize>(nb: usize, w: &[u8], acts: Acts<'_>, out: &mut [f32]) {
    let ty = TYPES[I];
    let Some(act_ty) = activation_type(ty) else {
        unreachable!("every type in TYPES has an activation format")
    };
    let (w_row, act_row) = (nb * ty.type_size(), nb * act_ty.type_size());
    for (r, o) in out.iter_mut().enumerate().take(R) {
        let a = &acts.bytes[r * acts.stride..r * acts.stride + act_row];
        // The caller checked both lengths, the only way the reference can fail.
        *o = quant::dot_q8(ty, &w[..w_row], a).unwrap_or_else(|e| panic!("qdot scalar {ty}: {e}"));
    }
}

fn rows_of<const I: usize>() -> Rows {
    [
        dot_rows::<I, 1>,
        dot_rows::<I, 2>,
        dot_rows::<I, 3>,
        dot_rows::<I, 4>,
    ]
}

/// The scalar kernels for `ty` (every type in [`TYPES`]).
pub(super) fn rows(ty: GgmlType) -> Option<Rows> {
    Some(match type_index(ty)? {
        0 => rows_of::<0>(),
        1 => rows_of::<1>(),
        2 => rows_of::<2>(),
        3 => rows_of::<3>(),
        4 => rows_of::<4>(),
        5 => rows_of::<5>(),
        6 => rows_of::<6>(),
        7 => rows_of::<7>(),
        8 => rows_of::<8>(),
        9 => rows_of::<9>(),
        _ => return None,
    })
}

/// `quantize_row_{q8_0,q8_1,q8_K}_ref` of one row; `dst` is exactly one row.
pub(super) fn quantize_row(act_ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    // The caller sized `dst` from `src`, the only way the reference can fail.
    quant::quantize(act_ty, src, dst)
        .unwrap_or_else(|e| panic!("qdot scalar quantize {act_ty}: {e}"));
}
