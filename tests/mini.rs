//! The shipped Atelier Mini model (assets/models/atelier-mini) and its judge: found first,
//! labelled, within the size budget, loaded through the same loader as a user's SD 1.5
//! folder, deterministic, and steered by the prompt (checked by the shipped judge).

mod common;

use std::path::{Path, PathBuf};

use atelier::generation::GenerationRequest;
use atelier::models::{discover, embedded_models_dir, Family, ModelInfo, ModelSource};
use atelier::train::judge::Judge;
use common::{mean_abs_diff, run, spread};

fn mini_dir() -> PathBuf {
    embedded_models_dir().join("atelier-mini")
}

fn judge_dir() -> PathBuf {
    embedded_models_dir().join("atelier-mini-judge")
}

fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        total += if path.is_dir() {
            size_of(&path)
        } else {
            std::fs::metadata(&path).unwrap().len()
        };
    }
    total
}

fn request(prompt: &str, seed: u64, batch: u32) -> GenerationRequest {
    let info = ModelInfo::from_dir(&mini_dir(), ModelSource::Embedded).unwrap();
    let rec = info.recommended();
    GenerationRequest {
        model_dir: mini_dir(),
        prompt: prompt.into(),
        seed,
        steps: rec.steps,
        guidance: rec.guidance,
        sampler: rec.sampler,
        width: 64,
        height: 64,
        batch,
        ..Default::default()
    }
}

#[test]
fn shipped_model_is_found_first_labelled_and_small() {
    let found = discover(&[]);
    let first = found.models.first().expect("the shipped model is found");
    assert_eq!(first.source, ModelSource::Embedded);
    assert_eq!(first.dir, mini_dir());
    assert_eq!(first.family, Family::Sd1);
    assert_eq!(first.native_size, 64);
    let card = first.card.as_ref().expect("a model card");
    assert_eq!(card.title, "Atelier Mini");
    assert!(card.license.contains("Apache-2.0"), "{}", card.license);
    let attribution = card.attribution.as_deref().expect("the attribution text");
    assert!(attribution.contains("Noto Emoji"), "{attribution}");
    let weights: u64 = ["unet", "vae", "text_encoder"]
        .iter()
        .map(|d| size_of(&mini_dir().join(d)))
        .sum();
    assert!(
        weights <= 25 * 1024 * 1024,
        "weights {weights} bytes over 25 MiB"
    );
    assert!(size_of(&judge_dir()) <= 5 * 1024 * 1024);
    for licence in [
        "LICENSE-noto-emoji-images-Apache-2.0.txt",
        "LICENSE-emoji-datasource-MIT.txt",
        "LICENSE-emojibase-MIT.txt",
        "LICENSE-CLIP-vocabulary-MIT.txt",
    ] {
        assert!(mini_dir().join(licence).is_file(), "{licence}");
    }
}

#[test]
fn shipped_model_generates_deterministically_at_its_defaults() {
    let req = request("cat face, animal, pet, smileys & emotion", 11, 2);
    let (a, steps) = run(&req).expect("generating with the shipped model");
    assert_eq!(steps, req.steps);
    assert_eq!(a.len(), 2);
    let (b, _) = run(&req).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.image.dimensions(), (64, 64));
        assert_eq!(x.image.as_raw(), y.image.as_raw(), "same seed, same pixels");
        assert!(spread(&x.image) > 20.0, "a flat picture");
    }
    // Image 2 of a batch is seed + 1, alone or not.
    let (alone, _) = run(&request("cat face, animal, pet, smileys & emotion", 12, 1)).unwrap();
    // Batched matrix products may round a last bit differently; that can move a pixel by a
    // level or two after the steps, anything beyond is a real difference.
    let diff = mean_abs_diff(&alone[0].image, &a[1].image);
    assert!(diff < 0.5, "image 2 of the batch vs seed 12 alone: {diff}");
    assert!(
        mean_abs_diff(&a[0].image, &a[1].image) > 5.0,
        "seeds differ"
    );
}

/// The prompt steers the picture: the shipped judge puts pictures made from the 16 prompts of
/// the README's grid (4 seeds each) in their prompts' categories far more often than chance
/// (1 in 9), and a flag prompt gives flags.
#[test]
fn shipped_model_follows_its_prompt() {
    let judge = Judge::load(&judge_dir()).expect("loading the shipped judge");
    let prompts = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grid-prompts.txt"),
    )
    .unwrap();
    let mut hits = 0;
    let mut total = 0;
    let mut report = String::new();
    for prompt in prompts.lines().filter(|l| !l.trim().is_empty()) {
        // The category is the caption's last part ("..., food & drink").
        let category = prompt.rsplit(',').next().unwrap().trim();
        let want = judge
            .classes()
            .iter()
            .position(|c| c.eq_ignore_ascii_case(category))
            .unwrap_or_else(|| panic!("{prompt}: no judge class {category:?}"));
        let (images, _) = run(&request(prompt, 100, 4)).unwrap();
        let refs: Vec<&image::RgbImage> = images.iter().map(|i| i.image.as_ref()).collect();
        let got: Vec<usize> = judge
            .score_images(&refs)
            .unwrap()
            .into_iter()
            .map(|s| s.class)
            .collect();
        let n = got.iter().filter(|&&c| c == want).count();
        if category == "flags" {
            assert!(n >= 3, "{prompt}: {got:?}");
        }
        hits += n;
        total += got.len();
        report += &format!("{n}/4 {prompt}\n");
    }
    eprintln!("{hits}/{total} judged in their prompt's category:\n{report}");
    // Measured by `atelier eval` over 200 prompts: 81.5%; these 64 pictures: 45 when this
    // was written (the model before it: 26; the epsilon one before that: 18). By chance (1 in
    // 9) 64 pictures would score 36 or more with a probability below 1 in 10^15.
    assert!(
        hits >= 36,
        "{hits}/{total} judged in their prompt's category:\n{report}"
    );
}

