//! Samplers over one noise schedule read from `scheduler_config.json`: DDIM, Euler, Euler
//! ancestral, Heun, UniPC (bh2, order 2), DPM++ 2M (with or without Karras sigmas), DPM++ 2M SDE
//! with Karras sigmas, and LCM. Each follows the matching diffusers scheduler's maths and
//! timestep spacing as `from_config` of the model's own scheduler file would set it up, so seeds
//! and outputs carry across tools.
//!
//! A sampler works in *evaluations* (UNet calls): most evaluate once per step, Heun twice per
//! step but the last (a predictor and a corrector), so [`Sampler::evaluations`] maps the user's
//! steps onto them; progress, image-to-image strength and inpainting count in the user's steps.
//! The stochastic samplers (Euler ancestral, DPM++ 2M SDE, multi-step LCM) draw their fresh noise
//! from the job's seeded [`NoiseRng`], never a global RNG, so one seed gives one picture.

use std::ops::Range;

use candle_core::{Result, Tensor};

use super::noise::NoiseRng;
use crate::generation::SamplerKind;
use crate::models::config::SchedulerFileConfig;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prediction {
    Epsilon,
    V,
    Sample,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spacing {
    Leading,
    Linspace,
    Trailing,
}

/// The training noise schedule: `alphas_cumprod` and how the UNet's output is meant.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    pub alphas_cumprod: Vec<f64>,
    pub prediction: Prediction,
    pub spacing: Option<Spacing>,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    /// x0 clipping as the file says (`None`: the key is absent, and each scheduler class has its
    /// own default: on for DDIM, off for Heun and LCM).
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    /// LCM's distillation schedule length (`original_inference_steps`).
    pub lcm_original_steps: usize,
    /// LCM's boundary-condition timestep scale (`timestep_scaling`).
    pub timestep_scaling: f64,
}

impl NoiseSchedule {
    pub fn from_config(c: &SchedulerFileConfig) -> std::result::Result<Self, String> {
        let n = c.num_train_timesteps.max(2);
        let betas: Vec<f64> = match c.beta_schedule.as_str() {
            "linear" => (0..n)
                .map(|i| c.beta_start + (c.beta_end - c.beta_start) * i as f64 / (n - 1) as f64)
                .collect(),
            "scaled_linear" => {
                let (a, b) = (c.beta_start.sqrt(), c.beta_end.sqrt());
                (0..n)
                    .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).powi(2))
                    .collect()
            }
            "squaredcos_cap_v2" => {
                let f = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - f(t2) / f(t1)).min(0.999)
                    })
                    .collect()
            }
            other => return Err(format!("unsupported beta_schedule {other:?}")),
        };
        let mut acc = 1.0;
        let mut alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        if c.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&mut alphas_cumprod);
        }
        let prediction = match c.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" => Prediction::Sample,
            other => return Err(format!("unsupported prediction_type {other:?}")),
        };
        let spacing = match c.timestep_spacing.as_deref() {
            None => None,
            Some("leading") => Some(Spacing::Leading),
            Some("linspace") => Some(Spacing::Linspace),
            Some("trailing") => Some(Spacing::Trailing),
            Some(other) => return Err(format!("unsupported timestep_spacing {other:?}")),
        };
        Ok(Self {
            alphas_cumprod,
            prediction,
            spacing,
            steps_offset: c.steps_offset,
            set_alpha_to_one: c.set_alpha_to_one,
            clip_sample: c.clip_sample,
            clip_sample_range: c.clip_sample_range,
            lcm_original_steps: c.original_inference_steps.unwrap_or(50),
            timestep_scaling: c.timestep_scaling.unwrap_or(10.0),
        })
    }

    /// The x0 clipping range for a scheduler class whose own default is `default_on`.
    fn clip_range(&self, default_on: bool) -> Option<f64> {
        self.clip_sample
            .unwrap_or(default_on)
            .then_some(self.clip_sample_range)
    }

    fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `sqrt((1 - acp) / acp)` at a (fractional) training timestep, linearly interpolated.
    fn sigma_at(&self, t: f64) -> f64 {
        let s = |i: usize| {
            let a = self.alphas_cumprod[i];
            ((1.0 - a) / a).sqrt()
        };
        let t = t.clamp(0.0, (self.train_steps() - 1) as f64);
        let lo = t.floor() as usize;
        let hi = (lo + 1).min(self.train_steps() - 1);
        let w = t - lo as f64;
        s(lo) * (1.0 - w) + s(hi) * w
    }

    /// The inverse of `sigma_at` in log space (diffusers' `_sigma_to_t`).
    fn t_for_sigma(&self, sigma: f64) -> f64 {
        let log_sigmas: Vec<f64> = (0..self.train_steps())
            .map(|i| self.sigma_at(i as f64).ln())
            .collect();
        let ls = sigma.max(1e-10).ln();
        let lo = log_sigmas
            .iter()
            .rposition(|&l| ls - l >= 0.0)
            .unwrap_or(0)
            .min(log_sigmas.len() - 2);
        let hi = lo + 1;
        let w = ((log_sigmas[lo] - ls) / (log_sigmas[lo] - log_sigmas[hi])).clamp(0.0, 1.0);
        (1.0 - w) * lo as f64 + w * hi as f64
    }

    /// Inference timesteps, high to low.
    fn timesteps(&self, n: usize, default: Spacing, round: bool) -> Vec<f64> {
        let t_max = self.train_steps();
        let spacing = self.spacing.unwrap_or(default);
        let mut ts: Vec<f64> = match spacing {
            Spacing::Leading => {
                let ratio = t_max / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            Spacing::Linspace => (0..n)
                .rev()
                .map(|i| {
                    if n == 1 {
                        0.0
                    } else {
                        (t_max - 1) as f64 * i as f64 / (n - 1) as f64
                    }
                })
                .collect(),
            Spacing::Trailing => {
                let ratio = t_max as f64 / n as f64;
                (0..n)
                    .map(|i| (t_max as f64 - i as f64 * ratio).round() - 1.0)
                    .collect()
            }
        };
        if round {
            ts.iter_mut().for_each(|t| *t = t.round());
        }
        ts
    }

    /// The multistep solvers' (UniPC, DPM-Solver) timesteps: `n + 1` points without the last.
    fn multistep_timesteps(&self, n: usize) -> Vec<f64> {
        let t_max = self.train_steps();
        match self.spacing.unwrap_or(Spacing::Linspace) {
            Spacing::Linspace => (1..=n)
                .rev()
                .map(|i| ((t_max - 1) as f64 * i as f64 / n as f64).round())
                .collect(),
            Spacing::Leading => {
                let ratio = t_max / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = t_max as f64 / n as f64;
                (0..n)
                    .map(|i| (t_max as f64 - i as f64 * ratio).round() - 1.0)
                    .collect()
            }
        }
    }
}

