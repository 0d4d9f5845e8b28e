//! The judge classifier and `atelier eval` on tiny generated data: the judge learns three
//! clearly different shapes and saves/loads exactly; the Fréchet distance matches hand-computed
//! Gaussians; the whole evaluation runs end to end on a tiny random-weight model.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use atelier::diffusion::tiny::TinyKind;
use atelier::train::data::{open_dataset, DataOptions};
use atelier::train::eval::{
    evaluate, frechet_distance, read_prompts_file, EvalError, EvalOptions, Gaussian, Split,
};
use atelier::train::judge::{
    accuracy_on, images_tensor, train_judge, Judge, JudgeError, JudgeTrainOptions,
};
use atelier::train::linalg::symmetric_eigen;
use common::tiny_model;

const CLASSES: [&str; 3] = ["square", "circle", "line"];

/// `per_class` 64x64 images of each class (red squares, blue discs, green diagonal bars on a
/// transparent background), varied in size and position by `offset + i`.
fn shapes_dataset(dir: &Path, per_class: u32, offset: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    for (c, class) in CLASSES.iter().enumerate() {
        for i in 0..per_class {
            let k = (offset + i) as i32;
            let (cx, cy) = (26 + (k * 7) % 13, 24 + (k * 5) % 15);
            let size = 10 + (k * 3) % 8;
            let img = image::RgbaImage::from_fn(64, 64, |x, y| {
                let (dx, dy) = (x as i32 - cx, y as i32 - cy);
                let inside = match c {
                    0 => dx.abs() <= size && dy.abs() <= size,
                    1 => dx * dx + dy * dy <= size * size,
                    _ => (dx - dy).abs() <= 3 && dx.abs() <= size + 6,
                };
                let colour = [[220, 40, 40], [40, 60, 220], [30, 170, 60]][c];
                if inside {
                    image::Rgba([colour[0], colour[1], colour[2], 255])
                } else {
                    image::Rgba([0, 0, 0, 0])
                }
            });
            let name = format!("{class}-{i}.png");
            img.save(dir.join(&name)).unwrap();
            lines.push_str(&format!(
                "{{\"file\": \"{name}\", \"caption\": \"a {class}, shape {i}\", \"category\": \"{class}\"}}\n"
            ));
        }
    }
    std::fs::write(dir.join("captions.jsonl"), lines).unwrap();
}

fn root() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// Training (8 per class) and held-out (3 per class) shape folders, written once.
fn shapes() -> &'static (PathBuf, PathBuf) {
    static DIRS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let (train, val) = (root().join("shapes-train"), root().join("shapes-val"));
        shapes_dataset(&train, 8, 0);
        shapes_dataset(&val, 3, 100);
        (train, val)
    })
}

fn judge_options(out: &Path) -> JudgeTrainOptions {
    let (train, val) = shapes();
    JudgeTrainOptions {
        data: train.clone(),
        val_data: Some(val.clone()),
        out: out.to_path_buf(),
        steps: 30,
        batch: 12,
        seed: 7,
        ..Default::default()
    }
}

/// A judge trained once on the shapes: `(folder, report)`.
fn trained_judge() -> &'static (PathBuf, atelier::train::judge::JudgeReport) {
    static JUDGE: OnceLock<(PathBuf, atelier::train::judge::JudgeReport)> = OnceLock::new();
    JUDGE.get_or_init(|| {
        let out = root().join("judge");
        let mut losses = Vec::new();
        let report = train_judge(&judge_options(&out), &mut |_, _, loss, _| losses.push(loss))
            .expect("training the judge");
        assert_eq!(losses.len(), 30);
        let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
        let last: f32 = losses[25..].iter().sum::<f32>() / 5.0;
        assert!(last < first * 0.5, "loss did not fall: {first} -> {last}");
        (out, report)
    })
}

