//! The prompt panel: model picker, prompt and negative prompt, seed, steps, guidance, size,
//! sampler, strength and batch, and the Generate / Cancel buttons. It edits the persisted
//! [`PromptSettings`] (in `app::state`) in place.

use std::path::{Path, PathBuf};

use super::{labelled, Command, Commands};
use crate::app::state::{snap_size, PromptSettings, MAX_SEED};
use crate::generation::{
    SamplerKind, MAX_BATCH, MAX_CLIP_SKIP, MAX_GUIDANCE, MAX_SIDE_PX, MAX_STEPS, MIN_SIDE_PX,
};
use crate::models::ModelInfo;

/// What the prompt panel shows besides its own settings.
pub struct PromptPanelView<'a> {
    pub models: &'a [ModelInfo],
    /// Folders that looked like models but could not be read, with why.
    pub rejected: &'a [(PathBuf, String)],
    pub selected_model: Option<&'a ModelInfo>,
    /// Model discovery is still running.
    pub scanning: bool,
    /// Where users put model folders (shown in the empty state).
    pub models_dir: &'a Path,
    /// Folders added with "Add model folder…".
    pub model_folders: &'a [PathBuf],
    /// LoRA files found by the scan.
    pub loras: &'a [PathBuf],
    /// VAE files found by the scan.
    pub vaes: &'a [PathBuf],
    /// The VAE chosen for the selected model (`None`: its own).
    pub selected_vae: Option<&'a Path>,
    /// Jobs queued or running.
    pub active_jobs: usize,
    /// The sketch will be sent as the init image.
    pub sketch_in_use: bool,
    /// The prompts' token counts, once the model's tokenizer is read.
    pub tokens: TokenCounts,
}

/// Tokens used and the room the chunks give (`(83, 150)`: two chunks of 75), for the prompt
/// and the negative prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt: Option<(usize, usize)>,
    pub negative: Option<(usize, usize)>,
}

/// `83 / 150` at the right of a prompt's label; explained on hover.
fn token_count_ui(ui: &mut egui::Ui, count: Option<(usize, usize)>) {
    let Some((used, room)) = count else {
        return;
    };
    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
        ui.weak(format!("{used} / {room}")).on_hover_text(
            "Tokens used / room in the chunks so far. Longer prompts are encoded in chunks, \
             never cut; BREAK starts a new chunk.",
        );
    });
}

impl PromptPanelView<'_> {
    pub fn can_generate(&self) -> bool {
        !self.scanning && self.selected_model.is_some()
    }
}

pub fn prompt_panel_ui(
    ui: &mut egui::Ui,
    settings: &mut PromptSettings,
    view: &PromptPanelView<'_>,
    commands: &mut Commands,
) {
    ui.heading("Atelier");
    ui.add_space(4.0);
    model_picker_ui(ui, view, commands);
    ui.separator();

    // A model card's own example prompt, else one for general models.
    let example = view
        .selected_model
        .and_then(|m| m.card.as_ref())
        .and_then(|c| c.example_prompt.as_deref())
        .unwrap_or("a lighthouse at dusk, oil painting");
    let prompt_label = ui
        .horizontal(|ui| {
            let label = ui.label("Prompt");
            token_count_ui(ui, view.tokens.prompt);
            label
        })
        .inner;
    ui.add(
        egui::TextEdit::multiline(&mut settings.prompt)
            .id_salt("prompt")
            .desired_rows(3)
            .desired_width(f32::INFINITY)
            .hint_text(format!("What to paint: {example}")),
    )
    .labelled_by(prompt_label.id);

    let negative_label = ui
        .horizontal(|ui| {
            let label = ui.label("Negative prompt");
            token_count_ui(ui, view.tokens.negative);
            label
        })
        .inner;
    ui.add(
        egui::TextEdit::multiline(&mut settings.negative_prompt)
            .id_salt("negative_prompt")
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .hint_text("What to avoid: blurry, low quality"),
    )
    .labelled_by(negative_label.id);
    if view.selected_model.is_some_and(|m| m.guidance_embedded) {
        ui.weak(
            "This LCM model takes the guidance as an input and runs without \
             classifier-free guidance: the negative prompt has no effect.",
        );
    }
    lora_ui(ui, settings, view);
    ui.add_space(4.0);

    egui::Grid::new("prompt_settings")
        .num_columns(2)
        .spacing([8.0, 6.0])
        .show(ui, |ui| {
            settings_grid_ui(ui, settings, commands);
        });
    ui.add_space(8.0);

    ui.horizontal(|ui| {
        let generate = ui
            .add_enabled(
                view.can_generate(),
                egui::Button::new("Generate").min_size(egui::vec2(110.0, 28.0)),
            )
            .on_hover_text("Queue a generation (Ctrl+Enter)")
            .on_disabled_hover_text(if view.scanning {
                "Looking for models…"
            } else {
                "No model selected"
            });
        if generate.clicked() {
            commands.push(Command::Generate);
        }
        if ui
            .add_enabled(view.active_jobs > 0, egui::Button::new("Cancel"))
            .on_hover_text("Cancel every queued and running job")
            .clicked()
        {
            commands.push(Command::CancelAll);
        }
    });
    if view.sketch_in_use {
        ui.weak("The sketch is used as the starting image.");
    }
}

