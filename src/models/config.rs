//! Reading a diffusers-layout folder's own config files (`model_index.json`, `unet/config.json`,
//! `vae/config.json`, `text_encoder*/config.json`, `scheduler/scheduler_config.json`,
//! `tokenizer*/`). Nothing here is a hard-coded preset: family, prediction type, scheduler
//! settings and sizes all come from these files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::Family;

/// Everything that can be wrong with a model folder, each naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: no such model folder")]
    NotFound { path: PathBuf },
    #[error("{path}: not a diffusers model folder (no model_index.json)")]
    NotDiffusers { path: PathBuf },
    #[error("{path}: missing {what}")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: cannot read: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: invalid config: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error(
        "{path}: unsupported pipeline {class:?} (Atelier runs Stable Diffusion 1.x, 2.x and SDXL)"
    )]
    UnsupportedPipeline { path: PathBuf, class: String },
    #[error("{path}: not a usable weight file: {reason}")]
    BadWeights { path: PathBuf, reason: String },
    #[error("{path}: this is {what}, not a model checkpoint")]
    NotACheckpoint { path: PathBuf, what: String },
    /// A kind of model recognised and not supported yet (SD3, Flux...), with what it is.
    #[error("{path}: {what}")]
    UnsupportedFile { path: PathBuf, what: String },
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: path.parent().unwrap_or(path).to_path_buf(),
            what: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        },
        _ => ModelError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::BadConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// An int or a per-block list, as diffusers writes `attention_head_dim` and friends.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    pub fn get(&self, block: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.get(block).or(v.last()).copied().unwrap_or(1),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_norm_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_one_f64() -> f64 {
    1.0
}
fn default_one() -> usize {
    1
}
fn default_four() -> usize {
    4
}
fn default_sample_size() -> usize {
    64
}

/// `unet/config.json` (UNet2DConditionModel).
#[derive(Clone, Debug, Deserialize)]
pub struct UnetConfig {
    #[serde(default = "default_four")]
    pub in_channels: usize,
    #[serde(default = "default_four")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    #[serde(default)]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_one")]
    pub layers_per_block: usize,
    /// Misnamed in diffusers: the number of heads when `num_attention_heads` is absent.
    #[serde(default)]
    pub attention_head_dim: Option<PerBlock>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    pub cross_attention_dim: PerBlock,
    #[serde(default)]
    pub transformer_layers_per_block: Option<PerBlock>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "default_norm_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default = "default_one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    /// `"text_time"` for SDXL.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// LCM-distilled UNets: the width of the guidance-scale embedding they take as an input
    /// (then there is no classifier-free guidance).
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
}

/// A diffusers ControlNet folder's `config.json` (`ControlNetModel`): the UNet encoder's
/// fields, plus how the control image is embedded.
#[derive(Clone, Debug, Deserialize)]
pub struct ControlNetConfig {
    #[serde(flatten)]
    pub unet: UnetConfig,
    #[serde(default = "default_three")]
    pub conditioning_channels: usize,
    #[serde(default = "default_embedding_channels")]
    pub conditioning_embedding_out_channels: Vec<usize>,
    /// `"rgb"` or `"bgr"`.
    #[serde(default = "default_rgb")]
    pub controlnet_conditioning_channel_order: String,
    /// The residuals are averaged over the picture (ControlNet 1.1 "shuffle").
    #[serde(default)]
    pub global_pool_conditions: bool,
    #[serde(default)]
    pub mid_block_type: Option<String>,
}

fn default_three() -> usize {
    3
}

fn default_embedding_channels() -> Vec<usize> {
    vec![16, 32, 96, 256]
}

fn default_rgb() -> String {
    "rgb".into()
}

