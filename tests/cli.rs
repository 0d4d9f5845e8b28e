//! The `atelier` binary end to end: generate, models, and one-line errors with a non-zero exit.

mod common;

use std::path::Path;
use std::process::Command;

use atelier::diffusion::tiny::TinyKind;
use common::{atelier, stderr, tiny_model};

#[test]
fn generate_writes_a_png_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let out = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let m = model.to_string_lossy();
    let base = [
        "generate",
        "--model",
        &m,
        "--prompt",
        "a red cat",
        "--seed",
        "5",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--sampler",
        "euler-a",
    ];
    let a = atelier(&[&base[..], &["--out", &out("a.png")]].concat(), tmp.path());
    assert!(a.status.success(), "{}", stderr(&a));
    // It says where it ran, and why not on a GPU.
    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    assert!(
        stderr(&a).contains("device: CPU, ") && stderr(&a).contains("no GPU support"),
        "{}",
        stderr(&a)
    );
    let b = atelier(&[&base[..], &["--out", &out("b.png")]].concat(), tmp.path());
    assert!(b.status.success(), "{}", stderr(&b));
    let ia = common::open_image(out("a.png")).to_rgb8();
    let ib = common::open_image(out("b.png")).to_rgb8();
    assert_eq!(ia.dimensions(), (64, 64));
    assert_eq!(ia.as_raw(), ib.as_raw());

    // Batch numbering and image-to-image from the file just written.
    let c = atelier(
        &[
            &base[..],
            &[
                "--batch",
                "2",
                "--init-image",
                &out("a.png"),
                "--strength",
                "0.5",
                "--out",
                &out("c.png"),
            ],
        ]
        .concat(),
        tmp.path(),
    );
    assert!(c.status.success(), "{}", stderr(&c));
    assert!(tmp.path().join("c-1.png").is_file() && tmp.path().join("c-2.png").is_file());
}

#[test]
fn bad_input_gives_one_clear_line_and_a_failure_code() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let m = model.to_string_lossy().into_owned();
    let out = tmp.path().join("x.png").to_string_lossy().into_owned();
    let garbage = tmp.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image at all").unwrap();
    let g = garbage.to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "generate",
                "--model",
                "/no/such/model",
                "--prompt",
                "x",
                "--out",
                &out,
            ],
            "no such model folder",
        ),
        (
            vec![
                "generate", "--model", &m, "--prompt", "x", "--width", "65", "--out", &out,
            ],
            "multiple of 8",
        ),
        (
            vec![
                "generate",
                "--model",
                &m,
                "--prompt",
                "x",
                "--init-image",
                &g,
                "--out",
                &out,
            ],
            "garbage.png",
        ),
        (
            vec![
                "generate",
                "--model",
                &m,
                "--prompt",
                "x",
                "--sampler",
                "plms",
                "--out",
                &out,
            ],
            "plms",
        ),
        (
            vec![
                "generate",
                "--model",
                tmp.path().to_str().unwrap(),
                "--prompt",
                "x",
                "--out",
                &out,
            ],
            "model_index.json",
        ),
    ];
    let empty_run = tmp.path().join("empty-run");
    std::fs::create_dir_all(&empty_run).unwrap();
    let empty_run = empty_run.to_string_lossy().into_owned();
    let more: Vec<(Vec<&str>, &str)> = vec![
        // One set of limits, checked before any work (the studio's panel uses the same).
        (
            vec![
                "generate", "--model", &m, "--prompt", "x", "--steps", "5000", "--out", &out,
            ],
            "steps 5000: must be 1 to 1000",
        ),
        (
            vec![
                "generate", "--model", &m, "--prompt", "x", "--batch", "0", "--out", &out,
            ],
            "batch 0",
        ),
        (
            vec![
                "generate",
                "--model",
                &m,
                "--prompt",
                "x",
                "--guidance",
                "NaN",
                "--out",
                &out,
            ],
            "guidance NaN",
        ),
        (
            vec![
                "generate", "--model", &m, "--prompt", "x", "--width", "8192", "--out", &out,
            ],
            "width 8192",
        ),
        // Multi-byte characters where six hex digits were expected: an error, not a panic.
        (
            vec![
                "train",
                "--data",
                "/nowhere",
                "--out",
                "/nowhere",
                "--background",
                "aé€",
            ],
            "is not a #rrggbb colour",
        ),
        // A device asked for by name fails with the reason instead of falling back.
        #[cfg(not(feature = "cuda"))]
        (
            vec![
                "generate", "--model", &m, "--prompt", "x", "--device", "cuda", "--out", &out,
            ],
            "CUDA is not compiled into this build",
        ),
        (
            vec![
                "generate", "--model", &m, "--prompt", "x", "--device", "tpu", "--out", &out,
            ],
            "unknown device",
        ),
        // Nothing to plot is a failure, not a silent success.
        (vec!["dev", "plot-loss", "--run", &empty_run], "loss.csv"),
        // A folder without a VAE is named, not a panic.
        (
            vec!["dev", "vae-timing", "--model", &empty_run],
            "no VAE config",
        ),
    ];
    for (args, expected) in cases.into_iter().chain(more) {
        let o = atelier(&args, tmp.path());
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!tmp.path().join("x.png").exists());
}

