//! Single weight files as other tools ship them: `.safetensors`, and `.ckpt` / `.pt` (PyTorch's
//! zip of a pickle and raw tensor data). Either is read into one table of tensor names, shapes,
//! dtypes and byte ranges in the file, checked against the file's length, so a loader can
//! memory-map the file and take each tensor in place (nothing converted, nothing written).
//!
//! A pickle is a program, and a `.ckpt` can say "call `os.system`". It is read with candle's
//! pickle interpreter, which never imports or calls anything (it only builds a tree of what the
//! program names), and the tree is then refused unless every name in it is one a plain state
//! dict of tensors needs (the same allowlist idea as AUTOMATIC1111's safe unpickler).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack};
use candle_core::DType;

use super::ModelError;

/// How a single weight file stores its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    /// PyTorch's `torch.save` zip (`.ckpt`, `.pt`, `.pth`, `.bin`).
    Pickle,
}

/// One tensor of the file: where its bytes are and how to read them.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte offset of the first element in the file.
    pub start: u64,
    /// Stored in column-major order (PyTorch's `t()` of a contiguous tensor): read with the
    /// dims reversed, then permuted back.
    pub fortran_order: bool,
}

impl TensorEntry {
    pub fn byte_len(&self) -> u64 {
        (self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()) as u64
    }
}

/// A single weight file's table of contents.
#[derive(Clone, Debug)]
pub struct WeightFile {
    pub path: PathBuf,
    pub format: FileFormat,
    pub tensors: BTreeMap<String, TensorEntry>,
    /// safetensors `__metadata__` (empty for pickles).
    pub metadata: BTreeMap<String, String>,
    /// A training checkpoint's `global_step`, when the pickle has one.
    pub global_step: Option<i64>,
    pub file_len: u64,
}

/// Longest safetensors header or pickle program accepted (real ones are a few MB).
const MAX_HEADER_BYTES: u64 = 256 << 20;

impl WeightFile {
    /// Reads the table of contents of `path` (by content, not extension) and checks that every
    /// tensor lies inside the file.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::BadWeights {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::NotFound {
                path: path.to_path_buf(),
            },
            _ => ModelError::Io {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        })?;
        let file_len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        let mut magic = [0u8; 8];
        file.read_exact(&mut magic)
            .map_err(|_| bad(format!("{file_len} bytes is too short for a weight file")))?;
        let mut parsed = if magic.starts_with(b"PK\x03\x04") {
            read_pickle_zip(path, file_len)?
        } else {
            read_safetensors_header(&mut file, u64::from_le_bytes(magic), file_len).map_err(bad)?
        };
        parsed.path = path.to_path_buf();
        for (name, t) in &parsed.tensors {
            if t.start
                .checked_add(t.byte_len())
                .is_none_or(|end| end > file_len)
            {
                return Err(bad(format!(
                    "tensor {name} claims bytes past the end of the file (truncated or corrupt)"
                )));
            }
        }
        Ok(parsed)
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// One small float tensor's values in row-major order (for statistics that tell a model's
    /// kind), without mapping the file. `None` when it is missing, not a float, over 1 M
    /// elements, or column-major with more than two dims.
    pub fn read_f32(&self, name: &str) -> Option<Vec<f32>> {
        use std::io::{Seek, SeekFrom};
        let t = self.tensors.get(name)?;
        if t.byte_len() > 4 << 20 {
            return None;
        }
        let mut bytes = vec![0u8; t.byte_len() as usize];
        let mut f = std::fs::File::open(&self.path).ok()?;
        f.seek(SeekFrom::Start(t.start)).ok()?;
        f.read_exact(&mut bytes).ok()?;
        let values = match t.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            _ => return None,
        };
        if t.fortran_order && t.shape.len() > 1 {
            // Stored column-major: put it in row order.
            let [rows, cols] = t.shape[..] else {
                return None;
            };
            let stored: Vec<f32> = values;
            return Some(
                (0..rows * cols)
                    .map(|i| stored[(i % cols) * rows + i / cols])
                    .collect(),
            );
        }
        Some(values)
    }
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F8_E4M3" => DType::F8E4M3,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

