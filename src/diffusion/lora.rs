//! LoRA and its LyCORIS relatives merged into a loaded model's weights in place:
//! W' = W + Σ weight × scale × ΔW over the LoRAs of the job. Changing a LoRA or its weight
//! rewrites only the layers concerned, from base copies of them (see [`LoraState`]).
//!
//! Files: kohya-ss (`lora_unet_*`, `lora_te_*` / `lora_te1_*` / `lora_te2_*` modules with
//! `lora_down` / `lora_up` / `alpha`, LoCon's convolutions and Tucker `lora_mid`), LyCORIS LoHa
//! (`hada_*`) and LoKr (`lokr_*`), full deltas (`diff`), and diffusers / PEFT (`unet.*`,
//! `text_encoder.*` with `lora_A` / `lora_B`). Module names are never parsed (kohya turns every
//! `.` into `_`, which names also contain): each weight the model loads is given every name a
//! LoRA may use for it (kohya's with the diffusers path, kohya's with the original "LDM" path
//! as SDXL trainers write them, PEFT's), and those are looked up in the file.
//!
//! Modules that match nothing are counted and named in the report, never dropped silently; a
//! LoRA made for another family is refused with the reason.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::generation::LoraSpec;
use crate::models::checkpoint::WeightFile;
use crate::models::config::ModelConfigs;
use crate::models::ldm::diffusers_to_ldm;
use crate::models::ModelError;

/// The tensor suffixes of a module, and which part each is.
const PARTS: [&str; 21] = [
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora_mid.weight",
    ".lora_A.weight",
    ".lora_B.weight",
    ".alpha",
    ".hada_w1_a",
    ".hada_w1_b",
    ".hada_w2_a",
    ".hada_w2_b",
    ".hada_t1",
    ".hada_t2",
    ".lokr_w1",
    ".lokr_w1_a",
    ".lokr_w1_b",
    ".lokr_w2",
    ".lokr_w2_a",
    ".lokr_w2_b",
    ".lokr_t2",
    ".diff",
    ".dora_scale",
];

/// One LoRA file, read and grouped into modules.
pub struct LoraFile {
    pub path: PathBuf,
    pub weight: f32,
    file: WeightFile,
    mmap: memmap2::Mmap,
    /// Module name → part suffix (`.lora_down.weight`...) → tensor name in the file.
    modules: HashMap<String, HashMap<&'static str, String>>,
    /// Tensors that belong to no module form Atelier knows.
    pub unknown_tensors: Vec<String>,
}

