//! `atelier generate`: pictures made headless with a progress bar, recorded in the gallery
//! and/or written to files. Each job is recorded in the gallery before it runs and forgotten
//! when it ends, so a killed run leaves its unfinished jobs for `atelier queue resume`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use atelier::engine::{Engine, EngineEvent, JobId};
use atelier::gallery::metadata::ImageRef;
use atelier::gallery::ImageMeta;
use atelier::generation::{GenerationRequest, SamplerKind};
use atelier::models::{ModelInfo, ModelSource};

use super::{gallery, load_rgb, parse_sampler};

#[derive(clap::Args)]
pub(crate) struct GenerateArgs {
    /// The model: a checkpoint file (.safetensors, .ckpt) or a diffusers folder; defaults to
    /// the shipped Atelier Mini.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A LoRA (kohya, LyCORIS LoHa/LoKr, diffusers/PEFT) merged into the model, with its
    /// weight (default 1); repeat for several. `<lora:NAME:WEIGHT>` in the prompt does the
    /// same with a LoRA found by name in the --model-dir folders (their Lora/loras folders).
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]", value_parser = parse_lora)]
    loras: Vec<atelier::generation::LoraSpec>,
    /// Another VAE than the model's own: a VAE file (`vae-ft-mse-840000-ema-pruned.safetensors`,
    /// `sdxl_vae.safetensors`) or a diffusers `vae/` folder.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// The decoder of the final picture: full (the model's VAE) or tiny (a tiny autoencoder,
    /// TAESD/TAESDXL: several times faster, slightly softer).
    #[arg(long, default_value = "full", value_parser = ["full", "tiny"])]
    decoder: String,
    /// A tiny autoencoder for the previews and --decoder tiny: a diffusers AutoencoderTiny
    /// folder or a `taesd_decoder` / `taesdxl_decoder` file. Without it one is looked for
    /// beside the model, in ComfyUI's models/vae_approx and in A1111's models/VAE-taesd.
    #[arg(long, value_name = "PATH")]
    tiny_decoder: Option<PathBuf>,
    /// A textual-inversion embedding (A1111 .pt or .safetensors, SDXL clip_l/clip_g), used by
    /// its file name as a word in the prompt or negative prompt; repeat for several. Those in
    /// the --model-dir folders' embeddings folders are found by the names the prompts use.
    #[arg(long = "embedding", value_name = "FILE")]
    embeddings: Vec<PathBuf>,
    /// A ControlNet (diffusers folder or file) steering the composition by a control image;
    /// repeat the group for several. The --control-* options after it apply to it. `auto`:
    /// the model's own, a ControlNet named after the model beside it or with Atelier's models
    /// (Atelier Mini Scribble for Atelier Mini).
    #[arg(long = "controlnet", value_name = "DIR", help_heading = "ControlNet")]
    controlnets: Vec<PathBuf>,
    /// The control image of the --controlnet before it (white strokes or edges on black for
    /// scribble, Canny and line-art ControlNets); resized to the output size if it differs.
    #[arg(
        long = "control-image",
        value_name = "FILE",
        help_heading = "ControlNet"
    )]
    control_images: Vec<PathBuf>,
    /// How strongly the --controlnet before it steers (default 1; 0 is off).
    #[arg(long = "control-scale", value_name = "F", help_heading = "ControlNet")]
    control_scales: Vec<f32>,
    /// The fraction of the steps at which the --controlnet before it starts (default 0).
    #[arg(long = "control-start", value_name = "F", help_heading = "ControlNet")]
    control_starts: Vec<f64>,
    /// The fraction of the steps at which the --controlnet before it stops (default 1).
    #[arg(long = "control-end", value_name = "F", help_heading = "ControlNet")]
    control_ends: Vec<f64>,
    /// Turn the --control-image of the --controlnet before it into a control image first:
    /// none (it already is one), scribble (a drawing's strokes, dark-on-light inverted), canny,
    /// xdog (a picture's dark lines, hand-drawn looking) or softedge.
    #[arg(long = "control-preprocessor", value_name = "NAME", value_parser = atelier::sketch::control::Preprocessor::NAMES, help_heading = "ControlNet")]
    control_preprocessors: Vec<String>,
    /// balanced (the prompt and the control weigh alike) or control ("ControlNet is more
    /// important": only the prompt's side of the guidance gets it).
    #[arg(long = "control-mode", value_name = "MODE", value_parser = ["balanced", "control"], help_heading = "ControlNet")]
    control_modes: Vec<String>,
    /// Draw the sketched subject again at the model's own size: the square around the control
    /// images' lines is generated alone at the model's native size and blended back (small
    /// subjects keep their details; about twice the time).
    #[arg(long, help_heading = "ControlNet")]
    subject_pass: bool,
    /// What the model predicts, when its files say otherwise or nothing (an SD 2.x checkpoint
    /// without its .yaml): eps (noise) or v. `atelier models` says what was decided and how.
    #[arg(long, value_parser = ["eps", "v"])]
    prediction: Option<String>,
    /// The prompt; repeat it to queue one job per prompt (same settings), run in order.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    #[arg(long, default_value = "")]
    negative: String,
    /// Defaults to a random seed (printed).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    guidance: Option<f32>,
    #[arg(long)]
    width: Option<u32>,
    #[arg(long)]
    height: Option<u32>,
    /// Defaults to the model's recommended sampler.
    #[arg(long, value_parser = parse_sampler())]
    sampler: Option<SamplerKind>,
    /// Init image for image-to-image.
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// 0 keeps the init image, 1 ignores it.
    #[arg(long, default_value_t = 0.75)]
    strength: f32,
    /// Inpainting mask (white repaints, black keeps); needs --init-image.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Initial latent noise: a safetensors file with one tensor `noise` [1, C, H/8, W/8].
    #[arg(long)]
    noise: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// A1111's "Clip skip": 1 uses the text encoder's last layer, 2 the one before
    /// (SD 1.x/2.x; SDXL ignores it, as A1111 does).
    #[arg(long, default_value_t = 1)]
    clip_skip: u32,
    /// Free the text encoders after encoding the prompt (less memory while denoising).
    #[arg(long)]
    low_memory: bool,
    /// Where to run: auto (a GPU this build supports if one starts, else the CPU, saying
    /// why), cpu, cuda or metal (an error with the reason when unavailable).
    #[arg(long, default_value = "auto")]
    device: atelier::diffusion::device::DevicePreference,
    /// Also write the PNG here (with its settings embedded); with several pictures, `-1`,
    /// `-2`... are added before the extension.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not record the pictures in the gallery (then --out is required).
    #[arg(long)]
    no_gallery: bool,
    /// Print how long each stage of each job took (model, text, each step, decode).
    #[arg(long, short = 'v')]
    verbose: bool,
}

