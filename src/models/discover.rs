//! Finding models: diffusers folders and single checkpoint files (`.safetensors`, `.ckpt`) in
//! the user's models folder, folders named on the command line or in settings (including an
//! AUTOMATIC1111 install's `models/Stable-diffusion` and ComfyUI's `models/checkpoints`), and
//! the Hugging Face hub cache (`models--ORG--NAME/snapshots/REV/`). No network.

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
    /// LoRA files (kohya, LyCORIS, PEFT) found in the same places and in other tools'
    /// `models/Lora`, `models/loras` and `models/LyCORIS` folders, by path.
    pub loras: Vec<PathBuf>,
    /// Textual-inversion embeddings found likewise (and in `embeddings` folders).
    pub embeddings: Vec<PathBuf>,
    /// VAE files found likewise (and in other tools' `models/VAE` and `models/vae` folders).
    pub vaes: Vec<PathBuf>,
    /// ControlNets (single files, and diffusers folders in `controlnet` folders) found likewise.
    pub controlnets: Vec<PathBuf>,
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

/// The ControlNet made for the model at `model` among `controlnets`: one whose name starts
/// with the model's folder or file name and a dash (`atelier-mini-scribble` for
/// `atelier-mini`), a scribble one first, then by name.
pub fn own_controlnet(model: &Path, controlnets: &[PathBuf]) -> Option<PathBuf> {
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    };
    let prefix = format!("{}-", stem(model));
    let mut own: Vec<&PathBuf> = controlnets
        .iter()
        .filter(|c| stem(c).starts_with(&prefix))
        .collect();
    own.sort_by_key(|c| (!stem(c).contains("scribble"), stem(c)));
    own.first().map(|c| (*c).clone())
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

/// Where other tools keep checkpoints, under the folder a user gives: an AUTOMATIC1111 or
/// Forge install (`models/Stable-diffusion`), ComfyUI (`models/checkpoints`), or those
/// tools' `models` folder itself.
const CHECKPOINT_FOLDERS: [&str; 4] = [
    "models/Stable-diffusion",
    "models/checkpoints",
    "Stable-diffusion",
    "checkpoints",
];

/// Where other tools keep LoRAs, under the folder a user gives.
pub const LORA_FOLDERS: [&str; 6] = [
    "models/Lora",
    "models/loras",
    "models/LyCORIS",
    "Lora",
    "loras",
    "LyCORIS",
];

/// Where other tools keep textual-inversion embeddings, under the folder a user gives.
pub const EMBEDDING_FOLDERS: [&str; 2] = ["embeddings", "models/embeddings"];

/// Where other tools keep VAE files, under the folder a user gives (AUTOMATIC1111's
/// `models/VAE`, ComfyUI's `models/vae`).
pub const VAE_FOLDERS: [&str; 4] = ["models/VAE", "models/vae", "VAE", "vae"];

/// Where other tools keep ControlNets, under the folder a user gives (sd-webui-controlnet's
/// `models/ControlNet`, ComfyUI's `models/controlnet`).
pub const CONTROLNET_FOLDERS: [&str; 4] = [
    "models/ControlNet",
    "models/controlnet",
    "ControlNet",
    "controlnet",
];

/// A diffusers ControlNet folder: `config.json` of class `ControlNetModel`.
fn is_controlnet_folder(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .is_ok_and(|t| t.contains("\"ControlNetModel\""))
}

/// How deep a checkpoints folder's subfolders are searched (users sort them into folders).
const MAX_DEPTH: usize = 3;

/// Extensions of single weight files.
pub const WEIGHT_EXTENSIONS: [&str; 4] = ["safetensors", "ckpt", "pt", "pth"];

pub fn is_weight_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| WEIGHT_EXTENSIONS.iter().any(|w| e.eq_ignore_ascii_case(w)))
}

/// The weight files in `dir`, sorted, then those of its subfolders to `depth` levels.
pub fn weight_files_under(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    let mut out: Vec<PathBuf> = entries
        .iter()
        .filter(|p| is_weight_file(p))
        .cloned()
        .collect();
    if depth > 0 {
        for sub in entries.iter().filter(|p| p.is_dir()) {
            out.extend(weight_files_under(sub, depth - 1));
        }
    }
    out
}

