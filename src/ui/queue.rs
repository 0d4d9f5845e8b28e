//! The queue panel: every job of this session, newest first, with its state: queued, loading,
//! running ("step k of n", ETA, live preview), done, failed (with the error) or cancelled,
//! and a cancel button for each job still waiting or running. Above them, the jobs an earlier
//! session left unfinished (a crash), with "Resume all" and "Discard".

use super::{format_secs, one_line, Command, Commands};
use crate::engine::JobId;

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    Queued,
    /// Loading the model; says which part.
    Loading(String),
    Running {
        image_index: u32,
        step: usize,
        of: usize,
        elapsed_secs: f32,
        eta_secs: Option<f32>,
    },
    /// Cancel was asked for; the engine stops at the next step.
    Cancelling,
    Done {
        elapsed_secs: f32,
    },
    Failed(String),
    Cancelled,
}

impl JobState {
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            JobState::Queued
                | JobState::Loading(_)
                | JobState::Running { .. }
                | JobState::Cancelling
        )
    }
}

/// One job as the queue shows it.
pub struct JobEntry {
    pub id: JobId,
    pub prompt: String,
    pub batch: u32,
    pub state: JobState,
    /// Images of the batch already finished.
    pub images_done: u32,
    /// The latest preview of the running step.
    pub preview: Option<egui::TextureHandle>,
    /// `(elapsed_secs, steps done)` at the first progress report, to time steps without the
    /// model loading time.
    pub first_progress: Option<(f32, usize)>,
    /// How long each stage took, once the job is done (shown on hover).
    pub stages: Option<String>,
}

impl JobEntry {
    pub fn new(id: JobId, prompt: &str, batch: u32) -> Self {
        Self {
            id,
            prompt: prompt.to_owned(),
            batch: batch.max(1),
            state: JobState::Queued,
            images_done: 0,
            preview: None,
            first_progress: None,
            stages: None,
        }
    }

    /// Records a progress report and estimates the time left for the whole batch.
    pub fn record_progress(&mut self, image_index: u32, step: usize, of: usize, elapsed_secs: f32) {
        if matches!(self.state, JobState::Cancelling) {
            return;
        }
        let of = of.max(1);
        let done = image_index as usize * of + step;
        let total = self.batch as usize * of;
        let (t0, done0) = *self.first_progress.get_or_insert((elapsed_secs, done));
        let eta_secs = (done > done0).then(|| {
            let secs_per_step = (elapsed_secs - t0).max(0.0) / (done - done0) as f32;
            secs_per_step * total.saturating_sub(done) as f32
        });
        self.state = JobState::Running {
            image_index,
            step,
            of,
            elapsed_secs,
            eta_secs,
        };
    }

    /// The one-line status the queue shows, e.g. "step 3 of 20, about 4.2 s left".
    pub fn status_text(&self) -> String {
        match &self.state {
            JobState::Queued => "queued".to_owned(),
            JobState::Loading(what) => format!("loading {what}…"),
            JobState::Running {
                image_index,
                step,
                of,
                eta_secs,
                ..
            } => {
                let mut text = if self.batch > 1 {
                    format!(
                        "image {} of {}: step {step} of {of}",
                        image_index + 1,
                        self.batch
                    )
                } else {
                    format!("step {step} of {of}")
                };
                if let Some(eta) = eta_secs {
                    text.push_str(&format!(", about {} left", format_secs(*eta)));
                }
                text
            }
            JobState::Cancelling => "cancelling…".to_owned(),
            JobState::Done { elapsed_secs } => format!("done in {}", format_secs(*elapsed_secs)),
            JobState::Failed(error) => format!("failed: {error}"),
            JobState::Cancelled => "cancelled".to_owned(),
        }
    }

    /// Progress of the whole job, 0 to 1, while running.
    fn fraction_done(&self) -> Option<f32> {
        match &self.state {
            JobState::Running {
                image_index,
                step,
                of,
                ..
            } => {
                let total = (self.batch as usize * of).max(1);
                Some((*image_index as usize * of + step) as f32 / total as f32)
            }
            _ => None,
        }
    }
}

/// A job an earlier session left unfinished, as the queue shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct UnfinishedJob {
    pub prompt: String,
    /// Pictures still to make, of `batch`.
    pub remaining: u32,
    pub batch: u32,
}

