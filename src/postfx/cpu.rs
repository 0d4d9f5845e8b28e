//! The CPU reference implementation of every adjustment op and of a whole [`Stack`], the
//! 8-bit <-> linear conversions around it, the image [`histogram`] and the "auto colour"
//! analysis.
//!
//! Layout, so a WGSL port can mirror it: for each op `<op>` there is
//! - `pub fn <op>(img, &params)`: the whole-image pass (sanitises its parameters, prepares the
//!   "uniforms" once on the host: gains, matrices, LUTs, kernels), and
//! - `pub fn <op>_px(...)`: the per-pixel maths on plain `f32`s, allocation-free.
//!
//! Images are straight linear-light RGBA `f32` ([`Rgba32FImage`]); alpha is never touched.
//! Point ops run row-parallel with rayon. Neighbourhood ops (unsharp mask, denoise) work on
//! planes and read outside the image as the nearest edge pixel (clamp-to-edge). Nothing is
//! clamped until [`linear_to_rgb8`].

use image::{RgbImage, Rgba32FImage};
use rayon::prelude::*;

use super::colour::{
    decode_rgb, encode_rgb, linear_to_srgb, linear_to_srgb8, luma, srgb8_to_linear_table, Rgb,
};
use super::curve::{apply_lut, CurveLut, Spline};
use super::stack::{
    Contrast, Curves, Denoise, Exposure, HighlightsShadows, HueShift, Levels, LevelsChannel, Op,
    Saturation, Stack, UnsharpMask, Vignette, WhiteBalance,
};

// ---------------------------------------------------------------------------------------------
// Conversion and running

/// 8-bit sRGB to linear RGBA (alpha 1), exact per code.
pub fn rgb8_to_linear(img: &RgbImage) -> Rgba32FImage {
    let (w, h) = img.dimensions();
    let mut out = Rgba32FImage::new(w, h);
    if w == 0 || h == 0 {
        return out;
    }
    let table = srgb8_to_linear_table();
    let row_in = w as usize * 3;
    let row_out = w as usize * 4;
    out.par_chunks_mut(row_out)
        .zip(img.as_raw().par_chunks(row_in))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(3)) {
                d[0] = table[s[0] as usize];
                d[1] = table[s[1] as usize];
                d[2] = table[s[2] as usize];
                d[3] = 1.0;
            }
        });
    out
}

/// Linear RGBA to 8-bit sRGB: the one place values are clamped (alpha dropped).
pub fn linear_to_rgb8(img: &Rgba32FImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(w, h);
    if w == 0 || h == 0 {
        return out;
    }
    let row_in = w as usize * 4;
    let row_out = w as usize * 3;
    let src_all: &[f32] = img;
    out.par_chunks_mut(row_out)
        .zip(src_all.par_chunks(row_in))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
                d[0] = linear_to_srgb8(s[0]);
                d[1] = linear_to_srgb8(s[1]);
                d[2] = linear_to_srgb8(s[2]);
            }
        });
    out
}

/// Applies a stack to a linear image, returning a new image.
pub fn apply_stack(img: &Rgba32FImage, stack: &Stack) -> Rgba32FImage {
    let mut out = img.clone();
    apply_stack_in_place(&mut out, stack);
    out
}

/// Applies a stack in place: enabled, known, non-identity ops in order (see
/// [`Stack::effective_ops`]).
pub fn apply_stack_in_place(img: &mut Rgba32FImage, stack: &Stack) {
    for op in stack.effective_ops() {
        apply_op(img, &op);
    }
}

/// Applies a stack to an 8-bit sRGB image (decode, apply in linear light, encode, clamp).
/// An identity stack returns an identical copy.
pub fn apply_to_rgb8(img: &RgbImage, stack: &Stack) -> RgbImage {
    if stack.is_identity() {
        return img.clone();
    }
    let mut linear = rgb8_to_linear(img);
    apply_stack_in_place(&mut linear, stack);
    linear_to_rgb8(&linear)
}