fn settings_grid_ui(ui: &mut egui::Ui, settings: &mut PromptSettings, commands: &mut Commands) {
    let seed_label = ui.label("Seed");
    ui.horizontal(|ui| {
        ui.add_enabled(
            !settings.random_seed,
            egui::DragValue::new(&mut settings.seed).range(0..=MAX_SEED),
        )
        .labelled_by(seed_label.id);
        ui.checkbox(&mut settings.random_seed, "Random")
            .on_hover_text("Roll a new seed for every generation");
        if ui
            .button("New seed")
            .on_hover_text("Roll a new seed now")
            .clicked()
        {
            commands.push(Command::RollSeed);
        }
    });
    ui.end_row();

    labelled(ui, "Steps", |ui| {
        ui.add(egui::DragValue::new(&mut settings.steps).range(1..=MAX_STEPS))
    });
    ui.end_row();

    labelled(ui, "Guidance", |ui| {
        ui.add(
            egui::Slider::new(&mut settings.guidance, 0.0..=MAX_GUIDANCE)
                .step_by(0.5)
                .clamping(egui::SliderClamping::Always),
        )
    });
    ui.end_row();

    let size_label = ui.label("Size");
    ui.horizontal(|ui| {
        size_drag_ui(ui, &mut settings.width).labelled_by(size_label.id);
        ui.label("×");
        size_drag_ui(ui, &mut settings.height).labelled_by(size_label.id);
        if ui
            .small_button("Swap")
            .on_hover_text("Swap width and height")
            .clicked()
        {
            std::mem::swap(&mut settings.width, &mut settings.height);
        }
    });
    ui.end_row();

    let sampler_label = ui.label("Sampler");
    egui::ComboBox::from_id_salt("sampler")
        .selected_text(settings.sampler.label())
        .show_ui(ui, |ui| {
            for kind in SamplerKind::ALL {
                ui.selectable_value(&mut settings.sampler, kind, kind.label())
                    .on_hover_text(kind.summary());
            }
        })
        .response
        .on_hover_text(settings.sampler.summary())
        .labelled_by(sampler_label.id);
    ui.end_row();

    labelled(ui, "Strength", |ui| {
        ui.add(
            egui::Slider::new(&mut settings.strength_0_to_1, 0.0..=1.0)
                .step_by(0.01)
                .clamping(egui::SliderClamping::Always),
        )
    })
    .on_hover_text("With a sketch: 0 keeps it, 1 ignores it");
    ui.end_row();

    labelled(ui, "Batch", |ui| {
        ui.add(egui::DragValue::new(&mut settings.batch).range(1..=MAX_BATCH))
    })
    .on_hover_text("How many images one job makes (seed, seed+1, …)");
    ui.end_row();

    labelled(ui, "Clip skip", |ui| {
        ui.add(egui::DragValue::new(&mut settings.clip_skip).range(1..=MAX_CLIP_SKIP))
    })
    .on_hover_text(
        "1 uses the text encoder's last layer; 2 the one before, as many anime-style \
         SD 1.5 models expect (SDXL ignores it)",
    );
    ui.end_row();

    labelled(ui, "Fast decode", |ui| {
        ui.checkbox(&mut settings.fast_decode, "tiny decoder")
    })
    .on_hover_text(
        "Decode the pictures with a tiny decoder (TAESD, TAESDXL for SDXL) instead of the \
         model's VAE: several times faster, slightly softer. Put taesd_decoder.safetensors \
         beside the model or in ComfyUI's models/vae_approx; the step previews use it too",
    );
    ui.end_row();
}

/// A width or height, in steps of 8 within the allowed range.
fn size_drag_ui(ui: &mut egui::Ui, px: &mut u32) -> egui::Response {
    let response = ui.add(
        egui::DragValue::new(px)
            .range(MIN_SIDE_PX..=MAX_SIDE_PX)
            .speed(8.0)
            .suffix(" px"),
    );
    *px = snap_size(*px);
    response
}

