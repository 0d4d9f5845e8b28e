//! The wgpu compute path of the adjustment stack: [`GpuRunner`] runs a [`Stack`] with the
//! WGSL shaders in `shaders/` (one file per op, mirroring [`crate::postfx::cpu`] line by
//! line), held within 1/255 of the CPU reference (`tests/postfx_gpu.rs`).
//!
//! # Two ways in
//! - **Export / CLI** ([`GpuRunner::apply_rgb8`], [`GpuRunner::apply_linear`]): a CPU image
//!   in, a CPU image out (uploaded, processed, read back, waited for).
//! - **Studio preview** ([`GpuRunner::preview`]): a source texture already on the GPU in, a
//!   [`PreviewTarget`] texture out, nothing read back and nothing waited for. Wiring it into
//!   egui (eframe's `wgpu_render_state`, so there is one device for the window and the
//!   adjustments):
//!
//! ```text
//! let rs = cc.wgpu_render_state.as_ref().expect("the wgpu renderer");
//! let runner = GpuRunner::new(rs.device.clone(), rs.queue.clone())?;    // once
//! let source = runner.upload_rgb8(&image)?;                                // per image
//! let target = PreviewTarget::new(&runner, image.width(), image.height())?;
//! let id = rs.renderer.write().register_native_texture(
//!     &rs.device, target.display_view(), wgpu::FilterMode::Linear);      // per image
//! runner.preview(&source, &target, &stack)?;   // whenever the stack changes; then
//! ui.ctx().request_repaint();                  // egui samples the texture next frame
//! ```
//!
//! The target is an `rgba8unorm` texture written through a storage view with the sRGB
//! encode done in the shader; egui samples it through a plain `rgba8unorm` view
//! ([`PreviewTarget::display_view`]): egui-wgpu 0.37 treats sampled values as gamma-encoded,
//! as it does its own textures (an `-srgb` view would decode twice). A source may be
//! `rgba8unorm` / `bgra8unorm` (taken as sRGB-encoded, decoded exactly by table),
//! `*-srgb` (decoded by the sampler hardware), or `rgba16float` / `rgba32float` (linear).
//!
//! # How it runs
//! The stack becomes a [`plan::Plan`]: consecutive per-pixel ops are fused into one pass
//! (see [`Fusion`]) generated from `shaders/pointwise.wgsl` for that op sequence: straight-line
//! calls of each op's `<op>_apply`, reading the source (texture, 8-bit words or the working
//! image) and writing the target itself when it is the first or last pass. Generated passes
//! are compiled on first use and cached per op sequence, so moving a slider never recompiles;
//! adding or reordering ops compiles one new pass. Unsharp mask and denoise run as separable
//! passes. The working image is straight linear RGBA `f32` in storage buffers (no
//! read-write storage textures, which many devices lack). Images bigger than one buffer
//! may hold (the device's buffer-binding limits, its `max_texture_dimension_2d`, or a
//! forced [`GpuRunner::with_tile_side`]) run in tiles that overlap by the neighbourhood
//! ops' reach, so tiled output equals untiled output.
//!
//! The fixed pipelines (one per op file, the blur and denoise passes, loading and storing)
//! are compiled once in [`GpuRunner::new`]; work buffers are kept between runs and grown
//! when needed. Every GPU call runs inside error scopes, so a shader, memory or
//! device failure comes back as a [`GpuError`] instead of wgpu's default panic.

pub mod plan;
pub mod shaders;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use image::{RgbImage, Rgba32FImage};
use wgpu::util::DeviceExt as _;

use crate::postfx::stack::{Op, Stack};
pub use plan::Fusion;
use plan::{Dispatch, Endpoint, FusedKey, Kernel, Plan, Tile, TileLimits};

