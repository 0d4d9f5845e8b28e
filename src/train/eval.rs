//! `atelier eval`: how good a text-to-image model is, measured with the project's judge
//! classifier ([`super::judge`]). Generates one image per prompt through the real engine
//! pipeline and reports
//! - prompt adherence: how often the judge puts a generated image in its prompt's category
//!   (overall, held-out vs training captions, per category);
//! - a Fréchet distance between judge features of generated and real images (the FID recipe
//!   with a domain judge in place of Inception-v3);
//! - diversity: mean pairwise distance among several seeds of one prompt, and each generated
//!   image's distance to its nearest training image, so memorisation shows;
//! - speed in images per second.
//!
//! Real Inception-v3 weights (`--inception FILE`) are accepted on the command line but not
//! implemented yet: asking for them is a clear error, not a silent fallback.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::data::{fit_square, open_dataset, DataError, DataOptions, Dataset};
use super::judge::{class_accuracies, label_of, ClassAccuracy, Judge};
use crate::diffusion::{DiffusionError, Generator, GeneratorOptions};
use crate::generation::{GenerationRequest, SamplerKind};
use crate::models::{ModelError, ModelInfo, ModelSource};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Diffusion(#[from] DiffusionError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Judge(#[from] super::judge::JudgeError),
    #[error("{path}: bad prompts file: {reason}")]
    Prompts { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "{path}: Inception-v3 features are not supported yet; the Fréchet distance uses the \
         judge's features (leave out --inception)"
    )]
    InceptionUnsupported { path: PathBuf },
    #[error("invalid options: {0}")]
    Options(String),
    #[error("computation failed: {0}")]
    Candle(String),
}

impl From<candle_core::Error> for EvalError {
    fn from(e: candle_core::Error) -> Self {
        EvalError::Candle(crate::diffusion::error_text(&e))
    }
}

impl EvalError {
    pub(crate) fn io(path: &Path, e: &dyn std::fmt::Display) -> Self {
        EvalError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The diffusers-layout model folder to evaluate.
    pub model: PathBuf,
    /// The judge folder (`judge.json` + `judge.safetensors`).
    pub judge: PathBuf,
    /// A jsonl file of prompts (`caption` or `text`, the judge's label key, optional `split`);
    /// a data set's own `captions.jsonl` works. Without it prompts come from the data folders.
    pub prompts: Option<PathBuf>,
    /// How many prompts (one image each).
    pub n: usize,
    /// The held-out split: real images for the Fréchet distance, and half the prompts.
    pub eval_data: Option<PathBuf>,
    /// The training split: the other half of the prompts, and the nearest-image search.
    pub train_data: Option<PathBuf>,
    /// Inception-v3 weights for a real FID: not supported yet (an error).
    pub inception: Option<PathBuf>,
    /// Prompts sampled with several seeds for the diversity measure.
    pub diversity_prompts: usize,
    /// Seeds per diversity prompt (at least 2 for a pairwise distance).
    pub diversity_seeds: usize,
    /// A generated image this close to a training image (mean abs difference per channel,
    /// 0..1) counts as a near copy.
    pub memorisation_threshold: f64,
    /// Seeds the prompt selection; image `i` is generated with seed `seed + i`.
    pub seed: u64,
    /// Overrides of the model's recommended settings.
    pub steps: Option<usize>,
    pub guidance: Option<f32>,
    pub sampler: Option<SamplerKind>,
    /// Where to write the generated images (`NNN.png`) and `diversity-grid.png`.
    pub samples_dir: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            judge: PathBuf::new(),
            prompts: None,
            n: 200,
            eval_data: None,
            train_data: None,
            inception: None,
            diversity_prompts: 8,
            diversity_seeds: 4,
            memorisation_threshold: 0.02,
            seed: 0,
            steps: None,
            guidance: None,
            sampler: None,
            samples_dir: None,
        }
    }
}

