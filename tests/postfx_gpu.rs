//! The GPU path (`atelier::postfx::gpu`, shaders in `shaders/`) against the CPU reference
//! (`atelier::postfx::cpu`) on a real adapter: every op alone and the whole stack, on
//! gradients, noise, a photo-like image, every 8-bit value, extreme parameters, tiny and odd
//! sizes and images over a forced tile size; within 1/255 per channel after 8-bit
//! conversion. Identity parameters are exact no-ops. Also the preview (texture) path, the
//! linear path, per-op vs fused passes, tiled vs untiled, and errors.
//!
//! Needs a GPU adapter: CI installs Mesa's lavapipe (software Vulkan); run headless with
//! `env -u DISPLAY NODEVICE_SELECT=1`. Without an adapter these tests FAIL, unless
//! `ATELIER_SKIP_GPU_TESTS=1` is set at build time (then they are listed as ignored; CI never
//! sets it).

mod postfx_common;
use postfx_common::{active_ops, every_value_image, noise_image};
use std::sync::OnceLock;

use atelier::postfx::cpu::{apply_op, apply_stack, linear_to_rgb8, rgb8_to_linear};
use atelier::postfx::gpu::{Fusion, GpuError, GpuRunner, PreviewTarget};
use atelier::postfx::{
    apply_to_rgb8, Contrast, Curves, Denoise, Exposure, HighlightsShadows, HueShift, Levels,
    LevelsChannel, Op, Saturation, Stack, UnsharpMask, Vignette, WhiteBalance,
};
use image::{Rgb, RgbImage, Rgba32FImage};

// ---------------------------------------------------------------------------------------------
// The device

/// The shared headless runner (fused passes, untiled). These tests fail without an adapter;
/// `ATELIER_SKIP_GPU_TESTS=1` at build time marks them ignored instead (see `build.rs`).
fn gpu() -> &'static GpuRunner {
    static RUNNER: OnceLock<GpuRunner> = OnceLock::new();
    RUNNER.get_or_init(|| match GpuRunner::headless() {
        Ok(runner) => {
            eprintln!("GPU tests on {}", runner.adapter_description());
            runner
        }
        Err(e) => panic!(
            "the GPU tests need a GPU adapter and found none: {e}\n(CI installs Mesa's \
             lavapipe, package mesa-vulkan-drivers; run with `env -u DISPLAY \
             NODEVICE_SELECT=1`; build with ATELIER_SKIP_GPU_TESTS=1 to mark these tests \
             ignored)"
        ),
    })
}

/// Another runner on the same device.
fn sibling(base: &GpuRunner) -> GpuRunner {
    GpuRunner::new(base.device().clone(), base.queue().clone()).expect("a second runner")
}

/// A runner that tiles anything over 64 x 64 (64 x 64 buffers, halo included).
fn tiled(base: &GpuRunner) -> &'static GpuRunner {
    static RUNNER: OnceLock<GpuRunner> = OnceLock::new();
    RUNNER.get_or_init(|| sibling(base).with_tile_side(64))
}

/// A runner with one pass per op.
fn per_op(base: &GpuRunner) -> &'static GpuRunner {
    static RUNNER: OnceLock<GpuRunner> = OnceLock::new();
    RUNNER.get_or_init(|| sibling(base).with_fusion(Fusion::PerOp))
}

// ---------------------------------------------------------------------------------------------
// Images and ops

/// Smooth ramps in three directions.
fn gradient_image(w: u32, h: u32) -> RgbImage {
    let fx = |x: u32| (x * 255 / w.max(2).saturating_sub(1).max(1)).min(255) as u8;
    let fy = |y: u32| (y * 255 / h.max(2).saturating_sub(1).max(1)).min(255) as u8;
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            fx(x),
            fy(y),
            ((u32::from(fx(x)) + u32::from(fy(y))) / 2) as u8,
        ])
    })
}