impl LoraFile {
    pub fn open(spec: &LoraSpec) -> Result<Self, ModelError> {
        let path = &spec.path;
        let file = WeightFile::open(path)?;
        let bad = |reason: String| ModelError::BadWeights {
            path: path.clone(),
            reason,
        };
        let mut modules: HashMap<String, HashMap<&'static str, String>> = HashMap::new();
        let mut unknown_tensors = Vec::new();
        for key in file.tensors.keys() {
            match PARTS.iter().find(|p| key.ends_with(*p)) {
                Some(part) => {
                    let module = key[..key.len() - part.len()].to_owned();
                    modules.entry(module).or_default().insert(part, key.clone());
                }
                None => unknown_tensors.push(key.clone()),
            }
        }
        if modules.is_empty() {
            let what = crate::models::ldm::classify(&file).describe();
            return Err(ModelError::UnsupportedFile {
                path: path.clone(),
                what: format!(
                    "this is {what}, not a LoRA (no lora_down, lora_A, hada or lokr tensors)"
                ),
            });
        }
        let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        // SAFETY: read-only map of a file whose tensors were all checked to lie inside it.
        let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            path: path.clone(),
            weight: spec.weight,
            file,
            mmap,
            modules,
            unknown_tensors,
        })
    }

    /// The file's stem, as A1111 names a LoRA.
    pub fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn tensor(&self, key: &str) -> candle_core::Result<Tensor> {
        let entry = self
            .file
            .get(key)
            .ok_or_else(|| candle_core::Error::Msg(format!("no tensor {key}")))?;
        super::weights::raw_tensor(&self.mmap, entry)?.to_dtype(DType::F32)
    }

    fn part(
        &self,
        parts: &HashMap<&'static str, String>,
        part: &str,
    ) -> candle_core::Result<Option<Tensor>> {
        parts.get(part).map(|k| self.tensor(k)).transpose()
    }

    /// Why this LoRA cannot go on a model of this kind, if it cannot: its cross-attention
    /// takes text of another width, or it has a second text encoder the model lacks.
    fn family_mismatch(&self, configs: &ModelConfigs) -> Option<String> {
        let context = configs.unet.cross_attention_dim.get(0);
        let width = self.modules.iter().find_map(|(name, parts)| {
            if !(name.contains("attn2") && (name.ends_with("to_k") || name.ends_with("to_v"))) {
                return None;
            }
            let down = parts
                .get(".lora_down.weight")
                .or(parts.get(".lora_A.weight"))?;
            self.file.shape(down).and_then(|s| s.get(1).copied())
        });
        let second = self
            .modules
            .keys()
            .any(|m| m.starts_with("lora_te2_") || m.starts_with("text_encoder_2."));
        if second && configs.text_encoder_2.is_none() {
            return Some(format!(
                "a LoRA for SDXL (it changes a second text encoder); this model is {}",
                configs.family.label()
            ));
        }
        let for_family = |w: usize| match w {
            768 => "SD 1.x",
            1024 => "SD 2.x",
            2048 => "SDXL",
            _ => "another model",
        };
        if let Some(w) = width.filter(|w| *w != context) {
            return Some(format!(
                "a LoRA for {} (its cross-attention takes {w}-wide text); this model is {} ({context})",
                for_family(w),
                configs.family.label()
            ));
        }
        None
    }

    /// ΔW of a module, scaled by `multiplier` × alpha / rank, in the target's shape. For the
    /// common up·down form the scale goes into the small `up` factor, not the product.
    fn delta(&self, module: &str, target: &Shape, multiplier: f64) -> candle_core::Result<Tensor> {
        let parts = &self.modules[module];
        let alpha = match self.part(parts, ".alpha")? {
            Some(a) => Some(
                a.flatten_all()?
                    .to_vec1::<f32>()?
                    .first()
                    .copied()
                    .unwrap_or(0.0),
            ),
            None => None,
        };
        let scale_for = |rank: Option<usize>| -> f64 {
            match (alpha, rank) {
                (Some(a), Some(r)) if a != 0.0 && r > 0 => f64::from(a) / r as f64,
                _ => 1.0,
            }
        };
        let down = self
            .part(parts, ".lora_down.weight")?
            .or(self.part(parts, ".lora_A.weight")?);
        let up = self
            .part(parts, ".lora_up.weight")?
            .or(self.part(parts, ".lora_B.weight")?);
        let (delta, scale) = if let (Some(down), Some(up)) = (down, up) {
            let rank = down.dim(0)?;
            let out = up.dim(0)?;
            let up2 = (up.reshape((out, rank))? * (multiplier * scale_for(Some(rank))))?;
            let d = match self.part(parts, ".lora_mid.weight")? {
                // Tucker: ΔW[o,i,y,x] = Σ up[o,a] mid[a,b,y,x] down[b,i].
                Some(mid) => {
                    let (_, _, kh, kw) = mid.dims4()?;
                    let down2 = down.reshape((rank, ()))?;
                    let t = mid.permute((2, 3, 0, 1))?.contiguous()?; // [kh,kw,a,b]
                    let t = t.broadcast_matmul(&down2)?; // [kh,kw,a,in]
                    let t = up2.broadcast_matmul(&t)?; // [kh,kw,out,in]
                    let inn = down2.dim(1)?;
                    t.permute((2, 3, 0, 1))?.reshape((out, inn, kh, kw))?
                }
                None => up2.matmul(&down.reshape((rank, ()))?)?,
            };
            (d, 1.0)
        } else if let Some(w1a) = self.part(parts, ".hada_w1_a")? {
            let get = |p: &str| -> candle_core::Result<Tensor> {
                self.part(parts, p)?
                    .ok_or_else(|| candle_core::Error::Msg(format!("{module}: no {p}")))
            };
            let (w1b, w2a, w2b) = (get(".hada_w1_b")?, get(".hada_w2_a")?, get(".hada_w2_b")?);
            let rank = w1b.dim(0)?;
            let d = match (self.part(parts, ".hada_t1")?, self.part(parts, ".hada_t2")?) {
                (Some(t1), Some(t2)) => (tucker(&t1, &w1a, &w1b)? * tucker(&t2, &w2a, &w2b)?)?,
                _ => (w1a.matmul(&w1b)? * w2a.matmul(&w2b)?)?,
            };
            (d, multiplier * scale_for(Some(rank)))
        } else if parts.contains_key(".lokr_w1") || parts.contains_key(".lokr_w1_a") {
            let w1a = self.part(parts, ".lokr_w1_a")?;
            let w1b = self.part(parts, ".lokr_w1_b")?;
            let w2a = self.part(parts, ".lokr_w2_a")?;
            let w2b = self.part(parts, ".lokr_w2_b")?;
            let missing = |p: &str| candle_core::Error::Msg(format!("{module}: no {p}"));
            let w1 = match self.part(parts, ".lokr_w1")? {
                Some(w) => w,
                None => w1a
                    .as_ref()
                    .ok_or_else(|| missing(".lokr_w1_a"))?
                    .matmul(w1b.as_ref().ok_or_else(|| missing(".lokr_w1_b"))?)?,
            };
            let w2 = match (self.part(parts, ".lokr_w2")?, self.part(parts, ".lokr_t2")?) {
                (Some(w), _) => w,
                (None, Some(t2)) => tucker(
                    &t2,
                    w2a.as_ref().ok_or_else(|| missing(".lokr_w2_a"))?,
                    w2b.as_ref().ok_or_else(|| missing(".lokr_w2_b"))?,
                )?,
                (None, None) => w2a
                    .as_ref()
                    .ok_or_else(|| missing(".lokr_w2_a"))?
                    .matmul(w2b.as_ref().ok_or_else(|| missing(".lokr_w2_b"))?)?,
            };
            // Both factors stored whole: LyCORIS applies them as they are (scale 1).
            let rank = w1b
                .as_ref()
                .map(|t| t.dim(0))
                .or(w2b.as_ref().map(|t| t.dim(0)))
                .transpose()?;
            (kron(&w1, &w2, target)?, multiplier * scale_for(rank))
        } else if let Some(diff) = self.part(parts, ".diff")? {
            (diff, multiplier)
        } else {
            candle_core::bail!(
                "{module}: an unknown kind of module (parts {:?})",
                parts.keys()
            );
        };
        if delta.elem_count() != target.elem_count() {
            candle_core::bail!(
                "{module}: its change has shape {:?}, the weight {:?}",
                delta.dims(),
                target.dims()
            );
        }
        let delta = delta.reshape(target)?;
        if scale == 1.0 {
            Ok(delta)
        } else {
            delta * scale
        }
    }
}

