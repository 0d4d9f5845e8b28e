//! Applying the [`Command`]s the views emitted, at the end of the frame.

use std::path::Path;
use std::sync::Arc;

use super::files::{self, LoadedImage};
use super::state::{snap_size, MAX_SEED};
use super::tasks::Task;
use super::StudioApp;
use crate::gallery::metadata::ImageRef;
use crate::sketch::SketchDoc;
use crate::ui::queue::JobState;
use crate::ui::{CentralView, Command, SketchCommand};

impl StudioApp {
    pub(super) fn apply(&mut self, command: Command) {
        match command {
            Command::Generate => self.generate(),
            Command::CancelJob(job) => self.cancel_job(job),
            Command::CancelAll => {
                let active: Vec<_> = self
                    .rt
                    .jobs
                    .iter()
                    .filter(|j| j.state.is_active())
                    .map(|j| j.id)
                    .collect();
                for job in active {
                    self.cancel_job(job);
                }
            }
            Command::ClearFinishedJobs => self.rt.jobs.retain(|j| j.state.is_active()),
            Command::RollSeed => {
                self.state.prompt.seed = random_seed();
                self.state.prompt.random_seed = false;
            }
            Command::SelectModel(dir) => self.select_model(&dir),
            Command::RescanModels => {
                let dirs = super::model_dirs(&self.rt.options, &self.state);
                let embedded = !self.rt.options.without_embedded_models;
                self.rt.models.start_scan(&self.rt.ctx, dirs, embedded);
            }
            Command::AddModelFolder => {
                if self.rt.folder_task.is_none() {
                    let picker = self.rt.options.folder_picker.clone();
                    self.rt.folder_task = Some(Task::spawn(
                        "model-folder-dialog",
                        &self.rt.ctx,
                        move || match picker {
                            Some(picker) => (picker.0)(),
                            None => rfd::FileDialog::new()
                                .set_title(
                                    "Add a folder of models (an AUTOMATIC1111 or ComfyUI \
                                     install, or checkpoints)",
                                )
                                .pick_folder(),
                        },
                    ));
                }
            }
            Command::SetModelVae(vae) => {
                if let Some(model) = self.state.selected_model.clone() {
                    match vae {
                        Some(vae) => self.state.model_vaes.insert(model, vae),
                        None => self.state.model_vaes.remove(&model),
                    };
                }
            }
            Command::RemoveModelFolder(dir) => {
                self.state.model_folders.retain(|d| *d != dir);
                self.apply(Command::RescanModels);
            }
            Command::Sketch(command) => self.apply_sketch(command),
            Command::SelectImage(id) => {
                if self.rt.results.iter().any(|i| i.id == id) {
                    self.rt.selected_image = Some(id);
                    self.rt.view = CentralView::Result;
                }
            }
            Command::ReuseSettings(id) => {
                let Some(item) = self.rt.results.iter().find(|i| i.id == id) else {
                    return;
                };
                self.state.prompt.reuse(&item.request);
                let controls: Vec<super::controls::ReusedControl> = item
                    .request
                    .controlnets
                    .iter()
                    .map(|spec| super::controls::ReusedControl {
                        path: Some(spec.path.clone()),
                        text: crate::generation::A1111Control {
                            model: spec.name(),
                            scale: spec.scale,
                            start: spec.start,
                            end: spec.end,
                            mode: spec.mode,
                        },
                        image: spec.image.as_ref().map(|image| {
                            image::DynamicImage::ImageRgb8(image.as_ref().clone()).to_luma8()
                        }),
                    })
                    .collect();
                let model_dir = item.request.model_dir.clone();
                let text = format!("Settings of image {id} are in the prompt panel.");
                if self.state.selected_model.as_ref() != Some(&model_dir)
                    && self.rt.models.find(&model_dir).is_some()
                {
                    // Same model as the image, without resetting the copied settings.
                    self.state.selected_model = Some(model_dir.clone());
                }
                if let Some(vae) = item.request.vae.clone() {
                    if self.rt.models.vaes.contains(&vae) {
                        self.state.model_vaes.insert(model_dir, vae);
                    }
                }
                // The control layers get the picture's control images and settings back.
                let missing = self.reuse_controls(controls);
                let text = match missing {
                    0 => text,
                    n => format!("{text} {n} of its ControlNets are not installed."),
                };
                self.show_info(text);
            }
            Command::SaveImage(id) => {
                let Some(item) = self.rt.results.iter().find(|i| i.id == id) else {
                    return;
                };
                let image = Arc::clone(&item.image);
                let meta = item.meta.clone();
                let name = item.suggested_file_name();
                let opts = self.state.export.options.clone();
                self.rt
                    .save_tasks
                    .push(Task::spawn("save-image", &self.rt.ctx, move || {
                        files::pick_and_save(image, meta, opts, name)
                    }));
            }
            Command::ShowView(CentralView::Adjust) => self.adjust_show(),
            Command::ShowView(view) => self.rt.view = view,
            Command::DismissMessage => self.rt.message = None,
            Command::LibrarySelect(id, mode) => self.library_select(id, mode),
            Command::NeedThumbnails(ids) => self.rt.pictures.request_thumbnails(&ids),
            Command::RateSelected(rating) => self.rate_selected(rating),
            Command::ToggleFavourite => self.toggle_favourite(),
            Command::TrashSelected => self.trash_selected(false),
            Command::RestoreSelected => self.trash_selected(true),
            Command::UndoTrash => self.undo_trash(),
            Command::ReuseRecord(id) => self.reuse_record(id),
            Command::CopyImage(id) => self.copy_image(id),
            Command::ResumeUnfinished => self.resume_unfinished(),
            Command::DiscardUnfinished => self.discard_unfinished(),
            Command::ExportSelected => self.export_selected(),
            Command::ChooseExportFolder => self.choose_export_folder(),
            Command::ImportPictures => self.pick_imports(),
            Command::PasteImage => self.paste_image(),
            Command::SetTags(text) => self.set_tags(&text),
            Command::UseAsInit(id) => self.use_as_init(id),
            Command::UseAsControl(id) => self.use_as_control(id),
            Command::AdjustPicture(id) => self.adjust_open(id),
            Command::Adjust(command) => self.apply_adjust(command),
        }
    }

