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

mod device;
mod host;
mod pipelines;
pub mod plan;
mod preview;
pub mod shaders;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use image::{RgbImage, Rgba32FImage};
use wgpu::util::DeviceExt as _;

use crate::postfx::stack::{Op, Stack};
pub use plan::Fusion;
use plan::{Dispatch, Endpoint, FusedKey, Kernel, Plan, Tile, TileLimits};

use device::check_limits;
use host::{HostImage, HostOutput, Workspace};
use pipelines::{compile_pipelines, compile_scoped, group0_entries, PipelineLayouts};
pub use preview::PreviewTarget;

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

    /// The tile grid for an image under the device's (and any forced) limits.
    pub(super) fn tiles(&self, width: u32, height: u32, halo: u32) -> Result<Vec<Tile>, GpuError> {
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

    pub(super) fn check_texture_size(&self, w: u32, h: u32) -> Result<(), GpuError> {
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
    pub(super) fn scoped<T>(&self, f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
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

    pub(super) fn lost_reason(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|slot| slot.clone())
    }

    pub(super) fn lost_or(&self, error: GpuError) -> GpuError {
        match self.lost_reason() {
            Some(reason) => GpuError::DeviceLost(reason),
            None => error,
        }
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

pub(super) fn extent(width: u32, height: u32) -> wgpu::Extent3d {
    wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 1,
    }
}
