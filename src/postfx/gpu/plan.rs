//! Host-side planning of a GPU run, with no wgpu in it (unit-tested without a device): the
//! ops as a list of kernel dispatches with every parameter packed into one `f32` array (the
//! shaders' `data` binding), the halo the neighbourhood ops need, the tile grid, and the
//! memory traffic each kernel causes.
//!
//! Parameters are prepared exactly as the CPU reference prepares its "uniforms" (the same
//! functions: [`white_balance_gains`], [`hue_matrix`], [`curves_lut`], [`gaussian_kernel`]),
//! so the shaders start from bit-identical numbers.

use crate::postfx::colour::srgb8_to_linear_table;
use crate::postfx::cpu::{curves_lut, gaussian_kernel, hue_matrix, white_balance_gains};
use crate::postfx::stack::{LevelsChannel, Op};

/// The per-pixel ops, with their code in the fused pass (`shaders/pointwise.wgsl`) and their
/// shader file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PointOp {
    Exposure,
    Contrast,
    HighlightsShadows,
    WhiteBalance,
    Saturation,
    HueShift,
    Levels,
    Curves,
    Vignette,
}

impl PointOp {
    /// Every point op, in code order.
    pub const ALL: [PointOp; 9] = [
        PointOp::Exposure,
        PointOp::Contrast,
        PointOp::HighlightsShadows,
        PointOp::WhiteBalance,
        PointOp::Saturation,
        PointOp::HueShift,
        PointOp::Levels,
        PointOp::Curves,
        PointOp::Vignette,
    ];

    /// The op's code in the fused pass's program.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The op's stored name, which is also its shader file's stem and its entry point's
    /// prefix (`<name>_main`).
    pub fn name(self) -> &'static str {
        match self {
            PointOp::Exposure => "exposure",
            PointOp::Contrast => "contrast",
            PointOp::HighlightsShadows => "highlights_shadows",
            PointOp::WhiteBalance => "white_balance",
            PointOp::Saturation => "saturation",
            PointOp::HueShift => "hue_shift",
            PointOp::Levels => "levels",
            PointOp::Curves => "curves",
            PointOp::Vignette => "vignette",
        }
    }
}

/// The shader modules (each is `common.wgsl` plus the files named in
/// `super::shaders::module_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleId {
    /// One point op's own file.
    Point(PointOp),
    /// A generated fused point pass (`pointwise.wgsl` filled in for one run of ops).
    Fused,
    UnsharpMask,
    Denoise,
    Io,
}

/// Every compute entry point the runner uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// One point op on its own (`<op>_main`).
    Point(PointOp),
    /// A run of point ops in one pass (`pointwise_main` of a generated module; the run is
    /// the dispatch's [`FusedKey`]).
    Pointwise,
    UnsharpLuma,
    UnsharpBlurH,
    UnsharpApplyV,
    DenoiseEncode,
    DenoiseBoxH1,
    DenoiseCoefficientsV1,
    DenoiseBoxH2,
    DenoiseOutputV2,
    LoadRgb8,
    StoreRgb8,
    LoadTexture,
    StoreTexture,
}

impl Kernel {
    /// Every kernel of a fixed module (all but [`Kernel::Pointwise`], which is generated).
    pub fn all_fixed() -> Vec<Kernel> {
        let mut all: Vec<Kernel> = PointOp::ALL.iter().map(|&op| Kernel::Point(op)).collect();
        all.extend([
            Kernel::UnsharpLuma,
            Kernel::UnsharpBlurH,
            Kernel::UnsharpApplyV,
            Kernel::DenoiseEncode,
            Kernel::DenoiseBoxH1,
            Kernel::DenoiseCoefficientsV1,
            Kernel::DenoiseBoxH2,
            Kernel::DenoiseOutputV2,
            Kernel::LoadRgb8,
            Kernel::StoreRgb8,
            Kernel::LoadTexture,
            Kernel::StoreTexture,
        ]);
        all
    }