/// Errors of the GPU path. Each says what failed in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No usable adapter.
    #[error(
        "no GPU adapter with compute shaders was found{detail}; install a Vulkan driver (on \
         Debian/Ubuntu the software one is `mesa-vulkan-drivers`, lavapipe)"
    )]
    NoAdapter {
        /// What was found instead, if anything.
        detail: String,
    },
    /// The adapter refused to open a device.
    #[error("could not open a device on {adapter}: {reason}")]
    RequestDevice { adapter: String, reason: String },
    /// The device lacks something the shaders need.
    #[error("the GPU device cannot run the adjustment shaders: {0}")]
    Unsupported(String),
    /// A shader did not compile (or a pipeline could not be made from it).
    #[error("{module}: shader failed to compile: {message}")]
    Shader { module: String, message: String },
    /// An allocation failed.
    #[error("the GPU ran out of memory: {0}")]
    OutOfMemory(String),
    /// The device was lost (driver reset, GPU removed).
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// wgpu refused a command (a bug or an unexpected device limit).
    #[error("GPU error: {0}")]
    Wgpu(String),
    /// Reading results back failed.
    #[error("reading the result back from the GPU failed: {0}")]
    Readback(String),
    /// The image cannot be tiled within the device's limits.
    #[error(
        "a {width}x{height} image cannot be processed on this GPU: the stack's blur and denoise \
         reach {halo} px, more than its largest tile ({max_side} px) leaves room for"
    )]
    TooLarge {
        width: u32,
        height: u32,
        halo: u32,
        max_side: u32,
    },
    /// A texture handed to the preview does not fit (size, format, usage).
    #[error("{0}")]
    BadTexture(String),
}

/// Threads per workgroup side (`WORKGROUP` in `shaders/common.wgsl`).
const WORKGROUP: u32 = 16;
/// Bytes of one dispatch header (`Header` in `shaders/common.wgsl`).
const HEADER_BYTES: u64 = 64;
/// Bytes of one working pixel (linear RGBA f32).
const PIXEL_BYTES: u64 = 16;
/// Default cap on one tile's pixels (64 MiB per work buffer), whatever the device allows.
pub const DEFAULT_MAX_TILE_PIXELS: u64 = 2048 * 2048;
/// Storage buffers the shaders bind in one stage.
const STORAGE_BUFFERS: u32 = 7;

/// Runs adjustment stacks on a wgpu device (see the module docs).
pub struct GpuRunner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    description: String,
    pipelines: HashMap<Kernel, wgpu::ComputePipeline>,
    /// Generated fused point passes, compiled on first use of each op sequence.
    fused: Mutex<HashMap<FusedKey, wgpu::ComputePipeline>>,
    layouts: PipelineLayouts,
    group0: wgpu::BindGroupLayout,
    group1: wgpu::BindGroupLayout,
    header_stride: u64,
    device_limits: TileLimits,
    max_texture_side: u32,
    tile_side: Option<u32>,
    fusion: Fusion,
    workspace: Mutex<Option<Workspace>>,
    /// Set by the device-lost callback (devices this runner created only).
    lost: Arc<Mutex<Option<String>>>,
    /// Bound where a kernel does not use a temporary.
    dummy: wgpu::Buffer,
}

/// At most this many generated fused passes are kept (then the cache starts over).
const MAX_FUSED_PIPELINES: usize = 64;

/// The two pipeline layouts: buffers only, and buffers plus the preview's textures.
struct PipelineLayouts {
    buffers: wgpu::PipelineLayout,
    with_textures: wgpu::PipelineLayout,
}

impl PipelineLayouts {
    fn pick(&self, textures: bool) -> &wgpu::PipelineLayout {
        if textures {
            &self.with_textures
        } else {
            &self.buffers
        }
    }
}

/// Work buffers, kept between runs.
struct Workspace {
    pixels: u64,
    img: wgpu::Buffer,
    plane: wgpu::Buffer,
    temporaries: Option<[wgpu::Buffer; 4]>,
    readback: Option<wgpu::Buffer>,
}

