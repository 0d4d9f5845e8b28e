//! The compute pipelines: the fixed ones compiled once per runner, the fused point-op passes
//! compiled on first use and cached per op sequence, and the bind groups and uniform data
//! each dispatch needs.

use super::*;

/// The two pipeline layouts: buffers only, and buffers plus the preview's textures.
pub(super) struct PipelineLayouts {
    pub(super) buffers: wgpu::PipelineLayout,
    pub(super) with_textures: wgpu::PipelineLayout,
}

impl PipelineLayouts {
    pub(super) fn pick(&self, textures: bool) -> &wgpu::PipelineLayout {
        if textures {
            &self.with_textures
        } else {
            &self.buffers
        }
    }
}

impl GpuRunner {
    pub(super) fn data_buffer(&self, plan: &Plan) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("postfx parameters"),
                contents: bytemuck::cast_slice(&plan.data),
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    /// One header per (tile, dispatch), at `header_stride` apart.
    pub(super) fn header_buffer(
        &self,
        tiles: &[Tile],
        full: (u32, u32),
        dispatches: &[Dispatch],
        flags: u32,
    ) -> wgpu::Buffer {
        let stride_words = (self.header_stride / 4) as usize;
        let mut words = vec![0_u32; (tiles.len() * dispatches.len()).max(1) * stride_words];
        for (t, tile) in tiles.iter().enumerate() {
            for (d, dispatch) in dispatches.iter().enumerate() {
                let at = (t * dispatches.len() + d) * stride_words;
                let (lx, ly) = (tile.core_x - tile.x, tile.core_y - tile.y);
                words[at..at + 16].copy_from_slice(&[
                    tile.w,
                    tile.h,
                    tile.x,
                    tile.y,
                    full.0,
                    full.1,
                    dispatch.offset,
                    dispatch.count,
                    lx,
                    ly,
                    lx + tile.core_w,
                    ly + tile.core_h,
                    flags,
                    0,
                    0,
                    0,
                ]);
            }
        }
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("postfx headers"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    pub(super) fn bind_group0(
        &self,
        ws: &Workspace,
        headers: &wgpu::Buffer,
        data: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        let temporary = |i: usize| {
            ws.temporaries
                .as_ref()
                .map_or(&self.dummy, |t| &t[i])
                .as_entire_binding()
        };
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("postfx group 0"),
            layout: &self.group0,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: headers,
                        offset: 0,
                        size: NonZeroU64::new(HEADER_BYTES),
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: ws.img.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: data.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: temporary(0),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: temporary(1),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: temporary(2),
                },
                wgpu::BindGroupEntry {
                    binding: 6,
                    resource: temporary(3),
                },
                wgpu::BindGroupEntry {
                    binding: 7,
                    resource: ws.plane.as_entire_binding(),
                },
            ],
        })
    }

    /// The pipeline of each dispatch; generated fused passes are compiled on first use.
    pub(super) fn pipelines_for(
        &self,
        dispatches: &[Dispatch],
    ) -> Result<Vec<wgpu::ComputePipeline>, GpuError> {
        dispatches
            .iter()
            .map(|dispatch| match &dispatch.fused {
                Some(key) => self.fused_pipeline(key),
                None => self
                    .pipelines
                    .get(&dispatch.kernel)
                    .cloned()
                    .ok_or_else(|| {
                        GpuError::Wgpu(format!("no pipeline for {:?}", dispatch.kernel))
                    }),
            })
            .collect()
    }

    pub(super) fn fused_pipeline(&self, key: &FusedKey) -> Result<wgpu::ComputePipeline, GpuError> {
        let mut cache = self.fused.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pipeline) = cache.get(key) {
            return Ok(pipeline.clone());
        }
        let names: Vec<&str> = key.ops.iter().map(|op| op.name()).collect();
        let what = format!(
            "shaders/pointwise.wgsl generated for [{}] ({:?} -> {:?})",
            names.join(", "),
            key.source,
            key.sink
        );
        let module = compile_scoped(&self.device, &what, || {
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&what),
                    source: wgpu::ShaderSource::Wgsl(shaders::fused_source(key).into()),
                })
        })?;
        let entry = Kernel::Pointwise.entry();
        let pipeline = compile_scoped(&self.device, &what, || {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&what),
                    layout: Some(self.layouts.pick(key.uses_textures())),
                    module: &module,
                    entry_point: Some(&entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })?;
        if cache.len() >= MAX_FUSED_PIPELINES {
            cache.clear();
        }
        cache.insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }
}

pub(super) fn group0_entries() -> Vec<wgpu::BindGroupLayoutEntry> {
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    vec![
        wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: NonZeroU64::new(HEADER_BYTES),
            },
            count: None,
        },
        storage(1, false),
        storage(2, true),
        storage(3, false),
        storage(4, false),
        storage(5, false),
        storage(6, false),
        storage(7, false),
    ]
}

/// Runs `f` inside validation and out-of-memory scopes; what they catch becomes a
/// [`GpuError::Shader`] naming `what`.
pub(super) fn compile_scoped<T>(
    device: &wgpu::Device,
    what: &str,
    f: impl FnOnce() -> T,
) -> Result<T, GpuError> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    match validation.or(oom) {
        Some(error) => Err(GpuError::Shader {
            module: what.to_owned(),
            message: error.to_string(),
        }),
        None => Ok(value),
    }
}

/// Compiles every fixed shader module and pipeline, each inside error scopes so a failure
/// names its file and entry point.
pub(super) fn compile_pipelines(
    device: &wgpu::Device,
    layouts: &PipelineLayouts,
) -> Result<HashMap<Kernel, wgpu::ComputePipeline>, GpuError> {
    let mut modules = HashMap::new();
    for id in shaders::fixed_modules() {
        let name = shaders::module_name(id);
        let module = compile_scoped(device, &name, || {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&name),
                source: wgpu::ShaderSource::Wgsl(shaders::module_source(id).into()),
            })
        })?;
        modules.insert(id, module);
    }
    let mut pipelines = HashMap::new();
    for kernel in Kernel::all_fixed() {
        let Some(module) = modules.get(&kernel.module()) else {
            continue;
        };
        let entry = kernel.entry();
        let name = format!("{} ({entry})", shaders::module_name(kernel.module()));
        let pipeline = compile_scoped(device, &name, || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&entry),
                layout: Some(layouts.pick(kernel.uses_textures())),
                module,
                entry_point: Some(&entry),
                compilation_options: Default::default(),
                cache: None,
            })
        })?;
        pipelines.insert(kernel, pipeline);
    }
    Ok(pipelines)
}