    /// The WGSL entry point.
    pub fn entry(self) -> String {
        match self {
            Kernel::Point(op) => format!("{}_main", op.name()),
            Kernel::Pointwise => "pointwise_main".into(),
            Kernel::UnsharpLuma => "unsharp_mask_luma".into(),
            Kernel::UnsharpBlurH => "unsharp_mask_blur_h".into(),
            Kernel::UnsharpApplyV => "unsharp_mask_apply_v".into(),
            Kernel::DenoiseEncode => "denoise_encode".into(),
            Kernel::DenoiseBoxH1 => "denoise_box_h1".into(),
            Kernel::DenoiseCoefficientsV1 => "denoise_coefficients_v1".into(),
            Kernel::DenoiseBoxH2 => "denoise_box_h2".into(),
            Kernel::DenoiseOutputV2 => "denoise_output_v2".into(),
            Kernel::LoadRgb8 => "load_rgb8".into(),
            Kernel::StoreRgb8 => "store_rgb8".into(),
            Kernel::LoadTexture => "load_texture".into(),
            Kernel::StoreTexture => "store_texture".into(),
        }
    }

    /// The module holding the entry point.
    pub fn module(self) -> ModuleId {
        match self {
            Kernel::Point(op) => ModuleId::Point(op),
            Kernel::Pointwise => ModuleId::Fused,
            Kernel::UnsharpLuma | Kernel::UnsharpBlurH | Kernel::UnsharpApplyV => {
                ModuleId::UnsharpMask
            }
            Kernel::DenoiseEncode
            | Kernel::DenoiseBoxH1
            | Kernel::DenoiseCoefficientsV1
            | Kernel::DenoiseBoxH2
            | Kernel::DenoiseOutputV2 => ModuleId::Denoise,
            Kernel::LoadRgb8 | Kernel::StoreRgb8 | Kernel::LoadTexture | Kernel::StoreTexture => {
                ModuleId::Io
            }
        }
    }

    /// Whether the kernel binds the texture group (group 1).
    pub fn uses_textures(self) -> bool {
        matches!(self, Kernel::LoadTexture | Kernel::StoreTexture)
    }

    /// Bytes of buffer/texture memory read plus written per pixel, counting each neighbour
    /// read once (as if caches caught every reuse): the floor of the kernel's traffic.
    pub fn traffic_bytes_per_pixel(self) -> u32 {
        const PX: u32 = 16; // one linear RGBA f32 pixel
        match self {
            Kernel::Point(_) | Kernel::Pointwise | Kernel::DenoiseEncode => 2 * PX,
            Kernel::UnsharpLuma => PX + 4,
            Kernel::UnsharpBlurH => 4 + 4,
            Kernel::UnsharpApplyV => 4 + 4 + 2 * PX,
            Kernel::DenoiseBoxH1 => PX + 2 * PX,
            Kernel::DenoiseCoefficientsV1 | Kernel::DenoiseBoxH2 => 4 * PX,
            Kernel::DenoiseOutputV2 => 4 * PX,
            Kernel::LoadRgb8 | Kernel::StoreRgb8 => 4 + PX,
            Kernel::LoadTexture | Kernel::StoreTexture => 4 + PX,
        }
    }
}

/// Where a fused point pass reads its pixels from, or writes them to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The working image (`img`, linear RGBA f32).
    Image,
    /// Packed 8-bit sRGB words in `plane` (export of 8-bit images).
    Words,
    /// The preview's source or target texture.
    Texture,
}

impl Endpoint {
    /// Bytes per pixel moved through this end.
    fn bytes(self) -> u32 {
        match self {
            Endpoint::Image => 16,
            Endpoint::Words | Endpoint::Texture => 4,
        }
    }
}

/// What a generated fused point pass is compiled for: its ops in order and its two ends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FusedKey {
    /// The pass starts with an unsharp mask's last step (vertical blur of the blurred
    /// luminance, detail added), which is per pixel given the horizontal blur.
    pub unsharp_first: bool,
    /// The point ops, in order.
    pub ops: Vec<PointOp>,
    /// The pass also writes the luminance plane (for an unsharp mask that follows).
    pub luma_out: bool,
    pub source: Endpoint,
    pub sink: Endpoint,
}

