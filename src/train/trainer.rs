//! `atelier train`: trains an Atelier Mini model on any folder of captioned images, in two
//! stages: the VAE (reconstruction), then the UNet and text encoder together on the frozen
//! VAE's latents (noise or v prediction with min-SNR weighting, caption dropout for guidance).
//! Checkpoints are atomic and hold the optimiser and EMA state, so a killed run resumes
//! exactly; each checkpoint also exports a loadable diffusers folder (`OUT/model`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::data::{open_dataset, DataError, DataOptions, Dataset};
use super::optim::{AdamW, Ema};
use super::recipe::{Objective, Recipe};
use crate::diffusion::clip::ClipTextEncoder;
use crate::diffusion::noise::NoiseRng;
use crate::diffusion::sampler::NoiseSchedule;
use crate::diffusion::tokenizer::ClipTokenizer;
use crate::diffusion::unet::Unet;
use crate::diffusion::vae::Vae;
use crate::models::config::{
    SchedulerFileConfig, TextEncoderConfig, TokenizerFiles, UnetConfig, VaeConfig,
};
use crate::models::ldm::{CLIP_MERGES_TXT, CLIP_VOCAB_JSON};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: a checkpoint is already there; pass --resume to continue it or choose another --out")]
    CheckpointExists { path: PathBuf },
    #[error("{path}: cannot resume: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("{path}: cannot start a run from this model (--init-from): {reason}")]
    InitFrom { path: PathBuf, reason: String },
    #[error("training failed: {0}")]
    Candle(String),
    #[error("invalid options: {0}")]
    Options(String),
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Candle(crate::diffusion::error_text(&e))
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    /// UNet + text-encoder steps.
    pub steps: usize,
    pub vae_steps: usize,
    pub batch: usize,
    pub vae_batch: usize,
    pub resume: bool,
    pub checkpoint_every: usize,
    pub lr: f64,
    pub vae_lr: f64,
    pub seed: u64,
    pub background: [u8; 3],
    pub caption_dropout: f64,
    /// Sample the UNet stage's batches evenly over the values of this caption-file key (e.g.
    /// `category`), instead of evenly over images; `None` for plain uniform sampling.
    pub balance_by: Option<String>,
    /// UNet step from which the learning rate falls linearly to zero at `steps` (a
    /// warmup-stable-decay schedule); `None` keeps it constant.
    pub decay_from: Option<usize>,
    /// Probability of dropping each caption tag after the first (tags are the comma-separated
    /// parts) when a sample is drawn, so an image is seen under many captions and the model
    /// leans on the words rather than on whole caption strings. `None`: the run's own setting
    /// (0 for a new run); with `resume`, `Some` changes it from the checkpoint on.
    pub tag_dropout: Option<f64>,
    /// Overrides the recipe's objective; with `resume`, switches the run to it from the
    /// checkpoint on (fine-tuning an epsilon run into a v-prediction, zero-terminal-SNR one).
    pub objective: Option<Objective>,
    /// Start a new run from the weights of a model exported by this recipe (the shipped Atelier
    /// Mini, or an earlier run's `model/`) instead of random ones: the VAE stage is skipped, the
    /// model's VAE and latent scale are kept, and the objective follows the model's scheduler
    /// unless `objective` is given.
    pub init_from: Option<PathBuf>,
    /// UNet steps over which the learning rate ramps up linearly from zero at the start of the
    /// UNet stage (0: none); softens the first steps of a fresh optimiser on trained weights.
    pub warmup: usize,
    /// Where the run computes (the CLI picks a CUDA GPU when built with it and one is there).
    pub device: Device,
    pub recipe: Recipe,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            out: PathBuf::new(),
            steps: 20_000,
            vae_steps: 2_500,
            batch: 16,
            vae_batch: 8,
            resume: false,
            checkpoint_every: 500,
            lr: 5e-4,
            vae_lr: 1e-3,
            seed: 0,
            background: [255, 255, 255],
            caption_dropout: 0.1,
            balance_by: None,
            decay_from: None,
            tag_dropout: None,
            objective: None,
            init_from: None,
            warmup: 0,
            device: Device::Cpu,
            recipe: Recipe::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    Vae,
    Unet,
    Done,
}

impl Stage {
    /// The stage's name in `loss.csv` and on the progress bar.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Vae => "vae",
            Stage::Unet => "unet",
            Stage::Done => "done",
        }
    }

    /// The stage a `loss.csv` line names (training stages only).
    pub fn from_log_name(name: &str) -> Option<Self> {
        [Stage::Vae, Stage::Unet]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// What the trainer reports as it goes.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    Note(String),
    Stage {
        stage: Stage,
        from: usize,
        of: usize,
    },
    Step {
        stage: Stage,
        step: usize,
        of: usize,
        loss: f64,
    },
    Checkpoint {
        step: usize,
        dir: PathBuf,
    },
}

/// The checkpoint's `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    version: u32,
    recipe: Recipe,
    seed: u64,
    stage: Stage,
    vae_step: usize,
    unet_step: usize,
    vae_scaling: Option<f64>,
    images: usize,
    /// The `balance_by` key the run was started with (a resume keeps it).
    #[serde(default)]
    balance_by: Option<String>,
    /// See [`TrainOptions::tag_dropout`].
    #[serde(default)]
    tag_dropout: f64,
    /// The model a run started from (`--init-from`), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init_from: Option<PathBuf>,
}

pub struct TrainSummary {
    pub model_dir: PathBuf,
    pub vae_steps: usize,
    pub unet_steps: usize,
    pub last_vae_loss: Option<f64>,
    pub last_unet_loss: Option<f64>,
    pub images: usize,
}

