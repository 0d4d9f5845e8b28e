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

pub mod control;
mod metrics;
mod prompts;
mod report;

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

use metrics::{adherence, diversity, features_of, nearest_image, real_image_accuracy};
pub use metrics::{feature_distance, frechet_distance, pixel_distance, Gaussian};
use prompts::dataset_prompts;
pub use prompts::{read_prompts_file, stratified_pick, EvalPrompt, Split};
use report::write_samples;
pub use report::{
    Adherence, Diversity, EvalReport, Frechet, Memorisation, NearestTraining, RealAccuracy,
    SampleResult, Settings, SplitAccuracy, Timing,
};

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
    let data = RealData::load(opts, &judge, on_progress)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xE7A1);
    let prompts = pick_prompts(opts, &judge, &data, &mut rng)?;
    let generated = generate_all(opts, &prompts, on_progress)?;
    if let Some(dir) = &opts.samples_dir {
        write_samples(dir, &generated.images, &generated.diversity_sets)?;
    }
    on_progress("judging", 0, 1);
    let scores = score(&judge, &prompts, &generated.images, &data)?;
    let real_features = data.features(&judge)?;
    let frechet = frechet(&judge, &scores, &data, real_features.as_deref(), &mut rng)?;
    on_progress("judging", 1, 1);
    let diversity = if generated.diversity_sets.is_empty() {
        None
    } else {
        Some(diversity(
            &judge,
            &generated.diversity_sets,
            real_features.as_deref(),
        )?)
    };
    let (memorisation, nearest) = memorisation(opts, &scores.fitted, &data, on_progress);
    let samples = sample_results(opts, &judge, &prompts, &scores, nearest);
    let images = generated.count();
    Ok(EvalReport {
        model: opts.model.clone(),
        judge: opts.judge.clone(),
        settings: generated.settings,
        adherence: scores.adherence,
        frechet,
        diversity,
        memorisation,
        timing: Timing {
            images,
            generation_secs: generated.secs,
            images_per_sec: images as f64 / generated.secs.max(1e-9),
            total_secs: started.elapsed().as_secs_f64(),
        },
        samples,
    })
}

/// The real pictures the evaluation compares with: the held-out split and the training split.
struct RealData {
    eval: Option<Dataset>,
    train: Option<Dataset>,
}

