//! `atelier train` on a tiny data set: loss goes down, checkpoints resume exactly, the export
//! loads and generates through the ordinary pipeline, bad data is a clear error.

mod common;

use std::path::Path;

use atelier::generation::{GenerationRequest, SamplerKind};
use atelier::train::recipe::{Objective, Recipe};
use atelier::train::trainer::{train, TrainError, TrainEvent, TrainOptions};

/// Eight 16x16 images in two clearly different styles, with captions.
fn tiny_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    for i in 0..8u32 {
        let red = i % 2 == 0;
        let img = image::RgbaImage::from_fn(16, 16, |x, y| {
            let inside = (x as i32 - 8).pow(2) + (y as i32 - 8).pow(2) < 30 + i as i32;
            match (inside, red) {
                (true, true) => image::Rgba([220, 30, 30, 255]),
                (true, false) => image::Rgba([30, 30, 220, 255]),
                _ => image::Rgba([0, 0, 0, 0]),
            }
        });
        let name = format!("{i}.png");
        img.save(dir.join(&name)).unwrap();
        let caption = if red { "a red dot" } else { "a blue dot" };
        let category = if red { "red" } else { "blue" };
        lines.push_str(&format!(
            "{{\"file\": \"{name}\", \"caption\": \"{caption}\", \"category\": \"{category}\"}}\n"
        ));
    }
    std::fs::write(dir.join("captions.jsonl"), lines).unwrap();
}

