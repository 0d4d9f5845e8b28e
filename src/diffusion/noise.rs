//! Seeded Gaussian noise, so one seed always gives the same picture on this machine
//! (`Device::Cpu.set_seed` is unsupported in candle, so nothing here uses candle's RNG),
//! and loading a caller's own initial noise from a safetensors file.

use std::path::Path;

use candle_core::{DType, Device, Result, Shape, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::DiffusionError;

/// One seeded stream per batch row: row `i` of every draw comes from stream `i`, so an image
/// gets the same noise whether it is generated alone or in a batch.
pub struct NoiseRng {
    streams: Vec<ChaCha8Rng>,
}

impl NoiseRng {
    pub fn new(seed: u64) -> Self {
        Self::batch(&[seed])
    }

    pub fn batch(seeds: &[u64]) -> Self {
        Self {
            streams: seeds
                .iter()
                .map(|&s| ChaCha8Rng::seed_from_u64(s))
                .collect(),
        }
    }

    /// Standard normal noise. With several streams the first dimension must equal their count.
    pub fn randn(
        &mut self,
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        let rows = self.streams.len();
        let data: Vec<f32> = if rows == 1 {
            (0..n)
                .map(|_| StandardNormal.sample(&mut self.streams[0]))
                .collect()
        } else {
            if shape.dims().first() != Some(&rows) {
                candle_core::bail!("noise for {rows} streams needs {rows} rows, not {shape:?}");
            }
            let per = n / rows;
            self.streams
                .iter_mut()
                .flat_map(|rng| {
                    (0..per)
                        .map(|_| StandardNormal.sample(rng))
                        .collect::<Vec<f32>>()
                })
                .collect()
        };
        Tensor::from_vec(data, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }

    pub fn randn_like(&mut self, t: &Tensor) -> Result<Tensor> {
        self.randn(t.shape().clone(), t.dtype(), t.device())
    }
}

/// Reads tensor `noise` of shape `[1, channels, h, w]` from a safetensors file.
pub fn load_noise_file(
    path: &Path,
    channels: usize,
    h: usize,
    w: usize,
    device: &Device,
) -> std::result::Result<Tensor, DiffusionError> {
    let err = |reason: String| DiffusionError::Noise {
        path: path.to_path_buf(),
        reason,
    };
    let tensors =
        candle_core::safetensors::load(path, device).map_err(|e| err(super::error_text(&e)))?;
    let noise = tensors
        .get("noise")
        .ok_or_else(|| err("no tensor named \"noise\"".into()))?;
    let want = [1, channels, h, w];
    if noise.dims() != want {
        return Err(err(format!(
            "noise has shape {:?}, this request needs {:?}",
            noise.dims(),
            want
        )));
    }
    noise
        .to_dtype(DType::F32)
        .map_err(|e| err(super::error_text(&e)))
}
