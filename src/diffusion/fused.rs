//! Group normalisation and SiLU as custom ops with hand-written CPU forward and backward
//! passes. candle's generic versions are built from broadcast and reduction ops whose
//! backward passes dominate training time; these are plain loops over contiguous memory.
//! On other devices the ops fall back to candle's composed implementations. Layer norm and
//! softmax pick candle's fused kernels for inference and its composed, differentiable forms
//! when a backward pass goes through them.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// A custom op's f32 operand as a slice (operands are made contiguous before ops are applied).
pub(super) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("custom op needs a contiguous f32 operand"),
    }
}

/// Cephes' `expf`, shared by [`exp_approx`] and its vector form: adding `ROUND` (1.5 * 2^23)
/// rounds to an integer, which then sits in the low mantissa bits; ln 2 in two parts, so `n ln
/// 2` is exact enough; the polynomial's coefficients, highest power first.
const EXP_ROUND: f32 = 12_582_912.0;
const EXP_LN2: (f32, f32) = (0.693_359_4, -2.121_944_4e-4);
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `exp(x)` for `x` clamped to [-87, 88] (beyond, `exp` leaves the normal floats), within
/// 2e-7 relative of the true value (Cephes' `expf`: `x = n ln 2 + r`, a degree-6 polynomial in
/// `r`, the exponent `n` written into the float's bits). The scalar form: where the CPU has
/// AVX2, [`exp_rows`], [`silu_in_place`] and [`geglu_rows`] run the same steps on eight lanes.
#[inline(always)]
pub(super) fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + EXP_ROUND;
    let n = t - EXP_ROUND;
    let r = x - n * EXP_LN2.0 - n * EXP_LN2.1;
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |p, &c| p * r + c);
    let e = p * r * r + r + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(EXP_ROUND.to_bits() as i32);
    e * f32::from_bits(((k + 127) as u32) << 23)
}

/// `x * sigmoid(x)` through [`exp_approx`].
#[inline(always)]
pub(super) fn silu_approx(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

/// The Chebyshev fit of `erfc` in Numerical Recipes (`erfcc`): for `z >= 0` and `t = 1 / (1 +
/// z / 2)`, `erfc(z) = t exp(-z^2 + P(t))`, fractional error below 1.2e-7; coefficients of `P`,
/// highest power first.
const ERFC_POLY: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];

/// `erf(x)` within 3e-7 of the true value (the fit above through [`exp_approx`]); odd, and 1
/// beyond the floats where `erfc` underflows.
#[inline(always)]
pub(super) fn erf_approx(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = ERFC_POLY[1..].iter().fold(ERFC_POLY[0], |p, &c| p * t + c);
    (1.0 - t * exp_approx(p - z * z)).copysign(x)
}

/// GELU in its exact form, `x (1 + erf(x / sqrt 2)) / 2`, through [`erf_approx`].
#[inline(always)]
pub(super) fn gelu_approx(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Whether this CPU runs the AVX2 + FMA paths below (found at run time; std caches it).
#[cfg(target_arch = "x86_64")]
fn wide_vectors() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// [`exp_approx`] on eight lanes (the same steps; fused multiply-adds round once).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let t = _mm256_fmadd_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(EXP_ROUND),
    );
    let n = _mm256_sub_ps(t, _mm256_set1_ps(EXP_ROUND));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2.0), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2.1), r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let e = _mm256_add_ps(
        _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
        _mm256_set1_ps(1.0),
    );
    let k = _mm256_sub_epi32(
        _mm256_castps_si256(t),
        _mm256_set1_epi32(EXP_ROUND.to_bits() as i32),
    );
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        k,
        _mm256_set1_epi32(127),
    )));
    _mm256_mul_ps(e, scale)
}