/// LyCORIS' Tucker rebuild: t [r, r, kh, kw], wa [r, out], wb [r, in] → [out, in, kh, kw].
fn tucker(t: &Tensor, wa: &Tensor, wb: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, kh, kw) = t.dims4()?;
    let out = wa.dim(1)?;
    let inn = wb.dim(1)?;
    let x = t.permute((2, 3, 0, 1))?.contiguous()?; // [kh,kw,i,j]
    let x = x.broadcast_matmul(wb)?; // [kh,kw,i,in]
    let x = wa.t()?.contiguous()?.broadcast_matmul(&x)?; // [kh,kw,out,in]
    x.permute((2, 3, 0, 1))?.reshape((out, inn, kh, kw))
}

/// The Kronecker product of w1 [a, c] and w2 [b, d, ...] shaped as the target [a·b, c·d, ...].
fn kron(w1: &Tensor, w2: &Tensor, target: &Shape) -> candle_core::Result<Tensor> {
    let (a, c) = w1.dims2()?;
    let b = w2.dim(0)?;
    let d = w2.dim(1)?;
    let k = w2.elem_count() / (b * d).max(1);
    let x = w1
        .reshape((a, 1, c, 1, 1))?
        .broadcast_mul(&w2.reshape((1, b, 1, d, k))?)?;
    let x = x.reshape((a * b, c * d * k))?;
    if x.elem_count() != target.elem_count() {
        candle_core::bail!(
            "kron {a}x{c} ⊗ {:?} does not give {:?}",
            w2.dims(),
            target.dims()
        );
    }
    Ok(x)
}