impl ControlNetConfig {
    /// Reads `dir/config.json` and checks what Atelier can run.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let c: Self = read_json(&path)?;
        let bad = |reason: String| ModelError::BadConfig {
            path: path.clone(),
            reason,
        };
        c.unet.validate(&path)?;
        if c.conditioning_embedding_out_channels.is_empty() {
            return Err(bad("conditioning_embedding_out_channels is empty".into()));
        }
        if !matches!(
            c.controlnet_conditioning_channel_order.as_str(),
            "rgb" | "bgr"
        ) {
            return Err(bad(format!(
                "controlnet_conditioning_channel_order {:?} (rgb or bgr)",
                c.controlnet_conditioning_channel_order
            )));
        }
        if let Some(t) = c.mid_block_type.as_deref() {
            if t != "UNetMidBlock2DCrossAttn" {
                return Err(bad(format!("mid_block_type {t:?} is not supported yet")));
            }
        }
        Ok(c)
    }

    /// Why this ControlNet cannot steer `unet` (its residuals would not fit), if so.
    pub fn mismatch(&self, unet: &UnetConfig) -> Option<String> {
        let c = &self.unet;
        let width = |u: &UnetConfig| u.cross_attention_dim.get(0);
        let family = |u: &UnetConfig| match (u.addition_embed_type.as_deref(), width(u)) {
            (Some("text_time"), _) => "SDXL".to_owned(),
            (_, 768) => "SD 1.x".to_owned(),
            (_, 1024) => "SD 2.x".to_owned(),
            (_, w) => format!("a model with {w}-wide text"),
        };
        if width(c) != width(unet) || c.addition_embed_type != unet.addition_embed_type {
            return Some(format!(
                "a ControlNet for {}; this model is {}",
                family(c),
                family(unet)
            ));
        }
        if c.block_out_channels != unet.block_out_channels
            || c.layers_per_block != unet.layers_per_block
            || c.down_block_types != unet.down_block_types
        {
            return Some(format!(
                "its blocks ({:?} channels, {} layers each) are not this model's ({:?}, {})",
                c.block_out_channels,
                c.layers_per_block,
                unet.block_out_channels,
                unet.layers_per_block
            ));
        }
        None
    }
}

impl UnetConfig {
    /// Heads of block `i`: `num_attention_heads`, else diffusers' misnamed `attention_head_dim`.
    pub fn heads(&self, block: usize) -> usize {
        self.num_attention_heads
            .as_ref()
            .or(self.attention_head_dim.as_ref())
            .map(|p| p.get(block))
            .unwrap_or(8)
    }

    pub fn transformer_layers(&self, block: usize) -> usize {
        self.transformer_layers_per_block
            .as_ref()
            .map(|p| p.get(block))
            .unwrap_or(1)
    }

    pub fn has_cross_attention(&self, block: usize) -> bool {
        self.down_block_types
            .get(block)
            .is_some_and(|t| t.starts_with("CrossAttn"))
    }

    pub(super) fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |reason: String| ModelError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        if self.block_out_channels.is_empty() {
            return Err(bad("block_out_channels is empty".into()));
        }
        if self.block_out_channels.len() != self.down_block_types.len() {
            return Err(bad(format!(
                "{} block_out_channels but {} down_block_types",
                self.block_out_channels.len(),
                self.down_block_types.len()
            )));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| !matches!(t.as_str(), "DownBlock2D" | "CrossAttnDownBlock2D"))
        {
            return Err(bad(format!("unsupported down block {t}")));
        }
        if self.norm_num_groups == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| *c % self.norm_num_groups != 0)
        {
            return Err(bad(format!(
                "block_out_channels {:?} not divisible by norm_num_groups {}",
                self.block_out_channels, self.norm_num_groups
            )));
        }
        if !matches!(self.in_channels, 4 | 9) || self.out_channels != 4 {
            return Err(bad(format!(
                "expected 4 (or 9 for inpainting) input and 4 output channels, found {} and {}",
                self.in_channels, self.out_channels
            )));
        }
        Ok(())
    }
}

/// `vae/config.json` (AutoencoderKL).
#[derive(Clone, Debug, Deserialize)]
pub struct VaeConfig {
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_one")]
    pub layers_per_block: usize,
    #[serde(default = "default_four")]
    pub latent_channels: usize,
    #[serde(default = "default_norm_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
}