struct Models {
    vae_vm: VarMap,
    unet_vm: VarMap,
    text_vm: VarMap,
    vae: Vae,
    unet: Unet,
    text: ClipTextEncoder,
}

fn build_models(recipe: &Recipe, device: &Device) -> Result<Models, TrainError> {
    let vae_cfg: VaeConfig =
        serde_json::from_value(recipe.vae(1.0)).map_err(|e| TrainError::Options(e.to_string()))?;
    let unet_cfg: UnetConfig =
        serde_json::from_value(recipe.unet()).map_err(|e| TrainError::Options(e.to_string()))?;
    let text_cfg: TextEncoderConfig = serde_json::from_value(recipe.text_encoder())
        .map_err(|e| TrainError::Options(e.to_string()))?;
    let vae_vm = VarMap::new();
    let unet_vm = VarMap::new();
    let text_vm = VarMap::new();
    let vae = Vae::new(
        VarBuilder::from_varmap(&vae_vm, DType::F32, device),
        &vae_cfg,
    )?;
    let unet = Unet::new(
        VarBuilder::from_varmap(&unet_vm, DType::F32, device),
        &unet_cfg,
    )?;
    let text = ClipTextEncoder::new(
        VarBuilder::from_varmap(&text_vm, DType::F32, device),
        &text_cfg,
    )?;
    Ok(Models {
        vae_vm,
        unet_vm,
        text_vm,
        vae,
        unet,
        text,
    })
}

/// Fresh weights from the run's seed (candle's own initialisers draw from an unseeded RNG):
/// norms at 1, biases at 0, embeddings N(0, 0.02), other weights U(±1/sqrt(fan_in)).
fn seeded_init(vm: &VarMap, seed: u64) -> Result<(), TrainError> {
    use rand_distr::{Distribution, StandardNormal};
    for (i, (name, var)) in named_vars(vm, "").into_iter().enumerate() {
        let mut rng = step_rng(seed, 3, i);
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let fan_in = if dims.len() > 1 { n / dims[0] } else { 1 };
        let is_norm = name.contains("norm");
        let values: Vec<f32> = if name.ends_with("bias") {
            vec![0.0; n]
        } else if is_norm && dims.len() == 1 {
            vec![1.0; n]
        } else if name.contains("embedding") && dims.len() == 2 && !name.contains("time") {
            (0..n)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    0.02 * z
                })
                .collect::<Vec<f32>>()
        } else {
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

fn named_vars(vm: &VarMap, prefix: &str) -> Vec<(String, Var)> {
    let data = vm.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(String, Var)> = data
        .iter()
        .map(|(k, var)| (format!("{prefix}{k}"), var.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub(crate) fn step_rng(seed: u64, stage: u64, step: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed ^ (stage << 56) ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    crate::fsio::write_file(path, bytes, crate::fsio::Durability::Durable).map_err(fsio_err)
}

fn fsio_err(e: crate::fsio::WriteError) -> TrainError {
    TrainError::Io {
        path: e.path,
        reason: e.source.to_string(),
    }
}

pub(crate) fn save_tensors(
    tensors: &HashMap<String, Tensor>,
    path: &Path,
    dtype: DType,
) -> Result<(), TrainError> {
    let converted: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_dtype(dtype)?)))
        .collect::<candle_core::Result<_>>()?;
    crate::fsio::write_with(path, crate::fsio::Durability::Durable, |tmp| {
        candle_core::safetensors::save(&converted, tmp).map_err(std::io::Error::other)
    })
    .map_err(fsio_err)
}

pub(crate) fn varmap_tensors(vm: &VarMap) -> HashMap<String, Tensor> {
    let data = vm.data().lock().unwrap_or_else(|e| e.into_inner());
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

pub(crate) fn load_varmap(vm: &VarMap, path: &Path) -> Result<(), TrainError> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        TrainError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: crate::diffusion::error_text(&e),
        }
    })?;
    let data = vm.data().lock().unwrap_or_else(|e| e.into_inner());
    for (name, var) in data.iter() {
        let t = tensors.get(name).ok_or_else(|| TrainError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!("no tensor {name}"),
        })?;
        var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)
            .map_err(|e| TrainError::BadCheckpoint {
                path: path.to_path_buf(),
                reason: format!("{name}: {}", crate::diffusion::error_text(&e)),
            })?;
    }
    Ok(())
}

/// The latent scale and objective of a model exported by this recipe, read from its configs,
/// for `--init-from`; a model whose configs differ from the recipe's is refused by name.
fn init_model_facts(dir: &Path, recipe: &Recipe) -> Result<(f64, Objective), TrainError> {
    let bad = |rel: &str, reason: String| TrainError::InitFrom {
        path: dir.join(rel),
        reason,
    };
    let read = |rel: &str| -> Result<serde_json::Value, TrainError> {
        let text = std::fs::read_to_string(dir.join(rel)).map_err(|e| bad(rel, e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| bad(rel, e.to_string()))
    };
    let vae = read("vae/config.json")?;
    let scaling = vae
        .get("scaling_factor")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| bad("vae/config.json", "no scaling_factor".into()))?;
    for (rel, config, want) in [
        ("unet/config.json", read("unet/config.json")?, recipe.unet()),
        (
            "text_encoder/config.json",
            read("text_encoder/config.json")?,
            recipe.text_encoder(),
        ),
        ("vae/config.json", vae, recipe.vae(scaling)),
    ] {
        if let Some(fields) = want.as_object() {
            for (key, value) in fields {
                let got = config.get(key).unwrap_or(&serde_json::Value::Null);
                if got != value {
                    return Err(bad(
                        rel,
                        format!("its {key} is {got}, the recipe's is {value}"),
                    ));
                }
            }
        }
    }
    let rel = "scheduler/scheduler_config.json";
    let scheduler: SchedulerFileConfig =
        serde_json::from_value(read(rel)?).map_err(|e| bad(rel, e.to_string()))?;
    let objective = match (
        scheduler.is_v_prediction(),
        scheduler.rescale_betas_zero_snr,
    ) {
        (false, false) if scheduler.prediction_type == "epsilon" => Objective::Epsilon,
        (true, true) => Objective::VZeroSnr,
        (_, zero_snr) => {
            return Err(bad(
                rel,
                format!(
                    "prediction_type {} with rescale_betas_zero_snr {zero_snr} is neither of \
                     the recipe's objectives",
                    scheduler.prediction_type
                ),
            ))
        }
    };
    Ok((scaling, objective))
}

