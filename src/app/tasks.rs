//! Named one-shot background tasks (file dialogs, decoding, exports, model discovery), so the
//! UI thread never waits on a dialog or the disk: a thin layer over `poll-promise`'s
//! [`Promise`] that adds what the studio needs besides a result slot. Each task runs on a
//! thread named `atelier-<name>`, wakes the UI (or `logic()`) when done, and can never take
//! the UI down: a task that panics, or a thread that cannot be started, comes back as
//! [`Poll::Lost`] with the reason instead of `Promise`'s own panic on a dropped sender.

use poll_promise::Promise;

/// What polling a task found.
pub enum Poll<T> {
    Pending,
    Ready(T),
    /// The task ended without a result: it panicked, or its thread could not be started.
    Lost(String),
}

/// A running task producing one `T`.
pub struct Task<T: Send + 'static> {
    name: &'static str,
    /// `None` once the result was taken.
    promise: Option<Promise<Result<T, String>>>,
}

impl<T: Send + 'static> Task<T> {
    /// Runs `work` on a new thread named `atelier-<name>`; `ctx` is asked to repaint when done.
    pub fn spawn(
        name: &'static str,
        ctx: &egui::Context,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Self {
        let (sender, promise) = Promise::new();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("atelier-{name}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(
                    |payload| {
                        payload
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "it panicked".to_owned())
                    },
                );
                sender.send(result);
                ctx.request_repaint();
            });
        let promise = match spawned {
            Ok(_) => promise,
            Err(e) => Promise::from_ready(Err(format!("its thread could not be started: {e}"))),
        };
        Self {
            name,
            promise: Some(promise),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The result once the task is done (taken: later polls say `Lost`).
    pub fn poll(&mut self) -> Poll<T> {
        let Some(promise) = self.promise.take() else {
            return Poll::Lost("the result was already taken".into());
        };
        match promise.try_take() {
            Ok(Ok(value)) => Poll::Ready(value),
            Ok(Err(why)) => Poll::Lost(why),
            Err(pending) => {
                self.promise = Some(pending);
                Poll::Pending
            }
        }
    }
}

/// Takes the finished tasks out of `tasks`: their values, or why they were lost ("the export
/// task stopped: …"), in order.
pub fn take_finished<T: Send + 'static>(tasks: &mut Vec<Task<T>>) -> Vec<Result<T, String>> {
    let mut finished = Vec::new();
    tasks.retain_mut(|task| match task.poll() {
        Poll::Pending => true,
        Poll::Ready(value) => {
            finished.push(Ok(value));
            false
        }
        Poll::Lost(why) => {
            finished.push(Err(format!("the {} task stopped: {why}", task.name())));
            false
        }
    });
    finished
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait<T: Send>(task: &mut Task<T>) -> Poll<T> {
        let start = std::time::Instant::now();
        loop {
            match task.poll() {
                Poll::Pending => {
                    assert!(start.elapsed().as_secs() < 10, "the task never finished");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                done => return done,
            }
        }
    }

    #[test]
    fn a_task_hands_back_its_value_once_and_a_panicking_one_is_lost_with_its_message() {
        let ctx = egui::Context::default();
        let mut ok = Task::spawn("test-ok", &ctx, || 41 + 1);
        assert!(matches!(wait(&mut ok), Poll::Ready(42)));
        assert!(matches!(ok.poll(), Poll::Lost(_)));
        let mut bad: Task<u32> = Task::spawn("test-panic", &ctx, || panic!("no disk today"));
        match wait(&mut bad) {
            Poll::Lost(why) => assert!(why.contains("no disk today"), "{why}"),
            _ => panic!("a panicking task must be lost"),
        }
    }
}
