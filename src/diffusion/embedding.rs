//! Textual-inversion embeddings: a word (the file's stem) that stands for learned vectors in
//! the text encoder's input. AUTOMATIC1111 `.pt` files (`string_to_param`), `.safetensors`
//! with `emb_params`, and SDXL files with `clip_l` / `clip_g` (one set per encoder).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::models::checkpoint::WeightFile;
use crate::models::config::ModelConfigs;
use crate::models::ModelError;

/// One embedding: its word and, per text encoder, its vectors `[n, width]`.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub name: String,
    pub path: PathBuf,
    /// Indexed like the model's text sides (one, or two for SDXL).
    pub per_side: Vec<Tensor>,
}

impl Embedding {
    /// Reads `path` and checks its vectors fit the model's text encoders.
    pub fn load(path: &Path, configs: &ModelConfigs) -> Result<Self, ModelError> {
        let file = WeightFile::open(path)?;
        let bad = |reason: String| ModelError::BadWeights {
            path: path.to_path_buf(),
            reason,
        };
        let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        // SAFETY: read-only map of a file whose tensors were checked to lie inside it.
        let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| bad(e.to_string()))?;
        let read = |key: &str| -> Result<Tensor, ModelError> {
            let entry = file
                .get(key)
                .ok_or_else(|| bad(format!("no tensor {key}")))?;
            super::weights::raw_tensor(&mmap, entry)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| bad(super::error_text(&e)))
        };
        let mut widths = vec![configs.text_encoder.hidden_size];
        if let Some(t2) = &configs.text_encoder_2 {
            widths.push(t2.hidden_size);
        }
        let keys: Vec<&String> = file.tensors.keys().collect();
        let per_side: Vec<Tensor> = if file.tensors.contains_key("clip_l") {
            if widths.len() < 2 {
                return Err(ModelError::UnsupportedFile {
                    path: path.to_path_buf(),
                    what: format!(
                        "an SDXL embedding (clip_l and clip_g); this model is {}",
                        configs.family.label()
                    ),
                });
            }
            vec![read("clip_l")?, read("clip_g")?]
        } else {
            let key = keys
                .iter()
                .find(|k| k.starts_with("string_to_param."))
                .or_else(|| keys.iter().find(|k| k.as_str() == "emb_params"))
                .or_else(|| {
                    let two_d: Vec<&&String> = keys
                        .iter()
                        .filter(|k| file.shape(k).is_some_and(|s| s.len() == 2))
                        .collect();
                    (two_d.len() == 1).then(|| two_d[0])
                })
                .ok_or_else(|| {
                    bad("not a textual-inversion embedding (no string_to_param, emb_params, clip_l/clip_g)".into())
                })?;
            if widths.len() > 1 {
                return Err(ModelError::UnsupportedFile {
                    path: path.to_path_buf(),
                    what: "an embedding for one text encoder; SDXL needs clip_l and clip_g".into(),
                });
            }
            vec![read(key)?]
        };
        for (t, want) in per_side.iter().zip(&widths) {
            let t = t.dims();
            if t.len() != 2 || t[1] != *want || t[0] == 0 {
                return Err(ModelError::UnsupportedFile {
                    path: path.to_path_buf(),
                    what: format!(
                        "an embedding of {:?} vectors; this model's text encoder takes {want}-wide ones (made for another model)",
                        t
                    ),
                });
            }
        }
        Ok(Self {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.to_path_buf(),
            per_side,
        })
    }

    /// How many positions the embedding takes in the prompt.
    pub fn len(&self) -> usize {
        self.per_side.first().map_or(0, |t| t.dims()[0])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Embedding files in `dirs` and their `embeddings` / `models/embeddings` folders (A1111,
/// ComfyUI), subfolders to depth 2, by path.
pub fn embedding_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    use crate::models::discover::{weight_files_under, EMBEDDING_FOLDERS};
    dirs.iter()
        .flat_map(|dir| {
            EMBEDDING_FOLDERS
                .iter()
                .flat_map(move |sub| weight_files_under(&dir.join(sub), 2))
        })
        .collect()
}

/// Of `files`, those whose stem stands as a word in one of `texts` (how a prompt uses an
/// embedding).
pub fn used_in(texts: &[&str], files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| {
            let Some(name) = f.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                return false;
            };
            texts.iter().any(|t| {
                t.match_indices(name.as_str())
                    .any(|(at, _)| word_at(t, at, &name))
            })
        })
        .cloned()
        .collect()
}

/// Whether `name` stands as a word at byte `at` of `text` (not inside a longer word).
fn word_at(text: &str, at: usize, name: &str) -> bool {
    let joins = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let before = text[..at].chars().next_back();
    let after = text[at + name.len()..].chars().next();
    !before.is_some_and(joins) && !after.is_some_and(joins)
}

/// `text` cut into plain text and embedding words: `Err(i)` is embeddings[i], `Ok(s)` text.
pub fn split_words<'a>(text: &'a str, embeddings: &[Embedding]) -> Vec<Result<&'a str, usize>> {
    let mut out = Vec::new();
    let mut rest = text;
    'outer: while !rest.is_empty() {
        // The earliest embedding word in what is left (the longest at one place).
        let mut best: Option<(usize, usize)> = None;
        for (i, e) in embeddings.iter().enumerate() {
            if e.name.is_empty() {
                continue;
            }
            let mut from = 0;
            while let Some(pos) = rest[from..].find(&e.name).map(|p| p + from) {
                if word_at(rest, pos, &e.name) {
                    let better = match best {
                        None => true,
                        Some((bp, bi)) => {
                            pos < bp || (pos == bp && e.name.len() > embeddings[bi].name.len())
                        }
                    };
                    if better {
                        best = Some((pos, i));
                    }
                    break;
                }
                from = pos + 1;
                while !rest.is_char_boundary(from) {
                    from += 1;
                }
            }
        }
        match best {
            Some((pos, i)) => {
                if pos > 0 {
                    out.push(Ok(&rest[..pos]));
                }
                out.push(Err(i));
                rest = &rest[pos + embeddings[i].name.len()..];
            }
            None => {
                out.push(Ok(rest));
                break 'outer;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(name: &str) -> Embedding {
        Embedding {
            name: name.into(),
            path: PathBuf::new(),
            per_side: vec![],
        }
    }

    #[test]
    fn embedding_words_are_found_as_whole_words_only() {
        let e = [emb("bad-hands"), emb("style"), emb("style-two")];
        let got = split_words("a cat, bad-hands, style-two and stylex style", &e);
        assert_eq!(
            got,
            vec![
                Ok("a cat, "),
                Err(0),
                Ok(", "),
                Err(2),
                Ok(" and stylex "),
                Err(1)
            ]
        );
        assert_eq!(split_words("nothing here", &e), vec![Ok("nothing here")]);
        assert_eq!(split_words("", &e), Vec::<Result<&str, usize>>::new());
    }
}
