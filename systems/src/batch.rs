//! The run state of one step: which rows are evaluated and their activations.
//!
//! Every active sequence contributes a chunk of consecutive rows (a prefill chunk or one decode
//! token); all rows go through the matrix products together.

use bevy_ecs::prelude::*;

/// One sequence's rows in this step.
#[derive(Clone, Debug)]
pub struct SeqChunk {
    pub entity: Entity,
    /// First row of the chunk in the batch.
    pub start_row: usize,
    pub n_rows: usize,
    /// Position of the first row (= tokens already in the KV cache).
    pub start_pos: usize,
    /// Rows `start_row + logits_from ..` need logits (`n_rows` = none).
    pub logits_from: usize,
    /// Index of this chunk's first logit row in [`StepBatch::logits`].
    pub first_logit: usize,
    /// The last `n_draft` rows are speculative drafts to verify (every row then has logits).
    pub n_draft: usize,
}

/// Activations of the current step (shapes with `n` = rows in the batch).
#[derive(Resource, Debug, Default)]
pub struct StepBatch {
    pub chunks: Vec<SeqChunk>,
    /// Token of each row.
    pub tokens: Vec<u32>,
    /// Position of each row.
    pub positions: Vec<usize>,
    /// Residual stream `[n × n_embd]`.
    pub x: Vec<f32>,
    /// Normed residual `[n × n_embd]`.
    pub xn: Vec<f32>,
    /// `[n × q_dim]`, `[n × k_dim]`, `[n × v_dim]`.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Attention output `[n × n_head·head_dim_v]`.
    pub attn: Vec<f32>,
    /// Block output before the residual add `[n × n_embd]`.
    pub proj: Vec<f32>,
    /// `[n × n_ff]` each; after the activation `gate` holds act(gate)·up.
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    /// Rows that need logits, in order.
    pub logit_rows: Vec<usize>,
    /// `[logit_rows.len() × n_vocab]`.
    pub logits: Vec<f32>,
}

impl StepBatch {
    pub fn n_rows(&self) -> usize {
        self.tokens.len()
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.tokens.clear();
        self.positions.clear();
        self.logit_rows.clear();
    }
}

/// Which layer the layer schedule is running.
#[derive(Resource, Debug, Default, Clone, Copy)]
pub struct CurrentLayer(pub usize);
