//! The Adjustments panel: a live preview of one gallery picture with its adjustment stack
//! (before/after by holding `\`, or a split view), a histogram of the adjusted preview, a
//! control group per op (on/off switch, sliders, a master curve editor), Auto, Reset all,
//! Copy / Paste, Undo and presets.
//!
//! The panel edits its own [`AdjustEdit`] (the stack being shown) directly, so sliders preview
//! while they move; everything that must be stored or needs the app (commit a change to the
//! gallery row, auto colour, presets, the clipboard) is a [`Command::Adjust`].
//! Sliders: drag to preview, release to store; double-click resets to the identity value.

use std::ops::RangeInclusive;

use super::{labelled, Command, Commands};
use crate::postfx::curve::Spline;
use crate::postfx::stack::{
    Contrast, CurvePoint, Curves, Denoise, Exposure, HighlightsShadows, HueShift, Levels,
    LevelsChannel, Op, OpEntry, Saturation, Stack, UnsharpMask, Vignette, WhiteBalance,
};
use crate::postfx::{Histogram, OpKind};

/// What the panel edits itself: the stack it shows and its own display settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdjustEdit {
    /// The stack being previewed (stored with the picture on every commit).
    pub stack: Stack,
    /// Left half original, right half adjusted.
    pub split: bool,
    /// The "Save as preset" name field.
    pub preset_name: String,
}

/// A preset the combo offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresetRef {
    /// One of `postfx::presets::SHIPPED`, by name.
    Shipped(String),
    /// `<data dir>/presets/NAME.json`.
    User(String),
}

impl PresetRef {
    /// The combo's text.
    pub fn label(&self) -> String {
        match self {
            PresetRef::Shipped(name) => name.clone(),
            PresetRef::User(name) => format!("{name} (yours)"),
        }
    }
}

/// What the panel asks the app to do.
#[derive(Clone, Debug, PartialEq)]
pub enum AdjustCommand {
    /// The shown stack is final for now (slider released, switch flipped): store it.
    Commit,
    /// Every op back to identity (ops from a newer Atelier are kept), stored.
    ResetAll,
    /// Grey-world white balance and auto levels from the picture, stored.
    Auto,
    /// Keep the stack for pasting, and put its JSON on the clipboard.
    Copy,
    /// Replace the stack with the copied one, stored.
    Paste,
    /// Back to the stack stored before the last commit.
    Undo,
    /// Replace the stack with a preset's, stored.
    ApplyPreset(PresetRef),
    /// Save the shown stack as a user preset with this name.
    SavePreset(String),
}

/// Everything the panel shows, borrowed from the app.
pub struct AdjustView<'a> {
    /// The gallery picture being adjusted; `None`: nothing chosen.
    pub target: Option<i64>,
    /// Its size in preview pixels, once loaded.
    pub image_size: Option<[f32; 2]>,
    /// The original, once loaded.
    pub original: Option<egui::TextureId>,
    /// The adjusted preview (GPU or CPU rendered), once made.
    pub adjusted: Option<egui::TextureId>,
    pub histogram: Option<&'a Histogram>,
    /// Things to tell (unknown ops kept, GPU fallback, a stack that cannot be read).
    pub notes: &'a [String],
    /// False when the stack cannot be edited (unreadable stored stack, read-only gallery).
    pub editable: bool,
    pub can_undo: bool,
    pub can_paste: bool,
    pub presets: &'a [PresetRef],
    /// "GPU" or "CPU": where the preview is rendered.
    pub renderer: &'a str,
}

/// What one control group did this frame.
#[derive(Default)]
struct Outcome {
    changed: bool,
    commit: bool,
}

