//! Thumbnails: at most [`THUMB_SIDE`] pixels on the long side, cached on disk as
//! `thumbs/<uid>.png` and made on demand (the studio asks from background threads).

use std::path::{Path, PathBuf};

/// The long side of a thumbnail.
pub const THUMB_SIDE: u32 = 192;

pub fn thumb_path(root: &Path, uid: &str) -> PathBuf {
    root.join("thumbs").join(format!("{uid}.png"))
}

/// A downscaled copy (never upscaled), aspect kept.
pub fn make_thumbnail(img: &image::RgbImage) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let scale = (THUMB_SIDE as f32 / w.max(h).max(1) as f32).min(1.0);
    let tw = ((w as f32 * scale).round() as u32).max(1);
    let th = ((h as f32 * scale).round() as u32).max(1);
    if (tw, th) == (w, h) {
        return img.clone();
    }
    image::imageops::resize(img, tw, th, image::imageops::FilterType::Triangle)
}

/// The cached thumbnail of `image_path`, made (and cached) when missing or unreadable.
/// A cache that cannot be written is not an error: the thumbnail is still returned.
pub fn thumbnail(root: &Path, uid: &str, image_path: &Path) -> Result<image::RgbImage, String> {
    let cached = thumb_path(root, uid);
    // The cache goes through the bounded loader like any picture (it is a file on disk too).
    if let Ok(img) = crate::imageio::load_image_file(&cached) {
        return Ok(img.to_rgb8());
    }
    let full = crate::imageio::load_image_file(image_path).map_err(|e| e.to_string())?;
    let thumb = make_thumbnail(&full.to_rgb8());
    let mut bytes = Vec::new();
    if thumb
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .is_ok()
    {
        // A cache: atomic but not fsynced; a lost thumbnail is remade. A cache that cannot
        // be written is no error: the thumbnail is still returned.
        let _ = crate::fsio::write_file(&cached, &bytes, crate::fsio::Durability::Atomic);
    }
    Ok(thumb)
}