/// The program code of an unsharp mask's last step in a fused pass.
pub const UNSHARP_APPLY_CODE: u32 = 100;

/// Ops waiting to be emitted as one fused pass.
#[derive(Default)]
struct Run {
    /// The parameter offset of an unsharp mask whose last step opens the pass.
    unsharp: Option<u32>,
    /// Point ops and their parameter offsets.
    ops: Vec<(PointOp, u32)>,
}

impl FusedKey {
    /// Whether the generated module binds the texture group (group 1).
    pub fn uses_textures(&self) -> bool {
        self.source == Endpoint::Texture || self.sink == Endpoint::Texture
    }
}

/// One kernel dispatch of a plan: its parameters start at `offset` in [`Plan::data`];
/// `count` is the fused pass's op count and `fused` its compiled variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub kernel: Kernel,
    pub offset: u32,
    pub count: u32,
    pub fused: Option<FusedKey>,
}

impl Dispatch {
    fn new(kernel: Kernel, offset: u32) -> Self {
        Self {
            kernel,
            offset,
            count: 0,
            fused: None,
        }
    }

    /// Whether the dispatch binds the texture group (group 1).
    pub fn uses_textures(&self) -> bool {
        match &self.fused {
            Some(key) => key.uses_textures(),
            None => self.kernel.uses_textures(),
        }
    }

    /// Bytes read plus written per pixel (see [`Kernel::traffic_bytes_per_pixel`]).
    pub fn traffic_bytes_per_pixel(&self) -> u32 {
        match &self.fused {
            Some(key) => {
                key.source.bytes()
                    + key.sink.bytes()
                    + if key.unsharp_first { 8 } else { 0 }
                    + if key.luma_out { 4 } else { 0 }
            }
            None => self.kernel.traffic_bytes_per_pixel(),
        }
    }
}

/// How runs of per-pixel ops are executed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fusion {
    /// Consecutive per-pixel ops share one pass (`shaders/pointwise.wgsl`): one read and one
    /// write of the image per run instead of per op. The default.
    #[default]
    Fused,
    /// Every op in its own pass, with its own shader's entry point (for comparison and tests).
    PerOp,
}

/// Where the sRGB 8-bit -> linear table sits in [`Plan::data`].
pub const SRGB_TABLE_OFFSET: u32 = 0;

/// A stack's ops made ready for the GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Every parameter: the sRGB table first, then each op's numbers.
    pub data: Vec<f32>,
    /// The ops' dispatches in order (no loading or storing).
    pub dispatches: Vec<Dispatch>,
    /// How far (in pixels) an output pixel depends on its neighbours through the whole plan:
    /// tiles overlap by this much on each side.
    pub halo: u32,
    /// Whether the four vec4 temporaries (denoise) are needed.
    pub needs_temporaries: bool,
}

