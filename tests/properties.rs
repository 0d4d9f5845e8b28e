//! Property tests (proptest, bounded so CI stays fast) for the parsers that read what other
//! programs and users write: A1111 `parameters` text, ComfyUI / InvokeAI JSON, embedded PNG
//! text, adjustment stacks, and prompts through the CLIP tokenizer. Whatever the input:
//! no panic, and what Atelier writes it reads back.

use proptest::prelude::*;

use atelier::gallery::metadata::{
    encode_png, parse_a1111, parse_comfyui, parse_invokeai, read_embedded, to_a1111, ImageMeta,
};
use atelier::postfx::{Exposure, Op, Stack};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        // Failures are reported with their minimal input; nothing is written next to tests.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Prompt-like text: words, A1111 punctuation, quotes, unicode; no newline (A1111's text
/// puts the negative prompt and the settings on lines of their own).
fn prompt_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[a-zA-Z0-9 ,.:;()\[\]<>"'\\_\-éü猫🦊]{0,60}"#).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a1111_text_never_panics(text in "\\PC{0,300}") {
        let _ = parse_a1111(&text);
    }

    #[test]
    fn a1111_text_round_trips_what_atelier_writes(
        prompt in prompt_text(),
        negative in prompt_text(),
        seed in any::<u64>(),
        steps in 1u32..=1000,
        guidance_tenths in 0u32..=300,
        width in 1u32..=512,
        height in 1u32..=512,
    ) {
        let meta = ImageMeta {
            prompt: prompt.trim().to_owned(),
            negative_prompt: negative.trim().to_owned(),
            seed: Some(seed),
            steps: Some(steps),
            guidance: Some(guidance_tenths as f32 / 10.0),
            width: width * 8,
            height: height * 8,
            sampler: Some("DPM++ 2M Karras".into()),
            ..Default::default()
        };
        let back = parse_a1111(&to_a1111(&meta));
        prop_assert_eq!(&back.prompt, &meta.prompt);
        prop_assert_eq!(&back.negative_prompt, &meta.negative_prompt);
        prop_assert_eq!(back.seed, meta.seed);
        prop_assert_eq!(back.steps, meta.steps);
        prop_assert_eq!(back.guidance, meta.guidance);
        prop_assert_eq!((back.width, back.height), (meta.width, meta.height));
        prop_assert_eq!(back.sampler, meta.sampler);
    }

    #[test]
    fn other_tools_json_never_panics(text in "\\PC{0,200}", n in any::<i64>()) {
        let _ = parse_comfyui(&text);
        let _ = parse_invokeai(&text);
        // Valid JSON of unexpected shapes.
        for json in [
            format!(r#"{{"1":{{"class_type":"KSampler","inputs":{{"seed":{n},"positive":[{n},0]}}}}}}"#),
            format!(r#"{{"seed":{n},"steps":"{text:?}","model":[{n}]}}"#),
            format!("[{n}, {text:?}]"),
        ] {
            let _ = parse_comfyui(&json);
            let _ = parse_invokeai(&json);
        }
    }

    #[test]
    fn embedded_text_reads_back_and_arbitrary_bytes_never_panic(
        key in "[a-zA-Z][a-zA-Z0-9 ]{0,20}",
        value in "\\PC{0,200}",
        junk in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let img = image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]));
        let png = encode_png(&img, &[(key.as_str(), value.clone())]).unwrap();
        let embedded = read_embedded(&png);
        prop_assert_eq!(embedded.get(&key), Some(value.as_str()));
        let _ = read_embedded(&junk);
        // A real PNG cut or corrupted anywhere.
        let mut broken = png.clone();
        if !junk.is_empty() {
            let at = junk[0] as usize % broken.len();
            broken[at] ^= 0x5A;
            broken.truncate(broken.len() - junk.len() % broken.len());
        }
        let _ = read_embedded(&broken);
    }

    #[test]
    fn stacks_round_trip_or_refuse_non_finite_values(
        ev in any::<f32>(),
        enabled in any::<bool>(),
        junk in "\\PC{0,200}",
    ) {
        let mut stack = Stack::from_ops([Op::Exposure(Exposure { ev })]);
        stack.ops[0].enabled = enabled;
        match stack.to_json() {
            Ok(json) => {
                prop_assert!(ev.is_finite());
                prop_assert_eq!(Stack::from_json(&json).unwrap(), stack);
            }
            Err(e) => {
                prop_assert!(!ev.is_finite());
                prop_assert!(e.to_string().contains("not a finite number"));
            }
        }
        let _ = Stack::from_json(&junk);
        let _ = Stack::from_json(&format!(r#"{{"version":1,"ops":[{{"op":"exposure","ev":{junk:?}}}]}}"#));
    }
}

fn tokenizer() -> &'static atelier::diffusion::tokenizer::ClipTokenizer {
    use std::sync::OnceLock;
    static T: OnceLock<atelier::diffusion::tokenizer::ClipTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let configs =
            atelier::models::config::ModelConfigs::read(&atelier::models::default_model_dir())
                .expect("the shipped model's configs");
        atelier::diffusion::tokenizer::ClipTokenizer::load(&configs.tokenizer)
            .expect("its tokenizer")
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_prompt_tokenizes_to_exactly_one_framed_sequence(text in "\\PC{0,400}") {
        let t = tokenizer();
        let ids = t.encode(&text).unwrap();
        prop_assert_eq!(ids.len(), t.max_length);
        prop_assert_eq!(ids[0], t.bos_id);
        prop_assert!(ids.contains(&t.eos_id));
        // Everything between BOS and the first EOS is the prompt's, cut at what fits.
        let total = t.body_ids(&text).unwrap().len();
        let capacity = t.max_length - 2;
        let body = ids[1..].iter().position(|&id| id == t.eos_id).unwrap();
        prop_assert_eq!(body, total.min(capacity));
    }

    /// Any prompt, brackets and all, is laid out in framed chunks that hold every one of its
    /// tokens (never truncated), with finite weights or a clear error.
    #[test]
    fn any_prompt_is_chunked_whole_and_framed(text in "[a-z ,:.()\\[\\]0-9\\\\]{0,300}|\\PC{0,200}") {
        use atelier::diffusion::prompt::{chunks, parse_attention, token_count, Piece};
        let t = tokenizer();
        let framing = t.framing();
        let pieces = parse_attention(&text);
        match chunks(&pieces, framing, &mut |s| t.body_ids(s), t.comma_id()) {
            Ok(c) => {
                prop_assert!(!c.is_empty());
                for chunk in &c {
                    prop_assert_eq!(chunk.ids.len(), framing.body + 2);
                    prop_assert_eq!(chunk.weights.len(), framing.body + 2);
                    prop_assert_eq!(chunk.ids[0], framing.bos);
                    prop_assert!(chunk.ids[1..].contains(&framing.eos));
                    prop_assert!(chunk.weights.iter().all(|w| w.is_finite()));
                }
                let all: usize = pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Text(s, _) => t.body_ids(s).unwrap().len(),
                        Piece::Break => 0,
                    })
                    .sum();
                prop_assert_eq!(token_count(&c, framing).0, all);
            }
            Err(e) => prop_assert!(e.contains("weight"), "{}", e),
        }
    }
}
