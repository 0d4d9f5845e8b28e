//! The studio application: ties the engine, the model library and the sketch document to the
//! views in [`crate::ui`]. State that is persisted ([`state::PersistedState`]) is kept apart
//! from runtime handles (engine, textures, background tasks). Each frame pulls engine events
//! and finished tasks, draws the panels (which emit [`Command`]s), then applies the commands.

mod adjust;
mod commands;
mod controls;
mod engine_events;
mod files;
mod jobs;
mod live;
mod models;
mod pictures;
mod session;
pub mod state;
mod tasks;
mod textures;
mod tokens;

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::Engine;
use crate::sketch::SketchDoc;
use crate::ui::canvas::{CanvasView, StrokeInProgress, CONTROL_TINTS_RGBA, MASK_TINT_RGBA};
use crate::ui::prompt::PromptPanelView;
use crate::ui::queue::JobEntry;
use crate::ui::results::ResultItem;
use crate::ui::{CentralView, Command, Commands, ResultId};

pub use state::{CanvasSettings, ExportSettings, PersistedState, PromptSettings};

use files::{LoadOutcome, SaveOutcome};
use models::ModelList;
use tasks::{Poll, Task};

/// How the studio is started.
#[derive(Clone, Debug, Default)]
pub struct StudioOptions {
    /// Model folders (or folders of model folders) to offer besides the usual places, e.g.
    /// from `atelier --model-dir DIR`. The first model found in them is selected at start.
    pub extra_model_dirs: Vec<PathBuf>,
    /// Leave out the models shipped in `assets/models` (tests of the empty state).
    pub without_embedded_models: bool,
    /// The gallery's data directory; `None`: the user's (`ATELIER_HOME` or XDG).
    pub gallery_dir: Option<PathBuf>,
    /// What "Add model folder…" asks; `None`: the system's folder dialog. Tests, which
    /// cannot drive a system dialog, answer it here.
    pub folder_picker: Option<FolderPicker>,
}

/// Asks the user for a folder (on a task thread): `None` when the dialog is cancelled.
#[derive(Clone)]
pub struct FolderPicker(pub Arc<dyn Fn() -> Option<PathBuf> + Send + Sync>);

impl std::fmt::Debug for FolderPicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FolderPicker")
    }
}

