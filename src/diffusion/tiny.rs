//! Tiny models with the real Stable Diffusion architectures (SD 1.5-like, a v-prediction
//! SD 2-like, an SDXL-like with two text encoders, and a 9-channel inpainting one), written as
//! ordinary diffusers folders with deterministic random weights. Tests drive the real loader
//! and every sampler through them; `atelier dev tiny-model` writes one for experiments.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::json;

use crate::diffusion::clip::ClipTextEncoder;
use crate::diffusion::unet::Unet;
use crate::diffusion::vae::Vae;
use crate::models::config::{TextEncoderConfig, UnetConfig, VaeConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TinyKind {
    /// SD 1.5 layout: one CLIP encoder, epsilon prediction.
    Sd15,
    /// SD 2.x layout: linear projections, v-prediction, pads with `!`.
    Sd2V,
    /// SDXL layout: two text encoders, `text_time` micro-conditioning.
    Sdxl,
    /// SD 1.5 inpainting layout: 9 input channels.
    Sd15Inpaint,
}

const WORDS: [&str; 8] = ["red", "blue", "cat", "dog", "a", "on", "the", "mat"];

/// Writes a complete diffusers folder for `kind` into `dir` (created if needed).
pub fn write_tiny_model(dir: &Path, kind: TinyKind) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let xl = kind == TinyKind::Sdxl;
    let class = if xl {
        "StableDiffusionXLPipeline"
    } else if kind == TinyKind::Sd15Inpaint {
        "StableDiffusionInpaintPipeline"
    } else {
        "StableDiffusionPipeline"
    };
    let mut index = json!({
        "_class_name": class,
        "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    if xl {
        index["text_encoder_2"] = json!(["transformers", "CLIPTextModelWithProjection"]);
        index["tokenizer_2"] = json!(["transformers", "CLIPTokenizer"]);
    }
    write_json(&dir.join("model_index.json"), &index)?;

    let vocab = write_tokenizer(&dir.join("tokenizer"), kind == TinyKind::Sd2V)?;
    let te = json!({
        "architectures": ["CLIPTextModel"],
        "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 37,
        "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
        "hidden_act": if kind == TinyKind::Sd2V { "gelu" } else { "quick_gelu" },
        "layer_norm_eps": 1e-5, "projection_dim": 32,
    });
    write_component(
        &dir.join("text_encoder"),
        "config.json",
        &te,
        11,
        |vb, cfg| {
            ClipTextEncoder::new(
                vb,
                &serde_json::from_value::<TextEncoderConfig>(cfg.clone())?,
            )
            .map(|_| ())
            .map_err(Into::into)
        },
    )?;
    if xl {
        write_tokenizer(&dir.join("tokenizer_2"), true)?;
        let mut te2 = te.clone();
        te2["architectures"] = json!(["CLIPTextModelWithProjection"]);
        write_component(
            &dir.join("text_encoder_2"),
            "config.json",
            &te2,
            12,
            |vb, cfg| {
                let c: TextEncoderConfig = serde_json::from_value(cfg.clone())?;
                // Create the projection the loader looks for.
                vb.pp("text_projection")
                    .get((32, c.hidden_size), "weight")?;
                ClipTextEncoder::new(vb, &c).map(|_| ()).map_err(Into::into)
            },
        )?;
    }

    let cross = if xl { 64 } else { 32 };
    let mut unet = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": 8,
        "in_channels": if kind == TinyKind::Sd15Inpaint { 9 } else { 4 },
        "out_channels": 4,
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 2,
        "cross_attention_dim": cross,
        "norm_num_groups": 32,
        "use_linear_projection": kind == TinyKind::Sd2V,
    });
    if xl {
        unet["addition_embed_type"] = json!("text_time");
        unet["addition_time_embed_dim"] = json!(8);
        unet["projection_class_embeddings_input_dim"] = json!(32 + 6 * 8);
        unet["transformer_layers_per_block"] = json!([2, 1]);
    }
    write_component(&dir.join("unet"), "config.json", &unet, 13, |vb, cfg| {
        Unet::new(vb, &serde_json::from_value::<UnetConfig>(cfg.clone())?)
            .map(|_| ())
            .map_err(Into::into)
    })?;

    let vae = json!({
        "_class_name": "AutoencoderKL",
        "block_out_channels": [8, 8, 16, 16],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 64,
        "scaling_factor": if xl { 0.13025 } else { 0.18215 },
    });
    write_component(&dir.join("vae"), "config.json", &vae, 14, |vb, cfg| {
        Vae::new(vb, &serde_json::from_value::<VaeConfig>(cfg.clone())?)
            .map(|_| ())
            .map_err(Into::into)
    })?;

    let sched = match kind {
        TinyKind::Sd2V => json!({
            "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "clip_sample": false,
            "set_alpha_to_one": false, "steps_offset": 1, "prediction_type": "v_prediction",
        }),
        TinyKind::Sdxl => json!({
            "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "clip_sample": false,
            "set_alpha_to_one": false, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": "leading",
        }),
        _ => json!({
            "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "clip_sample": false,
            "set_alpha_to_one": false, "steps_offset": 1, "skip_prk_steps": true,
        }),
    };
    std::fs::create_dir_all(dir.join("scheduler"))?;
    write_json(&dir.join("scheduler").join("scheduler_config.json"), &sched)?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Builds a component through its real constructor on a `VarMap` (which records every tensor
/// name and shape the loader will ask for), fills it with seeded values, and saves it.
fn write_component(
    dir: &Path,
    config_name: &str,
    config: &serde_json::Value,
    seed: u64,
    build: impl FnOnce(VarBuilder<'static>, &serde_json::Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_json(&dir.join(config_name), config)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    build(vb, config)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
    let sorted: BTreeMap<&String, &candle_core::Var> = data.iter().collect();
    let mut tensors = std::collections::HashMap::new();
    for (name, var) in sorted {
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let fan_in = if shape.rank() > 1 {
            n / shape.dims()[0]
        } else {
            1
        };
        let is_norm = name.contains("norm") || name.contains("layer_norm");
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut rng);
                if name.ends_with("bias") {
                    z * 0.02
                } else if is_norm && shape.rank() == 1 {
                    1.0 + z * 0.1
                } else if name.contains("embedding")
                    && shape.rank() == 2
                    && fan_in > 1
                    && name.contains("token")
                {
                    z * 0.5
                } else {
                    z / (fan_in as f32).sqrt()
                }
            })
            .collect();
        tensors.insert(name.clone(), Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    let is_transformers = dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("text_encoder"));
    let file = if is_transformers {
        "model.safetensors"
    } else {
        "diffusion_pytorch_model.safetensors"
    };
    candle_core::safetensors::save(&tensors, dir.join(file))?;
    Ok(())
}

