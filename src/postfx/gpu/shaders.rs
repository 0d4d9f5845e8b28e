//! The WGSL sources in `shaders/`, built into the binary with `include_str!`, and how they are
//! put together into modules: WGSL has no `#include`, so every module is `common.wgsl`
//! (bindings, header, exact sRGB, luma) followed by its own files.

use super::plan::{ModuleId, PointOp};

/// Shared helpers and bindings.
pub const COMMON: &str = include_str!("../../../shaders/common.wgsl");
/// The fused point pass.
pub const POINTWISE: &str = include_str!("../../../shaders/pointwise.wgsl");
/// Unsharp mask's two passes.
pub const UNSHARP_MASK: &str = include_str!("../../../shaders/unsharp_mask.wgsl");
/// Denoise's five passes.
pub const DENOISE: &str = include_str!("../../../shaders/denoise.wgsl");
/// Loading and storing pixels (8-bit words, textures).
pub const IO: &str = include_str!("../../../shaders/io.wgsl");

/// The file of a point op.
pub fn point_source(op: PointOp) -> &'static str {
    match op {
        PointOp::Exposure => include_str!("../../../shaders/exposure.wgsl"),
        PointOp::Contrast => include_str!("../../../shaders/contrast.wgsl"),
        PointOp::HighlightsShadows => include_str!("../../../shaders/highlights_shadows.wgsl"),
        PointOp::WhiteBalance => include_str!("../../../shaders/white_balance.wgsl"),
        PointOp::Saturation => include_str!("../../../shaders/saturation.wgsl"),
        PointOp::HueShift => include_str!("../../../shaders/hue_shift.wgsl"),
        PointOp::Levels => include_str!("../../../shaders/levels.wgsl"),
        PointOp::Curves => include_str!("../../../shaders/curves.wgsl"),
        PointOp::Vignette => include_str!("../../../shaders/vignette.wgsl"),
    }
}

/// Every module the runner compiles.
pub fn all_modules() -> Vec<ModuleId> {
    let mut all: Vec<ModuleId> = PointOp::ALL.iter().map(|&op| ModuleId::Point(op)).collect();
    all.extend([
        ModuleId::Pointwise,
        ModuleId::UnsharpMask,
        ModuleId::Denoise,
        ModuleId::Io,
    ]);
    all
}

/// A readable name for errors: the files the module is made of.
pub fn module_name(id: ModuleId) -> String {
    match id {
        ModuleId::Point(op) => format!("shaders/{}.wgsl", op.name()),
        ModuleId::Pointwise => "shaders/pointwise.wgsl (with every point op)".into(),
        ModuleId::UnsharpMask => "shaders/unsharp_mask.wgsl".into(),
        ModuleId::Denoise => "shaders/denoise.wgsl".into(),
        ModuleId::Io => "shaders/io.wgsl".into(),
    }
}

/// The full WGSL text of a module.
pub fn module_source(id: ModuleId) -> String {
    let mut parts = vec![COMMON];
    match id {
        ModuleId::Point(op) => parts.push(point_source(op)),
        ModuleId::Pointwise => {
            parts.extend(PointOp::ALL.iter().map(|&op| point_source(op)));
            parts.push(POINTWISE);
        }
        ModuleId::UnsharpMask => parts.push(UNSHARP_MASK),
        ModuleId::Denoise => parts.push(DENOISE),
        ModuleId::Io => parts.push(IO),
    }
    parts.join("\n")
}
