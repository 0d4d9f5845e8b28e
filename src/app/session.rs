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
    let control = if file.sketch.has_control_image {
        let png = dir(root).join("control.png");
        Some(
            crate::imageio::load_image_file(&png)
                .map_err(|e| e.to_string())?
                .to_luma8(),
        )
    } else {
        None
    };
    let mut state = file.state;
    state.prompt.sanitize();
    Ok(Some((
        state,
        SketchDoc::restore(file.sketch, background, control),
    )))
}

/// The pictures a sketch holds beside its strokes, to write with the session file.
#[derive(Default)]
struct SketchPictures {
    background: Option<image::RgbaImage>,
    control: Option<image::GrayImage>,
}

fn save(root: &Path, file: &SessionFile, pictures: &SketchPictures) -> Result<(), String> {
    let dir = dir(root);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Written as they are (no copy into a `DynamicImage` first).
    if let Some(bg) = &pictures.background {
        crate::imageio::write_png_atomically(bg, &dir.join("background.png"))
            .map_err(|e| e.to_string())?;
    }
    if let Some(control) = &pictures.control {
        crate::imageio::write_png_atomically(control, &dir.join("control.png"))
            .map_err(|e| e.to_string())?;
    }
    let json = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    crate::gallery::write_durable(&dir.join("state.json"), &json).map_err(|e| e.to_string())
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
        self.saved = Some((state.clone(), sketch.revision()));
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
        let current = (state, sketch.revision());
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
                control: sketch.control_image().cloned(),
            }
        } else {
            SketchPictures::default()
        };
        let root = self.root.clone();
        self.saved = Some((state.clone(), sketch.revision()));
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
                .is_some_and(|(s, r)| s == state && *r == sketch.revision())
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
        sketch.set_control_image(Some(control.clone()));
        let file = SessionFile {
            version: VERSION,
            state: state.clone(),
            sketch: sketch.snapshot(),
        };
        let pictures = SketchPictures {
            background: sketch.background().cloned(),
            control: sketch.control_image().cloned(),
        };
        save(dir.path(), &file, &pictures).unwrap();
        let (back, doc) = load(dir.path()).unwrap().unwrap();
        assert_eq!(back, state);
        assert_eq!(doc.strokes(Layer::Paint), &[stroke]);
        assert_eq!(doc.background(), Some(&bg));
        assert_eq!(doc.control_image(), Some(&control));
        assert_eq!((doc.width_px(), doc.height_px()), (64, 32));

        std::fs::write(dir.path().join("session/state.json"), b"{ not json").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("state.json"));
    }
}
