//! The model's weights on the GPU, uploaded from a memory-mapped checkpoint.
//!
//! Matrices keep the checkpoint's dtype (f32, f16 or bf16: the kernels unpack it), so an upload is a copy from
//! the mmap into a mapped buffer with no conversion; a quantized checkpoint's `X.qweight` and `X.scales` are
//! copied into the packed rows the kernels read (weights::quant). With a [`Quantization`] asked at load, the
//! matrices it covers are quantized on the CPU row by row from the mmap as they are uploaded (never a copy of
//! the model in host memory). Vectors (norms, biases, A_log, D, the conv taps) become f32.
//! A matrix larger than one storage binding is split by rows ([`Matrix`]); q, k and v are fused into one matrix
//! so attention projects once; the experts of a layer are stacked into as few buffers as the binding limit allows.
//! A model that streams its experts (model::streaming) loads without them and keeps an [`ExpertFeed`]: the
//! checkpoint (its mmap shared) from which one expert at a time is written into a slot of the expert pool.

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Ffn, JambaConfig, Mixer};
use crate::gpu::{Context, DType, Graph, Tensor};
use crate::kernels::moe::ExpertStack;
use crate::kernels::matmul::{Normed, RmsNorm};
use crate::kernels::rms_norm::rms_norm;
use crate::kernels::{fill, matmul, IntoCols, Cols};
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
    pub fn matmul<'a>(&self, g: &mut Graph, x: impl IntoCols<'a>, y: impl IntoCols<'a>, accumulate: bool) -> Result<()> {
        let x = x.into_cols()?;
        for (part, columns) in self.parts_of("Matrix::matmul", y.into_cols()?)? {
            matmul::matmul(g, x, part, columns, accumulate)?;
        }
        Ok(())
    }

    /// y = rms_norm(x, norm) W^T (kernels::matmul::matmul_rms_norm): on decode steps each part's matvec
    /// normalises x as it reads it, the first keeping the normalised rows when `normed` says so; with more rows,
    /// one rms_norm into `normed`, then [`Matrix::matmul`] reading it.
    pub fn matmul_rms_norm<'a>(
        &self,
        g: &mut Graph,
        x: impl IntoCols<'a>,
        norm: RmsNorm<'_>,
        y: impl IntoCols<'a>,
        normed: Normed<'a>,
    ) -> Result<()> {
        let (x, y) = (x.into_cols()?, y.into_cols()?);
        if !matmul::is_matvec(g, x.rows) {
            rms_norm(g, x, norm.weight, norm.eps, normed.cols())?;
            return self.matmul(g, normed.cols(), y, false);
        }
        for (i, (part, columns)) in self.parts_of("Matrix::matmul_rms_norm", y)?.enumerate() {
            // One part storing the normalised rows is enough.
            let normed = if i == 0 { normed } else { Normed::Scratch(normed.cols()) };
            matmul::matmul_rms_norm(g, x, norm, part, columns, false, normed)?;
        }
        Ok(())
    }

    /// Each part, with the columns of y that it writes.
    fn parts_of<'a>(&'a self, op: &str, y: Cols<'a>) -> Result<impl Iterator<Item = (&'a Tensor, Cols<'a>)>> {
        if y.width != self.rows {
            return Err(Error::shape(op, format!("y has {} columns, the matrix {} rows", y.width, self.rows)));
        }
        let columns = move |row0: usize, part: &Tensor| Cols { offset: y.offset + row0, width: part.shape()[0], ..y };
        Ok(self.parts.iter().map(move |(row0, part)| (part, columns(*row0, part))))
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

    /// Bytes of GPU memory these weights take (a streamed model's expert pool is not part of them).
    pub fn size_bytes(&self) -> u64 {
        let head = self.lm_head.as_ref().map_or(0, Matrix::size_bytes);
        let layers: u64 = self.layers.iter().map(LayerWeights::size_bytes).sum();
        self.embed_tokens.size_bytes() + self.final_norm.size_bytes() + head + layers
    }

    /// Whether any weight matrix is quantized (the head, a mixer's projections, an FFN's or an expert's).
    pub fn any_quantized(&self) -> bool {
        let matrix = |m: &Matrix| m.parts.iter().any(|(_, t)| t.dtype().is_quantized());
        let layer = |l: &LayerWeights| {
            let mixer = match &l.mixer {
                MixerWeights::Attention(a) => matrix(&a.qkv) || matrix(&a.o_proj),
                MixerWeights::Mamba(m) => [&m.in_proj, &m.x_proj, &m.dt_proj, &m.out_proj].into_iter().any(matrix),
            };
            let ffn = match &l.ffn {
                FfnWeights::Dense { gate, up, down } => [gate, up, down].iter().any(|t| t.dtype().is_quantized()),
                FfnWeights::Moe { router, experts } => {
                    router.dtype().is_quantized() || experts.iter().any(|s| s.gate.dtype().is_quantized())
                }
            };
            mixer || ffn
        };
        matrix(self.lm_head()) || self.layers.iter().any(layer)
    }
}

