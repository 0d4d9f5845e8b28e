//! Shared test helpers: tiny real-architecture models written once per test binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use atelier::diffusion::tiny::{write_tiny_model, TinyKind};
use atelier::diffusion::{DiffusionError, Generator};
use atelier::generation::{GeneratedImage, GenerationRequest, SamplerKind};

fn root() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// The folder of a tiny model of `kind`, written on first use.
pub fn tiny_model(kind: TinyKind) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = root().join(format!("{kind:?}").to_lowercase());
    if !dir.join("model_index.json").is_file() {
        write_tiny_model(&dir, kind).expect("writing tiny model");
    }
    dir
}

pub fn request(kind: TinyKind) -> GenerationRequest {
    GenerationRequest {
        model_dir: tiny_model(kind),
        prompt: "a red cat on the mat".into(),
        negative_prompt: "blue dog".into(),
        seed: 42,
        steps: 4,
        guidance: 5.0,
        width: 64,
        height: 64,
        sampler: SamplerKind::Ddim,
        ..Default::default()
    }
}

/// Runs a request to completion on this thread; returns its images and how many steps ran.
pub fn run(req: &GenerationRequest) -> Result<(Vec<GeneratedImage>, usize), DiffusionError> {
    let mut generator = Generator::default();
    run_with(&mut generator, req, &AtomicBool::new(false))
}

pub fn run_with(
    generator: &mut Generator,
    req: &GenerationRequest,
    cancel: &AtomicBool,
) -> Result<(Vec<GeneratedImage>, usize), DiffusionError> {
    generator.collect(req, cancel)
}

pub fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs() as u64)
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// Standard deviation of all channel values: 0 for a flat image.
pub fn spread(img: &image::RgbImage) -> f64 {
    let v = img.as_raw();
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// Copies a folder tree (model folders in tests).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Appends one PNG chunk (length, kind, data, CRC) to `out`.
pub fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// A PNG whose header claims `width` x `height` RGB pixels, carrying only a few bytes of
/// image data: a decompression bomb for a loader without limits, a truncated file for one
/// with them.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    // A zlib stream of a few zero bytes (filter type 0, black pixels).
    png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01],
    );
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A valid 8 x 8 PNG with one extra chunk of `kind` holding `data` before its image data.
pub fn png_with_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 9]));
    let plain = atelier::gallery::metadata::encode_png(&pixels, &[]).unwrap();
    // After the signature (8 bytes) and IHDR (8 + 13 + 4).
    let at = 8 + 25;
    let mut out = plain[..at].to_vec();
    png_chunk(&mut out, kind, data);
    out.extend_from_slice(&plain[at..]);
    out
}

/// A zlib stream that inflates to `n` bytes of `'0'` (compressed by the `png` crate's own
/// encoder through a zTXt chunk, then cut out of it).
pub fn zlib_bomb(n: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, 1, 1);
        enc.set_color(png::ColorType::Grayscale);
        enc.add_ztxt_chunk("k".into(), "0".repeat(n)).unwrap();
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0]).unwrap();
        w.finish().unwrap();
    }
    let at = buf.windows(4).position(|w| w == b"zTXt").unwrap();
    let len = u32::from_be_bytes(buf[at - 4..at].try_into().unwrap()) as usize;
    // Skip the keyword "k", its NUL and the compression method byte.
    buf[at + 4 + 3..at + 4 + len].to_vec()
}

/// The `atelier` binary with its data (gallery, models folder, HF cache) under `home`, and
/// no crash point inherited from the test's own environment.
pub fn atelier_cmd(args: &[&str], home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_atelier"));
    c.args(args)
        .env("ATELIER_HOME", home)
        .env("HF_HOME", home.join("hf"))
        .env_remove("ATELIER_CRASH_POINT")
        .env_remove("ATELIER_TEST_PANIC_PROMPT");
    c
}

/// Runs `atelier` to the end; a run over two minutes is a hang and fails the test.
pub fn atelier(args: &[&str], home: &Path) -> Output {
    let mut child = atelier_cmd(args, home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running atelier");
    // Read the pipes while waiting, so a talkative run cannot block on a full pipe.
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = |name: &str| std::thread::Builder::new().name(name.to_owned());
    let out_reader = reader("stdout")
        .spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut out, &mut v).map(|_| v)
        })
        .expect("a reader thread");
    let err_reader = reader("stderr")
        .spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut err, &mut v).map(|_| v)
        })
        .expect("a reader thread");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for atelier") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("atelier {args:?} ran over two minutes: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap().unwrap_or_default(),
        stderr: err_reader.join().unwrap().unwrap_or_default(),
    }
}

/// A run's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A run's stdout and stderr as one text.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Decodes a picture a test wrote (through the same bounded loader as user images).
pub fn open_image(path: impl AsRef<Path>) -> image::DynamicImage {
    let path = path.as_ref();
    atelier::imageio::load_image_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A safetensors file of 4x4 zero tensors under `keys`: enough for a loader to tell what kind
/// of file the names say it is (a LoRA, an SD3 checkpoint...).
pub fn write_zero_tensors(path: &Path, keys: &[&str]) {
    let zero =
        candle_core::Tensor::zeros((4, 4), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    let tensors: std::collections::HashMap<String, candle_core::Tensor> =
        keys.iter().map(|k| (k.to_string(), zero.clone())).collect();
    candle_core::safetensors::save(&tensors, path).unwrap();
}