#[test]
fn models_lists_given_folders_user_folder_and_hf_cache_with_family() {
    let tmp = tempfile::tempdir().unwrap();
    // The user's models folder holds an SDXL model, the HF cache an SD2 one.
    let user = tmp.path().join("models").join("my-xl");
    common::copy_dir(&tiny_model(TinyKind::Sdxl), &user);
    let snap = tmp
        .path()
        .join("hf/hub/models--someone--tiny-sd2/snapshots/abc123");
    common::copy_dir(&tiny_model(TinyKind::Sd2V), &snap);
    std::fs::create_dir_all(tmp.path().join("hf/hub/models--someone--tiny-sd2/refs")).unwrap();
    std::fs::write(
        tmp.path()
            .join("hf/hub/models--someone--tiny-sd2/refs/main"),
        "abc123",
    )
    .unwrap();
    let given = tiny_model(TinyKind::Sd15);
    let o = atelier(&["models", given.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("device: "), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("sd15\tSD 1.x")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("my-xl\tSDXL")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("someone/tiny-sd2\tSD 2.x v-pred")),
        "{text}"
    );
}

/// LCM models are recognised from their files (not only their names) and generate with their
/// own defaults: the LCM sampler in 4 steps, with guidance 8 as the input of an LCM-distilled
/// UNet (the reference fixtures' tiny one), and guidance 1 (no classifier-free guidance) for a
/// model that only has LCMScheduler's file, as an LCM-LoRA merge does.
#[test]
fn lcm_models_are_recognised_and_generate_with_their_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let distilled = tmp.path().join("distilled");
    common::copy_dir(&reference.join("tiny-sd15"), &distilled);
    common::copy_dir(&reference.join("tiny-lcm"), &distilled);
    let merged = tmp.path().join("merged");
    common::copy_dir(&reference.join("tiny-sd15"), &merged);
    common::copy_dir(
        &reference.join("tiny-lcm/scheduler"),
        &merged.join("scheduler"),
    );
    let plain = reference.join("tiny-sd15");
    let path = |p: &Path| p.to_string_lossy().into_owned();

    let o = atelier(
        &["models", &path(&distilled), &path(&merged), &path(&plain)],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for (name, label) in [
        ("distilled", "SD 1.x LCM"),
        ("merged", "SD 1.x LCM"),
        ("tiny-sd15", "SD 1.x"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}\t{label}\t"))),
            "{name}: {text}"
        );
    }

    for (model, guidance) in [(&distilled, 8.0), (&merged, 1.0)] {
        let out = tmp.path().join("out.png");
        let o = atelier(
            &[
                "generate",
                "--model",
                &path(model),
                "--prompt",
                "a red cat",
                "--seed",
                "3",
                "--out",
                &path(&out),
                "--no-gallery",
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{model:?}: {}", stderr(&o));
        let bytes = std::fs::read(&out).unwrap();
        let meta = atelier::gallery::metadata::read_embedded(&bytes)
            .meta()
            .unwrap();
        assert_eq!(meta.sampler.as_deref(), Some("LCM"), "{model:?}");
        assert_eq!(meta.steps, Some(4), "{model:?}");
        assert_eq!(meta.guidance, Some(guidance), "{model:?}");
    }
}

/// Folders of other tools, given with `--model-dir`: an AUTOMATIC1111 install's
/// `models/Stable-diffusion` (single checkpoint files, sorted into a subfolder, next to a LoRA
/// and an SD3 file) and ComfyUI's `models/checkpoints`; the checkpoints are listed with their
/// family, the LoRA is passed over, the SD3 file is reported with what it is; and a listed
/// file generates.
#[test]
fn models_finds_checkpoints_in_a1111_and_comfyui_folders_and_they_generate() {
    use atelier::models::export::{write_single_file, ExportOptions};
    let tmp = tempfile::tempdir().unwrap();
    let a1111 = tmp.path().join("stable-diffusion-webui");
    let sd = a1111.join("models/Stable-diffusion/anime");
    std::fs::create_dir_all(&sd).unwrap();
    let opts = ExportOptions {
        half: true,
        no_configs: false,
    };
    write_single_file(
        &tiny_model(TinyKind::Sd15),
        &sd.join("dreamy-v2.safetensors"),
        opts,
    )
    .unwrap();
    let lora_dir = a1111.join("models/Lora");
    std::fs::create_dir_all(&lora_dir).unwrap();
    let zeros = |keys: &[&str], path: &std::path::Path| common::write_zero_tensors(path, keys);
    // A LoRA dropped among the checkpoints (it happens) and an SD3 file.
    zeros(
        &["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"],
        &sd.join("style.safetensors"),
    );
    zeros(
        &["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"],
        &a1111.join("models/Stable-diffusion/sd3.safetensors"),
    );
    let comfy = tmp.path().join("ComfyUI");
    std::fs::create_dir_all(comfy.join("models/checkpoints")).unwrap();
    write_single_file(
        &tiny_model(TinyKind::Sdxl),
        &comfy.join("models/checkpoints/xl-base.safetensors"),
        opts,
    )
    .unwrap();
    let o = atelier(
        &[
            "models",
            "--model-dir",
            a1111.to_str().unwrap(),
            "--model-dir",
            comfy.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("dreamy-v2\tSD 1.x")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("xl-base\tSDXL")),
        "{text}"
    );
    assert!(!text.contains("style"), "a LoRA is not a model: {text}");
    // A single file's line ends with its size and AUTOMATIC1111 hash (sha256's first 10 hex).
    let line = text.lines().find(|l| l.starts_with("dreamy-v2\t")).unwrap();
    let sha = atelier::models::hash::sha256_file(&sd.join("dreamy-v2.safetensors")).unwrap();
    assert!(line.ends_with(&format!("GB\t{}", &sha[..10])), "{line}");
    let err = stderr(&o);
    assert!(
        err.lines().any(|l| l.starts_with("skipped")
            && l.contains("sd3.safetensors")
            && l.contains("Stable Diffusion 3")),
        "{err}"
    );
    // The listed file generates, like a folder.
    let out = tmp.path().join("out.png");
    let model = sd.join("dreamy-v2.safetensors");
    let o = atelier(
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a red cat",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--no-gallery",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Its "Model hash" is AUTOMATIC1111's, so other tools find the same checkpoint.
    let meta = atelier::gallery::metadata::read_embedded(&std::fs::read(&out).unwrap())
        .meta()
        .unwrap();
    assert_eq!(meta.model_hash.as_deref(), Some(&sha[..10]));
    assert_eq!(meta.model_name.as_deref(), Some("dreamy-v2"));
}

/// `atelier generate` of a 64 x 64 picture of `prompt` with `model`, `seed` and `steps`, into
/// `out` only (no gallery), followed by `extra`.
fn small_generate(
    model: &Path,
    prompt: &str,
    negative: &str,
    seed: u32,
    steps: u32,
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "generate".into(),
        "--model".into(),
        model.to_string_lossy().into_owned(),
        "--prompt".into(),
        prompt.into(),
        "--negative".into(),
        negative.into(),
        "--seed".into(),
        seed.to_string(),
        "--steps".into(),
        steps.to_string(),
        "--width".into(),
        "64".into(),
        "--height".into(),
        "64".into(),
        "--no-gallery".into(),
        "--out".into(),
        out.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `atelier` with owned arguments.
fn atelier_owned(args: &[String], home: &Path) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    atelier(&args, home)
}

/// A small photo-like image: smooth ramps, a disc and some noise.
fn adjust_input(w: u32, h: u32, seed: u32) -> image::RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    image::RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state >> 28) as u8;
        let disc = (x as i32 - 20).pow(2) + (y as i32 - 12).pow(2) < 64;
        let base = if disc { [230, 180, 60] } else { [40, 90, 170] };
        image::Rgb([
            base[0] / 2 + (x * 60 / w) as u8 + n,
            base[1] / 2 + (y * 60 / h) as u8 + n,
            base[2] / 2 + n,
        ])
    })
}

