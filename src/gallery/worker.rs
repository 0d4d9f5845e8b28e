//! The gallery on its own thread, for the studio: opening it (with its reconcile walk or a
//! rebuild), saving results, rating, tagging, trashing, storing adjustments, importing and
//! answering queries all happen here, so the UI thread never waits on the disk or SQLite.
//!
//! Like the engine: the UI sends [`GalleryOp`]s (plain data) and reads [`GalleryEvent`]s; a
//! waker (the UI's repaint request) runs after every event. Operations run in the order they
//! were sent, so a query sent after a change sees it. A picture is reported `Saved` only once
//! its file is durable and its row committed: the studio shows a result after that.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Gallery, ImageMeta, ImageRecord, OpenReport, Query, StoredJob};
use crate::generation::GenerationRequest;

/// Called after every event is sent, e.g. `egui::Context::request_repaint`.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Pairs a request with its answer.
pub type Ticket = u64;

/// Something for the gallery thread to do.
#[derive(Debug)]
pub enum GalleryOp {
    /// Save a finished picture (durable file, then row); answered by `Saved` or `SaveFailed`.
    /// With `model_dir`, the model's fingerprint is filled in as the model hash first (it
    /// reads the model's files, which is why it happens here).
    Save {
        ticket: Ticket,
        image: Arc<image::RgbImage>,
        meta: Box<ImageMeta>,
        model_dir: Option<PathBuf>,
        /// The control images that steered it, kept with it (see
        /// [`Gallery::save_image_with_controls`]).
        controls: Vec<Arc<image::RgbImage>>,
    },
    Rate {
        ids: Vec<i64>,
        rating: u8,
    },
    /// `Some(on)` sets; `None` toggles: all favourites become ordinary, else all favourites.
    Favourite {
        ids: Vec<i64>,
        favourite: Option<bool>,
    },
    Tags {
        ids: Vec<i64>,
        tags: Vec<String>,
    },
    /// Store an adjustment stack (JSON) with a picture; `None` removes it.
    Adjustments {
        id: i64,
        stack_json: Option<String>,
    },
    Trash {
        ids: Vec<i64>,
    },
    Restore {
        ids: Vec<i64>,
    },
    /// Import picture files (copied in, their embedded settings read).
    Import {
        paths: Vec<PathBuf>,
    },
    /// Import pixels that have no file (a clipboard paste).
    ImportImage {
        image: Box<image::RgbImage>,
        source: String,
    },
    /// The ids matching a query, with the model names and sizes the filters offer.
    Query {
        ticket: Ticket,
        query: Box<Query>,
    },
    /// The rows of these pictures (answered by `Records`; missing ones are left out).
    Records {
        ids: Vec<i64>,
    },
    /// One picture's row and its parent's id and prompt, for a details pane (`Detail`).
    Detail {
        id: i64,
    },
    /// Record a job before it runs (`JobAdded` / `JobAddFailed`): it survives a crash.
    AddJob {
        ticket: Ticket,
        request: Box<GenerationRequest>,
        meta: Box<ImageMeta>,
    },
    /// Forget recorded jobs (ended, or discarded by the user).
    FinishJobs {
        uids: Vec<String>,
    },
    /// The recorded jobs that never ended (`UnfinishedJobs`).
    UnfinishedJobs,
    /// A recorded job with its init image and mask, ready to run again (`JobLoaded`).
    LoadJob {
        uid: String,
    },
}

/// What the gallery thread reports; every answer names what it answers.
#[derive(Clone, Debug)]
pub enum GalleryEvent {
    /// The gallery is open (read-only when another Atelier writes it); `report` says what
    /// opening found and did (adopted files, a rebuilt catalog...).
    Opened {
        root: PathBuf,
        read_only: bool,
        report: OpenReport,
    },
    /// It could not be opened at all; every later operation fails with this.
    OpenFailed {
        error: String,
    },
    Saved {
        ticket: Ticket,
        record: Box<ImageRecord>,
    },
    SaveFailed {
        ticket: Ticket,
        error: String,
    },
    /// These rows changed (rating, tags, trash...): shown copies are stale.
    Changed {
        ids: Vec<i64>,
    },
    Trashed {
        ids: Vec<i64>,
    },
    Restored {
        ids: Vec<i64>,
    },
    Imported {
        records: Vec<ImageRecord>,
        errors: Vec<String>,
    },
    QueryResult {
        ticket: Ticket,
        ids: Vec<i64>,
        models: Vec<String>,
        sizes: Vec<(u32, u32)>,
    },
    Records(Vec<ImageRecord>),
    Detail {
        id: i64,
        record: Option<Box<ImageRecord>>,
        parent: Option<(i64, String)>,
    },
    JobAdded {
        ticket: Ticket,
        uid: String,
    },
    JobAddFailed {
        ticket: Ticket,
        error: String,
    },
    UnfinishedJobs(Vec<StoredJob>),
    JobLoaded {
        job: Box<StoredJob>,
        request: Box<GenerationRequest>,
    },
    /// An operation failed; `what` says which, in words for the status bar.
    Failed {
        what: String,
        error: String,
    },
}