#[test]
fn judge_learns_shapes_and_round_trips_through_its_files() {
    let (dir, report) = trained_judge();
    assert_eq!(report.classes, ["circle", "line", "square"]);
    assert_eq!(report.train_images, 24);
    assert_eq!(report.val_images, 9);
    let val_accuracy = report.val_accuracy.expect("validation accuracy");
    assert!(val_accuracy >= 0.9, "held-out accuracy {val_accuracy}");
    assert!(
        std::fs::metadata(dir.join("judge.safetensors"))
            .unwrap()
            .len()
            < 5_000_000
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("judge.json")).unwrap()).unwrap();
    assert_eq!(
        json["classes"],
        serde_json::json!(["circle", "line", "square"])
    );
    assert_eq!(json["resolution"], 64);
    assert_eq!(json["label_key"], "category");
    assert_eq!(json["trained_steps"], 30);
    assert_eq!(json["val_accuracy"], serde_json::json!(val_accuracy));

    // Loading gives the judge that was measured, exactly.
    let a = Judge::load(dir).unwrap();
    let b = Judge::load(dir).unwrap();
    let val = open_dataset(&shapes().1, &DataOptions::default()).unwrap();
    assert_eq!(accuracy_on(&a, &val).unwrap().accuracy, val_accuracy);
    let images: Vec<_> = val.items.iter().map(|i| &i.image).collect();
    let x = images_tensor(&images, 64, [255, 255, 255]).unwrap();
    let la = a.logits(&x).unwrap().to_vec2::<f32>().unwrap();
    let lb = b.logits(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(la, lb);
    assert_eq!(la.len(), 9);
    assert_eq!(la[0].len(), 3);
    assert_eq!(a.features(&x).unwrap().dims(), [9, 128]);
}

#[test]
fn judge_training_is_deterministic_for_a_seed() {
    let (dir, _) = trained_judge();
    let again = root().join("judge-again");
    train_judge(&judge_options(&again), &mut |_, _, _, _| {}).unwrap();
    let read = |d: &Path| std::fs::read(d.join("judge.safetensors")).unwrap();
    assert_eq!(read(dir), read(&again), "same seed, different weights");
}

#[test]
fn judge_training_needs_two_classes() {
    let dir = root().join("one-class");
    std::fs::create_dir_all(&dir).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(dir.join("a.png"))
        .unwrap();
    std::fs::write(
        dir.join("captions.jsonl"),
        "{\"file\": \"a.png\", \"caption\": \"x\", \"category\": \"only\"}\n",
    )
    .unwrap();
    let opts = JudgeTrainOptions {
        data: dir.clone(),
        out: root().join("one-class-out"),
        steps: 1,
        ..Default::default()
    };
    let Err(err) = train_judge(&opts, &mut |_, _, _, _| {}) else {
        panic!("one class must be an error");
    };
    assert!(matches!(err, JudgeError::Options(_)), "{err}");
    assert!(err.to_string().contains("two classes"), "{err}");
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn frechet_distance_matches_hand_computed_gaussians() {
    // 1-D: N(0, 1) vs N(3, 4): 9 + 1 + 4 - 2 * sqrt(1 * 4) = 10.
    let a = Gaussian::new(vec![0.0], vec![1.0]);
    let b = Gaussian::new(vec![3.0], vec![4.0]);
    assert!(close(frechet_distance(&a, &b), 10.0, 1e-12));
    assert!(close(frechet_distance(&b, &a), 10.0, 1e-12));
    // 2-D diagonal: |(1, 2)|^2 = 5; traces 5 + 10; cross term 2 * (sqrt(9) + sqrt(4)) = 10.
    let a = Gaussian::new(vec![0.0, 0.0], vec![1.0, 0.0, 0.0, 4.0]);
    let b = Gaussian::new(vec![1.0, 2.0], vec![9.0, 0.0, 0.0, 1.0]);
    assert!(close(frechet_distance(&a, &b), 10.0, 1e-10));
    // 2-D correlated: I vs [[2, 1], [1, 2]] (eigenvalues 3 and 1): 2 + 4 - 2 (sqrt 3 + 1).
    let a = Gaussian::new(vec![0.0, 0.0], vec![1.0, 0.0, 0.0, 1.0]);
    let b = Gaussian::new(vec![0.0, 0.0], vec![2.0, 1.0, 1.0, 2.0]);
    let expected = 6.0 - 2.0 * (3f64.sqrt() + 1.0);
    assert!(close(frechet_distance(&a, &b), expected, 1e-10));
    assert!(close(frechet_distance(&b, &a), expected, 1e-10));
    // Identical Gaussians (not diagonal) are at distance 0.
    let c = Gaussian::new(vec![1.0, -1.0], vec![2.0, 0.5, 0.5, 1.0]);
    assert!(frechet_distance(&c, &c).abs() < 1e-10);
}

#[test]
fn frechet_distance_of_samples_is_zero_for_a_set_and_itself_and_grows_with_a_shift() {
    // Deterministic pseudo-random 16-d samples.
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
    };
    let samples: Vec<Vec<f32>> = (0..300)
        .map(|_| (0..16).map(|_| next()).collect())
        .collect();
    let fitted = Gaussian::fit(&samples);
    assert!(frechet_distance(&fitted, &fitted).abs() < 1e-9);
    let shifted = |by: f32| {
        let moved: Vec<Vec<f32>> = samples
            .iter()
            .map(|s| s.iter().map(|x| x + by).collect())
            .collect();
        frechet_distance(&fitted, &Gaussian::fit(&moved))
    };
    // A pure shift adds exactly |shift|^2 = 16 * by^2.
    assert!(close(shifted(0.5), 4.0, 1e-6), "{}", shifted(0.5));
    assert!(shifted(1.0) > shifted(0.5));
    // Wider spread: distance grows too.
    let wide: Vec<Vec<f32>> = samples
        .iter()
        .map(|s| s.iter().map(|x| x * 3.0).collect())
        .collect();
    assert!(frechet_distance(&fitted, &Gaussian::fit(&wide)) > 0.5);
}

