//! `UNet2DConditionModel` assembled from the blocks in [`super::blocks`], configured from
//! the folder's `unet/config.json` (per-block heads and transformer depth), plus what
//! candle's own UNet lacks: SDXL's `text_time` micro-conditioning (`add_embedding`), the
//! guidance-scale embedding of LCM-distilled UNets (`time_cond_proj_dim`) and a timestep per
//! batch row.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{
    group_norm, timestep_features, Conv2d, GroupNorm, ResnetBlock, SpatialTransformer,
    TimestepEmbedding,
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
    fn resnet(&self, vb: VarBuilder, in_ch: usize, out_ch: usize) -> Result<ResnetBlock> {
        ResnetBlock::new(
            vb,
            in_ch,
            out_ch,
            Some(self.temb),
            self.groups,
            self.eps,
            1.0,
        )
    }

    /// `Transformer2DModel` with `heads` heads and `depth` layers.
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
            heads.max(1),
            depth,
            self.cross_dim,
            self.groups,
            self.linear_proj,
        )
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
struct MidBlock {
    resnet0: ResnetBlock,
    attention: SpatialTransformer,
    resnet1: ResnetBlock,
}

/// `DownBlock2D` / `CrossAttnDownBlock2D`.
struct DownBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
    downsample: Option<Conv2d>,
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
                xs = attn.forward(&xs, ctx)?;
            }
            residuals.push(xs.clone());
        }
        if let Some(conv) = &self.downsample {
            xs = conv.forward(&xs)?;
            residuals.push(xs.clone());
        }
        Ok(xs)
    }
}

