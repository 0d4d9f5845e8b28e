//! The plain-data request and result types every layer shares: what decides a picture
//! ([`GenerationRequest`], [`SamplerKind`]), its limits and their one [`GenerationRequest::validate`],
//! and a finished picture ([`GeneratedImage`]). A leaf: it imports nothing of Atelier's.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Smallest and largest picture side, in pixels (sides are multiples of [`SIDE_MULTIPLE_PX`]).
pub const MIN_SIDE_PX: u32 = 8;
pub const MAX_SIDE_PX: u32 = 4096;
/// Sides are multiples of this (the VAE's downscale; a model may ask for more).
pub const SIDE_MULTIPLE_PX: u32 = 8;
/// Denoising steps: a schedule has 1,000 training timesteps.
pub const MAX_STEPS: usize = 1000;
/// Images in one job.
pub const MAX_BATCH: u32 = 64;
/// Classifier-free guidance scale.
pub const MAX_GUIDANCE: f32 = 30.0;
/// Clip skip: 1 conditions on the text encoder's last layer (A1111's "Clip skip" setting).
pub const MAX_CLIP_SKIP: u32 = 12;
/// Longest prompt or negative prompt, in bytes (what the text encoder cannot see is dropped
/// anyway; this only keeps a pasted novel out of the catalog and the file's metadata).
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// Why a request cannot run. Says which setting and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// The denoising samplers a user can pick. The serde names are stored in catalogs, sessions
/// and queued jobs: never change one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SamplerKind {
    #[default]
    #[serde(rename = "ddim", alias = "Ddim")]
    Ddim,
    #[serde(rename = "euler", alias = "Euler")]
    Euler,
    #[serde(rename = "euler-a", alias = "EulerAncestral")]
    EulerAncestral,
    #[serde(rename = "heun", alias = "Heun")]
    Heun,
    #[serde(rename = "unipc", alias = "UniPc")]
    UniPc,
    #[serde(rename = "dpmpp-2m-karras", alias = "DpmPp2mKarras")]
    DpmPp2mKarras,
    #[serde(rename = "dpmpp-2m", alias = "DpmPp2m")]
    DpmPp2m,
    #[serde(rename = "dpmpp-2m-sde-karras", alias = "DpmPp2mSdeKarras")]
    DpmPp2mSdeKarras,
    #[serde(rename = "lcm", alias = "Lcm")]
    Lcm,
}

impl SamplerKind {
    /// In the order the studio and `--help` list them.
    pub const ALL: [SamplerKind; 9] = [
        SamplerKind::Ddim,
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::Heun,
        SamplerKind::UniPc,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mKarras,
        SamplerKind::DpmPp2mSdeKarras,
        SamplerKind::Lcm,
    ];

