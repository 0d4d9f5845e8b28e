//! File work the studio hands to background tasks: picking and decoding a background image
//! (dialog or drag & drop, through the bounded loader) and saving a result through a save
//! dialog with its settings embedded, as gallery files carry them. A dialog that returns
//! nothing (closed, or no portal/zenity on this desktop) counts as cancelled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use image::RgbaImage;

use crate::gallery::export::{ExportFormat, ExportOptions};
use crate::gallery::ImageMeta;

/// A decoded background image and a name to mention it by.
pub struct LoadedImage {
    pub name: String,
    pub image: RgbaImage,
}

/// `Ok(None)`: the user cancelled.
pub type LoadOutcome = Result<Option<LoadedImage>, String>;
/// `Ok(None)`: the user cancelled; `Ok(Some(path))`: written there.
pub type SaveOutcome = Result<Option<PathBuf>, String>;

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Shows an open dialog and decodes the chosen file. Blocks: run it on a task.
pub fn pick_and_load_image() -> LoadOutcome {
    let picked = rfd::FileDialog::new()
        .set_title("Choose a background image")
        .add_filter("Images", &IMAGE_EXTENSIONS)
        .pick_file();
    let Some(path) = picked else {
        return Ok(None);
    };
    load_image_file(&path)
        .map(Some)
        .map_err(|e| format!("{e:#}"))
}

/// Decodes a file dropped on the window (bounded, like every image the studio reads).
/// Blocks: run it on a task.
pub fn load_dropped(file: &egui::DroppedFileHandle) -> LoadOutcome {
    let path = file.path().to_path_buf();
    let name = display_name(&path);
    let bytes = file
        .bytes()
        .map_err(|e| format!("could not read {name}: {e}"))?;
    let image = crate::imageio::load_image_bytes(&bytes, Path::new(&name))
        .map_err(|e| format!("{name} is not an image Atelier can read: {e}"))?;
    Ok(Some(LoadedImage {
        name,
        image: image.into_rgba8(),
    }))
}

fn load_image_file(path: &Path) -> anyhow::Result<LoadedImage> {
    let image = crate::imageio::load_image_file(path)
        .with_context(|| format!("{} is not an image Atelier can read", path.display()))?;
    Ok(LoadedImage {
        name: display_name(path),
        image: image.into_rgba8(),
    })
}

/// Shows a save dialog and writes `image` there in the format its name asks for (PNG,
/// JPEG or WebP; PNG when it names none), with `meta` embedded unless `opts` strip it.
/// Blocks: run it on a task.
pub fn pick_and_save(
    image: Arc<image::RgbImage>,
    meta: ImageMeta,
    opts: ExportOptions,
    suggested_name: String,
) -> SaveOutcome {
    let picked = rfd::FileDialog::new()
        .set_title("Save image as")
        .set_file_name(&suggested_name)
        .add_filter("PNG image", &["png"])
        .add_filter("JPEG image", &["jpg", "jpeg"])
        .add_filter("WebP image", &["webp"])
        .save_file();
    let Some(path) = picked else {
        return Ok(None);
    };
    save_as(&image, &meta, &path, &opts)
        .map(Some)
        .map_err(|e| format!("{e:#}"))
}

/// Writes `image` to `path` (durably: temp file, fsync, rename) as the gallery would: in the
/// format of the name's extension (`.png` is added to a name without a known one), carrying
/// `meta` and the AI-generated marking, or only the marking when `opts` strip the settings.
pub fn save_as(
    image: &image::RgbImage,
    meta: &ImageMeta,
    path: &Path,
    opts: &ExportOptions,
) -> anyhow::Result<PathBuf> {
    let mut path = path.to_path_buf();
    let format = match ExportFormat::from_path(&path) {
        Some(format) => format,
        None => {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".png");
            path.set_file_name(name);
            ExportFormat::Png
        }
    };
    let opts = ExportOptions {
        format,
        ..opts.clone()
    };
    let mut meta = meta.clone();
    meta.width = image.width();
    meta.height = image.height();
    let bytes = crate::gallery::export::encode(image, &meta, &opts)
        .map_err(|e| anyhow::anyhow!("{}: could not encode: {e}", path.display()))?;
    crate::gallery::write_durable(&path, &bytes)?;
    Ok(path)
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ImageMeta {
        ImageMeta {
            uid: "abc".into(),
            prompt: "a secret lighthouse".into(),
            seed: Some(7),
            ..Default::default()
        }
    }

    #[test]
    fn save_as_carries_the_settings_or_strips_them_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image::RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
        let opts = ExportOptions::default();
        let path = save_as(&image, &meta(), &dir.path().join("out"), &opts).expect("save");
        assert_eq!(path, dir.path().join("out.png"));
        let bytes = std::fs::read(&path).unwrap();
        let back = crate::gallery::metadata::read_embedded(&bytes)
            .meta()
            .expect("settings");
        assert_eq!(
            (back.prompt.as_str(), back.seed),
            ("a secret lighthouse", Some(7))
        );
        assert_eq!(
            crate::imageio::load_image_bytes(&bytes, std::path::Path::new("bytes"))
                .unwrap()
                .to_rgb8(),
            image
        );

        let stripped = ExportOptions {
            strip_metadata: true,
            ..Default::default()
        };
        let path = save_as(&image, &meta(), &dir.path().join("s.jpg"), &stripped).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            image::guess_format(&bytes).unwrap(),
            image::ImageFormat::Jpeg
        );
        assert!(!String::from_utf8_lossy(&bytes).contains("lighthouse"));
        assert!(String::from_utf8_lossy(&bytes).contains(crate::gallery::metadata::IPTC_AI_SOURCE));

        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(load_image_file(&path).is_ok());
        assert!(load_image_file(&dir.path().join("missing.png")).is_err());
    }
}
