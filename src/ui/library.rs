//! The library: every picture ever made or imported, as a virtualised grid of thumbnails with
//! full-text search, filters and sort, multi-select, and a details pane for the selection
//! (settings, rating, favourite, lineage, reuse, export, copy, trash).
//!
//! Keys while the library has the keyboard: `1`-`5` rate, `0` clears the rating, `F` toggles
//! favourite, `Delete` moves to the trash, `Ctrl+Z` undoes the last trash, arrows move the
//! selection, `Ctrl+A` selects everything shown.

use std::collections::{BTreeSet, HashMap};

use super::{one_line, Command, Commands};
use crate::app::state::ExportSettings;
use crate::gallery::export::ExportFormat;
use crate::gallery::{ImageRecord, Sort};

/// A thumbnail's state in the studio's cache.
pub enum Thumb {
    Loading,
    Ready(egui::TextureHandle),
    Failed(String),
}

/// The filter row's settings (edited by the view itself).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LibraryFilter {
    pub text: String,
    pub favourites_only: bool,
    pub min_rating: u8,
    pub model: Option<String>,
    pub sort: Sort,
    pub trash: bool,
    /// Only pictures made in the last this many days.
    pub within_days: Option<u32>,
    pub size: Option<(u32, u32)>,
}

/// What the view may edit besides the filter.
pub struct LibraryEdits<'a> {
    pub filter: &'a mut LibraryFilter,
    pub export: &'a mut ExportSettings,
    /// The details pane's tag field.
    pub tags: &'a mut String,
}

/// How a click changes the selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectMode {
    /// Only this one.
    Replace,
    /// Add or remove this one (Ctrl/Cmd+click).
    Toggle,
    /// Everything from the last clicked one to this (Shift+click).
    Range,
}

/// Everything the library view shows, borrowed from the app.
pub struct LibraryView<'a> {
    /// The ids matching the filter, in order.
    pub ids: &'a [i64],
    pub thumbs: &'a HashMap<i64, Thumb>,
    pub selected: &'a BTreeSet<i64>,
    /// The record shown in the details pane, with its large texture when loaded.
    pub detail: Option<(&'a ImageRecord, Option<&'a egui::TextureHandle>)>,
    /// The picture it was made from, if in the gallery: (id, prompt).
    pub parent: Option<(i64, &'a str)>,
    pub models: &'a [String],
    pub sizes: &'a [(u32, u32)],
    pub read_only: bool,
    /// Where the catalog lives, or why it is not available.
    pub status: &'a str,
    pub can_undo_trash: bool,
}

const CELL: f32 = 112.0;

pub fn library_ui(
    ui: &mut egui::Ui,
    edits: LibraryEdits<'_>,
    view: &LibraryView<'_>,
    commands: &mut Commands,
) {
    let LibraryEdits {
        filter,
        export,
        tags,
    } = edits;
    filter_row_ui(ui, filter, export, view, commands);
    export_window_ui(ui.ctx(), export, view.selected.len(), commands);
    ui.separator();
    let details_width = 300.0_f32.min(ui.available_width() * 0.4);
    egui::Panel::right("library_details")
        .resizable(true)
        .default_size(details_width)
        .show(ui, |ui| details_ui(ui, view, tags, export, commands));
    egui::CentralPanel::default().show(ui, |ui| grid_ui(ui, view, commands));
}

fn export_window_ui(
    ctx: &egui::Context,
    export: &mut ExportSettings,
    selected: usize,
    commands: &mut Commands,
) {
    if !export.open {
        return;
    }
    let mut open = true;
    egui::Window::new(format!("Export {selected} picture(s)"))
        .open(&mut open)
        .collapsible(false)
        .resizable(false)
        .show(ctx, |ui| export_options_ui(ui, export, selected, commands));
    if !open {
        export.open = false;
    }
}