/// A CPU image going in.
#[derive(Clone, Copy)]
enum HostImage<'a> {
    Linear(&'a Rgba32FImage),
    Rgb8(&'a RgbImage),
}

/// A CPU image coming out.
enum HostOutput {
    Linear(Rgba32FImage),
    Rgb8(RgbImage),
}

impl GpuRunner {
    /// A runner on an existing device (the studio passes eframe's). Compiles every pipeline.
    pub fn new(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self, GpuError> {
        let limits = device.limits();
        check_limits(&limits)?;
        let group0 = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("postfx group 0"),
            entries: &group0_entries(),
        });
        let group1 = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("postfx textures"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::WriteOnly,
                        format: wgpu::TextureFormat::Rgba8Unorm,
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                    count: None,
                },
            ],
        });
        let layouts = PipelineLayouts {
            buffers: device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("postfx buffers"),
                bind_group_layouts: &[Some(&group0)],
                immediate_size: 0,
            }),
            with_textures: device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("postfx buffers + textures"),
                bind_group_layouts: &[Some(&group0), Some(&group1)],
                immediate_size: 0,
            }),
        };
        let pipelines = compile_pipelines(&device, &layouts)?;
        let header_stride = HEADER_BYTES
            .max(u64::from(limits.min_uniform_buffer_offset_alignment))
            .next_multiple_of(HEADER_BYTES);
        let max_bytes = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let device_limits = TileLimits {
            max_side: limits.max_texture_dimension_2d.min(
                limits
                    .max_compute_workgroups_per_dimension
                    .saturating_mul(WORKGROUP),
            ),
            max_pixels: (max_bytes / PIXEL_BYTES).min(DEFAULT_MAX_TILE_PIXELS),
        };
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("postfx unused temporary"),
            size: PIXEL_BYTES,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(Self {
            device,
            queue,
            description: "the studio's GPU device".to_owned(),
            pipelines,
            fused: Mutex::new(HashMap::new()),
            layouts,
            group0,
            group1,
            header_stride,
            device_limits,
            max_texture_side: limits.max_texture_dimension_2d,
            tile_side: None,
            fusion: Fusion::default(),
            workspace: Mutex::new(None),
            lost: Arc::new(Mutex::new(None)),
            dummy,
        })
    }

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

    /// Processes tiles of at most `side` x `side` pixels (at least what the stack's halo
    /// needs, at most what the device allows): for tests of tiling on small images.
    pub fn with_tile_side(mut self, side: u32) -> Self {
        self.tile_side = Some(side.max(1));
        self
    }

    /// Chooses how per-pixel ops run (fused by default).
    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// The adapter in words, e.g. `llvmpipe (LLVM 19.1.7, 256 bits) (Vulkan, Cpu)`.
    pub fn adapter_description(&self) -> &str {
        &self.description
    }

    /// The device the runner works on.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue the runner submits to.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Applies a stack to an 8-bit sRGB image (the GPU twin of [`crate::postfx::apply_to_rgb8`]):
    /// decoded by the CPU's exact table, processed in linear light, encoded and quantised in
    /// the shader. An identity stack returns an identical copy.
    pub fn apply_rgb8(&self, image: &RgbImage, stack: &Stack) -> Result<RgbImage, GpuError> {
        if stack.is_identity() {
            return Ok(image.clone());
        }
        self.apply_ops_rgb8(image, &stack.effective_ops())
    }

    /// Applies `ops` in order (sanitised; identity ops are applied too, as
    /// [`crate::postfx::cpu::apply_op`] does) to an 8-bit sRGB image.
    pub fn apply_ops_rgb8(&self, image: &RgbImage, ops: &[Op]) -> Result<RgbImage, GpuError> {
        match self.run_host(HostImage::Rgb8(image), ops)? {
            HostOutput::Rgb8(out) => Ok(out),
            HostOutput::Linear(_) => Err(GpuError::Wgpu("unexpected output kind".into())),
        }
    }

    /// Applies a stack to a linear image (the GPU twin of [`crate::postfx::apply_stack`]).
    pub fn apply_linear(
        &self,
        image: &Rgba32FImage,
        stack: &Stack,
    ) -> Result<Rgba32FImage, GpuError> {
        self.apply_ops_linear(image, &stack.effective_ops())
    }

    /// Applies `ops` in order (sanitised, identities applied too) to a linear image.
    pub fn apply_ops_linear(
        &self,
        image: &Rgba32FImage,
        ops: &[Op],
    ) -> Result<Rgba32FImage, GpuError> {
        match self.run_host(HostImage::Linear(image), ops)? {
            HostOutput::Linear(out) => Ok(out),
            HostOutput::Rgb8(_) => Err(GpuError::Wgpu("unexpected output kind".into())),
        }
    }

    /// How many tiles a `width` x `height` image takes with this stack (1 when it fits).
    pub fn tile_count(&self, width: u32, height: u32, stack: &Stack) -> Result<usize, GpuError> {
        let plan = Plan::new(&stack.effective_ops(), self.fusion);
        Ok(self.tiles(width, height, plan.halo)?.len())
    }

    /// Uploads an 8-bit sRGB image as a preview source texture (`rgba8unorm`, sampled).
    pub fn upload_rgb8(&self, image: &RgbImage) -> Result<wgpu::Texture, GpuError> {
        let (w, h) = image.dimensions();
        self.check_texture_size(w, h)?;
        let rgba: Vec<u8> = image
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
            .collect();
        self.scoped(|| {
            let texture = self.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("postfx preview source"),
                size: extent(w, h),
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba8Unorm,
                usage: wgpu::TextureUsages::TEXTURE_BINDING
                    | wgpu::TextureUsages::COPY_DST
                    | wgpu::TextureUsages::COPY_SRC,
                view_formats: &[],
            });
            self.queue.write_texture(
                texture.as_image_copy(),
                &rgba,
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(4 * w),
                    rows_per_image: Some(h),
                },
                extent(w, h),
            );
            Ok(texture)
        })
    }

    /// Runs `stack` from `source` into `target` on the GPU and returns at once (the work is
    /// submitted, not waited for): the studio's preview path, no CPU round trip. Both must
    /// have the same size; see the module docs for the source formats.
    pub fn preview(
        &self,
        source: &wgpu::Texture,
        target: &PreviewTarget,
        stack: &Stack,
    ) -> Result<wgpu::SubmissionIndex, GpuError> {
        let (w, h) = (source.width(), source.height());
        if (w, h) != (target.texture.width(), target.texture.height()) {
            return Err(GpuError::BadTexture(format!(
                "preview source is {w}x{h} but the target is {}x{}",
                target.texture.width(),
                target.texture.height()
            )));
        }
        if *source == target.texture {
            return Err(GpuError::BadTexture(
                "the preview source and target must be different textures".into(),
            ));
        }
        if !source
            .usage()
            .contains(wgpu::TextureUsages::TEXTURE_BINDING)
        {
            return Err(GpuError::BadTexture(
                "the preview source texture needs TEXTURE_BINDING usage".into(),
            ));
        }
        let flags = match source.format() {
            wgpu::TextureFormat::Rgba8Unorm | wgpu::TextureFormat::Bgra8Unorm => 1,
            wgpu::TextureFormat::Rgba8UnormSrgb
            | wgpu::TextureFormat::Bgra8UnormSrgb
            | wgpu::TextureFormat::Rgba16Float
            | wgpu::TextureFormat::Rgba32Float => 0,
            other => {
                return Err(GpuError::BadTexture(format!(
                    "preview source format {other:?} is not supported (use rgba8unorm, \
                     rgba8unorm-srgb, rgba16float or rgba32float)"
                )))
            }
        };
        let plan = Plan::new(&stack.effective_ops(), self.fusion);
        let tiles = self.tiles(w, h, plan.halo)?;
        let dispatches = plan.with_io(Endpoint::Texture);
        let pipelines = self.pipelines_for(&dispatches)?;
        let max_pixels = tiles.iter().map(Tile::pixels).max().unwrap_or(1);
        let mut guard = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.scoped(|| {
            let ws = self.ensure_workspace(&mut guard, max_pixels, plan.needs_temporaries, false);
            let data = self.data_buffer(&plan);
            let headers = self.header_buffer(&tiles, (w, h), &dispatches, flags);
            let bind0 = self.bind_group0(ws, &headers, &data);
            let source_view = source.create_view(&wgpu::TextureViewDescriptor::default());
            let bind1 = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("postfx preview textures"),
                layout: &self.group1,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::TextureView(&source_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&target.storage_view),
                    },
                ],
            });
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("postfx preview"),
                });
            for (t, tile) in tiles.iter().enumerate() {
                self.encode_tile(
                    &mut encoder,
                    (&bind0, Some(&bind1)),
                    &dispatches,
                    &pipelines,
                    t * dispatches.len(),
                    tile,
                );
            }
            Ok(self.queue.submit([encoder.finish()]))
        });
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Waits until the GPU has finished a submission (e.g. of [`GpuRunner::preview`]).
    pub fn wait(&self, submission: wgpu::SubmissionIndex) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| self.lost_or(GpuError::Wgpu(e.to_string())))
    }

    /// Reads an 8-bit texture back as an RGB image (waits for the GPU): what the preview
    /// shows, for tests and "save what you see". Formats: rgba8unorm(-srgb) read as stored.
    pub fn read_rgb8(&self, texture: &wgpu::Texture) -> Result<RgbImage, GpuError> {
        if !matches!(
            texture.format(),
            wgpu::TextureFormat::Rgba8Unorm | wgpu::TextureFormat::Rgba8UnormSrgb
        ) || !texture.usage().contains(wgpu::TextureUsages::COPY_SRC)
        {
            return Err(GpuError::BadTexture(format!(
                "cannot read back a {:?} texture without COPY_SRC (rgba8unorm with COPY_SRC \
                 is needed)",
                texture.format()
            )));
        }
        let (w, h) = (texture.width(), texture.height());
        let row_bytes = 4 * w;
        let padded = row_bytes.next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        self.scoped(|| {
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("postfx texture readback"),
                size: u64::from(padded) * u64::from(h),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("postfx texture readback"),
                });
            encoder.copy_texture_to_buffer(
                texture.as_image_copy(),
                wgpu::TexelCopyBufferInfo {
                    buffer: &buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(padded),
                        rows_per_image: Some(h),
                    },
                },
                extent(w, h),
            );
            self.queue.submit([encoder.finish()]);
            let mut out = RgbImage::new(w, h);
            self.read_buffer(&buffer, u64::from(padded) * u64::from(h), |bytes| {
                for (y, row) in bytes.chunks_exact(padded as usize).enumerate() {
                    for (x, px) in row[..row_bytes as usize].chunks_exact(4).enumerate() {
                        out.put_pixel(x as u32, y as u32, image::Rgb([px[0], px[1], px[2]]));
                    }
                }
            })?;
            Ok(out)
        })
    }

    /// Compiles WGSL on this runner's device and reports problems as [`GpuError::Shader`]
    /// naming `name` (for shader development and tests; the runner's own shaders were
    /// compiled and checked in [`GpuRunner::new`]).
    pub fn validate_wgsl(&self, name: &str, source: &str) -> Result<(), GpuError> {
        compile_scoped(&self.device, name, || {
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
        })
        .map(drop)
    }

    // -----------------------------------------------------------------------------------------

    /// The tile grid for an image under the device's (and any forced) limits.
    fn tiles(&self, width: u32, height: u32, halo: u32) -> Result<Vec<Tile>, GpuError> {
        let mut limits = self.device_limits;
        if let Some(side) = self.tile_side {
            // Room for the halo and a core of at least 16 pixels, within the device's limits.
            let side = side.max(2 * halo + 16).min(self.device_limits.max_side);
            limits.max_side = side;
            limits.max_pixels = limits.max_pixels.min(u64::from(side) * u64::from(side));
        }
        plan::tile_grid(width, height, halo, limits).map_err(|plan::NoTiling| GpuError::TooLarge {
            width,
            height,
            halo,
            max_side: limits
                .max_side
                .min((limits.max_pixels as f64).sqrt() as u32),
        })
    }

    fn check_texture_size(&self, w: u32, h: u32) -> Result<(), GpuError> {
        if w == 0 || h == 0 || w > self.max_texture_side || h > self.max_texture_side {
            return Err(GpuError::BadTexture(format!(
                "a {w}x{h} preview texture is not possible on this device (1 to {} px a side); \
                 scale the preview down",
                self.max_texture_side
            )));
        }
        Ok(())
    }

    /// Runs `f` inside out-of-memory, validation and internal error scopes and turns what
    /// they caught into a [`GpuError`].
    fn scoped<T>(&self, f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let result = f();
        let internal = pollster::block_on(internal.pop());
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(reason) = self.lost_reason() {
            return Err(GpuError::DeviceLost(reason));
        }
        if let Some(error) = oom {
            return Err(GpuError::OutOfMemory(error.to_string()));
        }
        if let Some(error) = validation.or(internal) {
            return Err(GpuError::Wgpu(error.to_string()));
        }
        result
    }

    fn lost_reason(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|slot| slot.clone())
    }

    fn lost_or(&self, error: GpuError) -> GpuError {
        match self.lost_reason() {
            Some(reason) => GpuError::DeviceLost(reason),
            None => error,
        }
    }

    /// The work buffers for tiles of up to `pixels`, (re)allocated when too small.
    fn ensure_workspace<'a>(
        &self,
        slot: &'a mut Option<Workspace>,
        pixels: u64,
        temporaries: bool,
        readback: bool,
    ) -> &'a Workspace {
        let fits = slot.as_ref().is_some_and(|ws| {
            ws.pixels >= pixels
                && (!temporaries || ws.temporaries.is_some())
                && (!readback || ws.readback.is_some())
        });
        if !fits {
            // Keep what the old workspace had, so alternating runs do not thrash.
            let old = slot.take();
            let pixels = pixels.max(old.as_ref().map_or(0, |ws| ws.pixels));
            let temporaries =
                temporaries || old.as_ref().is_some_and(|ws| ws.temporaries.is_some());
            let readback = readback || old.as_ref().is_some_and(|ws| ws.readback.is_some());
            drop(old);
            let buffer = |label: &str, bytes: u64, usage: wgpu::BufferUsages| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: bytes.max(PIXEL_BYTES),
                    usage,
                    mapped_at_creation: false,
                })
            };
            let storage = wgpu::BufferUsages::STORAGE;
            let copy = wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
            *slot = Some(Workspace {
                pixels,
                img: buffer("postfx image", pixels * PIXEL_BYTES, storage | copy),
                // Two words per pixel: 8-bit pixels, or luminance and its blur.
                plane: buffer("postfx plane", pixels * 8, storage | copy),
                temporaries: temporaries.then(|| {
                    ["postfx t0", "postfx t1", "postfx t2", "postfx t3"]
                        .map(|label| buffer(label, pixels * PIXEL_BYTES, storage))
                }),
                readback: readback.then(|| {
                    buffer(
                        "postfx readback",
                        pixels * PIXEL_BYTES,
                        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    )
                }),
            });
        }
        match slot {
            Some(ws) => ws,
            None => unreachable!("the workspace was just made"),
        }
    }

    fn data_buffer(&self, plan: &Plan) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("postfx parameters"),
                contents: bytemuck::cast_slice(&plan.data),
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    /// One header per (tile, dispatch), at `header_stride` apart.
    fn header_buffer(
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

    fn bind_group0(
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
    fn pipelines_for(
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

    fn fused_pipeline(&self, key: &FusedKey) -> Result<wgpu::ComputePipeline, GpuError> {
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

    /// Records one tile's dispatches (headers from `first_header` on).
    fn encode_tile(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (bind0, bind1): (&wgpu::BindGroup, Option<&wgpu::BindGroup>),
        dispatches: &[Dispatch],
        pipelines: &[wgpu::ComputePipeline],
        first_header: usize,
        tile: &Tile,
    ) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("postfx tile"),
            timestamp_writes: None,
        });
        for (d, (dispatch, pipeline)) in dispatches.iter().zip(pipelines).enumerate() {
            pass.set_pipeline(pipeline);
            let offset = (first_header + d) as u64 * self.header_stride;
            pass.set_bind_group(0, bind0, &[offset as u32]);
            if dispatch.uses_textures() {
                pass.set_bind_group(1, bind1, &[]);
            }
            pass.dispatch_workgroups(tile.w.div_ceil(WORKGROUP), tile.h.div_ceil(WORKGROUP), 1);
        }
    }

    /// Maps `bytes` of a MAP_READ buffer (after the copy into it was submitted), waits, hands
    /// the bytes to `read` and unmaps.
    fn read_buffer(
        &self,
        buffer: &wgpu::Buffer,
        bytes: u64,
        read: impl FnOnce(&[u8]),
    ) -> Result<(), GpuError> {
        let slice = buffer.slice(..bytes);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.lost_or(GpuError::Readback(e.to_string())))?;
        receiver
            .recv()
            .map_err(|_| self.lost_or(GpuError::Readback("the GPU never answered".into())))?
            .map_err(|e| self.lost_or(GpuError::Readback(e.to_string())))?;
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            read(&view);
        }
        buffer.unmap();
        Ok(())
    }

    /// The export path: a CPU image through the ops, tile by tile, read back.
    fn run_host(&self, source: HostImage<'_>, ops: &[Op]) -> Result<HostOutput, GpuError> {
        let (w, h) = match source {
            HostImage::Linear(img) => img.dimensions(),
            HostImage::Rgb8(img) => img.dimensions(),
        };
        let mut output = match source {
            HostImage::Linear(_) => HostOutput::Linear(Rgba32FImage::new(w, h)),
            HostImage::Rgb8(_) => HostOutput::Rgb8(RgbImage::new(w, h)),
        };
        if w == 0 || h == 0 {
            return Ok(output);
        }
        let plan = Plan::new(ops, self.fusion);
        let tiles = self.tiles(w, h, plan.halo)?;
        let dispatches = match source {
            HostImage::Linear(_) => plan.with_io(Endpoint::Image),
            HostImage::Rgb8(_) => plan.with_io(Endpoint::Words),
        };
        let pipelines = self.pipelines_for(&dispatches)?;
        let max_pixels = tiles.iter().map(Tile::pixels).max().unwrap_or(1);
        let mut guard = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.scoped(|| {
            let ws = self.ensure_workspace(&mut guard, max_pixels, plan.needs_temporaries, true);
            let data = self.data_buffer(&plan);
            let headers = self.header_buffer(&tiles, (w, h), &dispatches, 0);
            let bind0 = self.bind_group0(ws, &headers, &data);
            let Some(readback) = ws.readback.as_ref() else {
                return Err(GpuError::Wgpu("no readback buffer".into()));
            };
            for (t, tile) in tiles.iter().enumerate() {
                let (result, bytes) = upload_tile(&self.queue, ws, source, tile);
                let mut encoder =
                    self.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("postfx export tile"),
                        });
                self.encode_tile(
                    &mut encoder,
                    (&bind0, None),
                    &dispatches,
                    &pipelines,
                    t * dispatches.len(),
                    tile,
                );
                encoder.copy_buffer_to_buffer(result, 0, readback, 0, bytes);
                self.queue.submit([encoder.finish()]);
                self.read_buffer(readback, bytes, |bytes| {
                    write_core(&mut output, w, tile, bytes);
                })?;
            }
            Ok(())
        });
        if result.is_err() {
            *guard = None;
        }
        result.map(|()| output)
    }
}

