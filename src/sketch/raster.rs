//! Anti-aliased coverage of a round-brush stroke on a pixel grid, and flood fill regions.

use super::Stroke;

/// Calls `paint(x, y, coverage_0_to_1)` once for every pixel the stroke touches, with the
/// stroke scaled by `scale` (`[x, y]`, target pixels per canvas pixel) onto a
/// `width` x `height` grid. Overlapping segments of one stroke do not add up. With pen
/// pressure the brush's radius follows it along the stroke.
pub(super) fn stroke_coverage(
    stroke: &Stroke,
    scale: [f32; 2],
    width: u32,
    height: u32,
    mut paint: impl FnMut(u32, u32, f32),
) {
    let points: Vec<[f32; 2]> = stroke
        .points_in_canvas
        .iter()
        .map(|p| [p[0] * scale[0], p[1] * scale[1]])
        .collect();
    let Some(first) = points.first() else {
        return;
    };
    let full = stroke.brush_size_px * 0.5 * (scale[0] + scale[1]) * 0.5;
    let radii: Vec<f32> = (0..points.len())
        .map(|i| (full * stroke.pressure_at(i)).max(0.25))
        .collect();
    let reach = radii.iter().copied().fold(0.25, f32::max) + 1.0;

    // Bounding box of the whole stroke, clipped to the grid.
    let (mut min_x, mut min_y, mut max_x, mut max_y) = (first[0], first[1], first[0], first[1]);
    for p in &points {
        min_x = min_x.min(p[0]);
        min_y = min_y.min(p[1]);
        max_x = max_x.max(p[0]);
        max_y = max_y.max(p[1]);
    }
    let Some((x0, x1)) = clip_span(min_x - reach, max_x + reach, width) else {
        return;
    };
    let Some((y0, y1)) = clip_span(min_y - reach, max_y + reach, height) else {
        return;
    };
    let box_w = (x1 - x0 + 1) as usize;
    let box_h = (y1 - y0 + 1) as usize;
    let mut coverage = vec![0.0_f32; box_w * box_h];

    let segments: Vec<(usize, usize)> = if points.len() == 1 {
        vec![(0, 0)]
    } else {
        (0..points.len() - 1).map(|i| (i, i + 1)).collect()
    };
    for (ia, ib) in segments {
        let (a, b) = (points[ia], points[ib]);
        let (ra, rb) = (radii[ia], radii[ib]);
        let r_max = ra.max(rb) + 1.0;
        let Some((sx0, sx1)) = clip_span(a[0].min(b[0]) - r_max, a[0].max(b[0]) + r_max, width)
        else {
            continue;
        };
        let Some((sy0, sy1)) = clip_span(a[1].min(b[1]) - r_max, a[1].max(b[1]) + r_max, height)
        else {
            continue;
        };
        for y in sy0..=sy1 {
            for x in sx0..=sx1 {
                let centre = [x as f32 + 0.5, y as f32 + 0.5];
                let (d, t) = distance_to_segment(centre, a, b);
                let radius = ra + (rb - ra) * t;
                let cover = (radius + 0.5 - d).clamp(0.0, 1.0);
                if cover > 0.0 {
                    let i = (y - y0) as usize * box_w + (x - x0) as usize;
                    coverage[i] = coverage[i].max(cover);
                }
            }
        }
    }
    for (i, cover) in coverage.into_iter().enumerate() {
        if cover > 0.0 {
            let x = x0 + (i % box_w) as u32;
            let y = y0 + (i / box_w) as u32;
            paint(x, y, cover);
        }
    }
}

/// The pixels of a `width` x `height` grid connected to `seed` through 4-neighbours for
/// which `inside` holds, grown by one pixel (8-neighbours) so that the anti-aliased rim of
/// the lines around the region is filled too and no light seam stays. Row-major.
pub(super) fn flood_region(
    width: u32,
    height: u32,
    seed: (u32, u32),
    inside: impl Fn(u32, u32) -> bool,
) -> Vec<bool> {
    let (w, h) = (width as usize, height as usize);
    let mut region = vec![false; w * h];
    if seed.0 >= width || seed.1 >= height || !inside(seed.0, seed.1) {
        return region;
    }
    // Span fill: each popped seed fills its row left and right, then seeds the rows above
    // and below once per run of inside pixels.
    let mut stack = vec![seed];
    while let Some((x, y)) = stack.pop() {
        let row = y as usize * w;
        if region[row + x as usize] {
            continue;
        }
        let mut left = x;
        while left > 0 && !region[row + left as usize - 1] && inside(left - 1, y) {
            left -= 1;
        }
        let mut right = x;
        while right + 1 < width && !region[row + right as usize + 1] && inside(right + 1, y) {
            right += 1;
        }
        for xi in left..=right {
            region[row + xi as usize] = true;
        }
        for ny in [y.checked_sub(1), (y + 1 < height).then_some(y + 1)]
            .into_iter()
            .flatten()
        {
            let nrow = ny as usize * w;
            let mut run = false;
            for xi in left..=right {
                let open = !region[nrow + xi as usize] && inside(xi, ny);
                if open && !run {
                    stack.push((xi, ny));
                }
                run = open;
            }
        }
    }
    let mut grown = region.clone();
    for i in (0..w * h).filter(|&i| region[i]) {
        for j in neighbours8(i, w, h) {
            grown[j] = true;
        }
    }
    grown
}

/// The indices of the (up to) eight neighbours of pixel `i` on a row-major `w` x `h` grid.
pub(super) fn neighbours8(i: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let (x, y) = ((i % w) as isize, (i / w) as isize);
    (-1isize..=1)
        .flat_map(|dy| (-1isize..=1).map(move |dx| (dx, dy)))
        .filter(|&d| d != (0, 0))
        .filter_map(move |(dx, dy)| {
            let (nx, ny) = (x + dx, y + dy);
            (nx >= 0 && ny >= 0 && nx < w as isize && ny < h as isize)
                .then(|| ny as usize * w + nx as usize)
        })
}

/// The pixel indices `[lo, hi]` covered by the span, or `None` if it misses the grid.
fn clip_span(lo: f32, hi: f32, size: u32) -> Option<(u32, u32)> {
    if size == 0 || hi < 0.0 || lo >= size as f32 || !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let lo = lo.floor().max(0.0) as u32;
    let hi = (hi.ceil() as u32).min(size - 1);
    (lo <= hi).then_some((lo, hi))
}

/// The distance from `p` to the segment `a`-`b`, and where along it (0 at `a`, 1 at `b`) the
/// closest point lies.
fn distance_to_segment(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> (f32, f32) {
    let ab = [b[0] - a[0], b[1] - a[1]];
    let ap = [p[0] - a[0], p[1] - a[1]];
    let len_sq = ab[0] * ab[0] + ab[1] * ab[1];
    let t = if len_sq > 0.0 {
        ((ap[0] * ab[0] + ap[1] * ab[1]) / len_sq).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let closest = [a[0] + ab[0] * t, a[1] + ab[1] * t];
    let (dx, dy) = (p[0] - closest[0], p[1] - closest[1]);
    ((dx * dx + dy * dy).sqrt(), t)
}
