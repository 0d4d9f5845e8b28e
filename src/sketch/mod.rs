//! The sketch canvas document: a fixed-size canvas with an optional background image, a paint
//! layer and a separate inpainting-mask layer made of brush strokes, undo/redo as a stack of
//! edits (command pattern), and rasterisation to plain images at any requested size.
//!
//! Knows nothing of egui: the studio shows it through [`SketchDoc::render_preview`] and feeds
//! it finished [`Stroke`]s. Coordinates are canvas pixels (`pos_in_canvas`), origin top left.

pub mod control;
pub mod layers;
mod raster;

pub use layers::{ControlLayer, ControlLayerSnapshot, ControlSettings, MAX_CONTROL_LAYERS};

use image::{GrayImage, RgbImage, RgbaImage};
use serde::{Deserialize, Serialize};

/// Which layer a stroke is painted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "layers::LayerRepr")]
pub enum Layer {
    /// The visible drawing, used as the init image for image-to-image.
    #[default]
    Paint,
    /// The inpainting mask: painted = repaint, unpainted = keep.
    Mask,
    /// A control layer, by its place in the document's list ([`SketchDoc::controls`]): a
    /// ControlNet's control image, strokes drawn white on black (scribble), steering the
    /// composition.
    Control(usize),
}

/// The canvas's long side in pixels: the drawing surface has its own resolution, whatever the
/// output size (a 64 px picture is still sketched on a 1024 px canvas); the output's aspect
/// ratio frames it, and generation rasterises it at the output size.
pub const CANVAS_LONG_SIDE_PX: u32 = 1024;

/// The canvas size for an output of `width` x `height`: the same aspect, the long side
/// [`CANVAS_LONG_SIDE_PX`].
pub fn canvas_size_for(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let scale = CANVAS_LONG_SIDE_PX as f32 / w.max(h);
    (
        ((w * scale).round() as u32).max(1),
        ((h * scale).round() as u32).max(1),
    )
}

/// One brush stroke: a polyline of canvas positions swept with a round brush.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stroke {
    /// Positions in canvas pixels, in drawing order. One point paints a dot.
    pub points_in_canvas: Vec<[f32; 2]>,
    /// Brush diameter in canvas pixels.
    pub brush_size_px: f32,
    /// Straight (unpremultiplied) sRGBA colour; ignored by the eraser and on the mask layer.
    pub color_rgba: [u8; 4],
    /// Erases what is under it (on its own layer) instead of painting.
    pub eraser: bool,
    /// Pen pressure (0, 1] at each point, where the platform reports it: the brush's
    /// diameter is `brush_size_px` times the pressure. Empty: full pressure everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pressures: Vec<f32>,
    /// A fill bucket instead of a brush: the area connected to the first point whose colour
    /// (on the paint layer) or coverage (mask, control) is like the point's is filled with
    /// the colour (or erased), as the layer stands when the fill comes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fill: bool,
}

/// How far (0-255, any channel) a pixel's colour may be from the clicked one and still be
/// filled by the paint layer's fill bucket.
pub const FILL_TOLERANCE: u8 = 32;

impl Stroke {
    pub fn new(brush_size_px: f32, color_rgba: [u8; 4], eraser: bool) -> Self {
        Self {
            points_in_canvas: Vec::new(),
            brush_size_px,
            color_rgba,
            eraser,
            pressures: Vec::new(),
            fill: false,
        }
    }

    /// A fill bucket click at `pos_in_canvas` (see [`Stroke::fill`]).
    pub fn fill_at(pos_in_canvas: [f32; 2], color_rgba: [u8; 4], eraser: bool) -> Self {
        Self {
            points_in_canvas: vec![pos_in_canvas],
            brush_size_px: 1.0,
            color_rgba,
            eraser,
            pressures: Vec::new(),
            fill: true,
        }
    }

    /// Adds a point unless it is closer than a tenth of the brush to the last one.
    pub fn push_point(&mut self, pos_in_canvas: [f32; 2]) {
        self.push_point_with_pressure(pos_in_canvas, None);
    }

    /// [`Stroke::push_point`] with the pen's pressure there, if the platform reports one.
    pub fn push_point_with_pressure(&mut self, pos_in_canvas: [f32; 2], pressure: Option<f32>) {
        if let Some(last) = self.points_in_canvas.last() {
            let (dx, dy) = (pos_in_canvas[0] - last[0], pos_in_canvas[1] - last[1]);
            let min_step = (self.brush_size_px * 0.1).max(0.5);
            if dx * dx + dy * dy < min_step * min_step {
                return;
            }
        }
        match pressure.filter(|p| p.is_finite()) {
            Some(p) => {
                // Points before the first pressure reading had full pressure.
                self.pressures.resize(self.points_in_canvas.len(), 1.0);
                self.pressures.push(p.clamp(0.05, 1.0));
            }
            None if !self.pressures.is_empty() => {
                let last = self.pressures.last().copied().unwrap_or(1.0);
                self.pressures.push(last);
            }
            None => {}
        }
        self.points_in_canvas.push(pos_in_canvas);
    }

    /// The pressure at point `i` (1 without pressure readings).
    pub fn pressure_at(&self, i: usize) -> f32 {
        self.pressures.get(i).copied().unwrap_or(1.0)
    }
}

/// One undoable change to the document.
#[derive(Clone, Debug)]
enum Edit {
    AddStroke(Layer, Stroke),
    /// Everything that was removed, to put back on undo (the control layers stay, emptied).
    Clear {
        paint: Vec<Stroke>,
        mask: Vec<Stroke>,
        background: Option<RgbaImage>,
        controls: Vec<(Vec<Stroke>, Option<GrayImage>)>,
    },
    SetControlImage {
        layer: usize,
        before: Option<GrayImage>,
        after: Option<GrayImage>,
    },
    /// The list of control layers replaced: one added or removed, or a picture's reused.
    SetControls {
        before: Vec<ControlLayer>,
        after: Vec<ControlLayer>,
    },
    SetBackground {
        before: Option<RgbaImage>,
        after: Option<RgbaImage>,
    },
}

/// What of a document is kept across sessions: its size, strokes and control layers (the
/// background and the control layers' pictures are kept beside it as picture files; the undo
/// history is not kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SketchSnapshot {
    pub width_px: u32,
    pub height_px: u32,
    pub paint: Vec<Stroke>,
    pub mask: Vec<Stroke>,
    pub controls: Vec<ControlLayerSnapshot>,
    pub has_background: bool,
    /// Sessions before control layers were a list had one: its strokes, and whether it had
    /// a picture (`control.png`). [`SketchSnapshot::upgrade`] makes it the first layer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub control: Vec<Stroke>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub has_control_image: bool,
}