/// The Export window's contents (also reachable without the window, for tests of the view).
pub fn export_options_ui(
    ui: &mut egui::Ui,
    export: &mut ExportSettings,
    selected: usize,
    commands: &mut Commands,
) {
    let opts = &mut export.options;
    ui.horizontal(|ui| {
        ui.weak("Format:");
        for f in ExportFormat::ALL {
            ui.selectable_value(&mut opts.format, f, f.name().to_uppercase());
        }
    });
    if opts.format == ExportFormat::Jpeg {
        super::labelled(ui, "JPEG quality", |ui| {
            ui.add(egui::Slider::new(&mut opts.jpeg_quality, 1..=100))
        });
    }
    super::labelled(ui, "File names", |ui| {
        ui.text_edit_singleline(&mut opts.name_pattern)
    })
    .on_hover_text(
        "{seed} {prompt} {id} {uid} {model} {steps} {sampler} {date} {width} {height} {index}",
    );
    ui.checkbox(&mut opts.apply_adjustments, "Apply adjustments");
    ui.checkbox(
        &mut opts.strip_metadata,
        "Strip prompts and settings (privacy; the AI-generated marking stays)",
    );
    ui.horizontal(|ui| {
        super::labelled(ui, "Export folder", |ui| {
            ui.add(
                egui::TextEdit::singleline(&mut export.folder)
                    .hint_text("ask every time")
                    .desired_width(220.0),
            )
        });
        if ui.button("Choose…").clicked() {
            commands.push(Command::ChooseExportFolder);
        }
    });
    let label = if export.folder.trim().is_empty() {
        format!("Choose folder and export {selected}")
    } else {
        format!("Export {selected}")
    };
    if ui
        .add_enabled(selected > 0, egui::Button::new(label))
        .clicked()
    {
        commands.push(Command::ExportSelected);
    }
}

fn filter_row_ui(
    ui: &mut egui::Ui,
    filter: &mut LibraryFilter,
    export: &mut ExportSettings,
    view: &LibraryView<'_>,
    commands: &mut Commands,
) {
    ui.horizontal_wrapped(|ui| {
        let search = super::labelled(ui, "Search", |ui| {
            ui.add(
                egui::TextEdit::singleline(&mut filter.text)
                    .hint_text("words in prompts or tags")
                    .desired_width(200.0),
            )
        });
        if ui
            .input(|i| i.modifiers.command && i.key_pressed(egui::Key::F))
            && !search.has_focus()
        {
            search.request_focus();
        }
        ui.toggle_value(&mut filter.favourites_only, "Favourites")
            .on_hover_text("Only favourites");
        let rating_label = ui.label("Rating");
        egui::ComboBox::from_id_salt("min_rating")
            .selected_text(match filter.min_rating {
                0 => "Any rating".to_owned(),
                n => format!("{n}+ stars"),
            })
            .show_ui(ui, |ui| {
                for n in 0..=5u8 {
                    let text = if n == 0 {
                        "Any rating".to_owned()
                    } else {
                        format!("{n}+ stars")
                    };
                    ui.selectable_value(&mut filter.min_rating, n, text);
                }
            })
            .response
            .labelled_by(rating_label.id);
        let model_label = ui.label("Model");
        egui::ComboBox::from_id_salt("model_filter")
            .selected_text(filter.model.as_deref().unwrap_or("Any model"))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut filter.model, None, "Any model");
                for m in view.models {
                    ui.selectable_value(&mut filter.model, Some(m.clone()), m);
                }
            })
            .response
            .labelled_by(model_label.id);
        let when_label = ui.label("When");
        egui::ComboBox::from_id_salt("within_days")
            .selected_text(days_label(filter.within_days))
            .show_ui(ui, |ui| {
                for d in [None, Some(1), Some(7), Some(30), Some(365)] {
                    ui.selectable_value(&mut filter.within_days, d, days_label(d));
                }
            })
            .response
            .labelled_by(when_label.id);
        let size_label = ui.label("Size");
        egui::ComboBox::from_id_salt("size_filter")
            .selected_text(size_text(filter.size))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut filter.size, None, size_text(None));
                for &s in view.sizes {
                    ui.selectable_value(&mut filter.size, Some(s), size_text(Some(s)));
                }
            })
            .response
            .labelled_by(size_label.id);
        let sort_label_id = ui.label("Sort").id;
        egui::ComboBox::from_id_salt("sort")
            .selected_text(sort_label(filter.sort))
            .show_ui(ui, |ui| {
                for s in [
                    Sort::NewestFirst,
                    Sort::OldestFirst,
                    Sort::RatingFirst,
                    Sort::Relevance,
                ] {
                    ui.selectable_value(&mut filter.sort, s, sort_label(s));
                }
            })
            .response
            .labelled_by(sort_label_id);
        ui.toggle_value(&mut filter.trash, "Trash")
            .on_hover_text("Show the trash");
        ui.weak(match view.ids.len() {
            1 => "1 picture".to_owned(),
            n => format!("{n} pictures"),
        });
        if !view.read_only
            && ui
                .button("Import…")
                .on_hover_text("Add pictures from files (settings from A1111, ComfyUI, InvokeAI are read); or drop files here, or paste with Ctrl+V")
                .clicked()
        {
            commands.push(Command::ImportPictures);
        }
        if !view.selected.is_empty()
            && ui
                .button(format!("Export {}…", view.selected.len()))
                .on_hover_text("Export the selected pictures to a folder, adjustments applied")
                .clicked()
        {
            export.open = true;
        }
    });
    if view.read_only || !view.status.is_empty() {
        ui.weak(view.status);
    }
}

