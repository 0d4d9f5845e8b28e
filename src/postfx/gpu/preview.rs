//! The studio's preview path: a source texture already on the GPU in, a [`PreviewTarget`]
//! texture egui samples out, nothing read back and nothing waited for (plus `read_rgb8` and
//! `wait` for tests and tools).

use super::*;

impl GpuRunner {
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