/// `row` replaced by `exp(scale * (row - max(row)))`, eight lanes at a time; returns the
/// row's sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_row_avx2(row: &mut [f32], scale: f32) -> f32 {
    use std::arch::x86_64::*;
    let (body, tail) = row.as_chunks_mut::<8>();
    let load = |c: &[f32; 8]| {
        // SAFETY: eight floats, read unaligned.
        unsafe { _mm256_loadu_ps(c.as_ptr()) }
    };
    let lanes = |v: __m256| {
        let mut out = [0f32; 8];
        // SAFETY: eight floats, written unaligned.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        out
    };
    let mut top = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in body.iter() {
        top = _mm256_max_ps(top, load(c));
    }
    let max = lanes(top)
        .iter()
        .chain(tail.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let (vmax, vscale, mut sums) = (
        _mm256_set1_ps(max),
        _mm256_set1_ps(scale),
        _mm256_setzero_ps(),
    );
    for c in body.iter_mut() {
        let e = exp8(_mm256_mul_ps(_mm256_sub_ps(load(c), vmax), vscale));
        sums = _mm256_add_ps(sums, e);
        *c = lanes(e);
    }
    let mut sum: f32 = lanes(sums).iter().sum();
    for v in tail.iter_mut() {
        *v = exp_approx((*v - max) * scale);
        sum += *v;
    }
    sum
}

/// `silu` of every element of `xs`, in place, eight lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_avx2(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let (body, tail) = xs.as_chunks_mut::<8>();
    for c in body.iter_mut() {
        // SAFETY: eight floats, read and written unaligned.
        unsafe {
            let x = _mm256_loadu_ps(c.as_ptr());
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
            _mm256_storeu_ps(
                c.as_mut_ptr(),
                _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e)),
            );
        }
    }
    for v in tail.iter_mut() {
        *v = silu_approx(*v);
    }
}

/// [`gelu_approx`] on eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    let u = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let z = _mm256_andnot_ps(sign, u);
    let t = _mm256_div_ps(one, _mm256_fmadd_ps(z, _mm256_set1_ps(0.5), one));
    let mut p = _mm256_set1_ps(ERFC_POLY[0]);
    for &c in &ERFC_POLY[1..] {
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
    }
    let erfc = _mm256_mul_ps(t, exp8(_mm256_fnmadd_ps(z, z, p)));
    // erf(u) = (1 - erfc(|u|)) with u's sign.
    let erf = _mm256_or_ps(_mm256_sub_ps(one, erfc), _mm256_and_ps(sign, u));
    _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(0.5), x),
        _mm256_add_ps(one, erf),
    )
}

/// One GEGLU row: `out[j] = a[j] * gelu(g[j])`, eight lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn geglu_row_avx2(a: &[f32], g: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (a8, at) = a.as_chunks::<8>();
    let (g8, gt) = g.as_chunks::<8>();
    let (o8, ot) = out.as_chunks_mut::<8>();
    for ((a, g), o) in a8.iter().zip(g8).zip(o8.iter_mut()) {
        // SAFETY: eight floats each, read and written unaligned.
        unsafe {
            let v = _mm256_mul_ps(
                _mm256_loadu_ps(a.as_ptr()),
                gelu8(_mm256_loadu_ps(g.as_ptr())),
            );
            _mm256_storeu_ps(o.as_mut_ptr(), v);
        }
    }
    for ((a, g), o) in at.iter().zip(gt).zip(ot.iter_mut()) {
        *o = a * gelu_approx(*g);
    }
}

/// GEGLU over rows of `2h` floats: each row's first half times the GELU of its second half,
/// into rows of `h` ([`gelu_approx`]; AVX2 where the CPU has it).
pub(super) fn geglu_rows(proj: &[f32], out: &mut [f32], h: usize) {
    for (row, o) in proj
        .chunks_exact(2 * h.max(1))
        .zip(out.chunks_exact_mut(h.max(1)))
    {
        let (a, g) = row.split_at(h);
        #[cfg(target_arch = "x86_64")]
        if wide_vectors() {
            // SAFETY: the CPU has AVX2 and FMA (`wide_vectors`).
            unsafe { geglu_row_avx2(a, g, o) };
            continue;
        }
        for ((o, a), g) in o.iter_mut().zip(a).zip(g) {
            *o = a * gelu_approx(*g);
        }
    }
}

/// `silu` of every element of `xs`, in place ([`silu_approx`]; AVX2 where the CPU has it).
pub(super) fn silu_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide_vectors() {
        // SAFETY: the CPU has AVX2 and FMA (`wide_vectors`).
        return unsafe { silu_avx2(xs) };
    }
    for v in xs.iter_mut() {
        *v = silu_approx(*v);
    }
}

