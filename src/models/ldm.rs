//! Stable Diffusion's original single-file layout ("LDM": `model.diffusion_model.*`,
//! `first_stage_model.*`, `cond_stage_model.*`, SDXL's `conditioner.embedders.*`) read as the
//! diffusers layout Atelier's blocks are built from, in place: every diffusers tensor name maps
//! to the file's tensor it comes from and how to take it (as is, a 1×1 convolution squeezed to
//! a matrix, a third of OpenCLIP's fused `in_proj`, or OpenCLIP's `text_projection` transposed).
//!
//! What the file is (an SD 1.x, 2.x or SDXL checkpoint, a 9-channel inpainting one, a LoRA, a
//! VAE, an embedding, a ControlNet, or something unsupported) is told from its tensor names and
//! shapes. The configs are those of each family's standard release, checked against the
//! file's shapes; a file Atelier wrote itself may carry its configs in its safetensors metadata
//! (`atelier.configs`), which is how tiny test models round-trip.
//!
//! [`diffusers_to_ldm`] is the inverse map, for writing a diffusers folder as one file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::checkpoint::WeightFile;
use super::config::{
    ModelConfigs, SchedulerFileConfig, TextEncoderConfig, TokenizerFiles, UnetConfig, VaeConfig,
    WeightSource,
};
use super::{Family, ModelError};

/// CLIP's BPE vocabulary (OpenAI's, also OpenCLIP's), compiled in: single files carry no
/// tokenizer.
pub const CLIP_VOCAB_JSON: &str = include_str!("../../assets/clip/vocab.json");
pub const CLIP_MERGES_TXT: &str = include_str!("../../assets/clip/merges.txt");

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const SD1_TEXT: &str = "cond_stage_model.transformer.";
const SD2_TEXT: &str = "cond_stage_model.model.";
const XL_TEXT_1: &str = "conditioner.embedders.0.transformer.";
const XL_TEXT_2: &str = "conditioner.embedders.1.model.";
const XL_REFINER_TEXT: &str = "conditioner.embedders.0.model.";
/// The metadata key under which Atelier writes a single file's diffusers configs.
pub const CONFIGS_METADATA: &str = "atelier.configs";

/// How a diffusers tensor is taken from the file's tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    Plain,
    /// `[o, i, 1, 1]` → `[o, i]` (the VAE's attention projections are 1×1 convolutions there).
    Squeeze,
    /// Rows `part × n / of .. (part + 1) × n / of` of the first dim (OpenCLIP's fused q/k/v).
    Rows {
        part: usize,
        of: usize,
    },
    /// `[a, b]` → `[b, a]` (OpenCLIP's `text_projection` is applied as `x @ P`).
    Transpose,
}

/// Where a diffusers tensor comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub key: String,
    pub transform: Transform,
}

/// A single checkpoint's map from `component/diffusers.name` to its tensors in the file.
#[derive(Debug)]
pub struct SingleFile {
    pub file: WeightFile,
    pub map: HashMap<String, Source>,
    /// What the model predicts and how that was decided ("v: from model.yaml").
    pub prediction_note: String,
}

impl SingleFile {
    /// The source of `name` in `component` (`unet`, `vae`, `text_encoder`, `text_encoder_2`).
    pub fn source(&self, component: &str, name: &str) -> Option<&Source> {
        self.map.get(&format!("{component}/{name}"))
    }
}

/// What a single weight file is, from its tensor names and shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    Checkpoint {
        family: Family,
        inpainting: bool,
    },
    Lora,
    Vae,
    Embedding,
    ControlNet,
    /// Recognised and refused, with the reason ("SD3 is not supported yet").
    Unsupported(String),
    Unknown,
}

impl FileKind {
    pub fn describe(&self) -> String {
        match self {
            FileKind::Checkpoint { family, inpainting } => format!(
                "a {} checkpoint{}",
                family.label(),
                if *inpainting { " (inpainting)" } else { "" }
            ),
            FileKind::Lora => "a LoRA".into(),
            FileKind::Vae => "a VAE".into(),
            FileKind::Embedding => "a textual-inversion embedding".into(),
            FileKind::ControlNet => "a ControlNet".into(),
            FileKind::Unsupported(why) => why.clone(),
            FileKind::Unknown => "not a Stable Diffusion file Atelier knows".into(),
        }
    }
}

/// Tells what `file` holds.
pub fn classify(file: &WeightFile) -> FileKind {
    let has = |k: &str| file.tensors.contains_key(k);
    let any = |prefix: &str| file.tensors.keys().any(|k| k.starts_with(prefix));
    // A full ControlLDM checkpoint (ControlNet 1.0) holds its base model too.
    if any(CONTROL_MODEL) {
        return FileKind::ControlNet;
    }
    let unet_in = format!("{UNET}input_blocks.0.0.weight");
    if let Some(shape) = file.shape(&unet_in) {
        if has(&format!("{UNET}input_blocks.10.0.skip_connection.bias")) && !any(VAE) {
            return FileKind::Unsupported("an x4 upscaler checkpoint (not supported yet)".into());
        }
        if any(XL_REFINER_TEXT) && !any(XL_TEXT_2) {
            return FileKind::Unsupported(
                "an SDXL refiner checkpoint (not supported yet; use an SDXL base model)".into(),
            );
        }
        if has("edm_mean") || has("edm_std") {
            return FileKind::Unsupported(
                "a Playground v2.5 (EDM) checkpoint (not supported yet)".into(),
            );
        }
        let inpainting = shape.get(1) == Some(&9);
        if shape.get(1) == Some(&8) {
            return FileKind::Unsupported(
                "an InstructPix2Pix checkpoint (not supported yet)".into(),
            );
        }
        let family = if any(XL_TEXT_2) || has(&format!("{UNET}label_emb.0.0.weight")) {
            Family::Sdxl
        } else if any(SD2_TEXT) || context_width(file) == Some(1024) {
            Family::Sd2
        } else {
            Family::Sd1
        };
        return FileKind::Checkpoint { family, inpainting };
    }
    if any("model.diffusion_model.joint_blocks.") || any("joint_blocks.") {
        return FileKind::Unsupported("a Stable Diffusion 3 checkpoint (not supported yet)".into());
    }
    if any("double_blocks.") || any("model.diffusion_model.double_blocks.") {
        return FileKind::Unsupported("a Flux checkpoint (not supported yet)".into());
    }
    if has("input_hint_block.0.weight") || any("controlnet_cond_embedding.") {
        return FileKind::ControlNet;
    }
    let lora_suffixes = [
        ".lora_down.weight",
        ".lora_up.weight",
        ".lora_A.weight",
        ".lora_B.weight",
        ".hada_w1_a",
        ".lokr_w1",
        ".lokr_w1_a",
        ".lokr_w2",
    ];
    if file
        .tensors
        .keys()
        .any(|k| lora_suffixes.iter().any(|s| k.ends_with(s)))
    {
        return FileKind::Lora;
    }
    if has("emb_params")
        || has("clip_l") && has("clip_g")
        || (file.tensors.len() == 1 && file.tensors.values().all(|t| t.shape.len() <= 2))
    {
        return FileKind::Embedding;
    }
    if has("encoder.conv_in.weight") && has("decoder.conv_in.weight")
        || has(&format!("{VAE}encoder.conv_in.weight"))
        || has("encoder.down.0.block.0.conv1.weight")
    {
        return FileKind::Vae;
    }
    FileKind::Unknown
}

