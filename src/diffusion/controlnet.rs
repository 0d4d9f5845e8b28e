//! ControlNet (diffusers' `ControlNetModel`): a copy of the UNet's encoder half that also sees a
//! control image (scribble, edges, ...). A small convolution stack brings the image down to the
//! latent size and adds it after the copy's input convolution; every skip tensor the copy makes
//! and its mid-block output then go through their own 1x1 convolution, and the results are
//! added to the UNet's skip connections and mid-block output ([`ControlResiduals`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{silu, Conv2d};
use super::unet::{AddedCond, ControlResiduals, Encoder};
use crate::models::config::{ControlNetConfig, UnetConfig};
use crate::models::ModelError;

/// `ControlNetConditioningEmbedding`: the control image (pixels in [0, 1]) to the width of the
/// UNet's first block at the latent size.
struct ConditionEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ConditionEmbedding {
    fn new(vb: VarBuilder, cin: usize, widths: &[usize], cout: usize) -> Result<Self> {
        let conv_in = Conv2d::same(vb.pp("conv_in"), cin, widths[0])?;
        let mut blocks = Vec::new();
        for j in 0..widths.len() - 1 {
            let vbb = vb.pp("blocks");
            blocks.push(Conv2d::same(
                vbb.pp((2 * j).to_string()),
                widths[j],
                widths[j],
            )?);
            blocks.push(Conv2d::new(
                vbb.pp((2 * j + 1).to_string()),
                widths[j],
                widths[j + 1],
                3,
                2,
                (1, 1),
            )?);
        }
        let last = widths[widths.len() - 1];
        let conv_out = Conv2d::same(vb.pp("conv_out"), last, cout)?;
        Ok(Self {
            conv_in,
            blocks,
            conv_out,
        })
    }

    fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let mut xs = silu(&self.conv_in.forward(image)?)?;
        for block in &self.blocks {
            xs = silu(&block.forward(&xs)?)?;
        }
        self.conv_out.forward(&xs)
    }

    /// How many times the embedding halves the image's size.
    fn downscale(&self) -> usize {
        1 << (self.blocks.len() / 2)
    }
}

pub struct ControlNet {
    pub path: PathBuf,
    encoder: Encoder,
    hint: ConditionEmbedding,
    zero_convs: Vec<Conv2d>,
    mid_zero: Conv2d,
    bgr: bool,
    global_pool: bool,
}

