//! The emoji recipe: turns the npm packages `emoji-datasource-google` (Noto 64x64 PNGs and
//! `emoji.json`) and `emojibase-data` (CLDR labels and tags) into a captioned dataset in the
//! layout [`super::data::open_dataset`] reads: `out/train/` and `out/eval/`, each with the PNGs
//! and a `captions.jsonl`. Owns captions (name, tags, category, skin tone) and the
//! deterministic held-out split by base emoji. Fetch the packages with
//! `scripts/fetch-emoji-data.sh`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

/// Inside `node_modules/`.
const DATASOURCE_JSON: &str = "emoji-datasource-google/emoji.json";
const DATASOURCE_IMAGES: &str = "emoji-datasource-google/img/google/64";
const EMOJIBASE_JSON: &str = "emojibase-data/en/data.json";
/// The category of skin-tone modifiers and hair components, never trained on.
const COMPONENT_CATEGORY: &str = "Component";

/// Skin-tone modifiers U+1F3FB..U+1F3FF and their CLDR names (emojibase `tone` 1..5).
pub const SKIN_TONES: [(&str, &str); 5] = [
    ("1F3FB", "light skin tone"),
    ("1F3FC", "medium-light skin tone"),
    ("1F3FD", "medium skin tone"),
    ("1F3FE", "medium-dark skin tone"),
    ("1F3FF", "dark skin tone"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmojiOptions {
    /// At most this many CLDR tags per caption (tags already in the name are not counted).
    pub tags_per_caption: usize,
    /// One base emoji in this many goes to eval (by hash of its hexcode); 0 puts none there.
    pub eval_one_in: u64,
}

impl Default for EmojiOptions {
    fn default() -> Self {
        Self {
            tags_per_caption: 4,
            eval_one_in: 10,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmojiReport {
    pub train_images: usize,
    pub eval_images: usize,
    /// Base emoji (skin variants not counted) with at least one image, per split.
    pub base_train: usize,
    pub base_eval: usize,
    /// Images (train + eval, variants included) per category as `emoji.json` names it.
    pub categories: BTreeMap<String, usize>,
    /// Entries of the `Component` category left out (skin-tone modifiers).
    pub skipped_component: usize,
    /// Entries and skin variants without a Google image file.
    pub skipped_no_image: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EmojiError {
    #[error(
        "{path}: emoji data not found (missing {missing}); run scripts/fetch-emoji-data.sh and \
         pass the folder it prints"
    )]
    NotFetched { path: PathBuf, missing: String },
    #[error("{path}: unexpected contents: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: no emoji images found")]
    Empty { path: PathBuf },
}

/// An entry of `emoji-datasource-google/emoji.json` (fields used here).
#[derive(Debug, Clone, Deserialize)]
struct SourceEmoji {
    name: Option<String>,
    short_name: Option<String>,
    unified: String,
    image: String,
    category: String,
    #[serde(default)]
    subcategory: String,
    #[serde(default)]
    sort_order: u64,
    has_img_google: Option<bool>,
    #[serde(default)]
    skin_variations: BTreeMap<String, SourceVariation>,
}

#[derive(Debug, Clone, Deserialize)]
struct SourceVariation {
    unified: String,
    image: String,
    has_img_google: Option<bool>,
}

/// An entry of `emojibase-data/en/data.json` (fields used here).
#[derive(Debug, Clone, Deserialize)]
struct BaseEntry {
    label: String,
    hexcode: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    skins: Vec<BaseSkin>,
}

#[derive(Debug, Clone, Deserialize)]
struct BaseSkin {
    hexcode: String,
    #[serde(default)]
    tone: Option<Value>,
}

/// Labels, tags and skin tones from emojibase, by hexcode without `FE0F`.
#[derive(Debug, Default)]
struct Emojibase {
    entries: HashMap<String, BaseEntry>,
    /// Skin hexcode -> tone numbers 1..=5.
    tones: HashMap<String, Vec<u8>>,
}

impl Emojibase {
    fn new(entries: Vec<BaseEntry>) -> Self {
        let mut base = Self::default();
        for entry in entries {
            for skin in &entry.skins {
                let tones = match &skin.tone {
                    Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
                    Some(Value::Array(list)) => list.iter().filter_map(Value::as_u64).collect(),
                    _ => Vec::new(),
                };
                let tones: Vec<u8> = tones
                    .into_iter()
                    .filter(|t| (1..=5).contains(t))
                    .map(|t| t as u8)
                    .collect();
                if !tones.is_empty() {
                    base.tones.insert(normalize_hexcode(&skin.hexcode), tones);
                }
            }
            base.entries
                .insert(normalize_hexcode(&entry.hexcode), entry);
        }
        base
    }
}

/// One image to write.
struct Sample {
    source: PathBuf,
    file: String,
    caption: String,
    category: String,
    subcategory: String,
    name: String,
    hexcode: String,
    base_hexcode: String,
    skin_tone: Option<String>,
}

/// Builds `out/train/` and `out/eval/` from the npm packages under `npm_dir` (the folder that
/// holds `node_modules/`, as `scripts/fetch-emoji-data.sh` prints; `node_modules/` itself is
/// accepted too). Existing files of the same names are overwritten; `captions.jsonl` lists
/// exactly this run's images.
pub fn prepare_emoji(
    npm_dir: &Path,
    out: &Path,
    opts: &EmojiOptions,
) -> Result<EmojiReport, EmojiError> {
    let modules = node_modules(npm_dir)?;
    let source: Vec<SourceEmoji> = read_json(&modules.join(DATASOURCE_JSON))?;
    let emojibase = Emojibase::new(read_json(&modules.join(EMOJIBASE_JSON))?);
    let images = modules.join(DATASOURCE_IMAGES);

    let mut source = source;
    source.sort_by(|a, b| (a.sort_order, &a.unified).cmp(&(b.sort_order, &b.unified)));

    let mut report = EmojiReport::default();
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for emoji in &source {
        if emoji.category == COMPONENT_CATEGORY {
            report.skipped_component += 1;
            continue;
        }
        let samples = samples_of(
            emoji,
            &emojibase,
            &images,
            opts,
            &mut report.skipped_no_image,
        );
        if samples.is_empty() {
            continue;
        }
        let held_out = is_eval(&emoji.unified, opts.eval_one_in);
        if held_out {
            report.base_eval += 1;
        } else {
            report.base_train += 1;
        }
        for sample in &samples {
            *report
                .categories
                .entry(sample.category.clone())
                .or_default() += 1;
        }
        if held_out {
            eval.extend(samples);
        } else {
            train.extend(samples);
        }
    }
    if train.is_empty() && eval.is_empty() {
        return Err(EmojiError::Empty { path: images });
    }
    report.train_images = train.len();
    report.eval_images = eval.len();
    write_split(&out.join("train"), &train)?;
    write_split(&out.join("eval"), &eval)?;
    Ok(report)
}

fn node_modules(npm_dir: &Path) -> Result<PathBuf, EmojiError> {
    let nested = npm_dir.join("node_modules");
    let modules = if !nested.is_dir() && npm_dir.join("emoji-datasource-google").is_dir() {
        npm_dir.to_path_buf()
    } else {
        nested
    };
    for (needed, is_dir) in [
        (DATASOURCE_JSON, false),
        (DATASOURCE_IMAGES, true),
        (EMOJIBASE_JSON, false),
    ] {
        let path = modules.join(needed);
        let present = if is_dir {
            path.is_dir()
        } else {
            path.is_file()
        };
        if !present {
            return Err(EmojiError::NotFetched {
                path: npm_dir.to_path_buf(),
                missing: format!("node_modules/{needed}"),
            });
        }
    }
    Ok(modules)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmojiError> {
    let text = std::fs::read_to_string(path).map_err(|e| EmojiError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| EmojiError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The base image and its skin variants that have a Google image on disk.
fn samples_of(
    emoji: &SourceEmoji,
    emojibase: &Emojibase,
    images: &Path,
    opts: &EmojiOptions,
    skipped_no_image: &mut usize,
) -> Vec<Sample> {
    let key = normalize_hexcode(&emoji.unified);
    let base = emojibase.entries.get(&key);
    let name = match (base, &emoji.name, &emoji.short_name) {
        (Some(b), _, _) => b.label.to_lowercase(),
        (None, Some(n), _) => n.to_lowercase(),
        (None, None, Some(s)) => s.replace('_', " ").to_lowercase(),
        (None, None, None) => emoji.unified.to_lowercase(),
    };
    let tags = base.map(|b| b.tags.as_slice()).unwrap_or_default();
    let caption = emoji_caption(&name, tags, &emoji.category, opts.tags_per_caption);

    let mut has_image = |flag: Option<bool>, file: &str| {
        let ok = flag != Some(false) && images.join(file).is_file();
        if !ok {
            *skipped_no_image += 1;
        }
        ok
    };
    let sample = |file: &str, hexcode: &str, caption: String, skin_tone: Option<String>| Sample {
        source: images.join(file),
        file: file.to_string(),
        caption,
        category: emoji.category.clone(),
        subcategory: emoji.subcategory.clone(),
        name: name.clone(),
        hexcode: hexcode.to_string(),
        base_hexcode: emoji.unified.clone(),
        skin_tone,
    };

    let mut samples = Vec::new();
    if has_image(emoji.has_img_google, &emoji.image) {
        samples.push(sample(&emoji.image, &emoji.unified, caption.clone(), None));
    }
    for (modifiers, variation) in &emoji.skin_variations {
        if !has_image(variation.has_img_google, &variation.image) {
            continue;
        }
        let tones = emojibase
            .tones
            .get(&normalize_hexcode(&variation.unified))
            .map(|t| tone_names_from_numbers(t))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| tone_names_from_hexcode(modifiers));
        let tone = tones.join(", ");
        let (caption, skin_tone) = if tone.is_empty() {
            (caption.clone(), None)
        } else {
            (format!("{caption}, {tone}"), Some(tone))
        };
        samples.push(sample(
            &variation.image,
            &variation.unified,
            caption,
            skin_tone,
        ));
    }
    samples
}

/// `name, tag, tag, ..., category` with at most `max_tags` tags that do not repeat the name.
pub fn emoji_caption(name: &str, tags: &[String], category: &str, max_tags: usize) -> String {
    let name = name.trim().to_lowercase();
    let name_words: Vec<String> = words(&name).map(singular).collect();
    let mut parts = vec![name.clone()];
    let mut used: Vec<String> = Vec::new();
    for tag in tags {
        if used.len() >= max_tags {
            break;
        }
        let tag = tag.trim().to_lowercase();
        if tag.is_empty() || used.contains(&tag) {
            continue;
        }
        let tag_words: Vec<String> = words(&tag).map(singular).collect();
        let repeats_name = tag_words.is_empty() || tag_words.iter().all(|w| name_words.contains(w));
        if !repeats_name {
            used.push(tag);
        }
    }
    parts.extend(used);
    let category = category.trim().to_lowercase();
    if !category.is_empty() {
        parts.push(category);
    }
    parts.join(", ")
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric() && c != '+' && c != '\'')
        .filter(|w| !w.is_empty())
}

/// A crude singular so that the tag "thumb" counts as said by "thumbs up".
fn singular(word: &str) -> String {
    match word.strip_suffix('s') {
        Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_string(),
        _ => word.to_string(),
    }
}

/// Tone names for emojibase tone numbers (1 = light .. 5 = dark); a repeated tone is named once.
pub fn tone_names_from_numbers(tones: &[u8]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for &t in tones {
        if let Some(&(_, name)) = SKIN_TONES.get(usize::from(t).wrapping_sub(1)) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Tone names for the modifiers U+1F3FB..U+1F3FF found in a hexcode such as `1F3FB-1F3FF`
/// or `1F44D-1F3FD`; a repeated tone is named once.
pub fn tone_names_from_hexcode(hexcode: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for part in hexcode.split('-') {
        if let Some(&(_, name)) = SKIN_TONES
            .iter()
            .find(|(code, _)| code.eq_ignore_ascii_case(part))
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Uppercase hexcode without the emoji presentation selector `FE0F`, the form both packages
/// can be matched on.
pub fn normalize_hexcode(hexcode: &str) -> String {
    hexcode
        .split('-')
        .filter(|p| !p.eq_ignore_ascii_case("FE0F"))
        .map(str::to_uppercase)
        .collect::<Vec<_>>()
        .join("-")
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Whether the base emoji `base_hexcode` (as `emoji.json` spells it, e.g. `1F44D`) is held out:
/// `fnv1a64(hexcode) % eval_one_in == 0`.
pub fn is_eval(base_hexcode: &str, eval_one_in: u64) -> bool {
    eval_one_in > 0 && fnv1a64(base_hexcode.as_bytes()).is_multiple_of(eval_one_in)
}

fn write_split(dir: &Path, samples: &[Sample]) -> Result<(), EmojiError> {
    let io = |path: &Path, e: std::io::Error| EmojiError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut lines = String::new();
    for s in samples {
        let target = dir.join(&s.file);
        std::fs::copy(&s.source, &target).map_err(|e| io(&s.source, e))?;
        let mut line = json!({
            "file": s.file,
            "caption": s.caption,
            "category": s.category,
            "subcategory": s.subcategory,
            "name": s.name,
            "hexcode": s.hexcode,
            "base_hexcode": s.base_hexcode,
        });
        if let (Some(tone), Some(map)) = (&s.skin_tone, line.as_object_mut()) {
            map.insert("skin_tone".into(), Value::from(tone.as_str()));
        }
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    // Written whole and renamed into place, so a reader never sees half a file.
    let captions = dir.join("captions.jsonl");
    crate::fsio::write_file(
        &captions,
        lines.as_bytes(),
        crate::fsio::Durability::Durable,
    )
    .map_err(|e| io(&e.path, e.source))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn captions_skip_tags_the_name_already_says() {
        let tags: Vec<String> = ["animal", "cat", "face", "kitten", "kitty", "pet"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            emoji_caption("Cat Face", &tags, "Animals & Nature", 4),
            "cat face, animal, kitten, kitty, pet, animals & nature"
        );
        let tags: Vec<String> = ["+1", "good", "hand", "like", "thumb", "up", "yes"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            emoji_caption("thumbs up", &tags, "People & Body", 4),
            "thumbs up, +1, good, hand, like, people & body"
        );
        assert_eq!(emoji_caption("x", &[], "Symbols", 4), "x, symbols");
        assert_eq!(emoji_caption("x", &tags, "Symbols", 0), "x, symbols");
    }

    #[test]
    fn tone_names() {
        assert_eq!(tone_names_from_hexcode("1F44D-1F3FD"), ["medium skin tone"]);
        assert_eq!(
            tone_names_from_hexcode("1F3FB-1F3FF"),
            ["light skin tone", "dark skin tone"]
        );
        assert_eq!(tone_names_from_hexcode("1F3FB-1F3FB"), ["light skin tone"]);
        assert_eq!(
            tone_names_from_numbers(&[2, 4]),
            ["medium-light skin tone", "medium-dark skin tone"]
        );
        assert!(tone_names_from_numbers(&[0, 6]).is_empty());
    }

    #[test]
    fn hexcodes_match_without_fe0f() {
        assert_eq!(normalize_hexcode("0023-fe0f-20E3"), "0023-20E3");
        assert_eq!(normalize_hexcode("1F44D"), "1F44D");
    }
}
