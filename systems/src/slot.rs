//! Model slots: the same forward-pass systems run for the target model (the one answering
//! requests) and for a speculative-decoding draft model living in the same world.
//!
//! A slot names the resources and the per-sequence component one model's forward pass uses:
//! its weights, its step activations, its current layer, its layer schedule and its K/V cache.
//! The systems are generic over the slot (`attn_norm::<Target>`, `attn_norm::<Draft>`), so there
//! is one forward pass, not a fork per model. The target slot uses the plain types
//! ([`ModelWeights`], [`StepBatch`], [`KvCache`] …); the draft slot wraps them in newtypes.

use bevy_ecs::component::Mutable;
use bevy_ecs::prelude::*;

use crate::batch::{CurrentLayer, StepBatch};
use crate::components::KvCache;
use crate::kernels::matmul::ActivationPrecision;
use crate::systems::{EngineSettings, LayerSchedule};
use crate::weights::ModelWeights;

/// Borrow the value a slot's resource or component wraps.
pub trait Slotted<T> {
    fn get(&self) -> &T;
    fn get_mut(&mut self) -> &mut T;
}

/// The types one model's forward pass reads and writes.
pub trait ModelSlot: Send + Sync + 'static {
    type Weights: Resource + Slotted<ModelWeights>;
    type Batch: Resource + Component<Mutability = Mutable> + Slotted<StepBatch>;
    type Layer: Resource + Component<Mutability = Mutable> + Slotted<CurrentLayer>;
    type Layers: Resource + Component<Mutability = Mutable> + Slotted<LayerSchedule>;
    type Kv: Component<Mutability = Mutable> + Slotted<KvCache>;
    /// Activation precision of this model's matrix products.
    fn precision(settings: &EngineSettings) -> ActivationPrecision;
}

/// The model that answers requests.
pub struct Target;

/// The speculative-decoding draft model.
pub struct Draft;

/// The draft model's weights (`None` of these exist unless a draft model was loaded).
#[derive(Resource, Debug)]
pub struct DraftWeights(pub ModelWeights);

/// The draft model's step activations.
#[derive(Resource, Debug, Default)]
pub struct DraftBatch(pub StepBatch);

/// The layer the draft model's layer schedule is running.
#[derive(Resource, Debug, Default)]
pub struct DraftLayer(pub CurrentLayer);

/// The draft model's layer schedule.
#[derive(Resource)]
pub struct DraftLayers(pub LayerSchedule);

/// A speculating sequence's K/V cache in the draft model, and the tokens it holds (so that
/// positions the target did not keep are recomputed).
#[derive(Component, Debug)]
pub struct DraftKv {
    pub kv: KvCache,
    pub tokens: Vec<u32>,
}

impl Slotted<KvCache> for DraftKv {
    fn get(&self) -> &KvCache {
        &self.kv
    }
    fn get_mut(&mut self) -> &mut KvCache {
        &mut self.kv
    }
}

macro_rules! identity_slotted {
    ($($t:ty),*) => {$(
        impl Slotted<$t> for $t {
            fn get(&self) -> &$t {
                self
            }
            fn get_mut(&mut self) -> &mut $t {
                self
            }
        }
    )*};
}

macro_rules! newtype_slotted {
    ($($w:ty => $t:ty),*) => {$(
        impl Slotted<$t> for $w {
            fn get(&self) -> &$t {
                &self.0
            }
            fn get_mut(&mut self) -> &mut $t {
                &mut self.0
            }
        }
    )*};
}

identity_slotted!(
    ModelWeights,
    StepBatch,
    CurrentLayer,
    LayerSchedule,
    KvCache
);
newtype_slotted!(
    DraftWeights => ModelWeights,
    DraftBatch => StepBatch,
    DraftLayer => CurrentLayer,
    DraftLayers => LayerSchedule
);

impl ModelSlot for Target {
    type Weights = ModelWeights;
    type Batch = StepBatch;
    type Layer = CurrentLayer;
    type Layers = LayerSchedule;
    type Kv = KvCache;
    fn precision(settings: &EngineSettings) -> ActivationPrecision {
        settings.precision
    }
}

impl ModelSlot for Draft {
    type Weights = DraftWeights;
    type Batch = DraftBatch;
    type Layer = DraftLayer;
    type Layers = DraftLayers;
    type Kv = DraftKv;
    fn precision(settings: &EngineSettings) -> ActivationPrecision {
        settings.draft_precision
    }
}
