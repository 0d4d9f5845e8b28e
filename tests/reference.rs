//! Atelier against Hugging Face diffusers: the same tiny SD 1.5-architecture model, the same
//! initial noise, DDIM; the pixels must agree within 2/255 mean absolute difference.
//! Fixtures come from `tests/reference/make_reference.py` (run by hand, outputs committed).

mod common;

use std::path::PathBuf;

use atelier::generation::{GenerationRequest, SamplerKind};
use common::{mean_abs_diff, run};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

fn reference_request(guidance: f32, negative: &str) -> GenerationRequest {
    GenerationRequest {
        model_dir: fixtures().join("tiny-sd15"),
        prompt: "a red cat sitting on a blue mat".into(),
        negative_prompt: negative.into(),
        seed: 0,
        steps: 10,
        guidance,
        width: 64,
        height: 64,
        sampler: SamplerKind::Ddim,
        noise_file: Some(fixtures().join("noise.safetensors")),
        ..Default::default()
    }
}

fn check(guidance: f32, negative: &str, expected: &str) {
    let mad = case_difference(expected, &reference_request(guidance, negative), expected);
    eprintln!("{expected}: mean abs diff {mad:.4} / 255");
    assert!(
        mad <= 2.0,
        "{expected}: mean absolute difference {mad:.3}/255 exceeds 2/255"
    );
}

#[test]
fn ddim_with_guidance_matches_diffusers() {
    check(7.5, "blurry", "expected.png");
}

#[test]
fn ddim_without_guidance_matches_diffusers() {
    check(1.0, "", "expected_cfg1.png");
}

#[test]
fn tokenizer_matches_the_slow_clip_tokenizer() {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("case.json")).unwrap())
            .unwrap();
    let configs = atelier::models::ModelConfigs::read(&fixtures().join("tiny-sd15")).unwrap();
    let tok = atelier::diffusion::tokenizer::ClipTokenizer::load(&configs.tokenizer).unwrap();
    for (text, key) in [
        ("a red cat sitting on a blue mat", "prompt_ids"),
        ("blurry", "negative_prompt_ids"),
    ] {
        let want: Vec<u32> = case[key]
            .as_array()
            .unwrap_or_else(|| panic!("case.json has no {key}"))
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text).unwrap(), want, "{text}");
    }
}

/// Every case in `cases_more.json` (samplers, a non-square size, img2img, SD2 v-prediction,
/// SDXL) against diffusers, with the same 2/255 bound.
#[test]
fn more_samplers_and_families_match_diffusers() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases_more.json")).unwrap())
            .unwrap();
    let mut checked = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        // diffusers encodes an explicit "" negative for SDXL, while Atelier treats an empty
        // negative prompt as "none" (zeroed, force_zeros_for_empty_prompt): `sdxl_noneg` is
        // the case that matches Atelier's semantics.
        if name == "sdxl_emptyneg" {
            continue;
        }
        let text = |k: &str| case[k].as_str().unwrap_or("").to_owned();
        let mut req = case_request(case, fixtures().join(text("model_dir")));
        if let Some(i2i) = case["img2img"].as_object() {
            let init =
                common::open_image(fixtures().join(i2i["init_image"].as_str().unwrap())).to_rgb8();
            req.init_image = Some(std::sync::Arc::new(init));
            req.strength_0_to_1 = i2i["strength"].as_f64().unwrap() as f32;
        }
        let mad = case_difference(name, &req, &text("expected"));
        eprintln!("{name}: mean abs diff {mad:.4} / 255");
        if mad > 2.0 {
            failed.push(format!(
                "{name}: mean absolute difference {mad:.3}/255 exceeds 2/255"
            ));
        }
        checked.push(name.to_owned());
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(checked.len(), 8, "{checked:?}");
}

/// Zero-terminal-SNR cases (`cases_zero_snr.json`, from `make_reference_zero_snr.py`): the tiny
/// SD 2 v-prediction model with its scheduler config replaced by Atelier Mini's kind
/// (`rescale_betas_zero_snr`, trailing), through DPM++ 2M (the Mini's default) and DDIM.
#[test]
fn zero_terminal_snr_schedules_match_diffusers() {
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("cases_zero_snr.json")).unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let text = |k: &str| case[k].as_str().unwrap_or("").to_owned();
        // The model with the case's scheduler config in place of its own.
        let model = tmp.path().join(name);
        common::copy_dir(&fixtures().join(text("model_dir")), &model);
        std::fs::write(
            model.join("scheduler/scheduler_config.json"),
            serde_json::to_string_pretty(&case["scheduler_config"]).unwrap(),
        )
        .unwrap();
        let req = case_request(case, model);
        let mad = case_difference(name, &req, &text("expected"));
        eprintln!("zero SNR {name}: mean abs diff {mad:.4} / 255");
        assert!(mad <= 2.0, "{name}: mean absolute difference {mad:.3}/255");
        checked.push(name.to_owned());
    }
    assert_eq!(checked, ["dpmpp2m", "ddim"]);
}

