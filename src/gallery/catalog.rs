//! The catalog: one SQLite database (WAL, `synchronous=FULL`) with a row per picture and an
//! FTS5 index over prompts and tags. Plain SQL, no ORM; the schema version lives in
//! `PRAGMA user_version`.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::metadata::ImageMeta;

/// 1: images; 2: the `job` column of images and the `jobs` table (unfinished queue jobs);
/// 3: the `clip_skip` column; 4: the `controls` column (the control images, JSON).
pub const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    id          INTEGER PRIMARY KEY,
    uid         TEXT NOT NULL UNIQUE,
    file        TEXT NOT NULL UNIQUE,
    created     INTEGER NOT NULL,
    modified    INTEGER NOT NULL,
    prompt      TEXT NOT NULL DEFAULT '',
    negative    TEXT NOT NULL DEFAULT '',
    seed        INTEGER,
    steps       INTEGER,
    sampler     TEXT,
    guidance    REAL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    model_name  TEXT,
    model_hash  TEXT,
    strength    REAL,
    init_ref    TEXT,
    mask_ref    TEXT,
    adjustments TEXT,
    rating      INTEGER NOT NULL DEFAULT 0,
    favourite   INTEGER NOT NULL DEFAULT 0,
    tags        TEXT NOT NULL DEFAULT '',
    parent_uid  TEXT,
    lineage     TEXT,
    generator   TEXT,
    extra       TEXT NOT NULL DEFAULT '{}',
    trashed     INTEGER,
    job         TEXT,
    clip_skip   INTEGER,
    controls    TEXT
);
CREATE INDEX IF NOT EXISTS images_created ON images(created);
CREATE INDEX IF NOT EXISTS images_job ON images(job);
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    uid         TEXT NOT NULL UNIQUE,
    created     INTEGER NOT NULL,
    request     TEXT NOT NULL,
    meta        TEXT NOT NULL,
    init_file   TEXT,
    mask_file   TEXT
);
CREATE INDEX IF NOT EXISTS images_model ON images(model_name);
CREATE INDEX IF NOT EXISTS images_parent ON images(parent_uid);
CREATE VIRTUAL TABLE IF NOT EXISTS images_fts USING fts5(
    prompt, negative, tags, content='images', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS images_ai AFTER INSERT ON images BEGIN
    INSERT INTO images_fts(rowid, prompt, negative, tags)
    VALUES (new.id, new.prompt, new.negative, new.tags);
END;
CREATE TRIGGER IF NOT EXISTS images_ad AFTER DELETE ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt, negative, tags)
    VALUES ('delete', old.id, old.prompt, old.negative, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS images_au AFTER UPDATE OF prompt, negative, tags ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt, negative, tags)
    VALUES ('delete', old.id, old.prompt, old.negative, old.tags);
    INSERT INTO images_fts(rowid, prompt, negative, tags)
    VALUES (new.id, new.prompt, new.negative, new.tags);
END;
";

/// One catalog row.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRecord {
    pub id: i64,
    /// Relative to the data directory.
    pub file: String,
    pub meta: ImageMeta,
    pub modified: i64,
    /// 0 (unrated) to 5.
    pub rating: u8,
    pub favourite: bool,
    /// When it was moved to the trash.
    pub trashed: Option<i64>,
}

/// A queued job's row: what it asks for, as stored (see `gallery::jobs`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub uid: String,
    pub created: i64,
    /// The `GenerationRequest` as JSON (its init image and mask are the files below).
    pub request: String,
    /// The `ImageMeta` its pictures start from (lineage, model name), as JSON.
    pub meta: String,
    pub init_file: Option<String>,
    pub mask_file: Option<String>,
}

/// How results are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    NewestFirst,
    OldestFirst,
    RatingFirst,
    /// Best full-text match first (falls back to newest without a text query).
    Relevance,
}

/// A gallery filter. Empty = everything not in the trash.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Words searched in prompts, negative prompts and tags (prefix match, all must occur).
    pub text: Option<String>,
    pub model: Option<String>,
    pub favourite_only: bool,
    pub min_rating: u8,
    /// Created at or after / before (Unix seconds).
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub size: Option<(u32, u32)>,
    /// Show the trash instead of the library.
    pub trash: bool,
    pub sort: Sort,
}

