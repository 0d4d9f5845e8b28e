//! The gallery: this session's results as a strip of thumbnails, and the large view of the
//! selected one with the settings that made it, "Reuse settings" and "Save as…".

use std::sync::Arc;

use super::{format_secs, one_line, Command, Commands};
use crate::engine::JobId;
use crate::gallery::{ImageMeta, ImageRecord};
use crate::generation::GenerationRequest;

/// Identifies one result in this session's gallery.
pub type ResultId = u64;

/// One finished picture, ready to show.
pub struct ResultItem {
    pub id: ResultId,
    pub job: JobId,
    pub image: Arc<image::RgbImage>,
    /// The exact settings that made it (its own seed, batch 1).
    pub request: GenerationRequest,
    pub elapsed_secs: f32,
    pub texture: egui::TextureHandle,
    /// The settings it carries into any file it is saved as.
    pub meta: ImageMeta,
    /// Its gallery row; `None` if saving it there failed (it can still be saved as).
    pub record: Option<ImageRecord>,
}

impl ResultItem {
    /// What screen readers and tests call the thumbnail: "Image 3: seed 42".
    pub fn thumbnail_label(&self) -> String {
        format!("Image {}: seed {}", self.id, self.request.seed)
    }

    /// A file name to offer when saving: `atelier-<seed>-<prompt words>.png`.
    pub fn suggested_file_name(&self) -> String {
        let words: String = self
            .request
            .prompt
            .split_whitespace()
            .take(5)
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        if words.is_empty() {
            format!("atelier-{}.png", self.request.seed)
        } else {
            format!("atelier-{}-{words}.png", self.request.seed)
        }
    }
}

const THUMB_PX: f32 = 96.0;

/// The strip of thumbnails, newest first. Clicking one selects it.
pub fn results_strip_ui(
    ui: &mut egui::Ui,
    items: &[ResultItem],
    selected: Option<ResultId>,
    commands: &mut Commands,
) {
    ui.horizontal(|ui| {
        ui.strong("Gallery");
        ui.weak(match items.len() {
            0 => "nothing yet: results of this session appear here".to_owned(),
            1 => "1 image".to_owned(),
            n => format!("{n} images"),
        });
    });
    egui::ScrollArea::horizontal()
        .id_salt("gallery_strip")
        .auto_shrink([false, true])
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                for item in items.iter().rev() {
                    let image = egui::Image::from_texture(&item.texture)
                        .fit_to_exact_size(egui::vec2(THUMB_PX, THUMB_PX))
                        .maintain_aspect_ratio(true);
                    let response = ui
                        .add(egui::Button::image(image).selected(selected == Some(item.id)))
                        .on_hover_text(item.thumbnail_label());
                    if response.clicked() {
                        commands.push(Command::SelectImage(item.id));
                    }
                }
            });
        });
}

/// The selected result, large, with its settings and actions.
pub fn image_viewer_ui(ui: &mut egui::Ui, item: Option<&ResultItem>, commands: &mut Commands) {
    let Some(item) = item else {
        ui.centered_and_justified(|ui| {
            ui.weak("Pick an image in the gallery below to see it here.");
        });
        return;
    };
    ui.horizontal(|ui| {
        if ui
            .button("Reuse settings")
            .on_hover_text("Copy this image's prompt, seed and settings into the prompt panel")
            .clicked()
        {
            commands.push(Command::ReuseSettings(item.id));
        }
        if ui
            .button("Save as…")
            .on_hover_text(
                "Save this image as PNG, JPEG or WebP (by the name's extension) with its settings \
                 embedded, or only the AI-generated marking when the Export window strips them",
            )
            .clicked()
        {
            commands.push(Command::SaveImage(item.id));
        }
        if let Some(record) = item.record.as_ref().map(|r| r.id) {
            if ui
                .button("Adjust…")
                .on_hover_text("Adjust this picture (kept with it in the library)")
                .clicked()
            {
                commands.push(Command::AdjustPicture(record));
            }
        }
    });
    ui.separator();
    let request = &item.request;
    let settings_width = 260.0_f32.min(ui.available_width() * 0.4);
    ui.horizontal_top(|ui| {
        let image_size = egui::vec2(
            (ui.available_width() - settings_width - 12.0).max(64.0),
            ui.available_height().max(64.0),
        );
        ui.add(
            egui::Image::from_texture(&item.texture)
                .fit_to_exact_size(image_size)
                .maintain_aspect_ratio(true)
                .alt_text(format!("Image {}", item.id)),
        );
        ui.vertical(|ui| {
            ui.set_width(settings_width);
            egui::Grid::new("image_settings")
                .num_columns(2)
                .spacing([8.0, 4.0])
                .show(ui, |ui| {
                    let rows: [(&str, String); 8] = [
                        ("Prompt:", one_line(&request.prompt, 200)),
                        ("Negative:", one_line(&request.negative_prompt, 200)),
                        ("Seed:", request.seed.to_string()),
                        ("Steps:", request.steps.to_string()),
                        ("Guidance:", format!("{:.1}", request.guidance)),
                        ("Size:", format!("{} × {}", request.width, request.height)),
                        ("Sampler:", request.sampler.label().to_owned()),
                        ("Time:", format_secs(item.elapsed_secs)),
                    ];
                    for (name, value) in rows {
                        ui.weak(name);
                        ui.add(egui::Label::new(value).wrap().selectable(true));
                        ui.end_row();
                    }
                    let model = request
                        .model_dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    ui.weak("Model:");
                    ui.label(model)
                        .on_hover_text(request.model_dir.display().to_string());
                    ui.end_row();
                    if request.init_image.is_some() {
                        ui.weak("From sketch:");
                        ui.label(format!(
                            "strength {:.2}{}",
                            request.strength_0_to_1,
                            if request.mask.is_some() {
                                ", masked"
                            } else {
                                ""
                            }
                        ));
                        ui.end_row();
                    }
                });
        });
    });
}
