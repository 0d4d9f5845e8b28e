//! AdamW with decoupled weight decay, global-norm gradient clipping and an exponential moving
//! average of the weights. Its state is plain named tensors, so a checkpoint can save it and a
//! resumed run continues exactly where the killed one stopped.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

pub struct AdamW {
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: usize,
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    max_grad_norm: f64,
}

impl AdamW {
    /// `params` sorted by name, so state files line up across runs.
    pub fn new(mut params: Vec<(String, Var)>, lr: f64, weight_decay: f64) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            m: params
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<Result<_>>()?,
            v: params
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<Result<_>>()?,
            params,
            step: 0,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            max_grad_norm: 1.0,
        })
    }

    /// One update; returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0.0f64;
        for (_, var) in &self.params {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        let norm = sq.sqrt();
        let clip = if norm.is_finite() && norm > self.max_grad_norm {
            self.max_grad_norm / norm
        } else {
            1.0
        };
        if !norm.is_finite() {
            // Skip a poisoned step rather than writing NaNs into the weights.
            return Ok(norm);
        }
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: optimiser state must not keep a graph of every past step alive.
            let g = (g.detach() * clip)?;
            self.m[i] = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?.detach();
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?.detach();
            let m_hat = (&self.m[i] / bc1)?;
            let v_hat = (&self.v[i] / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            let w = var.as_tensor().detach();
            let decayed = (w * (1.0 - self.lr * self.weight_decay))?;
            var.set(&(decayed - (update * self.lr)?)?)?;
        }
        Ok(norm)
    }

    /// The moment estimates by parameter name (`m.NAME`, `v.NAME`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (i, (name, var)) in self.params.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let t = state.get(&format!("{prefix}.{name}")).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no {prefix}.{name}"))
                })?;
                if t.dims() != var.dims() {
                    candle_core::bail!("optimizer state {prefix}.{name} has the wrong shape");
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Exponential moving average of weights: what gets exported.
pub struct Ema {
    pub decay: f64,
    pub shadow: HashMap<String, Tensor>,
}

impl Ema {
    pub fn new(params: &[(String, Var)], decay: f64) -> Result<Self> {
        let shadow = params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<_>>()?;
        Ok(Self { decay, shadow })
    }

    pub fn update(&mut self, params: &[(String, Var)], step: usize) -> Result<()> {
        // Warm-up: average fast early on, when the weights move a lot.
        let d = self.decay.min((1.0 + step as f64) / (10.0 + step as f64));
        for (name, var) in params {
            if let Some(s) = self.shadow.get_mut(name) {
                *s = ((&*s * d)? + (var.as_tensor().detach() * (1.0 - d))?)?.detach();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Optimiser and EMA state must be plain tensors: state that tracks its history keeps every
    /// earlier step's graph alive (a training run grew to 24 GB that way).
    #[test]
    fn state_does_not_keep_the_graph_alive() {
        let w = Var::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        let params = vec![("w".to_owned(), w.clone())];
        let mut opt = AdamW::new(params.clone(), 0.1, 0.01).unwrap();
        let mut ema = Ema::new(&params, 0.9).unwrap();
        for step in 0..3 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            ema.update(&params, step).unwrap();
        }
        assert!(opt.m.iter().chain(&opt.v).all(|t| !t.track_op()));
        assert!(ema.shadow.values().all(|t| !t.track_op()));
        // And it optimised: |w| shrank.
        let after: Vec<f32> = w.as_tensor().to_vec1().unwrap();
        assert!(after
            .iter()
            .zip([1.0f32, 2.0, 3.0])
            .all(|(a, b)| a.abs() < b));
    }
}