/// The LoRAs of one model load, and which of their modules found a weight.
pub struct LoraSet {
    pub loras: Vec<LoraFile>,
    configs: ModelConfigs,
    matched: Mutex<Vec<HashSet<String>>>,
    failures: Mutex<Vec<String>>,
}

/// What applying the LoRAs did, for the user.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoraReport {
    /// One line per problem: modules that matched nothing, modules that could not apply.
    pub warnings: Vec<String>,
}

impl LoraSet {
    /// Opens the LoRAs and checks each fits this model.
    pub fn open(specs: &[LoraSpec], configs: &ModelConfigs) -> Result<Option<Self>, ModelError> {
        if specs.is_empty() {
            return Ok(None);
        }
        let mut loras = Vec::new();
        for spec in specs {
            let lora = LoraFile::open(spec)?;
            if let Some(why) = lora.family_mismatch(configs) {
                return Err(ModelError::UnsupportedFile {
                    path: spec.path.clone(),
                    what: why,
                });
            }
            loras.push(lora);
        }
        let n = loras.len();
        Ok(Some(Self {
            loras,
            configs: configs.clone(),
            matched: Mutex::new(vec![HashSet::new(); n]),
            failures: Mutex::new(Vec::new()),
        }))
    }

    /// The names a LoRA module may have for `component`'s weight `name` (without `.weight`).
    fn aliases(&self, component: &str, path: &str) -> Vec<String> {
        let kohya = |prefix: &str, p: &str| format!("{prefix}_{}", p.replace('.', "_"));
        match component {
            "unet" => {
                let mut v = vec![kohya("lora_unet", path), format!("unet.{path}")];
                if let Some((ldm, _)) =
                    diffusers_to_ldm("unet", &format!("{path}.weight"), &self.configs)
                {
                    if let Some(p) = ldm
                        .strip_prefix("model.diffusion_model.")
                        .and_then(|p| p.strip_suffix(".weight"))
                    {
                        v.push(kohya("lora_unet", p));
                    }
                }
                v
            }
            "text_encoder" => vec![
                kohya("lora_te", path),
                kohya("lora_te1", path),
                format!("text_encoder.{path}"),
            ],
            "text_encoder_2" => vec![kohya("lora_te2", path), format!("text_encoder_2.{path}")],
            _ => Vec::new(),
        }
    }

    /// Some LoRA of the set changes `component`'s weight `name`.
    fn touches(&self, component: &str, name: &str) -> bool {
        let Some(path) = name.strip_suffix(".weight") else {
            return false;
        };
        let aliases = self.aliases(component, path);
        self.loras
            .iter()
            .any(|l| aliases.iter().any(|a| l.modules.contains_key(a)))
    }

