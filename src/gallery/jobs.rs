//! Queued jobs that survive a crash. A job is written to the catalog before it runs: its
//! request (JSON), the metadata its pictures start from, and its init image and mask as PNG
//! files under `jobs/`. Each picture it makes is saved with `ImageMeta::job` =
//! `<job uid>/<image index>`, so which of its pictures exist is read from the pictures
//! themselves (a picture adopted after a crash counts too). When the job ends (done,
//! cancelled, failed) its row and files go; what is left after a crash is the unfinished
//! queue, which the studio and `atelier queue` offer to resume or discard.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::catalog::JobRow;
use super::{io_error, new_uid, now, write_durable, Gallery, GalleryError, ImageMeta, Result};
use crate::generation::GenerationRequest;

/// One recorded job.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredJob {
    pub uid: String,
    pub created: i64,
    /// Without its init image and mask (see [`Gallery::load_job`]).
    pub request: GenerationRequest,
    /// What its pictures' metadata starts from (lineage, model name).
    pub meta: ImageMeta,
    pub has_init_image: bool,
    pub has_mask: bool,
    /// Image indices already saved in the gallery.
    pub done: BTreeSet<u32>,
}

impl StoredJob {
    /// Pictures still to make.
    pub fn remaining(&self) -> u32 {
        (0..self.request.batch)
            .filter(|i| !self.done.contains(i))
            .count() as u32
    }
}

/// `<job uid>/<index>`: what a picture records of the job that made it.
pub fn job_ref(uid: &str, index: u32) -> String {
    format!("{uid}/{index}")
}

fn bad_job(uid: &str, reason: String) -> GalleryError {
    GalleryError::BadImage {
        path: Path::new("jobs").join(uid),
        reason,
    }
}

