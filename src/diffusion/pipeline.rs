//! One loaded model and the generation loop: prompt encoding with classifier-free guidance,
//! text-to-image, image-to-image and inpainting (9-channel inpainting UNets, and latent
//! blending for ordinary ones), per-step previews, cancellation between steps.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};

use super::clip::ClipTextEncoder;
use super::controlnet::ControlNet;
use super::noise::{load_noise_file, NoiseRng};
use super::sampler::{self, NoiseSchedule};
use super::taesd::{find_tiny_decoder, TinyAutoencoder};
use super::text::{Cond, TextEncoders};
use super::unet::{guidance_scale_embedding, AddedCond, ControlResiduals, Unet};
use super::vae::Vae;
use super::weights::var_builder;
use super::{DiffusionError, JobControl};
use crate::generation::{ControlMode, DecoderChoice, GeneratedImage, GenerationRequest};
use crate::models::config::ModelConfigs;
use crate::models::{Family, ModelError};

/// Where a component failed to build: a missing or misshapen tensor names the component.
fn built<T>(
    r: candle_core::Result<T>,
    configs: &ModelConfigs,
    component: &str,
) -> Result<T, ModelError> {
    r.map_err(|e| ModelError::BadWeights {
        path: configs.component_path(component),
        reason: super::error_text(&e),
    })
}

/// A model ready to generate. Weights are memory-mapped, so loading the same folder again
/// shares pages with the first load.
pub struct LoadedModel {
    pub configs: ModelConfigs,
    pub device: Device,
    pub dtype: DType,
    /// The plain ground its card says the model draws on ([`crate::models::ModelCard::ground`]).
    pub ground: Option<[u8; 3]>,
    text: TextEncoders,
    unet: Unet,
    vae: Vae,
    schedule: NoiseSchedule,
    /// Drop the text encoders after each encoding (they are reloaded lazily from the mmap).
    pub drop_text_encoders: bool,
    /// The UNet's and text encoders' weights as the blocks hold them, and the LoRAs written
    /// into them in place.
    loras: super::lora::LoraState,
    /// Where the var builders record the weights they hand out (taken in by `loras`).
    record: super::lora::Record,
    /// The textual-inversion embeddings of the current request.
    embeddings: Vec<super::embedding::Embedding>,
    /// The ControlNets of the current request, loaded (kept for the next job that uses them).
    controlnets: Vec<ControlNet>,
    /// The tiny autoencoder for previews and fast decode, when the request names one or one
    /// was found beside the model (kept for the next job that wants the same).
    tiny: Option<TinyAutoencoder>,
    /// What the last generation adjusted and the user should hear (a control image resized).
    pub notes: Vec<String>,
    /// Seconds each stage of the last generation took ("text", "step 3", "decode"...).
    pub stages: Vec<(String, f64)>,
    /// Run guidance's two halves side by side on two cores (`Some(true)`), as one joint
    /// batch (`Some(false)`), or choose by the latents' size (`None`, the default: side by
    /// side up to [`SPLIT_GUIDANCE_MAX_LATENT_CELLS`]).
    pub split_guidance: Option<bool>,
}

/// The largest latents (cells) whose guidance halves run side by side by default. Measured
/// on 2 cores (`atelier dev controlnet-timing --size N`, `ATELIER_SPLIT_GUIDANCE=0|1 atelier
/// generate`): Atelier Mini with its ControlNet takes 0.54-0.66x the joint batch's time at
/// 16x16 latents, 0.73x at 32x32, 0.79x at 64x64; SD 1.5 at 64x64 about the same either way.
pub const SPLIT_GUIDANCE_MAX_LATENT_CELLS: u64 = 64 * 64;

/// A component's weights, recorded (UNet and text encoders) so LoRAs can be written in.
fn weights_for(
    configs: &ModelConfigs,
    component: &str,
    dtype: DType,
    device: &Device,
    record: &super::lora::Record,
) -> Result<candle_nn::VarBuilder<'static>, ModelError> {
    let vb = var_builder(configs, component, dtype, device)?;
    Ok(super::lora::recording(
        vb,
        component,
        record.clone(),
        dtype,
        device,
    ))
}

impl LoadedModel {
    pub fn load(
        dir: &Path,
        device: &Device,
        on_loading: &mut dyn FnMut(&str),
    ) -> Result<Self, ModelError> {
        Self::load_with(dir, &[], None, device, on_loading)
    }

