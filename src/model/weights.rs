//! The model's weights on the GPU, uploaded from a memory-mapped checkpoint.
//!
//! Matrices keep the checkpoint's dtype (f32, f16 or bf16: the kernels unpack it), so an upload is a copy from
//! the mmap into a mapped buffer with no conversion; a quantized checkpoint's `X.qweight` and `X.scales` are
//! copied into the packed rows the kernels read (weights::quant). With a [`Quantization`] asked at load, the
//! matrices it covers are quantized on the CPU row by row from the mmap as they are uploaded (never a copy of
//! the model in host memory). Vectors (norms, biases, A_log, D, the conv taps) become f32.
//! A matrix larger than one storage binding is split by rows ([`Matrix`]); q, k and v are fused into one matrix
//! so attention projects once; the experts of a layer are stacked into as few buffers as the binding limit allows.

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Ffn, JambaConfig, Mixer};
use crate::gpu::{Context, DType, Graph, Tensor};
use crate::kernels::moe::ExpertStack;
use crate::kernels::{fill, matmul, AsCols, Cols};
use crate::weights::quant::{self, QuantFormat, QuantView, Quantization};
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

impl FfnWeights {
    /// Bytes of GPU memory these weights take.
    pub fn size_bytes(&self) -> u64 {
        match self {
            FfnWeights::Dense { gate, up, down } => gate.size_bytes() + up.size_bytes() + down.size_bytes(),
            FfnWeights::Moe { router, experts } => {
                router.size_bytes() + experts.iter().map(|s| s.gate.size_bytes() + s.up.size_bytes() + s.down.size_bytes()).sum::<u64>()
            }
        }
    }
}