/// Opens the studio window and runs it until it is closed.
pub fn run_studio(options: StudioOptions) -> anyhow::Result<()> {
    let wgpu_setup = egui_wgpu::WgpuSetupCreateNew {
        // Ask for what the adapter can do: the GL backend would otherwise get WebGL2 limits.
        device_descriptor: Arc::new(|adapter: &wgpu::Adapter| wgpu::DeviceDescriptor {
            label: Some("atelier device"),
            required_limits: adapter.limits(),
            ..Default::default()
        }),
        ..egui_wgpu::WgpuSetupCreateNew::without_display_handle()
    };
    let native_options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Atelier")
            .with_app_id("io.github.atelierstudio.Atelier")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([800.0, 520.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: egui_wgpu::WgpuConfiguration {
            wgpu_setup: egui_wgpu::WgpuSetup::CreateNew(wgpu_setup),
            ..Default::default()
        },
        persistence_path: Some(crate::paths::data_dir().join("studio.ron")),
        ..Default::default()
    };
    eframe::run_native(
        "Atelier",
        native_options,
        Box::new(move |cc| Ok(Box::new(StudioApp::new(cc, options)))),
    )
    .map_err(|e| anyhow::anyhow!("the studio window failed: {e}"))
}

/// A one-line message in the status bar.
struct Message {
    text: String,
    is_error: bool,
}

/// Everything that lives only while the studio runs.
struct Runtime {
    ctx: egui::Context,
    options: StudioOptions,
    engine: Engine,
    models: ModelList,
    jobs: Vec<JobEntry>,
    /// The queue's record in the gallery, and what an earlier session left unfinished.
    jobs_book: jobs::JobBook,
    /// This session's results (the strip); each is also in the gallery unless saving failed.
    results: Vec<ResultItem>,
    /// The gallery of every picture: catalog, library view state.
    pictures: pictures::Pictures,
    next_image_id: ResultId,
    selected_image: Option<ResultId>,
    view: CentralView,
    sketch: SketchDoc,
    /// The gallery picture (uid) the sketch's background came from, for lineage.
    sketch_parent: Option<String>,
    /// The rendered sketch and the document revision it shows.
    sketch_texture: Option<(u64, egui::TextureHandle)>,
    stroke: StrokeInProgress,
    background_task: Option<Task<LoadOutcome>>,
    /// The image being opened goes to a control layer (preprocessed), not the background.
    background_for_control: bool,
    /// The control layers' pictures and their preprocessing.
    controls: controls::ControlWork,
    save_tasks: Vec<Task<SaveOutcome>>,
    /// The "Add model folder…" dialog, while open.
    folder_task: Option<Task<Option<PathBuf>>>,
    message: Option<Message>,
    /// The Adjustments panel: picture, stack, preview (GPU or CPU).
    adjust: adjust::Adjust,
    /// Keeps the prompt panel, canvas settings and sketch on disk as they change.
    session: session::SessionKeeper,
    /// Live mode: the running live job and the newest live picture.
    live: live::Live,
    /// The prompt box's token counts for the selected model.
    tokens: tokens::PromptTokens,
}

/// The studio: an [`eframe::App`], and testable headless through [`StudioApp::studio_ui`].
pub struct StudioApp {
    state: PersistedState,
    rt: Runtime,
}

impl StudioApp {
    /// Builds the studio inside eframe, restoring the settings saved last time.
    pub fn new(cc: &eframe::CreationContext<'_>, options: StudioOptions) -> Self {
        Self::with_state(
            &cc.egui_ctx,
            options,
            PersistedState::load(cc.storage),
            cc.wgpu_render_state.clone(),
        )
    }

    /// Builds the studio on any egui context, with default settings (for tests and tools).
    pub fn new_headless(ctx: &egui::Context, options: StudioOptions) -> Self {
        Self::with_state(ctx, options, PersistedState::default(), None)
    }

    /// Like [`StudioApp::new_headless`], with a wgpu render state as eframe would give (tests
    /// of the GPU preview under egui_kittest's wgpu renderer).
    pub fn new_headless_with_wgpu(
        ctx: &egui::Context,
        options: StudioOptions,
        render_state: egui_wgpu::RenderState,
    ) -> Self {
        Self::with_state(ctx, options, PersistedState::default(), Some(render_state))
    }

    fn with_state(
        ctx: &egui::Context,
        options: StudioOptions,
        mut state: PersistedState,
        render_state: Option<egui_wgpu::RenderState>,
    ) -> Self {
        let engine = spawn_engine(ctx);
        let mut models = ModelList::default();
        let gallery_dir = options
            .gallery_dir
            .clone()
            .unwrap_or_else(crate::paths::data_dir);
        // The session kept on disk is newer than eframe's storage (written every 30 s).
        let mut keeper = session::SessionKeeper::new(gallery_dir.clone());
        let mut message = None;
        let sketch = match session::load(&gallery_dir) {
            Ok(Some((kept, sketch))) => {
                state = kept;
                keeper.loaded(&state, &sketch);
                sketch
            }
            Ok(None) => {
                let (w, h) =
                    crate::sketch::canvas_size_for(state.prompt.width, state.prompt.height);
                SketchDoc::new(w, h)
            }
            Err(e) => {
                message = Some(Message {
                    text: format!("The last session could not be restored: {e}"),
                    is_error: true,
                });
                let (w, h) =
                    crate::sketch::canvas_size_for(state.prompt.width, state.prompt.height);
                SketchDoc::new(w, h)
            }
        };
        let pictures = pictures::Pictures::open(ctx, &gallery_dir);
        models.start_scan(
            ctx,
            model_dirs(&options, &state),
            !options.without_embedded_models,
        );
        Self {
            state,
            rt: Runtime {
                ctx: ctx.clone(),
                options,
                engine,
                models,
                jobs: Vec::new(),
                jobs_book: jobs::JobBook::default(),
                results: Vec::new(),
                pictures,
                next_image_id: 1,
                selected_image: None,
                view: CentralView::default(),
                sketch,
                sketch_parent: None,
                sketch_texture: None,
                stroke: StrokeInProgress::default(),
                background_task: None,
                background_for_control: false,
                controls: controls::ControlWork::default(),
                save_tasks: Vec::new(),
                folder_task: None,
                message,
                adjust: adjust::Adjust::new(render_state),
                session: keeper,
                live: Default::default(),
                tokens: tokens::PromptTokens::default(),
            },
        }
    }

    /// Takes in a finished picture as if the engine had made it (scripts, benchmarks): it is
    /// handed to the gallery thread and shown once saved.
    pub fn receive_result(&mut self, image: crate::generation::GeneratedImage) {
        self.save_result(0, image);
    }

    /// Queues a generation from the prompt panel's settings, as Generate and Ctrl+Enter do.
    pub fn queue_generation(&mut self) {
        self.apply(Command::Generate);
    }

    /// "Reuse settings" of gallery picture `id`, as the library's button does.
    pub fn reuse_picture(&mut self, id: i64) {
        self.apply(Command::ReuseRecord(id));
    }

    /// New settings for control layer `index`, as its row in the canvas panel sends them.
    pub fn set_control_settings(&mut self, index: usize, settings: crate::sketch::ControlSettings) {
        self.apply(Command::Sketch(
            crate::ui::SketchCommand::SetControlSettings(index, Box::new(settings)),
        ));
    }

    /// Clears the sketch (undoable), as the canvas's Clear button does.
    pub fn clear_sketch(&mut self) {
        self.apply(Command::Sketch(crate::ui::SketchCommand::Clear));
    }

    /// The persisted settings (prompt panel, canvas tools, chosen model).
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// The prompt panel's settings, e.g. for scripting a session.
    pub fn prompt_settings_mut(&mut self) -> &mut PromptSettings {
        &mut self.state.prompt
    }

    /// The canvas's tools, e.g. for scripting a session.
    pub fn canvas_settings_mut(&mut self) -> &mut crate::app::state::CanvasSettings {
        &mut self.state.canvas
    }

    /// True while the files a scan found are being hashed (A1111 model and LoRA hashes).
    pub fn is_hashing_models(&self) -> bool {
        self.rt.models.hashing()
    }

    /// True while the first model scan (or a rescan) is running.
    pub fn is_scanning_models(&self) -> bool {
        self.rt.models.scanning()
    }

    /// Models found by the last scan.
    pub fn model_count(&self) -> usize {
        self.rt.models.models.len()
    }

    /// The sketch canvas document.
    pub fn sketch(&self) -> &SketchDoc {
        &self.rt.sketch
    }

    /// Jobs queued or running.
    pub fn active_jobs(&self) -> usize {
        self.rt.jobs.iter().filter(|j| j.state.is_active()).count()
    }

    /// Results of this session so far.
    pub fn results_len(&self) -> usize {
        self.rt.results.len()
    }

    /// The settings of the newest result of this session (what its job asked for).
    pub fn last_result_request(&self) -> Option<&crate::generation::GenerationRequest> {
        self.rt.results.last().map(|r| &r.request)
    }

    /// Live jobs started, and those cancelled for a newer one.
    pub fn live_counts(&self) -> (usize, usize) {
        (self.rt.live.started_jobs, self.rt.live.stale_cancelled)
    }

    /// Whether a live picture is shown.
    pub fn has_live_picture(&self) -> bool {
        self.rt.live.texture.is_some()
    }

    /// Pictures the library view lists (after its filter).
    pub fn library_len(&self) -> usize {
        self.rt.pictures.ids.len()
    }

    /// The one picture selected in the library, if exactly one is.
    pub fn selected_picture(&self) -> Option<i64> {
        let selected = &self.rt.pictures.selected;
        (selected.len() == 1)
            .then(|| selected.first().copied())
            .flatten()
    }

    /// The gallery's data directory (open its catalog read-only to look inside).
    pub fn gallery_dir(&self) -> &std::path::Path {
        &self.rt.pictures.root
    }

    /// The gallery is open (read-only or not).
    pub fn gallery_is_open(&self) -> bool {
        self.rt.pictures.is_open()
    }

    /// The picture the Adjustments panel is on, if any.
    pub fn adjust_target(&self) -> Option<i64> {
        self.rt.adjust.target
    }

    /// The stack the Adjustments panel shows (edit it to script a change; it is previewed
    /// next frame and stored on [`StudioApp::commit_adjustments`]).
    pub fn adjust_stack_mut(&mut self) -> &mut crate::postfx::Stack {
        &mut self.rt.adjust.edit.stack
    }

    /// Stores the Adjustments panel's stack, as releasing a slider does.
    pub fn commit_adjustments(&mut self) {
        self.apply(Command::Adjust(crate::ui::adjust::AdjustCommand::Commit));
    }

    /// The Adjustments panel's preview is rendered for its current stack.
    pub fn adjust_preview_ready(&self) -> bool {
        self.rt.adjust.preview_rendered()
    }

    /// Where the Adjustments panel's preview runs: "GPU" or "CPU".
    pub fn adjust_renderer(&self) -> &str {
        self.rt.adjust.view(false).renderer
    }

    /// What the Adjustments panel tells (unknown ops, GPU fallback, unreadable stack).
    pub fn adjust_notes(&self) -> Vec<String> {
        self.rt.adjust.view(false).notes.to_vec()
    }

    /// The adjusted and the original preview textures' ids (CPU path), once made.
    pub fn adjust_textures(&self) -> (Option<egui::TextureId>, Option<egui::TextureId>) {
        let v = self.rt.adjust.view(false);
        (v.adjusted, v.original)
    }

    /// The histogram of the adjusted preview, once made.
    pub fn adjust_histogram(&self) -> Option<crate::postfx::Histogram> {
        self.rt.adjust.view(false).histogram.cloned()
    }

    /// The status bar's message, if any.
    pub fn message(&self) -> Option<&str> {
        self.rt.message.as_ref().map(|m| m.text.as_str())
    }

    /// Takes in what the background threads finished: engine events (results are handed to
    /// the gallery thread), the gallery's answers, finished tasks. eframe calls this through
    /// [`eframe::App::logic`] before every frame and also while the window is hidden, when
    /// no frame is drawn, so results are saved even then.
    pub fn logic_step(&mut self) {
        self.pull_engine_events();
        self.live_tick();
        self.poll_tasks();
        self.poll_pictures();
        let prompt = &self.state.prompt;
        self.rt.tokens.tick(
            &self.rt.ctx,
            self.state.selected_model.as_deref(),
            &prompt.prompt,
            &prompt.negative_prompt,
        );
        let (ctx, state, sketch) = (&self.rt.ctx, &self.state, &self.rt.sketch);
        if let Some(e) = self.rt.session.tick(ctx, state, sketch) {
            self.show_error(format!(
                "The prompt and sketch could not be kept on disk (they are safe until you quit): {e}"
            ));
        }
    }

    /// The prompt panel, canvas settings and sketch as shown are written to the session file.
    pub fn session_saved(&self) -> bool {
        self.rt.session.is_settled(&self.state, &self.rt.sketch)
    }

    /// One frame of the whole studio (its logic runs before, in [`StudioApp::logic_step`]).
    pub fn studio_ui(&mut self, ui: &mut egui::Ui) {
        let mut commands = Commands::default();
        self.take_dropped_files(ui.ctx());
        shortcuts(ui.ctx(), self.rt.view, &mut commands);
        self.sync_sketch();
        self.panels_ui(ui, &mut commands);
        for command in commands.take() {
            self.apply(command);
        }
        self.sync_adjust();
    }

    fn selected_model(&self) -> Option<&crate::models::ModelInfo> {
        let dir = self.state.selected_model.as_deref()?;
        self.rt.models.find(dir)
    }

    fn panels_ui(&mut self, ui: &mut egui::Ui, commands: &mut Commands) {
        let models_dir = crate::paths::models_dir();
        let selected_model = self.selected_model().cloned();
        let model_controlnet = self.model_controlnet();
        let Self { state, rt } = self;
        let active_jobs = rt.jobs.iter().filter(|j| j.state.is_active()).count();

        let device = rt.engine.device_description();
        egui::Panel::bottom("status_bar").show(ui, |ui| {
            status_bar_ui(
                ui,
                rt.message.as_ref(),
                active_jobs,
                device.as_deref(),
                commands,
            );
        });

        egui::Panel::left("prompt_panel")
            .default_size(340.0)
            .min_size(280.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("prompt_scroll")
                    .show(ui, |ui| {
                        let view = PromptPanelView {
                            models: &rt.models.models,
                            rejected: &rt.models.rejected,
                            selected_model: selected_model.as_ref(),
                            scanning: rt.models.scanning(),
                            models_dir: &models_dir,
                            model_folders: &state.model_folders,
                            loras: &rt.models.loras,
                            vaes: &rt.models.vaes,
                            selected_vae: selected_model
                                .as_ref()
                                .and_then(|m| state.model_vaes.get(&m.dir))
                                .map(PathBuf::as_path),
                            active_jobs,
                            sketch_in_use: state.canvas.use_sketch && !rt.sketch.is_empty(),
                            tokens: rt.tokens.counts(),
                        };
                        crate::ui::prompt::prompt_panel_ui(ui, &mut state.prompt, &view, commands);
                    });
            });

        egui::Panel::right("queue_panel")
            .default_size(280.0)
            .min_size(200.0)
            .show(ui, |ui| {
                let unfinished = rt.jobs_book.unfinished_view();
                crate::ui::queue::queue_panel_ui(ui, &rt.jobs, &unfinished, commands);
            });

        egui::Panel::bottom("gallery_panel")
            .default_size(150.0)
            .min_size(60.0)
            .resizable(true)
            .show(ui, |ui| {
                crate::ui::results::results_strip_ui(ui, &rt.results, rt.selected_image, commands);
            });

        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                for (view, name) in [
                    (CentralView::Sketch, "Sketch"),
                    (CentralView::Result, "Result"),
                    (CentralView::Library, "Library"),
                    (CentralView::Adjust, "Adjust"),
                ] {
                    if ui.selectable_label(rt.view == view, name).clicked() && rt.view != view {
                        commands.push(Command::ShowView(view));
                    }
                }
            });
            ui.separator();
            match rt.view {
                CentralView::Sketch => {
                    let files_hovered = ui.ctx().input(|i| !i.raw.hovered_files.is_empty());
                    let view = CanvasView {
                        doc: &rt.sketch,
                        texture: rt.sketch_texture.as_ref().map(|(_, t)| t),
                        loading_background: rt.background_task.is_some(),
                        files_hovered,
                        controlnets: &rt.models.controlnets,
                        model_controlnet: model_controlnet.as_deref(),
                        preprocessing: rt.controls.busy(),
                        live_texture: rt.live.texture.as_ref(),
                        live_busy: rt.live.busy(),
                        live_secs: rt.live.last_secs,
                    };
                    crate::ui::canvas::canvas_panel_ui(
                        ui,
                        &mut state.canvas,
                        &view,
                        &mut rt.stroke,
                        commands,
                    );
                }
                CentralView::Result => {
                    let item = rt
                        .selected_image
                        .and_then(|id| rt.results.iter().find(|i| i.id == id));
                    crate::ui::results::image_viewer_ui(ui, item, commands);
                }
                CentralView::Library => {
                    let p = &mut rt.pictures;
                    let view = crate::ui::library::LibraryView {
                        ids: &p.ids,
                        thumbs: &p.thumbs,
                        selected: &p.selected,
                        detail: p.detail.as_ref().map(|(r, t)| (r, t.as_ref())),
                        parent: p.parent.as_ref().map(|(id, s)| (*id, s.as_str())),
                        models: &p.models,
                        sizes: &p.sizes,
                        read_only: !p.writable(),
                        status: &p.status,
                        can_undo_trash: !p.last_trashed.is_empty(),
                    };
                    let edits = crate::ui::library::LibraryEdits {
                        filter: &mut p.filter,
                        export: &mut state.export,
                        tags: &mut p.tags_edit,
                    };
                    crate::ui::library::library_ui(ui, edits, &view, commands);
                }
                CentralView::Adjust => {
                    let read_only = !rt.pictures.writable();
                    let a = &mut rt.adjust;
                    let mut edit = std::mem::take(&mut a.edit);
                    crate::ui::adjust::adjust_ui(ui, &mut edit, &a.view(read_only), commands);
                    a.edit = edit;
                }
            }
        });
    }

    /// Takes in finished background tasks: model scans, background images, saves.
    fn poll_tasks(&mut self) {
        if self.rt.models.poll(&self.rt.ctx) {
            self.after_model_scan();
        }
        if let Some(task) = &mut self.rt.background_task {
            match task.poll() {
                Poll::Pending => {}
                Poll::Ready(outcome) => {
                    self.rt.background_task = None;
                    match outcome {
                        Ok(Some(loaded)) if self.rt.background_for_control => {
                            let rgb = image::DynamicImage::ImageRgba8(loaded.image).to_rgb8();
                            self.use_control_source(rgb);
                        }
                        Ok(Some(loaded)) => self.use_background(loaded),
                        // Closed, or no file dialog on this desktop (no portal, no zenity).
                        Ok(None) => self.show_info("No image chosen.".to_owned()),
                        Err(error) => self.show_error(error),
                    }
                }
                Poll::Lost(why) => {
                    self.rt.background_task = None;
                    self.show_error(format!("Opening the image stopped: {why}."));
                }
            }
        }
        self.poll_control_work();
        self.poll_folder_dialog();
        for outcome in tasks::take_finished(&mut self.rt.save_tasks) {
            match outcome.and_then(|saved| saved) {
                Ok(Some(path)) => self.show_info(format!("Saved {}", path.display())),
                Ok(None) => self.show_info("Not saved: no file chosen.".to_owned()),
                Err(error) => self.show_error(error),
            }
        }
    }

    /// Picks a model after a scan: the first one from `--model-dir` on the first scan, else
    /// the one chosen last time, else the first found.
    fn after_model_scan(&mut self) {
        let list = &self.rt.models;
        let from_options = (list.scans_done == 1 && !self.rt.options.extra_model_dirs.is_empty())
            .then(|| {
                list.models
                    .iter()
                    .find(|m| m.source == crate::models::ModelSource::Given)
            })
            .flatten();
        let kept = self
            .state
            .selected_model
            .as_deref()
            .and_then(|dir| list.find(dir));
        let choice = from_options.or(kept).or(list.models.first());
        let Some(choice) = choice else {
            return;
        };
        if self.state.selected_model.as_deref() != Some(choice.dir.as_path()) {
            let dir = choice.dir.clone();
            self.select_model(&dir);
        }
    }

    /// Takes in the folder chosen in "Add model folder…": remembered, then searched.
    fn poll_folder_dialog(&mut self) {
        let Some(task) = &mut self.rt.folder_task else {
            return;
        };
        let outcome = match task.poll() {
            tasks::Poll::Pending => return,
            tasks::Poll::Ready(chosen) => Ok(chosen),
            tasks::Poll::Lost(reason) => Err(reason),
        };
        self.rt.folder_task = None;
        match outcome {
            Ok(Some(dir)) => {
                if !self.state.model_folders.contains(&dir) {
                    self.state.model_folders.push(dir.clone());
                }
                self.show_info(format!("Looking for models in {}", dir.display()));
                self.apply(Command::RescanModels);
            }
            Ok(None) => {}
            Err(reason) => self.show_error(format!("The folder dialog failed: {reason}")),
        }
    }

    fn show_error(&mut self, text: String) {
        self.rt.message = Some(Message {
            text,
            is_error: true,
        });
    }

    fn show_info(&mut self, text: String) {
        self.rt.message = Some(Message {
            text,
            is_error: false,
        });
    }

    /// Keeps the canvas size in step with the prompt size while it is empty, and its texture
    /// in step with the document.
    fn sync_sketch(&mut self) {
        let (width, height) =
            crate::sketch::canvas_size_for(self.state.prompt.width, self.state.prompt.height);
        let doc = &self.rt.sketch;
        if doc.is_empty()
            && self.rt.stroke.0.is_none()
            && (doc.width_px(), doc.height_px()) != (width, height)
        {
            self.rt.sketch = SketchDoc::new(width, height);
            self.rt.sketch_texture = None;
        }
        let doc = &self.rt.sketch;
        if self
            .rt
            .sketch_texture
            .as_ref()
            .is_some_and(|(revision, _)| *revision == doc.revision())
        {
            return;
        }
        // Shown with 512 to 768 px on the long side (small canvases stay sharp, big ones cheap);
        // generation rasterises at the requested size.
        let long = doc.width_px().max(doc.height_px()) as f32;
        let preview_long = long.clamp(512.0, 768.0);
        let w = ((doc.width_px() as f32 * preview_long / long).round() as u32).max(1);
        let h = ((doc.height_px() as f32 * preview_long / long).round() as u32).max(1);
        let preview = doc.render_preview(w, h, MASK_TINT_RGBA, &CONTROL_TINTS_RGBA);
        let image =
            egui::ColorImage::from_rgba_unmultiplied([w as usize, h as usize], preview.as_raw());
        let revision = doc.revision();
        let mut slot = self.rt.sketch_texture.take().map(|(_, t)| t);
        textures::show_in(&self.rt.ctx, &mut slot, "sketch", image);
        self.rt.sketch_texture = slot.map(|t| (revision, t));
    }

    /// Files dropped on the window: imported into the gallery while the library is shown,
    /// else the first one becomes the canvas background.
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        if self.rt.view == CentralView::Library {
            let paths: Vec<PathBuf> = ctx.input(|i| {
                i.raw
                    .dropped_files
                    .iter()
                    .map(|f| f.path().to_path_buf())
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            });
            if !paths.is_empty() {
                self.import_paths(&paths);
            }
            return;
        }
        let dropped = ctx.input(|i| i.raw.dropped_files.first().cloned());
        let Some(file) = dropped else {
            return;
        };
        if self.rt.background_task.is_some() {
            self.show_error("Still opening the previous image.".to_owned());
            return;
        }
        self.rt.view = CentralView::Sketch;
        // On the control layer a dropped picture becomes its lines.
        self.rt.background_for_control =
            matches!(self.state.canvas.layer, crate::sketch::Layer::Control(_));
        self.rt.background_task = Some(Task::spawn("open-dropped", ctx, move || {
            files::load_dropped(&file)
        }));
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.logic_step();
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.studio_ui(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.state.save(storage);
    }
}