#[test]
fn jacobi_eigen_decomposition_reconstructs_the_matrix() {
    let n = 7;
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = ((i * 31 + j * 17) % 11) as f64 - 5.0 + if i == j { 3.0 } else { 0.0 };
            m[i * n + j] = v;
            m[j * n + i] = v;
        }
    }
    let (values, vectors) = symmetric_eigen(&m, n);
    for i in 0..n {
        for j in 0..n {
            let rebuilt: f64 = (0..n)
                .map(|k| vectors[i * n + k] * values[k] * vectors[j * n + k])
                .sum();
            assert!(close(rebuilt, m[i * n + j], 1e-9), "({i},{j})");
            let dot: f64 = (0..n)
                .map(|k| vectors[k * n + i] * vectors[k * n + j])
                .sum();
            assert!(
                close(dot, f64::from(u8::from(i == j)), 1e-9),
                "V not orthonormal"
            );
        }
    }
}

#[test]
fn prompts_files_give_captions_categories_and_splits() {
    let path = root().join("prompts.jsonl");
    std::fs::write(
        &path,
        "{\"caption\": \"a cat\", \"category\": \"Animals\", \"split\": \"eval\"}\n\n\
         {\"text\": \"a car\", \"split\": \"train\"}\n\
         {\"caption\": \"a hat\", \"category\": \"Objects\"}\n",
    )
    .unwrap();
    let prompts = read_prompts_file(&path, "category").unwrap();
    assert_eq!(prompts.len(), 3);
    assert_eq!(prompts[0].category.as_deref(), Some("Animals"));
    assert_eq!(prompts[0].split, Split::HeldOut);
    assert_eq!(prompts[1].caption, "a car");
    assert_eq!(prompts[1].category, None);
    assert_eq!(prompts[1].split, Split::Training);
    assert_eq!(prompts[2].split, Split::File);

    std::fs::write(&path, "{\"caption\": \"ok\"}\nnot json\n").unwrap();
    let err = read_prompts_file(&path, "category").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn inception_weights_are_a_clear_not_yet_supported_error() {
    let opts = EvalOptions {
        inception: Some("pt_inception-2015-12-05.pth".into()),
        ..Default::default()
    };
    let err = evaluate(&opts, &mut |_, _, _| {}).unwrap_err();
    assert!(matches!(err, EvalError::InceptionUnsupported { .. }));
    assert!(err.to_string().contains("not supported yet"), "{err}");
}

#[test]
fn evaluate_runs_end_to_end_on_a_tiny_model() {
    let (judge_dir, _) = trained_judge();
    let (train, val) = shapes();
    let samples = root().join("eval-samples");
    let opts = EvalOptions {
        model: tiny_model(TinyKind::Sd15),
        judge: judge_dir.clone(),
        n: 4,
        eval_data: Some(val.clone()),
        train_data: Some(train.clone()),
        diversity_prompts: 2,
        diversity_seeds: 2,
        steps: Some(3),
        samples_dir: Some(samples.clone()),
        ..Default::default()
    };
    let mut phases = Vec::new();
    let report = evaluate(&opts, &mut |phase, _, _| phases.push(phase.to_owned())).unwrap();
    assert!(phases.iter().any(|p| p == "generating"));

    let a = &report.adherence;
    assert_eq!(a.scored, 4);
    assert!((0.0..=1.0).contains(&a.accuracy));
    assert!((0.0..=1.0).contains(&a.balanced_accuracy));
    let (held_out, training) = (a.held_out.as_ref().unwrap(), a.training.as_ref().unwrap());
    assert_eq!((held_out.count, training.count), (2, 2));
    // Prompts are spread over categories: 2 held-out ones of two different categories.
    assert_ne!(report.samples[0].category, report.samples[1].category);
    // The ceiling: the judge on the prompts' own real images, recomputed here.
    let judge = Judge::load(judge_dir).unwrap();
    let (train_set, val_set) = (
        open_dataset(train, &DataOptions::default()).unwrap(),
        open_dataset(val, &DataOptions::default()).unwrap(),
    );
    let correct = report
        .samples
        .iter()
        .filter(|s| {
            let set = match s.split {
                atelier::train::eval::Split::HeldOut => &val_set,
                _ => &train_set,
            };
            let item = set.items.iter().find(|i| i.caption == s.prompt).unwrap();
            let class = judge.score_images(&[&item.image]).unwrap()[0].class;
            Some(&judge.classes()[class]) == s.category.as_ref()
        })
        .count();
    let real = a.real_images.as_ref().expect("the real-image ceiling");
    assert_eq!(real.count, 4);
    assert_eq!(real.accuracy, correct as f64 / 4.0);

    let fd = report.frechet.as_ref().expect("a Fréchet distance");
    assert!(fd.distance.is_finite() && fd.distance >= 0.0);
    assert_eq!((fd.generated_images, fd.real_images), (4, 9));
    assert!(fd.real_reference.is_some());

    let d = report.diversity.as_ref().expect("diversity");
    assert!(d.within_prompt_pixels > 0.0 && d.within_prompt_features > 0.0);
    let m = report.memorisation.as_ref().expect("memorisation");
    assert_eq!(m.training_images, 24);
    assert!(m.min_nearest > 0.0 && m.min_nearest <= m.mean_nearest);
    assert_eq!(report.timing.images, 8);
    assert!(report.timing.images_per_sec > 0.0);
    assert!(report.samples.iter().all(|s| s.nearest_training.is_some()));

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    for key in [
        "settings",
        "adherence",
        "frechet",
        "diversity",
        "memorisation",
        "timing",
        "samples",
    ] {
        assert!(!json[key].is_null(), "{key} missing from the JSON report");
    }
    assert_eq!(json["samples"][0]["split"], "held-out");
    let table = report.table();
    assert!(
        table.contains("Prompt adherence") && table.contains("Fréchet"),
        "{table}"
    );
    assert!(samples.join("000.png").is_file() && samples.join("diversity-grid.png").is_file());

    // The same options reproduce the same pictures, hence the same judgements.
    let again = evaluate(
        &EvalOptions {
            samples_dir: None,
            ..opts
        },
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&again.samples).unwrap(),
        serde_json::to_value(&report.samples).unwrap()
    );
}

