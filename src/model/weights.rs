//! The model's weights on the GPU, uploaded from a memory-mapped checkpoint.
//!
//! Matrices keep the checkpoint's dtype (f32, f16 or bf16: the kernels unpack it), so an upload is a copy from
//! the mmap into a mapped buffer with no conversion. Vectors (norms, biases, A_log, D, the conv taps) become f32.
//! A matrix larger than one storage binding is split by rows ([`Matrix`]); q, k and v are fused into one matrix
//! so attention projects once; the experts of a layer are stacked into as few buffers as the binding limit allows.

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Ffn, JambaConfig, Mixer};
use crate::gpu::{Context, DType, Graph, Tensor};
use crate::kernels::moe::ExpertStack;
use crate::kernels::{fill, matmul, AsCols, Cols};
use crate::weights::{self, Checkpoint, TensorView};
use crate::{Error, Result};

/// A weight matrix `[rows, cols]` (PyTorch's `[out, in]`), in parts of consecutive rows that each fit a binding.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    /// (first row, tensor [part rows, cols]).
    pub parts: Vec<(usize, Tensor)>,
}

impl Matrix {
    /// y = x W^T (or y += x W^T), one matmul per part, each writing its own columns of y.
    pub fn matmul<'a>(&self, g: &mut Graph, x: impl AsCols<'a>, y: impl AsCols<'a>, accumulate: bool) -> Result<()> {
        let (x, y) = (x.as_cols()?, y.as_cols()?);
        if y.width != self.rows {
            return Err(Error::shape("Matrix::matmul", format!("y has {} columns, the matrix {} rows", y.width, self.rows)));
        }
        for (row0, part) in &self.parts {
            let columns = Cols { offset: y.offset + row0, width: part.shape()[0], ..y };
            matmul::matmul(g, x, part, columns, accumulate)?;
        }
        Ok(())
    }

    pub fn size_bytes(&self) -> u64 {
        self.parts.iter().map(|(_, t)| t.size_bytes()).sum()
    }
}

pub struct GpuWeights {
    pub embed_tokens: Matrix, // [V, H]
    pub final_norm: Tensor,   // [H]
    /// None when tie_word_embeddings: the head is `embed_tokens`.
    pub lm_head: Option<Matrix>, // [V, H]
    pub layers: Vec<LayerWeights>,
}

impl GpuWeights {
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }
}

pub struct LayerWeights {
    pub input_norm: Tensor,  // [H]
    pub pre_ff_norm: Tensor, // [H]
    pub mixer: MixerWeights,
    pub ffn: FfnWeights,
}

#[allow(clippy::large_enum_variant)]
pub enum MixerWeights {
    Attention(AttentionWeights),
    Mamba(MambaWeights),
}

pub struct AttentionWeights {
    pub qkv: Matrix,   // [q_dim + 2 kv_dim, H]: q_proj, k_proj, v_proj stacked
    pub o_proj: Matrix, // [H, q_dim]
}

pub struct MambaWeights {
    pub in_proj: Matrix,    // [2 I, H]
    pub conv_weight: Tensor, // [I, K] f32
    pub conv_bias: Tensor,   // [I] f32 (zeros without mamba_conv_bias)
    pub x_proj: Matrix,     // [R + 2N, I]
    pub dt_norm: Tensor,     // [R]
    pub b_norm: Tensor,      // [N]
    pub c_norm: Tensor,      // [N]
    pub dt_proj: Matrix,    // [I, R]
    pub dt_bias: Tensor,     // [I]
    pub a_log: Tensor,       // [I, N]
    pub d: Tensor,           // [I]
    pub out_proj: Matrix,   // [H, I]
}

pub enum FfnWeights {
    Dense { gate: Tensor /* [F, H] */, up: Tensor /* [F, H] */, down: Tensor /* [H, F] */ },
    Moe { router: Tensor /* [E, H] */, experts: Vec<ExpertStack> },
}

/// Uploads every weight the config implies from a checkpoint, checking each tensor's presence, dtype and shape.
pub fn upload(ctx: &Context, cfg: &JambaConfig, checkpoint: &Checkpoint, progress: bool) -> Result<GpuWeights> {
    checkpoint.validate(cfg)?;
    let total: u64 = weights::expected_tensors(cfg)
        .iter()
        .map(|(name, _)| checkpoint.tensor(name).map(|t| t.data.len() as u64))
        .sum::<Result<u64>>()?;
    let bar = if progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let weights = build(ctx, cfg, &CheckpointSource { ctx, checkpoint, bar: &bar })?;
    bar.finish_and_clear();
    Ok(weights)
}

