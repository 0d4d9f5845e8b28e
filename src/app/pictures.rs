//! The studio's side of the gallery. The gallery itself lives on its own thread
//! ([`GalleryWorker`]): this module sends it operations (save a result, rate, tag, trash,
//! import, query) and takes in its events at frame start, so no frame waits on the disk or
//! SQLite. It also keeps the library view's state: the id list of the current filter, the
//! selection, the details pane's record, and the thumbnail cache (thumbnails are made or read
//! from the disk cache on another thread, which reads the catalog through its own read-only
//! connection). A result is shown only once the gallery thread says it is saved.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::tasks::{take_finished, Task};
use super::StudioApp;
use crate::gallery::export::export_records;
use crate::gallery::worker::{GalleryEvent, GalleryOp, GalleryWorker, Ticket};
use crate::gallery::{Catalog, ImageMeta, ImageRecord, Query};
use crate::generation::GeneratedImage;
use crate::ui::library::{LibraryFilter, SelectMode, Thumb};
use crate::ui::results::ResultItem;
use crate::ui::CentralView;

/// Thumbnails kept as textures at most (older ones are dropped and remade on demand).
const THUMB_CACHE: usize = 800;

type ThumbDone = (i64, Result<image::RgbImage, String>);

/// What a library task hands back.
pub enum PicturesOutcome {
    Exported(Result<(usize, PathBuf), String>),
    /// The folder chosen for exports (`None`: the dialog was closed).
    ExportFolder(Option<PathBuf>),
    ImportPicked(Vec<PathBuf>),
    /// A picture's pixels, for the details pane.
    Detail(i64, Result<image::RgbImage, String>),
    /// A picture's pixels, to put behind the sketch.
    InitImage(Box<ImageRecord>, Result<image::RgbImage, String>),
    /// A picture's pixels, to preprocess onto the control layer.
    ControlSource(i64, Result<image::RgbImage, String>),
    /// A picture's ControlNets with their control images, for the control layers ("reuse
    /// settings"); the images that could not be read, with why.
    ControlLayers(i64, Vec<super::controls::ReusedControl>, Vec<String>),
    /// A picture's pixels, for the clipboard.
    Copied(i64, Result<image::RgbImage, String>),
    /// The clipboard's image (already bounded), to import.
    Pasted(Result<image::RgbImage, String>),
}

/// Where the gallery stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GalleryState {
    /// The gallery thread is opening it (reconciling files and rows, or rebuilding).
    Opening,
    Open {
        read_only: bool,
    },
    /// It could not be opened: why.
    Unavailable(String),
}

/// Something to do with a picture's record once the gallery thread has sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecordAction {
    Adjust,
}

/// A generated picture waiting for the gallery thread to say it is saved.
struct PendingResult {
    ticket: Ticket,
    image: GeneratedImage,
    job: crate::engine::JobId,
    meta: ImageMeta,
}

pub struct Pictures {
    worker: GalleryWorker,
    pub state: GalleryState,
    /// The gallery's data directory (known from the start; its catalog only once open).
    pub root: PathBuf,
    /// Read-only or unavailable: why (shown in the library).
    pub status: String,
    pub filter: LibraryFilter,
    /// The filter whose ids were asked for last, and its ticket.
    asked: Option<(LibraryFilter, Ticket)>,
    /// Set when the catalog changed and the id list must be fetched again.
    stale: bool,
    next_ticket: Ticket,
    pub ids: Vec<i64>,
    pub thumbs: HashMap<i64, Thumb>,
    pub selected: BTreeSet<i64>,
    anchor: Option<i64>,
    pub detail: Option<(ImageRecord, Option<egui::TextureHandle>)>,
    pub parent: Option<(i64, String)>,
    pub models: Vec<String>,
    pub sizes: Vec<(u32, u32)>,
    /// The details pane's tag field.
    pub tags_edit: String,
    pub last_trashed: Vec<i64>,
    thumb_tx: Option<SyncSender<i64>>,
    thumb_rx: Option<Receiver<ThumbDone>>,
    pub tasks: Vec<Task<PicturesOutcome>>,
    pending: Vec<PendingResult>,
    awaiting: Vec<(i64, RecordAction)>,
}

impl Pictures {
    /// Starts the gallery thread on `root`; it opens the gallery there (read-only if another
    /// Atelier has it) and reports back.
    pub fn open(ctx: &egui::Context, root: &Path) -> Self {
        let waker_ctx = ctx.clone();
        let worker = GalleryWorker::spawn(
            root.to_path_buf(),
            Some(Arc::new(move || waker_ctx.request_repaint())),
        );
        Self {
            worker,
            state: GalleryState::Opening,
            root: root.to_path_buf(),
            status: String::new(),
            filter: LibraryFilter::default(),
            asked: None,
            stale: true,
            next_ticket: 1,
            ids: Vec::new(),
            thumbs: HashMap::new(),
            selected: BTreeSet::new(),
            anchor: None,
            detail: None,
            parent: None,
            models: Vec::new(),
            sizes: Vec::new(),
            tags_edit: String::new(),
            last_trashed: Vec::new(),
            thumb_tx: None,
            thumb_rx: None,
            tasks: Vec::new(),
            pending: Vec::new(),
            awaiting: Vec::new(),
        }
    }

