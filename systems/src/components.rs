//! Per-request components. A generation request is one entity carrying these.

use bevy_ecs::prelude::*;
use crossbeam_channel::Sender;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use chord_resources::tokenizer::StreamDecoder;
use half::f16;

use crate::sampling::SamplingParams;

/// The tokens of a sequence: everything evaluated so far, plus what still has to be fed
/// through the model (the prompt at first, then each sampled token).
#[derive(Component, Debug, Default)]
pub struct Tokens {
    /// Tokens whose K/V are in the cache, in order (`evaluated.len()` = next position).
    pub evaluated: Vec<u32>,
    /// Tokens waiting to be evaluated (prefill chunks are taken from the front).
    pub pending: Vec<u32>,
    /// Number of prompt tokens (the rest of `evaluated`/`pending` was generated).
    pub n_prompt: usize,
}

/// Element type of the K/V cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvPrecision {
    /// Exact; 4 bytes per value.
    #[default]
    F32,
    /// Half the memory (as llama.cpp's default `-ctk f16 -ctv f16`); values rounded to f16.
    F16,
}

/// One layer's keys or values, `[n_pos × width]`, in the cache's precision.
#[derive(Clone, Debug)]
pub enum KvBuf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

/// A borrowed [`KvBuf`].
#[derive(Clone, Copy, Debug)]
pub enum KvView<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl KvBuf {
    pub fn new(p: KvPrecision) -> Self {
        match p {
            KvPrecision::F32 => KvBuf::F32(Vec::new()),
            KvPrecision::F16 => KvBuf::F16(Vec::new()),
        }
    }

    /// Values stored.
    pub fn len(&self) -> usize {
        match self {
            KvBuf::F32(v) => v.len(),
            KvBuf::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn truncate(&mut self, n: usize) {
        match self {
            KvBuf::F32(v) => v.truncate(n),
            KvBuf::F16(v) => v.truncate(n),
        }
    }

    /// Append f32 values, converting to the cache's precision.
    pub fn extend_from_f32(&mut self, x: &[f32]) {
        match self {
            KvBuf::F32(v) => v.extend_from_slice(x),
            KvBuf::F16(v) => v.extend(x.iter().map(|&a| f16::from_f32(a))),
        }
    }

    /// A copy of the first `n` values.
    pub fn prefix(&self, n: usize) -> KvBuf {
        match self {
            KvBuf::F32(v) => KvBuf::F32(v[..n].to_vec()),
            KvBuf::F16(v) => KvBuf::F16(v[..n].to_vec()),
        }
    }

    pub fn view(&self) -> KvView<'_> {
        match self {
            KvBuf::F32(v) => KvView::F32(v),
            KvBuf::F16(v) => KvView::F16(v),
        }
    }

    /// Bytes reserved.
    pub fn capacity_bytes(&self) -> usize {
        match self {
            KvBuf::F32(v) => v.capacity() * 4,
            KvBuf::F16(v) => v.capacity() * 2,
        }
    }
}

/// Per-layer K/V of one sequence, grown in place as positions are added.
///
/// Layout per layer: K `[n_pos × n_head_kv × head_dim_k]`, V `[n_pos × n_head_kv × head_dim_v]`.
#[derive(Component, Debug)]
pub struct KvCache {
    pub k: Vec<KvBuf>,
    pub v: Vec<KvBuf>,
    /// Positions stored (the same in every layer once a step has finished).
    pub len: usize,
    /// Refuse to grow beyond this many positions.
    pub max_len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, max_len: usize, precision: KvPrecision) -> Self {
        KvCache {
            k: vec![KvBuf::new(precision); n_layer],
            v: vec![KvBuf::new(precision); n_layer],
            len: 0,
            max_len,
        }
    }

