//! `Checkpoint`: every tensor of a model, across one safetensors file or the shards of an index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{ShardIndex, INDEX_FILE};
use super::safetensors::SafetensorsFile;
use super::quant::{QuantFormat, QuantView};
use super::{expected_tensors, DType, TensorView};
use crate::config::JambaConfig;
use crate::error::{Error, Result};

/// The single-file checkpoint name transformers writes.
const SINGLE_FILE: &str = "model.safetensors";

/// A model's weights, memory-mapped (or static), looked up by tensor name. Cloning shares the maps (a model that
/// streams its experts keeps a clone to read them from).
#[derive(Clone)]
pub struct Checkpoint {
    /// The directory (or static name) it was opened from, for errors about absent tensors.
    source: PathBuf,
    files: Arc<[SafetensorsFile]>,
    /// Tensor name -> index into `files`.
    location: Arc<HashMap<String, usize>>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors.index.json` and its shards if the index exists, else `dir/model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index_path = dir.join(INDEX_FILE);
        if index_path.is_file() {
            return Self::open_sharded(dir, &index_path);
        }
        let single = dir.join(SINGLE_FILE);
        if !single.is_file() {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                message: format!("no {SINGLE_FILE} and no {INDEX_FILE} in this directory"),
            });
        }
        Self::from_files(dir.to_path_buf(), vec![SafetensorsFile::open(&single)?])
    }

    /// A checkpoint held in static bytes (`include_bytes!` of a model.safetensors); `name` appears in errors.
    pub fn from_static(name: &str, bytes: &'static [u8]) -> Result<Self> {
        Self::from_files(PathBuf::from(name), vec![SafetensorsFile::from_static(name, bytes)?])
    }

    fn open_sharded(dir: &Path, index_path: &Path) -> Result<Self> {
        let index = ShardIndex::read(index_path)?;
        let mut files = Vec::new();
        for shard in index.shard_files() {
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(Error::Checkpoint { path, message: format!("shard named in {INDEX_FILE} is missing") });
            }
            files.push(SafetensorsFile::open(&path)?);
        }
        let checkpoint = Self::from_files(dir.to_path_buf(), files)?;
        // The index must agree with the shards' own headers.
        for (name, shard) in &index.weight_map {
            let found = checkpoint.location.get(name).map(|&f| &checkpoint.files[f].path);
            if found != Some(&dir.join(shard)) {
                return Err(Error::Checkpoint {
                    path: index.path.clone(),
                    message: format!("lists tensor `{name}` in {shard}, but that shard does not hold it"),
                });
            }
        }
        Ok(checkpoint)
    }

    fn from_files(source: PathBuf, files: Vec<SafetensorsFile>) -> Result<Self> {
        let mut location = HashMap::new();
        for (f, file) in files.iter().enumerate() {
            for name in file.names() {
                if let Some(&other) = location.get(&name) {
                    let other: &SafetensorsFile = &files[other];
                    return Err(Error::Checkpoint {
                        path: file.path.clone(),
                        message: format!("tensor `{name}` is also in {}", other.path.display()),
                    });
                }
                location.insert(name, f);
            }
        }
        Ok(Checkpoint { source, files: files.into(), location: Arc::new(location) })
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.location.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// A view of tensor `name`: an error if it is absent or not f32/f16/bf16.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let Some((name, &f)) = self.location.get_key_value(name) else {
            return Err(Error::Tensor {
                name: name.to_string(),
                file: self.source.display().to_string(),
                message: "missing from the checkpoint".to_string(),
            });
        };
        let file = &self.files[f];
        let info = file.info(name).ok_or_else(|| Error::Checkpoint {
            path: file.path.clone(),
            message: format!("tensor `{name}` vanished from the header"),
        })?;
        let dtype = DType::from_safetensors(info.dtype).ok_or_else(|| Error::Tensor {
            name: name.clone(),
            file: file.path.display().to_string(),
            message: format!("dtype {:?} is not supported (expected F32, F16 or BF16)", info.dtype),
        })?;
        Ok(TensorView { name, file: &file.path, dtype, shape: info.shape.clone(), data: file.data(info)? })
    }

    /// A view of tensor `name`, checked to have exactly `shape`.
    pub fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<TensorView<'_>> {
        self.tensor(name)?.expect_shape(shape)
    }

    /// Checks that every tensor the config implies is present, of a float dtype (or quantized as the config's
    /// `quantization` section says), and of the right shape.
    pub fn validate(&self, cfg: &JambaConfig) -> Result<()> {
        let format = cfg.quantization.map(|q| q.format);
        for (name, shape) in expected_tensors(cfg) {
            if self.quantized(&name, format, &shape)?.is_none() {
                self.tensor_shaped(&name, &shape)?;
            }
        }
        Ok(())
    }

    /// Whether the checkpoint holds a tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The quantized form of the weight `name` (`X.weight` stored as `X.qweight` and `X.scales`, see
    /// [`super::quant`]) if the checkpoint holds one, checked against `format` (from config.json's
    /// `quantization` section) and the matrix shape [rows, cols].
    pub fn quantized(&self, name: &str, format: Option<QuantFormat>, shape: &[usize]) -> Result<Option<QuantView<'_>>> {
        let Some(stem) = name.strip_suffix(".weight") else { return Ok(None) };
        let (qname, sname) = (format!("{stem}.qweight"), format!("{stem}.scales"));
        if !self.contains(&qname) {
            return Ok(None);
        }
        let error = |message: String| Error::Tensor { name: qname.clone(), file: self.source.display().to_string(), message };
        let Some(format) = format else {
            return Err(error("is quantized, but config.json has no `quantization` section".into()));
        };
        let &[rows, cols] = shape else {
            return Err(error(format!("quantized tensors must be matrices; `{name}` is {shape:?}")));
        };
        format.check_cols(name, cols)?;
        let groups = format.groups(cols);
        let (q_dtype, s_dtype, s_shape) = match format {
            QuantFormat::Q8 => (safetensors::Dtype::I8, safetensors::Dtype::F32, vec![rows]),
            QuantFormat::Q4 { min: false, .. } => (safetensors::Dtype::U8, safetensors::Dtype::F16, vec![rows, groups]),
            QuantFormat::Q4 { min: true, .. } => (safetensors::Dtype::U8, safetensors::Dtype::F16, vec![rows, groups, 2]),
        };
        let q_shape = vec![rows, format.code_bytes(cols)];
        let qweight = self.raw(&qname, q_dtype, &q_shape, format)?;
        let scales = self.raw(&sname, s_dtype, &s_shape, format)?;
        Ok(Some(QuantView { format, rows, cols, qweight, scales }))
    }

    /// The bytes of tensor `name`, checked to be `dtype` of `shape` as `format` stores it.
    fn raw(&self, name: &str, dtype: safetensors::Dtype, shape: &[usize], format: QuantFormat) -> Result<&[u8]> {
        let source = self.source.display().to_string();
        let Some(&f) = self.location.get(name) else {
            return Err(Error::Tensor { name: name.into(), file: source, message: format!("missing ({format} needs it)") });
        };
        let file = &self.files[f];
        let info = file.info(name).ok_or_else(|| Error::Checkpoint {
            path: file.path.clone(),
            message: format!("tensor `{name}` vanished from the header"),
        })?;
        if info.dtype != dtype || info.shape != shape {
            return Err(Error::Tensor {
                name: name.into(),
                file: file.path.display().to_string(),
                message: format!("is {:?} {:?}, but {format} stores {dtype:?} {shape:?}", info.dtype, info.shape),
            });
        }
        file.data(info)
    }

    /// The dtype most of the weights are stored in (by bytes), e.g. to report "bf16 checkpoint".
    pub fn main_dtype(&self) -> Option<DType> {
        let mut bytes: HashMap<DType, usize> = HashMap::new();
        for name in self.location.keys() {
            if let Ok(t) = self.tensor(name) {
                *bytes.entry(t.dtype).or_default() += t.data.len();
            }
        }
        bytes.into_iter().max_by_key(|&(_, b)| b).map(|(d, _)| d)
    }
}
