//! The VAE (`AutoencoderKL`) from the blocks in [`super::blocks`]. Encoding returns the latent
//! distribution's mean, so image-to-image is deterministic; training uses the full posterior.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{
    group_norm, silu, upsample_nearest, AttentionBlock, Conv2d, GroupNorm, ResnetBlock,
};
use crate::models::config::VaeConfig;

/// The VAE's mid block: resnet, pixel self-attention, resnet.
struct Mid {
    resnet0: ResnetBlock,
    attention: AttentionBlock,
    resnet1: ResnetBlock,
}

impl Mid {
    fn new(vb: VarBuilder, ch: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            resnet0: ResnetBlock::new(vb.pp("resnets").pp("0"), ch, ch, None, groups, 1e-6, 1.0)?,
            attention: AttentionBlock::new(vb.pp("attentions").pp("0"), ch, groups, 1e-6)?,
            resnet1: ResnetBlock::new(vb.pp("resnets").pp("1"), ch, ch, None, groups, 1e-6, 1.0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.resnet0.forward(x, None)?;
        let x = self.attention.forward(&x)?;
        self.resnet1.forward(&x, None)
    }
}

/// `count` resnets without time embedding, the first from `cin` channels, all to `out`.
fn resnet_chain(
    vb: VarBuilder,
    count: usize,
    cin: usize,
    out: usize,
    groups: usize,
) -> Result<Vec<ResnetBlock>> {
    (0..count)
        .map(|j| {
            let from = if j == 0 { cin } else { out };
            ResnetBlock::new(vb.pp(j.to_string()), from, out, None, groups, 1e-6, 1.0)
        })
        .collect()
}

struct Encoder {
    conv_in: Conv2d,
    /// Per level: its resnets and the stride-2 convolution after it (all but the last).
    levels: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

impl Encoder {
    fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        let enc = vb.pp("encoder");
        let chans = &c.block_out_channels;
        let g = c.norm_num_groups;
        let mut levels = Vec::new();
        for (i, &out) in chans.iter().enumerate() {
            let vbi = enc.pp("down_blocks").pp(i.to_string());
            let cin = if i == 0 { chans[0] } else { chans[i - 1] };
            let resnets = resnet_chain(vbi.pp("resnets"), c.layers_per_block, cin, out, g)?;
            let down = if i + 1 < chans.len() {
                Some(Conv2d::new(
                    vbi.pp("downsamplers").pp("0").pp("conv"),
                    out,
                    out,
                    3,
                    2,
                    (0, 1),
                )?)
            } else {
                None
            };
            levels.push((resnets, down));
        }
        let last = chans[chans.len() - 1];
        let latent2 = 2 * c.latent_channels;
        Ok(Self {
            conv_in: Conv2d::same(enc.pp("conv_in"), 3, chans[0])?,
            levels,
            mid: Mid::new(enc.pp("mid_block"), last, g)?,
            norm_out: group_norm(g, last, 1e-6, enc.pp("conv_norm_out"))?,
            conv_out: Conv2d::same(enc.pp("conv_out"), last, latent2)?,
            quant_conv: if c.use_quant_conv {
                Some(Conv2d::pointwise(vb.pp("quant_conv"), latent2, latent2)?)
            } else {
                None
            },
        })
    }

    /// Mean and log-variance, concatenated along channels.
    fn moments(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for (resnets, down) in &self.levels {
            for r in resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(d) = down {
                x = d.forward(&x)?;
            }
        }
        let x = self.norm_out.forward(&self.mid.forward(&x)?)?;
        let m = self.conv_out.forward(&silu(&x)?)?;
        match &self.quant_conv {
            Some(q) => q.forward(&m),
            None => Ok(m),
        }
    }
}

struct Decoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: Mid,
    /// Per level (deepest first): its resnets and the 2x upsampling convolution after it.
    levels: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        let dec = vb.pp("decoder");
        let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let g = c.norm_num_groups;
        let mut levels = Vec::new();
        let mut cin = rev[0];
        for (i, &out) in rev.iter().enumerate() {
            let vbi = dec.pp("up_blocks").pp(i.to_string());
            let resnets = resnet_chain(vbi.pp("resnets"), c.layers_per_block + 1, cin, out, g)?;
            cin = out;
            let up = if i + 1 < rev.len() {
                Some(Conv2d::same(
                    vbi.pp("upsamplers").pp("0").pp("conv"),
                    out,
                    out,
                )?)
            } else {
                None
            };
            levels.push((resnets, up));
        }
        let first = rev[rev.len() - 1];
        Ok(Self {
            post_quant_conv: if c.use_post_quant_conv {
                Some(Conv2d::pointwise(
                    vb.pp("post_quant_conv"),
                    c.latent_channels,
                    c.latent_channels,
                )?)
            } else {
                None
            },
            conv_in: Conv2d::same(dec.pp("conv_in"), c.latent_channels, rev[0])?,
            mid: Mid::new(dec.pp("mid_block"), rev[0], g)?,
            levels,
            norm_out: group_norm(g, first, 1e-6, dec.pp("conv_norm_out"))?,
            conv_out: Conv2d::same(dec.pp("conv_out"), first, 3)?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        let mut x = self.mid.forward(&self.conv_in.forward(&z)?)?;
        for (resnets, up) in &self.levels {
            for r in resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(u) = up {
                x = u.forward(&upsample_nearest(&x, None)?)?;
            }
        }
        let x = silu(&self.norm_out.forward(&x)?)?;
        self.conv_out.forward(&x)
    }
}

pub struct Vae {
    encoder: Encoder,
    decoder: Decoder,
    pub scaling_factor: f64,
    pub shift_factor: f64,
    pub latent_channels: usize,
    /// Pixels per latent cell (8 for every SD VAE).
    pub downscale: usize,
}

impl Vae {
    pub fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::new(vb.clone(), c)?,
            decoder: Decoder::new(vb, c)?,
            scaling_factor: c.scaling_factor,
            shift_factor: c.shift_factor.unwrap_or(0.0),
            latent_channels: c.latent_channels,
            downscale: 1 << (c.block_out_channels.len().saturating_sub(1)),
        })
    }

    /// Pixels in [-1, 1] `[B, 3, H, W]` -> scaled latents `[B, C, H/8, W/8]` (the mean).
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let mean = self.posterior(pixels)?.0;
        (mean - self.shift_factor)? * self.scaling_factor
    }

    /// The encoder's raw posterior `(mean, logvar)`, unscaled (for training).
    pub fn posterior(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        let moments = self.encoder.moments(pixels)?;
        let c = self.latent_channels;
        Ok((moments.narrow(1, 0, c)?, moments.narrow(1, c, c)?))
    }

    /// Unscaled latents -> pixels in [-1, 1] (for training).
    pub fn decode_raw(&self, latents: &Tensor) -> Result<Tensor> {
        self.decoder.forward(latents)
    }

    /// Scaled latents -> pixels in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let unscaled = ((latents / self.scaling_factor)? + self.shift_factor)?;
        self.decoder.forward(&unscaled)
    }
}
