//! `UNet2DConditionModel` assembled from candle-transformers' building blocks, configured from
//! the folder's `unet/config.json` (per-block heads and transformer depth), plus what
//! candle's own UNet lacks: SDXL's `text_time` micro-conditioning (`add_embedding`) and a
//! timestep per batch row.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::attention::{
    SpatialTransformer, SpatialTransformerConfig,
};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::resnet::{ResnetBlock2D, ResnetBlock2DConfig};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    UNetMidBlock2DCrossAttn, UNetMidBlock2DCrossAttnConfig,
};

use crate::models::config::UnetConfig;

/// Settings every block of one UNet shares.
#[derive(Clone, Copy)]
struct Shared {
    temb: usize,
    groups: usize,
    eps: f64,
    cross_dim: usize,
    linear_proj: bool,
}

impl Shared {
    fn resnet(&self, vb: VarBuilder, in_ch: usize, out_ch: usize) -> Result<ResnetBlock2D> {
        ResnetBlock2D::new(
            vb,
            in_ch,
            ResnetBlock2DConfig {
                out_channels: Some(out_ch),
                temb_channels: Some(self.temb),
                groups: self.groups,
                eps: self.eps,
                ..Default::default()
            },
        )
    }

    /// `Transformer2DModel` with `heads` heads and `depth` layers, or `None` for a plain block.
    fn attention(
        &self,
        vb: VarBuilder,
        ch: usize,
        heads: usize,
        depth: usize,
    ) -> Result<SpatialTransformer> {
        SpatialTransformer::new(
            vb,
            ch,
            heads,
            ch / heads.max(1),
            false,
            SpatialTransformerConfig {
                depth,
                num_groups: self.groups,
                context_dim: Some(self.cross_dim),
                sliced_attention_size: None,
                use_linear_projection: self.linear_proj,
            },
        )
    }
}

/// `DownBlock2D` / `CrossAttnDownBlock2D` (candle's own ignore `norm_num_groups`).
struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialTransformer>,
    downsample: Option<(Conv2d, usize)>,
}

impl DownBlock {
    fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
        residuals: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attn) = self.attentions.get(j) {
                xs = attn.forward(&xs, Some(ctx))?;
            }
            residuals.push(xs.clone());
        }
        if let Some((conv, padding)) = &self.downsample {
            xs = if *padding == 0 {
                conv.forward(&xs.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(
                    D::Minus2,
                    0,
                    1,
                )?)?
            } else {
                conv.forward(&xs)?
            };
            residuals.push(xs.clone());
        }
        Ok(xs)
    }
}

/// `UpBlock2D` / `CrossAttnUpBlock2D`.
struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialTransformer>,
    upsample: Option<Conv2d>,
}

impl UpBlock {
    fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
        residuals: &mut Vec<Tensor>,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = residuals
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("UNet skip connections ran out".into()))?;
            xs = resnet.forward(&Tensor::cat(&[&xs, &skip], 1)?, Some(temb))?;
            if let Some(attn) = self.attentions.get(j) {
                xs = attn.forward(&xs, Some(ctx))?;
            }
        }
        if let Some(conv) = &self.upsample {
            let (_, _, h, w) = xs.dims4()?;
            let (th, tw) = upsample_size.unwrap_or((2 * h, 2 * w));
            xs = conv.forward(&xs.upsample_nearest2d(th, tw)?)?;
        }
        Ok(xs)
    }
}

/// SDXL's extra conditioning: pooled text embedding and the six size/crop numbers.
pub struct AddedCond<'a> {
    /// `[B, P]` pooled, projected output of the second text encoder.
    pub text_embeds: &'a Tensor,
    /// `[B, 6]`: original (h, w), crop (top, left), target (h, w).
    pub time_ids: &'a Tensor,
}

pub struct Unet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add: Option<(Timesteps, TimestepEmbedding)>,
    down: Vec<DownBlock>,
    mid: UNetMidBlock2DCrossAttn,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    center_input: bool,
}