    /// Bytes held (capacity, not just length).
    pub fn bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .map(KvBuf::capacity_bytes)
            .sum()
    }

    /// Forget everything after position `len` (speculative rollback, prefix reuse).
    pub fn truncate(&mut self, len: usize, k_width: usize, v_width: usize) {
        for l in &mut self.k {
            l.truncate(len * k_width);
        }
        for l in &mut self.v {
            l.truncate(len * v_width);
        }
        self.len = self.len.min(len);
    }
}

/// Sampler parameters plus its seeded RNG.
#[derive(Component, Debug)]
pub struct SamplerState {
    pub params: SamplingParams,
    pub rng: ChaCha8Rng,
}

impl SamplerState {
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        SamplerState { params, rng }
    }
}

/// Why a sequence stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// Sampled an end-of-generation token.
    Eos,
    /// Produced one of the user's stop strings.
    Stop,
    /// Reached the requested number of new tokens.
    Length,
    /// Reached the context limit.
    Context,
    /// Cancelled by the caller (receiver dropped or entity despawned).
    Cancelled,
    /// Teacher-forced scoring finished (no generation requested).
    Scored,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Context => "context",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Scored => "scored",
        }
    }
}

/// Limits and progress of a generation.
#[derive(Component, Debug)]
pub struct GenState {
    pub max_new_tokens: usize,
    pub n_generated: usize,
    pub stop_strings: Vec<String>,
    /// Generated text so far (for stop strings and the final output).
    pub text: String,
    pub finish: Option<FinishReason>,
    /// Return logits for every position instead of sampling (teacher forcing / perplexity).
    pub score_all: bool,
    pub stats: SeqStats,
}

/// Timing of one sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeqStats {
    pub n_prompt: usize,
    /// Prompt tokens whose K/V came from the prefix cache (not evaluated again).
    pub n_prefix_reused: usize,
    pub n_generated: usize,
    pub prefill_s: f64,
    pub decode_s: f64,
    /// Speculative decoding: draft tokens proposed and accepted by the target.
    pub n_drafted: usize,
    pub n_draft_accepted: usize,
}

impl SeqStats {
    /// Share of draft tokens the target accepted (0 without speculation).
    pub fn acceptance_rate(&self) -> f64 {
        if self.n_drafted > 0 {
            self.n_draft_accepted as f64 / self.n_drafted as f64
        } else {
            0.0
        }
    }

    pub fn prefill_tok_s(&self) -> f64 {
        if self.prefill_s > 0.0 {
            (self.n_prompt - self.n_prefix_reused) as f64 / self.prefill_s
        } else {
            0.0
        }
    }
    pub fn decode_tok_s(&self) -> f64 {
        // The first generated token comes out of the prefill step.
        let n = self.n_generated.saturating_sub(1);
        if self.decode_s > 0.0 {
            n as f64 / self.decode_s
        } else {
            0.0
        }
    }
}

/// What a request's output channel carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// One generated token and the complete UTF-8 text it finished (may be empty).
    Token { id: u32, text: String },
    /// Logits of consecutive positions `start_pos..start_pos + n` (teacher-forced scoring);
    /// `logits` is `[n × n_vocab]`.
    Logits {
        start_pos: usize,
        n_vocab: usize,
        logits: Vec<f32>,
    },
    /// The sequence finished; nothing follows.
    Done {
        reason: FinishReason,
        stats: SeqStats,
    },
}

/// The output channel of a request.
#[derive(Component, Debug)]
pub struct OutputSink(pub Sender<Event>);

/// Turns each sequence's token bytes into complete UTF-8 text (partial characters are held
/// back across token boundaries).
#[derive(Component, Debug, Default)]
pub struct TextStream(pub StreamDecoder);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_truncate_drops_positions() {
        let mut kv = KvCache::new(2, 16, KvPrecision::F16);
        for l in 0..2 {
            kv.k[l].extend_from_f32(&[1.0; 12]);
            kv.v[l].extend_from_f32(&[2.0; 12]);
        }
        kv.len = 3;
        kv.truncate(1, 4, 4);
        assert_eq!(kv.len, 1);
        assert_eq!(kv.k[1].len(), 4);
    }
}