/// `UpBlock2D` / `CrossAttnUpBlock2D`.
struct UpBlock {
    resnets: Vec<ResnetBlock>,
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
                xs = attn.forward(&xs, ctx)?;
            }
        }
        if let Some(conv) = &self.upsample {
            xs = conv.forward_upsampled(&xs, upsample_size)?;
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

/// What a ControlNet adds to the UNet's skip connections (one per skip, in order) and to its
/// mid-block output.
pub struct ControlResiduals {
    pub down: Vec<Tensor>,
    pub mid: Tensor,
}

impl ControlResiduals {
    /// The element-wise sum of two ControlNets' residuals.
    pub fn add(&self, other: &Self) -> Result<Self> {
        if self.down.len() != other.down.len() {
            candle_core::bail!(
                "ControlNet residual counts differ: {} and {}",
                self.down.len(),
                other.down.len()
            );
        }
        Ok(Self {
            down: self
                .down
                .iter()
                .zip(&other.down)
                .map(|(a, b)| a.broadcast_add(b))
                .collect::<Result<_>>()?,
            mid: self.mid.broadcast_add(&other.mid)?,
        })
    }
}

/// The UNet's encoder half: the input convolution, time (and SDXL add) embeddings, the down
/// blocks and the mid block. The UNet runs it before its up blocks; a ControlNet is a copy of
/// it with the same parameter names.
pub(crate) struct Encoder {
    conv_in: Conv2d,
    /// (channels, flip_sin_to_cos, freq_shift) of the sinusoidal timestep features.
    time_proj: (usize, bool, f64),
    time_embedding: TimestepEmbedding,
    /// LCM-distilled UNets: the width of the guidance-scale embedding they take.
    guidance_embedding_dim: Option<usize>,
    /// SDXL: (time-id feature width, the add embedding).
    add: Option<(usize, TimestepEmbedding)>,
    down: Vec<DownBlock>,
    mid: MidBlock,
}

/// The encoder half's outputs for one call.
pub(crate) struct Encoded {
    /// The mid block's output.
    pub xs: Tensor,
    /// The skip tensors, in the order the down blocks made them.
    pub residuals: Vec<Tensor>,
    /// The time (and add) embedding.
    pub emb: Tensor,
}

impl Encoder {
    pub(crate) fn new(vb: &VarBuilder, c: &UnetConfig) -> Result<Self> {
        let n = c.block_out_channels.len();
        let ch0 = c.block_out_channels[0];
        let ch_last = c.block_out_channels[n - 1];
        let temb = ch0 * 4;
        let conv_in = Conv2d::same(vb.pp("conv_in"), c.in_channels, ch0)?;
        let time_proj = (ch0, c.flip_sin_to_cos, c.freq_shift);
        let time_embedding = TimestepEmbedding::with_condition(
            vb.pp("time_embedding"),
            ch0,
            temb,
            c.time_cond_proj_dim,
        )?;
        let add = match c.addition_embed_type.as_deref() {
            Some("text_time") => {
                let dim = c.addition_time_embed_dim.unwrap_or(256);
                let input = c.projection_class_embeddings_input_dim.ok_or_else(|| {
                    candle_core::Error::Msg(
                        "text_time UNet without projection_class_embeddings_input_dim".into(),
                    )
                })?;
                Some((
                    dim,
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
                // diffusers pads (0, 1) asymmetrically when downsample_padding is 0.
                let p = c.downsample_padding;
                let pad = if p == 0 { (0, 1) } else { (p, p) };
                let vbc = vbi.pp("downsamplers").pp("0").pp("conv");
                block.downsample = Some(Conv2d::new(vbc, out_ch, out_ch, 3, 2, pad)?);
            }
            down.push(block);
        }

        let vb_mid = vb.pp("mid_block");
        // The mid block's resnets divide their output by mid_block_scale_factor.
        let mid_resnet = |i: &str| {
            let vb = vb_mid.pp("resnets").pp(i);
            let (g, eps, scale) = (c.norm_num_groups, c.norm_eps, c.mid_block_scale_factor);
            ResnetBlock::new(vb, ch_last, ch_last, Some(temb), g, eps, scale)
        };
        let mid = MidBlock {
            resnet0: mid_resnet("0")?,
            attention: shared.attention(
                vb_mid.pp("attentions").pp("0"),
                ch_last,
                c.heads(n - 1),
                c.transformer_layers(n - 1),
            )?,
            resnet1: mid_resnet("1")?,
        };
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            guidance_embedding_dim: c.time_cond_proj_dim,
            add,
            down,
            mid,
        })
    }

    /// Runs the encoder half on `xs` (already through `conv_in` plus `hint`, when a ControlNet
    /// adds its condition there).
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        t: &Tensor,
        context: &Tensor,
        added: Option<&AddedCond<'_>>,
        guidance: Option<&Tensor>,
        hint: Option<&Tensor>,
    ) -> Result<Encoded> {
        let b = xs.dim(0)?;
        let t = t.to_dtype(xs.dtype())?;
        let (tdim, flip, shift) = self.time_proj;
        let guidance = guidance.map(|g| g.to_dtype(xs.dtype())).transpose()?;
        let mut emb = self.time_embedding.forward_with_condition(
            &timestep_features(&t, tdim, flip, shift)?,
            guidance.as_ref(),
        )?;
        if let Some((dim, embed)) = &self.add {
            let added = added.ok_or_else(|| {
                candle_core::Error::Msg("this UNet needs SDXL size conditioning".into())
            })?;
            let ids = added.time_ids.to_dtype(xs.dtype())?.flatten_all()?;
            let time_embeds = timestep_features(&ids, *dim, flip, shift)?.reshape((b, ()))?;
            let add_in = Tensor::cat(&[added.text_embeds.to_dtype(xs.dtype())?, time_embeds], 1)?;
            emb = (emb + embed.forward(&add_in)?)?;
        }
        let mut xs = self.conv_in.forward(xs)?;
        if let Some(hint) = hint {
            xs = xs.broadcast_add(hint)?;
        }
        let mut residuals = vec![xs.clone()];
        for block in &self.down {
            xs = block.forward(&xs, &emb, context, &mut residuals)?;
        }
        xs = self.mid.resnet0.forward(&xs, Some(&emb))?;
        xs = self.mid.attention.forward(&xs, context)?;
        xs = self.mid.resnet1.forward(&xs, Some(&emb))?;
        Ok(Encoded { xs, residuals, emb })
    }
}

pub struct Unet {
    encoder: Encoder,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    center_input: bool,
}

