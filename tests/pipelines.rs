//! The real loader, every sampler and every pipeline mode, driven through tiny models with the
//! real SD 1.5 / SD 2 (v-prediction) / SDXL / inpainting architectures.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use atelier::diffusion::tiny::TinyKind;
use atelier::diffusion::{DiffusionError, Generator};
use atelier::engine::{Engine, EngineEvent};
use atelier::generation::SamplerKind;
use atelier::models::{Family, ModelError, ModelInfo, ModelSource};
use common::*;

#[test]
fn families_are_read_from_the_folders_own_configs() {
    let cases = [
        (TinyKind::Sd15, Family::Sd1, false, false),
        (TinyKind::Sd2V, Family::Sd2, true, false),
        (TinyKind::Sdxl, Family::Sdxl, false, false),
        (TinyKind::Sd15Inpaint, Family::Sd1, false, true),
    ];
    for (kind, family, v_pred, inpainting) in cases {
        let info = ModelInfo::from_dir(&tiny_model(kind), ModelSource::Given).unwrap();
        assert_eq!(info.family, family, "{kind:?}");
        assert_eq!(info.v_prediction, v_pred, "{kind:?}");
        assert_eq!(info.inpainting, inpainting, "{kind:?}");
        assert_eq!(info.native_size, 64);
    }
}

#[test]
fn every_family_generates_the_requested_size() {
    for kind in [TinyKind::Sd15, TinyKind::Sd2V, TinyKind::Sdxl] {
        let mut req = request(kind);
        req.width = 64;
        req.height = 48;
        let (images, steps) = run(&req).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].image.dimensions(), (64, 48), "{kind:?}");
        assert_eq!(steps, 4);
        assert!(spread(&images[0].image) > 1.0, "{kind:?} gave a flat image");
    }
}

#[test]
fn every_sampler_runs_and_same_seed_gives_identical_pixels() {
    for kind in [TinyKind::Sd15, TinyKind::Sd2V] {
        let mut outputs = Vec::new();
        for sampler in SamplerKind::ALL {
            let mut req = request(kind);
            req.sampler = sampler;
            req.steps = 5;
            let a = run(&req).unwrap().0.remove(0);
            let b = run(&req).unwrap().0.remove(0);
            assert_eq!(
                a.image.as_raw(),
                b.image.as_raw(),
                "{kind:?} {sampler:?} not deterministic"
            );
            req.seed += 1;
            let c = run(&req).unwrap().0.remove(0);
            assert!(
                mean_abs_diff(&a.image, &c.image) > 0.5,
                "{kind:?} {sampler:?}: another seed gave the same picture"
            );
            outputs.push(a);
        }
        // The samplers really are different algorithms.
        for i in 0..outputs.len() {
            for j in i + 1..outputs.len() {
                assert_ne!(outputs[i].image.as_raw(), outputs[j].image.as_raw());
            }
        }
    }
}

#[test]
fn batch_images_use_consecutive_seeds_and_match_single_runs() {
    // Five images: one pass of four and one of one, with an ancestral sampler too, whose
    // per-step noise must also follow each image's own seed.
    for sampler in [SamplerKind::Ddim, SamplerKind::EulerAncestral] {
        let mut req = request(TinyKind::Sd15);
        req.sampler = sampler;
        req.batch = 5;
        let (images, _) = run(&req).unwrap();
        assert_eq!(images.len(), 5);
        for (i, image) in images.iter().enumerate() {
            assert_eq!(image.request.seed, 42 + i as u64);
            let mut single = request(TinyKind::Sd15);
            single.sampler = sampler;
            single.seed = 42 + i as u64;
            let (alone, _) = run(&single).unwrap();
            // Batched matrix products may round a last bit differently, which can move a
            // pixel by one level; anything beyond that is a real difference.
            let diff = mean_abs_diff(&alone[0].image, &image.image);
            assert!(
                diff < 0.01,
                "{sampler:?} image {i} differs from its single run by {diff}"
            );
        }
        assert_ne!(images[0].image.as_raw(), images[1].image.as_raw());
    }
}

fn checker(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        if (x / 8 + y / 8) % 2 == 0 {
            image::Rgb([220, 40, 40])
        } else {
            image::Rgb([30, 60, 200])
        }
    })
}

