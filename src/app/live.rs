//! Live mode: while it is on, every change to the sketch, the prompt or the control layer is
//! followed, after a quarter of a second without another change, by a generation with the
//! panel's seed (no new seed: only the change changes the picture). A newer request cancels
//! the one still running, and the newest picture sits beside the canvas. Live pictures are
//! previews: they are not queued in the queue panel or saved to the gallery.

use std::time::{Duration, Instant};

use super::StudioApp;
use crate::engine::{EngineEvent, JobId};

/// How long the inputs must stay unchanged before a live generation starts.
pub const QUIET: Duration = Duration::from_millis(250);

/// What the live generation is doing.
#[derive(Default)]
pub struct Live {
    /// The job running for live mode, if any.
    job: Option<JobId>,
    /// When it was asked for.
    started: Option<Instant>,
    /// The inputs' key when they last changed, and when.
    changed: Option<(u64, Instant)>,
    /// The key of the inputs the newest live job was made from.
    requested: Option<u64>,
    /// The newest live picture.
    pub texture: Option<egui::TextureHandle>,
    /// Seconds from asking to the picture, for the newest one.
    pub last_secs: Option<f32>,
    /// Live jobs cancelled because a newer one was asked for.
    pub stale_cancelled: usize,
    /// Live jobs started.
    pub started_jobs: usize,
}

impl Live {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }
}

impl StudioApp {
    /// A key of everything a live picture depends on (sketch, prompt panel, canvas settings
    /// and the model).
    fn live_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.rt.sketch.revision().hash(&mut h);
        format!(
            "{:?}|{:?}|{:?}|{:?}",
            self.state.prompt,
            self.rt
                .sketch
                .controls()
                .iter()
                .map(|c| &c.settings)
                .collect::<Vec<_>>(),
            self.state.canvas.use_sketch,
            self.state.selected_model
        )
        .hash(&mut h);
        h.finish()
    }

    /// Called every frame and tick: notes changes, and once the inputs have been quiet for
    /// [`QUIET`] starts a live generation for them (cancelling a stale one).
    pub(super) fn live_tick(&mut self) {
        if !self.state.canvas.live {
            if let Some(job) = self.rt.live.job.take() {
                self.rt.engine.cancel(job);
            }
            self.rt.live.changed = None;
            self.rt.live.requested = None;
            return;
        }
        let key = self.live_key();
        let now = Instant::now();
        match self.rt.live.changed {
            Some((k, _)) if k == key => {}
            _ => self.rt.live.changed = Some((key, now)),
        }
        if self.rt.live.requested == Some(key) || self.rt.models.scanning() {
            return;
        }
        let Some((_, since)) = self.rt.live.changed else {
            return;
        };
        let waited = now.duration_since(since);
        if waited < QUIET {
            self.rt.ctx.request_repaint_after(QUIET - waited);
            return;
        }
        self.rt.live.requested = Some(key);
        let Some((mut request, _)) = self.prepared_request(false) else {
            return;
        };
        request.batch = 1;
        if let Some(stale) = self.rt.live.job.take() {
            self.rt.engine.cancel(stale);
            self.rt.live.stale_cancelled += 1;
        }
        self.rt.live.job = Some(self.rt.engine.submit(request));
        self.rt.live.started = Some(now);
        self.rt.live.started_jobs += 1;
    }

    /// Takes in an event of the live job; false for every other job's events.
    pub(super) fn on_live_event(&mut self, event: &EngineEvent) -> bool {
        let Some(job) = self.rt.live.job else {
            return false;
        };
        if event.job() != job {
            return false;
        }
        match event {
            EngineEvent::Image { image, .. } => {
                let picture = super::textures::color_image(&image.image);
                super::textures::show_in(&self.rt.ctx, &mut self.rt.live.texture, "live", picture);
                self.rt.live.last_secs = self.rt.live.started.map(|s| s.elapsed().as_secs_f32());
            }
            EngineEvent::Done { .. } | EngineEvent::Cancelled { .. } => {
                self.rt.live.job = None;
            }
            EngineEvent::Failed { error, .. } => {
                self.rt.live.job = None;
                self.show_error(format!("Live: {error}"));
            }
            _ => {}
        }
        true
    }
}