    /// [`LoadedModel::load`] with LoRAs merged in and, optionally, another VAE.
    pub fn load_with(
        dir: &Path,
        lora_specs: &[crate::generation::LoraSpec],
        vae: Option<&Path>,
        device: &Device,
        on_loading: &mut dyn FnMut(&str),
    ) -> Result<Self, ModelError> {
        let configs = ModelConfigs::read(dir)?;
        let record = super::lora::Record::default();
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::F16
        };
        let schedule = NoiseSchedule::from_config(&configs.scheduler).map_err(|reason| {
            ModelError::BadConfig {
                path: configs.component_path("scheduler"),
                reason,
            }
        })?;
        on_loading("tokenizer");
        let text = TextEncoders::load(&configs)?;
        on_loading("UNet");
        let unet = built(
            Unet::new(
                weights_for(&configs, "unet", dtype, device, &record)?,
                &configs.unet,
            ),
            &configs,
            "unet",
        )?;
        on_loading("VAE");
        let vae = built(
            Vae::new(
                match vae {
                    Some(path) => super::weights::vae_override(path, dtype, device)?,
                    None => var_builder(&configs, "vae", dtype, device)?,
                },
                &configs.vae,
            ),
            &configs,
            "vae",
        )?;
        let ground = crate::models::ModelCard::read(dir)
            .ok()
            .flatten()
            .and_then(|c| c.ground);
        let mut model = Self {
            configs,
            device: device.clone(),
            dtype,
            ground,
            text,
            unet,
            vae,
            schedule,
            drop_text_encoders: false,
            loras: Default::default(),
            record,
            embeddings: Vec::new(),
            controlnets: Vec::new(),
            tiny: None,
            notes: Vec::new(),
            stages: Vec::new(),
            split_guidance: None,
        };
        on_loading("text encoder");
        model.ensure_text_encoders()?;
        if !lora_specs.is_empty() {
            on_loading("LoRA");
        }
        model.set_loras(lora_specs)?;
        Ok(model)
    }

    /// Applies `specs` in place of the LoRAs applied now (only the layers either touches are
    /// rewritten; nothing is read from the checkpoint).
    pub fn set_loras(&mut self, specs: &[crate::generation::LoraSpec]) -> Result<(), ModelError> {
        self.loras.set(specs, &self.configs)
    }

    /// What applying the LoRAs did: modules that matched nothing, modules that could not apply.
    pub fn lora_report(&self) -> &super::lora::LoraReport {
        &self.loras.report
    }

    /// Pictures through the model's VAE and back (encoded, decoded), each at its own size (a
    /// multiple of the VAE's factor): what the model's latent space keeps of them, so the best
    /// any picture the model makes could look.
    pub fn vae_round_trip(
        &self,
        pictures: &[&image::RgbImage],
    ) -> Result<Vec<image::RgbImage>, DiffusionError> {
        pictures
            .iter()
            .map(|p| {
                let x = pictures_to_tensor(&[*p], PixelRange::Signed, &self.device, self.dtype)?;
                let z = self.vae.encode(&x)?;
                Ok(tensor_to_rgb(&self.vae.decode(&z)?)?)
            })
            .collect()
    }

    /// The UNet, frozen (training a ControlNet runs it).
    pub fn unet(&self) -> &Unet {
        &self.unet
    }

    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The text encoder's context `[1, T, D]` for a prompt (A1111 syntax, clip skip 1).
    pub fn encode_text(&mut self, prompt: &str) -> Result<Tensor, DiffusionError> {
        Ok(self.encode_prompt(prompt, 1)?.context)
    }

    pub fn dir(&self) -> &Path {
        &self.configs.dir
    }

    fn ensure_text_encoders(&mut self) -> Result<(), ModelError> {
        for side in &mut self.text.sides {
            if side.encoder.is_none() {
                let vb = weights_for(
                    &self.configs,
                    side.component,
                    self.dtype,
                    &self.device,
                    &self.record,
                )?;
                side.encoder = Some(built(
                    ClipTextEncoder::new(vb, &side.config),
                    &self.configs,
                    side.component,
                )?);
            }
        }
        // The first build of the UNet's and the encoders' weights, or rebuilt encoders: taken
        // in, with the applied LoRAs written into them.
        self.loras.adopt(&self.record)
    }

    /// The request's textual-inversion embeddings (kept while the same ones are asked for).
    fn load_embeddings(&mut self, paths: &[PathBuf]) -> Result<(), ModelError> {
        let same = self.embeddings.len() == paths.len()
            && self.embeddings.iter().zip(paths).all(|(e, p)| e.path == *p);
        if !same {
            self.embeddings = paths
                .iter()
                .map(|p| super::embedding::Embedding::load(p, &self.configs))
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    fn encode_prompt(&mut self, prompt: &str, clip_skip: u32) -> Result<Cond, DiffusionError> {
        self.ensure_text_encoders()?;
        // `<lora:..>` tags choose LoRAs (resolved into the request); CLIP never sees them.
        let (prompt, _) = crate::generation::extract_lora_tags(prompt);
        let cond = self
            .text
            .encode(&prompt, clip_skip, &self.device, &self.embeddings)?;
        if self.configs.family == Family::Sdxl && cond.pooled.is_none() {
            return Err(ModelError::BadWeights {
                path: self.configs.component_path("text_encoder_2"),
                reason: "SDXL needs text_projection in the second text encoder".into(),
            }
            .into());
        }
        Ok(cond)
    }

    /// Prompt tokens used and the room its chunks give (`83 / 150`).
    pub fn token_count(&self, prompt: &str) -> Result<(usize, usize), DiffusionError> {
        self.text
            .token_count(&crate::generation::extract_lora_tags(prompt).0)
    }

    /// Generates images `first..first + count` of `request` together, image `i` with seed
    /// `request.seed + i` (the same pixels as generating it alone). The stages: the user's
    /// images at the output size, the prompt conditioning, the starting latents, the
    /// denoising loop, the decode.
    pub fn generate(
        &mut self,
        request: &GenerationRequest,
        first: u32,
        count: u32,
        control: &mut JobControl<'_>,
    ) -> Result<Vec<GeneratedImage>, DiffusionError> {
        let started = Instant::now();
        validate(request, self.vae.downscale as u32)?;
        let seeds: Vec<u64> = (first..first + count.max(1))
            .map(|i| request.seed.wrapping_add(i as u64))
            .collect();
        let finish = |images: Vec<image::RgbImage>| {
            let elapsed_secs = started.elapsed().as_secs_f32() / images.len().max(1) as f32;
            images
                .into_iter()
                .zip(&seeds)
                .zip(first..)
                .map(|((image, &seed), index)| GeneratedImage {
                    image: std::sync::Arc::new(image),
                    request: GenerationRequest {
                        seed,
                        batch: 1,
                        ..request.clone()
                    },
                    index,
                    elapsed_secs,
                })
                .collect::<Vec<_>>()
        };
        let inputs = UserImages::at_output_size(request);
        let mut schedule = self.schedule.clone();
        match request.prediction {
            Some(crate::generation::PredictionType::Epsilon) => {
                schedule.prediction = sampler::Prediction::Epsilon
            }
            Some(crate::generation::PredictionType::V) => {
                schedule.prediction = sampler::Prediction::V
            }
            None => {}
        }
        let mut sampler = sampler::build(request.sampler, &schedule, request.steps);
        let start = first_step(request, inputs.init.is_some());
        if start >= request.steps {
            // Strength 0: nothing to denoise; the init image is the answer.
            if let Some(init) = inputs.init {
                return Ok(finish(vec![init; seeds.len()]));
            }
        }
        control.check_cancelled()?;
        self.notes.clear();
        self.stages.clear();
        let mut laps = Laps(Instant::now());
        self.load_controlnets(request)?;
        self.prepare_tiny(request)?;
        let controls = self.control_inputs(request, seeds.len())?;
        if !controls.is_empty() {
            self.stages.push(("ControlNets".into(), laps.lap()));
        }
        let conditioning = self.conditioning(request, seeds.len())?;
        self.stages.push(("text".into(), laps.lap()));
        let mut begin = self.starting_latents(request, &seeds, &inputs, sampler.as_ref(), start)?;
        self.stages.push(("latents".into(), laps.lap()));
        let mut step_secs = Vec::new();
        let latents = self.denoise(
            request,
            &conditioning,
            &controls,
            &mut begin,
            sampler.as_mut(),
            first,
            control,
            &mut step_secs,
        )?;
        laps.lap();
        let first_step = begin.step;
        self.stages.extend(
            step_secs
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("step {}", first_step + i + 1), s)),
        );
        control.check_cancelled()?;
        let pictures = self.decode(&latents, &inputs, request.decoder)?;
        self.stages.push((
            match request.decoder {
                DecoderChoice::Full => "decode".into(),
                DecoderChoice::Tiny => "decode (tiny)".into(),
            },
            laps.lap(),
        ));
        Ok(finish(pictures))
    }

    /// The request's tiny autoencoder (or one found beside the model) loaded, or none. One the
    /// request names must load and fit the model; one merely found that does not is left out
    /// with a note. Fast decode without any is refused with where to put one.
    fn prepare_tiny(&mut self, request: &GenerationRequest) -> Result<(), DiffusionError> {
        let named = request.tiny_decoder.as_deref();
        let wanted = named
            .map(Path::to_path_buf)
            .or_else(|| find_tiny_decoder(&self.configs.dir, self.configs.family));
        let loaded_from = |t: &TinyAutoencoder| {
            Some(t.path.as_path()) == wanted.as_deref()
                || wanted.as_deref().is_some_and(|w| t.path.starts_with(w))
        };
        if !self.tiny.as_ref().is_some_and(loaded_from) {
            self.tiny = None;
            if let Some(path) = &wanted {
                let loaded = TinyAutoencoder::load(path, self.dtype, &self.device)
                    .map_err(DiffusionError::Model)
                    .and_then(
                        |t| match t.mismatch(self.vae.latent_channels, self.vae.downscale) {
                            None => Ok(t),
                            Some(why) => Err(DiffusionError::InvalidRequest(format!(
                                "{}: {why}",
                                path.display()
                            ))),
                        },
                    );
                match (loaded, named) {
                    (Ok(t), _) => self.tiny = Some(t),
                    (Err(e), Some(_)) => return Err(e),
                    (Err(e), None) => self
                        .notes
                        .push(format!("the tiny decoder found is not used: {e}")),
                }
            }
        }
        if request.decoder == DecoderChoice::Tiny && self.tiny.is_none() {
            return Err(DiffusionError::InvalidRequest(
                "fast decode needs a tiny decoder (TAESD, or TAESDXL for SDXL): none was found \
                 beside the model, in ComfyUI's models/vae_approx or in A1111's \
                 models/VAE-taesd; name one with --tiny-decoder"
                    .into(),
            ));
        }
        Ok(())
    }

    /// How this job's previews are made: with the tiny decoder when there is one, with the
    /// model's own VAE when it is small enough at this size (Atelier Mini's), else the linear
    /// approximation of the latents' colours.
    fn preview_kind(&self, width: u32, height: u32) -> PreviewKind {
        let widest = self
            .configs
            .vae
            .block_out_channels
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        if self.tiny.is_some() {
            PreviewKind::Tiny
        } else if widest * width as usize * height as usize <= FULL_VAE_PREVIEW_BUDGET {
            PreviewKind::Vae
        } else {
            PreviewKind::Linear
        }
    }

    /// The preview of image 0 of `latents`.
    fn preview(&self, latents: &Tensor, kind: PreviewKind) -> candle_core::Result<image::RgbImage> {
        let first = latents.i(0..1)?;
        match (kind, &self.tiny) {
            (PreviewKind::Tiny, Some(tiny)) => tensor_to_rgb(&tiny.decode(&first)?),
            (PreviewKind::Vae, _) => tensor_to_rgb(&self.vae.decode(&first)?),
            _ => latent_preview(&first, self.configs.family),
        }
    }

    /// Loads the request's ControlNets not loaded yet and frees those it does not use.
    fn load_controlnets(&mut self, request: &GenerationRequest) -> Result<(), DiffusionError> {
        let wanted: Vec<&Path> = request
            .controlnets
            .iter()
            .map(|c| c.path.as_path())
            .collect();
        self.controlnets
            .retain(|c| wanted.contains(&c.path.as_path()));
        for path in wanted {
            if self.controlnets.iter().any(|c| c.path == path) {
                continue;
            }
            let net = ControlNet::load(path, &self.configs.unet, self.dtype, &self.device)?;
            if net.image_factor() != self.vae.downscale {
                return Err(DiffusionError::Model(ModelError::BadWeights {
                    path: path.to_path_buf(),
                    reason: format!(
                        "its condition embedding scales the image down {}x; this model's VAE {}x",
                        net.image_factor(),
                        self.vae.downscale
                    ),
                }));
            }
            self.controlnets.push(net);
        }
        Ok(())
    }

    /// Each ControlNet's control image at the output size as `[b, 3, H, W]` in [0, 1], with
    /// its settings. A control image of another size is resized (Lanczos, as diffusers) and
    /// a note says so.
    fn control_inputs(
        &mut self,
        request: &GenerationRequest,
        b: usize,
    ) -> Result<Vec<ActiveControl>, DiffusionError> {
        let mut out = Vec::with_capacity(request.controlnets.len());
        for spec in &request.controlnets {
            let net = self
                .controlnets
                .iter()
                .position(|c| c.path == spec.path)
                .ok_or_else(|| {
                    DiffusionError::InvalidRequest(format!(
                        "ControlNet {} is not loaded",
                        spec.path.display()
                    ))
                })?;
            let image = spec.image.as_ref().ok_or_else(|| {
                DiffusionError::InvalidRequest(format!(
                    "ControlNet {}: no control image",
                    spec.path.display()
                ))
            })?;
            let (w, h) = image.dimensions();
            if (w, h) != (request.width, request.height) {
                self.notes.push(format!(
                    "the control image for {} is {w}x{h}; it was resized to {}x{}",
                    spec.path.display(),
                    request.width,
                    request.height
                ));
            }
            let image = resize_rgb(image, request.width, request.height);
            let tensor = pictures_to_tensor(&[&image], PixelRange::Unit, &self.device, self.dtype)?;
            // The conditioning embedding sees only the image: once per job, not every step.
            let hint = self.controlnets[net]
                .embed(&tensor, self.dtype)?
                .repeat((b, 1, 1, 1))?;
            let ramp = spec.mode == ControlMode::Control || self.controlnets[net].global_pool();
            out.push(ActiveControl {
                net,
                hint,
                scale: f64::from(spec.scale),
                start: spec.start,
                end: spec.end,
                ramp,
            });
        }
        Ok(out)
    }

    /// The prompt's conditioning for every row the UNet sees: `[uncond x b, cond x b]` with
    /// guidance, `[cond x b]` without; SDXL's pooled embedding and size/crop `time_ids`. A
    /// prompt and negative prompt of different lengths (in chunks) run as two UNet passes,
    /// as in A1111, rather than padding one of them.
    fn conditioning(
        &mut self,
        request: &GenerationRequest,
        b: usize,
    ) -> Result<Conditioning, DiffusionError> {
        // An LCM-distilled UNet takes the guidance scale as an input (its embedding) and runs
        // once per step: no classifier-free guidance, so no negative prompt, as in diffusers.
        let embedded = self.unet.guidance_embedding_dim();
        let cfg = request.guidance > 1.0 && embedded.is_none();
        self.load_embeddings(&request.embeddings)?;
        let cond = self.encode_prompt(&request.prompt, request.clip_skip)?;
        let uncond = if !cfg {
            None
        } else if self.configs.family == Family::Sdxl && request.negative_prompt.trim().is_empty() {
            // SDXL's force_zeros_for_empty_prompt.
            Some(Cond {
                context: cond.context.zeros_like()?,
                pooled: match &cond.pooled {
                    Some(p) => Some(p.zeros_like()?),
                    None => None,
                },
            })
        } else {
            Some(self.encode_prompt(&request.negative_prompt, request.clip_skip)?)
        };
        if self.drop_text_encoders {
            self.text.drop_encoders();
        }
        let sides: Vec<&Cond> = uncond.iter().chain([&cond]).collect();
        let same_length = sides
            .iter()
            .all(|c| c.context.dims().get(1) == cond.context.dims().get(1));
        let parallel_passes = cfg
            && rayon::current_num_threads() > 1
            && self.split_guidance.unwrap_or_else(|| {
                let down = self.vae.downscale.max(1) as u64;
                u64::from(request.width / down as u32) * u64::from(request.height / down as u32)
                    <= SPLIT_GUIDANCE_MAX_LATENT_CELLS
            });
        let groups: Vec<Vec<&Cond>> = if same_length && !parallel_passes {
            vec![sides]
        } else {
            sides.into_iter().map(|side| vec![side]).collect()
        };
        let time_ids = match self.configs.family {
            Family::Sdxl => {
                let (h, w) = (request.height as f32, request.width as f32);
                Some(Tensor::new(&[h, w, 0.0, 0.0, h, w], &self.device)?.unsqueeze(0)?)
            }
            _ => None,
        };
        let mut passes = Vec::with_capacity(groups.len());
        for group in groups {
            let contexts = group
                .iter()
                .map(|c| c.context.repeat((b, 1, 1)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let pooled = group
                .iter()
                .map(|c| c.pooled.as_ref().map(|p| p.repeat((b, 1))).transpose())
                .collect::<candle_core::Result<Option<Vec<_>>>>()?;
            passes.push(Pass {
                context: Tensor::cat(&contexts, 0)?,
                pooled: pooled.map(|p| Tensor::cat(&p, 0)).transpose()?,
                time_ids: time_ids
                    .as_ref()
                    .map(|t| t.repeat((group.len() * b, 1)))
                    .transpose()?,
            });
        }
        let guidance_embedding = match embedded {
            Some(dim) => Some(
                guidance_scale_embedding(request.guidance, b, dim, &self.device)?
                    .to_dtype(self.dtype)?,
            ),
            None => None,
        };
        Ok(Conditioning {
            guidance: cfg.then_some(request.guidance),
            guidance_embedding,
            batch: b,
            parallel_passes,
            passes,
        })
    }

    /// The noise, the init image's latents, the mask in latent space, the inpainting UNet's
    /// extra input, and the latents the loop starts from.
    fn starting_latents(
        &self,
        request: &GenerationRequest,
        seeds: &[u64],
        inputs: &UserImages,
        sampler: &(dyn sampler::Sampler + Send),
        start: usize,
    ) -> Result<Start, DiffusionError> {
        let b = seeds.len();
        let down = self.vae.downscale;
        let (lh, lw) = (
            request.height as usize / down,
            request.width as usize / down,
        );
        let lc = self.vae.latent_channels;
        let mut rng = NoiseRng::batch(seeds);
        let noise = match &request.noise_file {
            Some(path) => load_noise_file(path, lc, lh, lw, &self.device)?.repeat((b, 1, 1, 1))?,
            None => rng.randn((b, lc, lh, lw), DType::F32, &self.device)?,
        };
        let noise = noise.to_dtype(self.dtype)?;
        let init_latents = match &inputs.init {
            Some(img) => Some(
                self.vae
                    .encode(&rgb_to_tensor(img, &self.device, self.dtype)?)?
                    .repeat((b, 1, 1, 1))?,
            ),
            None => None,
        };
        let latent_mask = match &inputs.mask {
            Some(m) => Some(mask_to_latent(m, lw, lh, &self.device, self.dtype)?),
            None => None,
        };
        let inpaint_unet = self.configs.unet.in_channels == 9;
        // The 9-channel UNet's extra input: the mask and the latents of the image with the
        // masked area blanked.
        let inpaint_extra = match (inpaint_unet, &inputs.init, &inputs.mask, &latent_mask) {
            (true, Some(img), Some(m), Some(lm)) => {
                let masked = rgb_to_tensor(img, &self.device, self.dtype)?;
                let keep = mask_to_tensor(m, &self.device, self.dtype)?
                    .lt(0.5)?
                    .to_dtype(self.dtype)?;
                let masked = masked.broadcast_mul(&keep)?;
                let masked_latents = self.vae.encode(&masked)?;
                Some(Tensor::cat(&[lm, &masked_latents], 1)?.repeat((b, 1, 1, 1))?)
            }
            (true, _, _, _) => {
                return Err(DiffusionError::InvalidRequest(
                    "this is an inpainting model: give it an init image and a mask".into(),
                ))
            }
            _ => None,
        };
        // Image-to-image starts at the noise level of the first evaluation it runs.
        let first_evaluation = sampler.evaluations(start).start;
        let latents = match (&init_latents, inpaint_unet) {
            (Some(init), false) => sampler.add_noise(init, &noise, first_evaluation)?,
            (Some(init), true) if start > 0 => sampler.add_noise(init, &noise, first_evaluation)?,
            _ => noise.affine(sampler.init_noise_sigma(), 0.0)?,
        };
        // Latent blending keeps the unmasked area on the init image's trajectory (ordinary
        // UNets only; an inpainting UNet sees the mask itself).
        let blend = match (init_latents, latent_mask, inpaint_unet) {
            (Some(init), Some(mask), false) => Some((init, mask)),
            _ => None,
        };
        Ok(Start {
            step: start,
            latents,
            noise,
            rng,
            blend,
            inpaint_extra,
        })
    }

    /// The denoising loop from the start's step: for each of the step's evaluations (two for
    /// Heun) the UNet with guidance, the sampler's update and latent blending for inpainting
    /// (after every evaluation, as diffusers blends); then a preview every few steps (reported
    /// for image `first`). Progress counts the user's steps; cancel is checked before each
    /// evaluation.
    #[allow(clippy::too_many_arguments)]
    fn denoise(
        &self,
        request: &GenerationRequest,
        cond: &Conditioning,
        controls: &[ActiveControl],
        begin: &mut Start,
        sampler: &mut (dyn sampler::Sampler + Send),
        first: u32,
        control: &mut JobControl<'_>,
        step_secs: &mut Vec<f64>,
    ) -> Result<Tensor, DiffusionError> {
        let (n, start) = (request.steps, begin.step);
        let b = cond.batch;
        let total = n - start;
        let evaluations = sampler.timesteps().len();
        // ControlNet start/end count the evaluations this run makes, as diffusers counts its
        // (image-to-image: shortened) timestep list.
        let first_evaluation = sampler.evaluations(start).start;
        let run_evaluations = (evaluations - first_evaluation).max(1) as f64;
        let mut latents = begin.latents.clone();
        let kind = self.preview_kind(request.width, request.height);
        let mut pace = PreviewPace::new(kind);
        for step in start..n {
            let step_started = Instant::now();
            for i in sampler.evaluations(step) {
                control.check_cancelled()?;
                let t = sampler.timesteps()[i];
                let x_cn = sampler.scale_model_input(&latents, i)?;
                let x_in = match &begin.inpaint_extra {
                    Some(extra) => Tensor::cat(&[&x_cn, extra], 1)?,
                    None => x_cn.clone(),
                };
                let k = (i - first_evaluation) as f64;
                let active: Vec<&ActiveControl> = controls
                    .iter()
                    .filter(|c| {
                        c.scale != 0.0
                            && k / run_evaluations >= c.start
                            && (k + 1.0) / run_evaluations <= c.end
                    })
                    .collect();
                let out = self.unet_passes(&x_in, &x_cn, t, cond, &active)?;
                let out = match cond.guidance {
                    Some(scale) => {
                        let (u, c) = (out.i(0..b)?, out.i(b..2 * b)?);
                        (&u + ((c - &u)? * scale as f64)?)?
                    }
                    None => out,
                };
                latents = sampler.step(&out, i, &latents, &mut begin.rng)?;
                if let Some((init, lm)) = &begin.blend {
                    let known = if i + 1 < evaluations {
                        sampler.add_noise(init, &begin.noise, i + 1)?
                    } else {
                        init.clone()
                    };
                    latents = (latents.broadcast_mul(lm)? + known.broadcast_mul(&(1.0 - lm)?)?)?;
                }
            }
            let secs = step_started.elapsed().as_secs_f64();
            step_secs.push(secs);
            let done_steps = step - start + 1;
            let preview = if control.previews && pace.due(done_steps, total) {
                let started = Instant::now();
                let image = self.preview(&latents, kind)?;
                pace.made(started.elapsed().as_secs_f64(), secs, done_steps);
                Some(image)
            } else {
                None
            };
            (control.on_step)(first, done_steps, total, preview);
        }
        Ok(latents)
    }

    /// The UNet's prediction for every row of the conditioning, one forward per pass, with
    /// the `active` ControlNets' residuals (computed from `x_cn`, the latents without an
    /// inpainting UNet's extra channels).
    fn unet_passes(
        &self,
        x_in: &Tensor,
        x_cn: &Tensor,
        t: f64,
        cond: &Conditioning,
        active: &[&ActiveControl],
    ) -> Result<Tensor, DiffusionError> {
        let pass = |p: usize| self.unet_pass(p, x_in, x_cn, t, cond, active);
        let mut outs = if cond.parallel_passes && cond.passes.len() == 2 {
            // Two passes side by side, one per core: at small latents the per-op split across
            // cores buys little (see `Conditioning::parallel_passes`).
            let (a, b) = rayon::join(|| pass(0), || pass(1));
            vec![a?, b?]
        } else {
            (0..cond.passes.len())
                .map(pass)
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(match outs.len() {
            1 => outs.remove(0),
            _ => Tensor::cat(&outs, 0)?,
        })
    }

    /// The UNet's prediction for the rows of pass `p`, with the `active` ControlNets'
    /// residuals.
    fn unet_pass(
        &self,
        p: usize,
        x_in: &Tensor,
        x_cn: &Tensor,
        t: f64,
        cond: &Conditioning,
        active: &[&ActiveControl],
    ) -> Result<Tensor, DiffusionError> {
        let pass = &cond.passes[p];
        let b = cond.batch.max(1);
        let copies = pass.context.dim(0)? / b;
        let repeat = |x: &Tensor| -> candle_core::Result<Tensor> {
            match copies {
                1 => Ok(x.clone()),
                k => Tensor::cat(&vec![x; k], 0),
            }
        };
        let x = repeat(x_in)?;
        let added = match (&pass.pooled, &pass.time_ids) {
            (Some(p), Some(ids)) => Some(AddedCond {
                text_embeds: p,
                time_ids: ids,
            }),
            _ => None,
        };
        // Which rows carry the prompt (the rest the negative prompt): with guidance, the
        // second half of a joint pass or the second of two passes.
        let uncond_rows = match (cond.guidance.is_some(), cond.passes.len(), copies) {
            (false, _, _) => 0,
            (true, 1, 2) => b,
            (true, _, _) if p == 0 => copies * b,
            _ => 0,
        };
        let mut residuals: Option<ControlResiduals> = None;
        for c in active {
            let net = &self.controlnets[c.net];
            let r = if !c.ramp || uncond_rows == 0 {
                net.forward(
                    &repeat(x_cn)?,
                    t,
                    &pass.context,
                    added.as_ref(),
                    &repeat(&c.hint)?,
                    c.scale,
                    c.ramp,
                )?
            } else if uncond_rows == copies * b {
                // "ControlNet is more important": the negative prompt's rows get none.
                continue;
            } else {
                let rows = copies * b - uncond_rows;
                let narrow = |t: &Tensor| t.narrow(0, uncond_rows, rows);
                let (pooled, ids) = (
                    pass.pooled.as_ref().map(narrow).transpose()?,
                    pass.time_ids.as_ref().map(narrow).transpose()?,
                );
                let added = match (&pooled, &ids) {
                    (Some(p), Some(ids)) => Some(AddedCond {
                        text_embeds: p,
                        time_ids: ids,
                    }),
                    _ => None,
                };
                let r = net.forward(
                    x_cn,
                    t,
                    &narrow(&pass.context)?,
                    added.as_ref(),
                    &c.hint,
                    c.scale,
                    true,
                )?;
                let pad = |t: Tensor| -> candle_core::Result<Tensor> {
                    let mut zeros_dims = t.dims().to_vec();
                    zeros_dims[0] = uncond_rows;
                    let zeros = Tensor::zeros(zeros_dims, t.dtype(), t.device())?;
                    Tensor::cat(&[&zeros, &t], 0)
                };
                ControlResiduals {
                    down: r
                        .down
                        .into_iter()
                        .map(pad)
                        .collect::<candle_core::Result<_>>()?,
                    mid: pad(r.mid)?,
                }
            };
            residuals = Some(match residuals {
                Some(sum) => sum.add(&r)?,
                None => r,
            });
        }
        Ok(self.unet.forward_controlled(
            &x,
            t,
            &pass.context,
            added,
            cond.guidance_embedding.as_ref(),
            residuals.as_ref(),
        )?)
    }

    /// The latents as pictures (the unmasked area of an inpainting exactly the init image's).
    fn decode(
        &self,
        latents: &Tensor,
        inputs: &UserImages,
        decoder: DecoderChoice,
    ) -> Result<Vec<image::RgbImage>, DiffusionError> {
        ensure_finite(
            latents,
            &self.configs.component_path("unet"),
            "the denoised latents",
        )?;
        let pixels = match (decoder, &self.tiny) {
            (DecoderChoice::Tiny, Some(tiny)) => tiny.decode(latents)?,
            _ => self.vae.decode(latents)?,
        };
        ensure_finite(
            &pixels,
            &self.configs.component_path("vae"),
            "the decoded picture",
        )?;
        let b = pixels.dim(0)?;
        let mut images = Vec::with_capacity(b);
        for i in 0..b {
            let mut image = tensor_to_rgb(&pixels.i(i..i + 1)?)?;
            if let (Some(init), Some(m)) = (&inputs.init, &inputs.mask) {
                overlay_unmasked(&mut image, init, m);
            }
            images.push(image);
        }
        Ok(images)
    }
}

/// The user's init image and mask at the output size.
pub(crate) struct UserImages {
    pub(crate) init: Option<image::RgbImage>,
    pub(crate) mask: Option<image::GrayImage>,
}

impl UserImages {
    pub(crate) fn at_output_size(request: &GenerationRequest) -> Self {
        Self {
            init: request
                .init_image
                .as_ref()
                .map(|img| resize_rgb(img, request.width, request.height)),
            mask: request.mask.as_ref().map(|m| {
                image::imageops::resize(
                    m.as_ref(),
                    request.width,
                    request.height,
                    image::imageops::FilterType::Triangle,
                )
            }),
        }
    }
}

/// The step the loop starts at: 0, or later for image-to-image by the strength.
fn first_step(request: &GenerationRequest, has_init: bool) -> usize {
    let n = request.steps;
    if !has_init {
        return 0;
    }
    let strength = request.strength_0_to_1.clamp(0.0, 1.0) as f64;
    n - ((n as f64 * strength) as usize).min(n)
}

/// Time since the last lap.
struct Laps(Instant);

impl Laps {
    fn lap(&mut self) -> f64 {
        let secs = self.0.elapsed().as_secs_f64();
        self.0 = Instant::now();
        secs
    }
}

/// One ControlNet of a job, ready for the loop.
struct ActiveControl {
    /// Its index in the model's loaded ControlNets.
    net: usize,
    /// The control image through the ControlNet's conditioning embedding, `b` rows.
    hint: Tensor,
    scale: f64,
    start: f64,
    end: f64,
    /// Control mode: only the prompt's rows, residuals ramped.
    ramp: bool,
}

/// What the UNet is conditioned on, for every row of the batch.
struct Conditioning {
    /// The guidance scale, when classifier-free guidance runs (rows doubled).
    guidance: Option<f32>,
    /// An LCM-distilled UNet's guidance-scale embedding, one row per picture (there is no
    /// classifier-free guidance then).
    guidance_embedding: Option<Tensor>,
    /// Pictures in the batch.
    batch: usize,
    /// Run the two passes (negative prompt, prompt) at once, one per core, each op on its
    /// own core, instead of one joint pass with each op split across the cores: at small
    /// latents (the Mini's, live mode's) an op is too small to split well.
    parallel_passes: bool,
    /// The UNet's forward passes per step, their rows in order `[uncond x b, cond x b]`.
    passes: Vec<Pass>,
}

/// The rows of one UNet forward: their context, pooled embeddings and SDXL `time_ids`.
struct Pass {
    context: Tensor,
    pooled: Option<Tensor>,
    time_ids: Option<Tensor>,
}

/// Where the loop starts: its latents, the noise they were made from (latent blending adds it
/// again), the ancestral samplers' noise stream, the init latents and latent mask to blend
/// with, and the inpainting UNet's extra input.
struct Start {
    /// The first step to run.
    step: usize,
    latents: Tensor,
    noise: Tensor,
    rng: NoiseRng,
    blend: Option<(Tensor, Tensor)>,
    inpaint_extra: Option<Tensor>,
}

/// A NaN or infinity in `t` (weights with NaN/Inf in them, an fp16 overflow) is an error
/// naming the component, not a black picture saved as if it were fine.
fn ensure_finite(t: &Tensor, component: &Path, what: &str) -> Result<(), DiffusionError> {
    // The sum of squares is finite only if every value is (and no square overflows, which
    // for these magnitudes means the values are broken anyway).
    let total = t
        .to_dtype(DType::F32)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f32>()?;
    if total.is_finite() {
        Ok(())
    } else {
        Err(DiffusionError::Model(ModelError::BadWeights {
            path: component.to_path_buf(),
            reason: format!(
                "{what} are not finite numbers (NaN or infinity): the weights are broken or overflow in this precision"
            ),
        }))
    }
}

fn preview_every(total: usize) -> usize {
    (total / 10).max(1)
}

/// Largest widest-VAE-channel x output-pixel product whose full VAE decode is cheap enough for
/// a preview at every step (Atelier Mini: 64 channels, 64x64 up to 128x128 pictures).
const FULL_VAE_PREVIEW_BUDGET: usize = 1 << 20;

/// Share of the denoising time that decoded previews may take: they come every step while
/// they cost less than this, and as often as it allows when they cost more (a tiny decoder on
/// a CPU at 1024 px).
const PREVIEW_TIME_SHARE: f64 = 0.15;

/// How the previews of a job are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreviewKind {
    /// The tiny autoencoder: the whole picture, cheaply.
    Tiny,
    /// The model's own VAE (small models at small sizes).
    Vae,
    /// The linear map of the latents' colours, at latent resolution.
    Linear,
}

/// When the next preview is due: every few steps for the linear map; for a decoder, every step
/// while it costs under [`PREVIEW_TIME_SHARE`] of a step, spaced out as it costs more.
struct PreviewPace {
    kind: PreviewKind,
    /// Steps between decoded previews (measured on the last one).
    gap: usize,
    last: usize,
}

impl PreviewPace {
    fn new(kind: PreviewKind) -> Self {
        Self {
            kind,
            gap: 1,
            last: 0,
        }
    }

    fn due(&self, done: usize, total: usize) -> bool {
        done < total
            && match self.kind {
                PreviewKind::Linear => done.is_multiple_of(preview_every(total)),
                _ => done >= self.last + self.gap,
            }
    }

    fn made(&mut self, preview_secs: f64, step_secs: f64, done: usize) {
        self.last = done;
        let budget = (PREVIEW_TIME_SHARE * step_secs).max(1e-6);
        self.gap = ((preview_secs / budget).ceil() as usize).clamp(1, 1000);
    }
}

/// The request's own limits ([`GenerationRequest::validate`]) plus this model's size multiple.
fn validate(r: &GenerationRequest, multiple: u32) -> Result<(), DiffusionError> {
    r.validate()
        .map_err(|e| DiffusionError::InvalidRequest(e.0))?;
    if !r.width.is_multiple_of(multiple) || !r.height.is_multiple_of(multiple) {
        return Err(DiffusionError::InvalidRequest(format!(
            "size {}x{}: this model needs multiples of {multiple} px",
            r.width, r.height
        )));
    }
    Ok(())
}

/// `img` at `w` x `h` (Lanczos3), as control and init images are fitted to the output size.
pub(crate) fn resize_rgb(img: &image::RgbImage, w: u32, h: u32) -> image::RgbImage {
    if img.dimensions() == (w, h) {
        img.clone()
    } else {
        image::imageops::resize(img, w, h, image::imageops::FilterType::Lanczos3)
    }
}

/// How RGB values 0..255 become tensor values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelRange {
    /// [-1, 1]: pictures as the VAE encodes them.
    Signed,
    /// [0, 1]: control images as a ControlNet takes them.
    Unit,
}

