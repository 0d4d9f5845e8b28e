//! The studio's side of the Adjustments panel ([`crate::ui::adjust`]): which gallery picture
//! is adjusted, its stack (stored with the gallery row by [`crate::gallery::Gallery::set_adjustments`]
//! on every committed change, so export picks it up), undo, the copied stack, presets, and the
//! preview.
//!
//! # Preview
//! The picture is loaded on a task and downscaled to at most [`PREVIEW_LONG_SIDE`] px.
//! - **GPU** (the studio window): eframe's own wgpu device (`cc.wgpu_render_state`) runs the
//!   stack with [`GpuRunner::preview`] into a [`PreviewTarget`] whose display view is
//!   registered with egui's renderer as a native texture: nothing is read back. The
//!   histogram is computed on the CPU from a second copy of at most [`HISTOGRAM_LONG_SIDE`] px
//!   with the stack applied (cheap, no GPU readback stall).
//! - **CPU** (no render state, as under egui_kittest, or after any [`crate::postfx::gpu::GpuError`],
//!   which is shown in the panel): [`crate::postfx::apply_to_rgb8`] on the preview source into
//!   an egui texture; the histogram is that result's.
//!
//! Either runs only when the shown stack differs from the one last rendered. Neighbourhood
//! ops (sharpen, denoise) take their radius in preview pixels, so on a downscaled preview they
//! look stronger than on the full-size export.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use super::tasks::{take_finished, Poll, Task};
use super::StudioApp;
use crate::postfx::gpu::{GpuRunner, PreviewTarget};
use crate::postfx::stack::Op;
use crate::postfx::{Histogram, Stack};
use crate::ui::adjust::{upsert_op, AdjustCommand, AdjustEdit, AdjustView, PresetRef};
use crate::ui::CentralView;

/// The preview source's longest side at most, in pixels.
pub const PREVIEW_LONG_SIDE: u32 = 1024;
/// The histogram source's longest side at most (GPU path), in pixels.
pub const HISTOGRAM_LONG_SIDE: u32 = 256;
/// Undo steps kept per picture.
const UNDO_DEPTH: usize = 100;

type Loaded = (i64, Result<RgbImage, String>);

/// The preview on eframe's device.
struct GpuPreview {
    source: wgpu::Texture,
    target: PreviewTarget,
}

/// The Adjustments panel's runtime state.
#[derive(Default)]
pub struct Adjust {
    /// The gallery picture being adjusted.
    pub target: Option<i64>,
    /// What the panel shows and edits.
    pub edit: AdjustEdit,
    /// The stack as last stored.
    committed: Stack,
    undo: Vec<Stack>,
    /// Why the stored stack cannot be edited, if it cannot.
    load_error: Option<String>,
    /// The stack "Copy stack" kept.
    clipboard: Option<Stack>,
    source: Option<Arc<RgbImage>>,
    /// The histogram's source on the GPU path.
    small: Option<RgbImage>,
    original_tex: Option<egui::TextureHandle>,
    cpu_tex: Option<egui::TextureHandle>,
    rendered: Option<Stack>,
    histogram: Option<Histogram>,
    /// eframe's wgpu state (the window); `None` headless.
    render_state: Option<egui_wgpu::RenderState>,
    runner: Option<GpuRunner>,
    gpu: Option<GpuPreview>,
    gpu_texture: Option<egui::TextureId>,
    /// Set once the GPU path failed: the CPU path is used from then on.
    gpu_failed: Option<String>,
    loading: Option<Task<Loaded>>,
    presets: Vec<PresetRef>,
    preset_tasks: Vec<Task<PresetOutcome>>,
    notes: Vec<String>,
}

impl Adjust {
    pub fn new(render_state: Option<egui_wgpu::RenderState>) -> Self {
        Self {
            render_state,
            ..Default::default()
        }
    }

