//! The model library: finding diffusers-layout model folders, reading their configs,
//! telling their family, and validating them with clear, typed errors.

pub mod checkpoint;
pub mod config;
pub mod discover;
pub mod export;
pub mod hash;
pub mod ldm;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use config::{ModelConfigs, ModelError};
pub use discover::{default_model_dir, discover, embedded_models_dir, own_controlnet, ModelSource};

/// Which Stable Diffusion family a model folder belongs to, read from its own configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    /// SD 1.x (CLIP ViT-L text encoder, 768-wide cross-attention).
    Sd1,
    /// SD 2.x (OpenCLIP ViT-H, 1024-wide), epsilon or v-prediction; SD-Turbo.
    Sd2,
    /// SDXL (two text encoders, size/crop micro-conditioning); SDXL-Turbo.
    Sdxl,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
            Family::Sdxl => "SDXL",
        }
    }
}

/// Optional `atelier.json` in a model folder: what the studio shows about the model and the
/// settings it works best with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Display name, e.g. "Atelier Mini".
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Licence of the weights and their data, in a few words.
    #[serde(default)]
    pub license: String,
    /// Where the full attribution text is (a file in the model folder).
    #[serde(default)]
    pub attribution_file: Option<String>,
    #[serde(default)]
    pub defaults: Option<RecommendedSettings>,
    /// A prompt that shows what the model does (the prompt box's hint).
    #[serde(default)]
    pub example_prompt: Option<String>,
    /// The plain ground the model draws its subjects on (Atelier Mini's white), as RGB: a
    /// subject pass puts the sketched subject on it rather than over a first picture.
    #[serde(default)]
    pub ground: Option<[u8; 3]>,
    /// The attribution file's text (read with the card, at most 64 KiB).
    #[serde(skip)]
    pub attribution: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecommendedSettings {
    pub steps: usize,
    pub guidance: f32,
    pub sampler: crate::generation::SamplerKind,
}

impl ModelCard {
    /// The folder's card: `Ok(None)` when it has none; a card that cannot be read is an
    /// `Err` with the reason (the model works without it, and the reason is shown).
    /// A single checkpoint file's card sits beside it (`model.atelier.json`).
    pub fn read(dir: &Path) -> Result<Option<Self>, String> {
        let path = if dir.is_file() {
            dir.with_extension("atelier.json")
        } else {
            dir.join("atelier.json")
        };
        let text = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() > 1 << 20 => {
                return Err(format!(
                    "{}: {} bytes is too large for a model card",
                    path.display(),
                    bytes.len()
                ))
            }
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut card: Self = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a model card: {e}", path.display()))?;
        card.attribution = card
            .attribution_file
            .as_deref()
            // Only a plain file name inside the model folder.
            .filter(|f| Path::new(f).file_name() == Some(std::ffi::OsStr::new(f)))
            .and_then(|f| {
                use std::io::Read;
                let mut text = String::new();
                std::fs::File::open(dir.join(f))
                    .ok()?
                    .take(64 * 1024)
                    .read_to_string(&mut text)
                    .ok()?;
                Some(text)
            });
        Ok(Some(card))
    }
}

/// A model found on disk, with what the picker needs to show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Display name (folder name, or `org/name` for the Hugging Face cache).
    pub name: String,
    pub dir: PathBuf,
    pub family: Family,
    /// Distilled few-step model (SD-Turbo / SDXL-Turbo): defaults to 1-4 steps, no CFG.
    pub turbo: bool,
    /// Latent Consistency Model: an LCM-distilled UNet, or a model with an LCM-LoRA merged in
    /// (its scheduler file is LCMScheduler's, or "lcm" is in its name). Defaults to the LCM
    /// sampler, 4 steps.
    #[serde(default)]
    pub lcm: bool,
    /// The UNet takes the guidance scale as an input (LCM-distilled, `time_cond_proj_dim`):
    /// it runs without classifier-free guidance, so the negative prompt has no effect.
    #[serde(default)]
    pub guidance_embedded: bool,
    /// 9-channel inpainting UNet.
    pub inpainting: bool,
    pub v_prediction: bool,
    /// The folder's native resolution (UNet `sample_size` x 8).
    pub native_size: u32,
    pub source: ModelSource,
    /// The folder's `atelier.json`, when it has one.
    pub card: Option<ModelCard>,
    /// Why the folder's `atelier.json` was not used, when it could not be read.
    #[serde(default)]
    pub card_problem: Option<String>,
    /// A single checkpoint file's size in bytes (`None` for a folder).
    #[serde(default)]
    pub file_size: Option<u64>,
    /// A single file's AUTOMATIC1111 model hash, when it is already known (see [`hash`]).
    #[serde(default)]
    pub hash: Option<String>,
    /// For a single file: what it predicts and how that was decided ("v: from model.yaml").
    #[serde(default)]
    pub prediction_note: Option<String>,
}

