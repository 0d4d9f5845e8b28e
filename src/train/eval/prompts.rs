//! Which prompts an evaluation uses: captions of the held-out and training splits, or a
//! prompts file, picked evenly across categories.

use super::*;

/// Where a prompt came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    HeldOut,
    Training,
    /// A prompts file without a `split` key.
    File,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPrompt {
    pub caption: String,
    /// The judge class the prompt should produce, when known.
    pub category: Option<String>,
    pub split: Split,
    /// Index of the prompt's own real image in its split's data set (prompts drawn from a data
    /// folder), for the judge's accuracy on real images of the same prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

/// Every captioned item of `data` as a prompt with its label.
pub(crate) fn dataset_prompts(data: &Dataset, label_key: &str, split: Split) -> Vec<EvalPrompt> {
    data.items
        .iter()
        .enumerate()
        .filter(|(_, item)| !item.caption.is_empty())
        .map(|(index, item)| EvalPrompt {
            caption: item.caption.clone(),
            category: label_of(&item.extra, label_key),
            split,
            item: Some(index),
        })
        .collect()
}

/// Reads a jsonl prompts file: each line an object with `caption` (or `text`), optionally the
/// label key and `split` (`held-out`/`eval` or `training`/`train`).
pub fn read_prompts_file(path: &Path, label_key: &str) -> Result<Vec<EvalPrompt>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, &e))?;
    let bad = |line: usize, reason: String| EvalError::Prompts {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(bad(i + 1, "not a JSON object".into()));
        };
        let caption = ["caption", "text"]
            .iter()
            .find_map(|k| object.get(*k).and_then(|v| v.as_str()))
            .ok_or_else(|| bad(i + 1, "no \"caption\" or \"text\"".into()))?;
        let split = match object.get("split").and_then(|v| v.as_str()) {
            Some("held-out" | "heldout" | "eval" | "test" | "val" | "validation") => Split::HeldOut,
            Some("training" | "train") => Split::Training,
            _ => Split::File,
        };
        prompts.push(EvalPrompt {
            caption: caption.to_owned(),
            category: label_of(object, label_key),
            split,
            item: None,
        });
    }
    if prompts.is_empty() {
        return Err(EvalError::Prompts {
            path: path.to_path_buf(),
            reason: "no prompts".into(),
        });
    }
    Ok(prompts)
}

/// A seeded selection of `n` prompts spread evenly over categories: each category's prompts
/// are shuffled, then categories are visited in turn (sorted by name) until `n` are picked or
/// all are used. So consecutive prompts have different categories.
pub fn stratified_pick(
    candidates: Vec<EvalPrompt>,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<EvalPrompt> {
    let mut groups: BTreeMap<String, Vec<EvalPrompt>> = BTreeMap::new();
    for p in candidates {
        groups
            .entry(p.category.clone().unwrap_or_default())
            .or_default()
            .push(p);
    }
    let mut queues: Vec<std::vec::IntoIter<EvalPrompt>> = groups
        .into_values()
        .map(|mut g| {
            g.shuffle(rng);
            g.into_iter()
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let before = out.len();
        for q in &mut queues {
            if out.len() == n {
                break;
            }
            if let Some(p) = q.next() {
                out.push(p);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}