impl SketchSnapshot {
    /// The earlier single control layer as the first of the list (id 0, default settings);
    /// true if there was one, whose picture is then in `control.png`.
    pub fn upgrade(&mut self) -> bool {
        let had = !self.control.is_empty() || self.has_control_image;
        if had && self.controls.is_empty() {
            self.controls.push(ControlLayerSnapshot {
                id: 0,
                settings: ControlSettings::default(),
                strokes: std::mem::take(&mut self.control),
                has_image: self.has_control_image,
            });
        }
        self.control.clear();
        self.has_control_image = false;
        had
    }
}

/// The canvas document.
#[derive(Clone, Debug)]
pub struct SketchDoc {
    width_px: u32,
    height_px: u32,
    background: Option<RgbaImage>,
    paint: Vec<Stroke>,
    mask: Vec<Stroke>,
    /// The control layers, in order (see [`ControlLayer`]).
    controls: Vec<ControlLayer>,
    /// The id the next control layer gets.
    next_control_id: u64,
    undo: Vec<Edit>,
    redo: Vec<Edit>,
    /// Bumped on every change, so views can tell when to re-rasterise.
    revision: u64,
    /// Bumped on every change of a control layer's settings (which the view does not show).
    settings_changes: u64,
}

impl Default for SketchDoc {
    fn default() -> Self {
        Self::new(512, 512)
    }
}

impl SketchDoc {
    /// An empty white canvas of the given size (at least 1x1).
    pub fn new(width_px: u32, height_px: u32) -> Self {
        Self {
            width_px: width_px.max(1),
            height_px: height_px.max(1),
            background: None,
            paint: Vec::new(),
            mask: Vec::new(),
            controls: Vec::new(),
            next_control_id: 0,
            undo: Vec::new(),
            redo: Vec::new(),
            revision: 0,
            settings_changes: 0,
        }
    }

    /// The document's strokes and size, to keep (see [`SketchSnapshot`]).
    pub fn snapshot(&self) -> SketchSnapshot {
        SketchSnapshot {
            width_px: self.width_px,
            height_px: self.height_px,
            paint: self.paint.clone(),
            mask: self.mask.clone(),
            controls: self
                .controls
                .iter()
                .map(|c| ControlLayerSnapshot {
                    id: c.id,
                    settings: c.settings.clone(),
                    strokes: c.strokes.clone(),
                    has_image: c.image.is_some(),
                })
                .collect(),
            has_background: self.background.is_some(),
            control: Vec::new(),
            has_control_image: false,
        }
    }

    /// A document as it was kept, with its background and its control layers' pictures
    /// read back (`control_images[i]` for `snapshot.controls[i]`; missing ones are none), no
    /// undo history. Control layers past [`MAX_CONTROL_LAYERS`] and repeated ids are dropped.
    pub fn restore(
        mut snapshot: SketchSnapshot,
        background: Option<RgbaImage>,
        control_images: Vec<Option<GrayImage>>,
    ) -> Self {
        snapshot.upgrade();
        let mut doc = Self::new(snapshot.width_px, snapshot.height_px);
        let valid = |s: &Stroke| {
            !s.points_in_canvas.is_empty()
                && s.brush_size_px.is_finite()
                && s.brush_size_px > 0.0
                && s.points_in_canvas.iter().flatten().all(|v| v.is_finite())
        };
        // Pressures that do not fit their points are dropped (full pressure), odd values
        // brought into range.
        let repair = |mut s: Stroke| {
            if s.pressures.len() != s.points_in_canvas.len() {
                s.pressures.clear();
            }
            for p in &mut s.pressures {
                *p = if p.is_finite() {
                    p.clamp(0.05, 1.0)
                } else {
                    1.0
                };
            }
            s
        };
        let keep = |v: Vec<Stroke>| v.into_iter().filter(valid).map(repair).collect();
        doc.paint = keep(snapshot.paint);
        doc.mask = keep(snapshot.mask);
        doc.background = background;
        let mut images = control_images.into_iter();
        for c in snapshot.controls {
            let image = images.next().flatten();
            if doc.controls.len() == MAX_CONTROL_LAYERS || doc.controls.iter().any(|d| d.id == c.id)
            {
                continue;
            }
            doc.controls.push(ControlLayer {
                id: c.id,
                settings: c.settings,
                strokes: keep(c.strokes),
                image,
            });
        }
        doc.next_control_id = doc.controls.iter().map(|c| c.id + 1).max().unwrap_or(0);
        doc
    }

    pub fn width_px(&self) -> u32 {
        self.width_px
    }

    pub fn height_px(&self) -> u32 {
        self.height_px
    }

    /// Changes with every edit, undo and redo: when the view must be drawn again.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Changes with every edit, undo, redo and change of a control layer's settings: when
    /// the kept session must be written again.
    pub fn state_revision(&self) -> u64 {
        self.revision.wrapping_add(self.settings_changes)
    }

    pub fn background(&self) -> Option<&RgbaImage> {
        self.background.as_ref()
    }

    /// A layer's strokes (none for a control layer that does not exist).
    pub fn strokes(&self, layer: Layer) -> &[Stroke] {
        match layer {
            Layer::Paint => &self.paint,
            Layer::Mask => &self.mask,
            Layer::Control(i) => self.controls.get(i).map_or(&[], |c| &c.strokes),
        }
    }

    /// The control layers, in order.
    pub fn controls(&self) -> &[ControlLayer] {
        &self.controls
    }

    /// The control layer at `index`.
    pub fn control(&self, index: usize) -> Option<&ControlLayer> {
        self.controls.get(index)
    }

    /// Where the control layer with `id` is now.
    pub fn control_index(&self, id: u64) -> Option<usize> {
        self.controls.iter().position(|c| c.id == id)
    }

    /// Whether any control layer has anything: strokes or a picture.
    pub fn has_control(&self) -> bool {
        self.controls.iter().any(ControlLayer::has_content)
    }

    /// Adds a control layer at the end (undoable) and returns its index; `None` when there
    /// are [`MAX_CONTROL_LAYERS`] already.
    pub fn add_control_layer(&mut self, settings: ControlSettings) -> Option<usize> {
        if self.controls.len() >= MAX_CONTROL_LAYERS {
            return None;
        }
        let mut after = self.controls.clone();
        after.push(ControlLayer::new(self.next_control_id, settings));
        self.next_control_id += 1;
        self.perform(Edit::SetControls {
            before: Vec::new(),
            after,
        });
        Some(self.controls.len() - 1)
    }

    /// Removes the control layer at `index` with its strokes and picture (undoable).
    pub fn remove_control_layer(&mut self, index: usize) {
        if index >= self.controls.len() {
            return;
        }
        let mut after = self.controls.clone();
        after.remove(index);
        self.perform(Edit::SetControls {
            before: Vec::new(),
            after,
        });
    }

