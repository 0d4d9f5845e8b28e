//! Control-image preprocessors: a drawing, photo or picture turned into what a ControlNet was
//! trained on, white lines on black. Plain image code (no network, no model):
//!
//! - [`scribble`]: the strokes of a drawing as white on black. A dark-on-light drawing (a pen
//!   on paper, a photo of a sheet) is recognised by its light background and inverted.
//! - [`canny`]: Canny edges with OpenCV's semantics (3x3 Sobel, L1 magnitude, non-maximum
//!   suppression along the gradient, hysteresis between two thresholds), as the Canny
//!   ControlNets were trained with `cv2.Canny`.
//! - [`xdog`]: sd-webui-controlnet's "scribble xdog": a thresholded difference of Gaussians,
//!   thick hand-drawn-looking lines from a picture.
//! - [`soft_edge`]: a soft line-art map, the gradient magnitude of the slightly blurred picture
//!   rescaled to full range (for soft-edge / line-art ControlNets).

use image::{GrayImage, Luma, RgbImage};
use serde::{Deserialize, Serialize};

/// A preprocessor and its settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Preprocessor {
    /// The image as it is (already a control image).
    None,
    #[default]
    Scribble,
    Canny {
        low: u8,
        high: u8,
    },
    Xdog {
        threshold: u8,
    },
    SoftEdge,
}

impl Preprocessor {
    pub const NAMES: [&'static str; 5] = ["none", "scribble", "canny", "xdog", "softedge"];

    /// The preprocessor by its command-line name, with default settings.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "scribble" => Self::Scribble,
            "canny" => Self::Canny {
                low: 100,
                high: 200,
            },
            "xdog" => Self::Xdog { threshold: 32 },
            "softedge" => Self::SoftEdge,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Scribble => "scribble",
            Self::Canny { .. } => "canny",
            Self::Xdog { .. } => "xdog",
            Self::SoftEdge => "softedge",
        }
    }

    /// The control image for `img`.
    pub fn apply(self, img: &RgbImage) -> RgbImage {
        match self {
            Self::None => img.clone(),
            Self::Scribble => scribble(img),
            _ => to_rgb(&self.apply_gray(img)),
        }
    }

    /// [`Preprocessor::apply`] as one grey channel (the edge maps without their RGB copy),
    /// as the studio's control layer keeps it.
    pub fn apply_gray(self, img: &RgbImage) -> GrayImage {
        match self {
            Self::None | Self::Scribble => {
                image::DynamicImage::ImageRgb8(self.apply(img)).to_luma8()
            }
            Self::Canny { low, high } => canny(img, low, high),
            Self::Xdog { threshold } => xdog(img, threshold),
            Self::SoftEdge => soft_edge(img),
        }
    }
}

fn to_rgb(g: &GrayImage) -> RgbImage {
    RgbImage::from_fn(g.width(), g.height(), |x, y| {
        let v = g.get_pixel(x, y)[0];
        image::Rgb([v, v, v])
    })
}

fn luma(p: &image::Rgb<u8>) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// A dark-on-light drawing: most of the picture is light.
pub fn is_dark_on_light(img: &RgbImage) -> bool {
    let n = (img.width() as usize * img.height() as usize).max(1);
    let light = img.pixels().filter(|p| luma(p) > 127.0).count();
    light * 2 > n
}

/// The drawing's strokes as white on black (a dark-on-light drawing is inverted): a pixel is a
/// stroke where it is darker than mid grey on a light background (`min(R,G,B) < 127`, as
/// ControlNet's scribble demo) or lighter on a dark one (`max(R,G,B) > 127`).
pub fn scribble(img: &RgbImage) -> RgbImage {
    let dark_strokes = is_dark_on_light(img);
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y);
        let stroke = if dark_strokes {
            p.0.iter().copied().min().unwrap_or(255) < 127
        } else {
            p.0.iter().copied().max().unwrap_or(0) > 127
        };
        let v = if stroke { 255 } else { 0 };
        image::Rgb([v, v, v])
    })
}