/// Something like a photo: a sky gradient, a sun, a dark hill, soft edges, sensor noise.
fn photo_image(w: u32, h: u32) -> RgbImage {
    let noise = noise_image(w, h, 77);
    RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let mut c = [0.35 + 0.4 * (1.0 - v), 0.5 + 0.3 * (1.0 - v), 0.9 - 0.2 * v];
        let sun = ((u - 0.7).powi(2) + (v - 0.3).powi(2)).sqrt();
        let s = (1.0 - ((sun - 0.12) / 0.03).clamp(0.0, 1.0)) * 0.9;
        c = [
            c[0] + s * (1.0 - c[0]),
            c[1] + s * (0.9 - c[1]),
            c[2] + s * (0.5 - c[2]),
        ];
        let hill = 0.65 + 0.1 * (u * 9.0).sin();
        let t = ((v - hill) / 0.02).clamp(0.0, 1.0);
        c = [
            c[0] * (1.0 - t) + 0.12 * t,
            c[1] * (1.0 - t) + 0.25 * t,
            c[2] * (1.0 - t) + 0.08 * t,
        ];
        let n = noise.get_pixel(x, y).0;
        Rgb(std::array::from_fn(|i| {
            let jitter = (f32::from(n[i]) - 127.5) / 255.0 * 0.06;
            ((c[i] + jitter).clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    })
}

/// Named test images of assorted sizes.
fn images() -> Vec<(String, RgbImage)> {
    vec![
        ("gradient 64x48".into(), gradient_image(64, 48)),
        ("noise 40x33".into(), noise_image(40, 33, 5)),
        ("photo 96x64".into(), photo_image(96, 64)),
        ("every value 256x2".into(), every_value_image()),
        ("1x1".into(), noise_image(1, 1, 9)),
        ("17x5".into(), noise_image(17, 5, 4)),
        ("3x41".into(), gradient_image(3, 41)),
    ]
}

/// Parameters at (and beyond) the ends of their ranges.
fn extreme_ops() -> Vec<Op> {
    vec![
        Op::Exposure(Exposure { ev: 10.0 }),
        Op::Exposure(Exposure { ev: -10.0 }),
        Op::Exposure(Exposure { ev: 1e9 }),
        Op::Contrast(Contrast { amount: 1.0 }),
        Op::Contrast(Contrast { amount: -1.0 }),
        Op::HighlightsShadows(HighlightsShadows {
            highlights: 1.0,
            shadows: -1.0,
        }),
        Op::HighlightsShadows(HighlightsShadows {
            highlights: -1.0,
            shadows: 1.0,
        }),
        Op::WhiteBalance(WhiteBalance {
            temperature: 1.0,
            tint: -1.0,
        }),
        Op::WhiteBalance(WhiteBalance {
            temperature: -1.0,
            tint: 1.0,
        }),
        Op::Saturation(Saturation {
            saturation: 0.0,
            vibrance: 0.0,
        }),
        Op::Saturation(Saturation {
            saturation: 2.0,
            vibrance: 1.0,
        }),
        Op::Saturation(Saturation {
            saturation: 2.0,
            vibrance: -1.0,
        }),
        Op::HueShift(HueShift { degrees: 180.0 }),
        Op::HueShift(HueShift { degrees: -90.5 }),
        Op::Levels(Levels {
            black: 0.4,
            white: 0.45,
            gamma: 10.0,
            per_channel: None,
        }),
        Op::Levels(Levels {
            black: 0.0,
            white: 1.0,
            gamma: 0.1,
            per_channel: Some([
                LevelsChannel {
                    black: 0.9,
                    white: 0.2,
                    gamma: 3.0,
                },
                LevelsChannel {
                    black: 0.0,
                    white: 0.01,
                    gamma: 1.0,
                },
                LevelsChannel::IDENTITY,
            ]),
        }),
        Op::Curves(Curves {
            rgb: vec![(0.0, 1.0), (1.0, 0.0)],
            ..Curves::identity()
        }),
        Op::Curves(Curves {
            rgb: vec![(0.45, 0.0), (0.55, 1.0)],
            r: Some(vec![(0.0, 0.5), (0.1, 0.0), (0.9, 1.0)]),
            g: Some(vec![(0.5, 0.5)]),
            b: None,
        }),
        Op::UnsharpMask(UnsharpMask {
            radius_px: 32.0,
            amount: 5.0,
            threshold: 0.0,
        }),
        Op::UnsharpMask(UnsharpMask {
            radius_px: 0.3,
            amount: 5.0,
            threshold: 0.2,
        }),
        Op::Denoise(Denoise {
            radius_px: 16,
            strength: 1.0,
        }),
        Op::Denoise(Denoise {
            radius_px: 1,
            strength: 0.02,
        }),
        Op::Vignette(Vignette {
            amount: -1.0,
            midpoint: 0.0,
            feather: 1.0,
        }),
        Op::Vignette(Vignette {
            amount: 1.0,
            midpoint: 0.9,
            feather: 0.1,
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// The largest per-channel difference between two 8-bit images of the same size, and where.
fn max_diff(a: &RgbImage, b: &RgbImage) -> (u8, (u32, u32)) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut worst = (0, (0, 0));
    for (x, y, pa) in a.enumerate_pixels() {
        let pb = b.get_pixel(x, y);
        for c in 0..3 {
            let d = pa.0[c].abs_diff(pb.0[c]);
            if d > worst.0 {
                worst = (d, (x, y));
            }
        }
    }
    worst
}

/// Asserts the GPU output is within 1/255 of the CPU's; returns the largest difference.
fn assert_close(gpu: &RgbImage, cpu: &RgbImage, what: &str) -> u8 {
    let (d, (x, y)) = max_diff(gpu, cpu);
    assert!(
        d <= 1,
        "{what}: GPU and CPU differ by {d}/255 at ({x}, {y}): GPU {:?}, CPU {:?}",
        gpu.get_pixel(x, y).0,
        cpu.get_pixel(x, y).0
    );
    d
}

/// The CPU reference of `ops` applied as given (identities too), like `apply_ops_rgb8`.
fn cpu_ops(img: &RgbImage, ops: &[Op]) -> RgbImage {
    let mut linear = rgb8_to_linear(img);
    for op in ops {
        apply_op(&mut linear, &op.sanitized());
    }
    linear_to_rgb8(&linear)
}

fn report(test: &str, worst: u8, cases: usize) {
    println!("{test}: {cases} comparisons, largest difference {worst}/255");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn every_op_matches_the_cpu_on_every_image() {
    let gpu = gpu();
    let (mut worst, mut cases) = (0, 0);
    for (name, img) in images() {
        for op in active_ops() {
            let stack = Stack::from_ops([op.clone()]);
            let out = gpu.apply_rgb8(&img, &stack).expect("GPU run");
            let what = format!("{} on {name}", op.name());
            worst = worst.max(assert_close(&out, &apply_to_rgb8(&img, &stack), &what));
            cases += 1;
        }
    }
    report("every op", worst, cases);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn extreme_parameters_match_the_cpu() {
    let gpu = gpu();
    let (mut worst, mut cases) = (0, 0);
    for (name, img) in [
        ("photo", photo_image(80, 56)),
        ("noise", noise_image(33, 31, 8)),
        ("every value", every_value_image()),
    ] {
        for op in extreme_ops() {
            let stack = Stack::from_ops([op.clone()]);
            let out = gpu.apply_rgb8(&img, &stack).expect("GPU run");
            let what = format!("{op:?} on {name}");
            worst = worst.max(assert_close(&out, &apply_to_rgb8(&img, &stack), &what));
            cases += 1;
        }
    }
    report("extreme parameters", worst, cases);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn the_full_stack_matches_the_cpu_on_every_image() {
    let gpu = gpu();
    let stack = Stack::from_ops(active_ops());
    let (mut worst, mut cases) = (0, 0);
    for (name, img) in images() {
        let out = gpu.apply_rgb8(&img, &stack).expect("GPU run");
        worst = worst.max(assert_close(
            &out,
            &apply_to_rgb8(&img, &stack),
            &format!("full stack on {name}"),
        ));
        cases += 1;
    }
    // The extreme ops together, too.
    let img = photo_image(72, 40);
    let extreme = Stack::from_ops(extreme_ops());
    let out = gpu.apply_rgb8(&img, &extreme).expect("GPU run");
    worst = worst.max(assert_close(
        &out,
        &apply_to_rgb8(&img, &extreme),
        "extreme stack",
    ));
    report("full stack", worst, cases + 1);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn identity_parameters_are_exact_noops_on_the_gpu() {
    let gpu = gpu();
    let img = every_value_image();
    let mut identities = Op::all_identity();
    identities.extend([
        Op::Levels(Levels {
            per_channel: Some([LevelsChannel::IDENTITY; 3]),
            ..Levels::IDENTITY
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
    ]);
    for op in &identities {
        // The shaders' maths itself, not just the runner skipping identity ops.
        let out = gpu
            .apply_ops_rgb8(&img, std::slice::from_ref(op))
            .expect("GPU run");
        assert_eq!(out, img, "{op:?}");
        let per_op = per_op(gpu)
            .apply_ops_rgb8(&img, std::slice::from_ref(op))
            .expect("GPU run");
        assert_eq!(per_op, img, "{op:?} (one pass per op)");
    }
    let all = gpu.apply_ops_rgb8(&img, &identities).expect("GPU run");
    assert_eq!(all, img, "every identity in one stack");
    let stack = Stack::from_ops(identities);
    assert_eq!(gpu.apply_rgb8(&img, &stack).expect("GPU run"), img);
    // No ops at all: decode and encode only.
    assert_eq!(gpu.apply_ops_rgb8(&img, &[]).expect("GPU run"), img);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn one_pass_per_op_matches_the_fused_pass() {
    let gpu = gpu();
    let img = photo_image(50, 37);
    let ops = active_ops();
    let fused = gpu.apply_ops_rgb8(&img, &ops).expect("fused");
    let separate = per_op(gpu).apply_ops_rgb8(&img, &ops).expect("per op");
    let (d, _) = max_diff(&fused, &separate);
    assert!(d <= 1, "fused vs per-op: {d}/255");
    assert_close(&separate, &cpu_ops(&img, &ops), "per-op passes");
    for op in &ops {
        let one = per_op(gpu)
            .apply_ops_rgb8(&img, std::slice::from_ref(op))
            .expect("per op");
        assert_close(&one, &cpu_ops(&img, std::slice::from_ref(op)), op.name());
    }
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn tiled_output_equals_untiled_and_the_cpu() {
    let gpu = gpu();
    let tiled = tiled(gpu);
    let stack = Stack::from_ops(active_ops());
    let mut worst = 0;
    for (w, h) in [(150, 97), (65, 300), (200, 40)] {
        let img = photo_image(w, h);
        assert!(
            tiled.tile_count(w, h, &stack).expect("tiles") > 1,
            "{w}x{h} should need several 64 px tiles"
        );
        let out = tiled.apply_rgb8(&img, &stack).expect("tiled run");
        let whole = gpu.apply_rgb8(&img, &stack).expect("untiled run");
        assert_eq!(gpu.tile_count(w, h, &stack).expect("tiles"), 1);
        assert_eq!(out, whole, "{w}x{h}: tiled and untiled GPU output differ");
        worst = worst.max(assert_close(
            &out,
            &apply_to_rgb8(&img, &stack),
            &format!("tiled {w}x{h}"),
        ));
        // Each neighbourhood op alone, with its largest reach that fits a 64 px tile.
        for op in [
            Op::UnsharpMask(UnsharpMask {
                radius_px: 5.0,
                amount: 3.0,
                threshold: 0.0,
            }),
            Op::Denoise(Denoise {
                radius_px: 5,
                strength: 1.0,
            }),
            Op::Vignette(Vignette {
                amount: -0.8,
                midpoint: 0.4,
                feather: 0.3,
            }),
        ] {
            let one = Stack::from_ops([op.clone()]);
            let out = tiled.apply_rgb8(&img, &one).expect("tiled run");
            let whole = gpu.apply_rgb8(&img, &one).expect("untiled run");
            assert_eq!(out, whole, "{} {w}x{h}: tiled != untiled", op.name());
            worst = worst.max(assert_close(&out, &apply_to_rgb8(&img, &one), op.name()));
        }
    }
    // A reach too big for 64 px: the runner grows the tile instead of failing.
    let img = photo_image(300, 90);
    let wide = Stack::from_ops([Op::UnsharpMask(UnsharpMask {
        radius_px: 20.0,
        amount: 2.0,
        threshold: 0.0,
    })]);
    let out = tiled.apply_rgb8(&img, &wide).expect("tiled run");
    assert!(tiled.tile_count(300, 90, &wide).expect("tiles") > 1);
    worst = worst.max(assert_close(
        &out,
        &apply_to_rgb8(&img, &wide),
        "wide blur tiled",
    ));
    report("tiled", worst, 13);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn linear_images_match_the_cpu_including_out_of_range_values() {
    let gpu = gpu();
    let mut linear = rgb8_to_linear(&photo_image(61, 43));
    // HDR and negative values, and a non-trivial alpha that must pass untouched.
    for (i, px) in linear.pixels_mut().enumerate() {
        if i % 7 == 0 {
            px.0[0] *= 3.0;
        }
        if i % 11 == 0 {
            px.0[2] = -0.05;
        }
        px.0[3] = (i % 5) as f32 / 4.0;
    }
    let stack = Stack::from_ops(active_ops());
    let gpu_out = gpu.apply_linear(&linear, &stack).expect("GPU run");
    let cpu_out = apply_stack(&linear, &stack);
    let worst = assert_close(
        &linear_to_rgb8(&gpu_out),
        &linear_to_rgb8(&cpu_out),
        "linear full stack",
    );
    for (g, c) in gpu_out.pixels().zip(cpu_out.pixels()) {
        assert_eq!(g.0[3], c.0[3], "alpha is carried through untouched");
    }
    // Tiled linear runs are bit-identical to untiled ones.
    let tiled_out = tiled(gpu).apply_linear(&linear, &stack).expect("tiled");
    assert!(
        tiled_out.as_raw() == gpu_out.as_raw(),
        "tiled linear output differs from untiled"
    );
    // An empty linear image is fine.
    let empty = gpu
        .apply_linear(&Rgba32FImage::new(0, 3), &stack)
        .expect("empty");
    assert_eq!(empty.dimensions(), (0, 3));
    report("linear", worst, 1);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn the_preview_path_writes_a_texture_that_matches_the_cpu() {
    let gpu = gpu();
    let stack = Stack::from_ops(active_ops());
    let mut worst = 0;
    for (runner, img) in [
        (gpu, photo_image(90, 70)),
        (tiled(gpu), photo_image(130, 71)),
        (gpu, noise_image(1, 1, 3)),
        (gpu, noise_image(17, 5, 2)),
    ] {
        let (w, h) = img.dimensions();
        let source = runner.upload_rgb8(&img).expect("upload");
        let target = PreviewTarget::new(runner, w, h).expect("target");
        let submitted = runner.preview(&source, &target, &stack).expect("preview");
        runner.wait(submitted).expect("wait");
        let shown = runner.read_rgb8(target.texture()).expect("read back");
        worst = worst.max(assert_close(
            &shown,
            &apply_to_rgb8(&img, &stack),
            &format!("preview {w}x{h}"),
        ));
        // An identity stack shows the image exactly.
        runner
            .preview(&source, &target, &Stack::default())
            .expect("preview");
        assert_eq!(runner.read_rgb8(target.texture()).expect("read back"), img);
    }
    // Mismatched sizes are an error, not a panic.
    let source = gpu.upload_rgb8(&noise_image(8, 8, 1)).expect("upload");
    let target = PreviewTarget::new(gpu, 9, 8).expect("target");
    assert!(matches!(
        gpu.preview(&source, &target, &stack),
        Err(GpuError::BadTexture(_))
    ));
    assert!(matches!(
        PreviewTarget::new(gpu, 0, 8),
        Err(GpuError::BadTexture(_))
    ));
    report("preview", worst, 4);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn wide_images_and_large_grids_do_not_panic() {
    let gpu = gpu();
    let stack = Stack::from_ops(active_ops());
    // 8192 px wide: one strip per the device's limits, same as the CPU.
    let img = photo_image(8192, 6);
    let out = gpu.apply_rgb8(&img, &stack).expect("GPU run");
    let worst = assert_close(&out, &apply_to_rgb8(&img, &stack), "8192x6");
    // An 8192 x 8192 image is planned in tiles within the device's buffer limits.
    assert!(gpu.tile_count(8192, 8192, &stack).expect("tiles") >= 4);
    report("wide", worst, 1);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn an_8192_square_image_runs_in_tiles_and_matches_the_cpu_on_crops() {
    let gpu = gpu();
    let side = 8192;
    let stack = Stack::from_ops([
        Op::Exposure(Exposure { ev: 0.5 }),
        Op::UnsharpMask(UnsharpMask {
            radius_px: 2.0,
            amount: 1.0,
            threshold: 0.0,
        }),
        Op::Contrast(Contrast { amount: 0.2 }),
    ]);
    let tiles = gpu.tile_count(side, side, &stack).expect("tiles");
    assert!(tiles > 1, "8192 x 8192 should not fit one tile");
    let noise = noise_image(256, 256, 12);
    let img = RgbImage::from_fn(side, side, |x, y| {
        let n = noise.get_pixel(x % 256, y % 256).0;
        Rgb([
            (x / 32) as u8 ^ n[0] >> 3,
            (y / 32) as u8 ^ n[1] >> 3,
            ((x + y) / 64) as u8 ^ n[2] >> 3,
        ])
    });
    let out = gpu.apply_rgb8(&img, &stack).expect("GPU run");
    assert_eq!(out.dimensions(), (side, side));
    // Crops around tile seams and corners: the CPU on a crop with a margin wider than the
    // blur's reach equals the full image inside the margin.
    let (crop, margin) = (96, 16);
    let mut worst = 0;
    for (x0, y0) in [
        (0, 0),
        (side - crop, side - crop),
        (2000, 2030),
        (4050, 6100),
    ] {
        let part = image::imageops::crop_imm(&img, x0, y0, crop, crop).to_image();
        let cpu = apply_to_rgb8(&part, &stack);
        let inner = |x: u32, y: u32| {
            (x0 == 0 || x >= margin)
                && (y0 == 0 || y >= margin)
                && (x0 + crop == side || x < crop - margin)
                && (y0 + crop == side || y < crop - margin)
        };
        for (x, y, p) in cpu.enumerate_pixels() {
            if !inner(x, y) {
                continue;
            }
            let g = out.get_pixel(x0 + x, y0 + y);
            for c in 0..3 {
                let d = p.0[c].abs_diff(g.0[c]);
                assert!(
                    d <= 1,
                    "({}, {}): GPU {:?} CPU {:?}",
                    x0 + x,
                    y0 + y,
                    g.0,
                    p.0
                );
                worst = worst.max(d);
            }
        }
    }
    report(&format!("8192x8192 in {tiles} tiles"), worst, 4);
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn a_broken_shader_is_an_error_naming_it() {
    let gpu = gpu();
    let err = gpu
        .validate_wgsl("broken.wgsl", "fn oops( -> f32 { return 1.0; }")
        .expect_err("a syntax error");
    assert!(
        matches!(&err, GpuError::Shader { module, .. } if module == "broken.wgsl"),
        "{err}"
    );
    assert!(err.to_string().contains("broken.wgsl"), "{err}");
    gpu.validate_wgsl("fine.wgsl", "@compute @workgroup_size(1) fn main() { }")
        .expect("valid WGSL");
    // The runner still works afterwards.
    let img = noise_image(5, 4, 1);
    let stack = Stack::from_ops([Op::Exposure(Exposure { ev: 1.0 })]);
    assert_close(
        &gpu.apply_rgb8(&img, &stack).expect("GPU run"),
        &apply_to_rgb8(&img, &stack),
        "after a shader error",
    );
}

#[test]
#[cfg_attr(
    skip_gpu_tests,
    ignore = "ATELIER_SKIP_GPU_TESTS=1: no GPU adapter allowed"
)]
fn every_shipped_preset_matches_the_cpu() {
    let gpu = gpu();
    let img = photo_image(70, 52);
    let mut worst = 0;
    for (name, stack) in atelier::postfx::presets::shipped() {
        let stack = stack.unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = gpu.apply_rgb8(&img, &stack).expect("GPU run");
        worst = worst.max(assert_close(&out, &apply_to_rgb8(&img, &stack), name));
    }
    report("presets", worst, atelier::postfx::presets::SHIPPED.len());
}
