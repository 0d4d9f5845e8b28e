//! The settings a picture carries inside its own file, readable by other tools.
//!
//! A PNG written by Atelier holds three text chunks, before the image data:
//! - `parameters`: the text AUTOMATIC1111 writes (prompt, `Negative prompt: ...`, then
//!   `Steps: 20, Sampler: ..., CFG scale: 7, Seed: 1, Size: 512x512, Model: ...`), which
//!   A1111's "PNG info", Civitai and most metadata readers understand;
//! - `atelier`: Atelier's own [`ImageMeta`] as JSON (everything, including lineage and the
//!   adjustment stack), which is what rebuilds the catalog after a disaster;
//! - `XML:com.adobe.xmp`: an XMP packet marking the file as AI-generated (IPTC digital source
//!   type `trainedAlgorithmicMedia`) with the prompt as its description.
//!
//! JPEG and WebP exports carry the A1111 text in EXIF `UserComment` (UTF-16, as A1111 writes
//! it) and the same XMP packet. Reading accepts files made by AUTOMATIC1111 (`parameters`),
//! ComfyUI (`prompt` graph JSON), InvokeAI (`invokeai_metadata`) and Atelier; fields it does
//! not understand are kept as raw text in [`ImageMeta::extra`].

mod a1111;
mod exif;
mod lineage;
mod png_text;
mod tools;
mod xmp;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use a1111::*;
pub use exif::*;
pub use lineage::{ImageRef, Lineage};
pub use png_text::*;
pub use tools::*;
pub use xmp::*;

/// The most text read from one compressed chunk (a zTXt bomb stops here).
pub const TEXT_LIMIT: usize = 1 << 20;
/// The most bytes of chunks the PNG decoder may allocate while reading metadata.
const PNG_META_LIMIT: usize = 32 << 20;

pub const IPTC_AI_SOURCE: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";

/// Everything known about how a picture was made. Embedded in the file and stored in the
/// catalog; unknown values survive in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageMeta {
    /// Stable identity across catalog rebuilds (random hex).
    pub uid: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: Option<u64>,
    pub steps: Option<u32>,
    /// The sampler as one label with its schedule, in the form A1111 wrote before 1.9 ("DPM++
    /// 2M Karras", "Euler a"; a plain name means the uniform schedule). A1111's text carries
    /// it as `Sampler` plus `Schedule type` (see [`a1111_sampler_fields`]); an imported
    /// `Schedule type` that names no fixed schedule ("Automatic") stays in `extra`.
    pub sampler: Option<String>,
    pub guidance: Option<f32>,
    /// A1111's "Clip skip", when above 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_skip: Option<u32>,
    pub width: u32,
    pub height: u32,
    pub model_name: Option<String>,
    pub model_hash: Option<String>,
    /// Image-to-image strength, when an init image was used.
    pub strength: Option<f32>,
    /// The init image: a gallery picture, the sketch, or a file by name.
    pub init_image: Option<ImageRef>,
    pub mask_image: Option<ImageRef>,
    /// The adjustment stack as stored JSON (see `postfx::Stack`).
    pub adjustments: Option<Value>,
    /// The control images it was steered by, in ControlNet order (`ControlNet N` in
    /// `extra`): files in the gallery's `controls/` folder, relative to the gallery root.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub control_images: Vec<String>,
    /// The image this one was made from (`uid`), and how.
    pub parent: Option<String>,
    pub lineage: Option<Lineage>,
    /// The program that made the file ("Atelier 0.1.0", "AUTOMATIC1111", "ComfyUI"...).
    pub generator: Option<String>,
    /// Seconds since the Unix epoch.
    pub created: i64,
    pub tags: Vec<String>,
    /// 0 (unrated) to 5; kept in the file too so a rebuilt catalog has it.
    #[serde(skip_serializing_if = "is_zero")]
    pub rating: u8,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub favourite: bool,
    /// Values a reader did not understand, as raw text, by name.
    pub extra: BTreeMap<String, String>,
    /// The queued job and image index it was made by (`<job uid>/<index>`), so a job
    /// resumed after a crash knows which of its pictures are already saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