/// Atelier Mini Scribble: shipped beside the Mini, found as a ControlNet and as the Mini's own,
/// small, with its attribution; and it steers: pictures of four prompts follow a drawn layout
/// (a ring in one corner, a box in another) far better, by edge F1 against the lines, than the
/// same prompts and seeds without it.
#[test]
fn shipped_scribble_controlnet_is_the_minis_own_and_follows_sketches() {
    use atelier::generation::ControlSpec;
    use atelier::train::eval::control::edge_f1;
    let dir = embedded_models_dir().join("atelier-mini-scribble");
    let found = discover(&[]);
    assert!(found.controlnets.contains(&dir), "{:?}", found.controlnets);
    assert_eq!(
        atelier::models::own_controlnet(&mini_dir(), &found.controlnets),
        Some(dir.clone())
    );
    assert!(size_of(&dir) <= 15 * 1024 * 1024, "{} bytes", size_of(&dir));
    for file in [
        "ATTRIBUTION.md",
        "README.md",
        "LICENSE-noto-emoji-images-Apache-2.0.txt",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let weights = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&weights).unwrap();
    assert!(tensors
        .tensors()
        .iter()
        .all(|(_, t)| t.dtype() == safetensors::Dtype::F16));
    // A ring in the top left and a box in the bottom right, white on black, 2 px lines.
    let sketch = image::RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as f32 - 20.0, y as f32 - 20.0);
        let ring = ((dx * dx + dy * dy).sqrt() - 12.0).abs() < 1.0;
        let inside = (34..58).contains(&x) && (36..58).contains(&y);
        let edge = inside && (!(36..=55).contains(&x) || !(38..=55).contains(&y));
        image::Rgb(if ring || edge { [255; 3] } else { [0; 3] })
    });
    let (mut with, mut without) = (0.0, 0.0);
    let prompts = [
        "cat face, animal, pet, animals & nature",
        "red apple, fruit, food & drink",
        "grinning face, smile, smileys & emotion",
        "soccer ball, football, activities",
    ];
    for (i, prompt) in prompts.iter().enumerate() {
        let plain = request(prompt, 40 + i as u64, 1);
        let mut steered = plain.clone();
        steered.controlnets.push(ControlSpec::new(
            dir.clone(),
            std::sync::Arc::new(sketch.clone()),
        ));
        let (a, _) = run(&plain).unwrap();
        let (b, _) = run(&steered).unwrap();
        without += edge_f1(&sketch, &a[0].image).2;
        with += edge_f1(&sketch, &b[0].image).2;
    }
    let n = prompts.len() as f64;
    let (with, without) = (with / n, without / n);
    eprintln!("edge F1 with the ControlNet {with:.3}, without {without:.3}");
    assert!(
        with > 1.5 * without && with > 0.3,
        "edge F1 with the ControlNet {with:.3}, without {without:.3}"
    );
}

/// The subject pass on Atelier Mini, whose card names its white ground: a sketched subject
/// in a corner is drawn at the Mini's size and put there on white, following the lines far
/// better than the Mini alone does.
#[test]
fn the_minis_subject_pass_puts_the_sketched_subject_on_white() {
    use atelier::generation::ControlSpec;
    use atelier::train::eval::control::edge_f1;
    let dir = embedded_models_dir().join("atelier-mini-scribble");
    // A ring in the bottom right, a third of the frame across.
    let sketch = image::RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as f32 - 44.0, y as f32 - 42.0);
        let on = ((dx * dx + dy * dy).sqrt() - 10.0).abs() < 1.0;
        image::Rgb(if on { [255; 3] } else { [0; 3] })
    });
    let sq = atelier::diffusion::subject::subject_square(&[&sketch], 64, 64).unwrap();
    let (mut with, mut without) = (0.0, 0.0);
    let prompts = [
        "grinning face, smile, smileys & emotion",
        "red apple, fruit, food & drink",
    ];
    for (i, prompt) in prompts.iter().enumerate() {
        let plain = request(prompt, 70 + i as u64, 1);
        let mut steered = plain.clone();
        steered.controlnets.push(ControlSpec::new(
            dir.clone(),
            std::sync::Arc::new(sketch.clone()),
        ));
        steered.subject_pass = true;
        let (a, _) = run(&plain).unwrap();
        let (b, _) = run(&steered).unwrap();
        for (x, y, p) in b[0].image.enumerate_pixels() {
            let inside = (sq.left..sq.left + sq.side).contains(&x)
                && (sq.top..sq.top + sq.side).contains(&y);
            if !inside {
                assert_eq!(p.0, [255, 255, 255], "({x}, {y}) is outside the square");
            }
        }
        assert!(spread(&b[0].image) > 10.0, "{prompt}: a blank picture");
        without += edge_f1(&sketch, &a[0].image).2;
        with += edge_f1(&sketch, &b[0].image).2;
    }
    assert!(
        with > 1.5 * without,
        "edge F1 with the subject pass {with:.3}, the Mini alone {without:.3}"
    );
}
