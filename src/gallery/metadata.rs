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

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// The sampler's A1111-style label ("DPM++ 2M Karras", "Euler a", ...).
    pub sampler: Option<String>,
    pub guidance: Option<f32>,
    pub width: u32,
    pub height: u32,
    pub model_name: Option<String>,
    pub model_hash: Option<String>,
    /// Image-to-image strength, when an init image was used.
    pub strength: Option<f32>,
    /// The init image: `gallery:<uid>` for a gallery image, else a file name.
    pub init_image: Option<String>,
    pub mask_image: Option<String>,
    /// The adjustment stack as stored JSON (see `postfx::Stack`).
    pub adjustments: Option<Value>,
    /// The image this one was made from (`uid`), and how: `img2img`, `inpaint`, `adjust`...
    pub parent: Option<String>,
    pub lineage: Option<String>,
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

/// Maps Atelier's sampler names to the labels A1111 writes.
pub fn a1111_sampler_label(sampler: crate::generation::SamplerKind) -> &'static str {
    use crate::generation::SamplerKind::*;
    match sampler {
        Ddim => "DDIM",
        EulerAncestral => "Euler a",
        UniPc => "UniPC",
        DpmPp2mKarras => "DPM++ 2M Karras",
        DpmPp2m => "DPM++ 2M",
    }
}

/// The sampler a label names, for "reuse settings" on imported files.
pub fn sampler_from_label(label: &str) -> Option<crate::generation::SamplerKind> {
    use crate::generation::SamplerKind;
    let l = label.trim().to_ascii_lowercase();
    SamplerKind::ALL.into_iter().find(|s| {
        a1111_sampler_label(*s).to_ascii_lowercase() == l
            || s.cli_name() == l
            || s.label().to_ascii_lowercase() == l
    })
}

// ---- A1111 "parameters" text ---------------------------------------------------------------

fn quote_if_needed(v: &str) -> String {
    if v.contains([',', ':', '"', '\n']) {
        serde_json::to_string(v).unwrap_or_default()
    } else {
        v.to_string()
    }
}

