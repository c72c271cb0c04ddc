//! Choosing the forward pass's device when a world is built.

use bevy_ecs::prelude::*;
use chord_systems::backend::Backend;

use crate::EngineError;

/// Install the GPU path for `Gpu` (an error if it cannot run) or `Auto` (a hardware adapter
/// when there is one and the model is supported there; else the CPU, with one line saying why).
pub(crate) fn select(world: &mut World, backend: Backend) -> Result<(), EngineError> {
    match backend {
        Backend::Cpu => Ok(()),
        Backend::Gpu => install(world, true).map_err(EngineError::Gpu),
        Backend::Auto => {
            if let Err(why) = install(world, false) {
                eprintln!("chord: backend auto: using the CPU ({why})");
            }
            Ok(())
        }
    }
}

#[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
fn install(world: &mut World, allow_software: bool) -> Result<(), String> {
    use chord_systems::gpu;
    use chord_systems::weights::ModelWeights;
    // Check the model before touching the device, so `auto` on an unsupported model is quick.
    gpu::forward::check_supported(world.resource::<ModelWeights>()).map_err(|e| e.to_string())?;
    let ctx = gpu::GpuContext::new(allow_software).map_err(|e| e.to_string())?;
    let name = ctx.describe();
    gpu::install(world, ctx).map_err(|e| e.to_string())?;
    eprintln!("chord: running on the GPU: {name}");
    Ok(())
}

#[cfg(all(feature = "gpu", target_arch = "wasm32"))]
fn install(_world: &mut World, _allow_software: bool) -> Result<(), String> {
    Err(
        "in the browser the GPU is requested asynchronously: build the engine on the CPU, \
         then Engine::install_gpu with GpuContext::new_async"
            .into(),
    )
}

#[cfg(not(feature = "gpu"))]
fn install(_world: &mut World, _allow_software: bool) -> Result<(), String> {
    Err("this build has no GPU support (the engine's `gpu` feature)".into())
}