pub struct LayerWeights {
    pub input_norm: Tensor,  // [H]
    pub pre_ff_norm: Tensor, // [H]
    pub mixer: MixerWeights,
    pub ffn: FfnWeights,
}

impl LayerWeights {
    /// Moves the layer's f32 vectors (norms, the conv's taps and bias, the scan's dt bias, A_log and D) into one
    /// buffer ([`Context::pack`]).
    fn pack_vectors(&mut self, ctx: &Context, label: &str) -> Result<()> {
        let mut slots: Vec<&mut Tensor> = vec![&mut self.input_norm, &mut self.pre_ff_norm];
        if let MixerWeights::Mamba(m) = &mut self.mixer {
            slots.extend([
                &mut m.conv_weight,
                &mut m.conv_bias,
                &mut m.dt_norm,
                &mut m.b_norm,
                &mut m.c_norm,
                &mut m.dt_bias,
                &mut m.a_log,
                &mut m.d,
            ]);
        }
        let packed = ctx.pack(label, &slots.iter().map(|t| &**t).collect::<Vec<_>>())?;
        for (slot, view) in slots.into_iter().zip(packed) {
            *slot = view;
        }
        Ok(())
    }

    pub fn size_bytes(&self) -> u64 {
        let mixer = match &self.mixer {
            MixerWeights::Attention(a) => a.qkv.size_bytes() + a.o_proj.size_bytes(),
            MixerWeights::Mamba(m) => {
                let matrices = [&m.in_proj, &m.x_proj, &m.dt_proj, &m.out_proj];
                let vectors = [&m.conv_weight, &m.conv_bias, &m.dt_norm, &m.b_norm, &m.c_norm, &m.dt_bias, &m.a_log, &m.d];
                matrices.iter().map(|w| w.size_bytes()).sum::<u64>() + vectors.iter().map(|v| v.size_bytes()).sum::<u64>()
            }
        };
        self.input_norm.size_bytes() + self.pre_ff_norm.size_bytes() + mixer + self.ffn.size_bytes()
    }
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
    /// `experts` is empty when the model streams its experts (see [`ExpertFeed`]).
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
/// loaded as it is). With `experts` false the MoE layers get no expert stacks: they stay in the checkpoint, for
/// [`ExpertFeed`] (returned either way) to upload later, whole ([`ExpertFeed::upload_all`]) or one at a time.
pub fn upload(
    ctx: &Context,
    cfg: &JambaConfig,
    checkpoint: &Checkpoint,
    quantize: Option<Quantization>,
    progress: bool,
    experts: bool,
) -> Result<(GpuWeights, ExpertFeed)> {
    checkpoint.validate(cfg)?;
    if let (Some(asked), Some(stored)) = (quantize, cfg.quantization) {
        return Err(Error::Input(format!(
            "the checkpoint is already quantized ({}); load it without asking for {}",
            stored.format, asked.format
        )));
    }
    if experts {
        let hint = "; with a GPU memory budget its experts stream instead";
        check_capacity(ctx, cfg, Some(checkpoint), DType::BF16, quantize, hint)?;
    }
    let stored = StoredWeights {
        checkpoint: checkpoint.clone(),
        format: cfg.quantization.map(|q| q.format),
        shapes: weights::expected_tensors(cfg).into_iter().collect(),
    };
    let total: u64 = stored.shapes.keys().map(|name| stored.stored_bytes(name)).sum::<Result<u64>>()?;
    let bar = if progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let src = CheckpointSource { ctx, stored, bar };
    let weights = build(ctx, cfg, &src, quantize, experts)?;
    src.bar.finish_and_clear();
    let limit = binding_limit(ctx);
    let layout = Plan { src: &src, limit, quant: quantize }.expert_layout(&moe_prefix(cfg).unwrap_or_default())?;
    Ok((weights, ExpertFeed { stored: src.stored, quant: quantize, layout, limit }))
}

/// The feed-forward prefix of the first MoE layer, if any.
fn moe_prefix(cfg: &JambaConfig) -> Option<String> {
    cfg.layers().iter().position(|l| l.ffn == Ffn::Moe).map(|i| format!("model.layers.{i}.feed_forward"))
}

fn binding_limit(ctx: &Context) -> usize {
    ctx.limits().max_storage_buffer_binding_size.min(ctx.limits().max_buffer_size) as usize
}

/// Weights of the config's shapes filled with pseudo-random values on the GPU (no host memory): for benchmarks
/// of full-size models without a download. Matrices are `dtype` (a float type), or quantized where `quantize`
/// covers them (random codes); values are scaled like trained ones.
pub fn random(ctx: &Context, cfg: &JambaConfig, dtype: DType, quantize: Option<Quantization>, seed: u32) -> Result<GpuWeights> {
    cfg.validate()?;
    if dtype.is_quantized() || dtype == DType::U32 {
        return Err(Error::Input(format!("random weights are stored as f32, f16 or bf16 (then quantized), not {dtype:?}")));
    }
    check_capacity(ctx, cfg, None, dtype, quantize, "")?;
    let shapes = weights::expected_tensors(cfg).into_iter().collect();
    let weights = build(ctx, cfg, &RandomSource { ctx, shapes, dtype, seed }, quantize, true)?;
    ctx.wait("filling random weights")?;
    Ok(weights)
}

/// Fails, before anything is allocated, when the weights (stored as `checkpoint` holds them, or as `stored`, and
/// quantized by `quantize`) need more memory than the adapter has ([`Context::memory_capacity`]): a GPU would
/// fail an allocation partway through the load, a CPU adapter would take host memory until the system ran out.
/// `hint` ends the message: what the caller could do instead.
fn check_capacity(
    ctx: &Context,
    cfg: &JambaConfig,
    checkpoint: Option<&Checkpoint>,
    stored: DType,
    quantize: Option<Quantization>,
    hint: &'static str,
) -> Result<()> {
    let Some(capacity) = ctx.memory_capacity() else { return Ok(()) };
    let need = super::footprint::footprint(cfg, checkpoint, stored, quantize, 0)?.weight_bytes();
    if need <= capacity.bytes {
        return Ok(());
    }
    Err(Error::OutOfMemory { need, have: capacity.bytes, memory: capacity.what, adapter: ctx.info().name.clone(), hint })
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

/// The model's structure, from whichever source; the MoE layers' experts only when `experts` is true.
fn build(
    ctx: &Context,
    cfg: &JambaConfig,
    src: &dyn Source,
    quant: Option<Quantization>,
    experts: bool,
) -> Result<GpuWeights> {
    let limit = binding_limit(ctx);
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
                experts: if experts { plan.experts(&f, cfg.num_experts)? } else { Vec::new() },
            },
        };
        let mut layer = LayerWeights {
            input_norm: vector(&format!("{p}.input_layernorm.weight"))?,
            pre_ff_norm: vector(&format!("{p}.pre_ff_layernorm.weight"))?,
            mixer,
            ffn,
        };
        layer.pack_vectors(ctx, &format!("{p} vectors"))?;
        layers.push(layer);
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

