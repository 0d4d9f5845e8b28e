//! Non-destructive image adjustments ("post effects"): the adjustment stack as plain,
//! serialisable data ([`Stack`], [`Op`]), the CPU reference implementation of every op
//! ([`cpu`]) and the wgpu compute path ([`gpu`], shaders in `shaders/`).
//!
//! The stack is what the studio stores with an image, what presets and `atelier adjust` read,
//! and what a GPU runner will execute. The CPU path in [`cpu`] is the definition of each op:
//! every per-pixel function there is written so a WGSL compute shader can mirror it line by
//! line (host-side "uniform" preparation is separated from the per-pixel maths, no allocation
//! inside per-pixel code), and GPU output is to be held within 1/255 of it.
//!
//! Working space: straight (unpremultiplied) linear-light RGBA in `f32`
//! ([`image::Rgba32FImage`]); alpha is carried through untouched. Ops that are defined
//! perceptually (contrast, levels, curves, highlights/shadows, denoise) encode to sRGB
//! internally and decode again; values are never clamped until the final conversion back to
//! 8-bit. Knows nothing of egui or the engine; only [`gpu`] knows wgpu.

pub mod colour;
pub mod cpu;
pub mod curve;
pub mod gpu;
pub mod presets;
pub mod stack;

pub use cpu::{apply_stack, apply_to_rgb8, auto_colour, histogram, Histogram};
pub use stack::{
    Contrast, CurvePoint, Curves, Denoise, Exposure, HighlightsShadows, HueShift, Levels,
    LevelsChannel, Op, OpEntry, OpKind, Saturation, Stack, UnsharpMask, Vignette, WhiteBalance,
    STACK_FORMAT_VERSION,
};

/// Errors reading or writing an adjustment stack.
#[derive(Debug, thiserror::Error)]
pub enum PostfxError {
    /// The text is not JSON, or an op's parameters have the wrong shape or type.
    #[error("adjustment stack: {0}")]
    Json(#[from] serde_json::Error),
    /// The stored stack has no `version` field (or it is not a non-negative integer).
    #[error(
        "adjustment stack: missing or invalid \"version\" (expected an integer 1..={supported})"
    )]
    MissingVersion {
        /// The newest format version this build reads.
        supported: u32,
    },
    /// The stored stack was written by a newer (or unknown) major format version.
    #[error(
        "adjustment stack format version {found} is not supported: this build of Atelier reads \
         versions 1..={supported} (was it saved by a newer Atelier?)"
    )]
    UnsupportedVersion {
        /// The version found in the stored data.
        found: u64,
        /// The newest format version this build reads.
        supported: u32,
    },
    /// More adjustments than [`stack::MAX_OPS`].
    #[error(
        "adjustment stack: {found} adjustments; at most {} are accepted",
        stack::MAX_OPS
    )]
    TooManyOps { found: usize },
    /// An op has a parameter that is not a finite number (it could not be stored faithfully).
    #[error("adjustment \"{op}\" has a parameter that is not a finite number")]
    NonFinite {
        /// The op's stored name.
        op: String,
    },
}
