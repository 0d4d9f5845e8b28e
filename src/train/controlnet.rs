//! `atelier train-controlnet`: a ControlNet for a model, trained on a folder of captioned
//! pictures whose control images are made from the pictures themselves with Atelier's own
//! preprocessors, augmented so that they look hand-drawn (stroke widths, jitter, gaps,
//! partial shapes, outlines of filled regions).
//!
//! The ControlNet starts as diffusers' `ControlNetModel.from_unet` does: a copy of the model's
//! UNet encoder half, a freshly drawn condition embedding, and zero convolutions (so at step 0
//! the model is unchanged). The model itself stays frozen; the loss is the model's own
//! objective (v or noise) with min-SNR weighting, and half of the captions are dropped so the
//! ControlNet learns to read the lines on their own (as in the ControlNet paper). Checkpoints
//! are atomic and resumable, `loss.png` is redrawn at each; the result is a diffusers
//! ControlNet folder (f16).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::data::{open_dataset, DataOptions};
use super::optim::AdamW;
use super::recipe::Objective;
use super::trainer::{
    load_init, load_varmap, loss_weight, noised, save_tensors, step_rng, varmap_tensors,
    write_atomic, TrainError, TrainEvent,
};
use crate::diffusion::controlnet::ControlNet;
use crate::diffusion::noise::NoiseRng;
use crate::diffusion::pipeline::{pictures_to_tensor, LoadedModel, PixelRange};
use crate::diffusion::sampler::Prediction;
use crate::models::config::ControlNetConfig;
use crate::sketch::control::canny;

/// What the control images show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Hand-drawn-looking lines: outlines and main edges, of varying width, with gaps.
    Scribble,
    /// Canny edges of the picture, as they are.
    Canny,
}

impl Condition {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "scribble" => Some(Self::Scribble),
            "canny" => Some(Self::Canny),
            _ => None,
        }
    }
}

pub struct ControlTrainOptions {
    /// The model the ControlNet is for (a diffusers folder or checkpoint).
    pub model: PathBuf,
    /// Captioned pictures (as `atelier train` reads them).
    pub data: PathBuf,
    pub out: PathBuf,
    pub condition: Condition,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub resume: bool,
    /// Start a new run from this ControlNet (a diffusers folder the same model's training
    /// wrote, e.g. the shipped Atelier Mini Scribble) instead of from the UNet.
    pub init_from: Option<PathBuf>,
    /// Share of captions replaced by the empty prompt.
    pub caption_dropout: f64,
    /// Loss weight inside the subject (everything not the white ground), against 1 outside:
    /// above 1, the ControlNet is taught what goes inside an outline, not only where the
    /// outline is.
    pub subject_weight: f64,
    pub device: Device,
}

/// The checkpoint's `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    version: u32,
    model: PathBuf,
    condition: Condition,
    seed: u64,
    step: usize,
    embedding_channels: Vec<usize>,
    /// The ControlNet the run started from (`--init-from`), if not the UNet.
    #[serde(default)]
    init_from: Option<PathBuf>,
}

pub struct ControlTrainSummary {
    pub steps_run: usize,
    pub last_loss: Option<f64>,
    pub model_dir: PathBuf,
}

/// The condition embedding's widths for a VAE that scales pictures down `factor` times
/// (diffusers' default `(16, 32, 96, 256)` for SD's 8; one entry fewer per halving less).
fn embedding_channels(factor: usize) -> Vec<usize> {
    let halvings = factor.max(1).trailing_zeros() as usize;
    [16, 32, 96, 256][..(halvings + 1).min(4)].to_vec()
}