/// Applies one op (sanitised) even when its parameters are the identity; unknown ops do
/// nothing.
pub fn apply_op(img: &mut Rgba32FImage, op: &Op) {
    match op {
        Op::Exposure(p) => exposure(img, p),
        Op::Contrast(p) => contrast(img, p),
        Op::HighlightsShadows(p) => highlights_shadows(img, p),
        Op::WhiteBalance(p) => white_balance(img, p),
        Op::Saturation(p) => saturation(img, p),
        Op::HueShift(p) => hue_shift(img, p),
        Op::Levels(p) => levels(img, p),
        Op::Curves(p) => curves(img, p),
        Op::UnsharpMask(p) => unsharp_mask(img, p),
        Op::Denoise(p) => denoise(img, p),
        Op::Vignette(p) => vignette(img, p),
        Op::Unknown { .. } => {}
    }
}

/// Runs `f` on every pixel's RGB, rows in parallel; `f` gets (rgb, x, y).
fn map_pixels(img: &mut Rgba32FImage, f: impl Fn(Rgb, u32, u32) -> Rgb + Sync) {
    let w = img.width() as usize;
    if w == 0 {
        return;
    }
    img.par_chunks_mut(w * 4).enumerate().for_each(|(y, row)| {
        for (x, px) in row.chunks_exact_mut(4).enumerate() {
            let out = f([px[0], px[1], px[2]], x as u32, y as u32);
            px[..3].copy_from_slice(&out);
        }
    });
}

/// Sign-symmetric power: `sign(x)·|x|^p`.
#[inline]
fn spow(x: f32, p: f32) -> f32 {
    x.abs().powf(p).copysign(x)
}

// ---------------------------------------------------------------------------------------------
// Point ops

/// Exposure: see [`Exposure`].
pub fn exposure(img: &mut Rgba32FImage, p: &Exposure) {
    let gain = p.sanitized().ev.exp2();
    map_pixels(img, |rgb, _, _| exposure_px(rgb, gain));
}

/// Per pixel: linear RGB times `gain = 2^ev`.
#[inline]
pub fn exposure_px(rgb: Rgb, gain: f32) -> Rgb {
    [rgb[0] * gain, rgb[1] * gain, rgb[2] * gain]
}

/// Contrast: see [`Contrast`].
pub fn contrast(img: &mut Rgba32FImage, p: &Contrast) {
    let slope = 1.0 + p.sanitized().amount;
    map_pixels(img, |rgb, _, _| contrast_px(rgb, slope));
}

/// Per pixel: `(v − 0.5)·slope + 0.5` on encoded values.
#[inline]
pub fn contrast_px(rgb: Rgb, slope: f32) -> Rgb {
    let e = encode_rgb(rgb);
    decode_rgb([
        (e[0] - 0.5) * slope + 0.5,
        (e[1] - 0.5) * slope + 0.5,
        (e[2] - 0.5) * slope + 0.5,
    ])
}

/// Highlights and shadows: see [`HighlightsShadows`].
pub fn highlights_shadows(img: &mut Rgba32FImage, p: &HighlightsShadows) {
    let p = p.sanitized();
    map_pixels(img, |rgb, _, _| {
        highlights_shadows_px(rgb, p.highlights, p.shadows)
    });
}

/// Per pixel: adds the luma-weighted tone offset to every encoded channel.
#[inline]
pub fn highlights_shadows_px(rgb: Rgb, highlights: f32, shadows: f32) -> Rgb {
    let e = encode_rgb(rgb);
    let l = luma(e).clamp(0.0, 1.0);
    let inv = 1.0 - l;
    let delta = 1.6875 * (shadows * l * inv * inv + highlights * l * l * inv);
    decode_rgb([e[0] + delta, e[1] + delta, e[2] + delta])
}

/// The linear gains of a white balance (host side; a shader gets the three numbers).
pub fn white_balance_gains(p: &WhiteBalance) -> Rgb {
    let p = p.sanitized();
    let logs = [p.temperature, -p.tint, -p.temperature];
    let mean = luma(logs);
    [
        (logs[0] - mean).exp2(),
        (logs[1] - mean).exp2(),
        (logs[2] - mean).exp2(),
    ]
}

/// White balance: see [`WhiteBalance`].
pub fn white_balance(img: &mut Rgba32FImage, p: &WhiteBalance) {
    let gains = white_balance_gains(p);
    map_pixels(img, |rgb, _, _| white_balance_px(rgb, gains));
}

