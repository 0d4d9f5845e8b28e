//! The VAE (`AutoencoderKL`) from the blocks in [`super::blocks`]. Encoding returns the latent
//! distribution's mean, so image-to-image is deterministic; training uses the full posterior.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{group_norm, silu, AttentionBlock, Conv2d, GroupNorm, ResnetBlock};
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
                x = u.forward_upsampled(&x, None)?;
            }
        }
        let x = self.norm_out.forward_silu(&x)?;
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

    /// Pixels in [-1, 1] `[B, 3, H, W]` -> scaled latents `[B, C, H/8, W/8]` (the mean);
    /// pictures over [`TILE_ABOVE_CELLS`] latent cells in overlapping tiles, as decoding.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = pixels.dims4()?;
        let f = self.downscale;
        let tiled = h % f == 0 && w % f == 0 && (h / f) * (w / f) > TILE_ABOVE_CELLS;
        let mean = if tiled {
            self.encode_mean_tiled(pixels, TILE_CELLS, TILE_OVERLAP_CELLS)?
        } else {
            self.posterior(pixels)?.0
        };
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

    /// Scaled latents -> pixels in [-1, 1]; pictures over [`TILE_ABOVE_CELLS`] latent cells
    /// (beyond 1024x1024 for SD) in overlapping tiles, so memory stays that of a 768 px decode.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = latents.dims4()?;
        if h * w > TILE_ABOVE_CELLS {
            self.decode_tiled(latents, TILE_CELLS, TILE_OVERLAP_CELLS)
        } else {
            self.decoder.forward(&self.unscale(latents)?)
        }
    }

    fn unscale(&self, latents: &Tensor) -> Result<Tensor> {
        (latents / self.scaling_factor)? + self.shift_factor
    }

    /// [`Vae::decode`] in tiles of `tile` x `tile` latent cells overlapping by at least
    /// `overlap`, each decoded alone and blended into its neighbours with linear ramps across
    /// the overlap, so no seam shows. (The mid block's attention and the group norms see one
    /// tile at a time, as in diffusers' tiled decode: the picture differs slightly from a
    /// whole decode.)
    pub fn decode_tiled(&self, latents: &Tensor, tile: usize, overlap: usize) -> Result<Tensor> {
        let z = self.unscale(latents)?;
        let (b, _, h, w) = z.dims4()?;
        let f = self.downscale;
        let data = blend_tiles((b, 3, h, w), f, tile, overlap, |y0, x0, th, tw| {
            self.decoder
                .forward(&z.narrow(2, y0, th)?.narrow(3, x0, tw)?)?
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()
        })?;
        Tensor::from_vec(data, (b, 3, h * f, w * f), &candle_core::Device::Cpu)?
            .to_dtype(latents.dtype())?
            .to_device(latents.device())
    }

    /// The posterior's mean of pixels `[B, 3, H, W]` (sides multiples of the downscale) in
    /// tiles of `tile` latent cells overlapping by at least `overlap`, blended like
    /// [`Vae::decode_tiled`]'s.
    pub fn encode_mean_tiled(
        &self,
        pixels: &Tensor,
        tile: usize,
        overlap: usize,
    ) -> Result<Tensor> {
        let (b, _, ph, pw) = pixels.dims4()?;
        let f = self.downscale;
        let (h, w) = (ph / f, pw / f);
        let c = self.latent_channels;
        let data = blend_tiles((b, c, h, w), 1, tile, overlap, |y0, x0, th, tw| {
            let part = pixels
                .narrow(2, y0 * f, th * f)?
                .narrow(3, x0 * f, tw * f)?;
            self.posterior(&part)?
                .0
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()
        })?;
        Tensor::from_vec(data, (b, c, h, w), &candle_core::Device::Cpu)?
            .to_dtype(pixels.dtype())?
            .to_device(pixels.device())
    }
}

/// Runs `part(y0, x0, th, tw)` over tiles of `tile` x `tile` cells of an `h` x `w` grid,
/// neighbours overlapping by at least `overlap` (the last row and column end at the edge), and
/// blends the parts, `[B, C, th*scale, tw*scale]` each, into one `[B, C, h*scale, w*scale]`:
/// each weighted by ramps rising across the overlap from the edges it shares with a
/// neighbour, the sum divided by the weights.
fn blend_tiles(
    (b, c, h, w): (usize, usize, usize, usize),
    scale: usize,
    tile: usize,
    overlap: usize,
    mut part: impl FnMut(usize, usize, usize, usize) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let tile = tile.max(overlap + 1);
    let starts = |len: usize| -> Vec<usize> {
        if len <= tile {
            return vec![0];
        }
        let stride = tile - overlap;
        let mut v: Vec<usize> = (0..)
            .map(|i| i * stride)
            .take_while(|&s| s + tile < len)
            .collect();
        v.push(len - tile);
        v
    };
    let (oh, ow) = (h * scale, w * scale);
    let mut acc = vec![0f32; b * c * oh * ow];
    let mut weights = vec![0f32; oh * ow];
    let ramp = (overlap * scale).max(1) as f32;
    // Rises from the tile's edge where a neighbour overlaps it, flat elsewhere.
    let weight = |i: usize, len: usize, before: bool, after: bool| -> f32 {
        let mut v = 1f32;
        if before {
            v = v.min((i as f32 + 0.5) / ramp);
        }
        if after {
            v = v.min(((len - i) as f32 - 0.5) / ramp);
        }
        v.max(1e-3)
    };
    for &y0 in &starts(h) {
        for &x0 in &starts(w) {
            let (th, tw) = (tile.min(h), tile.min(w));
            let data = part(y0, x0, th, tw)?;
            let (sh, sw) = (th * scale, tw * scale);
            if data.len() != b * c * sh * sw {
                candle_core::bail!(
                    "a tile came back {} values, not {}",
                    data.len(),
                    b * c * sh * sw
                );
            }
            let wy: Vec<f32> = (0..sh)
                .map(|i| weight(i, sh, y0 > 0, y0 + th < h))
                .collect();
            let wx: Vec<f32> = (0..sw)
                .map(|j| weight(j, sw, x0 > 0, x0 + tw < w))
                .collect();
            for (plane, src) in data.chunks_exact(sh * sw).enumerate() {
                let dst = &mut acc[plane * oh * ow..][..oh * ow];
                for (i, row) in src.chunks_exact(sw).enumerate() {
                    let out = &mut dst[(y0 * scale + i) * ow + x0 * scale..][..sw];
                    for ((o, v), wxj) in out.iter_mut().zip(row).zip(&wx) {
                        *o += v * wy[i] * wxj;
                    }
                }
            }
            for (i, &wyi) in wy.iter().enumerate() {
                let out = &mut weights[(y0 * scale + i) * ow + x0 * scale..][..sw];
                for (o, wxj) in out.iter_mut().zip(&wx) {
                    *o += wyi * wxj;
                }
            }
        }
    }
    for plane in acc.chunks_exact_mut((oh * ow).max(1)) {
        for (v, wsum) in plane.iter_mut().zip(&weights) {
            *v /= wsum;
        }
    }
    Ok(acc)
}

