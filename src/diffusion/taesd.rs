//! The tiny autoencoder (diffusers' `AutoencoderTiny`: TAESD for SD 1.x/2.x, TAESDXL for
//! SDXL): a few plain 3x3 convolutions per level instead of the VAE's resnets and attention, so
//! it decodes a preview of every step and, by choice, the final picture ("fast decode") at a
//! fraction of the full VAE's cost.
//!
//! Read from a diffusers folder (`config.json` + safetensors), or from the original files
//! (`taesd_decoder.safetensors` / `.pth`, and its `taesd_encoder` beside it) as ComfyUI's
//! `models/vae_approx` and A1111's `models/VAE-taesd` keep them. [`find_tiny_decoder`] looks
//! for one beside a model and in those tools' folders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::blocks::{upsample_nearest, Conv2d};
use crate::models::checkpoint::WeightFile;
use crate::models::ldm::{SingleFile, Source, Transform};
use crate::models::{Family, ModelError};

/// `AutoencoderTiny`'s config (the fields that shape it; the defaults are TAESD's).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct TinyConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    pub num_encoder_blocks: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    pub latent_channels: usize,
    pub upsampling_scaling_factor: usize,
    pub act_fn: String,
    pub upsample_fn: String,
    pub scaling_factor: f64,
    pub shift_factor: f64,
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            scaling_factor: 1.0,
            shift_factor: 0.0,
        }
    }
}

impl TinyConfig {
    fn check(&self) -> std::result::Result<(), String> {
        if self.act_fn != "relu" || self.upsample_fn != "nearest" {
            return Err(format!(
                "activation {:?} / upsampling {:?}: only TAESD's relu and nearest are supported",
                self.act_fn, self.upsample_fn
            ));
        }
        if self.upsampling_scaling_factor != 2 {
            return Err("only 2x upsampling is supported".into());
        }
        let levels = self.num_decoder_blocks.len();
        if levels == 0
            || self.decoder_block_out_channels.len() != levels
            || self.encoder_block_out_channels.len() != self.num_encoder_blocks.len()
            || self.encoder_block_out_channels.is_empty()
        {
            return Err("the block lists do not match in length".into());
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(format!("scaling_factor {}", self.scaling_factor));
        }
        Ok(())
    }
}

/// Three convolutions with ReLUs between, plus the input (or its 1x1 projection), then ReLU.
struct Block {
    convs: [Conv2d; 3],
    skip: Option<Conv2d>,
}