    /// The storage type and sizes of the experts under `prefix` (one MoE layer's feed_forward): gate, up and down
    /// share one storage type, quantized only when the format fits both H and I.
    fn expert_layout(&self, prefix: &str) -> Result<ExpertLayout> {
        if prefix.is_empty() {
            return Ok(ExpertLayout { dtype: DType::F32, inter: 0, hidden: 0 });
        }
        let name = |which: &str| format!("{prefix}.experts.0.{which}_proj.weight");
        let (shape, stored) = self.src.meta(&name("gate"))?;
        let (inter, hidden) = (shape[0], shape[1]);
        let dtype = match (self.storage(&name("gate"), stored, hidden), self.storage(&name("down"), stored, inter)) {
            (a, b) if a == b => a,
            _ => stored,
        };
        Ok(ExpertLayout { dtype, inter, hidden })
    }

    /// The experts of one MoE layer, stacked [count, out, in] into as few buffers as the binding limit allows.
    fn experts(&self, prefix: &str, n_experts: usize) -> Result<Vec<ExpertStack>> {
        let src = self.src;
        let name = |e: usize, which: &str| format!("{prefix}.experts.{e}.{which}_proj.weight");
        let ExpertLayout { dtype, inter, hidden } = self.expert_layout(prefix)?;
        let per_stack = experts_per_stack(self.limit, dtype, inter, hidden, n_experts);
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

/// How a layer's experts are stored on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertLayout {
    pub dtype: DType,
    /// I: gate and up are [I, H], down [H, I].
    pub inter: usize,
    pub hidden: usize,
}

impl ExpertLayout {
    /// Bytes of one expert's gate, up and down.
    pub fn expert_bytes(&self) -> u64 {
        let (gate_or_up, down) = ([self.inter, self.hidden], [self.hidden, self.inter]);
        (2 * self.dtype.storage_bytes(&gate_or_up) + self.dtype.storage_bytes(&down)) as u64
    }
}

/// Experts of `dtype` that fit one binding (at least one, at most `n_experts`).
fn experts_per_stack(limit: usize, dtype: DType, inter: usize, hidden: usize, n_experts: usize) -> usize {
    let expert_bytes = dtype.storage_bytes(&[inter, hidden]).max(dtype.storage_bytes(&[hidden, inter]));
    (limit / expert_bytes.max(1)).clamp(1, n_experts.max(1))
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

/// A checkpoint's tensors as the loader reads them.
#[derive(Clone)]
struct StoredWeights {
    checkpoint: Checkpoint,
    /// The checkpoint's own quantization (config.json), if it was written quantized.
    format: Option<QuantFormat>,
    /// Every tensor the config implies, with its shape.
    shapes: std::collections::HashMap<String, Vec<usize>>,
}

struct CheckpointSource<'a> {
    ctx: &'a Context,
    stored: StoredWeights,
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

/// Rows of matrices as bytes in a GPU storage type: slices of the mmap, then whatever was quantized on the way.
struct Gathered<'a> {
    pieces: Vec<&'a [u8]>,
    quantized: Vec<u8>,
    /// Bytes read from the checkpoint.
    read: usize,
}

impl Gathered<'_> {
    fn parts(&self) -> Vec<&[u8]> {
        let mut parts = self.pieces.clone();
        if !self.quantized.is_empty() {
            parts.push(&self.quantized);
        }
        parts
    }
}