fn days_label(d: Option<u32>) -> String {
    match d {
        None => "Any time".into(),
        Some(1) => "Today".into(),
        Some(n) => format!("Last {n} days"),
    }
}

fn size_text(s: Option<(u32, u32)>) -> String {
    match s {
        None => "Any size".into(),
        Some((w, h)) => format!("{w} x {h}"),
    }
}

fn sort_label(s: Sort) -> &'static str {
    match s {
        Sort::NewestFirst => "Newest first",
        Sort::OldestFirst => "Oldest first",
        Sort::RatingFirst => "Best rated first",
        Sort::Relevance => "Best match first",
    }
}

fn grid_ui(ui: &mut egui::Ui, view: &LibraryView<'_>, commands: &mut Commands) {
    if view.ids.is_empty() {
        ui.centered_and_justified(|ui| {
            ui.weak("No pictures here yet. Generated pictures are kept here automatically.");
        });
        return;
    }
    let spacing = ui.spacing();
    let cell_w = CELL + 2.0 * spacing.button_padding.x + spacing.item_spacing.x;
    let row_h = CELL + 2.0 * spacing.button_padding.y + spacing.item_spacing.y;
    let cols = ((ui.available_width() / cell_w).floor() as usize).max(1);
    let rows = view.ids.len().div_ceil(cols);
    let mut wanted = Vec::new();
    egui::ScrollArea::vertical()
        .id_salt("library_grid")
        .auto_shrink([false, false])
        .show_rows(ui, row_h, rows, |ui, range| {
            for row in range {
                ui.horizontal(|ui| {
                    for col in 0..cols {
                        let Some(&id) = view.ids.get(row * cols + col) else {
                            break;
                        };
                        let selected = view.selected.contains(&id);
                        let size = egui::vec2(CELL, CELL);
                        let response = match view.thumbs.get(&id) {
                            Some(Thumb::Ready(tex)) => ui.add(
                                egui::Button::image(
                                    egui::Image::from_texture(tex)
                                        .fit_to_exact_size(size)
                                        .maintain_aspect_ratio(true),
                                )
                                .selected(selected),
                            ),
                            Some(Thumb::Failed(why)) => ui
                                .add_sized(size, egui::Button::new("!").selected(selected))
                                .on_hover_text(why.as_str()),
                            _ => {
                                wanted.push(id);
                                ui.add_sized(size, egui::Button::new("…").selected(selected))
                            }
                        };
                        let name = format!("Picture {id}");
                        response.widget_info(|| {
                            egui::WidgetInfo::selected(
                                egui::Role::Button,
                                true,
                                selected,
                                name.clone(),
                            )
                        });
                        let response = response.on_hover_text(&name);
                        if response.clicked() {
                            let mods = ui.input(|i| i.modifiers);
                            let mode = if mods.shift {
                                SelectMode::Range
                            } else if mods.command {
                                SelectMode::Toggle
                            } else {
                                SelectMode::Replace
                            };
                            commands.push(Command::LibrarySelect(id, mode));
                        }
                        if response.double_clicked() {
                            commands.push(Command::ReuseRecord(id));
                        }
                    }
                });
            }
        });
    if !wanted.is_empty() {
        commands.push(Command::NeedThumbnails(wanted));
    }
}