    /// The view's borrowed data.
    pub fn view(&self, read_only: bool) -> AdjustView<'_> {
        let adjusted = match (&self.gpu, self.gpu_texture) {
            (Some(_), Some(id)) => Some(id),
            _ => self.cpu_tex.as_ref().map(|t| t.id()),
        };
        AdjustView {
            target: self.target,
            image_size: self
                .source
                .as_ref()
                .map(|s| [s.width() as f32, s.height() as f32]),
            original: self.original_tex.as_ref().map(|t| t.id()),
            adjusted,
            histogram: self.histogram.as_ref(),
            notes: &self.notes,
            editable: self.load_error.is_none() && !read_only,
            can_undo: !self.undo.is_empty(),
            can_paste: self.clipboard.is_some(),
            presets: &self.presets,
            renderer: if self.gpu.is_some() { "GPU" } else { "CPU" },
        }
    }

    fn refresh_notes(&mut self) {
        let mut notes = Vec::new();
        if let Some(e) = &self.load_error {
            notes.push(format!(
                "The stored adjustments cannot be read, so they are shown unchanged and not edited: {e}"
            ));
        }
        let unknown = self.edit.stack.unknown_ops().len();
        if unknown > 0 {
            let s = if unknown == 1 { "" } else { "s" };
            notes.push(format!(
                "{unknown} adjustment{s} from a newer Atelier {} kept but not shown.",
                if unknown == 1 { "is" } else { "are" }
            ));
        }
        if let Some(e) = &self.gpu_failed {
            notes.push(format!("GPU preview unavailable, using the CPU: {e}"));
        }
        self.notes = notes;
    }
}

/// The stack as stored: known ops that change nothing are left out (unknown ones are kept).
pub fn compact(stack: &Stack) -> Stack {
    Stack {
        version: stack.version,
        ops: stack
            .ops
            .iter()
            .filter(|e| matches!(e.op, Op::Unknown { .. }) || !e.op.is_identity())
            .cloned()
            .collect(),
    }
}

/// Shrinks `image` so its longest side is at most `long_side`.
fn downscale(image: &RgbImage, long_side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let long = w.max(h);
    if long <= long_side {
        return image.clone();
    }
    let scale = long_side as f32 / long as f32;
    let nw = ((w as f32 * scale).round() as u32).max(1);
    let nh = ((h as f32 * scale).round() as u32).max(1);
    image::imageops::resize(image, nw, nh, image::imageops::FilterType::Triangle)
}

/// A user preset's name is safe as a file name: letters, digits, space, `-`, `_`; 1-64 chars.
pub fn valid_preset_name(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || c == '-' || c == '_')
}

fn presets_dir(root: &Path) -> PathBuf {
    root.join("presets")
}

/// What a preset task hands back.
pub enum PresetOutcome {
    Listed(Vec<String>),
    /// A user preset read for applying: its label and stack.
    Read(String, Result<Stack, String>),
    /// A preset saved under this name, or why not.
    Saved(String, Result<(), String>),
}

fn read_preset(path: &Path) -> Result<Stack, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Stack::from_json(&text).map_err(|e| e.to_string())
}

