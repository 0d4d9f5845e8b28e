//! The studio state that outlives a session: the prompt panel's settings, the canvas tools,
//! the Export window's choices and the chosen model. Plain, serialisable data kept apart from
//! runtime handles (engine, textures, tasks); the views in `crate::ui` edit it in place, and
//! this module is the one part of `app` they may import.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::gallery::export::ExportOptions;
use crate::generation::{
    DecoderChoice, GenerationRequest, SamplerKind, MAX_BATCH, MAX_CLIP_SKIP, MAX_GUIDANCE,
    MAX_SIDE_PX, MAX_STEPS, MIN_SIDE_PX, SIDE_MULTIPLE_PX,
};
use crate::models::ModelInfo;
use crate::sketch::Layer;

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
    /// Folders added with "Add model folder…" (an AUTOMATIC1111 or ComfyUI install, a folder
    /// of checkpoints), searched on every scan.
    pub model_folders: Vec<PathBuf>,
    /// The VAE chosen for a model (by the model's path) in place of its own.
    pub model_vaes: std::collections::BTreeMap<PathBuf, PathBuf>,
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

/// Largest seed the panel shows exactly (DragValue works in f64).
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// Everything the prompt panel edits. Persisted between sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptSettings {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    /// Roll a new seed for every generation (the seed used is written back into `seed`).
    pub random_seed: bool,
    pub steps: usize,
    pub guidance: f32,
    pub width: u32,
    pub height: u32,
    pub sampler: SamplerKind,
    pub strength_0_to_1: f32,
    pub batch: u32,
    /// A1111's "Clip skip" (1: the text encoder's last layer).
    pub clip_skip: u32,
    /// Decode the final pictures with the tiny decoder (TAESD) found for the model: several
    /// times faster, slightly softer.
    pub fast_decode: bool,
}

impl Default for PromptSettings {
    fn default() -> Self {
        let request = GenerationRequest::default();
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            seed: 42,
            random_seed: true,
            steps: request.steps,
            guidance: request.guidance,
            width: request.width,
            height: request.height,
            sampler: request.sampler,
            strength_0_to_1: request.strength_0_to_1,
            batch: 1,
            clip_skip: 1,
            fast_decode: false,
        }
    }
}

impl PromptSettings {
    /// Steps, guidance, sampler and size suited to `model` (see [`ModelInfo::recommended`]);
    /// the size is the model's native one.
    pub fn apply_model_defaults(&mut self, model: &ModelInfo) {
        let r = model.recommended();
        self.steps = r.steps;
        self.guidance = r.guidance;
        self.sampler = r.sampler;
        let size = snap_size(model.native_size);
        self.width = size;
        self.height = size;
    }

    /// Copies the settings that made `request` (prompt, seed, sampling, size); the seed is kept
    /// fixed so the same picture can be made again.
    pub fn reuse(&mut self, request: &GenerationRequest) {
        self.prompt = request.prompt.clone();
        self.negative_prompt = request.negative_prompt.clone();
        self.seed = request.seed;
        self.random_seed = false;
        self.steps = request.steps.clamp(1, MAX_STEPS);
        self.guidance = request.guidance;
        self.width = snap_size(request.width);
        self.height = snap_size(request.height);
        self.sampler = request.sampler;
        self.strength_0_to_1 = request.strength_0_to_1;
        self.clip_skip = request.clip_skip.clamp(1, MAX_CLIP_SKIP);
        self.fast_decode = request.decoder == DecoderChoice::Tiny;
    }

    /// Keeps every value inside what the panel offers (e.g. after loading old settings).
    pub fn sanitize(&mut self) {
        self.seed = self.seed.min(MAX_SEED);
        self.steps = self.steps.clamp(1, MAX_STEPS);
        self.guidance = if self.guidance.is_finite() {
            self.guidance.clamp(0.0, MAX_GUIDANCE)
        } else {
            7.5
        };
        self.width = snap_size(self.width);
        self.height = snap_size(self.height);
        self.strength_0_to_1 = if self.strength_0_to_1.is_finite() {
            self.strength_0_to_1.clamp(0.0, 1.0)
        } else {
            0.75
        };
        self.batch = self.batch.clamp(1, MAX_BATCH);
        self.clip_skip = self.clip_skip.clamp(1, MAX_CLIP_SKIP);
    }

    /// The request these settings describe, for `model_dir`, with the current seed.
    pub fn to_request(&self, model_dir: &Path) -> GenerationRequest {
        GenerationRequest {
            model_dir: model_dir.to_path_buf(),
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            seed: self.seed,
            steps: self.steps.clamp(1, MAX_STEPS),
            guidance: self.guidance,
            width: snap_size(self.width),
            height: snap_size(self.height),
            sampler: self.sampler,
            strength_0_to_1: self.strength_0_to_1.clamp(0.0, 1.0),
            batch: self.batch.clamp(1, MAX_BATCH),
            clip_skip: self.clip_skip.clamp(1, MAX_CLIP_SKIP),
            decoder: if self.fast_decode {
                DecoderChoice::Tiny
            } else {
                DecoderChoice::Full
            },
            ..GenerationRequest::default()
        }
    }
}