/// The ControlNet's `config.json`: the UNet's own, as a `ControlNetModel` (what `from_unet`
/// writes).
fn controlnet_config_json(
    unet_config: &Path,
    widths: &[usize],
) -> Result<serde_json::Value, TrainError> {
    let text = std::fs::read_to_string(unet_config).map_err(|e| TrainError::Io {
        path: unet_config.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TrainError::Options(e.to_string()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| TrainError::Options("the UNet config is not an object".into()))?;
    for key in [
        "up_block_types",
        "out_channels",
        "sample_size",
        "center_input_sample",
        "conv_out_kernel",
        "time_cond_proj_dim",
        "reverse_transformer_layers_per_block",
    ] {
        obj.remove(key);
    }
    obj.insert("_class_name".into(), "ControlNetModel".into());
    obj.insert("conditioning_channels".into(), 3.into());
    obj.insert(
        "conditioning_embedding_out_channels".into(),
        serde_json::json!(widths),
    );
    obj.insert("controlnet_conditioning_channel_order".into(), "rgb".into());
    obj.insert("global_pool_conditions".into(), false.into());
    Ok(v)
}

/// A training control image for `img`: Canny edges, or for scribbles the picture's outline
/// and main edges drawn as a hand would (see the module doc). White on black.
pub fn training_condition(img: &RgbImage, condition: Condition, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let lines = match condition {
        Condition::Canny => {
            let low = rng.random_range(60..130u8);
            canny(img, low, low.saturating_mul(2).max(low + 1))
        }
        Condition::Scribble => {
            // The outline of the filled shape (everything not the white ground) and, most of
            // the time, its strongest inner edges.
            let shape = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb(if is_subject(img.get_pixel(x, y)) {
                    [0, 0, 0]
                } else {
                    [255, 255, 255]
                })
            });
            let mut g = canny(&shape, 100, 200);
            // Some of the inner lines, most of the time: each connected line kept or left out
            // at random, so that a line left out never means an empty area (a designer draws
            // the outline and some details, rarely all).
            if rng.random_bool(0.6) {
                let keep = rng.random_range(0.3..1.0);
                let inner = keep_some_lines(&canny(img, 120, 250), keep, rng);
                for (a, b) in g.pixels_mut().zip(inner.pixels()) {
                    a.0[0] = a.0[0].max(b.0[0]);
                }
            }
            // Jitter: the whole drawing a pixel off.
            let (dx, dy) = (rng.random_range(-1i32..=1), rng.random_range(-1i32..=1));
            let mut moved = image::GrayImage::new(w, h);
            for (x, y, p) in g.enumerate_pixels() {
                let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                if p.0[0] > 0 && nx >= 0 && ny >= 0 && (nx as u32) < w && (ny as u32) < h {
                    moved.put_pixel(nx as u32, ny as u32, *p);
                }
            }
            // Gaps: a few short stretches of line left out.
            for _ in 0..rng.random_range(0..5) {
                let (cx, cy) = (rng.random_range(0..w), rng.random_range(0..h));
                let r = rng.random_range(2..5);
                for y in cy.saturating_sub(r)..(cy + r).min(h) {
                    for x in cx.saturating_sub(r)..(cx + r).min(w) {
                        moved.put_pixel(x, y, image::Luma([0]));
                    }
                }
            }
            // Partial shapes: sometimes only part of the drawing.
            if rng.random_bool(0.1) {
                let side = rng.random_range(0..4);
                for (x, y, p) in moved.enumerate_pixels_mut() {
                    let cut = match side {
                        0 => x < w / 2,
                        1 => x >= w / 2,
                        2 => y < h / 2,
                        _ => y >= h / 2,
                    };
                    if cut {
                        p.0[0] = 0;
                    }
                }
            }
            // Stroke width: a pen of 1 to 3 px.
            let radius = rng.random_range(0..=1i32);
            if radius == 0 {
                moved
            } else {
                let mut thick = image::GrayImage::new(w, h);
                for (x, y, p) in moved.enumerate_pixels() {
                    if p.0[0] == 0 {
                        continue;
                    }
                    for oy in -radius..=radius {
                        for ox in -radius..=radius {
                            let (nx, ny) = (x as i32 + ox, y as i32 + oy);
                            if nx >= 0 && ny >= 0 && (nx as u32) < w && (ny as u32) < h {
                                thick.put_pixel(nx as u32, ny as u32, image::Luma([255]));
                            }
                        }
                    }
                }
                thick
            }
        }
    };
    RgbImage::from_fn(w, h, |x, y| {
        let v = lines.get_pixel(x, y).0[0];
        image::Rgb([v, v, v])
    })
}

