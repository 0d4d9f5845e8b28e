//! The sketch's control layers in the studio: which layer a picture goes to, preprocessing
//! pictures on tasks (one layer at a time; a changed preprocessor re-runs on the kept
//! picture), the ControlNet a layer uses when none is chosen (the model's own), the requests'
//! control images, and a picture's ControlNets brought back onto layers by "reuse settings".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{GrayImage, RgbImage};

use super::tasks::{Poll, Task};
use super::StudioApp;
use crate::generation::{A1111Control, ControlSpec};
use crate::sketch::control::Preprocessor;
use crate::sketch::{ControlSettings, Layer, MAX_CONTROL_LAYERS};

/// A picture put on a control layer, kept before preprocessing so that another preprocessor
/// can run on it, and the preprocessor its lines on the layer came from (`None`: not yet).
struct ControlSource {
    image: Arc<RgbImage>,
    applied: Option<Preprocessor>,
}

/// The control layers' pictures and their preprocessing.
#[derive(Default)]
pub(super) struct ControlWork {
    /// By layer id.
    sources: HashMap<u64, ControlSource>,
    /// The preprocessing under way, for the layer with this id.
    task: Option<(u64, Task<(Preprocessor, GrayImage)>)>,
}

impl ControlWork {
    /// Whether a picture is being turned into lines.
    pub fn busy(&self) -> bool {
        self.task.is_some()
    }
}

/// A reused picture's ControlNet: the name (and path, when known) it was made with, its
/// settings, and its control image if it was kept.
pub(super) struct ReusedControl {
    pub path: Option<PathBuf>,
    pub text: A1111Control,
    pub image: Option<GrayImage>,
}

impl StudioApp {
    /// The control layer strokes and pictures go to: the chosen one.
    pub(super) fn active_control(&self) -> Option<usize> {
        match self.state.canvas.layer {
            Layer::Control(i) if i < self.rt.sketch.controls().len() => Some(i),
            _ => None,
        }
    }

    /// Adds a control layer with the ControlNet of the one before it (or none: the model's
    /// own), chooses it and returns its index; says so when there are as many as can be.
    pub(super) fn add_control_layer(&mut self) -> Option<usize> {
        let controlnet = self
            .rt
            .sketch
            .controls()
            .last()
            .and_then(|c| c.settings.controlnet.clone());
        let settings = ControlSettings {
            controlnet,
            ..ControlSettings::default()
        };
        match self.rt.sketch.add_control_layer(settings) {
            Some(i) => {
                self.state.canvas.layer = Layer::Control(i);
                Some(i)
            }
            None => {
                self.show_error(format!(
                    "A sketch has at most {MAX_CONTROL_LAYERS} control layers."
                ));
                None
            }
        }
    }

    /// The chosen control layer, or a new one when none is chosen.
    fn control_target(&mut self) -> Option<usize> {
        self.active_control().or_else(|| self.add_control_layer())
    }

    /// Puts a picture on the chosen control layer (a new one when none is): kept as the
    /// source, preprocessed on a task.
    pub(super) fn use_control_source(&mut self, image: RgbImage) {
        let Some(index) = self.control_target() else {
            return;
        };
        let id = self.rt.sketch.controls()[index].id;
        self.rt.controls.sources.insert(
            id,
            ControlSource {
                image: Arc::new(image),
                applied: None,
            },
        );
        self.state.canvas.layer = Layer::Control(index);
        self.poll_control_work();
    }

    /// Takes the picture off control layer `index` (undoable), and forgets its source.
    pub(super) fn remove_control_picture(&mut self, index: usize) {
        if let Some(layer) = self.rt.sketch.control(index) {
            self.rt.controls.sources.remove(&layer.id);
            self.rt.sketch.set_control_image(index, None);
        }
    }