fn adjust_stack() -> atelier::postfx::Stack {
    use atelier::postfx::{Contrast, Denoise, Exposure, Op, Stack, UnsharpMask, Vignette};
    Stack::from_ops([
        Op::Exposure(Exposure { ev: 0.4 }),
        Op::Contrast(Contrast { amount: 0.2 }),
        Op::Denoise(Denoise {
            radius_px: 2,
            strength: 0.4,
        }),
        Op::UnsharpMask(UnsharpMask {
            radius_px: 1.2,
            amount: 0.7,
            threshold: 0.0,
        }),
        Op::Vignette(Vignette {
            amount: -0.3,
            midpoint: 0.5,
            feather: 0.5,
        }),
    ])
}

#[test]
fn adjust_applies_a_stack_on_the_cpu_and_the_gpu_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let input = adjust_input(48, 30, 1);
    input.save(path("in.png")).unwrap();
    let stack = adjust_stack();
    std::fs::write(path("stack.json"), stack.to_json().unwrap()).unwrap();

    let cpu = atelier(
        &[
            "adjust",
            &path("in.png"),
            "--stack",
            &path("stack.json"),
            "--out",
            &path("cpu.png"),
            "--cpu",
        ],
        tmp.path(),
    );
    assert!(cpu.status.success(), "{}", stderr(&cpu));
    assert!(String::from_utf8_lossy(&cpu.stdout).contains("(CPU)"));
    let cpu_out = common::open_image(path("cpu.png")).to_rgb8();
    assert_eq!(cpu_out, atelier::postfx::apply_to_rgb8(&input, &stack));

    let gpu = atelier(
        &[
            "adjust",
            &path("in.png"),
            "--stack",
            &path("stack.json"),
            "--out",
            &path("gpu.png"),
        ],
        tmp.path(),
    );
    assert!(gpu.status.success(), "{}", stderr(&gpu));
    let stdout = String::from_utf8_lossy(&gpu.stdout);
    // Built with ATELIER_SKIP_GPU_TESTS=1 (no adapter allowed): the CPU fallback is checked.
    assert!(
        cfg!(skip_gpu_tests) || stdout.contains("on the GPU: ") && stdout.contains("(GPU)"),
        "the GPU path was not used (CI installs lavapipe):\n{stdout}\n{}",
        stderr(&gpu)
    );
    let gpu_out = common::open_image(path("gpu.png")).to_rgb8();
    assert_eq!(gpu_out.dimensions(), cpu_out.dimensions());
    let worst = gpu_out
        .as_raw()
        .iter()
        .zip(cpu_out.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    assert!(worst <= 1, "GPU and CPU outputs differ by {worst}/255");
    // No temporary file is left behind.
    assert!(!tmp.path().join(".gpu.png.part").exists());
}

