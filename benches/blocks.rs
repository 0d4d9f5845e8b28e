//! The convolution kernel at the sizes that dominate real pictures: Winograd F(4x4, 3x3) (the
//! model's path for 3x3 stride-1 layers) and F(2x2, 3x3), tiled patches and one matrix product (the path
//! before it, and still strided layers'), and the whole picture's patches at once (the kernel
//! before tiling), in one process so the ratios are fair.
//!
//! `CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo bench --profile dev --bench blocks` (dev: the test
//! build's optimised dependencies; opt-level 3 for the crate too, whose kernels are here).
//! Shapes (channels in = out, 3x3, stride 1, batch 1):
//! - `sd-vae-128x512`: the SD VAE decoder's last level at 512x512 output;
//! - `sd-vae-256x256`: its level before;
//! - `taesd-64x512`: the tiny decoder's last level at 512x512;
//! - `unet-320x64`: the SD 1.5 UNet's first level at 512x512 (64x64 latents);
//! - `unet-640x32`, `unet-1280x16`: its second and third levels;
//! - `mini-64x16`: Atelier Mini's deepest level, where hand-offs between threads dominate.
//!
//! Attention (`attention/...`): the tiled inference kernel against the composed one (whole
//! score matrices, as training runs it: the queries are a tracked variable there):
//! - `sd-unet-4096x320x8`: the SD 1.5 UNet's first level at 512x512, 8 heads;
//! - `sd-vae-4096x512x1`: the SD VAE's mid block at 512x512, one head;
//! - `mini-256x64x4`: an Atelier Mini-sized layer.

use atelier::diffusion::blocks::{
    attention, conv2d_tiled, conv2d_winograd, WINOGRAD_F2, WINOGRAD_F4,
};
use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};

/// The kernel's default patch floats per tile (`blocks::CONV_TILE_FLOATS`).
const TILED: usize = 1 << 18;

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let shapes: [(&str, usize, usize, usize); 7] = [
        ("sd-vae-128x512", 128, 512, 10),
        ("sd-vae-256x256", 256, 256, 10),
        ("taesd-64x512", 64, 512, 10),
        ("unet-320x64", 320, 64, 20),
        ("unet-640x32", 640, 32, 10),
        ("unet-1280x16", 1280, 16, 10),
        ("mini-64x16", 64, 16, 100),
    ];
    for (name, ch, size, samples) in shapes {
        let x = Tensor::randn(0f32, 1.0, (1, ch, size, size), &dev).expect("input");
        let w = Tensor::randn(0f32, 0.05, (ch, ch, 3, 3), &dev).expect("weight");
        let b = Tensor::randn(0f32, 0.1, ch, &dev).expect("bias");
        let mut group = c.benchmark_group(format!("conv3x3/{name}"));
        group.sample_size(samples);
        for (label, tile) in [("tiled", TILED), ("whole", usize::MAX)] {
            group.bench_function(label, |bench| {
                bench.iter(|| conv2d_tiled(&x, &w, Some(&b), 1, (1, 1), tile).expect("conv"))
            });
        }
        for (label, tiles) in [("winograd-f4", &WINOGRAD_F4), ("winograd-f2", &WINOGRAD_F2)] {
            group.bench_function(label, |bench| {
                bench.iter(|| conv2d_winograd(&x, &w, Some(&b), tiles).expect("conv"))
            });
        }
        group.finish();
    }
    let attentions: [(&str, usize, usize, usize, usize); 3] = [
        ("sd-unet-4096x320x8", 4096, 320, 8, 10),
        ("sd-vae-4096x512x1", 4096, 512, 1, 10),
        ("mini-256x64x4", 256, 64, 4, 100),
    ];
    for (name, n, ch, heads, samples) in attentions {
        let q = Tensor::randn(0f32, 1.0, (1, n, ch), &dev).expect("q");
        let k = Tensor::randn(0f32, 1.0, (1, n, ch), &dev).expect("k");
        let v = Tensor::randn(0f32, 1.0, (1, n, ch), &dev).expect("v");
        let tracked = Var::from_tensor(&q).expect("var");
        let mut group = c.benchmark_group(format!("attention/{name}"));
        group.sample_size(samples);
        group.bench_function("tiled", |b| {
            b.iter(|| attention(&q, &k, &v, heads).expect("attention"))
        });
        group.bench_function("composed", |b| {
            b.iter(|| attention(tracked.as_tensor(), &k, &v, heads).expect("attention"))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
