//! `atelier train`, `atelier train-judge` and `atelier dataset`: training the shipped model's
//! recipe and its judge, and preparing their data.

use std::path::PathBuf;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Subcommand)]
pub(crate) enum DatasetCommand {
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
pub(crate) struct TrainArgs {
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
pub(crate) struct TrainJudgeArgs {
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

pub(crate) fn parse_colour(s: &str) -> Result<[u8; 3], String> {
    let hex = s.trim_start_matches('#');
    let bad = || format!("{s:?} is not a #rrggbb colour");
    // Six ASCII hex digits; byte slicing below is then on character boundaries.
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

/// A CUDA GPU in a build with the `cuda` feature (unless `--cpu`), else the CPU. Metal builds
/// train on the CPU: training on Metal has not been tried.
pub(crate) fn training_device(cpu: bool) -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if !cpu {
        if let Ok(device) = candle_core::Device::new_cuda(0) {
            return device;
        }
    }
    let _ = cpu;
    candle_core::Device::Cpu
}

pub(crate) fn train(args: TrainArgs) -> anyhow::Result<()> {
    use atelier::train::trainer::{self, TrainOptions};
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
    let mut progress = TrainProgress::new();
    let summary = trainer::train(&opts, &mut |event| progress.handle(event))?;
    progress.finish();
    eprintln!(
        "trained on {} images: {} VAE + {} UNet steps this run; model in {}",
        summary.images,
        summary.vae_steps,
        summary.unet_steps,
        summary.model_dir.display()
    );
    Ok(())
}

/// The progress bar of a training run (plain lines when stderr is not a terminal).
struct TrainProgress {
    bar: ProgressBar,
    plain: bool,
    smoothed: Option<f64>,
    last_report: std::time::Instant,
    steps_since: usize,
}

impl TrainProgress {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>4} [{bar:30}] {pos}/{len} loss {msg} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        // Without a terminal (a log file) the bar is hidden: say the same in plain lines.
        let plain = bar.is_hidden();
        Self {
            bar,
            plain,
            smoothed: None,
            last_report: std::time::Instant::now(),
            steps_since: 0,
        }
    }

    fn say(&self, text: String) {
        if self.plain {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    fn handle(&mut self, event: atelier::train::trainer::TrainEvent) {
        use atelier::train::trainer::TrainEvent;
        match event {
            TrainEvent::Note(text) => self.say(text),
            TrainEvent::Stage { stage, from, of } => {
                self.bar.set_prefix(stage.name());
                self.bar.set_length(of as u64);
                self.bar.set_position(from as u64);
                self.bar.reset_eta();
                self.smoothed = None;
            }
            TrainEvent::Step {
                stage,
                step,
                of,
                loss,
            } => {
                let s = self.smoothed.map_or(loss, |s| 0.98 * s + 0.02 * loss);
                self.smoothed = Some(s);
                self.bar.set_position(step as u64);
                self.bar.set_message(format!("{s:.4}"));
                self.steps_since += 1;
                if self.plain && (step % 50 == 0 || step == of) {
                    let rate = self.steps_since as f64
                        / self.last_report.elapsed().as_secs_f64().max(1e-9);
                    self.say(format!(
                        "{stage:?} step {step}/{of} loss {s:.4} ({rate:.2} steps/s)"
                    ));
                    self.last_report = std::time::Instant::now();
                    self.steps_since = 0;
                }
            }
            TrainEvent::Checkpoint { step, dir } => {
                self.say(format!("checkpoint at step {step} in {}", dir.display()))
            }
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

#[derive(clap::Args)]
pub(crate) struct TrainControlNetArgs {
    /// The model the ControlNet is for (default: the shipped Atelier Mini).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Folder of captioned images (as for `atelier train`); the control images are made from
    /// them.
    #[arg(long)]
    data: PathBuf,
    /// Output folder: `checkpoint/`, `loss.csv` and the ControlNet in `model/`.
    #[arg(long)]
    out: PathBuf,
    /// What the control images show: scribble (hand-drawn-looking outlines and edges) or canny.
    #[arg(long, default_value = "scribble", value_parser = ["scribble", "canny"])]
    condition: String,
    #[arg(long, default_value_t = 6000)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Steps over which the learning rate rises to --lr.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: usize,
    /// Share of captions replaced by the empty prompt (the ControlNet paper's 0.5).
    #[arg(long, default_value_t = 0.5)]
    caption_dropout: f64,
    /// Loss weight inside the picture's subject against 1 on its white ground (above 1:
    /// teach what goes inside an outline, not only where it runs).
    #[arg(long, default_value_t = 1.0)]
    subject_weight: f64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start a new run from an existing ControlNet for the same model (a diffusers folder,
    /// e.g. the shipped Atelier Mini Scribble) instead of from the model's UNet.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Train on the CPU even when a GPU build finds a GPU.
    #[arg(long)]
    cpu: bool,
}

pub(crate) fn train_controlnet(args: TrainControlNetArgs) -> anyhow::Result<()> {
    use atelier::train::controlnet::{train_controlnet, Condition, ControlTrainOptions};
    let opts = ControlTrainOptions {
        model: args
            .model
            .unwrap_or_else(atelier::models::default_model_dir),
        data: args.data,
        out: args.out,
        condition: Condition::from_name(&args.condition)
            .ok_or_else(|| anyhow::anyhow!("unknown condition {}", args.condition))?,
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        warmup: args.warmup,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
        init_from: args.init_from,
        caption_dropout: args.caption_dropout,
        subject_weight: args.subject_weight,
        device: training_device(args.cpu),
    };
    let mut progress = TrainProgress::new();
    let summary = train_controlnet(&opts, &mut |event| progress.handle(event))?;
    progress.finish();
    eprintln!(
        "{} steps this run (last loss {}); ControlNet in {}",
        summary.steps_run,
        summary
            .last_loss
            .map_or("-".to_owned(), |l| format!("{l:.4}")),
        summary.model_dir.display()
    );
    Ok(())
}

pub(crate) fn dataset(cmd: DatasetCommand) -> anyhow::Result<()> {
    match cmd {
        DatasetCommand::Emoji { npm, out } => prepare_emoji(&npm, &out),
    }
}

pub(crate) fn prepare_emoji(npm: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
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

pub(crate) fn train_judge(args: TrainJudgeArgs) -> anyhow::Result<()> {
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
