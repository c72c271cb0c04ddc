//! The Vulkan driver's statistics of the GPU path's compute shaders — registers, spills,
//! shared memory, instruction counts, whatever the driver reports through
//! VK_KHR_pipeline_executable_properties — which wgpu does not expose. For tuning kernels on a
//! machine without a GPU profiler.
//!
//! ```text
//! cargo run --release -p chord-systems --features gpu --example vk_stats -- [FILTER]
//! ```
//!
//! Every module of `shaders::all_modules()` whose name contains FILTER (f16 modules skipped),
//! translated by naga as wgpu's trusted native modules are (no bounds checks), compiled by the
//! first Vulkan device that has the extension; one line per entry point and statistic.

use std::ffi::CStr;

use ash::vk;
use chord_systems::gpu::shaders;

/// One statistic as text.
fn value(s: &vk::PipelineExecutableStatisticKHR<'_>) -> String {
    // SAFETY: the union member read is the one `format` names.
    unsafe {
        match s.format {
            vk::PipelineExecutableStatisticFormatKHR::BOOL32 => (s.value.b32 != 0).to_string(),
            vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => format!("{:.3}", s.value.f64),
            _ => "?".into(),
        }
    }
}

/// SPIR-V of `src` as naga writes it for a trusted native module, and its entry points.
fn spirv(src: &str) -> Result<(Vec<u32>, naga::Module), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
            | naga::valid::Capabilities::SHADER_FLOAT16
            | naga::valid::Capabilities::SUBGROUP,
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(&module)
    .map_err(|e| format!("{e:?}"))?;
    let options = naga::back::spv::Options {
        lang_version: (1, 3),
        bounds_check_policies: naga::proc::BoundsCheckPolicies::default(),
        ..Default::default()
    };
    let words =
        naga::back::spv::write_vec(&module, &info, &options, None).map_err(|e| e.to_string())?;
    Ok((words, module))
}

/// Statistics of every entry point of `module` (compiled from `words`): (entry, name, value).
fn stats(
    device: &ash::Device,
    exec: &ash::khr::pipeline_executable_properties::Device,
    words: &[u32],
    module: &naga::Module,
) -> Result<Vec<(String, String, String)>, vk::Result> {
    let mut out = Vec::new();
    // Descriptor set 0 as the module declares it: uniform or storage buffers.
    let bindings: Vec<vk::DescriptorSetLayoutBinding<'_>> = module
        .global_variables
        .iter()
        .filter_map(|(_, v)| {
            let b = v.binding.as_ref()?;
            let ty = match v.space {
                naga::AddressSpace::Uniform => vk::DescriptorType::UNIFORM_BUFFER,
                naga::AddressSpace::Storage { .. } => vk::DescriptorType::STORAGE_BUFFER,
                _ => return None,
            };
            Some(
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b.binding)
                    .descriptor_type(ty)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE),
            )
        })
        .collect();
    // SAFETY: `device` is a live device; every create info points at data that outlives the
    // call; each object created here is destroyed before returning, after its last use.
    unsafe {
        let set = device.create_descriptor_set_layout(
            &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
            None,
        )?;
        let sets = [set];
        let layout = device.create_pipeline_layout(
            &vk::PipelineLayoutCreateInfo::default().set_layouts(&sets),
            None,
        )?;
        let shader = device
            .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(words), None)?;
        for ep in &module.entry_points {
            let name = std::ffi::CString::new(ep.name.as_str()).unwrap_or_default();
            let info = vk::ComputePipelineCreateInfo::default()
                .flags(vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR)
                .stage(
                    vk::PipelineShaderStageCreateInfo::default()
                        .stage(vk::ShaderStageFlags::COMPUTE)
                        .module(shader)
                        .name(&name),
                )
                .layout(layout);
            let pipeline = device
                .create_compute_pipelines(vk::PipelineCache::null(), &[info], None)
                .map_err(|(_, e)| e)?[0];
            let props = exec.get_pipeline_executable_properties(
                &vk::PipelineInfoKHR::default().pipeline(pipeline),
            )?;
            for i in 0..props.len() {
                let ei = vk::PipelineExecutableInfoKHR::default()
                    .pipeline(pipeline)
                    .executable_index(i as u32);
                for s in exec.get_pipeline_executable_statistics(&ei)? {
                    let n = CStr::from_ptr(s.name.as_ptr())
                        .to_string_lossy()
                        .into_owned();
                    out.push((ep.name.clone(), n, value(&s)));
                }
            }
            device.destroy_pipeline(pipeline, None);
        }
        device.destroy_shader_module(shader, None);
        device.destroy_pipeline_layout(layout, None);
        device.destroy_descriptor_set_layout(set, None);
    }
    Ok(out)
}

