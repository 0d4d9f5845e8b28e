//! Anti-aliased coverage of a round-brush stroke on a pixel grid.

use super::Stroke;

/// Calls `paint(x, y, coverage_0_to_1)` once for every pixel the stroke touches, with the
/// stroke scaled by `scale` (`[x, y]`, target pixels per canvas pixel) onto a
/// `width` x `height` grid. Overlapping segments of one stroke do not add up.
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
    let radius = (stroke.brush_size_px * 0.5 * (scale[0] + scale[1]) * 0.5).max(0.25);
    let reach = radius + 1.0;

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

    let segments: Vec<([f32; 2], [f32; 2])> = if points.len() == 1 {
        vec![(points[0], points[0])]
    } else {
        points.windows(2).map(|w| (w[0], w[1])).collect()
    };
    for (a, b) in segments {
        let Some((sx0, sx1)) = clip_span(a[0].min(b[0]) - reach, a[0].max(b[0]) + reach, width)
        else {
            continue;
        };
        let Some((sy0, sy1)) = clip_span(a[1].min(b[1]) - reach, a[1].max(b[1]) + reach, height)
        else {
            continue;
        };
        for y in sy0..=sy1 {
            for x in sx0..=sx1 {
                let centre = [x as f32 + 0.5, y as f32 + 0.5];
                let d = distance_to_segment(centre, a, b);
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

/// The pixel indices `[lo, hi]` covered by the span, or `None` if it misses the grid.
fn clip_span(lo: f32, hi: f32, size: u32) -> Option<(u32, u32)> {
    if size == 0 || hi < 0.0 || lo >= size as f32 || !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let lo = lo.floor().max(0.0) as u32;
    let hi = (hi.ceil() as u32).min(size - 1);
    (lo <= hi).then_some((lo, hi))
}

fn distance_to_segment(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
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
    (dx * dx + dy * dy).sqrt()
}