    /// Replaces every control layer with new ones, each with its settings and picture and
    /// no strokes (undoable): a reused picture's ControlNets. At most [`MAX_CONTROL_LAYERS`].
    pub fn replace_control_layers(&mut self, layers: Vec<(ControlSettings, Option<GrayImage>)>) {
        if layers.is_empty() && self.controls.is_empty() {
            return;
        }
        let after = layers
            .into_iter()
            .take(MAX_CONTROL_LAYERS)
            .map(|(settings, image)| {
                let mut layer = ControlLayer::new(self.next_control_id, settings);
                self.next_control_id += 1;
                layer.image = image;
                layer
            })
            .collect();
        self.perform(Edit::SetControls {
            before: Vec::new(),
            after,
        });
    }

    /// Changes a control layer's settings. Not an undoable edit (a slider sends many); the
    /// revision changes only when what the canvas shows does (the layer shown or hidden).
    pub fn set_control_settings(&mut self, index: usize, settings: ControlSettings) {
        let Some(layer) = self.controls.get_mut(index) else {
            return;
        };
        if layer.settings == settings {
            return;
        }
        if layer.settings.visible != settings.visible {
            self.revision += 1;
        }
        self.settings_changes += 1;
        layer.settings = settings;
    }

    /// Puts a picture (white lines on black) under a control layer's strokes, undoable;
    /// `None` removes it.
    pub fn set_control_image(&mut self, index: usize, image: Option<GrayImage>) {
        let Some(layer) = self.controls.get(index) else {
            return;
        };
        if image.is_none() && layer.image.is_none() {
            return;
        }
        self.perform(Edit::SetControlImage {
            layer: index,
            before: None,
            after: image,
        });
    }

    /// Whether there is anything to send as an init image (a background or paint strokes).
    pub fn has_content(&self) -> bool {
        self.background.is_some() || !self.paint.is_empty()
    }

