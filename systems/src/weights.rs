//! Model weights: the immutable, shared `Resource` every system reads.
//!
//! Matrices stay in their quantized form as views into the GGUF file (memory-mapped natively,
//! an owned buffer in wasm). Small vectors (norm weights, biases) are decoded to f32 once here.

use std::ops::Range;
use std::sync::Arc;

use bevy_ecs::prelude::*;
use chord_resources::GgmlType;
use chord_resources::config::{
    ConfigError, ModelConfig, RopeScaling, tensor_names, tensor_names::Block,
};
use chord_resources::gguf::GgufFile;
use chord_resources::quant;

use crate::kernels::matmul::WeightView;

/// Why weights could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("missing tensor {0}")]
    MissingTensor(String),
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    BadShape {
        name: String,
        got: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor {name}: {why}")]
    BadTensor { name: String, why: String },
}

/// A 2-D weight matrix in its file encoding: `rows` output features of `cols` inputs each.
#[derive(Clone, Debug)]
pub struct QTensor {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    range: Range<usize>,
}

impl QTensor {
    pub fn view<'a>(&self, w: &'a ModelWeights) -> WeightView<'a> {
        WeightView {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: &w.file.as_bytes()[self.range.clone()],
        }
    }

    pub fn n_bytes(&self) -> usize {
        self.range.len()
    }
}

/// One projection whose output is the concatenation of several matrices' outputs
/// (separate Q, K, V tensors, or one fused `attn_qkv`).
#[derive(Clone, Debug)]
pub struct Projection {
    pub parts: Vec<QTensor>,
}

impl Projection {
    pub fn out_dim(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }
}

/// Weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// Output `[q | k | v]`.
    pub qkv: Projection,
    /// Bias for `[q | k | v]` (qwen2), if any.
    pub qkv_bias: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub attn_output: QTensor,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    /// Output `[gate | up]`.
    pub gate_up: Projection,
    pub down: QTensor,
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// All weights of a model, plus its configuration.
#[derive(Resource, Debug)]
pub struct ModelWeights {
    pub config: ModelConfig,
    pub file: Arc<GgufFile>,
    pub token_embd: QTensor,
    /// LM head (the token embedding when tied).
    pub output: QTensor,
    pub output_norm: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    /// LongRoPE per-dimension frequency factors (short, long); only with `RopeScaling::LongRope`.
    pub rope_factors: Option<(Vec<f32>, Vec<f32>)>,
    /// `rope_freqs.weight`: per-pair frequency factors used at every position (Llama 3.1
    /// style), where the architecture reads them (`Architecture::uses_rope_freqs`).
    pub rope_freqs: Option<Vec<f32>>,
}

struct Loader<'a> {
    file: &'a GgufFile,
}

impl Loader<'_> {
    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<QTensor, WeightsError> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| WeightsError::MissingTensor(name.to_string()))?;
        let expected = vec![cols as u64, rows as u64];
        if info.dims != expected {
            return Err(WeightsError::BadShape {
                name: name.into(),
                got: info.dims.clone(),
                expected,
            });
        }
        let start = (self.file.data_offset() + info.offset) as usize;
        Ok(QTensor {
            name: name.to_string(),
            ty: info.ty,
            rows,
            cols,
            range: start..start + info.n_bytes as usize,
        })
    }

    fn opt_matrix(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
    ) -> Result<Option<QTensor>, WeightsError> {
        if self.file.tensor(name).is_none() {
            return Ok(None);
        }
        self.matrix(name, cols, rows).map(Some)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, WeightsError> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| WeightsError::MissingTensor(name.to_string()))?;
        if info.n_elements() != len as u64 {
            return Err(WeightsError::BadShape {
                name: name.into(),
                got: info.dims.clone(),
                expected: vec![len as u64],
            });
        }
        let mut out = vec![0.0f32; len];
        quant::dequantize(info.ty, self.file.tensor_data(info), &mut out).map_err(|e| {
            WeightsError::BadTensor {
                name: name.into(),
                why: e.to_string(),
            }
        })?;
        Ok(out)
    }

    fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, WeightsError> {
        if self.file.tensor(name).is_none() {
            return Ok(None);
        }
        self.vector(name, len).map(Some)
    }
}

