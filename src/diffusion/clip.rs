//! The CLIP text encoder (`CLIPTextModel` / `CLIPTextModelWithProjection`), built from the
//! folder's own `config.json`. It returns every hidden state so a pipeline can take the last
//! (SD 1.x/2.x) or the penultimate layer and the pooled projection (SDXL).

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{linear, linear_no_bias, Embedding, Linear, VarBuilder};

use super::fused::{layer_norm, LayerNorm};

use crate::models::config::TextEncoderConfig;

#[derive(Debug, Clone, Copy)]
enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
            Activation::Gelu => xs.gelu_erf(),
        }
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, c: &TextEncoderConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            q: linear(d, d, vb.pp("q_proj"))?,
            k: linear(d, d, vb.pp("k_proj"))?,
            v: linear(d, d, vb.pp("v_proj"))?,
            out: linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
            head_dim: d / c.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n, d) = xs.dims3()?;
        let shape = |t: Tensor| {
            t.reshape((b, n, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = shape((self.q.forward(xs)? * scale)?)?;
        let k = shape(self.k.forward(xs)?)?;
        let v = shape(self.v.forward(xs)?)?;
        let attn = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let attn = super::fused::softmax_last_dim(&attn)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.out.forward(&out)
    }
}

struct EncoderLayer {
    attn: Attention,
    ln1: LayerNorm,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl EncoderLayer {
    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = (self.attn.forward(&self.ln1.forward(xs)?, mask)? + xs)?;
        let m = self
            .fc2
            .forward(&self.act.apply(&self.fc1.forward(&self.ln2.forward(&h)?)?)?)?;
        m + h
    }
}

/// Outputs of one encoder pass.
pub struct TextEncoding {
    /// Hidden state after each encoder layer (`[B, 77, D]` each), before the final norm.
    pub hidden_states: Vec<Tensor>,
    /// `final_layer_norm(last hidden state)`: what SD 1.x/2.x condition on.
    pub last_normed: Tensor,
    /// The projected pooled output (`text_embeds`), when the model has `text_projection`.
    pub pooled_projected: Option<Tensor>,
}

pub struct ClipTextEncoder {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_ln: LayerNorm,
    projection: Option<Linear>,
}

impl ClipTextEncoder {
    pub fn new(vb: VarBuilder, c: &TextEncoderConfig) -> Result<Self> {
        let act = match c.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            _ => Activation::Gelu,
        };
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        let token_embedding =
            candle_nn::embedding(c.vocab_size, c.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding = emb
            .pp("position_embedding")
            .get((c.max_position_embeddings, c.hidden_size), "weight")?;
        let eps = c.layer_norm_eps;
        let lv = tm.pp("encoder").pp("layers");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = lv.pp(i.to_string());
                Ok(EncoderLayer {
                    attn: Attention::new(l.pp("self_attn"), c)?,
                    ln1: layer_norm(c.hidden_size, eps, l.pp("layer_norm1"))?,
                    ln2: layer_norm(c.hidden_size, eps, l.pp("layer_norm2"))?,
                    fc1: linear(c.hidden_size, c.intermediate_size, l.pp("mlp").pp("fc1"))?,
                    fc2: linear(c.intermediate_size, c.hidden_size, l.pp("mlp").pp("fc2"))?,
                    act,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_ln = layer_norm(c.hidden_size, eps, tm.pp("final_layer_norm"))?;
        let projection = match c.projection_dim {
            Some(p) if vb.contains_tensor("text_projection.weight") => {
                Some(linear_no_bias(c.hidden_size, p, vb.pp("text_projection"))?)
            }
            _ => None,
        };
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_ln,
            projection,
        })
    }

    /// The final layer norm, for conditioning on an earlier layer (clip skip).
    pub fn final_norm(&self, hidden: &Tensor) -> Result<Tensor> {
        self.final_ln.forward(hidden)
    }

    /// The input vectors of token ids `[B, N]`: ids past the vocabulary take rows of `extra`
    /// (textual-inversion embeddings), id `vocab + k` row `k`.
    fn embed(&self, ids: &Tensor, extra: Option<&Tensor>) -> Result<Tensor> {
        let Some(extra) = extra else {
            return self.token_embedding.forward(ids);
        };
        let table = self.token_embedding.embeddings();
        let vocab = table.dim(0)? as u32;
        let (b, n) = ids.dims2()?;
        let flat: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        let device = ids.device();
        let base: Vec<u32> = flat
            .iter()
            .map(|&i| if i < vocab { i } else { 0 })
            .collect();
        let rows: Vec<u32> = flat.iter().map(|&i| i.saturating_sub(vocab)).collect();
        let mask: Vec<u8> = flat.iter().map(|&i| u8::from(i >= vocab)).collect();
        let base = table.index_select(&Tensor::new(base, device)?, 0)?;
        let rows = extra
            .to_dtype(table.dtype())?
            .index_select(&Tensor::new(rows, device)?, 0)?;
        let mask = Tensor::new(mask, device)?
            .unsqueeze(1)?
            .broadcast_as(base.shape())?;
        mask.where_cond(&rows, &base)?.reshape((b, n, ()))
    }

    /// Encodes one batch of token ids `[B, N]`; `eos_id` locates the pooled token; ids past
    /// the vocabulary are rows of `extra` (see [`ClipTextEncoder::embed`]).
    pub fn encode(
        &self,
        ids: &Tensor,
        eos_id: u32,
        extra: Option<&Tensor>,
    ) -> Result<TextEncoding> {
        let (b, n) = ids.dims2()?;
        let device = ids.device();
        let pos = self.position_embedding.narrow(0, 0, n)?;
        let mut xs = self.embed(ids, extra)?.broadcast_add(&pos)?;
        let mask = causal_mask(n, xs.dtype(), device)?;
        let mut hidden_states = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            xs = layer.forward(&xs, &mask)?;
            hidden_states.push(xs.clone());
        }
        let last_normed = self.final_ln.forward(&xs)?;
        let pooled_projected = match &self.projection {
            Some(proj) => {
                let rows = ids.to_vec2::<u32>()?;
                let mut pooled = Vec::with_capacity(b);
                for (i, row) in rows.iter().enumerate() {
                    let at = row.iter().position(|&t| t == eos_id).unwrap_or(n - 1);
                    pooled.push(last_normed.i((i, at))?.unsqueeze(0)?);
                }
                Some(proj.forward(&Tensor::cat(&pooled, 0)?)?)
            }
            None => None,
        };
        Ok(TextEncoding {
            hidden_states,
            last_normed,
            pooled_projected,
        })
    }
}

fn causal_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (n, n), device)?
        .to_dtype(dtype)?
        .unsqueeze(0)?
        .unsqueeze(0)
}