    /// Whether any mask stroke exists (eraser strokes included).
    pub fn has_mask(&self) -> bool {
        !self.mask.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        !self.has_content() && !self.has_mask() && !self.has_control()
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Adds a finished stroke. Strokes without points are ignored.
    pub fn add_stroke(&mut self, layer: Layer, stroke: Stroke) {
        if stroke.points_in_canvas.is_empty() || stroke.brush_size_px <= 0.0 {
            return;
        }
        if let Layer::Control(i) = layer {
            if i >= self.controls.len() {
                return;
            }
        }
        self.perform(Edit::AddStroke(layer, stroke));
    }

    /// Removes every stroke, the background and the control layers' pictures (undoable);
    /// the control layers stay, with their settings. Does nothing on an empty canvas.
    pub fn clear(&mut self) {
        if self.is_empty() {
            return;
        }
        self.perform(Edit::Clear {
            paint: Vec::new(),
            mask: Vec::new(),
            background: None,
            controls: Vec::new(),
        });
    }

    /// Replaces the background image (undoable); `None` removes it. The image is shown
    /// scaled to the canvas size.
    pub fn set_background(&mut self, image: Option<RgbaImage>) {
        self.perform(Edit::SetBackground {
            before: None,
            after: image,
        });
    }

    /// Undoes the last edit; false if there was none.
    pub fn undo(&mut self) -> bool {
        let Some(edit) = self.undo.pop() else {
            return false;
        };
        let inverse = self.revert(edit);
        self.redo.push(inverse);
        self.revision += 1;
        true
    }

    /// Redoes the last undone edit; false if there was none.
    pub fn redo(&mut self) -> bool {
        let Some(edit) = self.redo.pop() else {
            return false;
        };
        let recorded = self.apply(edit);
        self.undo.push(recorded);
        self.revision += 1;
        true
    }

    fn perform(&mut self, edit: Edit) {
        let recorded = self.apply(edit);
        self.undo.push(recorded);
        self.redo.clear();
        self.revision += 1;
    }

    /// Applies an edit; returns it in the form that [`Self::revert`] undoes.
    fn apply(&mut self, edit: Edit) -> Edit {
        match edit {
            Edit::AddStroke(layer, stroke) => {
                if let Some(strokes) = self.layer_mut(layer) {
                    strokes.push(stroke.clone());
                }
                Edit::AddStroke(layer, stroke)
            }
            Edit::Clear { .. } => Edit::Clear {
                paint: std::mem::take(&mut self.paint),
                mask: std::mem::take(&mut self.mask),
                background: self.background.take(),
                controls: self
                    .controls
                    .iter_mut()
                    .map(|c| (std::mem::take(&mut c.strokes), c.image.take()))
                    .collect(),
            },
            Edit::SetControlImage { layer, after, .. } => {
                let before = match self.controls.get_mut(layer) {
                    Some(c) => std::mem::replace(&mut c.image, after.clone()),
                    None => None,
                };
                Edit::SetControlImage {
                    layer,
                    before,
                    after,
                }
            }
            Edit::SetControls { after, .. } => {
                let after = self.with_current_settings(after);
                let before = std::mem::replace(&mut self.controls, after.clone());
                Edit::SetControls { before, after }
            }
            Edit::SetBackground { after, .. } => {
                let before = std::mem::replace(&mut self.background, after.clone());
                Edit::SetBackground { before, after }
            }
        }
    }

    /// Undoes an applied edit; returns it in the form that [`Self::apply`] redoes.
    fn revert(&mut self, edit: Edit) -> Edit {
        match edit {
            Edit::AddStroke(layer, stroke) => {
                if let Some(strokes) = self.layer_mut(layer) {
                    strokes.pop();
                }
                Edit::AddStroke(layer, stroke)
            }
            Edit::Clear {
                paint,
                mask,
                background,
                controls,
            } => {
                self.paint = paint;
                self.mask = mask;
                self.background = background;
                for (c, (strokes, image)) in self.controls.iter_mut().zip(controls) {
                    c.strokes = strokes;
                    c.image = image;
                }
                Edit::Clear {
                    paint: Vec::new(),
                    mask: Vec::new(),
                    background: None,
                    controls: Vec::new(),
                }
            }
            Edit::SetControlImage {
                layer,
                before,
                after,
            } => {
                if let Some(c) = self.controls.get_mut(layer) {
                    c.image = before;
                }
                Edit::SetControlImage {
                    layer,
                    before: None,
                    after,
                }
            }
            Edit::SetControls { before, after } => {
                self.controls = self.with_current_settings(before);
                Edit::SetControls {
                    before: Vec::new(),
                    after,
                }
            }
            Edit::SetBackground { before, after } => {
                self.background = before;
                Edit::SetBackground {
                    before: None,
                    after,
                }
            }
        }
    }

    /// `layers` with the settings their namesakes (same id) have now: settings are not
    /// undoable, so undoing or redoing a change of the list keeps the latest.
    fn with_current_settings(&self, mut layers: Vec<ControlLayer>) -> Vec<ControlLayer> {
        for layer in &mut layers {
            if let Some(now) = self.controls.iter().find(|c| c.id == layer.id) {
                layer.settings = now.settings.clone();
            }
        }
        layers
    }

    fn layer_mut(&mut self, layer: Layer) -> Option<&mut Vec<Stroke>> {
        match layer {
            Layer::Paint => Some(&mut self.paint),
            Layer::Mask => Some(&mut self.mask),
            Layer::Control(i) => self.controls.get_mut(i).map(|c| &mut c.strokes),
        }
    }

    /// The paint layer composited over the background (or white), at `width` x `height`.
    pub fn rasterize(&self, width: u32, height: u32) -> RgbImage {
        let rgba = self.composite(width.max(1), height.max(1));
        RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let p = rgba.get_pixel(x, y).0;
            image::Rgb([p[0], p[1], p[2]])
        })
    }

    /// The mask layer at `width` x `height`: white where painted (repaint), black elsewhere.
    pub fn rasterize_mask(&self, width: u32, height: u32) -> GrayImage {
        self.coverage(None, &self.mask, width, height)
    }

    /// Control layer `index` at `width` x `height`, as a scribble ControlNet takes it: its
    /// picture with the strokes over it, white on black, binary (a pixel a stroke covers by a
    /// sixth or more is a line, so strokes drawn thin on the large canvas stay unbroken lines
    /// at a small output size; the brush's colour is not used). Black for a layer that does
    /// not exist.
    pub fn rasterize_control(&self, index: usize, width: u32, height: u32) -> RgbImage {
        let g = self.control_coverage(index, width, height);
        RgbImage::from_fn(g.width(), g.height(), |x, y| {
            let v = if g.get_pixel(x, y)[0] > 42 { 255 } else { 0 };
            image::Rgb([v, v, v])
        })
    }

    /// Control layer `index`: its picture (scaled to the size) with the strokes over it.
    fn control_coverage(&self, index: usize, width: u32, height: u32) -> GrayImage {
        match self.controls.get(index) {
            Some(c) => self.coverage(c.image.as_ref(), &c.strokes, width, height),
            None => GrayImage::new(width.max(1), height.max(1)),
        }
    }

    /// How much of each pixel `strokes` cover (erasers take away), over `base` (scaled to
    /// the size) or nothing.
    fn coverage(
        &self,
        base: Option<&GrayImage>,
        strokes: &[Stroke],
        width: u32,
        height: u32,
    ) -> GrayImage {
        let (width, height) = (width.max(1), height.max(1));
        let scale = self.scale_to(width, height);
        let mut mask = match base {
            Some(b) if b.dimensions() == (width, height) => b.clone(),
            Some(b) => {
                image::imageops::resize(b, width, height, image::imageops::FilterType::Triangle)
            }
            None => GrayImage::new(width, height),
        };
        for stroke in strokes {
            if stroke.fill {
                // Fill the covered or the uncovered area around the point, as clicked.
                let seed = fill_seed(stroke, scale, width, height);
                let on = |v: u8| v >= 128;
                let seed_on = on(mask.get_pixel(seed.0, seed.1)[0]);
                let region = raster::flood_region(width, height, seed, |x, y| {
                    on(mask.get_pixel(x, y)[0]) == seed_on
                });
                let value = if stroke.eraser { 0 } else { 255 };
                for (px, inside) in mask.pixels_mut().zip(region) {
                    if inside {
                        px.0[0] = value;
                    }
                }
                continue;
            }
            raster::stroke_coverage(stroke, scale, width, height, |x, y, cover| {
                let px = &mut mask.get_pixel_mut(x, y).0[0];
                let value = f32::from(*px) / 255.0;
                let next = if stroke.eraser {
                    value * (1.0 - cover)
                } else {
                    value + (1.0 - value) * cover
                };
                *px = to_u8(next);
            });
        }
        mask
    }

    /// What the canvas view shows: the composited drawing with the mask tinted on top in
    /// `mask_tint_rgba` (its alpha sets how strongly), and each shown control layer's lines
    /// in its tint (`control_tints_rgba[i % len]` for layer `i`).
    pub fn render_preview(
        &self,
        width: u32,
        height: u32,
        mask_tint_rgba: [u8; 4],
        control_tints_rgba: &[[u8; 4]],
    ) -> RgbaImage {
        let (width, height) = (width.max(1), height.max(1));
        let mut out = self.composite(width, height);
        let mut layers = vec![(None, mask_tint_rgba)];
        if !control_tints_rgba.is_empty() {
            for (i, c) in self.controls.iter().enumerate() {
                if c.settings.visible && c.has_content() {
                    layers.push((Some(i), control_tints_rgba[i % control_tints_rgba.len()]));
                }
            }
        }
        for (control, mask_tint_rgba) in layers {
            let mask = match control {
                Some(i) => self.control_coverage(i, width, height),
                None if self.has_mask() => self.coverage(None, &self.mask, width, height),
                None => continue,
            };
            let strength = f32::from(mask_tint_rgba[3]) / 255.0;
            for (px, m) in out.pixels_mut().zip(mask.pixels()) {
                let a = strength * f32::from(m.0[0]) / 255.0;
                for (channel, tint) in px.0.iter_mut().zip(mask_tint_rgba).take(3) {
                    let base = f32::from(*channel);
                    let tint = f32::from(tint);
                    *channel = (base + (tint - base) * a).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }

    fn scale_to(&self, width: u32, height: u32) -> [f32; 2] {
        [
            width as f32 / self.width_px as f32,
            height as f32 / self.height_px as f32,
        ]
    }

    /// Background (or white) with the paint layer over it, opaque.
    fn composite(&self, width: u32, height: u32) -> RgbaImage {
        let mut base = match &self.background {
            Some(bg) if bg.width() == width && bg.height() == height => bg.clone(),
            Some(bg) => {
                image::imageops::resize(bg, width, height, image::imageops::FilterType::Triangle)
            }
            None => RgbaImage::from_pixel(width, height, image::Rgba([255, 255, 255, 255])),
        };
        // A transparent background shows white through it.
        for px in base.pixels_mut() {
            let a = f32::from(px.0[3]) / 255.0;
            for c in 0..3 {
                px.0[c] = to_u8((f32::from(px.0[c]) / 255.0) * a + (1.0 - a));
            }
            px.0[3] = 255;
        }
        if self.paint.is_empty() {
            return base;
        }
        let layer = self.paint_layer(&base);
        for (dst, src) in base.pixels_mut().zip(layer.pixels()) {
            let a = f32::from(src.0[3]) / 255.0;
            for c in 0..3 {
                let d = f32::from(dst.0[c]);
                dst.0[c] = (d + (f32::from(src.0[c]) - d) * a)
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
        base
    }

    /// The paint strokes alone on a transparent layer (straight alpha), at the size of
    /// `base`, the opaque background they lie on (fills look at both).
    fn paint_layer(&self, base: &RgbaImage) -> RgbaImage {
        let (width, height) = base.dimensions();
        let scale = self.scale_to(width, height);
        let mut layer = RgbaImage::new(width, height);
        for stroke in &self.paint {
            let [r, g, b, a] = stroke.color_rgba;
            let color = [f32::from(r), f32::from(g), f32::from(b)];
            let stroke_alpha = f32::from(a) / 255.0;
            let blend = |px: &mut [u8; 4], cover: f32| {
                let dst_a = f32::from(px[3]) / 255.0;
                if stroke.eraser {
                    px[3] = to_u8(dst_a * (1.0 - cover));
                    return;
                }
                let src_a = stroke_alpha * cover;
                let out_a = src_a + dst_a * (1.0 - src_a);
                if out_a <= 0.0 {
                    return;
                }
                for c in 0..3 {
                    let d = f32::from(px[c]);
                    let v = (color[c] * src_a + d * dst_a * (1.0 - src_a)) / out_a;
                    px[c] = v.round().clamp(0.0, 255.0) as u8;
                }
                px[3] = to_u8(out_a);
            };
            if stroke.fill {
                // The region of like colour in what is seen: the layer over the background.
                let seen = |x: u32, y: u32| over(base.get_pixel(x, y).0, layer.get_pixel(x, y).0);
                let seed = fill_seed(stroke, scale, width, height);
                let target = seen(seed.0, seed.1);
                let region = raster::flood_region(width, height, seed, |x, y| {
                    let c = seen(x, y);
                    (0..3).all(|i| c[i].abs_diff(target[i]) <= FILL_TOLERANCE)
                });
                for (px, inside) in layer.pixels_mut().zip(region) {
                    if inside {
                        blend(&mut px.0, 1.0);
                    }
                }
                continue;
            }
            raster::stroke_coverage(stroke, scale, width, height, |x, y, cover| {
                blend(&mut layer.get_pixel_mut(x, y).0, cover)
            });
        }
        layer
    }

    /// The colour the canvas shows at `pos_in_canvas` (background and paint layer, without
    /// the mask or control tints): the eyedropper's pick.
    pub fn sample_colour(&self, pos_in_canvas: [f32; 2]) -> [u8; 3] {
        let x = (pos_in_canvas[0].max(0.0) as u32).min(self.width_px - 1);
        let y = (pos_in_canvas[1].max(0.0) as u32).min(self.height_px - 1);
        let p = self.rasterize(self.width_px, self.height_px);
        p.get_pixel(x, y).0
    }
}

/// The pixel a fill stroke starts from on a `width` x `height` grid.
fn fill_seed(stroke: &Stroke, scale: [f32; 2], width: u32, height: u32) -> (u32, u32) {
    let p = stroke
        .points_in_canvas
        .first()
        .copied()
        .unwrap_or([0.0, 0.0]);
    let x = ((p[0] * scale[0]).max(0.0) as u32).min(width - 1);
    let y = ((p[1] * scale[1]).max(0.0) as u32).min(height - 1);
    (x, y)
}

/// `top` (straight alpha) over the opaque `base`: the colour seen.
fn over(base: [u8; 4], top: [u8; 4]) -> [u8; 3] {
    let a = f32::from(top[3]) / 255.0;
    let mix = |b: u8, t: u8| (f32::from(b) + (f32::from(t) - f32::from(b)) * a).round() as u8;
    [
        mix(base[0], top[0]),
        mix(base[1], top[1]),
        mix(base[2], top[2]),
    ]
}

fn to_u8(v_0_to_1: f32) -> u8 {
    (v_0_to_1 * 255.0).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(size: f32, color: [u8; 4], eraser: bool, points: &[[f32; 2]]) -> Stroke {
        Stroke {
            points_in_canvas: points.to_vec(),
            brush_size_px: size,
            color_rgba: color,
            eraser,
            pressures: Vec::new(),
            fill: false,
        }
    }

    /// A closed square outline from (20, 20) to (80, 80) on a 100 px canvas.
    fn square(layer: Layer, doc: &mut SketchDoc) {
        doc.add_stroke(
            layer,
            line(
                4.0,
                [0, 0, 0, 255],
                false,
                &[
                    [20.0, 20.0],
                    [80.0, 20.0],
                    [80.0, 80.0],
                    [20.0, 80.0],
                    [20.0, 20.0],
                ],
            ),
        );
    }

    /// The fill bucket fills the enclosed area and stops at the lines, on the paint layer
    /// by colour and on the control and mask layers by coverage; filling outside fills the
    /// rest; it is undoable, survives a snapshot and works at any output size.
    #[test]
    fn fill_bucket_fills_the_enclosed_area_only() {
        let mut doc = SketchDoc::new(100, 100);
        square(Layer::Paint, &mut doc);
        doc.add_stroke(
            Layer::Paint,
            Stroke::fill_at([50.0, 50.0], [255, 0, 0, 255], false),
        );
        let img = doc.rasterize(100, 100);
        assert_eq!(img.get_pixel(50, 50).0, [255, 0, 0]);
        assert_eq!(
            img.get_pixel(23, 23).0,
            [255, 0, 0],
            "the fill reaches the lines"
        );
        assert_eq!(
            img.get_pixel(10, 10).0,
            [255, 255, 255],
            "outside stays white"
        );
        assert_eq!(img.get_pixel(20, 50).0, [0, 0, 0], "the line stays");
        let small = doc.rasterize(50, 50);
        assert_eq!(small.get_pixel(25, 25).0, [255, 0, 0]);
        assert_eq!(small.get_pixel(3, 3).0, [255, 255, 255]);
        // Filling outside with blue leaves the red inside.
        doc.add_stroke(
            Layer::Paint,
            Stroke::fill_at([5.0, 5.0], [0, 0, 255, 255], false),
        );
        let img = doc.rasterize(100, 100);
        assert_eq!(img.get_pixel(10, 90).0, [0, 0, 255]);
        assert_eq!(img.get_pixel(50, 50).0, [255, 0, 0]);
        assert_eq!(doc.sample_colour([10.0, 90.0]), [0, 0, 255]);
        assert_eq!(doc.sample_colour([50.0, 50.0]), [255, 0, 0]);
        let again = SketchDoc::restore(doc.snapshot(), None, Vec::new());
        assert_eq!(again.rasterize(100, 100), img);
        assert!(doc.undo());
        assert_eq!(doc.rasterize(100, 100).get_pixel(10, 90).0, [255, 255, 255]);

        let mut doc = SketchDoc::new(100, 100);
        doc.add_control_layer(ControlSettings::default());
        square(Layer::Control(0), &mut doc);
        doc.add_stroke(
            Layer::Control(0),
            Stroke::fill_at([50.0, 50.0], [0; 4], false),
        );
        let control = doc.rasterize_control(0, 100, 100);
        assert_eq!(control.get_pixel(50, 50).0, [255, 255, 255]);
        assert_eq!(control.get_pixel(10, 10).0, [0, 0, 0]);
        // The eraser's fill clears the whole connected shape again, lines included.
        doc.add_stroke(
            Layer::Control(0),
            Stroke::fill_at([50.0, 50.0], [0; 4], true),
        );
        assert!(doc
            .rasterize_control(0, 100, 100)
            .pixels()
            .all(|p| p.0 == [0, 0, 0]));
        let mut doc = SketchDoc::new(100, 100);
        square(Layer::Mask, &mut doc);
        doc.add_stroke(Layer::Mask, Stroke::fill_at([5.0, 5.0], [0; 4], false));
        let mask = doc.rasterize_mask(100, 100);
        assert_eq!(mask.get_pixel(5, 95)[0], 255);
        assert_eq!(mask.get_pixel(50, 50)[0], 0, "inside the outline is kept");
    }

    /// The control layer's picture lies under its strokes: both come out in the control
    /// image (the picture scaled to the size), an eraser stroke takes lines of the picture
    /// away, it is tinted in the preview, undoable, and cleared with the rest.
    #[test]
    fn the_control_picture_lies_under_the_control_strokes() {
        let mut doc = SketchDoc::new(100, 100);
        // A vertical line at x = 25 in a 50 px picture: x = 50 at 100 px.
        let picture =
            GrayImage::from_fn(50, 50, |x, _| image::Luma([if x == 25 { 255 } else { 0 }]));
        doc.add_control_layer(ControlSettings::default());
        doc.set_control_image(0, Some(picture));
        assert!(doc.has_control() && !doc.has_content());
        doc.add_stroke(
            Layer::Control(0),
            line(4.0, [0; 4], false, &[[0.0, 20.0], [100.0, 20.0]]),
        );
        doc.add_stroke(Layer::Control(0), line(10.0, [0; 4], true, &[[50.0, 80.0]]));
        let c = doc.rasterize_control(0, 100, 100);
        assert_eq!(c.get_pixel(50, 50).0, [255, 255, 255], "the picture's line");
        assert_eq!(c.get_pixel(10, 20).0, [255, 255, 255], "the stroke");
        assert_eq!(c.get_pixel(50, 80).0, [0, 0, 0], "erased");
        assert_eq!(c.get_pixel(10, 50).0, [0, 0, 0]);
        let shown = doc.render_preview(100, 100, [255, 0, 0, 128], &[[0, 0, 255, 255]]);
        let px = shown.get_pixel(50, 50).0;
        assert!(px[2] == 255 && px[0] < 100, "tinted: {px:?}");
        doc.clear();
        let image = |doc: &SketchDoc| doc.control(0).and_then(|c| c.image.clone());
        assert!(image(&doc).is_none() && doc.is_empty());
        assert_eq!(doc.controls().len(), 1, "clearing keeps the layer");
        assert!(doc.undo());
        assert!(image(&doc).is_some());
        assert!(doc.undo() && doc.undo() && doc.undo());
        assert!(image(&doc).is_none());
    }

    /// With pen pressure the line is thinner where the pen pressed less; pressures that do
    /// not fit their points are dropped when a snapshot is read back.
    #[test]
    fn pressure_sets_the_width_along_the_stroke() {
        let mut s = Stroke::new(20.0, [0, 0, 0, 255], false);
        s.push_point_with_pressure([10.0, 50.0], Some(1.0));
        s.push_point_with_pressure([90.0, 50.0], Some(0.2));
        assert_eq!(s.pressures, vec![1.0, 0.2]);
        let mut doc = SketchDoc::new(100, 100);
        doc.add_stroke(Layer::Paint, s.clone());
        let img = doc.rasterize(100, 100);
        let thickness = |x: u32| (0..100).filter(|&y| img.get_pixel(x, y).0[0] < 128).count();
        assert!(thickness(15) >= 17, "{}", thickness(15));
        assert!(thickness(85) <= 7, "{}", thickness(85));
        // A mouse stroke (no pressure) keeps the full width.
        let mut m = Stroke::new(20.0, [0, 0, 0, 255], false);
        m.push_point([10.0, 50.0]);
        m.push_point([90.0, 50.0]);
        assert!(m.pressures.is_empty());
        // A reading arriving late: the earlier points had full pressure.
        let mut late = Stroke::new(20.0, [0, 0, 0, 255], false);
        late.push_point([0.0, 0.0]);
        late.push_point_with_pressure([10.0, 0.0], Some(0.5));
        late.push_point([20.0, 0.0]);
        assert_eq!(late.pressures, vec![1.0, 0.5, 0.5]);
        let mut snap = doc.snapshot();
        snap.paint[0].pressures = vec![0.3];
        let back = SketchDoc::restore(snap, None, Vec::new());
        assert!(back.strokes(Layer::Paint)[0].pressures.is_empty());
    }

    #[test]
    fn empty_canvas_rasterises_white() {
        let doc = SketchDoc::new(64, 64);
        let img = doc.rasterize(32, 16);
        assert_eq!(img.dimensions(), (32, 16));
        assert!(img.pixels().all(|p| p.0 == [255, 255, 255]));
        assert!(doc.rasterize_mask(8, 8).pixels().all(|p| p.0[0] == 0));
    }

    #[test]
    fn rasterises_a_stroke_where_it_was_drawn() {
        let mut doc = SketchDoc::new(100, 100);
        doc.add_stroke(
            Layer::Paint,
            line(10.0, [255, 0, 0, 255], false, &[[10.0, 50.0], [90.0, 50.0]]),
        );
        let img = doc.rasterize(100, 100);
        assert_eq!(img.get_pixel(50, 50).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(12, 50).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(50, 20).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(50, 58).0, [255, 255, 255]);
        // Scaled to half size the line lands at half the coordinates.
        let small = doc.rasterize(50, 50);
        assert_eq!(small.get_pixel(25, 25).0, [255, 0, 0]);
        assert_eq!(small.get_pixel(25, 5).0, [255, 255, 255]);
    }

    #[test]
    fn a_single_point_paints_a_dot() {
        let mut doc = SketchDoc::new(20, 20);
        doc.add_stroke(
            Layer::Paint,
            line(6.0, [0, 0, 255, 255], false, &[[10.0, 10.0]]),
        );
        let img = doc.rasterize(20, 20);
        assert_eq!(img.get_pixel(10, 10).0, [0, 0, 255]);
        assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255]);
    }

    #[test]
    fn eraser_reveals_the_background() {
        let mut doc = SketchDoc::new(40, 40);
        doc.set_background(Some(RgbaImage::from_pixel(
            40,
            40,
            image::Rgba([0, 255, 0, 255]),
        )));
        doc.add_stroke(
            Layer::Paint,
            line(40.0, [0, 0, 0, 255], false, &[[0.0, 20.0], [40.0, 20.0]]),
        );
        assert_eq!(doc.rasterize(40, 40).get_pixel(20, 20).0, [0, 0, 0]);
        doc.add_stroke(Layer::Paint, line(8.0, [0; 4], true, &[[20.0, 20.0]]));
        let img = doc.rasterize(40, 40);
        assert_eq!(img.get_pixel(20, 20).0, [0, 255, 0]);
        assert_eq!(img.get_pixel(5, 20).0, [0, 0, 0]);
    }

    #[test]
    fn mask_strokes_stay_off_the_picture() {
        let mut doc = SketchDoc::new(64, 64);
        doc.add_stroke(
            Layer::Mask,
            line(16.0, [255, 0, 0, 255], false, &[[32.0, 0.0], [32.0, 64.0]]),
        );
        assert!(doc.has_mask());
        assert!(!doc.has_content());
        assert!(doc
            .rasterize(64, 64)
            .pixels()
            .all(|p| p.0 == [255, 255, 255]));
        let mask = doc.rasterize_mask(64, 64);
        assert_eq!(mask.get_pixel(32, 32).0[0], 255);
        assert_eq!(mask.get_pixel(5, 32).0[0], 0);
        let preview = doc.render_preview(64, 64, [255, 0, 0, 128], &[]);
        let tinted = preview.get_pixel(32, 32).0;
        assert!(tinted[0] == 255 && tinted[1] < 200, "{tinted:?}");
        // Erasing part of the mask.
        doc.add_stroke(Layer::Mask, line(8.0, [0; 4], true, &[[32.0, 32.0]]));
        assert_eq!(doc.rasterize_mask(64, 64).get_pixel(32, 32).0[0], 0);
        assert_eq!(doc.rasterize_mask(64, 64).get_pixel(32, 10).0[0], 255);
    }

    #[test]
    fn undo_and_redo_strokes_clear_and_background() {
        let mut doc = SketchDoc::new(32, 32);
        assert!(!doc.undo());
        let red = line(4.0, [255, 0, 0, 255], false, &[[5.0, 5.0], [20.0, 5.0]]);
        doc.add_stroke(Layer::Paint, red.clone());
        doc.add_stroke(Layer::Mask, red.clone());
        assert_eq!(doc.strokes(Layer::Paint).len(), 1);
        let rev = doc.revision();

        assert!(doc.undo());
        assert!(doc.revision() > rev);
        assert!(!doc.has_mask());
        assert_eq!(doc.strokes(Layer::Paint).len(), 1);
        assert!(doc.redo());
        assert!(doc.has_mask());
        assert!(!doc.redo());

        doc.set_background(Some(RgbaImage::new(8, 8)));
        doc.clear();
        assert!(doc.is_empty());
        assert!(doc.undo());
        assert_eq!(doc.strokes(Layer::Paint), std::slice::from_ref(&red));
        assert!(doc.background().is_some());
        assert!(doc.redo());
        assert!(doc.is_empty());
        assert!(doc.undo());
        assert!(doc.undo()); // the background
        assert!(doc.background().is_none());
        assert!(doc.has_mask());

        // A new edit drops the redo stack.
        doc.add_stroke(Layer::Paint, red);
        assert!(!doc.can_redo());
        assert!(doc.can_undo());
    }

    #[test]
    fn empty_strokes_are_ignored() {
        let mut doc = SketchDoc::new(8, 8);
        doc.add_stroke(Layer::Paint, Stroke::new(4.0, [0, 0, 0, 255], false));
        assert!(!doc.can_undo());
        doc.clear();
        assert!(!doc.can_undo());
    }

    #[test]
    fn push_point_skips_tiny_moves() {
        let mut s = Stroke::new(10.0, [0; 4], false);
        s.push_point([0.0, 0.0]);
        s.push_point([0.2, 0.0]);
        s.push_point([5.0, 0.0]);
        assert_eq!(s.points_in_canvas, vec![[0.0, 0.0], [5.0, 0.0]]);
    }

    /// The control layer: its strokes stay off the picture and the mask, come out white on
    /// black at any size whatever the brush colour, are tinted in the preview only when shown,
    /// survive a snapshot and come back with undo after Clear.
    #[test]
    fn control_strokes_are_white_on_black_and_kept() {
        let mut doc = SketchDoc::new(64, 64);
        doc.add_control_layer(ControlSettings::default());
        doc.add_stroke(
            Layer::Control(0),
            line(8.0, [200, 30, 30, 255], false, &[[32.0, 0.0], [32.0, 64.0]]),
        );
        assert!(doc.has_control() && !doc.has_content() && !doc.has_mask());
        assert!(!doc.is_empty());
        assert!(doc
            .rasterize(64, 64)
            .pixels()
            .all(|p| p.0 == [255, 255, 255]));
        let control = doc.rasterize_control(0, 128, 32);
        assert_eq!(control.dimensions(), (128, 32));
        assert_eq!(control.get_pixel(64, 16).0, [255, 255, 255]);
        assert_eq!(control.get_pixel(10, 16).0, [0, 0, 0]);
        let shown = doc.render_preview(64, 64, [255, 0, 0, 128], &[[0, 0, 255, 255]]);
        assert_eq!(shown.get_pixel(32, 32).0, [0, 0, 255, 255]);
        let revision = doc.revision();
        let mut settings = doc.controls()[0].settings.clone();
        settings.visible = false;
        doc.set_control_settings(0, settings);
        assert_ne!(doc.revision(), revision, "the view redraws");
        let hidden = doc.render_preview(64, 64, [255, 0, 0, 128], &[[0, 0, 255, 255]]);
        assert_eq!(hidden.get_pixel(32, 32).0, [255, 255, 255, 255]);
        let again = SketchDoc::restore(doc.snapshot(), None, Vec::new());
        assert_eq!(
            again.strokes(Layer::Control(0)),
            doc.strokes(Layer::Control(0))
        );
        doc.clear();
        assert!(!doc.has_control());
        assert!(doc.undo());
        assert_eq!(doc.strokes(Layer::Control(0)).len(), 1);
    }

    /// The canvas has its own resolution: the output's aspect with a 1024 px long side; a
    /// stroke drawn thin there stays an unbroken line in a small control image.
    #[test]
    fn the_canvas_has_its_own_resolution_and_thin_lines_survive_downscaling() {
        assert_eq!(canvas_size_for(64, 64), (1024, 1024));
        assert_eq!(canvas_size_for(768, 512), (1024, 683));
        assert_eq!(canvas_size_for(512, 1024), (512, 1024));
        let (w, h) = canvas_size_for(64, 64);
        let mut doc = SketchDoc::new(w, h);
        doc.add_control_layer(ControlSettings::default());
        doc.add_stroke(
            Layer::Control(0),
            line(
                16.0,
                [0, 0, 0, 255],
                false,
                &[[100.0, 150.0], [900.0, 700.0]],
            ),
        );
        let small = doc.rasterize_control(0, 64, 64);
        for x in 8..55 {
            assert!(
                (0..64).any(|y| small.get_pixel(x, y).0 == [255, 255, 255]),
                "a gap at column {x}"
            );
        }
        assert!(small
            .pixels()
            .all(|p| p.0 == [0, 0, 0] || p.0 == [255, 255, 255]));
    }

    /// Control layers are a list: each has its own strokes, picture and settings; adding and
    /// removing are undoable (settings keep their latest values through undo); the list and
    /// its pictures survive a snapshot; a session kept before the list reads back as its
    /// first layer; strokes for a layer that does not exist are ignored.
    #[test]
    fn control_layers_are_a_list_of_their_own() {
        let mut doc = SketchDoc::new(100, 100);
        assert_eq!(doc.add_control_layer(ControlSettings::default()), Some(0));
        let canny = ControlSettings {
            scale: 0.5,
            preprocessor: control::Preprocessor::from_name("canny").expect("known"),
            ..ControlSettings::default()
        };
        assert_eq!(doc.add_control_layer(canny.clone()), Some(1));
        doc.add_stroke(
            Layer::Control(0),
            line(6.0, [0; 4], false, &[[0.0, 20.0], [100.0, 20.0]]),
        );
        doc.add_stroke(
            Layer::Control(1),
            line(6.0, [0; 4], false, &[[0.0, 70.0], [100.0, 70.0]]),
        );
        doc.add_stroke(Layer::Control(7), line(6.0, [0; 4], false, &[[5.0, 5.0]]));
        let first = doc.rasterize_control(0, 100, 100);
        let second = doc.rasterize_control(1, 100, 100);
        assert_eq!(first.get_pixel(50, 20).0, [255; 3]);
        assert_eq!(first.get_pixel(50, 70).0, [0; 3]);
        assert_eq!(second.get_pixel(50, 70).0, [255; 3]);
        assert_eq!(second.get_pixel(50, 20).0, [0; 3]);
        // Both are tinted, each in its own colour.
        let tints = [[0, 0, 255, 255], [0, 255, 0, 255]];
        let shown = doc.render_preview(100, 100, [255, 0, 0, 128], &tints);
        assert_eq!(shown.get_pixel(50, 20).0, [0, 0, 255, 255]);
        assert_eq!(shown.get_pixel(50, 70).0, [0, 255, 0, 255]);
        let ids: Vec<u64> = doc.controls().iter().map(|c| c.id).collect();
        assert_ne!(ids[0], ids[1]);
        assert_eq!(doc.control_index(ids[1]), Some(1));
        // Removing the first moves the second up; undo puts it back with its strokes, and
        // a setting changed meanwhile stays.
        doc.remove_control_layer(0);
        assert_eq!(doc.controls().len(), 1);
        assert_eq!(doc.control_index(ids[1]), Some(0));
        let mut changed = canny.clone();
        changed.scale = 1.5;
        let (view, kept) = (doc.revision(), doc.state_revision());
        doc.set_control_settings(0, changed.clone());
        assert_eq!(doc.revision(), view, "nothing new to draw");
        assert_ne!(doc.state_revision(), kept, "something new to keep");
        assert!(doc.undo());
        assert_eq!(doc.controls().len(), 2);
        assert_eq!(doc.strokes(Layer::Control(0)).len(), 1);
        assert_eq!(doc.controls()[1].settings, changed);
        assert!(doc.redo());
        assert_eq!(doc.controls().len(), 1);
        assert!(doc.undo());
        // A picture under the second layer, then the whole list kept and read back.
        let picture =
            GrayImage::from_fn(10, 10, |x, _| image::Luma([if x == 5 { 255 } else { 0 }]));
        doc.set_control_image(1, Some(picture.clone()));
        let snap = doc.snapshot();
        assert!(snap.controls[1].has_image && !snap.controls[0].has_image);
        let json = serde_json::to_string(&snap).expect("write");
        let read: SketchSnapshot = serde_json::from_str(&json).expect("read");
        let mut back = SketchDoc::restore(read, None, vec![None, Some(picture.clone())]);
        assert_eq!(back.controls(), doc.controls());
        // New layers never take an id in use.
        let added = back
            .add_control_layer(ControlSettings::default())
            .expect("room");
        assert!(!ids.contains(&back.controls()[added].id));
        assert_eq!(back.add_control_layer(ControlSettings::default()), Some(3));
        assert_eq!(
            back.add_control_layer(ControlSettings::default()),
            None,
            "at most four"
        );
        // A session from before: one control layer's strokes and picture.
        let before: SketchSnapshot = serde_json::from_str(
            r#"{"width_px":100,"height_px":100,"control":[{"points_in_canvas":[[1.0,2.0]],
               "brush_size_px":4.0,"color_rgba":[0,0,0,255],"eraser":false}],
               "has_control_image":true}"#,
        )
        .expect("read");
        let old = SketchDoc::restore(before, None, vec![Some(picture.clone())]);
        assert_eq!(old.controls().len(), 1);
        assert_eq!(old.strokes(Layer::Control(0)).len(), 1);
        assert_eq!(old.controls()[0].image.as_ref(), Some(&picture));
        // Reusing a picture's ControlNets replaces the list (undoable).
        let mut reused = doc.clone();
        reused.replace_control_layers(vec![(canny.clone(), Some(picture.clone()))]);
        assert_eq!(reused.controls().len(), 1);
        assert!(reused.strokes(Layer::Control(0)).is_empty());
        assert_eq!(reused.controls()[0].settings, canny);
        assert!(reused.undo());
        assert_eq!(reused.controls().len(), 2);
    }
}
