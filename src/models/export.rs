//! A diffusers folder written as one checkpoint in the original ("LDM") layout, the form
//! AUTOMATIC1111, ComfyUI and Civitai use. Every tensor goes through
//! [`super::ldm::diffusers_to_ldm`]; a tensor with no LDM name is an error, never dropped.
//! Atelier's own configs ride along in the file's metadata (`atelier.configs`), so a model
//! with a non-standard shape (the tiny test models) reads back exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::config::ModelConfigs;
use super::ldm::{diffusers_to_ldm, Transform, CONFIGS_METADATA};
use super::ModelError;

/// Options for [`write_single_file`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportOptions {
    /// Store the weights as f16 (half the size, as most shared checkpoints are).
    pub half: bool,
    /// Leave out `atelier.configs` (the file then reads with the family's standard configs).
    pub no_configs: bool,
}

/// The folder's tensors under their LDM names, ready to save.
pub fn ldm_tensors(configs: &ModelConfigs) -> Result<BTreeMap<String, Tensor>, ModelError> {
    let mut components = vec!["unet", "vae", "text_encoder"];
    if configs.text_encoder_2.is_some() {
        components.push("text_encoder_2");
    }
    let mut out: BTreeMap<String, Tensor> = BTreeMap::new();
    for component in components {
        let bad = |reason: String| ModelError::BadWeights {
            path: configs.component_path(component),
            reason,
        };
        let mut fused: HashMap<String, [Option<Tensor>; 3]> = HashMap::new();
        for file in configs.weights(component)? {
            let tensors = candle_core::safetensors::load(&file, &Device::Cpu)
                .map_err(|e| bad(e.to_string()))?;
            for (name, t) in tensors {
                if name.ends_with("position_ids") {
                    continue;
                }
                let (key, transform) = diffusers_to_ldm(component, &name, configs)
                    .ok_or_else(|| bad(format!("no LDM name for {component}/{name}")))?;
                let t = match transform {
                    Transform::Plain => t,
                    Transform::Squeeze => {
                        let (o, i) = t.dims2().map_err(|e| bad(e.to_string()))?;
                        t.reshape((o, i, 1, 1)).map_err(|e| bad(e.to_string()))?
                    }
                    Transform::Transpose => t
                        .t()
                        .and_then(|t| t.contiguous())
                        .map_err(|e| bad(e.to_string()))?,
                    Transform::Rows { part, .. } => {
                        fused.entry(key).or_default()[part] = Some(t);
                        continue;
                    }
                };
                out.insert(key, t);
            }
        }
        for (key, parts) in fused {
            let parts: Vec<Tensor> = parts
                .into_iter()
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("{key}: one of q, k, v is missing")))?;
            let joined = Tensor::cat(&parts, 0).map_err(|e| bad(e.to_string()))?;
            out.insert(key, joined);
        }
    }
    Ok(out)
}

/// Writes the diffusers folder `dir` as one `.safetensors` checkpoint at `out`.
pub fn write_single_file(dir: &Path, out: &Path, options: ExportOptions) -> Result<(), ModelError> {
    let configs = ModelConfigs::read(dir)?;
    let mut tensors = ldm_tensors(&configs)?;
    if options.half {
        for t in tensors.values_mut() {
            *t = t.to_dtype(DType::F16).map_err(|e| ModelError::BadWeights {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
    }
    let mut metadata = HashMap::new();
    if !options.no_configs {
        metadata.insert(CONFIGS_METADATA.to_owned(), configs_json(dir, &configs)?);
    }
    let io = |e: String| ModelError::Io {
        path: out.to_path_buf(),
        reason: e,
    };
    let bytes = safetensors::serialize(&tensors, Some(metadata)).map_err(|e| io(e.to_string()))?;
    crate::fsio::write_file(out, &bytes, crate::fsio::Durability::Durable)
        .map_err(|e| io(e.to_string()))
}

/// The folder's configs as the JSON document `atelier.configs` holds: each component's
/// `config.json` as written, and the tokenizers inline.
fn configs_json(dir: &Path, configs: &ModelConfigs) -> Result<String, ModelError> {
    let read = |path: &Path| -> Result<String, ModelError> {
        std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let json = |path: &Path| -> Result<serde_json::Value, ModelError> {
        serde_json::from_str(&read(path)?).map_err(|e| ModelError::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let tokenizer = |t: &super::config::TokenizerFiles| -> Result<serde_json::Value, ModelError> {
        let (vocab, merges) = match &t.inline {
            Some((v, m)) => (
                serde_json::from_str(v).unwrap_or(serde_json::Value::Null),
                m.to_string(),
            ),
            None => (
                json(&t.dir.join("vocab.json"))?,
                read(&t.dir.join("merges.txt"))?,
            ),
        };
        Ok(serde_json::json!({
            "vocab": vocab,
            "merges": merges,
            "pad_token": t.pad_token,
            "max_length": t.max_length,
        }))
    };
    let mut doc = serde_json::json!({
        "unet": json(&dir.join("unet/config.json"))?,
        "vae": json(&dir.join("vae/config.json"))?,
        "text_encoder": json(&dir.join("text_encoder/config.json"))?,
        "scheduler": json(&dir.join("scheduler/scheduler_config.json"))?,
        "tokenizer": tokenizer(&configs.tokenizer)?,
    });
    if let Some(t2) = &configs.tokenizer_2 {
        doc["text_encoder_2"] = json(&dir.join("text_encoder_2/config.json"))?;
        doc["tokenizer_2"] = tokenizer(t2)?;
    }
    Ok(doc.to_string())
}