/// Shifts and scales `sqrt(alphas_cumprod)` so the first value stays and the last becomes zero
/// (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1).
/// The last value is then raised to 2^-24, as diffusers' sigma-based schedulers do, so that
/// `sigma = sqrt((1 - a) / a)` stays finite (4096) for every sampler and for training alike.
fn rescale_zero_terminal_snr(alphas_cumprod: &mut [f64]) {
    let (Some(&first), Some(&last)) = (alphas_cumprod.first(), alphas_cumprod.last()) else {
        return;
    };
    let (s0, s_t) = (first.sqrt(), last.sqrt());
    if s0 - s_t <= 0.0 {
        return;
    }
    for a in alphas_cumprod.iter_mut() {
        let s = (a.sqrt() - s_t) * s0 / (s0 - s_t);
        *a = s * s;
    }
    if let Some(a) = alphas_cumprod.last_mut() {
        *a = 2f64.powi(-24);
    }
}

/// `a * x + b * y`.
fn lin(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    x.affine(a, 0.0)? + y.affine(b, 0.0)?
}

/// VP-space conversion of a model output to the predicted clean sample `x0`.
fn vp_x0(pred: Prediction, out: &Tensor, x: &Tensor, alpha: f64, sigma: f64) -> Result<Tensor> {
    match pred {
        Prediction::Epsilon => lin(1.0 / alpha, x, -sigma / alpha, out),
        Prediction::V => lin(alpha, x, -sigma, out),
        Prediction::Sample => Ok(out.clone()),
    }
}

/// VP `(alpha_t, sigma_t)` for a k-diffusion sigma.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// k-diffusion-space conversion of a model output to `x0`, for a sample `x = x0 + sigma * eps`
/// that the UNet saw scaled by `1 / sqrt(sigma^2 + 1)` (diffusers' Euler and Heun schedulers).
fn k_x0(pred: Prediction, out: &Tensor, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let s2 = sigma * sigma + 1.0;
    match pred {
        Prediction::Epsilon => lin(1.0, x, -sigma, out),
        Prediction::V => lin(1.0 / s2, x, -sigma / s2.sqrt(), out),
        Prediction::Sample => Ok(out.clone()),
    }
}

/// One denoising algorithm set up for a number of steps. Indices `i` below count UNet
/// evaluations (see [`Sampler::evaluations`]) and must be stepped in order.
pub trait Sampler {
    /// The UNet timestep of each evaluation.
    fn timesteps(&self) -> &[f64];
    /// The evaluations that make up the user's step `step` (`0..steps`). One each, unless a
    /// sampler calls the UNet more than once per step.
    fn evaluations(&self, step: usize) -> Range<usize> {
        step..step + 1
    }
    /// Scale applied to unit Gaussian noise for the first latent (1 for the variance-preserving
    /// samplers: DDIM, DPM++, UniPC, LCM).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// The latents as the UNet takes them (as they are, for the variance-preserving samplers).
    fn scale_model_input(&self, x: &Tensor, _i: usize) -> Result<Tensor> {
        Ok(x.clone())
    }
    /// Advances `x` past evaluation `i`, given the UNet output for it.
    fn step(&mut self, out: &Tensor, i: usize, x: &Tensor, rng: &mut NoiseRng) -> Result<Tensor>;
    /// Noises a clean latent to the level the latents have before evaluation `i` (image-to-image
    /// start, inpainting).
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor>;
}

pub fn build(kind: SamplerKind, schedule: &NoiseSchedule, steps: usize) -> Box<dyn Sampler + Send> {
    let steps = steps.max(1);
    match kind {
        SamplerKind::Ddim => Box::new(Ddim::new(schedule, steps)),
        SamplerKind::Euler => Box::new(Euler::new(schedule, steps, false)),
        SamplerKind::EulerAncestral => Box::new(Euler::new(schedule, steps, true)),
        SamplerKind::Heun => Box::new(Heun::new(schedule, steps)),
        SamplerKind::UniPc => Box::new(UniPc::new(schedule, steps)),
        SamplerKind::DpmPp2m => Box::new(DpmPp2m::new(schedule, steps, false)),
        SamplerKind::DpmPp2mKarras => Box::new(DpmPp2m::new(schedule, steps, true)),
        SamplerKind::DpmPp2mSdeKarras => Box::new(DpmPp2m::new(schedule, steps, true).sde()),
        SamplerKind::Lcm => Box::new(Lcm::new(schedule, steps)),
    }
}

// ---------------------------------------------------------------------------------------------

pub struct Ddim {
    s: NoiseSchedule,
    ts: Vec<f64>,
    stride: usize,
}

impl Ddim {
    fn new(s: &NoiseSchedule, n: usize) -> Self {
        Self {
            ts: s.timesteps(n, Spacing::Leading, true),
            stride: s.train_steps() / n,
            s: s.clone(),
        }
    }

    fn acp(&self, t: i64) -> f64 {
        if t >= 0 {
            self.s.alphas_cumprod[(t as usize).min(self.s.train_steps() - 1)]
        } else if self.s.set_alpha_to_one {
            1.0
        } else {
            self.s.alphas_cumprod[0]
        }
    }
}

