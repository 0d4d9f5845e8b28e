//! Named one-shot background tasks (file dialogs, decoding, saving, model discovery), so the UI
//! thread never waits on a dialog or the disk. Each task runs on its own thread, hands back one
//! value through a one-slot channel and wakes the UI when done.

use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};

/// What polling a task found.
pub enum Poll<T> {
    Pending,
    Ready(T),
    /// The task's thread ended without a result (it panicked).
    Lost,
}

/// A running task producing one `T`.
pub struct Task<T> {
    name: &'static str,
    rx: Receiver<T>,
}

impl<T: Send + 'static> Task<T> {
    /// Runs `work` on a new thread named `atelier-<name>`; `ctx` is asked to repaint when done.
    pub fn spawn(
        name: &'static str,
        ctx: &egui::Context,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel(1);
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("atelier-{name}"))
            .spawn(move || {
                let value = work();
                // The app may have dropped the task (closed); nothing left to tell.
                let _ = tx.send(value);
                ctx.request_repaint();
            });
        if let Err(error) = spawned {
            // Without a thread the receiver sees a closed channel: reported as `Lost`.
            eprintln!("atelier: could not start the {name} task: {error}");
        }
        Self { name, rx }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn poll(&self) -> Poll<T> {
        match self.rx.try_recv() {
            Ok(value) => Poll::Ready(value),
            Err(TryRecvError::Empty) => Poll::Pending,
            Err(TryRecvError::Disconnected) => Poll::Lost,
        }
    }
}