/// The FTS5 expression for free text: every word as a quoted prefix term, AND-ed.
pub fn fts_expression(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '_' && c != '\'')
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

fn to_sql_seed(seed: Option<u64>) -> Option<i64> {
    // Bit-preserving: SQLite integers are signed.
    seed.map(|s| s as i64)
}

fn record_from_row(row: &Row) -> rusqlite::Result<ImageRecord> {
    let extra: String = row.get("extra")?;
    let adjustments: Option<String> = row.get("adjustments")?;
    let tags: String = row.get("tags")?;
    let rating = row.get::<_, i64>("rating")?.clamp(0, 5) as u8;
    let favourite = row.get::<_, i64>("favourite")? != 0;
    Ok(ImageRecord {
        id: row.get("id")?,
        file: row.get("file")?,
        modified: row.get("modified")?,
        rating,
        favourite,
        trashed: row.get("trashed")?,
        meta: ImageMeta {
            uid: row.get("uid")?,
            prompt: row.get("prompt")?,
            negative_prompt: row.get("negative")?,
            seed: row.get::<_, Option<i64>>("seed")?.map(|s| s as u64),
            steps: row.get::<_, Option<i64>>("steps")?.map(|s| s as u32),
            sampler: row.get("sampler")?,
            guidance: row.get::<_, Option<f64>>("guidance")?.map(|g| g as f32),
            clip_skip: row.get("clip_skip")?,
            width: row.get::<_, i64>("width")? as u32,
            height: row.get::<_, i64>("height")? as u32,
            model_name: row.get("model_name")?,
            model_hash: row.get("model_hash")?,
            strength: row.get::<_, Option<f64>>("strength")?.map(|g| g as f32),
            init_image: row.get::<_, Option<String>>("init_ref")?.map(Into::into),
            mask_image: row.get::<_, Option<String>>("mask_ref")?.map(Into::into),
            adjustments: adjustments.and_then(|a| serde_json::from_str(&a).ok()),
            parent: row.get("parent_uid")?,
            lineage: row.get::<_, Option<String>>("lineage")?.map(Into::into),
            generator: row.get("generator")?,
            created: row.get("created")?,
            tags: tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            extra: serde_json::from_str(&extra).unwrap_or_default(),
            rating,
            favourite,
            job: row.get("job")?,
            control_images: row
                .get::<_, Option<String>>("controls")?
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or_default(),
        },
    })
}

/// The SQLite connection with Atelier's schema.
pub struct Catalog {
    conn: Connection,
    read_only: bool,
}

