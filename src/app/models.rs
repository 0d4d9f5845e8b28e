//! The studio's view of the model library: the models found, the folders rejected and why,
//! and the discovery scan, which runs off the UI thread.

use std::path::{Path, PathBuf};

use super::tasks::{Poll, Task};
use crate::models::ModelInfo;

/// What one discovery scan found.
pub struct ScanResult {
    pub models: Vec<ModelInfo>,
    pub rejected: Vec<(PathBuf, String)>,
}

#[derive(Default)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
    pub rejected: Vec<(PathBuf, String)>,
    scan: Option<Task<ScanResult>>,
    /// Scans finished so far this session.
    pub scans_done: u32,
}

impl ModelList {
    /// Starts looking for models in `given` folders and the usual places, unless already looking.
    pub fn start_scan(&mut self, ctx: &egui::Context, given: Vec<PathBuf>, embedded: bool) {
        if self.scan.is_some() {
            return;
        }
        self.scan = Some(Task::spawn("model-scan", ctx, move || {
            let found = crate::models::discover::discover_with(&given, embedded);
            ScanResult {
                models: found.models,
                rejected: found
                    .rejected
                    .into_iter()
                    .map(|r| (r.dir, r.error.to_string()))
                    .collect(),
            }
        }));
    }

    pub fn scanning(&self) -> bool {
        self.scan.is_some()
    }

    /// Takes in a finished scan; true if one finished now.
    pub fn poll(&mut self) -> bool {
        let Some(task) = &mut self.scan else {
            return false;
        };
        match task.poll() {
            Poll::Pending => false,
            Poll::Ready(result) => {
                self.models = result.models;
                self.rejected = result.rejected;
                self.scan = None;
                self.scans_done += 1;
                true
            }
            Poll::Lost(why) => {
                self.rejected = vec![(
                    PathBuf::new(),
                    format!("the {} task stopped: {why}", task.name()),
                )];
                self.scan = None;
                self.scans_done += 1;
                true
            }
        }
    }

    pub fn find(&self, dir: &Path) -> Option<&ModelInfo> {
        self.models.iter().find(|m| m.dir == dir)
    }
}