    /// The name used on the command line (`--sampler`).
    pub fn cli_name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-a",
            SamplerKind::Heun => "heun",
            SamplerKind::UniPc => "unipc",
            SamplerKind::DpmPp2mKarras => "dpmpp-2m-karras",
            SamplerKind::DpmPp2m => "dpmpp-2m",
            SamplerKind::DpmPp2mSdeKarras => "dpmpp-2m-sde-karras",
            SamplerKind::Lcm => "lcm",
        }
    }

    /// The name shown in the studio.
    pub fn label(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "DDIM",
            SamplerKind::Euler => "Euler",
            SamplerKind::EulerAncestral => "Euler ancestral",
            SamplerKind::Heun => "Heun",
            SamplerKind::UniPc => "UniPC",
            SamplerKind::DpmPp2mKarras => "DPM++ 2M Karras",
            SamplerKind::DpmPp2m => "DPM++ 2M",
            SamplerKind::DpmPp2mSdeKarras => "DPM++ 2M SDE Karras",
            SamplerKind::Lcm => "LCM",
        }
    }

    /// One line on what the sampler is for (the studio's hover text, `--help`).
    pub fn summary(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "deterministic; the classic, 20-50 steps",
            SamplerKind::Euler => "deterministic, first order; 20-30 steps",
            SamplerKind::EulerAncestral => {
                "adds seeded noise every step; 20-30 steps, or 1-4 on Turbo models"
            }
            SamplerKind::Heun => {
                "second order: two UNet evaluations per step (about twice the time); 10-20 steps"
            }
            SamplerKind::UniPc => "multistep predictor-corrector; good in 10-20 steps",
            SamplerKind::DpmPp2m => "multistep, uniform schedule; 20-30 steps",
            SamplerKind::DpmPp2mKarras => "multistep, Karras sigmas; 20-30 steps",
            SamplerKind::DpmPp2mSdeKarras => {
                "stochastic DPM++ 2M: seeded noise every step, Karras sigmas; 20-30 steps"
            }
            SamplerKind::Lcm => {
                "only for LCM models (or an LCM-LoRA merged in): 2-8 steps, guidance 1-2 \
                 (or the model's own, for an LCM-distilled UNet)"
            }
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
    /// A1111's "Clip skip": 1 is the text encoder's last layer, 2 the one before (SD 1.x and
    /// 2.x; SDXL ignores it, as A1111 does).
    #[serde(default = "one")]
    pub clip_skip: u32,
    /// Init image for image-to-image / inpainting (RGB, any size; resized to width x height).
    #[serde(skip)]
    pub init_image: Option<Arc<image::RgbImage>>,
    /// Inpainting mask: white = repaint, black = keep. Needs `init_image`.
    #[serde(skip)]
    pub mask: Option<Arc<image::GrayImage>>,
    /// Initial latent noise `[1, C, H/8, W/8]` from a safetensors file (tensor `noise`),
    /// for reproducing another tool's output exactly.
    pub noise_file: Option<PathBuf>,
    /// LoRAs merged into the model for this job, each with its weight.
    #[serde(default)]
    pub loras: Vec<LoraSpec>,
    /// Another VAE than the model's own: a VAE file or a diffusers `vae/` folder.
    #[serde(default)]
    pub vae: Option<PathBuf>,
    /// What the model predicts, when its files say otherwise or nothing (an SD 2.x checkpoint
    /// without its `.yaml`): `None` follows the model.
    #[serde(default)]
    pub prediction: Option<PredictionType>,
    /// Textual-inversion embeddings the prompts may use, each by its file's stem as a word.
    #[serde(default)]
    pub embeddings: Vec<PathBuf>,
    /// ControlNets steering the composition, each with its control image; their residuals
    /// are summed.
    #[serde(default)]
    pub controlnets: Vec<ControlSpec>,
    /// Which decoder makes the final picture: the model's VAE, or the tiny one ("fast decode").
    #[serde(default)]
    pub decoder: DecoderChoice,
    /// A tiny autoencoder (TAESD / TAESDXL: a diffusers `AutoencoderTiny` folder or the
    /// original `taesd_decoder` file) for the previews and fast decode; `None` looks beside
    /// the model and in other tools' folders.
    #[serde(default)]
    pub tiny_decoder: Option<PathBuf>,
    /// Draw the sketched subject again at the model's own size: the square around the control
    /// images' lines generated alone at the model's native size and blended over the picture
    /// (see [`crate::diffusion::subject`]). Small sketched subjects keep their details.
    #[serde(default)]
    pub subject_pass: bool,
}

/// The decoder that turns the finished latents into the picture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderChoice {
    /// The model's VAE (or the request's other VAE): full quality.
    #[default]
    Full,
    /// The tiny autoencoder: several times faster, slightly softer detail.
    Tiny,
}

impl DecoderChoice {
    pub fn cli_name(self) -> &'static str {
        match self {
            DecoderChoice::Full => "full",
            DecoderChoice::Tiny => "tiny",
        }
    }
}

/// One ControlNet of a job: its folder, the control image (white strokes or edges on black
/// for scribble/Canny/line-art ControlNets), how strongly and over which part of the steps it
/// steers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlSpec {
    pub path: PathBuf,
    /// The control image; resized to the output size when it differs.
    #[serde(skip)]
    pub image: Option<Arc<image::RgbImage>>,
    /// diffusers' `controlnet_conditioning_scale` (0 = off, 1 = as trained).
    pub scale: f32,
    /// The fraction of the steps at which the control starts and ends (0..1; f64 so that
    /// `0.7` compares with step fractions as it does in diffusers).
    pub start: f64,
    pub end: f64,
    pub mode: ControlMode,
}

impl ControlSpec {
    pub fn new(path: PathBuf, image: Arc<image::RgbImage>) -> Self {
        Self {
            path,
            image: Some(image),
            scale: 1.0,
            start: 0.0,
            end: 1.0,
            mode: ControlMode::Balanced,
        }
    }