/// Each `m`-wide row of `scores` replaced by `exp(scale * (row - max(row)))` (`scale` > 0),
/// its sum written to `sums` (one per row): the softmax of the scaled row but for the
/// division, which the caller can apply to fewer numbers later (attention divides its output
/// rows). [`exp_approx`]; AVX2 where the CPU has it.
pub(super) fn exp_rows(scores: &mut [f32], m: usize, scale: f32, sums: &mut [f32]) {
    for (row, sum) in scores.chunks_exact_mut(m.max(1)).zip(sums.iter_mut()) {
        #[cfg(target_arch = "x86_64")]
        if wide_vectors() {
            // SAFETY: the CPU has AVX2 and FMA (`wide_vectors`).
            *sum = unsafe { exp_row_avx2(row, scale) };
            continue;
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        *sum = 0.0;
        for v in row.iter_mut() {
            *v = exp_approx((*v - max) * scale);
            *sum += *v;
        }
    }
}

/// Each `m`-wide row of `scores` replaced by its softmax ([`exp_rows`], then divided).
#[cfg(test)]
fn softmax_rows(scores: &mut [f32], m: usize) {
    let mut sums = vec![0f32; scores.len() / m.max(1)];
    exp_rows(scores, m, 1.0, &mut sums);
    for (row, sum) in scores.chunks_exact_mut(m.max(1)).zip(&sums) {
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// `GroupNorm` with the same parameters (`weight`, `bias`) and maths as diffusers/candle.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    fallback: candle_nn::GroupNorm,
}

pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    let fallback = candle_nn::group_norm(groups, channels, eps, vb.clone())?;
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
    Ok(GroupNorm {
        weight,
        bias,
        groups,
        eps,
        fallback,
    })
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    /// SiLU applied to the normalised values in the same pass (inference only: the op's
    /// backward is that of the plain norm, so it runs through `apply_op3_no_bwd`).
    silu: bool,
}

impl GroupNormOp {
    /// Per (batch, group): mean and 1/std.
    fn stats(&self, x: &[f32], b: usize, c: usize, hw: usize) -> Vec<(f32, f32)> {
        let cg = c / self.groups;
        let n = (cg * hw) as f64;
        (0..b * self.groups)
            .into_par_iter()
            .map(|bg| {
                let chunk = &x[bg * cg * hw..(bg + 1) * cg * hw];
                let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = chunk
                    .iter()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>()
                    / n;
                (mean as f32, (1.0 / (var + self.eps).sqrt()) as f32)
            })
            .collect()
    }
}

fn dims(shape: &Shape) -> Result<(usize, usize, usize)> {
    let d = shape.dims();
    if d.len() < 2 {
        candle_core::bail!("group norm needs [B, C, ...], got {d:?}");
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "atelier-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let gamma = contiguous_f32(s2, l2)?;
        let beta = contiguous_f32(s3, l3)?;
        let (b, c, hw) = dims(l1.shape())?;
        let cg = c / self.groups;
        let stats = self.stats(x, b, c, hw);
        let mut out = vec![0f32; x.len()];
        // One (batch, group) slab per task.
        out.par_chunks_mut(cg * hw)
            .enumerate()
            .for_each(|(bg, slab)| {
                let (mean, inv) = stats[bg];
                let first_ch = (bg % self.groups) * cg;
                let src = &x[bg * cg * hw..(bg + 1) * cg * hw];
                for (k, (o, v)) in slab.chunks_mut(hw).zip(src.chunks(hw)).enumerate() {
                    let ch = first_ch + k;
                    let (g, be) = (gamma[ch] * inv, beta[ch]);
                    for (oi, &vi) in o.iter_mut().zip(v) {
                        *oi = (vi - mean) * g + be;
                    }
                    if self.silu {
                        silu_in_place(o);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = x.shape().clone();
        let (b, c, hw) = dims(&shape)?;
        let cg = c / self.groups;
        let xv = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gv = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gamma_v = gamma.to_vec1::<f32>()?;
        let stats = self.stats(&xv, b, c, hw);
        let mut dx = vec![0f32; xv.len()];
        let n = (cg * hw) as f64;
        // Per (batch, group) slab: dx, and that slab's share of dgamma/dbeta per channel.
        let partial: Vec<Vec<(f64, f64)>> = dx
            .par_chunks_mut(cg * hw)
            .enumerate()
            .map(|(bg, dslab)| {
                let (mean, inv) = stats[bg];
                let first_ch = (bg % self.groups) * cg;
                let base = bg * cg * hw;
                let (mut s1, mut s2) = (0f64, 0f64);
                let mut per_channel = Vec::with_capacity(cg);
                for k in 0..cg {
                    let ch = first_ch + k;
                    let (mut dg, mut db) = (0f64, 0f64);
                    for i in base + k * hw..base + (k + 1) * hw {
                        let xhat = ((xv[i] - mean) * inv) as f64;
                        let dy = gv[i] as f64;
                        dg += dy * xhat;
                        db += dy;
                        let dyg = dy * gamma_v[ch] as f64;
                        s1 += dyg;
                        s2 += dyg * xhat;
                    }
                    per_channel.push((dg, db));
                }
                let (m1, m2) = ((s1 / n) as f32, (s2 / n) as f32);
                for k in 0..cg {
                    let ch = first_ch + k;
                    for j in 0..hw {
                        let i = base + k * hw + j;
                        let xhat = (xv[i] - mean) * inv;
                        dslab[k * hw + j] = inv * (gv[i] * gamma_v[ch] - m1 - xhat * m2);
                    }
                }
                per_channel
            })
            .collect();
        let mut dgamma = vec![0f64; c];
        let mut dbeta = vec![0f64; c];
        for (bg, chans) in partial.iter().enumerate() {
            let first_ch = (bg % self.groups) * cg;
            for (k, (dg, db)) in chans.iter().enumerate() {
                dgamma[first_ch + k] += dg;
                dbeta[first_ch + k] += db;
            }
        }
        let dev = x.device();
        let to = |v: Vec<f64>| {
            Tensor::from_vec(v.into_iter().map(|x| x as f32).collect::<Vec<_>>(), c, dev)
        };
        Ok((
            Some(Tensor::from_vec(dx, shape, dev)?),
            Some(to(dgamma)?),
            Some(to(dbeta)?),
        ))
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
            return self.fallback.forward(x);
        }
        x.contiguous()?.apply_op3(
            &self.weight.contiguous()?,
            &self.bias.contiguous()?,
            GroupNormOp {
                groups: self.groups,
                eps: self.eps,
                silu: false,
            },
        )
    }
}

impl GroupNorm {
    /// `silu(self.forward(x))`; for inference in one pass over the picture and one output
    /// (no normalised copy in between), for training the differentiable pair.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        let tracked = x.track_op() || self.weight.track_op() || self.bias.track_op();
        if tracked || !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
            return silu(&self.forward(x)?);
        }
        x.contiguous()?.apply_op3_no_bwd(
            &self.weight.contiguous()?,
            &self.bias.contiguous()?,
            &GroupNormOp {
                groups: self.groups,
                eps: self.eps,
                silu: true,
            },
        )
    }
}

/// Adds `rhs` into a tensor's own storage.
struct AddInPlace;

impl candle_core::InplaceOp2 for AddInPlace {
    fn name(&self) -> &'static str {
        "atelier-add-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let rhs = contiguous_f32(s2, l2)?;
        let Some((a, b)) = l1.contiguous_offsets() else {
            candle_core::bail!("add in place needs a contiguous f32 operand")
        };
        let CpuStorage::F32(dst) = s1 else {
            candle_core::bail!("add in place needs f32")
        };
        dst[a..b]
            .par_chunks_mut(1 << 14)
            .zip(rhs.par_chunks(1 << 14))
            .for_each(|(d, r)| {
                for (d, &r) in d.iter_mut().zip(r) {
                    *d += r;
                }
            });
        Ok(())
    }
}

/// `fresh + rhs`, written into `fresh`'s storage for inference (no third picture-sized
/// buffer): `fresh` must be a tensor no one else holds, such as an op's output just made.
/// Training (a tracked operand), other devices and dtypes, or other shapes add as usual.
pub fn add_into(fresh: Tensor, rhs: &Tensor) -> Result<Tensor> {
    let plain = fresh.device().is_cpu()
        && fresh.dtype() == candle_core::DType::F32
        && rhs.dtype() == candle_core::DType::F32
        && fresh.shape() == rhs.shape()
        && fresh.is_contiguous()
        && !fresh.track_op()
        && !rhs.track_op();
    if !plain {
        return fresh + rhs;
    }
    fresh.inplace_op2(&rhs.contiguous()?, &AddInPlace)?;
    Ok(fresh)
}

struct SiluOp;

impl CustomOp1 for SiluOp {
    fn name(&self) -> &'static str {
        "atelier-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(o, x)| {
                o.copy_from_slice(x);
                silu_in_place(o);
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let xv = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gv = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let dx: Vec<f32> = xv
            .par_iter()
            .zip(&gv)
            .map(|(&v, &g)| {
                let s = 1.0 / (1.0 + (-v).exp());
                g * s * (1.0 + v * (1.0 - s))
            })
            .collect();
        Ok(Some(Tensor::from_vec(dx, x.shape().clone(), x.device())?))
    }
}

