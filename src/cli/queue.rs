//! `atelier queue list|resume|discard`: the jobs a killed or crashed run (the studio's or
//! `atelier generate`'s) left unfinished in the gallery. Resuming makes only the pictures
//! that are missing, exactly as the uninterrupted run would have made them.

use anyhow::bail;
use clap::Subcommand;

use atelier::gallery::StoredJob;

use super::gallery::{open_writable, Recorder};
use super::generate::{run_jobs, spawn_engine, RunJob};

#[derive(Subcommand)]
pub(crate) enum QueueCommand {
    /// The unfinished jobs, oldest first: id, when, pictures done / asked for, model, prompt.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run unfinished jobs again (their missing pictures only), recording into the gallery.
    Resume {
        /// Job ids (or unique prefixes) as `queue list` shows them.
        ids: Vec<String>,
        /// Every unfinished job.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// See `atelier generate --device`.
        #[arg(long, default_value = "auto")]
        device: atelier::diffusion::device::DevicePreference,
        /// See `atelier generate --low-memory`.
        #[arg(long)]
        low_memory: bool,
    },
    /// Forget unfinished jobs (the pictures they already made stay).
    Discard {
        ids: Vec<String>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

pub(crate) fn run(cmd: QueueCommand) -> anyhow::Result<()> {
    let mut g = open_writable()?;
    let jobs = g.unfinished_jobs()?;
    match cmd {
        QueueCommand::List { json } => {
            if jobs.is_empty() && !json {
                eprintln!("no unfinished jobs");
            }
            for job in &jobs {
                if json {
                    println!("{}", job_json(job));
                } else {
                    println!(
                        "{}\t{}\t{}/{}\t{}\t{}",
                        short(&job.uid),
                        atelier::gallery::format_time(job.created),
                        job.done.len(),
                        job.request.batch,
                        job.meta.model_name.as_deref().unwrap_or("?"),
                        job.request.prompt
                    );
                }
            }
            Ok(())
        }
        QueueCommand::Discard { ids, all } => {
            for job in pick(&jobs, &ids, all)? {
                g.finish_job(&job.uid)?;
                eprintln!("discarded {}", short(&job.uid));
            }
            Ok(())
        }
        QueueCommand::Resume {
            ids,
            all,
            device,
            low_memory,
        } => {
            let chosen: Vec<String> = pick(&jobs, &ids, all)?
                .into_iter()
                .map(|j| j.uid.clone())
                .collect();
            let engine = spawn_engine(low_memory, device);
            let mut run = Vec::new();
            for uid in chosen {
                let (job, request) = g.load_job(&uid)?;
                eprintln!(
                    "resuming {}: {} of {} picture(s) to make: {}",
                    short(&uid),
                    job.remaining(),
                    job.request.batch,
                    job.request.prompt
                );
                run.push(RunJob {
                    id: engine.reserve(),
                    uid: Some(uid),
                    template: job.meta,
                    request,
                    done: job.done,
                });
            }
            let mut recorder = Recorder::from_gallery(g);
            run_jobs(&engine, run, Some(&mut recorder), None, false)
        }
    }
}

/// The first 8 hex digits: what `list` shows and `resume`/`discard` take.
fn short(uid: &str) -> &str {
    uid.get(..8).unwrap_or(uid)
}

/// The jobs named by id prefixes, or all of them; an unknown or ambiguous id is an error.
fn pick<'a>(
    jobs: &'a [StoredJob],
    ids: &[String],
    all: bool,
) -> anyhow::Result<Vec<&'a StoredJob>> {
    if all {
        return Ok(jobs.iter().collect());
    }
    if ids.is_empty() {
        bail!("name the jobs (ids from `atelier queue list`) or pass --all");
    }
    ids.iter()
        .map(|id| {
            let matching: Vec<&StoredJob> = jobs
                .iter()
                .filter(|j| j.uid.starts_with(id.as_str()))
                .collect();
            match matching.as_slice() {
                [one] => Ok(*one),
                [] => bail!("no unfinished job {id:?} (see `atelier queue list`)"),
                _ => bail!("{id:?} names several jobs; give more of its id"),
            }
        })
        .collect()
}

fn job_json(job: &StoredJob) -> serde_json::Value {
    serde_json::json!({
        "id": job.uid,
        "created": job.created,
        "prompt": job.request.prompt,
        "negative_prompt": job.request.negative_prompt,
        "seed": job.request.seed,
        "batch": job.request.batch,
        "done": job.done,
        "remaining": job.remaining(),
        "model": job.meta.model_name,
        "model_dir": job.request.model_dir,
    })
}