pub fn adjust_ui(
    ui: &mut egui::Ui,
    edit: &mut AdjustEdit,
    view: &AdjustView<'_>,
    commands: &mut Commands,
) {
    let Some(id) = view.target else {
        ui.centered_and_justified(|ui| {
            ui.weak("Select a picture in the Library (or a saved result) and press Adjust.");
        });
        return;
    };
    ui.horizontal_wrapped(|ui| {
        ui.strong(format!("Picture #{id}"));
        ui.add_enabled_ui(view.editable, |ui| {
            if ui
                .button("Auto")
                .on_hover_text("Grey-world white balance and auto levels")
                .clicked()
            {
                commands.push(Command::Adjust(AdjustCommand::Auto));
            }
            if ui.button("Reset all").clicked() {
                commands.push(Command::Adjust(AdjustCommand::ResetAll));
            }
        });
        if ui
            .button("Copy stack")
            .on_hover_text("Copy these adjustments (also as JSON to the clipboard)")
            .clicked()
        {
            commands.push(Command::Adjust(AdjustCommand::Copy));
        }
        if ui
            .add_enabled(
                view.can_paste && view.editable,
                egui::Button::new("Paste stack"),
            )
            .clicked()
        {
            commands.push(Command::Adjust(AdjustCommand::Paste));
        }
        if ui
            .add_enabled(view.can_undo && view.editable, egui::Button::new("Undo"))
            .on_hover_text("Ctrl+Z")
            .clicked()
        {
            commands.push(Command::Adjust(AdjustCommand::Undo));
        }
        ui.checkbox(&mut edit.split, "Split view");
        ui.weak(format!(
            "Hold \\ for the original. Preview: {}",
            view.renderer
        ));
    });
    ui.separator();
    egui::Panel::right("adjust_controls")
        .resizable(true)
        .default_size(330.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("adjust_controls_scroll")
                .show(ui, |ui| controls_ui(ui, edit, view, commands));
        });
    egui::CentralPanel::default().show(ui, |ui| preview_ui(ui, edit.split, view));
}

fn preview_ui(ui: &mut egui::Ui, split: bool, view: &AdjustView<'_>) {
    let (Some(size), Some(original)) = (view.image_size, view.original) else {
        ui.centered_and_justified(|ui| {
            ui.add(egui::Spinner::new());
        });
        return;
    };
    let adjusted = view.adjusted.unwrap_or(original);
    let before =
        !ui.ctx().egui_wants_keyboard_input() && ui.input(|i| i.key_down(egui::Key::Backslash));
    let (area, response) = ui.allocate_exact_size(ui.available_size(), egui::Sense::hover());
    let scale = (area.width() / size[0])
        .min(area.height() / size[1])
        .max(0.0);
    let rect = egui::Rect::from_center_size(area.center(), egui::vec2(size[0], size[1]) * scale);
    let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
    let painter = ui.painter();
    let label = if before {
        painter.image(original, rect, uv, egui::Color32::WHITE);
        "Original preview"
    } else if split {
        let mid = rect.center().x;
        let left = egui::Rect::from_min_max(rect.min, egui::pos2(mid, rect.max.y));
        let right = egui::Rect::from_min_max(egui::pos2(mid, rect.min.y), rect.max);
        painter
            .with_clip_rect(left)
            .image(original, rect, uv, egui::Color32::WHITE);
        painter
            .with_clip_rect(right)
            .image(adjusted, rect, uv, egui::Color32::WHITE);
        painter.vline(
            mid,
            rect.y_range(),
            egui::Stroke::new(1.0, ui.visuals().strong_text_color()),
        );
        "Split preview"
    } else {
        painter.image(adjusted, rect, uv, egui::Color32::WHITE);
        "Adjusted preview"
    };
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, label));
}

fn controls_ui(
    ui: &mut egui::Ui,
    edit: &mut AdjustEdit,
    view: &AdjustView<'_>,
    commands: &mut Commands,
) {
    if let Some(h) = view.histogram {
        histogram_ui(ui, h);
    }
    for note in view.notes {
        ui.colored_label(ui.visuals().warn_fg_color, note);
    }
    presets_ui(ui, edit, view, commands);
    ui.separator();
    ui.add_enabled_ui(view.editable, |ui| {
        for kind in OpKind::ALL {
            op_group_ui(ui, &mut edit.stack, kind, commands);
        }
    });
}