/// The 3x3 Sobel derivatives of one channel, borders replicated (OpenCV's default for Canny).
fn sobel(ch: &[i32], w: usize, h: usize) -> (Vec<i32>, Vec<i32>) {
    let at = |x: isize, y: isize| -> i32 {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        ch[y * w + x]
    };
    let mut dx = vec![0; w * h];
    let mut dy = vec![0; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            dx[i] = (at(x + 1, y - 1) + 2 * at(x + 1, y) + at(x + 1, y + 1))
                - (at(x - 1, y - 1) + 2 * at(x - 1, y) + at(x - 1, y + 1));
            dy[i] = (at(x - 1, y + 1) + 2 * at(x, y + 1) + at(x + 1, y + 1))
                - (at(x - 1, y - 1) + 2 * at(x, y - 1) + at(x + 1, y - 1));
        }
    }
    (dx, dy)
}

/// Canny edges (255 on edges, 0 elsewhere) with OpenCV's rules: per pixel the colour channel
/// with the largest L1 gradient, non-maximum suppression in four directions (tan 22.5°
/// sectors), pixels above `high` seed edges that grow through pixels above `low`.
pub fn canny(img: &RgbImage, low: u8, high: u8) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (low, high) = (low.min(high) as i32, low.max(high) as i32);
    let mut gx = vec![0i32; w * h];
    let mut gy = vec![0i32; w * h];
    let mut mag = vec![0i32; w * h];
    for c in 0..3 {
        let ch: Vec<i32> = img.pixels().map(|p| p[c] as i32).collect();
        let (dx, dy) = sobel(&ch, w, h);
        for i in 0..w * h {
            let m = dx[i].abs() + dy[i].abs();
            if m > mag[i] {
                mag[i] = m;
                gx[i] = dx[i];
                gy[i] = dy[i];
            }
        }
    }
    let m_at = |x: isize, y: isize| -> i32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0
        } else {
            mag[y as usize * w + x as usize]
        }
    };
    // tan(22.5°) in 15-bit fixed point, as OpenCV.
    const TG22: i64 = 13573;
    // 0: not an edge, 1: weak (above low), 2: strong (above high).
    let mut kind = vec![0u8; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            let m = mag[i];
            if m <= low {
                continue;
            }
            let (ax, ay) = (
                gx[i].unsigned_abs() as i64,
                (gy[i].unsigned_abs() as i64) << 15,
            );
            let tg22x = ax * TG22;
            let keep = if ay < tg22x {
                m > m_at(x - 1, y) && m >= m_at(x + 1, y)
            } else if ay > tg22x + (ax << 16) {
                m > m_at(x, y - 1) && m >= m_at(x, y + 1)
            } else {
                let s: isize = if (gx[i] < 0) != (gy[i] < 0) { -1 } else { 1 };
                m > m_at(x - s, y - 1) && m > m_at(x + s, y + 1)
            };
            if keep {
                kind[i] = if m > high { 2 } else { 1 };
            }
        }
    }
    // Hysteresis: grow from the strong pixels through the weak ones, 8-connected.
    let mut out = GrayImage::new(w as u32, h as u32);
    let mut stack: Vec<usize> = (0..w * h).filter(|&i| kind[i] == 2).collect();
    let mut on = vec![false; w * h];
    for &i in &stack {
        on[i] = true;
    }
    while let Some(i) = stack.pop() {
        for j in super::raster::neighbours8(i, w, h) {
            if kind[j] > 0 && !on[j] {
                on[j] = true;
                stack.push(j);
            }
        }
    }
    for (i, &e) in on.iter().enumerate() {
        if e {
            out.put_pixel((i % w) as u32, (i / w) as u32, Luma([255]));
        }
    }
    out
}