impl ModelInfo {
    /// Reads and validates the folder's configs (not the weights).
    pub fn from_dir(dir: &Path, source: ModelSource) -> Result<Self, ModelError> {
        let configs = ModelConfigs::read(dir)?;
        let name = if dir.is_file() {
            dir.file_stem()
        } else {
            dir.file_name()
        }
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
        Ok(Self::from_configs(name, dir, &configs, source))
    }

    pub fn from_configs(
        name: String,
        dir: &Path,
        configs: &ModelConfigs,
        source: ModelSource,
    ) -> Self {
        let card = ModelCard::read(dir);
        Self {
            turbo: configs.is_turbo(&name),
            lcm: configs.is_lcm(&name),
            guidance_embedded: configs.unet.time_cond_proj_dim.is_some(),
            name,
            dir: dir.to_path_buf(),
            family: configs.family,
            inpainting: configs.unet.in_channels == 9,
            v_prediction: configs.scheduler.is_v_prediction(),
            native_size: (configs.unet.sample_size
                * (1 << configs.vae.block_out_channels.len().saturating_sub(1)))
                as u32,
            source,
            card: card.as_ref().ok().cloned().flatten(),
            card_problem: card.err(),
            file_size: dir
                .is_file()
                .then(|| std::fs::metadata(dir).map(|m| m.len()).ok())
                .flatten(),
            hash: dir
                .is_file()
                .then(|| hash::cached_short_hash(dir))
                .flatten(),
            prediction_note: match &configs.weights {
                config::WeightSource::SingleFile(s) => Some(s.prediction_note.clone()),
                config::WeightSource::Folder => None,
            },
        }
    }

    /// The name to show: the card's title, else the folder name.
    pub fn display_name(&self) -> &str {
        self.card
            .as_ref()
            .map(|c| c.title.as_str())
            .filter(|t| !t.is_empty())
            .unwrap_or(&self.name)
    }

    /// Steps, guidance and sampler to start from: the card's, else by kind of model (LCM: the
    /// LCM sampler, 4 steps, guidance 8 for a UNet that takes it as an input, else 1, which
    /// is no classifier-free guidance, as LCM-LoRA wants; Turbo: 2 steps without guidance;
    /// SDXL: guidance 5; others 25 steps, guidance 7.5).
    pub fn recommended(&self) -> RecommendedSettings {
        use crate::generation::SamplerKind;
        if let Some(d) = self.card.as_ref().and_then(|c| c.defaults) {
            return d;
        }
        if self.lcm {
            return RecommendedSettings {
                steps: 4,
                guidance: if self.guidance_embedded { 8.0 } else { 1.0 },
                sampler: SamplerKind::Lcm,
            };
        }
        if self.turbo {
            return RecommendedSettings {
                steps: 2,
                guidance: 0.0,
                sampler: SamplerKind::EulerAncestral,
            };
        }
        RecommendedSettings {
            steps: 25,
            guidance: if self.family == Family::Sdxl {
                5.0
            } else {
                7.5
            },
            sampler: SamplerKind::DpmPp2mKarras,
        }
    }

    /// "SDXL-Turbo", "SD 2.x v-pred inpainting", ...
    pub fn family_label(&self) -> String {
        let mut label = match (self.family, self.turbo) {
            (Family::Sdxl, true) => "SDXL-Turbo".to_owned(),
            (Family::Sd2, true) => "SD-Turbo".to_owned(),
            (f, _) => f.label().to_owned(),
        };
        if self.lcm {
            label.push_str(" LCM");
        }
        if self.v_prediction {
            label.push_str(" v-pred");
        }
        if self.inpainting {
            label.push_str(" inpainting");
        }
        label
    }
}
