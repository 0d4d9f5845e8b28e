//! The studio's side of the gallery: the open catalog, saving each result before it is shown
//! as done, the library view's query, selection and thumbnail cache (thumbnails are made or
//! read from the disk cache on a worker thread), and the library commands.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use super::tasks::{Poll, Task};
use super::StudioApp;
use crate::gallery::export::{export_records, load_adjusted, ExportFormat, ExportOptions};
use crate::gallery::{Gallery, ImageRecord, Query};
use crate::ui::library::{ExportChoice, LibraryFilter, SelectMode, Thumb};
use crate::ui::CentralView;

/// Thumbnails kept as textures at most (older ones are dropped and remade on demand).
const THUMB_CACHE: usize = 800;

type ThumbDone = (i64, Result<image::RgbImage, String>);

/// What a library task hands back.
pub enum PicturesOutcome {
    Exported(Result<(usize, PathBuf), String>),
    ImportPicked(Vec<PathBuf>),
    Detail(i64, Result<image::RgbImage, String>),
}

pub struct Pictures {
    pub gallery: Option<Gallery>,
    /// Read-only or unavailable: why (shown in the library).
    pub status: String,
    pub filter: LibraryFilter,
    shown_filter: Option<LibraryFilter>,
    /// Set when the catalog changed and the id list must be fetched again.
    stale: bool,
    pub ids: Vec<i64>,
    pub thumbs: HashMap<i64, Thumb>,
    pub selected: BTreeSet<i64>,
    anchor: Option<i64>,
    pub detail: Option<(ImageRecord, Option<egui::TextureHandle>)>,
    pub parent: Option<(i64, String)>,
    pub models: Vec<String>,
    pub sizes: Vec<(u32, u32)>,
    pub export: ExportChoice,
    /// The details pane's tag field.
    pub tags_edit: String,
    pub last_trashed: Vec<i64>,
    thumb_tx: Option<SyncSender<(i64, String, PathBuf, PathBuf)>>,
    thumb_rx: Option<Receiver<ThumbDone>>,
    pub tasks: Vec<Task<PicturesOutcome>>,
}

impl Pictures {
    /// Opens the gallery in `root` (read-only with a note if another Atelier has it).
    pub fn open(ctx: &egui::Context, root: &Path) -> (Self, Vec<String>) {
        let (gallery, status, notes) = match Gallery::open(root) {
            Ok(g) => {
                let notes = g.report.messages.clone();
                let status = if g.is_read_only() {
                    "Another Atelier is using this gallery: it is open read-only, and new pictures are kept in this session only.".to_owned()
                } else {
                    String::new()
                };
                (Some(g), status, notes)
            }
            Err(e) => {
                let text = format!(
                    "The gallery in {} could not be opened: {e}. New pictures stay in this session; save them with “Save as…”.",
                    root.display()
                );
                (None, text.clone(), vec![text])
            }
        };
        let (thumb_tx, thumb_rx) = match &gallery {
            Some(_) => {
                let (job_tx, job_rx) = sync_channel::<(i64, String, PathBuf, PathBuf)>(256);
                let (done_tx, done_rx) = sync_channel::<ThumbDone>(256);
                let ctx = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("atelier-thumbnails".into())
                    .spawn(move || {
                        while let Ok((id, uid, root, path)) = job_rx.recv() {
                            let thumb = crate::gallery::thumbs::thumbnail(&root, &uid, &path);
                            if done_tx.send((id, thumb)).is_err() {
                                break;
                            }
                            ctx.request_repaint();
                        }
                    });
                match spawned {
                    Ok(_) => (Some(job_tx), Some(done_rx)),
                    Err(_) => (None, None),
                }
            }
            None => (None, None),
        };
        let models = gallery
            .as_ref()
            .and_then(|g| g.catalog().models().ok())
            .unwrap_or_default();
        (
            Self {
                gallery,
                status,
                filter: LibraryFilter::default(),
                shown_filter: None,
                stale: true,
                ids: Vec::new(),
                thumbs: HashMap::new(),
                selected: BTreeSet::new(),
                anchor: None,
                detail: None,
                parent: None,
                models,
                sizes: Vec::new(),
                export: ExportChoice::default(),
                tags_edit: String::new(),
                last_trashed: Vec::new(),
                thumb_tx,
                thumb_rx,
                tasks: Vec::new(),
            },
            notes,
        )
    }

