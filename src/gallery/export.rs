//! Exporting pictures out of the gallery: PNG, JPEG or WebP, the adjustment stack applied,
//! settings kept or stripped, file names from a pattern made safe on every OS, never
//! overwriting anything.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metadata::{self, ImageMeta};
use super::{GalleryError, ImageRecord};

/// The file formats pictures leave the gallery in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    #[default]
    Png,
    /// Lossy, at [`ExportOptions::jpeg_quality`].
    Jpeg,
    /// Lossless WebP.
    Webp,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 3] = [ExportFormat::Png, ExportFormat::Jpeg, ExportFormat::Webp];

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Png => "png",
            ExportFormat::Jpeg => "jpg",
            ExportFormat::Webp => "webp",
        }
    }

    /// The name shown to users and taken by `--format`.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Png => "png",
            ExportFormat::Jpeg => "jpeg",
            ExportFormat::Webp => "webp",
        }
    }

    /// `png`, `jpeg`/`jpg`, `webp` (any case).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "png" => Some(Self::Png),
            "jpeg" | "jpg" => Some(Self::Jpeg),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }

    /// The format a file name asks for by its extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Self::parse)
    }
}

/// How pictures leave the gallery: one type for the studio's Export window, its "Save as…"
/// and `atelier gallery export`, so what the user chose is what gets written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportOptions {
    pub format: ExportFormat,
    /// JPEG quality 1-100 (other formats are lossless).
    pub jpeg_quality: u8,
    /// Remove prompts, settings and local paths; only the "AI-generated" marking stays.
    pub strip_metadata: bool,
    /// Tokens: `{id}` `{uid}` `{seed}` `{prompt}` `{model}` `{steps}` `{sampler}` `{date}`
    /// `{width}` `{height}` `{index}`.
    pub name_pattern: String,
    /// Apply each image's stored adjustment stack (else the original pixels).
    pub apply_adjustments: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            format: ExportFormat::Png,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            strip_metadata: false,
            name_pattern: "{seed}-{prompt}".into(),
            apply_adjustments: true,
        }
    }
}

pub const DEFAULT_JPEG_QUALITY: u8 = 92;

/// Names Windows reserves in every folder, with or without an extension.
const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// The longest file name in bytes (ext4, NTFS in UTF-16 units is looser, APFS 255 UTF-8).
pub const MAX_NAME_BYTES: usize = 255;

/// Makes `stem` + `.ext` a safe single file name on Linux, macOS and Windows: no separators,
/// no `..`, no control or bidirectional-override characters, no reserved device names, no
/// trailing dots or spaces, at most [`MAX_NAME_BYTES`] bytes (cut at a character boundary).
pub fn safe_file_name(stem: &str, ext: &str) -> String {
    let mut s: String = stem
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            // Bidirectional controls and invisible formatting that can disguise an extension.
            '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}' => '_',
            c => c,
        })
        .collect();
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    let mut s = s
        .trim_matches(|c: char| c == '.' || c.is_whitespace())
        .to_string();
    if s.is_empty() {
        s = "image".into();
    }
    let base = s
        .split('.')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    if RESERVED.contains(&base.as_str()) {
        s.insert(0, '_');
    }
    let ext = ext.trim_start_matches('.');
    let room = MAX_NAME_BYTES - ext.len() - 1 - 8; // 8 bytes kept for " (1234)"
    if s.len() > room {
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s = s.trim_end_matches(['.', ' ']).to_string();
    }
    format!("{s}.{ext}")
}

/// Fills the name pattern for one record.
pub fn expand_pattern(pattern: &str, r: &ImageRecord, index: usize) -> String {
    let m = &r.meta;
    let prompt: String = m.prompt.chars().take(80).collect();
    let date = super::format_time(m.created)
        .replace(' ', "_")
        .replace(':', "-");
    let pairs = [
        ("{id}", r.id.to_string()),
        ("{uid}", m.uid.clone()),
        ("{seed}", m.seed.map(|s| s.to_string()).unwrap_or_default()),
        ("{prompt}", prompt.trim().to_string()),
        ("{model}", m.model_name.clone().unwrap_or_default()),
        (
            "{steps}",
            m.steps.map(|s| s.to_string()).unwrap_or_default(),
        ),
        ("{sampler}", m.sampler.clone().unwrap_or_default()),
        ("{date}", date),
        ("{width}", m.width.to_string()),
        ("{height}", m.height.to_string()),
        ("{index}", format!("{:04}", index + 1)),
    ];
    let mut out = pattern.to_string();
    for (k, v) in pairs {
        out = out.replace(k, &v);
    }
    out
}