#[test]
fn adjust_writes_several_inputs_into_a_folder_and_never_over_an_input() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    std::fs::create_dir(tmp.path().join("b")).unwrap();
    adjust_input(20, 16, 2).save(path("a.png")).unwrap();
    adjust_input(9, 7, 3).save(path("b/b.png")).unwrap();
    std::fs::write(path("stack.json"), adjust_stack().to_json().unwrap()).unwrap();
    let run = |extra: &[&str]| {
        let stack = path("stack.json");
        let mut args = vec!["adjust", "--stack", &stack, "--cpu"];
        args.extend_from_slice(extra);
        atelier(&args, tmp.path())
    };

    let ok = run(&[&path("a.png"), &path("b/b.png"), "--out", &path("out")]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        common::open_image(path("out/a.png")).to_rgb8().dimensions(),
        (20, 16)
    );
    assert_eq!(
        common::open_image(path("out/b.png")).to_rgb8().dimensions(),
        (9, 7)
    );

    // Several inputs and --out an existing file.
    let bad = run(&[&path("a.png"), &path("b/b.png"), "--out", &path("a.png")]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("must be a folder"),
        "{}",
        stderr(&bad)
    );

    // --out is the input itself, or a folder that would write over an input.
    let before = std::fs::read(path("a.png")).unwrap();
    let same = run(&[&path("a.png"), "--out", &path("a.png")]);
    assert!(!same.status.success());
    assert!(
        stderr(&same).contains("refusing to overwrite"),
        "{}",
        stderr(&same)
    );
    let into_own_folder = run(&[&path("b/b.png"), &path("a.png"), "--out", &path("b")]);
    assert!(!into_own_folder.status.success());
    assert!(stderr(&into_own_folder).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(path("a.png")).unwrap(), before);

    // Two inputs with one name would collide.
    std::fs::copy(path("a.png"), path("b/a.png")).unwrap();
    let clash = run(&[&path("a.png"), &path("b/a.png"), "--out", &path("out2")]);
    assert!(!clash.status.success());
    assert!(
        stderr(&clash).contains("would both be written"),
        "{}",
        stderr(&clash)
    );

    // A broken stack file is one clear line.
    std::fs::write(path("bad.json"), "{\"version\": 99, \"ops\": []}").unwrap();
    let newer = atelier(
        &[
            "adjust",
            &path("a.png"),
            "--stack",
            &path("bad.json"),
            "--out",
            &path("x.png"),
            "--cpu",
        ],
        tmp.path(),
    );
    assert!(!newer.status.success());
    assert!(stderr(&newer).contains("version 99"), "{}", stderr(&newer));
}

#[test]
fn adjust_results_carry_the_inputs_settings_or_strip_them() {
    use atelier::gallery::metadata::{self, ImageMeta};
    let tmp = tempfile::tempdir().unwrap();
    let path = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    let meta = ImageMeta {
        uid: "0123abcd".into(),
        prompt: "a private prompt".into(),
        seed: Some(11),
        ..Default::default()
    };
    let input = adjust_input(24, 16, 4);
    let png = metadata::encode_png(&input, &metadata::png_chunks(&meta)).unwrap();
    std::fs::write(path("made.png"), png).unwrap();
    adjust_input(24, 16, 5).save(path("photo.png")).unwrap();
    std::fs::write(path("stack.json"), adjust_stack().to_json().unwrap()).unwrap();
    let stack = path("stack.json");
    let run = |input: &str, out: &str, strip: bool| {
        let mut args = vec!["adjust", input, "--stack", &stack, "--cpu", "--out", out];
        if strip {
            args.push("--strip-metadata");
        }
        let o = atelier(&args, tmp.path());
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(out).unwrap()
    };
    // Kept: the input's settings, marked as adjusted from it, and the AI marking.
    let kept = run(&path("made.png"), &path("kept.png"), false);
    let back = metadata::read_embedded(&kept)
        .meta()
        .expect("settings carried");
    assert_eq!(
        (back.prompt.as_str(), back.seed),
        ("a private prompt", Some(11))
    );
    assert_eq!(back.parent.as_deref(), Some("0123abcd"));
    assert_eq!(
        back.lineage,
        Some(atelier::gallery::metadata::Lineage::Adjust)
    );
    assert!(
        back.adjustments.is_none(),
        "applied, not stored to apply again"
    );
    assert!(String::from_utf8_lossy(&kept).contains(metadata::IPTC_AI_SOURCE));
    // The same as JPEG by the name.
    let jpeg = run(&path("made.png"), &path("kept.jpg"), false);
    assert_eq!(
        image::guess_format(&jpeg).unwrap(),
        image::ImageFormat::Jpeg
    );
    assert_eq!(
        metadata::read_embedded(&jpeg).meta().unwrap().prompt,
        "a private prompt"
    );
    // Stripped: the marking only.
    let stripped = run(&path("made.png"), &path("stripped.png"), true);
    let text = String::from_utf8_lossy(&stripped);
    assert!(!text.contains("a private prompt"));
    assert!(text.contains(metadata::IPTC_AI_SOURCE));
    // A photo carries nothing it did not have: no settings, no AI marking.
    let photo = run(&path("photo.png"), &path("photo-out.png"), false);
    assert!(metadata::read_embedded(&photo).meta().is_none());
    assert!(!String::from_utf8_lossy(&photo).contains(metadata::IPTC_AI_SOURCE));
}

#[test]
fn a_panicking_generation_fails_with_a_message_instead_of_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let mut child = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args([
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "boom",
        ])
        .args(["--steps", "2", "--width", "64", "--height", "64"])
        .env("ATELIER_HOME", tmp.path())
        .env("ATELIER_TEST_PANIC_PROMPT", "boom")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("atelier generate hung after its job panicked");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: internal error") && last.contains("\"boom\" panics"),
        "{err}"
    );
}

/// Every picture of the gallery in `home`: (prompt, seed) -> pixels.
fn gallery_pictures(home: &Path) -> std::collections::BTreeMap<(String, u64), Vec<u8>> {
    let c = atelier::gallery::Catalog::open_read_only(&home.join("catalog.db")).unwrap();
    c.records(&atelier::gallery::Query::default(), 0, 1000)
        .unwrap()
        .into_iter()
        .map(|r| {
            let pixels = common::open_image(home.join(&r.file)).to_rgb8().into_raw();
            ((r.meta.prompt.clone(), r.meta.seed.unwrap()), pixels)
        })
        .collect()
}

