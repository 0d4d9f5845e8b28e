//! `atelier dev ...`: developer tools (tiny models, loss plots, sample grids).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use atelier::generation::{GenerationRequest, SamplerKind};
use atelier::models::{ModelInfo, ModelSource};

use super::parse_sampler;

#[derive(Subcommand)]
pub(crate) enum DevCommand {
    /// Write a tiny random-weight model (real SD architecture) as a diffusers folder.
    TinyModel {
        #[arg(long, default_value = "sd15", value_parser = ["sd15", "sd2v", "sdxl", "sd15-inpaint"])]
        kind: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a diffusers folder as one checkpoint in the original (LDM) layout, the form
    /// AUTOMATIC1111 and ComfyUI use (with Atelier's configs in its metadata).
    SingleFile {
        #[arg(long)]
        model: PathBuf,
        /// The .safetensors file to write.
        #[arg(long)]
        out: PathBuf,
        /// Store the weights as f16.
        #[arg(long)]
        half: bool,
        /// Leave Atelier's configs out (the file then reads with the family's standard ones).
        #[arg(long)]
        no_configs: bool,
    },
    /// Benchmark: with a model and a ControlNet loaded (default: Atelier Mini at its card's
    /// settings), the time from a finished stroke to the picture as live mode asks for it
    /// (median and slowest of RUNS), and 4 sketch-conditioned pictures against 4 plain ones,
    /// interleaved, in this process.
    ControlnetTiming {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        controlnet: PathBuf,
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// Only the stroke-to-picture runs with the default settings (for a profiler).
        #[arg(long)]
        live_only: bool,
        /// The picture's side (default: the model's native size).
        #[arg(long)]
        size: Option<u32>,
        /// With the subject pass, the strokes kept to the top-left quarter of the canvas so
        /// that it runs.
        #[arg(long)]
        subject_pass: bool,
    },
    /// Benchmark: the VAE decoder alone (MODEL's `vae/` folder, or a VAE folder) on
    /// random latents for a SIZE x SIZE picture, RUNS times after one warm-up, printing each
    /// run, the median and the fastest (in this process; for profiling the decoder).
    VaeTiming {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 512)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Benchmark: load a model once, then apply a LoRA and change its weight RUNS times,
    /// printing the load time and the median and slowest application (in this process).
    LoraTiming {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        lora: PathBuf,
        #[arg(long, default_value_t = 7)]
        runs: usize,
    },
    /// Write the man page (atelier.1) made from this command line's own definition.
    ManPage {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write shell completions (bash, zsh, fish) made from this command line's definition.
    Completions {
        #[arg(long)]
        out: PathBuf,
    },
    /// Redraw a training run's loss.png from its loss.csv.
    PlotLoss {
        /// The training run's --out folder.
        #[arg(long)]
        run: PathBuf,
    },
    /// Hand-drawn-style sketches (a wobbly pen tracing each picture's outline, with breaks)
    /// from captioned pictures, for `atelier eval --controlnet DIR --sketches DIR`.
    MakeSketches {
        /// Captioned pictures (e.g. the held-out split).
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 40)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The subjects' size as a share of the frame, drawn at random within MIN..MAX (the
        /// quoted held-out set: 0.45..0.8).
        #[arg(long, default_value = "0.45..0.8", value_parser = parse_scales)]
        scales: std::ops::Range<f32>,
    },
    /// A PNG grid of samples: one row per prompt, one column per seed.
    Grid {
        #[arg(long)]
        model: PathBuf,
        /// Prompts, one per row (repeat the flag).
        #[arg(long = "prompt", required_unless_present = "prompts_file")]
        prompts: Vec<String>,
        /// A text file with one prompt per line (after any --prompt).
        #[arg(long)]
        prompts_file: Option<PathBuf>,
        /// Overrides the model card's recommended step count.
        #[arg(long)]
        steps: Option<usize>,
        /// Overrides the model card's recommended guidance.
        #[arg(long)]
        guidance: Option<f32>,
        /// Overrides the model card's recommended sampler.
        #[arg(long, value_parser = parse_sampler())]
        sampler: Option<SamplerKind>,
        /// Seeds per prompt (columns), starting at --seed.
        #[arg(long, default_value_t = 4)]
        per_prompt: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Lay the rows out in this many columns of prompts.
        #[arg(long, default_value_t = 1)]
        prompt_columns: u32,
        #[arg(long, default_value_t = 2)]
        scale: u32,
        #[arg(long)]
        out: PathBuf,
    },
}

pub(crate) fn run(cmd: DevCommand) -> anyhow::Result<()> {
    match cmd {
        DevCommand::TinyModel { kind, out } => {
            let kind = match kind.as_str() {
                "sd2v" => atelier::diffusion::tiny::TinyKind::Sd2V,
                "sdxl" => atelier::diffusion::tiny::TinyKind::Sdxl,
                "sd15-inpaint" => atelier::diffusion::tiny::TinyKind::Sd15Inpaint,
                _ => atelier::diffusion::tiny::TinyKind::Sd15,
            };
            atelier::diffusion::tiny::write_tiny_model(&out, kind)
        }
        DevCommand::SingleFile {
            model,
            out,
            half,
            no_configs,
        } => {
            atelier::models::export::write_single_file(
                &model,
                &out,
                atelier::models::export::ExportOptions { half, no_configs },
            )?;
            println!("{}", out.display());
            Ok(())
        }
        DevCommand::LoraTiming { model, lora, runs } => lora_timing(&model, &lora, runs),
        DevCommand::VaeTiming { model, size, runs } => vae_timing(&model, size, runs),
        DevCommand::ControlnetTiming {
            model,
            controlnet,
            runs,
            live_only,
            size,
            subject_pass,
        } => controlnet_timing(
            &model.unwrap_or_else(atelier::models::default_model_dir),
            &controlnet,
            runs,
            live_only,
            size,
            subject_pass,
        ),
        DevCommand::ManPage { out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("{}: cannot create the folder", out.display()))?;
            let path = out.join("atelier.1");
            let mut page = Vec::new();
            clap_mangen::Man::new(super::command()).render(&mut page)?;
            atelier::fsio::write_file(&path, &page, atelier::fsio::Durability::Atomic)?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        DevCommand::Completions { out } => {
            use clap_complete::Shell;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("{}: cannot create the folder", out.display()))?;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let path =
                    clap_complete::generate_to(shell, &mut super::command(), "atelier", &out)
                        .with_context(|| format!("{}: cannot write completions", out.display()))?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        DevCommand::PlotLoss { run } => atelier::train::trainer::plot_losses(&run)
            .map(|()| eprintln!("wrote {}", run.join("loss.png").display()))
            .map_err(Into::into),
        DevCommand::MakeSketches {
            data,
            out,
            n,
            seed,
            scales,
        } => {
            let written =
                atelier::train::eval::control::make_sketches(&data, &out, n, seed, scales)?;
            eprintln!("wrote {written} sketches to {}", out.display());
            Ok(())
        }
        DevCommand::Grid {
            model,
            prompts,
            prompts_file,
            steps,
            guidance,
            sampler,
            per_prompt,
            seed,
            prompt_columns,
            scale,
            out,
        } => read_prompts(prompts, prompts_file.as_deref()).and_then(|prompts| {
            sample_grid(
                &model,
                &prompts,
                GridSettings {
                    steps,
                    guidance,
                    sampler,
                    per_prompt,
                    seed,
                    prompt_columns,
                    scale,
                },
                &out,
            )
        }),
    }
}

/// Prompts from the command line, then one per non-empty line of `file`.
pub(crate) fn read_prompts(
    mut prompts: Vec<String>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<String>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read", file.display()))?;
        prompts.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    anyhow::ensure!(!prompts.is_empty(), "no prompts given");
    Ok(prompts)
}

pub(crate) struct GridSettings {
    steps: Option<usize>,
    guidance: Option<f32>,
    sampler: Option<SamplerKind>,
    per_prompt: u32,
    seed: u64,
    prompt_columns: u32,
    scale: u32,
}

pub(crate) fn sample_grid(
    model: &std::path::Path,
    prompts: &[String],
    settings: GridSettings,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let GridSettings {
        steps,
        guidance,
        sampler,
        per_prompt,
        seed,
        prompt_columns,
        scale,
    } = settings;
    let info = ModelInfo::from_dir(model, ModelSource::Given)?;
    let rec = info.recommended();
    let mut generator = atelier::diffusion::Generator::default();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut rows: Vec<Vec<image::RgbImage>> = Vec::new();
    for prompt in prompts {
        let request = GenerationRequest {
            model_dir: model.to_path_buf(),
            prompt: prompt.clone(),
            seed,
            steps: steps.unwrap_or(rec.steps),
            guidance: guidance.unwrap_or(rec.guidance),
            sampler: sampler.unwrap_or(rec.sampler),
            width: info.native_size,
            height: info.native_size,
            batch: per_prompt.max(1),
            ..Default::default()
        };
        let images: Vec<image::RgbImage> = generator
            .collect(&request, &cancel)?
            .0
            .into_iter()
            .map(|img| img.image.as_ref().clone())
            .collect();
        eprintln!("{prompt}");
        rows.push(images);
    }
    // Reading order: each grid row holds `prompt_columns` prompts' samples side by side.
    let cols = prompt_columns.max(1) * per_prompt.max(1);
    let tiles: Vec<image::RgbImage> = rows.into_iter().flatten().collect();
    let grid = atelier::imageio::grid(&tiles, cols, 4, scale, [255, 255, 255]);
    grid.save(out)
        .with_context(|| format!("{}: cannot write", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// `dev controlnet-timing`: see [`DevCommand::ControlnetTiming`].
fn controlnet_timing(
    model: &std::path::Path,
    controlnet: &std::path::Path,
    runs: usize,
    live_only: bool,
    size: Option<u32>,
    subject_pass: bool,
) -> anyhow::Result<()> {
    use atelier::generation::{ControlSpec, GenerationRequest};
    use atelier::sketch::{Layer, SketchDoc, Stroke};
    use std::time::Instant;
    let info = atelier::models::ModelInfo::from_dir(model, atelier::models::ModelSource::Given)?;
    let rec = info.recommended();
    let side = size.unwrap_or(info.native_size);
    let base = GenerationRequest {
        model_dir: model.to_path_buf(),
        prompt: "cat face, animal, pet".into(),
        seed: 7,
        steps: rec.steps,
        guidance: rec.guidance,
        sampler: rec.sampler,
        width: side,
        height: side,
        subject_pass,
        ..Default::default()
    };
    let mut generator = atelier::diffusion::Generator::default();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    // The strokes' room: the whole canvas, or its top-left quarter for the subject pass.
    let room = if subject_pass {
        side as f32 / 2.0
    } else {
        side as f32
    };
    // A sketch as the studio holds it, one more stroke per run.
    let mut doc = SketchDoc::new(side, side);
    doc.add_control_layer(Default::default());
    let with_control = |doc: &SketchDoc| {
        let mut r = base.clone();
        let image = doc.rasterize_control(0, side, side);
        r.controlnets.push(ControlSpec::new(
            controlnet.to_path_buf(),
            std::sync::Arc::new(image),
        ));
        r
    };
    let start = Instant::now();
    generator.collect(&with_control(&doc), &cancel)?;
    eprintln!(
        "load and first picture: {:.2} s ({} steps, {side}x{side}, guidance {})",
        start.elapsed().as_secs_f64(),
        rec.steps,
        rec.guidance
    );
    // Guidance's halves side by side (the default at this size) and as one joint batch,
    // interleaved.
    let (mut live, mut joint) = (Vec::new(), Vec::new());
    for i in 0..runs.max(1) {
        let settings = if live_only {
            vec![(None, &mut live)]
        } else {
            vec![(None, &mut live), (Some(false), &mut joint)]
        };
        for (split, times) in settings {
            generator.options_mut().split_guidance = split;
            let mut stroke = Stroke::new(3.0, [0, 0, 0, 255], false);
            let y = 8.0 + (i as f32 * 7.0) % (room - 16.0);
            stroke.push_point([8.0, y]);
            stroke.push_point([room - 8.0, room - y]);
            // From the finished stroke: rasterise the control layer, generate.
            let t = Instant::now();
            doc.add_stroke(Layer::Control(0), stroke);
            generator.collect(&with_control(&doc), &cancel)?;
            times.push(t.elapsed().as_secs_f64());
        }
    }
    generator.options_mut().split_guidance = None;
    generator.collect(&with_control(&doc), &cancel)?;
    let stages: Vec<String> = generator
        .stages()
        .iter()
        .map(|(name, secs)| format!("{name} {:.1} ms", secs * 1000.0))
        .collect();
    eprintln!("one picture's stages: {}", stages.join(", "));
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let slowest = live.iter().copied().fold(0.0, f64::max);
    if live_only {
        println!(
            "stroke to picture: median {:.0} ms over {} runs",
            median(&mut live) * 1000.0,
            live.len()
        );
        return Ok(());
    }
    let (m, j) = (median(&mut live), median(&mut joint));
    println!(
        "stroke to picture: median {:.0} ms, slowest {:.0} ms over {} runs \
         (guidance as one joint batch: median {:.0} ms, ratio {:.2})",
        m * 1000.0,
        slowest * 1000.0,
        live.len(),
        j * 1000.0,
        m / j
    );
    // Four conditioned against four plain pictures, interleaved.
    let mut four = base.clone();
    four.batch = 4;
    let mut four_control = with_control(&doc);
    four_control.batch = 4;
    let (mut plain, mut controlled) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        generator.collect(&four, &cancel)?;
        plain.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        generator.collect(&four_control, &cancel)?;
        controlled.push(t.elapsed().as_secs_f64());
    }
    let (p, c) = (median(&mut plain), median(&mut controlled));
    println!(
        "4 pictures: plain median {:.0} ms, with the ControlNet {:.0} ms, ratio {:.2}",
        p * 1000.0,
        c * 1000.0,
        c / p
    );
    Ok(())
}

/// `dev vae-timing`: see [`DevCommand::VaeTiming`].
fn vae_timing(model: &std::path::Path, size: usize, runs: usize) -> anyhow::Result<()> {
    use atelier::diffusion::vae::Vae;
    use atelier::models::config::VaeConfig;
    use std::time::Instant;
    let device = candle_core::Device::Cpu;
    let dir = if model.join("vae").is_dir() {
        model.join("vae")
    } else {
        model.to_path_buf()
    };
    let config: VaeConfig = serde_json::from_slice(
        &std::fs::read(dir.join("config.json"))
            .with_context(|| format!("{}: no VAE config", dir.display()))?,
    )?;
    let vb = atelier::diffusion::weights::vae_override(model, candle_core::DType::F32, &device)?;
    let vae = Vae::new(vb, &config)?;
    let cells = (size / vae.downscale).max(1);
    let latents =
        candle_core::Tensor::randn(0f32, 1.0, (1, vae.latent_channels, cells, cells), &device)?;
    let t = Instant::now();
    vae.decode(&latents)?;
    eprintln!("first decode: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        vae.decode(&latents)?;
        times.push(t.elapsed().as_secs_f64());
        eprintln!("decode: {:.1} ms", times[times.len() - 1] * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "decode {size}x{size}: median {:.1} ms, fastest {:.1} ms over {} runs",
        times[times.len() / 2] * 1000.0,
        times[0] * 1000.0,
        times.len()
    );
    Ok(())
}

/// `dev lora-timing`: the time to load `model`, then to apply `lora` at weights alternating
/// 1.0 / 0.5 on the loaded model (the first application included), median and slowest.
fn lora_timing(model: &std::path::Path, lora: &std::path::Path, runs: usize) -> anyhow::Result<()> {
    use atelier::diffusion::LoadedModel;
    use atelier::generation::LoraSpec;
    use std::time::Instant;
    let device =
        atelier::diffusion::device::choose(atelier::diffusion::device::DevicePreference::Cpu)?
            .device;
    let start = Instant::now();
    let mut loaded = LoadedModel::load(model, &device, &mut |_| {})?;
    eprintln!("load: {:.2} s", start.elapsed().as_secs_f64());
    let mut times = Vec::new();
    for i in 0..runs.max(1) {
        let weight = if i % 2 == 0 { 1.0 } else { 0.5 };
        let spec = [LoraSpec {
            path: lora.to_path_buf(),
            weight,
        }];
        let t = Instant::now();
        loaded.set_loras(&spec)?;
        times.push(t.elapsed().as_secs_f64());
    }
    for w in &loaded.lora_report().warnings {
        eprintln!("warning: {w}");
    }
    let first = times[0];
    times.sort_by(f64::total_cmp);
    println!(
        "apply LoRA: first {:.3} s, median {:.3} s, slowest {:.3} s over {} runs",
        first,
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
    Ok(())
}

/// `MIN..MAX`, two numbers.
fn parse_scales(text: &str) -> Result<std::ops::Range<f32>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text}: expected MIN..MAX, e.g. 0.45..0.8"))?;
    let num = |t: &str| {
        t.trim()
            .parse::<f32>()
            .map_err(|e| format!("{text}: {t}: {e}"))
    };
    Ok(num(a)?..num(b)?)
}
