//! How well pictures follow sketches: `atelier eval --controlnet DIR --sketches DIR`.
//!
//! For each sketch (white lines on black, with a caption), one picture with the ControlNet and
//! one without, same prompt and seed. Edge F1 with a one-pixel tolerance at the output size
//! compares the sketch's lines with the Canny edges of the picture: precision is the share of
//! the picture's edges within a pixel of a line, recall the share of line pixels within a pixel
//! of an edge. The judge says whether each picture still shows what its caption asks for,
//! looking at the picture framed on its subject (the sketches put subjects small and off
//! centre, which the judge, trained on centred pictures, misreads; the whole-picture figure is
//! reported too).
//!
//! The sketches come from `atelier dev make-sketches`: drawn from held-out pictures, made
//! smaller and moved (a layout the model alone does not draw), by a procedure of their own (a
//! wobbly pen tracing the outline, with breaks), not the training conditions' (edge maps
//! thickened, shifted and cut).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use image::{GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::EvalError;
use crate::generation::{ControlSpec, GenerationRequest, SamplerKind};
use crate::sketch::control::canny;
use crate::train::data::{open_dataset, DataOptions};
use crate::train::judge::{frame_subject, label_of, Judge};

/// One line of a sketch set's `sketches.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SketchEntry {
    pub file: String,
    pub caption: String,
    #[serde(default)]
    pub category: Option<String>,
    /// The picture the sketch traces, as placed (`NNN-picture.png`): what a picture that
    /// follows the sketch perfectly looks like, for the evaluation's reference figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
}

/// How large the sketches draw their subjects, as a share of the frame (the held-out set's
/// figures are quoted for this range): smaller than the model draws them alone.
pub const SKETCH_SCALES: std::ops::Range<f32> = 0.45..0.8;

/// Draws `n` hand-drawn-style sketches from the pictures in `data` (captioned, e.g. the
/// held-out split) into `out` (`NNN.png` + `sketches.jsonl`), each subject made `scales` of
/// the frame (a share drawn at random; [`SKETCH_SCALES`] for the quoted set) and moved.
/// Returns how many were written.
pub fn make_sketches(
    data: &Path,
    out: &Path,
    n: usize,
    seed: u64,
    scales: std::ops::Range<f32>,
) -> Result<usize, EvalError> {
    if !(scales.start > 0.0 && scales.start < scales.end && scales.end <= 1.0) {
        return Err(EvalError::Options(format!(
            "the subjects' scale must be a range within 0..1, not {}..{}",
            scales.start, scales.end
        )));
    }
    let set = open_dataset(data, &DataOptions::default())?;
    std::fs::create_dir_all(out).map_err(|e| EvalError::Io {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5CE7C4);
    let mut order: Vec<usize> = (0..set.items.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut lines = Vec::new();
    for (k, &i) in order.iter().take(n).enumerate() {
        let item = &set.items[i];
        // A layout of the designer's: smaller than the model draws it, somewhere in the frame.
        let scale = rng.random_range(scales.clone());
        let placed =
            crate::train::controlnet::place(&item.image, scale, rng.random(), rng.random());
        let sketch = hand_drawn_outline(&placed, &mut rng);
        let file = format!("{k:03}.png");
        let picture = format!("{k:03}-picture.png");
        for (img, name) in [(&sketch, &file), (&placed, &picture)] {
            crate::imageio::write_png_atomically(img, &out.join(name)).map_err(|e| {
                EvalError::Io {
                    path: out.join(name),
                    reason: e.to_string(),
                }
            })?;
        }
        lines.push(SketchEntry {
            file,
            caption: item.caption.clone(),
            category: label_of(&item.extra, "category"),
            picture: Some(picture),
        });
    }
    let text: String = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap_or_default() + "\n")
        .collect();
    crate::fsio::write_file(
        &out.join("sketches.jsonl"),
        text.as_bytes(),
        crate::fsio::Durability::Atomic,
    )
    .map_err(|e| EvalError::Io {
        path: out.join("sketches.jsonl"),
        reason: e.to_string(),
    })?;
    Ok(lines.len())
}

/// A pen tracing the outline of the picture's shape (everything not the white ground): every
/// boundary pixel moved by a slow random wobble of up to about a pixel and a half, drawn as a
/// 2 px dot, with one or two breaks where the pen lifted.
pub fn hand_drawn_outline(img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let ink = |x: i64, y: i64| -> bool {
        if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
            return false;
        }
        img.get_pixel(x as u32, y as u32).0.iter().any(|&c| c < 225)
    };
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let phases: [f32; 4] = std::array::from_fn(|_| rng.random_range(0.0..std::f32::consts::TAU));
    let breaks: Vec<(f32, f32)> = (0..rng.random_range(1..3))
        .map(|_| {
            let at = rng.random_range(-std::f32::consts::PI..std::f32::consts::PI);
            (at, rng.random_range(0.15..0.4))
        })
        .collect();
    let mut out = RgbImage::new(w, h);
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let boundary =
                ink(x, y) && (!ink(x - 1, y) || !ink(x + 1, y) || !ink(x, y - 1) || !ink(x, y + 1));
            if !boundary {
                continue;
            }
            let angle = (y as f32 - cy).atan2(x as f32 - cx);
            if breaks.iter().any(|(at, half)| {
                ((angle - at + 3.0 * std::f32::consts::PI) % std::f32::consts::TAU
                    - std::f32::consts::PI)
                    .abs()
                    < *half
            }) {
                continue;
            }
            let dx = 1.2 * (2.0 * angle + phases[0]).sin() + 0.4 * (5.0 * angle + phases[1]).sin();
            let dy = 1.2 * (3.0 * angle + phases[2]).sin() + 0.4 * (4.0 * angle + phases[3]).sin();
            let (px, py) = (x as f32 + dx, y as f32 + dy);
            for oy in -1..=1 {
                for ox in -1..=1 {
                    let (qx, qy) = (
                        (px + ox as f32 * 0.5).round(),
                        (py + oy as f32 * 0.5).round(),
                    );
                    if qx >= 0.0 && qy >= 0.0 && qx < w as f32 && qy < h as f32 {
                        out.put_pixel(qx as u32, qy as u32, image::Rgb([255, 255, 255]));
                    }
                }
            }
        }
    }
    out
}