/// Per pixel: linear RGB times per-channel gains.
#[inline]
pub fn white_balance_px(rgb: Rgb, gains: Rgb) -> Rgb {
    [rgb[0] * gains[0], rgb[1] * gains[1], rgb[2] * gains[2]]
}

/// Saturation and vibrance: see [`Saturation`].
pub fn saturation(img: &mut Rgba32FImage, p: &Saturation) {
    let p = p.sanitized();
    map_pixels(img, |rgb, _, _| {
        saturation_px(rgb, p.saturation, p.vibrance)
    });
}

/// Per pixel: scales the distance from the pixel's luminance.
#[inline]
pub fn saturation_px(rgb: Rgb, saturation: f32, vibrance: f32) -> Rgb {
    let y = luma(rgb);
    let max = rgb[0].max(rgb[1]).max(rgb[2]);
    let min = rgb[0].min(rgb[1]).min(rgb[2]);
    let own = if max > 1e-6 {
        ((max - min) / max).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let k = saturation * (1.0 + vibrance * (1.0 - own));
    [
        y + (rgb[0] - y) * k,
        y + (rgb[1] - y) * k,
        y + (rgb[2] - y) * k,
    ]
}

/// The rotation matrix (row-major) of a hue shift about the grey axis (host side, computed in
/// f64; exactly the identity for multiples of 360°).
pub fn hue_matrix(p: &HueShift) -> [Rgb; 3] {
    let degrees = f64::from(p.sanitized().degrees).rem_euclid(360.0);
    if degrees == 0.0 {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let (s, c) = degrees.to_radians().sin_cos();
    let t = (1.0 - c) / 3.0;
    let q = s / 3.0_f64.sqrt();
    let m = [
        [c + t, t - q, t + q],
        [t + q, c + t, t - q],
        [t - q, t + q, c + t],
    ];
    m.map(|row| row.map(|v| v as f32))
}

/// Hue shift: see [`HueShift`].
pub fn hue_shift(img: &mut Rgba32FImage, p: &HueShift) {
    let m = hue_matrix(p);
    map_pixels(img, |rgb, _, _| hue_shift_px(rgb, &m));
}

/// Per pixel: matrix times linear RGB.
#[inline]
pub fn hue_shift_px(rgb: Rgb, m: &[Rgb; 3]) -> Rgb {
    [
        m[0][0] * rgb[0] + m[0][1] * rgb[1] + m[0][2] * rgb[2],
        m[1][0] * rgb[0] + m[1][1] * rgb[1] + m[1][2] * rgb[2],
        m[2][0] * rgb[0] + m[2][1] * rgb[1] + m[2][2] * rgb[2],
    ]
}

/// Levels: see [`Levels`].
pub fn levels(img: &mut Rgba32FImage, p: &Levels) {
    let p = p.sanitized();
    let master = p.master();
    let per_channel = p.per_channel.unwrap_or([LevelsChannel::IDENTITY; 3]);
    map_pixels(img, |rgb, _, _| levels_px(rgb, &master, &per_channel));
}

/// One encoded value through one set of levels.
#[inline]
pub fn levels_value(v: f32, l: &LevelsChannel) -> f32 {
    let t = (v - l.black) / (l.white - l.black);
    if l.gamma == 1.0 {
        t
    } else {
        spow(t, 1.0 / l.gamma)
    }
}

/// Per pixel: per-channel levels, then master levels, on encoded values.
#[inline]
pub fn levels_px(rgb: Rgb, master: &LevelsChannel, per_channel: &[LevelsChannel; 3]) -> Rgb {
    let e = encode_rgb(rgb);
    decode_rgb([
        levels_value(levels_value(e[0], &per_channel[0]), master),
        levels_value(levels_value(e[1], &per_channel[1]), master),
        levels_value(levels_value(e[2], &per_channel[2]), master),
    ])
}

/// Bakes curves into the LUT a shader (and [`curves_px`]) samples.
pub fn curves_lut(p: &Curves) -> CurveLut {
    let p = p.sanitized();
    let master = Spline::new(&p.rgb);
    let channel = |c: &Option<Vec<(f32, f32)>>| Spline::new(c.as_deref().unwrap_or(&[]));
    let (r, g, b) = (channel(&p.r), channel(&p.g), channel(&p.b));
    CurveLut::bake(&master, [&r, &g, &b])
}

/// Curves: see [`Curves`].
pub fn curves(img: &mut Rgba32FImage, p: &Curves) {
    let lut = curves_lut(p);
    map_pixels(img, |rgb, _, _| curves_px(rgb, &lut));
}

/// Per pixel: the baked curve on encoded values.
#[inline]
pub fn curves_px(rgb: Rgb, lut: &CurveLut) -> Rgb {
    decode_rgb(apply_lut(lut, encode_rgb(rgb)))
}

/// Vignette: see [`Vignette`].
pub fn vignette(img: &mut Rgba32FImage, p: &Vignette) {
    let p = p.sanitized();
    let (w, h) = img.dimensions();
    map_pixels(img, |rgb, x, y| vignette_px(rgb, x, y, w, h, &p));
}

/// `smoothstep` that is a step when the edges meet (WGSL's is undefined there).
#[inline]
fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    if edge1 <= edge0 {
        return if x >= edge0 { 1.0 } else { 0.0 };
    }
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Per pixel: the vignette factor at pixel (x, y) of a w × h image.
#[inline]
pub fn vignette_px(rgb: Rgb, x: u32, y: u32, w: u32, h: u32, p: &Vignette) -> Rgb {
    let u = ((x as f32 + 0.5) / w as f32 - 0.5) * 2.0;
    let v = ((y as f32 + 0.5) / h as f32 - 0.5) * 2.0;
    let d = ((u * u + v * v) * 0.5).sqrt();
    let t = smoothstep(
        p.midpoint - p.feather * 0.5,
        p.midpoint + p.feather * 0.5,
        d,
    );
    let k = 1.0 + p.amount * t;
    [rgb[0] * k, rgb[1] * k, rgb[2] * k]
}

// ---------------------------------------------------------------------------------------------
// Neighbourhood ops

/// One channel (or derived value) of the image as a plane.
fn plane(img: &Rgba32FImage, f: impl Fn(Rgb) -> f32 + Sync) -> Vec<f32> {
    let w = img.width() as usize;
    let mut out = vec![0.0_f32; w * img.height() as usize];
    if w == 0 {
        return out;
    }
    let src: &[f32] = img;
    out.par_chunks_mut(w)
        .zip(src.par_chunks(w * 4))
        .for_each(|(dst, row)| {
            for (d, px) in dst.iter_mut().zip(row.chunks_exact(4)) {
                *d = f([px[0], px[1], px[2]]);
            }
        });
    out
}

/// Normalised 1-D Gaussian weights reaching 3 sigma (a single 1 for a tiny sigma).
pub fn gaussian_kernel(sigma_px: f32) -> Vec<f32> {
    if sigma_px.is_nan() || sigma_px <= 0.05 {
        return vec![1.0];
    }
    let sigma = f64::from(sigma_px.min(32.0));
    let radius = (3.0 * sigma).ceil() as i64;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    weights.iter().map(|w| (w / sum) as f32).collect()
}

#[inline]
fn clamp_index(i: isize, len: usize) -> usize {
    i.clamp(0, len as isize - 1) as usize
}

/// Separable convolution of a plane with a symmetric odd kernel, clamp-to-edge.
pub fn blur_plane(src: &[f32], w: usize, h: usize, kernel: &[f32]) -> Vec<f32> {
    if w == 0 || h == 0 || kernel.len() <= 1 {
        return src.to_vec();
    }
    let r = (kernel.len() / 2) as isize;
    let mut tmp = vec![0.0_f32; w * h];
    tmp.par_chunks_mut(w)
        .zip(src.par_chunks(w))
        .for_each(|(dst, row)| {
            for (x, d) in dst.iter_mut().enumerate() {
                let mut sum = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    sum += weight * row[clamp_index(x as isize + k as isize - r, w)];
                }
                *d = sum;
            }
        });
    let mut out = vec![0.0_f32; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, dst)| {
        for (k, weight) in kernel.iter().enumerate() {
            let sy = clamp_index(y as isize + k as isize - r, h);
            for (d, s) in dst.iter_mut().zip(&tmp[sy * w..(sy + 1) * w]) {
                *d += weight * s;
            }
        }
    });
    out
}