impl ModelWeights {
    /// Resolve every tensor the configuration needs and check its shape.
    pub fn from_gguf(file: Arc<GgufFile>) -> Result<ModelWeights, WeightsError> {
        let config = ModelConfig::from_gguf(&file)?;
        let c = &config;
        let ld = Loader { file: &file };
        let token_embd = ld.matrix(tensor_names::TOKEN_EMBD, c.n_embd, c.n_vocab)?;
        let output = match ld.opt_matrix(tensor_names::OUTPUT, c.n_embd, c.n_vocab)? {
            Some(t) => t,
            None => token_embd.clone(),
        };
        let output_norm = ld.vector(tensor_names::OUTPUT_NORM, c.n_embd)?;
        let (q, k, v) = (c.q_dim(), c.k_dim(), c.v_dim());
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let n = |b: Block| b.name(il);
            let qkv = match ld.opt_matrix(&n(Block::AttnQkv), c.n_embd, q + k + v)? {
                Some(fused) => Projection { parts: vec![fused] },
                None => Projection {
                    parts: vec![
                        ld.matrix(&n(Block::AttnQ), c.n_embd, q)?,
                        ld.matrix(&n(Block::AttnK), c.n_embd, k)?,
                        ld.matrix(&n(Block::AttnV), c.n_embd, v)?,
                    ],
                },
            };
            let qkv_bias = match ld.opt_vector(&n(Block::AttnQBias), q)? {
                Some(mut bq) => {
                    bq.extend(ld.vector(&n(Block::AttnKBias), k)?);
                    bq.extend(ld.vector(&n(Block::AttnVBias), v)?);
                    Some(bq)
                }
                None => None,
            };
            // Phi-3 stores gate and up fused as ffn_up with 2·n_ff rows.
            let gate_up = match ld.opt_matrix(&n(Block::FfnGate), c.n_embd, c.n_ff)? {
                Some(gate) => Projection {
                    parts: vec![gate, ld.matrix(&n(Block::FfnUp), c.n_embd, c.n_ff)?],
                },
                None => Projection {
                    parts: vec![ld.matrix(&n(Block::FfnUp), c.n_embd, 2 * c.n_ff)?],
                },
            };
            layers.push(LayerWeights {
                attn_norm: ld.vector(&n(Block::AttnNorm), c.n_embd)?,
                qkv,
                qkv_bias,
                q_norm: ld.opt_vector(&n(Block::AttnQNorm), c.head_dim_k)?,
                k_norm: ld.opt_vector(&n(Block::AttnKNorm), c.head_dim_k)?,
                attn_output: ld.matrix(
                    &n(Block::AttnOutput),
                    q / c.head_dim_k * c.head_dim_v,
                    c.n_embd,
                )?,
                post_attn_norm: ld.opt_vector(&n(Block::PostAttnNorm), c.n_embd)?,
                ffn_norm: ld.vector(&n(Block::FfnNorm), c.n_embd)?,
                gate_up,
                down: ld.matrix(&n(Block::FfnDown), c.n_ff, c.n_embd)?,
                post_ffn_norm: ld.opt_vector(&n(Block::PostFfnNorm), c.n_embd)?,
            });
        }
        // llama.cpp loads the LongRoPE factors only for LongRoPE scaling (phi3: whenever present).
        let rope_factors = match c.rope_scaling {
            RopeScaling::LongRope { .. } => match (
                ld.opt_vector(tensor_names::ROPE_FACTORS_SHORT, c.n_rot / 2)?,
                ld.opt_vector(tensor_names::ROPE_FACTORS_LONG, c.n_rot / 2)?,
            ) {
                (Some(s), Some(l)) => Some((s, l)),
                (None, None) => None,
                (s, _) => {
                    let missing = if s.is_none() {
                        tensor_names::ROPE_FACTORS_SHORT
                    } else {
                        tensor_names::ROPE_FACTORS_LONG
                    };
                    return Err(WeightsError::MissingTensor(missing.to_string()));
                }
            },
            _ => None,
        };
        let rope_freqs = match c.rope_scaling {
            RopeScaling::LongRope { .. } => None,
            _ if c.arch.uses_rope_freqs() => {
                ld.opt_vector(tensor_names::ROPE_FREQS, c.n_rot / 2)?
            }
            _ => None,
        };
        Ok(ModelWeights {
            config,
            file,
            token_embd,
            output,
            output_norm,
            layers,
            rope_factors,
            rope_freqs,
        })
    }

    /// Bytes of all matrices (what a forward pass streams through).
    pub fn matrix_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv
                    .parts
                    .iter()
                    .chain(&l.gate_up.parts)
                    .map(QTensor::n_bytes)
                    .sum::<usize>()
                    + l.attn_output.n_bytes()
                    + l.down.n_bytes()
            })
            .sum();
        l + self.output.n_bytes()
    }
}