/// A binary map grown by one pixel in every direction (the tolerance).
fn dilate(g: &GrayImage) -> GrayImage {
    let (w, h) = g.dimensions();
    GrayImage::from_fn(w, h, |x, y| {
        let on = (-1i64..=1).any(|oy| {
            (-1i64..=1).any(|ox| {
                let (nx, ny) = (x as i64 + ox, y as i64 + oy);
                nx >= 0
                    && ny >= 0
                    && nx < w as i64
                    && ny < h as i64
                    && g.get_pixel(nx as u32, ny as u32).0[0] > 127
            })
        });
        image::Luma([if on { 255 } else { 0 }])
    })
}

/// Precision, recall and F1 of the picture's Canny edges against the sketch's lines, with a
/// one-pixel tolerance, at the picture's size (the sketch is resized to it).
pub fn edge_f1(sketch: &RgbImage, picture: &RgbImage) -> (f64, f64, f64) {
    let (w, h) = picture.dimensions();
    let sketch = if sketch.dimensions() == (w, h) {
        sketch.clone()
    } else {
        image::imageops::resize(sketch, w, h, image::imageops::FilterType::Triangle)
    };
    let lines = GrayImage::from_fn(w, h, |x, y| {
        let v = sketch.get_pixel(x, y).0.iter().copied().max().unwrap_or(0);
        image::Luma([if v > 127 { 255 } else { 0 }])
    });
    let edges = canny(picture, 80, 160);
    let (near_lines, near_edges) = (dilate(&lines), dilate(&edges));
    let count = |a: &GrayImage, within: Option<&GrayImage>| -> usize {
        a.enumerate_pixels()
            .filter(|(x, y, p)| {
                p.0[0] > 127 && within.is_none_or(|m| m.get_pixel(*x, *y).0[0] > 127)
            })
            .count()
    };
    let (n_edges, n_lines) = (count(&edges, None), count(&lines, None));
    let precision = if n_edges == 0 {
        0.0
    } else {
        count(&edges, Some(&near_lines)) as f64 / n_edges as f64
    };
    let recall = if n_lines == 0 {
        0.0
    } else {
        count(&lines, Some(&near_edges)) as f64 / n_lines as f64
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    (precision, recall, f1)
}

pub struct ControlEvalOptions {
    pub model: PathBuf,
    pub controlnet: PathBuf,
    pub sketches: PathBuf,
    /// The judge for prompt adherence (none: not measured).
    pub judge: Option<PathBuf>,
    pub scale: f32,
    /// The fraction of the steps before which the ControlNet has not started (0: from the
    /// first).
    pub start: f64,
    /// The fraction of the steps after which the ControlNet stops (1: all of them).
    pub end: f64,
    /// "ControlNet is more important": only the prompt's side of the guidance gets it.
    pub mode: crate::generation::ControlMode,
    pub seed: u64,
    pub steps: Option<usize>,
    pub guidance: Option<f32>,
    pub sampler: Option<SamplerKind>,
    /// The subject pass ([`crate::diffusion::subject`]) on the pictures with the ControlNet.
    pub subject_pass: bool,
    /// Where to write `NNN-sketch.png`, `NNN-without.png`, `NNN-with.png`.
    pub samples_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EdgeScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Judge accuracy on the captions' categories, when a judge was given, each picture
    /// framed on its subject first ([`crate::train::judge::frame_subject`]): a sketch puts
    /// the subject small and anywhere, and the judge knows centred pictures.
    pub adherence: Option<f64>,
    /// The same judged on the whole pictures, as they come.
    #[serde(default)]
    pub adherence_whole: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlEvalReport {
    pub model: PathBuf,
    pub controlnet: PathBuf,
    pub sketches: usize,
    pub steps: usize,
    pub guidance: f32,
    pub scale: f32,
    #[serde(default)]
    pub start: f64,
    #[serde(default = "one")]
    pub end: f64,
    #[serde(default)]
    pub mode: crate::generation::ControlMode,
    #[serde(default)]
    pub subject_pass: bool,
    pub with_control: EdgeScores,
    pub without_control: EdgeScores,
    /// The pictures the sketches trace, as they are (when the set has them): what following
    /// a sketch perfectly scores.
    #[serde(default)]
    pub reference: Option<EdgeScores>,
    /// The same pictures through the model's VAE and back: the most any picture of this model
    /// could score, since every picture it makes is decoded from its latent space.
    #[serde(default)]
    pub reference_vae: Option<EdgeScores>,
    pub secs: f64,
}

impl ControlEvalReport {
    pub fn table(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{:.1}%", v * 100.0));
        let row = |name: &str, s: &EdgeScores| {
            format!(
                "| {name} | {:.3}   | {:.3}     | {:.3}  | {}     | {}     |\n",
                s.f1,
                s.precision,
                s.recall,
                pct(s.adherence),
                pct(s.adherence_whole)
            )
        };
        let mut table = format!(
            "{} sketches, {} steps, guidance {}, control scale {} from {:.0}% to {:.0}% of the steps, {:?} mode{}\n\
             |                 | edge F1 | precision | recall | adherence | (whole pictures) |\n",
            self.sketches,
            self.steps,
            self.guidance,
            self.scale,
            self.start * 100.0,
            self.end * 100.0,
            self.mode,
            if self.subject_pass {
                ", subject pass"
            } else {
                ""
            },
        );
        table += &row("with control   ", &self.with_control);
        table += &row("without control", &self.without_control);
        if let Some(r) = &self.reference {
            table += &row("the sketched pictures (reference)", r);
        }
        if let Some(r) = &self.reference_vae {
            table += &row("same, through the model's VAE (the most it can score)", r);
        }
        table
    }
}

/// Runs the evaluation, reporting `(phase, done, of)`.
pub fn evaluate_control(
    opts: &ControlEvalOptions,
    on_progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<ControlEvalReport, EvalError> {
    let started = Instant::now();
    let list = opts.sketches.join("sketches.jsonl");
    let text = std::fs::read_to_string(&list).map_err(|e| EvalError::Io {
        path: list.clone(),
        reason: e.to_string(),
    })?;
    let entries: Vec<SketchEntry> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| EvalError::Prompts {
                path: list.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Err(EvalError::Options(format!(
            "{}: no sketches",
            list.display()
        )));
    }
    let info = crate::models::ModelInfo::from_dir(&opts.model, crate::models::ModelSource::Given)?;
    let rec = info.recommended();
    let (steps, guidance) = (
        opts.steps.unwrap_or(rec.steps),
        opts.guidance.unwrap_or(rec.guidance),
    );
    let side = info.native_size;
    let mut generator = crate::diffusion::Generator::default();
    let cancel = AtomicBool::new(false);
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut sketches = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        on_progress("generating", i, entries.len());
        let path = opts.sketches.join(&entry.file);
        let sketch = crate::imageio::load_image_file(&path)
            .map_err(|e| EvalError::Io {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .to_rgb8();
        let base = GenerationRequest {
            model_dir: opts.model.clone(),
            prompt: entry.caption.clone(),
            seed: opts.seed + i as u64,
            steps,
            guidance,
            width: side,
            height: side,
            sampler: opts.sampler.unwrap_or(rec.sampler),
            ..Default::default()
        };
        let mut controlled = base.clone();
        let mut spec = ControlSpec::new(opts.controlnet.clone(), Arc::new(sketch.clone()));
        spec.scale = opts.scale;
        spec.start = opts.start;
        spec.end = opts.end;
        spec.mode = opts.mode;
        controlled.controlnets.push(spec);
        controlled.subject_pass = opts.subject_pass;
        let plain = generator.collect(&base, &cancel)?.0.remove(0).image;
        let steered = generator.collect(&controlled, &cancel)?.0.remove(0).image;
        if let Some(dir) = &opts.samples_dir {
            std::fs::create_dir_all(dir).map_err(|e| EvalError::Io {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            for (name, img) in [("sketch", &sketch), ("without", &plain), ("with", &steered)] {
                let p = dir.join(format!("{i:03}-{name}.png"));
                crate::imageio::write_png_atomically(img, &p).map_err(|e| EvalError::Io {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        with.push((*steered).clone());
        without.push((*plain).clone());
        sketches.push(sketch);
    }
    on_progress("generating", entries.len(), entries.len());
    if let Some(dir) = &opts.samples_dir {
        // The first twelve as a grid, two to a row: sketch, without, with.
        let tiles: Vec<RgbImage> = sketches
            .iter()
            .zip(&without)
            .zip(&with)
            .take(12)
            .flat_map(|((s, w), c)| [s.clone(), w.clone(), c.clone()])
            .collect();
        let p = dir.join("grid.png");
        let grid = crate::imageio::grid(&tiles, 6, 4, 2, [255, 255, 255]);
        crate::imageio::write_png_atomically(&grid, &p).map_err(|e| EvalError::Io {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    }
    let judge = opts.judge.as_deref().map(Judge::load).transpose()?;
    let scores = |pictures: &[RgbImage]| -> Result<EdgeScores, EvalError> {
        let n = pictures.len() as f64;
        let (mut p, mut r, mut f) = (0.0, 0.0, 0.0);
        for (s, pic) in sketches.iter().zip(pictures) {
            let (pp, rr, ff) = edge_f1(s, pic);
            p += pp;
            r += rr;
            f += ff;
        }
        let judged = |pictures: &[RgbImage]| -> Result<Option<f64>, EvalError> {
            let Some(judge) = &judge else {
                return Ok(None);
            };
            let scored = judge
                .score_images(&pictures.iter().collect::<Vec<_>>())
                .map_err(|e| EvalError::Options(crate::diffusion::error_text(&e)))?;
            let mut right = 0usize;
            let mut known = 0usize;
            for (entry, s) in entries.iter().zip(&scored) {
                if let Some(target) = entry.category.as_deref().and_then(|c| judge.class_index(c)) {
                    known += 1;
                    right += usize::from(s.class == target);
                }
            }
            Ok((known > 0).then(|| right as f64 / known as f64))
        };
        let framed: Vec<RgbImage> = match &judge {
            Some(judge) => pictures
                .iter()
                .map(|p| frame_subject(p, judge.config().background))
                .collect(),
            None => Vec::new(),
        };
        let adherence = judged(&framed)?;
        let adherence_whole = judged(pictures)?;
        Ok(EdgeScores {
            precision: p / n,
            recall: r / n,
            f1: f / n,
            adherence,
            adherence_whole,
        })
    };
    // The pictures the sketches trace, as they are and through the model's VAE.
    let pictures: Option<Vec<RgbImage>> = entries
        .iter()
        .map(|e| {
            let path = opts.sketches.join(e.picture.as_ref()?);
            Some(
                crate::imageio::load_image_file(&path)
                    .map(|i| i.to_rgb8())
                    .map_err(|e| EvalError::Io {
                        path: path.clone(),
                        reason: e.to_string(),
                    }),
            )
        })
        .collect::<Option<Result<Vec<_>, _>>>()
        .transpose()?;
    let (reference, reference_vae) = match pictures {
        Some(pictures) => {
            on_progress("reference pictures", 0, 1);
            let fitted: Vec<RgbImage> = pictures
                .iter()
                .map(|p| crate::diffusion::pipeline::resize_rgb(p, side, side))
                .collect();
            // The model the pictures were made with, still loaded.
            let through =
                generator.vae_round_trip(&opts.model, &fitted.iter().collect::<Vec<_>>())?;
            on_progress("reference pictures", 1, 1);
            (Some(scores(&fitted)?), Some(scores(&through)?))
        }
        None => (None, None),
    };
    Ok(ControlEvalReport {
        model: opts.model.clone(),
        controlnet: opts.controlnet.clone(),
        sketches: entries.len(),
        steps,
        guidance,
        scale: opts.scale,
        start: opts.start,
        end: opts.end,
        mode: opts.mode,
        subject_pass: opts.subject_pass,
        with_control: scores(&with)?,
        without_control: scores(&without)?,
        reference,
        reference_vae,
        secs: started.elapsed().as_secs_f64(),
    })
}

fn one() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc(size: u32, r: f32) -> RgbImage {
        RgbImage::from_fn(size, size, |x, y| {
            let (dx, dy) = (x as f32 - size as f32 / 2.0, y as f32 - size as f32 / 2.0);
            image::Rgb(if dx * dx + dy * dy < r * r {
                [30, 90, 200]
            } else {
                [255, 255, 255]
            })
        })
    }

    #[test]
    fn a_picture_that_follows_its_sketch_scores_high_and_one_that_does_not_low() {
        let picture = disc(64, 18.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let sketch = hand_drawn_outline(&picture, &mut rng);
        let (p, r, f1) = edge_f1(&sketch, &picture);
        assert!(f1 > 0.6, "p {p} r {r} f1 {f1}");
        // A disc elsewhere does not follow it.
        let other = RgbImage::from_fn(64, 64, |x, y| {
            let (dx, dy) = (x as f32 - 12.0, y as f32 - 50.0);
            image::Rgb(if dx * dx + dy * dy < 64.0 {
                [30, 90, 200]
            } else {
                [255, 255, 255]
            })
        });
        let (_, _, f1_other) = edge_f1(&sketch, &other);
        assert!(f1_other < 0.2, "{f1_other}");
        // A blank picture has no edges: 0.
        assert_eq!(
            edge_f1(&sketch, &RgbImage::from_pixel(64, 64, image::Rgb([255; 3]))).2,
            0.0
        );
    }

    #[test]
    fn hand_drawn_outlines_trace_the_shape_with_breaks() {
        let picture = disc(64, 20.0);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let sketch = hand_drawn_outline(&picture, &mut rng);
        let lit: Vec<(u32, u32)> = sketch
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] == 255)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(lit.len() > 60);
        for (x, y) in &lit {
            let r = ((*x as f32 - 32.0).powi(2) + (*y as f32 - 32.0).powi(2)).sqrt();
            assert!((16.0..=23.5).contains(&r), "{r}");
        }
        // Some of the outline is left out (the pen lifted).
        let full = 2.0 * std::f32::consts::PI * 20.0;
        let sectors: std::collections::BTreeSet<i32> = lit
            .iter()
            .map(|(x, y)| ((*y as f32 - 32.0).atan2(*x as f32 - 32.0) * 8.0).floor() as i32)
            .collect();
        assert!(
            sectors.len() < 52,
            "{} of ~50 sectors drawn ({full})",
            sectors.len()
        );
    }
}
