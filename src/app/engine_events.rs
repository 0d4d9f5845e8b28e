//! Taking in the engine's events: job states for the queue, previews, finished images for the
//! gallery. Events for jobs the studio does not know (any more) are dropped.

use super::StudioApp;
use crate::engine::EngineEvent;
use crate::ui::gallery::GalleryItem;
use crate::ui::queue::JobState;

impl StudioApp {
    pub(super) fn pull_engine_events(&mut self) {
        while let Some(event) = self.rt.engine.try_recv() {
            self.on_engine_event(event);
        }
    }

    fn on_engine_event(&mut self, event: EngineEvent) {
        let ctx = self.rt.ctx.clone();
        let Some(job) = self.rt.jobs.iter_mut().find(|j| j.id == event.job()) else {
            return;
        };
        let cancelling = matches!(job.state, JobState::Cancelling);
        match event {
            EngineEvent::Started { .. } => {
                if !cancelling {
                    job.state = JobState::Loading("model".to_owned());
                }
            }
            EngineEvent::Loading { what, .. } => {
                if !cancelling {
                    job.state = JobState::Loading(what);
                }
            }
            EngineEvent::Progress {
                image_index,
                step,
                of,
                preview,
                elapsed_secs,
                ..
            } => {
                job.record_progress(image_index, step, of, elapsed_secs);
                if let Some(preview) = preview {
                    let image = rgb_to_color_image(&preview);
                    match &mut job.preview {
                        Some(texture) => texture.set(image, egui::TextureOptions::LINEAR),
                        None => {
                            job.preview = Some(ctx.load_texture(
                                format!("preview-{}", job.id),
                                image,
                                egui::TextureOptions::LINEAR,
                            ));
                        }
                    }
                }
            }
            EngineEvent::Image { image, .. } => {
                job.images_done += 1;
                let job_id = job.id;
                // Saved (file durable, row committed) before it is shown.
                let record = self.record_result(&image);
                let id = self.rt.next_image_id;
                self.rt.next_image_id += 1;
                // Follow along: select the new image if the newest one was selected (or none).
                let following = self.rt.selected_image.is_none()
                    || self.rt.selected_image == self.rt.gallery.last().map(|i| i.id);
                let texture = ctx.load_texture(
                    format!("result-{id}"),
                    rgb_to_color_image(&image.image),
                    egui::TextureOptions::LINEAR,
                );
                self.rt.gallery.push(GalleryItem {
                    id,
                    job: job_id,
                    image: image.image,
                    request: image.request,
                    elapsed_secs: image.elapsed_secs,
                    texture,
                    record,
                });
                if following {
                    self.rt.selected_image = Some(id);
                    // Nothing sketched: the result is the more useful thing to show.
                    if self.rt.sketch.is_empty() && self.rt.stroke.0.is_none() {
                        self.rt.view = crate::ui::CentralView::Result;
                    }
                }
            }
            EngineEvent::Done { elapsed_secs, .. } => {
                job.state = JobState::Done { elapsed_secs };
                job.preview = None;
            }
            EngineEvent::Failed { error, .. } => {
                job.state = JobState::Failed(error);
                job.preview = None;
            }
            EngineEvent::Cancelled { .. } => {
                job.state = JobState::Cancelled;
                job.preview = None;
            }
        }
    }
}

fn rgb_to_color_image(image: &image::RgbImage) -> egui::ColorImage {
    egui::ColorImage::from_rgb(
        [image.width() as usize, image.height() as usize],
        image.as_raw(),
    )
}
