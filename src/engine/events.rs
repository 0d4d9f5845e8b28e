//! Events the engine sends back; every one names its job.

use std::sync::Arc;

use super::JobId;
use crate::generation::GeneratedImage;

#[derive(Clone, Debug)]
pub enum EngineEvent {
    /// The job left the queue and is being worked on (model loading included).
    Started {
        job: JobId,
    },
    /// Loading or switching the model; `what` says which part.
    Loading {
        job: JobId,
        what: String,
    },
    /// Something the user should know that does not stop the job (LoRA modules that match no
    /// weight of the model...).
    Warning {
        job: JobId,
        text: String,
    },
    /// One denoising step of image `image_index` finished.
    Progress {
        job: JobId,
        image_index: u32,
        step: usize,
        of: usize,
        /// A cheap preview of the current latent, every few steps.
        preview: Option<Arc<image::RgbImage>>,
        elapsed_secs: f32,
    },
    /// One image of the batch is done (sent as soon as it is decoded).
    Image {
        job: JobId,
        /// Boxed: the picture's request makes it by far the largest event.
        image: Box<GeneratedImage>,
    },
    /// Seconds each stage of the finished job took (`model`, `text`, `step N`, `decode`...),
    /// sent before `Done`.
    Stages {
        job: JobId,
        stages: Vec<(String, f32)>,
    },
    /// The whole job finished.
    Done {
        job: JobId,
        elapsed_secs: f32,
    },
    Failed {
        job: JobId,
        error: String,
    },
    Cancelled {
        job: JobId,
    },
}

impl EngineEvent {
    pub fn job(&self) -> JobId {
        match self {
            EngineEvent::Started { job }
            | EngineEvent::Loading { job, .. }
            | EngineEvent::Warning { job, .. }
            | EngineEvent::Progress { job, .. }
            | EngineEvent::Image { job, .. }
            | EngineEvent::Stages { job, .. }
            | EngineEvent::Done { job, .. }
            | EngineEvent::Failed { job, .. }
            | EngineEvent::Cancelled { job } => *job,
        }
    }
}