fn options(data: &Path, out: &Path) -> TrainOptions {
    TrainOptions {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        steps: 12,
        vae_steps: 12,
        batch: 4,
        vae_batch: 4,
        checkpoint_every: 6,
        lr: 2e-3,
        vae_lr: 2e-3,
        recipe: Recipe {
            resolution: 16,
            max_tokens: 8,
            text_hidden: 16,
            text_layers: 1,
            unet_channels: vec![16, 32],
            unet_layers_per_block: 1,
            vae_channels: vec![8, 16],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A 16x16, 4-step request for a tiny run's exported model.
fn export_request(model_dir: &Path, sampler: SamplerKind) -> GenerationRequest {
    GenerationRequest {
        model_dir: model_dir.to_path_buf(),
        prompt: "a red dot".into(),
        seed: 1,
        steps: 4,
        guidance: 3.0,
        width: 16,
        height: 16,
        sampler,
        ..Default::default()
    }
}

fn losses(out: &Path, stage: &str) -> Vec<f64> {
    std::fs::read_to_string(out.join("loss.csv"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split(',').collect();
            (parts[0] == stage).then(|| parts[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn a_few_steps_reduce_the_loss_and_the_export_generates() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_dataset(&tmp.path().join("data"));
    let out = tmp.path().join("run");
    let mut events = 0;
    let summary = train(&options(&tmp.path().join("data"), &out), &mut |e| {
        if matches!(e, TrainEvent::Step { .. }) {
            events += 1;
        }
    })
    .unwrap();
    assert_eq!(
        (summary.vae_steps, summary.unet_steps, events),
        (12, 12, 24)
    );
    let vae = losses(&out, "vae");
    let first: f64 = vae[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = vae[vae.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.8, "VAE loss did not fall: {vae:?}");

    // The export is an ordinary diffusers folder.
    let req = export_request(&summary.model_dir, SamplerKind::DpmPp2mKarras);
    let a = common::run(&req).unwrap().0.remove(0);
    let b = common::run(&req).unwrap().0.remove(0);
    assert_eq!(a.image.dimensions(), (16, 16));
    assert_eq!(a.image.as_raw(), b.image.as_raw());
}

#[test]
fn a_killed_run_resumes_exactly_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_dataset(&data);
    // One uninterrupted run...
    let whole = tmp.path().join("whole");
    train(&options(&data, &whole), &mut |_| {}).unwrap();
    // ...and one that stops after its step-6 checkpoint of the UNet stage, then resumes.
    let split = tmp.path().join("split");
    let mut first = options(&data, &split);
    first.steps = 6;
    train(&first, &mut |_| {}).unwrap();
    let mut again = options(&data, &split);
    let err = train(&again, &mut |_| {})
        .err()
        .expect("refuses to overwrite");
    assert!(matches!(err, TrainError::CheckpointExists { .. }), "{err}");
    again.resume = true;
    // As if the killed run had logged two steps past its checkpoint.
    let log = split.join("loss.csv");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("unet,7,9.0\nunet,8,9.0\n");
    std::fs::write(&log, text).unwrap();
    train(&again, &mut |_| {}).unwrap();
    for file in [
        "unet.safetensors",
        "text.safetensors",
        "vae.safetensors",
        "ema.safetensors",
    ] {
        let a = std::fs::read(whole.join("checkpoint").join(file)).unwrap();
        let b = std::fs::read(split.join("checkpoint").join(file)).unwrap();
        assert!(a == b, "{file} differs after resume");
    }
    assert_eq!(losses(&whole, "unet"), losses(&split, "unet"));
}

#[test]
fn empty_or_unreadable_data_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = train(&options(&empty, &tmp.path().join("o1")), &mut |_| {})
        .err()
        .unwrap();
    assert!(matches!(err, TrainError::Data(_)), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
    let missing = tmp.path().join("missing");
    let err = train(&options(&missing, &tmp.path().join("o2")), &mut |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn training_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_dataset(&data);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&options(&data, &a), &mut |_| {}).unwrap();
    train(&options(&data, &b), &mut |_| {}).unwrap();
    assert_eq!(losses(&a, "vae"), losses(&b, "vae"));
    assert_eq!(losses(&a, "unet"), losses(&b, "unet"));
}

#[test]
fn resume_can_switch_the_objective_to_v_prediction_on_a_zero_snr_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_dataset(&data);
    let out = tmp.path().join("run");
    let mut first = options(&data, &out);
    first.steps = 6;
    first.recipe.objective = Objective::Epsilon;
    train(&first, &mut |_| {}).unwrap();
    let scheduler = |out: &Path| -> serde_json::Value {
        let path = out.join("model/scheduler/scheduler_config.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    assert_eq!(scheduler(&out)["prediction_type"], "epsilon");
    assert_eq!(scheduler(&out)["rescale_betas_zero_snr"], false);

    let mut again = options(&data, &out);
    again.resume = true;
    again.objective = Some(Objective::VZeroSnr);
    let mut notes = Vec::new();
    let summary = train(&again, &mut |e| {
        if let TrainEvent::Note(n) = e {
            notes.push(n);
        }
    })
    .unwrap();
    assert_eq!(summary.unet_steps, 6);
    assert!(
        notes.iter().any(|n| n.contains("switching the objective")),
        "{notes:?}"
    );
    let s = scheduler(&out);
    assert_eq!(s["prediction_type"], "v_prediction");
    assert_eq!(s["rescale_betas_zero_snr"], true);
    assert_eq!(s["timestep_spacing"], "trailing");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["recipe"]["objective"], "v-zero-snr");
    assert_eq!(losses(&out, "unet").len(), 12);

    // The export samples through every sampler from sigma 4096 without blowing up.
    for sampler in SamplerKind::ALL {
        let req = export_request(&summary.model_dir, sampler);
        let image = common::run(&req).unwrap().0.remove(0).image;
        let px = image.as_raw();
        let (lo, hi) = (px.iter().min().unwrap(), px.iter().max().unwrap());
        assert!(hi > lo, "{sampler:?} gave a flat image");
    }
}

#[test]
fn decay_from_changes_only_the_steps_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_dataset(&data);
    let (constant, decayed) = (tmp.path().join("constant"), tmp.path().join("decayed"));
    train(&options(&data, &constant), &mut |_| {}).unwrap();
    let mut opts = options(&data, &decayed);
    opts.decay_from = Some(6);
    train(&opts, &mut |_| {}).unwrap();
    let (a, b) = (losses(&constant, "unet"), losses(&decayed, "unet"));
    assert_eq!(a.len(), 12);
    // The loss of a step is measured before its update, and the decay's first step (step 6,
    // counting from 0) still runs at the full rate: the first 8 losses see the same weights.
    assert_eq!(a[..8], b[..8]);
    assert!(
        a[8..].iter().zip(&b[7..]).all(|(x, y)| x != y),
        "{a:?} vs {b:?}"
    );
}

#[test]
fn balanced_sampling_is_recorded_and_kept_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_dataset(&data);
    let out = tmp.path().join("run");
    let mut opts = options(&data, &out);
    opts.balance_by = Some("category".into());
    opts.steps = 6;
    let mut notes = Vec::new();
    train(&opts, &mut |e| {
        if let TrainEvent::Note(n) = e {
            notes.push(n)
        }
    })
    .unwrap();
    assert!(
        notes.iter().any(|n| n.contains("evenly over 2 groups")),
        "{notes:?}"
    );
    let state = std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap();
    assert!(state.contains("\"balance_by\": \"category\""), "{state}");
    // A resume without the flag keeps the run's own setting.
    let mut again = options(&data, &out);
    again.resume = true;
    let mut resumed_notes = Vec::new();
    train(&again, &mut |e| {
        if let TrainEvent::Note(n) = e {
            resumed_notes.push(n)
        }
    })
    .unwrap();
    assert!(resumed_notes
        .iter()
        .any(|n| n.contains("evenly over 2 groups")));
}

#[test]
fn init_from_starts_a_new_run_from_an_exported_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_dataset(&data);
    let base = tmp.path().join("base");
    let mut first = options(&data, &base);
    first.recipe.objective = Objective::Epsilon;
    let model = train(&first, &mut |_| {}).unwrap().model_dir;

    // A run of zero steps from the export writes the export back unchanged: every weight, the
    // latent scale and the objective (the model's epsilon, not the options' default) came over.
    let copy = tmp.path().join("copy");
    let mut opts = options(&data, &copy);
    opts.init_from = Some(model.clone());
    opts.steps = 0;
    let summary = train(&opts, &mut |_| {}).unwrap();
    assert_eq!((summary.vae_steps, summary.unet_steps), (0, 0));
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        let a = std::fs::read(model.join(file)).unwrap();
        let b = std::fs::read(summary.model_dir.join(file)).unwrap();
        assert!(a == b, "{file} differs from the model the run started from");
    }
    // The latent scale goes through JSON text and back (serde_json may round the last bit).
    let scaling = |dir: &Path| -> f64 {
        let text = std::fs::read_to_string(dir.join("vae/config.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["scaling_factor"].as_f64().unwrap()
    };
    let (a, b) = (scaling(&model), scaling(&summary.model_dir));
    assert!(a != 1.0 && ((a - b) / a).abs() < 1e-12, "{a} vs {b}");

    // A real run from it trains the UNet stage only, and records where it started.
    let tuned = tmp.path().join("tuned");
    let mut opts = options(&data, &tuned);
    opts.init_from = Some(model.clone());
    opts.steps = 4;
    opts.warmup = 2;
    let summary = train(&opts, &mut |_| {}).unwrap();
    assert_eq!((summary.vae_steps, summary.unet_steps), (0, 4));
    assert!(losses(&tuned, "vae").is_empty());
    assert_eq!(losses(&tuned, "unet").len(), 4);
    let state = std::fs::read_to_string(tuned.join("checkpoint/state.json")).unwrap();
    assert!(state.contains("\"init_from\""), "{state}");
    let a = std::fs::read(model.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let b = std::fs::read(
        summary
            .model_dir
            .join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    assert!(a != b, "four steps left the UNet unchanged");

    // A model of another shape is refused, naming the config field that differs.
    let other = tmp.path().join("other");
    let mut opts = options(&data, &other);
    opts.init_from = Some(model);
    opts.recipe.unet_channels = vec![8, 16];
    let err = train(&opts, &mut |_| {}).err().expect("another recipe");
    assert!(matches!(err, TrainError::InitFrom { .. }), "{err}");
    assert!(
        err.to_string().contains("unet/config.json")
            && err.to_string().contains("block_out_channels"),
        "{err}"
    );
}

#[test]
fn tag_dropout_is_checked_recorded_and_kept_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_dataset(&data);
    let out = tmp.path().join("run");
    let mut opts = options(&data, &out);
    opts.tag_dropout = Some(1.5);
    let err = train(&opts, &mut |_| {}).err().expect("out of range");
    assert!(matches!(err, TrainError::Options(_)), "{err}");
    assert!(err.to_string().contains("--tag-dropout"), "{err}");

    opts.tag_dropout = Some(0.25);
    opts.steps = 6;
    train(&opts, &mut |_| {}).unwrap();
    let state = || std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap();
    assert!(state().contains("\"tag_dropout\": 0.25"), "{}", state());
    // A resume without the flag keeps the run's own rate; with it, it changes.
    let mut again = options(&data, &out);
    again.resume = true;
    again.steps = 9;
    train(&again, &mut |_| {}).unwrap();
    assert!(state().contains("\"tag_dropout\": 0.25"), "{}", state());
    again.steps = 12;
    again.tag_dropout = Some(0.0);
    train(&again, &mut |_| {}).unwrap();
    assert!(state().contains("\"tag_dropout\": 0.0"), "{}", state());
}

/// `train-controlnet` on a tiny trained model: checkpoints, resumes to the step it was asked
/// for, refuses to overwrite a run without `resume`, and exports a ControlNet folder the
/// ordinary pipeline loads and that changes the picture.
#[test]
fn a_controlnet_trains_resumes_and_its_export_steers_the_model() {
    use atelier::train::controlnet::{train_controlnet, Condition, ControlTrainOptions};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_dataset(&data);
    let base = tmp.path().join("base");
    train(&options(&data, &base), &mut |_| {}).unwrap();
    let model = base.join("model");
    let out = tmp.path().join("cn");
    let opts = |steps: usize, resume: bool| ControlTrainOptions {
        model: model.clone(),
        data: data.clone(),
        out: out.clone(),
        condition: Condition::Scribble,
        steps,
        batch: 2,
        lr: 1e-3,
        warmup: 1,
        seed: 3,
        checkpoint_every: 2,
        resume,
        init_from: None,
        caption_dropout: 0.5,
        subject_weight: 1.0,
        device: candle_core::Device::Cpu,
    };
    let first = train_controlnet(&opts(2, false), &mut |_| {}).unwrap();
    assert_eq!(first.steps_run, 2);
    assert!(matches!(
        train_controlnet(&opts(4, false), &mut |_| {}),
        Err(TrainError::CheckpointExists { .. })
    ));
    let second = train_controlnet(&opts(4, true), &mut |_| {}).unwrap();
    assert_eq!(second.steps_run, 2);
    assert_eq!(losses(&out, "controlnet").len(), 4);
    assert!(out.join("model/config.json").is_file());
    assert!(out.join("loss.png").is_file());
    // The export steers the model it was made for.
    let mut plain = export_request(&model, SamplerKind::Ddim);
    plain.width = 64;
    plain.height = 64;
    let sketch = image::RgbImage::from_fn(64, 64, |x, y| {
        let on = (x as i32 - y as i32).abs() < 3;
        image::Rgb(if on { [255; 3] } else { [0; 3] })
    });
    let mut steered = plain.clone();
    steered
        .controlnets
        .push(atelier::generation::ControlSpec::new(
            out.join("model"),
            std::sync::Arc::new(sketch),
        ));
    let a = common::run(&plain).unwrap().0.remove(0).image;
    let b = common::run(&steered).unwrap().0.remove(0).image;
    assert_ne!(a.as_raw(), b.as_raw());

    // A new run from the export (--init-from) starts from its weights: with a learning rate
    // of zero, its own export is the same ControlNet.
    let mut from = opts(1, false);
    from.out = tmp.path().join("cn2");
    from.init_from = Some(out.join("model"));
    from.lr = 0.0;
    let third = train_controlnet(&from, &mut |_| {}).unwrap();
    assert_eq!(third.steps_run, 1);
    let weights = |dir: &std::path::Path| {
        candle_core::safetensors::load(
            dir.join("model/diffusion_pytorch_model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap()
    };
    let (was, now) = (weights(&out), weights(&from.out));
    assert_eq!(was.len(), now.len());
    for (name, t) in &was {
        let diff = (t.to_dtype(candle_core::DType::F32).unwrap()
            - now[name].to_dtype(candle_core::DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
        assert_eq!(diff, 0.0, "{name}");
    }
    // A folder that is not a ControlNet (the model itself) is refused, by name.
    let mut wrong = opts(1, false);
    wrong.out = tmp.path().join("cn3");
    wrong.init_from = Some(model.clone());
    assert!(matches!(
        train_controlnet(&wrong, &mut |_| {}),
        Err(TrainError::InitFrom { .. })
    ));
}