fn presets_ui(
    ui: &mut egui::Ui,
    edit: &mut AdjustEdit,
    view: &AdjustView<'_>,
    commands: &mut Commands,
) {
    ui.add_enabled_ui(view.editable, |ui| {
        ui.horizontal(|ui| {
            let label = ui.label("Preset:");
            let mut chosen = None;
            egui::ComboBox::from_id_salt("adjust_preset")
                .selected_text("Apply a preset")
                .show_ui(ui, |ui| {
                    for preset in view.presets {
                        if ui.selectable_label(false, preset.label()).clicked() {
                            chosen = Some(preset.clone());
                        }
                    }
                })
                .response
                .labelled_by(label.id);
            if let Some(preset) = chosen {
                commands.push(Command::Adjust(AdjustCommand::ApplyPreset(preset)));
            }
        });
    });
    ui.horizontal(|ui| {
        labelled(ui, "Preset name:", |ui| {
            ui.add(egui::TextEdit::singleline(&mut edit.preset_name).desired_width(120.0))
        });
        let name = edit.preset_name.trim().to_owned();
        if ui
            .add_enabled(!name.is_empty(), egui::Button::new("Save as preset"))
            .clicked()
        {
            commands.push(Command::Adjust(AdjustCommand::SavePreset(name)));
        }
    });
}