/// Clamps to the request's side limits and rounds to the nearest allowed multiple.
pub fn snap_size(px: u32) -> u32 {
    let m = SIDE_MULTIPLE_PX;
    let clamped = px.clamp(MIN_SIDE_PX, MAX_SIDE_PX);
    ((clamped + m / 2) / m * m).clamp(MIN_SIDE_PX, MAX_SIDE_PX)
}

/// The canvas tools. Persisted between sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanvasSettings {
    pub brush_size_px: f32,
    /// Straight sRGBA.
    pub color_rgba: [u8; 4],
    /// The brush and the fill bucket erase instead of painting.
    pub eraser: bool,
    /// What a click or drag on the canvas does.
    pub tool: CanvasTool,
    /// The layer strokes go to: the picture, the inpainting mask or a control layer (whose
    /// ControlNet and settings are the sketch's own, see [`crate::sketch::ControlLayer`]).
    pub layer: Layer,
    /// Send the canvas as the init image (and the mask, if any) with each generation.
    pub use_sketch: bool,
    /// Live mode: regenerate after every change (see `app::live`).
    pub live: bool,
    /// Draw the sketched subject again at the model's own size when control layers steer
    /// (see [`crate::diffusion::subject`]).
    pub subject_pass: bool,
    /// The canvas view's zoom (1: the whole canvas fits) and pan (screen points).
    pub view_zoom: f32,
    pub view_pan: [f32; 2],
}

impl Default for CanvasSettings {
    fn default() -> Self {
        Self {
            brush_size_px: 16.0,
            color_rgba: [32, 32, 32, 255],
            eraser: false,
            tool: CanvasTool::Brush,
            layer: Layer::Paint,
            use_sketch: false,
            live: false,
            subject_pass: true,
            view_zoom: 1.0,
            view_pan: [0.0, 0.0],
        }
    }
}

/// The canvas's tools (the eraser is a switch that the brush and the fill bucket share).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanvasTool {
    /// Round brush, with pen pressure where the platform reports it (B).
    #[default]
    Brush,
    /// Fills the connected area of like colour (or the enclosed area on the mask and
    /// control layers) (G).
    Fill,
    /// Picks the brush colour from the canvas (I; Alt+click with the brush too).
    Eyedropper,
}

impl CanvasSettings {
    pub fn layer(&self) -> Layer {
        self.layer
    }
}

/// The Export window: whether it is open, and the choices it edits. The choices persist
/// between sessions; they are the same [`ExportOptions`] the CLI builds from its flags and
/// the result viewer's "Save as…" uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportSettings {
    #[serde(skip)]
    pub open: bool,
    pub options: ExportOptions,
    /// Where exports go; empty: ask for a folder on every export.
    pub folder: String,
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

    #[test]
    fn sizes_snap_to_multiples_of_eight_in_range() {
        assert_eq!(snap_size(0), MIN_SIDE_PX);
        assert_eq!(snap_size(513), 512);
        assert_eq!(snap_size(517), 520);
        assert_eq!(snap_size(5000), MAX_SIDE_PX);
        // Whatever the panel snaps to, the request accepts.
        for px in [0, 1, 7, 9, 517, 4095, 5000] {
            let request = GenerationRequest {
                width: snap_size(px),
                height: snap_size(px),
                ..GenerationRequest::default()
            };
            assert_eq!(request.validate(), Ok(()), "{px}");
        }
    }

    #[test]
    fn reuse_copies_the_request_and_fixes_the_seed() {
        let mut settings = PromptSettings::default();
        let request = GenerationRequest {
            prompt: "a fox".into(),
            negative_prompt: "blur".into(),
            seed: 1234,
            steps: 7,
            guidance: 3.0,
            width: 640,
            height: 384,
            sampler: SamplerKind::UniPc,
            ..GenerationRequest::default()
        };
        settings.reuse(&request);
        assert_eq!(settings.prompt, "a fox");
        assert_eq!(settings.seed, 1234);
        assert!(!settings.random_seed);
        let again = settings.to_request(Path::new("/m"));
        assert_eq!(again.prompt, request.prompt);
        assert_eq!(again.seed, request.seed);
        assert_eq!((again.width, again.height), (640, 384));
        assert_eq!(again.sampler, SamplerKind::UniPc);
    }

    #[test]
    fn sanitize_clamps_loaded_values() {
        let mut settings = PromptSettings {
            steps: 0,
            guidance: f32::NAN,
            width: 9999,
            batch: 0,
            ..PromptSettings::default()
        };
        settings.sanitize();
        assert_eq!(settings.steps, 1);
        assert_eq!(settings.guidance, 7.5);
        assert_eq!(settings.width, MAX_SIDE_PX);
        assert_eq!(settings.batch, 1);
        assert_eq!(settings.to_request(Path::new("/m")).validate(), Ok(()));
    }
}
