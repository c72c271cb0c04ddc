//! The GPU path: every forward-pass kernel as a wgpu compute pass (`shaders/*.wgsl`).
//!
//! - [`GpuContext`]: adapter and device, with the adapter's real limits requested.
//! - [`upload`]: quantized weights uploaded once (blocks padded to whole words, otherwise in
//!   their file encoding), split by rows where a tensor exceeds the binding limits.
//! - [`forward`]: the ECS systems. Embed, each layer's systems and the logits record compute
//!   passes into one command encoder per step (submitted in growing chunks of layers); the step
//!   reads back one argmax per sequence (greedy, pipelined natively), top-k candidates or the
//!   logits rows.
//! - [`profile`]: per-kernel timestamps (`CHORD_GPU_PROFILE=1`, native).
//! - [`readback`]: the step's readback as a `map_async` to await ([`ReadbackWait`]); the
//!   browser runs a step in parts around it ([`crate::schedule::StepPhase`]) and never blocks.

pub mod forward;
pub mod kernels;
pub mod profile;
pub mod readback;
pub mod shaders;
pub mod upload;

#[cfg(test)]
mod tests;

pub use forward::{GpuForward, GpuKv, add_step_systems, install};
pub use kernels::Kernels;
pub use readback::ReadbackWait;

/// Why the GPU path is unavailable or failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    #[error("only a software adapter was found ({0})")]
    SoftwareAdapter(String),
    #[error("GPU device request failed: {0}")]
    Device(String),
    #[error("not supported on the GPU path: {0}")]
    Unsupported(String),
    #[error("GPU readback failed: {0}")]
    Readback(String),
    #[error("uniform encoding failed: {0}")]
    Encode(String),
}

/// Adapter, device and queue, and the compiled kernels.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Smallest subgroup size, when the device has subgroup operations (the matmul then
    /// reduces with subgroup shuffles; `CHORD_GPU_NO_SUBGROUPS=1` turns that off).
    pub subgroup: Option<u32>,
    /// The device has SHADER_F16 (an f16 K/V cache is possible; `CHORD_GPU_NO_F16=1`: off).
    pub f16: bool,
    pub kernels: Kernels,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

impl GpuContext {
    /// Request an adapter (backends from `WGPU_BACKEND`, else all) and a device with the
    /// adapter's own limits. `allow_software`: accept a CPU adapter (lavapipe, WARP).
    pub async fn new_async(allow_software: bool) -> Result<GpuContext, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        if !allow_software && info.device_type == wgpu::DeviceType::Cpu {
            return Err(GpuError::SoftwareAdapter(info.name));
        }
        let limits = adapter.limits();
        // Not in the browser: the subgroup matmul is written for naga (no `enable subgroups;`),
        // which the browser's WGSL compiler requires.
        let use_subgroups = !cfg!(target_arch = "wasm32")
            && adapter.features().contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size >= 8
            && std::env::var_os("CHORD_GPU_NO_SUBGROUPS").is_none();
        // Timestamps inside passes: the per-kernel profiler (`CHORD_GPU_PROFILE=1`).
        let mut wanted =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if use_subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        // Not in the browser either: the browser path keeps the f32 cache (`--kv f16` is native).
        if !cfg!(target_arch = "wasm32") && std::env::var_os("CHORD_GPU_NO_F16").is_none() {
            wanted |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("chord"),
                required_features: adapter.features() & wanted,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let subgroup = use_subgroups.then_some(info.subgroup_min_size);
        let f16 = device.features().contains(wgpu::Features::SHADER_F16);
        let kernels = Kernels::new(&device, subgroup.is_some(), f16);
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            subgroup,
            f16,
            kernels,
        })
    }

    /// [`GpuContext::new_async`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(allow_software: bool) -> Result<GpuContext, GpuError> {
        pollster::block_on(Self::new_async(allow_software))
    }

    /// One line naming the adapter.
    pub fn describe(&self) -> String {
        // Browsers may withhold the adapter's name (WebGPU's `description` is often empty).
        let name = match self.info.name.as_str() {
            "" => "unnamed adapter",
            n => n,
        };
        format!(
            "{name} ({:?}, {:?})",
            self.info.backend, self.info.device_type
        )
    }

    /// Largest buffer one binding may cover.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }
}

/// Encode a uniform struct with encase.
pub(crate) fn uniform_bytes<T: encase::ShaderType + encase::internal::WriteInto>(
    v: &T,
) -> Result<Vec<u8>, GpuError> {
    let mut b = encase::UniformBuffer::new(Vec::<u8>::new());
    b.write(v).map_err(|e| GpuError::Encode(e.to_string()))?;
    Ok(b.into_inner())
}