    /// The gallery is open for writing.
    pub fn writable(&self) -> bool {
        self.state == GalleryState::Open { read_only: false }
    }

    /// The gallery is open (for reading at least).
    pub fn is_open(&self) -> bool {
        matches!(self.state, GalleryState::Open { .. })
    }

    /// Hands an operation to the gallery thread (answers and failures come back as events).
    pub fn send_op(&mut self, op: GalleryOp) {
        self.send(op);
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// A ticket for an operation whose answer the caller waits for.
    pub fn next_ticket(&mut self) -> Ticket {
        self.ticket()
    }

    /// The gallery is open, or still opening (operations sent now are done once it is).
    pub fn is_available(&self) -> bool {
        !matches!(self.state, GalleryState::Unavailable(_))
    }

    /// Hands an operation to the gallery thread; false if the thread is gone.
    pub fn send_op_checked(&mut self, op: GalleryOp) -> bool {
        self.send(op)
    }

    /// Hands an operation to the gallery thread; false (with the status set) if it is gone.
    fn send(&mut self, op: GalleryOp) -> bool {
        if self.worker.send(op).is_ok() {
            return true;
        }
        self.state = GalleryState::Unavailable("the gallery thread stopped".into());
        self.status = "The gallery thread stopped unexpectedly: new pictures stay in this session; save them with “Save as…”.".into();
        false
    }

    fn query(&self) -> Query {
        let f = &self.filter;
        Query {
            text: Some(f.text.clone()).filter(|t| !t.trim().is_empty()),
            model: f.model.clone(),
            favourite_only: f.favourites_only,
            min_rating: f.min_rating,
            trash: f.trash,
            sort: f.sort,
            since: f
                .within_days
                .map(|d| crate::gallery::now() - i64::from(d) * 86_400),
            size: f.size,
            ..Default::default()
        }
    }

    /// Asks for the id list again when the filter or the catalog changed.
    pub fn refresh(&mut self) {
        if !self.is_open() {
            return;
        }
        let same_filter = self.asked.as_ref().is_some_and(|(f, _)| *f == self.filter);
        if !self.stale && same_filter {
            return;
        }
        self.stale = false;
        let ticket = self.ticket();
        let query = Box::new(self.query());
        if self.send(GalleryOp::Query { ticket, query }) {
            self.asked = Some((self.filter.clone(), ticket));
        }
    }

    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Starts the thumbnail thread once the catalog exists: it reads rows through its own
    /// read-only connection, so the grid only has to name ids.
    fn start_thumbnails(&mut self, ctx: &egui::Context) {
        if self.thumb_tx.is_some() {
            return;
        }
        let (job_tx, job_rx) = sync_channel::<i64>(256);
        let (done_tx, done_rx) = sync_channel::<ThumbDone>(256);
        let ctx = ctx.clone();
        let root = self.root.clone();
        let spawned = std::thread::Builder::new()
            .name("atelier-thumbnails".into())
            .spawn(move || {
                let catalog = Catalog::open_read_only(&root.join("catalog.db"));
                while let Ok(id) = job_rx.recv() {
                    let thumb = match &catalog {
                        Ok(c) => match c.get(id) {
                            Ok(Some(r)) => crate::gallery::thumbs::thumbnail(
                                &root,
                                &r.meta.uid,
                                &root.join(&r.file),
                            ),
                            Ok(None) => Err(format!("no picture {id}")),
                            Err(e) => Err(e.to_string()),
                        },
                        Err(e) => Err(format!("the catalog cannot be read: {e}")),
                    };
                    if done_tx.send((id, thumb)).is_err() {
                        break;
                    }
                    ctx.request_repaint();
                }
            });
        if spawned.is_ok() {
            self.thumb_tx = Some(job_tx);
            self.thumb_rx = Some(done_rx);
        }
    }

    /// Takes in finished thumbnails.
    fn poll_thumbnails(&mut self, ctx: &egui::Context) {
        let Some(rx) = &self.thumb_rx else {
            return;
        };
        while let Ok((id, result)) = rx.try_recv() {
            let thumb = match result {
                Ok(img) => Thumb::Ready(super::textures::load(ctx, format!("thumb-{id}"), &img)),
                Err(e) => Thumb::Failed(e),
            };
            self.thumbs.insert(id, thumb);
        }
    }

    /// Asks the thumbnail thread for thumbnails the grid shows; a full queue means "next frame".
    pub fn request_thumbnails(&mut self, ids: &[i64]) {
        let Some(tx) = &self.thumb_tx else {
            return;
        };
        if self.thumbs.len() > THUMB_CACHE {
            let keep: std::collections::HashSet<&i64> = ids.iter().collect();
            self.thumbs
                .retain(|id, t| keep.contains(id) || matches!(t, Thumb::Loading));
        }
        for &id in ids {
            if self.thumbs.contains_key(&id) {
                continue;
            }
            match tx.try_send(id) {
                Ok(()) => {
                    self.thumbs.insert(id, Thumb::Loading);
                }
                Err(TrySendError::Full(_)) => break,
                Err(TrySendError::Disconnected(_)) => {
                    self.thumbs
                        .insert(id, Thumb::Failed("the thumbnail worker stopped".into()));
                }
            }
        }
    }

    /// The selection, in id order.
    fn selected_ids(&self) -> Vec<i64> {
        self.selected.iter().copied().collect()
    }

    /// The one selected picture, if exactly one is.
    pub fn single_selected(&self) -> Option<i64> {
        (self.selected.len() == 1)
            .then(|| self.selected.first().copied())
            .flatten()
    }
}

impl StudioApp {
    /// Hands a finished generation to the gallery thread; it is shown once saved (or once
    /// saving failed, with the reason: it can still be saved elsewhere with “Save as…”).
    pub(super) fn save_result(&mut self, job: crate::engine::JobId, image: GeneratedImage) {
        let meta = self.result_meta(job, &image);
        let p = &mut self.rt.pictures;
        let ticket = p.ticket();
        let op = GalleryOp::Save {
            ticket,
            image: Arc::clone(&image.image),
            meta: Box::new(meta.clone()),
            model_dir: Some(image.request.model_dir.clone()),
            controls: image
                .request
                .controlnets
                .iter()
                .filter_map(|c| c.image.clone())
                .collect(),
        };
        if p.send(op) {
            p.pending.push(PendingResult {
                ticket,
                image,
                job,
                meta,
            });
        } else {
            self.show_result(job, image, meta, None);
            self.show_error(
                "Not saved to the gallery: its thread stopped. The picture is still open here: use “Save as…”.".into(),
            );
        }
    }

