//! The studio's views, one file per panel. View code only: every `*_ui` function draws from
//! plain data, edits only its own panel's settings, and reports everything else it wants done
//! as a [`Command`] that `app` applies at the end of the frame. Nothing here knows of candle,
//! threads, files or the engine's internals.

pub mod adjust;
pub mod canvas;
pub mod library;
pub mod prompt;
pub mod queue;
pub mod results;

use std::path::PathBuf;

use crate::engine::JobId;
use crate::sketch::{Layer, Stroke};

pub use results::ResultId;

/// Something a view asks the app to do.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum Command {
    /// Queue a generation from the prompt panel's settings (and the sketch, if used).
    Generate,
    CancelJob(JobId),
    /// Cancel every queued and running job.
    CancelAll,
    /// Forget finished, failed and cancelled jobs in the queue view.
    ClearFinishedJobs,
    /// Run the jobs an earlier session left unfinished (their missing pictures only).
    ResumeUnfinished,
    /// Forget the jobs an earlier session left unfinished.
    DiscardUnfinished,
    /// Pick a new random seed now.
    RollSeed,
    /// Use the model in this folder; fills steps, guidance and size from it.
    SelectModel(PathBuf),
    RescanModels,
    /// Choose a folder of models (a dialog) and remember it.
    AddModelFolder,
    /// Forget a folder added with "Add model folder…".
    RemoveModelFolder(std::path::PathBuf),
    /// Decode the selected model's pictures with this VAE file (`None`: the model's own).
    SetModelVae(Option<PathBuf>),
    Sketch(SketchCommand),
    /// Show this result large in the central view.
    SelectImage(ResultId),
    /// Copy this result's settings into the prompt panel.
    ReuseSettings(ResultId),
    /// Ask where to save this result (PNG, JPEG or WebP by the name's extension), with its
    /// settings unless the export choices strip them.
    SaveImage(ResultId),
    ShowView(CentralView),
    DismissMessage,
    // ---- the library (all pictures, `ui::library`) ----
    /// Select a library picture (and show the library).
    LibrarySelect(i64, library::SelectMode),
    /// Thumbnails the grid is showing but does not have yet.
    NeedThumbnails(Vec<i64>),
    /// Rate the selected pictures 0-5.
    RateSelected(u8),
    ToggleFavourite,
    TrashSelected,
    RestoreSelected,
    UndoTrash,
    /// Copy a library picture's settings into the prompt panel.
    ReuseRecord(i64),
    /// Put a library picture on the clipboard.
    CopyImage(i64),
    /// Export the selected pictures with the Export window's choices, into its folder (asked
    /// for when it has none).
    ExportSelected,
    /// Ask for the Export window's folder.
    ChooseExportFolder,
    /// Ask for picture files to import.
    ImportPictures,
    /// Import the image on the system clipboard.
    PasteImage,
    /// Replace the selected picture's tags (comma separated).
    SetTags(String),
    /// Put a library picture behind the sketch as the init image (results link back to it).
    UseAsInit(i64),
    /// Put a library picture, through the control layer's preprocessor, on the control layer.
    UseAsControl(i64),
    // ---- the adjustments panel (`ui::adjust`) ----
    /// Open the Adjustments panel on this gallery picture.
    AdjustPicture(i64),
    Adjust(adjust::AdjustCommand),
}

/// Edits to the sketch canvas document.
#[derive(Clone, Debug, PartialEq)]
pub enum SketchCommand {
    AddStroke(Layer, Stroke),
    Undo,
    Redo,
    Clear,
    /// Take the brush colour from the canvas at this point (canvas pixels).
    PickColour([f32; 2]),
    /// Ask for an image file to put, preprocessed, on the chosen control layer (a new one
    /// when none is chosen).
    OpenControlPicture,
    /// Take the picture off control layer N (its strokes stay).
    RemoveControlPicture(usize),
    /// A new control layer, chosen.
    AddControlLayer,
    /// Remove control layer N with its strokes and picture (undoable).
    RemoveControlLayer(usize),
    /// New settings for control layer N (not undoable).
    SetControlSettings(usize, Box<crate::sketch::ControlSettings>),
    /// Ask for an image file to use as the background.
    OpenBackground,
    RemoveBackground,
}

/// What the central area shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CentralView {
    #[default]
    Sketch,
    Result,
    /// Every picture in the gallery.
    Library,
    /// The Adjustments panel for one gallery picture.
    Adjust,
}

/// The commands views emit during one frame, in order.
#[derive(Debug, Default)]
pub struct Commands(Vec<Command>);

impl Commands {
    pub fn push(&mut self, command: Command) {
        self.0.push(command);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn take(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.0)
    }
}

/// A label then a widget named by it, so screen readers (and tests) can find the widget.
pub(crate) fn labelled(
    ui: &mut egui::Ui,
    label: &str,
    add: impl FnOnce(&mut egui::Ui) -> egui::Response,
) -> egui::Response {
    let label = ui.label(label);
    add(ui).labelled_by(label.id)
}

/// Seconds as "0.4 s", "12 s" or "3 min 5 s".
pub fn format_secs(secs: f32) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_owned();
    }
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 60.0 {
        format!("{secs:.0} s")
    } else {
        let whole = secs.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// The first `max_chars` characters of `text` on one line, with an ellipsis if cut.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        return flat;
    }
    let mut cut: String = flat.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_seconds() {
        assert_eq!(format_secs(0.42), "0.4 s");
        assert_eq!(format_secs(12.4), "12 s");
        assert_eq!(format_secs(185.0), "3 min 5 s");
        assert_eq!(format_secs(f32::NAN), "?");
    }

    #[test]
    fn shortens_to_one_line() {
        assert_eq!(one_line("a  cat\non a mat", 40), "a cat on a mat");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