fn fmt_num(v: f32) -> String {
    let s = format!("{v}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// The text AUTOMATIC1111 writes into its `parameters` chunk.
pub fn to_a1111(meta: &ImageMeta) -> String {
    let mut out = meta.prompt.clone();
    if !meta.negative_prompt.is_empty() {
        out.push_str("\nNegative prompt: ");
        out.push_str(&meta.negative_prompt);
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    if let Some(s) = meta.steps {
        fields.push(("Steps".into(), s.to_string()));
    }
    if let Some(s) = &meta.sampler {
        fields.push(("Sampler".into(), s.clone()));
    }
    if let Some(g) = meta.guidance {
        fields.push(("CFG scale".into(), fmt_num(g)));
    }
    if let Some(s) = meta.seed {
        fields.push(("Seed".into(), s.to_string()));
    }
    fields.push(("Size".into(), format!("{}x{}", meta.width, meta.height)));
    if let Some(h) = &meta.model_hash {
        fields.push(("Model hash".into(), h.clone()));
    }
    if let Some(m) = &meta.model_name {
        fields.push(("Model".into(), m.clone()));
    }
    if let Some(s) = meta.strength {
        fields.push(("Denoising strength".into(), fmt_num(s)));
    }
    for (k, v) in &meta.extra {
        if !k.contains([',', ':', '\n']) && !fields.iter().any(|(f, _)| f == k) {
            fields.push((k.clone(), v.clone()));
        }
    }
    if let Some(g) = &meta.generator {
        if !fields.iter().any(|(f, _)| f == "Version") {
            fields.push(("Version".into(), g.clone()));
        }
    }
    out.push('\n');
    out.push_str(
        &fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote_if_needed(v)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out
}

/// Splits `Steps: 20, Sampler: Euler a, Model: "a, b"` into pairs (quoted values unescaped).
fn split_fields(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let Some(colon) = rest.find(':') else { break };
        let key = rest[..colon]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_string();
        let mut after = rest[colon + 1..].trim_start();
        let value;
        if after.starts_with('"') {
            // A JSON string literal: find its end.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices().skip(1) {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                }
            }
            match end {
                Some(e) => {
                    let lit = &after[..=e];
                    value = serde_json::from_str::<String>(lit)
                        .unwrap_or_else(|_| lit.trim_matches('"').to_string());
                    after = &after[e + 1..];
                }
                None => {
                    value = after.to_string();
                    after = "";
                }
            }
            rest = after.trim_start().trim_start_matches(',').trim_start();
        } else {
            match after.find(',') {
                Some(c) => {
                    value = after[..c].trim().to_string();
                    rest = after[c + 1..].trim_start();
                }
                None => {
                    value = after.trim().to_string();
                    rest = "";
                }
            }
        }
        if !key.is_empty() {
            out.push((key, value));
        }
    }
    out
}

/// Reads AUTOMATIC1111's `parameters` text. Unknown fields go to `extra`.
pub fn parse_a1111(text: &str) -> ImageMeta {
    let mut meta = ImageMeta {
        generator: Some("AUTOMATIC1111".into()),
        ..Default::default()
    };
    let lines: Vec<&str> = text.lines().collect();
    // The settings line is the last one with "Steps: " in it.
    let settings_at = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("Steps:") || l.contains(", Steps: "));
    let (body, settings) = match settings_at {
        Some(i) => (&lines[..i], Some(lines[i..].join("\n"))),
        None => (&lines[..], None),
    };
    let mut prompt = Vec::new();
    let mut negative: Option<Vec<&str>> = None;
    for line in body {
        if let Some(n) = line.strip_prefix("Negative prompt:") {
            negative = Some(vec![n.trim_start()]);
        } else if let Some(neg) = negative.as_mut() {
            neg.push(line);
        } else {
            prompt.push(*line);
        }
    }
    meta.prompt = prompt.join("\n").trim().to_string();
    meta.negative_prompt = negative.map(|n| n.join("\n")).unwrap_or_default();
    if let Some(settings) = settings {
        for (k, v) in split_fields(&settings.replace('\n', ", ")) {
            match k.as_str() {
                "Steps" => meta.steps = v.parse().ok(),
                "Sampler" => meta.sampler = Some(v),
                "CFG scale" => meta.guidance = v.parse().ok(),
                "Seed" => meta.seed = v.parse().ok(),
                "Size" => {
                    if let Some((w, h)) = v.split_once('x') {
                        meta.width = w.trim().parse().unwrap_or(0);
                        meta.height = h.trim().parse().unwrap_or(0);
                    }
                }
                "Model hash" => meta.model_hash = Some(v),
                "Model" => meta.model_name = Some(v),
                "Denoising strength" => meta.strength = v.parse().ok(),
                "Version" => {
                    meta.extra.insert(k, v.clone());
                    if v.starts_with("Atelier") {
                        meta.generator = Some(v);
                    }
                }
                _ => {
                    meta.extra.insert(k, v);
                }
            }
        }
    }
    meta
}

// ---- ComfyUI and InvokeAI --------------------------------------------------------------------

/// Reads ComfyUI's `prompt` chunk (the API graph): prompt texts and sampler settings from the
/// first sampler node, following its `positive`/`negative` links to text-encode nodes.
pub fn parse_comfyui(graph_json: &str) -> Option<ImageMeta> {
    let graph: Value = serde_json::from_str(graph_json).ok()?;
    let nodes = graph.as_object()?;
    let text_of = |link: &Value| -> Option<String> {
        let id = match link.get(0)? {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let node = nodes.get(&id)?;
        node.get("inputs")?
            .get("text")?
            .as_str()
            .map(str::to_string)
    };
    let mut meta = ImageMeta {
        generator: Some("ComfyUI".into()),
        ..Default::default()
    };
    let mut ids: Vec<&String> = nodes.keys().collect();
    ids.sort_by_key(|k| k.parse::<u64>().unwrap_or(u64::MAX));
    let sampler = ids.iter().map(|id| &nodes[*id]).find(|n| {
        n.get("class_type")
            .and_then(Value::as_str)
            .is_some_and(|c| c.starts_with("KSampler"))
    });
    if let Some(inputs) = sampler.and_then(|n| n.get("inputs")) {
        meta.seed = inputs
            .get("seed")
            .or_else(|| inputs.get("noise_seed"))
            .and_then(Value::as_u64);
        meta.steps = inputs
            .get("steps")
            .and_then(Value::as_u64)
            .map(|s| s as u32);
        meta.guidance = inputs.get("cfg").and_then(Value::as_f64).map(|g| g as f32);
        meta.sampler = inputs
            .get("sampler_name")
            .and_then(Value::as_str)
            .map(str::to_string);
        meta.strength = inputs
            .get("denoise")
            .and_then(Value::as_f64)
            .map(|d| d as f32)
            .filter(|d| *d < 1.0);
        meta.prompt = inputs.get("positive").and_then(text_of).unwrap_or_default();
        meta.negative_prompt = inputs.get("negative").and_then(text_of).unwrap_or_default();
    }
    for id in ids {
        let node = &nodes[id];
        let class = node.get("class_type").and_then(Value::as_str).unwrap_or("");
        let inputs = node.get("inputs");
        if class.starts_with("CheckpointLoader") {
            meta.model_name = inputs
                .and_then(|i| i.get("ckpt_name"))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if class == "EmptyLatentImage" {
            let dim = |k| inputs.and_then(|i| i.get(k)).and_then(Value::as_u64);
            meta.width = dim("width").unwrap_or(0) as u32;
            meta.height = dim("height").unwrap_or(0) as u32;
        }
    }
    Some(meta)
}

/// Reads InvokeAI's `invokeai_metadata` chunk.
pub fn parse_invokeai(json: &str) -> Option<ImageMeta> {
    let v: Value = serde_json::from_str(json).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let n = |k: &str| v.get(k).and_then(Value::as_f64);
    Some(ImageMeta {
        generator: Some("InvokeAI".into()),
        prompt: s("positive_prompt").unwrap_or_default(),
        negative_prompt: s("negative_prompt").unwrap_or_default(),
        seed: v.get("seed").and_then(Value::as_u64),
        steps: n("steps").map(|x| x as u32),
        guidance: n("cfg_scale").map(|x| x as f32),
        sampler: s("scheduler"),
        width: n("width").unwrap_or(0.0) as u32,
        height: n("height").unwrap_or(0.0) as u32,
        model_name: v
            .get("model")
            .and_then(|m| m.get("name").or_else(|| m.get("model_name")))
            .and_then(Value::as_str)
            .map(str::to_string),
        strength: n("strength").map(|x| x as f32),
        ..Default::default()
    })
}

// ---- XMP -------------------------------------------------------------------------------------

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// An XMP packet: IPTC digital source type `trainedAlgorithmicMedia`, the creator tool and,
/// unless `description` is `None`, the prompt as the description.
pub fn xmp_packet(description: Option<&str>, tool: &str) -> String {
    let desc = description
        .filter(|d| !d.is_empty())
        .map(|d| {
            format!(
                "\n   <dc:description><rdf:Alt><rdf:li xml:lang=\"x-default\">{}</rdf:li></rdf:Alt></dc:description>",
                xml_escape(d)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    Iptc4xmpExt:DigitalSourceType="{IPTC_AI_SOURCE}"
    xmp:CreatorTool="{}">{desc}
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"#,
        xml_escape(tool)
    )
}

// ---- PNG -------------------------------------------------------------------------------------

/// What a file's own metadata says, raw and interpreted.
#[derive(Clone, Debug, Default)]
pub struct EmbeddedText {
    /// Every text chunk (keyword, text), decompressed within [`TEXT_LIMIT`].
    pub chunks: Vec<(String, String)>,
    /// Chunks that could not be read (a bomb, bad compression), by keyword and reason.
    pub unreadable: Vec<(String, String)>,
}

impl EmbeddedText {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.chunks
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The settings, preferring Atelier's own JSON, then A1111, InvokeAI, ComfyUI.
    pub fn meta(&self) -> Option<ImageMeta> {
        if let Some(meta) = self
            .get("atelier")
            .and_then(|j| serde_json::from_str::<ImageMeta>(j).ok())
        {
            return Some(meta);
        }
        let mut meta = if let Some(p) = self.get("parameters") {
            parse_a1111(p)
        } else if let Some(m) = self.get("invokeai_metadata").and_then(parse_invokeai) {
            m
        } else {
            self.get("prompt").and_then(parse_comfyui)?
        };
        for (k, v) in &self.chunks {
            if !matches!(k.as_str(), "parameters" | "XML:com.adobe.xmp") {
                meta.extra
                    .entry(format!("png:{k}"))
                    .or_insert_with(|| v.clone());
            }
        }
        Some(meta)
    }
}

/// Reads the text chunks before the image data of a PNG, with bounded memory.
pub fn read_png_text(bytes: &[u8]) -> Result<EmbeddedText, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_limits(png::Limits {
        bytes: PNG_META_LIMIT,
    });
    let reader = decoder.read_info().map_err(|e| e.to_string())?;
    let info = reader.info();
    let mut out = EmbeddedText::default();
    for c in &info.uncompressed_latin1_text {
        out.chunks.push((c.keyword.clone(), c.text.clone()));
    }
    for c in &info.compressed_latin1_text {
        let mut c = c.clone();
        match c
            .decompress_text_with_limit(TEXT_LIMIT)
            .and_then(|_| c.get_text())
        {
            Ok(t) => out.chunks.push((c.keyword.clone(), t)),
            Err(e) => out.unreadable.push((c.keyword.clone(), e.to_string())),
        }
    }
    for c in &info.utf8_text {
        let mut c = c.clone();
        match c
            .decompress_text_with_limit(TEXT_LIMIT)
            .and_then(|_| c.get_text())
        {
            Ok(t) => out.chunks.push((c.keyword.clone(), t)),
            Err(e) => out.unreadable.push((c.keyword.clone(), e.to_string())),
        }
    }
    Ok(out)
}

fn is_latin1(s: &str) -> bool {
    s.chars().all(|c| (c as u32) < 0x100 && c != '\0')
}

/// Encodes an RGB image as PNG with the given text chunks (tEXt when Latin-1, else iTXt,
/// as PIL does), written before the image data.
pub fn encode_png(img: &image::RgbImage, texts: &[(&str, String)]) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Balanced);
        for (k, v) in texts {
            let r = if is_latin1(v) {
                enc.add_text_chunk(k.to_string(), v.clone())
            } else {
                enc.add_itxt_chunk(k.to_string(), v.clone())
            };
            r.map_err(|e| format!("text chunk {k}: {e}"))?;
        }
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(img.as_raw())
            .map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// Replaces a PNG's text chunks named in `texts` (any of tEXt/zTXt/iTXt with those keywords)
/// by new ones placed before the image data, copying every other chunk byte for byte: the
/// pixels are not decoded or re-encoded. `None` if `png` is not a well-formed PNG.
pub fn replace_png_text(png: &[u8], texts: &[(&str, String)]) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !png.starts_with(SIGNATURE) {
        return None;
    }
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut h = crc32fast::Hasher::new();
        h.update(kind);
        h.update(data);
        out.extend_from_slice(&h.finalize().to_be_bytes());
    };
    let mut out = SIGNATURE.to_vec();
    let mut at = SIGNATURE.len();
    let mut inserted = false;
    let mut saw_end = false;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().ok()?) as usize;
        let kind = &png[at + 4..at + 8];
        let end = at.checked_add(12)?.checked_add(len)?;
        if end > png.len() {
            return None;
        }
        let data = &png[at + 8..at + 8 + len];
        let is_text = matches!(kind, b"tEXt" | b"zTXt" | b"iTXt");
        let keyword = data.split(|b| *b == 0).next().unwrap_or_default();
        let replaced = is_text && texts.iter().any(|(k, _)| k.as_bytes() == keyword);
        if kind == b"IDAT" && !inserted {
            for (k, v) in texts {
                let mut body = k.as_bytes().to_vec();
                if is_latin1(v) {
                    body.push(0);
                    body.extend(v.chars().map(|c| c as u8));
                    chunk(&mut out, b"tEXt", &body);
                } else {
                    // iTXt: keyword, 0, compression flag 0, method 0, empty language and
                    // translated keyword, then UTF-8 text.
                    body.extend_from_slice(&[0, 0, 0, 0, 0]);
                    body.extend_from_slice(v.as_bytes());
                    chunk(&mut out, b"iTXt", &body);
                }
            }
            inserted = true;
        }
        if !replaced {
            out.extend_from_slice(&png[at..end]);
        }
        saw_end |= kind == b"IEND";
        at = end;
    }
    (inserted && saw_end).then_some(out)
}

