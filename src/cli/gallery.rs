//! `atelier gallery ...`, `atelier import` and the gallery side of `atelier generate`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use atelier::gallery::export::{export_records, ExportFormat, ExportOptions};
use atelier::gallery::{self, Gallery, ImageMeta, ImageRecord, Query, Sort};
use clap::Subcommand;

#[derive(clap::Args, Clone)]
pub(crate) struct GalleryFilter {
    /// Only pictures made with this model (its name as listed).
    #[arg(long)]
    model: Option<String>,
    /// Only favourites.
    #[arg(long)]
    favourites: bool,
    /// Only pictures rated at least this (1-5).
    #[arg(long, default_value_t = 0)]
    min_rating: u8,
    /// List the trash instead.
    #[arg(long)]
    trash: bool,
    /// Oldest first (default newest first).
    #[arg(long)]
    oldest_first: bool,
}

#[derive(Subcommand)]
pub(crate) enum GalleryCommand {
    /// List pictures, newest first: id, date, size, seed, model, prompt.
    List {
        #[command(flatten)]
        filter: GalleryFilter,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Full-text search over prompts, negative prompts and tags (every word must match,
    /// as a prefix), best match first.
    Search {
        query: String,
        #[command(flatten)]
        filter: GalleryFilter,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Everything about one picture, including where it came from.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Export pictures to a folder, with their adjustments applied.
    Export {
        /// Full-text query selecting the pictures (default: all, with the filters).
        #[arg(long)]
        query: Option<String>,
        /// Picture ids (comma separated or repeated) instead of a query.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<i64>,
        #[command(flatten)]
        filter: GalleryFilter,
        /// png, jpeg or webp (lossless).
        #[arg(long, default_value = "png")]
        format: String,
        /// JPEG quality 1-100.
        #[arg(long, default_value_t = 92)]
        quality: u8,
        #[arg(long)]
        out: PathBuf,
        /// File names: {seed} {prompt} {id} {uid} {model} {steps} {sampler} {date} {width}
        /// {height} {index}; made safe for every OS, never overwriting.
        #[arg(long, default_value = "{seed}-{prompt}")]
        name_pattern: String,
        /// Leave out prompts, settings and paths (the AI-generated marking stays).
        #[arg(long)]
        strip_metadata: bool,
        /// Export the originals without their adjustment stacks.
        #[arg(long)]
        no_adjustments: bool,
    },
    /// Rate pictures 0-5.
    Rate {
        rating: u8,
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Mark (or with --off unmark) pictures as favourites.
    Favourite {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[arg(long)]
        off: bool,
    },
    /// Set pictures' tags (comma separated; an empty string clears them).
    Tag {
        tags: String,
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Move pictures to the trash (undo with `restore`).
    Trash {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Bring pictures back from the trash.
    Restore {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Delete the trash for good.
    EmptyTrash,
}

pub(crate) fn open_gallery() -> anyhow::Result<Gallery> {
    let root = atelier::paths::data_dir();
    let g = Gallery::open_with_wait(&root, Duration::from_secs(5))
        .with_context(|| format!("gallery in {}", root.display()))?;
    for m in &g.report.messages {
        eprintln!("gallery: {m}");
    }
    Ok(g)
}

pub(crate) fn open_writable() -> anyhow::Result<Gallery> {
    let g = open_gallery()?;
    if g.is_read_only() {
        bail!("the gallery is in use by another Atelier; try again when it is closed");
    }
    Ok(g)
}

/// Records generated pictures into the gallery; when another Atelier holds the gallery, the
/// files still go into its images folder (durably) and are adopted when it next opens.
pub struct Recorder {
    gallery: Gallery,
}

impl Recorder {
    pub fn open(only_destination: bool) -> anyhow::Result<Self> {
        let root = atelier::paths::data_dir();
        let gallery = match Gallery::open_with_wait(&root, Duration::from_secs(3)) {
            Ok(g) => g,
            Err(e) if only_destination => {
                return Err(anyhow::Error::new(e).context(format!(
                "cannot record into the gallery in {} (pass --out FILE --no-gallery to skip it)",
                root.display()
            )))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot record into the gallery in {} (pass --no-gallery to skip it)",
                    root.display()
                )))
            }
        };
        for m in &gallery.report.messages {
            eprintln!("gallery: {m}");
        }
        if gallery.is_read_only() {
            eprintln!(
                "gallery: another Atelier is using the gallery; new pictures are saved into its \
                 images folder and will be added to the catalog when it is next opened"
            );
        }
        Ok(Self { gallery })
    }

    pub fn record(&mut self, image: &image::RgbImage, meta: ImageMeta) -> anyhow::Result<String> {
        if self.gallery.is_read_only() {
            let path = gallery::save_file_only(self.gallery.root(), image, meta)?;
            return Ok(format!("saved {} (gallery busy)", path.display()));
        }
        let r = self.gallery.save_image(image, meta)?;
        Ok(format!(
            "gallery #{} {}",
            r.id,
            self.gallery.path_of(&r).display()
        ))
    }

    pub fn gallery(&self) -> &Gallery {
        &self.gallery
    }

    /// Records a job before it runs (`None` when another Atelier holds the gallery: then
    /// it is not kept across a crash, and that is said once).
    pub fn add_job(
        &mut self,
        request: &atelier::generation::GenerationRequest,
        template: &ImageMeta,
    ) -> anyhow::Result<Option<String>> {
        if self.gallery.is_read_only() {
            return Ok(None);
        }
        Ok(Some(self.gallery.add_job(request, template)?.uid))
    }

    /// A recorded job ended.
    pub fn finish_job(&mut self, uid: &str) -> anyhow::Result<()> {
        if !self.gallery.is_read_only() {
            self.gallery.finish_job(uid)?;
        }
        Ok(())
    }

    /// Wraps a gallery that is already open (`atelier queue resume`).
    pub fn from_gallery(gallery: Gallery) -> Self {
        Self { gallery }
    }
}

/// How an init image is referred to: the gallery picture it is (by the uid it carries), or
/// the file by name.
pub fn lineage_of(init: &Path, recorder: Option<&Recorder>) -> gallery::metadata::ImageRef {
    use gallery::metadata::ImageRef;
    let name = init
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(meta) = gallery::read_meta_of_file(init) else {
        return ImageRef::File(name);
    };
    let known = recorder
        .and_then(|r| r.gallery().catalog().by_uid(&meta.uid).ok().flatten())
        .is_some();
    if known {
        ImageRef::Gallery(meta.uid)
    } else {
        ImageRef::File(name)
    }
}

fn query_of(filter: &GalleryFilter, text: Option<String>, relevance: bool) -> Query {
    Query {
        text,
        model: filter.model.clone(),
        favourite_only: filter.favourites,
        min_rating: filter.min_rating,
        trash: filter.trash,
        sort: if relevance {
            Sort::Relevance
        } else if filter.oldest_first {
            Sort::OldestFirst
        } else {
            Sort::NewestFirst
        },
        ..Default::default()
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    } else {
        flat
    }
}

/// Prints to stdout; a closed pipe (`| head`) ends the listing quietly.
fn print_records(records: &[ImageRecord], json: bool, total: usize) -> anyhow::Result<()> {
    match write_records(&mut std::io::stdout().lock(), records, json, total) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn write_records(
    out: &mut impl std::io::Write,
    records: &[ImageRecord],
    json: bool,
    total: usize,
) -> std::io::Result<()> {
    if json {
        for r in records {
            writeln!(out, "{}", record_json(r))?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<16}  {:>9}  {:>12}  {:<18}  prompt",
        "id", "created (UTC)", "size", "seed", "model"
    )?;
    for r in records {
        let m = &r.meta;
        let flags = format!(
            "{}{}",
            if r.favourite { "♥" } else { "" },
            "★".repeat(r.rating as usize)
        );
        writeln!(
            out,
            "{:>6}  {:<16}  {:>9}  {:>12}  {:<18}  {}{}",
            r.id,
            gallery::format_time(m.created),
            format!("{}x{}", m.width, m.height),
            m.seed.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            one_line(m.model_name.as_deref().unwrap_or("-"), 18),
            if flags.is_empty() {
                String::new()
            } else {
                format!("{flags} ")
            },
            one_line(&m.prompt, 70)
        )?;
    }
    if total > records.len() {
        writeln!(out, "({} of {total} shown)", records.len())?;
    }
    Ok(())
}

fn record_json(r: &ImageRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "file": r.file,
        "rating": r.rating,
        "favourite": r.favourite,
        "trashed": r.trashed,
        "meta": r.meta,
    })
}

pub fn run(cmd: GalleryCommand) -> anyhow::Result<()> {
    match cmd {
        GalleryCommand::List {
            filter,
            limit,
            offset,
            json,
        } => {
            let g = open_gallery()?;
            let q = query_of(&filter, None, false);
            let total = g.catalog().count(&q)?;
            let records = g.catalog().records(&q, offset, limit)?;
            print_records(&records, json, total)?;
        }
        GalleryCommand::Search {
            query,
            filter,
            limit,
            json,
        } => {
            let g = open_gallery()?;
            let q = query_of(&filter, Some(query), true);
            let total = g.catalog().count(&q)?;
            let records = g.catalog().records(&q, 0, limit)?;
            print_records(&records, json, total)?;
        }
        GalleryCommand::Show { id, json } => {
            let g = open_gallery()?;
            let r = g.get(id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record_json(&r))?);
                return Ok(());
            }
            let m = &r.meta;
            println!("#{} {}", r.id, g.path_of(&r).display());
            println!("created   {} UTC", gallery::format_time(m.created));
            println!("prompt    {}", m.prompt);
            if !m.negative_prompt.is_empty() {
                println!("negative  {}", m.negative_prompt);
            }
            println!(
                "settings  {}",
                one_line(
                    gallery::metadata::to_a1111(m)
                        .lines()
                        .last()
                        .unwrap_or_default(),
                    400
                )
            );
            if let Some(model) = &m.model_name {
                println!(
                    "model     {model} ({})",
                    m.model_hash.as_deref().unwrap_or("no hash")
                );
            }
            if r.rating > 0 || r.favourite {
                println!(
                    "rating    {}{}",
                    r.rating,
                    if r.favourite { ", favourite" } else { "" }
                );
            }
            if !m.tags.is_empty() {
                println!("tags      {}", m.tags.join(", "));
            }
            if let Some(a) = &m.adjustments {
                println!("adjusted  {a}");
            }
            if let Some(init) = &m.init_image {
                println!("init      {init}");
            }
            match g.parent_of(&r)? {
                Some(p) => println!(
                    "made from #{} ({}) by {}",
                    p.id,
                    one_line(&p.meta.prompt, 60),
                    m.lineage.as_ref().map_or("?", |l| l.as_str())
                ),
                None if m.parent.is_some() => println!(
                    "made from {} (no longer in the gallery)",
                    m.parent.as_deref().unwrap_or_default()
                ),
                None => {}
            }
            for child in g.catalog().children(&m.uid)? {
                println!("used for  #{child}");
            }
            for (k, v) in &m.extra {
                println!("{k}: {}", one_line(v, 200));
            }
            if r.trashed.is_some() {
                println!("(in the trash)");
            }
        }
        GalleryCommand::Export {
            query,
            ids,
            filter,
            format,
            quality,
            out,
            name_pattern,
            strip_metadata,
            no_adjustments,
        } => {
            let g = open_gallery()?;
            let records: Vec<ImageRecord> = if ids.is_empty() {
                let q = query_of(&filter, query.clone(), query.is_some());
                g.catalog().records(&q, 0, usize::MAX >> 1)?
            } else {
                ids.iter().map(|&id| g.get(id)).collect::<Result<_, _>>()?
            };
            if records.is_empty() {
                bail!("nothing to export: no picture matches");
            }
            let format = ExportFormat::parse(&format)
                .with_context(|| format!("unknown format {format:?}: png, jpeg or webp"))?;
            if !(1..=100).contains(&quality) {
                bail!("--quality {quality}: must be 1 to 100");
            }
            let opts = ExportOptions {
                format,
                jpeg_quality: quality,
                strip_metadata,
                name_pattern,
                apply_adjustments: !no_adjustments,
            };
            let bar = indicatif::ProgressBar::new(records.len() as u64);
            let written = export_records(&records, g.root(), &out, &opts, &mut |i, _| {
                bar.set_position(i as u64)
            })?;
            bar.finish_and_clear();
            for p in &written {
                println!("{}", p.display());
            }
            eprintln!("exported {} picture(s) to {}", written.len(), out.display());
        }
        GalleryCommand::Rate { rating, ids } => {
            if rating > 5 {
                bail!("a rating is 0 to 5");
            }
            let g = open_writable()?;
            for id in ids {
                g.get(id)?;
                g.set_rating(id, rating)?;
            }
        }
        GalleryCommand::Favourite { ids, off } => {
            let g = open_writable()?;
            for id in ids {
                g.get(id)?;
                g.set_favourite(id, !off)?;
            }
        }
        GalleryCommand::Tag { tags, ids } => {
            let g = open_writable()?;
            let tags: Vec<String> = tags.split(',').map(str::to_string).collect();
            for id in ids {
                g.get(id)?;
                g.set_tags(id, &tags)?;
            }
        }
        GalleryCommand::Trash { ids } => {
            let mut g = open_writable()?;
            g.trash(&ids)?;
            eprintln!(
                "moved {} picture(s) to the trash (undo: atelier gallery restore)",
                ids.len()
            );
        }
        GalleryCommand::Restore { ids } => {
            let mut g = open_writable()?;
            g.restore(&ids)?;
        }
        GalleryCommand::EmptyTrash => {
            let mut g = open_writable()?;
            let n = g.empty_trash()?;
            eprintln!("deleted {n} picture(s) for good");
        }
    }
    Ok(())
}

pub fn import(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut g = open_writable()?;
    let mut failed = 0;
    for f in files {
        match g.import_file(f) {
            Ok(r) => println!(
                "#{} {} ({})",
                r.id,
                f.display(),
                r.meta.generator.as_deref().unwrap_or("no settings found")
            ),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} file(s) could not be imported", files.len());
    }
    Ok(())
}
