//! Which device runs the forward pass. The CPU systems run unless the GPU path is installed
//! (`crate::gpu::install`, behind the `gpu` feature), which inserts [`GpuActive`].

use bevy_ecs::prelude::*;

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// CPU kernels (always available).
    #[default]
    Cpu,
    /// wgpu compute passes; an error if no adapter or the model is not supported there.
    Gpu,
    /// A real (hardware) GPU when there is one and the model is supported, else the CPU.
    Auto,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Backend::Cpu),
            "gpu" => Ok(Backend::Gpu),
            "auto" => Ok(Backend::Auto),
            _ => Err(format!("unknown backend {s:?} (cpu, gpu or auto)")),
        }
    }
}

/// Present while the GPU systems run the forward pass.
#[derive(Resource, Debug, Default)]
pub struct GpuActive;

/// Run condition of the CPU forward systems.
pub fn cpu_backend(gpu: Option<Res<GpuActive>>) -> bool {
    gpu.is_none()
}

/// Add the GPU step systems (no-op without the `gpu` feature).
pub fn add_gpu_step_systems(_s: &mut Schedule) {
    #[cfg(feature = "gpu")]
    crate::gpu::add_step_systems(_s);
}