/// Mean over the (2r + 1)² window around each pixel, clamp-to-edge (sliding sums in f64; a
/// shader may loop over the window directly, the result is the same up to rounding).
pub fn box_mean_plane(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    if w == 0 || h == 0 || r == 0 {
        return src.to_vec();
    }
    let ri = r as isize;
    let norm = 1.0 / (2 * r + 1) as f64;
    let mut tmp = vec![0.0_f32; w * h];
    tmp.par_chunks_mut(w)
        .zip(src.par_chunks(w))
        .for_each(|(dst, row)| {
            let at = |i: isize| f64::from(row[clamp_index(i, w)]);
            let mut sum: f64 = (-ri..=ri).map(at).sum();
            for (x, d) in dst.iter_mut().enumerate() {
                *d = (sum * norm) as f32;
                sum += at(x as isize + ri + 1) - at(x as isize - ri);
            }
        });
    const BLOCK_ROWS: usize = 32;
    let row = |y: isize| {
        let y = clamp_index(y, h);
        &tmp[y * w..(y + 1) * w]
    };
    let mut out = vec![0.0_f32; w * h];
    out.par_chunks_mut(w * BLOCK_ROWS)
        .enumerate()
        .for_each(|(block, dst)| {
            let y0 = (block * BLOCK_ROWS) as isize;
            let mut acc = vec![0.0_f64; w];
            for dy in -ri..=ri {
                for (a, v) in acc.iter_mut().zip(row(y0 + dy)) {
                    *a += f64::from(*v);
                }
            }
            for (i, dst_row) in dst.chunks_mut(w).enumerate() {
                let y = y0 + i as isize;
                for (d, a) in dst_row.iter_mut().zip(&acc) {
                    *d = (*a * norm) as f32;
                }
                let (add, sub) = (row(y + ri + 1), row(y - ri));
                for ((a, p), m) in acc.iter_mut().zip(add).zip(sub) {
                    *a += f64::from(*p) - f64::from(*m);
                }
            }
        });
    out
}