    /// The ControlNet's name: its file stem, or its folder's name.
    pub fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The entry sd-webui-controlnet writes into a picture's parameters (`ControlNet 0:
    /// "Module: none, Model: NAME, Weight: 1, ..."`), the value part.
    pub fn a1111_text(&self) -> String {
        format!(
            "Module: none, Model: {}, Weight: {}, Resize Mode: Just Resize, Guidance Start: {}, \
             Guidance End: {}, Control Mode: {}",
            self.name(),
            self.scale,
            self.start,
            self.end,
            match self.mode {
                ControlMode::Balanced => "Balanced",
                ControlMode::Control => "ControlNet is more important",
            }
        )
    }
}

/// A ControlNet's settings as sd-webui-controlnet writes them into a picture's parameters
/// (see [`ControlSpec::a1111_text`]), read back: "reuse settings" of a gallery picture.
#[derive(Clone, Debug, PartialEq)]
pub struct A1111Control {
    /// The ControlNet's name (A1111 may add ` [hash]`, which is dropped).
    pub model: String,
    pub scale: f32,
    pub start: f64,
    pub end: f64,
    pub mode: ControlMode,
}

impl A1111Control {
    /// Reads the value of a `ControlNet N` entry; `None` without a model. Values that do not
    /// parse keep their defaults (weight 1, 0 to 1, balanced).
    pub fn parse(text: &str) -> Option<Self> {
        let mut out = Self {
            model: String::new(),
            scale: 1.0,
            start: 0.0,
            end: 1.0,
            mode: ControlMode::Balanced,
        };
        for part in text.split(',') {
            let Some((key, value)) = part.split_once(':') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "model" => {
                    let name = value.split(" [").next().unwrap_or(value).trim();
                    out.model = name.to_owned();
                }
                "weight" => out.scale = value.parse().unwrap_or(out.scale),
                "guidance start" => out.start = value.parse().unwrap_or(out.start),
                "guidance end" => out.end = value.parse().unwrap_or(out.end),
                "control mode"
                    if value
                        .to_ascii_lowercase()
                        .contains("controlnet is more important") =>
                {
                    out.mode = ControlMode::Control;
                }
                _ => {}
            }
        }
        let ok = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !out.scale.is_finite() || !ok(out.start) || !ok(out.end) || out.start >= out.end {
            out.scale = if out.scale.is_finite() {
                out.scale
            } else {
                1.0
            };
            out.start = 0.0;
            out.end = 1.0;
        }
        (!out.model.is_empty() && out.model != "None").then_some(out)
    }
}

/// How a ControlNet is weighed against the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlMode {
    /// Both halves of the guidance batch get the control (diffusers' default).
    #[default]
    Balanced,
    /// "ControlNet is more important": only the prompt's half gets the control, its residuals
    /// ramped from 0.1 (first skip connection) to 1 (mid block), as diffusers' `guess_mode`.
    Control,
}

/// A job's stage timings as one line per stage: `model 0.00 s`, `text 0.02 s`, ...; steps
/// are summarised (count, total, median) after the first.
pub fn stages_text(stages: &[(String, f32)]) -> String {
    let mut steps: Vec<f32> = stages
        .iter()
        .filter(|(n, _)| n.starts_with("step "))
        .map(|(_, s)| *s)
        .collect();
    let mut lines: Vec<String> = Vec::new();
    let mut steps_said = false;
    for (name, secs) in stages {
        if name.starts_with("step ") {
            if !steps_said {
                steps_said = true;
                let total: f32 = steps.iter().sum();
                steps.sort_by(f32::total_cmp);
                let median = steps[steps.len() / 2];
                lines.push(format!(
                    "{} steps {total:.2} s (median {:.0} ms a step)",
                    steps.len(),
                    median * 1000.0
                ));
            }
            continue;
        }
        lines.push(format!("{name} {secs:.2} s"));
    }
    lines.join("\n")
}

/// Most ControlNets one job may use.
pub const MAX_CONTROLNETS: usize = 4;
/// Largest ControlNet scale accepted.
pub const MAX_CONTROL_SCALE: f32 = 5.0;

