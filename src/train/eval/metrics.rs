//! The measures: adherence (judge verdicts against prompt categories), the judge's accuracy on
//! real pictures, diversity among seeds of one prompt, nearest training image, and the
//! Fréchet distance between feature distributions.

use super::*;
use crate::train::linalg::{matmul, sqrt_psd, symmetric_eigen, symmetrised};

pub(crate) fn adherence(
    judge: &Judge,
    prompts: &[EvalPrompt],
    targets: &[Option<usize>],
    scored: &[crate::train::judge::Scored],
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
pub(crate) fn real_image_accuracy(
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

pub(crate) fn features_of<'a>(
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

pub(crate) fn diversity(
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
pub(crate) fn nearest_image(image: &RgbImage, data: &Dataset) -> (usize, f64) {
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