/// The handle the studio keeps. Dropping it lets the thread finish what was sent, then stop.
pub struct GalleryWorker {
    ops: Option<Sender<GalleryOp>>,
    events: Receiver<GalleryEvent>,
    thread: Option<JoinHandle<()>>,
}

/// The gallery thread has stopped (it panicked, or could not be started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gallery thread stopped unexpectedly")]
pub struct WorkerStopped;

impl GalleryWorker {
    /// Starts the thread, which opens the gallery in `root` first (`Opened` / `OpenFailed`).
    pub fn spawn(root: PathBuf, waker: Option<Waker>) -> Self {
        let (ops_tx, ops_rx) = mpsc::channel();
        let (events_tx, events) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("atelier-gallery".into())
            .spawn(move || {
                let sink = Sink {
                    tx: events_tx,
                    waker,
                };
                run(&root, &ops_rx, &sink);
            })
            .ok();
        Self {
            ops: Some(ops_tx),
            events,
            thread,
        }
    }

    /// Queues an operation; fails only when the thread is gone.
    pub fn send(&self, op: GalleryOp) -> Result<(), WorkerStopped> {
        match &self.ops {
            Some(tx) => tx.send(op).map_err(|_| WorkerStopped),
            None => Err(WorkerStopped),
        }
    }

    /// The next event, if one is waiting; `Err` once the thread is gone and nothing is left.
    pub fn try_recv(&self) -> Result<Option<GalleryEvent>, WorkerStopped> {
        match self.events.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(WorkerStopped),
        }
    }

    /// Waits up to `timeout` for the next event (tools and tests).
    pub fn recv_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Option<GalleryEvent>, WorkerStopped> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(Some(event)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(WorkerStopped),
        }
    }
}