impl Sampler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.ts
    }
    fn step(&mut self, out: &Tensor, step: usize, x: &Tensor, _: &mut NoiseRng) -> Result<Tensor> {
        let t = self.ts[step] as i64;
        let a = self.acp(t);
        let a_prev = self.acp(t - self.stride as i64);
        let (alpha, sigma) = (a.sqrt(), (1.0 - a).sqrt());
        let mut x0 = vp_x0(self.s.prediction, out, x, alpha, sigma)?;
        if let Some(range) = self.s.clip_range(true) {
            x0 = x0.clamp(-range, range)?;
        }
        // eps re-derived from x0 keeps every prediction type on one path.
        let eps = lin(1.0 / sigma, x, -alpha / sigma, &x0)?;
        lin(a_prev.sqrt(), &x0, (1.0 - a_prev).sqrt(), &eps)
    }
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        let a = self.acp(self.ts[step] as i64);
        lin(a.sqrt(), x0, (1.0 - a).sqrt(), noise)
    }
}

// ---------------------------------------------------------------------------------------------

/// The sigma-space schedule diffusers' Euler, Euler ancestral and Heun schedulers share: the
/// timesteps of the config's spacing (fractional under "linspace", as diffusers leaves them),
/// the sigma of each by linear interpolation over the training steps, a final 0, and the scale
/// of the initial noise (`sqrt(sigma_max^2 + 1)` under "leading" spacing).
struct SigmaSteps {
    ts: Vec<f64>,
    /// One per step plus a final 0.
    sigmas: Vec<f64>,
    init_sigma: f64,
}

impl SigmaSteps {
    fn new(s: &NoiseSchedule, n: usize) -> Self {
        let spacing = s.spacing.unwrap_or(Spacing::Linspace);
        let ts = s.timesteps(n, Spacing::Linspace, spacing != Spacing::Linspace);
        let mut sigmas: Vec<f64> = ts.iter().map(|&t| s.sigma_at(t)).collect();
        let max = sigmas.iter().cloned().fold(0.0, f64::max);
        sigmas.push(0.0);
        let init_sigma = match spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        };
        Self {
            ts,
            sigmas,
            init_sigma,
        }
    }

    fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigmas[i];
        x.affine(1.0 / (s * s + 1.0).sqrt(), 0.0)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        lin(1.0, x0, self.sigmas[i], noise)
    }
}

/// Euler's method on the probability-flow ODE (diffusers' EulerDiscreteScheduler with its
/// defaults: no churn, so deterministic), or Euler ancestral (EulerAncestralDiscreteScheduler).
pub struct Euler {
    s: NoiseSchedule,
    k: SigmaSteps,
    /// Euler a: each step goes down past the target sigma and adds fresh noise back up to it.
    ancestral: bool,
}

impl Euler {
    fn new(s: &NoiseSchedule, n: usize, ancestral: bool) -> Self {
        Self {
            s: s.clone(),
            k: SigmaSteps::new(s, n),
            ancestral,
        }
    }
}

impl Sampler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.k.ts
    }
    fn init_noise_sigma(&self) -> f64 {
        self.k.init_sigma
    }
    fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        self.k.scale_model_input(x, i)
    }
    fn step(&mut self, out: &Tensor, i: usize, x: &Tensor, rng: &mut NoiseRng) -> Result<Tensor> {
        let (from, to) = (self.k.sigmas[i], self.k.sigmas[i + 1]);
        let x0 = k_x0(self.s.prediction, out, x, from)?;
        let d = (x - &x0)?;
        if !self.ancestral {
            // The derivative (x - x0) / sigma times the sigma step.
            return lin(1.0, x, (to - from) / from, &d);
        }
        let up = (to * to * (from * from - to * to) / (from * from))
            .max(0.0)
            .sqrt();
        let down = (to * to - up * up).max(0.0).sqrt();
        // x + (x - x0) / from * (down - from)  ==  x0 + (x - x0) * down / from
        let next = lin(1.0, &x0, down / from, &d)?;
        if up > 0.0 {
            let noise = rng.randn_like(x)?;
            lin(1.0, &next, up, &noise)
        } else {
            Ok(next)
        }
    }
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        self.k.add_noise(x0, noise, i)
    }
}

// ---------------------------------------------------------------------------------------------

/// Heun's second-order method (diffusers' HeunDiscreteScheduler): each step is an Euler
/// predictor to the next sigma and, there, a corrector that averages the two derivatives, so
/// the UNet runs twice per step. The last step, to sigma 0, has no corrector (its derivative
/// would divide by 0): `2 * steps - 1` evaluations. As in diffusers, every sigma but the first
/// and the final 0 is listed twice, so evaluation `i` reads its own level at index `i`.
pub struct Heun {
    s: NoiseSchedule,
    /// Per evaluation: `t0, t1, t1, ..., t(n-1), t(n-1)`.
    ts: Vec<f64>,
    /// Per evaluation plus a final 0: `s0, s1, s1, ..., s(n-1), s(n-1), 0`.
    sigmas: Vec<f64>,
    init_sigma: f64,
    /// Between a predictor and its corrector: the step's starting sample, the predictor's
    /// derivative and the sigma step.
    pending: Option<(Tensor, Tensor, f64)>,
}

impl Heun {
    fn new(s: &NoiseSchedule, n: usize) -> Self {
        let k = SigmaSteps::new(s, n);
        let twice = |v: &[f64]| -> Vec<f64> { v.iter().flat_map(|&x| [x, x]).collect() };
        let mut ts = vec![k.ts[0]];
        ts.extend(twice(&k.ts[1..]));
        let mut sigmas = vec![k.sigmas[0]];
        sigmas.extend(twice(&k.sigmas[1..n]));
        sigmas.push(0.0);
        Self {
            s: s.clone(),
            ts,
            sigmas,
            init_sigma: k.init_sigma,
            pending: None,
        }
    }