/// The connected lines (8-neighbour) of `lines`, each kept whole with probability `keep`.
pub fn keep_some_lines(
    lines: &image::GrayImage,
    keep: f64,
    rng: &mut impl Rng,
) -> image::GrayImage {
    let (w, h) = lines.dimensions();
    let mut out = image::GrayImage::new(w, h);
    let mut seen = vec![false; (w * h) as usize];
    let mut stack = Vec::new();
    let mut part = Vec::new();
    for start in 0..(w * h) {
        let (sx, sy) = (start % w, start / w);
        if seen[start as usize] || lines.get_pixel(sx, sy).0[0] == 0 {
            continue;
        }
        seen[start as usize] = true;
        stack.push((sx, sy));
        part.clear();
        while let Some((x, y)) = stack.pop() {
            part.push((x, y));
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (i64::from(x) + dx, i64::from(y) + dy);
                    if nx < 0 || ny < 0 || nx >= i64::from(w) || ny >= i64::from(h) {
                        continue;
                    }
                    let (nx, ny) = (nx as u32, ny as u32);
                    let i = (ny * w + nx) as usize;
                    if !seen[i] && lines.get_pixel(nx, ny).0[0] > 0 {
                        seen[i] = true;
                        stack.push((nx, ny));
                    }
                }
            }
        }
        if rng.random_bool(keep.clamp(0.0, 1.0)) {
            for &(x, y) in &part {
                out.put_pixel(x, y, *lines.get_pixel(x, y));
            }
        }
    }
    out
}

/// The picture made smaller and moved, on its white ground: a sketch puts things where the
/// designer wants them, so the ControlNet learns layouts the model alone never draws. Kept
/// as it is a quarter of the time.
pub fn random_layout(img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    if rng.random_bool(0.25) {
        return img.clone();
    }
    let scale = rng.random_range(0.4..0.95f32);
    place(img, scale, rng.random(), rng.random())
}

/// `img` scaled by `scale` on a white ground of its size, at `fx`, `fy` (0..1) of the room
/// left on each axis.
pub fn place(img: &RgbImage, scale: f32, fx: f32, fy: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = (
        ((w as f32 * scale).round() as u32).clamp(4, w),
        ((h as f32 * scale).round() as u32).clamp(4, h),
    );
    let small = image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle);
    let x = ((w - nw) as f32 * fx.clamp(0.0, 1.0)).round() as i64;
    let y = ((h - nh) as f32 * fy.clamp(0.0, 1.0)).round() as i64;
    let mut out = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, &small, x, y);
    out
}

/// Whether a training picture's pixel is part of its subject rather than the white ground:
/// the shape whose outline a scribble condition draws, and where `--subject-weight` weighs.
fn is_subject(p: &image::Rgb<u8>) -> bool {
    p.0.iter().any(|&c| c < 225)
}

/// Per latent cell of each picture, `inside` where the cell covers any of the subject (ink
/// on the white ground) and 1 elsewhere, normalised so that each picture's mean weight is 1
/// (the loss keeps its scale; only where it looks changes).
pub fn subject_weights(pictures: &[RgbImage], lw: usize, lh: usize, inside: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(pictures.len() * lw * lh);
    for img in pictures {
        let (w, h) = img.dimensions();
        let mut cells = vec![1.0f32; lw * lh];
        for (x, y, p) in img.enumerate_pixels() {
            if is_subject(p) {
                let cx = (x as usize * lw / w.max(1) as usize).min(lw - 1);
                let cy = (y as usize * lh / h.max(1) as usize).min(lh - 1);
                cells[cy * lw + cx] = inside;
            }
        }
        let mean = cells.iter().sum::<f32>() / cells.len().max(1) as f32;
        out.extend(cells.iter().map(|c| c / mean));
    }
    out
}

fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