/// The three chunks Atelier writes for `meta`.
pub fn png_chunks(meta: &ImageMeta) -> Vec<(&'static str, String)> {
    let tool = meta.generator.clone().unwrap_or_else(generator_name);
    vec![
        ("parameters", to_a1111(meta)),
        (
            "atelier",
            serde_json::to_string(meta).unwrap_or_else(|_| "{}".into()),
        ),
        ("XML:com.adobe.xmp", xmp_packet(Some(&meta.prompt), &tool)),
    ]
}

/// "Atelier x.y.z".
pub fn generator_name() -> String {
    format!("Atelier {}", env!("CARGO_PKG_VERSION"))
}

// ---- EXIF (JPEG, WebP) -----------------------------------------------------------------------

/// A little-endian TIFF/EXIF block with Software and an Exif IFD holding `UserComment`
/// (the `UNICODE\0` prefix and UTF-16BE text, as A1111 writes it).
pub fn exif_user_comment(comment: &str, software: &str) -> Vec<u8> {
    let mut sw: Vec<u8> = software.bytes().filter(|b| *b != 0).collect();
    sw.push(0);
    let mut uc = b"UNICODE\0".to_vec();
    for u in comment.encode_utf16() {
        uc.extend_from_slice(&u.to_be_bytes());
    }
    // Layout: header(8) | IFD0: 2 entries (2 + 24 + 4) | Exif IFD: 1 entry (2 + 12 + 4) | data
    let ifd0_at = 8u32;
    let exif_at = ifd0_at + 2 + 2 * 12 + 4;
    let data_at = exif_at + 2 + 12 + 4;
    let sw_at = data_at;
    let uc_at = sw_at + sw.len() as u32 + (sw.len() as u32 & 1);
    let mut b = Vec::new();
    b.extend_from_slice(b"II");
    b.extend_from_slice(&42u16.to_le_bytes());
    b.extend_from_slice(&ifd0_at.to_le_bytes());
    let entry = |b: &mut Vec<u8>, tag: u16, typ: u16, count: u32, value: u32| {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&typ.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&value.to_le_bytes());
    };
    b.extend_from_slice(&2u16.to_le_bytes());
    entry(&mut b, 0x0131, 2, sw.len() as u32, sw_at); // Software (ASCII)
    entry(&mut b, 0x8769, 4, 1, exif_at); // Exif IFD pointer
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    entry(&mut b, 0x9286, 7, uc.len() as u32, uc_at); // UserComment (UNDEFINED)
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&sw);
    if sw.len() & 1 == 1 {
        b.push(0);
    }
    b.extend_from_slice(&uc);
    b
}