impl StoredWeights {
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

    /// Rows `row0..row0 + n` of the row-wise concatenation of `names`, `cols` wide, as `dtype` bytes: copied from
    /// the mmap as they are, or quantized row by row on the way (never a copy of the whole in host memory).
    fn gather(&self, names: &[&str], row0: usize, n: usize, cols: usize, dtype: DType) -> Result<Gathered<'_>> {
        let stored: Vec<Stored<'_>> = names.iter().map(|n| self.stored(n)).collect::<Result<_>>()?;
        let first = names[0];
        let mismatch = |name: &str, found: String| Error::Tensor {
            name: name.to_string(),
            file: "checkpoint".into(),
            message: format!("is {found}, cannot be stacked with `{first}` as {dtype:?} [.., {cols}]"),
        };
        let counts: Vec<usize> = stored.iter().map(Stored::rows).collect();
        let mut out = Gathered { pieces: Vec::new(), quantized: Vec::new(), read: 0 };
        for (i, lo, hi) in spans(&counts, row0, n) {
            match (&stored[i], dtype) {
                (Stored::Float(v), DType::Quant(format)) if v.shape[1] == cols => {
                    // Quantize at load: one row at a time, from the mmap into the packed layout.
                    let row_bytes = cols * v.dtype.size_bytes();
                    for r in lo..hi {
                        let row = v.dtype.to_f32(&v.data[r * row_bytes..(r + 1) * row_bytes]);
                        out.quantized.extend(quant::quantize(format, &row, 1, cols)?.packed());
                    }
                    out.read += (hi - lo) * row_bytes;
                }
                (Stored::Float(v), _) if gpu_dtype(v.dtype) == dtype && v.shape[1] == cols => {
                    let row_bytes = cols * v.dtype.size_bytes();
                    out.pieces.push(&v.data[lo * row_bytes..hi * row_bytes]);
                    out.read += (hi - lo) * row_bytes;
                }
                (Stored::Quant(q), DType::Quant(format)) if q.format == format && q.cols == cols => {
                    out.pieces.extend(q.packed_rows(lo, hi - lo));
                    out.read += (hi - lo) * (format.scale_bytes(cols) + format.code_bytes(cols));
                }
                (Stored::Float(v), _) => return Err(mismatch(names[i], format!("{:?} {:?}", v.dtype, v.shape))),
                (Stored::Quant(q), _) => return Err(mismatch(names[i], format!("{} [{}, {}]", q.format, q.rows, q.cols))),
            }
        }
        Ok(out)
    }
}