impl std::fmt::Debug for GpuRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRunner")
            .field("adapter", &self.description)
            .field("fusion", &self.fusion)
            .field("tile_side", &self.tile_side)
            .finish_non_exhaustive()
    }
}

/// The texture the preview writes and egui shows: `rgba8unorm` holding sRGB-encoded values,
/// which is what egui-wgpu 0.37 expects of a native texture (its shader treats sampled
/// values as gamma-encoded, like its own textures).
#[derive(Debug)]
pub struct PreviewTarget {
    texture: wgpu::Texture,
    storage_view: wgpu::TextureView,
    display_view: wgpu::TextureView,
}

impl PreviewTarget {
    /// A target of `width` x `height` on the runner's device.
    pub fn new(runner: &GpuRunner, width: u32, height: u32) -> Result<Self, GpuError> {
        runner.check_texture_size(width, height)?;
        runner.scoped(|| {
            let texture = runner.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("postfx preview"),
                size: extent(width, height),
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba8Unorm,
                usage: wgpu::TextureUsages::STORAGE_BINDING
                    | wgpu::TextureUsages::TEXTURE_BINDING
                    | wgpu::TextureUsages::COPY_SRC,
                view_formats: &[],
            });
            let storage_view = texture.create_view(&wgpu::TextureViewDescriptor {
                label: Some("postfx preview (storage)"),
                format: Some(wgpu::TextureFormat::Rgba8Unorm),
                usage: Some(wgpu::TextureUsages::STORAGE_BINDING),
                ..Default::default()
            });
            let display_view = texture.create_view(&wgpu::TextureViewDescriptor {
                label: Some("postfx preview (display)"),
                format: Some(wgpu::TextureFormat::Rgba8Unorm),
                usage: Some(wgpu::TextureUsages::TEXTURE_BINDING),
                ..Default::default()
            });
            Ok(Self {
                texture,
                storage_view,
                display_view,
            })
        })
    }

    /// The texture (rgba8unorm holding sRGB-encoded values).
    pub fn texture(&self) -> &wgpu::Texture {
        &self.texture
    }

    /// The view to hand egui (`Renderer::register_native_texture`): plain `rgba8unorm`; an
    /// `-srgb` view would be decoded by the sampler and then again by egui's shader.
    pub fn display_view(&self) -> &wgpu::TextureView {
        &self.display_view
    }
}