impl GenerationRequest {
    /// AUTOMATIC1111's metadata entries for this request's ControlNets (`ControlNet N`, as
    /// sd-webui-controlnet writes them) and other VAE (`VAE`, its file stem, and `VAE hash`
    /// when the caller knows it); `Decoder: tiny` for a fast decode (Atelier's own entry).
    pub fn a1111_extras(&self, vae_hash: Option<String>) -> Vec<(String, String)> {
        let mut extras: Vec<(String, String)> = self
            .controlnets
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("ControlNet {i}"), c.a1111_text()))
            .collect();
        if let Some(vae) = &self.vae {
            let name = vae.file_stem().map(|s| s.to_string_lossy().into_owned());
            extras.push(("VAE".into(), name.unwrap_or_default()));
            extras.extend(vae_hash.map(|h| ("VAE hash".to_owned(), h)));
        }
        if self.decoder == DecoderChoice::Tiny {
            extras.push(("Decoder".into(), DecoderChoice::Tiny.cli_name().into()));
        }
        if self.subject_pass && !self.controlnets.is_empty() {
            extras.push(("Subject pass".into(), "on".into()));
        }
        extras
    }
}

/// What a model's UNet predicts: the noise (SD 1.x, SD 2.x base) or v (SD 2.x 768-v).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionType {
    #[serde(rename = "eps")]
    Epsilon,
    #[serde(rename = "v")]
    V,
}

/// One LoRA file (kohya, LyCORIS LoHa/LoKr, diffusers/PEFT) and its weight: A1111's
/// multiplier, 1 = as trained, 0 = off, negative = the opposite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub weight: f32,
}

/// Largest LoRA weight accepted either way (A1111 users go to about 2).
pub const MAX_LORA_WEIGHT: f32 = 10.0;
/// Most LoRAs one job may apply.
pub const MAX_LORAS: usize = 32;

/// A piece of a prompt: text, or an extra-network tag `<KIND:NAME[:WEIGHT...]>` (KIND `lora`,
/// `lyco` or `hypernet`).
enum Piece<'a> {
    Text(&'a str),
    Tag {
        kind: &'a str,
        name: &'a str,
        weight: Option<&'a str>,
        /// The whole tag, `<` to `>`.
        raw: &'a str,
    },
}

/// `prompt` cut into text and extra-network tags; anything else in `<...>` is text.
fn pieces(prompt: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let rest = prompt;
    let mut text_from = 0;
    let mut at = 0;
    while let Some(start) = rest[at..].find('<').map(|i| at + i) {
        let Some(end) = rest[start..].find('>').map(|i| start + i) else {
            break;
        };
        let inner = &rest[start + 1..end];
        let mut parts = inner.split(':');
        let kind = parts.next().unwrap_or("");
        if matches!(kind, "lora" | "lyco" | "hypernet") && inner.contains(':') {
            out.push(Piece::Text(&rest[text_from..start]));
            out.push(Piece::Tag {
                kind,
                name: parts.next().unwrap_or("").trim(),
                weight: parts.next(),
                raw: &rest[start..=end],
            });
            text_from = end + 1;
            at = end + 1;
        } else {
            at = start + 1;
        }
    }
    out.push(Piece::Text(&rest[text_from..]));
    out
}

/// `prompt` with the `<lora:NAME:..>` tags of `name` set to `weight` (`Some`) or removed
/// (`None`); other text is kept as it is.
pub fn edit_lora_tag(prompt: &str, name: &str, weight: Option<f32>) -> String {
    let mut out = String::with_capacity(prompt.len());
    for piece in pieces(prompt) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Tag { kind, name: n, .. } if kind != "hypernet" && n == name => {
                if let Some(w) = weight {
                    out.push_str(&format!("<{kind}:{name}:{}>", format_weight(w)));
                }
            }
            Piece::Tag { raw, .. } => out.push_str(raw),
        }
    }
    out
}