    /// The sum of every LoRA's weighted change for `component`'s weight `name` of `shape`,
    /// or `None` when no LoRA changes it.
    fn delta_for(
        &self,
        component: &str,
        name: &str,
        shape: &Shape,
    ) -> candle_core::Result<Option<Tensor>> {
        let Some(path) = name.strip_suffix(".weight") else {
            return Ok(None);
        };
        let aliases = self.aliases(component, path);
        let mut sum: Option<Tensor> = None;
        for (i, lora) in self.loras.iter().enumerate() {
            let Some(module) = aliases.iter().find(|a| lora.modules.contains_key(*a)) else {
                continue;
            };
            if let Ok(mut m) = self.matched.lock() {
                m[i].insert(module.clone());
            }
            match lora.delta(module, shape, f64::from(lora.weight)) {
                Ok(d) => {
                    sum = Some(match sum {
                        Some(s) => (s + d)?,
                        None => d,
                    });
                }
                Err(e) => {
                    if let Ok(mut f) = self.failures.lock() {
                        f.push(format!("{}: {}", lora.name(), super::error_text(&e)));
                    }
                }
            }
        }
        Ok(sum)
    }

    /// What was applied: an error when a LoRA changed nothing (wrong model or format), else
    /// warnings for modules that found no weight or could not apply.
    pub fn report(&self) -> Result<LoraReport, ModelError> {
        let matched = self.matched.lock().map(|m| m.clone()).unwrap_or_default();
        let mut warnings = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        // Layers are written in parallel: the same order every time.
        warnings.sort();
        for (lora, hit) in self.loras.iter().zip(&matched) {
            if hit.is_empty() {
                return Err(ModelError::BadWeights {
                    path: lora.path.clone(),
                    reason: format!(
                        "none of its {} modules matches a weight of this {} model (e.g. {})",
                        lora.modules.len(),
                        self.configs.family.label(),
                        first_names(lora.modules.keys(), 3)
                    ),
                });
            }
            let missed: Vec<&String> = lora.modules.keys().filter(|m| !hit.contains(*m)).collect();
            if !missed.is_empty() {
                warnings.push(format!(
                    "{}: {} of {} modules match no weight of this model and were not applied (e.g. {})",
                    lora.name(),
                    missed.len(),
                    lora.modules.len(),
                    first_names(missed.into_iter(), 3)
                ));
            }
            if !lora.unknown_tensors.is_empty() {
                warnings.push(format!(
                    "{}: {} tensors of a kind Atelier does not apply (e.g. {})",
                    lora.name(),
                    lora.unknown_tensors.len(),
                    first_names(lora.unknown_tensors.iter(), 3)
                ));
            }
        }
        Ok(LoraReport { warnings })
    }
}

