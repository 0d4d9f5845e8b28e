//! The sketch canvas panel: toolbar (tools: brush, fill bucket, eyedropper; brush size and
//! colour, eraser, layers, undo/redo, clear, background image, "use sketch") and the drawing
//! surface. Strokes are collected here while the pointer is down (with pen pressure where the
//! platform reports it) and handed to the app as a command when it is released.

use super::{labelled, Command, Commands, SketchCommand};
use crate::app::state::{CanvasSettings, CanvasTool};
use crate::sketch::{Layer, SketchDoc, Stroke};

/// The tint the mask is shown in on the canvas.
pub const MASK_TINT_RGBA: [u8; 4] = [255, 40, 90, 140];
/// The colours control layers 1, 2, 3, 4 are shown in (they are sent white on black).
pub const CONTROL_TINTS_RGBA: [[u8; 4]; 4] = [
    [20, 130, 255, 230],
    [255, 150, 20, 230],
    [30, 180, 90, 230],
    [170, 70, 230, 230],
];

fn control_tint(index: usize) -> egui::Color32 {
    let [r, g, b, a] = CONTROL_TINTS_RGBA[index % CONTROL_TINTS_RGBA.len()];
    egui::Color32::from_rgba_unmultiplied(r, g, b, a)
}

/// What the canvas shows besides its settings.
pub struct CanvasView<'a> {
    pub doc: &'a SketchDoc,
    /// The document rendered (with the mask tinted), if ready.
    pub texture: Option<&'a egui::TextureHandle>,
    /// A background image is being picked or decoded.
    pub loading_background: bool,
    /// Files are being dragged over the window.
    pub files_hovered: bool,
    /// The ControlNets the model scan found (for the control layers).
    pub controlnets: &'a [std::path::PathBuf],
    /// The chosen model's own ControlNet, used by layers that name none.
    pub model_controlnet: Option<&'a std::path::Path>,
    /// A picture is being turned into lines for a control layer.
    pub preprocessing: bool,
    /// Live mode's newest picture, whether one is being made, and how long the newest took.
    pub live_texture: Option<&'a egui::TextureHandle>,
    pub live_busy: bool,
    pub live_secs: Option<f32>,
}

/// The stroke being drawn, kept by the app between frames, and the pen's last pressure
/// reading (a pen reports it with its moves, which may come in other frames than the
/// pointer's; it is forgotten when the stroke ends).
#[derive(Clone, Debug, Default)]
pub struct StrokeInProgress(pub Option<(Layer, Stroke)>, pub Option<f32>);

pub fn canvas_panel_ui(
    ui: &mut egui::Ui,
    settings: &mut CanvasSettings,
    view: &CanvasView<'_>,
    in_progress: &mut StrokeInProgress,
    commands: &mut Commands,
) {
    // A control layer that is gone (undone, removed) is not drawn on: its neighbour is.
    if let Layer::Control(i) = settings.layer {
        let count = view.doc.controls().len();
        if i >= count {
            settings.layer = match count {
                0 => Layer::Paint,
                n => Layer::Control(n - 1),
            };
        }
    }
    tool_keys(ui, settings);
    toolbar_ui(ui, settings, view, commands);
    if let Layer::Control(index) = settings.layer {
        if let Some(layer) = view.doc.control(index) {
            control_row_ui(ui, index, layer, view, commands);
            control_picture_row_ui(ui, index, layer, view, commands);
        }
    }
    ui.separator();
    if settings.live {
        // The canvas and, beside it, the newest live picture.
        let avail = ui.available_size();
        let half = egui::vec2(((avail.x - 8.0) / 2.0).max(40.0), avail.y);
        ui.horizontal_top(|ui| {
            ui.allocate_ui(half, |ui| {
                surface_ui(ui, settings, view, in_progress, commands)
            });
            ui.allocate_ui(half, |ui| live_ui(ui, view));
        });
    } else {
        surface_ui(ui, settings, view, in_progress, commands);
    }
}

/// Live mode's newest picture, fitted, with how long it took.
fn live_ui(ui: &mut egui::Ui, view: &CanvasView<'_>) {
    ui.vertical(|ui| {
        ui.horizontal(|ui| {
            ui.strong("Live");
            if view.live_busy {
                ui.spinner();
            } else if let Some(secs) = view.live_secs {
                ui.weak(format!("{} from the change", super::format_secs(secs)));
            }
        });
        match view.live_texture {
            Some(texture) => {
                let size = texture.size_vec2();
                let avail = ui.available_size();
                let scale = (avail.x / size.x).min(avail.y / size.y).max(0.05);
                ui.add(egui::Image::new((texture.id(), size * scale)).alt_text("Live picture"));
            }
            None => {
                ui.weak("Draw or change the prompt: the picture follows.");
            }
        }
    });
}