    /// Uses the model in `dir` and fills steps, guidance, sampler and size from it.
    pub(super) fn select_model(&mut self, dir: &Path) {
        let Some(model) = self.rt.models.find(dir) else {
            self.show_error(format!("{} is no longer available", dir.display()));
            return;
        };
        self.state.prompt.apply_model_defaults(model);
        self.state.selected_model = Some(model.dir.clone());
    }

    fn generate(&mut self) {
        let Some((request, template)) = self.prepared_request(true) else {
            return;
        };
        self.queue_job(request, template);
        if self.rt.message.as_ref().is_some_and(|m| m.is_error) {
            self.rt.message = None;
        }
    }

    /// The request the prompt panel and the canvas make, and the metadata its pictures start
    /// from (fixed now, so later sketch changes do not alter it); `None`, with the reason
    /// shown, when it cannot run. `roll_seed`: roll a new seed when the panel asks for random
    /// seeds (live mode keeps the seed, so only the sketch changes the picture).
    pub(super) fn prepared_request(
        &mut self,
        roll_seed: bool,
    ) -> Option<(
        crate::generation::GenerationRequest,
        crate::gallery::ImageMeta,
    )> {
        if self.rt.models.scanning() && self.rt.models.models.is_empty() {
            self.show_error("Still looking for models.".to_owned());
            return None;
        }
        let Some(model) = self.selected_model().cloned() else {
            self.show_error(
                "No model to generate with: add one first (see the left panel).".to_owned(),
            );
            return None;
        };
        let prompt = &mut self.state.prompt;
        if prompt.random_seed && roll_seed {
            prompt.seed = random_seed();
        }
        let mut request = prompt.to_request(&model.dir);
        // `<lora:NAME:W>` in the prompt: LoRA files the model scan found, by name.
        for (name, weight) in crate::generation::extract_lora_tags(&request.prompt).1 {
            match self.rt.models.lora_named(&name) {
                Some(path) => request.loras.push(crate::generation::LoraSpec {
                    path: path.clone(),
                    weight,
                }),
                None => {
                    self.show_error(format!(
                        "Cannot generate: no LoRA named \"{name}\" was found. Put the file in a \
                         model folder (or its Lora folder) and Rescan, or Add model folder…"
                    ));
                    return None;
                }
            }
        }
        // The VAE chosen for this model, while the scan still finds it.
        request.vae = self
            .state
            .model_vaes
            .get(&model.dir)
            .filter(|v| self.rt.models.vaes.contains(v))
            .cloned();
        // Embeddings the scan found, used by their names as words in either prompt.
        request.embeddings = crate::diffusion::embedding::used_in(
            &[&request.prompt, &request.negative_prompt],
            &self.rt.models.embeddings,
        );
        let sketch = &self.rt.sketch;
        if self.state.canvas.use_sketch && !sketch.is_empty() {
            request.init_image = Some(Arc::new(sketch.rasterize(request.width, request.height)));
            if sketch.has_mask() {
                request.mask = Some(Arc::new(
                    sketch.rasterize_mask(request.width, request.height),
                ));
            }
        }
        // Each control layer that steers does so through its ControlNet.
        match self.control_specs(request.width, request.height) {
            Ok(specs) => {
                request.subject_pass = self.state.canvas.subject_pass && !specs.is_empty();
                request.controlnets = specs;
            }
            Err(e) => {
                self.show_error(format!("Cannot generate: {e}."));
                return None;
            }
        }
        if let Err(e) = request.validate() {
            self.show_error(format!("Cannot generate: {e}."));
            return None;
        }
        let template = crate::gallery::ImageMeta {
            model_name: Some(model.name.clone()),
            model_hash: model.hash.clone(),
            init_image: request
                .init_image
                .as_ref()
                .map(|_| match &self.rt.sketch_parent {
                    Some(uid) => ImageRef::Gallery(uid.clone()),
                    None => ImageRef::Sketch,
                }),
            parent: request
                .init_image
                .as_ref()
                .and(self.rt.sketch_parent.clone()),
            mask_image: request.mask.as_ref().map(|_| ImageRef::SketchMask),
            ..Default::default()
        };
        let mut template = template;
        // The VAE's hash once the scan has computed it (no hashing in the frame).
        let vae_hash = request
            .vae
            .as_ref()
            .and_then(|v| self.rt.models.vae_hashes.get(v).cloned());
        template.extra.extend(request.a1111_extras(vae_hash));
        // A1111's `Lora hashes`, for the LoRAs whose hash the scan has computed.
        let hashes = &self.rt.models.lora_hashes;
        let known: Vec<(&Path, &str)> = request
            .loras
            .iter()
            .filter_map(|l| Some((l.path.as_path(), hashes.get(&l.path)?.as_str())))
            .collect();
        if !known.is_empty() {
            template.extra.insert(
                "Lora hashes".into(),
                crate::models::hash::lora_hashes_text(known.into_iter()),
            );
        }
        Some((request, template))
    }

