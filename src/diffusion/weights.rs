//! Where the blocks' tensors come from: a diffusers folder's safetensors files, or one
//! checkpoint in the original layout (`.safetensors` or a PyTorch `.ckpt`), memory-mapped and
//! read in place through the map [`crate::models::ldm`] built for it (a tensor taken as is,
//! squeezed, a third of a fused projection, or transposed), converted to the model's dtype.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::models::checkpoint::TensorEntry;
use crate::models::config::{ModelConfigs, WeightSource};
use crate::models::ldm::{SingleFile, Transform};
use crate::models::ModelError;

/// A component's var builder, turning a broken file into a clear error.
pub fn var_builder(
    configs: &ModelConfigs,
    component: &str,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    match &configs.weights {
        WeightSource::Folder => folder_var_builder(configs, component, dtype, device),
        WeightSource::SingleFile(single) => {
            let backend = SingleFileBackend::map(single.clone(), component)?;
            Ok(VarBuilder::from_backend(
                Box::new(backend),
                dtype,
                device.clone(),
            ))
        }
    }
}

/// The VAE's weights from somewhere else than the model (`--vae`, a model's VAE choice): a
/// VAE file (original or diffusers names), a diffusers `vae/` folder, or a diffusers model
/// folder (its `vae/`). The model's VAE config is kept (the architecture is the same).
pub fn vae_override(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    if path.is_file() {
        let file = crate::models::checkpoint::WeightFile::open(path)?;
        let single = Arc::new(crate::models::ldm::vae_single_file(file)?);
        let backend = SingleFileBackend::map(single, "vae")?;
        return Ok(VarBuilder::from_backend(
            Box::new(backend),
            dtype,
            device.clone(),
        ));
    }
    if !path.is_dir() {
        return Err(ModelError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let dir = if path.join("vae").is_dir() {
        path.join("vae")
    } else {
        path.to_path_buf()
    };
    let files = crate::models::config::weight_files(&dir)?;
    map_safetensors(&files, dtype, device, &dir)
}

/// A single file's `component` (as mapped in `single`), memory-mapped.
pub fn single_file_var_builder(
    single: Arc<SingleFile>,
    component: &str,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    let backend = SingleFileBackend::map(single, component)?;
    Ok(VarBuilder::from_backend(
        Box::new(backend),
        dtype,
        device.clone(),
    ))
}

/// A diffusers folder's weights (a ControlNet, a tiny autoencoder), memory-mapped.
pub fn diffusers_folder_var_builder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    let files = crate::models::config::weight_files(dir)?;
    map_safetensors(&files, dtype, device, dir)
}

/// Memory-maps a folder component's safetensors files.
fn folder_var_builder(
    configs: &ModelConfigs,
    component: &str,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    let files = configs.weights(component)?;
    map_safetensors(&files, dtype, device, &configs.component_path(component))
}

/// Checks and memory-maps safetensors files; `place` names them in an error.
fn map_safetensors(
    files: &[std::path::PathBuf],
    dtype: DType,
    device: &Device,
    place: &Path,
) -> Result<VarBuilder<'static>, ModelError> {
    for f in files {
        check_safetensors(f)?;
    }
    // SAFETY: the files are memory-mapped read-only; like every safetensors loader we rely on
    // them not being truncated while mapped (their headers were checked just above).
    let mapped =
        unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }.map_err(|e| {
            ModelError::BadWeights {
                path: place.to_path_buf(),
                reason: super::error_text(&e),
            }
        })?;
    Ok(VarBuilder::from_backend(
        Box::new(MappedFolder(mapped)),
        dtype,
        device.clone(),
    ))
}

/// A folder's memory-mapped safetensors, read as candle reads them except that fp16 weights
/// for the CPU become f32 in one parallel pass ([`f16_to_f32_tensor`]) instead of a copy and
/// a single-threaded conversion.
struct MappedFolder(candle_core::safetensors::MmapedSafetensors);

impl SimpleBackend for MappedFolder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        of_shape(self.get_unchecked(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let view = self.0.get(name)?;
        if view.dtype() == safetensors::Dtype::F16 && dtype == DType::F32 && dev.is_cpu() {
            return f16_to_f32_tensor(view.data(), view.shape());
        }
        self.0.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.get(name).is_ok()
    }
}

