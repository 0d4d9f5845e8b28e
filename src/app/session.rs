//! The studio's working state kept on disk as it changes, so a crash loses at most the last
//! second of it: the prompt panel and canvas settings ([`PersistedState`]) and the sketch's
//! strokes go to `<data dir>/session/state.json`, its background picture to
//! `session/background.png`, both written durably on a task about a second after a change
//! (eframe's own storage is written only every 30 s and at a clean exit). At start the studio
//! takes the session file when there is one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::state::PersistedState;
use super::tasks::{Poll, Task};
use crate::sketch::{SketchDoc, SketchSnapshot};

/// How long after a change the session is written.
const SETTLE: Duration = Duration::from_millis(800);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct SessionFile {
    version: u32,
    state: PersistedState,
    sketch: SketchSnapshot,
}

const VERSION: u32 = 1;

fn dir(root: &Path) -> PathBuf {
    root.join("session")
}

/// The session kept in `root`, if there is a readable one (an unreadable one is reported and
/// left alone, not overwritten until the next change).
pub fn load(root: &Path) -> Result<Option<(PersistedState, SketchDoc)>, String> {
    let path = dir(root).join("state.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let file: SessionFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.version > VERSION {
        return Err(format!(
            "{}: written by a newer Atelier (version {})",
            path.display(),
            file.version
        ));
    }
    let background = if file.sketch.has_background {
        let png = dir(root).join("background.png");
        Some(
            crate::imageio::load_image_file(&png)
                .map_err(|e| e.to_string())?
                .to_rgba8(),
        )
    } else {
        None
    };
    // Each control layer's picture; a session from before the list kept its one layer's
    // picture as `control.png`.
    let mut sketch = file.sketch;
    let before_list = sketch.upgrade();
    let mut controls = Vec::with_capacity(sketch.controls.len());
    for layer in &sketch.controls {
        if !layer.has_image {
            controls.push(None);
            continue;
        }
        let name = match before_list {
            true => "control.png".to_owned(),
            false => crate::sketch::layers::image_file_name(layer.id),
        };
        let png = dir(root).join(name);
        controls.push(Some(
            crate::imageio::load_image_file(&png)
                .map_err(|e| e.to_string())?
                .to_luma8(),
        ));
    }
    let mut state = file.state;
    state.prompt.sanitize();
    Ok(Some((
        state,
        SketchDoc::restore(sketch, background, controls),
    )))
}

/// The pictures a sketch holds beside its strokes, to write with the session file.
#[derive(Default)]
struct SketchPictures {
    background: Option<image::RgbaImage>,
    /// Each control layer's picture, by layer id (`None`: the layer has none).
    controls: Option<Vec<(u64, Option<image::GrayImage>)>>,
}

