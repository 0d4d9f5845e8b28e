//! The prompt box's token counter: the selected model's tokenizer is read on a task, and the
//! prompts are counted in the studio's logic (not while drawing) when they change.

use std::path::{Path, PathBuf};

use super::tasks::{Poll, Task};
use crate::diffusion::TokenCounter;
use crate::ui::prompt::TokenCounts;

#[derive(Default)]
pub(super) struct PromptTokens {
    /// The model the counter (loaded or loading) belongs to.
    model: Option<PathBuf>,
    counter: Option<TokenCounter>,
    loading: Option<Task<Result<TokenCounter, String>>>,
    /// The texts last counted, and their counts.
    counted: Option<(String, String)>,
    counts: TokenCounts,
}

impl PromptTokens {
    /// Follows the selected model and recounts changed prompts.
    pub fn tick(
        &mut self,
        ctx: &egui::Context,
        model: Option<&Path>,
        prompt: &str,
        negative: &str,
    ) {
        if self.model.as_deref() != model {
            *self = Self {
                model: model.map(Path::to_path_buf),
                ..Self::default()
            };
            if let Some(dir) = model.map(Path::to_path_buf) {
                self.loading = Some(Task::spawn("tokenizer", ctx, move || {
                    TokenCounter::load(&dir).map_err(|e| e.to_string())
                }));
            }
        }
        if let Some(task) = &mut self.loading {
            match task.poll() {
                Poll::Pending => {}
                Poll::Ready(Ok(counter)) => {
                    self.counter = Some(counter);
                    self.loading = None;
                }
                // No counter for this model (its generation will say what is wrong).
                Poll::Ready(Err(_)) | Poll::Lost(_) => self.loading = None,
            }
        }
        let Some(counter) = &self.counter else {
            return;
        };
        let same = self
            .counted
            .as_ref()
            .is_some_and(|(p, n)| p == prompt && n == negative);
        if !same {
            self.counts = TokenCounts {
                prompt: counter.count(prompt).ok(),
                negative: counter.count(negative).ok(),
            };
            self.counted = Some((prompt.to_owned(), negative.to_owned()));
        }
    }

    pub fn counts(&self) -> TokenCounts {
        self.counts
    }
}
