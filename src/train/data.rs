//! Captioned-image datasets for training, in the layouts common training tools use:
//! a `captions.jsonl` (or Hugging Face imagefolder `metadata.jsonl`) beside the images, or a
//! `NAME.txt` caption next to each `NAME.png`/`.jpg`/`.jpeg`. Owns loading (bounded, through
//! [`crate::imageio`]), alpha compositing over a background, square fitting and batching into
//! candle tensors. Bad entries are skipped with a reason; only a folder that yields nothing is an
//! error.

use std::path::{Path, PathBuf};

use image::{DynamicImage, Rgb, RgbImage, RgbaImage};
use serde_json::{Map, Value};

/// Caption files read in this order; the first present wins.
pub const CAPTION_FILES: [&str; 2] = ["captions.jsonl", "metadata.jsonl"];
/// Keys naming the image in a caption line, in order of preference.
pub const FILE_KEYS: [&str; 3] = ["file", "file_name", "image"];
/// Keys holding the caption in a caption line, in order of preference.
pub const CAPTION_KEYS: [&str; 2] = ["caption", "text"];
/// Image extensions looked for beside `NAME.txt` captions (the codecs this build decodes).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
/// Image extensions recognised but not decodable in this build (reported as skipped).
const UNSUPPORTED_EXTENSIONS: [&str; 4] = ["webp", "gif", "bmp", "avif"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOptions {
    /// Side of the square every image is fitted to, in pixels.
    pub resolution: u32,
    /// sRGB colour that transparent pixels and padding become.
    pub background: [u8; 3],
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            resolution: 64,
            background: [255, 255, 255],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: dataset folder not found")]
    Missing { path: PathBuf },
    #[error("{path}: cannot read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "{path}: empty: no images with captions found (looked for captions.jsonl, metadata.jsonl, \
         or NAME.txt beside NAME.png/.jpg/.jpeg); {skipped} entries skipped{first}"
    )]
    Empty {
        path: PathBuf,
        skipped: usize,
        /// `": first: <reason>"` when something was skipped, else empty.
        first: String,
    },
    #[error("{path}: none of the {count} captioned images could be read; first: {first}")]
    AllUnreadable {
        path: PathBuf,
        count: usize,
        first: String,
    },
    #[error("{path}: invalid options: {reason}")]
    Options { path: PathBuf, reason: String },
}

/// One training example: the fitted RGB image and its caption.
#[derive(Debug, Clone)]
pub struct Item {
    pub path: PathBuf,
    pub caption: String,
    pub image: RgbImage,
    /// Every other key of the caption line (e.g. `category`); empty for `.txt` captions.
    pub extra: Map<String, Value>,
}

/// Something that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub items: Vec<Item>,
    pub skipped: Vec<Skipped>,
}

/// An image path with its caption, before the image is read.
struct Entry {
    path: PathBuf,
    caption: String,
    extra: Map<String, Value>,
}

/// Reads every captioned image in `dir` (see the module docs for the layouts).
pub fn open_dataset(dir: &Path, opts: &DataOptions) -> Result<Dataset, DataError> {
    if opts.resolution == 0 {
        return Err(DataError::Options {
            path: dir.to_path_buf(),
            reason: "resolution must be at least 1".into(),
        });
    }
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(DataError::Unreadable {
                path: dir.to_path_buf(),
                reason: "not a folder".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::Missing {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(DataError::Unreadable {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })
        }
    }

    let mut skipped = Vec::new();
    let caption_file = CAPTION_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file());
    let entries = match caption_file {
        Some(file) => {
            let text = std::fs::read_to_string(&file).map_err(|e| DataError::Unreadable {
                path: file.clone(),
                reason: e.to_string(),
            })?;
            parse_caption_lines(dir, &file, &text, &mut skipped)
        }
        None => sidecar_entries(dir, &mut skipped)?,
    };

    if entries.is_empty() {
        let first = skipped
            .first()
            .map(|s| format!("; first: {}: {}", s.path.display(), s.reason))
            .unwrap_or_default();
        return Err(DataError::Empty {
            path: dir.to_path_buf(),
            skipped: skipped.len(),
            first,
        });
    }

    let count = entries.len();
    let mut items = Vec::with_capacity(count);
    let mut first_failure = None;
    for entry in entries {
        match load_fitted(&entry.path, opts) {
            Ok(image) => items.push(Item {
                path: entry.path,
                caption: entry.caption,
                image,
                extra: entry.extra,
            }),
            Err(reason) => {
                first_failure.get_or_insert_with(|| reason.clone());
                skipped.push(Skipped {
                    path: entry.path,
                    reason,
                });
            }
        }
    }
    if items.is_empty() {
        return Err(DataError::AllUnreadable {
            path: dir.to_path_buf(),
            count,
            first: first_failure.unwrap_or_default(),
        });
    }
    Ok(Dataset { items, skipped })
}