/// Unsharp mask: see [`UnsharpMask`].
pub fn unsharp_mask(img: &mut Rgba32FImage, p: &UnsharpMask) {
    let p = p.sanitized();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let lum = plane(img, luma);
    let blurred = blur_plane(&lum, w, h, &gaussian_kernel(p.radius_px));
    map_pixels(img, |rgb, x, y| {
        let i = y as usize * w + x as usize;
        unsharp_mask_px(rgb, lum[i], blurred[i], p.amount, p.threshold)
    });
}

/// Per pixel: adds the soft-thresholded luminance detail to every channel.
#[inline]
pub fn unsharp_mask_px(rgb: Rgb, lum: f32, blurred_lum: f32, amount: f32, threshold: f32) -> Rgb {
    let detail = lum - blurred_lum;
    let kept = (detail.abs() - threshold).max(0.0).copysign(detail);
    let add = amount * kept;
    [rgb[0] + add, rgb[1] + add, rgb[2] + add]
}

/// Denoise: see [`Denoise`]. A no-op at strength 0.
pub fn denoise(img: &mut Rgba32FImage, p: &Denoise) {
    let p = p.sanitized();
    if p.strength == 0.0 {
        return;
    }
    let eps = (0.1 * p.strength) * (0.1 * p.strength);
    let (w, h) = (img.width() as usize, img.height() as usize);
    let r = p.radius_px as usize;
    let filtered: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            let guide = plane(img, |rgb| linear_to_srgb(rgb[c]));
            guided_filter_plane(&guide, w, h, r, eps)
        })
        .collect();
    map_pixels(img, |_, x, y| {
        let i = y as usize * w + x as usize;
        decode_rgb([filtered[0][i], filtered[1][i], filtered[2][i]])
    });
}