#[test]
fn img2img_strength_zero_returns_the_init_image_and_strength_sets_the_steps() {
    let init = Arc::new(checker(64, 64));
    let mut req = request(TinyKind::Sd15);
    req.steps = 10;
    req.init_image = Some(init.clone());
    req.strength_0_to_1 = 0.0;
    let (images, steps) = run(&req).unwrap();
    assert_eq!(steps, 0);
    assert_eq!(images[0].image.as_raw(), init.as_raw());

    req.strength_0_to_1 = 0.5;
    let (images, steps) = run(&req).unwrap();
    assert_eq!(steps, 5, "strength 0.5 of 10 steps runs the last 5");
    assert_ne!(images[0].image.as_raw(), init.as_raw());
}

#[test]
fn inpainting_leaves_unmasked_pixels_untouched() {
    let init = Arc::new(checker(64, 64));
    // Repaint the right half only.
    let mask = Arc::new(image::GrayImage::from_fn(64, 64, |x, _| {
        image::Luma([if x >= 32 { 255 } else { 0 }])
    }));
    for kind in [TinyKind::Sd15, TinyKind::Sd15Inpaint] {
        let mut req = request(kind);
        req.init_image = Some(init.clone());
        req.mask = Some(mask.clone());
        req.strength_0_to_1 = 1.0;
        let (images, _) = run(&req).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let out = &images[0].image;
        let mut kept_diff = 0u64;
        let mut painted_diff = 0u64;
        for (x, y, p) in out.enumerate_pixels() {
            let d: u64 = (0..3)
                .map(|c| (p.0[c] as i32 - init.get_pixel(x, y).0[c] as i32).unsigned_abs() as u64)
                .sum();
            // The resized mask is soft at the seam; judge away from it.
            if x < 28 {
                kept_diff += d;
            } else if x > 36 {
                painted_diff += d;
            }
        }
        assert_eq!(kept_diff, 0, "{kind:?}: unmasked pixels changed");
        assert!(
            painted_diff > 1000,
            "{kind:?}: masked area was not repainted"
        );
    }
}

#[test]
fn inpainting_model_without_mask_is_a_clear_error() {
    let err = run(&request(TinyKind::Sd15Inpaint)).unwrap_err();
    assert!(matches!(err, DiffusionError::InvalidRequest(_)), "{err}");
    assert!(err.to_string().contains("mask"), "{err}");
}

#[test]
fn supplied_noise_file_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let noise_path = dir.path().join("noise.safetensors");
    let noise =
        candle_core::Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("noise".to_owned(), noise)]),
        &noise_path,
    )
    .unwrap();
    let mut req = request(TinyKind::Sd15);
    req.noise_file = Some(noise_path.clone());
    let a = run(&req).unwrap().0.remove(0);
    req.seed = 7; // the seed no longer decides the starting noise
    let b = run(&req).unwrap().0.remove(0);
    assert_eq!(a.image.as_raw(), b.image.as_raw());

    req.width = 128;
    let err = run(&req).unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
}