fn extent(width: u32, height: u32) -> wgpu::Extent3d {
    wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 1,
    }
}

/// Writes a tile's pixels (with halo) into the work buffers; returns the buffer the result
/// will be in and its byte size.
fn upload_tile<'a>(
    queue: &wgpu::Queue,
    ws: &'a Workspace,
    source: HostImage<'_>,
    tile: &Tile,
) -> (&'a wgpu::Buffer, u64) {
    let (x0, x1) = (tile.x as usize, (tile.x + tile.w) as usize);
    let rows = tile.y..tile.y + tile.h;
    match source {
        HostImage::Linear(img) => {
            let row_len = img.width() as usize * 4;
            let raw: &[f32] = img;
            let mut floats = Vec::with_capacity(tile.pixels() as usize * 4);
            for y in rows {
                let row = &raw[y as usize * row_len..(y as usize + 1) * row_len];
                floats.extend_from_slice(&row[x0 * 4..x1 * 4]);
            }
            queue.write_buffer(&ws.img, 0, bytemuck::cast_slice(&floats));
            (&ws.img, tile.pixels() * PIXEL_BYTES)
        }
        HostImage::Rgb8(img) => {
            let row_len = img.width() as usize * 3;
            let raw = img.as_raw();
            let mut words = Vec::with_capacity(tile.pixels() as usize);
            for y in rows {
                let row = &raw[y as usize * row_len..(y as usize + 1) * row_len];
                words.extend(row[x0 * 3..x1 * 3].chunks_exact(3).map(|p| {
                    u32::from(p[0]) | u32::from(p[1]) << 8 | u32::from(p[2]) << 16 | 0xff << 24
                }));
            }
            queue.write_buffer(&ws.plane, 0, bytemuck::cast_slice(&words));
            (&ws.plane, tile.pixels() * 4)
        }
    }
}

