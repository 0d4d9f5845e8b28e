//! Control layers: one per ControlNet, each with its own strokes, its own picture under them
//! (a preprocessed photo or a reused picture's control image) and its own settings (which
//! ControlNet, how strongly, over which steps, on/off, shown/hidden, the preprocessor).

use image::GrayImage;
use serde::{Deserialize, Serialize};

use super::control::Preprocessor;
use super::Stroke;
use crate::generation::ControlMode;

/// The most control layers a sketch has (each one is a ControlNet run at every step).
pub const MAX_CONTROL_LAYERS: usize = 4;

/// How a control layer steers: its ControlNet, how strongly and over which part of the steps,
/// whether it is on and shown, and what a picture put on it is turned into.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlSettings {
    /// Steer generations with this layer (when it has lines and a ControlNet).
    pub enabled: bool,
    /// Shown on the canvas (a hidden layer still steers).
    pub visible: bool,
    /// The ControlNet (a folder or file the model scan found). `None`: the model's own, if
    /// one is installed (Atelier Mini Scribble for Atelier Mini), chosen when generating.
    pub controlnet: Option<std::path::PathBuf>,
    pub scale: f32,
    pub start: f64,
    pub end: f64,
    pub mode: ControlMode,
    /// What a picture put on the layer (a photo, a drawing, a gallery picture) is turned
    /// into before it steers.
    pub preprocessor: Preprocessor,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            visible: true,
            controlnet: None,
            scale: 1.0,
            start: 0.0,
            end: 1.0,
            mode: ControlMode::Balanced,
            preprocessor: Preprocessor::Scribble,
        }
    }
}

/// One control layer of a sketch.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlLayer {
    /// Unique within its document and kept in the session: work that finishes later (a
    /// picture being preprocessed for the layer) finds the layer by it, wherever it moved.
    pub id: u64,
    pub settings: ControlSettings,
    pub strokes: Vec<Stroke>,
    /// The picture under the strokes (white lines on black, any size).
    pub image: Option<GrayImage>,
}

impl ControlLayer {
    pub fn new(id: u64, settings: ControlSettings) -> Self {
        Self {
            id,
            settings,
            strokes: Vec::new(),
            image: None,
        }
    }

    /// Whether the layer has anything to steer with: strokes or a picture.
    pub fn has_content(&self) -> bool {
        !self.strokes.is_empty() || self.image.is_some()
    }

    /// Whether generations are steered by it: on, and with content.
    pub fn steers(&self) -> bool {
        self.settings.enabled && self.has_content()
    }
}

/// What of a control layer is kept across sessions (its picture is kept beside, as
/// `control-<id>.png`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlLayerSnapshot {
    pub id: u64,
    pub settings: ControlSettings,
    pub strokes: Vec<Stroke>,
    pub has_image: bool,
}

/// The file a control layer's picture is kept in, in the session folder.
pub fn image_file_name(id: u64) -> String {
    format!("control-{id}.png")
}

/// Layers as they are written: `"Paint"`, `"Mask"`, `{"Control": 1}`. Read back the same way,
/// and the single control layer of earlier sessions (`"Control"`) is the first.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum LayerRepr {
    Now(LayerNow),
    Before(LayerBefore),
}

#[derive(Deserialize)]
pub(super) enum LayerNow {
    Paint,
    Mask,
    Control(usize),
}

#[derive(Deserialize)]
pub(super) enum LayerBefore {
    Control,
}

impl From<LayerRepr> for super::Layer {
    fn from(repr: LayerRepr) -> Self {
        match repr {
            LayerRepr::Now(LayerNow::Paint) => Self::Paint,
            LayerRepr::Now(LayerNow::Mask) => Self::Mask,
            LayerRepr::Now(LayerNow::Control(i)) => Self::Control(i),
            LayerRepr::Before(LayerBefore::Control) => Self::Control(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Layer;

    #[test]
    fn layers_read_back_as_written_and_the_earlier_single_control_layer_is_the_first() {
        for layer in [
            Layer::Paint,
            Layer::Mask,
            Layer::Control(0),
            Layer::Control(3),
        ] {
            let json = serde_json::to_string(&layer).expect("write");
            assert_eq!(serde_json::from_str::<Layer>(&json).expect("read"), layer);
        }
        assert_eq!(
            serde_json::from_str::<Layer>("\"Control\"").expect("read"),
            Layer::Control(0)
        );
        assert!(serde_json::from_str::<Layer>("\"Colour\"").is_err());
    }
}
