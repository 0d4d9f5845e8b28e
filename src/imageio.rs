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

/// Decodes an image file through [`load_image_bytes`]'s limits.
pub fn load_image_file(path: &Path) -> Result<image::DynamicImage, ImageLoadError> {
    let file = std::fs::File::open(path).map_err(|e| ImageLoadError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    decode(std::io::BufReader::new(file), path)
}

/// Decodes image bytes (a dropped or pasted file) with bounded dimensions and memory, the
/// format sniffed from the content, and the EXIF orientation applied. `name` is what errors
/// call it.
pub fn load_image_bytes(bytes: &[u8], name: &Path) -> Result<image::DynamicImage, ImageLoadError> {
    decode(std::io::Cursor::new(bytes), name)
}

/// Refuses a size the bounded loader would refuse, before anything is allocated for it.
pub fn check_dimensions(width: u64, height: u64) -> Result<(), String> {
    let side = u64::from(MAX_LOAD_SIDE);
    if width == 0 || height == 0 {
        return Err(format!("{width} x {height} is empty"));
    }
    if width > side || height > side {
        return Err(format!(
            "{width} x {height} is larger than {MAX_LOAD_SIDE} px on a side"
        ));
    }
    if width * height * 4 > MAX_LOAD_BYTES {
        return Err(format!("{width} x {height} needs too much memory"));
    }
    Ok(())
}

fn decode(
    reader: impl std::io::BufRead + std::io::Seek,
    path: &Path,
) -> Result<image::DynamicImage, ImageLoadError> {
    use image::ImageDecoder;
    let fail = |reason: String| ImageLoadError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = image::ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_LOAD_SIDE);
    limits.max_image_height = Some(MAX_LOAD_SIDE);
    limits.max_alloc = Some(MAX_LOAD_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    // A broken orientation tag is no reason to refuse the pixels.
    let orientation = decoder.orientation().ok();
    let mut image = image::DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(image)
}

/// A PNG could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: could not write: {reason}")]
pub struct ImageWriteError {
    pub path: PathBuf,
    pub reason: String,
}

/// Writes `image` as a PNG through [`crate::fsio`] (durably): a crash or a full disk never
/// leaves a half-written file, and an existing file at `path` stays intact until the new one
/// is complete. Any pixel type PNG holds (RGB, RGBA, grey).
pub fn write_png_atomically<P>(
    image: &image::ImageBuffer<P, Vec<P::Subpixel>>,
    path: &Path,
) -> Result<(), ImageWriteError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    let fail = |reason: String| ImageWriteError {
        path: path.to_path_buf(),
        reason,
    };
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    crate::fsio::write_file(path, &png, crate::fsio::Durability::Durable)
        .map_err(|e| fail(e.source.to_string()))
}

/// Tiles equally sized images into a grid, `cols` per row, with `pad` pixels of `background`
/// around and between them, each scaled up by `scale` (nearest neighbour, to keep pixels crisp).
pub fn grid(
    images: &[image::RgbImage],
    cols: u32,
    pad: u32,
    scale: u32,
    background: [u8; 3],
) -> image::RgbImage {
    let Some(first) = images.first() else {
        return image::RgbImage::new(1, 1);
    };
    let cols = cols.max(1);
    let scale = scale.max(1);
    let (w, h) = (first.width() * scale, first.height() * scale);
    let rows = (images.len() as u32).div_ceil(cols);
    let mut out = image::RgbImage::from_pixel(
        cols * w + (cols + 1) * pad,
        rows * h + (rows + 1) * pad,
        image::Rgb(background),
    );
    for (i, img) in images.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        let big = image::imageops::resize(img, w, h, image::imageops::FilterType::Nearest);
        image::imageops::replace(
            &mut out,
            &big,
            (pad + c * (w + pad)) as i64,
            (pad + r * (h + pad)) as i64,
        );
    }
    out
}

