//! Prompt conditioning: the model's tokenizers and text encoders, and a prompt turned into
//! what the UNet attends to, the way AUTOMATIC1111 does it (see [`super::prompt`]): chunks
//! of the encoder's context encoded in one batch and concatenated along the sequence, the
//! attention weights applied per token with the chunk's mean kept ("Original" emphasis),
//! clip skip, and for SDXL both encoders side by side with the pooled embedding of the first
//! chunk.

use candle_core::{DType, Device, IndexOp, Tensor, D};

use super::clip::ClipTextEncoder;
use super::embedding::{split_words, Embedding};
use super::prompt::{self, Chunk};
use super::tokenizer::ClipTokenizer;
use super::DiffusionError;
use crate::models::config::{ModelConfigs, TextEncoderConfig};
use crate::models::{Family, ModelError};

/// The embeddings' vectors for text side `side`, stacked in order (`None` without any).
fn extra_vectors(
    embeddings: &[Embedding],
    side: usize,
    device: &Device,
) -> Result<Option<Tensor>, DiffusionError> {
    let rows: Vec<&Tensor> = embeddings
        .iter()
        .filter_map(|e| e.per_side.get(side))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tensor::cat(&rows, 0)?.to_device(device)?))
}

/// One tokenizer and its text encoder (loaded lazily from the memory map).
pub(super) struct TextSide {
    pub tokenizer: ClipTokenizer,
    pub config: TextEncoderConfig,
    pub encoder: Option<ClipTextEncoder>,
    pub component: &'static str,
}

/// Conditioning for one guidance side: `[1, chunks × context, D]` and, for SDXL, the pooled
/// embedding `[1, P]`.
pub(super) struct Cond {
    pub context: Tensor,
    pub pooled: Option<Tensor>,
}

/// The model's text sides (one, or two for SDXL).
pub(super) struct TextEncoders {
    pub sides: Vec<TextSide>,
    family: Family,
}

impl TextEncoders {
    pub fn load(configs: &ModelConfigs) -> Result<Self, ModelError> {
        let mut sides = vec![TextSide {
            tokenizer: ClipTokenizer::load(&configs.tokenizer)?,
            config: configs.text_encoder.clone(),
            encoder: None,
            component: "text_encoder",
        }];
        if let (Some(cfg), Some(tok)) = (&configs.text_encoder_2, &configs.tokenizer_2) {
            sides.push(TextSide {
                tokenizer: ClipTokenizer::load(tok)?,
                config: cfg.clone(),
                encoder: None,
                component: "text_encoder_2",
            });
        }
        Ok(Self {
            sides,
            family: configs.family,
        })
    }

    /// Frees the encoders' weights (they are rebuilt from the memory map when next needed).
    pub fn drop_encoders(&mut self) {
        for side in &mut self.sides {
            side.encoder = None;
        }
    }

    /// The prompt's chunks for each side. An embedding's word becomes its vectors' places:
    /// ids past the vocabulary, `vocab + k` for row `k` of [`extra_vectors`].
    fn chunks(
        &self,
        pieces: &[prompt::Piece],
        embeddings: &[Embedding],
    ) -> Result<Vec<Vec<Chunk>>, DiffusionError> {
        self.sides
            .iter()
            .map(|side| {
                let tok = &side.tokenizer;
                let vocab = side.config.vocab_size as u32;
                let mut offsets = Vec::with_capacity(embeddings.len());
                let mut at = vocab;
                for e in embeddings {
                    offsets.push(at);
                    at += e.len() as u32;
                }
                prompt::chunks(
                    pieces,
                    tok.framing(),
                    &mut |text| {
                        let mut ids = Vec::new();
                        for part in split_words(text, embeddings) {
                            match part {
                                Ok(t) => ids.extend(tok.body_ids(t)?),
                                Err(i) => ids.extend(
                                    (0..embeddings[i].len() as u32).map(|k| offsets[i] + k),
                                ),
                            }
                        }
                        Ok(ids)
                    },
                    tok.comma_id(),
                )
                .map_err(DiffusionError::InvalidRequest)
            })
            .collect()
    }

