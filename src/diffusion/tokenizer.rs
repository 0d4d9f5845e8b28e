//! CLIP tokenization: a `tokenizer.json`, or the slow-tokenizer files real Stable Diffusion
//! folders carry (`vocab.json` + `merges.txt`), turned into the same byte-level BPE pipeline
//! Hugging Face's converter builds. Adds `<|startoftext|>`/`<|endoftext|>`, truncates and pads.

use std::path::Path;

use serde_json::json;
use tokenizers::Tokenizer;

use super::prompt::Framing;
use crate::models::config::TokenizerFiles;
use crate::models::ModelError;

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's pre-tokenizer pattern (the one in OpenAI's `simple_tokenizer.py`).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    inner: Tokenizer,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    pub max_length: usize,
}

impl ClipTokenizer {
    pub fn load(files: &TokenizerFiles) -> Result<Self, ModelError> {
        let dir = &files.dir;
        let json_path = dir.join("tokenizer.json");
        let inner = if let Some((vocab, merges)) = &files.inline {
            let bytes = clip_tokenizer_json(dir, vocab, merges)?;
            Tokenizer::from_bytes(bytes).map_err(|e| bad(dir, e))?
        } else if json_path.is_file() {
            Tokenizer::from_file(&json_path).map_err(|e| bad(&json_path, e))?
        } else {
            let vocab_path = dir.join("vocab.json");
            let vocab = std::fs::read_to_string(&vocab_path).map_err(|e| bad(&vocab_path, e))?;
            let merges_path = dir.join("merges.txt");
            let merges = std::fs::read_to_string(&merges_path).map_err(|e| bad(&merges_path, e))?;
            let bytes = clip_tokenizer_json(dir, &vocab, &merges)?;
            Tokenizer::from_bytes(bytes).map_err(|e| bad(dir, e))?
        };
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| ModelError::BadConfig {
                    path: dir.clone(),
                    reason: format!("the vocabulary has no {token} token"),
                })
        };
        let bos_id = id(BOS)?;
        let eos_id = id(EOS)?;
        let pad_id = match &files.pad_token {
            Some(pad) => id(pad)?,
            None => eos_id,
        };
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            max_length: files.max_length,
        })
    }

    /// `[BOS, tokens.., EOS, PAD..]`, exactly `max_length` long (long prompts are truncated).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| format!("cannot tokenize the prompt: {e}"))?;
        let body = encoding.get_ids();
        let keep = body.len().min(self.max_length.saturating_sub(2));
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&body[..keep]);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        Ok(ids)
    }

    /// The prompt's tokens alone, without start, end or padding, never truncated.
    pub fn body_ids(&self, text: &str) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot tokenize the prompt: {e}"))
    }

    /// The special tokens and length of one encoder pass, for [`super::prompt::chunks`].
    pub fn framing(&self) -> Framing {
        Framing {
            bos: self.bos_id,
            eos: self.eos_id,
            pad: self.pad_id,
            body: self.max_length.saturating_sub(2).max(1),
        }
    }

    /// The `,` word token, where A1111 prefers to break a long prompt.
    pub fn comma_id(&self) -> Option<u32> {
        self.inner.token_to_id(",</w>")
    }
}

fn bad(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::BadConfig {
        path: path.to_path_buf(),
        reason: format!("cannot load tokenizer: {e}"),
    }
}

/// Builds the fast-tokenizer JSON for CLIP from `vocab.json` + `merges.txt` text.
fn clip_tokenizer_json(
    dir: &Path,
    vocab_text: &str,
    merges_text: &str,
) -> Result<Vec<u8>, ModelError> {
    let vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(vocab_text).map_err(|e| bad(&dir.join("vocab.json"), e))?;
    let merges: Vec<&str> = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .collect();
    let special = |token: &str| {
        vocab.get(token).and_then(|v| v.as_u64()).map(|id| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": true, "special": true})
        })
    };
    let added: Vec<serde_json::Value> = [BOS, EOS].iter().filter_map(|t| special(t)).collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": EOS,
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
            "fuse_unk": false, "byte_fallback": false,
            "vocab": vocab, "merges": merges
        }
    });
    serde_json::to_vec(&doc).map_err(|e| bad(dir, e))
}