/// A model folder or checkpoint file itself, or a folder of them (and the checkpoint folders
/// of other tools' installs under it).
fn scan_folder(dir: &Path, source: ModelSource, found: &mut Discovery) {
    if dir.is_file() {
        push_file(dir, source, found);
        return;
    }
    if dir.join("model_index.json").is_file() {
        push(dir, None, source, found);
        return;
    }
    for sub in CHECKPOINT_FOLDERS
        .iter()
        .chain(&LORA_FOLDERS)
        .chain(&EMBEDDING_FOLDERS)
        .chain(&VAE_FOLDERS)
        .chain(&CONTROLNET_FOLDERS)
    {
        let d = dir.join(sub);
        if d.is_dir() {
            scan_children(&d, source, found, MAX_DEPTH);
        }
    }
    scan_children(dir, source, found, 1);
}

/// Model folders and checkpoint files among `dir`'s children (and subfolders, to `depth`).
fn scan_children(dir: &Path, source: ModelSource, found: &mut Discovery, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        if child.join("model_index.json").is_file() {
            push(&child, None, source, found);
        } else if is_controlnet_folder(&child) {
            if !found.controlnets.contains(&child) {
                found.controlnets.push(child);
            }
        } else if is_weight_file(&child) {
            push_file(&child, source, found);
        } else if depth > 1 && child.is_dir() {
            scan_children(&child, source, found, depth - 1);
        }
    }
}

/// A single weight file: listed as a model when it is a checkpoint; LoRAs, VAEs, embeddings and
/// ControlNets go to their own lists; anything else is reported as rejected.
fn push_file(path: &Path, source: ModelSource, found: &mut Discovery) {
    use super::ldm::{classify, FileKind};
    let kind = super::checkpoint::WeightFile::open(path).map(|f| classify(&f));
    match kind {
        Ok(FileKind::Checkpoint { .. }) => push(path, None, source, found),
        Ok(FileKind::Lora) => {
            if !found.loras.iter().any(|l| l == path) {
                found.loras.push(path.to_path_buf());
            }
        }
        Ok(FileKind::Embedding) => {
            if !found.embeddings.iter().any(|l| l == path) {
                found.embeddings.push(path.to_path_buf());
            }
        }
        Ok(FileKind::Vae) => {
            if !found.vaes.iter().any(|l| l == path) {
                found.vaes.push(path.to_path_buf());
            }
        }
        Ok(FileKind::ControlNet) => {
            if !found.controlnets.iter().any(|l| l == path) {
                found.controlnets.push(path.to_path_buf());
            }
        }
        Ok(FileKind::Unsupported(what)) => found.rejected.push(Rejected {
            dir: path.to_path_buf(),
            error: ModelError::UnsupportedFile {
                path: path.to_path_buf(),
                what,
            },
        }),
        Ok(other) => found.rejected.push(Rejected {
            dir: path.to_path_buf(),
            error: ModelError::NotACheckpoint {
                path: path.to_path_buf(),
                what: other.describe(),
            },
        }),
        Err(error) => found.rejected.push(Rejected {
            dir: path.to_path_buf(),
            error,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_own_controlnet_is_named_after_it() {
        let nets: Vec<PathBuf> = [
            "/m/ControlNet/atelier-mini-canny",
            "/m/ControlNet/other-scribble",
            "/assets/atelier-mini-scribble",
            "/m/ControlNet/atelier-minimal-scribble.safetensors",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let own = |m: &str| own_controlnet(Path::new(m), &nets);
        assert_eq!(
            own("/assets/atelier-mini"),
            Some(PathBuf::from("/assets/atelier-mini-scribble"))
        );
        assert_eq!(
            own("/x/Atelier-Mini"),
            Some(PathBuf::from("/assets/atelier-mini-scribble"))
        );
        assert_eq!(
            own("/x/atelier-minimal.safetensors"),
            Some(PathBuf::from(
                "/m/ControlNet/atelier-minimal-scribble.safetensors"
            ))
        );
        assert_eq!(own("/x/other-model"), None);
        assert_eq!(
            own_controlnet(Path::new("/assets/atelier-mini"), &nets[..1]),
            Some(nets[0].clone())
        );
    }
}