/// Uploads every weight the config implies from a checkpoint, checking each tensor's presence, dtype and shape;
/// quantizes the matrices `quantize` covers (None: keep the stored types; a checkpoint already quantized must be
/// loaded as it is).
pub fn upload(
    ctx: &Context,
    cfg: &JambaConfig,
    checkpoint: &Checkpoint,
    quantize: Option<Quantization>,
    progress: bool,
) -> Result<GpuWeights> {
    checkpoint.validate(cfg)?;
    if let (Some(asked), Some(stored)) = (quantize, cfg.quantization) {
        return Err(Error::Input(format!(
            "the checkpoint is already quantized ({}); load it without asking for {}",
            stored.format, asked.format
        )));
    }
    let src = CheckpointSource {
        ctx,
        checkpoint,
        format: cfg.quantization.map(|q| q.format),
        shapes: weights::expected_tensors(cfg).into_iter().collect(),
        bar: ProgressBar::hidden(),
    };
    let total: u64 = src.shapes.keys().map(|name| src.stored_bytes(name)).sum::<Result<u64>>()?;
    let src = CheckpointSource { bar: if progress { ProgressBar::new(total) } else { ProgressBar::hidden() }, ..src };
    src.bar.set_style(
        ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let weights = build(ctx, cfg, &src, quantize)?;
    src.bar.finish_and_clear();
    Ok(weights)
}

/// Weights of the config's shapes filled with pseudo-random values on the GPU (no host memory): for benchmarks
/// of full-size models without a download. Matrices are `dtype` (a float type), or quantized where `quantize`
/// covers them (random codes); values are scaled like trained ones.
pub fn random(ctx: &Context, cfg: &JambaConfig, dtype: DType, quantize: Option<Quantization>, seed: u32) -> Result<GpuWeights> {
    cfg.validate()?;
    if dtype.is_quantized() || dtype == DType::U32 {
        return Err(Error::Input(format!("random weights are stored as f32, f16 or bf16 (then quantized), not {dtype:?}")));
    }
    let shapes = weights::expected_tensors(cfg).into_iter().collect();
    let weights = build(ctx, cfg, &RandomSource { ctx, shapes, dtype, seed }, quantize)?;
    ctx.wait("filling random weights")?;
    Ok(weights)
}

/// Where weights come from: a checkpoint, or the GPU's random fill.
trait Source {
    /// Shape and storage type of a tensor.
    fn meta(&self, name: &str) -> Result<(Vec<usize>, DType)>;
    /// A tensor `shape` of rows `row0..row0 + n` of the row-wise concatenation of `names` (same dtype, same
    /// columns), stored as `dtype`: their own type, or a quantized format to quantize them into.
    fn rows(&self, label: &str, names: &[&str], row0: usize, n: usize, shape: &[usize], dtype: DType) -> Result<Tensor>;
    /// A small tensor as f32, e.g. a norm weight, flattened to `shape`.
    fn vector(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
}

/// The model's structure, from whichever source.
fn build(ctx: &Context, cfg: &JambaConfig, src: &dyn Source, quant: Option<Quantization>) -> Result<GpuWeights> {
    let limit = ctx.limits().max_storage_buffer_binding_size.min(ctx.limits().max_buffer_size) as usize;
    let vector = |name: &str| -> Result<Tensor> {
        let (shape, _) = src.meta(name)?;
        src.vector(name, &[shape.iter().product()])
    };
    let plan = Plan { src, limit, quant };
    let matrix = |label: &str, names: &[&str]| plan.matrix(label, names);
    let single = |name: &str| -> Result<Tensor> {
        let (shape, stored) = src.meta(name)?;
        src.rows(name, &[name], 0, shape[0], &shape, plan.storage(name, stored, shape[1]))
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
                experts: plan.experts(&f, cfg.num_experts)?,
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

/// What the structure needs to place a matrix: where weights come from, the binding limit, the quantization.
struct Plan<'a> {
    src: &'a dyn Source,
    limit: usize,
    quant: Option<Quantization>,
}

impl Plan<'_> {
    /// The storage type of weight `name` with `cols` inputs, stored as `stored`: quantized when the quantization
    /// covers it (and its K fits the format), else as stored.
    fn storage(&self, name: &str, stored: DType, cols: usize) -> DType {
        match self.quant.and_then(|q| q.format_for(name, cols)) {
            Some(format) if !stored.is_quantized() => DType::Quant(format),
            _ => stored,
        }
    }

    /// The row-wise concatenation of `names`, split into parts of whole rows that each fit the binding limit.
    fn matrix(&self, label: &str, names: &[&str]) -> Result<Matrix> {
        let metas: Vec<(Vec<usize>, DType)> = names.iter().map(|n| self.src.meta(n)).collect::<Result<_>>()?;
        let cols = metas[0].0[1];
        let dtype = self.storage(names[0], metas[0].1, cols);
        let rows: usize = metas.iter().map(|(shape, _)| shape[0]).sum();
        let max_rows = rows_per_binding(self.limit, dtype.row_bytes(cols), dtype);
        let mut parts = Vec::new();
        for row0 in (0..rows).step_by(max_rows) {
            let n = max_rows.min(rows - row0);
            let part_label = if n == rows { label.to_string() } else { format!("{label}[{row0}..{}]", row0 + n) };
            parts.push((row0, self.src.rows(&part_label, names, row0, n, &[n, cols], dtype)?));
        }
        Ok(Matrix { rows, cols, parts })
    }

    /// The experts of one MoE layer, stacked [count, out, in] into as few buffers as the binding limit allows.
    /// gate, up and down share one storage type: quantized only when the format fits both H and I.
    fn experts(&self, prefix: &str, n_experts: usize) -> Result<Vec<ExpertStack>> {
        let src = self.src;
        let name = |e: usize, which: &str| format!("{prefix}.experts.{e}.{which}_proj.weight");
        let (shape, stored) = src.meta(&name(0, "gate"))?;
        let (inter, hidden) = (shape[0], shape[1]);
        let dtype = match (self.storage(&name(0, "gate"), stored, hidden), self.storage(&name(0, "down"), stored, inter)) {
            (a, b) if a == b => a,
            _ => stored,
        };
        let expert_bytes = dtype.storage_bytes(&[inter, hidden]).max(dtype.storage_bytes(&[hidden, inter]));
        let per_stack = (self.limit / expert_bytes.max(1)).clamp(1, n_experts.max(1));
        let mut stacks = Vec::new();
        for first in (0..n_experts).step_by(per_stack) {
            let count = per_stack.min(n_experts - first);
            let stack = |which: &str, rows: usize, cols: usize| -> Result<Tensor> {
                let names: Vec<String> = (first..first + count).map(|e| name(e, which)).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let label = format!("{prefix}.experts[{first}..{}].{which}_proj", first + count);
                src.rows(&label, &names, 0, count * rows, &[count, rows, cols], dtype)
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
}

/// Rows of `row_bytes` that fit `limit` (an even number, so half-precision parts stay word-aligned).
fn rows_per_binding(limit: usize, row_bytes: usize, dtype: DType) -> usize {
    let rows = (limit / row_bytes.max(1)).max(1);
    if matches!(dtype, DType::F16 | DType::BF16) && rows > 1 {
        rows & !1
    } else {
        rows
    }
}

struct CheckpointSource<'a> {
    ctx: &'a Context,
    checkpoint: &'a Checkpoint,
    /// The checkpoint's own quantization (config.json), if it was written quantized.
    format: Option<QuantFormat>,
    /// Every tensor the config implies, with its shape.
    shapes: std::collections::HashMap<String, Vec<usize>>,
    bar: ProgressBar,
}

fn gpu_dtype(dtype: weights::DType) -> DType {
    match dtype {
        weights::DType::F32 => DType::F32,
        weights::DType::F16 => DType::F16,
        weights::DType::BF16 => DType::BF16,
    }
}

/// A matrix as the checkpoint stores it.
enum Stored<'a> {
    Float(TensorView<'a>),
    Quant(QuantView<'a>),
}

impl Stored<'_> {
    fn rows(&self) -> usize {
        match self {
            Stored::Float(v) => v.shape[0],
            Stored::Quant(q) => q.rows,
        }
    }
}

impl CheckpointSource<'_> {
    fn stored(&self, name: &str) -> Result<Stored<'_>> {
        let shape = self.shapes.get(name).map(Vec::as_slice).unwrap_or(&[]);
        Ok(match self.checkpoint.quantized(name, self.format, shape)? {
            Some(q) => Stored::Quant(q),
            None => Stored::Float(self.checkpoint.tensor(name)?),
        })
    }

    /// Bytes of `name` in the checkpoint, for the progress bar.
    fn stored_bytes(&self, name: &str) -> Result<u64> {
        Ok(match self.stored(name)? {
            Stored::Float(v) => v.data.len(),
            Stored::Quant(q) => q.size_bytes(),
        } as u64)
    }
}

impl Source for CheckpointSource<'_> {
    fn meta(&self, name: &str) -> Result<(Vec<usize>, DType)> {
        Ok(match self.stored(name)? {
            Stored::Float(v) => (v.shape.clone(), gpu_dtype(v.dtype)),
            Stored::Quant(q) => (vec![q.rows, q.cols], DType::Quant(q.format)),
        })
    }

    fn rows(&self, label: &str, names: &[&str], row0: usize, n: usize, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let stored: Vec<Stored<'_>> = names.iter().map(|n| self.stored(n)).collect::<Result<_>>()?;
        let (first, cols) = (names[0], *shape.last().unwrap_or(&0));
        let mismatch = |name: &str, found: String| Error::Tensor {
            name: name.to_string(),
            file: "checkpoint".into(),
            message: format!("is {found}, cannot be stacked with `{first}` as {dtype:?} [.., {cols}]"),
        };
        let counts: Vec<usize> = stored.iter().map(Stored::rows).collect();
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut quantized: Vec<u8> = Vec::new();
        let mut bytes = 0;
        for (i, lo, hi) in spans(&counts, row0, n) {
            match (&stored[i], dtype) {
                (Stored::Float(v), DType::Quant(format)) if v.shape[1] == cols => {
                    // Quantize at load: one row at a time, from the mmap into the packed layout.
                    let row_bytes = cols * v.dtype.size_bytes();
                    for r in lo..hi {
                        let row = v.dtype.to_f32(&v.data[r * row_bytes..(r + 1) * row_bytes]);
                        quantized.extend(quant::quantize(format, &row, 1, cols)?.packed());
                    }
                    bytes += (hi - lo) * row_bytes;
                }
                (Stored::Float(v), _) if gpu_dtype(v.dtype) == dtype && v.shape[1] == cols => {
                    let row_bytes = cols * v.dtype.size_bytes();
                    pieces.push(&v.data[lo * row_bytes..hi * row_bytes]);
                    bytes += (hi - lo) * row_bytes;
                }
                (Stored::Quant(q), DType::Quant(format)) if q.format == format && q.cols == cols => {
                    pieces.extend(q.packed_rows(lo, hi - lo));
                    bytes += (hi - lo) * (format.scale_bytes(cols) + format.code_bytes(cols));
                }
                (Stored::Float(v), _) => return Err(mismatch(names[i], format!("{:?} {:?}", v.dtype, v.shape))),
                (Stored::Quant(q), _) => return Err(mismatch(names[i], format!("{} [{}, {}]", q.format, q.rows, q.cols))),
            }
        }
        if !quantized.is_empty() {
            pieces.push(&quantized);
        }
        let tensor = self.ctx.tensor_from_parts(label, shape, dtype, &pieces)?;
        self.bar.inc(bytes as u64);
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

/// Rows `row0..row0 + n` of a row-wise concatenation of matrices of `counts` rows, as (matrix, first row, end
/// row) spans within each.
fn spans(counts: &[usize], row0: usize, n: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for (i, &rows) in counts.iter().enumerate() {
        let (lo, hi) = (row0.max(at), (row0 + n).min(at + rows));
        if lo < hi {
            out.push((i, lo - at, hi - at));
        }
        at += rows;
    }
    out
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

    fn rows(&self, label: &str, names: &[&str], _row0: usize, _n: usize, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let (first, _) = self.meta(names[0])?;
        let tensor = self.ctx.zeros(label, shape, dtype)?;
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
