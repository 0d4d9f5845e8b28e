//! The `atelier` command line: the argument types and their dispatch. One file per
//! subcommand group; each turns its arguments into the library's plain-data options, runs the
//! same engine as the studio, and reports errors as one line with a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use atelier::generation::SamplerKind;
use atelier::models::{self, ModelSource};

pub(crate) mod adjust;
pub(crate) mod dev;
pub(crate) mod eval;
pub(crate) mod gallery;
pub(crate) mod generate;
pub(crate) mod queue;
pub(crate) mod train;

use adjust::AdjustArgs;
use dev::DevCommand;
use eval::EvalArgs;
use gallery::GalleryCommand;
use generate::GenerateArgs;
use queue::QueueCommand;
use train::{DatasetCommand, TrainArgs, TrainControlNetArgs, TrainJudgeArgs};

/// `0.1.0 (cpu, cuda)`: the version and the compute backends this build has.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ATELIER_BUILD_FEATURES"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "atelier",
    version = VERSION,
    about = "Atelier: an AI image-generation studio"
)]
pub(crate) struct Cli {
    /// Extra folders to look for models in (a model folder or a folder of them).
    #[arg(long = "model-dir", global = true)]
    model_dirs: Vec<PathBuf>,
    /// CPU threads for the models' computations (default: every core).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Generate images headless, with a progress bar on stderr.
    Generate(Box<GenerateArgs>),
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
    /// Train a ControlNet for a model (default: Atelier Mini) on captioned images, the
    /// control images (scribble or Canny) made from them; resumable, with progress and loss.
    TrainControlnet(TrainControlNetArgs),
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
    /// Jobs a killed or crashed run left unfinished: list, resume (only the missing
    /// pictures, as the uninterrupted run would have made them) or discard.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Developer tools.
    #[command(subcommand)]
    Dev(DevCommand),
}

/// `--sampler`: one of the samplers' names, each listed with its summary in `--help`, the man
/// page and the shell completions.
pub(crate) fn parse_sampler() -> impl clap::builder::TypedValueParser<Value = SamplerKind> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        SamplerKind::ALL.map(|kind| PossibleValue::new(kind.cli_name()).help(kind.summary())),
    )
    .try_map(|name| {
        SamplerKind::from_cli_name(&name).ok_or_else(|| format!("unknown sampler {name:?}"))
    })
}

/// The command line's definition (for the man page and shell completions).
pub(crate) fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parses the command line and runs it; no subcommand opens the studio.
pub fn run() -> ExitCode {
    let matches = command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Read by rayon's pool and candle's kernels when they first start, which is later:
    // nothing has run on them yet, and no other thread exists. Without it, candle works the
    // count out again on every parallel kernel (reading /proc/cpuinfo: about a thousand
    // reads in a six-step Mini picture), so the default is resolved and set once here too.
    let threads = cli
        .threads
        .map(usize::from)
        .unwrap_or_else(candle_core::utils::get_num_threads);
    std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
    let result = match cli.command {
        None => atelier::app::run_studio(atelier::app::StudioOptions {
            extra_model_dirs: cli.model_dirs,
            ..Default::default()
        }),
        Some(Command::Generate(args)) => generate::generate(
            *args,
            &cli.model_dirs,
            matches.subcommand_matches("generate"),
        ),
        Some(Command::Adjust(args)) => adjust::adjust(args),
        Some(Command::Models { dirs }) => list_models(&[cli.model_dirs, dirs].concat()),
        Some(Command::Train(args)) => train::train(args),
        Some(Command::TrainJudge(args)) => train::train_judge(args),
        Some(Command::TrainControlnet(args)) => train::train_controlnet(args),
        Some(Command::Eval(args)) => eval::evaluate(args),
        Some(Command::Dataset(cmd)) => train::dataset(cmd),
        Some(Command::Gallery(cmd)) => gallery::run(cmd),
        Some(Command::Import { files }) => gallery::import(&files),
        Some(Command::Queue(cmd)) => queue::run(cmd),
        Some(Command::Dev(cmd)) => dev::run(cmd),
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
        // Single files also get their size and AUTOMATIC1111 hash (computed once, cached).
        let file = match m.file_size {
            Some(size) => {
                let hash = models::hash::a1111_short_hash(&m.dir)
                    .unwrap_or_else(|e| format!("(no hash: {e})"));
                format!("\t{:.2} GB\t{hash}", size as f64 / 1e9)
            }
            None => String::new(),
        };
        println!(
            "{}\t{}\t{}\t{}{file}",
            m.name,
            m.family_label(),
            source,
            m.dir.display()
        );
    }
    for m in &found.models {
        if let Some(note) = m
            .prediction_note
            .as_ref()
            .filter(|_| m.family != models::Family::Sd1)
        {
            eprintln!(
                "{}: predicts {note} (override with generate --prediction eps|v)",
                m.name
            );
        }
        if let Some(problem) = &m.card_problem {
            eprintln!("warning: {problem}; the card is ignored");
        }
    }
    for r in &found.rejected {
        eprintln!("skipped {}: {}", r.dir.display(), r.error);
    }
    Ok(())
}

pub(crate) fn load_rgb(path: &std::path::Path) -> anyhow::Result<image::RgbImage> {
    Ok(atelier::imageio::load_image_file(path)
        .with_context(|| format!("{}: cannot read image", path.display()))?
        .to_rgb8())
}