impl Plan {
    /// Plans `ops` (sanitised here; unknown ops and denoise at strength 0 do nothing, as on
    /// the CPU). Identity ops are *not* skipped: pass [`crate::postfx::Stack::effective_ops`]
    /// for that.
    pub fn new(ops: &[Op], fusion: Fusion) -> Plan {
        let mut plan = Plan {
            data: srgb8_to_linear_table().to_vec(),
            dispatches: Vec::new(),
            halo: 0,
            needs_temporaries: false,
        };
        let mut run = Run::default();
        for op in ops {
            let op = op.sanitized();
            if let Some(point) = plan.push_point_params(&op) {
                match fusion {
                    Fusion::Fused => run.ops.push(point),
                    Fusion::PerOp => plan
                        .dispatches
                        .push(Dispatch::new(Kernel::Point(point.0), point.1)),
                }
                continue;
            }
            match op {
                Op::UnsharpMask(p) => {
                    let kernel = gaussian_kernel(p.radius_px);
                    let offset = plan.offset();
                    plan.data
                        .extend([p.amount, p.threshold, kernel.len() as f32]);
                    plan.data.extend_from_slice(&kernel);
                    plan.halo += (kernel.len() / 2) as u32;
                    // Fused: the pending run writes the luminance plane as it stores, and
                    // the final vertical pass opens the next run.
                    if !plan.flush_run(&mut run, true) {
                        plan.dispatches
                            .push(Dispatch::new(Kernel::UnsharpLuma, offset));
                    }
                    plan.dispatches
                        .push(Dispatch::new(Kernel::UnsharpBlurH, offset));
                    match fusion {
                        Fusion::Fused => run.unsharp = Some(offset),
                        Fusion::PerOp => plan
                            .dispatches
                            .push(Dispatch::new(Kernel::UnsharpApplyV, offset)),
                    }
                }
                Op::Denoise(p) => {
                    if p.strength == 0.0 {
                        continue;
                    }
                    plan.flush_run(&mut run, false);
                    let eps = (0.1 * p.strength) * (0.1 * p.strength);
                    let offset = plan.offset();
                    plan.data.extend([p.radius_px as f32, eps]);
                    // a and b depend on a window of r; their means on another r.
                    plan.halo += 2 * p.radius_px;
                    plan.needs_temporaries = true;
                    for kernel in [
                        Kernel::DenoiseEncode,
                        Kernel::DenoiseBoxH1,
                        Kernel::DenoiseCoefficientsV1,
                        Kernel::DenoiseBoxH2,
                        Kernel::DenoiseOutputV2,
                    ] {
                        plan.dispatches.push(Dispatch::new(kernel, offset));
                    }
                }
                // Point ops were handled above; unknown ops do nothing.
                _ => {}
            }
        }
        plan.flush_run(&mut run, false);
        plan
    }

    fn offset(&self) -> u32 {
        self.data.len() as u32
    }

    /// Appends a point op's parameters; `None` for ops that are not per-pixel.
    fn push_point_params(&mut self, op: &Op) -> Option<(PointOp, u32)> {
        let offset = self.offset();
        let point = match op {
            Op::Exposure(p) => {
                self.data.push(p.ev.exp2());
                PointOp::Exposure
            }
            Op::Contrast(p) => {
                self.data.push(1.0 + p.amount);
                PointOp::Contrast
            }
            Op::HighlightsShadows(p) => {
                self.data.extend([p.highlights, p.shadows]);
                PointOp::HighlightsShadows
            }
            Op::WhiteBalance(p) => {
                self.data.extend(white_balance_gains(p));
                PointOp::WhiteBalance
            }
            Op::Saturation(p) => {
                self.data.extend([p.saturation, p.vibrance]);
                PointOp::Saturation
            }
            Op::HueShift(p) => {
                self.data.extend(hue_matrix(p).into_iter().flatten());
                PointOp::HueShift
            }
            Op::Levels(p) => {
                let per_channel = p.per_channel.unwrap_or([LevelsChannel::IDENTITY; 3]);
                for l in per_channel.iter().chain([&p.master()]) {
                    self.data
                        .extend([l.black, l.white - l.black, l.gamma, 1.0 / l.gamma]);
                }
                PointOp::Levels
            }
            Op::Curves(p) => {
                let lut = curves_lut(p);
                // The LUT follows the one-number parameter block.
                self.data.push((offset + 1) as f32);
                for channel in &lut.channels {
                    self.data.extend_from_slice(channel);
                }
                PointOp::Curves
            }
            Op::Vignette(p) => {
                self.data.extend([p.amount, p.midpoint, p.feather]);
                PointOp::Vignette
            }
            _ => return None,
        };
        Some((point, offset))
    }

