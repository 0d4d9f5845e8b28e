//! Adjustment-op fixtures shared by the CPU and GPU postfx tests.

use atelier::postfx::*;
use image::{Rgb, RgbImage};

/// Non-identity parameters for every op.
pub fn active_ops() -> Vec<Op> {
    vec![
        Op::Exposure(Exposure { ev: 0.7 }),
        Op::Contrast(Contrast { amount: 0.3 }),
        Op::HighlightsShadows(HighlightsShadows {
            highlights: -0.5,
            shadows: 0.4,
        }),
        Op::WhiteBalance(WhiteBalance {
            temperature: 0.3,
            tint: -0.2,
        }),
        Op::Saturation(Saturation {
            saturation: 1.3,
            vibrance: 0.4,
        }),
        Op::HueShift(HueShift { degrees: 25.0 }),
        Op::Levels(Levels {
            black: 0.05,
            white: 0.9,
            gamma: 1.2,
            per_channel: Some([
                LevelsChannel {
                    black: 0.02,
                    white: 0.98,
                    gamma: 0.9,
                },
                LevelsChannel::IDENTITY,
                LevelsChannel {
                    black: 0.0,
                    white: 0.95,
                    gamma: 1.1,
                },
            ]),
        }),
        Op::Curves(Curves {
            rgb: vec![(0.0, 0.0), (0.25, 0.2), (0.75, 0.82), (1.0, 1.0)],
            r: Some(vec![(0.0, 0.05), (1.0, 1.0)]),
            g: None,
            b: Some(vec![(0.0, 0.0), (0.5, 0.45), (1.0, 0.95)]),
        }),
        Op::UnsharpMask(UnsharpMask {
            radius_px: 1.5,
            amount: 0.8,
            threshold: 0.01,
        }),
        Op::Denoise(Denoise {
            radius_px: 2,
            strength: 0.5,
        }),
        Op::Vignette(Vignette {
            amount: -0.4,
            midpoint: 0.5,
            feather: 0.6,
        }),
    ]
}

/// 256 x 2: every 8-bit value appears in every channel (as different permutations).
pub fn every_value_image() -> RgbImage {
    RgbImage::from_fn(256, 2, |x, y| {
        let v = x as u8;
        if y == 0 {
            Rgb([v, 255 - v, v.wrapping_mul(7)])
        } else {
            Rgb([v.wrapping_mul(3), v, 255 - v])
        }
    })
}

/// A deterministic pseudo-random image.
pub fn noise_image(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    RgbImage::from_fn(w, h, |_, _| {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        };
        Rgb([next(), next(), next()])
    })
}