    fn x0(&self, out: &Tensor, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let x0 = k_x0(self.s.prediction, out, x, sigma)?;
        match self.s.clip_range(false) {
            Some(range) => x0.clamp(-range, range),
            None => Ok(x0),
        }
    }
}

impl Sampler for Heun {
    fn timesteps(&self) -> &[f64] {
        &self.ts
    }
    fn evaluations(&self, step: usize) -> Range<usize> {
        let first = 2 * step;
        first..(first + 2).min(self.ts.len())
    }
    fn init_noise_sigma(&self) -> f64 {
        self.init_sigma
    }
    fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigmas[i];
        x.affine(1.0 / (s * s + 1.0).sqrt(), 0.0)
    }
    fn step(&mut self, out: &Tensor, i: usize, x: &Tensor, _: &mut NoiseRng) -> Result<Tensor> {
        match self.pending.take() {
            // Predictor: an Euler step from sigma(i) to sigma(i + 1).
            None => {
                let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
                let x0 = self.x0(out, x, sigma)?;
                let d = ((x - &x0)? / sigma)?;
                let dt = next - sigma;
                let predicted = lin(1.0, x, dt, &d)?;
                self.pending = Some((x.clone(), d, dt));
                Ok(predicted)
            }
            // Corrector: the derivative at the predicted point (sigma(i)), averaged with the
            // predictor's, applied from the step's start.
            Some((start, d1, dt)) => {
                let sigma = self.sigmas[i];
                let x0 = self.x0(out, x, sigma)?;
                let d2 = ((x - &x0)? / sigma)?;
                lin(1.0, &start, dt, &lin(0.5, &d1, 0.5, &d2)?)
            }
        }
    }
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        lin(1.0, x0, self.sigmas[i], noise)
    }
}

// ---------------------------------------------------------------------------------------------

/// Shared state of the VP-space multistep solvers (sigmas per step plus a final 0).
struct Multistep {
    s: NoiseSchedule,
    ts: Vec<f64>,
    sigmas: Vec<f64>,
    /// (lambda, x0 prediction) of previous steps, newest last.
    history: Vec<(f64, Tensor)>,
}

impl Multistep {
    fn lambda(sigma: f64) -> f64 {
        let (a, s) = alpha_sigma(sigma);
        a.ln() - s.ln()
    }

    fn x0(&self, out: &Tensor, x: &Tensor, step: usize) -> Result<Tensor> {
        let (a, s) = alpha_sigma(self.sigmas[step]);
        vp_x0(self.s.prediction, out, x, a, s)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        let (a, s) = alpha_sigma(self.sigmas[step]);
        lin(a, x0, s, noise)
    }

    /// The order to use at `step`: grows with history, drops to 1 on the final step.
    fn order(&self, step: usize) -> usize {
        let remaining = self.ts.len() - step;
        2.min(self.history.len() + 1).min(remaining)
    }
}

/// DPM-Solver++(2M) in data prediction (diffusers' DPMSolverMultistepScheduler, solver order 2,
/// midpoint, first order on the first step and on the last, which lands on sigma 0), as the
/// ODE solver ("dpmsolver++") or, with [`DpmPp2m::sde`], the SDE one ("sde-dpmsolver++").
pub struct DpmPp2m {
    m: Multistep,
    /// The SDE variant: each step keeps only `exp(-h)` of the sample's noise direction and
    /// replaces the rest with fresh noise of the target level.
    sde: bool,
}

impl DpmPp2m {
    /// `karras`: Karras et al.'s sigmas (rho 7) between the schedule's ends; otherwise the
    /// schedule's own timesteps with its `timestep_spacing` (diffusers' default
    /// DPMSolverMultistepScheduler), which suits zero-terminal-SNR models: Karras spacing spends
    /// its first steps between sigma 4096 and 250 there, where every picture is still noise.
    fn new(s: &NoiseSchedule, n: usize, karras: bool) -> Self {
        let (ts, mut sigmas): (Vec<f64>, Vec<f64>) = if karras {
            let smin = s.sigma_at(0.0);
            let smax = s.sigma_at((s.train_steps() - 1) as f64);
            let rho = 7.0;
            let (lo, hi) = (smin.powf(1.0 / rho), smax.powf(1.0 / rho));
            let sigmas: Vec<f64> = (0..n)
                .map(|i| {
                    let r = if n == 1 {
                        0.0
                    } else {
                        i as f64 / (n - 1) as f64
                    };
                    (hi + r * (lo - hi)).powf(rho)
                })
                .collect();
            let ts = sigmas.iter().map(|&sg| s.t_for_sigma(sg).round()).collect();
            (ts, sigmas)
        } else {
            let ts = s.multistep_timesteps(n);
            let sigmas = ts.iter().map(|&t| s.sigma_at(t)).collect();
            (ts, sigmas)
        };
        sigmas.push(0.0);
        Self {
            m: Multistep {
                s: s.clone(),
                ts,
                sigmas,
                history: Vec::new(),
            },
            sde: false,
        }
    }

    /// The stochastic variant, `algorithm_type = "sde-dpmsolver++"`.
    fn sde(mut self) -> Self {
        self.sde = true;
        self
    }
}