/// `t` when it has the shape the block asked for; otherwise the mismatch, naming `name`.
fn of_shape(t: Tensor, expected: Shape, name: &str) -> candle_core::Result<Tensor> {
    if t.shape() != &expected {
        return Err(candle_core::Error::UnexpectedShape {
            msg: format!("shape mismatch for {name}"),
            expected,
            got: t.shape().clone(),
        }
        .bt());
    }
    Ok(t)
}

/// Little-endian f16 values in `bytes` as an f32 CPU tensor of `shape`, converted in parallel
/// chunks with the CPU's conversion instructions where it has them (fp16 checkpoints are
/// converted once, at load, for the CPU's f32 kernels).
pub(crate) fn f16_to_f32_tensor(bytes: &[u8], shape: &[usize]) -> candle_core::Result<Tensor> {
    use half::slice::HalfFloatSliceExt;
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let n = bytes.len() / 2;
    if n != shape.iter().product::<usize>() {
        candle_core::bail!(
            "{} bytes of f16 for a tensor of shape {shape:?}",
            bytes.len()
        );
    }
    let mut out = vec![0f32; n];
    let aligned = bytes
        .as_ptr()
        .align_offset(std::mem::align_of::<half::f16>())
        == 0;
    if aligned && cfg!(target_endian = "little") {
        // SAFETY: `half::f16` is a transparent `u16`; the bytes are 2-aligned, hold `n` values
        // and are little-endian, as this machine reads them.
        let halves = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<half::f16>(), n) };
        out.par_chunks_mut(CHUNK)
            .zip(halves.par_chunks(CHUNK))
            .for_each(|(o, h)| h.convert_to_f32_slice(o));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(bytes.par_chunks(2 * CHUNK))
            .for_each(|(o, b)| {
                for (v, p) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *v = half::f16::from_bits(u16::from_le_bytes([p[0], p[1]])).to_f32();
                }
            });
    }
    Tensor::from_vec(out, shape, &Device::Cpu)
}

/// Validates the header and that every tensor's bytes lie inside the file.
pub fn check_safetensors(path: &Path) -> Result<(), ModelError> {
    let bad = |reason: String| ModelError::BadWeights {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    // SAFETY: read-only map, dropped before returning.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
    let tensors = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| bad(e.to_string()))?;
    // Weights are floating point; anything else is another kind of file (or an attack on a
    // loader that would convert it blindly).
    for (name, view) in tensors.tensors() {
        use safetensors::Dtype;
        if !matches!(
            view.dtype(),
            Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64
        ) {
            return Err(bad(format!(
                "tensor {name} is {:?}; model weights are floating point",
                view.dtype()
            )));
        }
    }
    Ok(())
}

/// One component of a single checkpoint, read from a memory map of the whole file.
struct SingleFileBackend {
    single: Arc<SingleFile>,
    component: String,
    mmap: Arc<memmap2::Mmap>,
}

impl SingleFileBackend {
    fn map(single: Arc<SingleFile>, component: &str) -> Result<Self, ModelError> {
        let path = &single.file.path;
        let bad = |reason: String| ModelError::BadWeights {
            path: path.clone(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        if len != single.file.file_len {
            return Err(bad(format!(
                "the file changed since it was read ({} bytes, now {len}); choose the model again",
                single.file.file_len
            )));
        }
        // SAFETY: read-only map of a file whose tensors were all checked to lie inside its
        // length (WeightFile::open) and whose length is unchanged; as with every mmap loader,
        // we rely on it not being truncated while mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            single,
            component: component.to_owned(),
            mmap: Arc::new(mmap),
        })
    }