    /// Results still on their way to the disk.
    pub fn unsaved_results(&self) -> usize {
        self.rt.pictures.pending.len()
    }

    /// Takes in the gallery thread's events, thumbnails and finished library tasks. Runs in
    /// `logic()`, also while the window is hidden.
    pub(super) fn poll_pictures(&mut self) {
        let ctx = self.rt.ctx.clone();
        loop {
            match self.rt.pictures.worker.try_recv() {
                Ok(Some(event)) => self.on_gallery_event(event),
                Ok(None) => break,
                Err(stopped) => {
                    let p = &mut self.rt.pictures;
                    if p.state != GalleryState::Unavailable(stopped.to_string()) {
                        p.state = GalleryState::Unavailable(stopped.to_string());
                        p.status = format!("{stopped}: new pictures stay in this session; save them with “Save as…”.");
                        let pending = std::mem::take(&mut p.pending);
                        for r in pending {
                            self.show_result(r.job, r.image, r.meta, None);
                        }
                        self.show_error(format!("The gallery: {stopped}."));
                    }
                    break;
                }
            }
        }
        self.rt.pictures.poll_thumbnails(&ctx);
        for finished in take_finished(&mut self.rt.pictures.tasks) {
            match finished {
                Ok(outcome) => self.on_pictures_outcome(outcome),
                Err(why) => self.show_error(format!("The library: {why}.")),
            }
        }
        self.rt.pictures.refresh();
    }