fn first_names<'a>(names: impl Iterator<Item = &'a String>, n: usize) -> String {
    let mut v: Vec<&String> = names.collect();
    v.sort();
    v.into_iter()
        .take(n)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The weights a model's UNet and text encoders were built with, as the tensors the blocks
/// hold: a LoRA is applied by writing new values into them in place (no rebuild, nothing read
/// from the checkpoint), from base copies kept of the layers a LoRA has touched.
#[derive(Default)]
pub struct LoraState {
    /// `(component, name, tensor)` of every weight handed out.
    params: Vec<(String, String, Tensor)>,
    /// The original values of the weights a LoRA has changed.
    bases: HashMap<(String, String), Tensor>,
    applied: Vec<LoraSpec>,
    /// The applied LoRAs' files, open (rebuilt text encoders get them without reading again).
    set: Option<LoraSet>,
    pub report: LoraReport,
}

/// Where a [`recording`] var builder writes the weights it hands out.
pub type Record = Arc<Mutex<Vec<(String, String, Tensor)>>>;

impl LoraState {
    /// Takes in the weights a build recorded (replacing those of the same components, as when
    /// the text encoders are rebuilt) and puts the applied LoRAs on them.
    pub fn adopt(&mut self, record: &Record) -> Result<(), ModelError> {
        let new: Vec<(String, String, Tensor)> = record
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if new.is_empty() {
            return Ok(());
        }
        let components: HashSet<String> = new.iter().map(|(c, _, _)| c.clone()).collect();
        self.params.retain(|(c, _, _)| !components.contains(c));
        // Rebuilt from the file, those weights hold their base values again.
        self.bases.retain(|(c, _), _| !components.contains(c));
        let start = self.params.len();
        self.params.extend(new);
        let Some(set) = self.set.take() else {
            return Ok(());
        };
        let written = self.write(&set, start);
        self.set = Some(set);
        written
    }

    /// Applies `specs` (replacing what was applied): only the layers either set touches are
    /// written. On an error the weights are back at their base values and nothing is applied.
    pub fn set(&mut self, specs: &[LoraSpec], configs: &ModelConfigs) -> Result<(), ModelError> {
        if specs == self.applied.as_slice() {
            return Ok(());
        }
        let set = match LoraSet::open(specs, configs)? {
            Some(set) => set,
            None => {
                self.restore();
                self.applied.clear();
                self.set = None;
                self.report = LoraReport::default();
                return Ok(());
            }
        };
        self.write(&set, 0).inspect_err(|_| self.restore())?;
        match set.report() {
            Ok(report) => {
                self.report = report;
                self.applied = specs.to_vec();
                self.set = Some(set);
                Ok(())
            }
            Err(e) => {
                self.restore();
                self.applied.clear();
                self.set = None;
                self.report = LoraReport::default();
                Err(e)
            }
        }
    }

    /// Writes base + the set's change into every recorded weight from `start` that the set or
    /// an earlier one touches.
    fn write(&mut self, set: &LoraSet, start: usize) -> Result<(), ModelError> {
        let bad = |e: candle_core::Error| ModelError::BadWeights {
            path: set
                .loras
                .first()
                .map(|l| l.path.clone())
                .unwrap_or_default(),
            reason: super::error_text(&e),
        };
        // Copies of the original values of the layers this set changes first, in parallel: the
        // fresh memory's page faults are most of a first application's time.
        let missing: Vec<(usize, (String, String))> = self.params[start..]
            .iter()
            .enumerate()
            .map(|(i, (c, n, _))| (start + i, (c.clone(), n.clone())))
            .filter(|(_, key)| !self.bases.contains_key(key) && set.touches(&key.0, &key.1))
            .collect();
        let copies: Vec<((String, String), Tensor)> = {
            use rayon::prelude::*;
            let params = &self.params;
            missing
                .into_par_iter()
                .map(|(i, key)| params[i].2.copy().map(|b| (key, b)))
                .collect::<candle_core::Result<_>>()
                .map_err(bad)?
        };
        self.bases.extend(copies);
        // Every layer with a base copy is written (this set's change, or back to its base),
        // several at once.
        use rayon::prelude::*;
        let bases = &self.bases;
        self.params[start..]
            .par_iter()
            .filter_map(|(c, n, p)| Some((c, n, p, bases.get(&(c.clone(), n.clone()))?)))
            .try_for_each(|(component, name, param, base)| {
                let Some(delta) = set.delta_for(component, name, param.shape())? else {
                    return param.slice_set(base, 0, 0);
                };
                let delta = delta.to_device(param.device())?;
                let fused = param.device().is_cpu()
                    && param.dtype() == DType::F32
                    && delta.dtype() == DType::F32
                    && param.is_contiguous();
                if fused {
                    // One pass, no new tensor: param = base + ΔW.
                    param.inplace_op3(base, &delta, &AddInto)
                } else {
                    let value = (base.to_dtype(DType::F32)? + delta)?.to_dtype(param.dtype())?;
                    param.slice_set(&value, 0, 0)
                }
            })
            .map_err(bad)?;
        Ok(())
    }

    /// Puts every changed weight back to its base value.
    fn restore(&mut self) {
        for (component, name, param) in &self.params {
            if let Some(base) = self.bases.get(&(component.clone(), name.clone())) {
                let _ = param.slice_set(base, 0, 0);
            }
        }
    }

    pub fn applied(&self) -> &[LoraSpec] {
        &self.applied
    }
}

/// `dst = base + delta` in place, over contiguous f32 tensors of one size, in parallel.
struct AddInto;

impl candle_core::InplaceOp3 for AddInto {
    fn name(&self) -> &'static str {
        "lora-add-into"
    }

    fn cpu_fwd(
        &self,
        dst: &mut candle_core::CpuStorage,
        dst_l: &candle_core::Layout,
        base: &candle_core::CpuStorage,
        base_l: &candle_core::Layout,
        delta: &candle_core::CpuStorage,
        delta_l: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        let base = super::fused::contiguous_f32(base, base_l)?;
        let delta = super::fused::contiguous_f32(delta, delta_l)?;
        let Some((a, b)) = dst_l.contiguous_offsets() else {
            candle_core::bail!("lora-add-into needs a contiguous weight");
        };
        let candle_core::CpuStorage::F32(dst) = dst else {
            candle_core::bail!("lora-add-into needs an f32 weight");
        };
        let dst = &mut dst[a..b];
        if dst.len() != base.len() || dst.len() != delta.len() {
            candle_core::bail!(
                "lora-add-into: sizes {} / {} / {}",
                dst.len(),
                base.len(),
                delta.len()
            );
        }
        const CHUNK: usize = 1 << 16;
        dst.par_chunks_mut(CHUNK)
            .zip(base.par_chunks(CHUNK))
            .zip(delta.par_chunks(CHUNK))
            .for_each(|((d, b), e)| {
                for ((d, b), e) in d.iter_mut().zip(b).zip(e) {
                    *d = b + e;
                }
            });
        Ok(())
    }
}

