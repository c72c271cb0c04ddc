//! Model hyperparameters read from GGUF metadata, and the tensor names of each architecture.
//!
//! The architecture decides defaults llama.cpp hard-codes (RoPE style, gemma3's sliding-window
//! pattern and local RoPE base); everything else comes from `<arch>.*` keys.

use crate::gguf::{GgufFile, Value};

/// Supported `general.architecture` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Gemma3,
    Phi3,
    /// Mistral 3 (Mistral Small 3.x, Ministral 3): the `llama` graph plus optional YaRN
    /// parameters and Llama-4-style attention temperature. (Mistral 7B converts to `llama`;
    /// llama.cpp has no architecture called `mistral`.)
    Mistral3,
}

impl Architecture {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "gemma3" => Architecture::Gemma3,
            "phi3" => Architecture::Phi3,
            "mistral3" => Architecture::Mistral3,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Gemma3 => "gemma3",
            Architecture::Phi3 => "phi3",
            Architecture::Mistral3 => "mistral3",
        }
    }

    /// RoPE pairing llama.cpp uses for this architecture (`llama_model_rope_type`).
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Architecture::Llama | Architecture::Mistral3 => RopeStyle::Normal,
            Architecture::Qwen2 | Architecture::Gemma3 | Architecture::Phi3 => RopeStyle::Neox,
        }
    }

    /// Whether llama.cpp applies `<arch>.attention.sliding_window` for this architecture. Among
    /// ours only gemma3: `llama` (which is what Mistral 7B and other Mistral-layout checkpoints
    /// convert to) and `qwen2` never read the key, and `phi3` reads it but switches
    /// sliding-window attention off (llama.cpp PR 13676).
    pub fn uses_sliding_window(self) -> bool {
        matches!(self, Architecture::Gemma3)
    }

    /// Whether llama.cpp reads `rope.scaling.yarn_beta_fast/slow` and `yarn_log_multiplier`.
    fn reads_yarn_keys(self) -> bool {
        matches!(self, Architecture::Mistral3)
    }

    /// Whether llama.cpp applies `rope_freqs.weight` (Llama 3.1-style per-pair frequency
    /// factors) when the file has it and the scaling is not LongRoPE.
    pub fn uses_rope_freqs(self) -> bool {
        matches!(self, Architecture::Llama | Architecture::Mistral3)
    }

    /// Whether llama.cpp uses `rope_factors_long/short.weight` whatever `rope.scaling.type` says
    /// (phi3). For `llama` it loads them only when the type is `longrope`.
    fn always_long_rope(self) -> bool {
        matches!(self, Architecture::Phi3)
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1) — `LLAMA_ROPE_TYPE_NORM`.
    Normal,
    /// Halves (i, i + n_rot/2) — `LLAMA_ROPE_TYPE_NEOX`.
    Neox,
}

/// RoPE frequency scaling (`<arch>.rope.scaling.*`), resolved the way llama.cpp does it
/// (`llama_model::load_hparams`, `llama_context` constructor): the type defaults to `linear`, and
/// `rope.scaling.factor` divides every angle unless the type is `none`.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f32,
    },
    /// YaRN: pairs rotating faster than `beta_fast` turns over `original_context` keep their
    /// angle, those slower than `beta_slow` are interpolated by `factor`, with a linear ramp
    /// between (ggml's `rope_yarn`). The magnitude correction is in `rope_attn_factor`.
    Yarn {
        factor: f32,
        original_context: u32,
        beta_fast: f32,
        beta_slow: f32,
    },
    /// LongRoPE (Phi-3 128k, Phi-4-mini): per-dimension frequency factors stored as tensors
    /// `rope_factors_long/short.weight`; the long set is used when the context (`n_ctx` per
    /// sequence) exceeds `original_context`, the short set otherwise. `factor` (1 unless the file
    /// gives `rope.scaling.factor`) divides the angles as in `Linear`.
    LongRope {
        factor: f32,
        original_context: u32,
    },
}

impl RopeScaling {
    /// Multiplier of every RoPE angle (llama.cpp's `freq_scale`). YaRN's ramp is not modelled.
    pub fn freq_scale(&self) -> f32 {
        match self {
            RopeScaling::None => 1.0,
            RopeScaling::Linear { factor }
            | RopeScaling::Yarn { factor, .. }
            | RopeScaling::LongRope { factor, .. } => 1.0 / factor,
        }
    }
}

/// Feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// SiLU(gate) · up.
    Silu,
    /// GELU-tanh(gate) · up.
    GeluTanh,
}

/// Hyperparameters of one model, with per-layer attention settings resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head key/query width (`attention.key_length`, default n_embd / n_head).
    pub head_dim_k: usize,
    /// Per-head value width (`attention.value_length`, default head_dim_k).
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Dimensions rotated per head (`rope.dimension_count`, default head_dim_k).
    pub n_rot: usize,
    pub rope_style: RopeStyle,
    pub rope_scaling: RopeScaling,
    /// Magnitude factor on RoPE's cos/sin, as llama.cpp passes it to `ggml_rope_ext`
    /// (`cparams.yarn_attn_factor`): `rope.scaling.attn_factor` (default 1; Phi-3 LongRoPE files
    /// store `sqrt(1 + ln(ctx / orig_ctx) / ln(orig_ctx))` there), times YaRN's mscale ratio.
    /// The rotated dimensions of q and k are multiplied by it.
    pub rope_attn_factor: f32,
    /// Llama-4-style attention temperature (mistral3 `attention.temperature_scale`): q at
    /// position p is multiplied by `1 + scale · ln(floor(p / floor_len) + 1)`.
    pub attn_temperature: Option<AttnTemperature>,
    /// `output.weight` absent: the token embedding doubles as LM head.
    pub tied_embeddings: bool,
    /// Sliding-window length for windowed layers (see [`LayerAttention`]).
    pub sliding_window: Option<usize>,
    pub final_logit_softcap: Option<f32>,
    pub attn_logit_softcap: Option<f32>,
    /// Multiply token embeddings by this (gemma: sqrt(n_embd)).
    pub embedding_scale: Option<f32>,
    pub ffn_activation: FfnActivation,
    /// Attention score scale (1/sqrt(head_dim_k) unless the architecture says otherwise).
    pub attn_scale: f32,
    /// One entry per layer.
    pub layers: Vec<LayerAttention>,
}

/// Position-dependent query scaling (llama.cpp `llm_graph_input_attn_temp`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnTemperature {
    pub scale: f32,
    /// Positions per step of the logarithm (the original context length).
    pub floor_len: u32,
}

impl AttnTemperature {
    /// The multiplier of q at position `pos`, computed as llama.cpp does (in f64 from f32 inputs).
    pub fn at(&self, pos: usize) -> f32 {
        let steps = (pos as f32 / self.floor_len as f32).floor() as f64;
        ((steps + 1.0).ln() * self.scale as f64 + 1.0) as f32
    }
}

/// Attention settings of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerAttention {
    /// `Some(w)`: a query at position p sees keys at positions > p - w only.
    pub window: Option<usize>,
    pub rope_base: f32,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("unsupported architecture: {0}")]
    UnsupportedArchitecture(String),
    #[error("missing metadata key {0}")]
    MissingKey(String),
    #[error("metadata key {key} has the wrong type (expected {expected})")]
    WrongType { key: String, expected: &'static str },
    #[error("invalid hyperparameter {key} = {value}: {why}")]
    Invalid {
        key: String,
        value: String,
        why: &'static str,
    },
}

/// Limits that keep a hostile file from asking for absurd allocations.
const MAX_DIM: u64 = 1 << 20;
const MAX_LAYERS: u64 = 4096;

struct Meta<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{}", self.arch, suffix)
    }

    fn opt_u64(&self, suffix: &str) -> Result<Option<u64>, ConfigError> {
        let key = self.key(suffix);
        match self.file.get(&key) {
            None => Ok(None),
            // Some files store per-layer arrays (e.g. head_count_kv); all entries must agree for us.
            Some(Value::Array(_, items)) => {
                let mut first = None;
                for item in items {
                    let v = item.as_u64().ok_or(ConfigError::WrongType {
                        key: key.clone(),
                        expected: "integer",
                    })?;
                    match first {
                        None => first = Some(v),
                        Some(f) if f != v => {
                            return Err(ConfigError::Invalid {
                                key,
                                value: format!("{items:?}"),
                                why: "per-layer values that differ are not supported",
                            });
                        }
                        Some(_) => {}
                    }
                }
                Ok(first)
            }
            Some(v) => v.as_u64().map(Some).ok_or(ConfigError::WrongType {
                key,
                expected: "unsigned integer",
            }),
        }
    }

    fn u64_req(&self, suffix: &str) -> Result<u64, ConfigError> {
        self.opt_u64(suffix)?
            .ok_or_else(|| ConfigError::MissingKey(self.key(suffix)))
    }

    fn dim(&self, suffix: &str, min: u64, max: u64) -> Result<usize, ConfigError> {
        let v = self.u64_req(suffix)?;
        check_range(&self.key(suffix), v, min, max)
    }

    fn opt_f32(&self, suffix: &str) -> Result<Option<f32>, ConfigError> {
        let key = self.key(suffix);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => {
                let f = v.as_f64().ok_or(ConfigError::WrongType {
                    key: key.clone(),
                    expected: "number",
                })?;
                if !f.is_finite() {
                    return Err(ConfigError::Invalid {
                        key,
                        value: f.to_string(),
                        why: "not finite",
                    });
                }
                Ok(Some(f as f32))
            }
        }
    }
}

