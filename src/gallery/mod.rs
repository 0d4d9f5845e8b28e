//! The gallery: every finished picture as a durable file under the data directory plus a row
//! in the SQLite catalog, with its settings embedded in the file so the catalog can always be
//! rebuilt from the images themselves.
//!
//! Write order for a new picture (see [`Gallery::save_image`]): encode the PNG with its
//! metadata, write it to a hidden temp file in the destination folder, fsync it, rename it into
//! place, fsync the folder, and only then commit the catalog row. A crash at any point leaves
//! either nothing visible or a complete file; on the next open, complete files without a row
//! are adopted back from their embedded metadata and stray temp files are removed
//! ([`Gallery::open`] → reconcile). A damaged catalog is moved aside and rebuilt the same way.
//!
//! One process at a time writes: the first to open takes an exclusive lock on
//! `catalog.lock`; others open the catalog read-only and say so.
//!
//! Layout of the data directory: `catalog.db` (+ WAL), `images/YYYY-MM/<uid>.png`,
//! `trash/<uid>.png`, `thumbs/<uid>.png`.

pub mod catalog;
pub mod export;
pub mod jobs;
pub mod metadata;
pub mod thumbs;
pub mod worker;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use catalog::{Catalog, ImageRecord, Query, Sort};
pub use jobs::{job_ref, StoredJob};
pub use metadata::ImageMeta;

/// Errors of the gallery. Every one names what failed; none loses the image in memory.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the disk is full; the image is still open and can be saved elsewhere")]
    DiskFull { path: PathBuf },
    #[error("gallery catalog: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("the gallery is open read-only (another Atelier is using it)")]
    ReadOnly,
    #[error("no image {0} in the gallery")]
    NotFound(i64),
    #[error("{path}: {reason}")]
    BadImage { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, GalleryError>;

/// Imported pictures larger than this on their long side are scaled down to it.
pub const MAX_GALLERY_SIDE: u32 = 8192;

fn io_error(path: &Path, source: std::io::Error) -> GalleryError {
    // ENOSPC / EDQUOT: worth its own message.
    if matches!(source.raw_os_error(), Some(28) | Some(122))
        || source.kind() == std::io::ErrorKind::StorageFull
    {
        GalleryError::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        GalleryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A Unix time as `YYYY-MM-DD HH:MM` (UTC).
pub fn format_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs / 60 % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A fresh random identity (128 bits as hex).
pub fn new_uid() -> String {
    use rand::Rng;
    let v: u128 = rand::rng().random();
    format!("{v:032x}")
}

/// Tests stop a child process at these points (environment `ATELIER_CRASH_POINT`): the
/// process prints `ATELIER_CRASH_POINT <name>` to stderr and waits to be killed.
pub fn crash_point(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("ATELIER_CRASH_POINT").ok());
    if point.as_deref() == Some(name) {
        eprintln!("ATELIER_CRASH_POINT {name}");
        let _ = std::io::stderr().flush();
        std::thread::sleep(std::time::Duration::from_secs(600));
        std::process::abort();
    }
}

/// Writes `bytes` to `path` durably (see [`crate::fsio`]), with a test crash point halfway.
/// Never leaves a partial file under `path`'s name.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsio::write_file_with_hook(path, bytes, crate::fsio::Durability::Durable, &|| {
        crash_point("mid-file")
    })
    .map_err(|e| io_error(&e.path, e.source))
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.')
        && [".png", ".jpg", ".jpeg", ".webp"]
            .iter()
            .any(|e| lower.ends_with(e))
}

/// Files under `dir` (recursively), relative to `root`, with `/` separators.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>, temps: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if ft.is_dir() {
            walk(root, &path, out, temps);
        } else if ft.is_file() {
            if crate::fsio::is_temp_name(&name) {
                temps.push(path);
            } else if is_image_name(&name) {
                if let Ok(rel) = path.strip_prefix(root) {
                    let rel: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push(rel.join("/"));
                }
            }
        }
    }
}

/// What opening the gallery found and did, for the user.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    pub read_only: bool,
    pub rebuilt: bool,
    /// Files found without a catalog row and added back.
    pub adopted: usize,
    /// Rows whose file had vanished, removed from the catalog.
    pub missing_removed: usize,
    /// Unfinished temp files removed.
    pub temp_removed: usize,
    /// Files that could not be read (moved to `damaged/`).
    pub damaged: Vec<String>,
    pub messages: Vec<String>,
}