    fn on_gallery_event(&mut self, event: GalleryEvent) {
        let p = &mut self.rt.pictures;
        match event {
            GalleryEvent::Opened {
                read_only, report, ..
            } => {
                p.state = GalleryState::Open { read_only };
                p.status = if read_only {
                    "Another Atelier is using this gallery: it is open read-only, and new pictures are kept in this session only.".to_owned()
                } else {
                    String::new()
                };
                p.mark_stale();
                p.start_thumbnails(&self.rt.ctx);
                if !read_only {
                    // Jobs a crash left unfinished, offered for resuming.
                    p.send(GalleryOp::UnfinishedJobs);
                }
                if !report.messages.is_empty() {
                    let text = report.messages.join("; ");
                    self.show_info(format!("Gallery: {text}."));
                }
            }
            GalleryEvent::OpenFailed { error } => {
                let text = format!(
                    "The gallery in {} could not be opened: {error}. New pictures stay in this session; save them with “Save as…”.",
                    p.root.display()
                );
                p.state = GalleryState::Unavailable(error);
                p.status = text.clone();
                self.show_error(text);
            }
            GalleryEvent::Saved { ticket, record } => {
                if let Some(at) = p.pending.iter().position(|r| r.ticket == ticket) {
                    let r = p.pending.remove(at);
                    p.mark_stale();
                    self.show_result(r.job, r.image, record.meta.clone(), Some(*record));
                }
            }
            GalleryEvent::SaveFailed { ticket, error } => {
                if let Some(at) = p.pending.iter().position(|r| r.ticket == ticket) {
                    let r = p.pending.remove(at);
                    self.show_result(r.job, r.image, r.meta, None);
                    self.show_error(format!(
                        "Not saved to the gallery: {error}. The picture is still open here: use “Save as…”."
                    ));
                }
            }
            GalleryEvent::Changed { ids } => {
                p.mark_stale();
                for id in &ids {
                    p.thumbs.remove(id);
                }
                let shown = p.detail.as_ref().map(|(r, _)| r.id);
                if shown.is_some_and(|id| ids.contains(&id)) {
                    self.load_detail_again();
                }
            }
            GalleryEvent::Trashed { ids } => {
                let n = ids.len();
                p.last_trashed = ids;
                self.show_info(format!(
                    "Moved {n} picture(s) to the trash. Ctrl+Z brings them back."
                ));
            }
            GalleryEvent::Restored { ids } => {
                self.show_info(format!("Brought back {} picture(s).", ids.len()));
            }
            GalleryEvent::Imported { records, errors } => {
                p.mark_stale();
                let ok = records.len();
                if errors.is_empty() {
                    self.show_info(format!("Imported {ok} picture(s)."));
                } else {
                    self.show_error(format!(
                        "Imported {ok}, {} failed: {}",
                        errors.len(),
                        errors.join("; ")
                    ));
                }
            }
            GalleryEvent::QueryResult {
                ticket,
                ids,
                models,
                sizes,
            } => {
                // An answer to an older filter is dropped: a newer query is on its way.
                if p.asked.as_ref().is_some_and(|(_, t)| *t == ticket) {
                    p.ids = ids;
                    p.models = models;
                    p.sizes = sizes;
                    let keep: std::collections::HashSet<i64> = p.ids.iter().copied().collect();
                    p.selected.retain(|id| keep.contains(id));
                    if p.single_selected().is_none() {
                        p.detail = None;
                        p.parent = None;
                    }
                }
            }
            GalleryEvent::Records(records) => {
                for record in records {
                    self.on_record(record);
                }
            }
            GalleryEvent::Detail { id, record, parent } => {
                if let Some(record) = record {
                    self.on_record(*record);
                    self.set_detail_parent(id, parent);
                }
            }
            GalleryEvent::JobAdded { ticket, uid } => self.on_job_added(ticket, uid),
            GalleryEvent::JobAddFailed { ticket, error } => self.on_job_add_failed(ticket, error),
            GalleryEvent::UnfinishedJobs(jobs) => self.on_unfinished_jobs(jobs),
            GalleryEvent::JobLoaded { job, request } => self.on_job_loaded(*job, *request),
            GalleryEvent::Failed { what, error } => {
                p.mark_stale();
                self.show_error(format!("{what}: {error}"));
            }
        }
    }

    /// A record the gallery thread sent: the details pane's, or one an action waited for.
    fn on_record(&mut self, record: ImageRecord) {
        let id = record.id;
        let actions: Vec<RecordAction> = {
            let awaiting = &mut self.rt.pictures.awaiting;
            let actions = awaiting
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|(_, a)| *a)
                .collect();
            awaiting.retain(|(i, _)| *i != id);
            actions
        };
        for action in actions {
            match action {
                RecordAction::Adjust => self.adjust_open_record(record.clone()),
            }
        }
        let p = &mut self.rt.pictures;
        if p.single_selected() != Some(id) {
            return;
        }
        if p.detail.as_ref().is_some_and(|(r, _)| r == &record) {
            return;
        }
        let keep_texture = p
            .detail
            .take()
            .filter(|(r, _)| r.id == id && r.file == record.file)
            .and_then(|(_, t)| t);
        p.parent = None;
        if keep_texture.is_none() {
            let path = p.root.join(&record.file);
            p.tasks.push(Task::spawn("picture", &self.rt.ctx, move || {
                PicturesOutcome::Detail(id, load_rgb(&path))
            }));
        }
        p.tags_edit = record.meta.tags.join(", ");
        p.detail = Some((record, keep_texture));
    }