impl Source for CheckpointSource<'_> {
    fn meta(&self, name: &str) -> Result<(Vec<usize>, DType)> {
        Ok(match self.stored.stored(name)? {
            Stored::Float(v) => (v.shape.clone(), gpu_dtype(v.dtype)),
            Stored::Quant(q) => (vec![q.rows, q.cols], DType::Quant(q.format)),
        })
    }

    fn rows(&self, label: &str, names: &[&str], row0: usize, n: usize, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let gathered = self.stored.gather(names, row0, n, *shape.last().unwrap_or(&0), dtype)?;
        let tensor = self.ctx.tensor_from_parts(label, shape, dtype, &gathered.parts())?;
        self.bar.inc(gathered.read as u64);
        Ok(tensor)
    }

    fn vector(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let view = self.stored.checkpoint.tensor(name)?;
        if view.numel() != shape.iter().product::<usize>() {
            return Err(view.error(format!("has {} elements, expected {shape:?}", view.numel())));
        }
        self.bar.inc(view.data.len() as u64);
        self.ctx.upload_f32(name, shape, &view.to_f32())
    }
}

/// A model's experts left in its checkpoint (memory-mapped): uploaded whole, or one at a time into slots of an
/// expert pool as a streamed model's router picks them, in the storage type the loader would give them.
pub struct ExpertFeed {
    stored: StoredWeights,
    quant: Option<Quantization>,
    /// The storage of every MoE layer's experts (checked alike when streaming starts).
    pub layout: ExpertLayout,
    limit: usize,
}

impl ExpertFeed {
    /// Uploads the experts of every MoE layer into `weights` (the fully resident model).
    pub fn upload_all(&self, ctx: &Context, cfg: &JambaConfig, weights: &mut GpuWeights) -> Result<()> {
        let src = CheckpointSource { ctx, stored: self.stored.clone(), bar: ProgressBar::hidden() };
        let plan = Plan { src: &src, limit: self.limit, quant: self.quant };
        for (i, layer) in weights.layers.iter_mut().enumerate() {
            if let FfnWeights::Moe { experts, .. } = &mut layer.ffn {
                *experts = plan.experts(&format!("model.layers.{i}.feed_forward"), cfg.num_experts)?;
            }
        }
        Ok(())
    }

