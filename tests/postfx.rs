//! Integration tests of the adjustment stack (`atelier::postfx`): identities, closed-form
//! cases, neighbourhood behaviour, the stored JSON format, auto colour and the histogram.

mod postfx_common;
use atelier::postfx::colour::{luma, srgb_to_linear};
use atelier::postfx::cpu::{apply_op, apply_stack, linear_to_rgb8, rgb8_to_linear};
use atelier::postfx::{
    apply_to_rgb8, histogram, Contrast, Curves, Denoise, Exposure, HighlightsShadows, HueShift,
    Levels, LevelsChannel, Op, OpEntry, PostfxError, Saturation, Stack, UnsharpMask, Vignette,
    WhiteBalance,
};
use image::{Rgb, RgbImage};
use postfx_common::{active_ops, every_value_image, noise_image};

#[test]
fn identity_parameters_are_exact_noops_on_8bit_images() {
    let img = every_value_image();
    for op in Op::all_identity() {
        // The op's maths itself, not just the runner's identity skip.
        let mut linear = rgb8_to_linear(&img);
        apply_op(&mut linear, &op);
        assert_eq!(linear_to_rgb8(&linear), img, "{}", op.name());
    }
    let stack = Stack::from_ops(Op::all_identity());
    assert!(stack.is_identity());
    assert_eq!(apply_to_rgb8(&img, &stack), img);
    // The explicit identities the issue names.
    for op in [
        Op::Levels(Levels {
            per_channel: Some([LevelsChannel::IDENTITY; 3]),
            ..Levels::IDENTITY
        }),
        Op::WhiteBalance(WhiteBalance {
            temperature: 0.0,
            tint: 0.0,
        }),
        Op::UnsharpMask(UnsharpMask {
            radius_px: 4.0,
            amount: 0.0,
            threshold: 0.0,
        }),
        Op::Curves(Curves {
            rgb: vec![(0.0, 0.0), (0.3, 0.3), (0.6, 0.6), (1.0, 1.0)],
            ..Curves::identity()
        }),
        Op::HueShift(HueShift { degrees: 360.0 }),
        Op::HueShift(HueShift { degrees: -720.0 }),
    ] {
        let mut linear = rgb8_to_linear(&img);
        apply_op(&mut linear, &op);
        assert_eq!(linear_to_rgb8(&linear), img, "{op:?}");
    }
}

#[test]
fn empty_stack_round_trips_every_value_bit_exactly() {
    let img = every_value_image();
    assert_eq!(linear_to_rgb8(&rgb8_to_linear(&img)), img);
    assert_eq!(apply_to_rgb8(&img, &Stack::default()), img);
}

#[test]
fn plus_one_ev_doubles_linear_values() {
    let linear = rgb8_to_linear(&every_value_image());
    let out = apply_stack(
        &linear,
        &Stack::from_ops([Op::Exposure(Exposure { ev: 1.0 })]),
    );
    for (a, b) in linear.pixels().zip(out.pixels()) {
        for c in 0..3 {
            assert_eq!(b.0[c], 2.0 * a.0[c]);
        }
        assert_eq!(b.0[3], a.0[3], "alpha untouched");
    }
    let out = apply_stack(
        &linear,
        &Stack::from_ops([Op::Exposure(Exposure { ev: -2.0 })]),
    );
    assert_eq!(
        out.get_pixel(255, 0).0[0],
        0.25 * linear.get_pixel(255, 0).0[0]
    );
}

#[test]
fn a_curve_through_the_diagonal_is_identity_in_linear_space_too() {
    let linear = rgb8_to_linear(&every_value_image());
    let mut out = linear.clone();
    apply_op(
        &mut out,
        &Op::Curves(Curves {
            rgb: vec![(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)],
            ..Curves::identity()
        }),
    );
    for (a, b) in linear.pixels().zip(out.pixels()) {
        for c in 0..3 {
            assert!(
                (a.0[c] - b.0[c]).abs() <= 1e-5 * (1.0 + a.0[c]),
                "{} vs {}",
                a.0[c],
                b.0[c]
            );
        }
    }
}

#[test]
fn hue_shift_120_maps_red_to_green_and_360_is_identity() {
    let red = RgbImage::from_pixel(3, 2, Rgb([255, 0, 0]));
    let out = apply_to_rgb8(
        &red,
        &Stack::from_ops([Op::HueShift(HueShift { degrees: 120.0 })]),
    );
    assert!(
        out.pixels().all(|p| p.0 == [0, 255, 0]),
        "{:?}",
        out.get_pixel(0, 0)
    );
    let out = apply_to_rgb8(
        &red,
        &Stack::from_ops([Op::HueShift(HueShift { degrees: 240.0 })]),
    );
    assert!(out.pixels().all(|p| p.0 == [0, 0, 255]));
    let img = noise_image(17, 9, 3);
    let mut linear = rgb8_to_linear(&img);
    apply_op(&mut linear, &Op::HueShift(HueShift { degrees: 360.0 }));
    assert_eq!(linear_to_rgb8(&linear), img);
}

