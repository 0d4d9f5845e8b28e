//! What an evaluation reports: its result types, the printed table, the JSON report and the
//! sample pictures written for a look.

use super::*;

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

pub(crate) fn write_samples(
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