    /// Checks that every MoE layer's experts share this feed's layout, and that an expert's matrices are whole
    /// words (so it can be written into a slot of a pool).
    pub fn check_streamable(&self, ctx: &Context, cfg: &JambaConfig) -> Result<()> {
        let src = CheckpointSource { ctx, stored: self.stored.clone(), bar: ProgressBar::hidden() };
        let plan = Plan { src: &src, limit: self.limit, quant: self.quant };
        for (i, _) in cfg.layers().iter().enumerate().filter(|(_, kind)| kind.ffn == Ffn::Moe) {
            let found = plan.expert_layout(&format!("model.layers.{i}.feed_forward"))?;
            if found != self.layout {
                return Err(Error::Input(format!(
                    "layer {i}'s experts are {found:?}, the first MoE layer's {:?}: streaming needs them alike",
                    self.layout
                )));
            }
        }
        let l = self.layout;
        if l.dtype.storage_bytes(&[l.inter, l.hidden]) % 4 != 0 {
            return Err(Error::Input(format!(
                "an expert's [{}, {}] {:?} matrix is not a whole number of 4-byte words: it cannot be streamed",
                l.inter, l.hidden, l.dtype
            )));
        }
        Ok(())
    }

    /// Stacks of `slots` experts of this layout (zeros), split under the binding limit: an expert pool.
    pub fn pool(&self, ctx: &Context, slots: usize) -> Result<Vec<ExpertStack>> {
        let ExpertLayout { dtype, inter, hidden } = self.layout;
        let per_stack = experts_per_stack(self.limit, dtype, inter, hidden, slots);
        let mut stacks = Vec::new();
        for first in (0..slots).step_by(per_stack) {
            let count = per_stack.min(slots - first);
            let label = |which: &str| format!("expert pool[{first}..{}].{which}_proj", first + count);
            stacks.push(ExpertStack {
                first,
                count,
                gate: ctx.zeros(&label("gate"), &[count, inter, hidden], dtype)?,
                up: ctx.zeros(&label("up"), &[count, inter, hidden], dtype)?,
                down: ctx.zeros(&label("down"), &[count, hidden, inter], dtype)?,
            });
        }
        Ok(stacks)
    }

    /// Queues expert `expert` of layer `layer` into slot `slot` of `pool` (from [`ExpertFeed::pool`]): read from the
    /// mmap (quantized on the way when asked at load) straight into wgpu's staging memory; the GPU copy runs
    /// before the next submission. Returns the bytes uploaded.
    pub fn upload(&self, ctx: &Context, pool: &[ExpertStack], slot: usize, layer: usize, expert: usize) -> Result<u64> {
        let stack = pool
            .iter()
            .find(|s| (s.first..s.first + s.count).contains(&slot))
            .ok_or_else(|| Error::shape("expert upload", format!("slot {slot} is not in the pool")))?;
        let ExpertLayout { dtype, inter, hidden } = self.layout;
        let mut uploaded = 0;
        let matrices =
            [("gate", &stack.gate, inter, hidden), ("up", &stack.up, inter, hidden), ("down", &stack.down, hidden, inter)];
        for (which, tensor, rows, cols) in matrices {
            let name = format!("model.layers.{layer}.feed_forward.experts.{expert}.{which}_proj.weight");
            let gathered = self.stored.gather(&[&name], 0, rows, cols, dtype)?;
            let bytes = dtype.storage_bytes(&[rows, cols]) as u64;
            let offset = (slot - stack.first) as u64 * bytes;
            let mut view = wgpu::BufferSize::new(bytes)
                .and_then(|size| ctx.queue.write_buffer_with(tensor.buffer(), offset, size))
                .ok_or_else(|| Error::Gpu {
                    context: format!("uploading `{name}` into expert pool slot {slot}"),
                    message: format!("cannot write {bytes} bytes at {offset} of `{}`", tensor.label()),
                })?;
            let mut at = 0;
            for part in gathered.parts() {
                view.slice(at..at + part.len()).copy_from_slice(part);
                at += part.len();
            }
            if at as u64 != bytes {
                let message = format!("{bytes} bytes expected, {at} gathered");
                return Err(Error::shape(format!("upload of `{name}`"), message));
            }
            uploaded += bytes;
        }
        ctx.count_upload(uploaded);
        Ok(uploaded)
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