/// Writes `bytes` as a new file `dir/name`, or `dir/stem (2).ext`... if taken, never replacing
/// a file and never visible half-written: the bytes go to a hidden temporary beside it first,
/// which is then hard-linked under the first free name (a link fails when the name is taken)
/// and removed. Where the file system has no hard links (FAT), the name is reserved and the
/// bytes written into it, as before.
pub fn write_unique(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, GalleryError> {
    let tmp = crate::fsio::temp_path(&dir.join(name));
    let written =
        std::fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(super::io_error(&tmp, e));
    }
    let linked = unique_names(dir, name).find_map(|path| match std::fs::hard_link(&tmp, &path) {
        Ok(()) => Some(Ok(path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
        Err(e) => Some(Err(e)),
    });
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Some(Ok(path)) => {
            let _ = crate::fsio::sync_dir(dir);
            Ok(path)
        }
        // No hard links here: reserve the name, then write into it.
        Some(Err(_)) => {
            let (path, mut f) = create_unique(dir, name)?;
            let res = f
                .write_all(bytes)
                .and_then(|_| f.sync_all())
                .map_err(|e| super::io_error(&path, e));
            if let Err(e) = res {
                drop(f);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Ok(path)
        }
        None => Err(GalleryError::Io {
            path: dir.join(name),
            source: std::io::Error::other("too many files with this name"),
        }),
    }
}

/// `name`, then `stem (2).ext`, `stem (3).ext`... (9,999 in all), each directly inside `dir`.
fn unique_names<'a>(dir: &'a Path, name: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    (1..10_000).map(move |n| {
        let candidate = if n == 1 {
            name.to_string()
        } else {
            format!("{stem} ({n}).{ext}")
        };
        let path = dir.join(candidate);
        debug_assert_eq!(path.parent(), Some(dir));
        path
    })
}

/// Creates `dir/name`, or `dir/stem (2).ext`... if taken: never replaces a file. The returned
/// path is always directly inside `dir`.
pub fn create_unique(dir: &Path, name: &str) -> Result<(PathBuf, std::fs::File), GalleryError> {
    for path in unique_names(dir, name) {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(super::io_error(&path, e)),
        }
    }
    Err(GalleryError::Io {
        path: dir.join(name),
        source: std::io::Error::other("too many files with this name"),
    })
}

/// Encodes `img` in the options' format with `meta` embedded (or, when stripping, only the AI
/// marking: `meta` is reduced to what [`stripped`] keeps first).
pub fn encode(
    img: &image::RgbImage,
    meta: &ImageMeta,
    opts: &ExportOptions,
) -> Result<Vec<u8>, String> {
    let strip = opts.strip_metadata;
    let reduced;
    let meta = if strip {
        reduced = stripped(meta);
        &reduced
    } else {
        meta
    };
    let tool = metadata::generator_name();
    let a1111 = metadata::to_a1111(meta);
    let json = serde_json::to_string(meta).unwrap_or_default();
    let xmp = metadata::xmp_packet((!strip).then_some(meta.prompt.as_str()), &tool);
    match opts.format {
        ExportFormat::Png => {
            let chunks = if strip {
                vec![("XML:com.adobe.xmp", xmp)]
            } else {
                metadata::png_chunks(meta)
            };
            metadata::encode_png(img, &chunks)
        }
        ExportFormat::Jpeg => {
            use image::ImageEncoder;
            let mut buf = Vec::new();
            let quality = opts.jpeg_quality.clamp(1, 100);
            let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality);
            if !strip {
                let comment = format!("{a1111}{}{json}", metadata::ATELIER_JSON_MARK);
                let _ = enc.set_exif_metadata(metadata::exif_user_comment(&comment, &tool));
            }
            enc.write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| e.to_string())?;
            Ok(metadata::jpeg_insert_xmp(&buf, &xmp))
        }
        ExportFormat::Webp => {
            use image::ImageEncoder;
            let mut buf = Vec::new();
            let mut enc = image::codecs::webp::WebPEncoder::new_lossless(&mut buf);
            // Always EXIF (stripped: only the software name) so the file gets the extended
            // header that the XMP chunk needs.
            let comment = if strip {
                String::new()
            } else {
                format!("{a1111}{}{json}", metadata::ATELIER_JSON_MARK)
            };
            let _ = enc.set_exif_metadata(metadata::exif_user_comment(&comment, &tool));
            enc.write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| e.to_string())?;
            Ok(metadata::webp_insert_xmp(&buf, &xmp))
        }
    }
}

/// What stripping leaves of the settings: nothing personal.
fn stripped(meta: &ImageMeta) -> ImageMeta {
    ImageMeta {
        width: meta.width,
        height: meta.height,
        generator: meta.generator.clone(),
        ..Default::default()
    }
}