/// Latent cells above which [`Vae::decode`] works in tiles: 128 x 128 (1024x1024 for SD).
const TILE_ABOVE_CELLS: usize = 128 * 128;
/// A decode tile's side in latent cells (768 px for SD: the mid block attends over 9216).
const TILE_CELLS: usize = 96;
/// The least overlap of neighbouring tiles, in latent cells (128 px for SD).
const TILE_OVERLAP_CELLS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn tiny_vae() -> Vae {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let config = VaeConfig {
            block_out_channels: vec![8, 16],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 4,
            scaling_factor: 0.5,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
        };
        Vae::new(vb, &config).unwrap()
    }

    use crate::diffusion::max_abs_diff as max_diff;

    #[test]
    fn a_tiled_decode_is_each_tiles_own_decode_where_alone_and_a_blend_where_they_overlap() {
        let vae = tiny_vae();
        let z = Tensor::randn(0f32, 1.0, (2, 4, 22, 31), &Device::Cpu).unwrap();
        let whole = vae.decode(&z).unwrap();
        // One tile covering everything is the whole decode.
        let one = vae.decode_tiled(&z, 64, 4).unwrap();
        assert!(max_diff(&one, &whole) < 1e-5);
        // Tiles of 10 cells overlapping by 4: rows start at 0, 6, 12 (22 - 10), columns at 0,
        // 6, 12, 18, 21 (31 - 10). The VAE doubles: pixels are twice the cells.
        let tiled = vae.decode_tiled(&z, 10, 4).unwrap();
        assert_eq!(tiled.dims(), whole.dims());
        let decode_at = |y: usize, x: usize| {
            vae.decoder
                .forward(
                    &vae.unscale(&z.narrow(2, y, 10).unwrap().narrow(3, x, 10).unwrap())
                        .unwrap(),
                )
                .unwrap()
        };
        let px = |t: &Tensor, y: usize, x: usize| -> Vec<f32> {
            t.narrow(2, y, 1)
                .unwrap()
                .narrow(3, x, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-4);
        let (first, second) = (decode_at(0, 0), decode_at(0, 6));
        // Where only the first tile reaches (cells 0..6, pixels 0..12), it is that tile.
        let corner = |t: &Tensor| t.narrow(2, 0, 12).unwrap().narrow(3, 0, 12).unwrap();
        assert!(max_diff(&corner(&tiled), &corner(&first)) < 1e-5);
        // Across the overlap of the first two tiles (pixels 12..20 of row 3), the picture
        // goes from the first tile's values to the second's, a linear mix of the two in
        // between: weight (i + 0.5) / 8 for the second at overlap pixel i.
        for i in 0..8 {
            let x = 12 + i;
            let (a, b) = (px(&first, 3, x), px(&second, 3, x - 12));
            let t = (i as f32 + 0.5) / 8.0;
            let want: Vec<f32> = a
                .iter()
                .zip(&b)
                .map(|(a, b)| a * (1.0 - t) + b * t)
                .collect();
            assert!(close(&px(&tiled, 3, x), &want), "overlap pixel {i}");
        }
    }

    #[test]
    fn a_tiled_encode_is_each_tiles_own_encode_where_alone() {
        let vae = tiny_vae();
        let pixels = Tensor::rand(-1f32, 1.0, (1, 3, 44, 62), &Device::Cpu).unwrap();
        let (whole, _) = vae.posterior(&pixels).unwrap();
        let one = vae.encode_mean_tiled(&pixels, 64, 4).unwrap();
        assert!(max_diff(&one, &whole) < 1e-5);
        // 22 x 31 cells in tiles of 10 overlapping by 4: the first alone over cells 0..6.
        let tiled = vae.encode_mean_tiled(&pixels, 10, 4).unwrap();
        assert_eq!(tiled.dims(), whole.dims());
        let first = vae
            .posterior(&pixels.narrow(2, 0, 20).unwrap().narrow(3, 0, 20).unwrap())
            .unwrap()
            .0;
        let corner = |t: &Tensor| t.narrow(2, 0, 6).unwrap().narrow(3, 0, 6).unwrap();
        assert!(max_diff(&corner(&tiled), &corner(&first)) < 1e-5);
        // Elsewhere it is a blend: close to the whole encode, not equal to it.
        let d = max_diff(&tiled, &whole);
        assert!(d > 0.0 && d.is_finite());
    }
}
