//! The studio's view of the model library: the models found, the folders rejected and why,
//! and the discovery scan, which runs off the UI thread.

use std::path::{Path, PathBuf};

use super::tasks::{Poll, Task};
use crate::models::ModelInfo;

/// What one discovery scan found.
pub struct ScanResult {
    pub models: Vec<ModelInfo>,
    pub rejected: Vec<(PathBuf, String)>,
    pub loras: Vec<PathBuf>,
    pub embeddings: Vec<PathBuf>,
    pub vaes: Vec<PathBuf>,
    pub controlnets: Vec<PathBuf>,
}

#[derive(Default)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
    pub rejected: Vec<(PathBuf, String)>,
    /// LoRA files found by the scan (named in prompts by their file stem).
    pub loras: Vec<PathBuf>,
    /// Textual-inversion embeddings found by the scan (used by their file stem as a word).
    pub embeddings: Vec<PathBuf>,
    /// VAE files found by the scan (offered per model in place of the model's own).
    pub vaes: Vec<PathBuf>,
    /// ControlNets found by the scan (for the control layer).
    pub controlnets: Vec<PathBuf>,
    scan: Option<Task<ScanResult>>,
    /// AUTOMATIC1111 hashes of the single files found without one cached (seconds per
    /// gigabyte, so after the list is shown).
    hashing: Option<Task<Vec<(PathBuf, String)>>>,
    /// A1111 hashes of the LoRA files found (for the pictures' `Lora hashes`).
    pub lora_hashes: std::collections::HashMap<PathBuf, String>,
    /// A1111 short hashes of the VAE files found (for the pictures' `VAE hash`).
    pub vae_hashes: std::collections::HashMap<PathBuf, String>,
    /// Scans finished so far this session.
    pub scans_done: u32,
}

impl ModelList {
    /// Starts looking for models in `given` folders and the usual places, unless already looking.
    pub fn start_scan(&mut self, ctx: &egui::Context, given: Vec<PathBuf>, embedded: bool) {
        if self.scan.is_some() {
            return;
        }
        self.scan = Some(Task::spawn("model-scan", ctx, move || {
            let found = crate::models::discover::discover_with(&given, embedded);
            ScanResult {
                loras: found.loras,
                embeddings: found.embeddings,
                vaes: found.vaes,
                controlnets: found.controlnets,
                models: found.models,
                rejected: found
                    .rejected
                    .into_iter()
                    .map(|r| (r.dir, r.error.to_string()))
                    .collect(),
            }
        }));
    }

    pub fn scanning(&self) -> bool {
        self.scan.is_some()
    }

    /// The files found are still being hashed (after a scan).
    pub fn hashing(&self) -> bool {
        self.hashing.is_some()
    }

    /// Takes in a finished scan; true if one finished now.
    pub fn poll(&mut self, task_ctx: &egui::Context) -> bool {
        self.poll_hashing();
        let Some(task) = &mut self.scan else {
            return false;
        };
        match task.poll() {
            Poll::Pending => false,
            Poll::Ready(result) => {
                self.models = result.models;
                self.rejected = result.rejected;
                self.loras = result.loras;
                self.embeddings = result.embeddings;
                self.vaes = result.vaes;
                self.controlnets = result.controlnets;
                self.scan = None;
                self.scans_done += 1;
                self.start_hashing(task_ctx);
                true
            }
            Poll::Lost(why) => {
                self.rejected = vec![(
                    PathBuf::new(),
                    format!("the {} task stopped: {why}", task.name()),
                )];
                self.scan = None;
                self.scans_done += 1;
                true
            }
        }
    }

    /// Hashes, on a task, the single files whose hash is not cached yet, the VAEs and the LoRAs.
    fn start_hashing(&mut self, ctx: &egui::Context) {
        let files: Vec<PathBuf> = self
            .models
            .iter()
            .filter(|m| m.file_size.is_some() && m.hash.is_none())
            .map(|m| m.dir.clone())
            .chain(
                self.vaes
                    .iter()
                    .filter(|v| !self.vae_hashes.contains_key(*v))
                    .cloned(),
            )
            .collect();
        let loras: Vec<PathBuf> = self
            .loras
            .iter()
            .filter(|l| !self.lora_hashes.contains_key(*l))
            .cloned()
            .collect();
        if (files.is_empty() && loras.is_empty()) || self.hashing.is_some() {
            return;
        }
        self.hashing = Some(Task::spawn("model-hashes", ctx, move || {
            let models = files.into_iter().filter_map(|f| {
                let h = crate::models::hash::a1111_short_hash(&f).ok()?;
                Some((f, h))
            });
            let loras = loras.into_iter().filter_map(|f| {
                let h = crate::models::hash::lora_short_hash(&f).ok()?;
                Some((f, h))
            });
            models.chain(loras).collect()
        }));
    }

