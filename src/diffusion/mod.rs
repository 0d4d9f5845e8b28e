//! Stable Diffusion pipelines on candle: text encoding, the denoising loop with its samplers,
//! VAE decoding; text-to-image, image-to-image and inpainting.

pub mod blocks;
pub mod clip;
pub mod controlnet;
pub mod device;
pub mod embedding;
pub mod fused;
pub mod lora;
pub mod noise;
pub mod pipeline;
pub mod prompt;
pub mod sampler;
pub mod subject;
pub mod taesd;
mod text;
pub mod tiny;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::generation::{GeneratedImage, GenerationRequest};
use crate::models::ModelError;
pub use pipeline::{LoadedModel, ModelSlot};

/// The largest absolute difference between two tensors of one shape (the kernels' tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("tensors of one shape")
}
pub use text::TokenCounter;

/// What can go wrong while generating. `Cancelled` is not a failure.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{path}: {reason}")]
    Noise {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("inference failed: {0}")]
    Candle(String),
    #[error(transparent)]
    Device(#[from] device::DeviceError),
}

impl From<candle_core::Error> for DiffusionError {
    fn from(e: candle_core::Error) -> Self {
        DiffusionError::Candle(error_text(&e))
    }
}

/// A candle error's message without the backtrace candle appends when `RUST_BACKTRACE` is set.
pub fn error_text(e: &candle_core::Error) -> String {
    let text = e.to_string();
    match text.find("\n   0: ") {
        Some(at) => text[..at].trim_end().to_owned(),
        None => text.trim_end().to_owned(),
    }
}

/// Callbacks and the cancel flag a running job reports through.
pub struct JobControl<'a> {
    pub cancel: &'a AtomicBool,
    pub on_loading: &'a mut dyn FnMut(&str),
    /// `(image_index, step, of, preview)` after every denoising step.
    pub on_step: &'a mut dyn FnMut(u32, usize, usize, Option<image::RgbImage>),
    /// Whether anyone looks at the previews (a window does; a script does not): without, none
    /// is made.
    pub previews: bool,
    pub on_image: &'a mut dyn FnMut(GeneratedImage),
}

impl JobControl<'_> {
    pub fn check_cancelled(&self) -> Result<(), DiffusionError> {
        if self.cancel.load(Ordering::SeqCst) {
            Err(DiffusionError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// How the engine trades memory for speed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorOptions {
    /// Free the text encoders after each prompt encoding (they are memory-mapped again on the
    /// next job): less resident memory during denoising, a little more work per job.
    pub low_memory: bool,
    /// Batch images denoised in one pass (more is faster per image, needs more memory).
    pub images_per_pass: u32,
    /// Test hook: a job whose prompt is exactly this panics in the engine (tests of its
    /// recovery; the binary reads it from `ATELIER_TEST_PANIC_PROMPT`).
    pub panic_on_prompt: Option<String>,
    /// Which device to run on (see [`device::choose`]).
    pub device: device::DevicePreference,
    /// Make step previews (a window shows them; the command line does not).
    pub previews: bool,
    /// Guidance's two halves side by side on two cores, or as one batch; `None` chooses by
    /// size (see [`pipeline::LoadedModel::split_guidance`]).
    pub split_guidance: Option<bool>,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            low_memory: false,
            images_per_pass: 4,
            panic_on_prompt: None,
            device: device::DevicePreference::Auto,
            previews: true,
            split_guidance: None,
        }
    }
}

impl GeneratorOptions {
    /// The defaults, with the test hook taken from `ATELIER_TEST_PANIC_PROMPT` when set.
    pub fn from_env() -> Self {
        Self {
            panic_on_prompt: std::env::var("ATELIER_TEST_PANIC_PROMPT").ok(),
            // For benchmarks: `1` halves apart, `0` one joint batch (unset: by size).
            split_guidance: match std::env::var("ATELIER_SPLIT_GUIDANCE").as_deref() {
                Ok("1") => Some(true),
                Ok("0") => Some(false),
                _ => None,
            },
            ..Self::default()
        }
    }
}

