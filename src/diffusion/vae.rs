//! The VAE (`AutoencoderKL`): candle's decoder, and an encoder of our own that returns the
//! latent distribution's mean, so image-to-image is deterministic (candle's `encode` samples
//! from an unseedable global RNG).

use candle_core::{Module, Result, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};

use crate::models::config::VaeConfig;

pub struct Vae {
    kl: AutoEncoderKL,
    encoder: MeanEncoder,
    pub scaling_factor: f64,
    pub shift_factor: f64,
    pub latent_channels: usize,
    /// Pixels per latent cell (8 for every SD VAE).
    pub downscale: usize,
}

impl Vae {
    pub fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        let cfg = AutoEncoderKLConfig {
            block_out_channels: c.block_out_channels.clone(),
            layers_per_block: c.layers_per_block,
            latent_channels: c.latent_channels,
            norm_num_groups: c.norm_num_groups,
            use_quant_conv: c.use_quant_conv,
            use_post_quant_conv: c.use_post_quant_conv,
        };
        let kl = AutoEncoderKL::new(vb.clone(), 3, 3, cfg)?;
        let encoder = MeanEncoder::new(vb, c)?;
        Ok(Self {
            kl,
            encoder,
            scaling_factor: c.scaling_factor,
            shift_factor: c.shift_factor.unwrap_or(0.0),
            latent_channels: c.latent_channels,
            downscale: 1 << (c.block_out_channels.len().saturating_sub(1)),
        })
    }

    /// Pixels in [-1, 1] `[B, 3, H, W]` -> scaled latents `[B, C, H/8, W/8]`.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let mean = self.encoder.forward(pixels)?;
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
        self.kl.decode(latents)
    }

    /// Scaled latents -> pixels in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let unscaled = ((latents / self.scaling_factor)? + self.shift_factor)?;
        self.kl.decode(&unscaled)
    }
}

struct MeanEncoder {
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock2D>,
    mid: UNetMidBlock2D,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    latent_channels: usize,
}

impl MeanEncoder {
    fn new(vb: VarBuilder, c: &VaeConfig) -> Result<Self> {
        let enc = vb.pp("encoder");
        let pad1 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let chans = &c.block_out_channels;
        let conv_in = conv2d(3, chans[0], 3, pad1, enc.pp("conv_in"))?;
        let down = (0..chans.len())
            .map(|i| {
                DownEncoderBlock2D::new(
                    enc.pp("down_blocks").pp(i.to_string()),
                    if i == 0 { chans[0] } else { chans[i - 1] },
                    chans[i],
                    DownEncoderBlock2DConfig {
                        num_layers: c.layers_per_block,
                        resnet_eps: 1e-6,
                        resnet_groups: c.norm_num_groups,
                        add_downsample: i + 1 < chans.len(),
                        downsample_padding: 0,
                        ..Default::default()
                    },
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let last = chans[chans.len() - 1];
        let mid = UNetMidBlock2D::new(
            enc.pp("mid_block"),
            last,
            None,
            UNetMidBlock2DConfig {
                resnet_eps: 1e-6,
                output_scale_factor: 1.,
                attn_num_head_channels: None,
                resnet_groups: Some(c.norm_num_groups),
                ..Default::default()
            },
        )?;
        let norm_out =
            candle_nn::group_norm(c.norm_num_groups, last, 1e-6, enc.pp("conv_norm_out"))?;
        let latent2 = 2 * c.latent_channels;
        let conv_out = conv2d(last, latent2, 3, pad1, enc.pp("conv_out"))?;
        let quant_conv = if c.use_quant_conv {
            Some(conv2d(
                latent2,
                latent2,
                1,
                Default::default(),
                vb.pp("quant_conv"),
            )?)
        } else {
            None
        };
        Ok(Self {
            conv_in,
            down,
            mid,
            norm_out,
            conv_out,
            quant_conv,
            latent_channels: c.latent_channels,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.moments(xs)?.narrow(1, 0, self.latent_channels)
    }

    /// Mean and log-variance, concatenated along channels.
    fn moments(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?;
        for block in &self.down {
            xs = block.forward(&xs)?;
        }
        let xs = self.norm_out.forward(&self.mid.forward(&xs, None)?)?;
        let mut moments = self.conv_out.forward(&candle_nn::ops::silu(&xs)?)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        Ok(moments)
    }
}