    fn cancel_job(&mut self, job: crate::engine::JobId) {
        let Some(entry) = self.rt.jobs.iter_mut().find(|j| j.id == job) else {
            return;
        };
        if !entry.state.is_active() {
            return;
        }
        self.rt.engine.cancel(job);
        // Queued jobs are confirmed at once by a `Cancelled` event; running ones at the next step.
        entry.state = JobState::Cancelling;
    }

    fn apply_sketch(&mut self, command: SketchCommand) {
        let doc = &mut self.rt.sketch;
        match command {
            SketchCommand::AddStroke(layer, stroke) => doc.add_stroke(layer, stroke),
            SketchCommand::Undo => {
                doc.undo();
            }
            SketchCommand::Redo => {
                doc.redo();
            }
            SketchCommand::Clear => doc.clear(),
            SketchCommand::PickColour(pos) => {
                let [r, g, b] = doc.sample_colour(pos);
                let canvas = &mut self.state.canvas;
                canvas.color_rgba = [r, g, b, canvas.color_rgba[3]];
                // Back to painting with it, as a quick pick is used.
                if canvas.tool == crate::app::state::CanvasTool::Eyedropper {
                    canvas.tool = crate::app::state::CanvasTool::Brush;
                }
                canvas.eraser = false;
            }
            SketchCommand::OpenControlPicture => {
                if self.rt.background_task.is_none() {
                    self.rt.background_for_control = true;
                    self.rt.background_task = Some(Task::spawn(
                        "open-control-picture",
                        &self.rt.ctx,
                        files::pick_and_load_image,
                    ));
                }
            }
            SketchCommand::RemoveControlPicture(index) => self.remove_control_picture(index),
            SketchCommand::AddControlLayer => {
                self.add_control_layer();
            }
            SketchCommand::RemoveControlLayer(index) => {
                doc.remove_control_layer(index);
                let count = doc.controls().len();
                let canvas = &mut self.state.canvas;
                if let crate::sketch::Layer::Control(i) = canvas.layer {
                    canvas.layer = match count {
                        0 => crate::sketch::Layer::Paint,
                        _ if i >= index && i > 0 => crate::sketch::Layer::Control(i - 1),
                        _ => crate::sketch::Layer::Control(i.min(count - 1)),
                    };
                }
            }
            SketchCommand::SetControlSettings(index, settings) => {
                doc.set_control_settings(index, *settings);
            }
            SketchCommand::RemoveBackground => {
                if doc.background().is_some() {
                    doc.set_background(None);
                    self.rt.sketch_parent = None;
                }
            }
            SketchCommand::OpenBackground => {
                if self.rt.background_task.is_none() {
                    self.rt.background_for_control = false;
                    self.rt.background_task = Some(Task::spawn(
                        "open-background",
                        &self.rt.ctx,
                        files::pick_and_load_image,
                    ));
                }
            }
        }
    }