/// Keyboard shortcuts: Ctrl+Enter generates (even while typing the prompt); Ctrl+Z and
/// Ctrl+Shift+Z (or Ctrl+Y) undo and redo sketch strokes unless a text field has focus; in
/// the library, see [`library_shortcuts`].
fn shortcuts(ctx: &egui::Context, view: CentralView, commands: &mut Commands) {
    use egui::{Key, KeyboardShortcut, Modifiers};
    let generate = KeyboardShortcut::new(Modifiers::COMMAND, Key::Enter);
    if ctx.input_mut(|i| i.consume_shortcut(&generate)) {
        commands.push(Command::Generate);
    }
    if ctx.egui_wants_keyboard_input() {
        return;
    }
    if view == CentralView::Library {
        library_shortcuts(ctx, commands);
        return;
    }
    if view == CentralView::Adjust {
        let undo = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
        if ctx.input_mut(|i| i.consume_shortcut(&undo)) {
            commands.push(Command::Adjust(crate::ui::adjust::AdjustCommand::Undo));
        }
        return;
    }
    // Shift+Z first: plain Ctrl+Z also matches when Shift is held.
    let redo = KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    let redo_y = KeyboardShortcut::new(Modifiers::COMMAND, Key::Y);
    let undo = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
    if ctx.input_mut(|i| i.consume_shortcut(&redo) || i.consume_shortcut(&redo_y)) {
        commands.push(Command::Sketch(crate::ui::SketchCommand::Redo));
    } else if ctx.input_mut(|i| i.consume_shortcut(&undo)) {
        commands.push(Command::Sketch(crate::ui::SketchCommand::Undo));
    }
}

