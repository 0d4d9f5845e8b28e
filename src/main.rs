//! The `atelier` binary: no arguments opens the studio; subcommands run the same engine headless.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use atelier::engine::{Engine, EngineEvent};
use atelier::generation::{GenerationRequest, SamplerKind};
use atelier::models::{self, ModelInfo, ModelSource};

mod cli_gallery;

#[derive(Parser)]
#[command(
    name = "atelier",
    version,
    about = "Atelier: an AI image-generation studio"
)]
struct Cli {
    /// Extra folders to look for models in (a model folder or a folder of them).
    #[arg(long = "model-dir", global = true)]
    model_dirs: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images headless, with a progress bar on stderr.
    Generate(GenerateArgs),
    /// Apply an adjustment stack (a JSON file as the studio saves it, e.g. one of
    /// assets/presets/) to images and write PNGs; on the GPU unless --cpu.
    Adjust(AdjustArgs),
    /// List the models found (given folders, the user's models folder, the Hugging Face cache).
    Models {
        /// Folders to scan in addition to the usual places.
        dirs: Vec<PathBuf>,
    },
    /// Train a small text-to-image model (Atelier Mini recipe) on a folder of captioned
    /// images (`captions.jsonl`, `metadata.jsonl` or per-image `.txt`).
    Train(TrainArgs),
    /// Train the category judge that `atelier eval` scores generated images with.
    TrainJudge(TrainJudgeArgs),
    /// Evaluate a model: prompt adherence (judge accuracy), Fréchet distance of judge
    /// features, diversity and memorisation; prints a table and writes a JSON report.
    Eval(EvalArgs),
    /// Prepare training data sets.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// The gallery: list, search, show, rate, trash and export pictures.
    #[command(subcommand)]
    Gallery(GalleryCommand),
    /// Copy pictures into the gallery, reading the settings that AUTOMATIC1111, ComfyUI,
    /// InvokeAI or Atelier embedded in them.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Developer tools.
    #[command(subcommand)]
    Dev(DevCommand),
}

#[derive(clap::Args, Clone)]
struct GalleryFilter {
    /// Only pictures made with this model (its name as listed).
    #[arg(long)]
    model: Option<String>,
    /// Only favourites.
    #[arg(long)]
    favourites: bool,
    /// Only pictures rated at least this (1-5).
    #[arg(long, default_value_t = 0)]
    min_rating: u8,
    /// List the trash instead.
    #[arg(long)]
    trash: bool,
    /// Oldest first (default newest first).
    #[arg(long)]
    oldest_first: bool,
}