/// Exports records of the gallery in `root` into `dir` (created if missing), as `opts` say:
/// format, quality, adjustments applied or not, settings kept or stripped, names from the
/// pattern. Returns the written paths, in order.
pub fn export_records(
    records: &[ImageRecord],
    root: &Path,
    dir: &Path,
    opts: &ExportOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<PathBuf>, GalleryError> {
    std::fs::create_dir_all(dir).map_err(|e| super::io_error(dir, e))?;
    let mut written = Vec::new();
    for (i, r) in records.iter().enumerate() {
        progress(i, records.len());
        let img = if opts.apply_adjustments {
            load_adjusted(root, r)?
        } else {
            load_original(root, r)?
        };
        let mut meta = r.meta.clone();
        meta.width = img.width();
        meta.height = img.height();
        let bytes = encode(&img, &meta, opts).map_err(|reason| GalleryError::BadImage {
            path: PathBuf::from(&r.file),
            reason,
        })?;
        let stem = expand_pattern(&opts.name_pattern, r, i);
        let name = safe_file_name(&stem, opts.format.extension());
        written.push(write_unique(dir, &name, &bytes)?);
    }
    progress(records.len(), records.len());
    Ok(written)
}

/// A record's pixels from disk as they were made.
pub fn load_original(root: &Path, r: &ImageRecord) -> Result<image::RgbImage, GalleryError> {
    let path = root.join(&r.file);
    Ok(crate::imageio::load_image_file(&path)
        .map_err(|e| GalleryError::BadImage {
            path: path.clone(),
            reason: e.to_string(),
        })?
        .to_rgb8())
}

/// A record's pixels from disk with its adjustment stack applied (CPU reference path).
pub fn load_adjusted(root: &Path, r: &ImageRecord) -> Result<image::RgbImage, GalleryError> {
    let img = load_original(root, r)?;
    let stack = r
        .meta
        .adjustments
        .as_ref()
        .and_then(|v| crate::postfx::Stack::from_json(&v.to_string()).ok());
    Ok(match stack {
        Some(s) => crate::postfx::apply_to_rgb8(&img, &s),
        None => img,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_never_replace_a_file_and_leave_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_unique(dir.path(), "cat.png", b"first").unwrap();
        let b = write_unique(dir.path(), "cat.png", b"second").unwrap();
        assert_eq!(a, dir.path().join("cat.png"));
        assert_eq!(b, dir.path().join("cat (2).png"));
        assert_eq!(std::fs::read(&a).unwrap(), b"first");
        assert_eq!(std::fs::read(&b).unwrap(), b"second");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A folder that cannot be written: an error naming the file, nothing left.
        let missing = dir.path().join("no/such/folder");
        assert!(write_unique(&missing, "cat.png", b"x").is_err());
    }

    #[test]
    fn hostile_names_become_single_safe_names() {
        let cases = [
            "../../x",
            "C:\\x",
            "CON",
            "nul.png",
            "a\0b",
            "evil\u{202E}gnp.exe",
            "..",
            ".",
            "   ",
            "aux.tar.gz",
            "com1",
        ];
        for c in cases {
            let n = safe_file_name(c, "png");
            assert!(
                !n.contains(['/', '\\', '\0', ':', '\u{202E}']),
                "{c:?} -> {n:?}"
            );
            assert!(!n.contains(".."), "{c:?} -> {n:?}");
            let base = n.split('.').next().unwrap().to_ascii_uppercase();
            assert!(!RESERVED.contains(&base.as_str()), "{c:?} -> {n:?}");
            assert!(n.ends_with(".png"));
            assert!(n.len() <= MAX_NAME_BYTES);
        }
        let emoji = "😀".repeat(300);
        let n = safe_file_name(&emoji, "webp");
        assert!(
            n.len() <= MAX_NAME_BYTES && n.ends_with(".webp"),
            "{}",
            n.len()
        );
        assert!(n.starts_with("😀"));
    }

    #[test]
    fn jpeg_and_webp_carry_settings() {
        let img =
            image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 7]));
        let meta = ImageMeta {
            uid: "u".into(),
            prompt: "a ✓ prompt".into(),
            seed: Some(3),
            width: 9,
            height: 7,
            ..Default::default()
        };
        for format in ExportFormat::ALL {
            let mut opts = ExportOptions {
                format,
                ..Default::default()
            };
            let bytes = encode(&img, &meta, &opts).unwrap();
            let decoded =
                crate::imageio::load_image_bytes(&bytes, std::path::Path::new("bytes")).unwrap();
            assert_eq!(decoded.width(), 9);
            let e = metadata::read_embedded(&bytes);
            let back = e.meta().unwrap_or_else(|| panic!("{format:?}: {e:?}"));
            assert_eq!(back.prompt, meta.prompt, "{format:?}");
            assert_eq!(back.seed, Some(3));
            assert!(e
                .get("XML:com.adobe.xmp")
                .unwrap()
                .contains(metadata::IPTC_AI_SOURCE));
            opts.strip_metadata = true;
            let stripped = encode(&img, &meta, &opts).unwrap();
            let e = metadata::read_embedded(&stripped);
            assert!(e.meta().is_none_or(|m| m.prompt.is_empty()), "{format:?}");
            assert!(!String::from_utf8_lossy(&stripped).contains("prompt"));
            assert!(e
                .get("XML:com.adobe.xmp")
                .unwrap()
                .contains(metadata::IPTC_AI_SOURCE));
        }
    }
}