/// Loads `--init-from` weights, reporting failures as the model's, not a checkpoint's.
pub(crate) fn load_init(vm: &VarMap, path: &Path) -> Result<(), TrainError> {
    load_varmap(vm, path).map_err(|e| match e {
        TrainError::BadCheckpoint { path, reason } => TrainError::InitFrom { path, reason },
        other => other,
    })
}

/// What the run computes on, for its log.
fn device_name(device: &Device) -> &'static str {
    if device.is_cuda() {
        "a CUDA GPU"
    } else if device.is_metal() {
        "a Metal GPU"
    } else {
        "the CPU"
    }
}

fn tokenizer_dir(out: &Path) -> PathBuf {
    out.join("model").join("tokenizer")
}

/// Writes everything of the exported folder except the weights.
fn write_model_skeleton(out: &Path, recipe: &Recipe, scaling: f64) -> Result<(), TrainError> {
    let model = out.join("model");
    for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        std::fs::create_dir_all(model.join(sub)).map_err(io_err(&model))?;
    }
    let json = |v: serde_json::Value| serde_json::to_vec_pretty(&v).unwrap_or_default();
    write_atomic(&model.join("model_index.json"), &json(recipe.model_index()))?;
    write_atomic(&model.join("unet/config.json"), &json(recipe.unet()))?;
    write_atomic(&model.join("vae/config.json"), &json(recipe.vae(scaling)))?;
    write_atomic(
        &model.join("text_encoder/config.json"),
        &json(recipe.text_encoder()),
    )?;
    write_atomic(
        &model.join("scheduler/scheduler_config.json"),
        &json(recipe.scheduler()),
    )?;
    let tok = tokenizer_dir(out);
    write_atomic(&tok.join("vocab.json"), CLIP_VOCAB_JSON.as_bytes())?;
    write_atomic(&tok.join("merges.txt"), CLIP_MERGES_TXT.as_bytes())?;
    write_atomic(
        &tok.join("tokenizer_config.json"),
        &json(recipe.tokenizer_config()),
    )?;
    write_atomic(
        &tok.join("special_tokens_map.json"),
        &json(
            serde_json::json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}),
        ),
    )
}