/// The cross-attention width of an LDM UNet (768 SD 1.x, 1024 SD 2.x, 2048 SDXL).
fn context_width(file: &WeightFile) -> Option<usize> {
    file.tensors
        .iter()
        .find(|(k, _)| k.starts_with(UNET) && k.ends_with("attn2.to_k.weight"))
        .and_then(|(_, t)| t.shape.get(1).copied())
}

// --- The UNet --------------------------------------------------------------------------------

const RESNET_RENAMES: [(&str, &str); 6] = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];

fn rename_resnet(rest: &str) -> Option<String> {
    RESNET_RENAMES
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
}

fn unrename_resnet(rest: &str) -> Option<String> {
    RESNET_RENAMES
        .iter()
        .find_map(|(to, from)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
}

/// `i.k.rest` → `(i, k, rest)`.
fn indices2(s: &str) -> Option<(usize, usize, &str)> {
    let (i, s) = s.split_once('.')?;
    let (k, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, k.parse().ok()?, rest))
}

/// An LDM UNet name (prefix removed) as its diffusers name; `r` is layers per block.
fn unet_key(k: &str, r: usize) -> Option<String> {
    let top = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    if let Some(found) = top
        .iter()
        .find_map(|(from, to)| k.strip_prefix(from).map(|rest| format!("{to}{rest}")))
    {
        return Some(found);
    }
    if let Some(s) = k.strip_prefix("input_blocks.") {
        let (i, sub, rest) = indices2(s)?;
        let (b, j) = ((i.checked_sub(1)?) / (r + 1), (i - 1) % (r + 1));
        return match (j < r, sub) {
            (true, 0) => Some(format!(
                "down_blocks.{b}.resnets.{j}.{}",
                rename_resnet(rest)?
            )),
            (true, 1) => Some(format!("down_blocks.{b}.attentions.{j}.{rest}")),
            (false, 0) => Some(format!(
                "down_blocks.{b}.downsamplers.0.conv.{}",
                rest.strip_prefix("op.")?
            )),
            _ => None,
        };
    }
    if let Some(s) = k.strip_prefix("middle_block.") {
        let (i, rest) = s.split_once('.')?;
        return match i {
            "0" => Some(format!("mid_block.resnets.0.{}", rename_resnet(rest)?)),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => Some(format!("mid_block.resnets.1.{}", rename_resnet(rest)?)),
            _ => None,
        };
    }
    if let Some(s) = k.strip_prefix("output_blocks.") {
        let (i, sub, rest) = indices2(s)?;
        let (b, j) = (i / (r + 1), i % (r + 1));
        return match sub {
            0 => Some(format!(
                "up_blocks.{b}.resnets.{j}.{}",
                rename_resnet(rest)?
            )),
            1 | 2 if rest.starts_with("conv.") => {
                Some(format!("up_blocks.{b}.upsamplers.0.{rest}"))
            }
            1 => Some(format!("up_blocks.{b}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    None
}

/// A diffusers UNet name as its LDM name (without the prefix); `attn_up[b]`: up block `b`
/// has attentions (its upsampler is then the third sub-module, else the second).
fn unet_key_back(k: &str, r: usize, attn_up: &[bool]) -> Option<String> {
    let top = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ];
    if let Some(found) = top
        .iter()
        .find_map(|(from, to)| k.strip_prefix(from).map(|rest| format!("{to}{rest}")))
    {
        return Some(found);
    }
    if let Some(rest) = k.strip_prefix("mid_block.resnets.0.") {
        return Some(format!("middle_block.0.{}", unrename_resnet(rest)?));
    }
    if let Some(rest) = k.strip_prefix("mid_block.resnets.1.") {
        return Some(format!("middle_block.2.{}", unrename_resnet(rest)?));
    }
    if let Some(rest) = k.strip_prefix("mid_block.attentions.0.") {
        return Some(format!("middle_block.1.{rest}"));
    }
    let parts: Vec<&str> = k.splitn(5, '.').collect();
    match parts.as_slice() {
        ["down_blocks", b, "resnets", j, rest] => {
            let i = 1 + b.parse::<usize>().ok()? * (r + 1) + j.parse::<usize>().ok()?;
            Some(format!("input_blocks.{i}.0.{}", unrename_resnet(rest)?))
        }
        ["down_blocks", b, "attentions", j, rest] => {
            let i = 1 + b.parse::<usize>().ok()? * (r + 1) + j.parse::<usize>().ok()?;
            Some(format!("input_blocks.{i}.1.{rest}"))
        }
        ["down_blocks", b, "downsamplers", "0", rest] => {
            let i = (b.parse::<usize>().ok()? + 1) * (r + 1);
            Some(format!(
                "input_blocks.{i}.0.op.{}",
                rest.strip_prefix("conv.")?
            ))
        }
        ["up_blocks", b, "resnets", j, rest] => {
            let i = b.parse::<usize>().ok()? * (r + 1) + j.parse::<usize>().ok()?;
            Some(format!("output_blocks.{i}.0.{}", unrename_resnet(rest)?))
        }
        ["up_blocks", b, "attentions", j, rest] => {
            let i = b.parse::<usize>().ok()? * (r + 1) + j.parse::<usize>().ok()?;
            Some(format!("output_blocks.{i}.1.{rest}"))
        }
        ["up_blocks", b, "upsamplers", "0", rest] => {
            let b: usize = b.parse().ok()?;
            let i = b * (r + 1) + r;
            let sub = if *attn_up.get(b)? { 2 } else { 1 };
            Some(format!("output_blocks.{i}.{sub}.{rest}"))
        }
        _ => None,
    }
}

/// Layers per block of an LDM UNet: the first downsampler is input block `r + 1`.
fn layers_per_block(file: &WeightFile) -> usize {
    (1..64)
        .find(|i| {
            file.tensors
                .contains_key(&format!("{UNET}input_blocks.{i}.0.op.weight"))
        })
        .map(|i| i - 1)
        .unwrap_or_else(|| {
            // One level only: every input block after conv_in is a resnet.
            (1..64)
                .take_while(|i| {
                    file.tensors
                        .keys()
                        .any(|k| k.starts_with(&format!("{UNET}input_blocks.{i}.")))
                })
                .count()
        })
        .max(1)
}

// --- The VAE ---------------------------------------------------------------------------------

fn vae_key(k: &str, levels: usize) -> Option<(String, Transform)> {
    let plain = |s: String| Some((s, Transform::Plain));
    for side in ["encoder", "decoder"] {
        let Some(s) = k.strip_prefix(side).and_then(|s| s.strip_prefix('.')) else {
            continue;
        };
        if let Some(rest) = s.strip_prefix("norm_out.") {
            return plain(format!("{side}.conv_norm_out.{rest}"));
        }
        if s.starts_with("conv_in.") || s.starts_with("conv_out.") {
            return plain(format!("{side}.{s}"));
        }
        if let Some(rest) = s.strip_prefix("mid.") {
            let mid = format!("{side}.mid_block");
            if let Some(r) = rest.strip_prefix("block_1.") {
                return plain(format!(
                    "{mid}.resnets.0.{}",
                    r.replace("nin_shortcut", "conv_shortcut")
                ));
            }
            if let Some(r) = rest.strip_prefix("block_2.") {
                return plain(format!(
                    "{mid}.resnets.1.{}",
                    r.replace("nin_shortcut", "conv_shortcut")
                ));
            }
            if let Some(r) = rest.strip_prefix("attn_1.") {
                let (name, tail) = r.split_once('.')?;
                let to = match name {
                    "norm" => return plain(format!("{mid}.attentions.0.group_norm.{tail}")),
                    "q" => "to_q",
                    "k" => "to_k",
                    "v" => "to_v",
                    "proj_out" => "to_out.0",
                    _ => return None,
                };
                let t = if tail == "weight" {
                    Transform::Squeeze
                } else {
                    Transform::Plain
                };
                return Some((format!("{mid}.attentions.0.{to}.{tail}"), t));
            }
            return None;
        }
        let (kind, rest) = if side == "encoder" {
            ("down", s.strip_prefix("down.")?)
        } else {
            ("up", s.strip_prefix("up.")?)
        };
        let (i, rest) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let b = if kind == "up" {
            levels.checked_sub(1 + i)?
        } else {
            i
        };
        let blocks = format!("{side}.{kind}_blocks.{b}");
        if let Some(r) = rest.strip_prefix("block.") {
            return plain(format!(
                "{blocks}.resnets.{}",
                r.replace("nin_shortcut", "conv_shortcut")
            ));
        }
        if let Some(r) = rest.strip_prefix("downsample.") {
            return plain(format!("{blocks}.downsamplers.0.{r}"));
        }
        if let Some(r) = rest.strip_prefix("upsample.") {
            return plain(format!("{blocks}.upsamplers.0.{r}"));
        }
        return None;
    }
    if k.starts_with("quant_conv.") || k.starts_with("post_quant_conv.") {
        return plain(k.to_owned());
    }
    None
}

fn vae_key_back(k: &str, levels: usize) -> Option<(String, bool)> {
    let plain = |s: String| Some((s, false));
    for side in ["encoder", "decoder"] {
        let Some(s) = k.strip_prefix(side).and_then(|s| s.strip_prefix('.')) else {
            continue;
        };
        if let Some(rest) = s.strip_prefix("conv_norm_out.") {
            return plain(format!("{side}.norm_out.{rest}"));
        }
        if s.starts_with("conv_in.") || s.starts_with("conv_out.") {
            return plain(format!("{side}.{s}"));
        }
        if let Some(rest) = s.strip_prefix("mid_block.") {
            if let Some(r) = rest.strip_prefix("resnets.0.") {
                return plain(format!(
                    "{side}.mid.block_1.{}",
                    r.replace("conv_shortcut", "nin_shortcut")
                ));
            }
            if let Some(r) = rest.strip_prefix("resnets.1.") {
                return plain(format!(
                    "{side}.mid.block_2.{}",
                    r.replace("conv_shortcut", "nin_shortcut")
                ));
            }
            let r = rest.strip_prefix("attentions.0.")?;
            if let Some(t) = r.strip_prefix("group_norm.") {
                return plain(format!("{side}.mid.attn_1.norm.{t}"));
            }
            let (name, tail) = if let Some(t) = r.strip_prefix("to_out.0.") {
                ("proj_out", t)
            } else {
                let (n, t) = r.split_once('.')?;
                (
                    match n {
                        "to_q" => "q",
                        "to_k" => "k",
                        "to_v" => "v",
                        _ => return None,
                    },
                    t,
                )
            };
            return Some((format!("{side}.mid.attn_1.{name}.{tail}"), tail == "weight"));
        }
        let (kind, rest) = if side == "encoder" {
            ("down", s.strip_prefix("down_blocks.")?)
        } else {
            ("up", s.strip_prefix("up_blocks.")?)
        };
        let (b, rest) = rest.split_once('.')?;
        let b: usize = b.parse().ok()?;
        let i = if kind == "up" {
            levels.checked_sub(1 + b)?
        } else {
            b
        };
        if let Some(r) = rest.strip_prefix("resnets.") {
            return plain(format!(
                "{side}.{kind}.{i}.block.{}",
                r.replace("conv_shortcut", "nin_shortcut")
            ));
        }
        if let Some(r) = rest.strip_prefix("downsamplers.0.") {
            return plain(format!("{side}.down.{i}.downsample.{r}"));
        }
        if let Some(r) = rest.strip_prefix("upsamplers.0.") {
            return plain(format!("{side}.up.{i}.upsample.{r}"));
        }
        return None;
    }
    (k.starts_with("quant_conv.") || k.starts_with("post_quant_conv."))
        .then(|| (k.to_owned(), false))
}

fn vae_levels(keys: impl Iterator<Item = String>) -> usize {
    keys.filter_map(|k| {
        let rest = k.split("encoder.down.").nth(1)?;
        rest.split('.').next()?.parse::<usize>().ok()
    })
    .max()
    .map_or(0, |m| m + 1)
}

// --- Text encoders -----------------------------------------------------------------------------

/// OpenCLIP names (prefix removed) as Hugging Face CLIP names.
fn open_clip_keys(k: &str, has_hf_projection: bool) -> Vec<(String, Transform)> {
    let one = |s: String| vec![(s, Transform::Plain)];
    match k {
        "token_embedding.weight" => {
            return one("text_model.embeddings.token_embedding.weight".into())
        }
        "positional_embedding" => {
            return one("text_model.embeddings.position_embedding.weight".into())
        }
        "text_projection" if !has_hf_projection => {
            return vec![("text_projection.weight".into(), Transform::Transpose)]
        }
        "text_projection.weight" => return one("text_projection.weight".into()),
        _ => {}
    }
    if let Some(rest) = k.strip_prefix("ln_final.") {
        return one(format!("text_model.final_layer_norm.{rest}"));
    }
    let Some(s) = k.strip_prefix("transformer.resblocks.") else {
        return Vec::new();
    };
    let Some((n, rest)) = s.split_once('.') else {
        return Vec::new();
    };
    let layer = format!("text_model.encoder.layers.{n}");
    let renames = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ];
    if let Some(r) = renames
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{layer}.{to}{r}")))
    {
        return one(r);
    }
    let tail = match rest {
        "attn.in_proj_weight" => "weight",
        "attn.in_proj_bias" => "bias",
        _ => return Vec::new(),
    };
    ["q_proj", "k_proj", "v_proj"]
        .iter()
        .enumerate()
        .map(|(part, p)| {
            (
                format!("{layer}.self_attn.{p}.{tail}"),
                Transform::Rows { part, of: 3 },
            )
        })
        .collect()
}

// --- Building the map and the configs ---------------------------------------------------------

/// What a sidecar or the user says about a single file (see [`configs_for`]).
#[derive(Clone, Debug, Default)]
pub struct Hints {
    /// `Some(true)`: v-prediction; from the model's card or `--prediction`.
    pub v_prediction: Option<bool>,
}

/// The single file's configs and its map, or why it cannot be used.
pub fn configs_for(file: WeightFile, hints: &Hints) -> Result<ModelConfigs, ModelError> {
    let path = file.path.clone();
    let bad = |reason: String| ModelError::BadWeights {
        path: path.clone(),
        reason,
    };
    let (family, inpainting) = match classify(&file) {
        FileKind::Checkpoint { family, inpainting } => (family, inpainting),
        FileKind::Unknown => {
            return Err(bad(
                "not a Stable Diffusion checkpoint (no model.diffusion_model.* tensors)".into(),
            ))
        }
        FileKind::Unsupported(what) => {
            return Err(ModelError::UnsupportedFile {
                path: path.clone(),
                what,
            })
        }
        other => {
            return Err(ModelError::NotACheckpoint {
                path: path.clone(),
                what: other.describe(),
            })
        }
    };
    let r = layers_per_block(&file);
    let mut map: HashMap<String, Source> = HashMap::new();
    let mut add = |component: &str, name: String, key: &str, transform: Transform| {
        map.insert(
            format!("{component}/{name}"),
            Source {
                key: key.to_owned(),
                transform,
            },
        );
    };
    let levels = vae_levels(
        file.tensors
            .keys()
            .filter_map(|k| k.strip_prefix(VAE).map(str::to_owned)),
    );
    let hf_projection = file
        .tensors
        .contains_key(&format!("{XL_TEXT_2}text_projection.weight"));
    for key in file.tensors.keys() {
        if let Some(k) = key.strip_prefix(UNET) {
            if let Some(name) = unet_key(k, r) {
                add("unet", name, key, Transform::Plain);
            }
        } else if let Some(k) = key.strip_prefix(VAE) {
            if let Some((name, t)) = vae_key(k, levels) {
                add("vae", name, key, t);
            }
        } else if let Some(k) = key
            .strip_prefix(SD1_TEXT)
            .or_else(|| key.strip_prefix(XL_TEXT_1))
        {
            if k.ends_with("position_ids") {
                continue;
            }
            let name = if k.starts_with("text_model.") {
                k.to_owned()
            } else {
                format!("text_model.{k}")
            };
            add("text_encoder", name, key, Transform::Plain);
        } else if let Some(k) = key.strip_prefix(SD2_TEXT) {
            for (name, t) in open_clip_keys(k, false) {
                add("text_encoder", name, key, t);
            }
        } else if let Some(k) = key.strip_prefix(XL_TEXT_2) {
            for (name, t) in open_clip_keys(k, hf_projection) {
                add("text_encoder_2", name, key, t);
            }
        }
    }
    let shape = |component: &str, name: &str| -> Option<Vec<usize>> {
        let src = map.get(&format!("{component}/{name}"))?;
        let s = file.shape(&src.key)?.to_vec();
        Some(match src.transform {
            Transform::Plain => s,
            Transform::Squeeze => s.into_iter().take(2).collect(),
            Transform::Rows { of, .. } => {
                let mut s = s;
                s[0] /= of;
                s
            }
            Transform::Transpose => s.into_iter().rev().collect(),
        })
    };
    if !map.keys().any(|k| k.starts_with("vae/")) {
        return Err(bad(
            "it has no VAE (first_stage_model.*); choose a VAE for it (--vae)".into(),
        ));
    }
    let embedded = file.metadata.get(CONFIGS_METADATA).cloned();
    let mut configs = match embedded {
        Some(text) => {
            embedded_configs(&text).map_err(|e| bad(format!("{CONFIGS_METADATA}: {e}")))?
        }
        None => standard_configs(family, r, &shape, &map)
            .map_err(|e| bad(format!("not a standard {} layout: {e}", family.label())))?,
    };
    let (v, why) = prediction(family, inpainting, &file, hints);
    let prediction_note = format!("{}: {why}", if v { "v" } else { "eps" });
    if v {
        configs.scheduler.prediction_type = "v_prediction".into();
    }
    if family == Family::Sd2 && v && configs.unet.sample_size == 64 && embedded_is_none(&file) {
        // SD 2.x v-prediction models are the 768 px ones.
        configs.unet.sample_size = 96;
    }
    if file.tensors.contains_key("ztsnr") {
        configs.scheduler.rescale_betas_zero_snr = true;
        configs.scheduler.timestep_spacing = Some("trailing".into());
    }
    let configs = ModelConfigs {
        dir: path.clone(),
        pipeline_class: match family {
            Family::Sdxl => "StableDiffusionXLPipeline",
            _ => "StableDiffusionPipeline",
        }
        .into(),
        family,
        weights: WeightSource::SingleFile(Arc::new(SingleFile {
            file,
            map,
            prediction_note,
        })),
        ..configs
    };
    configs.unet.validate(&path)?;
    configs.validate()?;
    Ok(configs)
}

fn embedded_is_none(file: &WeightFile) -> bool {
    !file.metadata.contains_key(CONFIGS_METADATA)
}

/// v-prediction, and how it was decided (shown in the model list).
pub fn prediction(
    family: Family,
    inpainting: bool,
    file: &WeightFile,
    hints: &Hints,
) -> (bool, String) {
    if let Some(v) = hints.v_prediction {
        return (v, "set for this model".into());
    }
    if let Some(text) = file.metadata.get(CONFIGS_METADATA) {
        let v = text.contains("\"v_prediction\"");
        return (v, "from the file's own configs".into());
    }
    let yaml = file.path.with_extension("yaml");
    if let Ok(text) = std::fs::read_to_string(&yaml) {
        let v = text.lines().any(|l| {
            let l = l.trim();
            l.starts_with("parameterization:") && l.contains('v') && !l.contains("eps")
        });
        return (v, format!("from {}", yaml.display()));
    }
    match family {
        Family::Sd1 => (false, "SD 1.x predicts noise".into()),
        Family::Sdxl => {
            let v = file.tensors.contains_key("v_pred");
            (
                v,
                if v {
                    "the file's v_pred marker"
                } else {
                    "SDXL predicts noise"
                }
                .into(),
            )
        }
        Family::Sd2 if inpainting => (false, "SD 2.x inpainting predicts noise".into()),
        Family::Sd2 => match file.global_step {
            Some(875000) => (false, "global_step 875000 (SD 2.x base)".into()),
            Some(_) => (true, "a trained SD 2.x checkpoint's global_step".into()),
            None => match sd2_v_statistic(file) {
                Some((v, std)) => (
                    v,
                    format!("a weight statistic (norm std {std:.3}; above 0.09 means v)"),
                ),
                None => (true, "SD 2.x defaults to v-prediction".into()),
            },
        },
    }
}

/// ComfyUI's test for SD 2.x v-prediction without a config: the spread of one layer norm's
/// bias in the last output block, `Some((v, std))`.
fn sd2_v_statistic(file: &WeightFile) -> Option<(bool, f64)> {
    let values = file.read_f32(&format!(
        "{UNET}output_blocks.11.1.transformer_blocks.0.norm1.bias"
    ))?;
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    Some((std > 0.09, std))
}

fn embedded_configs(text: &str) -> Result<ModelConfigs, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        unet: UnetConfig,
        vae: VaeConfig,
        text_encoder: TextEncoderConfig,
        text_encoder_2: Option<TextEncoderConfig>,
        scheduler: SchedulerFileConfig,
        tokenizer: InlineTokenizer,
        tokenizer_2: Option<InlineTokenizer>,
    }
    #[derive(serde::Deserialize)]
    struct InlineTokenizer {
        vocab: serde_json::Value,
        merges: String,
        pad_token: Option<String>,
        max_length: usize,
    }
    let doc: Doc = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let tok = |t: InlineTokenizer| TokenizerFiles {
        dir: Default::default(),
        pad_token: t.pad_token,
        max_length: t.max_length,
        inline: Some((Arc::from(t.vocab.to_string()), Arc::from(t.merges))),
    };
    Ok(ModelConfigs {
        dir: Default::default(),
        pipeline_class: String::new(),
        family: Family::Sd1,
        unet: doc.unet,
        vae: doc.vae,
        text_encoder: doc.text_encoder,
        text_encoder_2: doc.text_encoder_2,
        tokenizer: tok(doc.tokenizer),
        tokenizer_2: doc.tokenizer_2.map(tok),
        scheduler: doc.scheduler,
        weights: WeightSource::Folder,
    })
}