fn save(root: &Path, file: &SessionFile, pictures: &SketchPictures) -> Result<(), String> {
    let dir = dir(root);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Written as they are (no copy into a `DynamicImage` first).
    if let Some(bg) = &pictures.background {
        crate::imageio::write_png_atomically(bg, &dir.join("background.png"))
            .map_err(|e| e.to_string())?;
    }
    if let Some(controls) = &pictures.controls {
        for (id, image) in controls {
            if let Some(image) = image {
                let png = dir.join(crate::sketch::layers::image_file_name(*id));
                crate::imageio::write_png_atomically(image, &png).map_err(|e| e.to_string())?;
            }
        }
        // Pictures of layers that are gone, or lost theirs (and one from before the list).
        let keep: std::collections::HashSet<String> = controls
            .iter()
            .filter(|(_, image)| image.is_some())
            .map(|(id, _)| crate::sketch::layers::image_file_name(*id))
            .collect();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("control") && name.ends_with(".png") && !keep.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    let json = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    crate::gallery::write_durable(&dir.join("state.json"), &json).map_err(|e| e.to_string())
}

fn control_pictures(sketch: &SketchDoc) -> Vec<(u64, Option<image::GrayImage>)> {
    sketch
        .controls()
        .iter()
        .map(|c| (c.id, c.image.clone()))
        .collect()
}

/// Keeps the session file in step with the studio, a write at a time.
pub struct SessionKeeper {
    root: PathBuf,
    /// What was last written (or read at start): the state and the sketch's revision.
    saved: Option<(PersistedState, u64)>,
    /// The background last written, by identity of the sketch revision that set it.
    saved_background: Option<u64>,
    changed_at: Option<Instant>,
    writing: Option<Task<Result<(), String>>>,
    /// A write failed: said once, tried again at the next change.
    pub error: Option<String>,
}

impl SessionKeeper {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            saved: None,
            saved_background: None,
            changed_at: None,
            writing: None,
            error: None,
        }
    }

    /// What was read at start counts as written.
    pub fn loaded(&mut self, state: &PersistedState, sketch: &SketchDoc) {
        self.saved = Some((state.clone(), sketch.state_revision()));
        self.saved_background = Some(sketch.revision());
    }

    /// Called every frame (and while hidden): starts a write once a change has settled.
    /// Returns a write failure to show, once.
    pub fn tick(
        &mut self,
        ctx: &egui::Context,
        state: &PersistedState,
        sketch: &SketchDoc,
    ) -> Option<String> {
        let mut failure = None;
        if let Some(task) = &mut self.writing {
            match task.poll() {
                Poll::Pending => return None,
                Poll::Ready(result) => {
                    self.writing = None;
                    if let Err(e) = result {
                        if self.error.as_ref() != Some(&e) {
                            failure = Some(e.clone());
                        }
                        self.error = Some(e);
                        // Try again after the next change.
                        self.saved = None;
                    } else {
                        self.error = None;
                    }
                }
                Poll::Lost(why) => {
                    self.writing = None;
                    self.saved = None;
                    failure = Some(why);
                }
            }
        }
        let current = (state, sketch.state_revision());
        if self.saved.as_ref().is_some_and(|(s, r)| (s, *r) == current) {
            self.changed_at = None;
            return failure;
        }
        let since = *self.changed_at.get_or_insert_with(Instant::now);
        if since.elapsed() < SETTLE {
            ctx.request_repaint_after(SETTLE - since.elapsed());
            return failure;
        }
        let file = SessionFile {
            version: VERSION,
            state: state.clone(),
            sketch: sketch.snapshot(),
        };
        // The pictures only when the sketch changed since they were last written.
        let pictures = if self.saved_background != Some(sketch.revision()) {
            SketchPictures {
                background: sketch.background().cloned(),
                controls: Some(control_pictures(sketch)),
            }
        } else {
            SketchPictures::default()
        };
        let root = self.root.clone();
        self.saved = Some((state.clone(), sketch.state_revision()));
        self.saved_background = Some(sketch.revision());
        self.changed_at = None;
        self.writing = Some(Task::spawn("save-session", ctx, move || {
            save(&root, &file, &pictures)
        }));
        failure
    }

    /// No write is waiting or running.
    pub fn is_settled(&self, state: &PersistedState, sketch: &SketchDoc) -> bool {
        self.writing.is_none()
            && self
                .saved
                .as_ref()
                .is_some_and(|(s, r)| s == state && *r == sketch.state_revision())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::{Layer, Stroke};

    #[test]
    fn a_session_round_trips_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()), Ok(None)));
        let mut state = PersistedState::default();
        state.prompt.prompt = "a harbour at dawn".into();
        let mut sketch = SketchDoc::new(64, 32);
        let mut stroke = Stroke::new(4.0, [200, 10, 10, 255], false);
        stroke.push_point([3.0, 4.0]);
        stroke.push_point([30.0, 20.0]);
        sketch.add_stroke(Layer::Paint, stroke.clone());
        let bg = image::RgbaImage::from_pixel(8, 4, image::Rgba([1, 2, 3, 255]));
        sketch.set_background(Some(bg.clone()));
        let control = image::GrayImage::from_fn(16, 8, |x, _| image::Luma([(x % 2) as u8 * 255]));
        let settings = crate::sketch::ControlSettings::default();
        for _ in 0..3 {
            sketch.add_control_layer(settings.clone());
        }
        sketch.set_control_image(1, Some(control.clone()));
        sketch.set_control_image(2, Some(control.clone()));
        sketch.add_stroke(Layer::Control(0), stroke.clone());
        let file = SessionFile {
            version: VERSION,
            state: state.clone(),
            sketch: sketch.snapshot(),
        };
        let pictures = SketchPictures {
            background: sketch.background().cloned(),
            controls: Some(control_pictures(&sketch)),
        };
        save(dir.path(), &file, &pictures).unwrap();
        let (back, doc) = load(dir.path()).unwrap().unwrap();
        assert_eq!(back, state);
        assert_eq!(doc.strokes(Layer::Paint), std::slice::from_ref(&stroke));
        assert_eq!(doc.background(), Some(&bg));
        assert_eq!(doc.controls(), sketch.controls());
        assert_eq!(doc.controls()[2].image.as_ref(), Some(&control));
        assert_eq!((doc.width_px(), doc.height_px()), (64, 32));

        // The second layer removed: its picture file goes with the next write.
        sketch.remove_control_layer(1);
        let file = SessionFile {
            version: VERSION,
            state: state.clone(),
            sketch: sketch.snapshot(),
        };
        let pictures = SketchPictures {
            background: None,
            controls: Some(control_pictures(&sketch)),
        };
        save(dir.path(), &file, &pictures).unwrap();
        let pngs = |d: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(d.join("session"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("control"))
                .collect();
            names.sort();
            names
        };
        let last = sketch.controls()[1].id;
        assert_eq!(pngs(dir.path()), vec![format!("control-{last}.png")]);
        let (_, doc) = load(dir.path()).unwrap().unwrap();
        assert_eq!(doc.controls(), sketch.controls());

        // A session from before control layers were a list: its one layer comes back first.
        std::fs::write(
            dir.path().join("session/state.json"),
            br#"{"version":1,"state":{},"sketch":{"width_px":64,"height_px":32,
                "control":[{"points_in_canvas":[[1.0,2.0]],"brush_size_px":4.0,
                "color_rgba":[0,0,0,255],"eraser":false}],"has_control_image":true}}"#,
        )
        .unwrap();
        crate::imageio::write_png_atomically(&control, &dir.path().join("session/control.png"))
            .unwrap();
        let (_, old) = load(dir.path()).unwrap().unwrap();
        assert_eq!(old.controls().len(), 1);
        assert_eq!(old.strokes(Layer::Control(0)).len(), 1);
        assert_eq!(old.controls()[0].image.as_ref(), Some(&control));

        std::fs::write(dir.path().join("session/state.json"), b"{ not json").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("state.json"));
    }
}