fn default_scaling() -> f64 {
    0.18215
}

/// `text_encoder*/config.json` (CLIPTextModel / CLIPTextModelWithProjection).
#[derive(Clone, Debug, Deserialize)]
pub struct TextEncoderConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn default_max_pos() -> usize {
    77
}
fn default_act() -> String {
    "quick_gelu".into()
}

/// `scheduler/scheduler_config.json`: the training noise schedule all our samplers share.
#[derive(Clone, Debug, Deserialize)]
pub struct SchedulerFileConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default = "default_prediction")]
    pub prediction_type: String,
    #[serde(default)]
    pub timestep_spacing: Option<String>,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    /// DDIM clips its x0 prediction to `±clip_sample_range`; diffusers' DDIM default is on.
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default = "default_one_f64")]
    pub clip_sample_range: f64,
    /// Rescale the betas to zero terminal SNR (Lin et al. 2024, diffusers'
    /// `rescale_betas_zero_snr`): the last training step is pure noise, so the picture's layout
    /// comes from the prompt instead of from the seed's low frequencies. Meant for v-prediction.
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// LCM: the distillation schedule its few timesteps are picked from (LCMScheduler's
    /// default 50 when absent, as `from_config` of another scheduler's file gives).
    #[serde(default)]
    pub original_inference_steps: Option<usize>,
    /// LCM: the timestep scale of its boundary condition (LCMScheduler's default 10).
    #[serde(default)]
    pub timestep_scaling: Option<f64>,
}

fn default_train_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.00085
}
fn default_beta_end() -> f64 {
    0.012
}
fn default_beta_schedule() -> String {
    "scaled_linear".into()
}
fn default_prediction() -> String {
    "epsilon".into()
}

impl SchedulerFileConfig {
    pub fn is_v_prediction(&self) -> bool {
        self.prediction_type == "v_prediction"
    }
}

#[derive(Clone, Debug, Deserialize)]
struct ModelIndex {
    #[serde(rename = "_class_name")]
    class_name: String,
    #[serde(default)]
    text_encoder_2: Option<serde_json::Value>,
}

/// How to tokenize: a `tokenizer.json`, or the slow-tokenizer pair `vocab.json` + `merges.txt`
/// (in `dir`, or given inline: a single checkpoint uses CLIP's vocabulary, compiled in).
#[derive(Clone, Debug)]
pub struct TokenizerFiles {
    pub dir: PathBuf,
    /// `vocab.json` and `merges.txt` text, instead of files in `dir`.
    pub inline: Option<(Arc<str>, Arc<str>)>,
    /// The padding token named in `special_tokens_map.json` / `tokenizer_config.json`
    /// (SD 2.x pads with `!`, SD 1.x with `<|endoftext|>`).
    pub pad_token: Option<String>,
    pub max_length: usize,
}

/// Where a model's weights are: a diffusers folder's component files, or one checkpoint file
/// in the original layout (see [`super::ldm`]).
#[derive(Clone, Debug)]
pub enum WeightSource {
    Folder,
    SingleFile(Arc<super::ldm::SingleFile>),
}

/// All of a model's configs, read and checked together: a diffusers folder's own files, or a
/// single checkpoint's (see [`super::ldm`]).
#[derive(Clone, Debug)]
pub struct ModelConfigs {
    /// The model folder, or the single checkpoint file.
    pub dir: PathBuf,
    pub pipeline_class: String,
    pub family: Family,
    pub unet: UnetConfig,
    pub vae: VaeConfig,
    pub text_encoder: TextEncoderConfig,
    pub text_encoder_2: Option<TextEncoderConfig>,
    pub tokenizer: TokenizerFiles,
    pub tokenizer_2: Option<TokenizerFiles>,
    pub scheduler: SchedulerFileConfig,
    pub weights: WeightSource,
}