/// A Vulkan device with VK_KHR_pipeline_executable_properties: (its name, device, extension).
fn open() -> Result<
    (
        String,
        ash::Device,
        ash::khr::pipeline_executable_properties::Device,
    ),
    String,
> {
    // SAFETY: loading the Vulkan loader library; ash checks the entry points it resolves.
    let entry = unsafe { ash::Entry::load() }.map_err(|e| format!("no Vulkan loader: {e}"))?;
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    // SAFETY: the create infos outlive the calls; the instance and device are deliberately
    // kept alive until the process exits (a measurement tool).
    unsafe {
        let instance = entry
            .create_instance(
                &vk::InstanceCreateInfo::default().application_info(&app),
                None,
            )
            .map_err(|e| format!("vkCreateInstance: {e}"))?;
        let ext = ash::khr::pipeline_executable_properties::NAME;
        for pdev in instance
            .enumerate_physical_devices()
            .map_err(|e| format!("{e}"))?
        {
            let has = instance
                .enumerate_device_extension_properties(pdev)
                .unwrap_or_default()
                .iter()
                .any(|e| e.extension_name_as_c_str() == Ok(ext));
            if !has {
                continue;
            }
            let props = instance.get_physical_device_properties(pdev);
            let name = props
                .device_name_as_c_str()
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
            let prio = [1.0f32];
            let queues = [vk::DeviceQueueCreateInfo::default()
                .queue_family_index(0)
                .queue_priorities(&prio)];
            let exts = [ext.as_ptr()];
            let mut feat = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default()
                .pipeline_executable_info(true);
            let device = instance
                .create_device(
                    pdev,
                    &vk::DeviceCreateInfo::default()
                        .queue_create_infos(&queues)
                        .enabled_extension_names(&exts)
                        .push_next(&mut feat),
                    None,
                )
                .map_err(|e| format!("vkCreateDevice: {e}"))?;
            let exec = ash::khr::pipeline_executable_properties::Device::new(&instance, &device);
            return Ok((name, device, exec));
        }
        Err("no Vulkan device with VK_KHR_pipeline_executable_properties".into())
    }
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let (name, device, exec) = match open() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vk_stats: {e}");
            std::process::exit(1);
        }
    };
    println!("# {name}");
    for (module_name, src) in shaders::all_modules() {
        if !module_name.contains(&filter) || module_name.contains("f16") {
            continue;
        }
        let result = spirv(&src)
            .and_then(|(words, m)| stats(&device, &exec, &words, &m).map_err(|e| e.to_string()));
        match result {
            Ok(rows) => {
                for (ep, stat, v) in rows {
                    println!("{module_name}\t{ep}\t{stat}\t{v}");
                }
            }
            Err(e) => println!("{module_name}\terror\t{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the tool reads translates to SPIR-V as it is given to the driver.
    #[test]
    fn every_module_translates_to_spirv() {
        for (name, src) in shaders::all_modules() {
            if name.contains("f16") {
                continue;
            }
            let (words, module) = spirv(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(words.first(), Some(&0x0723_0203), "{name}: SPIR-V magic");
            assert!(!module.entry_points.is_empty(), "{name}: no entry point");
        }
    }

    /// On a device with the extension (NVIDIA's driver has it; lavapipe in CI does not, and
    /// then this checks nothing), a matvec module yields statistics.
    #[test]
    fn a_matvec_module_has_statistics() {
        let Ok((_, device, exec)) = open() else {
            eprintln!("no Vulkan device with the extension; nothing checked");
            return;
        };
        let src =
            shaders::matvec_module(chord_resources::GgmlType::Q4K, false).expect("a Q4_K matvec");
        let (words, module) = spirv(&src).expect("SPIR-V");
        let rows = stats(&device, &exec, &words, &module).expect("statistics");
        assert!(rows.iter().any(|(ep, _, _)| ep == "main"), "{rows:?}");
    }
}