fn user_presets(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(presets_dir(root)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

impl StudioApp {
    /// Opens the Adjustments panel on a gallery picture whose row is at hand (see
    /// `adjust_open`, which fetches it first when needed).
    pub(super) fn adjust_open_record(&mut self, record: crate::gallery::ImageRecord) {
        let id = record.id;
        self.rt.view = CentralView::Adjust;
        if self.rt.adjust.target == Some(id) {
            return;
        }
        let a = &mut self.rt.adjust;
        a.target = Some(id);
        a.undo.clear();
        a.load_error = None;
        a.source = None;
        a.small = None;
        a.original_tex = None;
        a.cpu_tex = None;
        a.histogram = None;
        a.rendered = None;
        a.gpu = None;
        let stack = match &record.meta.adjustments {
            None => Ok(Stack::default()),
            Some(value) => Stack::from_json(&value.to_string()),
        };
        match stack {
            Ok(stack) => {
                a.edit.stack = stack.clone();
                a.committed = stack;
            }
            Err(e) => {
                a.load_error = Some(e.to_string());
                a.edit.stack = Stack::default();
                a.committed = Stack::default();
            }
        }
        a.refresh_notes();
        let path = self.rt.pictures.root.join(&record.file);
        a.loading = Some(Task::spawn("adjust-picture", &self.rt.ctx, move || {
            let loaded = crate::imageio::load_image_file(&path)
                .map(|i| downscale(&i.to_rgb8(), PREVIEW_LONG_SIDE))
                .map_err(|e| e.to_string());
            (id, loaded)
        }));
    }

    /// Shows the Adjustments panel on the picture that makes sense: the Result view's image
    /// when coming from there (if it is in the gallery), else the library's single selection.
    pub(super) fn adjust_show(&mut self) {
        let from_result = self
            .rt
            .selected_image
            .and_then(|id| self.rt.results.iter().find(|i| i.id == id))
            .and_then(|i| i.record.as_ref().map(|r| r.id));
        let from_library = self.rt.pictures.single_selected();
        let pick = if self.rt.view == CentralView::Result {
            from_result.or(from_library)
        } else {
            from_library.or(from_result)
        };
        match pick {
            Some(id) => self.adjust_open(id),
            None => {
                self.rt.view = CentralView::Adjust;
                self.reload_presets();
            }
        }
    }

    /// Lists the presets again: the shipped ones at once, the user's from a task.
    pub(super) fn reload_presets(&mut self) {
        let shipped: Vec<PresetRef> = crate::postfx::presets::SHIPPED
            .iter()
            .map(|(name, _)| PresetRef::Shipped((*name).to_owned()))
            .collect();
        self.rt.adjust.presets = shipped;
        let root = self.rt.pictures.root.clone();
        self.rt
            .adjust
            .preset_tasks
            .push(Task::spawn("list-presets", &self.rt.ctx, move || {
                PresetOutcome::Listed(user_presets(&root))
            }));
    }

    pub(super) fn apply_adjust(&mut self, command: AdjustCommand) {
        let a = &mut self.rt.adjust;
        if a.target.is_none() {
            return;
        }
        let editable = a.load_error.is_none();
        match command {
            AdjustCommand::Commit if editable => self.adjust_commit(),
            AdjustCommand::ResetAll if editable => {
                a.edit
                    .stack
                    .ops
                    .retain(|e| matches!(e.op, Op::Unknown { .. }));
                self.adjust_commit();
            }
            AdjustCommand::Auto if editable => {
                let Some(source) = a.source.clone() else {
                    return;
                };
                for entry in crate::postfx::auto_colour(&source).ops {
                    upsert_op(&mut a.edit.stack, entry);
                }
                self.adjust_commit();
            }
            AdjustCommand::Copy => {
                a.clipboard = Some(a.edit.stack.clone());
                match compact(&a.edit.stack).to_json() {
                    Ok(json) => {
                        self.rt.ctx.copy_text(json);
                        self.show_info("Adjustments copied.".into());
                    }
                    Err(e) => self.show_error(e.to_string()),
                }
            }
            AdjustCommand::Paste if editable => {
                let Some(stack) = a.clipboard.clone() else {
                    return;
                };
                a.edit.stack = stack;
                self.adjust_commit();
            }
            AdjustCommand::Undo if editable => {
                let Some(previous) = a.undo.pop() else {
                    return;
                };
                a.edit.stack = previous.clone();
                a.committed = previous;
                self.adjust_store();
            }
            AdjustCommand::ApplyPreset(preset) if editable => {
                let loaded = match &preset {
                    PresetRef::Shipped(name) => crate::postfx::presets::SHIPPED
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, json)| Stack::from_json(json).map_err(|e| e.to_string()))
                        .unwrap_or_else(|| Err("no such preset".into())),
                    PresetRef::User(name) => {
                        let path = presets_dir(&self.rt.pictures.root).join(format!("{name}.json"));
                        let label = preset.label();
                        self.rt.adjust.preset_tasks.push(Task::spawn(
                            "read-preset",
                            &self.rt.ctx,
                            move || PresetOutcome::Read(label, read_preset(&path)),
                        ));
                        return;
                    }
                };
                match loaded {
                    Ok(stack) => {
                        self.rt.adjust.edit.stack = stack;
                        self.adjust_commit();
                    }
                    Err(e) => self.show_error(format!("Preset {}: {e}", preset.label())),
                }
            }
            AdjustCommand::SavePreset(name) => self.adjust_save_preset(&name),
            _ => {}
        }
        self.rt.adjust.refresh_notes();
    }

    fn adjust_save_preset(&mut self, name: &str) {
        let name = name.trim().to_owned();
        if !valid_preset_name(&name) {
            self.show_error(
                "A preset name may use letters, digits, spaces, - and _ (up to 64).".into(),
            );
            return;
        }
        let json = match compact(&self.rt.adjust.edit.stack).to_json() {
            Ok(json) => json,
            Err(e) => {
                self.show_error(e.to_string());
                return;
            }
        };
        let dir = presets_dir(&self.rt.pictures.root);
        self.rt
            .adjust
            .preset_tasks
            .push(Task::spawn("save-preset", &self.rt.ctx, move || {
                let path = dir.join(format!("{name}.json"));
                let written = std::fs::create_dir_all(&dir)
                    .map_err(|e| crate::gallery::GalleryError::Io {
                        path: dir.clone(),
                        source: e,
                    })
                    .and_then(|()| crate::gallery::write_durable(&path, json.as_bytes()));
                PresetOutcome::Saved(name, written.map_err(|e| e.to_string()))
            }));
    }

    /// Takes in finished preset tasks (listing, reading, saving).
    fn poll_presets(&mut self) {
        for finished in take_finished(&mut self.rt.adjust.preset_tasks) {
            let outcome = match finished {
                Ok(outcome) => outcome,
                Err(why) => {
                    self.show_error(format!("Presets: {why}."));
                    continue;
                }
            };
            match outcome {
                PresetOutcome::Listed(names) => {
                    let a = &mut self.rt.adjust;
                    a.presets.retain(|p| matches!(p, PresetRef::Shipped(_)));
                    a.presets.extend(names.into_iter().map(PresetRef::User));
                }
                PresetOutcome::Read(_, Ok(stack)) if self.rt.adjust.load_error.is_none() => {
                    self.rt.adjust.edit.stack = stack;
                    self.adjust_commit();
                    self.rt.adjust.refresh_notes();
                }
                PresetOutcome::Read(_, Ok(_)) => {}
                PresetOutcome::Read(label, Err(e)) => {
                    self.show_error(format!("Preset {label}: {e}"))
                }
                PresetOutcome::Saved(name, Ok(())) => {
                    self.rt.adjust.edit.preset_name.clear();
                    self.reload_presets();
                    self.show_info(format!("Saved preset \"{name}\"."));
                }
                PresetOutcome::Saved(name, Err(e)) => {
                    self.show_error(format!("Preset \"{name}\" not saved: {e}"))
                }
            }
        }
    }

    /// Stores the shown stack if it differs from the stored one (undoably).
    fn adjust_commit(&mut self) {
        let a = &mut self.rt.adjust;
        if a.edit.stack == a.committed {
            return;
        }
        let previous = std::mem::replace(&mut a.committed, a.edit.stack.clone());
        a.undo.push(previous);
        if a.undo.len() > UNDO_DEPTH {
            a.undo.remove(0);
        }
        self.adjust_store();
    }

    fn adjust_store(&mut self) {
        let Some(id) = self.rt.adjust.target else {
            return;
        };
        let stored = compact(&self.rt.adjust.committed);
        let json = if stored.ops.is_empty() {
            None
        } else {
            match stored.to_json() {
                Ok(json) => Some(json),
                Err(e) => {
                    self.show_error(format!("Adjustments not saved: {e}"));
                    return;
                }
            }
        };
        if !self.rt.pictures.writable() {
            self.show_error("The gallery is read-only: adjustments are not saved.".into());
            return;
        }
        // The gallery thread rewrites the row and the file's settings; a failure comes back
        // as an event and is shown then.
        self.rt
            .pictures
            .send_op(crate::gallery::worker::GalleryOp::Adjustments {
                id,
                stack_json: json,
            });
    }

    /// Takes in the loaded picture and renders the preview when the stack changed.
    pub(super) fn sync_adjust(&mut self) {
        self.poll_presets();
        let ctx = self.rt.ctx.clone();
        let a = &mut self.rt.adjust;
        if let Some(task) = &mut a.loading {
            match task.poll() {
                Poll::Pending => {}
                Poll::Lost(why) => {
                    a.loading = None;
                    self.show_error(format!("Loading the picture stopped: {why}."));
                    return;
                }
                Poll::Ready((id, result)) => {
                    a.loading = None;
                    if a.target != Some(id) {
                        return;
                    }
                    match result {
                        Ok(image) => a.set_source(&ctx, image),
                        Err(e) => {
                            self.show_error(format!("Picture #{id} could not be loaded: {e}"));
                            return;
                        }
                    }
                }
            }
        }
        let a = &mut self.rt.adjust;
        if a.source.is_none() || a.rendered.as_ref() == Some(&a.edit.stack) {
            return;
        }
        a.render(&ctx);
        a.refresh_notes();
    }
}

