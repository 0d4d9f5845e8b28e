//! The studio's queue as the gallery keeps it, so no job is lost to a crash: each job is
//! recorded by the gallery thread before it is handed to the engine, its pictures are saved
//! with a reference to it, and it is forgotten when it ends. Jobs a crash (or a dead engine
//! thread) left unfinished are offered in the queue panel: "Resume all" makes only their
//! missing pictures, "Discard" forgets them.

use std::collections::HashMap;

use super::StudioApp;
use crate::engine::JobId;
use crate::gallery::worker::{GalleryOp, Ticket};
use crate::gallery::{ImageMeta, StoredJob};
use crate::generation::{GeneratedImage, GenerationRequest};
use crate::ui::queue::{JobEntry, JobState, UnfinishedJob};

/// A job waiting for the gallery thread to record it.
struct Recording {
    ticket: Ticket,
    job: JobId,
    request: GenerationRequest,
}

/// What the studio knows of a job's record: its uid in the gallery (none when it could not
/// be recorded) and the metadata its pictures start from.
struct JobRecord {
    uid: Option<String>,
    template: ImageMeta,
}

#[derive(Default)]
pub struct JobBook {
    recording: Vec<Recording>,
    records: HashMap<JobId, JobRecord>,
    /// Left unfinished by an earlier session (or a dead engine thread).
    pub unfinished: Vec<StoredJob>,
    /// "Not kept across a crash" was said this session.
    said_not_kept: bool,
}

impl JobBook {
    /// What the queue panel shows of the unfinished jobs.
    pub fn unfinished_view(&self) -> Vec<UnfinishedJob> {
        self.unfinished
            .iter()
            .map(|j| UnfinishedJob {
                prompt: j.request.prompt.clone(),
                remaining: j.remaining(),
                batch: j.request.batch,
            })
            .collect()
    }
}

impl StudioApp {
    /// Queues a job: shown at once, recorded by the gallery thread, then given to the engine
    /// (see `on_job_added`). `template` is the metadata its pictures start from (model name,
    /// where its init image came from), fixed now so later sketch changes do not alter it.
    pub(super) fn queue_job(&mut self, request: GenerationRequest, template: ImageMeta) {
        let job = self.rt.engine.reserve();
        self.rt
            .jobs
            .push(JobEntry::new(job, &request.prompt, request.batch));
        let ticket = self.rt.pictures.next_ticket();
        let op = GalleryOp::AddJob {
            ticket,
            request: Box::new(request.clone()),
            meta: Box::new(template.clone()),
        };
        self.rt.jobs_book.records.insert(
            job,
            JobRecord {
                uid: None,
                template,
            },
        );
        if self.rt.pictures.is_available() && self.rt.pictures.send_op_checked(op) {
            self.rt.jobs_book.recording.push(Recording {
                ticket,
                job,
                request,
            });
        } else {
            self.rt
                .engine
                .submit_reserved(job, request, Default::default());
            self.say_not_kept("the gallery is not open");
        }
    }

    fn say_not_kept(&mut self, why: &str) {
        if !self.rt.jobs_book.said_not_kept {
            self.rt.jobs_book.said_not_kept = true;
            self.show_info(format!(
                "Jobs of this session are not kept across a crash: {why}."
            ));
        }
    }

    fn take_recording(&mut self, ticket: Ticket) -> Option<Recording> {
        let book = &mut self.rt.jobs_book;
        let at = book.recording.iter().position(|r| r.ticket == ticket)?;
        Some(book.recording.remove(at))
    }

    /// The gallery thread recorded a job: it runs now, unless it was cancelled meanwhile.
    pub(super) fn on_job_added(&mut self, ticket: Ticket, uid: String) {
        let Some(r) = self.take_recording(ticket) else {
            return;
        };
        let entry = self.rt.jobs.iter_mut().find(|j| j.id == r.job);
        if entry
            .as_ref()
            .is_none_or(|e| matches!(e.state, JobState::Cancelling | JobState::Cancelled))
        {
            if let Some(entry) = entry {
                entry.state = JobState::Cancelled;
            }
            self.rt.jobs_book.records.remove(&r.job);
            self.rt
                .pictures
                .send_op(GalleryOp::FinishJobs { uids: vec![uid] });
            return;
        }
        if let Some(record) = self.rt.jobs_book.records.get_mut(&r.job) {
            record.uid = Some(uid);
        }
        self.rt
            .engine
            .submit_reserved(r.job, r.request, Default::default());
    }

