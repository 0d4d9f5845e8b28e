//! PNG text chunks: reading them with bounded memory, writing them before the image data,
//! rewriting them without touching the pixels.

use super::*;
use std::io::Cursor;

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
    let mut decoder = ::png::Decoder::new(Cursor::new(bytes));
    decoder.set_limits(::png::Limits {
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
        let mut enc = ::png::Encoder::new(&mut buf, img.width(), img.height());
        enc.set_color(::png::ColorType::Rgb);
        enc.set_depth(::png::BitDepth::Eight);
        enc.set_compression(::png::Compression::Balanced);
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
