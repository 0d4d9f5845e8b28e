//! `atelier generate`: pictures made headless with a progress bar, recorded in the gallery
//! and/or written to files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use atelier::engine::{Engine, EngineEvent};
use atelier::generation::{GenerationRequest, SamplerKind};
use atelier::models::{ModelInfo, ModelSource};

use super::{gallery, load_rgb, parse_sampler};

#[derive(clap::Args)]
pub(crate) struct GenerateArgs {
    /// The diffusers model folder; defaults to the shipped Atelier Mini.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    prompt: String,
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
    #[arg(long, value_parser = parse_sampler)]
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
    /// Free the text encoders after encoding the prompt (less memory while denoising).
    #[arg(long)]
    low_memory: bool,
    /// Where to run: auto (a GPU this build supports if one starts, else the CPU, saying
    /// why), cpu, cuda or metal (an error with the reason when unavailable).
    #[arg(long, default_value = "auto")]
    device: atelier::diffusion::device::DevicePreference,
    /// Also write the PNG here (with its settings embedded); with --batch > 1, `-1`, `-2`...
    /// are added before the extension.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not record the pictures in the gallery (then --out is required).
    #[arg(long)]
    no_gallery: bool,
}

pub(crate) fn generate(mut args: GenerateArgs) -> anyhow::Result<()> {
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
    let seed = args
        .seed
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let recommended = info.recommended();
    let request = GenerationRequest {
        model_dir: model.clone(),
        prompt: args.prompt,
        negative_prompt: args.negative,
        seed,
        steps: args.steps.unwrap_or(recommended.steps),
        guidance: args.guidance.unwrap_or(recommended.guidance),
        width,
        height,
        sampler: args.sampler.unwrap_or(recommended.sampler),
        strength_0_to_1: args.strength,
        batch: args.batch,
        init_image: init_image.map(Arc::new),
        mask: mask.map(Arc::new),
        noise_file: args.noise,
    };
    request.validate()?;
    // The gallery before the work, so a problem with it shows before minutes of work.
    let mut recorder = if args.no_gallery {
        None
    } else {
        Some(gallery::Recorder::open(args.out.is_none())?)
    };
    let lineage = args
        .init_image
        .as_deref()
        .map(|p| gallery::lineage_of(p, recorder.as_ref()));
    eprintln!("model {} ({}), seed {seed}", info.name, info.family_label());
    let engine = Engine::spawn_with(
        None,
        atelier::diffusion::GeneratorOptions {
            low_memory: args.low_memory,
            device: args.device,
            ..atelier::diffusion::GeneratorOptions::from_env()
        },
    );
    let batch = request.batch;
    let model_hash = atelier::gallery::model_fingerprint(&model);
    let job = engine.submit(request);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {elapsed} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut written = 0u32;
    loop {
        let Some(event) = engine.recv_timeout(Duration::from_millis(200))? else {
            continue;
        };
        if event.job() != job {
            continue;
        }
        match event {
            EngineEvent::Loading { what, .. } => bar.set_message(format!("loading {what}")),
            EngineEvent::Progress {
                image_index,
                step,
                of,
                ..
            } => {
                bar.set_length(of as u64);
                bar.set_position(step as u64);
                bar.set_message(format!("image {}/{batch}", image_index + 1));
            }
            EngineEvent::Image { image, .. } => {
                let mut meta =
                    atelier::gallery::meta_from_generation(&image, Some(info.name.clone()));
                meta.model_hash = model_hash.clone();
                if let Some((init_ref, parent)) = &lineage {
                    meta.init_image = Some(init_ref.clone());
                    meta.parent = parent.clone();
                }
                if let Some(mask) = &args.mask {
                    meta.mask_image = mask.file_name().map(|n| n.to_string_lossy().into_owned());
                }
                if let Some(out) = &args.out {
                    let path = numbered(out, written, batch);
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
                if let Some(rec) = recorder.as_mut() {
                    let line = rec.record(&image.image, meta)?;
                    say(&bar, line);
                }
                written += 1;
            }
            EngineEvent::Done { elapsed_secs, .. } => {
                bar.finish_and_clear();
                eprintln!("done in {elapsed_secs:.2} s");
                return Ok(());
            }
            EngineEvent::Failed { error, .. } => {
                bar.abandon();
                bail!("{error}");
            }
            EngineEvent::Cancelled { .. } => bail!("cancelled"),
            EngineEvent::Started { .. } => {
                if let Some(device) = engine.device_description() {
                    say(&bar, format!("device: {device}"));
                }
            }
        }
    }
}

/// A line above the progress bar, or plainly on stderr when there is no terminal to draw on.
pub(crate) fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub(crate) fn numbered(out: &std::path::Path, index: u32, batch: u32) -> PathBuf {
    if batch <= 1 {
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