impl ControlNet {
    /// Loads a diffusers ControlNet folder (`config.json` and its weights) for a model whose
    /// UNet is `unet`: one made for another family is refused with the reason.
    pub fn load(
        path: &Path,
        unet: &UnetConfig,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, ModelError> {
        if !path.exists() {
            return Err(ModelError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let (config, vb) = if path.is_file() {
            Self::single_file(path, unet, dtype, device)?
        } else {
            let config = ControlNetConfig::read(path)?;
            if let Some(why) = config.mismatch(unet) {
                return Err(ModelError::BadWeights {
                    path: path.to_path_buf(),
                    reason: why,
                });
            }
            let vb = super::weights::diffusers_folder_var_builder(path, dtype, device)?;
            (config, vb)
        };
        Self::build(path, vb, config).map_err(|e| ModelError::BadWeights {
            path: path.to_path_buf(),
            reason: super::error_text(&e),
        })
    }

    /// A single file's weights, with the model's UNet config for the architecture (a
    /// ControlNet copies it; the file's shapes are checked as the blocks load) and the
    /// condition embedding read from the shapes.
    fn single_file(
        path: &Path,
        unet: &UnetConfig,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<(ControlNetConfig, VarBuilder<'static>), ModelError> {
        let file = crate::models::checkpoint::WeightFile::open(path)?;
        let (single, channels, widths) = crate::models::ldm::controlnet_single_file(file)?;
        let bad = |reason: String| ModelError::BadWeights {
            path: path.to_path_buf(),
            reason,
        };
        let shape_of = |name: &str| -> Option<Vec<usize>> {
            let source = single.map.get(&format!("controlnet/{name}"))?;
            single.file.shape(&source.key).map(<[usize]>::to_vec)
        };
        // The family from the cross-attention width, before any shape error.
        let context = single
            .map
            .iter()
            .find(|(k, _)| k.ends_with("attn2.to_k.weight"))
            .and_then(|(_, s)| single.file.shape(&s.key))
            .and_then(|s| s.get(1).copied());
        let mut config_unet = unet.clone();
        if let Some(width) = context {
            config_unet.cross_attention_dim = crate::models::config::PerBlock::One(width);
        }
        config_unet.addition_embed_type = shape_of("add_embedding.linear_1.weight")
            .is_some()
            .then(|| "text_time".to_owned());
        config_unet.time_cond_proj_dim = None;
        let conv_in = shape_of("conv_in.weight")
            .filter(|s| s.len() == 4)
            .ok_or_else(|| bad("no input convolution (input_blocks.0.0) in it".into()))?;
        config_unet.in_channels = conv_in[1];
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let config = ControlNetConfig {
            unet: config_unet,
            conditioning_channels: channels,
            conditioning_embedding_out_channels: widths,
            controlnet_conditioning_channel_order: "rgb".into(),
            // ControlNet 1.1's "shuffle" averages its residuals (its yaml says so; the weights
            // cannot).
            global_pool_conditions: name.contains("shuffle"),
            mid_block_type: None,
        };
        if let Some(why) = config.mismatch(unet) {
            return Err(bad(why));
        }
        let vb = super::weights::single_file_var_builder(
            std::sync::Arc::new(single),
            "controlnet",
            dtype,
            device,
        )?;
        Ok((config, vb))
    }

    /// The blocks from `vb` (a file's weights, or a training run's variables).
    pub fn build(path: &Path, vb: VarBuilder, config: ControlNetConfig) -> Result<Self> {
        let c = &config.unet;
        let encoder = Encoder::new(&vb, c)?;
        let ch0 = c.block_out_channels[0];
        let hint = ConditionEmbedding::new(
            vb.pp("controlnet_cond_embedding"),
            config.conditioning_channels,
            &config.conditioning_embedding_out_channels,
            ch0,
        )?;
        let n = c.block_out_channels.len();
        let mut channels = vec![ch0];
        for (i, &ch) in c.block_out_channels.iter().enumerate() {
            channels.extend(std::iter::repeat_n(ch, c.layers_per_block));
            if i + 1 < n {
                channels.push(ch);
            }
        }
        let vbz = vb.pp("controlnet_down_blocks");
        let zero_convs = channels
            .iter()
            .enumerate()
            .map(|(k, &ch)| Conv2d::pointwise(vbz.pp(k.to_string()), ch, ch))
            .collect::<Result<Vec<_>>>()?;
        let last = c.block_out_channels[n - 1];
        let mid_zero = Conv2d::pointwise(vb.pp("controlnet_mid_block"), last, last)?;
        Ok(Self {
            path: path.to_path_buf(),
            encoder,
            hint,
            zero_convs,
            mid_zero,
            bgr: config.controlnet_conditioning_channel_order == "bgr",
            global_pool: config.global_pool_conditions,
        })
    }

    /// How much larger than the latent the control image is (8 for Stable Diffusion).
    pub fn image_factor(&self) -> usize {
        self.hint.downscale()
    }

    /// The ControlNet averages its residuals over the picture ("shuffle"): diffusers then
    /// treats it as [`ControlMode::Control`].
    pub fn global_pool(&self) -> bool {
        self.global_pool
    }

    /// The residuals for the UNet's call on `xs` `[B, C, h, w]` at `timestep` with `context`,
    /// from the control image `[B, 3, h·f, w·f]` (RGB in [0, 1]) as [`ControlNet::embed`]
    /// made it, times `scale` (and the [`ControlMode::Control`] ramp when `ramp`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&AddedCond<'_>>,
        hint: &Tensor,
        scale: f64,
        ramp: bool,
    ) -> Result<ControlResiduals> {
        let t = (Tensor::ones(xs.dim(0)?, xs.dtype(), xs.device())? * timestep)?;
        self.forward_embedded(xs, &t, context, added, hint, scale, ramp)
    }

    /// [`ControlNet::forward`] with one timestep per row (`[B]`), as training needs.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_t(
        &self,
        xs: &Tensor,
        t: &Tensor,
        context: &Tensor,
        added: Option<&AddedCond<'_>>,
        image: &Tensor,
        scale: f64,
        ramp: bool,
    ) -> Result<ControlResiduals> {
        let hint = self.embed(image, xs.dtype())?;
        self.forward_embedded(xs, t, context, added, &hint, scale, ramp)
    }

    /// The control image `[B, 3, H, W]` (RGB in [0, 1]) through the conditioning embedding,
    /// in `dtype`: it depends on nothing else, so a generation makes it once and passes it to
    /// [`ControlNet::forward_embedded`] at every step.
    pub fn embed(&self, image: &Tensor, dtype: DType) -> Result<Tensor> {
        let image = if self.bgr {
            Tensor::cat(
                &[
                    image.narrow(1, 2, 1)?,
                    image.narrow(1, 1, 1)?,
                    image.narrow(1, 0, 1)?,
                ],
                1,
            )?
        } else {
            image.clone()
        };
        self.hint.forward(&image.to_dtype(dtype)?)
    }

    /// [`ControlNet::forward_t`] from the [`ControlNet::embed`]ded control image.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_embedded(
        &self,
        xs: &Tensor,
        t: &Tensor,
        context: &Tensor,
        added: Option<&AddedCond<'_>>,
        hint: &Tensor,
        scale: f64,
        ramp: bool,
    ) -> Result<ControlResiduals> {
        let encoded = self
            .encoder
            .forward(xs, t, context, added, None, Some(hint))?;
        if encoded.residuals.len() != self.zero_convs.len() {
            candle_core::bail!(
                "ControlNet: {} skip tensors for {} zero convolutions",
                encoded.residuals.len(),
                self.zero_convs.len()
            );
        }
        let k = self.zero_convs.len();
        // diffusers' guess mode: torch.logspace(-1, 0, K + 1), the last one for the mid block.
        let ramp_at = |i: usize| -> f64 {
            if ramp && !self.global_pool {
                10f64.powf(-1.0 + i as f64 / k as f64)
            } else {
                1.0
            }
        };
        let finish = |t: Tensor, s: f64| -> Result<Tensor> {
            let t = (t * s)?;
            if self.global_pool {
                t.mean_keepdim(3)?.mean_keepdim(2)
            } else {
                Ok(t)
            }
        };
        let down = encoded
            .residuals
            .iter()
            .zip(&self.zero_convs)
            .enumerate()
            .map(|(i, (r, conv))| finish(conv.forward(r)?, scale * ramp_at(i)))
            .collect::<Result<Vec<_>>>()?;
        let mid = finish(self.mid_zero.forward(&encoded.xs)?, scale * ramp_at(k))?;
        Ok(ControlResiduals { down, mid })
    }
}