/// RGB pictures of one size -> `[B, 3, H, W]` in `range`.
pub fn pictures_to_tensor(
    images: &[&image::RgbImage],
    range: PixelRange,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let Some(first) = images.first() else {
        candle_core::bail!("no pictures to make a tensor of");
    };
    let (w, h) = first.dimensions();
    if images.iter().any(|i| i.dimensions() != (w, h)) {
        candle_core::bail!("pictures of different sizes in one batch");
    }
    let value = |v: u8| match range {
        PixelRange::Signed => v as f32 / 127.5 - 1.0,
        PixelRange::Unit => v as f32 / 255.0,
    };
    let data: Vec<f32> = images
        .iter()
        .flat_map(|i| i.as_raw().iter().map(|&v| value(v)))
        .collect();
    Tensor::from_vec(data, (images.len(), h as usize, w as usize, 3), device)?
        .permute((0, 3, 1, 2))?
        .to_dtype(dtype)
}

/// One picture -> `[1, 3, H, W]` in [-1, 1].
fn rgb_to_tensor(
    img: &image::RgbImage,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    pictures_to_tensor(&[img], PixelRange::Signed, device, dtype)
}

/// Mask 0..255 -> `[1, 1, H, W]` in [0, 1].
fn mask_to_tensor(
    m: &image::GrayImage,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let (w, h) = m.dimensions();
    let data: Vec<f32> = m.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
    Tensor::from_vec(data, (1, 1, h as usize, w as usize), device)?.to_dtype(dtype)
}