fn clip_tokenizer(pad: &str) -> TokenizerFiles {
    TokenizerFiles {
        dir: Default::default(),
        pad_token: Some(pad.into()),
        max_length: 77,
        inline: Some((Arc::from(CLIP_VOCAB_JSON), Arc::from(CLIP_MERGES_TXT))),
    }
}

type ShapeOf<'a> = dyn Fn(&str, &str) -> Option<Vec<usize>> + 'a;

/// The family's standard configs, with what the file's shapes decide (widths, levels, layers,
/// inpainting channels) read from them.
fn standard_configs(
    family: Family,
    r: usize,
    shape: &ShapeOf<'_>,
    map: &HashMap<String, Source>,
) -> Result<ModelConfigs, String> {
    let need = |component: &str, name: &str| {
        shape(component, name).ok_or_else(|| format!("it has no {component} {name}"))
    };
    let conv_in = need("unet", "conv_in.weight")?;
    // Levels and their widths, and which have attention.
    let mut widths = Vec::new();
    let mut attn = Vec::new();
    for b in 0..8 {
        let Some(s) = shape("unet", &format!("down_blocks.{b}.resnets.0.conv1.weight")) else {
            break;
        };
        widths.push(s[0]);
        attn.push(map.contains_key(&format!("unet/down_blocks.{b}.attentions.0.proj_in.weight")));
    }
    if widths.is_empty() {
        return Err("no UNet down blocks".into());
    }
    let context = (0..widths.len())
        .find_map(|b| {
            shape(
                "unet",
                &format!("down_blocks.{b}.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
            )
        })
        .map(|s| s[1])
        .ok_or("no cross-attention")?;
    let linear = (0..widths.len())
        .find_map(|b| {
            shape(
                "unet",
                &format!("down_blocks.{b}.attentions.0.proj_in.weight"),
            )
        })
        .is_some_and(|s| s.len() == 2);
    let depth: Vec<usize> = (0..widths.len())
        .map(|b| {
            (0..64)
                .take_while(|t| {
                    map.contains_key(&format!(
                        "unet/down_blocks.{b}.attentions.0.transformer_blocks.{t}.norm1.weight"
                    ))
                })
                .count()
                .max(1)
        })
        .collect();
    let heads: Vec<usize> = match family {
        Family::Sd1 => vec![8; widths.len()],
        _ => widths.iter().map(|w| (w / 64).max(1)).collect(),
    };
    let down: Vec<&str> = attn
        .iter()
        .map(|a| {
            if *a {
                "CrossAttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
        })
        .collect();
    let up: Vec<&str> = attn
        .iter()
        .rev()
        .map(|a| {
            if *a {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
        })
        .collect();
    let mut unet = json!({
        "in_channels": conv_in[1],
        "out_channels": need("unet", "conv_out.weight")?[0],
        "block_out_channels": widths,
        "down_block_types": down,
        "up_block_types": up,
        "layers_per_block": r,
        "attention_head_dim": heads,
        "cross_attention_dim": context,
        "transformer_layers_per_block": depth,
        "use_linear_projection": linear,
        "sample_size": if family == Family::Sdxl { 128 } else { 64 },
    });
    let te1 = text_config(
        shape,
        "text_encoder",
        family != Family::Sd1 && family != Family::Sdxl,
    )?;
    let te2 = if family == Family::Sdxl {
        Some(text_config(shape, "text_encoder_2", true)?)
    } else {
        None
    };
    if family == Family::Sdxl {
        let adm = need("unet", "add_embedding.linear_1.weight")?[1];
        let pooled = te2
            .as_ref()
            .and_then(|t| t.projection_dim)
            .ok_or("SDXL's second text encoder has no projection")?;
        unet["addition_embed_type"] = json!("text_time");
        unet["addition_time_embed_dim"] = json!(adm.saturating_sub(pooled) / 6);
        unet["projection_class_embeddings_input_dim"] = json!(adm);
    }
    let vae_widths: Vec<usize> = (0..8)
        .map_while(|b| {
            shape(
                "vae",
                &format!("encoder.down_blocks.{b}.resnets.0.conv1.weight"),
            )
        })
        .map(|s| s[0])
        .collect();
    let vae_layers = (0..8)
        .take_while(|j| {
            map.contains_key(&format!(
                "vae/encoder.down_blocks.0.resnets.{j}.conv1.weight"
            ))
        })
        .count();
    let latent = need("vae", "decoder.conv_in.weight")?[1];
    let vae = json!({
        "block_out_channels": vae_widths,
        "layers_per_block": vae_layers,
        "latent_channels": latent,
        "scaling_factor": if family == Family::Sdxl { 0.13025 } else { 0.18215 },
        "use_quant_conv": map.contains_key("vae/quant_conv.weight"),
        "use_post_quant_conv": map.contains_key("vae/post_quant_conv.weight"),
    });
    let scheduler = json!({
        "_class_name": if family == Family::Sdxl { "EulerDiscreteScheduler" } else { "PNDMScheduler" },
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 1,
        "set_alpha_to_one": false,
        "clip_sample": false,
    });
    let (tok1, tok2) = match family {
        Family::Sd1 => (clip_tokenizer("<|endoftext|>"), None),
        Family::Sd2 => (clip_tokenizer("!"), None),
        Family::Sdxl => (clip_tokenizer("<|endoftext|>"), Some(clip_tokenizer("!"))),
    };
    Ok(ModelConfigs {
        dir: Default::default(),
        pipeline_class: String::new(),
        family,
        unet: serde_json::from_value(unet).map_err(|e| e.to_string())?,
        vae: serde_json::from_value(vae).map_err(|e| e.to_string())?,
        text_encoder: te1,
        text_encoder_2: te2,
        tokenizer: tok1,
        tokenizer_2: tok2,
        scheduler: serde_json::from_value(scheduler).map_err(|e| e.to_string())?,
        weights: WeightSource::Folder,
    })
}

/// A text encoder's config from its shapes (heads are 64 wide in every CLIP of SD).
fn text_config(
    shape: &ShapeOf<'_>,
    component: &str,
    open_clip: bool,
) -> Result<TextEncoderConfig, String> {
    let need =
        |name: &str| shape(component, name).ok_or_else(|| format!("it has no {component} {name}"));
    let emb = need("text_model.embeddings.token_embedding.weight")?;
    let pos = need("text_model.embeddings.position_embedding.weight")?;
    let fc1 = need("text_model.encoder.layers.0.mlp.fc1.weight")?;
    let mut layers = (0..128)
        .take_while(|n| {
            shape(
                component,
                &format!("text_model.encoder.layers.{n}.layer_norm1.weight"),
            )
            .is_some()
        })
        .count();
    let projection = shape(component, "text_projection.weight").map(|s| s[0]);
    if open_clip && component == "text_encoder" {
        // SD 2.x conditions on OpenCLIP's penultimate layer: the last block is left out.
        layers = layers.saturating_sub(1);
    }
    let hidden = emb[1];
    let value = json!({
        "architectures": [if projection.is_some() && component == "text_encoder_2" { "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
        "vocab_size": emb[0],
        "hidden_size": hidden,
        "intermediate_size": fc1[0],
        "num_hidden_layers": layers,
        "num_attention_heads": (hidden / 64).max(1),
        "max_position_embeddings": pos[0],
        "hidden_act": if open_clip { "gelu" } else { "quick_gelu" },
        "projection_dim": if component == "text_encoder_2" { projection } else { None },
    });
    serde_json::from_value(value).map_err(|e| e.to_string())
}

// --- The inverse: a diffusers model as one LDM file --------------------------------------------

/// The LDM name of a diffusers tensor, and whether it needs the inverse transform
/// (`Squeeze` → unsqueeze; OpenCLIP q/k/v are joined by the caller).
pub fn diffusers_to_ldm(
    component: &str,
    name: &str,
    configs: &ModelConfigs,
) -> Option<(String, Transform)> {
    let r = configs.unet.layers_per_block;
    let levels = configs.vae.block_out_channels.len();
    let attn_up: Vec<bool> = configs
        .unet
        .up_block_types
        .iter()
        .map(|t| t.starts_with("CrossAttn"))
        .collect();
    let open_clip_1 = configs.family == Family::Sd2;
    match component {
        "unet" => {
            unet_key_back(name, r, &attn_up).map(|k| (format!("{UNET}{k}"), Transform::Plain))
        }
        "vae" => vae_key_back(name, levels).map(|(k, squeeze)| {
            (
                format!("{VAE}{k}"),
                if squeeze {
                    Transform::Squeeze
                } else {
                    Transform::Plain
                },
            )
        }),
        "text_encoder" if !open_clip_1 => {
            let prefix = if configs.family == Family::Sdxl {
                XL_TEXT_1
            } else {
                SD1_TEXT
            };
            Some((format!("{prefix}{name}"), Transform::Plain))
        }
        "text_encoder" | "text_encoder_2" => {
            let prefix = if component == "text_encoder" {
                SD2_TEXT
            } else {
                XL_TEXT_2
            };
            open_clip_back(name).map(|(k, t)| (format!("{prefix}{k}"), t))
        }
        _ => None,
    }
}

fn open_clip_back(name: &str) -> Option<(String, Transform)> {
    let plain = |s: &str| Some((s.to_owned(), Transform::Plain));
    match name {
        "text_model.embeddings.token_embedding.weight" => return plain("token_embedding.weight"),
        "text_model.embeddings.position_embedding.weight" => return plain("positional_embedding"),
        "text_projection.weight" => return Some(("text_projection".into(), Transform::Transpose)),
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("text_model.final_layer_norm.") {
        return Some((format!("ln_final.{rest}"), Transform::Plain));
    }
    let s = name.strip_prefix("text_model.encoder.layers.")?;
    let (n, rest) = s.split_once('.')?;
    let renames = [
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
        ("self_attn.out_proj.", "attn.out_proj."),
    ];
    if let Some(r) = renames
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
    {
        return Some((format!("transformer.resblocks.{n}.{r}"), Transform::Plain));
    }
    let (proj, tail) = rest.strip_prefix("self_attn.")?.split_once('.')?;
    let part = ["q_proj", "k_proj", "v_proj"]
        .iter()
        .position(|p| *p == proj)?;
    let fused = if tail == "weight" {
        "in_proj_weight"
    } else {
        "in_proj_bias"
    };
    Some((
        format!("transformer.resblocks.{n}.attn.{fused}"),
        Transform::Rows { part, of: 3 },
    ))
}

/// A VAE file on its own (`vae-ft-mse-840000-ema-pruned.safetensors`, `sdxl_vae.safetensors`)
/// as the `vae` component: original names (bare or under `first_stage_model.`) or diffusers
/// names. A checkpoint's own VAE is taken too (A1111 allows it).
pub fn vae_single_file(file: WeightFile) -> Result<SingleFile, ModelError> {
    let path = file.path.clone();
    let kind = classify(&file);
    if !matches!(kind, FileKind::Vae | FileKind::Checkpoint { .. }) {
        return Err(ModelError::UnsupportedFile {
            path,
            what: format!("this is {}, not a VAE", kind.describe()),
        });
    }
    let diffusers_names = file
        .tensors
        .keys()
        .any(|k| k.starts_with("decoder.up_blocks.") || k.starts_with("decoder.mid_block."));
    let bare = |k: &str| k.strip_prefix(VAE).unwrap_or(k).to_owned();
    let levels = vae_levels(file.tensors.keys().map(|k| bare(k)));
    let mut map = HashMap::new();
    for key in file.tensors.keys() {
        let k = bare(key);
        if !(k.starts_with("encoder.") || k.starts_with("decoder.") || k.contains("quant_conv.")) {
            continue;
        }
        let found = if diffusers_names {
            Some((k.clone(), Transform::Plain))
        } else {
            vae_key(&k, levels)
        };
        if let Some((name, transform)) = found {
            map.insert(
                format!("vae/{name}"),
                Source {
                    key: key.clone(),
                    transform,
                },
            );
        }
    }
    if map.is_empty() {
        return Err(ModelError::BadWeights {
            path,
            reason: "no VAE tensors (encoder.*, decoder.*) in it".into(),
        });
    }
    Ok(SingleFile {
        file,
        map,
        prediction_note: String::new(),
    })
}

// --- ControlNet -------------------------------------------------------------------------------

/// The prefix of a ControlNet inside a full ControlLDM checkpoint.
const CONTROL_MODEL: &str = "control_model.";

/// An LDM ControlNet name (prefix removed) as its diffusers name; `r` is layers per block and
/// `hint_last` the index of the condition embedding's last convolution (14 as trained by
/// lllyasviel).
fn controlnet_key(k: &str, r: usize, hint_last: usize) -> Option<String> {
    if let Some(s) = k.strip_prefix("zero_convs.") {
        let (i, sub, rest) = indices2(s)?;
        return (sub == 0).then(|| format!("controlnet_down_blocks.{i}.{rest}"));
    }
    if let Some(rest) = k.strip_prefix("middle_block_out.0.") {
        return Some(format!("controlnet_mid_block.{rest}"));
    }
    if let Some(s) = k.strip_prefix("input_hint_block.") {
        let (i, rest) = s.split_once('.')?;
        let i: usize = i.parse().ok()?;
        return match i {
            0 => Some(format!("controlnet_cond_embedding.conv_in.{rest}")),
            i if i == hint_last => Some(format!("controlnet_cond_embedding.conv_out.{rest}")),
            i if i % 2 == 0 => Some(format!(
                "controlnet_cond_embedding.blocks.{}.{rest}",
                i / 2 - 1
            )),
            _ => None,
        };
    }
    if k.starts_with("output_blocks.") || k.starts_with("out.") {
        return None;
    }
    unet_key(k, r)
}

/// A diffusers ControlNet name as its LDM name (without a prefix): the inverse of
/// [`controlnet_key`], for writing test files and converting.
pub fn controlnet_key_back(k: &str, r: usize, hint_last: usize) -> Option<String> {
    if let Some(s) = k.strip_prefix("controlnet_down_blocks.") {
        let (i, rest) = s.split_once('.')?;
        return Some(format!("zero_convs.{i}.0.{rest}"));
    }
    if let Some(rest) = k.strip_prefix("controlnet_mid_block.") {
        return Some(format!("middle_block_out.0.{rest}"));
    }
    if let Some(s) = k.strip_prefix("controlnet_cond_embedding.") {
        if let Some(rest) = s.strip_prefix("conv_in.") {
            return Some(format!("input_hint_block.0.{rest}"));
        }
        if let Some(rest) = s.strip_prefix("conv_out.") {
            return Some(format!("input_hint_block.{hint_last}.{rest}"));
        }
        let (j, rest) = s.strip_prefix("blocks.")?.split_once('.')?;
        let j: usize = j.parse().ok()?;
        return Some(format!("input_hint_block.{}.{rest}", 2 * j + 2));
    }
    unet_key_back(k, r, &[])
}

/// A single-file ControlNet: the original layout (`control_model.*` in a full ControlLDM
/// checkpoint, or bare as ControlNet 1.1's `.pth`/`.safetensors` ship) or diffusers names, as
/// the `controlnet` component of a [`SingleFile`], with its condition embedding's input
/// channels and widths (read from the shapes).
pub fn controlnet_single_file(
    file: WeightFile,
) -> Result<(SingleFile, usize, Vec<usize>), ModelError> {
    let path = file.path.clone();
    let kind = classify(&file);
    if kind != FileKind::ControlNet {
        return Err(ModelError::UnsupportedFile {
            path,
            what: format!("this is {}, not a ControlNet", kind.describe()),
        });
    }
    let prefixed = file.tensors.keys().any(|k| k.starts_with(CONTROL_MODEL));
    let bare = |k: &str| -> Option<String> {
        if prefixed {
            k.strip_prefix(CONTROL_MODEL).map(str::to_owned)
        } else {
            Some(k.to_owned())
        }
    };
    let diffusers_names = file
        .tensors
        .keys()
        .any(|k| k.starts_with("controlnet_cond_embedding."));
    let keys: Vec<String> = file.tensors.keys().filter_map(|k| bare(k)).collect();
    let hint_last = keys
        .iter()
        .filter_map(|k| {
            k.strip_prefix("input_hint_block.")?
                .split_once('.')?
                .0
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(14usize);
    let r = (1..64)
        .find(|i| {
            keys.iter()
                .any(|k| *k == format!("input_blocks.{i}.0.op.weight"))
        })
        .map(|i| i - 1)
        .unwrap_or(2)
        .max(1);
    let mut map = HashMap::new();
    for key in file.tensors.keys() {
        let Some(k) = bare(key) else { continue };
        let name = if diffusers_names {
            Some(k)
        } else {
            controlnet_key(&k, r, hint_last)
        };
        if let Some(name) = name {
            map.insert(
                format!("controlnet/{name}"),
                Source {
                    key: key.clone(),
                    transform: Transform::Plain,
                },
            );
        }
    }
    let shape = |name: &str| -> Option<Vec<usize>> {
        let source = map.get(&format!("controlnet/{name}"))?;
        file.shape(&source.key).map(<[usize]>::to_vec)
    };
    let bad = |reason: &str| ModelError::BadWeights {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    let conv_in = shape("controlnet_cond_embedding.conv_in.weight")
        .filter(|s| s.len() == 4)
        .ok_or_else(|| bad("no condition embedding (input_hint_block.0) in it"))?;
    let mut widths = vec![conv_in[0]];
    for j in 0.. {
        match shape(&format!(
            "controlnet_cond_embedding.blocks.{}.weight",
            2 * j + 1
        )) {
            Some(s) if !s.is_empty() => widths.push(s[0]),
            _ => break,
        }
    }
    Ok((
        SingleFile {
            file,
            map,
            prediction_note: String::new(),
        },
        conv_in[1],
        widths,
    ))
}

/// A short description of what a file holds, for error messages about a file given in the
/// wrong place (a LoRA as `--model`...).
pub fn describe_file(path: &Path) -> Option<String> {
    let file = WeightFile::open(path).ok()?;
    Some(classify(&file).describe())
}
