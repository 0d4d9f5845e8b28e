//! File work the studio hands to background tasks: picking and decoding a background image
//! (dialog or drag & drop) and saving a result as PNG through a save dialog. A dialog that
//! returns nothing (closed, or no portal/zenity on this desktop) counts as cancelled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use image::RgbaImage;

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

/// Decodes a file dropped on the window. Blocks: run it on a task.
pub fn load_dropped(file: &egui::DroppedFileHandle) -> LoadOutcome {
    let path = file.path().to_path_buf();
    let name = display_name(&path);
    let bytes = file
        .bytes()
        .map_err(|e| format!("could not read {name}: {e}"))?;
    let image = image::load_from_memory(&bytes)
        .map_err(|e| format!("{name} is not an image Atelier can read: {e}"))?;
    Ok(Some(LoadedImage {
        name,
        image: image.into_rgba8(),
    }))
}

fn load_image_file(path: &Path) -> anyhow::Result<LoadedImage> {
    let image = image::ImageReader::open(path)
        .with_context(|| format!("could not open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("could not read {}", path.display()))?
        .decode()
        .with_context(|| format!("{} is not an image Atelier can read", path.display()))?;
    Ok(LoadedImage {
        name: display_name(path),
        image: image.into_rgba8(),
    })
}

/// Shows a save dialog and writes `image` there as PNG. Blocks: run it on a task.
pub fn pick_and_save_png(image: Arc<image::RgbImage>, suggested_name: String) -> SaveOutcome {
    let picked = rfd::FileDialog::new()
        .set_title("Save image as PNG")
        .set_file_name(&suggested_name)
        .add_filter("PNG image", &["png"])
        .save_file();
    let Some(mut path) = picked else {
        return Ok(None);
    };
    if path
        .extension()
        .is_none_or(|ext| !ext.eq_ignore_ascii_case("png"))
    {
        path.set_extension("png");
    }
    write_png_atomically(&image, &path)
        .map(|()| Some(path))
        .map_err(|e| format!("{e:#}"))
}

/// Writes to a temporary file next to `path`, then renames it, so no half-written PNG is left.
pub fn write_png_atomically(image: &image::RgbImage, path: &Path) -> anyhow::Result<()> {
    Ok(crate::imageio::write_png_atomically(image, path)?)
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_a_png_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.png");
        let image = image::RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
        write_png_atomically(&image, &path).expect("save");
        let back = image::open(&path).expect("read back").into_rgb8();
        assert_eq!(back, image);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(load_image_file(&path).is_ok());
        assert!(load_image_file(&dir.path().join("missing.png")).is_err());
    }
}