/// A1111 prompt semantics (`cases_prompts.json`, from `make_reference_prompts.py`: the rules
/// implemented in Python and fed to diffusers as embeddings): attention weights, chunks of 75
/// with comma backtracking and BREAK, a prompt longer than its negative (two UNet passes),
/// clip skip 2, and SDXL's two encoders with the pooled embedding of the first chunk. Within
/// 1/255; and each fixture is far from what the prompt gives read literally (or without clip
/// skip), so the test can tell.
#[test]
fn a1111_prompts_and_clip_skip_match_diffusers() {
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("cases_prompts.json")).unwrap(),
    )
    .unwrap();
    let mut checked = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let text = |k: &str| case[k].as_str().unwrap_or("").to_owned();
        let mut req = case_request(case, fixtures().join(text("model_dir")));
        req.clip_skip = case["clip_skip"].as_u64().unwrap() as u32;
        let mad = case_difference(name, &req, &text("expected"));
        eprintln!("prompts {name}: mean abs diff {mad:.4} / 255");
        assert!(mad <= 1.0, "{name}: mean absolute difference {mad:.3}/255");
        // The same without the feature under test must not pass.
        let literal = GenerationRequest {
            prompt: req
                .prompt
                .replace(['(', ')', '[', ']'], "")
                .replace("BREAK", ","),
            negative_prompt: req.negative_prompt.replace(['(', ')', '[', ']'], ""),
            clip_skip: 1,
            ..req.clone()
        };
        let off = case_difference(name, &literal, &text("expected"));
        assert!(
            off > 2.0,
            "{name}: the fixture does not tell ({off:.3}/255 read literally)"
        );
        checked.push(name.to_owned());
    }
    assert_eq!(
        checked,
        [
            "weighted",
            "long",
            "clip_skip2",
            "weighted_clip_skip2",
            "sdxl_long"
        ]
    );
}

/// Euler, Heun (two UNet evaluations per step but the last; also from an image-to-image start
/// and on a scheduler file without `timestep_spacing`, where diffusers' default "linspace" gives
/// fractional timesteps), DPM++ 2M SDE Karras and LCM (one step, four steps, and four on an
/// LCM-distilled UNet that takes the guidance scale as its input) against diffusers (`cases_samplers.json`, from `make_reference_samplers.py`), within 1/255. The
/// stochastic cases match exactly because diffusers was fed the per-step noise Atelier's seeded
/// stream draws ([`step_noise_fixture_is_what_the_seed_draws`]). Each case's evaluations must be
/// the timesteps diffusers called the UNet with, in order; and each fixture must be far (over
/// 2/255) from what a neighbouring sampler gives, and a stochastic one from another seed's
/// noise, so the comparison can tell them apart.
#[test]
fn euler_heun_sde_and_lcm_match_diffusers() {
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("cases_samplers.json")).unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let text = |k: &str| case[k].as_str().unwrap_or("").to_owned();
        let config = case.get("model_scheduler_config").filter(|c| !c.is_null());
        let overlay = case["model_overlay"].as_str();
        let model = if config.is_some() || overlay.is_some() {
            // A copy of the model with the case's own scheduler file, or with the folders of
            // `model_overlay` (tiny-lcm: an LCM-distilled UNet and LCMScheduler) laid over it.
            let model = tmp.path().join(name);
            common::copy_dir(&fixtures().join(text("model_dir")), &model);
            if let Some(config) = config {
                std::fs::write(
                    model.join("scheduler/scheduler_config.json"),
                    serde_json::to_string_pretty(config).unwrap(),
                )
                .unwrap();
            }
            if let Some(overlay) = overlay {
                common::copy_dir(&fixtures().join(overlay), &model);
            }
            model
        } else {
            fixtures().join(text("model_dir"))
        };
        let mut req = case_request(case, model);
        if let Some(i2i) = case["img2img"].as_object() {
            let init =
                common::open_image(fixtures().join(i2i["init_image"].as_str().unwrap())).to_rgb8();
            req.init_image = Some(std::sync::Arc::new(init));
            req.strength_0_to_1 = i2i["strength"].as_f64().unwrap() as f32;
        }
        if case["step_noise"].is_string() {
            assert_eq!(text("step_noise"), STEP_NOISE_FILE, "{name}");
            assert_eq!(
                req.seed, STEP_NOISE_SEED,
                "{name}: the step noise is this seed's"
            );
        }
        let want: Vec<f64> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        assert_eq!(
            unet_timesteps(&req),
            want,
            "{name}: the UNet evaluations differ from diffusers'"
        );
        let mad = case_difference(name, &req, &text("expected"));
        eprintln!("samplers {name}: mean abs diff {mad:.4} / 255");
        if mad > 1.0 {
            failed.push(format!(
                "{name}: mean absolute difference {mad:.3}/255 exceeds 1/255"
            ));
        }
        // What must not pass: the neighbouring sampler, and for the stochastic samplers (more
        // than one step) the same sampler with another seed's step noise.
        let neighbour = match req.sampler {
            SamplerKind::Euler => SamplerKind::Heun,
            SamplerKind::Heun => SamplerKind::Euler,
            SamplerKind::DpmPp2mSdeKarras => SamplerKind::DpmPp2mKarras,
            SamplerKind::Lcm => SamplerKind::Ddim,
            other => panic!("{name}: no neighbour for {other:?}"),
        };
        let mut contrasts = vec![(
            format!("{neighbour:?}"),
            GenerationRequest {
                sampler: neighbour,
                ..req.clone()
            },
        )];
        if overlay.is_some() {
            // The LCM-distilled UNet's guidance is its input: another scale must show.
            contrasts.push((
                "guidance 2".into(),
                GenerationRequest {
                    guidance: 2.0,
                    ..req.clone()
                },
            ));
        }
        if case["step_noise"].is_string() {
            contrasts.push((
                "another seed".into(),
                GenerationRequest {
                    seed: req.seed + 1,
                    ..req.clone()
                },
            ));
        }
        for (what, other) in contrasts {
            let off = case_difference(name, &other, &text("expected"));
            eprintln!("samplers {name}: {what} instead: {off:.4} / 255");
            if off <= 2.0 {
                failed.push(format!(
                    "{name}: the fixture does not tell it from {what} ({off:.3}/255)"
                ));
            }
        }
        checked.push(name.to_owned());
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(
        checked,
        [
            "euler",
            "heun",
            "euler_sd2v",
            "heun_sd2v",
            "heun_img2img",
            "euler_linspace",
            "heun_linspace",
            "lcm1",
            "lcm4",
            "lcm4_sd2v",
            "lcm_embedded",
            "dpmpp_2m_sde_karras",
            "dpmpp_2m_sde_karras_sd2v",
        ]
    );
}