impl ModelConfigs {
    /// A diffusers folder's configs, or a single checkpoint file's.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        Self::read_with(dir, &super::ldm::Hints::default())
    }

    /// Like [`ModelConfigs::read`], with what the user says about a single file.
    pub fn read_with(dir: &Path, hints: &super::ldm::Hints) -> Result<Self, ModelError> {
        if dir.is_file() {
            let file = super::checkpoint::WeightFile::open(dir)?;
            return super::ldm::configs_for(file, hints);
        }
        if !dir.is_dir() {
            return Err(ModelError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        let index_path = dir.join("model_index.json");
        if !index_path.is_file() {
            return Err(ModelError::NotDiffusers {
                path: dir.to_path_buf(),
            });
        }
        let index: ModelIndex = read_json(&index_path)?;
        let is_xl = match index.class_name.as_str() {
            "StableDiffusionPipeline"
            | "StableDiffusionImg2ImgPipeline"
            | "StableDiffusionInpaintPipeline" => false,
            "StableDiffusionXLPipeline"
            | "StableDiffusionXLImg2ImgPipeline"
            | "StableDiffusionXLInpaintPipeline" => true,
            other => {
                return Err(ModelError::UnsupportedPipeline {
                    path: index_path,
                    class: other.to_owned(),
                })
            }
        };
        let unet_path = dir.join("unet").join("config.json");
        let unet: UnetConfig = read_json(&unet_path)?;
        unet.validate(&unet_path)?;
        let vae: VaeConfig = read_json(&dir.join("vae").join("config.json"))?;
        let text_encoder: TextEncoderConfig =
            read_json(&dir.join("text_encoder").join("config.json"))?;
        let has_te2 = index.text_encoder_2.as_ref().is_some_and(|v| {
            !v.is_null() && v.as_array().is_none_or(|a| a.iter().all(|x| !x.is_null()))
        });
        let text_encoder_2 = if is_xl || has_te2 {
            Some(read_json::<TextEncoderConfig>(
                &dir.join("text_encoder_2").join("config.json"),
            )?)
        } else {
            None
        };
        let scheduler: SchedulerFileConfig =
            read_json(&dir.join("scheduler").join("scheduler_config.json"))?;
        let tokenizer = TokenizerFiles::find(&dir.join("tokenizer"))?;
        let tokenizer_2 = if text_encoder_2.is_some() {
            // SDXL's second tokenizer differs only in padding; fall back to the first.
            let dir2 = dir.join("tokenizer_2");
            Some(if dir2.is_dir() {
                TokenizerFiles::find(&dir2)?
            } else {
                tokenizer.clone()
            })
        } else {
            None
        };
        let family = if is_xl {
            Family::Sdxl
        } else if text_encoder.hidden_size >= 1024 || unet.use_linear_projection {
            Family::Sd2
        } else {
            Family::Sd1
        };
        let configs = Self {
            dir: dir.to_path_buf(),
            pipeline_class: index.class_name,
            family,
            unet,
            vae,
            text_encoder,
            text_encoder_2,
            tokenizer,
            tokenizer_2,
            scheduler,
            weights: WeightSource::Folder,
        };
        configs.validate()?;
        Ok(configs)
    }

    pub(super) fn validate(&self) -> Result<(), ModelError> {
        let context_dim = self.text_encoder.hidden_size
            + self.text_encoder_2.as_ref().map_or(0, |t| t.hidden_size);
        let cross = self.unet.cross_attention_dim.get(0);
        if cross != context_dim {
            return Err(ModelError::BadConfig {
                path: self.component_path("unet"),
                reason: format!(
                    "cross_attention_dim {cross} does not match the text encoders' width {context_dim}"
                ),
            });
        }
        if self.family == Family::Sdxl
            && self.unet.addition_embed_type.as_deref() != Some("text_time")
        {
            return Err(ModelError::BadConfig {
                path: self.component_path("unet"),
                reason: "an SDXL UNet needs addition_embed_type \"text_time\"".into(),
            });
        }
        Ok(())
    }

    /// Few-step distilled models: trailing timesteps in the scheduler config, or "turbo" in the name.
    pub fn is_turbo(&self, name: &str) -> bool {
        name.to_lowercase().contains("turbo")
            || self.dir.to_string_lossy().to_lowercase().contains("turbo")
    }

    /// Where a component's problems are reported: its folder, or the single file.
    pub fn component_path(&self, component: &str) -> PathBuf {
        match self.weights {
            WeightSource::Folder => self.dir.join(component),
            WeightSource::SingleFile(_) => self.dir.clone(),
        }
    }

    /// Latent Consistency Models: LCMScheduler's file, an LCM-distilled UNet (it takes the
    /// guidance scale as an input), or "lcm" as a word of the name ("LCM_Dreamshaper_v7",
    /// "dreamshaper-8-lcm"; not "malcolm").
    pub fn is_lcm(&self, name: &str) -> bool {
        self.scheduler.class_name == "LCMScheduler"
            || self.unet.time_cond_proj_dim.is_some()
            || name_has_word(name, "lcm")
    }

    /// The safetensors file(s) of a component, preferring full precision where both exist.
    pub fn weights(&self, component: &str) -> Result<Vec<PathBuf>, ModelError> {
        weight_files(&self.dir.join(component))
    }
}

/// Whether `word` is one of the name's words (split at anything but letters and digits),
/// ignoring case.
pub fn name_has_word(name: &str, word: &str) -> bool {
    name.split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// Finds a component's weights: `diffusion_pytorch_model[.fp16].safetensors`,
/// `model[.fp16].safetensors`, or a sharded `*.safetensors.index.json`.
pub fn weight_files(component_dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    for stem in ["diffusion_pytorch_model", "model"] {
        for variant in ["", ".fp16"] {
            let single = component_dir.join(format!("{stem}{variant}.safetensors"));
            if single.is_file() {
                return Ok(vec![single]);
            }
            let index = component_dir.join(format!("{stem}.safetensors{variant}.index.json"));
            let index_alt = component_dir.join(format!("{stem}{variant}.safetensors.index.json"));
            for index in [index, index_alt] {
                if index.is_file() {
                    return sharded(&index);
                }
            }
        }
    }
    Err(ModelError::Missing {
        path: component_dir.to_path_buf(),
        what: "weights (diffusion_pytorch_model.safetensors or model.safetensors)".into(),
    })
}

fn sharded(index: &Path) -> Result<Vec<PathBuf>, ModelError> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let parsed: Index = read_json(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = parsed.weight_map.values().map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(ModelError::Missing {
            path: dir.to_path_buf(),
            what: format!("shard {}", missing.display()),
        });
    }
    Ok(files)
}

impl TokenizerFiles {
    fn find(dir: &Path) -> Result<Self, ModelError> {
        let has_json = dir.join("tokenizer.json").is_file();
        let has_pair = dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file();
        if !has_json && !has_pair {
            return Err(ModelError::Missing {
                path: dir.to_path_buf(),
                what: "tokenizer (tokenizer.json, or vocab.json + merges.txt)".into(),
            });
        }
        #[derive(Deserialize, Default)]
        struct TokConfig {
            #[serde(default)]
            pad_token: Option<serde_json::Value>,
            #[serde(default)]
            model_max_length: Option<f64>,
        }
        let token_text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => {
                o.get("content").and_then(|c| c.as_str()).map(str::to_owned)
            }
            _ => None,
        };
        let mut pad_token = None;
        let mut max_length = 77;
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(file);
            if path.is_file() {
                let cfg: TokConfig = read_json(&path)?;
                if let Some(pad) = cfg.pad_token.as_ref().and_then(token_text) {
                    pad_token = Some(pad);
                }
                if let Some(m) = cfg.model_max_length.filter(|m| *m >= 2.0 && *m <= 4096.0) {
                    max_length = m as usize;
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            inline: None,
            pad_token,
            max_length,
        })
    }
}