/// The library's keys: 0-5 rate, F favourite, Delete trash, Ctrl+Z undo trash, Ctrl+V paste.
fn library_shortcuts(ctx: &egui::Context, commands: &mut Commands) {
    use egui::{Key, KeyboardShortcut, Modifiers};
    let undo = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
    if ctx.input_mut(|i| i.consume_shortcut(&undo)) {
        commands.push(Command::UndoTrash);
    }
    let pasted = ctx.input(|i| {
        i.events.iter().any(|e| matches!(e, egui::Event::Paste(_)))
            || (i.modifiers.command && i.key_pressed(Key::V))
    });
    if pasted {
        commands.push(Command::PasteImage);
    }
    let keys = [
        (Key::Num0, 0u8),
        (Key::Num1, 1),
        (Key::Num2, 2),
        (Key::Num3, 3),
        (Key::Num4, 4),
        (Key::Num5, 5),
    ];
    ctx.input(|i| {
        if i.modifiers.any() {
            return;
        }
        for (key, rating) in keys {
            if i.key_pressed(key) {
                commands.push(Command::RateSelected(rating));
            }
        }
        if i.key_pressed(Key::F) {
            commands.push(Command::ToggleFavourite);
        }
        if i.key_pressed(Key::Delete) {
            commands.push(Command::TrashSelected);
        }
    });
}

