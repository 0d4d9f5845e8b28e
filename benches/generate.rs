//! Generation speed of the shipped Atelier Mini model (issue 3's bar: 4 images of 64x64 in
//! under 1 s on the 2-core CPU, at the model card's default sampler and step count).
//!
//! `cargo bench --bench generate` (or `--profile dev` for the test build) reports, in one
//! process so the ratios are fair:
//! - `warm/4x64px`: 4 images with the model loaded, as the studio runs them one after another
//!   (prompt encoding, the denoising steps with guidance, VAE decoding);
//! - `cold/4x64px`: the same plus loading the model from disk, as one `atelier generate` does;
//! - `warm/1x64px`: a single image, for the per-image cost of batching.
//!
//! `ATELIER_BENCH_MODEL=DIR` benchmarks another model folder (e.g. a training run's `model/`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use atelier::diffusion::Generator;
use atelier::generation::GenerationRequest;
use atelier::models::{ModelInfo, ModelSource};
use criterion::{criterion_group, criterion_main, Criterion};

fn model_dir() -> PathBuf {
    std::env::var_os("ATELIER_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(atelier::models::default_model_dir)
}

fn request(batch: u32) -> GenerationRequest {
    let dir = model_dir();
    let info = ModelInfo::from_dir(&dir, ModelSource::Embedded)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let rec = info.recommended();
    GenerationRequest {
        model_dir: dir,
        prompt: "cat face, animal, pet, smileys & emotion".into(),
        seed: 7,
        steps: rec.steps,
        guidance: rec.guidance,
        sampler: rec.sampler,
        width: info.native_size,
        height: info.native_size,
        batch,
        ..Default::default()
    }
}

fn generate(generator: &mut Generator, req: &GenerationRequest) -> usize {
    generator
        .collect(req, &AtomicBool::new(false))
        .expect("generating")
        .0
        .len()
}

fn bench(c: &mut Criterion) {
    let four = request(4);
    let one = request(1);
    eprintln!(
        "model {}: {} steps, guidance {}, {:?}, {}x{}",
        four.model_dir.display(),
        four.steps,
        four.guidance,
        four.sampler,
        four.width,
        four.height
    );
    let mut group = c.benchmark_group("generate");
    group.sample_size(20);
    let mut generator = Generator::default();
    assert_eq!(generate(&mut generator, &four), 4);
    group.bench_function("warm/4x64px", |b| {
        b.iter(|| assert_eq!(generate(&mut generator, &four), 4))
    });
    group.bench_function("warm/1x64px", |b| {
        b.iter(|| assert_eq!(generate(&mut generator, &one), 1))
    });
    group.bench_function("cold/4x64px", |b| {
        b.iter(|| {
            let mut fresh = Generator::default();
            assert_eq!(generate(&mut fresh, &four), 4)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
