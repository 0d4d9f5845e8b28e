//! Finding model folders: the user's models folder, folders named on the command line or in
//! settings, and the Hugging Face hub cache (`models--ORG--NAME/snapshots/REV/`). No network.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ModelError, ModelInfo};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelSource {
    /// Shipped with Atelier in `assets/models/`.
    Embedded,
    /// `<data dir>/models`.
    UserFolder,
    /// A folder given on the command line or in settings.
    Given,
    HuggingFaceCache,
}

/// A folder that looked like a model but could not be read: shown to the user, not hidden.
#[derive(Debug)]
pub struct Rejected {
    pub dir: PathBuf,
    pub error: ModelError,
}

/// Everything found, in a stable order (embedded, given, user folder, HF cache; by name within).
#[derive(Debug, Default)]
pub struct Discovery {
    pub models: Vec<ModelInfo>,
    pub rejected: Vec<Rejected>,
}

/// Looks in the embedded models, `given` folders (each a model folder or a folder of model
/// folders), the user's models folder and the Hugging Face cache.
pub fn discover(given: &[PathBuf]) -> Discovery {
    discover_with(given, true)
}

/// The folder name of the shipped default model, Atelier Mini.
const DEFAULT_MODEL: &str = "atelier-mini";

/// The shipped default model (Atelier Mini), used when no model is named.
pub fn default_model_dir() -> PathBuf {
    embedded_models_dir().join(DEFAULT_MODEL)
}

/// The folder of models shipped with Atelier: `assets/models` beside the executable or
/// `../share/atelier/models` from it (an installed copy), else the source tree's own
/// `assets/models` (`cargo run`).
pub fn embedded_models_dir() -> PathBuf {
    let installed = std::env::current_exe().ok().and_then(|exe| {
        let bin = exe.parent()?.to_path_buf();
        [
            bin.join("assets").join("models"),
            bin.join("..").join("share").join("atelier").join("models"),
        ]
        .into_iter()
        .find(|d| d.join(DEFAULT_MODEL).join("model_index.json").is_file())
    });
    installed.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join("models")
    })
}

/// [`discover`], optionally without the embedded models.
pub fn discover_with(given: &[PathBuf], embedded: bool) -> Discovery {
    let mut found = Discovery::default();
    if embedded {
        scan_folder(&embedded_models_dir(), ModelSource::Embedded, &mut found);
    }
    for dir in given {
        scan_folder(dir, ModelSource::Given, &mut found);
    }
    scan_folder(
        &crate::paths::models_dir(),
        ModelSource::UserFolder,
        &mut found,
    );
    if let Some(hub) = crate::paths::hf_hub_cache() {
        scan_hf_cache(&hub, &mut found);
    }
    let mut seen = std::collections::HashSet::new();
    found.models.retain(|m| {
        let key = std::fs::canonicalize(&m.dir).unwrap_or_else(|_| m.dir.clone());
        seen.insert(key)
    });
    found
}

/// A model folder itself, or a folder whose direct children are model folders.
fn scan_folder(dir: &Path, source: ModelSource, found: &mut Discovery) {
    if dir.join("model_index.json").is_file() {
        push(dir, None, source, found);
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model_index.json").is_file())
        .collect();
    children.sort();
    for child in children {
        push(&child, None, source, found);
    }
}

fn scan_hf_cache(hub: &Path, found: &mut Discovery) {
    let Ok(entries) = std::fs::read_dir(hub) else {
        return;
    };
    let mut repos: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("models--"))
        })
        .collect();
    repos.sort();
    for repo in repos {
        let Some(snapshot) = hf_snapshot(&repo) else {
            continue;
        };
        let name = repo
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("models--")
                    .replacen("--", "/", 1)
            })
            .unwrap_or_default();
        push(&snapshot, Some(name), ModelSource::HuggingFaceCache, found);
    }
}

/// The snapshot `refs/main` points at, else the most recently modified one with a model index.
fn hf_snapshot(repo: &Path) -> Option<PathBuf> {
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let snap = repo.join("snapshots").join(rev.trim());
        if snap.join("model_index.json").is_file() {
            return Some(snap);
        }
    }
    std::fs::read_dir(repo.join("snapshots"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("model_index.json").is_file())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

fn push(dir: &Path, name: Option<String>, source: ModelSource, found: &mut Discovery) {
    match ModelInfo::from_dir(dir, source) {
        Ok(mut info) => {
            if let Some(name) = name {
                info.turbo |= name.to_lowercase().contains("turbo");
                info.lcm |= crate::models::config::name_has_word(&name, "lcm");
                info.name = name;
            }
            found.models.push(info);
        }
        Err(error) => found.rejected.push(Rejected {
            dir: dir.to_path_buf(),
            error,
        }),
    }
}