    /// The job could not be recorded (a read-only gallery): it runs all the same.
    pub(super) fn on_job_add_failed(&mut self, ticket: Ticket, error: String) {
        let Some(r) = self.take_recording(ticket) else {
            return;
        };
        let cancelled = self
            .rt
            .jobs
            .iter_mut()
            .find(|j| j.id == r.job)
            .filter(|e| matches!(e.state, JobState::Cancelling));
        if let Some(entry) = cancelled {
            entry.state = JobState::Cancelled;
            return;
        }
        self.rt
            .engine
            .submit_reserved(r.job, r.request, Default::default());
        self.say_not_kept(&error);
    }

    /// The metadata a job's picture is saved with.
    pub(super) fn result_meta(&self, job: JobId, image: &GeneratedImage) -> ImageMeta {
        let fallback = JobRecord {
            uid: None,
            template: ImageMeta::default(),
        };
        let record = self.rt.jobs_book.records.get(&job).unwrap_or(&fallback);
        crate::gallery::meta_of_result(image, &record.template, record.uid.as_deref())
    }

    /// A job ended (done, failed, cancelled): its record goes once its pictures are saved
    /// (the gallery thread works in order).
    pub(super) fn job_ended(&mut self, job: JobId) {
        if let Some(JobRecord { uid: Some(uid), .. }) = self.rt.jobs_book.records.remove(&job) {
            self.rt
                .pictures
                .send_op(GalleryOp::FinishJobs { uids: vec![uid] });
        }
    }

    /// The engine thread died with these jobs: they stay recorded, offered for resuming.
    pub(super) fn jobs_interrupted(&mut self, jobs: &[JobId]) {
        for job in jobs {
            self.rt.jobs_book.records.remove(job);
        }
        self.rt.pictures.send_op(GalleryOp::UnfinishedJobs);
    }

    /// The gallery thread listed the unfinished jobs; those of this session are not among
    /// them (they are running).
    pub(super) fn on_unfinished_jobs(&mut self, jobs: Vec<StoredJob>) {
        let book = &mut self.rt.jobs_book;
        let ours: Vec<&str> = book
            .records
            .values()
            .filter_map(|r| r.uid.as_deref())
            .collect();
        book.unfinished = jobs
            .into_iter()
            .filter(|j| !ours.contains(&j.uid.as_str()))
            .collect();
    }

    /// "Resume all": each unfinished job is loaded (with its init image and mask) and runs
    /// its missing pictures.
    pub(super) fn resume_unfinished(&mut self) {
        let jobs = std::mem::take(&mut self.rt.jobs_book.unfinished);
        for job in jobs {
            self.rt
                .pictures
                .send_op(GalleryOp::LoadJob { uid: job.uid });
        }
    }

    pub(super) fn on_job_loaded(&mut self, job: StoredJob, request: GenerationRequest) {
        let id = self.rt.engine.reserve();
        let mut entry = JobEntry::new(id, &request.prompt, request.batch);
        entry.images_done = job.done.len() as u32;
        self.rt.jobs.push(entry);
        self.rt.jobs_book.records.insert(
            id,
            JobRecord {
                uid: Some(job.uid),
                template: job.meta,
            },
        );
        self.rt.engine.submit_reserved(id, request, job.done);
    }

    /// "Discard": the unfinished jobs are forgotten (their pictures stay).
    pub(super) fn discard_unfinished(&mut self) {
        let uids: Vec<String> = std::mem::take(&mut self.rt.jobs_book.unfinished)
            .into_iter()
            .map(|j| j.uid)
            .collect();
        let n = uids.len();
        self.rt.pictures.send_op(GalleryOp::FinishJobs { uids });
        self.show_info(format!("Discarded {n} unfinished job(s)."));
    }
}