/// Where a prompt came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    HeldOut,
    Training,
    /// A prompts file without a `split` key.
    File,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPrompt {
    pub caption: String,
    /// The judge class the prompt should produce, when known.
    pub category: Option<String>,
    pub split: Split,
    /// Index of the prompt's own real image in its split's data set (prompts drawn from a data
    /// folder), for the judge's accuracy on real images of the same prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub steps: usize,
    pub guidance: f32,
    pub sampler: SamplerKind,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SplitAccuracy {
    pub count: usize,
    pub correct: usize,
    pub accuracy: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Adherence {
    /// Images whose prompt has a category the judge knows.
    pub scored: usize,
    /// Images whose prompt has no (known) category: not scored.
    pub unscored: usize,
    pub accuracy: f64,
    /// Mean of the per-category accuracies.
    pub balanced_accuracy: f64,
    /// What always answering the commonest prompt category would score.
    pub chance: f64,
    pub held_out: Option<SplitAccuracy>,
    pub training: Option<SplitAccuracy>,
    pub per_category: Vec<ClassAccuracy>,
    /// The judge on the real images of the same prompts (where they are known): what a
    /// generator that reproduced the data exactly would score, the ceiling of this measure.
    #[serde(default)]
    pub real_images: Option<RealAccuracy>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RealAccuracy {
    pub count: usize,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Frechet {
    /// Fréchet distance between Gaussians fitted to judge features of the generated images
    /// and of the real ones.
    pub distance: f64,
    pub feature: String,
    pub generated_images: usize,
    pub real_images: usize,
    /// Which real images: `held-out` or `training`.
    pub real_source: String,
    /// The same distance between two real sets (a training subset of the real set's size vs
    /// the real set): about what a perfect generator would get with these sample sizes.
    pub real_reference: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Diversity {
    pub prompts: usize,
    pub seeds_per_prompt: usize,
    /// Mean pairwise Euclidean distance of judge features among seeds of one prompt.
    pub within_prompt_features: f64,
    /// Mean pairwise pixel distance (mean abs difference per channel, 0..1) among seeds of
    /// one prompt.
    pub within_prompt_pixels: f64,
    /// The same among images of different prompts (for scale).
    pub between_prompts_features: f64,
    pub between_prompts_pixels: f64,
    /// Mean pairwise feature distance among real images (for scale).
    pub real_features: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Memorisation {
    pub training_images: usize,
    /// Over generated images: distance (mean abs difference per channel, 0..1) to the
    /// nearest training image.
    pub mean_nearest: f64,
    pub min_nearest: f64,
    pub threshold: f64,
    /// Share of generated images nearer than `threshold` to some training image.
    pub fraction_below_threshold: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    /// Images generated (adherence and diversity sets).
    pub images: usize,
    pub generation_secs: f64,
    pub images_per_sec: f64,
    pub total_secs: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NearestTraining {
    pub file: String,
    pub distance: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleResult {
    pub index: usize,
    pub prompt: String,
    pub category: Option<String>,
    pub split: Split,
    pub seed: u64,
    pub predicted: String,
    pub correct: Option<bool>,
    pub nearest_training: Option<NearestTraining>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub model: PathBuf,
    pub judge: PathBuf,
    pub settings: Settings,
    pub adherence: Adherence,
    pub frechet: Option<Frechet>,
    pub diversity: Option<Diversity>,
    pub memorisation: Option<Memorisation>,
    pub timing: Timing,
    pub samples: Vec<SampleResult>,
}

/// Runs the whole evaluation, reporting `(phase, done, of)` as it goes.
pub fn evaluate(
    opts: &EvalOptions,
    on_progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    if let Some(path) = &opts.inception {
        return Err(EvalError::InceptionUnsupported { path: path.clone() });
    }
    if opts.n == 0 {
        return Err(EvalError::Options("--n must be at least 1".into()));
    }
    let judge = Judge::load(&opts.judge)?;
    let label_key = judge.config().label_key.clone();
    let data_opts = DataOptions {
        resolution: judge.config().resolution,
        background: judge.config().background,
    };
    on_progress("loading data", 0, 1);
    let eval_data = opts
        .eval_data
        .as_deref()
        .map(|d| open_dataset(d, &data_opts))
        .transpose()?;
    let train_data = opts
        .train_data
        .as_deref()
        .map(|d| open_dataset(d, &data_opts))
        .transpose()?;
    on_progress("loading data", 1, 1);

    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xE7A1);
    let prompts = match &opts.prompts {
        Some(file) => {
            let candidates = read_prompts_file(file, &label_key)?;
            stratified_pick(candidates, opts.n, &mut rng)
        }
        None => {
            let (eval_n, train_n) = match (&eval_data, &train_data) {
                (Some(_), Some(_)) => (opts.n.div_ceil(2), opts.n / 2),
                (Some(_), None) => (opts.n, 0),
                (None, Some(_)) => (0, opts.n),
                (None, None) => {
                    return Err(EvalError::Options(
                        "give a prompts file or a data folder (--data / --train-data)".into(),
                    ))
                }
            };
            let mut picked = Vec::new();
            if let Some(data) = &eval_data {
                let c = dataset_prompts(data, &label_key, Split::HeldOut);
                picked.extend(stratified_pick(c, eval_n, &mut rng));
            }
            if let Some(data) = &train_data {
                let c = dataset_prompts(data, &label_key, Split::Training);
                picked.extend(stratified_pick(c, train_n, &mut rng));
            }
            picked
        }
    };
    if prompts.is_empty() {
        return Err(EvalError::Options("no prompts to evaluate".into()));
    }

    // ---- generation --------------------------------------------------------------------------
    let info = ModelInfo::from_dir(&opts.model, ModelSource::Given)?;
    let recommended = info.recommended();
    let settings = Settings {
        steps: opts.steps.unwrap_or(recommended.steps),
        guidance: opts.guidance.unwrap_or(recommended.guidance),
        sampler: opts.sampler.unwrap_or(recommended.sampler),
        width: info.native_size,
        height: info.native_size,
        seed: opts.seed,
    };
    let base = GenerationRequest {
        model_dir: opts.model.clone(),
        steps: settings.steps,
        guidance: settings.guidance,
        sampler: settings.sampler,
        width: settings.width,
        height: settings.height,
        ..Default::default()
    };
    let mut generator = Generator::new(GeneratorOptions {
        low_memory: false,
        images_per_pass: 4,
        ..Default::default()
    });
    let generation_started = Instant::now();
    let mut generated: Vec<RgbImage> = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        on_progress("generating", i, prompts.len());
        let mut images = generate(
            &mut generator,
            &base,
            &prompt.caption,
            opts.seed + i as u64,
            1,
        )?;
        generated.push(images.remove(0));
    }
    on_progress("generating", prompts.len(), prompts.len());
    let k = opts.diversity_prompts.min(prompts.len());
    let m = opts.diversity_seeds;
    let mut diversity_sets: Vec<Vec<RgbImage>> = Vec::new();
    if k > 0 && m >= 2 {
        for (j, prompt) in prompts.iter().take(k).enumerate() {
            on_progress("diversity", j, k);
            let seed = opts.seed + 1_000_000 + (j * m) as u64;
            diversity_sets.push(generate(
                &mut generator,
                &base,
                &prompt.caption,
                seed,
                m as u32,
            )?);
        }
        on_progress("diversity", k, k);
    }
    let generation_secs = generation_started.elapsed().as_secs_f64();
    let images_generated = generated.len() + diversity_sets.iter().map(Vec::len).sum::<usize>();
    drop(generator);

    if let Some(dir) = &opts.samples_dir {
        write_samples(dir, &generated, &diversity_sets)?;
    }

    // ---- scoring -----------------------------------------------------------------------------
    on_progress("judging", 0, 1);
    let resolution = judge.config().resolution;
    let background = judge.config().background;
    let fitted: Vec<RgbImage> = generated
        .iter()
        .map(|img| fit_square(img, resolution, background))
        .collect();
    let scored = judge.score_images(&fitted.iter().collect::<Vec<_>>())?;
    let targets: Vec<Option<usize>> = prompts
        .iter()
        .map(|p| p.category.as_deref().and_then(|c| judge.class_index(c)))
        .collect();
    let mut adherence = adherence(&judge, &prompts, &targets, &scored);
    adherence.real_images = real_image_accuracy(
        &judge,
        &prompts,
        &targets,
        eval_data.as_ref(),
        train_data.as_ref(),
    )?;

    let real = match (&eval_data, &train_data) {
        (Some(d), _) => Some((d, "held-out")),
        (None, Some(d)) => Some((d, "training")),
        (None, None) => None,
    };
    let real_features = match real {
        Some((data, _)) => Some(features_of(&judge, data.items.iter().map(|i| &i.image))?),
        None => None,
    };
    let generated_features: Vec<Vec<f32>> = scored.iter().map(|s| s.features.clone()).collect();
    let frechet = match (real, &real_features) {
        (Some((_, source)), Some(real_f)) => {
            let distance =
                frechet_distance(&Gaussian::fit(&generated_features), &Gaussian::fit(real_f));
            let real_reference = match (&eval_data, &train_data) {
                (Some(_), Some(train)) => {
                    let mut indices: Vec<usize> = (0..train.items.len()).collect();
                    indices.shuffle(&mut rng);
                    indices.truncate(real_f.len());
                    let subset =
                        features_of(&judge, indices.iter().map(|&i| &train.items[i].image))?;
                    Some(frechet_distance(
                        &Gaussian::fit(&subset),
                        &Gaussian::fit(real_f),
                    ))
                }
                _ => None,
            };
            Some(Frechet {
                distance,
                feature: format!("judge ({}-d)", judge.config().feature_dim()),
                generated_images: generated_features.len(),
                real_images: real_f.len(),
                real_source: source.into(),
                real_reference,
            })
        }
        _ => None,
    };
    on_progress("judging", 1, 1);

    let diversity = if diversity_sets.is_empty() {
        None
    } else {
        Some(diversity(
            &judge,
            &diversity_sets,
            real_features.as_deref(),
        )?)
    };

    // ---- memorisation ------------------------------------------------------------------------
    let mut nearest: Vec<Option<NearestTraining>> = vec![None; fitted.len()];
    let memorisation = match &train_data {
        Some(train) => {
            let mut distances = Vec::with_capacity(fitted.len());
            for (i, image) in fitted.iter().enumerate() {
                on_progress("nearest training image", i, fitted.len());
                let (index, distance) = nearest_image(image, train);
                distances.push(distance);
                nearest[i] = Some(NearestTraining {
                    file: train.items[index]
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    distance,
                });
            }
            on_progress("nearest training image", fitted.len(), fitted.len());
            let below = distances
                .iter()
                .filter(|&&d| d < opts.memorisation_threshold)
                .count();
            Some(Memorisation {
                training_images: train.items.len(),
                mean_nearest: distances.iter().sum::<f64>() / distances.len() as f64,
                min_nearest: distances.iter().copied().fold(f64::INFINITY, f64::min),
                threshold: opts.memorisation_threshold,
                fraction_below_threshold: below as f64 / distances.len() as f64,
            })
        }
        None => None,
    };

    let samples = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| SampleResult {
            index: i,
            prompt: p.caption.clone(),
            category: p.category.clone(),
            split: p.split,
            seed: opts.seed + i as u64,
            predicted: judge.classes()[scored[i].class].clone(),
            correct: targets[i].map(|t| t == scored[i].class),
            nearest_training: nearest[i].take(),
        })
        .collect();

    Ok(EvalReport {
        model: opts.model.clone(),
        judge: opts.judge.clone(),
        settings,
        adherence,
        frechet,
        diversity,
        memorisation,
        timing: Timing {
            images: images_generated,
            generation_secs,
            images_per_sec: images_generated as f64 / generation_secs.max(1e-9),
            total_secs: started.elapsed().as_secs_f64(),
        },
        samples,
    })
}

fn generate(
    generator: &mut Generator,
    base: &GenerationRequest,
    prompt: &str,
    seed: u64,
    batch: u32,
) -> Result<Vec<RgbImage>, EvalError> {
    let request = GenerationRequest {
        prompt: prompt.to_owned(),
        seed,
        batch,
        ..base.clone()
    };
    let images: Vec<RgbImage> = generator
        .collect(&request, &AtomicBool::new(false))?
        .0
        .into_iter()
        .map(|img| (*img.image).clone())
        .collect();
    if images.len() != batch as usize {
        return Err(EvalError::Options(format!(
            "the generator returned {} images for a batch of {batch}",
            images.len()
        )));
    }
    Ok(images)
}

fn adherence(
    judge: &Judge,
    prompts: &[EvalPrompt],
    targets: &[Option<usize>],
    scored: &[super::judge::Scored],
) -> Adherence {
    let mut t = Vec::new();
    let mut p = Vec::new();
    let mut splits: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for ((prompt, target), s) in prompts.iter().zip(targets).zip(scored) {
        let Some(target) = *target else { continue };
        t.push(target);
        p.push(s.class);
        let key = match prompt.split {
            Split::HeldOut => "held-out",
            Split::Training => "training",
            Split::File => "file",
        };
        let e = splits.entry(key).or_default();
        e.0 += 1;
        e.1 += usize::from(target == s.class);
    }
    let (accuracy, balanced_accuracy, per_category) = class_accuracies(judge.classes(), &t, &p);
    let split = |key: &str| {
        splits.get(key).map(|&(count, correct)| SplitAccuracy {
            count,
            correct,
            accuracy: correct as f64 / count as f64,
        })
    };
    let chance = per_category
        .iter()
        .map(|c| c.count)
        .max()
        .map_or(0.0, |m| m as f64 / t.len() as f64);
    Adherence {
        scored: t.len(),
        unscored: prompts.len() - t.len(),
        accuracy,
        balanced_accuracy,
        chance,
        held_out: split("held-out"),
        training: split("training"),
        per_category,
        real_images: None,
    }
}

/// The judge's accuracy on the real images of the prompts that have one and a known category.
fn real_image_accuracy(
    judge: &Judge,
    prompts: &[EvalPrompt],
    targets: &[Option<usize>],
    held_out: Option<&Dataset>,
    training: Option<&Dataset>,
) -> Result<Option<RealAccuracy>, EvalError> {
    let mut images = Vec::new();
    let mut t = Vec::new();
    for (prompt, target) in prompts.iter().zip(targets) {
        let data = match prompt.split {
            Split::HeldOut => held_out,
            Split::Training => training,
            Split::File => None,
        };
        let item = data.zip(prompt.item).and_then(|(d, i)| d.items.get(i));
        if let (Some(item), Some(target)) = (item, *target) {
            images.push(&item.image);
            t.push(target);
        }
    }
    if images.is_empty() {
        return Ok(None);
    }
    let p: Vec<usize> = judge
        .score_images(&images)?
        .into_iter()
        .map(|s| s.class)
        .collect();
    let (accuracy, balanced_accuracy, _) = class_accuracies(judge.classes(), &t, &p);
    Ok(Some(RealAccuracy {
        count: t.len(),
        accuracy,
        balanced_accuracy,
    }))
}

fn features_of<'a>(
    judge: &Judge,
    images: impl Iterator<Item = &'a RgbImage>,
) -> Result<Vec<Vec<f32>>, EvalError> {
    let images: Vec<&RgbImage> = images.collect();
    Ok(judge
        .score_images(&images)?
        .into_iter()
        .map(|s| s.features)
        .collect())
}

fn diversity(
    judge: &Judge,
    sets: &[Vec<RgbImage>],
    real_features: Option<&[Vec<f32>]>,
) -> Result<Diversity, EvalError> {
    let resolution = judge.config().resolution;
    let background = judge.config().background;
    let fitted: Vec<Vec<RgbImage>> = sets
        .iter()
        .map(|set| {
            set.iter()
                .map(|i| fit_square(i, resolution, background))
                .collect()
        })
        .collect();
    let features: Vec<Vec<Vec<f32>>> = fitted
        .iter()
        .map(|set| features_of(judge, set.iter()))
        .collect::<Result<_, _>>()?;
    let (mut within_f, mut within_p, mut within_n) = (0.0, 0.0, 0usize);
    let (mut between_f, mut between_p, mut between_n) = (0.0, 0.0, 0usize);
    for a in 0..fitted.len() {
        for i in 0..fitted[a].len() {
            for b in a..fitted.len() {
                let start = if a == b { i + 1 } else { 0 };
                for j in start..fitted[b].len() {
                    let f = feature_distance(&features[a][i], &features[b][j]);
                    let p = pixel_distance(&fitted[a][i], &fitted[b][j]);
                    if a == b {
                        within_f += f;
                        within_p += p;
                        within_n += 1;
                    } else {
                        between_f += f;
                        between_p += p;
                        between_n += 1;
                    }
                }
            }
        }
    }
    let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { sum / n as f64 };
    let real = real_features.map(|r| {
        // At most 500 images: enough for a stable mean.
        let r = &r[..r.len().min(500)];
        let (mut sum, mut n) = (0.0, 0usize);
        for i in 0..r.len() {
            for j in i + 1..r.len() {
                sum += feature_distance(&r[i], &r[j]);
                n += 1;
            }
        }
        mean(sum, n)
    });
    Ok(Diversity {
        prompts: sets.len(),
        seeds_per_prompt: sets.first().map_or(0, Vec::len),
        within_prompt_features: mean(within_f, within_n),
        within_prompt_pixels: mean(within_p, within_n),
        between_prompts_features: mean(between_f, between_n),
        between_prompts_pixels: mean(between_p, between_n),
        real_features: real,
    })
}

/// Euclidean distance of two feature vectors.
pub fn feature_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Mean absolute difference per channel, in 0..1 (0: identical). Images of different sizes
/// are infinitely far apart.
pub fn pixel_distance(a: &RgbImage, b: &RgbImage) -> f64 {
    if a.dimensions() != b.dimensions() {
        return f64::INFINITY;
    }
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / (a.as_raw().len() as f64 * 255.0)
}

/// The training image nearest to `image` in pixel distance: `(index, distance)`.
fn nearest_image(image: &RgbImage, data: &Dataset) -> (usize, f64) {
    let raw = image.as_raw();
    let mut best = (0usize, u64::MAX);
    for (index, item) in data.items.iter().enumerate() {
        let other = item.image.as_raw();
        if other.len() != raw.len() {
            continue;
        }
        let mut sum = 0u64;
        // Rows at a time, giving up once this image is already farther than the best.
        for (a, b) in raw.chunks(192).zip(other.chunks(192)) {
            sum += a
                .iter()
                .zip(b)
                .map(|(x, y)| u32::from(x.abs_diff(*y)))
                .sum::<u32>() as u64;
            if sum >= best.1 {
                break;
            }
        }
        if sum < best.1 {
            best = (index, sum);
        }
    }
    (best.0, best.1 as f64 / (raw.len().max(1) as f64 * 255.0))
}

/// Every captioned item of `data` as a prompt with its label.
fn dataset_prompts(data: &Dataset, label_key: &str, split: Split) -> Vec<EvalPrompt> {
    data.items
        .iter()
        .enumerate()
        .filter(|(_, item)| !item.caption.is_empty())
        .map(|(index, item)| EvalPrompt {
            caption: item.caption.clone(),
            category: label_of(&item.extra, label_key),
            split,
            item: Some(index),
        })
        .collect()
}

/// Reads a jsonl prompts file: each line an object with `caption` (or `text`), optionally the
/// label key and `split` (`held-out`/`eval` or `training`/`train`).
pub fn read_prompts_file(path: &Path, label_key: &str) -> Result<Vec<EvalPrompt>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, &e))?;
    let bad = |line: usize, reason: String| EvalError::Prompts {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(bad(i + 1, "not a JSON object".into()));
        };
        let caption = ["caption", "text"]
            .iter()
            .find_map(|k| object.get(*k).and_then(|v| v.as_str()))
            .ok_or_else(|| bad(i + 1, "no \"caption\" or \"text\"".into()))?;
        let split = match object.get("split").and_then(|v| v.as_str()) {
            Some("held-out" | "heldout" | "eval" | "test" | "val" | "validation") => Split::HeldOut,
            Some("training" | "train") => Split::Training,
            _ => Split::File,
        };
        prompts.push(EvalPrompt {
            caption: caption.to_owned(),
            category: label_of(object, label_key),
            split,
            item: None,
        });
    }
    if prompts.is_empty() {
        return Err(EvalError::Prompts {
            path: path.to_path_buf(),
            reason: "no prompts".into(),
        });
    }
    Ok(prompts)
}