/// A minimal line chart of one or more series (log-scaled y, each smoothed with a moving
/// average), side by side in equal panels; light grid lines at powers of ten. No text: the
/// caller's documentation says what the panels are.
pub fn plot_series(series: &[(Vec<f64>, [u8; 3])], panel_w: u32, h: u32) -> image::RgbImage {
    let n = series.len().max(1) as u32;
    let mut img = image::RgbImage::from_pixel(panel_w * n, h, image::Rgb([255, 255, 255]));
    let margin = 8u32;
    for (k, (values, colour)) in series.iter().enumerate() {
        let x0 = k as u32 * panel_w;
        let finite: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        if finite.len() < 2 {
            continue;
        }
        let window = (finite.len() / 50).max(1);
        let smooth: Vec<f64> = (0..finite.len())
            .map(|i| {
                let lo = i.saturating_sub(window);
                finite[lo..=i].iter().sum::<f64>() / (i - lo + 1) as f64
            })
            .collect();
        let (lo, hi) = smooth.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| {
            (a.min(v.ln()), b.max(v.ln()))
        });
        let span = (hi - lo).max(1e-9);
        let (w, hh) = ((panel_w - 2 * margin) as f64, (h - 2 * margin) as f64);
        // Frame and decade grid lines.
        for x in x0 + margin..x0 + panel_w - margin {
            img.put_pixel(x, h - margin, image::Rgb([120, 120, 120]));
        }
        for y in margin..h - margin {
            img.put_pixel(x0 + margin, y, image::Rgb([120, 120, 120]));
        }
        let mut decade = (lo / std::f64::consts::LN_10).ceil();
        while decade * std::f64::consts::LN_10 <= hi {
            let y = (h - margin) as f64 - (decade * std::f64::consts::LN_10 - lo) / span * hh;
            for x in (x0 + margin..x0 + panel_w - margin).step_by(3) {
                img.put_pixel(x, y as u32, image::Rgb([200, 200, 200]));
            }
            decade += 1.0;
        }
        let point = |i: usize| {
            let x = x0 as f64 + margin as f64 + i as f64 / (smooth.len() - 1) as f64 * w;
            let y = (h - margin) as f64 - (smooth[i].ln() - lo) / span * hh;
            (x, y)
        };
        for i in 1..smooth.len() {
            let (ax, ay) = point(i - 1);
            let (bx, by) = point(i);
            let steps = ((bx - ax).abs().max((by - ay).abs()).ceil() as usize).max(1);
            for s in 0..=steps {
                let t = s as f64 / steps as f64;
                let (x, y) = (ax + (bx - ax) * t, ay + (by - ay) * t);
                for dy in 0..2u32 {
                    let (px, py) = (x as u32, (y as u32 + dy).min(h - 1));
                    if px < img.width() {
                        img.put_pixel(px, py, image::Rgb(*colour));
                    }
                }
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_scaled_tiles_with_padding() {
        let red = image::RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 0]));
        let blue = image::RgbImage::from_pixel(2, 2, image::Rgb([0, 0, 255]));
        let g = grid(&[red, blue.clone(), blue], 2, 1, 2, [255, 255, 255]);
        assert_eq!(g.dimensions(), (2 * 4 + 3, 2 * 4 + 3));
        assert_eq!(g.get_pixel(1, 1).0, [255, 0, 0]);
        assert_eq!(g.get_pixel(6, 1).0, [0, 0, 255]);
        assert_eq!(g.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(g.get_pixel(1, 6).0, [0, 0, 255]);
        assert_eq!(g.get_pixel(10, 10).0, [255, 255, 255]);
    }

    #[test]
    fn plot_draws_each_series_in_its_colour() {
        let falling: Vec<f64> = (1..200).map(|i| 10.0 / i as f64).collect();
        let p = plot_series(
            &[(falling.clone(), [10, 20, 30]), (falling, [200, 0, 0])],
            100,
            80,
        );
        assert_eq!(p.dimensions(), (200, 80));
        let count = |c: [u8; 3], x: std::ops::Range<u32>| {
            p.enumerate_pixels()
                .filter(|(px, _, v)| x.contains(px) && v.0 == c)
                .count()
        };
        assert!(count([10, 20, 30], 0..100) > 50);
        assert!(count([200, 0, 0], 100..200) > 50);
        assert_eq!(count([200, 0, 0], 0..100), 0);
    }

    #[test]
    fn unreadable_images_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("x.png");
        std::fs::write(&bad, [0x89, b'P', b'N', b'G']).unwrap();
        assert!(matches!(
            load_image_file(&bad),
            Err(ImageLoadError::Decode { .. })
        ));
        assert!(matches!(
            load_image_file(&dir.path().join("missing.png")),
            Err(ImageLoadError::Io { .. })
        ));
    }
}