/// A component's var builder that records every weight it hands out in `record` (the
/// tensors the blocks keep), so LoRAs can later be written into them in place.
pub fn recording(
    inner: VarBuilder<'static>,
    component: &str,
    record: Record,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(Recorder {
            inner,
            component: component.to_owned(),
            record,
        }),
        dtype,
        device.clone(),
    )
}

struct Recorder {
    inner: VarBuilder<'static>,
    component: String,
    record: Record,
}

impl Recorder {
    fn keep(&self, name: &str, t: Tensor) -> candle_core::Result<Tensor> {
        // Only weights a LoRA can change; a fresh contiguous copy the blocks alone hold, so an
        // in-place write reaches exactly them.
        if !name.ends_with(".weight") {
            return Ok(t);
        }
        let t = t.contiguous()?;
        if let Ok(mut r) = self.record.lock() {
            r.push((self.component.clone(), name.to_owned(), t.clone()));
        }
        Ok(t)
    }
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_with_hints_dtype(s, name, h, dtype)?;
        self.keep(name, t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_unchecked_dtype(name, dtype)?;
        self.keep(name, t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// The LoRA named `name` (a file stem, as in `<lora:NAME:W>`) in `dirs` and their `Lora` /
/// `loras` / `LyCORIS` subfolders (A1111, ComfyUI), searched to depth 3.
pub fn find_lora(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    use crate::models::discover::{weight_files_under, LORA_FOLDERS};
    dirs.iter()
        .flat_map(|dir| {
            let here = weight_files_under(dir, 0);
            here.into_iter().chain(
                LORA_FOLDERS
                    .iter()
                    .flat_map(move |sub| weight_files_under(&dir.join(sub), 3)),
            )
        })
        .find(|p| p.file_stem().is_some_and(|s| s.to_string_lossy() == name))
}
