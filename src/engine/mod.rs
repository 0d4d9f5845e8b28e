//! The background engine: one worker thread, a job queue, progress events and cancellation.
//!
//! The UI (or the CLI) talks to it only through [`Engine`]: `submit` a plain-data
//! [`GenerationRequest`], read [`EngineEvent`]s tagged with the job id, `cancel` any job.
//! No pixel maths lives here; the work itself is [`crate::diffusion::Generator`].
//!
//! A job that panics becomes a `Failed` event carrying the panic message, and the worker goes
//! on with a fresh generator. Only the worker thread holds the event sender, so if the thread
//! itself ever dies the channel closes and callers get [`EngineStopped`] instead of waiting
//! forever.

pub mod events;

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use events::EngineEvent;

/// Identifies one job for its whole life; events carry it so stale ones can be dropped.
pub type JobId = u64;

use crate::diffusion::{DiffusionError, Generator, GeneratorOptions, JobControl};
use crate::generation::GenerationRequest;

/// Called after every event is sent, e.g. `egui::Context::request_repaint`.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

struct QueuedJob {
    job: JobId,
    request: GenerationRequest,
    /// Images already made (a job resumed after a crash): not made again.
    done: BTreeSet<u32>,
    cancel: Arc<AtomicBool>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<QueueState>,
    wake_worker: Condvar,
    /// Events the handle itself produces (a queued job cancelled at once), read before the
    /// worker's channel: the handle holds no sender of that channel.
    local_events: Mutex<VecDeque<EngineEvent>>,
    waker: Option<Waker>,
    /// Which device the worker runs on and why (or why the one asked for is unusable);
    /// `None` until the worker has chosen.
    device: Mutex<Option<String>>,
}

impl Shared {
    fn wake_ui(&self) {
        if let Some(waker) = &self.waker {
            waker();
        }
    }
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<QueuedJob>,
    running: Option<(JobId, Arc<AtomicBool>)>,
    shutdown: bool,
}

/// The worker thread is gone: no more events will come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the engine's worker thread stopped unexpectedly")]
pub struct EngineStopped;

/// Sends events and wakes the UI.
struct EventSink {
    tx: Sender<EngineEvent>,
    waker: Option<Waker>,
}

impl EventSink {
    fn send(&self, event: EngineEvent) {
        // A closed receiver means nobody listens any more; nothing to do.
        let _ = self.tx.send(event);
        if let Some(waker) = &self.waker {
            waker();
        }
    }
}

/// Handle to the worker thread. Dropping it cancels the running job and joins the thread.
pub struct Engine {
    shared: Arc<Shared>,
    events: Receiver<EngineEvent>,
    next_job: AtomicU64,
    worker: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the worker thread. `waker` runs after every event (pass the UI's repaint request).
    pub fn spawn(waker: Option<Waker>) -> Self {
        Self::spawn_with(waker, GeneratorOptions::default())
    }

    pub fn spawn_with(waker: Option<Waker>, options: GeneratorOptions) -> Self {
        let (tx, events) = mpsc::channel();
        let shared = Arc::new(Shared {
            waker: waker.clone(),
            ..Default::default()
        });
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("atelier-engine".into())
                .spawn(move || {
                    // Wakes the UI when the thread ends for any reason (a panic included), so
                    // it notices the closed channel.
                    struct WakeOnExit(Arc<Shared>);
                    impl Drop for WakeOnExit {
                        fn drop(&mut self) {
                            self.0.wake_ui();
                        }
                    }
                    let _wake = WakeOnExit(Arc::clone(&shared));
                    let sink = EventSink { tx, waker };
                    worker_loop(&shared, &sink, options);
                })
                .ok()
        };
        Self {
            shared,
            events,
            next_job: AtomicU64::new(1),
            worker,
        }
    }

    /// Queues a job; returns its id at once.
    pub fn submit(&self, request: GenerationRequest) -> JobId {
        let job = self.reserve();
        self.submit_reserved(job, request, BTreeSet::new());
        job
    }

