//! Building the step and layer schedules from a model's configuration.
//!
//! Architectures differ by which systems are present (QK-norm, biases and post-norms live
//! inside the systems as optional weights; extra steps are added here), not by forks.

use bevy_ecs::prelude::*;
use bevy_ecs::schedule::SingleThreadedExecutor;

use crate::backend::{add_gpu_step_systems, cpu_backend};
use crate::batch::{CurrentLayer, StepBatch};
use crate::slot::{ModelSlot, Target};
use crate::speculative::{SpecTiming, propose_drafts, verify_drafts};
use crate::systems::*;
use crate::weights::ModelWeights;

/// Ordered phases of one step.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepSystems {
    Admit,
    /// Speculative decoding: draft tokens for speculating sequences.
    Draft,
    Batch,
    Embed,
    Layers,
    Logits,
    /// The GPU path: the logits readback (empty on the CPU).
    Readback,
    /// Speculative decoding: judge the drafts, roll the caches back.
    Verify,
    Sample,
    Emit,
}

/// Which part of the step schedule runs. A step is normally run whole; where nothing may block
/// (the browser's GPU path) it is run in parts around the GPU readback: `Front` (admission to
/// the submit of the step's command buffer), then `Readback` until the readback is taken (it is
/// awaited between runs), then `Back` (verification, sampling, emission).
#[derive(Resource, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepPhase {
    #[default]
    Whole,
    Front,
    Readback,
    Back,
}

impl StepPhase {
    fn front(p: Option<Res<StepPhase>>) -> bool {
        p.is_none_or(|p| matches!(*p, StepPhase::Whole | StepPhase::Front))
    }
    fn readback(p: Option<Res<StepPhase>>) -> bool {
        p.is_none_or(|p| matches!(*p, StepPhase::Whole | StepPhase::Readback))
    }
    fn back(p: Option<Res<StepPhase>>) -> bool {
        p.is_none_or(|p| matches!(*p, StepPhase::Whole | StepPhase::Back))
    }
}

/// Ordered phases of one transformer block.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerSystems {
    AttnNorm,
    Qkv,
    QkNorm,
    Rope,
    Attention,
    AttnOutput,
    FfnNorm,
    Ffn,
}

/// A layer schedule with the [`LayerSystems`] sets in order and no systems yet (the CPU and
/// GPU layer schedules add theirs).
pub fn empty_layer_schedule() -> Schedule {
    let mut s = Schedule::default();
    s.set_executor(SingleThreadedExecutor::new());
    s.configure_sets(
        (
            LayerSystems::AttnNorm,
            LayerSystems::Qkv,
            LayerSystems::QkNorm,
            LayerSystems::Rope,
            LayerSystems::Attention,
            LayerSystems::AttnOutput,
            LayerSystems::FfnNorm,
            LayerSystems::Ffn,
        )
            .chain(),
    );
    s
}

/// The per-layer schedule of slot `S` for `weights`' architecture.
pub fn layer_schedule<S: ModelSlot>(weights: &ModelWeights) -> Schedule {
    let mut s = empty_layer_schedule();
    s.add_systems((
        attn_norm::<S>.in_set(LayerSystems::AttnNorm),
        qkv_projection::<S>.in_set(LayerSystems::Qkv),
        apply_rope::<S>.in_set(LayerSystems::Rope),
        attend::<S>.in_set(LayerSystems::Attention),
        attn_output::<S>.in_set(LayerSystems::AttnOutput),
        ffn_norm::<S>.in_set(LayerSystems::FfnNorm),
        ffn::<S>.in_set(LayerSystems::Ffn),
    ));
    if weights
        .layers
        .iter()
        .any(|l| l.q_norm.is_some() || l.k_norm.is_some())
    {
        s.add_systems(qk_norm::<S>.in_set(LayerSystems::QkNorm));
    }
    s
}

/// The step schedule. Insert [`LayerSchedule`] (from [`layer_schedule`]) into the world too;
/// [`init_world`] does both.
pub fn step_schedule() -> Schedule {
    let mut s = Schedule::default();
    s.set_executor(SingleThreadedExecutor::new());
    s.configure_sets(
        (
            StepSystems::Admit,
            StepSystems::Draft,
            StepSystems::Batch,
            StepSystems::Embed,
            StepSystems::Layers,
            StepSystems::Logits,
            StepSystems::Readback,
            StepSystems::Verify,
            StepSystems::Sample,
            StepSystems::Emit,
        )
            .chain(),
    );
    s.configure_sets(
        (
            StepSystems::Admit,
            StepSystems::Draft,
            StepSystems::Batch,
            StepSystems::Embed,
            StepSystems::Layers,
            StepSystems::Logits,
        )
            .run_if(StepPhase::front),
    );
    s.configure_sets(StepSystems::Readback.run_if(StepPhase::readback));
    s.configure_sets(
        (StepSystems::Verify, StepSystems::Sample, StepSystems::Emit).run_if(StepPhase::back),
    );
    s.add_systems((
        admit_requests.in_set(StepSystems::Admit),
        propose_drafts.in_set(StepSystems::Draft),
        build_batch.in_set(StepSystems::Batch),
        embed::<Target>
            .in_set(StepSystems::Embed)
            .run_if(cpu_backend),
        run_layers::<Target>.in_set(StepSystems::Layers),
        compute_logits::<Target>
            .in_set(StepSystems::Logits)
            .run_if(cpu_backend),
        verify_drafts.in_set(StepSystems::Verify),
        sample_tokens.in_set(StepSystems::Sample),
        emit_tokens.in_set(StepSystems::Emit),
    ));
    // Commands from admission must be visible to the drafter and batch builder, and sampled
    // tokens to emit.
    s.add_systems((ApplyDeferred
        .after(StepSystems::Admit)
        .before(StepSystems::Draft),));
    add_gpu_step_systems(&mut s);
    s
}

/// Insert the resources the schedules need.
pub fn init_world(
    world: &mut World,
    weights: ModelWeights,
    vocab: Vocab,
    settings: EngineSettings,
    queue: RequestQueue,
) {
    let layers = LayerSchedule(layer_schedule::<Target>(&weights));
    world.insert_resource(weights);
    world.insert_resource(vocab);
    world.insert_resource(settings);
    world.insert_resource(queue);
    world.insert_resource(layers);
    world.init_resource::<StepBatch>();
    world.init_resource::<crate::systems::PrefixCache>();
    world.init_resource::<CurrentLayer>();
    world.init_resource::<SpecTiming>();
    world.init_resource::<StepPhase>();
}
