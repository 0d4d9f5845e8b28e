//! The hostile-input corpus: files and texts made to break a loader (bombs, truncations,
//! lies in headers, odd encodings, absurd values). Small ones are committed in
//! `tests/hostile/` (made by `tests/hostile/make_corpus.py`), big ones are made here. Each
//! must give a clear error or a safe result: never a panic, an unbounded allocation or a
//! hang (every case runs under a time limit).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{atelier, stderr};
use std::time::Duration;

use atelier::diffusion::tiny::TinyKind;
use atelier::gallery::metadata::{parse_a1111, parse_comfyui, read_embedded};
use atelier::gallery::Gallery;
use atelier::postfx::Stack;

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/hostile")
        .join(rel)
}

/// Runs `f` on another thread and fails if it takes longer than `limit` (a hang).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        // Not `what`: a hostile case's text may hold NUL, which no thread name can.
        .name("hostile-case".to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("a thread for the case");
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?} (or panicked)"))
}

/// A one-line error naming `needle`, a failure code, no panic.
fn assert_clear_failure(o: &Output, needle: &str, what: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "{what}: succeeded\n{err}");
    assert!(!err.contains("panicked"), "{what}: panicked\n{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{what}: {err}");
    assert!(last.contains(needle), "{what}: {needle:?} not in {last:?}");
}

// ---- images ---------------------------------------------------------------------------

#[test]
fn hostile_images_load_safely_or_fail_with_their_name() {
    use atelier::imageio::load_image_file;
    let dir = tempfile::tempdir().unwrap();
    // Pixel-count bomb: 100,000 x 100,000 claimed in a few bytes.
    let bomb = dir.path().join("pixel-bomb.png");
    std::fs::write(&bomb, common::png_claiming(100_000, 100_000)).unwrap();
    for (path, expect_ok) in [
        (bomb, false),
        (corpus("images/truncated.png"), false),
        (corpus("images/four-bytes.jpg"), false),
        (corpus("images/cmyk.jpg"), true),
        (corpus("images/gray16.png"), true),
        (corpus("images/animated.webp"), true),
        (corpus("images/exif-rotated.jpg"), true),
    ] {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let p = path.clone();
        let result = within(Duration::from_secs(30), &name, move || {
            load_image_file(&p).map(|i| i.to_rgb8())
        });
        match (result, expect_ok) {
            (Ok(img), true) => assert!(img.width() > 0 && img.height() > 0, "{name}"),
            (Err(e), false) => assert!(e.to_string().contains(&name), "{name}: {e}"),
            (Ok(_), false) => panic!("{name} should be refused"),
            (Err(e), true) => panic!("{name} should load: {e}"),
        }
    }
    // The orientation tag is applied: 40 x 20 stored, shown 20 x 40.
    let rotated = load_image_file(&corpus("images/exif-rotated.jpg")).unwrap();
    assert_eq!((rotated.width(), rotated.height()), (20, 40));
    // CMYK comes out as the colours it describes, not inverted ink.
    let cmyk = load_image_file(&corpus("images/cmyk.jpg"))
        .unwrap()
        .to_rgb8();
    let corner = cmyk.get_pixel(31, 23).0;
    assert!(corner[0] > 180 && corner[1] > 180, "{corner:?}");
    // A 16-bit picture keeps its range when reduced to 8 bits.
    let gray = load_image_file(&corpus("images/gray16.png"))
        .unwrap()
        .to_rgb8();
    let max = gray.pixels().map(|p| p.0[0]).max().unwrap();
    assert!(max > 200, "{max}");
}

#[test]
fn hostile_png_chunks_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // zTXt and iTXt that inflate to 64 MB; an iCCP profile that inflates to 64 MB.
    let big = common::zlib_bomb(64 << 20);
    let mut ztxt = b"parameters\0\0".to_vec();
    ztxt.extend_from_slice(&big);
    let mut itxt = b"atelier\0\x01\0\0\0".to_vec();
    itxt.extend_from_slice(&big);
    let mut iccp = b"huge profile\0\0".to_vec();
    iccp.extend_from_slice(&big);
    // iTXt that claims UTF-8 but is not.
    let bad_utf8 = b"parameters\0\0\0\0\0\xff\xfe not utf-8 \xc3\x28".to_vec();
    let mut g = Gallery::open(&home).unwrap();
    for (name, kind, data) in [
        ("ztxt-bomb.png", b"zTXt", ztxt),
        ("itxt-bomb.png", b"iTXt", itxt),
        ("iccp-bomb.png", b"iCCP", iccp),
        ("bad-utf8.png", b"iTXt", bad_utf8),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, common::png_with_chunk(kind, &data)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let embedded = within(Duration::from_secs(30), name, move || read_embedded(&bytes));
        assert!(
            embedded
                .chunks
                .iter()
                .all(|(_, v)| v.len() <= atelier::gallery::metadata::TEXT_LIMIT),
            "{name}"
        );
        // The pixels are fine: imported (or refused with the name), never inflated whole.
        match g.import_file(&path) {
            Ok(r) => assert!(r.meta.extra.values().all(|v| v.len() < 1 << 20), "{name}"),
            Err(e) => assert!(e.to_string().contains(name), "{name}: {e}"),
        }
    }
}