impl Adjust {
    fn set_source(&mut self, ctx: &egui::Context, image: RgbImage) {
        self.original_tex = Some(super::textures::load(ctx, "adjust-original", &image));
        self.small = Some(downscale(&image, HISTOGRAM_LONG_SIDE));
        self.rendered = None;
        self.cpu_tex = None;
        self.gpu = None;
        if self.gpu_failed.is_none() && self.render_state.is_some() {
            if let Err(e) = self.gpu_setup(&image) {
                self.gpu_failed = Some(e.to_string());
                self.gpu = None;
            }
        }
        self.source = Some(Arc::new(image));
    }

    fn gpu_setup(&mut self, image: &RgbImage) -> Result<(), crate::postfx::gpu::GpuError> {
        let Some(rs) = &self.render_state else {
            return Ok(());
        };
        if self.runner.is_none() {
            self.runner = Some(GpuRunner::new(rs.device.clone(), rs.queue.clone())?);
        }
        let Some(runner) = &self.runner else {
            return Ok(());
        };
        let source = runner.upload_rgb8(image)?;
        let target = PreviewTarget::new(runner, image.width(), image.height())?;
        let mut renderer = rs.renderer.write();
        match self.gpu_texture {
            Some(id) => renderer.update_egui_texture_from_wgpu_texture(
                &rs.device,
                target.display_view(),
                wgpu::FilterMode::Linear,
                id,
            ),
            None => {
                self.gpu_texture = Some(renderer.register_native_texture(
                    &rs.device,
                    target.display_view(),
                    wgpu::FilterMode::Linear,
                ))
            }
        }
        self.gpu = Some(GpuPreview { source, target });
        Ok(())
    }

