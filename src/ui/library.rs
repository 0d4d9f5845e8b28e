//! The library: every picture ever made or imported, as a virtualised grid of thumbnails with
//! full-text search, filters and sort, multi-select, and a details pane for the selection
//! (settings, rating, favourite, lineage, reuse, export, copy, trash).
//!
//! Keys while the library has the keyboard: `1`-`5` rate, `0` clears the rating, `F` toggles
//! favourite, `Delete` moves to the trash, `Ctrl+Z` undoes the last trash, arrows move the
//! selection, `Ctrl+A` selects everything shown.

use std::collections::{BTreeSet, HashMap};

use super::{one_line, Command, Commands};
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
    pub read_only: bool,
    /// Where the catalog lives, or why it is not available.
    pub status: &'a str,
    pub can_undo_trash: bool,
}

const CELL: f32 = 112.0;

pub fn library_ui(
    ui: &mut egui::Ui,
    filter: &mut LibraryFilter,
    view: &LibraryView<'_>,
    commands: &mut Commands,
) {
    filter_row_ui(ui, filter, view, commands);
    ui.separator();
    let details_width = 300.0_f32.min(ui.available_width() * 0.4);
    egui::Panel::right("library_details")
        .resizable(true)
        .default_size(details_width)
        .show(ui, |ui| details_ui(ui, view, commands));
    egui::CentralPanel::default().show(ui, |ui| grid_ui(ui, view, commands));
}

fn filter_row_ui(
    ui: &mut egui::Ui,
    filter: &mut LibraryFilter,
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
            commands.push(Command::ExportSelected);
        }
    });
    if view.read_only || !view.status.is_empty() {
        ui.weak(view.status);
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
    let cols = ((ui.available_width() / (CELL + 6.0)).floor() as usize).max(1);
    let rows = view.ids.len().div_ceil(cols);
    let mut wanted = Vec::new();
    egui::ScrollArea::vertical()
        .id_salt("library_grid")
        .auto_shrink([false, false])
        .show_rows(ui, CELL + 6.0, rows, |ui, range| {
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
                        let response = response.on_hover_text(format!("Picture {id}"));
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

fn details_ui(ui: &mut egui::Ui, view: &LibraryView<'_>, commands: &mut Commands) {
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
                if ui.button("Export…").clicked() {
                    commands.push(Command::ExportSelected);
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
