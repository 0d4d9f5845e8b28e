//! Host images in and out: CPU pictures uploaded into the working buffers a tile at a time,
//! run through the plan, read back and stitched (tiles overlap by the neighbourhood ops'
//! reach, so tiled output equals untiled output); the work buffers kept between runs.

use super::*;

/// Work buffers, kept between runs.
pub(super) struct Workspace {
    pub(super) pixels: u64,
    pub(super) img: wgpu::Buffer,
    pub(super) plane: wgpu::Buffer,
    pub(super) temporaries: Option<[wgpu::Buffer; 4]>,
    pub(super) readback: Option<wgpu::Buffer>,
}

/// A CPU image going in.
#[derive(Clone, Copy)]
pub(super) enum HostImage<'a> {
    Linear(&'a Rgba32FImage),
    Rgb8(&'a RgbImage),
}

/// A CPU image coming out.
pub(super) enum HostOutput {
    Linear(Rgba32FImage),
    Rgb8(RgbImage),
}

impl GpuRunner {
    /// The work buffers for tiles of up to `pixels`, (re)allocated when too small.
    pub(super) fn ensure_workspace<'a>(
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

    /// Records one tile's dispatches (headers from `first_header` on).
    pub(super) fn encode_tile(
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
    pub(super) fn read_buffer(
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
    pub(super) fn run_host(
        &self,
        source: HostImage<'_>,
        ops: &[Op],
    ) -> Result<HostOutput, GpuError> {
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

/// Writes a tile's pixels (with halo) into the work buffers; returns the buffer the result
/// will be in and its byte size.
pub(super) fn upload_tile<'a>(
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
pub(super) fn write_core(output: &mut HostOutput, width: u32, tile: &Tile, bytes: &[u8]) {
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