/// A weight as people write it: `0.7`, `1`, `-0.25`.
pub fn format_weight(w: f32) -> String {
    let text = format!("{:.2}", w);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// AUTOMATIC1111's extra-network tags in a prompt: `<lora:NAME:WEIGHT>` (also `<lyco:...>`;
/// the weight defaults to 1, and of `<lora:NAME:TE:UNET>` the first number is taken). Returns
/// the prompt without any `<lora:..>`, `<lyco:..>` or `<hypernet:..>` tag (the text encoder
/// never sees them) and the LoRAs named, in order.
pub fn extract_lora_tags(prompt: &str) -> (String, Vec<(String, f32)>) {
    let mut text = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    for piece in pieces(prompt) {
        match piece {
            Piece::Text(t) => text.push_str(t),
            Piece::Tag {
                kind, name, weight, ..
            } => {
                let weight = weight
                    .and_then(|w| w.trim().parse::<f32>().ok())
                    .filter(|w| w.is_finite())
                    .unwrap_or(1.0);
                if kind != "hypernet" && !name.is_empty() {
                    tags.push((name.to_owned(), weight));
                }
            }
        }
    }
    (text, tags)
}

fn one() -> u32 {
    1
}

impl GenerationRequest {
    /// Checks every setting against the limits above: the one check the studio, the CLI and
    /// the engine share.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        let bad = |m: String| Err(InvalidRequest(m));
        for (name, side) in [("width", self.width), ("height", self.height)] {
            if !(MIN_SIDE_PX..=MAX_SIDE_PX).contains(&side) || side % SIDE_MULTIPLE_PX != 0 {
                return bad(format!(
                    "{name} {side}: must be a multiple of {SIDE_MULTIPLE_PX} from {MIN_SIDE_PX} to {MAX_SIDE_PX} px"
                ));
            }
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return bad(format!("steps {}: must be 1 to {MAX_STEPS}", self.steps));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return bad(format!("batch {}: must be 1 to {MAX_BATCH}", self.batch));
        }
        if !self.guidance.is_finite() || !(0.0..=MAX_GUIDANCE).contains(&self.guidance) {
            return bad(format!(
                "guidance {}: must be 0 to {MAX_GUIDANCE}",
                self.guidance
            ));
        }
        if !(1..=MAX_CLIP_SKIP).contains(&self.clip_skip) {
            return bad(format!(
                "clip skip {}: must be 1 to {MAX_CLIP_SKIP}",
                self.clip_skip
            ));
        }
        if !self.strength_0_to_1.is_finite() || !(0.0..=1.0).contains(&self.strength_0_to_1) {
            return bad(format!("strength {}: must be 0 to 1", self.strength_0_to_1));
        }
        for (name, text) in [
            ("prompt", &self.prompt),
            ("negative prompt", &self.negative_prompt),
        ] {
            if text.len() > MAX_PROMPT_BYTES {
                return bad(format!(
                    "the {name} is {} bytes long; at most {MAX_PROMPT_BYTES} are accepted",
                    text.len()
                ));
            }
        }
        if self.mask.is_some() && self.init_image.is_none() {
            return bad("a mask needs an init image".into());
        }
        if self.loras.len() > MAX_LORAS {
            return bad(format!(
                "{} LoRAs: at most {MAX_LORAS} at once",
                self.loras.len()
            ));
        }
        for l in &self.loras {
            if !l.weight.is_finite() || l.weight.abs() > MAX_LORA_WEIGHT {
                return bad(format!(
                    "LoRA {} weight {}: must be -{MAX_LORA_WEIGHT} to {MAX_LORA_WEIGHT}",
                    l.path.display(),
                    l.weight
                ));
            }
        }
        if self.controlnets.len() > MAX_CONTROLNETS {
            return bad(format!(
                "{} ControlNets: at most {MAX_CONTROLNETS} at once",
                self.controlnets.len()
            ));
        }
        for c in &self.controlnets {
            let name = c.path.display();
            if c.image.is_none() {
                return bad(format!("ControlNet {name}: no control image"));
            }
            if !c.scale.is_finite() || !(0.0..=MAX_CONTROL_SCALE).contains(&c.scale) {
                return bad(format!(
                    "ControlNet {name} scale {}: must be 0 to {MAX_CONTROL_SCALE}",
                    c.scale
                ));
            }
            let fraction = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
            if !fraction(c.start) || !fraction(c.end) || c.start >= c.end {
                return bad(format!(
                    "ControlNet {name} start {} and end {}: fractions of the steps, 0 <= start < end <= 1",
                    c.start, c.end
                ));
            }
        }
        Ok(())
    }
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
            clip_skip: 1,
            init_image: None,
            mask: None,
            noise_file: None,
            loras: Vec::new(),
            vae: None,
            prediction: None,
            embeddings: Vec::new(),
            controlnets: Vec::new(),
            decoder: DecoderChoice::Full,
            tiny_decoder: None,
            subject_pass: false,
        }
    }
}

