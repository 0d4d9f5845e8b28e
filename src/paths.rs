//! Where Atelier keeps its data: `$ATELIER_HOME`, else the XDG data directory (`~/.local/share/atelier`).

use std::path::PathBuf;

/// The data directory root. `ATELIER_HOME` overrides everything (tests use it).
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("ATELIER_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("atelier")
}

/// The user's own models folder inside the data directory.
pub fn models_dir() -> PathBuf {
    data_dir().join("models")
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home).join("hub"));
    }
    dirs::home_dir().map(|h| h.join(".cache").join("huggingface").join("hub"))
}
