//! AUTOMATIC1111's `parameters` text: writing it for what Atelier makes, reading it (unknown
//! fields kept) from what A1111, Forge, Civitai and most tools write; and A1111's sampler and
//! schedule names, both its pre-1.9 form (`Sampler: DPM++ 2M Karras`) and 1.9+'s
//! (`Sampler: DPM++ 2M, Schedule type: Karras`).

use super::*;
use crate::generation::SamplerKind;

/// A1111's schedule types that it also reads as the end of a sampler label ("DPM++ 2M
/// Karras"), longest first so that "SGM Uniform" is not taken for "Uniform". ("Automatic" is
/// not one: it means the sampler's own default, see [`A1111_AUTOMATIC`].)
const A1111_SCHEDULES: [&str; 10] = [
    "Align Your Steps",
    "Polyexponential",
    "SGM Uniform",
    "Exponential",
    "KL Optimal",
    "Uniform",
    "Karras",
    "Simple",
    "Normal",
    "Beta",
];

/// The samplers whose "Automatic" schedule in A1111 1.9+ is not the uniform one, with the one
/// it is (`samplers_k_diffusion` options); a missing `Schedule type` reads as "Automatic".
/// Before 1.9 every plain name meant the uniform schedule.
const A1111_AUTOMATIC: [(&str, &str); 7] = [
    ("DPM++ 2M", "Karras"),
    ("DPM++ SDE", "Karras"),
    ("DPM++ 2M SDE", "Exponential"),
    ("DPM++ 2M SDE Heun", "Exponential"),
    ("DPM++ 2S a", "Karras"),
    ("DPM++ 3M SDE", "Exponential"),
    ("Restart", "Karras"),
];

/// The label Atelier writes for a sampler, in [`ImageMeta::sampler`]'s combined form.
pub fn a1111_sampler_label(sampler: SamplerKind) -> &'static str {
    match sampler {
        SamplerKind::Ddim => "DDIM",
        SamplerKind::Euler => "Euler",
        SamplerKind::EulerAncestral => "Euler a",
        SamplerKind::Heun => "Heun",
        SamplerKind::UniPc => "UniPC",
        SamplerKind::DpmPp2mKarras => "DPM++ 2M Karras",
        SamplerKind::DpmPp2m => "DPM++ 2M",
        SamplerKind::DpmPp2mSdeKarras => "DPM++ 2M SDE Karras",
        SamplerKind::Lcm => "LCM",
    }
}

/// Splits a combined label into the sampler and its schedule type, as A1111 1.9+ reads one:
/// "DPM++ 2M SDE Karras" is ("DPM++ 2M SDE", Some("Karras")), "Euler a" is ("Euler a", None).
pub fn split_a1111_sampler(label: &str) -> (&str, Option<&'static str>) {
    let label = label.trim();
    for schedule in A1111_SCHEDULES {
        let Some(cut) = label.len().checked_sub(schedule.len() + 1) else {
            continue;
        };
        let (base, tail) = (label.get(..cut), label.get(cut..));
        if let (Some(base), Some(tail)) = (base, tail) {
            if tail.starts_with(' ') && tail[1..].eq_ignore_ascii_case(schedule) {
                return (base.trim_end(), Some(schedule));
            }
        }
    }
    (label, None)
}

/// A1111 1.9+'s `Sampler` and `Schedule type` fields for a combined label: the schedule split
/// off ("DPM++ 2M Karras": "DPM++ 2M" + "Karras"), and "Uniform" written out for a plain name
/// whose "Automatic" schedule is another one ("DPM++ 2M", which 1.9+ would otherwise run with
/// Karras sigmas). Other plain names need no schedule type: their "Automatic" is uniform.
/// A1111 before 1.9 keeps an unknown field, so it reads the sampler alone, as the uniform one.
pub fn a1111_sampler_fields(label: &str) -> (String, Option<&'static str>) {
    match split_a1111_sampler(label) {
        (base, Some(schedule)) => (base.to_owned(), Some(schedule)),
        (name, None) => {
            let automatic_not_uniform = A1111_AUTOMATIC
                .iter()
                .any(|(sampler, _)| sampler.eq_ignore_ascii_case(name));
            (name.to_owned(), automatic_not_uniform.then_some("Uniform"))
        }
    }
}