/// One finished picture with the exact settings that made it.
#[derive(Clone, Debug)]
pub struct GeneratedImage {
    pub image: Arc<image::RgbImage>,
    /// The request that made it, with `seed` set to this image's own seed and `batch` = 1.
    pub request: GenerationRequest,
    /// Its place in its job's batch (its seed is the job's seed plus this).
    pub index: u32,
    pub elapsed_secs: f32,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fast_decode_is_recorded_and_a_request_without_the_field_reads_as_full() {
        let fast = GenerationRequest {
            decoder: DecoderChoice::Tiny,
            ..Default::default()
        };
        assert!(fast
            .a1111_extras(None)
            .contains(&("Decoder".to_owned(), "tiny".to_owned())));
        assert!(GenerationRequest::default().a1111_extras(None).is_empty());
        // A request saved before the field existed.
        let mut json = serde_json::to_value(&fast).unwrap();
        json.as_object_mut().unwrap().remove("decoder");
        json.as_object_mut().unwrap().remove("tiny_decoder");
        let old: GenerationRequest = serde_json::from_value(json).unwrap();
        assert_eq!(old.decoder, DecoderChoice::Full);
        let back: GenerationRequest =
            serde_json::from_value(serde_json::to_value(&fast).unwrap()).unwrap();
        assert_eq!(back.decoder, DecoderChoice::Tiny);
    }

    /// The ControlNet entry Atelier writes reads back; A1111's own with a hash too.
    #[test]
    fn a1111_controlnet_entries_read_back() {
        let spec = ControlSpec {
            scale: 0.6,
            start: 0.1,
            end: 0.8,
            mode: ControlMode::Control,
            ..ControlSpec::new(
                PathBuf::from("/m/mini-scribble"),
                std::sync::Arc::new(image::RgbImage::new(1, 1)),
            )
        };
        let back = A1111Control::parse(&spec.a1111_text()).unwrap();
        assert_eq!(
            back,
            A1111Control {
                model: "mini-scribble".into(),
                scale: 0.6,
                start: 0.1,
                end: 0.8,
                mode: ControlMode::Control
            }
        );
        let a1111 = "Module: scribble_pidinet, Model: control_v11p_sd15_scribble [d4ba51ff], \
                     Weight: 1, Resize Mode: Crop and Resize, Low Vram: False, Processor Res: 512, \
                     Guidance Start: 0, Guidance End: 1, Pixel Perfect: False, Control Mode: Balanced";
        let c = A1111Control::parse(a1111).unwrap();
        assert_eq!(c.model, "control_v11p_sd15_scribble");
        assert_eq!(
            (c.scale, c.start, c.end, c.mode),
            (1.0, 0.0, 1.0, ControlMode::Balanced)
        );
        assert!(A1111Control::parse("Module: none, Weight: 1").is_none());
        let odd = A1111Control::parse("Model: x, Guidance Start: 0.9, Guidance End: 0.2").unwrap();
        assert_eq!((odd.start, odd.end), (0.0, 1.0));
    }

    #[test]
    fn lora_tags_are_edited_in_place() {
        let p = "a cat <lora:detail:0.7>, <lora:other:1> <b>";
        assert_eq!(
            edit_lora_tag(p, "detail", Some(1.25)),
            "a cat <lora:detail:1.25>, <lora:other:1> <b>"
        );
        assert_eq!(
            edit_lora_tag(p, "other", None),
            "a cat <lora:detail:0.7>,  <b>"
        );
        assert_eq!(edit_lora_tag("x <lora:a", "a", None), "x <lora:a");
        assert_eq!(
            edit_lora_tag("<lora:x:0.5:0.8> <lora:y:1> <i>", "y", None),
            "<lora:x:0.5:0.8>  <i>"
        );
        assert_eq!(format_weight(1.0), "1");
        assert_eq!(format_weight(-0.25), "-0.25");
        assert_eq!(format_weight(0.7), "0.7");
    }