/// SiLU (x * sigmoid(x)).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return candle_nn::ops::silu(x);
    }
    x.contiguous()?.apply_op1(SiluOp)
}

/// GEGLU's gate: `[.., 2h]` to `[.., h]`, inference only.
struct GegluOp;

impl CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "atelier-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let dims = l.shape().dims();
        let h = dims.last().copied().unwrap_or(0) / 2;
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = h;
        }
        let mut out = vec![0f32; x.len() / 2];
        if let Some(rows) = (1usize << 14).checked_div(h) {
            let rows = rows + 1;
            out.par_chunks_mut(rows * h)
                .zip(x.par_chunks(rows * 2 * h))
                .for_each(|(o, x)| geglu_rows(x, o, h));
        }
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// diffusers' GEGLU gate on a projection `[.., 2h]`: its first half times the exact (erf)
/// GELU of its second half. Inference on the CPU runs it in one pass ([`geglu_rows`]) instead
/// of two strided halves, a GELU and a product; training, other devices and dtypes take the
/// composed, differentiable form.
pub fn geglu(proj: &Tensor) -> Result<Tensor> {
    let last = proj.dim(candle_core::D::Minus1)?;
    if last % 2 != 0 {
        candle_core::bail!("GEGLU needs an even last dimension, got {last}");
    }
    let half = last / 2;
    if proj.device().is_cpu() && proj.dtype() == candle_core::DType::F32 && !proj.track_op() {
        return proj.contiguous()?.apply_op1_no_bwd(&GegluOp);
    }
    let gate = proj
        .narrow(candle_core::D::Minus1, half, half)?
        .gelu_erf()?;
    proj.narrow(candle_core::D::Minus1, 0, half)? * gate
}