/// A seeded selection of `n` prompts spread evenly over categories: each category's prompts
/// are shuffled, then categories are visited in turn (sorted by name) until `n` are picked or
/// all are used. So consecutive prompts have different categories.
pub fn stratified_pick(
    candidates: Vec<EvalPrompt>,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<EvalPrompt> {
    let mut groups: BTreeMap<String, Vec<EvalPrompt>> = BTreeMap::new();
    for p in candidates {
        groups
            .entry(p.category.clone().unwrap_or_default())
            .or_default()
            .push(p);
    }
    let mut queues: Vec<std::vec::IntoIter<EvalPrompt>> = groups
        .into_values()
        .map(|mut g| {
            g.shuffle(rng);
            g.into_iter()
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let before = out.len();
        for q in &mut queues {
            if out.len() == n {
                break;
            }
            if let Some(p) = q.next() {
                out.push(p);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

fn write_samples(
    dir: &Path,
    generated: &[RgbImage],
    diversity_sets: &[Vec<RgbImage>],
) -> Result<(), EvalError> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, &e))?;
    for (i, image) in generated.iter().enumerate() {
        let path = dir.join(format!("{i:03}.png"));
        image.save(&path).map_err(|e| EvalError::io(&path, &e))?;
    }
    let Some(first) = diversity_sets.first().and_then(|s| s.first()) else {
        return Ok(());
    };
    let (w, h) = first.dimensions();
    let cols = diversity_sets.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let mut grid = RgbImage::from_pixel(
        w * cols,
        h * diversity_sets.len() as u32,
        image::Rgb([255, 255, 255]),
    );
    for (row, set) in diversity_sets.iter().enumerate() {
        for (col, image) in set.iter().enumerate() {
            image::imageops::replace(
                &mut grid,
                image,
                i64::from(col as u32 * w),
                i64::from(row as u32 * h),
            );
        }
    }
    let path = dir.join("diversity-grid.png");
    grid.save(&path).map_err(|e| EvalError::io(&path, &e))
}

// ---- Fréchet distance ---------------------------------------------------------------------------

/// A Gaussian fitted to feature vectors: mean and (unbiased, `n - 1`) covariance, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    pub dim: usize,
    pub mean: Vec<f64>,
    /// Row-major `dim x dim`.
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// Fits `samples` (all of one length). One sample gives a zero covariance.
    pub fn fit(samples: &[Vec<f32>]) -> Self {
        let dim = samples.first().map_or(0, Vec::len);
        let n = samples.len();
        let mut mean = vec![0.0; dim];
        for s in samples {
            for (m, &x) in mean.iter_mut().zip(s) {
                *m += f64::from(x);
            }
        }
        for m in &mut mean {
            *m /= n.max(1) as f64;
        }
        let mut cov = vec![0.0; dim * dim];
        let mut centred = vec![0.0; dim];
        for s in samples {
            for ((c, &x), m) in centred.iter_mut().zip(s).zip(&mean) {
                *c = f64::from(x) - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                let row = &mut cov[i * dim..(i + 1) * dim];
                for j in i..dim {
                    row[j] += ci * centred[j];
                }
            }
        }
        let denom = n.saturating_sub(1).max(1) as f64;
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / denom;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Self { dim, mean, cov }
    }

    /// A Gaussian given by its parameters (`cov` row-major, symmetric).
    pub fn new(mean: Vec<f64>, cov: Vec<f64>) -> Self {
        Self {
            dim: mean.len(),
            mean,
            cov,
        }
    }
}

/// `|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)`, the Fréchet (2-Wasserstein)
/// distance between two Gaussians, via symmetric eigendecompositions (negative eigenvalues
/// from rounding are clamped to zero).
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    assert_eq!(
        a.dim, b.dim,
        "Fréchet distance of Gaussians of different dimension"
    );
    let n = a.dim;
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace = |m: &[f64]| (0..n).map(|i| m[i * n + i]).sum::<f64>();
    let root_a = sqrt_psd(&a.cov, n);
    let product = matmul(&matmul(&root_a, &b.cov, n), &root_a, n);
    let product = symmetrised(&product, n);
    let (values, _) = symmetric_eigen(&product, n);
    let cross: f64 = values.iter().map(|&v| v.max(0.0).sqrt()).sum();
    (mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * cross).max(0.0)
}

/// The symmetric positive semi-definite square root of `m` (`n x n`, row-major).
pub fn sqrt_psd(m: &[f64], n: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(m, n);
    let mut out = vec![0.0; n * n];
    for (k, &value) in values.iter().enumerate() {
        let s = value.max(0.0).sqrt();
        if s == 0.0 {
            continue;
        }
        for i in 0..n {
            let vik = vectors[i * n + k] * s;
            if vik == 0.0 {
                continue;
            }
            for j in 0..n {
                out[i * n + j] += vik * vectors[j * n + k];
            }
        }
    }
    out
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik == 0.0 {
                continue;
            }
            let (row, brow) = (&mut out[i * n..(i + 1) * n], &b[k * n..(k + 1) * n]);
            for (o, &bkj) in row.iter_mut().zip(brow) {
                *o += aik * bkj;
            }
        }
    }
    out
}