/// `<arch>.<suffix>` as f32 where the architecture reads it, else `None`.
fn arch_opt_f32(m: &Meta<'_>, reads: bool, suffix: &str) -> Result<Option<f32>, ConfigError> {
    if reads { m.opt_f32(suffix) } else { Ok(None) }
}

fn check_range(key: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::Invalid {
            key: key.to_string(),
            value: v.to_string(),
            why: "out of the supported range",
        });
    }
    usize::try_from(v).map_err(|_| ConfigError::Invalid {
        key: key.to_string(),
        value: v.to_string(),
        why: "too large",
    })
}

impl ModelConfig {
    /// Read the configuration of `file`. Unknown architectures give
    /// `ConfigError::UnsupportedArchitecture` ("unsupported architecture: X").
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig, ConfigError> {
        let arch_name = file
            .get("general.architecture")
            .ok_or_else(|| ConfigError::MissingKey("general.architecture".into()))?
            .as_str()
            .ok_or(ConfigError::WrongType {
                key: "general.architecture".into(),
                expected: "string",
            })?;
        let arch = Architecture::from_name(arch_name)
            .ok_or_else(|| ConfigError::UnsupportedArchitecture(arch_name.to_string()))?;
        let m = Meta {
            file,
            arch: arch_name,
        };

        let n_layer = m.dim("block_count", 1, MAX_LAYERS)?;
        let n_embd = m.dim("embedding_length", 1, MAX_DIM)?;
        let n_head = m.dim("attention.head_count", 1, 4096)?;
        let n_head_kv = match m.opt_u64("attention.head_count_kv")? {
            Some(v) => check_range(&m.key("attention.head_count_kv"), v, 1, n_head as u64)?,
            None => n_head,
        };
        if n_head % n_head_kv != 0 {
            return Err(ConfigError::Invalid {
                key: m.key("attention.head_count_kv"),
                value: n_head_kv.to_string(),
                why: "head_count is not a multiple of head_count_kv",
            });
        }
        let head_dim_k = match m.opt_u64("attention.key_length")? {
            Some(v) => check_range(&m.key("attention.key_length"), v, 1, MAX_DIM)?,
            None => {
                if n_embd % n_head != 0 {
                    return Err(ConfigError::Invalid {
                        key: m.key("embedding_length"),
                        value: n_embd.to_string(),
                        why: "not a multiple of head_count and no key_length given",
                    });
                }
                n_embd / n_head
            }
        };
        let head_dim_v = match m.opt_u64("attention.value_length")? {
            Some(v) => check_range(&m.key("attention.value_length"), v, 1, MAX_DIM)?,
            None => head_dim_k,
        };
        let n_ff = m.dim("feed_forward_length", 1, MAX_DIM * 16)?;
        let n_ctx_train = match m.opt_u64("context_length")? {
            Some(v) => check_range(&m.key("context_length"), v, 1, 1 << 24)?,
            None => 2048,
        };
        let n_vocab = match m.opt_u64("vocab_size")? {
            Some(v) => check_range(&m.key("vocab_size"), v, 1, 1 << 24)?,
            None => file
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(|a| a.len())
                .or_else(|| {
                    file.tensor(tensor_names::TOKEN_EMBD)
                        .and_then(|t| t.dims.get(1).map(|&d| d as usize))
                })
                .ok_or_else(|| ConfigError::MissingKey("tokenizer.ggml.tokens".into()))?,
        };
        let rms_eps = m
            .opt_f32("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5);
        if rms_eps.is_sign_negative() {
            return Err(ConfigError::Invalid {
                key: m.key("attention.layer_norm_rms_epsilon"),
                value: rms_eps.to_string(),
                why: "negative epsilon",
            });
        }
        let rope_base = m.opt_f32("rope.freq_base")?.unwrap_or(10000.0);
        if rope_base <= 0.0 {
            return Err(ConfigError::Invalid {
                key: m.key("rope.freq_base"),
                value: rope_base.to_string(),
                why: "must be positive",
            });
        }
        let n_rot = match m.opt_u64("rope.dimension_count")? {
            Some(v) => check_range(&m.key("rope.dimension_count"), v, 2, head_dim_k as u64)?,
            None => head_dim_k,
        };
        if n_rot % 2 != 0 {
            return Err(ConfigError::Invalid {
                key: m.key("rope.dimension_count"),
                value: n_rot.to_string(),
                why: "must be even",
            });
        }
        let orig_ctx = match m.opt_u64("rope.scaling.original_context_length")? {
            Some(0) | None => n_ctx_train as u32,
            Some(v) => {
                let key = m.key("rope.scaling.original_context_length");
                check_range(&key, v, 1, 1 << 24)? as u32
            }
        };
        // llama.cpp: no factor (or 0) means 1; the type defaults to "linear".
        let factor = match m.opt_f32("rope.scaling.factor")? {
            None => 1.0,
            Some(0.0) => 1.0,
            Some(f) if f > 0.0 => f,
            Some(f) => {
                return Err(ConfigError::Invalid {
                    key: m.key("rope.scaling.factor"),
                    value: f.to_string(),
                    why: "must be positive",
                });
            }
        };
        let scaling_type = match file.get(&m.key("rope.scaling.type")) {
            None => "linear",
            Some(v) => v.as_str().ok_or(ConfigError::WrongType {
                key: m.key("rope.scaling.type"),
                expected: "string",
            })?,
        };
        let has_long_factors = file.tensor(tensor_names::ROPE_FACTORS_LONG).is_some();
        let long_rope = RopeScaling::LongRope {
            factor,
            original_context: orig_ctx,
        };
        let rope_scaling = match scaling_type {
            "longrope" => long_rope,
            // Phi-3 files carry the factor tensors without naming a type; llama.cpp uses them.
            _ if arch.always_long_rope() && has_long_factors => long_rope,
            "none" => RopeScaling::None,
            "linear" if factor == 1.0 => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor },
            // llama.cpp reads the YaRN betas only for some architectures (of ours: mistral3).
            "yarn" => RopeScaling::Yarn {
                factor,
                original_context: orig_ctx,
                beta_fast: arch_opt_f32(&m, arch.reads_yarn_keys(), "rope.scaling.yarn_beta_fast")?
                    .unwrap_or(32.0),
                beta_slow: arch_opt_f32(&m, arch.reads_yarn_keys(), "rope.scaling.yarn_beta_slow")?
                    .unwrap_or(1.0),
            },
            other => {
                return Err(ConfigError::Invalid {
                    key: m.key("rope.scaling.type"),
                    value: other.to_string(),
                    why: "unknown RoPE scaling type (llama.cpp knows none, linear, yarn, longrope)",
                });
            }
        };
        let file_attn_factor = m.opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0);
        if file_attn_factor <= 0.0 {
            return Err(ConfigError::Invalid {
                key: m.key("rope.scaling.attn_factor"),
                value: file_attn_factor.to_string(),
                why: "must be positive",
            });
        }
        // llama_context's constructor: with YaRN (ext_factor 1) the attention factor becomes
        // mscale(f, 1) [/ mscale(f, log_mul)], divided by ggml's own 1 + 0.1·ln f, which
        // `rope_yarn` multiplies back in.
        let rope_attn_factor = match rope_scaling {
            RopeScaling::Yarn { .. } => {
                let log_mul = arch_opt_f32(
                    &m,
                    arch.reads_yarn_keys(),
                    "rope.scaling.yarn_log_multiplier",
                )?
                .unwrap_or(0.0);
                let f = 1.0 / rope_scaling.freq_scale();
                let mscale = |m: f32| {
                    if f <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * f.ln() + 1.0
                    }
                };
                let base = if log_mul != 0.0 {
                    mscale(1.0) / mscale(log_mul)
                } else {
                    mscale(1.0)
                };
                base * (1.0 / (1.0 + 0.1 * f.ln())) * file_attn_factor
            }
            _ => file_attn_factor,
        };
        let attn_temperature = match arch {
            Architecture::Mistral3 => match m.opt_f32("attention.temperature_scale")? {
                Some(scale) if scale != 0.0 => Some(AttnTemperature {
                    scale,
                    floor_len: orig_ctx,
                }),
                _ => None,
            },
            _ => None,
        };
        // Read only where llama.cpp applies it (see `Architecture::uses_sliding_window`).
        let sliding_window = match m.opt_u64("attention.sliding_window")? {
            _ if !arch.uses_sliding_window() => None,
            Some(0) | None => None,
            Some(v) => {
                let key = m.key("attention.sliding_window");
                Some(check_range(&key, v, 1, 1 << 24)?)
            }
        };
        let final_logit_softcap = m.opt_f32("final_logit_softcapping")?.filter(|v| *v > 0.0);
        let attn_logit_softcap = m.opt_f32("attn_logit_softcapping")?.filter(|v| *v > 0.0);
        let tied_embeddings = file.tensor(tensor_names::OUTPUT).is_none();

        let (embedding_scale, ffn_activation) = match arch {
            Architecture::Gemma3 => (Some((n_embd as f32).sqrt()), FfnActivation::GeluTanh),
            _ => (None, FfnActivation::Silu),
        };
        let attn_scale = 1.0 / (head_dim_k as f32).sqrt();

        let layers = (0..n_layer)
            .map(|il| match arch {
                // llama.cpp (llama-model.cpp, LLM_ARCH_GEMMA3): swa pattern 6, the last layer of each
                // group of six is global; local layers use RoPE base 10000. Not stored in the file.
                Architecture::Gemma3 => {
                    let global = il % 6 == 5;
                    LayerAttention {
                        window: if global { None } else { sliding_window },
                        rope_base: if global { rope_base } else { 10000.0 },
                    }
                }
                _ => LayerAttention {
                    window: sliding_window,
                    rope_base,
                },
            })
            .collect();

        Ok(ModelConfig {
            arch,
            name: file
                .get("general.name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff,
            n_vocab,
            n_ctx_train,
            rms_eps,
            rope_base,
            n_rot,
            rope_style: arch.rope_style(),
            rope_scaling,
            rope_attn_factor,
            attn_temperature,
            tied_embeddings,
            sliding_window,
            final_logit_softcap,
            attn_logit_softcap,
            embedding_scale,
            ffn_activation,
            attn_scale,
            layers,
        })
    }

    /// Query width (n_head · head_dim_k).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }

    /// Key width (n_head_kv · head_dim_k).
    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    /// Value width (n_head_kv · head_dim_v).
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}