impl Unet {
    pub fn new(vb: VarBuilder, c: &UnetConfig) -> Result<Self> {
        let n = c.block_out_channels.len();
        let ch0 = c.block_out_channels[0];
        let ch_last = c.block_out_channels[n - 1];
        let temb = ch0 * 4;
        let pad1 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = conv2d(c.in_channels, ch0, 3, pad1, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(ch0, c.flip_sin_to_cos, c.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), ch0, temb)?;
        let add = match c.addition_embed_type.as_deref() {
            Some("text_time") => {
                let dim = c.addition_time_embed_dim.unwrap_or(256);
                let input = c.projection_class_embeddings_input_dim.ok_or_else(|| {
                    candle_core::Error::Msg(
                        "text_time UNet without projection_class_embeddings_input_dim".into(),
                    )
                })?;
                Some((
                    Timesteps::new(dim, c.flip_sin_to_cos, c.freq_shift),
                    TimestepEmbedding::new(vb.pp("add_embedding"), input, temb)?,
                ))
            }
            _ => None,
        };
        let cross_dim = c.cross_attention_dim.get(0);

        let shared = Shared {
            temb,
            groups: c.norm_num_groups,
            eps: c.norm_eps,
            cross_dim,
            linear_proj: c.use_linear_projection,
        };
        let vb_down = vb.pp("down_blocks");
        let mut down = Vec::with_capacity(n);
        for i in 0..n {
            let out_ch = c.block_out_channels[i];
            let in_ch = if i == 0 {
                ch0
            } else {
                c.block_out_channels[i - 1]
            };
            let vbi = vb_down.pp(i.to_string());
            let mut block = DownBlock {
                resnets: Vec::new(),
                attentions: Vec::new(),
                downsample: None,
            };
            for j in 0..c.layers_per_block {
                let rin = if j == 0 { in_ch } else { out_ch };
                block.resnets.push(shared.resnet(
                    vbi.pp("resnets").pp(j.to_string()),
                    rin,
                    out_ch,
                )?);
                if c.has_cross_attention(i) {
                    block.attentions.push(shared.attention(
                        vbi.pp("attentions").pp(j.to_string()),
                        out_ch,
                        c.heads(i),
                        c.transformer_layers(i),
                    )?);
                }
            }
            if i + 1 < n {
                let cfg = Conv2dConfig {
                    stride: 2,
                    padding: c.downsample_padding,
                    ..Default::default()
                };
                let conv = conv2d(
                    out_ch,
                    out_ch,
                    3,
                    cfg,
                    vbi.pp("downsamplers").pp("0").pp("conv"),
                )?;
                block.downsample = Some((conv, c.downsample_padding));
            }
            down.push(block);
        }

        let mid = UNetMidBlock2DCrossAttn::new(
            vb.pp("mid_block"),
            ch_last,
            Some(temb),
            false,
            UNetMidBlock2DCrossAttnConfig {
                resnet_eps: c.norm_eps,
                output_scale_factor: c.mid_block_scale_factor,
                cross_attn_dim: cross_dim,
                attn_num_head_channels: c.heads(n - 1),
                resnet_groups: Some(c.norm_num_groups),
                use_linear_projection: c.use_linear_projection,
                transformer_layers_per_block: c.transformer_layers(n - 1),
                ..Default::default()
            },
        )?;

        let vb_up = vb.pp("up_blocks");
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let rev = n - 1 - i;
            let out_ch = c.block_out_channels[rev];
            let prev_ch = if i == 0 {
                ch_last
            } else {
                c.block_out_channels[rev + 1]
            };
            let in_ch = c.block_out_channels[rev.saturating_sub(1)];
            let vbi = vb_up.pp(i.to_string());
            let cross = c
                .up_block_types
                .get(i)
                .map_or(c.has_cross_attention(rev), |t| t.starts_with("CrossAttn"));
            let mut block = UpBlock {
                resnets: Vec::new(),
                attentions: Vec::new(),
                upsample: None,
            };
            let layers = c.layers_per_block + 1;
            for j in 0..layers {
                let skip = if j + 1 == layers { in_ch } else { out_ch };
                let rin = if j == 0 { prev_ch } else { out_ch };
                block.resnets.push(shared.resnet(
                    vbi.pp("resnets").pp(j.to_string()),
                    rin + skip,
                    out_ch,
                )?);
                if cross {
                    block.attentions.push(shared.attention(
                        vbi.pp("attentions").pp(j.to_string()),
                        out_ch,
                        c.heads(rev),
                        c.transformer_layers(rev),
                    )?);
                }
            }
            if i + 1 < n {
                block.upsample = Some(conv2d(
                    out_ch,
                    out_ch,
                    3,
                    pad1,
                    vbi.pp("upsamplers").pp("0").pp("conv"),
                )?);
            }
            up.push(block);
        }
        let norm_out =
            candle_nn::group_norm(c.norm_num_groups, ch0, c.norm_eps, vb.pp("conv_norm_out"))?;
        let conv_out = conv2d(ch0, 4, 3, pad1, vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            add,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            center_input: c.center_input_sample,
        })
    }

    /// Predicts noise (or v) for `xs` `[B, C, H, W]` at `timestep`, conditioned on `context`
    /// `[B, 77, D]` and, for SDXL, `added`.
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<AddedCond<'_>>,
    ) -> Result<Tensor> {
        let t = (Tensor::ones(xs.dim(0)?, xs.dtype(), xs.device())? * timestep)?;
        self.forward_t(xs, &t, context, added)
    }

    /// Like [`Unet::forward`] with one timestep per batch row (`[B]`), as training needs.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        t: &Tensor,
        context: &Tensor,
        added: Option<AddedCond<'_>>,
    ) -> Result<Tensor> {
        let (b, _, h, w) = xs.dims4()?;
        let n = self.down.len();
        let factor = 1usize << (n - 1);
        let odd_size = h % factor != 0 || w % factor != 0;
        let xs = if self.center_input {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs.clone()
        };
        let t = t.to_dtype(xs.dtype())?;
        let mut emb = self.time_embedding.forward(&self.time_proj.forward(&t)?)?;
        if let Some((proj, embed)) = &self.add {
            let added = added.ok_or_else(|| {
                candle_core::Error::Msg("this UNet needs SDXL size conditioning".into())
            })?;
            let ids = added.time_ids.to_dtype(xs.dtype())?.flatten_all()?;
            let time_embeds = proj.forward(&ids)?.reshape((b, ()))?;
            let add_in = Tensor::cat(&[added.text_embeds.to_dtype(xs.dtype())?, time_embeds], 1)?;
            emb = (emb + embed.forward(&add_in)?)?;
        }
        let mut xs = self.conv_in.forward(&xs)?;
        let mut residuals = vec![xs.clone()];
        for block in &self.down {
            xs = block.forward(&xs, &emb, context, &mut residuals)?;
        }
        xs = self.mid.forward(&xs, Some(&emb), Some(context))?;
        for (i, block) in self.up.iter().enumerate() {
            // With sizes not divisible by the total downscale, upsample to the skip's size.
            let after = residuals.len().saturating_sub(block.resnets.len());
            let upsample_size = match after.checked_sub(1).and_then(|k| residuals.get(k)) {
                Some(r) if odd_size && i + 1 < n => {
                    let (_, _, rh, rw) = r.dims4()?;
                    Some((rh, rw))
                }
                _ => None,
            };
            xs = block.forward(&xs, &emb, context, &mut residuals, upsample_size)?;
        }
        let xs = candle_nn::ops::silu(&self.norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn sdxl_like() -> UnetConfig {
        serde_json::from_value(serde_json::json!({
            "block_out_channels": [32, 64],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 16,
            "norm_num_groups": 8, "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 8 + 48,
            "transformer_layers_per_block": [1, 2]
        }))
        .unwrap()
    }

    #[test]
    fn sdxl_time_ids_change_the_prediction_and_are_required() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let unet = Unet::new(vb, &sdxl_like()).unwrap();
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (1, 7, 16), &dev).unwrap();
        let pooled = Tensor::randn(0f32, 1.0, (1, 8), &dev).unwrap();
        let ids = |v: [f32; 6]| Tensor::new(&v, &dev).unwrap().unsqueeze(0).unwrap();
        let run = |time_ids: &Tensor| {
            unet.forward(
                &xs,
                500.0,
                &ctx,
                Some(AddedCond {
                    text_embeds: &pooled,
                    time_ids,
                }),
            )
            .unwrap()
        };
        let a = run(&ids([1024., 1024., 0., 0., 1024., 1024.]));
        let b = run(&ids([512., 512., 0., 0., 1024., 1024.]));
        let a_again = run(&ids([1024., 1024., 0., 0., 1024., 1024.]));
        assert_eq!(a.dims(), &[1, 4, 8, 8]);
        let diff = (&a - &b)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let same = (&a - &a_again)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff > 1e-3, "time_ids had no effect");
        assert_eq!(same, 0.0);
        assert!(unet.forward(&xs, 500.0, &ctx, None).is_err());
    }

    #[test]
    fn odd_latent_sizes_upsample_to_the_skip_size() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let mut cfg = sdxl_like();
        cfg.addition_embed_type = None;
        let unet = Unet::new(vb, &cfg).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (1, 4, 7, 5), &Device::Cpu).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (1, 7, 16), &Device::Cpu).unwrap();
        let out = unet.forward(&xs, 10.0, &ctx, None).unwrap();
        assert_eq!(out.dims(), &[1, 4, 7, 5]);
    }
}
