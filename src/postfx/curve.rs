//! Tone curves: a monotone cubic (Fritsch–Carlson) spline through user points, and its baked
//! lookup table ([`CurveLut`]), which is what both the CPU path and a shader sample.
//!
//! Points are (input, output) pairs in sRGB-encoded 0..1 units. Outside the first and last
//! point the curve continues as a straight line along its end tangent, and the LUT extends
//! the same way (its end segments are extrapolated), so values outside 0..1 are never clamped.

use super::colour::Rgb;

/// Samples in a baked curve LUT over input 0..=1.
pub const CURVE_LUT_SIZE: usize = 1024;

/// A monotone cubic spline through sanitised points. Fewer than two usable points is the
/// identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Spline {
    xs: Vec<f32>,
    ys: Vec<f32>,
    tangents: Vec<f32>,
}

impl Spline {
    /// Builds the spline: drops non-finite points, clamps to 0..=1, sorts by input and keeps
    /// the last of points with equal inputs.
    pub fn new(points: &[(f32, f32)]) -> Self {
        let mut pts: Vec<(f32, f32)> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)))
            .collect();
        // Stable sort keeps user order among equal inputs; then keep the last of each run.
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut dedup: Vec<(f32, f32)> = Vec::with_capacity(pts.len());
        for p in pts {
            match dedup.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => dedup.push(p),
            }
        }
        if dedup.len() < 2 {
            return Self {
                xs: Vec::new(),
                ys: Vec::new(),
                tangents: Vec::new(),
            };
        }
        let xs: Vec<f32> = dedup.iter().map(|p| p.0).collect();
        let ys: Vec<f32> = dedup.iter().map(|p| p.1).collect();
        let n = xs.len();
        let secants: Vec<f32> = (0..n - 1)
            .map(|k| (ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k]))
            .collect();
        let mut m = vec![0.0_f32; n];
        m[0] = secants[0];
        m[n - 1] = secants[n - 2];
        for k in 1..n - 1 {
            let (d0, d1) = (secants[k - 1], secants[k]);
            m[k] = if d0 * d1 > 0.0 { (d0 + d1) * 0.5 } else { 0.0 };
        }
        for k in 0..n - 1 {
            let d = secants[k];
            if d == 0.0 {
                m[k] = 0.0;
                m[k + 1] = 0.0;
                continue;
            }
            let (a, b) = (m[k] / d, m[k + 1] / d);
            let s = a * a + b * b;
            if s > 9.0 {
                let tau = 3.0 / s.sqrt();
                m[k] = tau * a * d;
                m[k + 1] = tau * b * d;
            }
        }
        Self {
            xs,
            ys,
            tangents: m,
        }
    }

    /// True when the spline maps every input to itself.
    pub fn is_identity(&self) -> bool {
        self.xs.is_empty() || self.xs.iter().zip(&self.ys).all(|(x, y)| x == y)
    }

    /// The curve's output for `x` (any real input).
    pub fn eval(&self, x: f32) -> f32 {
        let n = self.xs.len();
        if n < 2 || self.is_identity() {
            return x;
        }
        if x <= self.xs[0] {
            return self.ys[0] + (x - self.xs[0]) * self.tangents[0];
        }
        if x >= self.xs[n - 1] {
            return self.ys[n - 1] + (x - self.xs[n - 1]) * self.tangents[n - 1];
        }
        // Segment k with xs[k] <= x < xs[k + 1].
        let k = self
            .xs
            .partition_point(|&xk| xk <= x)
            .saturating_sub(1)
            .min(n - 2);
        let h = self.xs[k + 1] - self.xs[k];
        let t = (x - self.xs[k]) / h;
        let (t2, t3) = (t * t, t * t * t);
        let h00 = 2.0 * t3 - 3.0 * t2 + 1.0;
        let h10 = t3 - 2.0 * t2 + t;
        let h01 = -2.0 * t3 + 3.0 * t2;
        let h11 = t3 - t2;
        h00 * self.ys[k]
            + h10 * h * self.tangents[k]
            + h01 * self.ys[k + 1]
            + h11 * h * self.tangents[k + 1]
    }
}