/// `FILE` or `FILE:WEIGHT` (the weight after the last `:`, when it is a number).
fn parse_lora(text: &str) -> Result<atelier::generation::LoraSpec, String> {
    let (path, weight) = match text.rsplit_once(':') {
        Some((p, w)) if !p.is_empty() && w.trim().parse::<f32>().is_ok() => {
            (p, w.trim().parse::<f32>().unwrap_or(1.0))
        }
        _ => (text, 1.0),
    };
    if !weight.is_finite() {
        return Err(format!("{text}: the weight must be a number"));
    }
    Ok(atelier::generation::LoraSpec {
        path: PathBuf::from(path),
        weight,
    })
}

/// The job's LoRAs: `--lora` ones, then those the prompt names with `<lora:NAME:W>`, found by
/// name in `dirs` (an error names a tag whose file is not found).
fn loras_for(
    prompt: &str,
    given: &[atelier::generation::LoraSpec],
    dirs: &[PathBuf],
) -> anyhow::Result<Vec<atelier::generation::LoraSpec>> {
    let mut loras = given.to_vec();
    for (name, weight) in atelier::generation::extract_lora_tags(prompt).1 {
        let Some(path) = atelier::diffusion::lora::find_lora(&name, dirs) else {
            bail!(
                "<lora:{name}:{weight}>: no LoRA file named {name} in {} (give the folder with --model-dir, or the file with --lora)",
                if dirs.is_empty() {
                    "any folder".to_owned()
                } else {
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        };
        loras.push(atelier::generation::LoraSpec { path, weight });
    }
    Ok(loras)
}

/// The `--controlnet` groups: each `--control-*` option belongs to the `--controlnet` before
/// it on the command line (read from clap's argument positions).
fn controlnets_from(
    args: &GenerateArgs,
    matches: Option<&clap::ArgMatches>,
) -> anyhow::Result<Vec<atelier::generation::ControlSpec>> {
    use atelier::generation::{ControlMode, ControlSpec};
    if args.controlnets.is_empty() {
        for (given, flag) in [
            (!args.control_images.is_empty(), "--control-image"),
            (!args.control_scales.is_empty(), "--control-scale"),
            (!args.control_starts.is_empty(), "--control-start"),
            (!args.control_ends.is_empty(), "--control-end"),
            (!args.control_modes.is_empty(), "--control-mode"),
            (args.subject_pass, "--subject-pass"),
            (
                !args.control_preprocessors.is_empty(),
                "--control-preprocessor",
            ),
        ] {
            if given {
                bail!("{flag} needs a --controlnet DIR before it");
            }
        }
        return Ok(Vec::new());
    }
    let positions = |id: &str| -> Vec<usize> {
        matches
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let nets = positions("controlnets");
    // The --controlnet each option occurrence belongs to (the last one before it).
    let owners = |id: &str, flag: &str| -> anyhow::Result<Vec<usize>> {
        let mut seen = BTreeSet::new();
        positions(id)
            .into_iter()
            .map(|at| {
                let owner = nets
                    .iter()
                    .rposition(|&n| n < at)
                    .ok_or_else(|| anyhow::anyhow!("{flag} needs a --controlnet DIR before it"))?;
                if !seen.insert(owner) {
                    bail!(
                        "{flag} is given twice for --controlnet {}",
                        args.controlnets[owner].display()
                    );
                }
                Ok(owner)
            })
            .collect()
    };
    let mut images: Vec<Option<&PathBuf>> = vec![None; args.controlnets.len()];
    for (owner, path) in owners("control_images", "--control-image")?
        .into_iter()
        .zip(&args.control_images)
    {
        images[owner] = Some(path);
    }
    let mut specs = Vec::with_capacity(args.controlnets.len());
    for (net, image) in args.controlnets.iter().zip(images) {
        let Some(image) = image else {
            bail!(
                "--controlnet {} needs --control-image FILE after it",
                net.display()
            );
        };
        let rgb = load_rgb(image)
            .with_context(|| format!("{}: cannot read the control image", image.display()))?;
        specs.push(ControlSpec::new(net.clone(), Arc::new(rgb)));
    }
    for (owner, v) in owners("control_scales", "--control-scale")?
        .into_iter()
        .zip(&args.control_scales)
    {
        specs[owner].scale = *v;
    }
    for (owner, v) in owners("control_starts", "--control-start")?
        .into_iter()
        .zip(&args.control_starts)
    {
        specs[owner].start = *v;
    }
    for (owner, v) in owners("control_ends", "--control-end")?
        .into_iter()
        .zip(&args.control_ends)
    {
        specs[owner].end = *v;
    }
    for (owner, v) in owners("control_preprocessors", "--control-preprocessor")?
        .into_iter()
        .zip(&args.control_preprocessors)
    {
        let pre = atelier::sketch::control::Preprocessor::from_name(v)
            .ok_or_else(|| anyhow::anyhow!("unknown preprocessor {v:?}"))?;
        if let Some(image) = &specs[owner].image {
            specs[owner].image = Some(Arc::new(pre.apply(image)));
        }
    }
    for (owner, v) in owners("control_modes", "--control-mode")?
        .into_iter()
        .zip(&args.control_modes)
    {
        specs[owner].mode = match v.as_str() {
            "control" => ControlMode::Control,
            _ => ControlMode::Balanced,
        };
    }
    Ok(specs)
}

pub(crate) fn generate(
    mut args: GenerateArgs,
    model_dirs: &[PathBuf],
    matches: Option<&clap::ArgMatches>,
) -> anyhow::Result<()> {
    let (model, source) = match args.model.take() {
        Some(dir) => (dir, ModelSource::Given),
        None => (atelier::models::default_model_dir(), ModelSource::Embedded),
    };
    let info = ModelInfo::from_dir(&model, source)?;
    let native = info.native_size;
    let width = args.width.unwrap_or(native);
    let height = args.height.unwrap_or(native);
    let init_image = args.init_image.as_deref().map(load_rgb).transpose()?;
    let mask = match &args.mask {
        Some(path) => {
            if init_image.is_none() {
                bail!("--mask needs --init-image");
            }
            Some(
                atelier::imageio::load_image_file(path)
                    .with_context(|| format!("{}: cannot read mask", path.display()))?
                    .to_luma8(),
            )
        }
        None => None,
    };
    if let Some(parent) = args
        .out
        .as_deref()
        .and_then(|o| o.parent())
        .filter(|p| !p.as_os_str().is_empty())
    {
        if !parent.is_dir() {
            bail!("{}: output folder does not exist", parent.display());
        }
    }
    if args.no_gallery && args.out.is_none() {
        bail!("--no-gallery needs --out (the pictures have to go somewhere)");
    }
    let mut controlnets = controlnets_from(&args, matches)?;
    if controlnets.iter().any(|c| c.path.as_os_str() == "auto") {
        let mut look_in = vec![atelier::models::embedded_models_dir()];
        look_in.extend(model.parent().map(Path::to_path_buf));
        look_in.extend(model_dirs.iter().cloned());
        let found = atelier::models::discover::discover_with(&look_in, false).controlnets;
        let own = atelier::models::own_controlnet(&model, &found).ok_or_else(|| {
            let name = model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            anyhow::anyhow!(
                "--controlnet auto: no ControlNet made for {name} is installed (one named \
                 {name}-…, beside the model or in a models folder)"
            )
        })?;
        for c in &mut controlnets {
            if c.path.as_os_str() == "auto" {
                c.path = own.clone();
            }
        }
    }
    let seed = args
        .seed
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let recommended = info.recommended();
    let base = GenerationRequest {
        model_dir: model.clone(),
        prompt: String::new(),
        negative_prompt: args.negative.clone(),
        seed,
        steps: args.steps.unwrap_or(recommended.steps),
        guidance: args.guidance.unwrap_or(recommended.guidance),
        width,
        height,
        sampler: args.sampler.unwrap_or(recommended.sampler),
        strength_0_to_1: args.strength,
        batch: args.batch,
        clip_skip: args.clip_skip,
        init_image: init_image.map(Arc::new),
        mask: mask.map(Arc::new),
        noise_file: args.noise.clone(),
        loras: Vec::new(),
        vae: args.vae.clone(),
        embeddings: Vec::new(),
        controlnets,
        decoder: match args.decoder.as_str() {
            "tiny" => atelier::generation::DecoderChoice::Tiny,
            _ => atelier::generation::DecoderChoice::Full,
        },
        tiny_decoder: args.tiny_decoder.clone(),
        subject_pass: args.subject_pass,
        prediction: args.prediction.map(|p| match p.as_str() {
            "v" => atelier::generation::PredictionType::V,
            _ => atelier::generation::PredictionType::Epsilon,
        }),
    };
    let mut lora_dirs = model_dirs.to_vec();
    lora_dirs.push(atelier::paths::models_dir());
    let requests: Vec<GenerationRequest> = args
        .prompt
        .iter()
        .map(|prompt| {
            let mut embeddings = args.embeddings.clone();
            for found in atelier::diffusion::embedding::used_in(
                &[prompt.as_str(), args.negative.as_str()],
                &atelier::diffusion::embedding::embedding_files(&lora_dirs),
            ) {
                if !embeddings
                    .iter()
                    .any(|e| e.file_stem() == found.file_stem())
                {
                    embeddings.push(found);
                }
            }
            Ok(GenerationRequest {
                prompt: prompt.clone(),
                loras: loras_for(prompt, &args.loras, &lora_dirs)?,
                embeddings,
                ..base.clone()
            })
        })
        .collect::<anyhow::Result<_>>()?;
    for request in &requests {
        request.validate()?;
    }
    // The gallery before the work, so a problem with it shows before minutes of work.
    let mut recorder = if args.no_gallery {
        None
    } else {
        Some(gallery::Recorder::open(args.out.is_none())?)
    };
    let init_ref = args
        .init_image
        .as_deref()
        .map(|p| gallery::lineage_of(p, recorder.as_ref()));
    let parent = init_ref
        .as_ref()
        .and_then(|r| r.gallery_uid())
        .map(str::to_owned);
    let template = ImageMeta {
        model_name: Some(info.name.clone()),
        // A single checkpoint carries AUTOMATIC1111's own hash (so other tools find the model);
        // a folder, a fingerprint of its configs and weights.
        model_hash: if model.is_file() {
            atelier::models::hash::a1111_short_hash(&model).ok()
        } else {
            atelier::gallery::model_fingerprint(&model)
        },
        init_image: init_ref,
        parent,
        mask_image: args
            .mask
            .as_ref()
            .and_then(|m| m.file_name())
            .map(|n| ImageRef::File(n.to_string_lossy().into_owned())),
        ..Default::default()
    };
    eprintln!("model {} ({}), seed {seed}", info.name, info.family_label());
    let engine = spawn_engine(args.low_memory, args.device);
    let mut jobs = Vec::new();
    for request in requests {
        let mut template = template.clone();
        // A VAE file's short hash (the CLI may block on hashing).
        let vae_hash = request
            .vae
            .as_deref()
            .filter(|v| v.is_file())
            .and_then(|v| atelier::models::hash::a1111_short_hash(v).ok());
        template.extra.extend(request.a1111_extras(vae_hash));
        if !request.loras.is_empty() {
            template
                .extra
                .insert("Lora hashes".into(), lora_hashes(&request.loras));
        }
        // Recorded before it runs: a killed run leaves it for `atelier queue resume`.
        let uid = match recorder.as_mut() {
            Some(rec) => rec.add_job(&request, &template)?,
            None => None,
        };
        jobs.push(RunJob {
            id: engine.reserve(),
            uid,
            template,
            request,
            done: BTreeSet::new(),
        });
    }
    run_jobs(
        &engine,
        jobs,
        recorder.as_mut(),
        args.out.as_deref(),
        args.verbose,
    )
}

/// A1111's `Lora hashes` value for the job's LoRAs (hashed here: the CLI may block).
fn lora_hashes(loras: &[atelier::generation::LoraSpec]) -> String {
    let hashes: Vec<(&Path, String)> = loras
        .iter()
        .map(|l| {
            let hash = atelier::models::hash::lora_short_hash(&l.path)
                .unwrap_or_else(|_| "unknown".into());
            (l.path.as_path(), hash)
        })
        .collect();
    atelier::models::hash::lora_hashes_text(hashes.iter().map(|(p, h)| (*p, h.as_str())))
}

/// The engine the CLI runs jobs on.
pub(crate) fn spawn_engine(
    low_memory: bool,
    device: atelier::diffusion::device::DevicePreference,
) -> Engine {
    Engine::spawn_with(
        None,
        atelier::diffusion::GeneratorOptions {
            low_memory,
            device,
            // Nobody sees them on the command line.
            previews: false,
            ..atelier::diffusion::GeneratorOptions::from_env()
        },
    )
}

/// One job for [`run_jobs`]: a reserved engine id, its gallery record (if recorded), the
/// metadata its pictures start from, and the images already made (a resumed job).
pub(crate) struct RunJob {
    pub id: JobId,
    pub uid: Option<String>,
    pub template: ImageMeta,
    pub request: GenerationRequest,
    pub done: BTreeSet<u32>,
}

/// Runs jobs in order with a progress bar: each picture is written to `out` (numbered when
/// there are several) and/or recorded in the gallery as soon as it is decoded, and a job's
/// record is forgotten when it ends. A failed job does not stop the others; the run fails
/// at the end if any did.
pub(crate) fn run_jobs(
    engine: &Engine,
    jobs: Vec<RunJob>,
    mut recorder: Option<&mut gallery::Recorder>,
    out: Option<&Path>,
    verbose: bool,
) -> anyhow::Result<()> {
    let total: u32 = jobs
        .iter()
        .map(|j| j.request.batch - j.done.len() as u32)
        .sum();
    let count = jobs.len();
    let mut running: HashMap<JobId, RunJob> = HashMap::new();
    for job in jobs {
        engine.submit_reserved(job.id, job.request.clone(), job.done.clone());
        running.insert(job.id, job);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {elapsed} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut written = 0u32;
    let mut failures = Vec::new();
    let mut said_device = false;
    while !running.is_empty() {
        let Some(event) = engine.recv_timeout(Duration::from_millis(200))? else {
            continue;
        };
        let Some(job) = running.get(&event.job()) else {
            continue;
        };
        match event {
            EngineEvent::Stages { stages, job } => {
                if verbose {
                    let text = atelier::generation::stages_text(&stages);
                    say(
                        &bar,
                        format!("job {job}, stages:\n  {}", text.replace('\n', "\n  ")),
                    );
                }
            }
            EngineEvent::Started { .. } => {
                if !said_device {
                    if let Some(device) = engine.device_description() {
                        say(&bar, format!("device: {device}"));
                        said_device = true;
                    }
                }
            }
            EngineEvent::Loading { what, .. } => bar.set_message(format!("loading {what}")),
            EngineEvent::Warning { text, .. } => say(&bar, format!("warning: {text}")),
            EngineEvent::Progress {
                image_index,
                step,
                of,
                ..
            } => {
                bar.set_length(of as u64);
                bar.set_position(step as u64);
                bar.set_message(format!("image {}/{}", image_index + 1, job.request.batch));
            }
            EngineEvent::Image { image, .. } => {
                let mut meta =
                    atelier::gallery::meta_of_result(&image, &job.template, job.uid.as_deref());
                if let Some(out) = out {
                    let path = numbered(out, written, total);
                    // The same identity as the gallery copy: one picture, two files.
                    meta.uid = atelier::gallery::new_uid();
                    meta.created = atelier::gallery::now();
                    let bytes = atelier::gallery::metadata::encode_png(
                        &image.image,
                        &atelier::gallery::metadata::png_chunks(&meta),
                    )
                    .map_err(anyhow::Error::msg)?;
                    atelier::gallery::write_durable(&path, &bytes)?;
                    say(
                        &bar,
                        format!("wrote {} (seed {})", path.display(), image.request.seed),
                    );
                }
                if let Some(rec) = recorder.as_deref_mut() {
                    let line = rec.record(&image.image, meta)?;
                    say(&bar, line);
                }
                written += 1;
                // Tests kill the process here, mid-queue (see `gallery::crash_point`).
                atelier::gallery::crash_point(&format!("generate-saved-{written}"));
            }
            EngineEvent::Done { elapsed_secs, job } => {
                say(&bar, format!("job done in {elapsed_secs:.2} s"));
                finish(&mut running, job, recorder.as_deref_mut())?;
            }
            EngineEvent::Failed { error, job } => {
                say(&bar, format!("job failed: {error}"));
                failures.push(error);
                finish(&mut running, job, recorder.as_deref_mut())?;
            }
            EngineEvent::Cancelled { job } => {
                failures.push("cancelled".into());
                finish(&mut running, job, recorder.as_deref_mut())?;
            }
        }
    }
    bar.finish_and_clear();
    match failures.as_slice() {
        [] => {
            eprintln!("done: {written} picture(s)");
            Ok(())
        }
        [one] if count == 1 => bail!("{one}"),
        _ => bail!(
            "{} of {count} job(s) failed: {}",
            failures.len(),
            failures.join("; ")
        ),
    }
}

/// A job ended: its gallery record goes (it is not resumed).
fn finish(
    running: &mut HashMap<JobId, RunJob>,
    job: JobId,
    recorder: Option<&mut gallery::Recorder>,
) -> anyhow::Result<()> {
    if let (Some(job), Some(rec)) = (running.remove(&job), recorder) {
        if let Some(uid) = &job.uid {
            rec.finish_job(uid)?;
        }
    }
    Ok(())
}

/// A line above the progress bar, or plainly on stderr when there is no terminal to draw on.
pub(crate) fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub(crate) fn numbered(out: &Path, index: u32, total: u32) -> PathBuf {
    if total <= 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = out
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    out.with_file_name(format!("{stem}-{}.{ext}", index + 1))
}