// ---- metadata -------------------------------------------------------------------------

#[test]
fn hostile_metadata_parses_in_bounded_time() {
    // A1111 parameters of 1 MB: a long prompt, many fields, a runaway quoted value.
    let mut text = "word, ".repeat(150_000);
    text.push_str("\nNegative prompt: ");
    text.push_str(&"(bad:1.2), ".repeat(10_000));
    text.push('\n');
    for i in 0..5_000 {
        text.push_str(&format!("Field {i}: value {i}, "));
    }
    text.push_str("Steps: 20, Seed: 5, Lora hashes: \"");
    text.push_str(&"x: 0123, ".repeat(10_000));
    assert!(text.len() > 1 << 20);
    let meta = within(Duration::from_secs(20), "1 MB of A1111 text", move || {
        parse_a1111(&text)
    });
    assert!(meta.prompt.starts_with("word, word"));
    assert_eq!(meta.steps, Some(20));

    // ComfyUI graphs: a cycle, links to missing nodes, links of the wrong shape, deep JSON.
    let cycle = r#"{"1":{"class_type":"KSampler","inputs":{"seed":3,"positive":["2",0],"negative":["9",0]}},
                    "2":{"class_type":"CLIPTextEncode","inputs":{"text":["1",0],"clip":["2",0]}}}"#;
    let missing = r#"{"1":{"class_type":"KSampler","inputs":{"positive":["404",0],"negative":7}}}"#;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for graph in [
        cycle.to_string(),
        missing.to_string(),
        deep,
        "null".into(),
        "{".into(),
    ] {
        let meta = within(Duration::from_secs(10), "a ComfyUI graph", move || {
            parse_comfyui(&graph)
        });
        if let Some(meta) = meta {
            assert!(meta.prompt.is_empty() || meta.prompt.len() < 100);
        }
    }
}

// ---- adjustment stacks ----------------------------------------------------------------