    pub fn writable(&self) -> Option<&Gallery> {
        self.gallery.as_ref().filter(|g| !g.is_read_only())
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

    /// Fetches the id list again when the filter or the catalog changed.
    pub fn refresh(&mut self) {
        if !self.stale && self.shown_filter.as_ref() == Some(&self.filter) {
            return;
        }
        self.stale = false;
        self.shown_filter = Some(self.filter.clone());
        let Some(g) = &self.gallery else {
            return;
        };
        match g.catalog().ids(&self.query(), 0, usize::MAX >> 1) {
            Ok(ids) => self.ids = ids,
            Err(e) => self.status = format!("The gallery could not be searched: {e}"),
        }
        self.models = g.catalog().models().unwrap_or_default();
        self.sizes = g.catalog().sizes().unwrap_or_default();
        let keep: std::collections::HashSet<i64> = self.ids.iter().copied().collect();
        self.selected.retain(|id| keep.contains(id));
    }

    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Takes in finished thumbnails.
    pub fn poll_thumbnails(&mut self, ctx: &egui::Context) {
        let Some(rx) = &self.thumb_rx else {
            return;
        };
        while let Ok((id, result)) = rx.try_recv() {
            let thumb = match result {
                Ok(img) => Thumb::Ready(ctx.load_texture(
                    format!("thumb-{id}"),
                    egui::ColorImage::from_rgb(
                        [img.width() as usize, img.height() as usize],
                        img.as_raw(),
                    ),
                    egui::TextureOptions::LINEAR,
                )),
                Err(e) => Thumb::Failed(e),
            };
            self.thumbs.insert(id, thumb);
        }
    }

    /// Asks the worker for thumbnails the grid shows; a full queue just means "next frame".
    pub fn request_thumbnails(&mut self, ids: &[i64]) {
        let (Some(g), Some(tx)) = (&self.gallery, &self.thumb_tx) else {
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
            let Ok(Some(r)) = g.catalog().get(id) else {
                continue;
            };
            let job = (
                id,
                r.meta.uid.clone(),
                g.root().to_path_buf(),
                g.path_of(&r),
            );
            match tx.try_send(job) {
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
}

impl StudioApp {
    /// Saves a finished generation into the gallery. `None` (with an error shown) when it could
    /// not be saved: the picture stays in this session's strip and can be saved elsewhere.
    pub(super) fn record_result(&mut self, image: &crate::engine::GeneratedImage) -> Option<i64> {
        let model_name = self
            .rt
            .library
            .find(&image.request.model_dir)
            .map(|m| m.name.clone());
        let mut meta = crate::gallery::meta_from_generation(image, model_name);
        if image.request.init_image.is_some() {
            meta.init_image = Some("sketch".into());
            if let Some(uid) = &self.rt.sketch_parent {
                meta.init_image = Some(format!("gallery:{uid}"));
                meta.parent = Some(uid.clone());
            }
        }
        if image.request.mask.is_some() {
            meta.mask_image = Some("sketch mask".into());
        }
        let pictures = &mut self.rt.pictures;
        let result = match pictures.gallery.as_mut() {
            Some(g) if !g.is_read_only() => g.save_image(&image.image, meta),
            _ => return None,
        };
        match result {
            Ok(record) => {
                pictures.mark_stale();
                Some(record.id)
            }
            Err(e) => {
                self.show_error(format!(
                    "Not saved to the gallery: {e}. The picture is still open here: use “Save as…”."
                ));
                None
            }
        }
    }

    pub(super) fn poll_pictures(&mut self) {
        let ctx = self.rt.ctx.clone();
        self.rt.pictures.poll_thumbnails(&ctx);
        let mut finished = Vec::new();
        self.rt.pictures.tasks.retain(|t| match t.poll() {
            Poll::Pending => true,
            Poll::Ready(v) => {
                finished.push(v);
                false
            }
            Poll::Lost => false,
        });
        for outcome in finished {
            match outcome {
                PicturesOutcome::Exported(Ok((n, dir))) => {
                    self.show_info(format!("Exported {n} picture(s) to {}", dir.display()))
                }
                PicturesOutcome::Exported(Err(e)) => self.show_error(e),
                PicturesOutcome::ImportPicked(paths) => self.import_paths(&paths),
                PicturesOutcome::Detail(id, Ok(img)) => {
                    if let Some((r, tex)) = &mut self.rt.pictures.detail {
                        if r.id == id {
                            *tex = Some(ctx.load_texture(
                                format!("detail-{id}"),
                                egui::ColorImage::from_rgb(
                                    [img.width() as usize, img.height() as usize],
                                    img.as_raw(),
                                ),
                                egui::TextureOptions::LINEAR,
                            ));
                        }
                    }
                }
                PicturesOutcome::Detail(_, Err(e)) => self.show_error(e),
            }
        }
        self.rt.pictures.refresh();
    }

    pub(super) fn import_paths(&mut self, paths: &[PathBuf]) {
        let Some(g) = self
            .rt
            .pictures
            .gallery
            .as_mut()
            .filter(|g| !g.is_read_only())
        else {
            self.show_error("The gallery is read-only: nothing imported.".into());
            return;
        };
        let mut ok = 0;
        let mut errors = Vec::new();
        for p in paths {
            match g.import_file(p) {
                Ok(_) => ok += 1,
                Err(e) => errors.push(e.to_string()),
            }
        }
        self.rt.pictures.mark_stale();
        self.rt.view = CentralView::Library;
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

    /// Pastes an image from the system clipboard into the gallery.
    pub(super) fn paste_image(&mut self) {
        let image = arboard::Clipboard::new().and_then(|mut c| c.get_image());
        let image = match image {
            Ok(img) => img,
            Err(e) => {
                self.show_error(format!("No image on the clipboard ({e})."));
                return;
            }
        };
        let Some(rgba) = image::RgbaImage::from_raw(
            image.width as u32,
            image.height as u32,
            image.bytes.into_owned(),
        ) else {
            self.show_error("The clipboard image is malformed.".into());
            return;
        };
        let rgb = image::DynamicImage::ImageRgba8(rgba).to_rgb8();
        let Some(g) = self
            .rt
            .pictures
            .gallery
            .as_mut()
            .filter(|g| !g.is_read_only())
        else {
            self.show_error("The gallery is read-only: nothing pasted.".into());
            return;
        };
        match g.import_image(&rgb, "clipboard") {
            Ok(r) => {
                self.rt.pictures.mark_stale();
                self.show_info(format!("Pasted as picture #{}.", r.id));
            }
            Err(e) => self.show_error(format!("Not pasted: {e}")),
        }
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

    /// Shows the single selected picture in the details pane (its pixels load on a task).
    pub(super) fn load_detail(&mut self) {
        let p = &mut self.rt.pictures;
        let single = (p.selected.len() == 1)
            .then(|| p.selected.iter().next().copied())
            .flatten();
        let Some((id, g)) = single.zip(p.gallery.as_ref()) else {
            p.detail = None;
            p.parent = None;
            return;
        };
        let Ok(Some(record)) = g.catalog().get(id) else {
            p.detail = None;
            return;
        };
        if p.detail.as_ref().is_some_and(|(r, _)| r == &record) {
            return;
        }
        let keep_texture = p
            .detail
            .take()
            .filter(|(r, _)| r.id == id && r.file == record.file)
            .and_then(|(_, t)| t);
        p.parent = g
            .parent_of(&record)
            .ok()
            .flatten()
            .map(|r| (r.id, r.meta.prompt.clone()));
        let path = g.path_of(&record);
        if keep_texture.is_none() {
            p.tasks.push(Task::spawn("picture", &self.rt.ctx, move || {
                let loaded = crate::imageio::load_image_file(&path)
                    .map(|i| i.to_rgb8())
                    .map_err(|e| e.to_string());
                PicturesOutcome::Detail(id, loaded)
            }));
        }
        p.tags_edit = record.meta.tags.join(", ");
        p.detail = Some((record, keep_texture));
    }

    pub(super) fn rate_selected(&mut self, rating: u8) {
        let p = &mut self.rt.pictures;
        let Some(g) = p.writable() else { return };
        for &id in &p.selected {
            let _ = g.set_rating(id, rating);
        }
        p.mark_stale();
        self.load_detail();
    }

    pub(super) fn set_tags(&mut self, text: &str) {
        let p = &mut self.rt.pictures;
        let Some(g) = p.writable() else { return };
        let tags: Vec<String> = text.split(',').map(str::to_string).collect();
        let mut failed = None;
        for &id in &p.selected {
            if let Err(e) = g.set_tags(id, &tags) {
                failed = Some(e.to_string());
            }
        }
        p.mark_stale();
        match failed {
            Some(e) => self.show_error(e),
            None => self.load_detail(),
        }
    }

    pub(super) fn toggle_favourite(&mut self) {
        let p = &mut self.rt.pictures;
        let Some(g) = p.writable() else { return };
        let all_fav = p
            .selected
            .iter()
            .all(|&id| g.get(id).map(|r| r.favourite).unwrap_or(false));
        for &id in &p.selected {
            let _ = g.set_favourite(id, !all_fav);
        }
        p.mark_stale();
        self.load_detail();
    }

    pub(super) fn trash_selected(&mut self, restore: bool) {
        let p = &mut self.rt.pictures;
        let ids: Vec<i64> = p.selected.iter().copied().collect();
        let Some(g) = p.gallery.as_mut() else { return };
        let result = if restore {
            g.restore(&ids)
        } else {
            g.trash(&ids)
        };
        p.mark_stale();
        p.selected.clear();
        p.detail = None;
        for id in &ids {
            p.thumbs.remove(id);
        }
        match result {
            Ok(()) if restore => self.show_info(format!("Restored {} picture(s).", ids.len())),
            Ok(()) => {
                self.rt.pictures.last_trashed = ids.clone();
                self.show_info(format!(
                    "Moved {} picture(s) to the trash. Ctrl+Z brings them back.",
                    ids.len()
                ));
            }
            Err(e) => self.show_error(e.to_string()),
        }
    }

    pub(super) fn undo_trash(&mut self) {
        let ids = std::mem::take(&mut self.rt.pictures.last_trashed);
        if ids.is_empty() {
            return;
        }
        let p = &mut self.rt.pictures;
        let Some(g) = p.gallery.as_mut() else { return };
        match g.restore(&ids) {
            Ok(()) => {
                p.mark_stale();
                self.show_info(format!("Brought back {} picture(s).", ids.len()));
            }
            Err(e) => self.show_error(e.to_string()),
        }
    }

    pub(super) fn reuse_record(&mut self, id: i64) {
        let Some(record) = self
            .rt
            .pictures
            .gallery
            .as_ref()
            .and_then(|g| g.get(id).ok())
        else {
            return;
        };
        let m = &record.meta;
        let model = m.model_name.as_deref().and_then(|name| {
            self.rt
                .library
                .models
                .iter()
                .find(|x| x.name == name || x.display_name() == name)
                .map(|x| x.dir.clone())
        });
        let current = self.state.prompt.to_request(Path::new(""));
        let request = crate::engine::GenerationRequest {
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
            sampler: m
                .sampler
                .as_deref()
                .and_then(crate::gallery::metadata::sampler_from_label)
                .unwrap_or(current.sampler),
            strength_0_to_1: m.strength.unwrap_or(current.strength_0_to_1),
            ..current
        };
        self.state.prompt.reuse(&request);
        let note = match (&model, &m.model_name) {
            (Some(dir), _) => {
                self.state.selected_model = Some(dir.clone());
                String::new()
            }
            (None, Some(name)) => format!(" (its model “{name}” is not installed)"),
            (None, None) => String::new(),
        };
        self.show_info(format!(
            "Settings of picture #{id} are in the prompt panel{note}."
        ));
    }

    /// Puts a gallery picture behind the sketch; generations from the sketch record it as
    /// their parent.
    pub(super) fn use_as_init(&mut self, id: i64) {
        let Some(g) = self.rt.pictures.gallery.as_ref() else {
            return;
        };
        let loaded = g.get(id).and_then(|r| {
            let img = g.load(&r)?;
            Ok((r, img))
        });
        match loaded {
            Ok((r, img)) => {
                let rgba = image::DynamicImage::ImageRgb8(img).to_rgba8();
                self.use_background(super::files::LoadedImage {
                    name: format!("picture #{id}"),
                    image: rgba,
                });
                self.rt.sketch_parent = Some(r.meta.uid);
            }
            Err(e) => self.show_error(e.to_string()),
        }
    }

    pub(super) fn copy_image(&mut self, id: i64) {
        let Some(g) = self.rt.pictures.gallery.as_ref() else {
            return;
        };
        match g.get(id).and_then(|r| g.load(&r)) {
            Ok(img) => {
                self.rt.ctx.copy_image(egui::ColorImage::from_rgb(
                    [img.width() as usize, img.height() as usize],
                    img.as_raw(),
                ));
                self.show_info(format!("Picture #{id} is on the clipboard."));
            }
            Err(e) => self.show_error(e.to_string()),
        }
    }

    /// Asks for a folder, then exports the selection there with the export window's choices.
    pub(super) fn export_selected(&mut self) {
        let p = &self.rt.pictures;
        let Some(g) = p.gallery.as_ref() else { return };
        let records: Vec<ImageRecord> =
            p.selected.iter().filter_map(|&id| g.get(id).ok()).collect();
        if records.is_empty() {
            return;
        }
        let root = g.root().to_path_buf();
        self.rt
            .pictures
            .tasks
            .push(Task::spawn("export", &self.rt.ctx, move || {
                let Some(dir) = rfd::FileDialog::new()
                    .set_title("Export pictures to folder")
                    .pick_folder()
                else {
                    return PicturesOutcome::Exported(
                        Err("Not exported: no folder chosen.".into()),
                    );
                };
                let opts = ExportOptions {
                    format: ExportFormat::Png,
                    ..Default::default()
                };
                let result = export_records(
                    &records,
                    &dir,
                    &opts,
                    &mut |r| load_adjusted(&root, r),
                    &mut |_, _| {},
                );
                PicturesOutcome::Exported(
                    result
                        .map(|w| (w.len(), dir))
                        .map_err(|e| format!("Export failed: {e}")),
                )
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
}