/// The seed whose per-step noise `noise_steps.safetensors` holds.
const STEP_NOISE_SEED: u64 = 7;
const STEP_NOISE_FILE: &str = "noise_steps.safetensors";

/// What a stochastic sampler draws, step after step, on a 64x64 picture (latents `[1, 4, 8,
/// 8]`) with seed [`STEP_NOISE_SEED`] and the initial noise from a file (so the stream's first
/// draw is the first step's): 16 draws stacked, `[16, 1, 4, 8, 8]`.
fn step_noise_draws() -> candle_core::Tensor {
    let mut rng = atelier::diffusion::noise::NoiseRng::new(STEP_NOISE_SEED);
    let draws: Vec<candle_core::Tensor> = (0..16)
        .map(|_| {
            rng.randn(
                (1, 4, 8, 8),
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap()
        })
        .collect();
    candle_core::Tensor::stack(&draws, 0).unwrap()
}

/// The step noise diffusers was given is exactly what Atelier's sampler draws for the seed: if
/// the noise stream ever changes, this says so (and the fixtures must be made again).
///
/// `noise_steps.safetensors` is what `make_reference_samplers.py` feeds to diffusers' DPM++
/// SDE and LCM schedulers in place of their own `randn_tensor` draws; to write it again, run
/// `ATELIER_WRITE_FIXTURES=1 cargo test --test reference step_noise` before the script.
#[test]
fn step_noise_fixture_is_what_the_seed_draws() {
    if std::env::var_os("ATELIER_WRITE_FIXTURES").is_some() {
        let tensors = std::collections::HashMap::from([("noise".to_owned(), step_noise_draws())]);
        candle_core::safetensors::save(&tensors, fixtures().join(STEP_NOISE_FILE)).unwrap();
    }
    let file =
        candle_core::safetensors::load(fixtures().join(STEP_NOISE_FILE), &candle_core::Device::Cpu)
            .unwrap();
    let stored: Vec<f32> = file["noise"].flatten_all().unwrap().to_vec1().unwrap();
    let drawn: Vec<f32> = step_noise_draws().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(file["noise"].dims(), [16, 1, 4, 8, 8]);
    assert!(
        stored == drawn,
        "the seeded stream no longer draws the fixture's noise"
    );
}

/// The timesteps the loop evaluates the UNet at for `req`, from its first step on (the sampler
/// built as the pipeline builds it, on the model's own scheduler config).
fn unet_timesteps(req: &GenerationRequest) -> Vec<f64> {
    use atelier::diffusion::sampler::{build, NoiseSchedule};
    let configs = atelier::models::ModelConfigs::read(&req.model_dir).unwrap();
    let schedule = NoiseSchedule::from_config(&configs.scheduler).unwrap();
    let sampler = build(req.sampler, &schedule, req.steps);
    let start = match req.init_image {
        Some(_) => req.steps - (req.steps as f64 * req.strength_0_to_1 as f64) as usize,
        None => 0,
    };
    (start..req.steps)
        .flat_map(|step| sampler.evaluations(step))
        .map(|i| sampler.timesteps()[i])
        .collect()
}

/// The request a `cases_*.json` case describes, on `model_dir`.
fn case_request(case: &serde_json::Value, model_dir: PathBuf) -> GenerationRequest {
    let text = |k: &str| case[k].as_str().unwrap_or("").to_owned();
    GenerationRequest {
        model_dir,
        prompt: text("prompt"),
        negative_prompt: text("negative_prompt"),
        steps: case["steps"].as_u64().unwrap() as usize,
        guidance: case["guidance_scale"].as_f64().unwrap() as f32,
        width: case["width"].as_u64().unwrap() as u32,
        height: case["height"].as_u64().unwrap() as u32,
        sampler: SamplerKind::from_cli_name(&text("sampler")).unwrap(),
        seed: case["seed"].as_u64().unwrap_or(0),
        noise_file: Some(fixtures().join(text("noise"))),
        ..Default::default()
    }
}

/// Mean absolute difference (0..255) between what `req` generates and the fixture `expected`;
/// `name` labels a failure to generate.
fn case_difference(name: &str, req: &GenerationRequest, expected: &str) -> f64 {
    let want = common::open_image(fixtures().join(expected)).to_rgb8();
    let got = run(req)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .0
        .remove(0);
    mean_abs_diff(&got.image, &want)
}

/// The tiny models written as single checkpoints in the original (LDM) layout, as AUTOMATIC1111
/// and ComfyUI users have them, and read back through the LDM key map: the same reference
/// cases (SD 1.5 with DPM++ 2M Karras and img2img, SD 2 v-prediction with its OpenCLIP text
/// encoder's fused q/k/v, SDXL with both text encoders) against the diffusers fixtures, in
/// f32 and in f16 (how most checkpoints are shared; read back to f32 on the CPU).
#[test]
fn single_file_checkpoints_match_diffusers() {
    use atelier::models::export::{write_single_file, ExportOptions};
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases_more.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    let mut checked = Vec::new();
    for (model, half) in [
        ("tiny-sd15", false),
        ("tiny-sd15", true),
        ("tiny-sd2v", false),
        ("tiny-sdxl", true),
    ] {
        let file = tmp.path().join(format!(
            "{model}{}.safetensors",
            if half { "-f16" } else { "" }
        ));
        write_single_file(
            &fixtures().join(model),
            &file,
            ExportOptions {
                half,
                no_configs: false,
            },
        )
        .unwrap();
        // The file really is in the LDM layout, not the folder's names.
        let names = atelier::models::checkpoint::WeightFile::open(&file).unwrap();
        assert!(names
            .tensors
            .keys()
            .all(|k| k.starts_with("model.diffusion_model.")
                || k.starts_with("first_stage_model.")
                || k.starts_with("cond_stage_model.")
                || k.starts_with("conditioner.embedders.")));
        for case in cases["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            if case["model_dir"] != model || name == "sdxl_emptyneg" {
                continue;
            }
            let mut req = case_request(case, file.clone());
            if let Some(i2i) = case["img2img"].as_object() {
                let init = common::open_image(fixtures().join(i2i["init_image"].as_str().unwrap()))
                    .to_rgb8();
                req.init_image = Some(std::sync::Arc::new(init));
                req.strength_0_to_1 = i2i["strength"].as_f64().unwrap() as f32;
            }
            let expected = case["expected"].as_str().unwrap();
            let mad = case_difference(name, &req, expected);
            eprintln!("single file {model} (f16 {half}) {name}: mean abs diff {mad:.4} / 255");
            if mad > 1.0 {
                failed.push(format!(
                    "{model} f16={half} {name}: {mad:.3}/255 exceeds 1/255"
                ));
            }
            if !half {
                // Full precision: the very pixels the diffusers folder gives.
                let mut from_folder = req.clone();
                from_folder.model_dir = fixtures().join(model);
                let a = run(&req).unwrap().0.remove(0);
                let b = run(&from_folder).unwrap().0.remove(0);
                if a.image.as_raw() != b.image.as_raw() {
                    failed.push(format!("{model} {name}: the file and the folder differ"));
                }
            }
            checked.push(format!("{model}/{name}/{half}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(checked.len() >= 10, "{checked:?}");
}

/// A `.ckpt` as `torch.save` writes a training checkpoint (`state_dict` wrapper, `global_step`,
/// EMA copies, f16), made by `make_reference_single_file.py` from the tiny SD 2 v-prediction
/// model, read by the pickle reader that runs no code: the SD 2 case against diffusers.
#[test]
fn pytorch_ckpt_checkpoints_are_read_as_data() {
    use atelier::models::checkpoint::{FileFormat, WeightFile};
    let ckpt = fixtures().join("tiny-sd2v-ldm.ckpt");
    let file = WeightFile::open(&ckpt).unwrap();
    assert_eq!(file.format, FileFormat::Pickle);
    assert_eq!(file.global_step, Some(123456));
    assert!(file.tensors.keys().any(|k| k.starts_with("model_ema.")));
    assert!(file.metadata.contains_key("atelier.configs"));
    // The fixture stores one weight column-major and two as views into one shared storage:
    // each reads as the same values the f16 export of the folder holds.
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("sd2v-f16.safetensors");
    atelier::models::export::write_single_file(
        &fixtures().join("tiny-sd2v"),
        &reference,
        atelier::models::export::ExportOptions {
            half: true,
            no_configs: true,
        },
    )
    .unwrap();
    let reference = WeightFile::open(&reference).unwrap();
    assert!(file.tensors.values().any(|t| t.fortran_order));
    for key in [
        "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight",
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.input_blocks.1.1.proj_out.weight",
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
    ] {
        assert_eq!(file.read_f32(key), reference.read_f32(key), "{key}");
        assert!(file.read_f32(key).is_some(), "{key}");
    }
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases_more.json")).unwrap())
            .unwrap();
    let case = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sd2v")
        .unwrap();
    let req = case_request(case, ckpt);
    let mad = case_difference("sd2v.ckpt", &req, case["expected"].as_str().unwrap());
    eprintln!("tiny-sd2v-ldm.ckpt sd2v: mean abs diff {mad:.4} / 255");
    assert!(mad <= 1.0, "{mad:.3}/255 exceeds 1/255");
}

/// The names and shapes of real SD 1.5, SD 2.1 and SDXL base checkpoints (made without
/// downloading any by `make_ldm_key_lists.py`, from diffusers' standard models and its own
/// diffusers -> original scripts): each is told apart, gets its family's standard configs, and
/// every tensor the diffusers models need is found in the file with the shape they need.
#[test]
fn real_checkpoint_layouts_are_recognised_and_fully_mapped() {
    use atelier::models::checkpoint::{FileFormat, TensorEntry, WeightFile};
    use atelier::models::config::{TextEncoderConfig, UnetConfig, WeightSource};
    use atelier::models::ldm::{classify, configs_for, FileKind, Hints, Transform};
    use atelier::models::Family;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ldm_keys");
    for (name, family) in [
        ("sd15", Family::Sd1),
        ("sd21", Family::Sd2),
        ("sdxl", Family::Sdxl),
    ] {
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let tensors = doc["ldm"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, shape)| {
                let shape: Vec<usize> = serde_json::from_value(shape.clone()).unwrap();
                let entry = TensorEntry {
                    dtype: candle_core::DType::F16,
                    shape,
                    start: 0,
                    fortran_order: false,
                };
                (k.clone(), entry)
            })
            .collect();
        let file = WeightFile {
            path: dir.join(format!("{name}.safetensors")),
            format: FileFormat::Safetensors,
            tensors,
            metadata: Default::default(),
            global_step: None,
            file_len: u64::MAX / 2,
        };
        assert_eq!(
            classify(&file),
            FileKind::Checkpoint {
                family,
                inpainting: false
            },
            "{name}"
        );
        let configs =
            configs_for(file, &Hints::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The standard configs, as diffusers' own.
        let want: UnetConfig = serde_json::from_value(doc["configs"]["unet"].clone()).unwrap();
        let got = &configs.unet;
        assert_eq!(got.block_out_channels, want.block_out_channels, "{name}");
        assert_eq!(got.down_block_types, want.down_block_types, "{name}");
        assert_eq!(got.up_block_types, want.up_block_types, "{name}");
        assert_eq!(got.layers_per_block, want.layers_per_block, "{name}");
        assert_eq!(
            got.use_linear_projection, want.use_linear_projection,
            "{name}"
        );
        assert_eq!(got.addition_embed_type, want.addition_embed_type, "{name}");
        assert_eq!(
            got.projection_class_embeddings_input_dim, want.projection_class_embeddings_input_dim,
            "{name}"
        );
        for b in 0..want.block_out_channels.len() {
            assert_eq!(got.heads(b), want.heads(b), "{name} heads of block {b}");
            assert_eq!(
                got.transformer_layers(b),
                want.transformer_layers(b),
                "{name} transformer layers of block {b}"
            );
            assert_eq!(
                got.cross_attention_dim.get(b),
                want.cross_attention_dim.get(b)
            );
        }
        for (component, got) in [
            ("text_encoder", Some(&configs.text_encoder)),
            ("text_encoder_2", configs.text_encoder_2.as_ref()),
        ] {
            let want = &doc["configs"][component];
            if want.is_null() {
                assert!(got.is_none(), "{name} {component}");
                continue;
            }
            let mut want = want.clone();
            // Built in memory, the configs name no architecture.
            want["architectures"] = serde_json::json!(["CLIPTextModel"]);
            let want: TextEncoderConfig = serde_json::from_value(want).unwrap();
            let got = got.unwrap();
            assert_eq!(
                (
                    got.hidden_size,
                    got.intermediate_size,
                    got.num_hidden_layers
                ),
                (
                    want.hidden_size,
                    want.intermediate_size,
                    want.num_hidden_layers
                ),
                "{name} {component}"
            );
            assert_eq!(got.num_attention_heads, want.num_attention_heads, "{name}");
            assert_eq!(got.hidden_act, want.hidden_act, "{name} {component}");
            assert_eq!(
                got.projection_dim.is_some(),
                want.projection_dim.is_some() && component == "text_encoder_2"
            );
        }
        // Every diffusers tensor has a source of the right shape.
        let WeightSource::SingleFile(single) = &configs.weights else {
            panic!("{name}: not a single file")
        };
        let mut missing = Vec::new();
        for (key, shape) in doc["diffusers"].as_object().unwrap() {
            let want: Vec<usize> = serde_json::from_value(shape.clone()).unwrap();
            let (component, tensor) = key.split_once('/').unwrap();
            let Some(src) = single.source(component, tensor) else {
                missing.push(key.clone());
                continue;
            };
            let stored = single.file.shape(&src.key).unwrap().to_vec();
            let got: Vec<usize> = match src.transform {
                Transform::Plain => stored,
                Transform::Squeeze => stored[..2].to_vec(),
                Transform::Rows { of, .. } => {
                    let mut s = stored;
                    s[0] /= of;
                    s
                }
                Transform::Transpose => stored.into_iter().rev().collect(),
            };
            assert_eq!(got, want, "{name}: {key} from {}", src.key);
        }
        assert!(
            missing.is_empty(),
            "{name}: {} unmapped, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(8)]
        );
    }
}

/// LoRAs against diffusers (`lora/cases_lora.json`, from `make_reference_lora.py`): kohya-ss
/// (attention, LoCon convolutions, text encoder; alpha ≠ rank) at two weights, diffusers/PEFT,
/// LyCORIS LoHa and LoKr, two LoRAs at once, and an SDXL kohya file in the LDM spelling with
/// both text encoders. Every module of each file must find its weight (no warnings), and the
/// pictures must agree within 1/255 (each LoRA moves them far more than that).
#[test]
fn loras_match_diffusers() {
    use atelier::diffusion::Generator;
    use atelier::generation::LoraSpec;
    let dir = fixtures().join("lora");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases_lora.json")).unwrap())
            .unwrap();
    let mut failed = Vec::new();
    let mut checked = 0;
    // One generator for every case: the model stays loaded and each case's LoRAs are written
    // into its weights in place over the previous case's (weights changed, LoRAs swapped, two
    // at once, then none). With low memory the text encoders are also rebuilt from the file
    // between jobs and must get the LoRAs again.
    let mut generator = Generator::new(atelier::diffusion::GeneratorOptions {
        low_memory: true,
        ..Default::default()
    });
    let mut all: Vec<serde_json::Value> = cases["cases"].as_array().unwrap().clone();
    // Before the SDXL case, so the model is still the one the LoRAs were written into.
    let at = all
        .iter()
        .position(|c| c["model_dir"] != "tiny-sd15")
        .unwrap_or(all.len());
    all.insert(
        at,
        serde_json::json!({
            "name": "no_lora_after_loras", "model_dir": "tiny-sd15", "sampler": "ddim",
            "loras": [], "prompt": "a red cat sitting on a blue mat", "negative_prompt": "blurry",
            "steps": 10, "guidance_scale": 7.5, "width": 64, "height": 64,
            "noise": "noise.safetensors", "expected": "../expected.png"
        }),
    );
    assert_eq!(all[at - 1]["model_dir"], "tiny-sd15");
    for case in &all {
        let name = case["name"].as_str().unwrap();
        let mut req = case_request(case, fixtures().join(case["model_dir"].as_str().unwrap()));
        req.loras = case["loras"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| LoraSpec {
                path: dir.join(l["file"].as_str().unwrap()),
                weight: l["weight"].as_f64().unwrap() as f32,
            })
            .collect();
        let got = match generator.collect(&req, &std::sync::atomic::AtomicBool::new(false)) {
            Ok((mut images, _)) => images.remove(0),
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        let warnings = generator.warnings();
        if !warnings.is_empty() {
            failed.push(format!("{name}: {warnings:?}"));
        }
        let want = common::open_image(dir.join(case["expected"].as_str().unwrap())).to_rgb8();
        let mad = mean_abs_diff(&got.image, &want);
        eprintln!(
            "{name}: mean abs diff {mad:.4} / 255 (the LoRA moves the picture {:.1} / 255)",
            case["mean_abs_vs_no_lora"].as_f64().unwrap_or(0.0)
        );
        if mad > 1.0 {
            failed.push(format!(
                "{name}: mean absolute difference {mad:.3}/255 exceeds 1/255"
            ));
        }
        checked += 1;
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(checked >= 8, "{checked}");
}

/// Textual-inversion embeddings against diffusers' `load_textual_inversion`
/// (`embeddings/cases_embeddings.json`, from `make_reference_embeddings.py`): an A1111 `.pt`
/// with two vectors in the prompt and in the negative prompt, a one-vector `emb_params`
/// `.safetensors`, and an SDXL `clip_l` / `clip_g` file, each used by its name as a word.
#[test]
fn embeddings_match_diffusers() {
    let dir = fixtures().join("embeddings");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases_embeddings.json")).unwrap())
            .unwrap();
    let mut failed = Vec::new();
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut req = case_request(case, fixtures().join(case["model_dir"].as_str().unwrap()));
        req.embeddings = case["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| dir.join(e.as_str().unwrap()))
            .collect();
        let want = common::open_image(dir.join(case["expected"].as_str().unwrap())).to_rgb8();
        let got = match run(&req) {
            Ok((mut images, _)) => images.remove(0),
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mad = mean_abs_diff(&got.image, &want);
        eprintln!(
            "{name}: mean abs diff {mad:.4} / 255 (the embedding moves the picture {:.1} / 255)",
            case["mean_abs_vs_plain_word"].as_f64().unwrap_or(0.0)
        );
        if mad > 1.0 {
            failed.push(format!(
                "{name}: mean absolute difference {mad:.3}/255 exceeds 1/255"
            ));
        }
        checked += 1;
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(checked, 4);
}

/// ControlNet (`controlnet/cases_controlnet.json`, from `make_reference_controlnet.py`): tiny
/// ControlNets made from the tiny models' UNets with diffusers' `from_unet`, zero convolutions
/// re-drawn so the control matters, against `StableDiffusionControlNetPipeline` and the SDXL
/// one: two scales, no negative prompt, start/end, "ControlNet is more important" (guess
/// mode), two ControlNets at once, SDXL. Every case moves the picture well beyond the bound
/// from the uncontrolled one, so a ControlNet that did nothing would fail.
#[test]
fn controlnets_match_diffusers() {
    use atelier::generation::{ControlMode, ControlSpec};
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("controlnet/cases_controlnet.json")).unwrap(),
    )
    .unwrap();
    let mut failed = Vec::new();
    let mut checked = Vec::new();
    let mut generator = atelier::diffusion::Generator::default();
    let two_threads = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let text = |k: &str| case[k].as_str().unwrap_or("").to_owned();
        let mut req = case_request(case, fixtures().join(text("model_dir")));
        let guess = case["guess_mode"].as_bool().unwrap();
        for c in case["controlnets"].as_array().unwrap() {
            let image = common::open_image(fixtures().join(c["image"].as_str().unwrap())).to_rgb8();
            let mut spec = ControlSpec::new(
                fixtures().join(c["dir"].as_str().unwrap()),
                std::sync::Arc::new(image),
            );
            spec.scale = c["scale"].as_f64().unwrap() as f32;
            spec.start = c["start"].as_f64().unwrap();
            spec.end = c["end"].as_f64().unwrap();
            spec.mode = if guess {
                ControlMode::Control
            } else {
                ControlMode::Balanced
            };
            req.controlnets.push(spec);
        }
        let want = common::open_image(fixtures().join(text("expected"))).to_rgb8();
        // Guidance's halves side by side on two threads, and as one joint batch (in a pool
        // of two threads, so the halves go apart whatever this machine's cores).
        for split in [true, false] {
            generator.options_mut().split_guidance = Some(split);
            let got = two_threads
                .install(|| common::run_with(&mut generator, &req, &Default::default()))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .0
                .remove(0);
            let mad = mean_abs_diff(&got.image, &want);
            eprintln!("controlnet {name} (halves apart: {split}): mean abs diff {mad:.4} / 255");
            if mad > 1.0 {
                failed.push(format!(
                    "{name} (halves apart: {split}): {mad:.3}/255 exceeds 1/255"
                ));
            }
        }
        checked.push(name.to_owned());
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(checked.len(), 7, "{checked:?}");
}

/// A single-file ControlNet gives the same pixels as its diffusers folder: the fixture's
/// ControlNet written in the original layout inside a ControlLDM checkpoint
/// (`control_model.*`, f32) and bare as ControlNet 1.1 ships (f16), and with diffusers names in
/// one file, each read through the key map.
#[test]
fn single_file_controlnets_match_their_folder() {
    use atelier::generation::ControlSpec;
    use candle_core::{DType, Device, Tensor};
    let folder = fixtures().join("controlnet/sd15-a");
    let tensors = candle_core::safetensors::load(
        folder.join("diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, prefix: Option<&str>, dtype: DType| {
        let renamed: std::collections::HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, t)| {
                let key = match prefix {
                    Some(p) => format!(
                        "{p}{}",
                        atelier::models::ldm::controlnet_key_back(k, 1, 14)
                            .unwrap_or_else(|| panic!("no LDM name for {k}"))
                    ),
                    None => k.clone(),
                };
                (key, t.to_dtype(dtype).unwrap())
            })
            .collect();
        let path = tmp.path().join(name);
        candle_core::safetensors::save(&renamed, &path).unwrap();
        path
    };
    let files = [
        (
            write(
                "control_sd15_a.safetensors",
                Some("control_model."),
                DType::F32,
            ),
            0.0,
        ),
        (
            write("control_v11p_sd15_a.safetensors", Some(""), DType::F16),
            0.5,
        ),
        (write("diffusers_a.safetensors", None, DType::F32), 0.0),
    ];
    let image = std::sync::Arc::new(
        common::open_image(fixtures().join("controlnet/control-a.png")).to_rgb8(),
    );
    let request = |path: PathBuf| {
        let mut req = reference_request(7.5, "blurry");
        req.controlnets.push(ControlSpec::new(path, image.clone()));
        req
    };
    let mut generator = atelier::diffusion::Generator::default();
    let mut generate = |req: &GenerationRequest| {
        common::run_with(&mut generator, req, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", req.controlnets[0].path.display()))
            .0
            .remove(0)
            .image
    };
    let from_folder = generate(&request(folder.clone()));
    let plain = generate(&reference_request(7.5, "blurry"));
    assert!(mean_abs_diff(&from_folder, &plain) > 5.0);
    for (file, bound) in files {
        let got = generate(&request(file.clone()));
        let d = mean_abs_diff(&got, &from_folder);
        eprintln!("{}: {d:.4}/255 from the folder's", file.display());
        assert!(d <= bound, "{}: {d:.4}/255", file.display());
    }
}

/// The largest absolute difference between two tensors of one shape.
fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn tiny_autoencoder_matches_diffusers_in_its_folder_and_original_files() {
    use atelier::diffusion::taesd::TinyAutoencoder;
    use candle_core::{DType, Device};
    let dir = fixtures().join("taesd");
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu).unwrap();
    let folder = TinyAutoencoder::load(&dir.join("tiny"), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(folder.downscale, 8);
    assert!(folder.has_encoder());
    let decoded = folder.decode(&io["latents"]).unwrap();
    let err = max_abs_diff(&decoded, &io["decoded"]);
    eprintln!("tiny decoder (folder): max abs diff {err:e}");
    assert!(err < 1e-4, "decode differs from diffusers by {err}");
    let encoded = folder.encode(&io["pixels"]).unwrap();
    let err = max_abs_diff(&encoded, &io["encoded"]);
    eprintln!("tiny encoder (folder): max abs diff {err:e}");
    assert!(err < 1e-4, "encode differs from diffusers by {err}");

    // The original layout, as ComfyUI's models/vae_approx holds it: the decoder file, and its
    // encoder found beside it.
    let original = TinyAutoencoder::load(
        &dir.join("taesd_decoder.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert!(original.has_encoder(), "taesd_encoder beside it");
    let err = max_abs_diff(&original.decode(&io["latents"]).unwrap(), &io["decoded"]);
    assert!(err < 1e-4, "original-layout decode differs by {err}");
    let err = max_abs_diff(&original.encode(&io["pixels"]).unwrap(), &io["encoded"]);
    assert!(err < 1e-4, "original-layout encode differs by {err}");

    // A folder of such files is found by their names.
    let by_folder = TinyAutoencoder::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(by_folder.path, dir.join("taesd_decoder.safetensors"));
}