    /// Emits the pending run as one fused dispatch (its program appended), writing the
    /// luminance plane too when `luma_out`; false when there was nothing to emit.
    fn flush_run(&mut self, run: &mut Run, luma_out: bool) -> bool {
        if run.unsharp.is_none() && run.ops.is_empty() {
            return false;
        }
        let offset = self.offset();
        if let Some(params) = run.unsharp {
            self.data.extend([UNSHARP_APPLY_CODE as f32, params as f32]);
        }
        for &(op, params) in &run.ops {
            self.data.extend([op.code() as f32, params as f32]);
        }
        self.dispatches.push(Dispatch {
            kernel: Kernel::Pointwise,
            offset,
            count: (run.ops.len() + usize::from(run.unsharp.is_some())) as u32,
            fused: Some(FusedKey {
                unsharp_first: run.unsharp.is_some(),
                ops: run.ops.iter().map(|&(op, _)| op).collect(),
                luma_out,
                source: Endpoint::Image,
                sink: Endpoint::Image,
            }),
        });
        *run = Run::default();
        true
    }

    /// The dispatches of a whole run from `end` (8-bit words or textures) back to `end`:
    /// a fused point pass at the start reads the source itself and one at the end writes the
    /// result itself; otherwise a separate load / store pass is added. An empty plan becomes
    /// one fused pass with no ops (a plain copy).
    pub fn with_io(&self, end: Endpoint) -> Vec<Dispatch> {
        let (load, store) = match end {
            Endpoint::Words => (Kernel::LoadRgb8, Kernel::StoreRgb8),
            Endpoint::Texture => (Kernel::LoadTexture, Kernel::StoreTexture),
            Endpoint::Image => return self.dispatches.clone(),
        };
        let mut all = self.dispatches.clone();
        if all.is_empty() {
            all.push(Dispatch {
                kernel: Kernel::Pointwise,
                offset: SRGB_TABLE_OFFSET,
                count: 0,
                fused: Some(FusedKey {
                    unsharp_first: false,
                    ops: Vec::new(),
                    luma_out: false,
                    source: Endpoint::Image,
                    sink: Endpoint::Image,
                }),
            });
        }
        match all.first_mut().and_then(|d| d.fused.as_mut()) {
            Some(key) => key.source = end,
            None => all.insert(0, Dispatch::new(load, SRGB_TABLE_OFFSET)),
        }
        match all.last_mut().and_then(|d| d.fused.as_mut()) {
            Some(key) => key.sink = end,
            None => all.push(Dispatch::new(store, SRGB_TABLE_OFFSET)),
        }
        all
    }

    /// Bytes read plus written per pixel by the ops' dispatches (ideal caches), not counting
    /// loading and storing.
    pub fn traffic_bytes_per_pixel(&self) -> u32 {
        self.dispatches
            .iter()
            .map(Dispatch::traffic_bytes_per_pixel)
            .sum()
    }
}

/// One tile of a run: the rectangle held in the work buffers (`x, y, w, h`, the core plus
/// the halo, clipped to the image) and the core it is responsible for writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub core_x: u32,
    pub core_y: u32,
    pub core_w: u32,
    pub core_h: u32,
}

impl Tile {
    /// Pixels in the work buffers.
    pub fn pixels(&self) -> u64 {
        u64::from(self.w) * u64::from(self.h)
    }
}

/// What one tile may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileLimits {
    /// Longest side of a tile (buffer rectangle) in pixels.
    pub max_side: u32,
    /// Most pixels in a tile.
    pub max_pixels: u64,
}

/// The image cannot be tiled within the limits (the halo leaves no room for a core).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoTiling;

/// The smallest core side worth a tile.
const MIN_CORE: u32 = 16;