impl Sampler for DpmPp2m {
    fn timesteps(&self) -> &[f64] {
        &self.m.ts
    }
    fn step(
        &mut self,
        out: &Tensor,
        step: usize,
        x: &Tensor,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let m0 = self.m.x0(out, x, step)?;
        let (s_from, s_to) = (self.m.sigmas[step], self.m.sigmas[step + 1]);
        let order = self.m.order(step);
        let next = if s_to == 0.0 {
            // Both variants return the x0 prediction there (diffusers' SDE noise term has a
            // factor sigma_t = 0).
            m0.clone()
        } else {
            let (a_t, sg_t) = alpha_sigma(s_to);
            let (_, sg_s) = alpha_sigma(s_from);
            let (l_t, l_s) = (Multistep::lambda(s_to), Multistep::lambda(s_from));
            let h = l_t - l_s;
            // ODE: x_t = (sg_t / sg_s) x + a_t (1 - e^-h) D;
            // SDE: x_t = (sg_t / sg_s) e^-h x + a_t (1 - e^-2h) D + sg_t sqrt(1 - e^-2h) z.
            let (keep, gain) = if self.sde {
                (sg_t / sg_s * (-h).exp(), -a_t * (-2.0 * h).exp_m1())
            } else {
                (sg_t / sg_s, -a_t * (-h).exp_m1())
            };
            let first = lin(keep, x, gain, &m0)?;
            let deterministic = match (order, self.m.history.last()) {
                (2, Some((l_prev, m1))) => {
                    let r0 = (l_s - l_prev) / h;
                    let d1 = lin(1.0 / r0, &m0, -1.0 / r0, m1)?;
                    lin(1.0, &first, 0.5 * gain, &d1)?
                }
                _ => first,
            };
            if self.sde {
                let noise = rng.randn_like(x)?;
                let level = sg_t * (-(-2.0 * h).exp_m1()).max(0.0).sqrt();
                lin(1.0, &deterministic, level, &noise)?
            } else {
                deterministic
            }
        };
        self.m.history.push((Multistep::lambda(s_from), m0));
        if self.m.history.len() > 2 {
            self.m.history.remove(0);
        }
        Ok(next)
    }
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        self.m.add_noise(x0, noise, step)
    }
}

// ---------------------------------------------------------------------------------------------

/// Latent Consistency Model sampling (diffusers' LCMScheduler), for LCM-distilled models and
/// models with an LCM-LoRA merged in. Each step maps the sample straight to a clean estimate
/// through the consistency function's boundary condition,
/// `c_skip(t) * x + c_out(t) * x0(x, t)` with `c_skip = 0.25 / ((10 t)^2 + 0.25)` and
/// `c_out = 10 t / sqrt((10 t)^2 + 0.25)` (sigma_data 0.5, `timestep_scaling` 10), and, unless
/// it is the last step, noises that estimate afresh to the next timestep's level. The fresh
/// noise comes from the job's [`NoiseRng`]; one step is deterministic.
pub struct Lcm {
    s: NoiseSchedule,
    ts: Vec<f64>,
}

impl Lcm {
    /// The timesteps are `n` of the distillation schedule's `original_inference_steps` (50)
    /// points `k - 1, 2k - 1, ..., 999` (`k = 1000 / 50`), picked evenly by index from the top:
    /// 1 step is `[999]`, 4 steps `[999, 759, 499, 259]`. diffusers refuses more steps than
    /// that schedule has; here `n` points are spread over the training steps instead, from the
    /// top (`(n - j) * 1000 / n - 1`, rounded down), so any valid request runs.
    fn new(s: &NoiseSchedule, n: usize) -> Self {
        let t_max = s.train_steps();
        let original = s.lcm_original_steps.clamp(1, t_max);
        let ts = if n <= original {
            let k = t_max / original;
            // numpy's floor(linspace(0, original, n, endpoint=False)), in its float arithmetic.
            let stride = original as f64 / n as f64;
            (0..n)
                .map(|j| {
                    let index = ((j as f64 * stride).floor() as usize).min(original - 1);
                    ((original - index) * k - 1) as f64
                })
                .collect()
        } else {
            (0..n)
                .map(|j| ((n - j) as f64 * t_max as f64 / n as f64).floor() - 1.0)
                .collect()
        };
        Self { s: s.clone(), ts }
    }

    fn acp(&self, t: f64) -> f64 {
        self.s.alphas_cumprod[(t.max(0.0) as usize).min(self.s.train_steps() - 1)]
    }
}

impl Sampler for Lcm {
    fn timesteps(&self) -> &[f64] {
        &self.ts
    }
    fn step(&mut self, out: &Tensor, i: usize, x: &Tensor, rng: &mut NoiseRng) -> Result<Tensor> {
        let t = self.ts[i];
        let a = self.acp(t);
        let mut x0 = vp_x0(self.s.prediction, out, x, a.sqrt(), (1.0 - a).sqrt())?;
        if let Some(range) = self.s.clip_range(false) {
            x0 = x0.clamp(-range, range)?;
        }
        let scaled = t * self.s.timestep_scaling;
        let (sigma_data2, scaled2) = (0.25, scaled * scaled);
        let c_skip = sigma_data2 / (scaled2 + sigma_data2);
        let c_out = scaled / (scaled2 + sigma_data2).sqrt();
        let denoised = lin(c_out, &x0, c_skip, x)?;
        match self.ts.get(i + 1) {
            Some(&next) => {
                let a_next = self.acp(next);
                let noise = rng.randn_like(x)?;
                lin(a_next.sqrt(), &denoised, (1.0 - a_next).sqrt(), &noise)
            }
            None => Ok(denoised),
        }
    }
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        let a = self.acp(self.ts[i]);
        lin(a.sqrt(), x0, (1.0 - a).sqrt(), noise)
    }
}

// ---------------------------------------------------------------------------------------------

/// UniPC (bh2 variant, data prediction, order 2) with its corrector on every step but the first.
pub struct UniPc {
    m: Multistep,
    /// The sample before the last predictor, its step and the order used, for the corrector.
    last: Option<(Tensor, usize, usize)>,
}

impl UniPc {
    fn new(s: &NoiseSchedule, n: usize) -> Self {
        let ts = s.multistep_timesteps(n);
        let mut sigmas: Vec<f64> = ts.iter().map(|&t| s.sigma_at(t)).collect();
        sigmas.push(0.0);
        Self {
            m: Multistep {
                s: s.clone(),
                ts,
                sigmas,
                history: Vec::new(),
            },
            last: None,
        }
    }