impl Unet {
    pub fn new(vb: VarBuilder, c: &UnetConfig) -> Result<Self> {
        let encoder = Encoder::new(&vb, c)?;
        let n = c.block_out_channels.len();
        let ch0 = c.block_out_channels[0];
        let ch_last = c.block_out_channels[n - 1];
        let shared = Shared {
            temb: ch0 * 4,
            groups: c.norm_num_groups,
            eps: c.norm_eps,
            cross_dim: c.cross_attention_dim.get(0),
            linear_proj: c.use_linear_projection,
        };

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
                let vbc = vbi.pp("upsamplers").pp("0").pp("conv");
                block.upsample = Some(Conv2d::same(vbc, out_ch, out_ch)?);
            }
            up.push(block);
        }
        let norm_out = group_norm(c.norm_num_groups, ch0, c.norm_eps, vb.pp("conv_norm_out"))?;
        let conv_out = Conv2d::same(vb.pp("conv_out"), ch0, c.out_channels)?;
        Ok(Self {
            encoder,
            up,
            norm_out,
            conv_out,
            center_input: c.center_input_sample,
        })
    }

    /// The width of the guidance-scale embedding an LCM-distilled UNet takes (see
    /// [`guidance_scale_embedding`]); `None` for every other UNet.
    pub fn guidance_embedding_dim(&self) -> Option<usize> {
        self.encoder.guidance_embedding_dim
    }

    /// Predicts noise (or v) for `xs` `[B, C, H, W]` at `timestep`, conditioned on `context`
    /// `[B, 77, D]`, for SDXL on `added`, and for an LCM-distilled UNet on `guidance`, the
    /// guidance-scale embedding `[B, guidance_embedding_dim]` (required there, refused
    /// elsewhere).
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<AddedCond<'_>>,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_controlled(xs, timestep, context, added, guidance, None)
    }

    /// [`Unet::forward`] with a ControlNet's residuals added to the skip connections (after
    /// the down blocks ran) and to the mid block's output, as diffusers does.
    pub fn forward_controlled(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<AddedCond<'_>>,
        guidance: Option<&Tensor>,
        control: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        let t = (Tensor::ones(xs.dim(0)?, xs.dtype(), xs.device())? * timestep)?;
        self.forward_rows(xs, &t, context, added, guidance, control)
    }

    /// Like [`Unet::forward_controlled`] with one timestep per batch row (`[B]`), as
    /// training needs (a ControlNet's training passes its residuals).
    pub fn forward_t(
        &self,
        xs: &Tensor,
        t: &Tensor,
        context: &Tensor,
        added: Option<AddedCond<'_>>,
        control: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        self.forward_rows(xs, t, context, added, None, control)
    }

    fn forward_rows(
        &self,
        xs: &Tensor,
        t: &Tensor,
        context: &Tensor,
        added: Option<AddedCond<'_>>,
        guidance: Option<&Tensor>,
        control: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let n = self.up.len();
        let factor = 1usize << (n - 1);
        let odd_size = h % factor != 0 || w % factor != 0;
        let xs = if self.center_input {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs.clone()
        };
        let Encoded {
            mut xs,
            mut residuals,
            emb,
        } = self
            .encoder
            .forward(&xs, t, context, added.as_ref(), guidance, None)?;
        if let Some(control) = control {
            if control.down.len() != residuals.len() {
                candle_core::bail!(
                    "the ControlNet gives {} skip residuals, the UNet has {}",
                    control.down.len(),
                    residuals.len()
                );
            }
            for (r, c) in residuals.iter_mut().zip(&control.down) {
                *r = r.broadcast_add(c)?;
            }
            xs = xs.broadcast_add(&control.mid)?;
        }
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
        let xs = self.norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }
}

/// The guidance-scale embedding an LCM-distilled UNet is conditioned on, one row per picture
/// (diffusers' `get_guidance_scale_embedding` of `w = guidance - 1`): sinusoidal features of
/// `1000 w`, sines first.
pub fn guidance_scale_embedding(
    guidance: f32,
    rows: usize,
    dim: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let w = Tensor::full((guidance - 1.0) * 1000.0, rows, device)?;
    timestep_features(&w, dim, false, 1.0)
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
                None,
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
        assert!(unet.forward(&xs, 500.0, &ctx, None, None).is_err());
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
        let out = unet.forward(&xs, 10.0, &ctx, None, None).unwrap();
        assert_eq!(out.dims(), &[1, 4, 7, 5]);
    }
}