/// Runs whole jobs; keeps the current model loaded between them.
pub struct Generator {
    slot: ModelSlot,
    /// The device chosen, or why the one asked for cannot be used (then every job fails
    /// with that reason).
    device: Result<device::DeviceChoice, device::DeviceError>,
    options: GeneratorOptions,
    /// Seconds each stage of the last job took (the model's loading, then each pass's).
    stages: Vec<(String, f64)>,
}

/// Where the request's subject pass draws: the square around its control images' lines at
/// the output size, if any ([`subject::subject_square`]).
fn subject_square(r: &GenerationRequest) -> Option<subject::Square> {
    let controls: Vec<image::RgbImage> = r
        .controlnets
        .iter()
        .filter_map(|c| {
            c.image
                .as_deref()
                .map(|i| pipeline::resize_rgb(i, r.width, r.height))
        })
        .collect();
    subject::subject_square(&controls.iter().collect::<Vec<_>>(), r.width, r.height)
}

/// [`subject`]'s pass for one picture of a job: the square `sq` generated alone at the
/// model's native size (the picture's own seed and settings, the control images and any init
/// image and mask cut to the square) and blended over `under` (the first picture, or the
/// model's plain ground).
fn subject_pass(
    model: &mut pipeline::LoadedModel,
    request: GenerationRequest,
    index: u32,
    mut under: image::RgbImage,
    secs_before: f32,
    sq: subject::Square,
    control: &mut JobControl<'_>,
) -> Result<GeneratedImage, DiffusionError> {
    let (w, h) = (request.width, request.height);
    let native = (model.configs.unet.sample_size * model.vae().downscale) as u32;
    let mut sub = request.clone();
    sub.width = native;
    sub.height = native;
    sub.batch = 1;
    sub.subject_pass = false;
    for c in &mut sub.controlnets {
        if let Some(img) = &c.image {
            c.image = Some(std::sync::Arc::new(subject::crop_to(
                &pipeline::resize_rgb(img, w, h),
                sq,
                native,
            )));
        }
    }
    let user = pipeline::UserImages::at_output_size(&request);
    sub.init_image = user
        .init
        .map(|i| std::sync::Arc::new(subject::crop_to(&i, sq, native)));
    sub.mask = user
        .mask
        .map(|m| std::sync::Arc::new(subject::crop_to(&m, sq, native)));
    let on_step = &mut *control.on_step;
    let mut inner = JobControl {
        cancel: control.cancel,
        on_loading: &mut *control.on_loading,
        on_step: &mut |_, step, of, _| on_step(index, step, of, None),
        previews: false,
        on_image: &mut |_| {},
    };
    let patch = model
        .generate(&sub, 0, 1, &mut inner)?
        .into_iter()
        .next()
        .ok_or_else(|| DiffusionError::InvalidRequest("the subject pass made no picture".into()))?;
    subject::blend_into(&mut under, &patch.image, sq);
    Ok(GeneratedImage {
        image: std::sync::Arc::new(under),
        request,
        index,
        elapsed_secs: secs_before + patch.elapsed_secs,
    })
}

impl Default for Generator {
    fn default() -> Self {
        Self::new(GeneratorOptions::default())
    }
}

impl Generator {
    pub fn new(options: GeneratorOptions) -> Self {
        Self {
            slot: ModelSlot::default(),
            device: device::choose(options.device),
            options,
            stages: Vec::new(),
        }
    }

    /// The device jobs run on, and why; or why the device asked for cannot be used.
    /// The options the next jobs run with (a benchmark compares settings in one process).
    pub fn options_mut(&mut self) -> &mut GeneratorOptions {
        &mut self.options
    }

    pub fn device(&self) -> Result<&device::DeviceChoice, &device::DeviceError> {
        self.device.as_ref()
    }

    /// Generates every image of the request's batch, reporting each as soon as it is decoded.
    pub fn run(
        &mut self,
        request: &GenerationRequest,
        control: &mut JobControl<'_>,
    ) -> Result<(), DiffusionError> {
        self.run_skipping(request, &std::collections::BTreeSet::new(), control)
    }