#[test]
fn a_killed_queue_resumes_exactly_its_unfinished_jobs_bit_for_bit() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let m = model.to_string_lossy().into_owned();
    // Two jobs of three pictures each (each job one pass of the engine).
    let args = [
        "generate",
        "--model",
        &m,
        "--prompt",
        "a red kite",
        "--prompt",
        "a blue boat",
        "--batch",
        "3",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "100",
        "--sampler",
        "euler-a",
    ];
    let whole = tmp.path().join("whole");
    let o = atelier(&args, &whole);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = gallery_pictures(&whole);
    assert_eq!(expected.len(), 6);

    // The same queue, killed (SIGKILL) once its second picture is saved: mid-way through
    // the first job, the second not started.
    let killed = tmp.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .env("ATELIER_HOME", &killed)
        .env("ATELIER_CRASH_POINT", "generate-saved-2")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_lines = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr_lines.lines() {
        let line = line.unwrap();
        let reached = line.contains("ATELIER_CRASH_POINT generate-saved-2");
        seen.push(line);
        if reached {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.iter().any(|l| l.contains("ATELIER_CRASH_POINT")),
        "never reached the crash point: {seen:?}"
    );
    assert_eq!(gallery_pictures(&killed).len(), 2);

    // A new process finds exactly the unfinished jobs.
    let list = atelier(&["queue", "list", "--json"], &killed);
    assert!(list.status.success(), "{}", stderr(&list));
    let jobs: Vec<serde_json::Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0]["prompt"], "a red kite");
    assert_eq!(jobs[0]["done"], serde_json::json!([0, 1]));
    assert_eq!(jobs[0]["remaining"], 1);
    assert_eq!(jobs[1]["prompt"], "a blue boat");
    assert_eq!(jobs[1]["remaining"], 3);

    // Resumed: the four missing pictures, bit for bit those of the uninterrupted run.
    let resume = atelier(&["queue", "resume", "--all"], &killed);
    assert!(resume.status.success(), "{}", stderr(&resume));
    assert_eq!(gallery_pictures(&killed), expected);
    let list = atelier(&["queue", "list", "--json"], &killed);
    assert!(
        list.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
    // Nothing left behind for the jobs.
    let jobs_dir = killed.join("jobs");
    assert!(!jobs_dir.exists() || std::fs::read_dir(&jobs_dir).unwrap().next().is_none());
}

#[test]
fn queue_discard_forgets_a_job_and_bad_ids_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let home = tmp.path().join("home");
    // A job recorded and never run, as a crash before its first step leaves it.
    let request = atelier::generation::GenerationRequest {
        model_dir: model.clone(),
        prompt: "never made".into(),
        ..Default::default()
    };
    let uid = atelier::gallery::Gallery::open(&home)
        .unwrap()
        .add_job(&request, &Default::default())
        .unwrap()
        .uid;
    let o = atelier(&["queue", "list"], &home);
    assert!(String::from_utf8_lossy(&o.stdout).contains("never made"));
    let o = atelier(&["queue", "resume", "zzz"], &home);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no unfinished job \"zzz\""),
        "{}",
        stderr(&o)
    );
    let o = atelier(&["queue", "discard", &uid[..6]], &home);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = atelier(&["queue", "list"], &home);
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("no unfinished jobs"));
}