/// The combined label for A1111's `Sampler` and `Schedule type` fields: "DPM++ 2M" +
/// "Karras" is "DPM++ 2M Karras", + "Uniform" is "DPM++ 2M". `None` when the schedule type
/// names no fixed schedule ("Automatic", or one Atelier does not know), which is then kept as
/// it is. A schedule already in the label wins, as in A1111.
pub fn combine_a1111_sampler(sampler: &str, schedule_type: &str) -> Option<String> {
    let sampler = sampler.trim();
    if split_a1111_sampler(sampler).1.is_some() {
        return Some(sampler.to_owned());
    }
    let schedule = A1111_SCHEDULES
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(schedule_type.trim()))?;
    Some(if schedule == "Uniform" {
        sampler.to_owned()
    } else {
        format!("{sampler} {schedule}")
    })
}

/// The sampler a label names: A1111's (combined, see [`ImageMeta::sampler`]), Atelier's
/// `--sampler` name or its studio label. A sampler on a schedule Atelier lacks is read as the
/// same sampler on the schedule it has ("Euler Karras": Euler; "DPM++ 2M Exponential":
/// DPM++ 2M; "DPM++ 2M SDE" or "DPM++ 2M SDE Exponential": DPM++ 2M SDE Karras); a sampler
/// Atelier lacks is `None`.
pub fn sampler_from_label(label: &str) -> Option<SamplerKind> {
    let label = label.trim();
    let by_name = SamplerKind::ALL.into_iter().find(|&kind| {
        a1111_sampler_label(kind).eq_ignore_ascii_case(label)
            || kind.cli_name().eq_ignore_ascii_case(label)
            || kind.label().eq_ignore_ascii_case(label)
    });
    if by_name.is_some() {
        return by_name;
    }
    let (base, schedule) = split_a1111_sampler(label);
    let same_sampler: Vec<(SamplerKind, Option<&str>)> = SamplerKind::ALL
        .into_iter()
        .map(|kind| (kind, split_a1111_sampler(a1111_sampler_label(kind))))
        .filter(|(_, (b, _))| b.eq_ignore_ascii_case(base))
        .map(|(kind, (_, s))| (kind, s))
        .collect();
    let pick = |want: Option<&str>| same_sampler.iter().find(|(_, s)| *s == want);
    pick(schedule)
        .or_else(|| pick(None))
        .or(same_sampler.first())
        .map(|(kind, _)| *kind)
}

/// The sampler of A1111's `Sampler` and `Schedule type` fields, either form: a schedule type
/// of "Automatic" (or none) means the sampler's own default in 1.9+, which for DPM++ 2M is
/// Karras; without a schedule type (files from before 1.9, and Atelier's own) a plain name
/// is the uniform schedule.
pub fn sampler_from_a1111(sampler: &str, schedule_type: Option<&str>) -> Option<SamplerKind> {
    let label = match schedule_type {
        Some(st) if st.trim().eq_ignore_ascii_case("automatic") => {
            match A1111_AUTOMATIC
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(sampler.trim()))
            {
                Some((name, schedule)) => format!("{name} {schedule}"),
                None => sampler.to_owned(),
            }
        }
        Some(st) => combine_a1111_sampler(sampler, st).unwrap_or_else(|| sampler.to_owned()),
        None => sampler.to_owned(),
    };
    sampler_from_label(&label)
}

impl ImageMeta {
    /// The sampler these settings name, from `sampler` and an A1111 `Schedule type` kept in
    /// `extra`, for "reuse settings".
    pub fn sampler_kind(&self) -> Option<SamplerKind> {
        let schedule = self.extra.get("Schedule type").map(String::as_str);
        sampler_from_a1111(self.sampler.as_deref()?, schedule)
    }
}

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
        // An imported schedule type that names no fixed schedule goes back as it came.
        let (sampler, schedule) = match meta.extra.get("Schedule type") {
            Some(raw) => (s.clone(), Some(raw.clone())),
            None => {
                let (sampler, schedule) = a1111_sampler_fields(s);
                (sampler, schedule.map(str::to_owned))
            }
        };
        fields.push(("Sampler".into(), sampler));
        if let Some(schedule) = schedule {
            fields.push(("Schedule type".into(), schedule));
        }
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
    // "Sampler: DPM++ 2M, Schedule type: Karras" is kept as "DPM++ 2M Karras".
    let combined = match (&meta.sampler, meta.extra.get("Schedule type")) {
        (Some(sampler), Some(schedule)) => combine_a1111_sampler(sampler, schedule),
        _ => None,
    };
    if let Some(label) = combined {
        meta.sampler = Some(label);
        meta.extra.remove("Schedule type");
    }
    meta
}
