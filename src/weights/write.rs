//! Writing a quantized checkpoint (`jamba-wgpu quantize`): every weight a [`Quantization`] covers becomes
//! `X.qweight` and `X.scales` (see [`super::quant`]), every other tensor is copied as it is, config.json gains a
//! `quantization` section, and the tokenizer and generation files are copied beside them.
//!
//! Tensors are quantized one at a time while the file is written (safetensors asks each tensor for its bytes in
//! turn), so the host holds one tensor's codes at a time, never the model.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use safetensors::tensor::View;
use safetensors::Dtype;

use super::quant::{self, QuantFormat, Quantization};
use super::{Checkpoint, DType, TensorView};
use crate::config::{quantization_json, JambaConfig};
use crate::error::{Error, Result};

/// What [`write_quantized`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuantizeReport {
    /// The weights stored quantized.
    pub quantized: Vec<String>,
    /// Weights in the scope left as they were because their K is not a whole number of q4 groups.
    pub kept: Vec<String>,
    /// Bytes of tensor data in and out.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Files of a checkpoint directory copied as they are: the tokenizer and generation settings.
const SIDE_FILES: [&str; 5] =
    ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "tokenizer.model"];

/// Writes the checkpoint in `dir` quantized by `q` into `out` (created if needed; must not be `dir`):
/// model.safetensors, config.json with its `quantization` section, and the side files that exist.
pub fn write_quantized(dir: &Path, out: &Path, q: Quantization, progress: bool) -> Result<QuantizeReport> {
    let cfg = JambaConfig::from_file(dir.join("config.json"))?;
    if let Some(stored) = cfg.quantization {
        return Err(Error::Input(format!("{} is already quantized ({})", dir.display(), stored.format)));
    }
    if same_dir(dir, out) {
        return Err(Error::Input(format!("--out {} is the model's own directory", out.display())));
    }
    let checkpoint = Checkpoint::open(dir)?;
    checkpoint.validate(&cfg)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;

    let mut report = QuantizeReport::default();
    let mut tensors: Vec<(String, Out<'_>)> = Vec::new();
    for name in checkpoint.names() {
        let view = checkpoint.tensor(name)?;
        report.bytes_in += view.data.len() as u64;
        let format = match view.shape[..] {
            [_, cols] if q.covers(name) => {
                let format = q.format_for(name, cols);
                if format.is_none() {
                    report.kept.push(name.to_string());
                }
                format
            }
            _ => None,
        };
        match format {
            Some(format) => {
                let stem = name.strip_suffix(".weight").unwrap_or(name);
                report.quantized.push(name.to_string());
                tensors.push((format!("{stem}.qweight"), Out::quantized(view.clone(), format, Part::Codes)));
                tensors.push((format!("{stem}.scales"), Out::quantized(view, format, Part::Scales)));
            }
            None => tensors.push((name.to_string(), Out::Copy(view))),
        }
    }
    report.bytes_out = tensors.iter().map(|(_, t)| t.data_len() as u64).sum();

    let bar = if progress { ProgressBar::new(report.bytes_out) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("quantizing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tensors: Vec<(String, Tracked<'_>)> =
        tensors.into_iter().map(|(n, t)| (n, Tracked { out: t, bar: &bar })).collect();
    let file = out.join("model.safetensors");
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors, Some(metadata), &file)
        .map_err(|e| Error::Checkpoint { path: file.clone(), message: format!("writing: {e}") })?;
    bar.finish_and_clear();

    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let mut config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config { field: "config.json".into(), message: e.to_string() })?;
    config["quantization"] = quantization_json(&q);
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    write(&out.join("config.json"), text.as_bytes())?;
    for side in SIDE_FILES {
        let from = dir.join(side);
        if from.is_file() {
            std::fs::copy(&from, out.join(side)).map_err(|e| Error::io(&from, e))?;
        }
    }
    Ok(report)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
    b.exists() && canonical(a) == canonical(b)
}

/// Which half of a quantized weight a tensor holds.
#[derive(Clone, Copy)]
enum Part {
    Codes,
    Scales,
}

/// A tensor of the output: copied from the mmap, or quantized when asked for its bytes.
enum Out<'a> {
    Copy(TensorView<'a>),
    Quantized { view: TensorView<'a>, format: QuantFormat, part: Part, shape: Vec<usize> },
}

impl<'a> Out<'a> {
    fn quantized(view: TensorView<'a>, format: QuantFormat, part: Part) -> Self {
        let (rows, cols) = (view.shape[0], view.shape[1]);
        let shape = match (part, format) {
            (Part::Codes, _) => vec![rows, format.code_bytes(cols)],
            (Part::Scales, QuantFormat::Q8) => vec![rows],
            (Part::Scales, QuantFormat::Q4 { min: false, .. }) => vec![rows, format.groups(cols)],
            (Part::Scales, QuantFormat::Q4 { min: true, .. }) => vec![rows, format.groups(cols), 2],
        };
        Out::Quantized { view, format, part, shape }
    }
}

impl View for Out<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Out::Copy(v) => match v.dtype {
                DType::F32 => Dtype::F32,
                DType::F16 => Dtype::F16,
                DType::BF16 => Dtype::BF16,
            },
            Out::Quantized { format: QuantFormat::Q8, part: Part::Codes, .. } => Dtype::I8,
            Out::Quantized { part: Part::Codes, .. } => Dtype::U8,
            Out::Quantized { format: QuantFormat::Q8, .. } => Dtype::F32,
            Out::Quantized { .. } => Dtype::F16,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Out::Copy(v) => &v.shape,
            Out::Quantized { shape, .. } => shape,
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Out::Copy(v) => Cow::Borrowed(v.data),
            Out::Quantized { view, format, part, .. } => {
                let (rows, cols) = (view.shape[0], view.shape[1]);
                // The shape was checked when the tensor was chosen, so this cannot fail; an empty result would
                // make safetensors report a length mismatch rather than write a wrong file.
                let Ok(q) = quant::quantize(*format, &view.to_f32(), rows, cols) else { return Cow::Owned(Vec::new()) };
                Cow::Owned(match part {
                    Part::Codes => q.qweight,
                    Part::Scales => q.scales,
                })
            }
        }
    }

    fn data_len(&self) -> usize {
        self.shape().iter().product::<usize>() * self.dtype().bitsize() / 8
    }
}

/// An output tensor that advances the progress bar as it is written.
struct Tracked<'a> {
    out: Out<'a>,
    bar: &'a ProgressBar,
}

impl View for Tracked<'_> {
    fn dtype(&self) -> Dtype {
        self.out.dtype()
    }

    fn shape(&self) -> &[usize] {
        self.out.shape()
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let data = self.out.data();
        self.bar.inc(data.len() as u64);
        data
    }

    fn data_len(&self) -> usize {
        self.out.data_len()
    }
}