#[test]
fn version_names_the_backends_and_the_man_page_and_completions_come_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let o = atelier(&["--version"], tmp.path());
    let version = String::from_utf8_lossy(&o.stdout);
    assert!(
        version.starts_with(&format!("atelier {} (cpu", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let out = tmp.path().join("share");
    let o = atelier(
        &["dev", "man-page", "--out", out.to_str().unwrap()],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let man = std::fs::read_to_string(out.join("atelier.1")).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH atelier"),
        "{man:.200}"
    );
    // Every subcommand is in the page, as the CLI defines it.
    for sub in ["generate", "queue", "gallery", "adjust"] {
        assert!(man.contains(sub), "{sub} missing from the man page");
    }
    let o = atelier(
        &["dev", "completions", "--out", out.to_str().unwrap()],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bash = std::fs::read_to_string(out.join("atelier.bash")).unwrap();
    assert!(
        bash.contains("--negative") && bash.contains("queue"),
        "{bash:.200}"
    );
    assert!(out.join("_atelier").is_file() && out.join("atelier.fish").is_file());
}

/// LoRAs on the command line: `--lora FILE:WEIGHT` and A1111's `<lora:NAME:WEIGHT>` (found by
/// name in a `--model-dir` folder's `models/Lora`) make the same picture; the picture carries
/// A1111's `Lora hashes`; a LoRA for another family and a tag naming no file are clear errors.
#[test]
fn loras_from_flags_and_prompt_tags() {
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let model = reference.join("tiny-sd15");
    let lora = reference.join("lora/sd15-kohya.safetensors");
    let webui = tmp.path().join("webui");
    std::fs::create_dir_all(webui.join("models/Lora/styles")).unwrap();
    std::fs::copy(
        &lora,
        webui.join("models/Lora/styles/sd15-kohya.safetensors"),
    )
    .unwrap();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let gen = |extra: &[&str], prompt: &str, out: &Path| {
        atelier_owned(
            &small_generate(&model, prompt, "", 5, 3, out, extra),
            tmp.path(),
        )
    };
    let by_flag = tmp.path().join("flag.png");
    let o = gen(
        &["--lora", &format!("{}:0.6", path(&lora))],
        "a red cat",
        &by_flag,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let by_tag = tmp.path().join("tag.png");
    let o = gen(
        &["--model-dir", &path(&webui)],
        "a red cat <lora:sd15-kohya:0.6>",
        &by_tag,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plain = tmp.path().join("plain.png");
    let o = gen(&[], "a red cat", &plain);
    assert!(o.status.success(), "{}", stderr(&o));
    let pixels = |p: &Path| common::open_image(p).to_rgb8();
    assert_eq!(pixels(&by_flag), pixels(&by_tag), "the tag is the flag");
    assert!(common::mean_abs_diff(&pixels(&by_flag), &pixels(&plain)) > 2.0);
    // A1111's LoRA hash: sha256 of the file after its safetensors header, 12 hex digits.
    let bytes = std::fs::read(&lora).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let sha: String = sha2::Sha256::digest(&bytes[8 + header..])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let meta = atelier::gallery::metadata::read_embedded(&std::fs::read(&by_tag).unwrap())
        .meta()
        .unwrap();
    assert_eq!(
        meta.extra.get("Lora hashes").map(String::as_str),
        Some(format!("sd15-kohya: {}", &sha[..12]).as_str())
    );
    assert_eq!(meta.prompt, "a red cat <lora:sd15-kohya:0.6>");
    // Another family's LoRA, and a name no folder has.
    let out = tmp.path().join("no.png");
    let o = gen(
        &[
            "--lora",
            &path(&reference.join("lora/sdxl-kohya.safetensors")),
        ],
        "x",
        &out,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("a LoRA for SDXL"), "{}", stderr(&o));
    let o = gen(&[], "x <lora:nowhere:1>", &out);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no LoRA file named nowhere"),
        "{}",
        stderr(&o)
    );
    // A checkpoint given as a LoRA says what it is.
    let o = gen(
        &["--lora", &path(&reference.join("tiny-sd2v-ldm.ckpt"))],
        "x",
        &out,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a LoRA"), "{}", stderr(&o));
    assert!(!out.exists());
    // Modules that match nothing are applied around and reported, by count and name.
    let mut tensors = candle_core::safetensors::load(&lora, &candle_core::Device::Cpu).unwrap();
    let z = candle_core::Tensor::zeros((4, 8), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    tensors.insert(
        "lora_unet_no_such_block_to_q.lora_down.weight".into(),
        z.clone(),
    );
    tensors.insert(
        "lora_unet_no_such_block_to_q.lora_up.weight".into(),
        z.t().unwrap(),
    );
    let partial = tmp.path().join("partial.safetensors");
    candle_core::safetensors::save(&tensors, &partial).unwrap();
    let o = gen(&["--lora", &path(&partial)], "x", &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning: partial: 1 of") && err.contains("lora_unet_no_such_block_to_q"),
        "{err}"
    );
}

/// `--vae`: a VAE file in the original names (as `vae-ft-mse-840000-ema-pruned.safetensors`
/// ships), one in diffusers names (as `sdxl_vae.safetensors`), and a diffusers `vae/` folder
/// replace the model's VAE; the same weights give the same pixels, other weights other pixels;
/// the picture names the VAE; a LoRA given as the VAE is refused.
#[test]
fn a_vae_file_or_folder_replaces_the_models_vae() {
    use candle_core::{Device, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let path = |p: &Path| p.to_string_lossy().into_owned();
    // The model's own VAE, in the original names without a prefix.
    let single = tmp.path().join("model.safetensors");
    atelier::models::export::write_single_file(&model, &single, Default::default()).unwrap();
    let all = candle_core::safetensors::load(&single, &Device::Cpu).unwrap();
    let ldm_vae: std::collections::HashMap<String, Tensor> = all
        .into_iter()
        .filter_map(|(k, t)| Some((k.strip_prefix("first_stage_model.")?.to_owned(), t)))
        .collect();
    let same_ldm = tmp.path().join("same-vae.safetensors");
    candle_core::safetensors::save(&ldm_vae, &same_ldm).unwrap();
    // Another VAE: the decoder's output shifted.
    let mut other = ldm_vae.clone();
    let bias = other["decoder.conv_out.bias"].clone();
    other.insert("decoder.conv_out.bias".into(), (bias + 0.3).unwrap());
    let other_vae = tmp.path().join("other-vae.safetensors");
    candle_core::safetensors::save(&other, &other_vae).unwrap();
    let diffusers_named = model.join("vae/diffusion_pytorch_model.safetensors");
    let gen = |vae: Option<&Path>, out: &Path| {
        let vae = vae.map(path);
        let extra: Vec<&str> = vae.iter().flat_map(|v| ["--vae", v.as_str()]).collect();
        atelier_owned(
            &small_generate(&model, "a red cat", "", 2, 2, out, &extra),
            tmp.path(),
        )
    };
    let pixels = |p: &Path| common::open_image(p).to_rgb8();
    let own = tmp.path().join("own.png");
    assert!(gen(None, &own).status.success());
    for (vae, same) in [
        (same_ldm.as_path(), true),
        (diffusers_named.as_path(), true),
        (model.join("vae").as_path(), true),
        (other_vae.as_path(), false),
    ] {
        let out = tmp.path().join("with-vae.png");
        let o = gen(Some(vae), &out);
        assert!(o.status.success(), "{vae:?}: {}", stderr(&o));
        let d = common::mean_abs_diff(&pixels(&out), &pixels(&own));
        if same {
            assert_eq!(d, 0.0, "{vae:?}");
        } else {
            assert!(d > 2.0, "{vae:?}: {d}");
            let meta = atelier::gallery::metadata::read_embedded(&std::fs::read(&out).unwrap())
                .meta()
                .unwrap();
            assert_eq!(meta.extra.get("VAE").map(String::as_str), Some("other-vae"));
            assert_eq!(meta.extra.get("VAE hash").map(String::len), Some(10));
        }
    }
    let lora = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/lora/sd15-kohya.safetensors");
    let out = tmp.path().join("no.png");
    let o = gen(Some(&lora), &out);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a VAE"), "{}", stderr(&o));
}

/// `--prediction` overrides what the model predicts (for an SD 2.x checkpoint without its
/// `.yaml`): `v` on a v-prediction model changes nothing, `eps` changes the picture; `atelier
/// models` says, for a single file, what was decided and how.
#[test]
fn prediction_can_be_overridden_and_models_says_how_it_was_decided() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/tiny-sd2v-ldm.ckpt");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let gen = |prediction: Option<&str>, out: &Path| {
        let extra: Vec<&str> = prediction
            .map(|p| vec!["--prediction", p])
            .unwrap_or_default();
        let args = small_generate(&ckpt, "a red cat", "", 4, 3, out, &extra);
        let o = atelier_owned(&args, tmp.path());
        assert!(o.status.success(), "{}", stderr(&o));
        common::open_image(out).to_rgb8()
    };
    let own = gen(None, &tmp.path().join("a.png"));
    let v = gen(Some("v"), &tmp.path().join("b.png"));
    let eps = gen(Some("eps"), &tmp.path().join("c.png"));
    assert_eq!(own, v);
    assert!(common::mean_abs_diff(&own, &eps) > 2.0);
    let o = atelier(&["models", &path(&ckpt)], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tiny-sd2v-ldm: predicts v: from the file's own configs"),
        "{}",
        stderr(&o)
    );
}

/// Embeddings on the command line: found by the word a prompt uses in a `--model-dir`
/// folder's `embeddings` (as A1111 keeps them), the same picture as `--embedding FILE`, and an
/// embedding of the wrong width (made for another model) is a clear error.
#[test]
fn embeddings_are_found_by_name_and_a_wrong_width_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let model = reference.join("tiny-sd15");
    let emb = reference.join("embeddings/bad-hands.pt");
    let webui = tmp.path().join("webui");
    std::fs::create_dir_all(webui.join("embeddings/negatives")).unwrap();
    std::fs::copy(&emb, webui.join("embeddings/negatives/bad-hands.pt")).unwrap();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let gen = |extra: &[&str], negative: &str, out: &Path| {
        atelier_owned(
            &small_generate(&model, "a red cat", negative, 6, 3, out, extra),
            tmp.path(),
        )
    };
    let found = tmp.path().join("found.png");
    let o = gen(&["--model-dir", &path(&webui)], "blurry, bad-hands", &found);
    assert!(o.status.success(), "{}", stderr(&o));
    let given = tmp.path().join("given.png");
    let o = gen(&["--embedding", &path(&emb)], "blurry, bad-hands", &given);
    assert!(o.status.success(), "{}", stderr(&o));
    let plain = tmp.path().join("plain.png");
    let o = gen(&[], "blurry, bad-hands", &plain);
    assert!(o.status.success(), "{}", stderr(&o));
    let px = |p: &Path| common::open_image(p).to_rgb8();
    assert_eq!(px(&found), px(&given));
    assert!(common::mean_abs_diff(&px(&found), &px(&plain)) > 2.0);
    // 768-wide vectors for this 32-wide text encoder.
    let wrong = tmp.path().join("wrong-width.safetensors");
    let t =
        candle_core::Tensor::zeros((1, 768), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("emb_params".to_owned(), t)]),
        &wrong,
    )
    .unwrap();
    let out = tmp.path().join("no.png");
    let o = gen(&["--embedding", &path(&wrong)], "wrong-width", &out);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("wrong-width.safetensors") && err.contains("32-wide"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `--controlnet` groups on the command line: the control changes the picture and the
/// picture's parameters name it as sd-webui-controlnet does; the options belong to the
/// `--controlnet` before them; a control image of another size is resized and said so; an
/// unreadable control image, a ControlNet for another model, a corrupt ControlNet file and
/// options without a `--controlnet` are one-line errors naming the problem.
#[test]
fn controlnet_groups_and_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let model = fixtures.join("tiny-sd15");
    let net = fixtures.join("controlnet/sd15-a");
    let net_b = fixtures.join("controlnet/sd15-b");
    let image = fixtures.join("controlnet/control-a.png");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let run = |out: &Path, extra: &[&str]| {
        atelier_owned(
            &small_generate(&model, "a red cat", "", 3, 3, out, extra),
            tmp.path(),
        )
    };
    let pixels = |p: &Path| common::open_image(p).to_rgb8();
    let plain = tmp.path().join("plain.png");
    assert!(run(&plain, &[]).status.success());
    let controlled = tmp.path().join("controlled.png");
    let o = run(
        &controlled,
        &[
            "--controlnet",
            &s(&net),
            "--control-image",
            &s(&image),
            "--control-scale",
            "0.8",
            "--controlnet",
            &s(&net_b),
            "--control-end",
            "0.5",
            "--control-image",
            &s(&image),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(common::mean_abs_diff(&pixels(&controlled), &pixels(&plain)) > 2.0);
    let meta = atelier::gallery::metadata::read_embedded(&std::fs::read(&controlled).unwrap())
        .meta()
        .unwrap();
    let first = meta.extra.get("ControlNet 0").cloned().unwrap_or_default();
    let second = meta.extra.get("ControlNet 1").cloned().unwrap_or_default();
    assert!(
        first.contains("Model: sd15-a")
            && first.contains("Weight: 0.8")
            && first.contains("Guidance End: 1"),
        "{first}"
    );
    assert!(
        second.contains("Model: sd15-b")
            && second.contains("Weight: 1")
            && second.contains("Guidance End: 0.5"),
        "{second}"
    );

    // A pen-on-paper drawing through the scribble preprocessor is the same control image as
    // the white-on-black one, so the same picture.
    let paper = tmp.path().join("paper.png");
    let mut inverted = pixels(&image);
    image::imageops::invert(&mut inverted);
    inverted.save(&paper).unwrap();
    let (one, two) = (tmp.path().join("one.png"), tmp.path().join("two.png"));
    let o = run(
        &one,
        &["--controlnet", &s(&net), "--control-image", &s(&image)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &two,
        &[
            "--controlnet",
            &s(&net),
            "--control-image",
            &s(&paper),
            "--control-preprocessor",
            "scribble",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(pixels(&one), pixels(&two));

    // Another size: resized, and the user is told.
    let small = tmp.path().join("small.png");
    image::imageops::resize(
        &pixels(&image),
        40,
        24,
        image::imageops::FilterType::Triangle,
    )
    .save(&small)
    .unwrap();
    let o = run(
        &tmp.path().join("resized.png"),
        &["--controlnet", &s(&net), "--control-image", &s(&small)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("40x24; it was resized to 64x64"),
        "{}",
        stderr(&o)
    );

    // Errors: one line naming the problem, no picture, no panic.
    let garbage = tmp.path().join("garbage.png");
    std::fs::write(&garbage, b"not a picture at all").unwrap();
    let corrupt = tmp.path().join("corrupt-controlnet");
    common::copy_dir(&net, &corrupt);
    let weights = corrupt.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let xl = fixtures.join("controlnet/sdxl-a");
    for (extra, expect) in [
        (
            vec!["--controlnet", &s(&net), "--control-image", &s(&garbage)],
            "garbage.png",
        ),
        (
            vec!["--controlnet", &s(&xl), "--control-image", &s(&image)],
            "a ControlNet for SDXL",
        ),
        (
            vec!["--controlnet", &s(&corrupt), "--control-image", &s(&image)],
            "corrupt-controlnet",
        ),
        (
            vec!["--control-scale", "0.5"],
            "--control-scale needs a --controlnet",
        ),
        (vec!["--controlnet", &s(&net)], "needs --control-image"),
        (
            vec![
                "--controlnet",
                &s(&net),
                "--control-image",
                &s(&image),
                "--control-start",
                "0.6",
                "--control-end",
                "0.4",
            ],
            "start < end",
        ),
    ] {
        let out = tmp.path().join("never.png");
        let o = run(&out, &extra);
        let err = stderr(&o);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists());
    }
}

/// `--controlnet auto` is the model's own ControlNet: one named after the model beside it
/// (as Atelier Mini Scribble lies beside Atelier Mini); the same picture as naming it, and a
/// clear error when there is none.
#[test]
fn controlnet_auto_is_the_models_own() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let models = tmp.path().join("models");
    let model = models.join("tiny-ref");
    common::copy_dir(&fixtures.join("tiny-sd15"), &model);
    let image = fixtures.join("controlnet/control-a.png");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let run = |out: &Path, net: &str| {
        atelier_owned(
            &small_generate(
                &model,
                "a red cat",
                "",
                3,
                3,
                out,
                &["--controlnet", net, "--control-image", &s(&image)],
            ),
            tmp.path(),
        )
    };
    let none = tmp.path().join("none.png");
    let o = run(&none, "auto");
    assert!(!o.status.success() && !none.exists());
    assert!(
        stderr(&o).contains("no ControlNet made for tiny-ref"),
        "{}",
        stderr(&o)
    );
    let own = models.join("tiny-ref-scribble");
    common::copy_dir(&fixtures.join("controlnet/sd15-a"), &own);
    let (auto, named) = (tmp.path().join("auto.png"), tmp.path().join("named.png"));
    let o = run(&auto, "auto");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run(&named, &s(&own)).status.success());
    assert_eq!(
        common::open_image(&auto).to_rgb8(),
        common::open_image(&named).to_rgb8()
    );
    let meta = atelier::gallery::metadata::read_embedded(&std::fs::read(&auto).unwrap())
        .meta()
        .unwrap();
    let entry = meta.extra.get("ControlNet 0").cloned().unwrap_or_default();
    assert!(entry.contains("Model: tiny-ref-scribble"), "{entry}");
}

/// `--threads N` sets the CPU pool the models run on, and the device line says so; 0 is
/// refused.
#[test]
fn threads_flag_sets_the_cpu_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let o = atelier(&["--threads", "1", "models"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(all.contains("CPU, 1 thread "), "{all}");
    let o = atelier(&["--threads", "3", "models"], tmp.path());
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(all.contains("CPU, 3 threads"), "{all}");
    let o = atelier(&["--threads", "0", "models"], tmp.path());
    assert!(!o.status.success());
}

/// `generate --verbose` prints each job's stage timings: the model, the text encoder, the
/// steps (count, total, median) and the decode.
#[test]
fn verbose_generate_prints_stage_timings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(TinyKind::Sd15);
    let out = tmp.path().join("v.png");
    let o = atelier_owned(
        &small_generate(&model, "a red cat", "", 1, 3, &out, &["--verbose"]),
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for line in [
        "stages:", "model ", "text ", "3 steps ", "a step)", "decode ",
    ] {
        assert!(err.contains(line), "{line:?} missing:\n{err}");
    }
    // Without --verbose, no timings.
    let o = atelier_owned(
        &small_generate(&model, "a red cat", "", 1, 3, &out, &[]),
        tmp.path(),
    );
    assert!(!stderr(&o).contains("stages:"));
}