    fn render(&mut self, ctx: &egui::Context) {
        let stack = self.edit.stack.clone();
        if let (Some(gpu), Some(runner)) = (&self.gpu, &self.runner) {
            match runner.preview(&gpu.source, &gpu.target, &stack) {
                Ok(_) => {
                    if let Some(small) = &self.small {
                        let out = crate::postfx::apply_to_rgb8(small, &stack);
                        self.histogram = Some(crate::postfx::histogram(&out));
                    }
                }
                Err(e) => {
                    self.gpu_failed = Some(e.to_string());
                    self.gpu = None;
                }
            }
        }
        if self.gpu.is_none() {
            let Some(source) = &self.source else {
                return;
            };
            let out = crate::postfx::apply_to_rgb8(source, &stack);
            self.histogram = Some(crate::postfx::histogram(&out));
            let image = super::textures::color_image(&out);
            super::textures::show_in(ctx, &mut self.cpu_tex, "adjust-preview", image);
        }
        self.rendered = Some(stack);
        ctx.request_repaint();
    }

    /// The preview (GPU or CPU) shows the current stack.
    pub fn preview_rendered(&self) -> bool {
        (self.cpu_tex.is_some() || self.gpu.is_some())
            && self.rendered.as_ref() == Some(&self.edit.stack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postfx::stack::{Exposure, OpEntry};

    #[test]
    fn compact_drops_identity_ops_but_keeps_unknown_ones() {
        let mut stack = Stack::from_ops([
            Op::Exposure(Exposure { ev: 0.0 }),
            Op::Exposure(Exposure { ev: 1.0 }),
        ]);
        stack.ops.push(OpEntry::new(Op::Unknown {
            name: "glow".into(),
            raw: serde_json::json!({"op": "glow"}),
        }));
        let c = compact(&stack);
        assert_eq!(c.ops.len(), 2);
        assert_eq!(c.ops[1].op.name(), "glow");
    }

    #[test]
    fn preset_names_are_file_safe() {
        assert!(valid_preset_name("warm look_2"));
        assert!(!valid_preset_name("../evil"));
        assert!(!valid_preset_name("  "));
        assert!(!valid_preset_name(&"x".repeat(65)));
    }

    #[test]
    fn downscale_caps_the_long_side() {
        let img = RgbImage::new(2048, 512);
        assert_eq!(downscale(&img, 1024).dimensions(), (1024, 256));
        assert_eq!(downscale(&img, 4096).dimensions(), (2048, 512));
    }
}