    fn on_pictures_outcome(&mut self, outcome: PicturesOutcome) {
        let ctx = self.rt.ctx.clone();
        match outcome {
            PicturesOutcome::Exported(Ok((n, dir))) => {
                self.state.export.folder = dir.display().to_string();
                self.show_info(format!("Exported {n} picture(s) to {}", dir.display()))
            }
            PicturesOutcome::Exported(Err(e)) => self.show_error(e),
            PicturesOutcome::ExportFolder(Some(dir)) => {
                self.state.export.folder = dir.display().to_string();
            }
            PicturesOutcome::ExportFolder(None) => {
                self.show_info("No export folder chosen.".into())
            }
            PicturesOutcome::ImportPicked(paths) => {
                if !paths.is_empty() {
                    self.import_paths(&paths);
                }
            }
            PicturesOutcome::Detail(id, Ok(img)) => {
                if let Some((r, tex)) = &mut self.rt.pictures.detail {
                    if r.id == id {
                        *tex = Some(super::textures::load(&ctx, format!("detail-{id}"), &img));
                    }
                }
            }
            PicturesOutcome::Detail(_, Err(e)) => self.show_error(e),
            PicturesOutcome::InitImage(record, Ok(img)) => {
                let rgba = image::DynamicImage::ImageRgb8(img).to_rgba8();
                self.use_background(super::files::LoadedImage {
                    name: format!("picture #{}", record.id),
                    image: rgba,
                });
                self.rt.sketch_parent = Some(record.meta.uid);
            }
            PicturesOutcome::InitImage(_, Err(e)) | PicturesOutcome::Copied(_, Err(e)) => {
                self.show_error(e)
            }
            PicturesOutcome::Copied(id, Ok(img)) => {
                self.rt.ctx.copy_image(super::textures::color_image(&img));
                self.show_info(format!("Picture #{id} is on the clipboard."));
            }
            PicturesOutcome::Pasted(Ok(img)) => {
                if !self.rt.pictures.writable() {
                    self.show_error("The gallery is read-only: nothing pasted.".into());
                    return;
                }
                self.rt.pictures.send(GalleryOp::ImportImage {
                    image: Box::new(img),
                    source: "clipboard".into(),
                });
            }
            PicturesOutcome::Pasted(Err(e)) => self.show_error(e),
            PicturesOutcome::ControlSource(_, Ok(img)) => self.use_control_source(img),
            PicturesOutcome::ControlSource(id, Err(e)) => {
                self.show_error(format!("Picture #{id} could not be read: {e}"))
            }
            PicturesOutcome::ControlLayers(id, controls, errors) => {
                let count = controls.len();
                let missing = self.reuse_controls(controls);
                if !errors.is_empty() {
                    self.show_error(format!(
                        "A control image of picture #{id} could not be read: {}",
                        errors.join("; ")
                    ));
                    return;
                }
                let mut text = format!(
                    "Settings of picture #{id} are in the prompt panel, its {count} control \
                     image(s) on the control layers."
                );
                if missing > 0 {
                    text.push_str(&format!(" {missing} of its ControlNets are not installed."));
                }
                self.show_info(text);
            }
        }
    }

    pub(super) fn import_paths(&mut self, paths: &[PathBuf]) {
        if !self.rt.pictures.writable() {
            self.show_error("The gallery is not open for writing: nothing imported.".into());
            return;
        }
        self.rt.view = CentralView::Library;
        self.rt.pictures.send(GalleryOp::Import {
            paths: paths.to_vec(),
        });
        self.show_info(format!("Importing {} file(s)…", paths.len()));
    }

    /// Pastes an image from the system clipboard into the gallery (read and checked on a task).
    pub(super) fn paste_image(&mut self) {
        self.rt
            .pictures
            .tasks
            .push(Task::spawn("paste", &self.rt.ctx, || {
                PicturesOutcome::Pasted(read_clipboard_image())
            }));
    }

    pub(super) fn library_select(&mut self, id: i64, mode: SelectMode) {
        self.rt.view = CentralView::Library;
        let p = &mut self.rt.pictures;
        match mode {
            SelectMode::Replace => {
                p.selected.clear();
                p.selected.insert(id);
                p.anchor = Some(id);
            }
            SelectMode::Toggle => {
                if !p.selected.remove(&id) {
                    p.selected.insert(id);
                }
                p.anchor = Some(id);
            }
            SelectMode::Range => {
                let at = |x: i64| p.ids.iter().position(|&i| i == x);
                match (p.anchor.and_then(at), at(id)) {
                    (Some(a), Some(b)) => {
                        let (lo, hi) = (a.min(b), a.max(b));
                        p.selected.extend(p.ids[lo..=hi].iter().copied());
                    }
                    _ => {
                        p.selected.insert(id);
                        p.anchor = Some(id);
                    }
                }
            }
        }
        self.load_detail();
    }