fn unfinished_ui(ui: &mut egui::Ui, unfinished: &[UnfinishedJob], commands: &mut Commands) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.set_width(ui.available_width());
        let pictures: u32 = unfinished.iter().map(|j| j.remaining).sum();
        ui.label(
            egui::RichText::new(format!(
                "{} unfinished job(s) from the last session, {pictures} picture(s) to make",
                unfinished.len()
            ))
            .strong(),
        );
        for job in unfinished.iter().take(5) {
            ui.weak(format!(
                "{} ({} of {})",
                one_line(&job.prompt, 36),
                job.remaining,
                job.batch
            ));
        }
        if unfinished.len() > 5 {
            ui.weak(format!("… and {} more", unfinished.len() - 5));
        }
        ui.horizontal(|ui| {
            if ui
                .button("Resume all")
                .on_hover_text(
                    "Make the pictures they had not made yet, exactly as they would have been",
                )
                .clicked()
            {
                commands.push(Command::ResumeUnfinished);
            }
            if ui
                .button("Discard")
                .on_hover_text("Forget them (the pictures they already made stay)")
                .clicked()
            {
                commands.push(Command::DiscardUnfinished);
            }
        });
    });
    ui.add_space(4.0);
}

pub fn queue_panel_ui(
    ui: &mut egui::Ui,
    jobs: &[JobEntry],
    unfinished: &[UnfinishedJob],
    commands: &mut Commands,
) {
    ui.horizontal(|ui| {
        ui.heading("Queue");
        let finished = jobs.iter().filter(|j| !j.state.is_active()).count();
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui
                .add_enabled(finished > 0, egui::Button::new("Clear finished").small())
                .clicked()
            {
                commands.push(Command::ClearFinishedJobs);
            }
        });
    });
    ui.separator();
    if !unfinished.is_empty() {
        unfinished_ui(ui, unfinished, commands);
    }
    if jobs.is_empty() {
        ui.weak("No jobs yet. Write a prompt and press Generate (Ctrl+Enter).");
        return;
    }
    egui::ScrollArea::vertical()
        .id_salt("queue_scroll")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for job in jobs.iter().rev() {
                job_row_ui(ui, job, commands);
                ui.add_space(4.0);
            }
        });
}

fn job_row_ui(ui: &mut egui::Ui, job: &JobEntry, commands: &mut Commands) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.horizontal(|ui| {
            ui.label(egui::RichText::new(format!("#{}", job.id)).strong());
            let prompt = if job.prompt.trim().is_empty() {
                "(no prompt)".to_owned()
            } else {
                one_line(&job.prompt, 40)
            };
            ui.label(prompt).on_hover_text(job.prompt.clone());
        });
        let status = job.status_text();
        match &job.state {
            JobState::Failed(_) => {
                ui.add(
                    egui::Label::new(
                        egui::RichText::new(status).color(ui.visuals().error_fg_color),
                    )
                    .wrap()
                    .selectable(true),
                );
            }
            JobState::Cancelled => {
                ui.weak(status);
            }
            _ => {
                let label = ui.label(status);
                if let Some(stages) = &job.stages {
                    label.on_hover_text(stages.clone());
                }
            }
        }
        if let Some(fraction) = job.fraction_done() {
            ui.add(egui::ProgressBar::new(fraction).desired_height(6.0));
        }
        if job.state.is_active() {
            if let Some(preview) = &job.preview {
                ui.add(
                    egui::Image::from_texture(preview)
                        .max_size(egui::vec2(128.0, 128.0))
                        .maintain_aspect_ratio(true)
                        .alt_text(format!("Preview of job #{}", job.id)),
                );
            }
            let cancel = egui::Button::new(format!("Cancel #{}", job.id)).small();
            if ui
                .add_enabled(!matches!(job.state, JobState::Cancelling), cancel)
                .clicked()
            {
                commands.push(Command::CancelJob(job.id));
            }
        } else if job.batch > 1 && job.images_done > 0 {
            ui.weak(format!("{} of {} images made", job.images_done, job.batch));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_ignores_loading_time() {
        let mut job = JobEntry::new(1, "x", 2);
        job.record_progress(0, 1, 10, 30.0); // 30 s of model loading before step 1
        assert_eq!(job.status_text(), "image 1 of 2: step 1 of 10");
        job.record_progress(0, 3, 10, 31.0); // 0.5 s per step, 17 steps left
        let text = job.status_text();
        assert!(text.contains("step 3 of 10"), "{text}");
        assert!(text.contains("about 8.5 s left"), "{text}");
    }

    #[test]
    fn finished_states_are_not_active() {
        assert!(JobState::Queued.is_active());
        assert!(!JobState::Cancelled.is_active());
        assert!(!JobState::Failed("x".into()).is_active());
        assert!(!JobState::Done { elapsed_secs: 1.0 }.is_active());
    }
}