/// Finds `UserComment` in a TIFF/EXIF block (either byte order; ASCII or UNICODE prefix).
pub fn read_exif_user_comment(tiff: &[u8]) -> Option<String> {
    let le = match tiff.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let s: [u8; 2] = tiff.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let s: [u8; 4] = tiff.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    let find = |ifd: usize, tag: u16| -> Option<(u32, u32)> {
        let n = u16_at(ifd)? as usize;
        (0..n.min(512)).find_map(|i| {
            let e = ifd + 2 + i * 12;
            (u16_at(e)? == tag).then(|| Some((u32_at(e + 4)?, u32_at(e + 8)?)))?
        })
    };
    let ifd0 = u32_at(4)? as usize;
    let (_, exif) = find(ifd0, 0x8769)?;
    let (count, at) = find(exif as usize, 0x9286)?;
    let data = tiff.get(at as usize..(at as usize).checked_add(count as usize)?)?;
    let (prefix, text) = data.split_at(8.min(data.len()));
    if prefix == b"UNICODE\0" {
        // A1111 writes big-endian; some tools little-endian: pick the one that decodes sanely.
        let units = |be: bool| -> Vec<u16> {
            text.chunks_exact(2)
                .map(|c| {
                    if be {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                })
                .collect()
        };
        let be = String::from_utf16_lossy(&units(true));
        let le_s = String::from_utf16_lossy(&units(false));
        let score = |s: &str| s.chars().filter(|c| c.is_ascii()).count();
        let s = if score(&be) >= score(&le_s) { be } else { le_s };
        Some(s.trim_end_matches('\0').to_string())
    } else {
        Some(
            String::from_utf8_lossy(text)
                .trim_end_matches('\0')
                .to_string(),
        )
    }
}

/// Inserts an XMP APP1 segment right after a JPEG's SOI (and APP0/APP1-EXIF if present).
pub fn jpeg_insert_xmp(jpeg: &[u8], xmp: &str) -> Vec<u8> {
    const NS: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
    let payload_len = NS.len() + xmp.len() + 2;
    if jpeg.len() < 2 || jpeg[..2] != [0xFF, 0xD8] || payload_len > 0xFFFF {
        return jpeg.to_vec();
    }
    // Skip SOI and the leading APPn segments so XMP follows JFIF/EXIF.
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF && (0xE0..=0xE1).contains(&jpeg[at + 1]) {
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        at += 2 + len;
    }
    let at = at.min(jpeg.len());
    let mut out = Vec::with_capacity(jpeg.len() + payload_len + 2);
    out.extend_from_slice(&jpeg[..at]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    out.extend_from_slice(NS);
    out.extend_from_slice(xmp.as_bytes());
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// The EXIF (TIFF) block and XMP packet of a JPEG, if any.
pub fn jpeg_segments(jpeg: &[u8]) -> (Option<Vec<u8>>, Option<String>) {
    let (mut exif, mut xmp) = (None, None);
    let mut at = 2;
    if jpeg.get(..2) != Some(&[0xFF, 0xD8]) {
        return (None, None);
    }
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF {
        let marker = jpeg[at + 1];
        if marker == 0xDA || marker == 0xD9 {
            break; // start of scan: metadata segments come before it
        }
        let len = u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
        let Some(seg) = jpeg.get(at + 4..at + 2 + len) else {
            break;
        };
        if marker == 0xE1 {
            if let Some(t) = seg.strip_prefix(b"Exif\0\0") {
                exif = Some(t.to_vec());
            } else if let Some(x) = seg.strip_prefix(b"http://ns.adobe.com/xap/1.0/\0") {
                xmp = Some(String::from_utf8_lossy(x).into_owned());
            }
        }
        at += 2 + len.max(2);
    }
    (exif, xmp)
}

/// Appends an `XMP ` chunk to an extended-format WebP (one with a VP8X header, as the
/// encoder writes when EXIF is set) and flags it in VP8X.
pub fn webp_insert_xmp(webp: &[u8], xmp: &str) -> Vec<u8> {
    if webp.len() < 30
        || &webp[..4] != b"RIFF"
        || &webp[8..12] != b"WEBP"
        || &webp[12..16] != b"VP8X"
    {
        return webp.to_vec();
    }
    let mut out = webp.to_vec();
    out[20] |= 0x04; // XMP metadata present
    out.extend_from_slice(b"XMP ");
    out.extend_from_slice(&(xmp.len() as u32).to_le_bytes());
    out.extend_from_slice(xmp.as_bytes());
    if xmp.len() & 1 == 1 {
        out.push(0);
    }
    let riff = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    out
}

/// The `EXIF` and `XMP ` chunks of a WebP.
pub fn webp_chunks(webp: &[u8]) -> (Option<Vec<u8>>, Option<String>) {
    let (mut exif, mut xmp) = (None, None);
    if webp.len() < 12 || &webp[..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return (None, None);
    }
    let mut at = 12;
    while at + 8 <= webp.len() {
        let id = &webp[at..at + 4];
        let len = u32::from_le_bytes(webp[at + 4..at + 8].try_into().unwrap_or([0; 4])) as usize;
        let Some(body) = webp.get(at + 8..(at + 8).saturating_add(len)) else {
            break;
        };
        match id {
            b"EXIF" => exif = Some(body.strip_prefix(b"Exif\0\0").unwrap_or(body).to_vec()),
            b"XMP " => xmp = Some(String::from_utf8_lossy(body).into_owned()),
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    (exif, xmp)
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
        assert!(text.contains("Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234567890123, Size: 512x768"), "{text}");
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
        let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
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
        assert_eq!(image::load_from_memory(&second).unwrap().to_rgb8(), img);
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