#[derive(Subcommand)]
enum GalleryCommand {
    /// List pictures, newest first: id, date, size, seed, model, prompt.
    List {
        #[command(flatten)]
        filter: GalleryFilter,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Full-text search over prompts, negative prompts and tags (every word must match,
    /// as a prefix), best match first.
    Search {
        query: String,
        #[command(flatten)]
        filter: GalleryFilter,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Everything about one picture, including where it came from.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Export pictures to a folder, with their adjustments applied.
    Export {
        /// Full-text query selecting the pictures (default: all, with the filters).
        #[arg(long)]
        query: Option<String>,
        /// Picture ids (comma separated or repeated) instead of a query.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<i64>,
        #[command(flatten)]
        filter: GalleryFilter,
        /// png, jpeg or webp (lossless).
        #[arg(long, default_value = "png")]
        format: String,
        /// JPEG quality 1-100.
        #[arg(long, default_value_t = 92)]
        quality: u8,
        #[arg(long)]
        out: PathBuf,
        /// File names: {seed} {prompt} {id} {uid} {model} {steps} {sampler} {date} {width}
        /// {height} {index}; made safe for every OS, never overwriting.
        #[arg(long, default_value = "{seed}-{prompt}")]
        name_pattern: String,
        /// Leave out prompts, settings and paths (the AI-generated marking stays).
        #[arg(long)]
        strip_metadata: bool,
        /// Export the originals without their adjustment stacks.
        #[arg(long)]
        no_adjustments: bool,
    },
    /// Rate pictures 0-5.
    Rate {
        rating: u8,
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Mark (or with --off unmark) pictures as favourites.
    Favourite {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[arg(long)]
        off: bool,
    },
    /// Set pictures' tags (comma separated; an empty string clears them).
    Tag {
        tags: String,
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Move pictures to the trash (undo with `restore`).
    Trash {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Bring pictures back from the trash.
    Restore {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Delete the trash for good.
    EmptyTrash,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// The emoji recipe: captioned Noto emoji from the npm packages fetched by
    /// scripts/fetch-emoji-data.sh, split into train/ and a held-out eval/.
    Emoji {
        /// The folder holding node_modules/ (what the fetch script prints).
        #[arg(long)]
        npm: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Folder of images with captions.
    #[arg(long)]
    data: PathBuf,
    /// Output folder: `checkpoint/`, `loss.csv` and the exported model in `model/`.
    #[arg(long)]
    out: PathBuf,
    /// UNet + text-encoder steps.
    #[arg(long, default_value_t = 20_000)]
    steps: usize,
    /// VAE steps (the first stage).
    #[arg(long, default_value_t = 2_500)]
    vae_steps: usize,
    /// Batch size of the UNet stage.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Batch size of the VAE stage.
    #[arg(long, default_value_t = 8)]
    vae_batch: usize,
    /// Continue the checkpoint in --out (exactly where it stopped).
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Learning rate of the UNet stage.
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// Background that transparent images are composited on, as #rrggbb.
    #[arg(long, default_value = "#ffffff", value_parser = parse_colour)]
    background: [u8; 3],
    /// Sample UNet batches evenly over the values of this caption-file key (e.g. category);
    /// with --resume it applies from the checkpoint on (without it a resume keeps the run's).
    #[arg(long)]
    balance_by: Option<String>,
    /// UNet step from which the learning rate falls linearly to zero at --steps (decay the
    /// last part of a run, or start the decay when resuming one); default: constant.
    #[arg(long)]
    decay_from: Option<usize>,
    /// What the UNet learns: `epsilon` (SD 1.5's noise prediction) or `v-zero-snr`
    /// (v-prediction on a zero-terminal-SNR schedule). With --resume it switches the run to it
    /// from the checkpoint on; default: the run's own, or v-zero-snr for a new run.
    #[arg(long)]
    objective: Option<atelier::train::recipe::Objective>,
    /// Drop each caption tag after the first (tags are comma-separated) with this probability
    /// whenever an image is drawn, so it is seen under many captions; with --resume it
    /// applies from the checkpoint on (without it a resume keeps the run's).
    #[arg(long)]
    tag_dropout: Option<f64>,
    /// Start a new run from the weights of a model this recipe exported (e.g. the shipped
    /// Atelier Mini, to fine-tune it on your own images): the VAE stage is skipped.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// UNet steps over which the learning rate ramps up from zero (useful with --init-from).
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Train on the CPU even in a build with GPU support and a GPU present.
    #[arg(long)]
    cpu: bool,
}

#[derive(clap::Args)]
struct TrainJudgeArgs {
    #[arg(long)]
    data: PathBuf,
    /// Held-out folder whose accuracy is reported.
    #[arg(long)]
    val_data: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "category")]
    label_key: String,
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 0.002)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// Judge folder (judge.json + judge.safetensors).
    #[arg(long, default_value = "assets/models/atelier-mini-judge")]
    judge: PathBuf,
    /// A jsonl of prompts (caption + category); default: drawn from --data and --train-data.
    #[arg(long)]
    prompts: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Held-out split (default: ~/.cache/atelier/emoji-data/eval when it exists).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training split (default: ~/.cache/atelier/emoji-data/train when it exists).
    #[arg(long)]
    train_data: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    diversity_prompts: usize,
    #[arg(long, default_value_t = 4)]
    diversity_seeds: usize,
    #[arg(long, default_value_t = 0.02)]
    memorisation_threshold: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    guidance: Option<f32>,
    #[arg(long, value_parser = parse_sampler)]
    sampler: Option<SamplerKind>,
    /// Write the generated images and a diversity grid here.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Real Inception-v3 weights for a classic FID (not supported yet).
    #[arg(long)]
    inception: Option<PathBuf>,
    #[arg(long, default_value = "eval-report.json")]
    out: PathBuf,
}

fn parse_colour(s: &str) -> Result<[u8; 3], String> {
    let hex = s.trim_start_matches('#');
    let bad = || format!("{s:?} is not a #rrggbb colour");
    // Six ASCII hex digits; byte slicing below is then on character boundaries.
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

#[derive(Subcommand)]
enum DevCommand {
    /// Write a tiny random-weight model (real SD architecture) as a diffusers folder.
    TinyModel {
        #[arg(long, default_value = "sd15", value_parser = ["sd15", "sd2v", "sdxl", "sd15-inpaint"])]
        kind: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Redraw a training run's loss.png from its loss.csv.
    PlotLoss {
        /// The training run's --out folder.
        #[arg(long)]
        run: PathBuf,
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
        #[arg(long, value_parser = parse_sampler)]
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

#[derive(clap::Args)]
struct AdjustArgs {
    /// Input images (PNG or JPEG).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The adjustment stack (JSON).
    #[arg(long)]
    stack: PathBuf,
    /// Output PNG for one input; a folder (created if missing) for any number of inputs,
    /// where each result is named after its input (`photo.jpg` -> `photo.png`).
    #[arg(long)]
    out: PathBuf,
    /// Use the CPU reference implementation instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Leave the input's prompts and settings out of the result (the AI-generated marking of
    /// a generated input stays). Without it the result carries them, as gallery files do.
    #[arg(long)]
    strip_metadata: bool,
}

#[derive(clap::Args)]
struct GenerateArgs {
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

fn parse_sampler(s: &str) -> Result<SamplerKind, String> {
    SamplerKind::from_cli_name(s).ok_or_else(|| {
        let names: Vec<_> = SamplerKind::ALL.iter().map(|k| k.cli_name()).collect();
        format!("unknown sampler {s:?}; one of {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => atelier::app::run_studio(atelier::app::StudioOptions {
            extra_model_dirs: cli.model_dirs,
            ..Default::default()
        }),
        Some(Command::Generate(args)) => generate(args),
        Some(Command::Adjust(args)) => adjust(args),
        Some(Command::Models { dirs }) => list_models(&[cli.model_dirs, dirs].concat()),
        Some(Command::Train(args)) => train(args),
        Some(Command::TrainJudge(args)) => train_judge(args),
        Some(Command::Eval(args)) => evaluate(args),
        Some(Command::Dataset(DatasetCommand::Emoji { npm, out })) => prepare_emoji(&npm, &out),
        Some(Command::Gallery(cmd)) => cli_gallery::run(cmd),
        Some(Command::Import { files }) => cli_gallery::import(&files),

        Some(Command::Dev(DevCommand::TinyModel { kind, out })) => {
            let kind = match kind.as_str() {
                "sd2v" => models::tiny::TinyKind::Sd2V,
                "sdxl" => models::tiny::TinyKind::Sdxl,
                "sd15-inpaint" => models::tiny::TinyKind::Sd15Inpaint,
                _ => models::tiny::TinyKind::Sd15,
            };
            models::tiny::write_tiny_model(&out, kind)
        }
        Some(Command::Dev(DevCommand::PlotLoss { run })) => {
            atelier::train::trainer::plot_losses(&run)
                .map(|()| eprintln!("wrote {}", run.join("loss.png").display()))
                .map_err(Into::into)
        }
        Some(Command::Dev(DevCommand::Grid {
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
        })) => read_prompts(prompts, prompts_file.as_deref()).and_then(|prompts| {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn list_models(dirs: &[PathBuf]) -> anyhow::Result<()> {
    use atelier::diffusion::device::{choose, DevicePreference};
    // On stderr: stdout stays one model per line for scripts.
    match choose(DevicePreference::Auto) {
        Ok(choice) => eprintln!("device: {}", choice.describe()),
        Err(e) => eprintln!("device: {e}"),
    }
    let found = models::discover::discover(dirs);
    if found.models.is_empty() {
        println!(
            "no models found; put a diffusers model folder in {} or pass --model-dir DIR",
            atelier::paths::models_dir().display()
        );
    }
    for m in &found.models {
        let source = match m.source {
            ModelSource::Embedded => "embedded",
            ModelSource::UserFolder => "models folder",
            ModelSource::Given => "given",
            ModelSource::HuggingFaceCache => "hf cache",
        };
        println!(
            "{}\t{}\t{}\t{}",
            m.name,
            m.family_label(),
            source,
            m.dir.display()
        );
    }
    for r in &found.rejected {
        eprintln!("skipped {}: {}", r.dir.display(), r.error);
    }
    Ok(())
}

fn load_rgb(path: &std::path::Path) -> anyhow::Result<image::RgbImage> {
    Ok(atelier::imageio::load_image_file(path)
        .with_context(|| format!("{}: cannot read image", path.display()))?
        .to_rgb8())
}

/// Where each input's result goes: `out` itself for one input that is not a folder,
/// otherwise `out/<input stem>.png`. Refuses to overwrite an input or to write two results
/// to one file.
fn adjust_outputs(inputs: &[PathBuf], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let outputs: Vec<PathBuf> = if inputs.len() == 1 && !out.is_dir() {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                bail!("{}: output folder does not exist", parent.display());
            }
        }
        vec![out.to_path_buf()]
    } else {
        if out.exists() && !out.is_dir() {
            bail!(
                "{}: with several inputs --out must be a folder",
                out.display()
            );
        }
        let mut outputs: Vec<PathBuf> = Vec::new();
        for input in inputs {
            let stem = input
                .file_stem()
                .with_context(|| format!("{}: not a file name", input.display()))?;
            let path = out.join(stem).with_extension("png");
            if let Some(i) = outputs.iter().position(|p| *p == path) {
                bail!(
                    "{} and {} would both be written to {}",
                    inputs[i].display(),
                    input.display(),
                    path.display()
                );
            }
            outputs.push(path);
        }
        outputs
    };
    let canonical_inputs: Vec<PathBuf> = inputs
        .iter()
        .map(|p| {
            std::fs::canonicalize(p).with_context(|| format!("{}: cannot read image", p.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    for output in &outputs {
        if let Ok(existing) = std::fs::canonicalize(output) {
            if canonical_inputs.contains(&existing) {
                bail!(
                    "{}: refusing to overwrite an input image; choose another --out",
                    output.display()
                );
            }
        }
    }
    if inputs.len() > 1 || out.is_dir() {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    }
    Ok(outputs)
}

fn adjust(args: AdjustArgs) -> anyhow::Result<()> {
    use atelier::postfx::{apply_to_rgb8, gpu::GpuRunner, Stack};
    let text = std::fs::read_to_string(&args.stack)
        .with_context(|| format!("{}: cannot read the stack", args.stack.display()))?;
    let stack = Stack::from_json(&text).with_context(|| args.stack.display().to_string())?;
    for name in stack.unknown_ops() {
        eprintln!(
            "warning: {}: adjustment \"{name}\" is unknown to this version of Atelier and is skipped",
            args.stack.display()
        );
    }
    let outputs = adjust_outputs(&args.inputs, &args.out)?;
    let gpu = if args.cpu {
        None
    } else {
        match GpuRunner::headless() {
            Ok(runner) => Some(runner),
            Err(e) => {
                eprintln!("GPU unavailable ({e}); using the CPU");
                None
            }
        }
    };
    match &gpu {
        Some(runner) => println!("adjusting on the GPU: {}", runner.adapter_description()),
        None => println!("adjusting on the CPU"),
    }
    for (input, output) in args.inputs.iter().zip(&outputs) {
        let image = load_rgb(input)?;
        let (adjusted, used) = match &gpu {
            Some(runner) => match runner.apply_rgb8(&image, &stack) {
                Ok(adjusted) => (adjusted, "GPU"),
                Err(e) => {
                    eprintln!("{}: the GPU failed ({e}); using the CPU", input.display());
                    (apply_to_rgb8(&image, &stack), "CPU")
                }
            },
            None => (apply_to_rgb8(&image, &stack), "CPU"),
        };
        let carried = atelier::gallery::embedded_meta_of_file(input)?;
        write_adjusted(&adjusted, carried, &args, output)?;
        println!("{} -> {} ({used})", input.display(), output.display());
    }
    Ok(())
}

/// Writes an adjusted picture (durably) in the format its name asks for, carrying the
/// settings its input carried, marked as adjusted from it; an input that carried none (a
/// photo) gives a plain file.
fn write_adjusted(
    image: &image::RgbImage,
    carried: Option<atelier::gallery::ImageMeta>,
    args: &AdjustArgs,
    output: &Path,
) -> anyhow::Result<()> {
    use atelier::gallery::export::{encode, ExportFormat, ExportOptions};
    let opts = ExportOptions {
        format: ExportFormat::from_path(output).unwrap_or_default(),
        strip_metadata: args.strip_metadata,
        ..Default::default()
    };
    let bytes = match carried {
        Some(mut meta) => {
            meta.parent = Some(std::mem::take(&mut meta.uid)).filter(|u| !u.is_empty());
            meta.uid = atelier::gallery::new_uid();
            meta.lineage = Some("adjust".into());
            meta.created = atelier::gallery::now();
            // The pixels have it applied: a stack stored too would be applied twice.
            meta.adjustments = None;
            meta.extra.insert(
                "Adjusted with".into(),
                args.stack
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            meta.width = image.width();
            meta.height = image.height();
            encode(image, &meta, &opts).map_err(anyhow::Error::msg)?
        }
        None => {
            let format = match opts.format {
                ExportFormat::Png => image::ImageFormat::Png,
                ExportFormat::Jpeg => image::ImageFormat::Jpeg,
                ExportFormat::Webp => image::ImageFormat::WebP,
            };
            let mut plain = Vec::new();
            image.write_to(&mut std::io::Cursor::new(&mut plain), format)?;
            plain
        }
    };
    atelier::gallery::write_durable(output, &bytes)?;
    Ok(())
}

fn generate(mut args: GenerateArgs) -> anyhow::Result<()> {
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
        Some(cli_gallery::Recorder::open(args.out.is_none())?)
    };
    let lineage = args
        .init_image
        .as_deref()
        .map(|p| cli_gallery::lineage_of(p, recorder.as_ref()));
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
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn numbered(out: &std::path::Path, index: u32, batch: u32) -> PathBuf {
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

/// A CUDA GPU in a build with the `cuda` feature (unless `--cpu`), else the CPU. Metal builds
/// train on the CPU: training on Metal has not been tried.
fn training_device(cpu: bool) -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if !cpu {
        if let Ok(device) = candle_core::Device::new_cuda(0) {
            return device;
        }
    }
    let _ = cpu;
    candle_core::Device::Cpu
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    use atelier::train::trainer::{self, Stage, TrainEvent, TrainOptions};
    let opts = TrainOptions {
        data: args.data,
        out: args.out,
        steps: args.steps,
        vae_steps: args.vae_steps,
        batch: args.batch,
        vae_batch: args.vae_batch,
        resume: args.resume,
        checkpoint_every: args.checkpoint_every,
        seed: args.seed,
        lr: args.lr,
        background: args.background,
        balance_by: args.balance_by,
        decay_from: args.decay_from,
        objective: args.objective,
        tag_dropout: args.tag_dropout,
        init_from: args.init_from,
        warmup: args.warmup,
        device: training_device(args.cpu),
        ..Default::default()
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>4} [{bar:30}] {pos}/{len} loss {msg} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut smoothed: Option<f64> = None;
    // Without a terminal (a log file) the bar is hidden: say the same in plain lines.
    let plain = bar.is_hidden();
    let say = |text: String| {
        if plain {
            eprintln!("{text}");
        } else {
            bar.println(text);
        }
    };
    let mut last_report = std::time::Instant::now();
    let mut steps_since = 0usize;
    let summary = trainer::train(&opts, &mut |event| match event {
        TrainEvent::Note(text) => say(text),
        TrainEvent::Stage { stage, from, of } => {
            bar.set_prefix(match stage {
                Stage::Vae => "vae",
                _ => "unet",
            });
            bar.set_length(of as u64);
            bar.set_position(from as u64);
            bar.reset_eta();
            smoothed = None;
        }
        TrainEvent::Step {
            stage,
            step,
            of,
            loss,
        } => {
            let s = smoothed.map_or(loss, |s| 0.98 * s + 0.02 * loss);
            smoothed = Some(s);
            bar.set_position(step as u64);
            bar.set_message(format!("{s:.4}"));
            steps_since += 1;
            if plain && (step % 50 == 0 || step == of) {
                let rate = steps_since as f64 / last_report.elapsed().as_secs_f64().max(1e-9);
                say(format!(
                    "{stage:?} step {step}/{of} loss {s:.4} ({rate:.2} steps/s)"
                ));
                last_report = std::time::Instant::now();
                steps_since = 0;
            }
        }
        TrainEvent::Checkpoint { step, dir } => {
            say(format!("checkpoint at step {step} in {}", dir.display()))
        }
    })?;
    bar.finish_and_clear();
    eprintln!(
        "trained on {} images: {} VAE + {} UNet steps this run; model in {}",
        summary.images,
        summary.vae_steps,
        summary.unet_steps,
        summary.model_dir.display()
    );
    Ok(())
}

fn prepare_emoji(npm: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let report = atelier::train::emoji::prepare_emoji(npm, out, &Default::default())?;
    println!(
        "train: {} images of {} emoji; eval (held out): {} images of {} emoji",
        report.train_images, report.base_train, report.eval_images, report.base_eval
    );
    for (category, n) in &report.categories {
        println!("  {category}: {n}");
    }
    Ok(())
}

/// Prompts from the command line, then one per non-empty line of `file`.
fn read_prompts(
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

struct GridSettings {
    steps: Option<usize>,
    guidance: Option<f32>,
    sampler: Option<SamplerKind>,
    per_prompt: u32,
    seed: u64,
    prompt_columns: u32,
    scale: u32,
}

fn sample_grid(
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
        let mut images = Vec::new();
        let mut control = atelier::diffusion::JobControl {
            cancel: &cancel,
            on_loading: &mut |_| {},
            on_step: &mut |_, _, _, _| {},
            on_image: &mut |img| images.push(img.image.as_ref().clone()),
        };
        generator.run(&request, &mut control)?;
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

fn train_judge(args: TrainJudgeArgs) -> anyhow::Result<()> {
    use atelier::train::judge::{train_judge, JudgeTrainOptions};
    let opts = JudgeTrainOptions {
        data: args.data,
        val_data: args.val_data,
        out: args.out,
        label_key: args.label_key,
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        ..Default::default()
    };
    let bar = ProgressBar::new(opts.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("judge [{bar:30}] {pos}/{len} {msg} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = train_judge(&opts, &mut |step, _of, loss, acc| {
        bar.set_position(step as u64);
        bar.set_message(format!("loss {loss:.3} acc {:.0}%", acc * 100.0));
    })?;
    bar.finish_and_clear();
    println!("{report:#?}");
    Ok(())
}

fn evaluate(args: EvalArgs) -> anyhow::Result<()> {
    use atelier::train::eval::{evaluate, EvalOptions};
    let cached = |split: &str| {
        dirs::home_dir()
            .map(|h| h.join(".cache/atelier/emoji-data").join(split))
            .filter(|d| d.join("captions.jsonl").is_file())
    };
    let opts = EvalOptions {
        model: args.model,
        judge: args.judge,
        prompts: args.prompts,
        n: args.n,
        eval_data: args.data.or_else(|| cached("eval")),
        train_data: args.train_data.or_else(|| cached("train")),
        inception: args.inception,
        diversity_prompts: args.diversity_prompts,
        diversity_seeds: args.diversity_seeds,
        memorisation_threshold: args.memorisation_threshold,
        seed: args.seed,
        steps: args.steps,
        guidance: args.guidance,
        sampler: args.sampler,
        samples_dir: args.samples,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = evaluate(&opts, &mut |phase, done, of| {
        bar.set_message(phase.to_owned());
        bar.set_length(of as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    println!("{}", report.table());
    report
        .write_json(&args.out)
        .with_context(|| format!("{}: cannot write the report", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}