/// The RGB and luma histogram, square-root scaled (so small counts stay visible).
fn histogram_ui(ui: &mut egui::Ui, h: &Histogram) {
    let width = ui.available_width().min(300.0);
    let (rect, response) = ui.allocate_exact_size(egui::vec2(width, 90.0), egui::Sense::hover());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Histogram"));
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
    let peak = [&h.r, &h.g, &h.b, &h.luma]
        .iter()
        .flat_map(|c| c.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f32;
    let x_of = |i: usize| rect.left() + rect.width() * (i as f32 + 0.5) / 256.0;
    let y_of = |count: u32| rect.bottom() - rect.height() * (count as f32 / peak).sqrt();
    let luma_colour = ui.visuals().weak_text_color().gamma_multiply(0.6);
    for (i, &count) in h.luma.iter().enumerate() {
        if count > 0 {
            painter.vline(
                x_of(i),
                y_of(count)..=rect.bottom(),
                egui::Stroke::new(rect.width() / 256.0 + 0.5, luma_colour),
            );
        }
    }
    let channels = [
        (&h.r, egui::Color32::from_rgb(230, 70, 70)),
        (&h.g, egui::Color32::from_rgb(70, 200, 70)),
        (&h.b, egui::Color32::from_rgb(80, 120, 240)),
    ];
    for (channel, colour) in channels {
        let points: Vec<egui::Pos2> = channel
            .iter()
            .enumerate()
            .map(|(i, &c)| egui::pos2(x_of(i), y_of(c)))
            .collect();
        painter.add(egui::Shape::line(points, egui::Stroke::new(1.0, colour)));
    }
}

/// Replaces the first entry with `entry`'s op name, or inserts it where
/// [`OpKind::ALL`]'s order puts it among the known ops.
pub fn upsert_op(stack: &mut Stack, entry: OpEntry) {
    let name = entry.op.name().to_owned();
    if let Some(existing) = stack.ops.iter_mut().find(|e| e.op.name() == name) {
        *existing = entry;
        return;
    }
    let rank = |op: &Op| {
        op.kind()
            .and_then(|k| OpKind::ALL.iter().position(|x| *x == k))
    };
    let mine = rank(&entry.op).unwrap_or(usize::MAX);
    let at = stack
        .ops
        .iter()
        .position(|e| rank(&e.op).is_some_and(|r| r > mine))
        .unwrap_or(stack.ops.len());
    stack.ops.insert(at, entry);
}

fn op_group_ui(ui: &mut egui::Ui, stack: &mut Stack, kind: OpKind, commands: &mut Commands) {
    let identity = kind.identity();
    let title = kind.title();
    let current = stack.ops.iter().find(|e| e.op.kind() == Some(kind));
    let (mut op, mut enabled) = current
        .map(|e| (e.op.clone(), e.enabled))
        .unwrap_or((identity.clone(), true));
    let mut out = Outcome::default();
    ui.horizontal(|ui| {
        if ui
            .checkbox(&mut enabled, title)
            .on_hover_text("Switch this adjustment on or off")
            .changed()
        {
            out.changed = true;
            out.commit = true;
        }
        if !op.is_identity()
            && ui
                .small_button(format!("Reset {title}"))
                .on_hover_text("Back to no change")
                .clicked()
        {
            op = identity.clone();
            out.changed = true;
            out.commit = true;
        }
    });
    ui.add_enabled_ui(enabled, |ui| {
        ui.indent(("adjust_op", kind.name()), |ui| {
            op_controls_ui(ui, &mut op, &mut out)
        });
    });
    if out.changed {
        upsert_op(stack, OpEntry { enabled, op });
    }
    if out.commit {
        commands.push(Command::Adjust(AdjustCommand::Commit));
    }
    ui.add_space(4.0);
}

fn op_controls_ui(ui: &mut egui::Ui, op: &mut Op, out: &mut Outcome) {
    match op {
        Op::Exposure(p) => {
            let id = Exposure::IDENTITY;
            slider(ui, &mut p.ev, -5.0..=5.0, id.ev, "Exposure (EV)", out);
        }
        Op::Contrast(p) => {
            let id = Contrast::IDENTITY;
            slider(
                ui,
                &mut p.amount,
                -1.0..=1.0,
                id.amount,
                "Contrast amount",
                out,
            );
        }
        Op::HighlightsShadows(p) => {
            let id = HighlightsShadows::IDENTITY;
            slider(
                ui,
                &mut p.highlights,
                -1.0..=1.0,
                id.highlights,
                "Highlights",
                out,
            );
            slider(ui, &mut p.shadows, -1.0..=1.0, id.shadows, "Shadows", out);
        }
        Op::WhiteBalance(p) => {
            let id = WhiteBalance::IDENTITY;
            slider(
                ui,
                &mut p.temperature,
                -1.0..=1.0,
                id.temperature,
                "Temperature",
                out,
            );
            slider(ui, &mut p.tint, -1.0..=1.0, id.tint, "Tint", out);
        }
        Op::Saturation(p) => {
            let id = Saturation::IDENTITY;
            slider(
                ui,
                &mut p.saturation,
                0.0..=2.0,
                id.saturation,
                "Saturation factor",
                out,
            );
            slider(
                ui,
                &mut p.vibrance,
                -1.0..=1.0,
                id.vibrance,
                "Vibrance",
                out,
            );
        }
        Op::HueShift(p) => {
            let id = HueShift::IDENTITY;
            slider(
                ui,
                &mut p.degrees,
                -180.0..=180.0,
                id.degrees,
                "Hue (degrees)",
                out,
            );
        }
        Op::Levels(p) => levels_ui(ui, p, out),
        Op::Curves(p) => curves_ui(ui, p, out),
        Op::UnsharpMask(p) => {
            let id = UnsharpMask::IDENTITY;
            slider(
                ui,
                &mut p.radius_px,
                0.0..=32.0,
                id.radius_px,
                "Radius (px)",
                out,
            );
            slider(
                ui,
                &mut p.amount,
                0.0..=5.0,
                id.amount,
                "Sharpen amount",
                out,
            );
            slider(
                ui,
                &mut p.threshold,
                0.0..=0.2,
                id.threshold,
                "Threshold",
                out,
            );
        }
        Op::Denoise(p) => {
            let id = Denoise::IDENTITY;
            slider(
                ui,
                &mut p.strength,
                0.0..=1.0,
                id.strength,
                "Denoise strength",
                out,
            );
            let r = ui.add(egui::Slider::new(&mut p.radius_px, 1..=16).text("Denoise radius (px)"));
            if r.double_clicked() {
                p.radius_px = id.radius_px;
            }
            note_response(&r, out);
        }
        Op::Vignette(p) => {
            let id = Vignette::IDENTITY;
            slider(
                ui,
                &mut p.amount,
                -1.0..=1.0,
                id.amount,
                "Vignette amount",
                out,
            );
            slider(ui, &mut p.midpoint, 0.0..=1.0, id.midpoint, "Midpoint", out);
            slider(ui, &mut p.feather, 0.0..=1.0, id.feather, "Feather", out);
        }
        Op::Unknown { .. } => {}
    }
}

fn levels_ui(ui: &mut egui::Ui, p: &mut Levels, out: &mut Outcome) {
    let id = LevelsChannel::IDENTITY;
    slider(ui, &mut p.black, 0.0..=1.0, id.black, "Black point", out);
    slider(ui, &mut p.white, 0.0..=1.0, id.white, "White point", out);
    gamma_slider(ui, &mut p.gamma, "Gamma", out);
    let mut per_channel = p.per_channel.is_some();
    if ui
        .checkbox(&mut per_channel, "Per channel levels")
        .changed()
    {
        p.per_channel = per_channel.then_some([id; 3]);
        out.changed = true;
        out.commit = true;
    }
    if let Some(channels) = &mut p.per_channel {
        for (c, letter) in channels.iter_mut().zip(["R", "G", "B"]) {
            slider(
                ui,
                &mut c.black,
                0.0..=1.0,
                id.black,
                &format!("{letter} black"),
                out,
            );
            slider(
                ui,
                &mut c.white,
                0.0..=1.0,
                id.white,
                &format!("{letter} white"),
                out,
            );
            gamma_slider(ui, &mut c.gamma, &format!("{letter} gamma"), out);
        }
    }
}

fn gamma_slider(ui: &mut egui::Ui, value: &mut f32, label: &str, out: &mut Outcome) {
    let r = ui.add(
        egui::Slider::new(value, 0.1..=10.0)
            .logarithmic(true)
            .text(label),
    );
    if r.double_clicked() {
        *value = 1.0;
    }
    note_response(&r, out);
}

/// A slider that previews while dragged, commits on release and resets on double-click.
fn slider(
    ui: &mut egui::Ui,
    value: &mut f32,
    range: RangeInclusive<f32>,
    identity: f32,
    label: &str,
    out: &mut Outcome,
) {
    let r = ui.add(egui::Slider::new(value, range).text(label));
    if r.double_clicked() {
        *value = identity;
    }
    note_response(&r, out);
}

fn note_response(r: &egui::Response, out: &mut Outcome) {
    if r.double_clicked() {
        out.changed = true;
        out.commit = true;
        return;
    }
    if r.changed() {
        out.changed = true;
        // Typed or keyed values (not a drag) are final at once.
        if !r.dragged() {
            out.commit = true;
        }
    }
    if r.drag_stopped() || r.clicked() {
        out.commit = true;
    }
}

/// The master curve: drag points, double-click to add one, right-click to remove one.
fn curves_ui(ui: &mut egui::Ui, p: &mut Curves, out: &mut Outcome) {
    if p.rgb.len() < 2 {
        p.rgb = Curves::identity().rgb;
    }
    let side = ui.available_width().clamp(120.0, 220.0);
    let (rect, response) = ui.allocate_exact_size(egui::vec2(side, side), egui::Sense::click());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Master curve"));
    let to_screen = |(x, y): CurvePoint| {
        egui::pos2(
            rect.left() + x * rect.width(),
            rect.bottom() - y * rect.height(),
        )
    };
    let from_screen = |pos: egui::Pos2| -> CurvePoint {
        (
            ((pos.x - rect.left()) / rect.width()).clamp(0.0, 1.0),
            ((rect.bottom() - pos.y) / rect.height()).clamp(0.0, 1.0),
        )
    };
    let visuals = ui.visuals().clone();
    let painter = ui.painter_at(rect.expand(6.0));
    painter.rect_filled(rect, 2.0, visuals.extreme_bg_color);
    let grid = egui::Stroke::new(1.0, visuals.weak_text_color().gamma_multiply(0.3));
    for q in 1..4 {
        let t = q as f32 / 4.0;
        painter.vline(rect.left() + t * rect.width(), rect.y_range(), grid);
        painter.hline(rect.x_range(), rect.top() + t * rect.height(), grid);
    }
    painter.line_segment([rect.left_bottom(), rect.right_top()], grid);

    let last = p.rgb.len() - 1;
    let mut remove = None;
    for i in 0..=last {
        let pos = to_screen(p.rgb[i]);
        let handle = egui::Rect::from_center_size(pos, egui::vec2(12.0, 12.0));
        let r = ui.interact(handle, response.id.with(i), egui::Sense::click_and_drag());
        r.widget_info(|| {
            egui::WidgetInfo::labeled(egui::Role::Button, true, format!("Curve point {i}"))
        });
        if r.dragged() {
            if let Some(pointer) = r.interact_pointer_pos() {
                let (mut x, y) = from_screen(pointer);
                // Points keep their order: a point stays between its neighbours.
                let lo = if i == 0 { 0.0 } else { p.rgb[i - 1].0 + 0.01 };
                let hi = if i == last {
                    1.0
                } else {
                    p.rgb[i + 1].0 - 0.01
                };
                x = x.clamp(lo.min(hi), hi.max(lo));
                p.rgb[i] = (x, y);
                out.changed = true;
            }
        }
        if r.drag_stopped() {
            out.commit = true;
        }
        if r.secondary_clicked() && i != 0 && i != last {
            remove = Some(i);
        }
    }
    if let Some(i) = remove {
        p.rgb.remove(i);
        out.changed = true;
        out.commit = true;
    }
    if response.double_clicked() && p.rgb.len() < Curves::MAX_POINTS {
        if let Some(pointer) = response.interact_pointer_pos() {
            let point = from_screen(pointer);
            let at = p.rgb.partition_point(|q| q.0 < point.0);
            p.rgb.insert(at, point);
            out.changed = true;
            out.commit = true;
        }
    }

    let spline = Spline::new(&p.rgb);
    let curve: Vec<egui::Pos2> = (0..=64)
        .map(|i| {
            let x = i as f32 / 64.0;
            to_screen((x, spline.eval(x).clamp(0.0, 1.0)))
        })
        .collect();
    painter.add(egui::Shape::line(
        curve,
        egui::Stroke::new(1.5, visuals.strong_text_color()),
    ));
    for &point in &p.rgb {
        painter.circle_filled(to_screen(point), 4.0, visuals.selection.bg_fill);
    }
    ui.weak("Drag points; double-click adds one, right-click removes one.");
    if p.r.is_some() || p.g.is_some() || p.b.is_some() {
        ui.weak("Per-channel curves (from a preset) are kept and applied.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_keeps_the_canonical_order() {
        let mut stack = Stack::from_ops([Op::Exposure(Exposure { ev: 1.0 })]);
        upsert_op(
            &mut stack,
            OpEntry::new(Op::Vignette(Vignette {
                amount: -0.5,
                ..Vignette::IDENTITY
            })),
        );
        upsert_op(
            &mut stack,
            OpEntry::new(Op::Contrast(Contrast { amount: 0.2 })),
        );
        upsert_op(&mut stack, OpEntry::new(Op::Exposure(Exposure { ev: 2.0 })));
        let names: Vec<&str> = stack.ops.iter().map(|e| e.op.name()).collect();
        assert_eq!(names, ["exposure", "contrast", "vignette"]);
        assert_eq!(stack.ops[0].op, Op::Exposure(Exposure { ev: 2.0 }));
    }
}