/// Splits a `width` x `height` image into tiles whose buffer rectangles fit `limits`, each
/// core surrounded by `halo` pixels of its neighbours (clipped at the image's edges, where
/// clamp-to-edge then sees the image's own border, so tiled output equals untiled output).
/// One tile when the image fits; otherwise full-width strips when they fit, else squares.
pub fn tile_grid(
    width: u32,
    height: u32,
    halo: u32,
    limits: TileLimits,
) -> Result<Vec<Tile>, NoTiling> {
    if width == 0 || height == 0 {
        return Ok(Vec::new());
    }
    let side = limits.max_side;
    let fits_pixels = |w: u32, h: u32| u64::from(w) * u64::from(h) <= limits.max_pixels;
    let (core_w, core_h) = if width <= side && height <= side && fits_pixels(width, height) {
        (width, height)
    } else {
        let strip_rows = (limits.max_pixels / u64::from(width)).min(u64::from(side)) as u32;
        if width <= side && strip_rows >= 2 * halo + MIN_CORE {
            (width, strip_rows - 2 * halo)
        } else {
            let square = (limits.max_pixels as f64).sqrt().floor() as u32;
            let square = square.min(side);
            if square < 2 * halo + MIN_CORE {
                return Err(NoTiling);
            }
            (square - 2 * halo, square - 2 * halo)
        }
    };
    let mut tiles = Vec::new();
    for core_y in (0..height).step_by(core_h as usize) {
        for core_x in (0..width).step_by(core_w as usize) {
            let cw = core_w.min(width - core_x);
            let ch = core_h.min(height - core_y);
            let x = core_x.saturating_sub(halo);
            let y = core_y.saturating_sub(halo);
            let x_end = (core_x + cw).saturating_add(halo).min(width);
            let y_end = (core_y + ch).saturating_add(halo).min(height);
            tiles.push(Tile {
                x,
                y,
                w: x_end - x,
                h: y_end - y,
                core_x,
                core_y,
                core_w: cw,
                core_h: ch,
            });
        }
    }
    Ok(tiles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postfx::stack::{Denoise, Exposure, UnsharpMask, Vignette};

    #[test]
    fn consecutive_point_ops_fuse_and_neighbourhood_ops_split_runs() {
        let ops = [
            Op::Exposure(Exposure { ev: 1.0 }),
            Op::Vignette(Vignette {
                amount: -0.5,
                ..Vignette::IDENTITY
            }),
            Op::UnsharpMask(UnsharpMask {
                radius_px: 1.0,
                amount: 1.0,
                threshold: 0.0,
            }),
            Op::Exposure(Exposure { ev: -1.0 }),
        ];
        let plan = Plan::new(&ops, Fusion::Fused);
        let kernels: Vec<Kernel> = plan.dispatches.iter().map(|d| d.kernel).collect();
        assert_eq!(
            kernels,
            [Kernel::Pointwise, Kernel::UnsharpBlurH, Kernel::Pointwise]
        );
        assert_eq!(plan.halo, 3);
        // The first run writes the luminance for the blur; the second opens with the
        // unsharp mask's last step.
        let first = plan.dispatches[0].fused.as_ref().expect("fused");
        assert!(first.luma_out && !first.unsharp_first);
        assert_eq!(first.ops, [PointOp::Exposure, PointOp::Vignette]);
        let second = plan.dispatches[2].fused.as_ref().expect("fused");
        assert!(second.unsharp_first && !second.luma_out);
        assert_eq!(plan.dispatches[2].count, 2);
        // The program points at the exposure gain.
        let program = plan.dispatches[0].offset as usize;
        assert_eq!(plan.data[program], 0.0);
        assert_eq!(plan.data[plan.data[program + 1] as usize], 2.0);
        let program = plan.dispatches[2].offset as usize;
        assert_eq!(plan.data[program], UNSHARP_APPLY_CODE as f32);
        assert_eq!(plan.data[plan.data[program + 3] as usize], 0.5);

        let per_op = Plan::new(&ops, Fusion::PerOp);
        let kernels: Vec<Kernel> = per_op.dispatches.iter().map(|d| d.kernel).collect();
        assert_eq!(
            kernels,
            [
                Kernel::Point(PointOp::Exposure),
                Kernel::Point(PointOp::Vignette),
                Kernel::UnsharpLuma,
                Kernel::UnsharpBlurH,
                Kernel::UnsharpApplyV,
                Kernel::Point(PointOp::Exposure),
            ]
        );
        // With textures at both ends the fused passes load and store by themselves.
        let io = plan.with_io(Endpoint::Texture);
        assert_eq!(io.len(), 3);
        let first = io[0].fused.as_ref().expect("fused");
        assert_eq!(
            (first.source, first.sink),
            (Endpoint::Texture, Endpoint::Image)
        );
        let last = io[2].fused.as_ref().expect("fused");
        assert_eq!(
            (last.source, last.sink),
            (Endpoint::Image, Endpoint::Texture)
        );
        // Without a point pass at the start, a separate load and luminance pass.
        let usm = Plan::new(&ops[2..3], Fusion::Fused).with_io(Endpoint::Words);
        let kernels: Vec<Kernel> = usm.iter().map(|d| d.kernel).collect();
        assert_eq!(
            kernels,
            [
                Kernel::LoadRgb8,
                Kernel::UnsharpLuma,
                Kernel::UnsharpBlurH,
                Kernel::Pointwise
            ]
        );
        assert_eq!(usm[3].fused.as_ref().map(|k| k.sink), Some(Endpoint::Words));
        // Nothing to do: one copying pass.
        let empty = Plan::new(&[], Fusion::Fused).with_io(Endpoint::Texture);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].traffic_bytes_per_pixel(), 8);
    }

    #[test]
    fn denoise_at_zero_strength_plans_nothing_and_halo_adds_up() {
        let plan = Plan::new(&[Op::Denoise(Denoise::IDENTITY)], Fusion::Fused);
        assert!(plan.dispatches.is_empty());
        let plan = Plan::new(
            &[
                Op::Denoise(Denoise {
                    radius_px: 3,
                    strength: 0.5,
                }),
                Op::Denoise(Denoise {
                    radius_px: 2,
                    strength: 0.5,
                }),
            ],
            Fusion::Fused,
        );
        assert_eq!(plan.halo, 10);
        assert!(plan.needs_temporaries);
    }

    fn covers_exactly(tiles: &[Tile], w: u32, h: u32) {
        let mut seen = vec![0u8; (w * h) as usize];
        for t in tiles {
            assert!(t.core_x >= t.x && t.core_x + t.core_w <= t.x + t.w);
            assert!(t.core_y >= t.y && t.core_y + t.core_h <= t.y + t.h);
            for y in t.core_y..t.core_y + t.core_h {
                for x in t.core_x..t.core_x + t.core_w {
                    seen[(y * w + x) as usize] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn tiles_cover_every_pixel_once_within_limits() {
        let limits = TileLimits {
            max_side: 64,
            max_pixels: 64 * 64,
        };
        for (w, h, halo) in [
            (1, 1, 0),
            (17, 5, 3),
            (64, 64, 5),
            (150, 97, 9),
            (65, 300, 2),
        ] {
            let tiles = tile_grid(w, h, halo, limits).expect("tiles");
            covers_exactly(&tiles, w, h);
            for t in &tiles {
                assert!(t.w <= 64 && t.h <= 64 && t.pixels() <= 64 * 64, "{t:?}");
                // The halo is there wherever the image goes on.
                assert!(t.core_x - t.x == halo.min(t.core_x));
                assert!(t.x + t.w == (t.core_x + t.core_w + halo).min(w));
            }
        }
        assert_eq!(tile_grid(150, 97, 9, limits).expect("tiles").len(), 12);
        // Strips when full rows fit.
        let strips = tile_grid(
            60,
            1000,
            4,
            TileLimits {
                max_side: 4096,
                max_pixels: 60 * 100,
            },
        )
        .expect("strips");
        assert!(strips.iter().all(|t| t.w == 60));
        covers_exactly(&strips, 60, 1000);
        assert_eq!(tile_grid(100, 100, 30, limits), Err(NoTiling));
        assert!(tile_grid(0, 5, 0, limits).expect("empty").is_empty());
    }

    #[test]
    fn an_8192_image_tiles_within_common_buffer_limits() {
        let limits = TileLimits {
            max_side: 8192,
            max_pixels: (128 << 20) / 16,
        };
        let tiles = tile_grid(8192, 8192, 100, limits).expect("tiles");
        covers_exactly(&tiles, 8192, 8192);
        assert!(tiles.iter().all(|t| t.pixels() <= limits.max_pixels));
    }
}