/// The tools' keys while no text field has the keyboard: B brush, G fill, I eyedropper,
/// E eraser on/off, [ and ] brush size.
fn tool_keys(ui: &egui::Ui, settings: &mut CanvasSettings) {
    if ui.ctx().egui_wants_keyboard_input() {
        return;
    }
    use egui::Key;
    ui.input(|i| {
        if i.modifiers.command || i.modifiers.alt {
            return;
        }
        if i.key_pressed(Key::B) {
            settings.tool = CanvasTool::Brush;
        }
        if i.key_pressed(Key::G) {
            settings.tool = CanvasTool::Fill;
        }
        if i.key_pressed(Key::I) {
            settings.tool = CanvasTool::Eyedropper;
        }
        if i.key_pressed(Key::E) {
            settings.eraser = !settings.eraser;
        }
        if i.key_pressed(Key::OpenBracket) {
            settings.brush_size_px = (settings.brush_size_px / 1.25).max(1.0);
        }
        if i.key_pressed(Key::CloseBracket) {
            settings.brush_size_px = (settings.brush_size_px * 1.25).min(MAX_BRUSH_PX);
        }
    });
}

/// The largest brush, in canvas pixels.
pub const MAX_BRUSH_PX: f32 = 256.0;

fn toolbar_ui(
    ui: &mut egui::Ui,
    settings: &mut CanvasSettings,
    view: &CanvasView<'_>,
    commands: &mut Commands,
) {
    let doc = view.doc;
    ui.horizontal_wrapped(|ui| {
        for (tool, name, hover) in [
            (
                CanvasTool::Brush,
                "Brush",
                "Paint strokes (B); pen pressure sets the width",
            ),
            (
                CanvasTool::Fill,
                "Fill",
                "Fill the area of like colour (G); on the mask and control layers, the area \
                 the lines enclose",
            ),
            (
                CanvasTool::Eyedropper,
                "Pick",
                "Take the brush colour from the canvas (I; or Alt+click with the brush)",
            ),
        ] {
            ui.selectable_value(&mut settings.tool, tool, name)
                .on_hover_text(hover);
        }
        labelled(ui, "Size", |ui| {
            ui.add(
                egui::Slider::new(&mut settings.brush_size_px, 1.0..=MAX_BRUSH_PX)
                    .logarithmic(true)
                    .suffix(" px"),
            )
        })
        .on_hover_text("Brush diameter in canvas pixels ([ and ])");
        let mut color = egui::Color32::from_rgba_unmultiplied(
            settings.color_rgba[0],
            settings.color_rgba[1],
            settings.color_rgba[2],
            settings.color_rgba[3],
        );
        if ui
            .color_edit_button_srgba(&mut color)
            .on_hover_text("Brush colour")
            .changed()
        {
            settings.color_rgba = color.to_srgba_unmultiplied();
        }
        ui.toggle_value(&mut settings.eraser, "Eraser")
            .on_hover_text("The brush and the fill erase on the current layer (E)");
        ui.separator();
        ui.selectable_value(&mut settings.layer, Layer::Paint, "Paint")
            .on_hover_text("Paint the picture (the init image with Use sketch)");
        ui.selectable_value(&mut settings.layer, Layer::Mask, "Mask")
            .on_hover_text("Paint the area to repaint (inpainting) instead of the picture");
        for (i, layer) in doc.controls().iter().enumerate() {
            let mut name = egui::RichText::new(format!("Control {}", i + 1)).color(control_tint(i));
            if !layer.settings.enabled {
                name = name.strikethrough();
            }
            ui.selectable_value(&mut settings.layer, Layer::Control(i), name)
                .on_hover_text(
                    "Draw the lines this layer's ControlNet makes the picture follow (shown in \
                     colour, sent white on black)",
                );
        }
        let count = doc.controls().len();
        if count < crate::sketch::MAX_CONTROL_LAYERS {
            let label = if count == 0 { "Control" } else { "+ Control" };
            if ui
                .button(label)
                .on_hover_text(
                    "Add a control layer: lines (or a photo's edges) that a ControlNet makes \
                     the picture follow. One layer per ControlNet; they steer together",
                )
                .clicked()
            {
                commands.push(Command::Sketch(SketchCommand::AddControlLayer));
            }
        }
        ui.separator();
        if ui
            .add_enabled(doc.can_undo(), egui::Button::new("Undo"))
            .on_hover_text("Ctrl+Z")
            .clicked()
        {
            commands.push(Command::Sketch(SketchCommand::Undo));
        }
        if ui
            .add_enabled(doc.can_redo(), egui::Button::new("Redo"))
            .on_hover_text("Ctrl+Shift+Z")
            .clicked()
        {
            commands.push(Command::Sketch(SketchCommand::Redo));
        }
        if ui
            .add_enabled(!doc.is_empty(), egui::Button::new("Clear"))
            .on_hover_text("Remove all strokes and the background (undoable)")
            .clicked()
        {
            commands.push(Command::Sketch(SketchCommand::Clear));
        }
        ui.separator();
        let open = ui
            .add_enabled(
                !view.loading_background,
                egui::Button::new("Load background…"),
            )
            .on_hover_text("Pick an image file, or drop one on the window");
        if open.clicked() {
            commands.push(Command::Sketch(SketchCommand::OpenBackground));
        }
        if view.loading_background {
            ui.spinner();
        }
        if doc.background().is_some() && ui.button("Remove background").clicked() {
            commands.push(Command::Sketch(SketchCommand::RemoveBackground));
        }
        ui.separator();
        let zoomed = settings.view_zoom != 1.0 || settings.view_pan != [0.0, 0.0];
        if ui
            .add_enabled(zoomed, egui::Button::new("Fit"))
            .on_hover_text(
                "Show the whole canvas. Ctrl+wheel or pinch zooms; the wheel, Space+drag or \
                 the middle button pans",
            )
            .clicked()
        {
            settings.view_zoom = 1.0;
            settings.view_pan = [0.0, 0.0];
        }
        ui.weak(format!("{:.0}%", settings.view_zoom * 100.0));
        ui.separator();
        ui.toggle_value(&mut settings.live, "Live").on_hover_text(
            "Regenerate a quarter of a second after each change (same seed), beside the canvas",
        );
        ui.checkbox(&mut settings.use_sketch, "Use sketch")
            .on_hover_text(
                "Start from this canvas (image-to-image); mask strokes mark what to repaint",
            );
        if !doc.controls().is_empty() {
            ui.checkbox(&mut settings.subject_pass, "Subject pass")
                .on_hover_text(
                    "Draw the sketched subject again at the model's own size and put it where \
                     the lines are: small subjects keep their details (on a model with a plain \
                     ground, such as Atelier Mini, at no extra cost; otherwise about twice the \
                     time)",
                );
        }
    });
}