/// The self-guided filter of one plane (He, Sun, Tang 2010, with I = p).
pub fn guided_filter_plane(src: &[f32], w: usize, h: usize, r: usize, eps: f32) -> Vec<f32> {
    let mean = box_mean_plane(src, w, h, r);
    let squares: Vec<f32> = src.par_iter().map(|v| v * v).collect();
    let mean_sq = box_mean_plane(&squares, w, h, r);
    drop(squares);
    let (a, b): (Vec<f32>, Vec<f32>) = mean
        .par_iter()
        .zip(&mean_sq)
        .map(|(&m, &m2)| guided_coefficients(m, m2, eps))
        .unzip();
    drop((mean, mean_sq));
    let mean_a = box_mean_plane(&a, w, h, r);
    let mean_b = box_mean_plane(&b, w, h, r);
    src.par_iter()
        .zip(&mean_a)
        .zip(&mean_b)
        .map(|((&v, &ma), &mb)| guided_output_px(v, ma, mb))
        .collect()
}

/// Per pixel (first pass): the local linear model `a`, `b` from the window mean and mean of
/// squares.
#[inline]
pub fn guided_coefficients(mean: f32, mean_sq: f32, eps: f32) -> (f32, f32) {
    let var = (mean_sq - mean * mean).max(0.0);
    let a = var / (var + eps);
    (a, mean - a * mean)
}

/// Per pixel (second pass): the averaged model applied to the guide.
#[inline]
pub fn guided_output_px(guide: f32, mean_a: f32, mean_b: f32) -> f32 {
    mean_a * guide + mean_b
}

// ---------------------------------------------------------------------------------------------
// Histogram and auto colour

/// Counts of each 8-bit code per channel, and of Rec.709 luma (integer-rounded
/// `0.2126 R' + 0.7152 G' + 0.0722 B'` of the encoded codes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Red codes.
    pub r: [u32; 256],
    /// Green codes.
    pub g: [u32; 256],
    /// Blue codes.
    pub b: [u32; 256],
    /// Luma codes.
    pub luma: [u32; 256],
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            r: [0; 256],
            g: [0; 256],
            b: [0; 256],
            luma: [0; 256],
        }
    }
}

impl Histogram {
    /// The number of pixels counted.
    pub fn pixel_count(&self) -> u64 {
        self.luma.iter().map(|&c| u64::from(c)).sum()
    }

    fn merge(mut self, other: Self) -> Self {
        for i in 0..256 {
            self.r[i] += other.r[i];
            self.g[i] += other.g[i];
            self.b[i] += other.b[i];
            self.luma[i] += other.luma[i];
        }
        self
    }