/// A separable Gaussian blur of a float plane (OpenCV's kernel size for floats,
/// `round(8σ + 1) | 1`, and its reflect-101 border).
fn gaussian(plane: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let size = (((sigma * 8.0 + 1.0).round() as usize) | 1).max(3);
    let half = (size / 2) as isize;
    let mut kernel: Vec<f32> = (0..size)
        .map(|i| {
            let d = i as f32 - half as f32;
            (-(d * d) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        if n == 1 {
            return 0;
        }
        let mut i = i;
        loop {
            if i < 0 {
                i = -i;
            } else if i >= n {
                i = 2 * n - 2 - i;
            } else {
                return i as usize;
            }
        }
    };
    let mut tmp = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, c)| c * plane[y * w + reflect(x as isize + k as isize - half, w)])
                .sum();
        }
    }
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, c)| c * tmp[reflect(y as isize + k as isize - half, h) * w + x])
                .sum();
        }
    }
    out
}

fn planes(img: &RgbImage) -> [Vec<f32>; 3] {
    std::array::from_fn(|c| img.pixels().map(|p| p[c] as f32).collect())
}

/// sd-webui-controlnet's "scribble xdog": per channel the Gaussian blur at σ 5 minus the one at
/// σ 0.5 (positive where a pixel is darker than its surroundings), the smallest over the
/// channels; a line where it exceeds `threshold / 2` (default threshold 32).
pub fn xdog(img: &RgbImage, threshold: u8) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let p = planes(img);
    let mut m = vec![f32::INFINITY; w * h];
    for plane in &p {
        let g1 = gaussian(plane, w, h, 0.5);
        let g2 = gaussian(plane, w, h, 5.0);
        for i in 0..w * h {
            m[i] = m[i].min(g2[i] - g1[i]);
        }
    }
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let dog = (255.0 - m[y as usize * w + x as usize]).clamp(0.0, 255.0) as u8;
        let line = 2 * (255 - dog as i32) > threshold as i32;
        Luma([if line { 255 } else { 0 }])
    })
}