/// A baked RGB curve: for each channel, [`CURVE_LUT_SIZE`] samples of
/// `master(channel(x))` over x in 0..=1. This is the buffer a shader receives.
#[derive(Clone, Debug, PartialEq)]
pub struct CurveLut {
    /// `channels[c][i]` = output for input `i / (CURVE_LUT_SIZE - 1)` on channel `c`.
    pub channels: [Vec<f32>; 3],
}

impl CurveLut {
    /// Bakes a master curve composed after optional per-channel curves.
    pub fn bake(master: &Spline, per_channel: [&Spline; 3]) -> Self {
        let last = (CURVE_LUT_SIZE - 1) as f32;
        let bake_one = |ch: &Spline| -> Vec<f32> {
            (0..CURVE_LUT_SIZE)
                .map(|i| master.eval(ch.eval(i as f32 / last)))
                .collect()
        };
        Self {
            channels: [
                bake_one(per_channel[0]),
                bake_one(per_channel[1]),
                bake_one(per_channel[2]),
            ],
        }
    }
}

/// Samples one LUT channel at `x` with linear interpolation; the end segments extend
/// linearly beyond 0..=1 (no clamping). Mirrors the shader's lookup.
#[inline]
pub fn sample_lut(lut: &[f32], x: f32) -> f32 {
    let last = lut.len() - 1;
    let t = x * last as f32;
    // NaN and huge values land on an end segment; the `as` cast saturates.
    let i = (t.floor().max(0.0) as usize).min(last - 1);
    let f = t - i as f32;
    lut[i] + (lut[i + 1] - lut[i]) * f
}

/// Applies a baked curve to an encoded RGB triple.
#[inline]
pub fn apply_lut(lut: &CurveLut, encoded: Rgb) -> Rgb {
    [
        sample_lut(&lut.channels[0], encoded[0]),
        sample_lut(&lut.channels[1], encoded[1]),
        sample_lut(&lut.channels[2], encoded[2]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_and_degenerate_splines_are_identity() {
        for pts in [
            vec![],
            vec![(0.3, 0.9)],
            vec![(0.0, 0.0), (1.0, 1.0)],
            vec![(0.2, 0.2), (0.7, 0.7)],
        ] {
            let s = Spline::new(&pts);
            assert!(s.is_identity(), "{pts:?}");
            for x in [-0.5, 0.0, 0.33, 1.0, 1.5] {
                assert_eq!(s.eval(x), x);
            }
        }
    }

    #[test]
    fn spline_passes_through_points_and_stays_monotone() {
        let s = Spline::new(&[
            (1.0, 1.0),
            (0.0, 0.0),
            (0.25, 0.1),
            (0.5, 0.5),
            (0.75, 0.95),
        ]);
        for (x, y) in [
            (0.0, 0.0),
            (0.25, 0.1),
            (0.5, 0.5),
            (0.75, 0.95),
            (1.0, 1.0),
        ] {
            assert!((s.eval(x) - y).abs() < 1e-6, "{x}");
        }
        let mut prev = s.eval(0.0);
        for i in 1..=1000 {
            let v = s.eval(i as f32 / 1000.0);
            assert!(v >= prev - 1e-6, "not monotone at {i}");
            prev = v;
        }
    }

    #[test]
    fn lut_sampling_matches_spline_and_extrapolates() {
        let s = Spline::new(&[(0.0, 0.1), (0.5, 0.6), (1.0, 0.9)]);
        let id = Spline::new(&[]);
        let lut = CurveLut::bake(&s, [&id, &id, &id]);
        for i in 0..=100 {
            let x = i as f32 / 100.0;
            assert!(
                (sample_lut(&lut.channels[0], x) - s.eval(x)).abs() < 1e-4,
                "{x}"
            );
        }
        // Beyond the ends: linear continuation, finite for any input.
        assert!(sample_lut(&lut.channels[0], 1.5) > 0.9);
        // Garbage input must not panic (NaN lands on the first segment).
        let _ = sample_lut(&lut.channels[0], f32::NAN);
        let _ = sample_lut(&lut.channels[0], f32::INFINITY);
        let _ = sample_lut(&lut.channels[0], -1e30);
    }
}
