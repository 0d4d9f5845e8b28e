//! Colour maths shared by every op: the exact sRGB transfer functions (IEC 61966-2-1, the
//! piecewise formulas, not a 2.2 gamma), Rec.709 luminance, and 8-bit <-> linear conversion.
//!
//! The transfer functions are extended to the whole real line by odd symmetry (as scRGB does),
//! so unclamped intermediate values (negative or above 1) survive an encode/decode pair.

use std::sync::OnceLock;

/// Rec.709 / sRGB luminance weights for linear RGB (they also serve as luma weights on
/// encoded values).
pub const LUMA_REC709: [f32; 3] = [0.2126, 0.7152, 0.0722];

/// One RGB triple (linear or encoded, as the function says).
pub type Rgb = [f32; 3];

/// sRGB-encoded value (0..1 for in-gamut) to linear light.
#[inline]
pub fn srgb_to_linear(encoded: f32) -> f32 {
    let a = encoded.abs();
    let l = if a <= 0.040_45 {
        a / 12.92
    } else {
        ((a + 0.055) / 1.055).powf(2.4)
    };
    l.copysign(encoded)
}

/// Linear-light value to sRGB-encoded (0..1 for in-gamut).
#[inline]
pub fn linear_to_srgb(linear: f32) -> f32 {
    let a = linear.abs();
    let e = if a <= 0.003_130_8 {
        a * 12.92
    } else {
        1.055 * a.powf(1.0 / 2.4) - 0.055
    };
    e.copysign(linear)
}

/// [`srgb_to_linear`] on each channel.
#[inline]
pub fn decode_rgb(encoded: Rgb) -> Rgb {
    [
        srgb_to_linear(encoded[0]),
        srgb_to_linear(encoded[1]),
        srgb_to_linear(encoded[2]),
    ]
}

/// [`linear_to_srgb`] on each channel.
#[inline]
pub fn encode_rgb(linear: Rgb) -> Rgb {
    [
        linear_to_srgb(linear[0]),
        linear_to_srgb(linear[1]),
        linear_to_srgb(linear[2]),
    ]
}

/// Rec.709 weighted sum (luminance of linear RGB, luma of encoded RGB).
#[inline]
pub fn luma(rgb: Rgb) -> f32 {
    LUMA_REC709[0] * rgb[0] + LUMA_REC709[1] * rgb[1] + LUMA_REC709[2] * rgb[2]
}

/// Linear value of each 8-bit sRGB code (computed in f64, rounded once to f32).
pub fn srgb8_to_linear_table() -> &'static [f32; 256] {
    static TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0.0_f32; 256];
        for (code, slot) in table.iter_mut().enumerate() {
            let e = code as f64 / 255.0;
            let l = if e <= 0.040_45 {
                e / 12.92
            } else {
                ((e + 0.055) / 1.055).powf(2.4)
            };
            *slot = l as f32;
        }
        table
    })
}

/// Linear value to the nearest 8-bit sRGB code; the only place values are clamped.
/// NaN becomes 0.
#[inline]
pub fn linear_to_srgb8(linear: f32) -> u8 {
    let e = linear_to_srgb(linear);
    // `as u8` saturates and maps NaN to 0.
    (e.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_8bit_code_round_trips_through_linear() {
        let table = srgb8_to_linear_table();
        for code in 0..=255u8 {
            let l = table[code as usize];
            assert_eq!(linear_to_srgb8(l), code, "code {code}");
            // The f32 decode agrees with the f64 table closely.
            let l32 = srgb_to_linear(code as f32 / 255.0);
            assert!((l32 - l).abs() <= 1e-6, "code {code}: {l32} vs {l}");
        }
    }

    #[test]
    fn transfer_is_piecewise_srgb_not_gamma_22() {
        // The linear toe: 0.04045 -> 0.04045 / 12.92.
        assert!((srgb_to_linear(0.02) - 0.02 / 12.92).abs() < 1e-9);
        assert!((srgb_to_linear(0.5) - 0.214_041_14).abs() < 1e-6);
        assert!((linear_to_srgb(0.214_041_14) - 0.5).abs() < 1e-6);
        // Odd extension.
        assert_eq!(srgb_to_linear(-0.5), -srgb_to_linear(0.5));
        assert!((linear_to_srgb(srgb_to_linear(1.7)) - 1.7).abs() < 1e-5);
    }

    #[test]
    fn non_finite_maps_to_a_code_without_panicking() {
        assert_eq!(linear_to_srgb8(f32::NAN), 0);
        assert_eq!(linear_to_srgb8(f32::INFINITY), 255);
        assert_eq!(linear_to_srgb8(-3.0), 0);
    }
}
