//! Taking in the engine's events: job states for the queue, previews, finished images for the
//! gallery. Events for jobs the studio does not know (any more) are dropped.

use super::StudioApp;
use crate::engine::EngineEvent;
use crate::ui::queue::JobState;

impl StudioApp {
    pub(super) fn pull_engine_events(&mut self) {
        loop {
            match self.rt.engine.try_recv() {
                Ok(Some(event)) => self.on_engine_event(event),
                Ok(None) => return,
                Err(stopped) => {
                    self.restart_engine(stopped);
                    return;
                }
            }
        }
    }

    /// The worker thread died (not a job's panic, which the engine survives): every job it
    /// had is failed, and a new engine takes the next ones.
    fn restart_engine(&mut self, stopped: crate::engine::EngineStopped) {
        let mut interrupted = Vec::new();
        for job in self.rt.jobs.iter_mut().filter(|j| j.state.is_active()) {
            job.state = JobState::Failed(stopped.to_string());
            job.preview = None;
            interrupted.push(job.id);
        }
        self.rt.engine = super::spawn_engine(&self.rt.ctx);
        self.jobs_interrupted(&interrupted);
        self.show_error(format!(
            "{stopped}; it was restarted. The jobs it had are under “Unfinished” in the queue: resume them from there."
        ));
    }

    fn on_engine_event(&mut self, event: EngineEvent) {
        if self.on_live_event(&event) {
            return;
        }
        let ctx = self.rt.ctx.clone();
        let Some(job) = self.rt.jobs.iter_mut().find(|j| j.id == event.job()) else {
            return;
        };
        let cancelling = matches!(job.state, JobState::Cancelling);
        match event {
            EngineEvent::Started { .. } => {
                if !cancelling {
                    job.state = JobState::Loading("model".to_owned());
                }
            }
            EngineEvent::Loading { what, .. } => {
                if !cancelling {
                    job.state = JobState::Loading(what);
                }
            }
            EngineEvent::Warning { text, .. } => self.show_info(text),
            EngineEvent::Stages { stages, .. } => {
                job.stages = Some(crate::generation::stages_text(&stages));
            }
            EngineEvent::Progress {
                image_index,
                step,
                of,
                preview,
                elapsed_secs,
                ..
            } => {
                job.record_progress(image_index, step, of, elapsed_secs);
                if let Some(preview) = preview {
                    let name = format!("preview-{}", job.id);
                    let image = super::textures::color_image(&preview);
                    super::textures::show_in(&ctx, &mut job.preview, &name, image);
                }
            }
            EngineEvent::Image { image, .. } => {
                job.images_done += 1;
                let job_id = job.id;
                // Shown once the gallery thread has saved it (file durable, row committed).
                self.save_result(job_id, *image);
            }
            EngineEvent::Done {
                elapsed_secs,
                job: id,
            } => {
                job.state = JobState::Done { elapsed_secs };
                job.preview = None;
                self.job_ended(id);
            }
            EngineEvent::Failed { error, job: id } => {
                job.state = JobState::Failed(error);
                job.preview = None;
                self.job_ended(id);
            }
            EngineEvent::Cancelled { job: id } => {
                job.state = JobState::Cancelled;
                job.preview = None;
                self.job_ended(id);
            }
        }
    }
}