/// The gallery of one data directory.
pub struct Gallery {
    root: PathBuf,
    catalog: Catalog,
    /// Held for as long as this process may write.
    _lock: Option<File>,
    pub report: OpenReport,
}

impl Gallery {
    /// The gallery of `atelier::paths::data_dir()`.
    pub fn open_default() -> Result<Self> {
        Self::open(&crate::paths::data_dir())
    }

    /// Opens (creating) the gallery in `root`, read-write if no other process holds it, else
    /// read-only. Reconciles files and rows; rebuilds a damaged catalog from the images.
    pub fn open(root: &Path) -> Result<Self> {
        Self::open_with_wait(root, std::time::Duration::ZERO)
    }

    /// Like [`Gallery::open`], waiting up to `wait` for another process to let go first.
    pub fn open_with_wait(root: &Path, wait: std::time::Duration) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
        let lock_path = root.join("catalog.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        let deadline = std::time::Instant::now() + wait;
        let locked = loop {
            match lock.try_lock() {
                Ok(()) => break true,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= deadline {
                        break false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path, e)),
            }
        };
        let db = root.join("catalog.db");
        if !locked {
            let catalog = Catalog::open_read_only(&db)?;
            return Ok(Self {
                root: root.to_path_buf(),
                catalog,
                _lock: None,
                report: OpenReport {
                    read_only: true,
                    messages: vec!["another Atelier is using this gallery: opened read-only".into()],
                    ..Default::default()
                },
            });
        }
        let mut report = OpenReport::default();
        let catalog = match Catalog::open(&db) {
            Ok(c) => c,
            Err(e) if db.exists() => {
                let aside = root.join(format!("catalog.db.damaged-{}", now()));
                for suffix in ["", "-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", db.display()));
                    if from.exists() {
                        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                        std::fs::rename(&from, &to).map_err(|e| io_error(&from, e))?;
                    }
                }
                report.rebuilt = true;
                report.messages.push(format!(
                    "the gallery catalog could not be read ({e}); it was moved to {} and rebuilt from the images' embedded settings",
                    aside.display()
                ));
                Catalog::open(&db)?
            }
            Err(e) => return Err(e.into()),
        };
        let mut gallery = Self {
            root: root.to_path_buf(),
            catalog,
            _lock: Some(lock),
            report,
        };
        gallery.reconcile()?;
        Ok(gallery)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn is_read_only(&self) -> bool {
        self.catalog.is_read_only()
    }

    fn writable(&self) -> Result<()> {
        if self.is_read_only() {
            Err(GalleryError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// The absolute path of a record's file.
    pub fn path_of(&self, record: &ImageRecord) -> PathBuf {
        self.root.join(&record.file)
    }

    /// Brings rows and files back in line: temp files removed, orphans adopted from their
    /// embedded metadata, rows of vanished files removed.
    fn reconcile(&mut self) -> Result<()> {
        let mut files = Vec::new();
        let mut temps = Vec::new();
        for top in ["images", "trash"] {
            walk(&self.root, &self.root.join(top), &mut files, &mut temps);
        }
        for t in temps {
            if std::fs::remove_file(&t).is_ok() {
                self.report.temp_removed += 1;
            }
        }
        let rows = self.catalog.all_files()?;
        let known: std::collections::HashSet<&str> =
            rows.iter().map(|(_, f, _)| f.as_str()).collect();
        let on_disk: std::collections::HashSet<&str> = files.iter().map(String::as_str).collect();
        let mut adopt = Vec::new();
        for file in &files {
            if known.contains(file.as_str()) {
                continue;
            }
            let path = self.root.join(file);
            match read_meta_of_file(&path) {
                Ok(mut meta) => {
                    if meta.uid.is_empty() || self.catalog.by_uid(&meta.uid)?.is_some() {
                        meta.uid = new_uid();
                    }
                    adopt.push((file.clone(), meta));
                }
                Err(reason) => {
                    let damaged = self.root.join("damaged");
                    let _ = std::fs::create_dir_all(&damaged);
                    let name = path.file_name().unwrap_or_default();
                    let _ = std::fs::rename(&path, damaged.join(name));
                    self.report.damaged.push(format!("{file}: {reason}"));
                }
            }
        }
        // The same uid twice among the orphans themselves (copied files).
        let mut seen = std::collections::HashSet::new();
        for (_, meta) in adopt.iter_mut() {
            if !seen.insert(meta.uid.clone()) {
                meta.uid = new_uid();
            }
        }
        let ids = self.catalog.insert_many(&adopt)?;
        for ((file, _), id) in adopt.iter().zip(&ids) {
            if file.starts_with("trash/") {
                self.catalog.set_trashed(*id, Some(now()), file)?;
            }
        }
        self.report.adopted = ids.len();
        for (id, file, _) in &rows {
            if !on_disk.contains(file.as_str()) {
                self.catalog.delete(*id)?;
                self.report.missing_removed += 1;
            }
        }
        if self.report.adopted > 0 && !self.report.rebuilt {
            self.report.messages.push(format!(
                "{} picture(s) found without a catalog entry were added back from their embedded settings",
                self.report.adopted
            ));
        }
        if self.report.rebuilt {
            self.report
                .messages
                .push(format!("{} picture(s) recovered", self.report.adopted));
        }
        if self.report.missing_removed > 0 {
            self.report.messages.push(format!(
                "{} catalog entr(ies) pointed at files that no longer exist and were removed",
                self.report.missing_removed
            ));
        }
        for d in &self.report.damaged {
            self.report
                .messages
                .push(format!("unreadable file moved to damaged/: {d}"));
        }
        Ok(())
    }

    /// Saves a new picture: durable PNG with embedded settings first, then the catalog row.
    /// `meta.uid` and `meta.created` are filled in when empty.
    pub fn save_image(&mut self, image: &image::RgbImage, meta: ImageMeta) -> Result<ImageRecord> {
        self.save_image_with_controls(image, meta, &[])
    }

    /// [`Gallery::save_image`] for a picture steered by `controls` (its control images, in
    /// ControlNet order): they are written first, as greyscale PNGs in `controls/`, and
    /// named in `meta.control_images`, so "reuse settings" can bring the sketch back.
    pub fn save_image_with_controls(
        &mut self,
        image: &image::RgbImage,
        mut meta: ImageMeta,
        controls: &[std::sync::Arc<image::RgbImage>],
    ) -> Result<ImageRecord> {
        self.writable()?;
        if meta.uid.is_empty() {
            meta.uid = new_uid();
        }
        meta.control_images.clear();
        for (i, control) in controls.iter().enumerate() {
            let file = format!("{CONTROLS_DIR}/{}.{i}.png", meta.uid);
            let gray = image::DynamicImage::ImageRgb8(control.as_ref().clone()).to_luma8();
            let mut png = Vec::new();
            gray.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| GalleryError::BadImage {
                    path: PathBuf::from(&file),
                    reason: e.to_string(),
                })?;
            let path = self.root.join(&file);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            }
            write_durable(&path, &png)?;
            meta.control_images.push(file);
        }
        if meta.created == 0 {
            meta.created = now();
        }
        meta.width = image.width();
        meta.height = image.height();
        if meta.generator.is_none() {
            meta.generator = Some(metadata::generator_name());
        }
        let bytes =
            metadata::encode_png(image, &metadata::png_chunks(&meta)).map_err(|reason| {
                GalleryError::BadImage {
                    path: PathBuf::from(&meta.uid),
                    reason,
                }
            })?;
        crash_point("after-encode");
        let file = image_file_name(&meta);
        let path = self.root.join(&file);
        write_durable(&path, &bytes)?;
        crash_point("between-file-and-row");
        let id = self
            .catalog
            .insert(&file, &meta, &|| crash_point("mid-commit"))?;
        self.catalog.get(id)?.ok_or(GalleryError::NotFound(id))
    }

    /// Imports a picture file made by any tool: copied into the gallery (the original is
    /// left alone) with its embedded settings read where present.
    pub fn import_file(&mut self, path: &Path) -> Result<ImageRecord> {
        self.writable()?;
        let bytes = read_bounded(path)?;
        let image = crate::imageio::load_image_file(path).map_err(|e| GalleryError::BadImage {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let embedded = metadata::read_embedded(&bytes);
        let mut meta = embedded.meta().unwrap_or_default();
        if meta.uid.is_empty() || self.catalog.by_uid(&meta.uid)?.is_some() {
            meta.uid = new_uid();
        }
        if meta.created == 0 {
            meta.created = file_time(path).unwrap_or_else(now);
        }
        meta.extra
            .entry("Imported from".into())
            .or_insert_with(|| path.display().to_string());
        let mut rgb = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        if w.max(h) > MAX_GALLERY_SIDE {
            let scale = MAX_GALLERY_SIDE as f64 / w.max(h) as f64;
            let (nw, nh) = (
                ((w as f64 * scale).round() as u32).max(1),
                ((h as f64 * scale).round() as u32).max(1),
            );
            rgb = image::imageops::resize(&rgb, nw, nh, image::imageops::FilterType::Triangle);
            meta.extra
                .insert("Downscaled from".into(), format!("{w}x{h}"));
        }
        self.save_image(&rgb, meta)
    }

    /// Imports image bytes that have no file (clipboard paste).
    pub fn import_image(&mut self, image: &image::RgbImage, source: &str) -> Result<ImageRecord> {
        let mut meta = ImageMeta::default();
        meta.extra.insert("Imported from".into(), source.into());
        self.save_image(image, meta)
    }

    /// Loads a record's picture.
    pub fn load(&self, record: &ImageRecord) -> Result<image::RgbImage> {
        let path = self.path_of(record);
        crate::imageio::load_image_file(&path)
            .map(|i| i.to_rgb8())
            .map_err(|e| GalleryError::BadImage {
                path,
                reason: e.to_string(),
            })
    }

    pub fn get(&self, id: i64) -> Result<ImageRecord> {
        self.catalog.get(id)?.ok_or(GalleryError::NotFound(id))
    }

    /// Moves pictures to the trash (file to `trash/`, row flagged): undo with [`Self::restore`].
    pub fn trash(&mut self, ids: &[i64]) -> Result<()> {
        self.writable()?;
        for &id in ids {
            let r = self.get(id)?;
            if r.trashed.is_some() {
                continue;
            }
            let name = Path::new(&r.file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{}.png", r.meta.uid));
            let to_rel = format!("trash/{name}");
            let to = self.root.join(&to_rel);
            std::fs::create_dir_all(self.root.join("trash"))
                .map_err(|e| io_error(&self.root, e))?;
            std::fs::rename(self.path_of(&r), &to).map_err(|e| io_error(&to, e))?;
            self.catalog.set_trashed(id, Some(now()), &to_rel)?;
        }
        Ok(())
    }

    /// Brings pictures back from the trash to where new pictures of their date go.
    pub fn restore(&mut self, ids: &[i64]) -> Result<()> {
        self.writable()?;
        for &id in ids {
            let r = self.get(id)?;
            if r.trashed.is_none() {
                continue;
            }
            let to_rel = image_file_name(&r.meta);
            let to = self.root.join(&to_rel);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            }
            std::fs::rename(self.path_of(&r), &to).map_err(|e| io_error(&to, e))?;
            self.catalog.set_trashed(id, None, &to_rel)?;
        }
        Ok(())
    }

    /// Deletes everything in the trash for good.
    pub fn empty_trash(&mut self) -> Result<usize> {
        self.writable()?;
        let q = Query {
            trash: true,
            ..Default::default()
        };
        let ids = self.catalog.ids(&q, 0, usize::MAX >> 1)?;
        for &id in &ids {
            let r = self.get(id)?;
            let _ = std::fs::remove_file(self.path_of(&r));
            let _ = std::fs::remove_file(thumbs::thumb_path(&self.root, &r.meta.uid));
            for file in &r.meta.control_images {
                if file.starts_with(CONTROLS_DIR) && !file.contains("..") {
                    let _ = std::fs::remove_file(self.root.join(file));
                }
            }
            self.catalog.delete(id)?;
        }
        Ok(ids.len())
    }

    /// Rates 0-5, in the row and the file's embedded settings.
    pub fn set_rating(&self, id: i64, rating: u8) -> Result<()> {
        self.writable()?;
        self.catalog.set_rating(id, rating)?;
        self.rewrite_embedded(id)
    }

    /// Marks or unmarks a favourite, in the row and the file's embedded settings.
    pub fn set_favourite(&self, id: i64, favourite: bool) -> Result<()> {
        self.writable()?;
        self.catalog.set_favourite(id, favourite)?;
        self.rewrite_embedded(id)
    }

    /// Replaces a picture's tags (trimmed, empty ones dropped).
    pub fn set_tags(&self, id: i64, tags: &[String]) -> Result<()> {
        self.writable()?;
        let tags: Vec<String> = tags
            .iter()
            .map(|t| t.trim().replace(',', " "))
            .filter(|t| !t.is_empty())
            .collect();
        self.catalog.set_tags(id, &tags)?;
        self.rewrite_embedded(id)
    }

    /// Stores the adjustment stack with the row and in the file's embedded settings (the
    /// pixels are never touched), so a rebuilt catalog keeps it.
    pub fn set_adjustments(&self, id: i64, stack_json: Option<&str>) -> Result<()> {
        self.writable()?;
        self.catalog.set_adjustments(id, stack_json)?;
        self.rewrite_embedded(id)
    }

    /// Rewrites a picture's embedded settings from its row (text chunks only, durably).
    /// Files that are not PNG keep their old settings; the row is what counts.
    fn rewrite_embedded(&self, id: i64) -> Result<()> {
        let r = self.get(id)?;
        let path = self.path_of(&r);
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        if let Some(updated) = metadata::replace_png_text(&bytes, &metadata::png_chunks(&r.meta)) {
            write_durable(&path, &updated)?;
        }
        Ok(())
    }

    /// The picture this one was made from, if it is in the gallery.
    pub fn parent_of(&self, record: &ImageRecord) -> Result<Option<ImageRecord>> {
        match &record.meta.parent {
            Some(uid) => Ok(self.catalog.by_uid(uid)?),
            None => Ok(None),
        }
    }
}

/// Saves a picture's file (durably, settings embedded) into `root`'s images folder without
/// touching the catalog: for when another process holds it. The next read-write open adopts
/// the file from its embedded settings.
pub fn save_file_only(
    root: &Path,
    image: &image::RgbImage,
    mut meta: ImageMeta,
) -> Result<PathBuf> {
    if meta.uid.is_empty() {
        meta.uid = new_uid();
    }
    if meta.created == 0 {
        meta.created = now();
    }
    meta.width = image.width();
    meta.height = image.height();
    let bytes = metadata::encode_png(image, &metadata::png_chunks(&meta)).map_err(|reason| {
        GalleryError::BadImage {
            path: PathBuf::from(&meta.uid),
            reason,
        }
    })?;
    let path = root.join(image_file_name(&meta));
    write_durable(&path, &bytes)?;
    Ok(path)
}

/// `images/YYYY-MM/<uid>.png`.
/// Where the control images of the pictures are kept, under the gallery root (outside
/// `images/`, so they are never taken for pictures).
pub const CONTROLS_DIR: &str = "controls";

fn image_file_name(meta: &ImageMeta) -> String {
    let (y, m, _) = civil_from_days(meta.created.div_euclid(86_400));
    format!("images/{y:04}-{m:02}/{}.png", meta.uid)
}

fn file_time(path: &Path) -> Option<i64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// Reads a file of at most 256 MiB (an image file bigger than that is refused).
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .len();
    if len > 256 << 20 {
        return Err(GalleryError::BadImage {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is too large for an image"),
        });
    }
    std::fs::read(path).map_err(|e| io_error(path, e))
}

/// The settings another tool (or Atelier) embedded in an image file, if any; the file is
/// read with the same size bound as every picture.
pub fn embedded_meta_of_file(path: &Path) -> Result<Option<ImageMeta>> {
    let bytes = read_bounded(path)?;
    Ok(metadata::read_embedded(&bytes).meta())
}

/// The settings embedded in an image file, or the reason it is unusable. A file without
/// settings still yields its size.
pub fn read_meta_of_file(path: &Path) -> std::result::Result<ImageMeta, String> {
    let bytes = read_bounded(path).map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    // A complete file decodes; a truncated one does not (checked on the pixels). The size is
    // the picture's as shown (EXIF orientation applied).
    let decoded = crate::imageio::load_image_bytes(&bytes, path).map_err(|e| e.to_string())?;
    let (w, h) = (decoded.width(), decoded.height());
    let mut meta = metadata::read_embedded(&bytes).meta().unwrap_or_default();
    meta.width = w;
    meta.height = h;
    if meta.created == 0 {
        meta.created = file_time(path).unwrap_or_else(now);
    }
    Ok(meta)
}

/// The settings of one generated image as gallery metadata (without the model hash: see
/// [`model_fingerprint`], which reads the model's files and so runs where the saving does).
pub fn meta_from_generation(
    image: &crate::generation::GeneratedImage,
    model_name: Option<String>,
) -> ImageMeta {
    let r = &image.request;
    let has_init = r.init_image.is_some();
    ImageMeta {
        prompt: r.prompt.clone(),
        negative_prompt: r.negative_prompt.clone(),
        seed: Some(r.seed),
        steps: Some(r.steps as u32),
        sampler: Some(metadata::a1111_sampler_label(r.sampler).to_string()),
        guidance: Some(r.guidance),
        clip_skip: (r.clip_skip > 1).then_some(r.clip_skip),
        width: image.image.width(),
        height: image.image.height(),
        model_name: model_name.or_else(|| {
            r.model_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        }),
        // Filled in by whoever saves it (`model_fingerprint` reads the model's files).
        model_hash: None,
        strength: has_init.then_some(r.strength_0_to_1),
        lineage: if r.mask.is_some() {
            Some(metadata::Lineage::Inpaint)
        } else if has_init {
            Some(metadata::Lineage::Img2Img)
        } else {
            None
        },
        generator: Some(metadata::generator_name()),
        ..Default::default()
    }
}

/// The metadata a job's picture is saved with: its own settings ([`meta_from_generation`]),
/// where the job came from (`template`: model name and hash, init image and mask references,
/// parent picture, values such as A1111's `Lora hashes` in `extra`) and, for a recorded job,
/// which job and image it is.
pub fn meta_of_result(
    image: &crate::generation::GeneratedImage,
    template: &ImageMeta,
    job_uid: Option<&str>,
) -> ImageMeta {
    let mut meta = meta_from_generation(image, template.model_name.clone());
    if template.init_image.is_some() {
        meta.init_image = template.init_image.clone();
    }
    if template.mask_image.is_some() {
        meta.mask_image = template.mask_image.clone();
    }
    meta.parent = template.parent.clone();
    meta.model_hash = template.model_hash.clone();
    meta.extra.extend(template.extra.clone());
    meta.job = job_uid.map(|uid| job_ref(uid, image.index));
    meta
}

/// A short, stable fingerprint of a model folder (10 hex digits, like A1111's model hash):
/// SHA-256 over its config files and the size and first MiB of each weight file. Cached.
pub fn model_fingerprint(dir: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
    if let Some(h) = CACHE
        .lock()
        .ok()
        .and_then(|c| c.as_ref().and_then(|m| m.get(dir).cloned()))
    {
        return Some(h);
    }
    let mut files = Vec::new();
    let mut temps = Vec::new();
    fn all(dir: &Path, out: &mut Vec<PathBuf>, depth: u32, _t: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 2 {
                all(&p, out, depth + 1, _t);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    all(dir, &mut files, 0, &mut temps);
    files.sort();
    let mut hasher = Sha256::new();
    let mut any = false;
    for f in &files {
        let name = f
            .strip_prefix(dir)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        let is_config = name.ends_with(".json");
        let is_weights = name.ends_with(".safetensors") || name.ends_with(".bin");
        if !is_config && !is_weights {
            continue;
        }
        any = true;
        hasher.update(name.as_bytes());
        if is_config {
            hasher.update(std::fs::read(f).unwrap_or_default());
        } else if let Ok(mut fh) = File::open(f) {
            use std::io::Read;
            let len = fh.metadata().map(|m| m.len()).unwrap_or(0);
            hasher.update(len.to_le_bytes());
            let mut buf = vec![0u8; 1 << 20];
            let n = fh.read(&mut buf).unwrap_or(0);
            hasher.update(&buf[..n]);
        }
    }
    if !any {
        return None;
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    if let Ok(mut c) = CACHE.lock() {
        c.get_or_insert_with(HashMap::new)
            .insert(dir.to_path_buf(), hex.clone());
    }
    Some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(format_time(1_795_000_000), "2026-11-18 11:06");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