#[test]
fn bad_requests_and_bad_folders_get_typed_clear_errors() {
    let mut req = request(TinyKind::Sd15);
    req.width = 60;
    let err = run(&req).unwrap_err();
    assert!(matches!(err, DiffusionError::InvalidRequest(_)));
    assert!(err.to_string().contains("multiple of 8"), "{err}");

    let missing = tempfile::tempdir().unwrap().path().join("nope");
    let err = ModelInfo::from_dir(&missing, ModelSource::Given).unwrap_err();
    assert!(matches!(err, ModelError::NotFound { .. }), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = ModelInfo::from_dir(empty.path(), ModelSource::Given).unwrap_err();
    assert!(matches!(err, ModelError::NotDiffusers { .. }), "{err}");

    // A folder of another kind of pipeline.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("model_index.json"),
        r#"{"_class_name": "FluxPipeline"}"#,
    )
    .unwrap();
    let err = ModelInfo::from_dir(other.path(), ModelSource::Given).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedPipeline { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("FluxPipeline"));

    // Truncated weights: a copy of the tiny model with half a UNet file.
    let broken = tempfile::tempdir().unwrap();
    copy_dir(&tiny_model(TinyKind::Sd15), broken.path());
    let unet = broken
        .path()
        .join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&unet).unwrap();
    std::fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    let mut req = request(TinyKind::Sd15);
    req.model_dir = broken.path().to_path_buf();
    let err = run(&req).unwrap_err();
    assert!(
        matches!(err, DiffusionError::Model(ModelError::BadWeights { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("unet"), "{err}");

    // A broken config names its file.
    std::fs::write(broken.path().join("vae/config.json"), "{ not json").unwrap();
    let err = ModelInfo::from_dir(broken.path(), ModelSource::Given).unwrap_err();
    assert!(matches!(err, ModelError::BadConfig { .. }), "{err}");
    assert!(err.to_string().contains("vae"), "{err}");
}

#[test]
fn fp16_weights_load_like_fp32() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny_model(TinyKind::Sd15), dir.path());
    for component in ["unet", "vae"] {
        let f32_path = dir
            .path()
            .join(component)
            .join("diffusion_pytorch_model.safetensors");
        let tensors = candle_core::safetensors::load(&f32_path, &candle_core::Device::Cpu).unwrap();
        let half: std::collections::HashMap<String, candle_core::Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(candle_core::DType::F16).unwrap()))
            .collect();
        std::fs::remove_file(&f32_path).unwrap();
        candle_core::safetensors::save(
            &half,
            dir.path()
                .join(component)
                .join("diffusion_pytorch_model.fp16.safetensors"),
        )
        .unwrap();
    }
    let mut req = request(TinyKind::Sd15);
    let full = run(&req).unwrap().0.remove(0);
    req.model_dir = dir.path().to_path_buf();
    let half = run(&req).unwrap().0.remove(0);
    assert!(mean_abs_diff(&full.image, &half.image) < 2.0);
}

#[test]
fn the_loaded_model_is_kept_between_jobs_and_switching_works() {
    let mut generator = Generator::default();
    let cancel = AtomicBool::new(false);
    let a = run_with(&mut generator, &request(TinyKind::Sd15), &cancel).unwrap();
    let b = run_with(&mut generator, &request(TinyKind::Sd2V), &cancel).unwrap();
    let a2 = run_with(&mut generator, &request(TinyKind::Sd15), &cancel).unwrap();
    assert_eq!(a.0[0].image.as_raw(), a2.0[0].image.as_raw());
    assert_ne!(a.0[0].image.as_raw(), b.0[0].image.as_raw());
}