    /// Shows the single selected picture in the details pane: its row comes from the gallery
    /// thread, its pixels from a task.
    pub(super) fn load_detail(&mut self) {
        let p = &mut self.rt.pictures;
        let Some(id) = p.single_selected() else {
            p.detail = None;
            p.parent = None;
            return;
        };
        if p.detail.as_ref().is_some_and(|(r, _)| r.id == id) {
            return;
        }
        p.detail = None;
        p.parent = None;
        self.load_detail_again();
    }

    /// Asks for the selected picture's row (and its parent's) again, e.g. after a change.
    fn load_detail_again(&mut self) {
        let p = &mut self.rt.pictures;
        let Some(id) = p.single_selected() else {
            return;
        };
        p.send(GalleryOp::Detail { id });
    }

    /// The detail's parent arrived.
    pub(super) fn set_detail_parent(&mut self, child: i64, parent: Option<(i64, String)>) {
        let p = &mut self.rt.pictures;
        if p.detail.as_ref().is_some_and(|(r, _)| r.id == child) {
            p.parent = parent;
        }
    }

    pub(super) fn rate_selected(&mut self, rating: u8) {
        let p = &mut self.rt.pictures;
        if !p.writable() || p.selected.is_empty() {
            return;
        }
        let ids = p.selected_ids();
        p.send(GalleryOp::Rate { ids, rating });
    }

    pub(super) fn set_tags(&mut self, text: &str) {
        let p = &mut self.rt.pictures;
        if !p.writable() || p.selected.is_empty() {
            return;
        }
        let ids = p.selected_ids();
        let tags = text.split(',').map(str::to_string).collect();
        p.send(GalleryOp::Tags { ids, tags });
    }

    pub(super) fn toggle_favourite(&mut self) {
        let p = &mut self.rt.pictures;
        if !p.writable() || p.selected.is_empty() {
            return;
        }
        let ids = p.selected_ids();
        p.send(GalleryOp::Favourite {
            ids,
            favourite: None,
        });
    }

    pub(super) fn trash_selected(&mut self, restore: bool) {
        let p = &mut self.rt.pictures;
        if !p.writable() || p.selected.is_empty() {
            return;
        }
        let ids = p.selected_ids();
        for id in &ids {
            p.thumbs.remove(id);
        }
        p.selected.clear();
        p.detail = None;
        p.parent = None;
        if restore {
            p.send(GalleryOp::Restore { ids });
        } else {
            p.send(GalleryOp::Trash { ids });
        }
    }

    pub(super) fn undo_trash(&mut self) {
        let p = &mut self.rt.pictures;
        let ids = std::mem::take(&mut p.last_trashed);
        if ids.is_empty() || !p.writable() {
            return;
        }
        p.send(GalleryOp::Restore { ids });
    }

    /// The row of picture `id` if the studio has it at hand (the details pane, or a result
    /// of this session).
    fn record_at_hand(&self, id: i64) -> Option<ImageRecord> {
        let from_detail = self
            .rt
            .pictures
            .detail
            .as_ref()
            .filter(|(r, _)| r.id == id)
            .map(|(r, _)| r.clone());
        from_detail.or_else(|| {
            self.rt
                .results
                .iter()
                .filter_map(|i| i.record.as_ref())
                .find(|r| r.id == id)
                .cloned()
        })
    }

    /// Runs `action` on picture `id`'s row now if at hand, else once the gallery thread sent it.
    fn with_record(&mut self, id: i64, action: RecordAction) {
        match self.record_at_hand(id) {
            Some(record) => match action {
                RecordAction::Adjust => self.adjust_open_record(record),
            },
            None => {
                let p = &mut self.rt.pictures;
                p.awaiting.push((id, action));
                p.send(GalleryOp::Records { ids: vec![id] });
            }
        }
    }

    /// Opens the Adjustments panel on picture `id` (its row may have to be fetched first).
    pub(super) fn adjust_open(&mut self, id: i64) {
        self.rt.view = CentralView::Adjust;
        self.reload_presets();
        if self.rt.adjust.target == Some(id) {
            return;
        }
        self.with_record(id, RecordAction::Adjust);
    }