fn model_picker_ui(ui: &mut egui::Ui, view: &PromptPanelView<'_>, commands: &mut Commands) {
    if view.scanning && view.models.is_empty() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Looking for models…");
        });
        return;
    }
    if view.models.is_empty() {
        empty_state_ui(ui, view, commands);
        return;
    }
    let model_label = ui.label("Model");
    ui.horizontal(|ui| {
        let selected_text = view
            .selected_model
            .map(model_display_name)
            .unwrap_or_else(|| "Choose a model".to_owned());
        egui::ComboBox::from_id_salt("model")
            .selected_text(selected_text)
            .width((ui.available_width() - 72.0).max(120.0))
            .truncate()
            .show_ui(ui, |ui| {
                for model in view.models {
                    let selected = view.selected_model.is_some_and(|m| m.dir == model.dir);
                    if ui
                        .selectable_label(selected, model_display_name(model))
                        .on_hover_text(model_hover_text(model))
                        .clicked()
                        && !selected
                    {
                        commands.push(Command::SelectModel(model.dir.clone()));
                    }
                }
            })
            .response
            .labelled_by(model_label.id);
        if ui
            .add_enabled(!view.scanning, egui::Button::new("Rescan"))
            .on_hover_text("Look for models again")
            .clicked()
        {
            commands.push(Command::RescanModels);
        }
    });
    vae_picker_ui(ui, view, commands);
    model_folders_ui(ui, view, commands);
    if let Some(card) = view.selected_model.and_then(|m| m.card.as_ref()) {
        if !card.description.is_empty() {
            ui.label(egui::RichText::new(&card.description).small().weak());
        }
        if !card.license.is_empty() {
            ui.label(
                egui::RichText::new(format!("Licence: {}", card.license))
                    .small()
                    .weak(),
            );
        }
        if let Some(text) = &card.attribution {
            ui.collapsing("Attribution", |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("model_attribution")
                    .max_height(200.0)
                    .show(ui, |ui| {
                        ui.add(
                            egui::Label::new(egui::RichText::new(text).small()).selectable(true),
                        );
                    });
            });
        }
    }
    if let Some(problem) = view.selected_model.and_then(|m| m.card_problem.as_ref()) {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            egui::RichText::new(format!("The model card is ignored: {problem}")).small(),
        );
    }
    rejected_ui(ui, view);
}

/// The LoRAs in the prompt (`<lora:NAME:W>`), each with a weight to drag and a button to take
/// it out, and the LoRAs found, a click adding one to the prompt (as A1111's cards do).
fn lora_ui(ui: &mut egui::Ui, settings: &mut PromptSettings, view: &PromptPanelView<'_>) {
    use crate::generation::{edit_lora_tag, extract_lora_tags};
    let in_prompt = extract_lora_tags(&settings.prompt).1;
    for (name, weight) in &in_prompt {
        ui.horizontal(|ui| {
            let label = ui.label(format!("LoRA {name}"));
            let mut w = *weight;
            let known = view.loras.iter().any(|p| {
                p.file_stem()
                    .is_some_and(|s| s.to_string_lossy() == name.as_str())
            });
            if ui
                .add(
                    egui::DragValue::new(&mut w)
                        .speed(0.01)
                        .range(
                            -crate::generation::MAX_LORA_WEIGHT
                                ..=crate::generation::MAX_LORA_WEIGHT,
                        )
                        .max_decimals(2),
                )
                .labelled_by(label.id)
                .on_hover_text("The LoRA's weight: 1 as trained, 0 off, negative the opposite")
                .changed()
            {
                settings.prompt = edit_lora_tag(&settings.prompt, name, Some(w));
            }
            if ui
                .small_button("Remove")
                .on_hover_text("Take this LoRA out of the prompt")
                .clicked()
            {
                settings.prompt = edit_lora_tag(&settings.prompt, name, None);
            }
            if !known {
                ui.colored_label(ui.visuals().warn_fg_color, "not found");
            }
        });
    }
    if view.loras.is_empty() {
        return;
    }
    egui::CollapsingHeader::new(format!("LoRAs ({})", view.loras.len()))
        .id_salt("lora_list")
        .show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                for path in view.loras {
                    let name = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let used = in_prompt.iter().any(|(n, _)| *n == name);
                    if ui
                        .add_enabled(!used, egui::Button::new(&name).small())
                        .on_hover_text(format!(
                            "Add <lora:{name}:1> to the prompt\n{}",
                            path.display()
                        ))
                        .clicked()
                    {
                        let sep = if settings.prompt.trim_end().is_empty() {
                            ""
                        } else {
                            ", "
                        };
                        settings.prompt =
                            format!("{}{sep}<lora:{name}:1>", settings.prompt.trim_end());
                    }
                }
            });
        });
}

