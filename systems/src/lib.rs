//! wasm-chord's forward pass: components, resources, systems, schedules and CPU kernels.
//!
//! See `engine/README.md` for the map of the world and the schedule.

pub mod backend;
pub mod batch;
pub mod components;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod kernels;
pub mod sampling;
pub mod schedule;
pub mod slot;
pub mod speculative;
pub mod systems;
pub mod weights;