    /// A finished preprocessing goes on its layer; then the next layer whose picture waits
    /// for lines, or whose preprocessor changed since, gets its turn.
    pub(super) fn poll_control_work(&mut self) {
        if let Some((id, task)) = &mut self.rt.controls.task {
            let id = *id;
            match task.poll() {
                Poll::Pending => return,
                Poll::Ready((pre, gray)) => {
                    self.rt.controls.task = None;
                    if let Some(index) = self.rt.sketch.control_index(id) {
                        self.rt.sketch.set_control_image(index, Some(gray));
                        if let Some(source) = self.rt.controls.sources.get_mut(&id) {
                            source.applied = Some(pre);
                        }
                    }
                }
                Poll::Lost(why) => {
                    self.rt.controls.task = None;
                    self.rt.controls.sources.remove(&id);
                    self.show_error(format!("Preprocessing the control picture stopped: {why}."));
                    return;
                }
            }
        }
        let doc = &self.rt.sketch;
        // Sources of layers that are gone (removed, cleared away) are dropped.
        self.rt
            .controls
            .sources
            .retain(|id, _| doc.control_index(*id).is_some());
        let next = doc.controls().iter().find_map(|layer| {
            let source = self.rt.controls.sources.get(&layer.id)?;
            let wanted = layer.settings.preprocessor;
            let waiting = match source.applied {
                None => true,
                // A picture taken off the layer stays off.
                Some(applied) => applied != wanted && layer.image.is_some(),
            };
            waiting.then(|| (layer.id, wanted, source.image.clone()))
        });
        if let Some((id, pre, source)) = next {
            let task = Task::spawn("preprocess-control", &self.rt.ctx, move || {
                (pre, pre.apply_gray(&source))
            });
            self.rt.controls.task = Some((id, task));
        }
    }

    /// The ControlNet installed for the chosen model ([`crate::models::own_controlnet`]).
    pub(super) fn model_controlnet(&self) -> Option<PathBuf> {
        let model = self.state.selected_model.as_ref()?;
        crate::models::own_controlnet(model, &self.rt.models.controlnets)
    }

    /// The control images of the layers that steer, at the output size, each with its
    /// ControlNet and settings; an error naming the first layer that has lines but no
    /// ControlNet to use.
    pub(super) fn control_specs(
        &self,
        width: u32,
        height: u32,
    ) -> Result<Vec<ControlSpec>, String> {
        let doc = &self.rt.sketch;
        let mut specs = Vec::new();
        for (i, layer) in doc.controls().iter().enumerate() {
            if !layer.steers() {
                continue;
            }
            let s = &layer.settings;
            let chosen = s
                .controlnet
                .clone()
                .filter(|p| self.rt.models.controlnets.contains(p));
            let Some(net) = chosen.or_else(|| self.model_controlnet()) else {
                return Err(format!(
                    "control layer {} has lines but no ControlNet is chosen (choose one, or \
                     turn the layer off)",
                    i + 1
                ));
            };
            let image = doc.rasterize_control(i, width, height);
            let mut spec = ControlSpec::new(net, Arc::new(image));
            spec.scale = s.scale;
            spec.start = s.start;
            spec.end = s.end;
            spec.mode = s.mode;
            specs.push(spec);
        }
        Ok(specs)
    }

    /// A reused picture's ControlNets as the sketch's control layers (undoable), each with
    /// its control image: the ControlNet by path, else by name among those found (none when
    /// it is not installed). Returns how many of them are not installed.
    pub(super) fn reuse_controls(&mut self, reused: Vec<ReusedControl>) -> usize {
        if reused.is_empty() {
            return 0;
        }
        let mut missing = 0;
        let layers = reused
            .into_iter()
            .map(|r| {
                let found = self.find_controlnet(r.path.as_deref(), &r.text.model);
                missing += usize::from(found.is_none());
                let settings = ControlSettings {
                    controlnet: found,
                    scale: r.text.scale,
                    start: r.text.start,
                    end: r.text.end,
                    mode: r.text.mode,
                    ..ControlSettings::default()
                };
                (settings, r.image)
            })
            .collect();
        self.rt.sketch.replace_control_layers(layers);
        self.state.canvas.layer = Layer::Control(0);
        missing
    }

    fn find_controlnet(&self, path: Option<&Path>, name: &str) -> Option<PathBuf> {
        self.rt
            .models
            .controlnets
            .iter()
            .find(|c| {
                Some(c.as_path()) == path
                    || c.file_stem().is_some_and(|s| s.to_string_lossy() == name)
            })
            .cloned()
    }
}