    /// The smallest code with at least `fraction` of a channel's pixels at or below it.
    pub fn percentile(channel: &[u32; 256], fraction: f64) -> u8 {
        let total: u64 = channel.iter().map(|&c| u64::from(c)).sum();
        let target = (fraction.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0_u64;
        for (code, &count) in channel.iter().enumerate() {
            seen += u64::from(count);
            if seen as f64 >= target {
                return code as u8;
            }
        }
        255
    }
}

/// The histogram of an 8-bit image (rows in parallel).
pub fn histogram(img: &RgbImage) -> Histogram {
    let w = img.width() as usize;
    if w == 0 {
        return Histogram::default();
    }
    img.as_raw()
        .par_chunks(w * 3)
        .fold(Histogram::default, |mut hist, row| {
            for px in row.chunks_exact(3) {
                let (r, g, b) = (px[0] as usize, px[1] as usize, px[2] as usize);
                hist.r[r] += 1;
                hist.g[g] += 1;
                hist.b[b] += 1;
                hist.luma[(2126 * r + 7152 * g + 722 * b + 5000) / 10000] += 1;
            }
            hist
        })
        .reduce(Histogram::default, Histogram::merge)
}

/// Grey-world white balance for mean linear channel values: the balance whose gains make the
/// three means equal (clamped to range); `None` when already neutral or a channel is empty.
pub fn grey_world_balance(mean_linear: Rgb) -> Option<WhiteBalance> {
    if mean_linear.iter().any(|m| m.is_nan() || *m <= 1e-4) {
        return None;
    }
    let logs = mean_linear.map(|m| -m.log2());
    let offset = (logs[0] + logs[2]) * 0.5;
    let wb = WhiteBalance {
        temperature: (logs[0] - logs[2]) * 0.5,
        tint: offset - logs[1],
    }
    .sanitized();
    (wb.temperature.abs() > 1e-3 || wb.tint.abs() > 1e-3).then_some(wb)
}

/// The lower and upper percentiles used by auto levels.
pub const AUTO_LEVELS_PERCENTILES: (f64, f64) = (0.005, 0.995);

/// A one-click "auto colour" stack for `image`: grey-world white balance, then auto levels
/// per channel from the [`AUTO_LEVELS_PERCENTILES`] of the balanced image.
pub fn auto_colour(image: &RgbImage) -> Stack {
    let mut stack = Stack::default();
    let pixel_count = u64::from(image.width()) * u64::from(image.height());
    if pixel_count == 0 {
        return stack;
    }
    let mut linear = rgb8_to_linear(image);
    let sums = linear
        .par_chunks(4)
        .fold(
            || [0.0_f64; 3],
            |acc, px| {
                [
                    acc[0] + f64::from(px[0]),
                    acc[1] + f64::from(px[1]),
                    acc[2] + f64::from(px[2]),
                ]
            },
        )
        .reduce(|| [0.0; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]]);
    let means = sums.map(|s| (s / pixel_count as f64) as f32);
    if let Some(wb) = grey_world_balance(means) {
        white_balance(&mut linear, &wb);
        stack.push(Op::WhiteBalance(wb));
    }
    let hist = histogram(&linear_to_rgb8(&linear));
    let (lo, hi) = AUTO_LEVELS_PERCENTILES;
    let per_channel = [&hist.r, &hist.g, &hist.b].map(|channel| {
        let black = Histogram::percentile(channel, lo);
        let white = Histogram::percentile(channel, hi);
        if white > black {
            LevelsChannel {
                black: f32::from(black) / 255.0,
                white: f32::from(white) / 255.0,
                gamma: 1.0,
            }
        } else {
            LevelsChannel::IDENTITY
        }
    });
    let levels = Op::Levels(Levels {
        per_channel: Some(per_channel),
        ..Levels::IDENTITY
    });
    if !levels.is_identity() {
        stack.push(levels);
    }
    stack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_kernel_is_normalised_and_symmetric() {
        for sigma in [0.0, 0.5, 1.0, 2.5, 100.0] {
            let k = gaussian_kernel(sigma);
            assert_eq!(k.len() % 2, 1);
            assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(k.iter().zip(k.iter().rev()).all(|(a, b)| a == b));
        }
    }

    #[test]
    fn box_mean_matches_a_direct_window_with_clamped_edges() {
        let (w, h, r) = (7, 5, 2);
        let src: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32 / 10.0).collect();
        let fast = box_mean_plane(&src, w, h, r);
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0.0;
                for dy in -(r as isize)..=r as isize {
                    for dx in -(r as isize)..=r as isize {
                        sum += src
                            [clamp_index(y as isize + dy, h) * w + clamp_index(x as isize + dx, w)];
                    }
                }
                let direct = sum / ((2 * r + 1) * (2 * r + 1)) as f32;
                assert!((fast[y * w + x] - direct).abs() < 1e-5, "({x},{y})");
            }
        }
    }

    #[test]
    fn blur_of_a_constant_plane_is_constant() {
        let src = vec![0.25_f32; 9 * 4];
        let out = blur_plane(&src, 9, 4, &gaussian_kernel(3.0));
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn grey_world_neutralises_channel_means() {
        let means = [0.3, 0.2, 0.1];
        let wb = grey_world_balance(means).expect("a cast");
        let g = white_balance_gains(&wb);
        let balanced = [means[0] * g[0], means[1] * g[1], means[2] * g[2]];
        assert!(
            (balanced[0] - balanced[1]).abs() < 1e-4 && (balanced[1] - balanced[2]).abs() < 1e-4,
            "{balanced:?}"
        );
        assert!(grey_world_balance([0.2, 0.2, 0.2]).is_none());
        assert!(grey_world_balance([0.2, 0.0, 0.2]).is_none());
    }

    #[test]
    fn percentile_picks_codes() {
        let mut c = [0_u32; 256];
        c[10] = 1;
        c[100] = 998;
        c[200] = 1;
        assert_eq!(Histogram::percentile(&c, 0.0005), 10);
        assert_eq!(Histogram::percentile(&c, 0.005), 100);
        assert_eq!(Histogram::percentile(&c, 0.995), 100);
        assert_eq!(Histogram::percentile(&c, 1.0), 200);
    }
}