impl Catalog {
    /// Opens (creating if needed) the catalog read-write: WAL, `synchronous=FULL`, schema
    /// checked by `PRAGMA quick_check` so a damaged file is reported, not half-used.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("integrity check: {check}")),
            ));
        }
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
                Some(format!(
                    "the catalog was written by a newer Atelier (schema {version}, this build reads {SCHEMA_VERSION})"
                )),
            ));
        }
        // Older tables are kept as they are and gain the columns they lack.
        if (1..2).contains(&version) {
            conn.execute_batch("ALTER TABLE images ADD COLUMN job TEXT;")?;
        }
        if (1..3).contains(&version) {
            conn.execute_batch("ALTER TABLE images ADD COLUMN clip_skip INTEGER;")?;
        }
        if (1..4).contains(&version) {
            conn.execute_batch("ALTER TABLE images ADD COLUMN controls TEXT;")?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self {
            conn,
            read_only: false,
        })
    }

    /// Opens an existing catalog for reading only (a second running instance).
    pub fn open_read_only(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            conn,
            read_only: true,
        })
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Inserts a row; `crash_hook` runs inside the transaction before COMMIT (tests use it to
    /// die mid-commit).
    pub fn insert(
        &mut self,
        file: &str,
        meta: &ImageMeta,
        crash_hook: &dyn Fn(),
    ) -> rusqlite::Result<i64> {
        let tx = self.conn.transaction()?;
        let id = insert_row(&tx, file, meta)?;
        crash_hook();
        tx.commit()?;
        Ok(id)
    }

    /// Inserts many rows in one transaction (rebuilds, imports, benchmarks).
    pub fn insert_many(&mut self, rows: &[(String, ImageMeta)]) -> rusqlite::Result<Vec<i64>> {
        let tx = self.conn.transaction()?;
        let mut ids = Vec::with_capacity(rows.len());
        for (file, meta) in rows {
            ids.push(insert_row(&tx, file, meta)?);
        }
        tx.commit()?;
        Ok(ids)
    }

    pub fn get(&self, id: i64) -> rusqlite::Result<Option<ImageRecord>> {
        self.conn
            .query_row("SELECT * FROM images WHERE id = ?1", [id], record_from_row)
            .optional()
    }

    pub fn by_uid(&self, uid: &str) -> rusqlite::Result<Option<ImageRecord>> {
        self.conn
            .query_row(
                "SELECT * FROM images WHERE uid = ?1",
                [uid],
                record_from_row,
            )
            .optional()
    }

    pub fn by_file(&self, file: &str) -> rusqlite::Result<Option<ImageRecord>> {
        self.conn
            .query_row(
                "SELECT * FROM images WHERE file = ?1",
                [file],
                record_from_row,
            )
            .optional()
    }

    /// Every (id, file) pair, trash included: for reconciling rows with files.
    pub fn all_files(&self) -> rusqlite::Result<Vec<(i64, String, Option<i64>)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, file, trashed FROM images ORDER BY id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    }

    fn where_clause(q: &Query) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value as V;
        let mut conds = vec![if q.trash {
            "trashed IS NOT NULL".to_string()
        } else {
            "trashed IS NULL".to_string()
        }];
        let mut args: Vec<V> = Vec::new();
        if let Some(expr) = q.text.as_deref().and_then(fts_expression) {
            conds.push("id IN (SELECT rowid FROM images_fts WHERE images_fts MATCH ?)".into());
            args.push(V::Text(expr));
        }
        if let Some(m) = &q.model {
            conds.push("model_name = ?".into());
            args.push(V::Text(m.clone()));
        }
        if q.favourite_only {
            conds.push("favourite = 1".into());
        }
        if q.min_rating > 0 {
            conds.push("rating >= ?".into());
            args.push(V::Integer(q.min_rating as i64));
        }
        if let Some(s) = q.since {
            conds.push("created >= ?".into());
            args.push(V::Integer(s));
        }
        if let Some(u) = q.until {
            conds.push("created < ?".into());
            args.push(V::Integer(u));
        }
        if let Some((w, h)) = q.size {
            conds.push("width = ? AND height = ?".into());
            args.push(V::Integer(w as i64));
            args.push(V::Integer(h as i64));
        }
        (conds.join(" AND "), args)
    }

    /// How many rows match.
    pub fn count(&self, q: &Query) -> rusqlite::Result<usize> {
        let (w, args) = Self::where_clause(q);
        self.conn.query_row(
            &format!("SELECT COUNT(*) FROM images WHERE {w}"),
            rusqlite::params_from_iter(args),
            |r| r.get::<_, i64>(0).map(|n| n as usize),
        )
    }

    /// The ids of matching rows, in order, `offset..offset+limit` (the grid loads only the
    /// rows it shows).
    pub fn ids(&self, q: &Query, offset: usize, limit: usize) -> rusqlite::Result<Vec<i64>> {
        let (w, mut args) = Self::where_clause(q);
        let order = match q.sort {
            Sort::NewestFirst => "created DESC, id DESC",
            Sort::OldestFirst => "created ASC, id ASC",
            Sort::RatingFirst => "rating DESC, created DESC, id DESC",
            Sort::Relevance => "created DESC, id DESC",
        };
        let sql = if q.sort == Sort::Relevance
            && q.text.as_deref().and_then(fts_expression).is_some()
        {
            // Rank by bm25 through the FTS table.
            let expr = q
                .text
                .as_deref()
                .and_then(fts_expression)
                .unwrap_or_default();
            args.insert(0, rusqlite::types::Value::Text(expr));
            format!(
                "SELECT images.id FROM images_fts JOIN images ON images.id = images_fts.rowid \
                 WHERE images_fts MATCH ? AND {w} ORDER BY bm25(images_fts), images.id DESC LIMIT ? OFFSET ?"
            )
        } else {
            format!("SELECT id FROM images WHERE {w} ORDER BY {order} LIMIT ? OFFSET ?")
        };
        args.push(rusqlite::types::Value::Integer(limit as i64));
        args.push(rusqlite::types::Value::Integer(offset as i64));
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?;
        rows.collect()
    }

    /// The matching records themselves (CLI listings, exports).
    pub fn records(
        &self,
        q: &Query,
        offset: usize,
        limit: usize,
    ) -> rusqlite::Result<Vec<ImageRecord>> {
        let ids = self.ids(q, offset, limit)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.get(id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn models(&self) -> rusqlite::Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT DISTINCT model_name FROM images WHERE model_name IS NOT NULL ORDER BY 1",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect()
    }

    /// The picture sizes present (for the size filter), most common first.
    pub fn sizes(&self) -> rusqlite::Result<Vec<(u32, u32)>> {
        let mut st = self.conn.prepare(
            "SELECT width, height FROM images WHERE trashed IS NULL GROUP BY width, height ORDER BY COUNT(*) DESC LIMIT 50",
        )?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u32))
        })?;
        rows.collect()
    }

    pub fn set_rating(&self, id: i64, rating: u8) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE images SET rating = ?2, modified = ?3 WHERE id = ?1",
            params![id, rating.min(5), super::now()],
        )?;
        Ok(())
    }

    pub fn set_favourite(&self, id: i64, favourite: bool) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE images SET favourite = ?2, modified = ?3 WHERE id = ?1",
            params![id, favourite as i64, super::now()],
        )?;
        Ok(())
    }

    pub fn set_tags(&self, id: i64, tags: &[String]) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE images SET tags = ?2, modified = ?3 WHERE id = ?1",
            params![id, tags.join(", "), super::now()],
        )?;
        Ok(())
    }

    /// Stores the adjustment stack (JSON) with the row; `None` clears it.
    pub fn set_adjustments(&self, id: i64, stack_json: Option<&str>) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE images SET adjustments = ?2, modified = ?3 WHERE id = ?1",
            params![id, stack_json, super::now()],
        )?;
        Ok(())
    }

    pub fn set_trashed(&self, id: i64, trashed: Option<i64>, file: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE images SET trashed = ?2, file = ?3, modified = ?4 WHERE id = ?1",
            params![id, trashed, file, super::now()],
        )?;
        Ok(())
    }

    pub fn delete(&self, id: i64) -> rusqlite::Result<()> {
        self.conn
            .execute("DELETE FROM images WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records a queued job (its request and picture metadata as JSON, its init and mask
    /// files relative to the data directory).
    pub fn insert_job(&self, job: &JobRow) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO jobs (uid, created, request, meta, init_file, mask_file)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                job.uid,
                job.created,
                job.request,
                job.meta,
                job.init_file,
                job.mask_file
            ],
        )?;
        Ok(())
    }

    /// Every recorded job, oldest first.
    pub fn jobs(&self) -> rusqlite::Result<Vec<JobRow>> {
        let mut st = self.conn.prepare(
            "SELECT uid, created, request, meta, init_file, mask_file FROM jobs ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(JobRow {
                uid: r.get(0)?,
                created: r.get(1)?,
                request: r.get(2)?,
                meta: r.get(3)?,
                init_file: r.get(4)?,
                mask_file: r.get(5)?,
            })
        })?;
        rows.collect()
    }

    pub fn delete_job(&self, uid: &str) -> rusqlite::Result<()> {
        self.conn
            .execute("DELETE FROM jobs WHERE uid = ?1", [uid])?;
        Ok(())
    }

    /// The image indices of job `uid` that are in the catalog (trash included).
    pub fn job_images(&self, uid: &str) -> rusqlite::Result<Vec<u32>> {
        let prefix = format!("{uid}/");
        let mut st = self
            .conn
            .prepare("SELECT job FROM images WHERE substr(job, 1, ?2) = ?1")?;
        let rows = st.query_map(params![prefix, prefix.len() as i64], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for job in rows {
            if let Some(index) = job?.strip_prefix(&prefix).and_then(|i| i.parse().ok()) {
                out.push(index);
            }
        }
        Ok(out)
    }

    pub fn children(&self, uid: &str) -> rusqlite::Result<Vec<i64>> {
        let mut st = self
            .conn
            .prepare("SELECT id FROM images WHERE parent_uid = ?1 ORDER BY created")?;
        let rows = st.query_map([uid], |r| r.get(0))?;
        rows.collect()
    }
}