/// Weights of the config's shapes filled with pseudo-random values on the GPU (no host memory): for benchmarks
/// of full-size models without a download. Matrices are `dtype`; values are scaled like trained ones.
pub fn random(ctx: &Context, cfg: &JambaConfig, dtype: DType, seed: u32) -> Result<GpuWeights> {
    cfg.validate()?;
    let shapes = weights::expected_tensors(cfg).into_iter().collect();
    let weights = build(ctx, cfg, &RandomSource { ctx, shapes, dtype, seed })?;
    ctx.wait("filling random weights")?;
    Ok(weights)
}

/// Where weights come from: a checkpoint, or the GPU's random fill.
trait Source {
    /// Shape and storage type of a tensor.
    fn meta(&self, name: &str) -> Result<(Vec<usize>, DType)>;
    /// A tensor `shape` of rows `row0..row0 + n` of the row-wise concatenation of `names` (same dtype, same
    /// columns), in the storage type of the first.
    fn rows(&self, label: &str, names: &[&str], row0: usize, n: usize, shape: &[usize]) -> Result<Tensor>;
    /// A small tensor as f32, e.g. a norm weight, flattened to `shape`.
    fn vector(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
}

/// The model's structure, from whichever source.
fn build(ctx: &Context, cfg: &JambaConfig, src: &dyn Source) -> Result<GpuWeights> {
    let limit = ctx.limits().max_storage_buffer_binding_size.min(ctx.limits().max_buffer_size) as usize;
    let vector = |name: &str| -> Result<Tensor> {
        let (shape, _) = src.meta(name)?;
        src.vector(name, &[shape.iter().product()])
    };
    let matrix = |label: &str, names: &[&str]| matrix(src, limit, label, names);
    let single = |name: &str| -> Result<Tensor> {
        let (shape, _) = src.meta(name)?;
        src.rows(name, &[name], 0, shape[0], &shape)
    };

    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for (i, kind) in cfg.layers().iter().enumerate() {
        let p = format!("model.layers.{i}");
        let mixer = match kind.mixer {
            Mixer::Attention => {
                let a = format!("{p}.self_attn");
                let (q, k, v) = (format!("{a}.q_proj.weight"), format!("{a}.k_proj.weight"), format!("{a}.v_proj.weight"));
                MixerWeights::Attention(AttentionWeights {
                    qkv: matrix(&format!("{a}.qkv_proj"), &[&q, &k, &v])?,
                    o_proj: matrix(&format!("{a}.o_proj.weight"), &[&format!("{a}.o_proj.weight")])?,
                })
            }
            Mixer::Mamba => {
                let m = format!("{p}.mamba");
                if cfg.mamba_proj_bias {
                    return Err(Error::Config {
                        field: "mamba_proj_bias".into(),
                        message: "true is not supported by the GPU path (no Jamba checkpoint uses it); run with --device cpu"
                            .into(),
                    });
                }
                let i_dim = cfg.d_inner();
                let conv_bias = match cfg.mamba_conv_bias {
                    true => vector(&format!("{m}.conv1d.bias"))?,
                    false => ctx.zeros(&format!("{m}.conv1d.bias"), &[i_dim], DType::F32)?,
                };
                let mat = |name: &str| matrix(&format!("{m}.{name}"), &[&format!("{m}.{name}")]);
                MixerWeights::Mamba(MambaWeights {
                    in_proj: mat("in_proj.weight")?,
                    conv_weight: src.vector(&format!("{m}.conv1d.weight"), &[i_dim, cfg.mamba_d_conv])?,
                    conv_bias,
                    x_proj: mat("x_proj.weight")?,
                    dt_norm: vector(&format!("{m}.dt_layernorm.weight"))?,
                    b_norm: vector(&format!("{m}.b_layernorm.weight"))?,
                    c_norm: vector(&format!("{m}.c_layernorm.weight"))?,
                    dt_proj: mat("dt_proj.weight")?,
                    dt_bias: vector(&format!("{m}.dt_proj.bias"))?,
                    a_log: src.vector(&format!("{m}.A_log"), &[i_dim, cfg.mamba_d_state])?,
                    d: vector(&format!("{m}.D"))?,
                    out_proj: mat("out_proj.weight")?,
                })
            }
        };
        let f = format!("{p}.feed_forward");
        let ffn = match kind.ffn {
            Ffn::Dense => FfnWeights::Dense {
                gate: single(&format!("{f}.gate_proj.weight"))?,
                up: single(&format!("{f}.up_proj.weight"))?,
                down: single(&format!("{f}.down_proj.weight"))?,
            },
            Ffn::Moe => FfnWeights::Moe {
                router: single(&format!("{f}.router.weight"))?,
                experts: experts(src, limit, &f, cfg.num_experts)?,
            },
        };
        layers.push(LayerWeights {
            input_norm: vector(&format!("{p}.input_layernorm.weight"))?,
            pre_ff_norm: vector(&format!("{p}.pre_ff_layernorm.weight"))?,
            mixer,
            ffn,
        });
    }
    let embed = "model.embed_tokens.weight";
    Ok(GpuWeights {
        embed_tokens: matrix(embed, &[embed])?,
        final_norm: vector("model.final_layernorm.weight")?,
        lm_head: if cfg.tie_word_embeddings { None } else { Some(matrix("lm_head.weight", &["lm_head.weight"])?) },
        layers,
    })
}

/// The row-wise concatenation of `names`, split into parts of whole rows that each fit `limit` bytes.
fn matrix(src: &dyn Source, limit: usize, label: &str, names: &[&str]) -> Result<Matrix> {
    let metas: Vec<(Vec<usize>, DType)> = names.iter().map(|n| src.meta(n)).collect::<Result<_>>()?;
    let (cols, dtype) = (metas[0].0[1], metas[0].1);
    let rows: usize = metas.iter().map(|(shape, _)| shape[0]).sum();
    let max_rows = rows_per_binding(limit, cols * dtype.size_bytes(), dtype);
    let mut parts = Vec::new();
    for row0 in (0..rows).step_by(max_rows) {
        let n = max_rows.min(rows - row0);
        let part_label = if n == rows { label.to_string() } else { format!("{label}[{row0}..{}]", row0 + n) };
        parts.push((row0, src.rows(&part_label, names, row0, n, &[n, cols])?));
    }
    Ok(Matrix { rows, cols, parts })
}

/// The experts of one MoE layer, stacked [count, out, in] into as few buffers as the binding limit allows.
fn experts(src: &dyn Source, limit: usize, prefix: &str, n_experts: usize) -> Result<Vec<ExpertStack>> {
    let name = |e: usize, which: &str| format!("{prefix}.experts.{e}.{which}_proj.weight");
    let (shape, dtype) = src.meta(&name(0, "gate"))?;
    let (inter, hidden) = (shape[0], shape[1]);
    let per_stack = (limit / (inter * hidden * dtype.size_bytes()).max(1)).clamp(1, n_experts.max(1));
    let mut stacks = Vec::new();
    for first in (0..n_experts).step_by(per_stack) {
        let count = per_stack.min(n_experts - first);
        let stack = |which: &str, rows: usize, cols: usize| -> Result<Tensor> {
            let names: Vec<String> = (first..first + count).map(|e| name(e, which)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let label = format!("{prefix}.experts[{first}..{}].{which}_proj", first + count);
            src.rows(&label, &names, 0, count * rows, &[count, rows, cols])
        };
        stacks.push(ExpertStack {
            first,
            count,
            gate: stack("gate", inter, hidden)?,
            up: stack("up", inter, hidden)?,
            down: stack("down", hidden, inter)?,
        });
    }
    Ok(stacks)
}

/// Rows of `row_bytes` that fit `limit` (an even number, so half-precision parts stay word-aligned).
fn rows_per_binding(limit: usize, row_bytes: usize, dtype: DType) -> usize {
    let rows = (limit / row_bytes.max(1)).max(1);
    if dtype.size_bytes() < 4 && rows > 1 {
        rows & !1
    } else {
        rows
    }
}

struct CheckpointSource<'a> {
    ctx: &'a Context,
    checkpoint: &'a Checkpoint,
    bar: &'a ProgressBar,
}

fn gpu_dtype(dtype: weights::DType) -> DType {
    match dtype {
        weights::DType::F32 => DType::F32,
        weights::DType::F16 => DType::F16,
        weights::DType::BF16 => DType::BF16,
    }
}

impl Source for CheckpointSource<'_> {
    fn meta(&self, name: &str) -> Result<(Vec<usize>, DType)> {
        let view = self.checkpoint.tensor(name)?;
        Ok((view.shape.clone(), gpu_dtype(view.dtype)))
    }