impl Drop for GalleryWorker {
    fn drop(&mut self) {
        // Closing the channel ends the loop once everything sent has been done: saves that
        // were asked for are finished before the studio exits.
        self.ops.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Sink {
    tx: Sender<GalleryEvent>,
    waker: Option<Waker>,
}

impl Sink {
    fn send(&self, event: GalleryEvent) {
        // A closed receiver means the studio is gone; the work itself is already done.
        let _ = self.tx.send(event);
        if let Some(waker) = &self.waker {
            waker();
        }
    }

    fn failed(&self, what: &str, error: impl std::fmt::Display) {
        self.send(GalleryEvent::Failed {
            what: what.to_owned(),
            error: error.to_string(),
        });
    }
}

fn run(root: &Path, ops: &Receiver<GalleryOp>, sink: &Sink) {
    let mut gallery = match Gallery::open(root) {
        Ok(g) => {
            sink.send(GalleryEvent::Opened {
                root: root.to_path_buf(),
                read_only: g.is_read_only(),
                report: g.report.clone(),
            });
            g
        }
        Err(e) => {
            let error = e.to_string();
            sink.send(GalleryEvent::OpenFailed {
                error: error.clone(),
            });
            // Answer what is asked, so nobody waits for a save that cannot happen.
            while let Ok(op) = ops.recv() {
                refuse(op, &error, sink);
            }
            return;
        }
    };
    while let Ok(op) = ops.recv() {
        handle(&mut gallery, op, sink);
    }
}

fn refuse(op: GalleryOp, error: &str, sink: &Sink) {
    match op {
        GalleryOp::Save { ticket, .. } => sink.send(GalleryEvent::SaveFailed {
            ticket,
            error: error.to_owned(),
        }),
        GalleryOp::Query { ticket, .. } => sink.send(GalleryEvent::QueryResult {
            ticket,
            ids: Vec::new(),
            models: Vec::new(),
            sizes: Vec::new(),
        }),
        GalleryOp::Records { .. } => sink.send(GalleryEvent::Records(Vec::new())),
        GalleryOp::Detail { id } => sink.send(GalleryEvent::Detail {
            id,
            record: None,
            parent: None,
        }),
        GalleryOp::AddJob { ticket, .. } => sink.send(GalleryEvent::JobAddFailed {
            ticket,
            error: error.to_owned(),
        }),
        GalleryOp::UnfinishedJobs => sink.send(GalleryEvent::UnfinishedJobs(Vec::new())),
        _ => sink.failed("the gallery is not open", error),
    }
}

/// Runs `f` on every id, stopping at the first error; the ids done so far are reported changed.
fn each(
    ids: &[i64],
    what: &str,
    sink: &Sink,
    mut f: impl FnMut(i64) -> super::Result<()>,
) -> Vec<i64> {
    let mut done = Vec::new();
    for &id in ids {
        match f(id) {
            Ok(()) => done.push(id),
            Err(e) => {
                sink.failed(what, e);
                break;
            }
        }
    }
    done
}

fn handle(g: &mut Gallery, op: GalleryOp, sink: &Sink) {
    let changed = match op {
        GalleryOp::Save {
            ticket,
            image,
            mut meta,
            model_dir,
            controls,
        } => {
            if let (None, Some(dir)) = (&meta.model_hash, &model_dir) {
                meta.model_hash = super::model_fingerprint(dir);
            }
            match g.save_image_with_controls(&image, *meta, &controls) {
                Ok(record) => sink.send(GalleryEvent::Saved {
                    ticket,
                    record: Box::new(record),
                }),
                Err(e) => sink.send(GalleryEvent::SaveFailed {
                    ticket,
                    error: e.to_string(),
                }),
            }
            Vec::new()
        }
        GalleryOp::Rate { ids, rating } => {
            each(&ids, "Rating failed", sink, |id| g.set_rating(id, rating))
        }
        GalleryOp::Favourite { ids, favourite } => {
            let on = favourite.unwrap_or_else(|| {
                !ids.iter()
                    .all(|&id| g.get(id).map(|r| r.favourite).unwrap_or(false))
            });
            each(&ids, "Marking favourites failed", sink, |id| {
                g.set_favourite(id, on)
            })
        }
        GalleryOp::Tags { ids, tags } => {
            each(&ids, "Tagging failed", sink, |id| g.set_tags(id, &tags))
        }
        GalleryOp::Adjustments { id, stack_json } => {
            each(&[id], "The adjustments were not stored", sink, |id| {
                g.set_adjustments(id, stack_json.as_deref())
            })
        }
        GalleryOp::Trash { ids } => {
            let done = each(&ids, "Moving to the trash failed", sink, |id| {
                g.trash(&[id])
            });
            if !done.is_empty() {
                sink.send(GalleryEvent::Trashed { ids: done.clone() });
            }
            done
        }
        GalleryOp::Restore { ids } => {
            let done = each(&ids, "Restoring failed", sink, |id| g.restore(&[id]));
            if !done.is_empty() {
                sink.send(GalleryEvent::Restored { ids: done.clone() });
            }
            done
        }
        GalleryOp::Import { paths } => {
            let mut records = Vec::new();
            let mut errors = Vec::new();
            for p in &paths {
                match g.import_file(p) {
                    Ok(r) => records.push(r),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            let ids = records.iter().map(|r| r.id).collect();
            sink.send(GalleryEvent::Imported { records, errors });
            ids
        }
        GalleryOp::ImportImage { image, source } => match g.import_image(&image, &source) {
            Ok(r) => {
                let ids = vec![r.id];
                sink.send(GalleryEvent::Imported {
                    records: vec![r],
                    errors: Vec::new(),
                });
                ids
            }
            Err(e) => {
                sink.send(GalleryEvent::Imported {
                    records: Vec::new(),
                    errors: vec![e.to_string()],
                });
                Vec::new()
            }
        },
        GalleryOp::Query { ticket, query } => {
            let c = g.catalog();
            match c.ids(&query, 0, usize::MAX >> 1) {
                Ok(ids) => sink.send(GalleryEvent::QueryResult {
                    ticket,
                    ids,
                    models: c.models().unwrap_or_default(),
                    sizes: c.sizes().unwrap_or_default(),
                }),
                Err(e) => {
                    sink.failed("The gallery could not be searched", e);
                    sink.send(GalleryEvent::QueryResult {
                        ticket,
                        ids: Vec::new(),
                        models: Vec::new(),
                        sizes: Vec::new(),
                    });
                }
            }
            Vec::new()
        }
        GalleryOp::Records { ids } => {
            let records = ids.iter().filter_map(|&id| g.get(id).ok()).collect();
            sink.send(GalleryEvent::Records(records));
            Vec::new()
        }
        GalleryOp::Detail { id } => {
            let record = g.get(id).ok();
            let parent = record
                .as_ref()
                .and_then(|r| g.parent_of(r).ok().flatten())
                .map(|p| (p.id, p.meta.prompt));
            sink.send(GalleryEvent::Detail {
                id,
                record: record.map(Box::new),
                parent,
            });
            Vec::new()
        }
        GalleryOp::AddJob {
            ticket,
            request,
            meta,
        } => {
            match g.add_job(&request, &meta) {
                Ok(job) => sink.send(GalleryEvent::JobAdded {
                    ticket,
                    uid: job.uid,
                }),
                Err(e) => sink.send(GalleryEvent::JobAddFailed {
                    ticket,
                    error: e.to_string(),
                }),
            }
            Vec::new()
        }
        GalleryOp::FinishJobs { uids } => {
            for uid in uids {
                if let Err(e) = g.finish_job(&uid) {
                    sink.failed("A finished job could not be taken off the queue", e);
                }
            }
            Vec::new()
        }
        GalleryOp::UnfinishedJobs => {
            match g.unfinished_jobs() {
                Ok(jobs) => sink.send(GalleryEvent::UnfinishedJobs(jobs)),
                Err(e) => sink.failed("The unfinished jobs could not be read", e),
            }
            Vec::new()
        }
        GalleryOp::LoadJob { uid } => {
            match g.load_job(&uid) {
                Ok((job, request)) => sink.send(GalleryEvent::JobLoaded {
                    job: Box::new(job),
                    request: Box::new(request),
                }),
                Err(e) => sink.failed("An unfinished job could not be loaded", e),
            }
            Vec::new()
        }
    };
    if !changed.is_empty() {
        sink.send(GalleryEvent::Changed { ids: changed });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn next(w: &GalleryWorker) -> GalleryEvent {
        w.recv_timeout(Duration::from_secs(30))
            .expect("worker alive")
            .expect("an event in time")
    }

    #[test]
    fn saves_in_order_and_answers_queries_after_changes() {
        let dir = tempfile::tempdir().unwrap();
        let w = GalleryWorker::spawn(dir.path().to_path_buf(), None);
        assert!(matches!(
            next(&w),
            GalleryEvent::Opened {
                read_only: false,
                ..
            }
        ));
        let image = Arc::new(image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9])));
        for ticket in 1..=3 {
            let meta = ImageMeta {
                prompt: format!("picture {ticket}"),
                ..Default::default()
            };
            w.send(GalleryOp::Save {
                ticket,
                image: Arc::clone(&image),
                meta: Box::new(meta),
                model_dir: None,
                controls: Vec::new(),
            })
            .unwrap();
        }
        w.send(GalleryOp::Rate {
            ids: vec![2],
            rating: 5,
        })
        .unwrap();
        w.send(GalleryOp::Query {
            ticket: 9,
            query: Box::new(Query {
                min_rating: 5,
                ..Default::default()
            }),
        })
        .unwrap();
        let mut saved = Vec::new();
        loop {
            match next(&w) {
                GalleryEvent::Saved { ticket, record } => {
                    assert_eq!(record.meta.prompt, format!("picture {ticket}"));
                    saved.push(ticket);
                }
                GalleryEvent::Changed { ids } => assert_eq!(ids, vec![2]),
                GalleryEvent::QueryResult { ticket, ids, .. } => {
                    assert_eq!(ticket, 9);
                    assert_eq!(ids, vec![2], "the query sees the rating sent before it");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(saved, vec![1, 2, 3]);
    }

    #[test]
    fn a_gallery_that_cannot_open_refuses_saves_instead_of_losing_them_silently() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        let w = GalleryWorker::spawn(file, None);
        assert!(matches!(next(&w), GalleryEvent::OpenFailed { .. }));
        w.send(GalleryOp::Save {
            ticket: 7,
            image: Arc::new(image::RgbImage::new(8, 8)),
            meta: Box::default(),
            model_dir: None,
            controls: Vec::new(),
        })
        .unwrap();
        assert!(matches!(
            next(&w),
            GalleryEvent::SaveFailed { ticket: 7, .. }
        ));
    }

    #[test]
    fn dropping_the_handle_finishes_the_saves_already_sent() {
        let dir = tempfile::tempdir().unwrap();
        {
            let w = GalleryWorker::spawn(dir.path().to_path_buf(), None);
            for ticket in 0..5 {
                w.send(GalleryOp::Save {
                    ticket,
                    image: Arc::new(image::RgbImage::new(8, 8)),
                    meta: Box::default(),
                    model_dir: None,
                    controls: Vec::new(),
                })
                .unwrap();
            }
        }
        let g = Gallery::open(dir.path()).unwrap();
        assert_eq!(g.catalog().count(&Query::default()).unwrap(), 5);
    }
}