/// Parses `captions.jsonl` / `metadata.jsonl`; bad lines and missing files go to `skipped`.
fn parse_caption_lines(
    dir: &Path,
    file: &Path,
    text: &str,
    skipped: &mut Vec<Skipped>,
) -> Vec<Entry> {
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        match parse_caption_line(line) {
            Ok(parsed) => {
                let path = dir.join(&parsed.file);
                if path.is_file() {
                    entries.push(Entry {
                        path,
                        caption: parsed.caption,
                        extra: parsed.extra,
                    });
                } else {
                    skipped.push(Skipped {
                        path,
                        reason: format!("{file_name} line {line_no}: image file not found"),
                    });
                }
            }
            Err(reason) => skipped.push(Skipped {
                path: file.to_path_buf(),
                reason: format!("{file_name} line {line_no}: {reason}"),
            }),
        }
    }
    entries
}

/// One caption line, split into its image path, caption and the remaining keys.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionLine {
    pub file: String,
    pub caption: String,
    pub extra: Map<String, Value>,
}

/// Parses one JSON caption line. The image key may be `file`, `file_name` or `image`; the caption
/// key `caption` or `text`. Other keys are kept in `extra`.
pub fn parse_caption_line(line: &str) -> Result<CaptionLine, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("not a JSON object".into());
    };
    let file_key = FILE_KEYS
        .iter()
        .find(|k| map.contains_key(**k))
        .ok_or_else(|| format!("no image key (one of {})", FILE_KEYS.join(", ")))?;
    let file = match map.remove(*file_key) {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        _ => return Err(format!("\"{file_key}\" is not a file name")),
    };
    let caption_key = CAPTION_KEYS
        .iter()
        .find(|k| map.contains_key(**k))
        .ok_or_else(|| format!("no caption key (one of {})", CAPTION_KEYS.join(", ")))?;
    let caption = match map.remove(*caption_key) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Null) => String::new(),
        _ => return Err(format!("\"{caption_key}\" is not a string")),
    };
    Ok(CaptionLine {
        file,
        caption,
        extra: map,
    })
}