fn status_bar_ui(
    ui: &mut egui::Ui,
    message: Option<&Message>,
    active_jobs: usize,
    device: Option<&str>,
    commands: &mut Commands,
) {
    ui.horizontal(|ui| {
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            ui.weak(format!(
                "Runs on: {}",
                device.unwrap_or("choosing a device…")
            ));
            ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                status_message_ui(ui, message, active_jobs, commands)
            });
        });
    });
}

fn status_message_ui(
    ui: &mut egui::Ui,
    message: Option<&Message>,
    active_jobs: usize,
    commands: &mut Commands,
) {
    ui.horizontal(|ui| match message {
        Some(message) => {
            let color = if message.is_error {
                ui.visuals().error_fg_color
            } else {
                ui.visuals().text_color()
            };
            ui.colored_label(color, &message.text);
            if ui.small_button("Dismiss").clicked() {
                commands.push(Command::DismissMessage);
            }
        }
        None => {
            ui.weak(match active_jobs {
                0 => "Ready".to_owned(),
                1 => "1 job in the queue".to_owned(),
                n => format!("{n} jobs in the queue"),
            });
        }
    });
}

/// The studio's engine: events wake the UI (or `logic()` while hidden).
fn spawn_engine(ctx: &egui::Context) -> Engine {
    let waker_ctx = ctx.clone();
    Engine::spawn_with(
        Some(Arc::new(move || waker_ctx.request_repaint())),
        crate::diffusion::GeneratorOptions::from_env(),
    )
}

/// Folders searched for models: `--model-dir` ones, then those added in the studio.
fn model_dirs(options: &StudioOptions, state: &PersistedState) -> Vec<PathBuf> {
    let mut dirs = options.extra_model_dirs.clone();
    for d in &state.model_folders {
        if !dirs.contains(d) {
            dirs.push(d.clone());
        }
    }
    dirs
}