/// Copies a tile's core from its read-back bytes into the output image.
fn write_core(output: &mut HostOutput, width: u32, tile: &Tile, bytes: &[u8]) {
    let (lx, ly) = (
        (tile.core_x - tile.x) as usize,
        (tile.core_y - tile.y) as usize,
    );
    let (tw, cw) = (tile.w as usize, tile.core_w as usize);
    let width = width as usize;
    match output {
        HostOutput::Linear(img) => {
            let out: &mut [f32] = img;
            for r in 0..tile.core_h as usize {
                let src = ((ly + r) * tw + lx) * 16;
                let dst = ((tile.core_y as usize + r) * width + tile.core_x as usize) * 4;
                for (d, s) in out[dst..dst + cw * 4]
                    .iter_mut()
                    .zip(bytes[src..src + cw * 16].chunks_exact(4))
                {
                    *d = f32::from_ne_bytes([s[0], s[1], s[2], s[3]]);
                }
            }
        }
        HostOutput::Rgb8(img) => {
            let out: &mut [u8] = img;
            for r in 0..tile.core_h as usize {
                let src = ((ly + r) * tw + lx) * 4;
                let dst = ((tile.core_y as usize + r) * width + tile.core_x as usize) * 3;
                for (d, s) in out[dst..dst + cw * 3]
                    .chunks_exact_mut(3)
                    .zip(bytes[src..src + cw * 4].chunks_exact(4))
                {
                    d.copy_from_slice(&s[..3]);
                }
            }
        }
    }
}

fn group0_entries() -> Vec<wgpu::BindGroupLayoutEntry> {
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

/// What the shaders need of a device.
fn check_limits(limits: &wgpu::Limits) -> Result<(), GpuError> {
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
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
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

fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// Runs `f` inside validation and out-of-memory scopes; what they catch becomes a
/// [`GpuError::Shader`] naming `what`.
fn compile_scoped<T>(
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
fn compile_pipelines(
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