fn read_safetensors_header(
    file: &mut std::fs::File,
    header_len: u64,
    file_len: u64,
) -> Result<WeightFile, String> {
    if header_len == 0 || header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(format!(
            "not a safetensors file (its header claims {header_len} bytes of a {file_len}-byte file)"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("unreadable safetensors header: {e}"))?;
    let data_start = 8 + header_len;
    let mut out = WeightFile {
        path: PathBuf::new(),
        format: FileFormat::Safetensors,
        tensors: BTreeMap::new(),
        metadata: BTreeMap::new(),
        global_step: None,
        file_len,
    };
    for (name, value) in doc {
        if name == "__metadata__" {
            if let Some(map) = value.as_object() {
                for (k, v) in map {
                    if let Some(s) = v.as_str() {
                        out.metadata.insert(k.clone(), s.to_owned());
                    }
                }
            }
            continue;
        }
        let field = |k: &str| value.get(k);
        let dtype_name = field("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        let Some(dtype) = dtype_of(dtype_name) else {
            // A type no weight uses (bool masks, exotic floats): never loaded, still checked.
            continue;
        };
        let shape: Vec<usize> = field("shape")
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .ok_or_else(|| format!("tensor {name} has no shape"))?;
        let offsets: Vec<u64> = field("data_offsets")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
            .filter(|o: &Vec<u64>| o.len() == 2)
            .ok_or_else(|| format!("tensor {name} has no data_offsets"))?;
        let entry = TensorEntry {
            dtype,
            shape,
            start: data_start.saturating_add(offsets[0]),
            fortran_order: false,
        };
        let stored = offsets[1].checked_sub(offsets[0]);
        if stored != Some(entry.byte_len()) {
            return Err(format!(
                "tensor {name}: its offsets hold {} bytes but a {dtype_name} tensor of shape {:?} needs {}",
                offsets[1].saturating_sub(offsets[0]),
                entry.shape,
                entry.byte_len()
            ));
        }
        out.tensors.insert(name, entry);
    }
    Ok(out)
}

/// What a checkpoint's pickle may name: containers, PyTorch's tensor rebuilding and storages,
/// and the bookkeeping training checkpoints carry. Anything else (`os.system`, `builtins.eval`,
/// `subprocess.*`...) refuses the file.
const PICKLE_ALLOWED: &[(&str, &[&str])] = &[
    ("collections", &["OrderedDict", "defaultdict"]),
    (
        "torch._utils",
        &[
            "_rebuild_tensor_v2",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_device_tensor_from_numpy",
        ],
    ),
    ("torch._tensor", &["_rebuild_from_type_v2"]),
    (
        "torch",
        &[
            "FloatStorage",
            "HalfStorage",
            "BFloat16Storage",
            "DoubleStorage",
            "LongStorage",
            "IntStorage",
            "ShortStorage",
            "CharStorage",
            "ByteStorage",
            "BoolStorage",
            "Tensor",
            "Size",
            "float32",
            "float16",
            "bfloat16",
        ],
    ),
    ("torch.nn.modules.container", &["ParameterDict"]),
    ("torch.nn.parameter", &["Parameter"]),
    ("__torch__", &["Module"]),
    ("builtins", &["set", "dict", "list", "tuple"]),
    ("__builtin__", &["set"]),
    ("_codecs", &["encode"]),
    ("numpy.core.multiarray", &["scalar", "_reconstruct"]),
    ("numpy._core.multiarray", &["scalar", "_reconstruct"]),
    ("numpy", &["dtype", "ndarray"]),
    (
        "pytorch_lightning.callbacks.model_checkpoint",
        &["ModelCheckpoint"],
    ),
    ("pytorch_lightning.callbacks", &["ModelCheckpoint"]),
];

fn allowed(module: &str, class: &str) -> bool {
    PICKLE_ALLOWED
        .iter()
        .any(|(m, classes)| *m == module && classes.contains(&class))
}

/// The first name in the tree that is not allowed.
fn forbidden_name(obj: &Object) -> Option<String> {
    match obj {
        Object::Class {
            module_name,
            class_name,
        } => (!allowed(module_name, class_name)).then(|| format!("{module_name}.{class_name}")),
        Object::Tuple(items) | Object::List(items) => items.iter().find_map(forbidden_name),
        Object::Dict(pairs) => pairs
            .iter()
            .find_map(|(k, v)| forbidden_name(k).or_else(|| forbidden_name(v))),
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            forbidden_name(callable).or_else(|| forbidden_name(args))
        }
        Object::PersistentLoad(inner) => forbidden_name(inner),
        _ => None,
    }
}