/// Reads whatever settings a file of any supported format carries.
pub fn read_embedded(bytes: &[u8]) -> EmbeddedText {
    if bytes.starts_with(b"\x89PNG") {
        return read_png_text(bytes).unwrap_or_else(|e| EmbeddedText {
            unreadable: vec![("png".into(), e)],
            ..Default::default()
        });
    }
    let (exif, xmp) = if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg_segments(bytes)
    } else if bytes.starts_with(b"RIFF") {
        webp_chunks(bytes)
    } else {
        (None, None)
    };
    let mut out = EmbeddedText::default();
    if let Some(text) = exif
        .as_deref()
        .and_then(read_exif_user_comment)
        .filter(|t| !t.trim().is_empty())
    {
        // Atelier's JSON rides after the A1111 text in the comment, on a marked line.
        match text.split_once(ATELIER_JSON_MARK) {
            Some((a1111, json)) => {
                out.chunks
                    .push(("parameters".into(), a1111.trim_end().into()));
                out.chunks.push(("atelier".into(), json.trim().into()));
            }
            None => out.chunks.push(("parameters".into(), text)),
        }
    }
    if let Some(x) = xmp {
        out.chunks.push(("XML:com.adobe.xmp".into(), x));
    }
    out
}

/// Separates the A1111 text from Atelier's JSON inside an EXIF UserComment.
pub const ATELIER_JSON_MARK: &str = "\nAtelier-JSON: ";

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageMeta {
        ImageMeta {
            uid: "abc".into(),
            prompt: "a cat, sitting: on a mat\nsecond line".into(),
            negative_prompt: "blurry, low quality".into(),
            seed: Some(1234567890123),
            steps: Some(20),
            sampler: Some("DPM++ 2M Karras".into()),
            guidance: Some(7.5),
            width: 512,
            height: 768,
            model_name: Some("my, model".into()),
            model_hash: Some("0123456789".into()),
            strength: Some(0.6),
            generator: Some("Atelier 0.1.0".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a1111_text_round_trips() {
        let m = sample();
        let text = to_a1111(&m);
        assert!(text.contains("Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234567890123, Size: 512x768"), "{text}");
        let back = parse_a1111(&text);
        assert_eq!(back.prompt, m.prompt);
        assert_eq!(back.negative_prompt, m.negative_prompt);
        assert_eq!(back.seed, m.seed);
        assert_eq!(back.steps, m.steps);
        assert_eq!(back.guidance, m.guidance);
        assert_eq!(back.sampler, m.sampler);
        assert_eq!((back.width, back.height), (512, 768));
        assert_eq!(back.model_name.as_deref(), Some("my, model"));
        assert_eq!(back.model_hash, m.model_hash);
        assert_eq!(back.strength, Some(0.6));
        assert_eq!(back.generator.as_deref(), Some("Atelier 0.1.0"));
    }

    #[test]
    fn real_a1111_text_parses_with_unknown_fields_kept() {
        let text = "masterpiece, 1girl\nNegative prompt: bad hands\nSteps: 28, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6, Seed: 42, Size: 832x1216, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Lora hashes: \"x: 1, y: 2\", Version: v1.10.1";
        let m = parse_a1111(text);
        assert_eq!(m.prompt, "masterpiece, 1girl");
        assert_eq!(m.negative_prompt, "bad hands");
        assert_eq!(m.seed, Some(42));
        assert_eq!(m.sampler.as_deref(), Some("Euler a"));
        assert_eq!(
            m.extra.get("Schedule type").map(String::as_str),
            Some("Automatic")
        );
        assert_eq!(
            m.extra.get("Lora hashes").map(String::as_str),
            Some("x: 1, y: 2")
        );
        assert_eq!(m.extra.get("Version").map(String::as_str), Some("v1.10.1"));
        assert_eq!(m.generator.as_deref(), Some("AUTOMATIC1111"));
        // Written back, "Automatic" stays next to its sampler.
        assert!(
            to_a1111(&m).contains("Sampler: Euler a, Schedule type: Automatic, CFG scale: 6"),
            "{}",
            to_a1111(&m)
        );
    }

    /// Atelier's label for every sampler, the fields A1111 1.9+ reads it from (written so that
    /// 1.9+'s "Automatic" cannot turn DPM++ 2M into DPM++ 2M Karras), and back.
    #[test]
    fn sampler_names_map_to_a1111_and_back() {
        use crate::generation::SamplerKind::{self, *};
        let written = [
            (Ddim, "DDIM", "Sampler: DDIM, CFG"),
            (Euler, "Euler", "Sampler: Euler, CFG"),
            (EulerAncestral, "Euler a", "Sampler: Euler a, CFG"),
            (Heun, "Heun", "Sampler: Heun, CFG"),
            (UniPc, "UniPC", "Sampler: UniPC, CFG"),
            (
                DpmPp2m,
                "DPM++ 2M",
                "Sampler: DPM++ 2M, Schedule type: Uniform, CFG",
            ),
            (
                DpmPp2mKarras,
                "DPM++ 2M Karras",
                "Sampler: DPM++ 2M, Schedule type: Karras, CFG",
            ),
            (
                DpmPp2mSdeKarras,
                "DPM++ 2M SDE Karras",
                "Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG",
            ),
            (Lcm, "LCM", "Sampler: LCM, CFG"),
        ];
        assert_eq!(written.len(), SamplerKind::ALL.len());
        for (kind, label, fields) in written {
            assert_eq!(a1111_sampler_label(kind), label);
            // Atelier's own files (no schedule type), and the other names it knows.
            assert_eq!(sampler_from_label(label), Some(kind), "{label}");
            assert_eq!(sampler_from_label(kind.cli_name()), Some(kind));
            assert_eq!(sampler_from_label(kind.label()), Some(kind));
            // Through the text and back, to the same label.
            let meta = ImageMeta {
                steps: Some(20),
                guidance: Some(7.0),
                sampler: Some(label.into()),
                ..Default::default()
            };
            let text = to_a1111(&meta);
            assert!(text.contains(&format!("Steps: 20, {fields}")), "{text}");
            let back = parse_a1111(&text);
            assert_eq!(back.sampler.as_deref(), Some(label), "{text}");
            assert!(!back.extra.contains_key("Schedule type"), "{text}");
            assert_eq!(back.sampler_kind(), Some(kind));
        }
        assert_eq!(
            sampler_from_label("dpm++ 2m sde karras"),
            Some(DpmPp2mSdeKarras)
        );
        assert_eq!(sampler_from_label("LMS"), None);
        assert_eq!(sampler_from_label(""), None);
    }

    #[test]
    fn a1111_labels_split_and_combine_with_their_schedule() {
        assert_eq!(
            split_a1111_sampler("DPM++ 2M Karras"),
            ("DPM++ 2M", Some("Karras"))
        );
        assert_eq!(split_a1111_sampler("Euler a"), ("Euler a", None));
        assert_eq!(
            split_a1111_sampler("DPM++ 2M SDE Heun"),
            ("DPM++ 2M SDE Heun", None)
        );
        assert_eq!(
            split_a1111_sampler("Euler SGM Uniform"),
            ("Euler", Some("SGM Uniform"))
        );
        assert_eq!(split_a1111_sampler("Karras"), ("Karras", None));
        assert_eq!(split_a1111_sampler("é Karras"), ("é", Some("Karras")));
        let combine = |s: &str, st: &str| combine_a1111_sampler(s, st);
        assert_eq!(
            combine("DPM++ 2M", "Karras").as_deref(),
            Some("DPM++ 2M Karras")
        );
        assert_eq!(
            combine("DPM++ 2M", "karras").as_deref(),
            Some("DPM++ 2M Karras")
        );
        assert_eq!(combine("DPM++ 2M", "Uniform").as_deref(), Some("DPM++ 2M"));
        assert_eq!(
            combine("Euler", "Exponential").as_deref(),
            Some("Euler Exponential")
        );
        // The label's own schedule wins, as in A1111.
        assert_eq!(
            combine("DPM++ 2M Karras", "Uniform").as_deref(),
            Some("DPM++ 2M Karras")
        );
        // Nothing fixed to fold in: the field stays as it is.
        assert_eq!(combine("DPM++ 2M", "Automatic"), None);
        assert_eq!(combine("DPM++ 2M", "Align Your Steps 32"), None);
        // A split schedule type is read into the one label.
        let m = parse_a1111("a cat\nSteps: 20, Sampler: DPM++ 2M SDE, Schedule type: Karras");
        assert_eq!(m.sampler.as_deref(), Some("DPM++ 2M SDE Karras"));
        assert!(m.extra.is_empty(), "{:?}", m.extra);
    }

    #[test]
    fn a1111_split_schedule_types_pick_the_karras_kinds() {
        use crate::generation::SamplerKind::*;
        let read = |settings: &str| parse_a1111(&format!("a cat\n{settings}")).sampler_kind();
        let cases = [
            // A1111 1.9+: sampler and schedule apart.
            (
                "Sampler: DPM++ 2M SDE, Schedule type: Karras",
                Some(DpmPp2mSdeKarras),
            ),
            (
                "Sampler: DPM++ 2M, Schedule type: Karras",
                Some(DpmPp2mKarras),
            ),
            // "Automatic" is the sampler's own default: Karras for DPM++ 2M, none for Euler.
            (
                "Sampler: DPM++ 2M, Schedule type: Automatic",
                Some(DpmPp2mKarras),
            ),
            ("Sampler: Euler, Schedule type: Automatic", Some(Euler)),
            (
                "Sampler: Euler a, Schedule type: Automatic",
                Some(EulerAncestral),
            ),
            ("Sampler: Heun, Schedule type: Automatic", Some(Heun)),
            ("Sampler: LCM, Schedule type: Automatic", Some(Lcm)),
            ("Sampler: DPM++ 2M, Schedule type: Uniform", Some(DpmPp2m)),
            (
                "Sampler: DPM++ 2M, Schedule type: Exponential",
                Some(DpmPp2m),
            ),
            // Before 1.9 (and Atelier's own files): the label says it all.
            ("Sampler: DPM++ 2M", Some(DpmPp2m)),
            ("Sampler: DPM++ 2M Karras", Some(DpmPp2mKarras)),
            ("Sampler: DPM++ 2M SDE Karras", Some(DpmPp2mSdeKarras)),
            (
                "Sampler: DPM++ 2M Karras, Schedule type: Automatic",
                Some(DpmPp2mKarras),
            ),
            // Combinations Atelier lacks: the same sampler on the schedule it has.
            ("Sampler: Euler, Schedule type: Karras", Some(Euler)),
            ("Sampler: DPM++ 2M SDE", Some(DpmPp2mSdeKarras)),
            (
                "Sampler: DPM++ 2M SDE, Schedule type: Exponential",
                Some(DpmPp2mSdeKarras),
            ),
            (
                "Sampler: DPM++ 2M SDE, Schedule type: Automatic",
                Some(DpmPp2mSdeKarras),
            ),
            ("Sampler: Euler a Karras", Some(EulerAncestral)),
            (
                "Sampler: DPM++ 2M, Schedule type: SGM Uniform",
                Some(DpmPp2m),
            ),
            ("Sampler: DPM++ 2M, Schedule type: Turbo", Some(DpmPp2m)),
            ("Sampler: DPM++ SDE, Schedule type: Karras", None),
            ("Sampler: LMS", None),
            ("Steps: 20", None),
        ];
        for (settings, want) in cases {
            assert_eq!(read(&format!("Steps: 20, {settings}")), want, "{settings}");
        }
    }

    #[test]
    fn comfyui_graph_gives_prompts_and_settings() {
        let graph = r#"{"3":{"class_type":"KSampler","inputs":{"seed":7,"steps":25,"cfg":8.0,"sampler_name":"euler","denoise":1.0,"positive":["6",0],"negative":["7",0],"model":["4",0]}},
          "4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":"v1-5.safetensors"}},
          "5":{"class_type":"EmptyLatentImage","inputs":{"width":512,"height":640,"batch_size":1}},
          "6":{"class_type":"CLIPTextEncode","inputs":{"text":"a castle","clip":["4",1]}},
          "7":{"class_type":"CLIPTextEncode","inputs":{"text":"fog","clip":["4",1]}}}"#;
        let m = parse_comfyui(graph).unwrap();
        assert_eq!(m.prompt, "a castle");
        assert_eq!(m.negative_prompt, "fog");
        assert_eq!(
            (m.seed, m.steps, m.guidance),
            (Some(7), Some(25), Some(8.0))
        );
        assert_eq!(m.model_name.as_deref(), Some("v1-5.safetensors"));
        assert_eq!((m.width, m.height), (512, 640));
        assert_eq!(m.strength, None);
    }

    #[test]
    fn png_chunks_round_trip_including_non_latin1_text() {
        let mut m = sample();
        m.prompt = "猫 on a mat — ünïcödé".into();
        let img = image::RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]));
        let bytes = encode_png(&img, &png_chunks(&m)).unwrap();
        let t = read_png_text(&bytes).unwrap();
        assert_eq!(t.meta().unwrap(), m);
        assert!(t.get("XML:com.adobe.xmp").unwrap().contains(IPTC_AI_SOURCE));
        assert_eq!(parse_a1111(t.get("parameters").unwrap()).prompt, m.prompt);
        let back = crate::imageio::load_image_bytes(&bytes, std::path::Path::new("bytes"))
            .unwrap()
            .to_rgb8();
        assert_eq!(back, img);
    }

    #[test]
    fn text_chunks_are_replaced_without_touching_the_pixels() {
        let img =
            image::RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 9]));
        let mut m = sample();
        let first = encode_png(&img, &png_chunks(&m)).unwrap();
        m.tags = vec!["sunny".into()];
        m.adjustments = Some(serde_json::json!({"version": 1, "ops": []}));
        m.prompt = "ünïcode now".into();
        let second = replace_png_text(&first, &png_chunks(&m)).unwrap();
        let t = read_png_text(&second).unwrap();
        assert_eq!(t.meta().unwrap(), m);
        assert_eq!(t.chunks.len(), 3, "old chunks dropped: {:?}", t.chunks);
        assert_eq!(
            crate::imageio::load_image_bytes(&second, std::path::Path::new("bytes"))
                .unwrap()
                .to_rgb8(),
            img
        );
        assert!(replace_png_text(b"not a png", &[]).is_none());
        assert!(replace_png_text(&first[..first.len() - 20], &[]).is_none());
    }

    #[test]
    fn exif_user_comment_round_trips() {
        let text = "a prompt with ünïcode ✓\nSteps: 4";
        let tiff = exif_user_comment(text, "Atelier");
        assert_eq!(read_exif_user_comment(&tiff).as_deref(), Some(text));
        assert_eq!(read_exif_user_comment(b"II*\0garbage"), None);
        assert_eq!(read_exif_user_comment(&tiff[..20]), None);
    }

    #[test]
    fn readers_never_panic_on_garbage() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: Vec<char> = "ab,:\"\\\n Steps:Negative prompt:Size x1é猫\u{202E}{}[]0"
            .chars()
            .collect();
        let img = image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]));
        let png = encode_png(&img, &png_chunks(&sample())).unwrap();
        let encode_as = |format| {
            let opts = crate::gallery::export::ExportOptions {
                format,
                jpeg_quality: 80,
                ..Default::default()
            };
            crate::gallery::export::encode(&img, &sample(), &opts).unwrap()
        };
        let jpeg = encode_as(crate::gallery::export::ExportFormat::Jpeg);
        let webp = encode_as(crate::gallery::export::ExportFormat::Webp);
        for round in 0..3000 {
            let len = (next() % 80) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = parse_a1111(&text);
            let _ = parse_comfyui(&text);
            let _ = parse_invokeai(&text);
            let bytes: Vec<u8> = text.bytes().collect();
            let _ = read_exif_user_comment(&bytes);
            // Real files with random bytes changed or cut off.
            for base in [&png, &jpeg, &webp] {
                let mut broken = base.to_vec();
                let at = (next() as usize) % broken.len();
                broken[at] = next() as u8;
                broken.truncate(broken.len() - (round % 7));
                let _ = read_embedded(&broken);
                let _ = replace_png_text(&broken, &[("k", text.clone())]);
            }
        }
    }

    #[test]
    fn xmp_escapes_markup() {
        let x = xmp_packet(Some("<b>&\"quotes\"</b>\u{1}"), "Atelier");
        assert!(x.contains("&lt;b&gt;&amp;&quot;quotes&quot;&lt;/b&gt;"));
        assert!(!x.contains('\u{1}'));
    }
}