/// Layer normalisation that keeps its gradients. candle-nn's fused `layer_norm` is applied
/// with `apply_op3_no_bwd`: it cuts the backward pass, so nothing before it (a text encoder,
/// a transformer block's input) would learn. Where the input or the weights take part in a
/// backward pass the composed, differentiable form is used; inference keeps the fused kernel.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    inner: candle_nn::LayerNorm,
    eps: f64,
}

pub fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let inner = candle_nn::layer_norm(dim, eps, vb)?;
    if inner.bias().is_none() {
        candle_core::bail!("layer norm without a bias");
    }
    Ok(LayerNorm { inner, eps })
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = self.inner.weight();
        match self.inner.bias() {
            Some(bias) if x.track_op() || weight.track_op() || bias.track_op() => {
                candle_nn::ops::layer_norm_slow(x, weight, bias, self.eps as f32)
            }
            _ => self.inner.forward(x),
        }
    }
}

/// Softmax over the last dimension that keeps its gradient: candle-nn's fused
/// `softmax_last_dim` is not differentiable (`apply_op1_no_bwd`), which would leave attention
/// queries and keys untrained. Inference keeps the fused kernel.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, candle_core::D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    /// The inference (fused) and training (composed) forms of layer norm and softmax agree, and
    /// the training form's gradients are finite under a causal -inf mask.
    #[test]
    fn layer_norm_and_softmax_agree_between_inference_and_training() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let ln = layer_norm(8, 1e-5, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let x = Tensor::randn(0f32, 2.0, (3, 5, 8), &dev).unwrap();
        let plain = ln.inner.forward(&x).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let tracked = ln.forward(v.as_tensor()).unwrap();
        let d = (plain - &tracked)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(tracked
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&v)
            .is_some());

        let mask: Vec<f32> = (0..25)
            .map(|i| {
                if i % 5 > i / 5 {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (5, 5), &dev).unwrap();
        let s = Tensor::randn(0f32, 3.0, (2, 5, 5), &dev).unwrap();
        let sv = Var::from_tensor(&s).unwrap();
        let fused = softmax_last_dim(&s.broadcast_add(&mask).unwrap()).unwrap();
        let composed = softmax_last_dim(&sv.as_tensor().broadcast_add(&mask).unwrap()).unwrap();
        let d = (&fused - &composed)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        let w = Tensor::randn(0f32, 1.0, (2, 5, 5), &dev).unwrap();
        let grads = (composed * w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = grads
            .get(&sv)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn group_norm_and_silu_match_candle_forward_and_backward() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let gn = group_norm(4, 8, 1e-5, vb.pp("gn")).unwrap();
        // Non-trivial affine parameters.
        gn.weight
            .affine(1.5, 0.2)
            .and_then(|w| vm.data().lock().unwrap().get("gn.weight").unwrap().set(&w))
            .unwrap();
        let x = Var::randn(0f32, 2.0, (2, 8, 3, 5), &dev).unwrap();
        let loss = |y: Tensor| (y.sqr().unwrap() * 0.5).unwrap().sum_all().unwrap();
        let ours = loss(silu(&gn.forward(x.as_tensor()).unwrap()).unwrap());
        let theirs =
            loss(candle_nn::ops::silu(&gn.fallback.forward(x.as_tensor()).unwrap()).unwrap());
        let (a, b) = (
            ours.to_scalar::<f32>().unwrap(),
            theirs.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-3 * b.abs().max(1.0), "{a} vs {b}");
        let ga = ours.backward().unwrap();
        let gb = theirs.backward().unwrap();
        for (name, t) in [
            ("x", x.as_tensor()),
            ("weight", &gn.weight),
            ("bias", &gn.bias),
        ] {
            let d: f32 = (ga.get(t).unwrap() - gb.get(t).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-3, "d{name} off by {d}");
        }
    }

    /// The one-pass group norm + SiLU equals the two ops; a tracked input takes the two ops
    /// (and its gradient flows); the in-place add equals the add and leaves its operand alone.
    #[test]
    fn fused_group_norm_silu_and_add_in_place_match_the_plain_ops() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let gn = group_norm(4, 8, 1e-5, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let x = Tensor::randn(0f32, 2.0, (2, 8, 5, 3), &dev).unwrap();
        let max_diff = super::super::max_abs_diff;
        let two_ops = silu(&gn.forward(&x).unwrap()).unwrap();
        assert!(max_diff(&gn.forward_silu(&x).unwrap(), &two_ops) < 1e-6);
        let v = Var::from_tensor(&x).unwrap();
        let tracked = gn.forward_silu(v.as_tensor()).unwrap();
        assert!(max_diff(&tracked, &two_ops) < 1e-6);
        let grads = tracked.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&v).is_some());

        let rhs = Tensor::randn(0f32, 1.0, (2, 8, 5, 3), &dev).unwrap();
        let rhs_before = rhs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expected = (&two_ops + &rhs).unwrap();
        let fresh = silu(&gn.forward(&x).unwrap()).unwrap();
        let sum = add_into(fresh, &rhs).unwrap();
        assert_eq!(max_diff(&sum, &expected), 0.0);
        assert_eq!(
            rhs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            rhs_before
        );
        // A broadcast operand is not added in place: the plain add says what is wrong.
        let row = Tensor::ones((8, 1, 1), DType::F32, &dev).unwrap();
        assert!(add_into(sum, &row).is_err());
    }

    /// The vectorisable `exp` stays within 2e-7 relative of libm's over the range it keeps
    /// (and clamps beyond); softmax rows through it match the plain softmax and sum to 1.
    #[test]
    fn approximate_exp_and_softmax_match_libm() {
        let mut worst = 0f64;
        for i in 0..175_000 {
            let x = -87.0 + i as f32 * 0.001;
            let want = (x as f64).exp();
            let rel = ((exp_approx(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(-1e30).is_finite() && exp_approx(-1e30) < 1e-37);
        assert!(exp_approx(1e30).is_finite());
        let silu_err = (-2000..2000)
            .map(|i| i as f32 * 0.01)
            .map(|x| (silu_approx(x) - x / (1.0 + (-x).exp())).abs())
            .fold(0f32, f32::max);
        assert!(silu_err < 1e-5, "{silu_err}");
        // The vector path (where the CPU has one) and the scalar one agree.
        let mut xs: Vec<f32> = (-2003..2000).map(|i| i as f32 * 0.01).collect();
        let scalar: Vec<f32> = xs.iter().map(|&x| silu_approx(x)).collect();
        silu_in_place(&mut xs);
        for (a, b) in xs.iter().zip(&scalar) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} {b}");
        }

        let m = 37;
        let mut rows: Vec<f32> = (0..5 * m)
            .map(|i| ((i * 7919) % 201) as f32 * 0.1 - 10.0)
            .collect();
        let want: Vec<f32> = rows
            .chunks(m)
            .flat_map(|r| {
                let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = r.iter().map(|v| (v - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                e.into_iter().map(move |v| v / sum)
            })
            .collect();
        softmax_rows(&mut rows, m);
        for (a, b) in rows.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        for r in rows.chunks(m) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    /// GEGLU in one pass equals the composed form (candle's exact GELU of the second half times
    /// the first) to 1e-6, through the vector path and the scalar one; the erf under it stays
    /// within 3e-7 of candle's; a tracked projection keeps its gradient; an odd width is refused.
    #[test]
    fn geglu_in_one_pass_matches_the_composed_form() {
        let dev = Device::Cpu;
        let erf_err = (-8000..8000)
            .map(|i| i as f32 * 0.001)
            .map(|x| {
                let want = Tensor::new(&[x], &dev).unwrap().erf().unwrap();
                (erf_approx(x) - want.to_vec1::<f32>().unwrap()[0]).abs()
            })
            .fold(0f32, f32::max);
        assert!(erf_err < 3e-7, "erf off by {erf_err}");
        assert_eq!(erf_approx(-30.0), -1.0);

        let half = 37; // a row of 4 vectors and a tail of 5
                       // Seeded draws (3 standard deviations wide), so a failure reproduces.
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
        let draws: Vec<f32> = (0..2 * 9 * 2 * half)
            .map(|_| 3.0 * rand::Rng::sample::<f32, _>(&mut rng, rand_distr::StandardNormal))
            .collect();
        let proj = Tensor::from_vec(draws, (2, 9, 2 * half), &dev).unwrap();
        let composed = (proj.narrow(2, 0, half).unwrap()
            * proj.narrow(2, half, half).unwrap().gelu_erf().unwrap())
        .unwrap();
        let fused = geglu(&proj).unwrap();
        assert_eq!(fused.dims(), &[2, 9, half]);
        // Within 1e-6 of the value, or absolutely for values under 1: products reach tens,
        // where one f32 rounding step is already several 1e-6.
        let want = composed.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = fused.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} {b}");
        }
        let values = proj.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scalar: Vec<f32> = values
            .chunks(2 * half)
            .flat_map(|r| (0..half).map(move |j| r[j] * gelu_approx(r[half + j])))
            .collect();
        let vector = fused.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in vector.iter().zip(&scalar) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} {b}");
        }

        let var = Var::from_tensor(&proj).unwrap();
        let grads = geglu(var.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grad = grads
            .get(var.as_tensor())
            .expect("a gradient for the projection");
        let total: f32 = grad.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(total > 0.0);
        assert!(geglu(&Tensor::zeros((2, 5), DType::F32, &dev).unwrap()).is_err());
    }
}