impl Block {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let conv = vb.pp("conv");
        Ok(Self {
            convs: [
                Conv2d::same(conv.pp("0"), cin, cout)?,
                Conv2d::same(conv.pp("2"), cout, cout)?,
                Conv2d::same(conv.pp("4"), cout, cout)?,
            ],
            skip: if cin != cout {
                Some(Conv2d::without_bias(
                    vb.pp("skip"),
                    cin,
                    cout,
                    1,
                    1,
                    (0, 0),
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [a, b, c] = &self.convs;
        let y = c.forward(&b.forward(&a.forward(x)?.relu()?)?.relu()?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        (y + skip)?.relu()
    }
}

/// One entry of diffusers' `layers` sequence (ReLU and upsampling hold no weights but take an
/// index, so the weights' names follow the sequence).
enum Layer {
    Conv(Conv2d),
    Relu,
    Block(Block),
    Upsample,
}

impl Layer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::Relu => x.relu(),
            Layer::Block(b) => b.forward(x),
            Layer::Upsample => upsample_nearest(x, None),
        }
    }
}

/// The layers in turn; an upsample and the convolution after it as one step
/// ([`Conv2d::forward_upsampled`]: the upsampled picture is never written out).
fn run(layers: &[Layer], mut x: Tensor) -> Result<Tensor> {
    let mut i = 0;
    while let Some(layer) = layers.get(i) {
        x = match (layer, layers.get(i + 1)) {
            (Layer::Upsample, Some(Layer::Conv(conv))) => {
                i += 1;
                conv.forward_upsampled(&x, None)?
            }
            _ => layer.forward(&x)?,
        };
        i += 1;
    }
    Ok(x)
}

/// `EncoderTiny`: pixels in [0, 1] -> raw latents.
fn encoder_layers(vb: VarBuilder, c: &TinyConfig) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    let chans = &c.encoder_block_out_channels;
    for (i, (&n, &ch)) in c.num_encoder_blocks.iter().zip(chans).enumerate() {
        let at = vb.pp(layers.len().to_string());
        layers.push(Layer::Conv(if i == 0 {
            Conv2d::same(at, c.in_channels, ch)?
        } else {
            Conv2d::without_bias(at, ch, ch, 3, 2, (1, 1))?
        }));
        for _ in 0..n {
            layers.push(Layer::Block(Block::new(
                vb.pp(layers.len().to_string()),
                ch,
                ch,
            )?));
        }
    }
    let last = chans[chans.len() - 1];
    let at = vb.pp(layers.len().to_string());
    layers.push(Layer::Conv(Conv2d::same(at, last, c.latent_channels)?));
    Ok(layers)
}

/// `DecoderTiny`: clamped latents -> pixels in [0, 1].
fn decoder_layers(vb: VarBuilder, c: &TinyConfig) -> Result<Vec<Layer>> {
    let chans = &c.decoder_block_out_channels;
    let mut layers = vec![
        Layer::Conv(Conv2d::same(vb.pp("0"), c.latent_channels, chans[0])?),
        Layer::Relu,
    ];
    let levels = c.num_decoder_blocks.len();
    for (i, (&n, &ch)) in c.num_decoder_blocks.iter().zip(chans).enumerate() {
        let last = i + 1 == levels;
        // As diffusers builds it: every block and convolution of a level keeps its width.
        for _ in 0..n {
            layers.push(Layer::Block(Block::new(
                vb.pp(layers.len().to_string()),
                ch,
                ch,
            )?));
        }
        if !last {
            layers.push(Layer::Upsample);
        }
        let at = vb.pp(layers.len().to_string());
        layers.push(Layer::Conv(if last {
            Conv2d::same(at, ch, c.out_channels)?
        } else {
            Conv2d::without_bias(at, ch, ch, 3, 1, (1, 1))?
        }));
    }
    Ok(layers)
}

/// A loaded tiny autoencoder: its decoder, and its encoder when the files have one.
pub struct TinyAutoencoder {
    decoder: Vec<Layer>,
    encoder: Option<Vec<Layer>>,
    pub config: TinyConfig,
    /// Pixels per latent cell (8 for TAESD).
    pub downscale: usize,
    /// Where it was read from.
    pub path: PathBuf,
}

impl TinyAutoencoder {
    /// Reads a diffusers `AutoencoderTiny` folder, an original `taesd*_decoder` file (with its
    /// `_encoder` beside it when there is one), or a folder holding such files.
    pub fn load(
        path: &Path,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, ModelError> {
        let bad = |reason: String| ModelError::BadWeights {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            return Err(ModelError::NotFound {
                path: path.to_path_buf(),
            });
        }
        if path.is_dir() && path.join("config.json").is_file() {
            let config: TinyConfig = crate::models::config::read_json(&path.join("config.json"))?;
            config.check().map_err(|reason| ModelError::BadConfig {
                path: path.join("config.json"),
                reason,
            })?;
            let vb = super::weights::diffusers_folder_var_builder(path, dtype, device)?;
            let decoder = decoder_layers(vb.pp("decoder").pp("layers"), &config)
                .map_err(|e| bad(super::error_text(&e)))?;
            // A folder may hold the decoder alone (a preview-only export).
            let encoder = encoder_layers(vb.pp("encoder").pp("layers"), &config).ok();
            return Ok(Self::assemble(decoder, encoder, config, path));
        }
        let decoder_file = if path.is_dir() {
            original_files(path).ok_or_else(|| ModelError::Missing {
                path: path.to_path_buf(),
                what: "a tiny autoencoder (config.json, or taesd_decoder.safetensors / .pth)"
                    .into(),
            })?
        } else {
            path.to_path_buf()
        };
        let file = WeightFile::open(&decoder_file)?;
        let (decoder_vb, mut config) = original_var_builder(file, Part::Decoder, dtype, device)?;
        let decoder = decoder_layers(decoder_vb, &config).map_err(|e| ModelError::BadWeights {
            path: decoder_file.clone(),
            reason: format!(
                "not a TAESD decoder in the original layout: {}",
                super::error_text(&e)
            ),
        })?;
        let encoder = encoder_file_beside(&decoder_file).and_then(|f| {
            let file = WeightFile::open(&f).ok()?;
            let (vb, enc) = original_var_builder(file, Part::Encoder, dtype, device).ok()?;
            config.encoder_block_out_channels = enc.encoder_block_out_channels;
            encoder_layers(vb, &config).ok()
        });
        Ok(Self::assemble(decoder, encoder, config, &decoder_file))
    }

    fn assemble(
        decoder: Vec<Layer>,
        encoder: Option<Vec<Layer>>,
        config: TinyConfig,
        path: &Path,
    ) -> Self {
        let downscale = 1 << config.num_decoder_blocks.len().saturating_sub(1);
        Self {
            decoder,
            encoder,
            config,
            downscale,
            path: path.to_path_buf(),
        }
    }

    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// The model's (scaled) latents `[B, C, h, w]` -> pixels in [-1, 1] `[B, 3, 8h, 8w]`, as
    /// diffusers' pipelines decode with an `AutoencoderTiny` as their VAE.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let z = ((latents / self.config.scaling_factor)? + self.config.shift_factor)?;
        // TAESD's clamp: tanh(z / 3) * 3.
        let z = ((z / 3.0)?.tanh()? * 3.0)?;
        let x = run(&self.decoder, z)?;
        (x * 2.0)? - 1.0
    }

