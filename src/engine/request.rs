//! Plain-data requests and results that cross the thread boundary between the UI and the engine.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Identifies one job for its whole life; events carry it so stale ones can be dropped.
pub type JobId = u64;

/// The denoising samplers a user can pick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SamplerKind {
    #[default]
    #[serde(rename = "ddim", alias = "Ddim")]
    Ddim,
    #[serde(rename = "euler-a", alias = "EulerAncestral")]
    EulerAncestral,
    #[serde(rename = "unipc", alias = "UniPc")]
    UniPc,
    #[serde(rename = "dpmpp-2m-karras", alias = "DpmPp2mKarras")]
    DpmPp2mKarras,
    #[serde(rename = "dpmpp-2m", alias = "DpmPp2m")]
    DpmPp2m,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 5] = [
        SamplerKind::Ddim,
        SamplerKind::EulerAncestral,
        SamplerKind::UniPc,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mKarras,
    ];

    /// The name used on the command line (`--sampler`).
    pub fn cli_name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::EulerAncestral => "euler-a",
            SamplerKind::UniPc => "unipc",
            SamplerKind::DpmPp2mKarras => "dpmpp-2m-karras",
            SamplerKind::DpmPp2m => "dpmpp-2m",
        }
    }

    /// The name shown in the studio.
    pub fn label(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "DDIM",
            SamplerKind::EulerAncestral => "Euler ancestral",
            SamplerKind::UniPc => "UniPC",
            SamplerKind::DpmPp2mKarras => "DPM++ 2M Karras",
            SamplerKind::DpmPp2m => "DPM++ 2M",
        }
    }

    pub fn from_cli_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.cli_name() == name)
    }
}

/// Everything that decides the pixels of a generation. Plain data: cloned into the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// The diffusers-layout model folder.
    pub model_dir: PathBuf,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub guidance: f32,
    pub width: u32,
    pub height: u32,
    pub sampler: SamplerKind,
    /// Image-to-image strength: 0 keeps the init image, 1 ignores it.
    pub strength_0_to_1: f32,
    /// How many images this job makes; image `i` uses seed `seed + i`.
    pub batch: u32,
    /// Init image for image-to-image / inpainting (RGB, any size; resized to width x height).
    #[serde(skip)]
    pub init_image: Option<Arc<image::RgbImage>>,
    /// Inpainting mask: white = repaint, black = keep. Needs `init_image`.
    #[serde(skip)]
    pub mask: Option<Arc<image::GrayImage>>,
    /// Initial latent noise `[1, C, H/8, W/8]` from a safetensors file (tensor `noise`),
    /// for reproducing another tool's output exactly.
    pub noise_file: Option<PathBuf>,
}

impl Default for GenerationRequest {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::new(),
            prompt: String::new(),
            negative_prompt: String::new(),
            seed: 0,
            steps: 20,
            guidance: 7.5,
            width: 512,
            height: 512,
            sampler: SamplerKind::default(),
            strength_0_to_1: 0.75,
            batch: 1,
            init_image: None,
            mask: None,
            noise_file: None,
        }
    }
}

/// One finished picture with the exact settings that made it.
#[derive(Clone, Debug)]
pub struct GeneratedImage {
    pub image: Arc<image::RgbImage>,
    /// The request that made it, with `seed` set to this image's own seed and `batch` = 1.
    pub request: GenerationRequest,
    pub elapsed_secs: f32,
}