fn details_ui(
    ui: &mut egui::Ui,
    view: &LibraryView<'_>,
    tags: &mut String,
    export: &mut ExportSettings,
    commands: &mut Commands,
) {
    let Some((record, texture)) = view.detail else {
        ui.weak(if view.selected.len() > 1 {
            format!("{} pictures selected", view.selected.len())
        } else {
            "Select a picture to see how it was made.".to_owned()
        });
        if view.selected.len() > 1 && !view.read_only {
            ui.horizontal(|ui| {
                if ui.button("Move to trash").clicked() {
                    commands.push(Command::TrashSelected);
                }
            });
        }
        if view.can_undo_trash && ui.button("Undo trash").clicked() {
            commands.push(Command::UndoTrash);
        }
        return;
    };
    let id = record.id;
    egui::ScrollArea::vertical()
        .id_salt("library_details_scroll")
        .show(ui, |ui| {
            let width = ui.available_width();
            match texture {
                Some(tex) => {
                    ui.add(
                        egui::Image::from_texture(tex)
                            .fit_to_exact_size(egui::vec2(width, width))
                            .maintain_aspect_ratio(true)
                            .alt_text(format!("Picture {id}")),
                    );
                }
                None => {
                    ui.add_sized(egui::vec2(width, 64.0), egui::Spinner::new());
                }
            }
            if !view.read_only {
                ui.horizontal(|ui| {
                    ui.weak("Rating:");
                    for n in 1..=5u8 {
                        if ui
                            .selectable_label(record.rating >= n, n.to_string())
                            .on_hover_text(format!("Rate {n} (key {n}; again to clear)"))
                            .clicked()
                        {
                            let rating = if record.rating == n { 0 } else { n };
                            commands.push(Command::RateSelected(rating));
                        }
                    }
                    if ui
                        .selectable_label(record.favourite, "Favourite")
                        .on_hover_text("Key F")
                        .clicked()
                    {
                        commands.push(Command::ToggleFavourite);
                    }
                });
            }
            ui.horizontal_wrapped(|ui| {
                if ui
                    .button("Reuse settings")
                    .on_hover_text("Copy prompt, seed and settings into the prompt panel")
                    .clicked()
                {
                    commands.push(Command::ReuseRecord(id));
                }
                if !view.read_only
                    && ui
                        .button("Adjust…")
                        .on_hover_text(
                            "Exposure, colour, curves, sharpening... (kept with the picture)",
                        )
                        .clicked()
                {
                    commands.push(Command::AdjustPicture(id));
                }
                if ui.button("Copy image").clicked() {
                    commands.push(Command::CopyImage(id));
                }
                if ui
                    .button("Use as init image")
                    .on_hover_text("Put it behind the sketch for image-to-image or inpainting; results link back to it")
                    .clicked()
                {
                    commands.push(Command::UseAsInit(id));
                }
                if ui
                    .button("Use as control")
                    .on_hover_text(
                        "Put its lines (through the control layer's preprocessor: scribble, \
                         Canny, XDoG or soft edge) on the control layer",
                    )
                    .clicked()
                {
                    commands.push(Command::UseAsControl(id));
                }
                if ui.button("Export…").clicked() {
                    export.open = true;
                }
                if !view.read_only {
                    if record.trashed.is_some() {
                        if ui.button("Restore").clicked() {
                            commands.push(Command::RestoreSelected);
                        }
                    } else if ui
                        .button("Move to trash")
                        .on_hover_text("Delete key; undo with Ctrl+Z")
                        .clicked()
                    {
                        commands.push(Command::TrashSelected);
                    }
                }
                if view.can_undo_trash && ui.button("Undo trash").clicked() {
                    commands.push(Command::UndoTrash);
                }
            });
            if let Some((parent_id, prompt)) = view.parent {
                if ui
                    .link(format!("Made from #{parent_id}: {}", one_line(prompt, 40)))
                    .on_hover_text("Open the picture this one was made from")
                    .clicked()
                {
                    commands.push(Command::LibrarySelect(parent_id, SelectMode::Replace));
                }
            }
            if !view.read_only {
                let field = super::labelled(ui, "Tags", |ui| {
                    ui.add(
                        egui::TextEdit::singleline(tags)
                            .hint_text("comma separated; Enter saves")
                            .desired_width(f32::INFINITY),
                    )
                });
                if field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                    commands.push(Command::SetTags(tags.clone()));
                }
            }
            ui.separator();
            let m = &record.meta;
            egui::Grid::new("record_settings")
                .num_columns(2)
                .spacing([8.0, 4.0])
                .show(ui, |ui| {
                    let mut row = |name: &str, value: String| {
                        if !value.is_empty() {
                            ui.weak(name);
                            ui.add(egui::Label::new(value).wrap().selectable(true));
                            ui.end_row();
                        }
                    };
                    row("Prompt:", m.prompt.clone());
                    row("Negative:", m.negative_prompt.clone());
                    row("Seed:", m.seed.map(|s| s.to_string()).unwrap_or_default());
                    row("Steps:", m.steps.map(|s| s.to_string()).unwrap_or_default());
                    row(
                        "Guidance:",
                        m.guidance.map(|g| format!("{g:.1}")).unwrap_or_default(),
                    );
                    row("Sampler:", m.sampler.clone().unwrap_or_default());
                    row(
                        "Clip skip:",
                        m.clip_skip.map(|n| n.to_string()).unwrap_or_default(),
                    );
                    row("Size:", format!("{} × {}", m.width, m.height));
                    row("Model:", m.model_name.clone().unwrap_or_default());
                    row(
                        "Strength:",
                        m.strength.map(|s| format!("{s:.2}")).unwrap_or_default(),
                    );
                    row("Made:", crate::gallery::format_time(m.created) + " UTC");
                    row("By:", m.generator.clone().unwrap_or_default());
                    row("Tags:", m.tags.join(", "));
                    row("Picture:", format!("#{} ({})", record.id, record.file));
                });
        });
}