    /// A job id for a job submitted later with [`Engine::submit_reserved`] (e.g. once it is
    /// recorded where it survives a crash).
    pub fn reserve(&self) -> JobId {
        self.next_job.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a job under a reserved id; the images in `done` (a resumed job) are skipped,
    /// the others come out as in an uninterrupted run.
    pub fn submit_reserved(&self, job: JobId, request: GenerationRequest, done: BTreeSet<u32>) {
        let mut queue = lock(&self.shared.queue);
        queue.pending.push_back(QueuedJob {
            job,
            request,
            done,
            cancel: Arc::new(AtomicBool::new(false)),
        });
        drop(queue);
        self.shared.wake_worker.notify_one();
    }

    /// Cancels a queued job at once, or the running one within one denoising step.
    /// Unknown or finished jobs are ignored.
    pub fn cancel(&self, job: JobId) {
        let mut queue = lock(&self.shared.queue);
        if let Some(pos) = queue.pending.iter().position(|q| q.job == job) {
            queue.pending.remove(pos);
            drop(queue);
            lock(&self.shared.local_events).push_back(EngineEvent::Cancelled { job });
            self.shared.wake_ui();
            return;
        }
        if let Some((running, flag)) = &queue.running {
            if *running == job {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Cancels everything: the queue and the running job.
    pub fn cancel_all(&self) {
        let ids: Vec<JobId> = {
            let queue = lock(&self.shared.queue);
            queue
                .pending
                .iter()
                .map(|q| q.job)
                .chain(queue.running.as_ref().map(|(j, _)| *j))
                .collect()
        };
        for job in ids {
            self.cancel(job);
        }
    }

    /// The device jobs run on and why ("CPU, 2 threads (this build has no GPU support)"), or
    /// why the device asked for cannot be used; `None` while the worker is still choosing.
    pub fn device_description(&self) -> Option<String> {
        lock(&self.shared.device).clone()
    }

    /// Jobs waiting in the queue, in order.
    pub fn pending_jobs(&self) -> Vec<JobId> {
        lock(&self.shared.queue)
            .pending
            .iter()
            .map(|q| q.job)
            .collect()
    }

    /// The next event if one is waiting; `Err` once the worker thread is gone and every
    /// event it sent has been read.
    pub fn try_recv(&self) -> Result<Option<EngineEvent>, EngineStopped> {
        if let Some(event) = lock(&self.shared.local_events).pop_front() {
            return Ok(Some(event));
        }
        match self.events.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(mpsc::TryRecvError::Empty) if self.worker.is_some() => Ok(None),
            Err(_) => Err(EngineStopped),
        }
    }

    /// Waits up to `timeout` for the next event; `Err` as for [`Engine::try_recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<EngineEvent>, EngineStopped> {
        if let Some(event) = lock(&self.shared.local_events).pop_front() {
            return Ok(Some(event));
        }
        if self.worker.is_none() {
            return Err(EngineStopped);
        }
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(Some(event)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(EngineStopped),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        {
            let mut queue = lock(&self.shared.queue);
            queue.shutdown = true;
            queue.pending.clear();
            if let Some((_, flag)) = &queue.running {
                flag.store(true, Ordering::SeqCst);
            }
        }
        self.shared.wake_worker.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain queue; keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker_loop(shared: &Shared, sink: &EventSink, options: GeneratorOptions) {
    let mut generator = Generator::new(options.clone());
    *lock(&shared.device) = Some(match generator.device() {
        Ok(choice) => choice.describe(),
        Err(e) => format!("{} cannot be used: {e}", options.device.name()),
    });
    shared.wake_ui();
    loop {
        let next = {
            let mut queue = lock(&shared.queue);
            loop {
                if queue.shutdown {
                    return;
                }
                if let Some(next) = queue.pending.pop_front() {
                    queue.running = Some((next.job, Arc::clone(&next.cancel)));
                    break next;
                }
                queue = shared
                    .wake_worker
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        let job = next.job;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(&mut generator, next, sink, &options)
        }));
        if let Err(payload) = outcome {
            // Whatever the job held may be half-updated: start again from a fresh generator.
            generator = Generator::new(options.clone());
            sink.send(EngineEvent::Failed {
                job,
                error: format!(
                    "internal error (the job was stopped, the engine goes on): {}",
                    panic_message(payload.as_ref())
                ),
            });
        }
        lock(&shared.queue).running = None;
    }
}

/// A panic's message, if it carried one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn run_job(
    generator: &mut Generator,
    queued: QueuedJob,
    sink: &EventSink,
    options: &GeneratorOptions,
) {
    let QueuedJob {
        job,
        request,
        done,
        cancel,
    } = queued;
    let started = Instant::now();
    sink.send(EngineEvent::Started { job });
    if options
        .panic_on_prompt
        .as_deref()
        .is_some_and(|p| p == request.prompt)
    {
        panic!(
            "test hook: a job with the prompt {:?} panics",
            request.prompt
        );
    }
    let mut control = JobControl {
        cancel: &cancel,
        on_loading: &mut |what: &str| {
            sink.send(EngineEvent::Loading {
                job,
                what: what.to_owned(),
            })
        },
        on_step: &mut |image_index, step, of, preview| {
            sink.send(EngineEvent::Progress {
                job,
                image_index,
                step,
                of,
                preview: preview.map(Arc::new),
                elapsed_secs: started.elapsed().as_secs_f32(),
            })
        },
        previews: options.previews,
        on_image: &mut |image| {
            sink.send(EngineEvent::Image {
                job,
                image: Box::new(image),
            })
        },
    };
    let result = generator.run_skipping(&request, &done, &mut control);
    if result.is_ok() {
        for text in generator.warnings() {
            sink.send(EngineEvent::Warning { job, text });
        }
        let stages = generator
            .stages()
            .iter()
            .map(|(name, secs)| (name.clone(), *secs as f32))
            .collect();
        sink.send(EngineEvent::Stages { job, stages });
    }
    let event = match result {
        Ok(()) => EngineEvent::Done {
            job,
            elapsed_secs: started.elapsed().as_secs_f32(),
        },
        Err(DiffusionError::Cancelled) => EngineEvent::Cancelled { job },
        Err(e) => EngineEvent::Failed {
            job,
            error: e.to_string(),
        },
    };
    sink.send(event);
}
