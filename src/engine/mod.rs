//! The background engine: one worker thread, a job queue, progress events and cancellation.
//!
//! The UI (or the CLI) talks to it only through [`Engine`]: `submit` a plain-data
//! [`GenerationRequest`], read [`EngineEvent`]s tagged with the job id, `cancel` any job.
//! No pixel maths lives here; the work itself is [`crate::diffusion::Generator`].

pub mod events;
pub mod request;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use events::EngineEvent;
pub use request::{GeneratedImage, GenerationRequest, JobId, SamplerKind};

use crate::diffusion::{DiffusionError, Generator, GeneratorOptions, JobControl};

/// Called after every event is sent, e.g. `egui::Context::request_repaint`.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

struct QueuedJob {
    job: JobId,
    request: GenerationRequest,
    cancel: Arc<AtomicBool>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<QueueState>,
    wake_worker: Condvar,
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<QueuedJob>,
    running: Option<(JobId, Arc<AtomicBool>)>,
    shutdown: bool,
}

/// Sends events and wakes the UI.
#[derive(Clone)]
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
    sink: EventSink,
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
        let sink = EventSink { tx, waker };
        let shared = Arc::new(Shared::default());
        let worker = {
            let shared = Arc::clone(&shared);
            let sink = sink.clone();
            std::thread::Builder::new()
                .name("atelier-engine".into())
                .spawn(move || worker_loop(&shared, &sink, options))
                .expect("spawning the engine thread")
        };
        Self {
            shared,
            sink,
            events,
            next_job: AtomicU64::new(1),
            worker: Some(worker),
        }
    }

    /// Queues a job; returns its id at once.
    pub fn submit(&self, request: GenerationRequest) -> JobId {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        let mut queue = lock(&self.shared.queue);
        queue.pending.push_back(QueuedJob {
            job,
            request,
            cancel: Arc::new(AtomicBool::new(false)),
        });
        drop(queue);
        self.shared.wake_worker.notify_one();
        job
    }

    /// Cancels a queued job at once, or the running one within one denoising step.
    /// Unknown or finished jobs are ignored.
    pub fn cancel(&self, job: JobId) {
        let mut queue = lock(&self.shared.queue);
        if let Some(pos) = queue.pending.iter().position(|q| q.job == job) {
            queue.pending.remove(pos);
            drop(queue);
            self.sink.send(EngineEvent::Cancelled { job });
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

    /// Jobs waiting in the queue, in order.
    pub fn pending_jobs(&self) -> Vec<JobId> {
        lock(&self.shared.queue)
            .pending
            .iter()
            .map(|q| q.job)
            .collect()
    }

    pub fn try_recv(&self) -> Option<EngineEvent> {
        self.events.try_recv().ok()
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Option<EngineEvent> {
        self.events.recv_timeout(timeout).ok()
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
    let mut generator = Generator::new(options);
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
        run_job(&mut generator, next, sink);
        lock(&shared.queue).running = None;
    }
}

fn run_job(generator: &mut Generator, queued: QueuedJob, sink: &EventSink) {
    let QueuedJob {
        job,
        request,
        cancel,
    } = queued;
    let started = Instant::now();
    sink.send(EngineEvent::Started { job });
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
        on_image: &mut |image| sink.send(EngineEvent::Image { job, image }),
    };
    let result = generator.run(&request, &mut control);
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