fn read_pickle_zip(path: &Path, file_len: u64) -> Result<WeightFile, ModelError> {
    let bad = |reason: String| ModelError::BadWeights {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable PyTorch checkpoint (zip): {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let Some(pkl) = names.iter().find(|n| n.ends_with("data.pkl")).cloned() else {
        return Err(bad(
            "a zip without data.pkl: not a PyTorch checkpoint".into()
        ));
    };
    let archive = pkl.trim_end_matches("data.pkl").to_owned();
    let program = {
        let mut entry = zip.by_name(&pkl).map_err(|e| bad(e.to_string()))?;
        if entry.size() > MAX_HEADER_BYTES {
            return Err(bad(format!("its pickle is {} bytes long", entry.size())));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        // The zip's declared size may lie: read no more than the bound either way.
        (&mut entry)
            .take(MAX_HEADER_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("cannot read its pickle: {e}")))?;
        bytes
    };
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut std::io::BufReader::new(program.as_slice()))
        .map_err(|e| bad(format!("its pickle cannot be read as data: {e}")))?;
    let root = stack
        .finalize()
        .map_err(|e| bad(format!("its pickle cannot be read as data: {e}")))?;
    if let Some(name) = forbidden_name(&root) {
        return Err(bad(format!(
            "refused: its pickle calls {name}, which a file of weights never needs \
             (Atelier runs no code from model files; a .safetensors copy is safe to use)"
        )));
    }
    // A TorchScript module wraps its dict; a training checkpoint keeps the weights under
    // "state_dict" next to bookkeeping such as "global_step".
    let root = match root {
        Object::Build { callable, args } if matches!(*callable, Object::Reduce { .. }) => *args,
        other => other,
    };
    let Object::Dict(pairs) = root else {
        return Err(bad(
            "its pickle is not a dictionary of tensors (not a state dict)".into(),
        ));
    };
    let mut global_step = None;
    let mut metadata = BTreeMap::new();
    let mut state: Option<Vec<(Object, Object)>> = None;
    let mut top = Vec::new();
    for (k, v) in pairs {
        match (&k, v) {
            (Object::Unicode(key), Object::Long(n)) if key == "global_step" => {
                global_step = Some(n)
            }
            (Object::Unicode(key), Object::Int(n)) if key == "global_step" => {
                global_step = Some(i64::from(n))
            }
            (Object::Unicode(key), Object::Dict(d)) if key == "state_dict" => state = Some(d),
            // Text next to the weights (Atelier's own configs, as a safetensors file's metadata).
            (Object::Unicode(key), Object::Unicode(text)) => {
                metadata.insert(key.clone(), text);
            }
            (_, v) => top.push((k, v)),
        }
    }
    // Nested dictionaries (a textual-inversion `.pt`'s `string_to_param`) are named
    // `outer.inner`, one level deep.
    let pairs: Vec<(Object, Object)> = state
        .unwrap_or(top)
        .into_iter()
        .flat_map(|(k, v)| match (k, v) {
            (Object::Unicode(outer), Object::Dict(inner)) => inner
                .into_iter()
                .filter_map(|(ik, iv)| match ik {
                    Object::Unicode(ik) => Some((Object::Unicode(format!("{outer}.{ik}")), iv)),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            (k, v) => vec![(k, v)],
        })
        .collect();
    // Where each stored entry's bytes begin in the file (entries must be stored, not deflated).
    let mut tensors = BTreeMap::new();
    // Storages live in `<archive>/data/<key>`.
    let data_dir = format!("{archive}data");
    let dir = Path::new(&data_dir);
    for (name, value) in pairs {
        let Ok(Some(info)) = value.into_tensor_info(name, dir) else {
            continue;
        };
        let entry = zip
            .by_name(&info.path)
            .map_err(|e| bad(format!("tensor {}: {e}", info.name)))?;
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(bad(format!(
                "tensor {} is compressed; PyTorch stores tensors uncompressed (re-saved by another tool?)",
                info.name
            )));
        }
        let fortran = info.layout.is_fortran_contiguous() && !info.layout.is_contiguous();
        if !info.layout.is_contiguous() && !fortran {
            return Err(bad(format!("tensor {} is not contiguous", info.name)));
        }
        // candle's layout already counts the storage offset in bytes.
        let offset = info.layout.start_offset() as u64;
        let t = TensorEntry {
            dtype: info.dtype,
            shape: info.layout.dims().to_vec(),
            start: entry
                .data_start()
                .ok_or_else(|| bad(format!("tensor {}: no data offset", info.name)))?
                .saturating_add(offset),
            fortran_order: fortran,
        };
        if offset.saturating_add(t.byte_len()) > entry.size() {
            return Err(bad(format!(
                "tensor {} claims more data than its storage holds",
                info.name
            )));
        }
        tensors.insert(info.name, t);
    }
    if tensors.is_empty() {
        return Err(bad("it holds no tensors".into()));
    }
    Ok(WeightFile {
        path: path.to_path_buf(),
        format: FileFormat::Pickle,
        tensors,
        metadata,
        global_step,
        file_len,
    })
}