    /// Encodes a prompt (A1111 syntax) with the encoders, which must be loaded.
    /// `clip_skip` 1 is the last layer; N stops N-1 layers earlier (SD 1.x/2.x). SDXL already
    /// conditions on the penultimate layer and ignores clip skip, as A1111 does.
    pub fn encode(
        &self,
        text: &str,
        clip_skip: u32,
        device: &Device,
        embeddings: &[Embedding],
    ) -> Result<Cond, DiffusionError> {
        let pieces = prompt::parse_attention(text);
        let mut per_side = self.chunks(&pieces, embeddings)?;
        // Both SDXL encoders tokenize alike; pad the shorter with empty chunks all the same.
        let most = per_side.iter().map(Vec::len).max().unwrap_or(1);
        for (side, chunks) in self.sides.iter().zip(&mut per_side) {
            chunks.resize(most, Chunk::empty(side.tokenizer.framing()));
        }
        let mut contexts = Vec::new();
        let mut pooled = None;
        for (index, (side, chunks)) in self.sides.iter().zip(&per_side).enumerate() {
            let extra = extra_vectors(embeddings, index, device)?;
            let encoder = side.encoder.as_ref().ok_or_else(|| {
                DiffusionError::Candle(format!("{} is not loaded", side.component))
            })?;
            let layers = side.config.num_hidden_layers;
            let body = chunks[0].ids.len();
            let ids: Vec<u32> = chunks.iter().flat_map(|c| c.ids.iter().copied()).collect();
            let ids = Tensor::from_vec(ids, (chunks.len(), body), device)?;
            let out = encoder.encode(&ids, side.tokenizer.eos_id, extra.as_ref())?;
            let z = if self.family == Family::Sdxl {
                out.hidden_states[layers.saturating_sub(2)].clone()
            } else if clip_skip <= 1 {
                out.last_normed
            } else {
                let skip = clip_skip as usize;
                if skip > layers {
                    return Err(DiffusionError::InvalidRequest(format!(
                        "clip skip {clip_skip}: this model's text encoder has only {layers} layers"
                    )));
                }
                encoder.final_norm(&out.hidden_states[layers - skip])?
            };
            let z = emphasis(&z, chunks)?;
            // [chunks, body, D] -> [1, chunks × body, D]
            let (n, t, d) = z.dims3()?;
            contexts.push(z.reshape((1, n * t, d))?);
            if let Some(p) = out.pooled_projected {
                pooled = Some(p.i(0..1)?);
            }
        }
        let context = Tensor::cat(&contexts, D::Minus1)?;
        Ok(Cond { context, pooled })
    }

    /// Prompt tokens used and the room the chunks give, as the prompt box shows them.
    pub fn token_count(&self, text: &str) -> Result<(usize, usize), DiffusionError> {
        let pieces = prompt::parse_attention(text);
        let tok = &self.sides[0].tokenizer;
        let chunks = &self.chunks(&pieces, &[])?[0];
        Ok(prompt::token_count(chunks, tok.framing()))
    }
}

/// A1111's "Original" emphasis: each token's vector times its weight, then the chunk scaled
/// back to its mean before weighting. Chunks without weights are left exactly as they are.
fn emphasis(z: &Tensor, chunks: &[Chunk]) -> Result<Tensor, DiffusionError> {
    if !chunks.iter().any(Chunk::is_weighted) {
        return Ok(z.clone());
    }
    let mut out = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let zi = z.i(i..i + 1)?;
        if !chunk.is_weighted() {
            out.push(zi);
            continue;
        }
        let dtype = zi.dtype();
        let zf = zi.to_dtype(DType::F32)?;
        let before = zf.mean_all()?.to_scalar::<f32>()?;
        let w = Tensor::from_slice(&chunk.weights, (1, chunk.weights.len(), 1), zi.device())?;
        let weighted = zf.broadcast_mul(&w)?;
        let after = weighted.mean_all()?.to_scalar::<f32>()?;
        let ratio = before / after;
        // A chunk weighted to nothing (every token at 0) has no mean to restore.
        let scaled = if ratio.is_finite() {
            (weighted * f64::from(ratio))?
        } else {
            weighted
        };
        out.push(scaled.to_dtype(dtype)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Counts a prompt's tokens as the model's first text encoder will see them, without loading
/// any weights (only the tokenizer): what the prompt box shows while typing.
pub struct TokenCounter {
    tokenizer: ClipTokenizer,
}

impl TokenCounter {
    pub fn load(model_dir: &std::path::Path) -> Result<Self, ModelError> {
        let configs = ModelConfigs::read(model_dir)?;
        Ok(Self {
            tokenizer: ClipTokenizer::load(&configs.tokenizer)?,
        })
    }

    /// Prompt tokens used and the room its chunks give (`(83, 150)`: two chunks).
    pub fn count(&self, text: &str) -> Result<(usize, usize), String> {
        let tok = &self.tokenizer;
        let text = crate::generation::extract_lora_tags(text).0;
        let pieces = prompt::parse_attention(&text);
        let chunks = prompt::chunks(
            &pieces,
            tok.framing(),
            &mut |t| tok.body_ids(t),
            tok.comma_id(),
        )?;
        Ok(prompt::token_count(&chunks, tok.framing()))
    }
}
