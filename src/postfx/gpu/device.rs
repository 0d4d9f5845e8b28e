//! Choosing the GPU when the CLI, tests and benches run without a window: the adapter ranked
//! best (hardware before software, Vulkan/Metal/DX12 before GL), checked against the limits
//! the shaders need.

use super::*;

impl GpuRunner {
    /// A runner on a device of its own, for the CLI and tests: the best adapter there is
    /// (a discrete GPU before an integrated one before a software one such as lavapipe;
    /// `WGPU_BACKEND` picks a backend). Never use this in the studio: share eframe's device.
    pub fn headless() -> Result<Self, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let mut rejected = Vec::new();
        let mut usable: Vec<wgpu::Adapter> = Vec::new();
        for adapter in adapters {
            let info = adapter.get_info();
            let compute = adapter
                .get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS);
            if compute && check_limits(&adapter.limits()).is_ok() {
                usable.push(adapter);
            } else {
                rejected.push(format!("{} ({:?})", info.name, info.backend));
            }
        }
        usable.sort_by_key(|a| adapter_rank(&a.get_info()));
        let Some(adapter) = usable.into_iter().next() else {
            return Err(GpuError::NoAdapter {
                detail: if rejected.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (found without enough compute support: {})",
                        rejected.join(", ")
                    )
                },
            });
        };
        let info = adapter.get_info();
        let description = describe_adapter(&info);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("atelier postfx"),
            // What the adapter can do: the GL backend would otherwise get WebGL2 limits.
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice {
            adapter: description.clone(),
            reason: e.to_string(),
        })?;
        let lost = Arc::new(Mutex::new(None));
        let lost_in_callback = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost_in_callback.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        // Everything the runner does is inside error scopes; anything else is reported,
        // not turned into wgpu's default panic.
        device.on_uncaptured_error(Arc::new(|error: wgpu::Error| {
            eprintln!("atelier postfx: uncaptured GPU error: {error}");
        }));
        let mut runner = Self::new(device, queue)?;
        runner.description = description;
        runner.lost = lost;
        Ok(runner)
    }
}

/// What the shaders need of a device.
pub(super) fn check_limits(limits: &wgpu::Limits) -> Result<(), GpuError> {
    let mut missing = Vec::new();
    if limits.max_storage_buffers_per_shader_stage < STORAGE_BUFFERS {
        missing.push(format!(
            "{STORAGE_BUFFERS} storage buffers per stage (has {})",
            limits.max_storage_buffers_per_shader_stage
        ));
    }
    if limits.max_storage_textures_per_shader_stage < 1 {
        missing.push("a storage texture per stage (has none)".to_owned());
    }
    if limits.max_compute_invocations_per_workgroup < WORKGROUP * WORKGROUP
        || limits.max_compute_workgroup_size_x < WORKGROUP
        || limits.max_compute_workgroup_size_y < WORKGROUP
    {
        missing.push(format!("{WORKGROUP}x{WORKGROUP} compute workgroups"));
    }
    if limits.max_bind_groups < 2 || limits.max_dynamic_uniform_buffers_per_pipeline_layout < 1 {
        missing.push("two bind groups with a dynamic uniform buffer".to_owned());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(GpuError::Unsupported(format!(
            "it lacks {} (was it created with WebGL2 limits? request `adapter.limits()`)",
            missing.join(", ")
        )))
    }
}

/// Lower is better: real GPUs first, then software ones; native APIs before GL.
pub(super) fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

pub(super) fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}
