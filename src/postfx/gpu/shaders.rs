//! The WGSL sources in `shaders/`, built into the binary with `include_str!`, and how they are
//! put together into modules: WGSL has no `#include`, so every module is `common.wgsl`
//! (bindings, header, exact sRGB, luma) followed by its own files.

use super::plan::{Endpoint, FusedKey, ModuleId, PointOp};

/// Shared helpers and bindings.
pub const COMMON: &str = include_str!("../../../shaders/common.wgsl");
/// The fused point pass (a template, see [`fused_source`]).
pub const POINTWISE: &str = include_str!("../../../shaders/pointwise.wgsl");
/// The preview's texture bindings.
pub const TEXTURES: &str = include_str!("../../../shaders/textures.wgsl");
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

/// Every fixed module the runner compiles up front (fused passes are generated on demand).
pub fn fixed_modules() -> Vec<ModuleId> {
    let mut all: Vec<ModuleId> = PointOp::ALL.iter().map(|&op| ModuleId::Point(op)).collect();
    all.extend([ModuleId::UnsharpMask, ModuleId::Denoise, ModuleId::Io]);
    all
}

/// A readable name for errors: the files the module is made of.
pub fn module_name(id: ModuleId) -> String {
    match id {
        ModuleId::Point(op) => format!("shaders/{}.wgsl", op.name()),
        ModuleId::Fused => "shaders/pointwise.wgsl (generated)".into(),
        ModuleId::UnsharpMask => "shaders/unsharp_mask.wgsl".into(),
        ModuleId::Denoise => "shaders/denoise.wgsl".into(),
        ModuleId::Io => "shaders/io.wgsl".into(),
    }
}

/// The full WGSL text of a fixed module.
pub fn module_source(id: ModuleId) -> String {
    let mut parts = vec![COMMON];
    match id {
        ModuleId::Point(op) => parts.push(point_source(op)),
        ModuleId::Fused => {
            return fused_source(&FusedKey {
                unsharp_first: true,
                ops: PointOp::ALL.to_vec(),
                luma_out: true,
                source: Endpoint::Image,
                sink: Endpoint::Image,
            })
        }
        ModuleId::UnsharpMask => parts.push(UNSHARP_MASK),
        ModuleId::Denoise => parts.push(DENOISE),
        ModuleId::Io => parts.extend([TEXTURES, IO]),
    }
    parts.join("\n")
}

/// The fused point pass for one run of ops (`pointwise.wgsl` filled in): the ops' files, then
/// `pointwise_main` with one `<op>_apply` line per op reading its parameter offset from the
/// program, loading from and storing to the key's ends.
pub fn fused_source(key: &FusedKey) -> String {
    let mut parts = vec![COMMON];
    if key.uses_textures() {
        parts.push(TEXTURES);
    }
    if key.unsharp_first {
        parts.push(UNSHARP_MASK);
    }
    let mut included: Vec<PointOp> = Vec::new();
    for &op in &key.ops {
        if !included.contains(&op) {
            included.push(op);
            parts.push(point_source(op));
        }
    }
    let load = match key.source {
        Endpoint::Image => "img[i]",
        Endpoint::Words => "unpack_rgb8(plane[i])",
        Endpoint::Texture => "texel_to_linear(textureLoad(src_tex, vec2<i32>(pos), 0))",
    };
    // Program slot k (a pair: code, parameter offset) holds the k-th step.
    let param = |slot: usize| format!("u32(data[hdr.offset + {}u])", 2 * slot + 1);
    let first = usize::from(key.unsharp_first);
    let mut ops: Vec<String> = Vec::new();
    if key.unsharp_first {
        ops.push(format!(
            "rgb = unsharp_mask_apply(rgb, {}, id.xy, i);",
            param(0)
        ));
    }
    for (k, op) in key.ops.iter().enumerate() {
        ops.push(format!(
            "rgb = {}_apply(rgb, {}, pos);",
            op.name(),
            param(first + k)
        ));
    }
    if key.luma_out {
        ops.push("plane[i] = bitcast<u32>(luma(rgb));".to_owned());
    }
    let store = match key.sink {
        Endpoint::Image => "img[i] = vec4<f32>(rgb, px.a);",
        Endpoint::Words => "plane[i] = pack_rgb8(rgb);",
        Endpoint::Texture => {
            "if (in_store_rect(id.xy)) {\n        textureStore(dst_tex, vec2<i32>(pos), \
             linear_to_target(vec4<f32>(rgb, px.a)));\n    }"
        }
    };
    let main = POINTWISE
        .replace("/*LOAD*/", load)
        .replace("/*OPS*/", &ops.join("\n    "))
        .replace("/*STORE*/", store);
    parts.push(&main);
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fused_pass_calls_its_ops_in_order_between_its_ends() {
        let source = fused_source(&FusedKey {
            unsharp_first: false,
            ops: vec![PointOp::Curves, PointOp::Exposure, PointOp::Curves],
            luma_out: false,
            source: Endpoint::Texture,
            sink: Endpoint::Words,
        });
        let calls: Vec<&str> = source
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("rgb = "))
            .collect();
        assert_eq!(
            calls,
            [
                "rgb = curves_apply(rgb, u32(data[hdr.offset + 1u]), pos);",
                "rgb = exposure_apply(rgb, u32(data[hdr.offset + 3u]), pos);",
                "rgb = curves_apply(rgb, u32(data[hdr.offset + 5u]), pos);",
            ]
        );
        assert_eq!(source.matches("fn curves_px").count(), 1, "each file once");
        assert!(source.contains("textureLoad(src_tex") && source.contains("pack_rgb8(rgb)"));
        assert!(!source.contains("/*"), "every placeholder is filled");
        let with_blur = fused_source(&FusedKey {
            unsharp_first: true,
            ops: vec![PointOp::Exposure],
            luma_out: true,
            source: Endpoint::Image,
            sink: Endpoint::Image,
        });
        let main = &with_blur[with_blur.find("fn pointwise_main").unwrap_or(0)..];
        let steps: Vec<&str> = main
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("rgb = ") || l.starts_with("plane[i] = "))
            .collect();
        assert_eq!(
            steps,
            [
                "rgb = unsharp_mask_apply(rgb, u32(data[hdr.offset + 1u]), id.xy, i);",
                "rgb = exposure_apply(rgb, u32(data[hdr.offset + 3u]), pos);",
                "plane[i] = bitcast<u32>(luma(rgb));",
            ]
        );
    }
}