    fn rows(&self, label: &str, names: &[&str], row0: usize, n: usize, shape: &[usize]) -> Result<Tensor> {
        let views: Vec<TensorView<'_>> = names.iter().map(|n| self.checkpoint.tensor(n)).collect::<Result<_>>()?;
        let first = &views[0];
        for v in &views {
            if v.dtype != first.dtype || v.shape.len() != 2 || v.shape[1] != first.shape[1] {
                return Err(v.error(format!(
                    "cannot be stacked with `{}` ({:?} {:?})",
                    first.name, first.dtype, first.shape
                )));
            }
        }
        let row_bytes = first.shape[1] * first.dtype.size_bytes();
        let data: Vec<&[u8]> = views.iter().map(|v| v.data).collect();
        let pieces = byte_range(&data, row0 * row_bytes, (row0 + n) * row_bytes);
        let tensor = self.ctx.tensor_from_parts(label, shape, gpu_dtype(first.dtype), &pieces)?;
        self.bar.inc((n * row_bytes) as u64);
        Ok(tensor)
    }

    fn vector(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let view = self.checkpoint.tensor(name)?;
        if view.numel() != shape.iter().product::<usize>() {
            return Err(view.error(format!("has {} elements, expected {shape:?}", view.numel())));
        }
        self.bar.inc(view.data.len() as u64);
        self.ctx.upload_f32(name, shape, &view.to_f32())
    }
}