#[test]
fn saturation_zero_gives_grey_with_rec709_luminance() {
    let img = noise_image(16, 8, 11);
    let linear = rgb8_to_linear(&img);
    let out = apply_stack(
        &linear,
        &Stack::from_ops([Op::Saturation(Saturation {
            saturation: 0.0,
            vibrance: 0.0,
        })]),
    );
    for (a, b) in linear.pixels().zip(out.pixels()) {
        let y = 0.2126 * a.0[0] + 0.7152 * a.0[1] + 0.0722 * a.0[2];
        for c in 0..3 {
            assert!((b.0[c] - y).abs() < 1e-6, "{:?} -> {:?}", a, b);
        }
    }
    let grey = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::Saturation(Saturation {
            saturation: 0.0,
            vibrance: 0.0,
        })]),
    );
    assert!(grey.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
}

#[test]
fn unsharp_mask_raises_local_contrast_on_an_edge() {
    let img = RgbImage::from_fn(16, 5, |x, _| {
        if x < 8 {
            Rgb([70, 70, 70])
        } else {
            Rgb([160, 160, 160])
        }
    });
    let out = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::UnsharpMask(UnsharpMask {
            radius_px: 1.5,
            amount: 1.0,
            threshold: 0.0,
        })]),
    );
    let (dark, light) = (out.get_pixel(7, 2).0[0], out.get_pixel(8, 2).0[0]);
    assert!(dark < 70 && light > 160, "edge {dark} / {light}");
    // Far from the edge (and at the clamped borders) nothing changes.
    assert_eq!(out.get_pixel(0, 0).0, [70, 70, 70]);
    assert_eq!(out.get_pixel(15, 4).0, [160, 160, 160]);
    // A threshold above the edge's detail leaves it alone.
    let out = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::UnsharpMask(UnsharpMask {
            radius_px: 1.5,
            amount: 1.0,
            threshold: 0.5,
        })]),
    );
    assert_eq!(out, img);
}

#[test]
fn denoise_reduces_noise_and_keeps_a_step_edge() {
    let (w, h) = (64_u32, 48_u32);
    let noise = noise_image(w, h, 5);
    // Encoded 0.3 | 0.7 halves with ±~0.035 (std ≈ 0.02) uniform noise, the same on all channels.
    let img = RgbImage::from_fn(w, h, |x, y| {
        let base = if x < w / 2 { 77.0 } else { 179.0 };
        let n = (f32::from(noise.get_pixel(x, y).0[0]) - 127.5) / 127.5 * 9.0;
        let v = (base + n).round() as u8;
        Rgb([v, v, v])
    });
    let out = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::Denoise(Denoise {
            radius_px: 3,
            strength: 0.5,
        })]),
    );
    let variance = |im: &RgbImage, x0: u32, x1: u32| {
        let vals: Vec<f64> = (4..h - 4)
            .flat_map(|y| (x0..x1).map(move |x| (y, x)))
            .map(|(y, x)| f64::from(im.get_pixel(x, y).0[1]))
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64
    };
    for (x0, x1) in [(4, w / 2 - 6), (w / 2 + 6, w - 4)] {
        let (before, after) = (variance(&img, x0, x1), variance(&out, x0, x1));
        assert!(after < 0.35 * before, "variance {before} -> {after}");
    }
    // Edge contrast: the mean step between the columns either side of the edge stays large.
    let column_mean = |im: &RgbImage, x: u32| {
        (0..h)
            .map(|y| f64::from(im.get_pixel(x, y).0[1]))
            .sum::<f64>()
            / f64::from(h)
    };
    let step = column_mean(&out, w / 2) - column_mean(&out, w / 2 - 1);
    assert!(step > 0.85 * 102.0, "edge step {step}");
}

#[test]
fn vignette_darkens_corners_not_the_centre() {
    let img = RgbImage::from_pixel(9, 7, Rgb([180, 180, 180]));
    let out = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::Vignette(Vignette {
            amount: -0.8,
            midpoint: 0.5,
            feather: 0.5,
        })]),
    );
    assert_eq!(out.get_pixel(4, 3).0, [180, 180, 180]);
    for (x, y) in [(0, 0), (8, 0), (0, 6), (8, 6)] {
        assert!(
            out.get_pixel(x, y).0[0] < 120,
            "corner ({x},{y}) {:?}",
            out.get_pixel(x, y)
        );
    }
}