    pub(super) fn reuse_record(&mut self, id: i64) {
        let Some(record) = self.record_at_hand(id) else {
            return;
        };
        let m = &record.meta;
        let model = self
            .rt
            .models
            .for_picture(m.model_hash.as_deref(), m.model_name.as_deref())
            .map(|x| x.dir.clone());
        let current = self.state.prompt.to_request(Path::new(""));
        let request = crate::generation::GenerationRequest {
            prompt: m.prompt.clone(),
            negative_prompt: m.negative_prompt.clone(),
            seed: m.seed.unwrap_or(current.seed),
            steps: m.steps.map(|s| s as usize).unwrap_or(current.steps),
            guidance: m.guidance.unwrap_or(current.guidance),
            width: if m.width > 0 { m.width } else { current.width },
            height: if m.height > 0 {
                m.height
            } else {
                current.height
            },
            sampler: m.sampler_kind().unwrap_or(current.sampler),
            strength_0_to_1: m.strength.unwrap_or(current.strength_0_to_1),
            clip_skip: m.clip_skip.unwrap_or(1),
            decoder: match m.extra.get("Decoder").map(String::as_str) {
                Some("tiny") => crate::generation::DecoderChoice::Tiny,
                _ => crate::generation::DecoderChoice::Full,
            },
            ..current
        };
        self.state.prompt.reuse(&request);
        // Its ControlNets ("ControlNet N" entries) and their control images (kept in the
        // same order), read on a task, become the control layers.
        let controls: Vec<(crate::generation::A1111Control, Option<PathBuf>)> = (0
            ..crate::sketch::MAX_CONTROL_LAYERS)
            .map_while(|i| {
                let text = m.extra.get(&format!("ControlNet {i}"))?;
                let file = m
                    .control_images
                    .get(i)
                    .filter(|f| !f.contains(".."))
                    .map(|f| self.rt.pictures.root.join(f));
                Some((crate::generation::A1111Control::parse(text)?, file))
            })
            .collect();
        if !controls.is_empty() {
            // Whether the picture's subject was drawn again at the model's size.
            self.state.canvas.subject_pass =
                m.extra.get("Subject pass").map(String::as_str) == Some("on");
            self.rt
                .pictures
                .tasks
                .push(Task::spawn("control-images", &self.rt.ctx, move || {
                    let mut errors = Vec::new();
                    let reused = controls
                        .into_iter()
                        .map(|(text, file)| {
                            let image = file.and_then(|path| {
                                crate::imageio::load_image_file(&path)
                                    .map(|i| i.to_luma8())
                                    .map_err(|e| errors.push(e.to_string()))
                                    .ok()
                            });
                            super::controls::ReusedControl {
                                path: None,
                                text,
                                image,
                            }
                        })
                        .collect();
                    PicturesOutcome::ControlLayers(id, reused, errors)
                }));
        }
        let m = &record.meta;
        let note = match (&model, &m.model_name) {
            (Some(dir), _) => {
                self.state.selected_model = Some(dir.clone());
                // The VAE the picture names, when it is installed.
                let vae = self.rt.models.vae_for_picture(
                    m.extra.get("VAE hash").map(String::as_str),
                    m.extra.get("VAE").map(String::as_str),
                );
                if let Some(vae) = vae {
                    self.state.model_vaes.insert(dir.clone(), vae.clone());
                }
                String::new()
            }
            (None, Some(name)) => format!(" (its model “{name}” is not installed)"),
            (None, None) => String::new(),
        };
        self.show_info(format!(
            "Settings of picture #{id} are in the prompt panel{note}."
        ));
    }

    /// Puts a gallery picture behind the sketch (loaded on a task); generations from the
    /// sketch record it as their parent.
    pub(super) fn use_as_init(&mut self, id: i64) {
        let Some(record) = self.record_at_hand(id) else {
            return;
        };
        let path = self.rt.pictures.root.join(&record.file);
        self.rt
            .pictures
            .tasks
            .push(Task::spawn("init-image", &self.rt.ctx, move || {
                let loaded = load_rgb(&path);
                PicturesOutcome::InitImage(Box::new(record), loaded)
            }));
    }

    /// Puts a gallery picture's lines on the control layer (loaded on a task, then run
    /// through the control layer's preprocessor).
    pub(super) fn use_as_control(&mut self, id: i64) {
        let Some(record) = self.record_at_hand(id) else {
            return;
        };
        let path = self.rt.pictures.root.join(&record.file);
        self.rt.view = crate::ui::CentralView::Sketch;
        self.rt
            .pictures
            .tasks
            .push(Task::spawn("control-source", &self.rt.ctx, move || {
                PicturesOutcome::ControlSource(id, load_rgb(&path))
            }));
    }

    pub(super) fn copy_image(&mut self, id: i64) {
        let Some(record) = self.record_at_hand(id) else {
            return;
        };
        let path = self.rt.pictures.root.join(&record.file);
        self.rt
            .pictures
            .tasks
            .push(Task::spawn("copy-image", &self.rt.ctx, move || {
                PicturesOutcome::Copied(id, load_rgb(&path))
            }));
    }