pub fn train_controlnet(
    opts: &ControlTrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<ControlTrainSummary, TrainError> {
    if opts.batch == 0 || opts.steps == 0 {
        return Err(TrainError::Options(
            "--steps and --batch must be at least 1".into(),
        ));
    }
    let ckpt = checkpoint_dir(&opts.out);
    let state_path = ckpt.join("state.json");
    if state_path.is_file() && !opts.resume {
        return Err(TrainError::CheckpointExists { path: ckpt });
    }
    on_event(TrainEvent::Note(format!(
        "loading {}",
        opts.model.display()
    )));
    let mut model = LoadedModel::load(&opts.model, &opts.device, &mut |_| {})
        .map_err(|e| TrainError::Options(e.to_string()))?;
    let factor = model.vae().downscale;
    let prediction = model.schedule().prediction;
    let objective = match prediction {
        Prediction::V => Objective::VZeroSnr,
        _ => Objective::Epsilon,
    };
    let alphas_cumprod = model.schedule().alphas_cumprod.clone();

    let resuming = opts.resume && state_path.is_file();
    let init_config = match &opts.init_from {
        Some(dir) if !resuming => Some(read_init_config(dir)?),
        _ => None,
    };
    let mut state = if resuming {
        let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::Io {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        let state: State = serde_json::from_str(&text).map_err(|e| TrainError::BadCheckpoint {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        if state.condition != opts.condition {
            return Err(TrainError::BadCheckpoint {
                path: state_path.clone(),
                reason: format!("it trains {:?} conditions", state.condition),
            });
        }
        state
    } else {
        State {
            version: 1,
            model: opts.model.clone(),
            condition: opts.condition,
            seed: opts.seed,
            step: 0,
            embedding_channels: match &init_config {
                Some(c) => c.conditioning_embedding_out_channels.clone(),
                None => embedding_channels(factor),
            },
            init_from: opts.init_from.clone(),
        }
    };

    // The ControlNet, from the UNet (diffusers' from_unet).
    let unet_dir = model.configs.component_path("unet");
    let config_json =
        controlnet_config_json(&unet_dir.join("config.json"), &state.embedding_channels)?;
    let config: ControlNetConfig = serde_json::from_value(config_json.clone())
        .map_err(|e| TrainError::Options(format!("ControlNet config: {e}")))?;
    // A ControlNet of another family than the model is refused with the pipeline's reason.
    if let (Some(dir), Some(init)) = (&opts.init_from, &init_config) {
        if let Some(why) = init.mismatch(&config.unet) {
            return Err(TrainError::InitFrom {
                path: dir.clone(),
                reason: why,
            });
        }
    }
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &opts.device);
    let net = ControlNet::build(&opts.out, vb, config)?;
    if state.step > 0 {
        load_varmap(&vm, &ckpt.join("controlnet.safetensors"))?;
        on_event(TrainEvent::Note(format!("resumed at step {}", state.step)));
        if opts.init_from.is_some() {
            on_event(TrainEvent::Note(
                "--init-from is ignored: continuing the run's own checkpoint".into(),
            ));
        }
    } else if let Some(dir) = &opts.init_from {
        load_init(&vm, &dir.join("diffusion_pytorch_model.safetensors"))?;
        on_event(TrainEvent::Note(format!(
            "starting from the ControlNet in {}",
            dir.display()
        )));
    } else {
        init_from_unet(&vm, &unet_dir, state.seed)?;
    }

    // The data: latents of every picture, the prompts' contexts, the pictures for conditions.
    let data = open_dataset(&opts.data, &DataOptions::default())?;
    if data.items.is_empty() {
        return Err(TrainError::Options(format!(
            "{}: no captioned pictures",
            opts.data.display()
        )));
    }
    on_event(TrainEvent::Note(format!(
        "{} pictures; encoding their captions",
        data.items.len()
    )));
    let mut contexts: HashMap<String, Tensor> = HashMap::new();
    for item in &data.items {
        if !contexts.contains_key(&item.caption) {
            let c = model
                .encode_text(&item.caption)
                .map_err(|e| TrainError::Options(e.to_string()))?;
            contexts.insert(item.caption.clone(), c);
        }
    }
    let empty = model
        .encode_text("")
        .map_err(|e| TrainError::Options(e.to_string()))?;
    // One chunk of context per caption (longer captions are cut to it, as the model's own
    // training cut them), so a batch stacks.
    let tokens = empty.dim(1)?;
    for c in contexts.values_mut() {
        *c = c.narrow(1, 0, tokens)?;
    }

    let params: Vec<(String, candle_core::Var)> = {
        let data = vm.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut opt = AdamW::new(params, opts.lr, 1e-2)?;
    let optim_path = ckpt.join("optim.safetensors");
    if state.step > 0 && optim_path.is_file() {
        let st = candle_core::safetensors::load(&optim_path, &opts.device)?;
        opt.load_state(&st, state.step)?;
    }
    std::fs::create_dir_all(&ckpt).map_err(|e| TrainError::Io {
        path: ckpt.clone(),
        reason: e.to_string(),
    })?;
    let loss_log = opts.out.join("loss.csv");
    on_event(TrainEvent::Stage {
        stage: super::trainer::Stage::Unet,
        from: state.step,
        of: opts.steps,
    });
    let mut last_loss = None;
    let mut ran = 0;
    let n = alphas_cumprod.len();
    let device = &opts.device;
    while state.step < opts.steps {
        let mut rng = step_rng(state.seed, 7, state.step);
        let idx: Vec<usize> = (0..opts.batch)
            .map(|_| rng.random_range(0..data.items.len()))
            .collect();
        // Each picture in a layout of its own, its latents and its control image from that.
        let placed: Vec<RgbImage> = idx
            .iter()
            .map(|&i| random_layout(&data.items[i].image, &mut rng))
            .collect();
        let x0 = model.vae().encode(&pictures_to_tensor(
            &placed.iter().collect::<Vec<_>>(),
            PixelRange::Signed,
            device,
            DType::F32,
        )?)?;
        let conds: Vec<RgbImage> = placed
            .iter()
            .map(|img| training_condition(img, state.condition, &mut rng))
            .collect();
        let cond = pictures_to_tensor(
            &conds.iter().collect::<Vec<_>>(),
            PixelRange::Unit,
            device,
            DType::F32,
        )?;
        let ctx: Vec<Tensor> = idx
            .iter()
            .map(|&i| {
                if rng.random::<f64>() < opts.caption_dropout {
                    empty.clone()
                } else {
                    contexts[&data.items[i].caption].clone()
                }
            })
            .collect();
        let ctx = Tensor::cat(&ctx, 0)?;
        let ts: Vec<usize> = (0..opts.batch).map(|_| rng.random_range(0..n)).collect();
        let col = |v: Vec<f32>| Tensor::from_vec(v, (opts.batch, 1, 1, 1), device);
        let a = col(ts
            .iter()
            .map(|&t| alphas_cumprod[t].sqrt() as f32)
            .collect())?;
        let s = col(ts
            .iter()
            .map(|&t| (1.0 - alphas_cumprod[t]).sqrt() as f32)
            .collect())?;
        let w: Vec<f32> = ts
            .iter()
            .map(|&t| loss_weight(objective, alphas_cumprod[t]) as f32)
            .collect();
        let noise = NoiseRng::new(rng.random()).randn_like(&x0)?;
        let (xt, target) = noised(objective, &x0, noise, &a, &s)?;
        let t = Tensor::from_vec(
            ts.iter().map(|&t| t as f32).collect::<Vec<_>>(),
            opts.batch,
            device,
        )?;
        let residuals = net.forward_t(&xt, &t, &ctx, None, &cond, 1.0, false)?;
        let pred = model
            .unet()
            .forward_t(&xt, &t, &ctx, None, Some(&residuals))?;
        let err = (pred - target)?.sqr()?;
        let err = if opts.subject_weight != 1.0 {
            let (lh, lw) = (xt.dim(2)?, xt.dim(3)?);
            let weights = subject_weights(&placed, lw, lh, opts.subject_weight as f32);
            err.broadcast_mul(&Tensor::from_vec(weights, (opts.batch, 1, lh, lw), device)?)?
        } else {
            err
        };
        let per_sample = err.mean(D::Minus1)?.mean(D::Minus1)?.mean(D::Minus1)?;
        let loss = (per_sample * Tensor::from_vec(w, opts.batch, device)?)?.mean_all()?;
        let loss_value = f64::from(loss.to_scalar::<f32>()?);
        let grads = loss.backward()?;
        opt.lr = opts.lr * ((state.step + 1) as f64 / opts.warmup.max(1) as f64).min(1.0);
        opt.step(&grads)?;
        state.step += 1;
        ran += 1;
        last_loss = Some(loss_value);
        append_loss(&loss_log, state.step, loss_value);
        on_event(TrainEvent::Step {
            stage: super::trainer::Stage::Unet,
            step: state.step,
            of: opts.steps,
            loss: loss_value,
        });
        if state.step.is_multiple_of(opts.checkpoint_every.max(1)) || state.step == opts.steps {
            save_tensors(
                &varmap_tensors(&vm),
                &ckpt.join("controlnet.safetensors"),
                DType::F32,
            )?;
            save_tensors(&opt.state(), &optim_path, DType::F32)?;
            let json = serde_json::to_vec_pretty(&state)
                .map_err(|e| TrainError::Options(e.to_string()))?;
            write_atomic(&state_path, &json)?;
            export(&opts.out.join("model"), &vm, &config_json)?;
            if let Err(e) = super::trainer::plot_losses(&opts.out) {
                on_event(TrainEvent::Note(format!(
                    "the loss plot was not drawn: {e}"
                )));
            }
            on_event(TrainEvent::Checkpoint {
                step: state.step,
                dir: ckpt.clone(),
            });
        }
    }
    Ok(ControlTrainSummary {
        steps_run: ran,
        last_loss,
        model_dir: opts.out.join("model"),
    })
}

/// The config of the ControlNet in `dir` (`--init-from`), read and checked as the pipeline
/// reads a ControlNet folder; its weights must then fit the model's UNet, which loading them
/// checks by name and shape.
fn read_init_config(dir: &Path) -> Result<ControlNetConfig, TrainError> {
    ControlNetConfig::read(dir).map_err(|e| TrainError::InitFrom {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `from_unet`: the encoder half's weights copied from the UNet's files, the zero
/// convolutions and the condition embedding's last convolution set to zero; the rest of the
/// condition embedding keeps its seeded default draw.
fn init_from_unet(vm: &VarMap, unet_dir: &Path, seed: u64) -> Result<(), TrainError> {
    let mut unet: HashMap<String, Tensor> = HashMap::new();
    let files = crate::models::config::weight_files(unet_dir)
        .map_err(|e| TrainError::Options(e.to_string()))?;
    for f in files {
        unet.extend(candle_core::safetensors::load(&f, &Device::Cpu)?);
    }
    let mut rng = step_rng(seed, 8, 0);
    let data = vm.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let zero = name.starts_with("controlnet_down_blocks.")
            || name.starts_with("controlnet_mid_block.")
            || name.starts_with("controlnet_cond_embedding.conv_out.");
        if zero {
            var.set(&var.as_tensor().zeros_like()?)?;
        } else if let Some(t) = unet.get(name.as_str()) {
            var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
        } else if name.starts_with("controlnet_cond_embedding.") {
            // PyTorch's default convolution init, seeded: uniform within 1/sqrt(fan_in).
            let dims = var.as_tensor().dims().to_vec();
            let fan_in: usize = if dims.len() == 4 {
                dims[1] * dims[2] * dims[3]
            } else {
                1
            };
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            let count = var.as_tensor().elem_count();
            let values: Vec<f32> = (0..count)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            var.set(&Tensor::from_vec(values, dims, var.device())?)?;
        } else {
            return Err(TrainError::Options(format!(
                "the UNet has no {name} to start the ControlNet from"
            )));
        }
    }
    Ok(())
}

/// The diffusers folder: `config.json` and f16 weights.
fn export(dir: &Path, vm: &VarMap, config: &serde_json::Value) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let json = serde_json::to_vec_pretty(config).map_err(|e| TrainError::Options(e.to_string()))?;
    write_atomic(&dir.join("config.json"), &json)?;
    save_tensors(
        &varmap_tensors(vm),
        &dir.join("diffusion_pytorch_model.safetensors"),
        DType::F16,
    )
}

fn append_loss(path: &Path, step: usize, loss: f64) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "controlnet,{step},{loss:.6}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_widths_follow_the_vae_factor() {
        assert_eq!(embedding_channels(8), vec![16, 32, 96, 256]);
        assert_eq!(embedding_channels(4), vec![16, 32, 96]);
        assert_eq!(embedding_channels(1), vec![16]);
    }

    #[test]
    fn scribble_conditions_outline_the_shape() {
        // A red disc on white: the condition has lines near the disc's edge and none far
        // inside or outside it, whatever the draw.
        let img = RgbImage::from_fn(64, 64, |x, y| {
            let (dx, dy) = (x as f32 - 32.0, y as f32 - 32.0);
            if dx * dx + dy * dy < 400.0 {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        for seed in 0..8 {
            let mut rng = step_rng(seed, 1, 0);
            let c = training_condition(&img, Condition::Scribble, &mut rng);
            let lit: Vec<(u32, u32)> = c
                .enumerate_pixels()
                .filter(|(_, _, p)| p.0[0] == 255)
                .map(|(x, y, _)| (x, y))
                .collect();
            assert!(lit.len() > 20, "seed {seed}: {} pixels", lit.len());
            for (x, y) in lit {
                let r = ((x as f32 - 32.0).powi(2) + (y as f32 - 32.0).powi(2)).sqrt();
                assert!(
                    (16.0..=24.5).contains(&r),
                    "seed {seed}: line at radius {r}"
                );
            }
        }
    }

    #[test]
    fn lines_are_kept_or_left_out_whole() {
        let mut lines = image::GrayImage::new(20, 20);
        for i in 2..18 {
            lines.put_pixel(i, 3, image::Luma([255]));
            lines.put_pixel(i, 12 + i % 2, image::Luma([255])); // a zigzag: still one line
        }
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        assert_eq!(keep_some_lines(&lines, 1.0, &mut rng), lines);
        assert!(keep_some_lines(&lines, 0.0, &mut rng)
            .pixels()
            .all(|p| p.0[0] == 0));
        let mut outcomes = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let kept = keep_some_lines(&lines, 0.5, &mut rng);
            let top = (2..18).filter(|&x| kept.get_pixel(x, 3).0[0] > 0).count();
            let zig = (2..18)
                .filter(|&x| kept.get_pixel(x, 12 + x % 2).0[0] > 0)
                .count();
            assert!(top == 0 || top == 16, "whole or nothing: {top}");
            assert!(zig == 0 || zig == 16, "whole or nothing: {zig}");
            outcomes.insert((top, zig));
        }
        assert_eq!(outcomes.len(), 4, "each line on its own: {outcomes:?}");
    }

    #[test]
    fn the_subject_weighs_more_and_the_mean_stays_one() {
        // A 16x16 picture whose subject fills its top-left quarter: 2x2 of 4x4 latent cells.
        let mut img = RgbImage::from_pixel(16, 16, image::Rgb([255, 255, 255]));
        for y in 0..8 {
            for x in 0..8 {
                img.put_pixel(x, y, image::Rgb([200, 30, 30]));
            }
        }
        let w = subject_weights(&[img.clone(), img], 4, 4, 3.0);
        assert_eq!(w.len(), 32);
        let first = &w[..16];
        let mean = first.iter().sum::<f32>() / 16.0;
        assert!((mean - 1.0).abs() < 1e-6, "mean {mean}");
        // (4 cells x 3 + 12 x 1) / 16 = 1.5: inside 2, outside 2/3.
        for (i, &v) in first.iter().enumerate() {
            let inside = i % 4 < 2 && i / 4 < 2;
            let want = if inside { 2.0 } else { 2.0 / 3.0 };
            assert!((v - want).abs() < 1e-6, "cell {i}: {v}");
        }
        // An empty picture (all ground) weighs the same everywhere.
        let blank = RgbImage::from_pixel(16, 16, image::Rgb([255, 255, 255]));
        assert!(subject_weights(&[blank], 4, 4, 3.0)
            .iter()
            .all(|&v| (v - 1.0).abs() < 1e-6));
    }
}
