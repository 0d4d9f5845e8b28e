//! The studio state that outlives a session: panel settings and the chosen model. Plain,
//! serialisable data kept apart from runtime handles (engine, textures, tasks).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ui::canvas::CanvasSettings;
use crate::ui::library::ExportSettings;
use crate::ui::prompt::PromptSettings;

/// The key under which eframe's storage keeps [`PersistedState`].
pub const STORAGE_KEY: &str = "atelier-studio";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistedState {
    pub prompt: PromptSettings,
    pub canvas: CanvasSettings,
    /// The model folder last used; picked again if it is still found.
    pub selected_model: Option<PathBuf>,
    /// The Export window's choices, also used by "Save as…".
    pub export: ExportSettings,
}

impl PersistedState {
    /// Reads the state eframe stored last time, or the defaults.
    pub fn load(storage: Option<&dyn eframe::Storage>) -> Self {
        let mut state: Self = storage
            .and_then(|s| eframe::get_value(s, STORAGE_KEY))
            .unwrap_or_default();
        state.prompt.sanitize();
        state
    }

    pub fn save(&self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_tolerates_missing_fields() {
        let mut state = PersistedState::default();
        state.prompt.prompt = "a boat".into();
        state.selected_model = Some(PathBuf::from("/models/x"));
        let json = serde_json::to_string(&state).expect("serialise");
        let back: PersistedState = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, state);
        let partial: PersistedState =
            serde_json::from_str(r#"{"prompt":{"prompt":"hi"}}"#).expect("partial");
        assert_eq!(partial.prompt.prompt, "hi");
        assert_eq!(partial.prompt.steps, PersistedState::default().prompt.steps);
    }
}