struct RandomSource<'a> {
    ctx: &'a Context,
    shapes: std::collections::HashMap<String, Vec<usize>>,
    dtype: DType,
    seed: u32,
}

impl RandomSource<'_> {
    fn fill(&self, tensor: &Tensor, label: &str, mean: f32, scale: f32) -> Result<()> {
        let seed = label.bytes().fold(self.seed, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        let mut g = Graph::new(self.ctx);
        fill::fill_random(&mut g, tensor, seed, mean, scale)?;
        g.run()
    }
}

impl Source for RandomSource<'_> {
    fn meta(&self, name: &str) -> Result<(Vec<usize>, DType)> {
        let shape = self.shapes.get(name).ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            file: "random weights".into(),
            message: "not implied by the config".into(),
        })?;
        Ok((shape.clone(), self.dtype))
    }

    fn rows(&self, label: &str, names: &[&str], _row0: usize, _n: usize, shape: &[usize]) -> Result<Tensor> {
        let (first, _) = self.meta(names[0])?;
        let tensor = self.ctx.zeros(label, shape, self.dtype)?;
        // Scaled like a trained Linear: uniform with standard deviation about 1 / sqrt(fan_in).
        self.fill(&tensor, label, 0.0, 1.7 / (first[1] as f32).sqrt())?;
        Ok(tensor)
    }

    fn vector(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self.ctx.zeros(name, shape, DType::F32)?;
        // Plausible trained values: A = -exp(A_log) in about [-1, -12], softplus(dt bias) small, norms near 1.
        let (mean, scale) = if name.ends_with("A_log") {
            (1.5, 1.0)
        } else if name.ends_with("dt_proj.bias") {
            (-3.0, 1.0)
        } else if name.contains("conv1d") {
            (0.0, 0.5)
        } else {
            (1.0, 0.1)
        };
        self.fill(&tensor, name, mean, scale)?;
        Ok(tensor)
    }
}

/// Bytes `start..end` of the concatenation of `pieces`, as sub-slices.
fn byte_range<'a>(pieces: &[&'a [u8]], start: usize, end: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for piece in pieces {
        let (lo, hi) = (start.max(at), end.min(at + piece.len()));
        if lo < hi {
            out.push(&piece[lo - at..hi - at]);
        }
        at += piece.len();
    }
    out
}
