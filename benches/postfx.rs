//! Adjustment stack speed: GPU time per frame (preview path: texture in, texture out, submit
//! and wait, no readback; export path: upload, run, read back), the CPU reference's time,
//! their ratio, and the bytes each GPU frame moves per pixel against a measured memory
//! bandwidth (a large memcpy), for a 6-op stack at 1024 x 1024 and 4096 x 4096.
//!
//! `env -u DISPLAY NODEVICE_SELECT=1 cargo bench --bench postfx` (a few minutes on lavapipe;
//! sample counts are kept small). A summary with medians is printed at the end.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atelier::postfx::gpu::plan::{Endpoint, Plan};
use atelier::postfx::gpu::{Fusion, GpuRunner, PreviewTarget};
use atelier::postfx::{
    apply_to_rgb8, Contrast, Curves, Exposure, Op, Saturation, Stack, UnsharpMask, WhiteBalance,
};
use criterion::{criterion_group, criterion_main, Criterion};
use image::{Rgb, RgbImage};

/// The benchmarked stack: five per-pixel ops (fused into one pass) and an unsharp mask.
fn six_op_stack() -> Stack {
    Stack::from_ops([
        Op::Exposure(Exposure { ev: 0.3 }),
        Op::WhiteBalance(WhiteBalance {
            temperature: 0.2,
            tint: 0.05,
        }),
        Op::Contrast(Contrast { amount: 0.15 }),
        Op::Saturation(Saturation {
            saturation: 1.1,
            vibrance: 0.2,
        }),
        Op::Curves(Curves {
            rgb: vec![(0.0, 0.02), (0.3, 0.27), (0.7, 0.75), (1.0, 0.98)],
            ..Curves::identity()
        }),
        Op::UnsharpMask(UnsharpMask {
            radius_px: 1.5,
            amount: 0.6,
            threshold: 0.005,
        }),
    ])
}

/// A photo-like test image: smooth gradients with a little noise.
fn test_image(side: u32) -> RgbImage {
    let mut state = 0x9e37_79b9_u32;
    RgbImage::from_fn(side, side, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state >> 29) as u8;
        Rgb([
            (x * 200 / side) as u8 + n,
            (y * 200 / side) as u8 + n,
            ((x + y) * 100 / side) as u8 + 40 + n,
        ])
    })
}

/// Medians recorded by the benchmarks, by name.
static MEDIANS: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());

/// Times `f` per iteration (each criterion sample is one `iters`-long run) and records the
/// median per-iteration time under `name`.
fn timed(c: &mut Criterion, name: &str, samples: usize, mut f: impl FnMut()) {
    let mut times: Vec<Duration> = Vec::new();
    let mut group = c.benchmark_group("postfx");
    group.sample_size(samples.max(10));
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            let total = start.elapsed();
            times.push(total / iters.max(1) as u32);
            total
        })
    });
    group.finish();
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    if let Ok(mut medians) = MEDIANS.lock() {
        medians.push((name.to_owned(), median));
    }
}

fn median(name: &str) -> Option<Duration> {
    MEDIANS
        .lock()
        .ok()?
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| *d)
}

fn postfx(c: &mut Criterion) {
    let gpu = GpuRunner::headless().unwrap_or_else(|e| panic!("the benchmark needs a GPU: {e}"));
    let adapter = gpu.adapter_description().to_owned();
    let per_op = GpuRunner::new(gpu.device().clone(), gpu.queue().clone())
        .expect("runner")
        .with_fusion(Fusion::PerOp);
    let stack = six_op_stack();

    // Memory bandwidth: a 256 MiB copy (read + write counted).
    let bytes = 256 << 20;
    let src = vec![1_u8; bytes];
    let mut dst = vec![0_u8; bytes];
    timed(c, "memcpy 256 MiB", 10, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    });
    drop((src, dst));

    for side in [1024_u32, 4096] {
        let img = test_image(side);
        let source = gpu.upload_rgb8(&img).expect("upload");
        let target = PreviewTarget::new(&gpu, side, side).expect("target");
        timed(c, &format!("gpu preview {side}"), 10, || {
            let submitted = gpu.preview(&source, &target, &stack).expect("preview");
            gpu.wait(submitted).expect("wait");
        });
        if side == 1024 {
            timed(c, &format!("gpu preview per-op {side}"), 10, || {
                let submitted = per_op.preview(&source, &target, &stack).expect("preview");
                per_op.wait(submitted).expect("wait");
            });
        }
        timed(c, &format!("gpu export {side}"), 10, || {
            black_box(gpu.apply_rgb8(&img, &stack).expect("export"));
        });
        timed(c, &format!("cpu {side}"), 10, || {
            black_box(apply_to_rgb8(&img, &stack));
        });
    }

    // The summary.
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let memcpy = median("memcpy 256 MiB").unwrap_or_default();
    let bandwidth = 2.0 * bytes as f64 / memcpy.as_secs_f64().max(1e-9) / 1e9;
    // What one preview frame reads and writes per pixel, loading and storing included.
    let traffic = |fusion| -> u32 {
        Plan::new(&stack.effective_ops(), fusion)
            .with_io(Endpoint::Texture)
            .iter()
            .map(|d| d.traffic_bytes_per_pixel())
            .sum()
    };
    let (per_pixel, per_op_pixel) = (traffic(Fusion::Fused), traffic(Fusion::PerOp));
    println!();
    println!("postfx summary on {adapter} (medians; 6-op stack: 5 fused point ops + unsharp mask)");
    println!("  memcpy bandwidth: {bandwidth:.1} GB/s (read + write)");
    println!(
        "  GPU traffic: {per_pixel} bytes/pixel per preview frame fused ({per_op_pixel} with one \
         pass per op)"
    );
    for side in [1024_u32, 4096] {
        let pixels = f64::from(side) * f64::from(side);
        let (Some(preview), Some(export), Some(cpu)) = (
            median(&format!("gpu preview {side}")),
            median(&format!("gpu export {side}")),
            median(&format!("cpu {side}")),
        ) else {
            continue;
        };
        let achieved = f64::from(per_pixel) * pixels / preview.as_secs_f64() / 1e9;
        println!(
            "  {side}x{side}: GPU preview {:.1} ms ({:.1} fps, {achieved:.1} GB/s = {:.0}% of \
             memcpy), GPU export {:.1} ms, CPU {:.1} ms; CPU/GPU preview {:.2}x, CPU/GPU \
             export {:.2}x",
            ms(preview),
            1e3 / ms(preview),
            100.0 * achieved / bandwidth,
            ms(export),
            ms(cpu),
            cpu.as_secs_f64() / preview.as_secs_f64(),
            cpu.as_secs_f64() / export.as_secs_f64(),
        );
    }
    if let Some(per_op) = median("gpu preview per-op 1024") {
        println!(
            "  1024x1024 one pass per op: {:.1} ms ({:.1} fps)",
            ms(per_op),
            1e3 / ms(per_op)
        );
    }
}

criterion_group!(benches, postfx);
criterion_main!(benches);