    fn poll_hashing(&mut self) {
        let Some(task) = &mut self.hashing else {
            return;
        };
        match task.poll() {
            Poll::Pending => {}
            Poll::Ready(hashes) => {
                for (path, h) in hashes {
                    if let Some(m) = self.models.iter_mut().find(|m| m.dir == path) {
                        m.hash = Some(h);
                    } else if self.vaes.contains(&path) {
                        self.vae_hashes.insert(path, h);
                    } else {
                        self.lora_hashes.insert(path, h);
                    }
                }
                self.hashing = None;
            }
            // Only the metadata's "Model hash" goes without; the model works.
            Poll::Lost(_) => self.hashing = None,
        }
    }

    /// The LoRA a prompt names (`<lora:NAME:W>`): a file found with that stem.
    pub fn lora_named(&self, name: &str) -> Option<&PathBuf> {
        by_stem(&self.loras, name)
    }

    /// The model a picture was made with: the checkpoint whose AUTOMATIC1111 hash it names
    /// (the same file under any name), else the one of its model name.
    pub fn for_picture(&self, hash: Option<&str>, name: Option<&str>) -> Option<&ModelInfo> {
        let by_hash = hash.and_then(|hash| {
            self.models.iter().find(|x| {
                x.hash
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(hash.trim()))
            })
        });
        by_hash.or_else(|| {
            let name = name?;
            self.models
                .iter()
                .find(|x| x.name == name || x.display_name() == name)
        })
    }

    /// The VAE a picture names (AUTOMATIC1111's `VAE hash`, else `VAE`, a file stem).
    pub fn vae_for_picture(&self, hash: Option<&str>, name: Option<&str>) -> Option<&PathBuf> {
        let by_hash = hash.and_then(|hash| {
            self.vaes.iter().find(|v| {
                self.vae_hashes
                    .get(*v)
                    .is_some_and(|h| h.eq_ignore_ascii_case(hash.trim()))
            })
        });
        by_hash.or_else(|| by_stem(&self.vaes, name?))
    }

    pub fn find(&self, dir: &Path) -> Option<&ModelInfo> {
        self.models.iter().find(|m| m.dir == dir)
    }
}

/// The file in `files` whose stem is `name` (how prompts and A1111 metadata name files).
fn by_stem<'a>(files: &'a [PathBuf], name: &str) -> Option<&'a PathBuf> {
    files
        .iter()
        .find(|p| p.file_stem().is_some_and(|s| s.to_string_lossy() == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, hash: Option<&str>) -> ModelInfo {
        serde_json::from_value(serde_json::json!({
            "name": name, "dir": format!("/m/{name}.safetensors"), "family": "Sd1",
            "turbo": false, "inpainting": false, "v_prediction": false, "native_size": 512,
            "source": "Given", "card": null, "hash": hash,
        }))
        .expect("a model info")
    }

    #[test]
    fn a_picture_finds_its_checkpoint_by_hash_before_name() {
        let list = ModelList {
            models: vec![
                model("dreamshaper_8", Some("879db523c3")),
                model("renamed-copy", Some("6ce0161689")),
            ],
            ..Default::default()
        };
        // A1111 metadata naming the file differently, with its hash.
        let m = list.for_picture(Some("6CE0161689"), Some("v1-5-pruned-emaonly"));
        assert_eq!(m.map(|m| m.name.as_str()), Some("renamed-copy"));
        // No hash, or one not installed: by name.
        let m = list.for_picture(Some("0000000000"), Some("dreamshaper_8"));
        assert_eq!(m.map(|m| m.name.as_str()), Some("dreamshaper_8"));
        assert!(list.for_picture(None, Some("missing")).is_none());
    }
}