    #[test]
    fn lora_tags_are_taken_out_of_the_prompt_with_their_weights() {
        let (text, tags) = extract_lora_tags(
            "a cat, <lora:add_detail:0.7>, (masterpiece:1.2) <lyco:Style V2> <lora:x:0.5:0.8><hypernet:h:1> <b>",
        );
        assert_eq!(text, "a cat, , (masterpiece:1.2)   <b>");
        assert_eq!(
            tags,
            vec![
                ("add_detail".to_owned(), 0.7),
                ("Style V2".to_owned(), 1.0),
                ("x".to_owned(), 0.5)
            ]
        );
        // Unclosed, empty or not a tag: kept as text.
        assert_eq!(extract_lora_tags("a <lora:x").0, "a <lora:x");
        assert_eq!(extract_lora_tags("1 < 2 > 0").0, "1 < 2 > 0");
        assert_eq!(extract_lora_tags("<lora::1>"), (String::new(), vec![]));
        assert_eq!(
            extract_lora_tags("<lora:n:nan>").1,
            vec![("n".to_owned(), 1.0)]
        );
    }
    use super::*;

    fn ok() -> GenerationRequest {
        GenerationRequest {
            width: 64,
            height: 64,
            ..Default::default()
        }
    }

    #[test]
    fn sampler_names_are_stable_and_unique() {
        let stored = [
            (SamplerKind::Ddim, "ddim"),
            (SamplerKind::Euler, "euler"),
            (SamplerKind::EulerAncestral, "euler-a"),
            (SamplerKind::Heun, "heun"),
            (SamplerKind::UniPc, "unipc"),
            (SamplerKind::DpmPp2m, "dpmpp-2m"),
            (SamplerKind::DpmPp2mKarras, "dpmpp-2m-karras"),
            (SamplerKind::DpmPp2mSdeKarras, "dpmpp-2m-sde-karras"),
            (SamplerKind::Lcm, "lcm"),
        ];
        assert_eq!(stored.len(), SamplerKind::ALL.len());
        for (kind, name) in stored {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(kind.cli_name(), name);
            assert_eq!(SamplerKind::from_cli_name(name), Some(kind));
            // The variant name (older stores) still reads.
            let variant = format!("\"{kind:?}\"");
            assert_eq!(serde_json::from_str::<SamplerKind>(&variant).unwrap(), kind);
        }
        let labels: std::collections::HashSet<_> =
            SamplerKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), SamplerKind::ALL.len());
    }

    #[test]
    fn validate_accepts_the_limits_and_refuses_past_them() {
        assert_eq!(ok().validate(), Ok(()));
        let edges = GenerationRequest {
            width: MAX_SIDE_PX,
            height: MIN_SIDE_PX,
            steps: MAX_STEPS,
            batch: MAX_BATCH,
            guidance: MAX_GUIDANCE,
            strength_0_to_1: 1.0,
            ..ok()
        };
        assert_eq!(edges.validate(), Ok(()));
        let cases: Vec<(GenerationRequest, &str)> = vec![
            (GenerationRequest { width: 0, ..ok() }, "width 0"),
            (GenerationRequest { height: 65, ..ok() }, "height 65"),
            (
                GenerationRequest {
                    width: MAX_SIDE_PX + 8,
                    ..ok()
                },
                "width 4104",
            ),
            (GenerationRequest { steps: 0, ..ok() }, "steps 0"),
            (
                GenerationRequest {
                    steps: MAX_STEPS + 1,
                    ..ok()
                },
                "steps 1001",
            ),
            (GenerationRequest { batch: 0, ..ok() }, "batch 0"),
            (
                GenerationRequest {
                    guidance: f32::NAN,
                    ..ok()
                },
                "guidance NaN",
            ),
            (
                GenerationRequest {
                    guidance: -1.0,
                    ..ok()
                },
                "guidance -1",
            ),
            (
                GenerationRequest {
                    strength_0_to_1: f32::INFINITY,
                    ..ok()
                },
                "strength inf",
            ),
            (
                GenerationRequest {
                    prompt: "a".repeat(MAX_PROMPT_BYTES + 1),
                    ..ok()
                },
                "prompt is 65537 bytes",
            ),
            (
                GenerationRequest {
                    mask: Some(Arc::new(image::GrayImage::new(8, 8))),
                    ..ok()
                },
                "mask needs an init image",
            ),
        ];
        for (request, expected) in cases {
            let err = request.validate().expect_err(expected);
            assert!(err.0.contains(expected), "{expected:?} not in {err}");
        }
    }
}
