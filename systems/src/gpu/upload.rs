//! Weights in GPU storage buffers, in their quantized encoding.
//!
//! Blocks whose size is not a multiple of 4 bytes get 2 padding bytes after the leading f16
//! scale (Q4_0/Q5_0/Q8_0) so every field the shaders read as words is word-aligned; Q6_K's 210
//! bytes get 14 at the end, so its blocks and fields are 16-byte aligned for the decode
//! matvec's vec4 loads; the quantized bits themselves are copied unchanged.

use chord_resources::GgmlType;
use wgpu::util::DeviceExt;

use super::{GpuContext, GpuError, shaders};
use crate::kernels::matmul::WeightView;

/// Bytes of one block as uploaded, and elements per block.
pub fn padded_block(ty: GgmlType) -> Option<(usize, usize)> {
    Some(match ty {
        GgmlType::F32 => (4, 1),
        GgmlType::F16 => (2, 1),
        GgmlType::Q4_0 => (20, 32),
        GgmlType::Q4_1 => (20, 32),
        GgmlType::Q5_0 => (24, 32),
        GgmlType::Q8_0 => (36, 32),
        GgmlType::Q4K => (144, 256),
        GgmlType::Q6K => (224, 256),
        _ => return None,
    })
}

/// Words per uploaded row of `cols` elements, if the GPU path decodes `ty` and the row is
/// whole blocks and whole 8-element chunks.
pub fn row_words(ty: GgmlType, cols: usize) -> Option<usize> {
    let (bytes, elems) = padded_block(ty)?;
    if !cols.is_multiple_of(elems) || !cols.is_multiple_of(8) {
        return None;
    }
    Some(cols / elems * bytes / 4)
}

