//! Reading user images safely: bounded dimensions and memory (the `image` crate's `Limits`),
//! format sniffed from the content, every failure a clear error instead of a panic.

use std::path::{Path, PathBuf};

/// Largest side accepted on load; bigger images are refused before decoding.
pub const MAX_LOAD_SIDE: u32 = 16384;
/// Decoder allocation cap.
pub const MAX_LOAD_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ImageLoadError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: not a readable image: {reason}")]
    Decode { path: PathBuf, reason: String },
}

pub fn load_image_file(path: &Path) -> Result<image::DynamicImage, ImageLoadError> {
    let file = std::fs::File::open(path).map_err(|e| ImageLoadError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let decode = |reason: String| ImageLoadError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| decode(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_LOAD_SIDE);
    limits.max_image_height = Some(MAX_LOAD_SIDE);
    limits.max_alloc = Some(MAX_LOAD_BYTES);
    reader.limits(limits);
    reader.decode().map_err(|e| decode(e.to_string()))
}