impl Gallery {
    /// Records a job before it runs; its init image and mask are written (durably) under
    /// `jobs/` first. Returns it with its new uid.
    pub fn add_job(&mut self, request: &GenerationRequest, meta: &ImageMeta) -> Result<StoredJob> {
        self.writable()?;
        let uid = new_uid();
        let dir = self.root.join("jobs");
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let mut init_file = None;
        if let Some(init) = &request.init_image {
            let rel = format!("jobs/{uid}-init.png");
            let bytes =
                super::metadata::encode_png(init, &[]).map_err(|reason| bad_job(&uid, reason))?;
            write_durable(&self.root.join(&rel), &bytes)?;
            init_file = Some(rel);
        }
        let mut mask_file = None;
        if let Some(mask) = &request.mask {
            let rel = format!("jobs/{uid}-mask.png");
            let mut bytes = Vec::new();
            mask.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| bad_job(&uid, e.to_string()))?;
            write_durable(&self.root.join(&rel), &bytes)?;
            mask_file = Some(rel);
        }
        let row = JobRow {
            uid: uid.clone(),
            created: now(),
            request: serde_json::to_string(request).map_err(|e| bad_job(&uid, e.to_string()))?,
            meta: serde_json::to_string(meta).map_err(|e| bad_job(&uid, e.to_string()))?,
            init_file,
            mask_file,
        };
        self.catalog.insert_job(&row)?;
        self.stored_job(row)
    }

    fn stored_job(&self, row: JobRow) -> Result<StoredJob> {
        let request: GenerationRequest = serde_json::from_str(&row.request)
            .map_err(|e| bad_job(&row.uid, format!("unreadable request: {e}")))?;
        let meta: ImageMeta = serde_json::from_str(&row.meta)
            .map_err(|e| bad_job(&row.uid, format!("unreadable metadata: {e}")))?;
        let done = self.catalog.job_images(&row.uid)?.into_iter().collect();
        Ok(StoredJob {
            uid: row.uid,
            created: row.created,
            request,
            meta,
            has_init_image: row.init_file.is_some(),
            has_mask: row.mask_file.is_some(),
            done,
        })
    }

    /// Every job recorded and not finished: after a crash, the queue that was interrupted.
    /// A row that cannot be read is reported as such, not skipped silently.
    pub fn unfinished_jobs(&self) -> Result<Vec<StoredJob>> {
        self.catalog
            .jobs()?
            .into_iter()
            .map(|row| self.stored_job(row))
            .collect()
    }

    /// One job, ready to run: its request with the init image and mask read back.
    pub fn load_job(&self, uid: &str) -> Result<(StoredJob, GenerationRequest)> {
        let row = self
            .catalog
            .jobs()?
            .into_iter()
            .find(|r| r.uid == uid)
            .ok_or_else(|| bad_job(uid, "no such unfinished job".into()))?;
        let (init_file, mask_file) = (row.init_file.clone(), row.mask_file.clone());
        let job = self.stored_job(row)?;
        let mut request = job.request.clone();
        if let Some(rel) = init_file {
            let path = self.root.join(rel);
            let img =
                crate::imageio::load_image_file(&path).map_err(|e| bad_job(uid, e.to_string()))?;
            request.init_image = Some(Arc::new(img.to_rgb8()));
        }
        if let Some(rel) = mask_file {
            let path = self.root.join(rel);
            let img =
                crate::imageio::load_image_file(&path).map_err(|e| bad_job(uid, e.to_string()))?;
            request.mask = Some(Arc::new(img.to_luma8()));
        }
        Ok((job, request))
    }

    /// Forgets a job (done, cancelled, failed or discarded): its row, then its files.
    pub fn finish_job(&mut self, uid: &str) -> Result<()> {
        self.writable()?;
        self.catalog.delete_job(uid)?;
        for suffix in ["init", "mask"] {
            let path = self.root.join(format!("jobs/{uid}-{suffix}.png"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_round_trips_with_its_images_and_knows_its_saved_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Gallery::open(dir.path()).unwrap();
        let init = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 9, y as u8, 3]));
        let mask = image::GrayImage::from_fn(16, 8, |x, _| image::Luma([(x * 16) as u8]));
        let request = GenerationRequest {
            prompt: "a kite".into(),
            seed: 9,
            batch: 3,
            width: 16,
            height: 8,
            init_image: Some(Arc::new(init.clone())),
            mask: Some(Arc::new(mask.clone())),
            ..Default::default()
        };
        let meta = ImageMeta {
            lineage: Some(super::super::metadata::Lineage::Inpaint),
            ..Default::default()
        };
        let job = g.add_job(&request, &meta).unwrap();
        assert_eq!(job.remaining(), 3);
        assert!(job.has_init_image && job.has_mask);
        // Image 1 is saved: the job knows.
        let saved = ImageMeta {
            job: Some(job_ref(&job.uid, 1)),
            ..Default::default()
        };
        g.save_image(&init, saved).unwrap();
        let (again, loaded) = g.load_job(&job.uid).unwrap();
        assert_eq!(again.done, BTreeSet::from([1]));
        assert_eq!(again.remaining(), 2);
        assert_eq!(again.meta, meta);
        assert_eq!(loaded.init_image.as_deref(), Some(&init));
        assert_eq!(loaded.mask.as_deref(), Some(&mask));
        assert_eq!(
            GenerationRequest {
                init_image: None,
                mask: None,
                ..loaded
            },
            GenerationRequest {
                init_image: None,
                mask: None,
                ..request
            }
        );
        assert_eq!(g.unfinished_jobs().unwrap().len(), 1);
        g.finish_job(&job.uid).unwrap();
        assert!(g.unfinished_jobs().unwrap().is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("jobs"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_schema_1_catalog_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("catalog.db");
        {
            let conn = rusqlite::Connection::open(&db).unwrap();
            // The images table as schema 1 made it, with one row.
            conn.execute_batch(
                "CREATE TABLE images (id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE,
                 file TEXT NOT NULL UNIQUE, created INTEGER NOT NULL, modified INTEGER NOT NULL,
                 prompt TEXT NOT NULL DEFAULT '', negative TEXT NOT NULL DEFAULT '', seed INTEGER,
                 steps INTEGER, sampler TEXT, guidance REAL, width INTEGER NOT NULL,
                 height INTEGER NOT NULL, model_name TEXT, model_hash TEXT, strength REAL,
                 init_ref TEXT, mask_ref TEXT, adjustments TEXT,
                 rating INTEGER NOT NULL DEFAULT 0, favourite INTEGER NOT NULL DEFAULT 0,
                 tags TEXT NOT NULL DEFAULT '', parent_uid TEXT, lineage TEXT, generator TEXT,
                 extra TEXT NOT NULL DEFAULT '{}', trashed INTEGER);
                 INSERT INTO images (uid, file, created, modified, prompt, width, height)
                 VALUES ('u', 'images/x.png', 1, 1, 'an old picture', 8, 8);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let c = super::super::Catalog::open(&db).unwrap();
        let r = c.get(1).unwrap().unwrap();
        assert_eq!(
            (r.meta.prompt.as_str(), r.meta.job.as_deref()),
            ("an old picture", None)
        );
        assert!(c.jobs().unwrap().is_empty());
        let version: i64 = c
            .connection()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, super::super::catalog::SCHEMA_VERSION);
    }
}
