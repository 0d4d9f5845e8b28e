//! AUTOMATIC1111's `parameters` text: writing it for what Atelier makes, reading it (unknown
//! fields kept) from what A1111, Forge, Civitai and most tools write.

use super::*;

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
    if let Some(n) = meta.clip_skip.filter(|&n| n > 1) {
        fields.push(("Clip skip".into(), n.to_string()));
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
                "Clip skip" => meta.clip_skip = v.parse().ok(),
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