impl RealData {
    fn load(
        opts: &EvalOptions,
        judge: &Judge,
        on_progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<Self, EvalError> {
        let data_opts = DataOptions {
            resolution: judge.config().resolution,
            background: judge.config().background,
        };
        on_progress("loading data", 0, 1);
        let open = |dir: &Option<PathBuf>| {
            dir.as_deref()
                .map(|d| open_dataset(d, &data_opts))
                .transpose()
        };
        let data = Self {
            eval: open(&opts.eval_data)?,
            train: open(&opts.train_data)?,
        };
        on_progress("loading data", 1, 1);
        Ok(data)
    }

    /// The set the Fréchet distance compares with (held-out when there is one), and its name.
    fn reference(&self) -> Option<(&Dataset, &'static str)> {
        match (&self.eval, &self.train) {
            (Some(d), _) => Some((d, "held-out")),
            (None, Some(d)) => Some((d, "training")),
            (None, None) => None,
        }
    }

    /// The judge's features of the reference set.
    fn features(&self, judge: &Judge) -> Result<Option<Vec<Vec<f32>>>, EvalError> {
        self.reference()
            .map(|(data, _)| features_of(judge, data.items.iter().map(|i| &i.image)))
            .transpose()
    }
}

/// The prompts to evaluate: from the prompts file, else half from each split's captions.
fn pick_prompts(
    opts: &EvalOptions,
    judge: &Judge,
    data: &RealData,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<EvalPrompt>, EvalError> {
    let label_key = &judge.config().label_key;
    let prompts = match &opts.prompts {
        Some(file) => stratified_pick(read_prompts_file(file, label_key)?, opts.n, rng),
        None => {
            let (eval_n, train_n) = match (&data.eval, &data.train) {
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
            if let Some(d) = &data.eval {
                let c = dataset_prompts(d, label_key, Split::HeldOut);
                picked.extend(stratified_pick(c, eval_n, rng));
            }
            if let Some(d) = &data.train {
                let c = dataset_prompts(d, label_key, Split::Training);
                picked.extend(stratified_pick(c, train_n, rng));
            }
            picked
        }
    };
    if prompts.is_empty() {
        return Err(EvalError::Options("no prompts to evaluate".into()));
    }
    Ok(prompts)
}

/// What the model made: one picture per prompt, and several seeds of the first prompts.
struct Generated {
    settings: Settings,
    images: Vec<RgbImage>,
    diversity_sets: Vec<Vec<RgbImage>>,
    secs: f64,
}

impl Generated {
    fn count(&self) -> usize {
        self.images.len() + self.diversity_sets.iter().map(Vec::len).sum::<usize>()
    }
}

fn generate_all(
    opts: &EvalOptions,
    prompts: &[EvalPrompt],
    on_progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Generated, EvalError> {
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
    let started = Instant::now();
    let mut images: Vec<RgbImage> = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        on_progress("generating", i, prompts.len());
        let seed = opts.seed + i as u64;
        let mut one = generate(&mut generator, &base, &prompt.caption, seed, 1)?;
        images.push(one.remove(0));
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
    Ok(Generated {
        settings,
        images,
        diversity_sets,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// The judge's verdicts on the generated pictures (fitted to its input size).
struct Scores {
    fitted: Vec<RgbImage>,
    scored: Vec<crate::train::judge::Scored>,
    /// Each prompt's category as the judge's class, when it knows it.
    targets: Vec<Option<usize>>,
    adherence: Adherence,
}

fn score(
    judge: &Judge,
    prompts: &[EvalPrompt],
    generated: &[RgbImage],
    data: &RealData,
) -> Result<Scores, EvalError> {
    let (resolution, background) = (judge.config().resolution, judge.config().background);
    let fitted: Vec<RgbImage> = generated
        .iter()
        .map(|img| fit_square(img, resolution, background))
        .collect();
    let scored = judge.score_images(&fitted.iter().collect::<Vec<_>>())?;
    let targets: Vec<Option<usize>> = prompts
        .iter()
        .map(|p| p.category.as_deref().and_then(|c| judge.class_index(c)))
        .collect();
    let mut adherence = adherence(judge, prompts, &targets, &scored);
    adherence.real_images = real_image_accuracy(
        judge,
        prompts,
        &targets,
        data.eval.as_ref(),
        data.train.as_ref(),
    )?;
    Ok(Scores {
        fitted,
        scored,
        targets,
        adherence,
    })
}

/// The Fréchet distance between the generated pictures' features and the reference set's,
/// with a training subset of the same size against the reference as a floor.
fn frechet(
    judge: &Judge,
    scores: &Scores,
    data: &RealData,
    real_features: Option<&[Vec<f32>]>,
    rng: &mut ChaCha8Rng,
) -> Result<Option<Frechet>, EvalError> {
    let (Some((_, source)), Some(real_f)) = (data.reference(), real_features) else {
        return Ok(None);
    };
    let generated_features: Vec<Vec<f32>> =
        scores.scored.iter().map(|s| s.features.clone()).collect();
    let distance = frechet_distance(&Gaussian::fit(&generated_features), &Gaussian::fit(real_f));
    let real_reference = match (&data.eval, &data.train) {
        (Some(_), Some(train)) => {
            let mut indices: Vec<usize> = (0..train.items.len()).collect();
            indices.shuffle(rng);
            indices.truncate(real_f.len());
            let subset = features_of(judge, indices.iter().map(|&i| &train.items[i].image))?;
            Some(frechet_distance(
                &Gaussian::fit(&subset),
                &Gaussian::fit(real_f),
            ))
        }
        _ => None,
    };
    Ok(Some(Frechet {
        distance,
        feature: format!("judge ({}-d)", judge.config().feature_dim()),
        generated_images: generated_features.len(),
        real_images: real_f.len(),
        real_source: source.into(),
        real_reference,
    }))
}

/// Each generated picture's nearest training image, and how many are closer than the
/// threshold.
fn memorisation(
    opts: &EvalOptions,
    fitted: &[RgbImage],
    data: &RealData,
    on_progress: &mut dyn FnMut(&str, usize, usize),
) -> (Option<Memorisation>, Vec<Option<NearestTraining>>) {
    let mut nearest: Vec<Option<NearestTraining>> = vec![None; fitted.len()];
    let Some(train) = &data.train else {
        return (None, nearest);
    };
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
    let summary = Memorisation {
        training_images: train.items.len(),
        mean_nearest: distances.iter().sum::<f64>() / distances.len() as f64,
        min_nearest: distances.iter().copied().fold(f64::INFINITY, f64::min),
        threshold: opts.memorisation_threshold,
        fraction_below_threshold: below as f64 / distances.len() as f64,
    };
    (Some(summary), nearest)
}

fn sample_results(
    opts: &EvalOptions,
    judge: &Judge,
    prompts: &[EvalPrompt],
    scores: &Scores,
    mut nearest: Vec<Option<NearestTraining>>,
) -> Vec<SampleResult> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| SampleResult {
            index: i,
            prompt: p.caption.clone(),
            category: p.category.clone(),
            split: p.split,
            seed: opts.seed + i as u64,
            predicted: judge.classes()[scores.scored[i].class].clone(),
            correct: scores.targets[i].map(|t| t == scores.scored[i].class),
            nearest_training: nearest[i].take(),
        })
        .collect()
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