    fn read(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let missing = || candle_core::Error::CannotFindTensor {
            path: format!("{}/{name}", self.component),
        };
        let src = self
            .single
            .source(&self.component, name)
            .ok_or_else(missing)?;
        let entry = self.single.file.get(&src.key).ok_or_else(missing)?;
        let direct = entry.dtype == DType::F16
            && dtype == DType::F32
            && dev.is_cpu()
            && !(entry.fortran_order && entry.shape.len() > 1);
        let t = if direct {
            let start = entry.start as usize;
            let bytes = self
                .mmap
                .get(start..start + entry.byte_len() as usize)
                .ok_or_else(|| {
                    candle_core::Error::Msg("its bytes lie past the end of the file".into())
                })
                .map_err(|e| e.context(format!("reading {}", src.key)))?;
            f16_to_f32_tensor(bytes, &entry.shape)?
        } else {
            raw_tensor(&self.mmap, entry).map_err(|e| e.context(format!("reading {}", src.key)))?
        };
        let t = match src.transform {
            Transform::Plain => t,
            Transform::Squeeze => {
                let d = t.dims().to_vec();
                if d.len() == 4 && d[2] == 1 && d[3] == 1 {
                    t.reshape((d[0], d[1]))?
                } else {
                    t
                }
            }
            Transform::Rows { part, of } => {
                let n = t.dim(0)? / of;
                t.narrow(0, part * n, n)?
            }
            Transform::Transpose => t.t()?,
        };
        t.to_dtype(dtype)?.contiguous()?.to_device(dev)
    }
}

/// A tensor's bytes in the map as a CPU tensor of its stored dtype and shape.
pub(super) fn raw_tensor(mmap: &[u8], entry: &TensorEntry) -> candle_core::Result<Tensor> {
    if !matches!(
        entry.dtype,
        DType::F16 | DType::BF16 | DType::F32 | DType::F64
    ) {
        candle_core::bail!("it is {:?}; model weights are floating point", entry.dtype);
    }
    let start = entry.start as usize;
    let bytes = mmap
        .get(start..start + entry.byte_len() as usize)
        .ok_or_else(|| candle_core::Error::Msg("its bytes lie past the end of the file".into()))?;
    if entry.fortran_order && entry.shape.len() > 1 {
        let reversed: Vec<usize> = entry.shape.iter().rev().copied().collect();
        let t = Tensor::from_raw_buffer(bytes, entry.dtype, &reversed, &Device::Cpu)?;
        let dims: Vec<usize> = (0..reversed.len()).rev().collect();
        t.permute(dims)
    } else {
        Tensor::from_raw_buffer(bytes, entry.dtype, &entry.shape, &Device::Cpu)
    }
}

impl SimpleBackend for SingleFileBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        of_shape(
            self.read(name, dtype, dev)?,
            s,
            &format!("{}/{name}", self.component),
        )
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.single.source(&self.component, name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_weights_become_the_same_f32_as_candles_conversion_aligned_or_not() {
        let dev = Device::Cpu;
        // Odd length, past one chunk, with subnormals, infinities and NaN's neighbours.
        let n = (1 << 16) + 37;
        let values: Vec<f32> = (0..n)
            .map(|i| match i % 7 {
                0 => 1e-7,
                1 => -65504.0,
                2 => f32::INFINITY,
                _ => (i as f32 * 0.37).sin() * 100.0,
            })
            .collect();
        let half = Tensor::from_vec(values, n, &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let want: Vec<f32> = half.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        let bits: Vec<u8> = half
            .to_vec1::<half::f16>()
            .unwrap()
            .iter()
            .flat_map(|h| h.to_bits().to_le_bytes())
            .collect();
        // Once as stored, once one byte off its alignment (the slow path).
        let mut shifted = vec![0u8; bits.len() + 1];
        shifted[1..].copy_from_slice(&bits);
        let pick = if bits.as_ptr().align_offset(2) == 0 {
            0
        } else {
            1
        };
        let (aligned, unaligned) = if pick == 0 {
            (&bits[..], &shifted[1..])
        } else {
            (&shifted[1..], &bits[..])
        };
        for bytes in [aligned, unaligned] {
            let got: Vec<f32> = f16_to_f32_tensor(bytes, &[n]).unwrap().to_vec1().unwrap();
            assert_eq!(got.len(), want.len());
            assert!(got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        assert!(f16_to_f32_tensor(&bits[..10], &[n]).is_err());
    }
}