/// The VAE for the selected model: its own, or one of the VAE files found (remembered per
/// model). Shown only when the scan found VAE files.
fn vae_picker_ui(ui: &mut egui::Ui, view: &PromptPanelView<'_>, commands: &mut Commands) {
    if view.vaes.is_empty() || view.selected_model.is_none() {
        return;
    }
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    ui.horizontal(|ui| {
        let label = ui.label("VAE");
        let selected_text = view
            .selected_vae
            .map(stem)
            .unwrap_or_else(|| MODEL_OWN_VAE.to_owned());
        egui::ComboBox::from_id_salt("model_vae")
            .selected_text(selected_text)
            .width((ui.available_width() - 8.0).max(120.0))
            .truncate()
            .show_ui(ui, |ui| {
                if ui
                    .selectable_label(view.selected_vae.is_none(), MODEL_OWN_VAE)
                    .on_hover_text("Decode with the VAE inside the model")
                    .clicked()
                    && view.selected_vae.is_some()
                {
                    commands.push(Command::SetModelVae(None));
                }
                for vae in view.vaes {
                    let selected = view.selected_vae == Some(vae.as_path());
                    if ui
                        .selectable_label(selected, stem(vae))
                        .on_hover_text(vae.display().to_string())
                        .clicked()
                        && !selected
                    {
                        commands.push(Command::SetModelVae(Some(vae.clone())));
                    }
                }
            })
            .response
            .labelled_by(label.id)
            .on_hover_text("The VAE that turns latents into pixels, remembered for this model");
    });
}

/// The VAE picker's entry for the model's own VAE.
const MODEL_OWN_VAE: &str = "Model's own";

/// "Add model folder…" and the folders added, each with a button to forget it.
fn model_folders_ui(ui: &mut egui::Ui, view: &PromptPanelView<'_>, commands: &mut Commands) {
    ui.horizontal_wrapped(|ui| {
        if ui
            .add_enabled(!view.scanning, egui::Button::new("Add model folder…"))
            .on_hover_text(
                "A folder of checkpoints (.safetensors, .ckpt) or diffusers models, or an \
                 AUTOMATIC1111 / ComfyUI install: its models are found and the folder is remembered",
            )
            .clicked()
        {
            commands.push(Command::AddModelFolder);
        }
    });
    for dir in view.model_folders {
        ui.horizontal(|ui| {
            ui.label(
                egui::RichText::new(dir.display().to_string())
                    .small()
                    .weak(),
            );
            if ui
                .small_button("Forget")
                .on_hover_text("Stop looking for models in this folder")
                .clicked()
            {
                commands.push(Command::RemoveModelFolder(dir.clone()));
            }
        });
    }
}

/// Where the model is; for a single file also its size and AUTOMATIC1111 hash.
fn model_hover_text(model: &ModelInfo) -> String {
    let mut text = model.dir.display().to_string();
    if let Some(size) = model.file_size {
        text += &format!("\n{:.2} GB", size as f64 / 1e9);
        match &model.hash {
            Some(h) => text += &format!(", model hash {h}"),
            None => text += ", model hash being computed",
        }
    }
    text
}

/// "name (SD 1.x)", or "Title (demo, SD 1.x)" for a model with a card.
pub fn model_display_name(model: &ModelInfo) -> String {
    match &model.card {
        Some(_) => format!("{} (demo, {})", model.display_name(), model.family_label()),
        None => format!("{} ({})", model.name, model.family_label()),
    }
}

fn empty_state_ui(ui: &mut egui::Ui, view: &PromptPanelView<'_>, commands: &mut Commands) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.label(egui::RichText::new("No model found").strong().size(16.0));
        ui.label("Atelier needs a Stable Diffusion model: a checkpoint file (.safetensors or .ckpt, as AUTOMATIC1111, ComfyUI and Civitai have them) or a diffusers folder (model_index.json, unet/, vae/, ...).");
        ui.label("Put it in:");
        ui.add(egui::Label::new(egui::RichText::new(view.models_dir.display().to_string()).monospace()).selectable(true));
        ui.label("or start Atelier with:");
        ui.add(egui::Label::new(egui::RichText::new("atelier --model-dir DIR").monospace()).selectable(true));
        ui.label("Models in the Hugging Face cache are found too.");
        if ui
            .add_enabled(!view.scanning, egui::Button::new("Look again"))
            .clicked()
        {
            commands.push(Command::RescanModels);
        }
        model_folders_ui(ui, view, commands);
    });
    rejected_ui(ui, view);
}

fn rejected_ui(ui: &mut egui::Ui, view: &PromptPanelView<'_>) {
    if view.rejected.is_empty() {
        return;
    }
    egui::CollapsingHeader::new(format!(
        "{} folder(s) could not be used",
        view.rejected.len()
    ))
    .id_salt("rejected_models")
    .show(ui, |ui| {
        for (dir, why) in view.rejected {
            ui.label(egui::RichText::new(dir.display().to_string()).monospace());
            ui.colored_label(ui.visuals().warn_fg_color, why);
        }
    });
}