/// GPT-2's byte-to-unicode table, which CLIP's BPE vocabulary is written in.
pub fn byte_unicode() -> Vec<char> {
    let mut table = vec!['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('?')
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('?')
        };
    }
    table
}

/// A small CLIP-style BPE vocabulary: every byte (plain and word-final), a few merges, and
/// the two special tokens. Returns the vocabulary size.
fn write_tokenizer(dir: &Path, pad_with_bang: bool) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut vocab: Vec<String> = Vec::new();
    for c in byte_unicode() {
        vocab.push(c.to_string());
    }
    for c in byte_unicode() {
        vocab.push(format!("{c}</w>"));
    }
    let mut merges = vec!["#version: 0.2".to_owned()];
    for word in WORDS {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() < 2 {
            continue;
        }
        // Merge left to right: "r e" -> "re", then "re d</w>" -> "red</w>".
        let mut left = chars[0].to_string();
        for (i, c) in chars.iter().enumerate().skip(1) {
            let right = if i + 1 == chars.len() {
                format!("{c}</w>")
            } else {
                c.to_string()
            };
            merges.push(format!("{left} {right}"));
            let merged = format!("{left}{right}");
            if !vocab.contains(&merged) {
                vocab.push(merged.clone());
            }
            left = merged;
        }
    }
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    write_json(&dir.join("vocab.json"), &serde_json::Value::Object(map))?;
    std::fs::write(dir.join("merges.txt"), merges.join("\n") + "\n")?;
    let pad = if pad_with_bang { "!" } else { "<|endoftext|>" };
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"model_max_length": 77, "pad_token": pad, "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}),
    )?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"pad_token": pad, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>"}),
    )?;
    Ok(vocab.len())
}