/// `data` (whole blocks of `ty`) in the uploaded layout.
pub fn repack(ty: GgmlType, data: &[u8]) -> Result<Vec<u8>, GpuError> {
    let bs = ty.type_size();
    let unsupported = || GpuError::Unsupported(format!("weight type {ty}"));
    let (padded, _) = padded_block(ty).ok_or_else(unsupported)?;
    if padded == bs {
        return Ok(data.to_vec());
    }
    if !data.len().is_multiple_of(bs) {
        return Err(GpuError::Unsupported(format!(
            "{ty}: {} bytes is not whole blocks",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(data.len() / bs * padded);
    for block in data.chunks_exact(bs) {
        match ty {
            GgmlType::Q6K => {
                out.extend_from_slice(block);
                out.extend_from_slice(&[0; 14]);
            }
            _ => {
                out.extend_from_slice(&block[..2]);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&block[2..]);
            }
        }
    }
    Ok(out)
}

/// Whether Q8_0 holds every value of `ty` exactly: Q4_0 and Q5_0 are (q − 8)·d and (q − 16)·d
/// with small integers q, which Q8_0 stores as int8 with the same f16 scale.
pub fn widens_to_q8_0(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0)
}

/// Blocks of `ty` (Q4_0, Q5_0 or Q8_0, in ggml's layout) re-encoded as Q8_0 with the same
/// values: the scale's bits are kept and each quant becomes its signed integer. None for other
/// types or a partial block.
pub fn to_q8_0(ty: GgmlType, data: &[u8]) -> Option<Vec<u8>> {
    let bs = ty.type_size();
    if !widens_to_q8_0(ty) || !data.len().is_multiple_of(bs) {
        return None;
    }
    if ty == GgmlType::Q8_0 {
        return Some(data.to_vec());
    }
    let mut out = Vec::with_capacity(data.len() / bs * 34);
    for b in data.chunks_exact(bs) {
        out.extend_from_slice(&b[..2]);
        let mut q = [0i8; 32];
        match ty {
            GgmlType::Q4_0 => {
                for j in 0..16 {
                    q[j] = (b[2 + j] & 0x0f) as i8 - 8;
                    q[j + 16] = (b[2 + j] >> 4) as i8 - 8;
                }
            }
            _ => {
                // Q5_0: [d][qh: 4 bytes, bit j = fifth bit of element j][qs: 16 bytes].
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for j in 0..16 {
                    let lo = (b[6 + j] & 0x0f) | (((qh >> j) & 1) << 4) as u8;
                    let hi = (b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
                    q[j] = lo as i8 - 16;
                    q[j + 16] = hi as i8 - 16;
                }
            }
        }
        out.extend(q.iter().map(|&v| v as u8));
    }
    Some(out)
}

/// One dispatchable piece of a matrix: `rows` output features starting at output column
/// `row_offset` of the (possibly fused) projection.
#[derive(Debug)]
pub struct MatPart {
    pub buf: wgpu::Buffer,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_words: usize,
    pub row_offset: usize,
}

/// A projection on the GPU: its parts side by side make the output.
#[derive(Debug, Default)]
pub struct GpuMatrix {
    pub parts: Vec<MatPart>,
}

impl GpuMatrix {
    /// Upload `views` (outputs side by side, all with the same `cols`). Consecutive views of
    /// the same type are fused into one buffer (one dispatch) while it fits the binding limit;
    /// a single view larger than the limit is split by rows. Views of different types that Q8_0
    /// holds exactly (Q4_0, Q5_0, Q8_0: a fused QKV with a Q8_0 V, say) are all uploaded as Q8_0,
    /// same values, so they fuse too (`CHORD_GPU_NO_WIDEN=1`: not).
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        views: &[WeightView<'_>],
    ) -> Result<Self, GpuError> {
        let widen = views.iter().any(|v| v.ty != views[0].ty)
            && views.iter().all(|v| widens_to_q8_0(v.ty))
            && std::env::var_os("CHORD_GPU_NO_WIDEN").is_none();
        let widened: Vec<Vec<u8>> = if widen {
            views
                .iter()
                .map(|v| to_q8_0(v.ty, v.data).unwrap_or_default())
                .collect()
        } else {
            Vec::new()
        };
        let views: Vec<WeightView<'_>> = if widen {
            views
                .iter()
                .zip(&widened)
                .map(|(v, data)| WeightView {
                    ty: GgmlType::Q8_0,
                    rows: v.rows,
                    cols: v.cols,
                    data,
                })
                .collect()
        } else {
            views.to_vec()
        };
        let views = &views[..];
        let max = ctx.max_binding() as usize;
        let mut parts = Vec::new();
        let mut pending: Option<(GgmlType, usize, usize, usize, Vec<u8>)> = None; // ty, rows, cols, offset, bytes
        let mut offset = 0;
        let flush = |p: Option<(GgmlType, usize, usize, usize, Vec<u8>)>,
                     parts: &mut Vec<MatPart>|
         -> Result<(), GpuError> {
            if let Some((ty, rows, cols, off, bytes)) = p {
                let rw = row_words(ty, cols).ok_or_else(|| {
                    GpuError::Unsupported(format!("{name}: {ty} with {cols} columns"))
                })?;
                let buf = ctx
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(name),
                        contents: &bytes,
                        usage: wgpu::BufferUsages::STORAGE,
                    });
                parts.push(MatPart {
                    buf,
                    ty,
                    rows,
                    cols,
                    row_words: rw,
                    row_offset: off,
                });
            }
            Ok(())
        };
        for v in views {
            let rw = row_words(v.ty, v.cols).ok_or_else(|| {
                GpuError::Unsupported(format!("{name}: {} with {} columns", v.ty, v.cols))
            })?;
            let row_bytes = rw * 4;
            if row_bytes > max {
                return Err(GpuError::Unsupported(format!(
                    "{name}: a row exceeds the binding limit"
                )));
            }
            let packed = repack(v.ty, v.data)?;
            if packed.len() != row_bytes * v.rows {
                return Err(GpuError::Unsupported(format!("{name}: unexpected size")));
            }
            let rows_per_part = (max / row_bytes).max(1);
            let mut r = 0;
            while r < v.rows {
                let n = rows_per_part.min(v.rows - r);
                let chunk = &packed[r * row_bytes..(r + n) * row_bytes];
                match &mut pending {
                    Some((ty, rows, cols, _, bytes))
                        if *ty == v.ty && *cols == v.cols && bytes.len() + chunk.len() <= max =>
                    {
                        bytes.extend_from_slice(chunk);
                        *rows += n;
                    }
                    _ => {
                        flush(pending.take(), &mut parts)?;
                        pending = Some((v.ty, n, v.cols, offset, chunk.to_vec()));
                    }
                }
                offset += n;
                r += n;
            }
        }
        flush(pending.take(), &mut parts)?;
        Ok(GpuMatrix { parts })
    }
}

/// A read-only f32 storage buffer.
pub fn f32_buffer(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    let data = if data.is_empty() { &[0.0f32][..] } else { data };
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        })
}

/// Whether the GPU kernels decode `ty`.
pub fn supported_type(ty: GgmlType) -> bool {
    shaders::quant_source(ty).is_some() && padded_block(ty).is_some()
}