/// A soft edge map: the Sobel gradient magnitude of the picture's luminance blurred at σ 1,
/// scaled so its 99th percentile is white.
pub fn soft_edge(img: &RgbImage) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let l: Vec<f32> = img.pixels().map(luma).collect();
    let l = gaussian(&l, w, h, 1.0);
    let at = |x: isize, y: isize| -> f32 {
        l[y.clamp(0, h as isize - 1) as usize * w + x.clamp(0, w as isize - 1) as usize]
    };
    let mut mag = vec![0f32; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let dx = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x - 1, y)
                - at(x - 1, y + 1);
            let dy = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x, y - 1)
                - at(x + 1, y - 1);
            mag[y as usize * w + x as usize] = (dx * dx + dy * dy).sqrt();
        }
    }
    let mut sorted = mag.clone();
    sorted.sort_by(f32::total_cmp);
    let top = sorted
        .get(sorted.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0.0)
        .max(1e-3);
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let v = mag[y as usize * w + x as usize] / top;
        Luma([(v.min(1.0) * 255.0).round() as u8])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filled square of `fg` on `bg`, `size` px, the square from `a` to `b` (exclusive).
    fn square(size: u32, a: u32, b: u32, fg: [u8; 3], bg: [u8; 3]) -> RgbImage {
        RgbImage::from_fn(size, size, |x, y| {
            let inside = (a..b).contains(&x) && (a..b).contains(&y);
            image::Rgb(if inside { fg } else { bg })
        })
    }

    fn lit(g: &GrayImage) -> Vec<(u32, u32)> {
        g.enumerate_pixels()
            .filter(|(_, _, p)| p[0] == 255)
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    #[test]
    fn a_filled_squares_canny_edges_are_its_outline() {
        let img = square(32, 8, 24, [255, 255, 255], [0, 0, 0]);
        let edges = canny(&img, 100, 200);
        let on = lit(&edges);
        assert!(!on.is_empty());
        // Every edge pixel lies on the square's border (one pixel either side of it), none
        // inside or far outside it.
        for &(x, y) in &on {
            let near = |v: u32, e: u32| v + 1 >= e && v <= e;
            let on_vertical = (near(x, 8) || near(x, 24)) && (7..=24).contains(&y);
            let on_horizontal = (near(y, 8) || near(y, 24)) && (7..=24).contains(&x);
            assert!(on_vertical || on_horizontal, "edge at ({x}, {y})");
        }
        // The outline is closed: every side has edges along its whole length.
        for k in 9..23 {
            assert!(
                on.iter().any(|&(x, y)| y == k && x <= 8),
                "left side at y {k}"
            );
            assert!(
                on.iter().any(|&(x, y)| y == k && x >= 23),
                "right side at y {k}"
            );
            assert!(on.iter().any(|&(x, y)| x == k && y <= 8), "top at x {k}");
            assert!(
                on.iter().any(|&(x, y)| x == k && y >= 23),
                "bottom at x {k}"
            );
        }
        // Thin: one line per side, not a band.
        assert!(on.len() < 4 * 18 * 2, "{} edge pixels", on.len());
        // A flat picture has no edges; a faint square none above the thresholds.
        assert!(lit(&canny(
            &square(32, 8, 24, [90, 90, 90], [90, 90, 90]),
            100,
            200
        ))
        .is_empty());
        assert!(lit(&canny(
            &square(32, 8, 24, [100, 100, 100], [90, 90, 90]),
            100,
            200
        ))
        .is_empty());
    }

    #[test]
    fn scribble_inverts_a_dark_on_light_drawing() {
        // A pen line on paper and the same line in white on black give the same control image.
        let mut paper = RgbImage::from_pixel(24, 24, image::Rgb([240, 235, 220]));
        let mut night = RgbImage::from_pixel(24, 24, image::Rgb([0, 0, 0]));
        for x in 4..20 {
            for y in 11..13 {
                paper.put_pixel(x, y, image::Rgb([20, 20, 40]));
                night.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        assert!(is_dark_on_light(&paper));
        assert!(!is_dark_on_light(&night));
        let a = scribble(&paper);
        assert_eq!(a, scribble(&night));
        assert_eq!(a.get_pixel(10, 11).0, [255, 255, 255]);
        assert_eq!(a.get_pixel(10, 5).0, [0, 0, 0]);
        assert_eq!(a.pixels().filter(|p| p[0] == 255).count(), 16 * 2);
    }

    #[test]
    fn xdog_draws_the_dark_lines_of_a_picture() {
        // A dark line on a light ground is a line; the flat ground is not.
        let mut img = RgbImage::from_pixel(48, 48, image::Rgb([220, 220, 220]));
        for y in 0..48 {
            for x in 22..25 {
                img.put_pixel(x, y, image::Rgb([30, 30, 30]));
            }
        }
        let lines = xdog(&img, 32);
        assert_eq!(lines.get_pixel(23, 24)[0], 255);
        assert_eq!(lines.get_pixel(5, 24)[0], 0);
        assert_eq!(lines.get_pixel(40, 10)[0], 0);
    }

    #[test]
    fn soft_edges_are_bright_at_edges_and_dark_on_flat_areas() {
        let img = square(32, 8, 24, [200, 60, 60], [20, 20, 80]);
        let e = soft_edge(&img);
        assert!(e.get_pixel(8, 16)[0] > 200);
        assert_eq!(e.get_pixel(16, 16)[0], 0);
        assert_eq!(e.get_pixel(2, 2)[0], 0);
    }

    #[test]
    fn preprocessors_by_name() {
        for name in Preprocessor::NAMES {
            assert_eq!(Preprocessor::from_name(name).unwrap().name(), name);
        }
        assert!(Preprocessor::from_name("hed").is_none());
        let img = square(16, 4, 12, [255, 255, 255], [0, 0, 0]);
        for name in Preprocessor::NAMES {
            let out = Preprocessor::from_name(name).unwrap().apply(&img);
            assert_eq!(out.dimensions(), (16, 16), "{name}");
        }
    }
}