#[test]
fn engine_cancel_stops_within_one_step_and_before_decode() {
    let engine = Engine::spawn(None);
    let mut req = request(TinyKind::Sd15);
    req.steps = 200;
    let job = engine.submit(req.clone());
    let queued = engine.submit(req);
    let mut steps_after_cancel = None;
    loop {
        let event = engine
            .recv_timeout(Duration::from_secs(120))
            .expect("engine alive")
            .expect("engine went quiet");
        match event {
            EngineEvent::Progress { job: j, .. } if j == job => match &mut steps_after_cancel {
                None => {
                    engine.cancel(job);
                    engine.cancel(queued);
                    steps_after_cancel = Some(0);
                }
                Some(n) => *n += 1,
            },
            EngineEvent::Cancelled { job: j } if j == job => break,
            EngineEvent::Image { .. } | EngineEvent::Done { .. } => {
                panic!("job finished after cancel")
            }
            EngineEvent::Failed { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
    assert!(
        steps_after_cancel.unwrap() <= 1,
        "ran {steps_after_cancel:?} steps after cancel"
    );
    assert!(engine.pending_jobs().is_empty());
}

#[test]
fn engine_reports_progress_images_and_done_for_each_job() {
    let engine = Engine::spawn(None);
    let a = engine.submit(request(TinyKind::Sd15));
    let mut bad = request(TinyKind::Sd15);
    bad.model_dir = "/nonexistent/model".into();
    let b = engine.submit(bad);
    let (mut progress, mut images, mut done_a, mut failed_b) = (0, 0, false, None);
    while !(done_a && failed_b.is_some()) {
        match engine
            .recv_timeout(Duration::from_secs(120))
            .expect("engine alive")
            .expect("engine went quiet")
        {
            EngineEvent::Progress { job, step, of, .. } if job == a => {
                assert!(step >= 1 && step <= of);
                progress += 1;
            }
            EngineEvent::Image { job, image } if job == a => {
                assert_eq!(image.image.dimensions(), (64, 64));
                images += 1;
            }
            EngineEvent::Done { job, .. } if job == a => done_a = true,
            EngineEvent::Failed { job, error } if job == b => failed_b = Some(error),
            _ => {}
        }
    }
    assert_eq!((progress, images), (4, 1));
    assert!(failed_b.unwrap().contains("/nonexistent/model"));
}

#[test]
fn a_panicking_job_fails_with_its_message_and_the_engine_goes_on() {
    use atelier::diffusion::GeneratorOptions;
    let engine = Engine::spawn_with(
        None,
        GeneratorOptions {
            panic_on_prompt: Some("boom".into()),
            ..Default::default()
        },
    );
    let mut bad = request(TinyKind::Sd15);
    bad.prompt = "boom".into();
    let bad = engine.submit(bad);
    let good = engine.submit(request(TinyKind::Sd15));
    let (mut failure, mut good_done, mut images) = (None, false, 0);
    while !good_done {
        match engine
            .recv_timeout(Duration::from_secs(120))
            .expect("the engine survives a panicking job")
            .expect("engine went quiet")
        {
            EngineEvent::Failed { job, error } if job == bad => failure = Some(error),
            EngineEvent::Image { job, .. } if job == good => images += 1,
            EngineEvent::Done { job, .. } if job == good => good_done = true,
            EngineEvent::Failed { error, .. } => panic!("{error}"),
            EngineEvent::Done { job, .. } if job == bad => panic!("the panicking job finished"),
            _ => {}
        }
    }
    let failure = failure.expect("the panicking job is reported failed");
    assert!(failure.contains("internal error"), "{failure}");
    assert!(failure.contains("\"boom\" panics"), "{failure}");
    assert_eq!(images, 1, "the next job ran normally");
}

#[test]
fn low_memory_mode_drops_and_reloads_text_encoders_with_identical_results() {
    use atelier::diffusion::GeneratorOptions;
    let cancel = AtomicBool::new(false);
    let req = request(TinyKind::Sdxl);
    let normal = run(&req).unwrap().0.remove(0);
    let mut lean = Generator::new(GeneratorOptions {
        low_memory: true,
        ..Default::default()
    });
    let first = run_with(&mut lean, &req, &cancel).unwrap().0.remove(0);
    let second = run_with(&mut lean, &req, &cancel).unwrap().0.remove(0);
    assert_eq!(normal.image.as_raw(), first.image.as_raw());
    assert_eq!(first.image.as_raw(), second.image.as_raw());
}

/// A ComfyUI-like tree: `models/checkpoints/tiny-sd15` (a copy of the tiny model) and, when
/// `with_tiny`, the reference tiny autoencoder as `models/vae_approx/taesd_decoder.safetensors`
/// (and its encoder).
fn comfy_tree(with_tiny: bool) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("models/checkpoints/tiny-sd15");
    copy_dir(&tiny_model(TinyKind::Sd15), &model);
    if with_tiny {
        let approx = tmp.path().join("models/vae_approx");
        std::fs::create_dir_all(&approx).unwrap();
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/taesd");
        for f in ["taesd_decoder.safetensors", "taesd_encoder.safetensors"] {
            std::fs::copy(fixtures.join(f), approx.join(f)).unwrap();
        }
    }
    (tmp, model)
}

#[test]
fn fast_decode_uses_the_tiny_decoder_found_in_comfyuis_folder_and_says_when_there_is_none() {
    use atelier::generation::DecoderChoice;
    // None anywhere: fast decode is refused with where to put one.
    let (_bare, model) = comfy_tree(false);
    let mut req = request(TinyKind::Sd15);
    req.model_dir = model;
    req.decoder = DecoderChoice::Tiny;
    match run(&req) {
        Err(DiffusionError::InvalidRequest(why)) => {
            assert!(why.contains("--tiny-decoder"), "{why}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.1)),
    }

    let (_tree, model) = comfy_tree(true);
    let mut generator = Generator::default();
    let mut full = request(TinyKind::Sd15);
    full.model_dir = model;
    let full_picture = run_with(&mut generator, &full, &AtomicBool::new(false))
        .unwrap()
        .0
        .remove(0);
    let fast = atelier::generation::GenerationRequest {
        decoder: DecoderChoice::Tiny,
        ..full.clone()
    };
    let fast_picture = run_with(&mut generator, &fast, &AtomicBool::new(false))
        .unwrap()
        .0
        .remove(0);
    assert!(generator.stages().iter().any(|(s, _)| s == "decode (tiny)"));
    assert_eq!(fast_picture.image.dimensions(), (64, 64));
    // Same latents, another decoder: another picture.
    let d = mean_abs_diff(&full_picture.image, &fast_picture.image);
    assert!(d > 1.0, "the tiny decoder's picture equals the VAE's ({d})");
    assert!(spread(&fast_picture.image) > 1.0);
    assert_eq!(fast_picture.request.decoder, DecoderChoice::Tiny);
}

/// The previews an engine job on `req` shows.
fn previews_of(req: atelier::generation::GenerationRequest) -> Vec<Arc<image::RgbImage>> {
    let engine = Engine::spawn(None);
    let job = engine.submit(req);
    let mut previews = Vec::new();
    loop {
        match engine
            .recv_timeout(Duration::from_secs(120))
            .expect("engine alive")
            .expect("engine went quiet")
        {
            EngineEvent::Progress {
                job: j, preview, ..
            } if j == job => previews.extend(preview),
            EngineEvent::Done { job: j, .. } if j == job => break,
            EngineEvent::Failed { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
    previews
}

#[test]
fn previews_are_whole_pictures_from_the_tiny_decoder_or_a_small_models_own_vae() {
    let (_tree, with_tiny) = comfy_tree(true);
    let (_bare, without) = comfy_tree(false);
    let mut req = request(TinyKind::Sd15);
    req.width = 64;
    req.height = 48;
    let tiny = previews_of(atelier::generation::GenerationRequest {
        model_dir: with_tiny,
        ..req.clone()
    });
    let own = previews_of(atelier::generation::GenerationRequest {
        model_dir: without,
        ..req.clone()
    });
    // At least the first step's, at the output size (the linear map gives 8x6).
    assert!(!tiny.is_empty() && !own.is_empty());
    for p in tiny.iter().chain(&own) {
        assert_eq!(p.dimensions(), (64, 48));
    }
    // The same latents after step 1, through two different decoders.
    let d = mean_abs_diff(&tiny[0], &own[0]);
    assert!(d > 1.0, "the previews do not differ by decoder ({d})");

    // Atelier Mini's own VAE decodes its previews.
    let mini_dir = atelier::models::default_model_dir();
    let mini = previews_of(atelier::generation::GenerationRequest {
        model_dir: mini_dir.clone(),
        ..req.clone()
    });
    assert!(!mini.is_empty());
    assert!(mini.iter().all(|p| p.dimensions() == (64, 48)));

    // A tiny decoder for 1/8 latents named for Atelier Mini (1/4 latents): refused, named.
    let mut wrong = req.clone();
    wrong.model_dir = mini_dir;
    wrong.tiny_decoder = Some(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/taesd/tiny"),
    );
    match run(&wrong) {
        Err(DiffusionError::InvalidRequest(why)) => {
            assert!(why.contains("1/8") && why.contains("1/4"), "{why}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.1)),
    }
}

#[test]
fn a_corrupt_tiny_decoder_is_an_error_when_named_and_a_note_when_merely_found() {
    let (tree, model) = comfy_tree(true);
    let decoder = tree
        .path()
        .join("models/vae_approx/taesd_decoder.safetensors");
    let bytes = std::fs::read(&decoder).unwrap();
    std::fs::write(&decoder, &bytes[..bytes.len() / 3]).unwrap();
    let mut req = request(TinyKind::Sd15);
    req.model_dir = model;
    req.tiny_decoder = Some(decoder.clone());
    match run(&req) {
        Err(DiffusionError::Model(e)) => {
            let text = e.to_string();
            assert!(text.contains("taesd_decoder"), "{text}");
        }
        other => panic!("expected an error, got {:?}", other.map(|r| r.1)),
    }
    // Found, not named: the picture is made with the VAE, and the user hears why not.
    req.tiny_decoder = None;
    let mut generator = Generator::default();
    let (images, _) = run_with(&mut generator, &req, &AtomicBool::new(false)).unwrap();
    assert_eq!(images.len(), 1);
    let warnings = generator.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("tiny decoder")),
        "{warnings:?}"
    );
}

/// A ring of control lines in the top-left corner of a 64 px picture, white on black.
fn corner_ring() -> image::RgbImage {
    image::RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as f32 - 16.0, y as f32 - 18.0);
        let on = ((dx * dx + dy * dy).sqrt() - 9.0).abs() < 1.0;
        image::Rgb(if on { [255; 3] } else { [0; 3] })
    })
}

/// The subject pass redraws only the square around the control lines: outside it the first
/// picture is untouched, inside it is drawn again (at the model's size); on a model whose card
/// names a plain ground the subject is put on that ground, each picture of a batch on its own
/// seed; lines over most of the picture leave nothing to redraw.
#[test]
fn the_subject_pass_redraws_the_sketched_square_only() {
    use atelier::diffusion::subject::subject_square;
    use atelier::generation::{ControlSpec, GenerationRequest};
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let sketch = corner_ring();
    // The reference fixture model, which the fixture ControlNet is made for.
    let mut req = GenerationRequest {
        model_dir: fixtures.join("tiny-sd15"),
        seed: 5,
        ..request(TinyKind::Sd15)
    };
    req.controlnets.push(ControlSpec::new(
        fixtures.join("controlnet/sd15-a"),
        Arc::new(sketch.clone()),
    ));
    let first = run(&req).unwrap().0.remove(0);
    req.subject_pass = true;
    let second = run(&req).unwrap().0.remove(0);
    assert!(second.request.subject_pass);
    let sq = subject_square(&[&sketch], 64, 64).expect("a square around the ring");
    let inside = |x: u32, y: u32| {
        (sq.left..sq.left + sq.side).contains(&x) && (sq.top..sq.top + sq.side).contains(&y)
    };
    let mut redrawn = 0;
    for (x, y, p) in second.image.enumerate_pixels() {
        if inside(x, y) {
            redrawn += usize::from(p != first.image.get_pixel(x, y));
        } else {
            assert_eq!(
                p,
                first.image.get_pixel(x, y),
                "({x}, {y}) is outside the square"
            );
        }
    }
    assert!(
        redrawn > (sq.side * sq.side / 2) as usize,
        "{redrawn} of {} pixels redrawn",
        sq.side * sq.side
    );

    // A model that draws on a plain ground: the subject on that ground, nothing else.
    let tmp = tempfile::tempdir().unwrap();
    let grounded = tmp.path().join("grounded");
    copy_dir(&fixtures.join("tiny-sd15"), &grounded);
    std::fs::write(
        grounded.join("atelier.json"),
        r#"{"title": "Grounded", "ground": [250, 240, 230]}"#,
    )
    .unwrap();
    let mut on_ground = req.clone();
    on_ground.model_dir = grounded;
    on_ground.batch = 2;
    let pictures = run(&on_ground).unwrap().0;
    assert_eq!(pictures.len(), 2);
    for picture in &pictures {
        let mut drawn = 0;
        for (x, y, p) in picture.image.enumerate_pixels() {
            if inside(x, y) {
                drawn += usize::from(p.0 != [250, 240, 230]);
            } else {
                assert_eq!(p.0, [250, 240, 230], "({x}, {y}) is outside the square");
            }
        }
        assert!(drawn > 0, "nothing drawn in the square");
    }
    // The batch's second picture is its own seed's.
    let mut alone = on_ground.clone();
    alone.batch = 1;
    alone.seed = 6;
    let single = run(&alone).unwrap().0.remove(0);
    assert!(mean_abs_diff(&single.image, &pictures[1].image) < 0.01);
    assert_eq!(pictures[1].request.seed, 6);

    // Lines over most of the picture: no square, the same picture as without the pass.
    let frame = image::RgbImage::from_fn(64, 64, |x, y| {
        let on = x == 2 || x == 61 || y == 2 || y == 61;
        image::Rgb(if on { [255; 3] } else { [0; 3] })
    });
    let mut wide = req.clone();
    wide.controlnets[0].image = Some(Arc::new(frame));
    let with = run(&wide).unwrap().0.remove(0);
    wide.subject_pass = false;
    let without = run(&wide).unwrap().0.remove(0);
    assert_eq!(with.image.as_raw(), without.image.as_raw());
}