/// GGUF tensor names, in one place (llama.cpp's `LLM_TENSOR_NAMES`).
pub mod tensor_names {
    pub const TOKEN_EMBD: &str = "token_embd.weight";
    pub const OUTPUT_NORM: &str = "output_norm.weight";
    pub const OUTPUT: &str = "output.weight";
    pub const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
    pub const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";
    pub const ROPE_FREQS: &str = "rope_freqs.weight";

    /// Per-block tensor kinds; `name(layer)` gives `blk.N.<suffix>`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Block {
        AttnNorm,
        AttnQ,
        AttnK,
        AttnV,
        AttnQkv,
        AttnQBias,
        AttnKBias,
        AttnVBias,
        AttnQNorm,
        AttnKNorm,
        AttnOutput,
        PostAttnNorm,
        FfnNorm,
        FfnGate,
        FfnUp,
        FfnDown,
        PostFfnNorm,
    }

    impl Block {
        pub fn suffix(self) -> &'static str {
            match self {
                Block::AttnNorm => "attn_norm.weight",
                Block::AttnQ => "attn_q.weight",
                Block::AttnK => "attn_k.weight",
                Block::AttnV => "attn_v.weight",
                Block::AttnQkv => "attn_qkv.weight",
                Block::AttnQBias => "attn_q.bias",
                Block::AttnKBias => "attn_k.bias",
                Block::AttnVBias => "attn_v.bias",
                Block::AttnQNorm => "attn_q_norm.weight",
                Block::AttnKNorm => "attn_k_norm.weight",
                Block::AttnOutput => "attn_output.weight",
                Block::PostAttnNorm => "post_attention_norm.weight",
                Block::FfnNorm => "ffn_norm.weight",
                Block::FfnGate => "ffn_gate.weight",
                Block::FfnUp => "ffn_up.weight",
                Block::FfnDown => "ffn_down.weight",
                Block::PostFfnNorm => "post_ffw_norm.weight",
            }
        }

        pub fn name(self, layer: usize) -> String {
            format!("blk.{layer}.{}", self.suffix())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    /// A metadata-only file of `arch` with the required keys plus `extra` (`<arch>.` prefixed).
    fn config(arch: &str, extra: &[(&str, Value)]) -> Result<ModelConfig, ConfigError> {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", Value::String(arch.into()))
            .unwrap();
        let keys = [
            ("block_count", 2),
            ("embedding_length", 64),
            ("attention.head_count", 4),
            ("feed_forward_length", 128),
            ("vocab_size", 100),
        ];
        for (k, v) in keys {
            w.add_metadata(format!("{arch}.{k}"), Value::U32(v))
                .unwrap();
        }
        for (k, v) in extra {
            w.add_metadata(format!("{arch}.{k}"), v.clone()).unwrap();
        }
        ModelConfig::from_gguf(&GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap())
    }

    #[test]
    fn sliding_window_only_where_llama_cpp_applies_it() {
        let window = [("attention.sliding_window", Value::U32(16))];
        for arch in ["llama", "qwen2", "phi3", "mistral3"] {
            let c = config(arch, &window).unwrap();
            assert_eq!(c.sliding_window, None, "{arch}");
            assert!(c.layers.iter().all(|l| l.window.is_none()), "{arch}");
        }
        let g = config("gemma3", &window).unwrap();
        assert_eq!(g.sliding_window, Some(16));
        assert_eq!(g.layers[0].window, Some(16));
    }

    #[test]
    fn rope_scaling_resolves_like_llama_cpp() {
        // No type: "linear"; a factor then scales, none means no scaling.
        assert_eq!(
            config("llama", &[]).unwrap().rope_scaling,
            RopeScaling::None
        );
        let f = [("rope.scaling.factor", Value::F32(2.0))];
        assert_eq!(
            config("llama", &f).unwrap().rope_scaling,
            RopeScaling::Linear { factor: 2.0 }
        );
        let none = [
            f[0].clone(),
            ("rope.scaling.type", Value::String("none".into())),
        ];
        assert_eq!(
            config("llama", &none).unwrap().rope_scaling.freq_scale(),
            1.0
        );
        // YaRN: betas default to 32 / 1 and are read only for mistral3; the magnitude factors of
        // mscale and ggml's correction cancel without a log multiplier.
        let yarn = [
            ("rope.scaling.type", Value::String("yarn".into())),
            ("rope.scaling.factor", Value::F32(4.0)),
            ("rope.scaling.yarn_beta_fast", Value::F32(8.0)),
        ];
        let c = config("llama", &yarn).unwrap();
        assert!(matches!(
            c.rope_scaling,
            RopeScaling::Yarn {
                beta_fast: 32.0,
                beta_slow: 1.0,
                ..
            }
        ));
        assert!((c.rope_attn_factor - 1.0).abs() < 1e-6);
        let c = config("mistral3", &yarn).unwrap();
        assert!(matches!(
            c.rope_scaling,
            RopeScaling::Yarn { beta_fast: 8.0, .. }
        ));
        // Unknown types are refused (llama.cpp asserts on them).
        let su = [("rope.scaling.type", Value::String("su".into()))];
        assert!(matches!(
            config("phi3", &su),
            Err(ConfigError::Invalid { .. })
        ));
        let neg = [("rope.scaling.factor", Value::F32(-1.0))];
        assert!(matches!(
            config("llama", &neg),
            Err(ConfigError::Invalid { .. })
        ));
        let bad = [("rope.scaling.attn_factor", Value::F32(0.0))];
        assert!(matches!(
            config("phi3", &bad),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn attention_temperature_is_mistral3_only() {
        let t = [
            ("attention.temperature_scale", Value::F32(0.1)),
            ("rope.scaling.original_context_length", Value::U32(8192)),
        ];
        assert_eq!(config("llama", &t).unwrap().attn_temperature, None);
        let c = config("mistral3", &t).unwrap();
        let temp = c.attn_temperature.unwrap();
        assert_eq!(temp.floor_len, 8192);
        assert_eq!(temp.at(8191), 1.0);
        assert!((temp.at(8192) - (1.0 + 0.1 * 2f32.ln())).abs() < 1e-6);
        assert_eq!(c.rope_style, RopeStyle::Normal);
        assert!(matches!(
            config("mistral", &[]),
            Err(ConfigError::UnsupportedArchitecture(a)) if a == "mistral"
        ));
    }
}