fn insert_row(conn: &Connection, file: &str, m: &ImageMeta) -> rusqlite::Result<i64> {
    let now = super::now();
    conn.execute(
        "INSERT INTO images (uid, file, created, modified, prompt, negative, seed, steps, sampler,
            guidance, width, height, model_name, model_hash, strength, init_ref, mask_ref,
            adjustments, tags, parent_uid, lineage, generator, extra, rating, favourite, job,
            clip_skip, controls)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
        params![
            m.uid,
            file,
            if m.created > 0 { m.created } else { now },
            now,
            m.prompt,
            m.negative_prompt,
            to_sql_seed(m.seed),
            m.steps,
            m.sampler,
            m.guidance.map(f64::from),
            m.width,
            m.height,
            m.model_name,
            m.model_hash,
            m.strength.map(f64::from),
            m.init_image.as_ref().map(ToString::to_string),
            m.mask_image.as_ref().map(ToString::to_string),
            m.adjustments.as_ref().map(|a| a.to_string()),
            m.tags.join(", "),
            m.parent,
            m.lineage.as_ref().map(ToString::to_string),
            m.generator,
            serde_json::to_string(&m.extra).unwrap_or_else(|_| "{}".into()),
            m.rating.min(5),
            m.favourite as i64,
            m.job,
            m.clip_skip,
            (!m.control_images.is_empty())
                .then(|| serde_json::to_string(&m.control_images).unwrap_or_default()),
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_expression_quotes_every_word() {
        assert_eq!(
            fts_expression("red \"cat\" OR-dog").as_deref(),
            Some("\"red\"* AND \"cat\"* AND \"OR\"* AND \"dog\"*")
        );
        assert_eq!(fts_expression("  ,;  "), None);
    }

    #[test]
    fn rows_round_trip_and_search_finds_prompts() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.db")).unwrap();
        let meta = ImageMeta {
            uid: "u1".into(),
            prompt: "a red fox in snow".into(),
            negative_prompt: "blurry".into(),
            seed: Some(u64::MAX),
            steps: Some(4),
            width: 64,
            height: 48,
            tags: vec!["winter".into(), "animal".into()],
            created: 100,
            ..Default::default()
        };
        let id = c.insert("images/a.png", &meta, &|| {}).unwrap();
        let r = c.get(id).unwrap().unwrap();
        assert_eq!(r.meta, meta);
        let q = |t: &str| Query {
            text: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(c.ids(&q("fox"), 0, 10).unwrap(), vec![id]);
        assert_eq!(c.ids(&q("fo sno"), 0, 10).unwrap(), vec![id]);
        assert_eq!(c.ids(&q("winter"), 0, 10).unwrap(), vec![id]);
        assert!(c.ids(&q("cat"), 0, 10).unwrap().is_empty());
        c.set_tags(id, &["summer".into()]).unwrap();
        assert!(c.ids(&q("winter"), 0, 10).unwrap().is_empty());
        assert_eq!(c.ids(&q("summer"), 0, 10).unwrap(), vec![id]);
        c.set_trashed(id, Some(5), "trash/a.png").unwrap();
        assert_eq!(c.count(&Query::default()).unwrap(), 0);
        assert_eq!(
            c.count(&Query {
                trash: true,
                ..Default::default()
            })
            .unwrap(),
            1
        );
    }
}