/// A control layer's ControlNet, on/off, shown/hidden, strength, mode and the part of the
/// steps it steers, and its removal. Edits a copy of the settings and sends it when changed.
fn control_row_ui(
    ui: &mut egui::Ui,
    index: usize,
    layer: &crate::sketch::ControlLayer,
    view: &CanvasView<'_>,
    commands: &mut Commands,
) {
    let mut c = layer.settings.clone();
    ui.horizontal_wrapped(|ui| {
        // Narrow sliders, so the row wraps in a narrow panel instead of running off it.
        ui.spacing_mut().slider_width = 90.0;
        // The layer's colour on the canvas.
        let (dot, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
        ui.painter()
            .circle_filled(dot.center(), 5.0, control_tint(index));
        ui.checkbox(&mut c.enabled, "Steer")
            .on_hover_text("This layer steers the generations (when it has lines)");
        ui.checkbox(&mut c.visible, "Show")
            .on_hover_text("Show its lines on the canvas (a hidden layer still steers)");
        let stem = |p: &std::path::Path| {
            p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let label = ui.label("ControlNet");
        let automatic = match view.model_controlnet {
            Some(own) => format!("The model's own ({})", stem(own)),
            None => "Choose…".to_owned(),
        };
        let selected = c
            .controlnet
            .as_deref()
            .filter(|p| view.controlnets.iter().any(|n| n == p))
            .map(stem)
            .unwrap_or_else(|| automatic.clone());
        egui::ComboBox::from_id_salt(("controlnet", index))
            .selected_text(selected)
            .truncate()
            .show_ui(ui, |ui| {
                if view.model_controlnet.is_some() {
                    ui.selectable_value(&mut c.controlnet, None, automatic.as_str())
                        .on_hover_text("The ControlNet made for the chosen model");
                }
                for net in view.controlnets {
                    let is = c.controlnet.as_ref() == Some(net);
                    if ui
                        .selectable_label(is, stem(net))
                        .on_hover_text(net.display().to_string())
                        .clicked()
                    {
                        c.controlnet = Some(net.clone());
                    }
                }
                if view.controlnets.is_empty() {
                    ui.weak("None found: add a folder with a ControlNet (models/ControlNet)");
                }
            })
            .response
            .labelled_by(label.id);
        use crate::generation::ControlMode;
        ui.selectable_value(&mut c.mode, ControlMode::Balanced, "Balanced")
            .on_hover_text("The prompt and the lines weigh alike");
        ui.selectable_value(&mut c.mode, ControlMode::Control, "Lines first")
            .on_hover_text(
                "ControlNet is more important: only the prompt's side of the guidance gets \
                 the control (use a lower guidance, 3-5)",
            );
        if ui
            .button("Remove layer")
            .on_hover_text("Remove this control layer with its lines and picture (undoable)")
            .clicked()
        {
            commands.push(Command::Sketch(SketchCommand::RemoveControlLayer(index)));
        }
        // The strength and the steps on a line of their own.
        ui.end_row();
        labelled(ui, "Strength", |ui| {
            ui.add(egui::Slider::new(&mut c.scale, 0.0..=2.0).fixed_decimals(2))
        });
        labelled(ui, "From", |ui| {
            ui.add(egui::Slider::new(&mut c.start, 0.0..=0.95).fixed_decimals(2))
        })
        .on_hover_text("The fraction of the steps where the control starts");
        labelled(ui, "To", |ui| {
            ui.add(egui::Slider::new(&mut c.end, 0.05..=1.0).fixed_decimals(2))
        })
        .on_hover_text("The fraction of the steps where the control ends");
        if c.end <= c.start {
            c.end = (c.start + 0.05).min(1.0);
        }
    });
    if c != layer.settings {
        commands.push(Command::Sketch(SketchCommand::SetControlSettings(
            index,
            Box::new(c),
        )));
    }
}

/// A control layer's picture: open one (or drop one while the layer is chosen), the
/// preprocessor that turns it into lines (shown on the canvas as it will be sent), remove.
fn control_picture_row_ui(
    ui: &mut egui::Ui,
    index: usize,
    layer: &crate::sketch::ControlLayer,
    view: &CanvasView<'_>,
    commands: &mut Commands,
) {
    use crate::sketch::control::Preprocessor;
    let mut pre = layer.settings.preprocessor;
    ui.horizontal_wrapped(|ui| {
        if ui
            .add_enabled(
                !view.loading_background,
                egui::Button::new("Control picture…"),
            )
            .on_hover_text(
                "Put a photo, drawing or picture on this control layer as lines (or drop one \
                 while the layer is chosen; a library picture: Use as control)",
            )
            .clicked()
        {
            commands.push(Command::Sketch(SketchCommand::OpenControlPicture));
        }
        let label = ui.label("Lines from");
        let names = [
            (
                Preprocessor::from_name("scribble"),
                "Scribble",
                "A drawing's strokes (dark on light is inverted)",
            ),
            (
                Preprocessor::from_name("canny"),
                "Canny edges",
                "Sharp edges of a photo or picture",
            ),
            (
                Preprocessor::from_name("xdog"),
                "XDoG lines",
                "Thick, hand-drawn-looking dark lines",
            ),
            (
                Preprocessor::from_name("softedge"),
                "Soft edges",
                "Soft line art",
            ),
            (
                Preprocessor::from_name("none"),
                "As is",
                "The picture already is a control image",
            ),
        ];
        let current = names
            .iter()
            .find(|(p, _, _)| p.is_some_and(|p| p.name() == pre.name()))
            .map(|(_, n, _)| *n)
            .unwrap_or("Scribble");
        egui::ComboBox::from_id_salt(("control-preprocessor", index))
            .selected_text(current)
            .show_ui(ui, |ui| {
                for (p, name, hover) in names {
                    let Some(p) = p else { continue };
                    if ui
                        .selectable_label(pre.name() == p.name(), name)
                        .on_hover_text(hover)
                        .clicked()
                    {
                        pre = p;
                    }
                }
            })
            .response
            .labelled_by(label.id);
        if view.preprocessing {
            ui.spinner();
        }
        if layer.image.is_some()
            && ui
                .button("Remove picture")
                .on_hover_text("Take the picture off the control layer (its strokes stay)")
                .clicked()
        {
            commands.push(Command::Sketch(SketchCommand::RemoveControlPicture(index)));
        }
    });
    if pre != layer.settings.preprocessor {
        let settings = crate::sketch::ControlSettings {
            preprocessor: pre,
            ..layer.settings.clone()
        };
        commands.push(Command::Sketch(SketchCommand::SetControlSettings(
            index,
            Box::new(settings),
        )));
    }
}

/// Most and least the canvas view zooms (1: the whole canvas fits).
pub const MAX_ZOOM: f32 = 16.0;
pub const MIN_ZOOM: f32 = 0.25;

fn surface_ui(
    ui: &mut egui::Ui,
    settings: &mut CanvasSettings,
    view: &CanvasView<'_>,
    in_progress: &mut StrokeInProgress,
    commands: &mut Commands,
) {
    let doc = view.doc;
    let doc_size = egui::vec2(doc.width_px() as f32, doc.height_px() as f32);
    let available = (ui.available_size() - egui::vec2(0.0, 4.0)).max(egui::vec2(16.0, 16.0));
    let fit = (available.x / doc_size.x)
        .min(available.y / doc_size.y)
        .max(0.05);
    let (response, painter) = ui.allocate_painter(available, egui::Sense::click_and_drag());
    let area = response.rect;
    let painter = painter.with_clip_rect(area);
    response.widget_info(|| {
        egui::WidgetInfo::labeled(egui::accesskit::Role::Canvas, true, "Sketch canvas")
    });

    // Zoom (Ctrl+wheel, pinch) about the pointer; pan (wheel, Space+drag, middle drag).
    let (space, middle) = ui.input(|i| {
        (
            i.key_down(egui::Key::Space),
            i.pointer.button_down(egui::PointerButton::Middle),
        )
    });
    let panning = response.hovered() && (space || middle);
    if response.hovered() {
        let (zoom_delta, scroll) = ui.input(|i| (i.zoom_delta(), i.smooth_scroll_delta));
        if zoom_delta != 1.0 {
            let old = settings.view_zoom;
            let new = (old * zoom_delta).clamp(MIN_ZOOM, MAX_ZOOM);
            if let Some(pointer) = response.hover_pos() {
                // Keep the canvas point under the pointer where it is.
                let center = area.center() + egui::vec2(settings.view_pan[0], settings.view_pan[1]);
                let offset = (pointer - center) * (1.0 - new / old);
                settings.view_pan[0] += offset.x;
                settings.view_pan[1] += offset.y;
            }
            settings.view_zoom = new;
        } else if scroll != egui::Vec2::ZERO {
            settings.view_pan[0] += scroll.x;
            settings.view_pan[1] += scroll.y;
        }
    }
    if panning && response.dragged() {
        let d = response.drag_delta();
        settings.view_pan[0] += d.x;
        settings.view_pan[1] += d.y;
    }
    let scale = fit * settings.view_zoom;
    let rect = egui::Rect::from_center_size(
        area.center() + egui::vec2(settings.view_pan[0], settings.view_pan[1]),
        doc_size * scale,
    );

    // The document itself.
    match view.texture {
        Some(texture) => {
            painter.image(
                texture.id(),
                rect,
                egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                egui::Color32::WHITE,
            );
        }
        None => {
            painter.rect_filled(rect, 0.0, egui::Color32::WHITE);
        }
    }
    painter.rect_stroke(
        rect,
        0.0,
        ui.visuals().widgets.noninteractive.bg_stroke,
        egui::StrokeKind::Outside,
    );

    let to_canvas = |pos: egui::Pos2| -> [f32; 2] {
        let p = (pos - rect.min) / scale;
        [p.x.clamp(0.0, doc_size.x), p.y.clamp(0.0, doc_size.y)]
    };
    let to_screen = |p: [f32; 2]| -> egui::Pos2 { rect.min + egui::vec2(p[0], p[1]) * scale };

    // The pen's newest pressure reading over the canvas.
    let reading = ui.input(|i| {
        i.events.iter().rev().find_map(|e| match e {
            egui::Event::Touch {
                force: Some(force),
                phase: egui::TouchPhase::Start | egui::TouchPhase::Move,
                ..
            } => Some(*force),
            _ => None,
        })
    });
    if reading.is_some() && (response.hovered() || in_progress.0.is_some()) {
        in_progress.1 = reading;
    }
    // The fill bucket and the eyedropper act on a click; Alt+click with the brush picks too.
    let picking = settings.tool == CanvasTool::Eyedropper
        || (settings.tool == CanvasTool::Brush && ui.input(|i| i.modifiers.alt));
    if !panning && (picking || settings.tool == CanvasTool::Fill) {
        if response.hovered() {
            ui.ctx().set_cursor_icon(egui::CursorIcon::Crosshair);
        }
        if let Some(pos) = response
            .interact_pointer_pos()
            .filter(|_| response.clicked())
        {
            let pos = to_canvas(pos);
            commands.push(Command::Sketch(if picking {
                SketchCommand::PickColour(pos)
            } else {
                SketchCommand::AddStroke(
                    settings.layer(),
                    Stroke::fill_at(pos, settings.color_rgba, settings.eraser),
                )
            }));
        }
    } else if !panning && (response.drag_started() || response.is_pointer_button_down_on()) {
        // Collect the stroke while the pointer is down (not while panning), with the pen's
        // pressure.
        let pressure = in_progress.1;
        if let Some(pos) = response.interact_pointer_pos() {
            let (_, stroke) = in_progress.0.get_or_insert_with(|| {
                (
                    settings.layer(),
                    Stroke::new(settings.brush_size_px, settings.color_rgba, settings.eraser),
                )
            });
            stroke.push_point_with_pressure(to_canvas(pos), pressure);
        }
    }
    let released = response.drag_stopped()
        || response.clicked()
        || (in_progress.0.is_some() && !ui.input(|i| i.pointer.any_down()));
    if released {
        if let Some((layer, stroke)) = in_progress.0.take() {
            commands.push(Command::Sketch(SketchCommand::AddStroke(layer, stroke)));
        }
        in_progress.1 = None;
    }

    // The stroke being drawn, as vector shapes until it lands in the document.
    if let Some((layer, stroke)) = &in_progress.0 {
        let width = stroke.brush_size_px * scale;
        let color = if stroke.eraser {
            egui::Color32::from_white_alpha(160)
        } else if *layer == Layer::Mask {
            let [r, g, b, a] = MASK_TINT_RGBA;
            egui::Color32::from_rgba_unmultiplied(r, g, b, a)
        } else if let Layer::Control(i) = *layer {
            control_tint(i)
        } else {
            let [r, g, b, a] = stroke.color_rgba;
            egui::Color32::from_rgba_unmultiplied(r, g, b, a)
        };
        let points: Vec<egui::Pos2> = stroke
            .points_in_canvas
            .iter()
            .map(|p| to_screen(*p))
            .collect();
        let clipped = painter.with_clip_rect(rect.intersect(area));
        for (i, p) in points.iter().enumerate() {
            clipped.circle_filled(*p, width * 0.5 * stroke.pressure_at(i), color);
        }
        if stroke.pressures.is_empty() && points.len() > 1 {
            clipped.add(egui::Shape::line(points, egui::Stroke::new(width, color)));
        } else {
            for (i, pair) in points.windows(2).enumerate() {
                let w = width * stroke.pressure_at(i).min(stroke.pressure_at(i + 1));
                clipped.line_segment([pair[0], pair[1]], egui::Stroke::new(w, color));
            }
        }
    }

    // Brush outline under the pointer.
    if let Some(hover) = response
        .hover_pos()
        .filter(|_| settings.tool == CanvasTool::Brush)
    {
        painter.with_clip_rect(rect.intersect(area)).circle_stroke(
            hover,
            settings.brush_size_px * scale * 0.5,
            egui::Stroke::new(1.0, egui::Color32::from_gray(128)),
        );
    }

    if view.files_hovered {
        painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(150));
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "Drop an image to use it as the background",
            egui::FontId::proportional(18.0),
            egui::Color32::WHITE,
        );
    } else if doc.is_empty() && in_progress.0.is_none() {
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "Draw here, or drop an image",
            egui::FontId::proportional(16.0),
            egui::Color32::from_gray(150),
        );
    }
}