    /// Exports the selection with the Export window's choices into its folder, asking for
    /// one first when it has none (the folder chosen is remembered). The rows are read on the
    /// task through a read-only connection.
    pub(super) fn export_selected(&mut self) {
        let p = &self.rt.pictures;
        if !p.is_open() {
            self.show_error("The gallery is not open: nothing to export.".into());
            return;
        }
        let ids = p.selected_ids();
        if ids.is_empty() {
            self.show_error("Nothing to export: select pictures first.".into());
            return;
        }
        let root = p.root.clone();
        let settings = &self.state.export;
        let opts = settings.options.clone();
        let folder = Some(settings.folder.trim())
            .filter(|f| !f.is_empty())
            .map(PathBuf::from);
        self.show_info(format!("Exporting {} picture(s)…", ids.len()));
        self.rt
            .pictures
            .tasks
            .push(Task::spawn("export", &self.rt.ctx, move || {
                let dir = match folder.or_else(pick_export_folder) {
                    Some(dir) => dir,
                    None => {
                        return PicturesOutcome::Exported(Err(
                            "Not exported: no folder chosen.".into()
                        ))
                    }
                };
                let records = Catalog::open_read_only(&root.join("catalog.db"))
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        ids.iter()
                            .map(|&id| {
                                c.get(id)
                                    .map_err(|e| e.to_string())?
                                    .ok_or_else(|| format!("no picture {id}"))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    });
                let result = records.and_then(|records| {
                    export_records(&records, &root, &dir, &opts, &mut |_, _| {})
                        .map_err(|e| e.to_string())
                });
                PicturesOutcome::Exported(
                    result
                        .map(|w| (w.len(), dir))
                        .map_err(|e| format!("Export failed: {e}")),
                )
            }));
    }

    /// Asks for the folder exports go to.
    pub(super) fn choose_export_folder(&mut self) {
        self.rt
            .pictures
            .tasks
            .push(Task::spawn("export-folder", &self.rt.ctx, || {
                PicturesOutcome::ExportFolder(pick_export_folder())
            }));
    }

    pub(super) fn pick_imports(&mut self) {
        self.rt
            .pictures
            .tasks
            .push(Task::spawn("import-dialog", &self.rt.ctx, || {
                PicturesOutcome::ImportPicked(
                    rfd::FileDialog::new()
                        .set_title("Import pictures")
                        .add_filter("Images", &["png", "jpg", "jpeg", "webp"])
                        .pick_files()
                        .unwrap_or_default(),
                )
            }));
    }

    /// Shows a finished result in the strip (and selects it when following along).
    pub(super) fn show_result(
        &mut self,
        job: crate::engine::JobId,
        image: GeneratedImage,
        meta: ImageMeta,
        record: Option<ImageRecord>,
    ) {
        let id = self.rt.next_image_id;
        self.rt.next_image_id += 1;
        // Follow along: select the new image if the newest one was selected (or none).
        let following = self.rt.selected_image.is_none()
            || self.rt.selected_image == self.rt.results.last().map(|i| i.id);
        let texture = super::textures::load(&self.rt.ctx, format!("result-{id}"), &image.image);
        self.rt.results.push(ResultItem {
            id,
            job,
            image: image.image,
            request: image.request,
            elapsed_secs: image.elapsed_secs,
            texture,
            meta,
            record,
        });
        if following {
            self.rt.selected_image = Some(id);
            // Nothing sketched: the result is the more useful thing to show.
            if self.rt.sketch.is_empty() && self.rt.stroke.0.is_none() {
                self.rt.view = CentralView::Result;
            }
        }
    }
}

/// A picture file's pixels through the bounded loader.
fn load_rgb(path: &Path) -> Result<image::RgbImage, String> {
    crate::imageio::load_image_file(path)
        .map(|i| i.to_rgb8())
        .map_err(|e| e.to_string())
}

/// The system clipboard's image, refused when larger than the bounded loader accepts.
fn read_clipboard_image() -> Result<image::RgbImage, String> {
    let image = arboard::Clipboard::new()
        .and_then(|mut c| c.get_image())
        .map_err(|e| format!("No image on the clipboard ({e})."))?;
    crate::imageio::check_dimensions(image.width as u64, image.height as u64)
        .map_err(|e| format!("The clipboard image was not pasted: {e}"))?;
    let rgba = image::RgbaImage::from_raw(
        image.width as u32,
        image.height as u32,
        image.bytes.into_owned(),
    )
    .ok_or_else(|| "The clipboard image is malformed.".to_owned())?;
    Ok(image::DynamicImage::ImageRgba8(rgba).to_rgb8())
}

/// The folder dialog for exports (`None`: closed, or no dialog on this desktop).
fn pick_export_folder() -> Option<PathBuf> {
    rfd::FileDialog::new()
        .set_title("Export pictures to folder")
        .pick_folder()
}