/// The mask at latent resolution, binarised as diffusers does (nearest, >= 0.5 repaints).
fn mask_to_latent(
    m: &image::GrayImage,
    lw: usize,
    lh: usize,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let small = image::imageops::resize(
        m,
        lw as u32,
        lh as u32,
        image::imageops::FilterType::Triangle,
    );
    let data: Vec<f32> = small
        .as_raw()
        .iter()
        .map(|&v| if v >= 128 { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(data, (1, 1, lh, lw), device)?.to_dtype(dtype)
}

/// `[1, 3, H, W]` in [-1, 1] -> RGB.
fn tensor_to_rgb(t: &Tensor) -> candle_core::Result<image::RgbImage> {
    let (_, _, h, w) = t.dims4()?;
    let t = ((t.i(0)?.to_dtype(DType::F32)?.clamp(-1.0, 1.0)? + 1.0)? * 127.5)?
        .round()?
        .permute((1, 2, 0))?
        .flatten_all()?;
    let data: Vec<u8> = t.to_vec1::<f32>()?.into_iter().map(|v| v as u8).collect();
    image::RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| candle_core::Error::Msg("decoded image has the wrong size".into()))
}

/// Pastes the init image back where the mask keeps it (soft edges blend), so pixels outside
/// the mask come through untouched instead of via a lossy VAE round trip.
fn overlay_unmasked(out: &mut image::RgbImage, init: &image::RgbImage, mask: &image::GrayImage) {
    for ((o, i), m) in out.pixels_mut().zip(init.pixels()).zip(mask.pixels()) {
        let a = m.0[0] as u32;
        for c in 0..3 {
            o.0[c] = ((o.0[c] as u32 * a + i.0[c] as u32 * (255 - a) + 127) / 255) as u8;
        }
    }
}

/// A cheap RGB view of the latents (a linear map per family), at latent resolution.
fn latent_preview(latents: &Tensor, family: Family) -> candle_core::Result<image::RgbImage> {
    const SD: [[f32; 3]; 4] = [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ];
    const XL: [[f32; 3]; 4] = [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ];
    let factors = if family == Family::Sdxl { &XL } else { &SD };
    let l = latents.i(0)?.to_dtype(DType::F32)?;
    let (c, h, w) = l.dims3()?;
    let data = l.flatten_all()?.to_vec1::<f32>()?;
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (idx, px) in img.pixels_mut().enumerate() {
        for (rgb, out) in px.0.iter_mut().enumerate() {
            let v: f32 = (0..c.min(4))
                .map(|ch| data[ch * h * w + idx] * factors[ch][rgb])
                .sum();
            *out = ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8;
        }
    }
    Ok(img)
}

/// Which model is loaded: its folder or file and its VAE (LoRAs are applied in place).
type SlotKey = (PathBuf, Option<PathBuf>);

/// The model currently in memory, if any, keyed by its folder and VAE.
#[derive(Default)]
pub struct ModelSlot {
    loaded: Option<(SlotKey, LoadedModel)>,
}

impl ModelSlot {
    /// The model for `dir` with `loras` merged in, loading it (and freeing any other) when
    /// needed. Another LoRA or weight builds the weights again from the memory-mapped file.
    pub fn get(
        &mut self,
        dir: &Path,
        loras: &[crate::generation::LoraSpec],
        vae: Option<&Path>,
        device: &Device,
        on_loading: &mut dyn FnMut(&str),
    ) -> Result<&mut LoadedModel, ModelError> {
        let key = (
            std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
            vae.map(Path::to_path_buf),
        );
        if self.loaded.as_ref().is_none_or(|(k, _)| *k != key) {
            // Free the old model before mapping the new one.
            self.loaded = None;
            let model = LoadedModel::load_with(dir, loras, vae, device, on_loading)?;
            self.loaded = Some((key, model));
        }
        let model = &mut self.loaded.as_mut().expect("set above").1;
        if model.loras.applied() != loras {
            on_loading("LoRA");
            model.set_loras(loras)?;
        }
        Ok(&mut self.loaded.as_mut().expect("set above").1)
    }

    pub fn unload(&mut self) {
        self.loaded = None;
    }

    /// What the last job should tell the user: LoRA modules that matched nothing, control
    /// images resized.
    pub fn warnings(&self) -> Vec<String> {
        self.loaded
            .as_ref()
            .map(|(_, m)| {
                let mut w = m.lora_report().warnings.clone();
                w.extend(m.notes.iter().cloned());
                w
            })
            .unwrap_or_default()
    }
}