    /// Like [`Generator::run`] for a job resumed after a crash: the images in `done` are not
    /// reported again. Images are denoised in the same passes as a whole run (a pass holding
    /// only done images is skipped), so the others come out bit for bit as they would have.
    pub fn run_skipping(
        &mut self,
        request: &GenerationRequest,
        done: &std::collections::BTreeSet<u32>,
        control: &mut JobControl<'_>,
    ) -> Result<(), DiffusionError> {
        if request.batch == 0 {
            return Err(DiffusionError::InvalidRequest(
                "batch must be at least 1".into(),
            ));
        }
        self.stages.clear();
        let device = &self.device.as_ref().map_err(Clone::clone)?.device;
        let loading = std::time::Instant::now();
        let model = self.slot.get(
            &request.model_dir,
            &request.loras,
            request.vae.as_deref(),
            device,
            &mut *control.on_loading,
        )?;
        self.stages
            .push(("model".into(), loading.elapsed().as_secs_f64()));
        model.drop_text_encoders = self.options.low_memory;
        model.split_guidance = self.options.split_guidance;
        // Images go through the UNet together, a few at a time (one pass per step for all).
        let per_pass = self.options.images_per_pass.max(1);
        let mut first = 0;
        while first < request.batch {
            control.check_cancelled()?;
            let count = per_pass.min(request.batch - first);
            if (first..first + count).all(|i| done.contains(&i)) {
                first += count;
                continue;
            }
            // A model that draws on a plain ground needs no first picture under the subject.
            let square = request
                .subject_pass
                .then(|| subject_square(request))
                .flatten();
            let images = match (square, model.ground) {
                (Some(sq), Some(ground)) => (first..first + count)
                    .filter(|i| !done.contains(i))
                    .map(|index| {
                        let mut own = request.clone();
                        own.seed = request.seed + u64::from(index);
                        own.batch = 1;
                        let canvas = image::RgbImage::from_pixel(
                            request.width,
                            request.height,
                            image::Rgb(ground),
                        );
                        subject_pass(model, own, index, canvas, 0.0, sq, control)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                (Some(sq), None) => model
                    .generate(request, first, count, control)?
                    .into_iter()
                    .map(|image| {
                        subject_pass(
                            model,
                            image.request,
                            image.index,
                            (*image.image).clone(),
                            image.elapsed_secs,
                            sq,
                            control,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                (None, _) => model.generate(request, first, count, control)?,
            };
            for image in images {
                if !done.contains(&image.index) {
                    (control.on_image)(image);
                }
            }
            self.stages.extend(model.stages.iter().cloned());
            first += count;
        }
        Ok(())
    }

    /// Runs a whole job on this thread and hands back its pictures and how many denoising
    /// steps ran (tools, evaluation, tests; the engine reports as it goes instead).
    pub fn collect(
        &mut self,
        request: &GenerationRequest,
        cancel: &AtomicBool,
    ) -> Result<(Vec<GeneratedImage>, usize), DiffusionError> {
        let mut images = Vec::with_capacity(request.batch as usize);
        let mut steps = 0;
        let mut control = JobControl {
            cancel,
            on_loading: &mut |_| {},
            on_step: &mut |_, _, _, _| steps += 1,
            previews: false,
            on_image: &mut |image| images.push(image),
        };
        self.run(request, &mut control)?;
        Ok((images, steps))
    }

    /// Pictures through the VAE of the model in `model_dir` and back, on this generator's device
    /// (the model loaded as a job without LoRAs loads it, or kept from the last job):
    /// [`pipeline::LoadedModel::vae_round_trip`].
    pub fn vae_round_trip(
        &mut self,
        model_dir: &std::path::Path,
        pictures: &[&image::RgbImage],
    ) -> Result<Vec<image::RgbImage>, DiffusionError> {
        let device = &self.device.as_ref().map_err(Clone::clone)?.device;
        let model = self.slot.get(model_dir, &[], None, device, &mut |_| {})?;
        model.vae_round_trip(pictures)
    }

    /// Seconds each stage of the last job took: `model` (loading or finding it loaded), then
    /// per pass of images `ControlNets`, `text`, `latents`, `step N`..., `decode`.
    pub fn stages(&self) -> &[(String, f64)] {
        &self.stages
    }

    /// Warnings about the loaded model's LoRAs (modules that matched no weight...).
    pub fn warnings(&self) -> Vec<String> {
        self.slot.warnings()
    }

    /// Frees the loaded model (e.g. before loading a very large one elsewhere).
    pub fn unload(&mut self) {
        self.slot.unload();
    }
}