#[test]
fn hostile_stacks_are_refused_or_made_safe() {
    let read = |rel: &str| std::fs::read_to_string(corpus(rel)).unwrap();
    // Huge and degenerate values are clamped to each op's range: finite pixels.
    let stack = Stack::from_json(&read("stacks/huge-values.json")).expect("readable");
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 7]));
    let out = atelier::postfx::apply_to_rgb8(&img, &stack);
    assert_eq!(out.dimensions(), (16, 16));
    for op in stack.effective_ops() {
        let json = serde_json::to_string(&op).unwrap();
        assert!(
            !json.contains("null"),
            "a non-finite parameter left: {json}"
        );
    }
    for (rel, needle) in [
        ("stacks/unknown-version.json", "version 99"),
        ("stacks/not-json.json", "EOF"),
        ("stacks/wrong-types.json", "invalid type"),
    ] {
        let err = Stack::from_json(&read(rel)).unwrap_err().to_string();
        assert!(err.contains(needle), "{rel}: {err}");
    }
    // 10,000 ops: refused with the reason, before any work.
    let many = format!(
        r#"{{"version":1,"ops":[{}]}}"#,
        vec![r#"{"op":"exposure","ev":0.1}"#; 10_000].join(",")
    );
    let err = within(Duration::from_secs(10), "10,000 ops", move || {
        Stack::from_json(&many)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("10000 adjustments"), "{err}");
    // Through the CLI as well.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    img.save(&input).unwrap();
    let o = atelier(
        &[
            "adjust",
            input.to_str().unwrap(),
            "--stack",
            corpus("stacks/unknown-version.json").to_str().unwrap(),
            "--out",
            dir.path().join("out.png").to_str().unwrap(),
            "--cpu",
        ],
        dir.path(),
    );
    assert_clear_failure(&o, "unknown-version.json", "a stack from a newer Atelier");
}

// ---- prompts --------------------------------------------------------------------------

#[test]
fn hostile_prompts_generate_or_fail_clearly() {
    let model = common::tiny_model(TinyKind::Sd15);
    let prompts = [
        "tok ".repeat(10_000),
        "\0\u{1}\u{7}\u{1b}[31mred\u{1b}[0m\r\n\t\u{7f}".to_string(),
        "مرحبا بالعالم \u{202E}reversed\u{202C} שלום".to_string(),
        "🦊🔥👩‍👩‍👧‍👦 🏳️‍🌈 ".repeat(50),
        String::new(),
    ];
    for prompt in prompts {
        let mut req = common::request(TinyKind::Sd15);
        req.model_dir = model.clone();
        req.prompt = prompt.clone();
        req.negative_prompt = prompt.chars().rev().collect();
        req.steps = 1;
        let shown: String = prompt.chars().take(20).collect();
        let result = within(Duration::from_secs(120), &shown, move || common::run(&req));
        let (images, _) = result.unwrap_or_else(|e| panic!("{shown:?}: {e}"));
        assert_eq!(images.len(), 1);
    }
    // Past the request's limit: refused with the reason.
    let mut req = common::request(TinyKind::Sd15);
    req.prompt = "a".repeat(atelier::generation::MAX_PROMPT_BYTES + 1);
    let err = common::run(&req).unwrap_err().to_string();
    assert!(err.contains("prompt is"), "{err}");
}

// ---- model files ----------------------------------------------------------------------

/// A safetensors file's header and data.
fn read_safetensors(path: &Path) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

fn write_safetensors(
    path: &Path,
    header: &serde_json::Map<String, serde_json::Value>,
    data: &[u8],
) {
    let json = serde_json::to_vec(header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

/// A copy of the tiny SD 1.5 model with its UNet weights changed by `break_it`.
fn broken_model(root: &Path, name: &str, break_it: impl FnOnce(&Path)) -> PathBuf {
    let dir = root.join(name);
    common::copy_dir(&common::tiny_model(TinyKind::Sd15), &dir);
    break_it(&dir.join("unet/diffusion_pytorch_model.safetensors"));
    dir
}

/// The first tensor's name (in file order), for editing its header entry.
fn first_tensor(header: &serde_json::Map<String, serde_json::Value>) -> String {
    header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .min_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap())
        .map(|(k, _)| k.clone())
        .unwrap()
}

#[test]
fn hostile_model_files_fail_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let unet_file = "diffusion_pytorch_model.safetensors";
    let mut cases: Vec<(PathBuf, &str, &str)> = Vec::new();
    cases.push((
        broken_model(root, "truncated", |f| {
            let bytes = std::fs::read(f).unwrap();
            std::fs::write(f, &bytes[..bytes.len() / 2]).unwrap();
        }),
        unet_file,
        "a truncated file",
    ));
    cases.push((
        broken_model(root, "past-the-end", |f| {
            let (mut h, data) = read_safetensors(f);
            let name = first_tensor(&h);
            h[&name]["data_offsets"][1] = serde_json::json!(data.len() as u64 * 1000);
            write_safetensors(f, &h, &data);
        }),
        unet_file,
        "offsets past the end",
    ));
    cases.push((
        broken_model(root, "overlapping", |f| {
            let (mut h, data) = read_safetensors(f);
            let names: Vec<String> = h.keys().filter(|k| *k != "__metadata__").cloned().collect();
            let first = h[&names[0]]["data_offsets"].clone();
            h[&names[1]]["data_offsets"] = first;
            write_safetensors(f, &h, &data);
        }),
        unet_file,
        "overlapping offsets",
    ));
    cases.push((
        broken_model(root, "huge-header", |f| {
            // A 101 MB JSON header (spaces are valid JSON whitespace).
            let (h, data) = read_safetensors(f);
            let mut json = serde_json::to_vec(&h).unwrap();
            json.resize(101_000_000, b' ');
            let mut out = (json.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&json);
            out.extend_from_slice(&data);
            std::fs::write(f, out).unwrap();
        }),
        unet_file,
        "a 101 MB header",
    ));
    cases.push((
        broken_model(root, "wrong-dtype", |f| {
            let (mut h, data) = read_safetensors(f);
            let name = first_tensor(&h);
            let shape: Vec<u64> = h[&name]["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let n: u64 = shape.iter().product();
            // Same bytes read as 64-bit integers: a valid file of the wrong kind.
            h[&name]["dtype"] = serde_json::json!("I64");
            h[&name]["shape"] = serde_json::json!([n / 2]);
            write_safetensors(f, &h, &data);
        }),
        "is I64; model weights are floating point",
        "a tensor of the wrong dtype",
    ));
    cases.push((
        broken_model(root, "nan-weights", |f| {
            let (h, mut data) = read_safetensors(f);
            for v in data.chunks_exact_mut(4) {
                v.copy_from_slice(&f32::NAN.to_le_bytes());
            }
            write_safetensors(f, &h, &data);
        }),
        "not finite numbers",
        "NaN weights",
    ));
    let only_index = root.join("only-index");
    std::fs::create_dir_all(&only_index).unwrap();
    std::fs::copy(
        common::tiny_model(TinyKind::Sd15).join("model_index.json"),
        only_index.join("model_index.json"),
    )
    .unwrap();
    cases.push((
        only_index,
        "only-index",
        "a folder with model_index.json only",
    ));
    cases.push((
        corpus("models/reduce.ckpt"),
        "reduce.ckpt",
        "a pickle calling os.system",
    ));
    cases.push((
        corpus("models/zip-bomb.ckpt"),
        "zip-bomb.ckpt",
        "a zip bomb",
    ));
    // Single checkpoint files (the A1111 / ComfyUI form).
    let ckpt =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/tiny-sd2v-ldm.ckpt");
    let bytes = std::fs::read(&ckpt).unwrap();
    let truncated = root.join("truncated-model.ckpt");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    cases.push((truncated, "truncated-model.ckpt", "a truncated .ckpt"));
    let single = root.join("lying-offsets.safetensors");
    atelier::models::export::write_single_file(
        &common::tiny_model(TinyKind::Sd15),
        &single,
        Default::default(),
    )
    .unwrap();
    let (mut h, data) = read_safetensors(&single);
    let name = first_tensor(&h);
    h[&name]["data_offsets"][1] = serde_json::json!(data.len() as u64 * 1000);
    write_safetensors(&single, &h, &data);
    cases.push((
        single,
        "lying-offsets.safetensors",
        "a single file whose offsets lie",
    ));
    let small = |name: &str, keys: &[&str]| -> PathBuf {
        let path = root.join(name);
        common::write_zero_tensors(&path, keys);
        path
    };
    cases.push((
        small(
            "style-lora.safetensors",
            &[
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
            ],
        ),
        "is a LoRA, not a model checkpoint",
        "a LoRA given as the model",
    ));
    cases.push((
        small(
            "sd3.safetensors",
            &["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"],
        ),
        "Stable Diffusion 3",
        "an SD3 checkpoint",
    ));
    cases.push((
        small("flux.safetensors", &["double_blocks.0.img_attn.qkv.weight"]),
        "Flux",
        "a Flux checkpoint",
    ));
    let _ = std::fs::remove_file("/tmp/atelier-pwned-marker");
    for (model, needle, what) in cases {
        let out = root.join("out.png");
        let o = atelier(
            &[
                "generate",
                "--model",
                model.to_str().unwrap(),
                "--prompt",
                "x",
                "--steps",
                "1",
                "--width",
                "64",
                "--height",
                "64",
                "--no-gallery",
                "--out",
                out.to_str().unwrap(),
            ],
            root,
        );
        assert_clear_failure(&o, needle, what);
        assert!(!out.exists(), "{what}: a picture was written");
    }
    assert!(
        !Path::new("/tmp/atelier-pwned-marker").exists(),
        "the pickle's command ran"
    );
}

#[test]
fn a_model_card_with_bad_json_is_reported_not_silently_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("carded");
    common::copy_dir(&common::tiny_model(TinyKind::Sd15), &dir);
    std::fs::write(dir.join("atelier.json"), b"{\"title\": \"Broken card\", ").unwrap();
    let info = atelier::models::ModelInfo::from_dir(&dir, atelier::models::ModelSource::Given)
        .expect("the model itself is fine");
    assert!(info.card.is_none());
    let problem = info
        .card_problem
        .as_deref()
        .expect("the card's problem is kept");
    assert!(problem.contains("atelier.json"), "{problem}");
    let o = atelier(&["models", dir.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("atelier.json"), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("carded"));
}