    /// Pixels in [-1, 1] -> the model's (scaled) latents.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let Some(encoder) = &self.encoder else {
            candle_core::bail!("this tiny autoencoder has no encoder");
        };
        let x = ((pixels + 1.0)? / 2.0)?;
        let z = run(encoder, x)?;
        (z - self.config.shift_factor)? * self.config.scaling_factor
    }

    /// Why it cannot decode `model`'s latents, if it cannot.
    pub fn mismatch(&self, latent_channels: usize, downscale: usize) -> Option<String> {
        (self.config.latent_channels != latent_channels || self.downscale != downscale).then(|| {
            format!(
                "this tiny decoder takes {}-channel latents at 1/{} of the picture; the \
                     model makes {latent_channels}-channel latents at 1/{downscale}",
                self.config.latent_channels, self.downscale
            )
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Decoder,
    Encoder,
}

/// The original layout's file in a folder: `taesd_decoder` (or `taesdxl_decoder`...) as
/// safetensors or a pickle.
fn original_files(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("_decoder.") && is_weight_file(p))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

fn is_weight_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("safetensors" | "pth" | "pt" | "bin")
    )
}

/// `taesd_encoder.*` beside `taesd_decoder.*`.
fn encoder_file_beside(decoder: &Path) -> Option<PathBuf> {
    let name = decoder.file_name()?.to_str()?;
    let dir = decoder.parent()?;
    let stem = name.split_once("_decoder.")?.0;
    ["safetensors", "pth", "pt", "bin"]
        .iter()
        .map(|ext| dir.join(format!("{stem}_encoder.{ext}")))
        .find(|p| p.is_file())
}

