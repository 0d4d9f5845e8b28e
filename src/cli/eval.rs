//! `atelier eval`: a model's prompt adherence, Fréchet distance, diversity and memorisation.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use atelier::generation::SamplerKind;

use super::parse_sampler;

#[derive(clap::Args)]
pub(crate) struct EvalArgs {
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
    #[arg(long, value_parser = parse_sampler())]
    sampler: Option<SamplerKind>,
    /// Write the generated images and a grid here (with --controlnet: each sketch, its picture
    /// without and with the ControlNet, and grid.png of the first twelve).
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Real Inception-v3 weights for a classic FID (not supported yet).
    #[arg(long)]
    inception: Option<PathBuf>,
    #[arg(long, default_value = "eval-report.json")]
    out: PathBuf,
    /// Evaluate this ControlNet instead: how well pictures follow the --sketches (edge F1 with
    /// and without it, same prompts and seeds) and prompt adherence by the judge.
    #[arg(long, requires = "sketches")]
    controlnet: Option<PathBuf>,
    /// A sketch set (`atelier dev make-sketches`): NNN.png and sketches.jsonl.
    #[arg(long, requires = "controlnet")]
    sketches: Option<PathBuf>,
    /// The ControlNet's conditioning scale.
    #[arg(long, default_value_t = 1.0)]
    control_scale: f32,
    /// The fraction of the steps before which the ControlNet has not started.
    #[arg(long, default_value_t = 0.0)]
    control_start: f64,
    /// The fraction of the steps after which the ControlNet stops.
    #[arg(long, default_value_t = 1.0)]
    control_end: f64,
    /// balanced, or control ("ControlNet is more important").
    #[arg(long, default_value = "balanced", value_parser = ["balanced", "control"])]
    control_mode: String,
    /// Draw each sketched subject again at the model's own size (`generate --subject-pass`).
    #[arg(long, requires = "controlnet")]
    subject_pass: bool,
}

/// A progress bar for work in named phases.
fn phase_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Reports `(phase, done, of)` on `bar`.
fn report_to(bar: &ProgressBar) -> impl FnMut(&str, usize, usize) + '_ {
    move |phase, done, of| {
        bar.set_message(phase.to_owned());
        bar.set_length(of as u64);
        bar.set_position(done as u64);
    }
}

/// `eval --controlnet`: edge F1 and adherence with and without the ControlNet.
fn evaluate_controlnet(
    args: EvalArgs,
    controlnet: PathBuf,
    sketches: PathBuf,
) -> anyhow::Result<()> {
    use atelier::train::eval::control::{evaluate_control, ControlEvalOptions};
    let opts = ControlEvalOptions {
        model: args.model,
        controlnet,
        sketches,
        judge: args.judge.is_dir().then_some(args.judge),
        scale: args.control_scale,
        start: args.control_start.clamp(0.0, 1.0),
        end: args.control_end.clamp(0.0, 1.0),
        mode: if args.control_mode == "control" {
            atelier::generation::ControlMode::Control
        } else {
            atelier::generation::ControlMode::Balanced
        },
        seed: args.seed,
        steps: args.steps,
        guidance: args.guidance,
        sampler: args.sampler,
        subject_pass: args.subject_pass,
        samples_dir: args.samples,
    };
    let bar = phase_bar();
    let report = evaluate_control(&opts, &mut report_to(&bar))?;
    bar.finish_and_clear();
    println!("{}", report.table());
    let json = serde_json::to_vec_pretty(&report)?;
    atelier::fsio::write_file(&args.out, &json, atelier::fsio::Durability::Atomic)
        .with_context(|| format!("{}: cannot write the report", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}

pub(crate) fn evaluate(mut args: EvalArgs) -> anyhow::Result<()> {
    use atelier::train::eval::{evaluate, EvalOptions};
    if let (Some(controlnet), Some(sketches)) = (args.controlnet.take(), args.sketches.take()) {
        return evaluate_controlnet(args, controlnet, sketches);
    }
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
    let bar = phase_bar();
    let report = evaluate(&opts, &mut report_to(&bar))?;
    bar.finish_and_clear();
    println!("{}", report.table());
    report
        .write_json(&args.out)
        .with_context(|| format!("{}: cannot write the report", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}