#[test]
fn levels_and_contrast_move_tones_as_documented() {
    let img = RgbImage::from_fn(3, 1, |x, _| Rgb([[64, 128, 192][x as usize]; 3]));
    let out = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::Levels(Levels {
            black: 64.0 / 255.0,
            white: 192.0 / 255.0,
            ..Levels::IDENTITY
        })]),
    );
    // 128 sits exactly half way (127.5): either neighbour is a correct rounding.
    assert_eq!(
        (out.get_pixel(0, 0).0[0], out.get_pixel(2, 0).0[0]),
        (0, 255)
    );
    assert!((127..=128).contains(&out.get_pixel(1, 0).0[0]));
    let out = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::Contrast(Contrast { amount: -1.0 })]),
    );
    assert!(out.pixels().all(|p| p.0 == [128, 128, 128]), "{out:?}");
    let out = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::HighlightsShadows(HighlightsShadows {
            highlights: 0.0,
            shadows: 1.0,
        })]),
    );
    assert!(out.get_pixel(0, 0).0[0] > 64 && out.get_pixel(2, 0).0[0] >= 192);
}

#[test]
fn white_balance_warms_and_keeps_grey_brightness_close() {
    let img = RgbImage::from_pixel(2, 2, Rgb([128, 128, 128]));
    let out = apply_to_rgb8(
        &img,
        &Stack::from_ops([Op::WhiteBalance(WhiteBalance {
            temperature: 0.5,
            tint: 0.0,
        })]),
    );
    let p = out.get_pixel(0, 0).0;
    assert!(p[0] > 128 && p[2] < 128, "{p:?}");
    let before = luma([srgb_to_linear(128.0 / 255.0); 3]);
    let after = luma(p.map(|c| srgb_to_linear(f32::from(c) / 255.0)));
    assert!((after - before).abs() / before < 0.1, "{before} -> {after}");
}

#[test]
fn every_op_handles_tiny_and_odd_sizes() {
    for (w, h) in [(1, 1), (7, 3), (3, 7), (2, 1), (0, 0), (5, 0)] {
        let img = noise_image(w, h, w * 31 + h);
        for op in active_ops() {
            let out = apply_to_rgb8(&img, &Stack::from_ops([op.clone()]));
            assert_eq!(out.dimensions(), (w, h), "{}", op.name());
        }
        let out = apply_to_rgb8(&img, &Stack::from_ops(active_ops()));
        assert_eq!(out.dimensions(), (w, h));
    }
    // Extreme and garbage parameters are clamped, never a panic.
    let img = noise_image(7, 3, 1);
    let wild = vec![
        Op::Exposure(Exposure { ev: 1e9 }),
        Op::UnsharpMask(UnsharpMask {
            radius_px: 1e9,
            amount: f32::NAN,
            threshold: -1.0,
        }),
        Op::Denoise(Denoise {
            radius_px: u32::MAX,
            strength: 7.0,
        }),
        Op::Levels(Levels {
            black: 2.0,
            white: -1.0,
            gamma: 0.0,
            per_channel: None,
        }),
        Op::Curves(Curves {
            rgb: vec![(f32::NAN, 0.0), (0.5, 9.0), (0.5, 0.1)],
            ..Curves::identity()
        }),
        Op::Vignette(Vignette {
            amount: -5.0,
            midpoint: 0.5,
            feather: 0.0,
        }),
        Op::HueShift(HueShift {
            degrees: f32::INFINITY,
        }),
    ];
    let _ = apply_to_rgb8(&img, &Stack::from_ops(wild));
}

#[test]
fn disabled_entries_are_skipped() {
    let img = noise_image(5, 5, 2);
    let mut stack = Stack::from_ops([Op::Exposure(Exposure { ev: 2.0 })]);
    stack.ops[0].enabled = false;
    assert_eq!(apply_to_rgb8(&img, &stack), img);
}

#[test]
fn stack_json_round_trips_exactly() {
    let mut stack = Stack::from_ops(active_ops());
    stack.ops[3].enabled = false;
    stack.ops.push(OpEntry {
        enabled: true,
        op: Op::Unknown {
            name: "film_grain".into(),
            raw: serde_json::json!({"op": "film_grain", "amount": 0.25, "size_px": [1, 2]}),
        },
    });
    let text = stack.to_json().expect("serialise");
    let back = Stack::from_json(&text).expect("parse");
    assert_eq!(back, stack);
    assert_eq!(back.to_json().expect("serialise again"), text);
    // Readable, tagged form.
    assert!(
        text.contains("\"op\": \"unsharp_mask\"") && text.contains("\"radius_px\": 1.5"),
        "{text}"
    );
}