/// `eval --controlnet` end to end on a tiny model and ControlNet: sketches drawn from held-out
/// pictures, one picture with and one without the ControlNet per sketch, edge F1 in range,
/// adherence judged framed and whole, the sketched pictures scored as references (as they are
/// and through the model's VAE), the samples and their grid written; a ControlNet that is not
/// there is an error, not a panic.
#[test]
fn the_controlnet_evaluation_runs_end_to_end() {
    use atelier::train::eval::control::{evaluate_control, make_sketches, ControlEvalOptions};
    let (judge_dir, _) = trained_judge();
    let (_, val) = shapes();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let sketches = root().join("control-sketches");
    let scales = atelier::train::eval::control::SKETCH_SCALES;
    assert_eq!(make_sketches(val, &sketches, 4, 7, scales).unwrap(), 4);
    // A scale range outside the frame is refused, before anything is written.
    let refused = root().join("control-sketches-refused");
    for bad in [0.5..1.5, 0.8..0.45, 0.0..0.5] {
        assert!(matches!(
            make_sketches(val, &refused, 4, 7, bad),
            Err(atelier::train::eval::EvalError::Options(_))
        ));
    }
    assert!(!refused.exists());
    assert!(sketches.join("003.png").is_file() && sketches.join("sketches.jsonl").is_file());
    let samples = root().join("control-samples");
    let opts = ControlEvalOptions {
        model: fixtures.join("tiny-sd15"),
        controlnet: fixtures.join("controlnet/sd15-a"),
        sketches: sketches.clone(),
        judge: Some(judge_dir.clone()),
        scale: 1.0,
        start: 0.0,
        end: 1.0,
        mode: atelier::generation::ControlMode::Balanced,
        seed: 3,
        steps: Some(2),
        guidance: Some(3.0),
        sampler: None,
        subject_pass: true,
        samples_dir: Some(samples.clone()),
    };
    let report = evaluate_control(&opts, &mut |_, _, _| {}).unwrap();
    assert_eq!(report.sketches, 4);
    for scores in [&report.with_control, &report.without_control] {
        assert!((0.0..=1.0).contains(&scores.f1), "{scores:?}");
        for a in [scores.adherence, scores.adherence_whole] {
            assert!(a.is_some_and(|a| (0.0..=1.0).contains(&a)), "{scores:?}");
        }
    }
    // The sketched pictures are written beside the sketches and scored as references: as
    // they are they follow their own sketches far better than the untrained model's pictures;
    // through the model's VAE they are what the model can make of them.
    assert!(sketches.join("003-picture.png").is_file());
    let reference = report
        .reference
        .as_ref()
        .expect("the sketched pictures scored");
    let through = report.reference_vae.as_ref().expect("and through the VAE");
    assert!(
        reference.f1 > 0.5 && reference.f1 > report.without_control.f1,
        "{reference:?} {:?}",
        report.without_control
    );
    for a in [reference.adherence, through.adherence] {
        assert!(a.is_some_and(|a| (0.0..=1.0).contains(&a)), "{a:?}");
    }
    assert!((0.0..=1.0).contains(&through.f1), "{through:?}");
    assert!(report.table().contains("through the model's VAE"));
    assert!(report.subject_pass && report.table().contains("subject pass"));
    for name in [
        "000-sketch.png",
        "000-without.png",
        "003-with.png",
        "grid.png",
    ] {
        assert!(samples.join(name).is_file(), "{name}");
    }
    let grid = atelier::imageio::load_image_file(&samples.join("grid.png")).unwrap();
    let tile = atelier::imageio::load_image_file(&samples.join("000-with.png"))
        .unwrap()
        .width();
    // Two sketches to a row, three pictures each, doubled, 4 px apart.
    assert_eq!(grid.width(), 6 * (2 * tile + 4) + 4);
    let missing = ControlEvalOptions {
        controlnet: root().join("no-such-controlnet"),
        samples_dir: None,
        ..opts
    };
    assert!(evaluate_control(&missing, &mut |_, _, _| {}).is_err());
}