/// `NAME.txt` beside `NAME.png`/`.jpg`/`.jpeg`, in file-name order. Images without a caption
/// file and images in formats this build cannot decode are reported as skipped.
fn sidecar_entries(dir: &Path, skipped: &mut Vec<Skipped>) -> Result<Vec<Entry>, DataError> {
    let unreadable = |e: std::io::Error| DataError::Unreadable {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();

    let mut entries = Vec::new();
    for path in paths {
        let Some(ext) = path.extension().map(|e| e.to_string_lossy().to_lowercase()) else {
            continue;
        };
        let supported = IMAGE_EXTENSIONS.contains(&ext.as_str());
        if !supported && !UNSUPPORTED_EXTENSIONS.contains(&ext.as_str()) {
            continue;
        }
        let caption_path = path.with_extension("txt");
        if !caption_path.is_file() {
            skipped.push(Skipped {
                path,
                reason: "no caption file (NAME.txt)".into(),
            });
            continue;
        }
        if !supported {
            skipped.push(Skipped {
                path,
                reason: format!(
                    ".{ext} images are not supported in this build ({})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
            continue;
        }
        match std::fs::read_to_string(&caption_path) {
            Ok(text) => entries.push(Entry {
                path,
                caption: text.trim_start_matches('\u{feff}').trim().to_string(),
                extra: Map::new(),
            }),
            Err(e) => skipped.push(Skipped {
                path,
                reason: format!("{}: {e}", caption_path.display()),
            }),
        }
    }
    Ok(entries)
}

fn load_fitted(path: &Path, opts: &DataOptions) -> Result<RgbImage, String> {
    let image = crate::imageio::load_image_file(path).map_err(|e| e.to_string())?;
    Ok(prepare_image(&image, opts))
}

/// Composites `image` over the background and fits it into a `resolution` square, keeping the
/// aspect ratio (padding with the background).
pub fn prepare_image(image: &DynamicImage, opts: &DataOptions) -> RgbImage {
    let flat = composite_over(&image.to_rgba8(), opts.background);
    fit_square(&flat, opts.resolution, opts.background)
}

/// Alpha-composites over an opaque background in sRGB u8 space:
/// `out = round((a * rgb + (255 - a) * bg) / 255)`.
pub fn composite_over(rgba: &RgbaImage, background: [u8; 3]) -> RgbImage {
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src[3]);
        *dst = Rgb(std::array::from_fn(|c| {
            blend_channel(src[c], background[c], a)
        }));
    }
    out
}

/// `round((c * a + bg * (255 - a)) / 255)`; exact, since an odd divisor never leaves a half.
fn blend_channel(c: u8, bg: u8, alpha: u32) -> u8 {
    let sum = u32::from(c) * alpha + u32::from(bg) * (255 - alpha);
    ((sum + 127) / 255) as u8
}

/// Scales the longer side to `resolution` (Lanczos3) and centres the image on a square of
/// `background`.
pub fn fit_square(image: &RgbImage, resolution: u32, background: [u8; 3]) -> RgbImage {
    let (w, h) = image.dimensions();
    if w == resolution && h == resolution {
        return image.clone();
    }
    let long = u64::from(w.max(h).max(1));
    let scaled = |side: u32| -> u32 {
        let s = (u64::from(side) * u64::from(resolution) + long / 2) / long;
        (s as u32).clamp(1, resolution)
    };
    let (new_w, new_h) = (scaled(w), scaled(h));
    let resized = if (new_w, new_h) == (w, h) {
        image.clone()
    } else {
        image::imageops::resize(image, new_w, new_h, image::imageops::FilterType::Lanczos3)
    };
    if new_w == resolution && new_h == resolution {
        return resized;
    }
    let mut canvas = RgbImage::from_pixel(resolution, resolution, Rgb(background));
    let x = i64::from((resolution - new_w) / 2);
    let y = i64::from((resolution - new_h) / 2);
    image::imageops::replace(&mut canvas, &resized, x, y);
    canvas
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items have an empty caption (used for unconditional training).
    pub fn empty_captions(&self) -> usize {
        self.items.iter().filter(|i| i.caption.is_empty()).count()
    }

    /// The images at `indices` as a `[B, 3, H, W]` f32 tensor in `[-1, 1]` (`x / 127.5 - 1`).
    pub fn batch_tensor(
        &self,
        indices: &[usize],
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let (w, h) = match indices.first() {
            Some(&i) => self.item(i)?.image.dimensions(),
            None => candle_core::bail!("batch_tensor: no indices"),
        };
        let plane = (w * h) as usize;
        let mut data = vec![0f32; indices.len() * 3 * plane];
        for (b, &i) in indices.iter().enumerate() {
            let image = &self.item(i)?.image;
            if image.dimensions() != (w, h) {
                candle_core::bail!(
                    "batch_tensor: item {i} is {:?}, expected {:?}",
                    image.dimensions(),
                    (w, h)
                );
            }
            let sample = &mut data[b * 3 * plane..(b + 1) * 3 * plane];
            for (p, px) in image.pixels().enumerate() {
                for c in 0..3 {
                    sample[c * plane + p] = f32::from(px[c]) / 127.5 - 1.0;
                }
            }
        }
        candle_core::Tensor::from_vec(data, (indices.len(), 3, h as usize, w as usize), device)
    }

    /// The captions at `indices`, in order.
    ///
    /// # Panics
    /// If an index is out of range, like slice indexing.
    pub fn captions(&self, indices: &[usize]) -> Vec<&str> {
        indices
            .iter()
            .map(|&i| self.items[i].caption.as_str())
            .collect()
    }

    fn item(&self, index: usize) -> candle_core::Result<&Item> {
        match self.items.get(index) {
            Some(item) => Ok(item),
            None => candle_core::bail!(
                "batch_tensor: index {index} out of range for {} items",
                self.items.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    #[test]
    fn compositing_is_alpha_correct_and_rounded() {
        // Opaque keeps the colour, transparent becomes the background.
        assert_eq!(blend_channel(10, 200, 255), 10);
        assert_eq!(blend_channel(10, 200, 0), 200);
        // Half alpha: (255*128 + 0*127) / 255 = 128.0 exactly.
        assert_eq!(blend_channel(255, 0, 128), 128);
        // (100*64 + 255*191) / 255 = 216.1 -> 216.
        assert_eq!(blend_channel(100, 255, 64), 216);
        // (0*1 + 255*254) / 255 = 254.0; (200*3 + 100*252) / 255 = 101.18 -> 101.
        assert_eq!(blend_channel(0, 255, 1), 254);
        assert_eq!(blend_channel(200, 100, 3), 101);
        // Matches float rounding everywhere.
        for a in (0..=255u32).step_by(17) {
            for c in (0..=255u8).step_by(15) {
                for bg in [0u8, 77, 255] {
                    let f = (a as f64 * c as f64 + (255 - a) as f64 * bg as f64) / 255.0;
                    assert_eq!(
                        blend_channel(c, bg, a),
                        f.round() as u8,
                        "a={a} c={c} bg={bg}"
                    );
                }
            }
        }
    }

    #[test]
    fn composite_over_uses_each_channel_of_the_background() {
        let mut rgba = RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, Rgba([255, 0, 0, 0]));
        rgba.put_pixel(1, 0, Rgba([255, 0, 0, 255]));
        let out = composite_over(&rgba, [10, 20, 30]);
        assert_eq!(out.get_pixel(0, 0), &Rgb([10, 20, 30]));
        assert_eq!(out.get_pixel(1, 0), &Rgb([255, 0, 0]));
    }

    #[test]
    fn caption_line_key_aliases() {
        let a =
            parse_caption_line(r#"{"file": "a.png", "caption": " a cat ", "category": "animals"}"#)
                .expect("file + caption");
        assert_eq!(a.file, "a.png");
        assert_eq!(a.caption, "a cat");
        assert_eq!(a.extra.get("category"), Some(&Value::from("animals")));
        assert_eq!(a.extra.len(), 1);

        let b = parse_caption_line(r#"{"file_name": "b.jpg", "text": "a dog"}"#).expect("HF keys");
        assert_eq!((b.file.as_str(), b.caption.as_str()), ("b.jpg", "a dog"));
        assert!(b.extra.is_empty());

        let c = parse_caption_line(r#"{"image": "c.png", "caption": ""}"#).expect("image key");
        assert_eq!((c.file.as_str(), c.caption.as_str()), ("c.png", ""));

        // `file` wins over `image`; the other stays in extra.
        let d = parse_caption_line(r#"{"image": "x.png", "file": "d.png", "text": "t"}"#)
            .expect("both keys");
        assert_eq!(d.file, "d.png");
        assert_eq!(d.extra.get("image"), Some(&Value::from("x.png")));
    }

    #[test]
    fn caption_line_errors_say_what_is_wrong() {
        let err = |line: &str| parse_caption_line(line).expect_err(line);
        assert!(err("{not json").contains("malformed JSON"));
        assert!(err("[1, 2]").contains("not a JSON object"));
        assert!(err(r#"{"caption": "x"}"#).contains("no image key"));
        assert!(err(r#"{"file": "a.png"}"#).contains("no caption key"));
        assert!(err(r#"{"file": 3, "caption": "x"}"#).contains("not a file name"));
        assert!(err(r#"{"file": "a.png", "caption": 3}"#).contains("not a string"));
    }

    #[test]
    fn fit_square_pads_wide_images_with_the_background() {
        let image = RgbImage::from_pixel(8, 4, Rgb([0, 0, 0]));
        let out = fit_square(&image, 8, [255, 0, 255]);
        assert_eq!(out.dimensions(), (8, 8));
        assert_eq!(out.get_pixel(4, 0), &Rgb([255, 0, 255]));
        assert_eq!(out.get_pixel(4, 7), &Rgb([255, 0, 255]));
        assert_eq!(out.get_pixel(4, 3), &Rgb([0, 0, 0]));
        assert_eq!(out.get_pixel(0, 4), &Rgb([0, 0, 0]));
    }
}