fn symmetrised(m: &[f64], n: usize) -> Vec<f64> {
    let mut out = m.to_vec();
    for i in 0..n {
        for j in i + 1..n {
            let v = 0.5 * (m[i * n + j] + m[j * n + i]);
            out[i * n + j] = v;
            out[j * n + i] = v;
        }
    }
    out
}

/// Eigenvalues and eigenvectors of a symmetric `n x n` matrix (row-major) by cyclic Jacobi
/// rotations. Returns `(values, vectors)` with eigenvector `k` in column `k` of `vectors`
/// (row-major), so `m = V diag(values) V^T`.
pub fn symmetric_eigen(m: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(m.len(), n * n, "symmetric_eigen: not an n x n matrix");
    let mut a = m.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= total * 1e-30 || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let app = a[p * n + p];
                let aqq = a[q * n + q];
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                    sign / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- J^T A J, V <- V J, with J the rotation in the (p, q) plane.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values = (0..n).map(|i| a[i * n + i]).collect();
    (values, v)
}

// ---- output ------------------------------------------------------------------------------------

impl EvalReport {
    /// Pretty JSON of the whole report.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes [`Self::to_json`] to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), EvalError> {
        std::fs::write(path, self.to_json() + "\n").map_err(|e| EvalError::io(path, &e))
    }

    /// A readable summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let st = &self.settings;
        let _ = writeln!(
            s,
            "model  {}\n       {} steps, guidance {}, {}, {}x{}, seeds from {}",
            self.model.display(),
            st.steps,
            st.guidance,
            st.sampler.label(),
            st.width,
            st.height,
            st.seed
        );
        let _ = writeln!(s, "judge  {}", self.judge.display());
        let pct = |x: f64| format!("{:5.1}%", 100.0 * x);
        let a = &self.adherence;
        let _ = writeln!(
            s,
            "\nPrompt adherence (judge's category = prompt's category)"
        );
        let correct: usize = a.per_category.iter().map(|c| c.correct).sum();
        let _ = writeln!(
            s,
            "  {:<22} {:>4}/{:<4} {}   balanced {}, chance {}",
            "all",
            correct,
            a.scored,
            pct(a.accuracy),
            pct(a.balanced_accuracy).trim(),
            pct(a.chance).trim()
        );
        for (name, split) in [
            ("held-out captions", &a.held_out),
            ("training captions", &a.training),
        ] {
            if let Some(sp) = split {
                let _ = writeln!(
                    s,
                    "  {:<22} {:>4}/{:<4} {}",
                    name,
                    sp.correct,
                    sp.count,
                    pct(sp.accuracy)
                );
            }
        }
        if let Some(r) = &a.real_images {
            let _ = writeln!(
                s,
                "  {:<22} {:>9} {}   balanced {}  (the judge on the prompts' own real images)",
                "ceiling",
                r.count,
                pct(r.accuracy),
                pct(r.balanced_accuracy).trim()
            );
        }
        for c in &a.per_category {
            let _ = writeln!(
                s,
                "    {:<20} {:>4}/{:<4} {}",
                c.class,
                c.correct,
                c.count,
                pct(c.accuracy)
            );
        }
        if a.unscored > 0 {
            let _ = writeln!(
                s,
                "  ({} prompts without a known category, not scored)",
                a.unscored
            );
        }
        if let Some(f) = &self.frechet {
            let _ = writeln!(s, "\nFréchet distance, {} features", f.feature);
            let _ = writeln!(
                s,
                "  generated ({}) vs real {} ({}): {:.3}",
                f.generated_images, f.real_source, f.real_images, f.distance
            );
            if let Some(r) = f.real_reference {
                let _ = writeln!(
                    s,
                    "  reference: real training vs real {} (same size): {:.3}",
                    f.real_source, r
                );
            }
        }
        if let Some(d) = &self.diversity {
            let _ = writeln!(
                s,
                "\nDiversity ({} prompts x {} seeds; features: judge distance, pixels: mean abs 0..1)",
                d.prompts, d.seeds_per_prompt
            );
            let _ = writeln!(
                s,
                "  within a prompt   features {:8.3}   pixels {:.4}",
                d.within_prompt_features, d.within_prompt_pixels
            );
            let _ = writeln!(
                s,
                "  between prompts   features {:8.3}   pixels {:.4}",
                d.between_prompts_features, d.between_prompts_pixels
            );
            if let Some(r) = d.real_features {
                let _ = writeln!(s, "  real images       features {r:8.3}");
            }
        }
        if let Some(m) = &self.memorisation {
            let _ = writeln!(
                s,
                "\nNearest training image ({} images; pixels, mean abs 0..1)",
                m.training_images
            );
            let _ = writeln!(
                s,
                "  mean {:.4}   min {:.4}   below {}: {}",
                m.mean_nearest,
                m.min_nearest,
                m.threshold,
                pct(m.fraction_below_threshold).trim()
            );
        }
        let t = &self.timing;
        let _ = writeln!(
            s,
            "\nSpeed  {} images in {:.1} s = {:.2} images/s (total {:.1} s)",
            t.images, t.generation_secs, t.images_per_sec, t.total_secs
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_pick_cycles_through_categories() {
        let mk = |c: &str, i: usize| EvalPrompt {
            caption: format!("{c}{i}"),
            category: Some(c.into()),
            split: Split::File,
            item: None,
        };
        let mut candidates: Vec<EvalPrompt> = (0..10).map(|i| mk("a", i)).collect();
        candidates.extend((0..2).map(|i| mk("b", i)));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let picked = stratified_pick(candidates.clone(), 6, &mut rng);
        let cats: Vec<&str> = picked
            .iter()
            .filter_map(|p| p.category.as_deref())
            .collect();
        assert_eq!(cats, ["a", "b", "a", "b", "a", "a"]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(stratified_pick(candidates, 6, &mut rng), picked);
    }
}
