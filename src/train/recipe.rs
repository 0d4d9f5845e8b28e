//! The Atelier Mini architecture: a tiny SD 1.5-style latent diffusion model (CLIP text
//! encoder, UNet2DConditionModel, AutoencoderKL) written as ordinary diffusers config files,
//! so the trained model loads through the same loader as any Stable Diffusion folder.

use serde_json::{json, Value};

/// Sizes that decide the model; serialised into the checkpoint so a resume uses the same ones.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Recipe {
    pub resolution: u32,
    /// Text context length (tokens incl. BOS/EOS); emoji captions are short.
    pub max_tokens: usize,
    pub text_hidden: usize,
    pub text_layers: usize,
    pub unet_channels: Vec<usize>,
    pub unet_layers_per_block: usize,
    pub vae_channels: Vec<usize>,
    /// Group norm keeps at least this many channels per group in the UNet / VAE. One channel
    /// per group is instance normalisation, which erases each picture's absolute colour (the
    /// first emoji run decoded green as blue); 1 is the value of runs made before this field.
    #[serde(default = "one")]
    pub unet_min_group_channels: usize,
    #[serde(default = "one")]
    pub vae_min_group_channels: usize,
    /// What the UNet predicts and on which noise schedule. New runs: v-prediction at zero
    /// terminal SNR; runs made before this field: epsilon on SD's schedule.
    #[serde(default)]
    pub objective: Objective,
}

/// The UNet's training target and noise schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// SD 1.5's: the noise, on SD's scaled-linear schedule. Its last step keeps 0.47% of the
    /// signal's power, so at 16x16 latents a seed's low frequencies decide the layout.
    #[default]
    Epsilon,
    /// v-prediction on the same schedule rescaled to zero terminal SNR (Lin et al. 2024) with
    /// trailing timesteps: the first sampling step is pure noise and the prompt decides.
    VZeroSnr,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "epsilon" => Ok(Self::Epsilon),
            "v-zero-snr" => Ok(Self::VZeroSnr),
            other => Err(format!(
                "unknown objective {other:?} (epsilon or v-zero-snr)"
            )),
        }
    }
}

fn one() -> usize {
    1
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            resolution: 64,
            max_tokens: 32,
            text_hidden: 64,
            text_layers: 3,
            unet_channels: vec![64, 128, 128],
            unet_layers_per_block: 1,
            vae_channels: vec![16, 32, 64],
            unet_min_group_channels: 8,
            vae_min_group_channels: 4,
            objective: Objective::VZeroSnr,
        }
    }
}

/// The largest group count (at most `max`) that divides every width and leaves at least
/// `min_channels` channels in each group of the narrowest width.
fn norm_groups(widths: &[usize], max: usize, min_channels: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = widths.iter().fold(0, |acc, &w| gcd(acc, w));
    let narrowest = widths.iter().copied().min().unwrap_or(1);
    let max = max
        .min(g.max(1))
        .min((narrowest / min_channels.max(1)).max(1));
    (1..=max).rev().find(|d| g % d == 0).unwrap_or(1)
}

impl Recipe {
    /// Pixels per latent cell.
    pub fn vae_factor(&self) -> usize {
        1 << (self.vae_channels.len() - 1)
    }

    pub fn latent_size(&self) -> usize {
        self.resolution as usize / self.vae_factor()
    }

    pub fn text_encoder(&self) -> Value {
        json!({
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "vocab_size": 49408,
            "hidden_size": self.text_hidden,
            "intermediate_size": self.text_hidden * 4,
            "num_hidden_layers": self.text_layers,
            "num_attention_heads": (self.text_hidden / 16).max(1),
            "max_position_embeddings": self.max_tokens,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": self.text_hidden,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        })
    }

    pub fn unet(&self) -> Value {
        let n = self.unet_channels.len();
        let down: Vec<&str> = (0..n)
            .map(|i| {
                if i == 0 {
                    "DownBlock2D"
                } else {
                    "CrossAttnDownBlock2D"
                }
            })
            .collect();
        let up: Vec<&str> = (0..n)
            .map(|i| {
                if i + 1 == n {
                    "UpBlock2D"
                } else {
                    "CrossAttnUpBlock2D"
                }
            })
            .collect();
        json!({
            "_class_name": "UNet2DConditionModel",
            "sample_size": self.latent_size(),
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": self.unet_channels,
            "down_block_types": down,
            "up_block_types": up,
            "layers_per_block": self.unet_layers_per_block,
            "attention_head_dim": 4,
            "cross_attention_dim": self.text_hidden,
            "norm_num_groups": norm_groups(&self.unet_channels, 32, self.unet_min_group_channels),
            "flip_sin_to_cos": true,
            "freq_shift": 0,
        })
    }

    pub fn vae(&self, scaling_factor: f64) -> Value {
        let n = self.vae_channels.len();
        json!({
            "_class_name": "AutoencoderKL",
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": self.vae_channels,
            "down_block_types": vec!["DownEncoderBlock2D"; n],
            "up_block_types": vec!["UpDecoderBlock2D"; n],
            "latent_channels": 4,
            "layers_per_block": 1,
            "norm_num_groups": norm_groups(&self.vae_channels, 16, self.vae_min_group_channels),
            "sample_size": self.resolution,
            "scaling_factor": scaling_factor,
        })
    }

    pub fn scheduler(&self) -> Value {
        let zero_snr = self.objective == Objective::VZeroSnr;
        json!({
            "_class_name": "DDIMScheduler",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "clip_sample": false,
            "set_alpha_to_one": false,
            "steps_offset": 1,
            "prediction_type": if zero_snr { "v_prediction" } else { "epsilon" },
            "timestep_spacing": if zero_snr { "trailing" } else { "leading" },
            "rescale_betas_zero_snr": zero_snr,
        })
    }

    pub fn model_index(&self) -> Value {
        json!({
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.30.0",
            "_atelier": "Atelier Mini: a small demo model trained by `atelier train`",
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "safety_checker": [null, null],
            "feature_extractor": [null, null],
        })
    }

    pub fn tokenizer_config(&self) -> Value {
        json!({
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": self.max_tokens,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "do_lower_case": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_several_channels_each() {
        assert_eq!(norm_groups(&[16, 32, 64], 16, 4), 4);
        assert_eq!(norm_groups(&[64, 128, 128], 32, 8), 8);
        assert_eq!(norm_groups(&[320, 640, 1280], 32, 8), 32);
        // Runs from before the rule keep their configs.
        assert_eq!(norm_groups(&[16, 32, 64], 16, 1), 16);
        let old: Recipe = serde_json::from_str(
            r#"{"resolution":64,"max_tokens":32,"text_hidden":64,"text_layers":3,
                "unet_channels":[64,128,128],"unet_layers_per_block":1,"vae_channels":[16,32,64]}"#,
        )
        .unwrap();
        assert_eq!(old.vae(1.0)["norm_num_groups"], 16);
        assert_eq!(Recipe::default().vae(1.0)["norm_num_groups"], 4);
    }
}