    /// Puts a loaded image behind the sketch. On a canvas without strokes the canvas (and the
    /// generation size) take the image's aspect ratio, keeping the longer side.
    pub(super) fn use_background(&mut self, loaded: LoadedImage) {
        // A file from outside the gallery: no known parent (a gallery picture sets it after).
        self.rt.sketch_parent = None;
        let LoadedImage { name, image } = loaded;
        let (iw, ih) = image.dimensions();
        if iw == 0 || ih == 0 {
            self.show_error(format!("{name} is empty"));
            return;
        }
        let doc = &self.rt.sketch;
        let no_strokes = doc.strokes(crate::sketch::Layer::Paint).is_empty()
            && doc.strokes(crate::sketch::Layer::Mask).is_empty();
        if no_strokes {
            let prompt = &mut self.state.prompt;
            let long = prompt.width.max(prompt.height) as f32;
            let scale = long / iw.max(ih) as f32;
            prompt.width = snap_size((iw as f32 * scale).round() as u32);
            prompt.height = snap_size((ih as f32 * scale).round() as u32);
            let (w, h) = crate::sketch::canvas_size_for(prompt.width, prompt.height);
            self.rt.sketch = SketchDoc::new(w, h);
            self.rt.sketch_texture = None;
        }
        self.rt.sketch.set_background(Some(image));
        self.state.canvas.use_sketch = true;
        self.rt.view = CentralView::Sketch;
        self.show_info(format!("{name} is the canvas background ({iw} × {ih})."));
    }
}

/// A seed the seed field can show exactly.
fn random_seed() -> u64 {
    rand::random::<u64>() % (MAX_SEED.min(u32::MAX as u64) + 1)
}