#[test]
fn an_unknown_op_is_reported_kept_and_skipped() {
    let text = r#"{"version": 1, "ops": [
        {"op": "exposure", "ev": 1.0},
        {"op": "film_grain", "amount": 0.3, "enabled": true},
        {"op": "contrast", "amount": 0.2, "enabled": false}
    ]}"#;
    let stack = Stack::from_json(text).expect("an unknown op is not an error");
    assert_eq!(stack.unknown_ops(), vec!["film_grain"]);
    assert_eq!(stack.ops.len(), 3);
    let img = noise_image(6, 4, 9);
    let known_only = Stack::from_ops([Op::Exposure(Exposure { ev: 1.0 })]);
    assert_eq!(
        apply_to_rgb8(&img, &stack),
        apply_to_rgb8(&img, &known_only)
    );
    let again = Stack::from_json(&stack.to_json().expect("serialise")).expect("parse");
    assert_eq!(again, stack);
}

#[test]
fn a_newer_format_version_is_a_clear_error() {
    let err = Stack::from_json(r#"{"version": 2, "ops": [{"op": "exposure", "ev": 1}]}"#)
        .expect_err("newer");
    assert!(
        matches!(
            err,
            PostfxError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    assert!(Stack::from_json(r#"{"version": 0, "ops": []}"#).is_err());
    assert!(matches!(
        Stack::from_json(r#"{"ops": []}"#),
        Err(PostfxError::MissingVersion { .. })
    ));
}

#[test]
fn auto_colour_stretches_a_low_contrast_image() {
    // Values 100..=150 with a warm cast.
    let img = RgbImage::from_fn(64, 32, |x, y| {
        let v = 100 + ((x + y * 64) % 51) as u8;
        Rgb([v.saturating_add(12), v, v.saturating_sub(10)])
    });
    let stack = atelier::postfx::auto_colour(&img);
    assert!(
        stack.ops.iter().any(|e| matches!(e.op, Op::Levels(_))),
        "{stack:?}"
    );
    assert!(
        stack
            .ops
            .iter()
            .any(|e| matches!(e.op, Op::WhiteBalance(_))),
        "{stack:?}"
    );
    let out = apply_to_rgb8(&img, &stack);
    for c in 0..3 {
        let min = out.pixels().map(|p| p.0[c]).min().unwrap_or(255);
        let max = out.pixels().map(|p| p.0[c]).max().unwrap_or(0);
        assert!(min <= 5 && max >= 250, "channel {c}: {min}..{max}");
    }
    // Degenerate inputs give harmless stacks.
    assert!(atelier::postfx::auto_colour(&RgbImage::new(0, 0)).is_identity());
    let flat = RgbImage::from_pixel(4, 4, Rgb([90, 90, 90]));
    assert_eq!(
        apply_to_rgb8(&flat, &atelier::postfx::auto_colour(&flat)),
        flat
    );
}

#[test]
fn histogram_counts_every_pixel() {
    for (w, h) in [(0, 0), (1, 1), (7, 3), (64, 33)] {
        let img = noise_image(w, h, 4);
        let hist = histogram(&img);
        let n = u64::from(w * h);
        for channel in [&hist.r, &hist.g, &hist.b, &hist.luma] {
            assert_eq!(channel.iter().map(|&c| u64::from(c)).sum::<u64>(), n);
        }
        assert_eq!(hist.pixel_count(), n);
    }
    let hist = histogram(&RgbImage::from_pixel(2, 2, Rgb([255, 255, 255])));
    assert_eq!((hist.r[255], hist.luma[255]), (4, 4));
}

#[test]
fn every_shipped_preset_parses_and_applies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/presets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("assets/presets")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let mut shipped: Vec<String> = atelier::postfx::presets::SHIPPED
        .iter()
        .map(|(name, _)| format!("{name}.json"))
        .collect();
    shipped.sort();
    assert_eq!(
        files, shipped,
        "every preset file is built in, and only those"
    );
    assert!(files.len() >= 3);
    let img = noise_image(40, 30, 6);
    for (name, stack) in atelier::postfx::presets::shipped() {
        let stack = stack.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(stack.unknown_ops().is_empty(), "{name}");
        assert!(!stack.is_identity(), "{name} does nothing");
        assert!(stack.ops.iter().all(|e| e.enabled), "{name}");
        // The file is what the stack writes back (no field is misspelt and ignored).
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("read");
        let as_value = |t: &str| serde_json::from_str::<serde_json::Value>(t).expect("json");
        assert_eq!(
            as_value(&stack.to_json().expect("json")),
            as_value(&text),
            "{name}"
        );
        let out = apply_to_rgb8(&img, &stack);
        assert_eq!(out.dimensions(), img.dimensions());
        assert_ne!(out, img, "{name} changed nothing");
    }
}