    /// The B(h) coefficients of bh2 for orders 1 and 2: returns (h_phi_1, b[0], b[1]).
    fn coefficients(h: f64) -> (f64, f64, f64) {
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let b0 = h_phi_k / b_h;
        h_phi_k = h_phi_k / hh - 0.5;
        let b1 = h_phi_k * 2.0 / b_h;
        (h_phi_1, b0, b1)
    }
}

impl Sampler for UniPc {
    fn timesteps(&self) -> &[f64] {
        &self.m.ts
    }
    fn step(&mut self, out: &Tensor, step: usize, x: &Tensor, _: &mut NoiseRng) -> Result<Tensor> {
        let m_t = self.m.x0(out, x, step)?;
        // Corrector: refine the previous predictor's result with the new model output.
        let x = match (self.last.take(), self.m.history.last()) {
            (Some((x_prev, prev_step, order)), Some((l_s0, m0))) => {
                let (s0, st) = (self.m.sigmas[prev_step], self.m.sigmas[step]);
                let (a_t, sg_t) = alpha_sigma(st);
                let (_, sg_s0) = alpha_sigma(s0);
                let h = Multistep::lambda(st) - l_s0;
                let (h_phi_1, b0, b1) = Self::coefficients(h);
                let b_h = h_phi_1;
                let base = lin(sg_t / sg_s0, &x_prev, -a_t * h_phi_1, m0)?;
                let d1_t = (&m_t - m0)?;
                if order >= 2 && self.m.history.len() >= 2 {
                    let (l_s1, m1) = &self.m.history[self.m.history.len() - 2];
                    let rk = (l_s1 - l_s0) / h;
                    let d1 = lin(1.0 / rk, m1, -1.0 / rk, m0)?;
                    // Solve [[1, 1], [rk, 1]] rho = [b0, b1].
                    let rho0 = (b0 - b1) / (1.0 - rk);
                    let rho1 = b0 - rho0;
                    let corr = lin(rho0, &d1, rho1, &d1_t)?;
                    lin(1.0, &base, -a_t * b_h, &corr)?
                } else {
                    lin(1.0, &base, -a_t * b_h * 0.5, &d1_t)?
                }
            }
            _ => x.clone(),
        };
        let (s0, st) = (self.m.sigmas[step], self.m.sigmas[step + 1]);
        let order = self.m.order(step);
        let l_s0 = Multistep::lambda(s0);
        let next = if st == 0.0 {
            m_t.clone()
        } else {
            let (a_t, sg_t) = alpha_sigma(st);
            let (_, sg_s0) = alpha_sigma(s0);
            let h = Multistep::lambda(st) - l_s0;
            let (h_phi_1, _, _) = Self::coefficients(h);
            let base = lin(sg_t / sg_s0, &x, -a_t * h_phi_1, &m_t)?;
            match (order, self.m.history.last()) {
                (2, Some((l_s1, m1))) => {
                    let rk = (l_s1 - l_s0) / h;
                    let d1 = lin(1.0 / rk, m1, -1.0 / rk, &m_t)?;
                    lin(1.0, &base, -a_t * h_phi_1 * 0.5, &d1)?
                }
                _ => base,
            }
        };
        self.m.history.push((l_s0, m_t));
        if self.m.history.len() > 2 {
            self.m.history.remove(0);
        }
        self.last = Some((x, step, order));
        Ok(next)
    }
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        self.m.add_noise(x0, noise, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn sd_config(extra: serde_json::Value) -> SchedulerFileConfig {
        let mut base = serde_json::json!({
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": false,
            "clip_sample": false
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn timesteps_follow_diffusers_spacing_rules() {
        let s = NoiseSchedule::from_config(&sd_config(serde_json::json!({}))).unwrap();
        let ddim = build(SamplerKind::Ddim, &s, 10);
        let want: Vec<f64> = (0..10).rev().map(|i| (i * 100 + 1) as f64).collect();
        assert_eq!(ddim.timesteps(), want.as_slice());
        let unipc = build(SamplerKind::UniPc, &s, 4);
        assert_eq!(unipc.timesteps(), &[999.0, 749.0, 500.0, 250.0]);
        // DPM++ 2M without Karras sigmas uses the same points (diffusers' default spacing).
        let dpm = build(SamplerKind::DpmPp2m, &s, 4);
        assert_eq!(dpm.timesteps(), &[999.0, 749.0, 500.0, 250.0]);
        let trailing = NoiseSchedule::from_config(&sd_config(
            serde_json::json!({"timestep_spacing": "trailing"}),
        ))
        .unwrap();
        assert_eq!(
            build(SamplerKind::Ddim, &trailing, 4).timesteps(),
            &[999.0, 749.0, 499.0, 249.0]
        );
        assert_eq!(
            build(SamplerKind::DpmPp2m, &trailing, 4).timesteps(),
            &[999.0, 749.0, 499.0, 249.0]
        );
        // Euler on a "leading" config: DDIM's points, and the initial noise scaled by
        // sqrt(sigma_max^2 + 1) (diffusers' init_noise_sigma 8.450066, sigma 8.390687 at 901).
        // (A file without `timestep_spacing` gives them diffusers' default, "linspace".)
        let leading = NoiseSchedule::from_config(&sd_config(
            serde_json::json!({"timestep_spacing": "leading"}),
        ))
        .unwrap();
        let euler = build(SamplerKind::Euler, &leading, 10);
        assert_eq!(euler.timesteps(), want.as_slice());
        assert!((euler.init_noise_sigma() - 8.450066).abs() < 1e-4);
        // Heun evaluates every timestep but the first twice; the last step only once.
        let heun = build(SamplerKind::Heun, &leading, 8);
        let mut doubled = vec![876.0];
        for t in [751.0, 626.0, 501.0, 376.0, 251.0, 126.0, 1.0] {
            doubled.extend([t, t]);
        }
        assert_eq!(heun.timesteps(), doubled.as_slice());
        assert_eq!(heun.evaluations(0), 0..2);
        assert_eq!(heun.evaluations(3), 6..8);
        assert_eq!(heun.evaluations(7), 14..15);
        assert!((heun.init_noise_sigma() - 7.439363).abs() < 1e-4);
        // LCM picks from its 50-point distillation schedule, whatever the spacing says.
        for (n, first) in [
            (1, vec![999.0]),
            (4, vec![999.0, 759.0, 499.0, 259.0]),
            (
                8,
                vec![999.0, 879.0, 759.0, 639.0, 499.0, 379.0, 259.0, 139.0],
            ),
        ] {
            assert_eq!(build(SamplerKind::Lcm, &trailing, n).timesteps(), first);
        }
        let lcm50: Vec<f64> = (1..=50).rev().map(|i| (i * 20 - 1) as f64).collect();
        assert_eq!(
            build(SamplerKind::Lcm, &s, 50).timesteps(),
            lcm50.as_slice()
        );
        // Beyond 50 steps (diffusers refuses) the steps spread over the whole training range:
        // from the top, down to the bottom, distinct.
        for n in [51, 60, 150, 600, crate::generation::MAX_STEPS] {
            let lcm = build(SamplerKind::Lcm, &s, n);
            let ts = lcm.timesteps();
            assert_eq!(ts.len(), n);
            assert_eq!(ts[0], 999.0, "{n}");
            assert!(ts.windows(2).all(|w| w[0] > w[1]), "{n}");
            assert!(
                ts[n - 1] >= 0.0 && ts[n - 1] < 1000.0 / n as f64,
                "{n}: {}",
                ts[n - 1]
            );
        }
        assert_eq!(
            build(SamplerKind::Lcm, &s, crate::generation::MAX_STEPS).timesteps()[999],
            0.0
        );
    }

    /// Every step count a request may ask for, from every image-to-image start, runs through
    /// without a panic, and the steps' evaluations tile the sampler's timesteps exactly.
    #[test]
    fn every_sampler_handles_every_step_count_and_start() {
        let s = NoiseSchedule::from_config(&sd_config(
            serde_json::json!({"prediction_type": "sample"}),
        ))
        .unwrap();
        let x0 = Tensor::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
        for kind in SamplerKind::ALL {
            for n in [1, 2, 3, 7, 50, 51, crate::generation::MAX_STEPS] {
                let sampler = build(kind, &s, n);
                let tiled: Vec<usize> = (0..n).flat_map(|step| sampler.evaluations(step)).collect();
                let all: Vec<usize> = (0..sampler.timesteps().len()).collect();
                assert_eq!(tiled, all, "{kind:?} {n}");
                for start in [0, n / 2, n - 1] {
                    let mut sampler = build(kind, &s, n);
                    let mut rng = NoiseRng::new(1);
                    let noise = rng.randn_like(&x0).unwrap();
                    let first = sampler.evaluations(start).start;
                    let mut x = sampler.add_noise(&x0, &noise, first).unwrap();
                    for i in first..sampler.timesteps().len() {
                        let x_in = sampler.scale_model_input(&x, i).unwrap();
                        assert_eq!(x_in.dims(), x.dims());
                        x = sampler.step(&x0, i, &x, &mut rng).unwrap();
                    }
                    let v: Vec<f32> = x.to_vec1().unwrap();
                    assert!(v.iter().all(|v| v.is_finite()), "{kind:?} {n} {start}");
                }
            }
        }
    }

    /// The stochastic samplers draw from the job's stream: the same seed repeats, another seed
    /// differs, and the deterministic ones draw nothing.
    #[test]
    fn stochastic_samplers_draw_from_the_seeded_stream() {
        let s = NoiseSchedule::from_config(&sd_config(serde_json::json!({}))).unwrap();
        let x = Tensor::new(&[0.5f32, -1.0, 0.25, 2.0], &Device::Cpu).unwrap();
        let eps = Tensor::new(&[0.1f32, 0.2, -0.3, 0.4], &Device::Cpu).unwrap();
        let run = |kind: SamplerKind, seed: u64| -> Vec<f32> {
            let mut sampler = build(kind, &s, 4);
            let mut rng = NoiseRng::new(seed);
            let mut y = x.affine(sampler.init_noise_sigma(), 0.0).unwrap();
            // Two steps: the SDE's first noise comes with its first step, LCM's after it.
            for i in 0..2 {
                y = sampler.step(&eps, i, &y, &mut rng).unwrap();
            }
            y.to_vec1().unwrap()
        };
        for kind in SamplerKind::ALL {
            let stochastic = matches!(
                kind,
                SamplerKind::EulerAncestral | SamplerKind::DpmPp2mSdeKarras | SamplerKind::Lcm
            );
            assert_eq!(run(kind, 1), run(kind, 1), "{kind:?}");
            assert_eq!(run(kind, 1) != run(kind, 2), stochastic, "{kind:?}");
        }
    }

    /// With a perfect denoiser, multi-step LCM's intermediate latents are the clean sample
    /// (through the boundary condition) noised afresh to the next timestep's level: the noise
    /// in them is new, not the starting noise carried along.
    #[test]
    fn lcm_renoises_with_fresh_noise_between_steps() {
        let s = NoiseSchedule::from_config(&sd_config(
            serde_json::json!({"prediction_type": "sample"}),
        ))
        .unwrap();
        let dev = Device::Cpu;
        let x0 = Tensor::zeros(4096, DType::F32, &dev).unwrap();
        let mut rng = NoiseRng::new(5);
        let start = rng.randn_like(&x0).unwrap();
        let mut lcm = build(SamplerKind::Lcm, &s, 4);
        let x1 = lcm.step(&x0, 0, &start, &mut rng).unwrap();
        // x0 = 0: denoised = c_skip(999) * start, then sqrt(a(759)) * that + sqrt(1 - a) * z.
        let a = s.alphas_cumprod[759];
        let c_skip = 0.25 / (9990.0f64.powi(2) + 0.25);
        let z = ((&x1 - start.affine(a.sqrt() * c_skip, 0.0).unwrap()).unwrap())
            .affine(1.0 / (1.0 - a).sqrt(), 0.0)
            .unwrap();
        let z: Vec<f32> = z.to_vec1().unwrap();
        let start: Vec<f32> = start.to_vec1().unwrap();
        let n = z.len() as f64;
        let var = z.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n;
        let corr = z
            .iter()
            .zip(&start)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum::<f64>()
            / n;
        assert!(
            (var - 1.0).abs() < 0.1,
            "fresh noise has unit variance: {var}"
        );
        assert!(corr.abs() < 0.1, "and is independent of the start: {corr}");
    }

    /// Heun's step is the start plus the sigma step times the mean of the predictor's
    /// derivative at sigma(i) and the corrector's at the predicted point, sigma(i + 1).
    #[test]
    fn heun_averages_the_predictor_and_corrector_derivatives() {
        let s = NoiseSchedule::from_config(&sd_config(
            serde_json::json!({"prediction_type": "sample"}),
        ))
        .unwrap();
        let dev = Device::Cpu;
        let mut heun = build(SamplerKind::Heun, &s, 3);
        let mut rng = NoiseRng::new(0);
        let (x, a, b) = (3.0f64, 0.5f64, -0.25f64);
        let (s0, s1) = (
            s.sigma_at(heun.timesteps()[0]),
            s.sigma_at(heun.timesteps()[1]),
        );
        let one = |v: f64| Tensor::new(&[v as f32], &dev).unwrap();
        let predicted = heun.step(&one(a), 0, &one(x), &mut rng).unwrap();
        let corrected = heun.step(&one(b), 1, &predicted, &mut rng).unwrap();
        let d1 = (x - a) / s0;
        let x_pred = x + d1 * (s1 - s0);
        let d2 = (x_pred - b) / s1;
        let want = x + (s1 - s0) * (d1 + d2) / 2.0;
        let got: Vec<f32> = corrected.to_vec1().unwrap();
        assert!((got[0] as f64 - want).abs() < 1e-4, "{} vs {want}", got[0]);
        let got: Vec<f32> = predicted.to_vec1().unwrap();
        assert!((got[0] as f64 - x_pred).abs() < 1e-4);
    }

    #[test]
    fn zero_terminal_snr_rescale_keeps_the_start_and_ends_in_pure_noise() {
        let plain = NoiseSchedule::from_config(&sd_config(serde_json::json!({}))).unwrap();
        let zero = NoiseSchedule::from_config(&sd_config(
            serde_json::json!({"rescale_betas_zero_snr": true}),
        ))
        .unwrap();
        let (p, z) = (&plain.alphas_cumprod, &zero.alphas_cumprod);
        assert!(
            (p[999] - 0.00466).abs() < 1e-5,
            "SD's schedule leaks signal: {}",
            p[999]
        );
        assert!((z[0] - p[0]).abs() < 1e-12);
        assert_eq!(z[999], 2f64.powi(-24));
        // diffusers' rescale_zero_terminal_snr on SD's betas (computed with numpy).
        assert!((z[500] - 0.24102).abs() < 1e-5, "{}", z[500]);
        assert!((z[998] - 1.968e-7).abs() < 1e-9, "{}", z[998]);
        assert!(z.windows(2).all(|w| w[0] > w[1]));
        // DPM++ starts from a finite sigma: sqrt((1 - 2^-24) / 2^-24) = 4096.
        let dpm = DpmPp2m::new(&zero, 6, true);
        assert!(
            (dpm.m.sigmas[0] - 4096.0).abs() < 1e-3,
            "{}",
            dpm.m.sigmas[0]
        );
    }

    #[test]
    fn karras_sigmas_span_the_training_range() {
        let s = NoiseSchedule::from_config(&sd_config(serde_json::json!({}))).unwrap();
        let dpm = DpmPp2m::new(&s, 20, true);
        let sig = &dpm.m.sigmas;
        assert!((sig[0] - 14.6146).abs() < 1e-3, "{}", sig[0]);
        assert!((sig[19] - 0.0292).abs() < 1e-3, "{}", sig[19]);
        assert_eq!(sig[20], 0.0);
        assert!(sig.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(dpm.m.ts[0], 999.0);
        assert_eq!(dpm.m.ts[19], 0.0);
    }

    /// With a perfect denoiser (a "sample"-predicting model that always answers x0), every
    /// sampler must land on x0.
    #[test]
    fn every_sampler_converges_to_the_oracle_answer() {
        let s = NoiseSchedule::from_config(&sd_config(
            serde_json::json!({"prediction_type": "sample"}),
        ))
        .unwrap();
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -1.0, 0.25, 2.0], &dev).unwrap();
        for kind in SamplerKind::ALL {
            let mut rng = NoiseRng::new(3);
            let mut sampler = build(kind, &s, 8);
            let noise = rng.randn_like(&x0).unwrap();
            let mut x = noise.affine(sampler.init_noise_sigma(), 0.0).unwrap();
            for step in 0..sampler.timesteps().len() {
                x = sampler.step(&x0, step, &x, &mut rng).unwrap();
            }
            let err: f32 = (&x - &x0)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            // DDIM ends at alphas_cumprod[0] (set_alpha_to_one = false), not exactly at 0 noise.
            let tol = if kind == SamplerKind::Ddim { 0.1 } else { 1e-4 };
            assert!(err < tol, "{kind:?}: off by {err}");
        }
    }

    #[test]
    fn add_noise_at_the_first_step_matches_the_initial_noise_level() {
        let s = NoiseSchedule::from_config(&sd_config(serde_json::json!({}))).unwrap();
        let dev = Device::Cpu;
        let zero = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let one = Tensor::ones(4, DType::F32, &dev).unwrap();
        for kind in SamplerKind::ALL {
            let sampler = build(kind, &s, 10);
            let noised: Vec<f32> = sampler
                .add_noise(&zero, &one, 0)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(noised[0] > 0.99, "{kind:?}: {}", noised[0]);
        }
    }
}