pub fn train(
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainSummary, TrainError> {
    validate_options(opts)?;
    let ckpt = opts.out.join("checkpoint");
    let existing = read_state(opts, &ckpt)?;
    let mut recipe = existing
        .as_ref()
        .map_or_else(|| opts.recipe.clone(), |s| s.recipe.clone());
    let init = match (&existing, &opts.init_from) {
        (None, Some(dir)) => Some((dir.clone(), init_model_facts(dir, &recipe)?)),
        _ => None,
    };
    if let Some((_, (_, objective))) = &init {
        recipe.objective = *objective;
    }
    if let Some(objective) = opts.objective {
        recipe.objective = objective;
    }
    on_event(TrainEvent::Note(format!(
        "training on {}",
        device_name(&opts.device)
    )));
    let data = read_data(opts, &recipe, on_event)?;
    std::fs::create_dir_all(&ckpt).map_err(io_err(&ckpt))?;
    let models = build_models(&recipe, &opts.device)?;
    let mut state = match existing {
        Some(s) => resume_state(opts, s, &recipe, &models, &ckpt, on_event)?,
        None => fresh_state(
            opts,
            &recipe,
            init.as_ref(),
            &models,
            data.items.len(),
            on_event,
        )?,
    };
    write_model_skeleton(&opts.out, &recipe, state.vae_scaling.unwrap_or(1.0))?;
    // Loaded now, so a tokenizer problem shows before the VAE stage's work.
    let tokenizer = ClipTokenizer::load(&TokenizerFiles {
        dir: tokenizer_dir(&opts.out),
        inline: None,
        pad_token: Some("<|endoftext|>".into()),
        max_length: recipe.max_tokens,
    })
    .map_err(|e| TrainError::Options(e.to_string()))?;
    let mut run = Run {
        opts,
        tokenizer,
        ckpt,
        loss_log: opts.out.join("loss.csv"),
        models,
        data,
        summary: TrainSummary {
            model_dir: opts.out.join("model"),
            vae_steps: 0,
            unet_steps: 0,
            last_vae_loss: None,
            last_unet_loss: None,
            images: 0,
        },
    };
    run.summary.images = run.data.items.len();
    if state.stage == Stage::Vae {
        run.vae_stage(&mut state, on_event)?;
        state.stage = Stage::Unet;
    }
    let latents = run.scaled_latents(&mut state, on_event)?;
    write_model_skeleton(&opts.out, &recipe, state.vae_scaling.unwrap_or(1.0))?;
    let ema = run.unet_stage(&mut state, &recipe, &latents, on_event)?;
    if state.unet_step >= opts.steps {
        state.stage = Stage::Done;
        checkpoint(&opts.out, &run.models, &state, Some(&ema))?;
    }
    Ok(run.summary)
}

fn validate_options(opts: &TrainOptions) -> Result<(), TrainError> {
    if opts.batch == 0 {
        return Err(TrainError::Options("--batch must be at least 1".into()));
    }
    if let Some(p) = opts.tag_dropout {
        if !(0.0..=1.0).contains(&p) {
            return Err(TrainError::Options(format!(
                "--tag-dropout must be between 0 and 1, not {p}"
            )));
        }
    }
    Ok(())
}

/// The checkpoint's state when one exists (then `--resume` is required).
fn read_state(opts: &TrainOptions, ckpt: &Path) -> Result<Option<State>, TrainError> {
    let state_path = ckpt.join("state.json");
    if !state_path.is_file() {
        return Ok(None);
    }
    if !opts.resume {
        return Err(TrainError::CheckpointExists {
            path: ckpt.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TrainError::BadCheckpoint {
            path: state_path.clone(),
            reason: e.to_string(),
        })
}

fn read_data(
    opts: &TrainOptions,
    recipe: &Recipe,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Dataset, TrainError> {
    on_event(TrainEvent::Note(format!("reading {}", opts.data.display())));
    let data = open_dataset(
        &opts.data,
        &DataOptions {
            resolution: recipe.resolution,
            background: opts.background,
        },
    )?;
    if !data.skipped.is_empty() {
        on_event(TrainEvent::Note(format!(
            "skipped {} unreadable file(s), e.g. {}: {}",
            data.skipped.len(),
            data.skipped[0].path.display(),
            data.skipped[0].reason
        )));
    }
    on_event(TrainEvent::Note(format!(
        "{} images with captions",
        data.items.len()
    )));
    Ok(data)
}

/// A run resumed from its checkpoint: weights loaded, the loss log cut back to it, and the
/// options a resume may change (objective, balancing, tag dropout) applied.
fn resume_state(
    opts: &TrainOptions,
    mut s: State,
    recipe: &Recipe,
    models: &Models,
    ckpt: &Path,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<State, TrainError> {
    load_varmap(&models.vae_vm, &ckpt.join("vae.safetensors"))?;
    load_varmap(&models.unet_vm, &ckpt.join("unet.safetensors"))?;
    load_varmap(&models.text_vm, &ckpt.join("text.safetensors"))?;
    on_event(TrainEvent::Note(format!(
        "resuming at VAE step {} / UNet step {}",
        s.vae_step, s.unet_step
    )));
    truncate_loss_log(&opts.out.join("loss.csv"), s.vae_step, s.unet_step);
    if opts.init_from.is_some() {
        on_event(TrainEvent::Note(
            "--init-from is ignored: continuing the run's own checkpoint".into(),
        ));
    }
    if s.recipe.objective != recipe.objective {
        on_event(TrainEvent::Note(format!(
            "switching the objective from {:?} to {:?} at UNet step {}",
            s.recipe.objective, recipe.objective, s.unet_step
        )));
        s.recipe.objective = recipe.objective;
    }
    if opts.balance_by.is_some() {
        // Switching balancing on (or to another key) from here on.
        s.balance_by = opts.balance_by.clone();
    }
    if let Some(p) = opts.tag_dropout {
        s.tag_dropout = p;
    }
    Ok(s)
}

/// A new run: seeded random weights, or an exported model's (`--init-from`, which skips the
/// VAE stage).
fn fresh_state(
    opts: &TrainOptions,
    recipe: &Recipe,
    init: Option<&(PathBuf, (f64, Objective))>,
    models: &Models,
    images: usize,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<State, TrainError> {
    let mut state = State {
        version: 1,
        recipe: recipe.clone(),
        seed: opts.seed,
        stage: Stage::Vae,
        vae_step: 0,
        unet_step: 0,
        vae_scaling: None,
        images,
        balance_by: opts.balance_by.clone(),
        tag_dropout: opts.tag_dropout.unwrap_or(0.0),
        init_from: None,
    };
    match init {
        Some((dir, (scaling, _))) => {
            load_init(
                &models.vae_vm,
                &dir.join("vae/diffusion_pytorch_model.safetensors"),
            )?;
            load_init(
                &models.unet_vm,
                &dir.join("unet/diffusion_pytorch_model.safetensors"),
            )?;
            load_init(&models.text_vm, &dir.join("text_encoder/model.safetensors"))?;
            on_event(TrainEvent::Note(format!(
                "starting from the weights of {} (objective {:?})",
                dir.display(),
                recipe.objective
            )));
            state.stage = Stage::Unet;
            state.vae_step = opts.vae_steps;
            state.vae_scaling = Some(*scaling);
            state.init_from = Some(dir.clone());
        }
        None => {
            for vm in [&models.vae_vm, &models.unet_vm, &models.text_vm] {
                seeded_init(vm, opts.seed)?;
            }
        }
    }
    Ok(state)
}

/// One training run's fixed parts.
struct Run<'a> {
    opts: &'a TrainOptions,
    tokenizer: ClipTokenizer,
    ckpt: PathBuf,
    loss_log: PathBuf,
    models: Models,
    data: Dataset,
    summary: TrainSummary,
}

impl Run<'_> {
    /// Stage 1: the VAE, as a small autoencoder with a KL term.
    fn vae_stage(
        &mut self,
        state: &mut State,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<(), TrainError> {
        let (opts, models, data, device) = (self.opts, &self.models, &self.data, &self.opts.device);
        let params = named_vars(&models.vae_vm, "");
        let mut opt = AdamW::new(params.clone(), opts.vae_lr, 0.0)?;
        let optim_path = self.ckpt.join("optim_vae.safetensors");
        if state.vae_step > 0 && optim_path.is_file() {
            let st = candle_core::safetensors::load(&optim_path, device)?;
            opt.load_state(&st, state.vae_step)?;
        }
        on_event(TrainEvent::Stage {
            stage: Stage::Vae,
            from: state.vae_step,
            of: opts.vae_steps,
        });
        while state.vae_step < opts.vae_steps {
            let mut rng = step_rng(state.seed, 1, state.vae_step);
            let idx: Vec<usize> = (0..opts.vae_batch.max(1))
                .map(|_| rng.random_range(0..data.items.len()))
                .collect();
            let x = data.batch_tensor(&idx, device)?;
            let (mean, logvar) = models.vae.posterior(&x)?;
            let logvar = logvar.clamp(-30.0, 20.0)?;
            let std = (&logvar * 0.5)?.exp()?;
            let mut noise_rng = NoiseRng::new(rng.random());
            let eps = noise_rng.randn_like(&mean)?;
            let z = (&mean + (&std * eps)?)?;
            let recon = models.vae.decode_raw(&z)?;
            let diff = (&recon - &x)?;
            let rec = (diff.abs()?.mean_all()? + diff.sqr()?.mean_all()?)?;
            let kl = (((mean.sqr()? + logvar.exp()?)? - 1.0)? - &logvar)?
                .mean_all()?
                .affine(0.5, 0.0)?;
            let loss = (rec + (kl * 1e-5)?)?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            let grads = loss.backward()?;
            opt.step(&grads)?;
            state.vae_step += 1;
            self.summary.vae_steps += 1;
            self.summary.last_vae_loss = Some(loss_value);
            log_loss(&self.loss_log, Stage::Vae, state.vae_step, loss_value);
            on_event(TrainEvent::Step {
                stage: Stage::Vae,
                step: state.vae_step,
                of: opts.vae_steps,
                loss: loss_value,
            });
            if state.vae_step.is_multiple_of(opts.checkpoint_every.max(1))
                || state.vae_step == opts.vae_steps
            {
                save_tensors(&opt.state(), &optim_path, DType::F32)?;
                checkpoint(&opts.out, models, state, None)?;
                on_event(TrainEvent::Checkpoint {
                    step: state.vae_step,
                    dir: self.ckpt.clone(),
                });
            }
        }
        Ok(())
    }

    /// Every image's latent through the trained VAE, scaled to unit variance (the scale is
    /// measured once and kept in the state).
    fn scaled_latents(
        &self,
        state: &mut State,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<Tensor, TrainError> {
        on_event(TrainEvent::Note(
            "encoding the data set with the VAE".into(),
        ));
        let latents = encode_all(&self.models.vae, &self.data, &self.opts.device)?;
        let scaling = match state.vae_scaling {
            Some(s) => s,
            None => {
                let std = latents.flatten_all()?.to_dtype(DType::F64)?;
                let mean = std.mean_all()?.to_scalar::<f64>()?;
                let var = std
                    .affine(1.0, -mean)?
                    .sqr()?
                    .mean_all()?
                    .to_scalar::<f64>()?;
                1.0 / var.sqrt().max(1e-6)
            }
        };
        state.vae_scaling = Some(scaling);
        Ok((latents * scaling)?)
    }

    /// Stage 2: the UNet and the text encoder together, with EMA weights.
    fn unet_stage(
        &mut self,
        state: &mut State,
        recipe: &Recipe,
        latents: &Tensor,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<Ema, TrainError> {
        let (opts, models, data, device) = (self.opts, &self.models, &self.data, &self.opts.device);
        let tokenizer = &self.tokenizer;
        let mut params = named_vars(&models.unet_vm, "unet.");
        params.extend(named_vars(&models.text_vm, "text."));
        let mut opt = AdamW::new(params.clone(), opts.lr, 1e-2)?;
        let mut ema = Ema::new(&params, 0.999)?;
        let optim_path = self.ckpt.join("optim_unet.safetensors");
        let ema_path = self.ckpt.join("ema.safetensors");
        if state.unet_step > 0 {
            if optim_path.is_file() {
                let st = candle_core::safetensors::load(&optim_path, device)?;
                opt.load_state(&st, state.unet_step)?;
            }
            if ema_path.is_file() {
                ema.shadow = candle_core::safetensors::load(&ema_path, device)?;
            }
        }
        let schedule = train_schedule(recipe)?;
        on_event(TrainEvent::Stage {
            stage: Stage::Unet,
            from: state.unet_step,
            of: opts.steps,
        });
        let empty_ids = tokenizer.encode("").map_err(TrainError::Options)?;
        let caption_ids: Vec<Vec<u32>> = data
            .items
            .iter()
            .map(|it| tokenizer.encode(&it.caption))
            .collect::<Result<_, _>>()
            .map_err(TrainError::Options)?;
        let groups = balance_groups(data, state.balance_by.as_deref());
        if let Some(g) = &groups {
            on_event(TrainEvent::Note(format!(
                "sampling evenly over {} groups",
                g.len()
            )));
        }
        while state.unet_step < opts.steps {
            let mut rng = step_rng(state.seed, 2, state.unet_step);
            let idx: Vec<usize> = (0..opts.batch)
                .map(|_| match &groups {
                    Some(g) => {
                        let group = &g[rng.random_range(0..g.len())];
                        group[rng.random_range(0..group.len())]
                    }
                    None => rng.random_range(0..data.items.len()),
                })
                .collect();
            let rows = Tensor::from_vec(
                idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                idx.len(),
                device,
            )?;
            let x0 = latents.index_select(&rows, 0)?;
            let mut ids = Vec::with_capacity(opts.batch * recipe.max_tokens);
            for &i in &idx {
                let drop = rng.random::<f64>() < opts.caption_dropout;
                if drop {
                    ids.extend_from_slice(&empty_ids);
                } else if state.tag_dropout > 0.0 {
                    let caption = drop_tags(&data.items[i].caption, state.tag_dropout, &mut rng);
                    ids.extend(tokenizer.encode(&caption).map_err(TrainError::Options)?);
                } else {
                    ids.extend_from_slice(&caption_ids[i]);
                }
            }
            let ids = Tensor::from_vec(ids, (opts.batch, recipe.max_tokens), device)?;
            let context = models
                .text
                .encode(&ids, tokenizer.eos_id, None)?
                .last_normed;
            let ts: Vec<usize> = (0..opts.batch)
                .map(|_| rng.random_range(0..schedule.len()))
                .collect();
            let a: Vec<f32> = ts.iter().map(|&t| schedule[t].sqrt() as f32).collect();
            let s: Vec<f32> = ts
                .iter()
                .map(|&t| (1.0 - schedule[t]).sqrt() as f32)
                .collect();
            let w: Vec<f32> = ts
                .iter()
                .map(|&t| loss_weight(recipe.objective, schedule[t]) as f32)
                .collect();
            let col = |v: Vec<f32>| Tensor::from_vec(v, (opts.batch, 1, 1, 1), device);
            let mut noise_rng = NoiseRng::new(rng.random());
            let noise = noise_rng.randn_like(&x0)?;
            let (xt, target) = noised(recipe.objective, &x0, noise, &col(a)?, &col(s)?)?;
            let t = Tensor::from_vec(
                ts.iter().map(|&t| t as f32).collect::<Vec<_>>(),
                opts.batch,
                device,
            )?;
            let pred = models.unet.forward_t(&xt, &t, &context, None, None)?;
            let per_sample = (pred - target)?
                .sqr()?
                .mean(D::Minus1)?
                .mean(D::Minus1)?
                .mean(D::Minus1)?;
            let loss = (per_sample * Tensor::from_vec(w, opts.batch, device)?)?.mean_all()?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            let grads = loss.backward()?;
            opt.lr = unet_lr(opts, state.unet_step);
            opt.step(&grads)?;
            ema.update(&params, state.unet_step)?;
            state.unet_step += 1;
            self.summary.unet_steps += 1;
            self.summary.last_unet_loss = Some(loss_value);
            log_loss(&self.loss_log, Stage::Unet, state.unet_step, loss_value);
            on_event(TrainEvent::Step {
                stage: Stage::Unet,
                step: state.unet_step,
                of: opts.steps,
                loss: loss_value,
            });
            if state.unet_step.is_multiple_of(opts.checkpoint_every.max(1))
                || state.unet_step == opts.steps
            {
                save_tensors(&opt.state(), &optim_path, DType::F32)?;
                save_tensors(&ema.shadow, &ema_path, DType::F32)?;
                checkpoint(&opts.out, models, state, Some(&ema))?;
                on_event(TrainEvent::Checkpoint {
                    step: state.unet_step,
                    dir: self.ckpt.clone(),
                });
            }
        }
        Ok(ema)
    }
}

fn unet_lr(opts: &TrainOptions, step: usize) -> f64 {
    let warm = if step < opts.warmup {
        (step + 1) as f64 / opts.warmup as f64
    } else {
        1.0
    };
    warm * match opts.decay_from {
        Some(from) if step >= from && opts.steps > from => {
            let left = opts.steps.saturating_sub(step) as f64;
            opts.lr * left / (opts.steps - from) as f64
        }
        _ => opts.lr,
    }
}

/// `loss.png` next to `loss.csv`: the VAE stage's loss (left), the UNet stage's (right).
pub fn plot_losses(out: &Path) -> Result<(), TrainError> {
    let csv = out.join("loss.csv");
    let text = std::fs::read_to_string(&csv).map_err(io_err(&csv))?;
    let mut vae = Vec::new();
    let mut unet = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(',').collect();
        let value = parts.get(2).and_then(|v| v.parse::<f64>().ok());
        // `atelier train`'s stages, or `train-controlnet`'s one (drawn as the main series).
        match (parts.first().copied(), value) {
            (Some(name), Some(v)) if Stage::from_log_name(name) == Some(Stage::Vae) => vae.push(v),
            (Some(name), Some(v))
                if Stage::from_log_name(name).is_some() || name == "controlnet" =>
            {
                unet.push(v)
            }
            _ => {}
        }
    }
    if vae.is_empty() && unet.is_empty() {
        return Err(TrainError::Io {
            path: csv,
            reason: "no loss values in it".into(),
        });
    }
    let plot =
        crate::imageio::plot_series(&[(vae, [40, 90, 200]), (unet, [200, 60, 40])], 320, 200);
    let png = out.join("loss.png");
    crate::imageio::write_png_atomically(&plot, &png).map_err(|e| TrainError::Io {
        path: png,
        reason: e.reason,
    })
}

/// Drops log lines past the checkpoint a run resumes from (a killed run may have logged a few
/// steps beyond its last checkpoint; they are recomputed identically).
fn truncate_loss_log(path: &Path, vae_step: usize, unet_step: usize) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            let mut parts = line.split(',');
            let stage = parts.next().unwrap_or("");
            let step: usize = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(usize::MAX);
            match Stage::from_log_name(stage) {
                Some(Stage::Vae) => step <= vae_step,
                Some(_) => step <= unet_step,
                None => false,
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = write_atomic(path, kept.as_bytes());
}

fn log_loss(path: &Path, stage: Stage, step: usize, loss: f64) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{},{step},{loss:.6}", stage.name());
    }
}

/// `caption` with each comma-separated tag after the first dropped with probability `p` (the
/// first names the picture and always stays).
fn drop_tags(caption: &str, p: f64, rng: &mut impl Rng) -> String {
    let mut tags = caption.split(',').map(str::trim).filter(|t| !t.is_empty());
    let mut kept: Vec<&str> = tags.next().into_iter().collect();
    kept.extend(tags.filter(|_| rng.random::<f64>() >= p));
    kept.join(", ")
}

/// Item indices grouped by the value of `key` in their caption line (items without it form
/// their own group), in a stable order; `None` when not balancing.
fn balance_groups(data: &Dataset, key: Option<&str>) -> Option<Vec<Vec<usize>>> {
    let key = key?;
    let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, item) in data.items.iter().enumerate() {
        let value = item
            .extra
            .get(key)
            .map(|v| v.to_string())
            .unwrap_or_default();
        groups.entry(value).or_default().push(i);
    }
    Some(groups.into_values().collect())
}

/// `alphas_cumprod` of the scheduler config the run exports, so training and sampling share
/// one schedule.
fn train_schedule(recipe: &Recipe) -> Result<Vec<f64>, TrainError> {
    let config: SchedulerFileConfig = serde_json::from_value(recipe.scheduler())
        .map_err(|e| TrainError::Options(e.to_string()))?;
    Ok(NoiseSchedule::from_config(&config)
        .map_err(TrainError::Options)?
        .alphas_cumprod)
}

/// Min-SNR-5 weighting (Hang et al. 2023) of the per-sample loss at `alphas_cumprod` value
/// `acp`, i.e. a clean-image weight of `min(snr, 5)`. For v-prediction the clean-image weight
/// is also kept at 1 or more, so the near-pure-noise steps, where the prompt decides the
/// layout, still count (plain min-SNR would give the zero-SNR step a weight of 0).
/// The noised input `a·x0 + s·noise` and the objective's target (the noise, or
/// v = a·noise - s·x0), with `a`, `s` per row `[B, 1, 1, 1]`.
pub(crate) fn noised(
    objective: Objective,
    x0: &Tensor,
    noise: Tensor,
    a: &Tensor,
    s: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let xt = (x0.broadcast_mul(a)? + noise.broadcast_mul(s)?)?;
    let target = match objective {
        Objective::Epsilon => noise,
        Objective::VZeroSnr => (noise.broadcast_mul(a)? - x0.broadcast_mul(s)?)?,
    };
    Ok((xt, target))
}

pub(crate) fn loss_weight(objective: Objective, acp: f64) -> f64 {
    let snr = acp / (1.0 - acp);
    match objective {
        Objective::Epsilon => snr.min(5.0) / snr,
        Objective::VZeroSnr => snr.clamp(1.0, 5.0) / (snr + 1.0),
    }
}

/// Posterior means of every image, unscaled: `[N, 4, h, w]`.
fn encode_all(vae: &Vae, data: &Dataset, device: &Device) -> Result<Tensor, TrainError> {
    let mut out = Vec::new();
    let n = data.items.len();
    for start in (0..n).step_by(64) {
        let idx: Vec<usize> = (start..(start + 64).min(n)).collect();
        let x = data.batch_tensor(&idx, device)?;
        out.push(vae.posterior(&x)?.0.detach());
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Saves the training weights and state (atomically: the state file is written last), and
/// exports the current model (EMA weights when there are some) as f16 diffusers folders.
fn checkpoint(out: &Path, m: &Models, state: &State, ema: Option<&Ema>) -> Result<(), TrainError> {
    let ckpt = out.join("checkpoint");
    save_tensors(
        &varmap_tensors(&m.vae_vm),
        &ckpt.join("vae.safetensors"),
        DType::F32,
    )?;
    save_tensors(
        &varmap_tensors(&m.unet_vm),
        &ckpt.join("unet.safetensors"),
        DType::F32,
    )?;
    save_tensors(
        &varmap_tensors(&m.text_vm),
        &ckpt.join("text.safetensors"),
        DType::F32,
    )?;
    let state_json = serde_json::to_vec_pretty(state).unwrap_or_default();
    write_atomic(&ckpt.join("state.json"), &state_json)?;
    // The plot is a picture of loss.csv, which is the record: a checkpoint does not fail over it
    // (`atelier dev plot-loss` redraws it and reports why it cannot).
    plot_losses(out).ok();

    let model = out.join("model");
    let pick = |vm: &VarMap, prefix: &str| -> HashMap<String, Tensor> {
        let own = varmap_tensors(vm);
        match ema {
            Some(e) => own
                .into_iter()
                .map(|(k, t)| {
                    let shadow = e.shadow.get(&format!("{prefix}{k}")).cloned().unwrap_or(t);
                    (k, shadow)
                })
                .collect(),
            None => own,
        }
    };
    save_tensors(
        &varmap_tensors(&m.vae_vm),
        &model.join("vae/diffusion_pytorch_model.safetensors"),
        DType::F16,
    )?;
    if state.vae_scaling.is_some() {
        save_tensors(
            &pick(&m.unet_vm, "unet."),
            &model.join("unet/diffusion_pytorch_model.safetensors"),
            DType::F16,
        )?;
        save_tensors(
            &pick(&m.text_vm, "text."),
            &model.join("text_encoder/model.safetensors"),
            DType::F16,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_weights_follow_min_snr_and_keep_pure_noise_for_v() {
        // epsilon: weight 1 up to snr 5, then 5/snr.
        assert!((loss_weight(Objective::Epsilon, 0.5) - 1.0).abs() < 1e-12);
        assert!((loss_weight(Objective::Epsilon, 10.0 / 11.0) - 0.5).abs() < 1e-12);
        // v: clean-image weight clamp(snr, 1, 5) over the v loss's own snr + 1.
        assert!((loss_weight(Objective::VZeroSnr, 2f64.powi(-24)) - 1.0).abs() < 1e-6);
        assert!((loss_weight(Objective::VZeroSnr, 0.5) - 0.5).abs() < 1e-12);
        assert!((loss_weight(Objective::VZeroSnr, 0.75) - 0.75).abs() < 1e-12);
        assert!((loss_weight(Objective::VZeroSnr, 10.0 / 11.0) - 5.0 / 11.0).abs() < 1e-12);
        let zero = train_schedule(&Recipe {
            objective: Objective::VZeroSnr,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(zero[999], 2f64.powi(-24));
        let sd = train_schedule(&Recipe {
            objective: Objective::Epsilon,
            ..Default::default()
        })
        .unwrap();
        assert!((sd[999] - 0.00466).abs() < 1e-5);
    }

    /// Every weight of the UNet and the text encoder must get a gradient from the UNet stage's
    /// loss, and every VAE weight from the VAE stage's. candle-nn's fused layer norm and
    /// softmax cut the backward pass, which once left the whole text encoder and every
    /// attention query and key untrained.
    #[test]
    fn every_weight_gets_a_gradient() {
        let recipe = Recipe {
            resolution: 16,
            max_tokens: 8,
            text_hidden: 16,
            text_layers: 1,
            unet_channels: vec![16, 32],
            unet_layers_per_block: 1,
            vae_channels: vec![8, 16],
            ..Default::default()
        };
        let dev = Device::Cpu;
        let m = build_models(&recipe, &dev).unwrap();
        for vm in [&m.unet_vm, &m.text_vm] {
            seeded_init(vm, 7).unwrap();
        }
        let ids = Tensor::from_vec((0u32..16).map(|i| i * 37 + 5).collect(), (2, 8), &dev).unwrap();
        let context = m.text.encode(&ids, 49407, None).unwrap().last_normed;
        let mut rng = NoiseRng::new(3);
        let x = rng.randn((2, 4, 4, 4), DType::F32, &dev).unwrap();
        let t = Tensor::new(&[10f32, 900.], &dev).unwrap();
        let pred = m.unet.forward_t(&x, &t, &context, None, None).unwrap();
        let loss = (pred - x.affine(0.5, 0.1).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        // Names of the weights whose gradient is missing or all zero.
        let ungraded = |grads: &candle_core::backprop::GradStore, vars: Vec<(String, Var)>| {
            vars.into_iter()
                .filter(|(_, var)| {
                    !grads.get(var.as_tensor()).is_some_and(|g| {
                        g.abs()
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap()
                            > 0.0
                    })
                })
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        };
        let mut vars = named_vars(&m.unet_vm, "unet.");
        vars.extend(named_vars(&m.text_vm, "text."));
        let missing = ungraded(&grads, vars);
        assert!(missing.is_empty(), "no gradient for {missing:?}");

        // The VAE stage's loss reaches every VAE weight too (its mid-block attention included).
        seeded_init(&m.vae_vm, 7).unwrap();
        let img = rng.randn((2, 3, 16, 16), DType::F32, &dev).unwrap();
        let (mean, logvar) = m.vae.posterior(&img).unwrap();
        let recon = m.vae.decode_raw(&mean).unwrap();
        let loss = ((recon - &img).unwrap().sqr().unwrap().mean_all().unwrap()
            + logvar.sqr().unwrap().mean_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let missing = ungraded(&grads, named_vars(&m.vae_vm, "vae."));
        assert!(missing.is_empty(), "no gradient for {missing:?}");
    }

    #[test]
    fn tag_dropout_keeps_the_name_and_drops_other_tags_at_its_rate() {
        let caption = "cat face, animal, kitten, kitty, pet, animals & nature";
        let mut rng = step_rng(1, 2, 3);
        assert_eq!(drop_tags(caption, 0.0, &mut rng), caption);
        assert_eq!(drop_tags(caption, 1.0, &mut rng), "cat face");
        let (mut kept, mut seen) = (0usize, std::collections::HashSet::new());
        for _ in 0..2000 {
            let c = drop_tags(caption, 0.3, &mut rng);
            assert!(c.starts_with("cat face"), "{c}");
            kept += c.split(", ").count() - 1;
            seen.insert(c);
        }
        // 5 droppable tags, each kept with probability 0.7: 7,000 of 10,000 expected.
        assert!((6700..7300).contains(&kept), "{kept}");
        assert!(seen.len() > 20, "{}", seen.len());
        let mut a = step_rng(4, 2, 0);
        let mut b = step_rng(4, 2, 0);
        assert_eq!(
            drop_tags(caption, 0.5, &mut a),
            drop_tags(caption, 0.5, &mut b)
        );
    }

    #[test]
    fn learning_rate_decays_linearly_to_zero_after_decay_from() {
        let mut opts = TrainOptions {
            steps: 1000,
            lr: 1e-3,
            ..Default::default()
        };
        assert_eq!(unet_lr(&opts, 999), 1e-3);
        opts.decay_from = Some(600);
        assert_eq!(unet_lr(&opts, 0), 1e-3);
        assert_eq!(unet_lr(&opts, 599), 1e-3);
        assert_eq!(unet_lr(&opts, 600), 1e-3);
        assert!((unet_lr(&opts, 800) - 5e-4).abs() < 1e-12);
        assert!((unet_lr(&opts, 999) - 2.5e-6).abs() < 1e-12);
        // A decay point at or past the end leaves the rate alone.
        opts.decay_from = Some(1000);
        assert_eq!(unet_lr(&opts, 999), 1e-3);
        // A warmup ramps the first steps up from zero and leaves the rest alone.
        opts.warmup = 4;
        assert!((unet_lr(&opts, 0) - 2.5e-4).abs() < 1e-12);
        assert!((unet_lr(&opts, 2) - 7.5e-4).abs() < 1e-12);
        assert_eq!(unet_lr(&opts, 3), 1e-3);
        assert_eq!(unet_lr(&opts, 500), 1e-3);
    }
}