/// A var builder over an original-layout file (`N.conv.0.weight`...) under diffusers' names
/// (`N-1` for the decoder, whose first entry is a weightless clamp), with the config its
/// shapes imply. Files already in diffusers' names (`decoder.layers.N...`) are taken as is.
fn original_var_builder(
    file: WeightFile,
    part: Part,
    dtype: DType,
    device: &Device,
) -> std::result::Result<(VarBuilder<'static>, TinyConfig), ModelError> {
    let path = file.path.clone();
    let prefix = match part {
        Part::Decoder => "decoder.layers.",
        Part::Encoder => "encoder.layers.",
    };
    let mut map = HashMap::new();
    for key in file.tensors.keys() {
        let name = if let Some(rest) = key.strip_prefix(prefix) {
            Some(rest.to_owned())
        } else {
            key.split_once('.').and_then(|(index, rest)| {
                let index: usize = index.parse().ok()?;
                let index = match part {
                    Part::Decoder => index.checked_sub(1)?,
                    Part::Encoder => index,
                };
                Some(format!("{index}.{rest}"))
            })
        };
        if let Some(name) = name {
            map.insert(
                format!("tiny/{name}"),
                Source {
                    key: key.clone(),
                    transform: Transform::Plain,
                },
            );
        }
    }
    // The first convolution tells the width and the latent channels.
    let first = map
        .get("tiny/0.weight")
        .and_then(|s| file.shape(&s.key))
        .map(<[usize]>::to_vec);
    let Some([width, cin, 3, 3]) = first
        .as_deref()
        .and_then(|s| <[usize; 4]>::try_from(s).ok())
    else {
        return Err(ModelError::BadWeights {
            path,
            reason: format!(
                "not a TAESD {} (no first 3x3 convolution)",
                if part == Part::Decoder {
                    "decoder"
                } else {
                    "encoder"
                }
            ),
        });
    };
    let mut config = TinyConfig::default();
    match part {
        Part::Decoder => {
            config.latent_channels = cin;
            config.decoder_block_out_channels = vec![width; 4];
        }
        Part::Encoder => {
            config.in_channels = cin;
            config.encoder_block_out_channels = vec![width; 4];
        }
    }
    let single = Arc::new(SingleFile {
        file,
        map,
        prediction_note: String::new(),
    });
    let vb = super::weights::single_file_var_builder(single, "tiny", dtype, device)?;
    Ok((vb, config))
}

/// A tiny decoder for a model of `family` at `model` (a folder or a single file), found where
/// people keep them: in or beside the model (`taesd/`, `tiny_vae/`, `vae_approx/`), then in
/// ComfyUI's `models/vae_approx` and A1111's `models/VAE-taesd` next to the model's folder.
/// TAESDXL for SDXL, TAESD otherwise (by name).
pub fn find_tiny_decoder(model: &Path, family: Family) -> Option<PathBuf> {
    let xl = family == Family::Sdxl;
    let names: &[&str] = if xl {
        &["taesdxl", "tiny_vae"]
    } else {
        &["taesd", "tiny_vae"]
    };
    let fits = |p: &Path| {
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        // "taesd" also prefixes "taesdxl": keep each family to its own.
        xl == n.contains("taesdxl") || n.starts_with("tiny_vae")
    };
    let mut places: Vec<PathBuf> = Vec::new();
    if model.is_dir() {
        places.push(model.to_path_buf());
    }
    if let Some(parent) = model.parent() {
        places.push(parent.to_path_buf());
        if let Some(models) = parent.parent() {
            places.push(models.join("vae_approx"));
            places.push(models.join("VAE-taesd"));
        }
    }
    for place in places {
        for name in names {
            let dir = place.join(name);
            if dir.join("config.json").is_file() && fits(&dir) {
                return Some(dir);
            }
        }
        for ext in ["safetensors", "pth"] {
            for name in names {
                let file = place.join(format!("{name}_decoder.{ext}"));
                if file.is_file() && fits(&file) {
                    return Some(file);
                }
            }
        }
        for sub in ["vae_approx", "VAE-taesd"] {
            for ext in ["safetensors", "pth"] {
                let stem = if xl { "taesdxl" } else { "taesd" };
                let file = place.join(sub).join(format!("{stem}_decoder.{ext}"));
                if file.is_file() {
                    return Some(file);
                }
            }
        }
    }
    None
}
