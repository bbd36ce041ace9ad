//! Attention with a KV cache: appending a chunk's keys and values, causal GQA for prefill chunks, and split-k
//! attention for single-token decode. Jamba has no positional encoding, so nothing rotates q or k.
//!
//! Five shader files, because each declares one binding list for all its entry points (the prefill shaders share
//! attention_common.wgsl, the decode ones attention_decode_common.wgsl: their parameters):
//! - kv_cache.wgsl: `append_kv` copies the new rows of K and V into the caches;
//! - attention.wgsl: `prefill`, flash style (online softmax over key tiles, no score matrix in memory);
//! - attention_cpu.wgsl: `prefill_lanes`, the same for CPU adapters ([`Prefill::Blocked`]): a subgroup per query
//!   and heads of it sharing a kv head, its lanes 8 keys at a time (attention_lanes.wgsl, shared with decode);
//! - attention_decode.wgsl: `decode_split` (each workgroup one head and one range of keys, writing a partial
//!   max / sum / weighted value) and `decode_combine` (merges the partials);
//! - attention_decode_cpu.wgsl: `decode_split_keys`, the partials on CPU adapters as attention_cpu.wgsl goes.
//!
//! A batch's decode step ([`append_kv_batch`], [`decode_batch`]) takes one token of each of B sequences, whose
//! caches are one tensor `[B, max_len, kv_dim]` per layer, each at its own position: a u32 `[B]` buffer on the GPU,
//! written before each step, so the step's plan replays unchanged.
//!
//! Reference: `reference::attention::attention`.

use crate::gpu::{read, read_write, Binding, Context, DType, Graph, Kernel, OpId, Plan, Prefill, Tensor};
use crate::kernels::{dims2, expect_dtype, u32_of, Chosen, Cols, IntoCols};
use crate::{params, shader, Error, Result};

shader!(KV_CACHE_SHADER, "kv_cache");
shader!(ATTENTION_SHADER, "attention", common "attention_common");
shader!(ATTENTION_CPU_SHADER, "attention_cpu", common "attention_common", "attention_lanes");
shader!(ATTENTION_DECODE_SHADER, "attention_decode", common "attention_decode_common");
shader!(ATTENTION_DECODE_CPU_SHADER, "attention_decode_cpu", common "attention_decode_common", "attention_lanes");

/// The largest head size the kernels hold in registers (`MAX_HEAD_DIM` in the shaders).
pub const MAX_HEAD_DIM: usize = 256;

/// Head sizes the shader tests compile (any size up to [`MAX_HEAD_DIM`] gets its own pipeline when used).
const TESTED_HEAD_DIMS: [usize; 6] = [8, 16, 24, 64, 128, 256];

/// The decode split count grows with the cache length, one split per this many rows, up to [`MAX_SPLITS`]. A
/// split's workgroup walks its keys one tile of WG at a time, each tile a loop of HEAD_DIM dependent loads per
/// invocation, so a split's latency grows with its keys. One tile per split gives a GPU four times the
/// workgroups of 256-row splits, each a quarter of the work (1.5-Mini at a context of 1,152: 576 instead of 160,
/// for an H200's 132 compute units, where attention took 1.37 ms of each decode step with 256-row splits; not yet
/// measured with 64). On lavapipe the two take the same time (`cargo bench --bench attention`).
const ROWS_PER_SPLIT: usize = 64;
const MAX_SPLITS: usize = 256;
/// Invocations per workgroup (`WG` in prelude.wgsl); decode splits cover whole tiles of this many keys.
const WG: usize = 64;

fn head_dim_variants() -> Vec<Vec<(&'static str, f64)>> {
    TESTED_HEAD_DIMS.iter().map(|&d| vec![("HEAD_DIM", d as f64)]).collect()
}

fn prefill_variants() -> Vec<Vec<(&'static str, f64)>> {
    let unrolled = |variant: &Vec<_>, on: f64| [variant.clone(), vec![("HEAD_LOOPS_UNROLLED", on)]].concat();
    head_dim_variants().iter().flat_map(|v| [unrolled(v, 1.0), unrolled(v, 0.0)]).collect()
}

params! {
    pub struct AppendKvParams {
        pub rows: u32,
        pub kv_dim: u32,
        pub pos: u32,
        pub max_len: u32,
        pub k_stride: u32,
        pub k_offset: u32,
        pub v_stride: u32,
        pub v_offset: u32,
    }
}

params! {
    pub struct PrefillParams {
        pub t: u32,
        pub kv_len: u32,
        pub n_heads: u32,
        pub n_kv_heads: u32,
        pub q_stride: u32,
        pub q_offset: u32,
        pub out_stride: u32,
        pub scale: f32,
        pub head_dim: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

params! {
    pub struct DecodeParams {
        pub kv_len: u32,
        pub n_heads: u32,
        pub n_kv_heads: u32,
        pub q_offset: u32,
        pub n_splits: u32,
        pub keys_per_split: u32,
        pub scale: f32,
        pub rows: u32,
        pub q_stride: u32,
        pub max_len: u32,
        /// HEAD_DIM, read by the `_lanes` split kernels as their loops' bound (see attention_decode.wgsl).
        pub head_dim: u32,
        pub _pad1: u32,
    }
}

const APPEND_BINDINGS: &[Binding] =
    &[read("k_new"), read("v_new"), read_write("k_cache"), read_write("v_cache"), read("positions")];

pub static APPEND_KV: Kernel = Kernel {
    shader: &KV_CACHE_SHADER,
    entry: "append_kv",
    params: &<AppendKvParams as crate::gpu::Params>::LAYOUT,
    bindings: APPEND_BINDINGS,
    variants: super::no_variants,
};

pub static APPEND_KV_BATCH: Kernel = Kernel {
    shader: &KV_CACHE_SHADER,
    entry: "append_kv_batch",
    params: &<AppendKvParams as crate::gpu::Params>::LAYOUT,
    bindings: APPEND_BINDINGS,
    variants: super::no_variants,
};

pub static PREFILL: Kernel = Kernel {
    shader: &ATTENTION_SHADER,
    entry: "prefill",
    params: &<PrefillParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read("q"), read("k_cache"), read("v_cache"), read_write("out")],
    variants: prefill_variants,
};

/// [`PREFILL`]'s values on CPU adapters with 8-wide subgroups ([`Prefill::Blocked`]), for heads of up to
/// [`LANES_MAX_HEAD_DIM`] whose q columns allow its vec4 bindings (`lanes_heads`).
pub static PREFILL_LANES: Kernel = Kernel {
    shader: &ATTENTION_CPU_SHADER,
    entry: "prefill_lanes",
    params: &<PrefillParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read("q"), read("k_cache"), read("v_cache"), read_write("out")],
    variants: lanes_variants,
};

/// The largest head [`PREFILL_LANES`] takes. Its lanes hold a head's q and its share of the output, 2 x 128 values
/// at head_dim 128, which took longer than the tiled kernel there (lavapipe, `cargo bench --bench attention`,
/// 8 heads of 128, T = 1024: 917 against 525 ms; at 64 it takes 320 against 457, at 32 98 against 320).
pub const LANES_MAX_HEAD_DIM: usize = 64;
/// The values of q (and as many of the output) a lane of [`PREFILL_LANES`] holds for the heads it takes together
/// (`MAX_BLOCK_QUADS` in attention_lanes.wgsl): anchor-35m's 256-token chunk took 13.7 ms at 2 heads of 32, 18.4 at
/// 4; the default model's 4.2 at 3 heads of 32, 7.9 at 1.
const LANES_BLOCK_FLOATS: usize = 96;
/// The most heads it takes together (`MAX_HEADS` in attention_lanes.wgsl).
const LANES_MAX_HEADS: usize = 8;

/// [`PREFILL_LANES`]'s: each head size it takes, with one head at a time and with as many as fit.
fn lanes_variants() -> Vec<Vec<(&'static str, f64)>> {
    let sizes = TESTED_HEAD_DIMS.iter().filter(|&&d| d <= LANES_MAX_HEAD_DIM);
    let most = |d: usize| (LANES_BLOCK_FLOATS / d).min(LANES_MAX_HEADS);
    sizes.flat_map(|&d| [1, most(d)].map(|h| vec![("HEAD_DIM", d as f64), ("HEADS", h as f64)])).collect()
}

const DECODE_BINDINGS: &[Binding] =
    &[read("q"), read("k_cache"), read("v_cache"), read_write("partials"), read_write("out"), read("positions")];

pub static DECODE_SPLIT: Kernel = Kernel {
    shader: &ATTENTION_DECODE_SHADER,
    entry: "decode_split",
    params: &<DecodeParams as crate::gpu::Params>::LAYOUT,
    bindings: DECODE_BINDINGS,
    variants: head_dim_variants,
};

pub static DECODE_SPLIT_BATCH: Kernel = Kernel {
    shader: &ATTENTION_DECODE_SHADER,
    entry: "decode_split_batch",
    params: &<DecodeParams as crate::gpu::Params>::LAYOUT,
    bindings: DECODE_BINDINGS,
    variants: head_dim_variants,
};

/// [`DECODE_SPLIT`] with one invocation per split ([`Tuning::decode_attention_lanes`]).
///
/// [`Tuning::decode_attention_lanes`]: crate::gpu::Tuning::decode_attention_lanes
pub static DECODE_SPLIT_LANES: Kernel = Kernel {
    shader: &ATTENTION_DECODE_SHADER,
    entry: "decode_split_lanes",
    params: &<DecodeParams as crate::gpu::Params>::LAYOUT,
    bindings: DECODE_BINDINGS,
    variants: head_dim_variants,
};

/// [`DECODE_SPLIT_BATCH`] with one invocation per split.
pub static DECODE_SPLIT_BATCH_LANES: Kernel = Kernel {
    shader: &ATTENTION_DECODE_SHADER,
    entry: "decode_split_batch_lanes",
    params: &<DecodeParams as crate::gpu::Params>::LAYOUT,
    bindings: DECODE_BINDINGS,
    variants: head_dim_variants,
};

/// [`DECODE_SPLIT`]'s partials on CPU adapters with 8-wide subgroups, a subgroup per split of heads sharing a kv
/// head, its lanes 8 keys at a time ([`Tuning::decode_attention_lanes`], heads [`PREFILL_LANES`] takes).
///
/// [`Tuning::decode_attention_lanes`]: crate::gpu::Tuning::decode_attention_lanes
pub static DECODE_SPLIT_KEYS: Kernel = Kernel {
    shader: &ATTENTION_DECODE_CPU_SHADER,
    entry: "decode_split_keys",
    params: &<DecodeParams as crate::gpu::Params>::LAYOUT,
    bindings: DECODE_BINDINGS,
    variants: lanes_variants,
};

/// [`DECODE_SPLIT_BATCH`]'s partials as [`DECODE_SPLIT_KEYS`] computes them.
pub static DECODE_SPLIT_BATCH_KEYS: Kernel = Kernel {
    shader: &ATTENTION_DECODE_CPU_SHADER,
    entry: "decode_split_batch_keys",
    params: &<DecodeParams as crate::gpu::Params>::LAYOUT,
    bindings: DECODE_BINDINGS,
    variants: lanes_variants,
};

pub static DECODE_COMBINE: Kernel = Kernel {
    shader: &ATTENTION_DECODE_SHADER,
    entry: "decode_combine",
    params: &<DecodeParams as crate::gpu::Params>::LAYOUT,
    bindings: DECODE_BINDINGS,
    variants: head_dim_variants,
};

/// The head layout of an attention layer: query heads, key/value heads (GQA; 1 is multi-query), head size.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Fails unless kv heads divide heads and 0 < head_dim <= [`MAX_HEAD_DIM`].
    pub fn validate(&self) -> Result<()> {
        let Self { n_heads, n_kv_heads, head_dim } = *self;
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::shape("attention", format!("{n_kv_heads} kv heads do not divide {n_heads} heads")));
        }
        if head_dim == 0 || head_dim > MAX_HEAD_DIM {
            return Err(Error::shape("attention", format!("head_dim {head_dim} is not in 1..={MAX_HEAD_DIM}")));
        }
        Ok(())
    }

    /// Columns of q and of the output: n_heads * head_dim.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Columns of k, v and of the caches: n_kv_heads * head_dim.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    fn head_dim_constant(&self) -> [(&'static str, f64); 1] {
        [("HEAD_DIM", self.head_dim as f64)]
    }
}

/// The rows of a KV cache pair, after checking both are f32 [max_len, kv_dim] of the same shape.
fn cache_rows(op: &str, k_cache: &Tensor, v_cache: &Tensor, kv_dim: usize) -> Result<usize> {
    for cache in [k_cache, v_cache] {
        expect_dtype(op, cache, &[DType::F32])?;
        let [_, cols] = dims2(cache)?;
        if cols != kv_dim {
            return Err(Error::shape(
                op,
                format!("cache `{}` has {cols} columns, expected kv_dim {kv_dim}", cache.label()),
            ));
        }
    }
    if k_cache.shape() != v_cache.shape() {
        return Err(Error::shape(
            op,
            format!("k cache {:?} and v cache {:?} differ", k_cache.shape(), v_cache.shape()),
        ));
    }
    Ok(k_cache.shape()[0])
}

/// Fails unless `x` is f32 with `width` columns.
fn expect_cols(op: &str, what: &str, x: &Cols, width: usize) -> Result<()> {
    expect_dtype(op, x.tensor, &[DType::F32])?;
    if x.width != width {
        return Err(Error::shape(
            op,
            format!("{what} `{}` has {} columns, expected {width}", x.tensor.label(), x.width),
        ));
    }
    Ok(())
}

/// Fails unless `out` is an f32 [>= rows, q_dim] matrix.
fn expect_out(op: &str, out: &Tensor, rows: usize, q_dim: usize) -> Result<()> {
    expect_dtype(op, out, &[DType::F32])?;
    let [out_rows, cols] = dims2(out)?;
    if out_rows < rows || cols != q_dim {
        return Err(Error::shape(
            op,
            format!("out `{}` is [{out_rows}, {cols}], expected [>= {rows}, {q_dim}]", out.label()),
        ));
    }
    Ok(())
}

/// Copies k_new and v_new ([T, kv_dim] each; they may be column slices of one fused qkv tensor) into rows
/// pos..pos + T of k_cache and v_cache ([max_len, kv_dim] f32).
pub fn append_kv<'a>(
    g: &mut Graph,
    k_new: impl IntoCols<'a>,
    v_new: impl IntoCols<'a>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    pos: usize,
) -> Result<OpId> {
    let (k_new, v_new) = (k_new.into_cols()?, v_new.into_cols()?);
    let op = "append_kv";
    let [_, kv_dim] = dims2(k_cache)?;
    let max_len = cache_rows(op, k_cache, v_cache, kv_dim)?;
    expect_cols(op, "k_new", &k_new, kv_dim)?;
    expect_cols(op, "v_new", &v_new, kv_dim)?;
    let t = k_new.rows;
    if v_new.rows != t {
        return Err(Error::shape(op, format!("k_new has {t} rows but v_new has {}", v_new.rows)));
    }
    if pos + t > max_len {
        return Err(Error::shape(
            op,
            format!("rows {pos}..{} do not fit the cache `{}` of {max_len} rows", pos + t, k_cache.label()),
        ));
    }
    let params = AppendKvParams {
        rows: u32_of(op, "rows", t)?,
        kv_dim: u32_of(op, "kv_dim", kv_dim)?,
        pos: u32_of(op, "pos", pos)?,
        max_len: u32_of(op, "max_len", max_len)?,
        k_stride: u32_of(op, "k_new stride", k_new.stride())?,
        k_offset: u32_of(op, "k_new offset", k_new.offset)?,
        v_stride: u32_of(op, "v_new stride", v_new.stride())?,
        v_offset: u32_of(op, "v_new offset", v_new.offset)?,
    };
    let grid = g.linear_grid((t * kv_dim).div_ceil(WG) as u64)?;
    // append_kv reads no positions: k_new stands in for them.
    g.dispatch(&APPEND_KV, &[], &params, &[k_new.tensor, v_new.tensor, k_cache, v_cache, k_new.tensor], grid)
}

/// Moves a recorded [`append_kv`] to cache row `pos` before the plan is replayed (decode: pos = tokens so far).
/// Rows that would land at or past the cache's end are dropped by the shader, never written out of bounds;
/// `pos` beyond u32 saturates, which drops every row.
pub fn set_append_pos(plan: &mut Plan, op: OpId, pos: usize) {
    plan.params_mut::<AppendKvParams>(op).pos = u32::try_from(pos).unwrap_or(u32::MAX);
}

/// Causal GQA of a prefill chunk: q [T, n_heads * head_dim] (columns, possibly of a fused qkv tensor) over cache rows
/// 0..kv_len, where kv_len counts this chunk's T rows, already appended. Writes rows 0..T of out [>= T, q_dim].
#[allow(clippy::too_many_arguments)]
pub fn prefill<'a>(
    g: &mut Graph,
    q: impl IntoCols<'a>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    kv_len: usize,
    shape: AttentionShape,
    out: &Tensor,
) -> Result<OpId> {
    let q = q.into_cols()?;
    let op = "attention prefill";
    shape.validate()?;
    let max_len = cache_rows(op, k_cache, v_cache, shape.kv_dim())?;
    expect_cols(op, "q", &q, shape.q_dim())?;
    let t = q.rows;
    if t == 0 || t > kv_len || kv_len > max_len {
        return Err(Error::shape(
            op,
            format!("{t} queries over kv_len {kv_len} need 1 <= T <= kv_len <= cache rows {max_len}"),
        ));
    }
    expect_out(op, out, t, shape.q_dim())?;
    let params = PrefillParams {
        t: u32_of(op, "T", t)?,
        kv_len: u32_of(op, "kv_len", kv_len)?,
        n_heads: u32_of(op, "n_heads", shape.n_heads)?,
        n_kv_heads: u32_of(op, "n_kv_heads", shape.n_kv_heads)?,
        q_stride: u32_of(op, "q stride", q.stride())?,
        q_offset: u32_of(op, "q offset", q.offset)?,
        out_stride: u32_of(op, "out stride", shape.q_dim())?,
        scale: shape.scale(),
        head_dim: u32_of(op, "head_dim", shape.head_dim)?,
        ..Default::default()
    };
    let [head_dim] = shape.head_dim_constant();
    let tensors = [q.tensor, k_cache, v_cache, out];
    if let Some(heads) = lanes_heads(g, &q, shape) {
        let grid = g.linear_grid((t * shape.n_heads / heads).div_ceil(WG / 8) as u64)?;
        return g.dispatch(&PREFILL_LANES, &[head_dim, ("HEADS", heads as f64)], &params, &tensors, grid);
    }
    let group = shape.n_heads / shape.n_kv_heads;
    let grid = g.linear_grid((shape.n_kv_heads * (t * group).div_ceil(WG)) as u64)?;
    let constants = [head_dim, ("HEAD_LOOPS_UNROLLED", g.tuning.head_loops_unrolled as u32 as f64)];
    g.dispatch(&PREFILL, &constants, &params, &tensors, grid)
}

/// The heads of a query each subgroup of [`PREFILL_LANES`] (and of [`DECODE_SPLIT_KEYS`]) takes, where it runs: CPU
/// adapters with 8-wide subgroups (those whose tuning's prefill kernel is [`Prefill::Blocked`]), heads of at most
/// [`LANES_MAX_HEAD_DIM`] (whole quads), q's rows starting on quads. The most heads of a kv group that hold
/// [`LANES_BLOCK_FLOATS`] values of q.
fn lanes_heads(g: &Graph, q: &Cols, shape: AttentionShape) -> Option<usize> {
    let d = shape.head_dim;
    let fits = d <= LANES_MAX_HEAD_DIM && d % 4 == 0 && q.stride() % 4 == 0 && q.offset % 4 == 0;
    if g.tuning.prefill != Prefill::Blocked || !fits {
        return None;
    }
    let group = shape.n_heads / shape.n_kv_heads;
    (1..=group.min(LANES_MAX_HEADS)).rev().find(|&h| group % h == 0 && h * d <= LANES_BLOCK_FLOATS)
}

/// The partial results of split-k decode, allocated once for the longest context: per row (sequence of a batch),
/// head and split, the split's maximum score, its sum of exponentials and its unnormalised output.
pub struct DecodeScratch {
    /// [rows * n_heads * n_splits, head_dim + 2]: (m, l, o[head_dim]) per row.
    partials: Tensor,
    shape: AttentionShape,
    n_splits: usize,
    rows: usize,
}

impl DecodeScratch {
    /// Scratch for one sequence's caches of up to `max_len` rows. The split count depends on `max_len` only, so
    /// plans built with this scratch replay for any kv_len up to it.
    pub fn new(ctx: &Context, shape: AttentionShape, max_len: usize) -> Result<Self> {
        Self::batched(ctx, shape, max_len, 1)
    }

    /// Scratch for the decode step of up to `rows` sequences (a batch), each cache of up to `max_len` rows.
    pub fn batched(ctx: &Context, shape: AttentionShape, max_len: usize, rows: usize) -> Result<Self> {
        shape.validate()?;
        if max_len == 0 || rows == 0 {
            return Err(Error::shape("DecodeScratch", format!("max_len {max_len} and rows {rows} must be at least 1")));
        }
        let n_splits = max_len.div_ceil(ROWS_PER_SPLIT).min(MAX_SPLITS);
        let partials = ctx.zeros(
            "attention decode partials",
            &[rows * shape.n_heads * n_splits, shape.head_dim + 2],
            DType::F32,
        )?;
        Ok(DecodeScratch { partials, shape, n_splits, rows })
    }

    /// Splits along the sequence, fixed by the longest context the scratch was made for.
    pub fn n_splits(&self) -> usize {
        self.n_splits
    }

    pub fn shape(&self) -> AttentionShape {
        self.shape
    }

    /// Fails unless the scratch was made for `shape` and at least `rows` rows. Its cache length only sets how
    /// the keys are cut into splits, so it serves caches of any length.
    fn check(&self, op: &str, shape: AttentionShape, rows: usize) -> Result<()> {
        let s = self.shape;
        if (s.n_heads, s.n_kv_heads, s.head_dim) != (shape.n_heads, shape.n_kv_heads, shape.head_dim) {
            return Err(Error::shape(op, format!("scratch was made for {s:?}, not {shape:?}")));
        }
        if rows > self.rows {
            return Err(Error::shape(op, format!("scratch was made for {} rows, not {rows}", self.rows)));
        }
        Ok(())
    }
}

/// The two dispatches of one [`decode`], to update when a plan is replayed with a longer cache.
#[derive(Clone, Copy, Debug)]
pub struct DecodeOps {
    pub split: OpId,
    pub combine: OpId,
    /// Rows of the cache the ops read: the largest kv_len they accept.
    max_len: usize,
    n_splits: usize,
}

impl DecodeOps {
    /// Sets the number of valid cache rows (1..=max_len) for the next replay of `plan`.
    pub fn set_kv_len(&self, plan: &mut Plan, kv_len: usize) -> Result<()> {
        let op = "attention decode";
        if kv_len == 0 || kv_len > self.max_len {
            return Err(Error::shape(op, format!("kv_len {kv_len} is not in 1..={} (the cache's rows)", self.max_len)));
        }
        let kv_len_u32 = u32_of(op, "kv_len", kv_len)?;
        let keys_per_split = u32_of(op, "keys per split", keys_per_split(kv_len, self.n_splits))?;
        for id in [self.split, self.combine] {
            let params = plan.params_mut::<DecodeParams>(id);
            params.kv_len = kv_len_u32;
            params.keys_per_split = keys_per_split;
        }
        Ok(())
    }
}

/// Invocations per workgroup of the `_lanes` split kernels (`LANES_WG` in attention_decode.wgsl).
const LANES_WG: usize = 8;

/// The grid of a `_lanes` split kernel: one invocation per split.
fn lanes_grid(g: &Graph, splits: usize) -> Result<[u32; 3]> {
    g.linear_grid(splits.div_ceil(LANES_WG) as u64)
}

/// The decode split kernel for `splits` (row, head, split) partials (`batch`: of a batch's rows), its override
/// constants and grid: a subgroup per split of heads sharing a kv head where the CPU kernels take the heads
/// ([`lanes_heads`]) and decode attention goes by lanes, else an invocation per split by lanes, else a workgroup.
fn split_kernel(
    g: &Graph,
    q: &Cols,
    shape: AttentionShape,
    splits: usize,
    batch: bool,
) -> Result<Chosen> {
    let [head_dim] = shape.head_dim_constant();
    let keys = lanes_heads(g, q, shape).filter(|_| g.tuning.decode_attention_lanes);
    Ok(match (keys, g.tuning.decode_attention_lanes) {
        (Some(heads), _) => {
            let kernel = if batch { &DECODE_SPLIT_BATCH_KEYS } else { &DECODE_SPLIT_KEYS };
            (kernel, vec![head_dim, ("HEADS", heads as f64)], g.linear_grid((splits / heads).div_ceil(WG / 8) as u64)?)
        }
        (None, true) => {
            let kernel = if batch { &DECODE_SPLIT_BATCH_LANES } else { &DECODE_SPLIT_LANES };
            (kernel, vec![head_dim], lanes_grid(g, splits)?)
        }
        (None, false) => {
            let kernel = if batch { &DECODE_SPLIT_BATCH } else { &DECODE_SPLIT };
            (kernel, vec![head_dim], g.linear_grid(splits as u64)?)
        }
    })
}

/// Keys per split: kv_len spread over the splits in whole tiles of WG keys; trailing splits may get none.
fn keys_per_split(kv_len: usize, n_splits: usize) -> usize {
    kv_len.div_ceil(n_splits).next_multiple_of(WG)
}

/// Attention of one token: q [1, n_heads * head_dim] (columns, possibly of a fused qkv tensor) over cache rows
/// 0..kv_len, split along the sequence into `scratch`, then combined into row 0 of out [>= 1, q_dim].
#[allow(clippy::too_many_arguments)]
pub fn decode<'a>(
    g: &mut Graph,
    q: impl IntoCols<'a>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    kv_len: usize,
    shape: AttentionShape,
    scratch: &DecodeScratch,
    out: &Tensor,
) -> Result<DecodeOps> {
    let q = q.into_cols()?;
    let op = "attention decode";
    shape.validate()?;
    scratch.check(op, shape, 1)?;
    let max_len = cache_rows(op, k_cache, v_cache, shape.kv_dim())?;
    expect_cols(op, "q", &q, shape.q_dim())?;
    if q.rows != 1 {
        return Err(Error::shape(op, format!("q `{}` has {} rows; decode takes one token", q.tensor.label(), q.rows)));
    }
    if kv_len == 0 || kv_len > max_len {
        return Err(Error::shape(op, format!("kv_len {kv_len} is not in 1..={max_len} (the cache's rows)")));
    }
    expect_out(op, out, 1, shape.q_dim())?;
    let params = DecodeParams {
        kv_len: u32_of(op, "kv_len", kv_len)?,
        n_heads: u32_of(op, "n_heads", shape.n_heads)?,
        n_kv_heads: u32_of(op, "n_kv_heads", shape.n_kv_heads)?,
        q_offset: u32_of(op, "q offset", q.offset)?,
        n_splits: u32_of(op, "n_splits", scratch.n_splits)?,
        keys_per_split: u32_of(op, "keys per split", keys_per_split(kv_len, scratch.n_splits))?,
        scale: shape.scale(),
        rows: 1,
        q_stride: u32_of(op, "q stride", q.stride())?,
        max_len: u32_of(op, "max_len", max_len)?,
        head_dim: u32_of(op, "head_dim", shape.head_dim)?,
        ..Default::default()
    };
    let constants = shape.head_dim_constant();
    // decode_split reads no positions: q stands in for them.
    let tensors = [q.tensor, k_cache, v_cache, &scratch.partials, out, q.tensor];
    let (kernel, split_constants, grid) = split_kernel(g, &q, shape, shape.n_heads * scratch.n_splits, false)?;
    let split = g.dispatch(kernel, &split_constants, &params, &tensors, grid)?;
    let combine_grid = g.linear_grid(shape.n_heads as u64)?;
    let combine = g.dispatch(&DECODE_COMBINE, &constants, &params, &tensors, combine_grid)?;
    Ok(DecodeOps { split, combine, max_len, n_splits: scratch.n_splits })
}

// ---- A batch's decode step: one token of each of B sequences ----

/// [B, max_len] of a batch's KV cache pair, after checking both are f32 [B, max_len, kv_dim] of the same shape.
fn batch_caches(op: &str, k_cache: &Tensor, v_cache: &Tensor, kv_dim: usize) -> Result<[usize; 2]> {
    for cache in [k_cache, v_cache] {
        expect_dtype(op, cache, &[DType::F32])?;
        match *cache.shape() {
            [_, _, cols] if cols == kv_dim => {}
            _ => {
                return Err(Error::shape(
                    op,
                    format!("cache `{}` is {:?}, expected [B, max_len, {kv_dim}]", cache.label(), cache.shape()),
                ))
            }
        }
    }
    if k_cache.shape() != v_cache.shape() {
        return Err(Error::shape(op, format!("k cache {:?} and v cache {:?} differ", k_cache.shape(), v_cache.shape())));
    }
    Ok([k_cache.shape()[0], k_cache.shape()[1]])
}

/// Fails unless `positions` is a u32 [rows] buffer.
fn expect_positions(op: &str, positions: &Tensor, rows: usize) -> Result<()> {
    expect_dtype(op, positions, &[DType::U32])?;
    if positions.shape() != [rows] {
        return Err(Error::shape(
            op,
            format!("positions `{}` is {:?}, expected [{rows}] (one per sequence)", positions.label(), positions.shape()),
        ));
    }
    Ok(())
}

/// Row r of k_new and v_new (`[B, kv_dim]` each, columns of a fused qkv tensor) into row `positions[r]` of
/// sequence r's cache: `k_cache[r, positions[r]]` and `v_cache[r, positions[r]]` (`[B, max_len, kv_dim]` f32).
/// positions: u32 `[B]`, read on the GPU when the step runs; a position at or past max_len writes nothing.
pub fn append_kv_batch<'a>(
    g: &mut Graph,
    k_new: impl IntoCols<'a>,
    v_new: impl IntoCols<'a>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    positions: &Tensor,
) -> Result<OpId> {
    let (k_new, v_new) = (k_new.into_cols()?, v_new.into_cols()?);
    let op = "append_kv_batch";
    let kv_dim = k_cache.shape().last().copied().unwrap_or(0);
    let [rows, max_len] = batch_caches(op, k_cache, v_cache, kv_dim)?;
    expect_cols(op, "k_new", &k_new, kv_dim)?;
    expect_cols(op, "v_new", &v_new, kv_dim)?;
    if k_new.rows != rows || v_new.rows != rows {
        return Err(Error::shape(
            op,
            format!("k_new has {} rows and v_new {}, the caches hold {rows} sequences", k_new.rows, v_new.rows),
        ));
    }
    expect_positions(op, positions, rows)?;
    let params = AppendKvParams {
        rows: u32_of(op, "rows", rows)?,
        kv_dim: u32_of(op, "kv_dim", kv_dim)?,
        pos: 0,
        max_len: u32_of(op, "max_len", max_len)?,
        k_stride: u32_of(op, "k_new stride", k_new.stride())?,
        k_offset: u32_of(op, "k_new offset", k_new.offset)?,
        v_stride: u32_of(op, "v_new stride", v_new.stride())?,
        v_offset: u32_of(op, "v_new offset", v_new.offset)?,
    };
    u32_of(op, "cache elements", rows * max_len * kv_dim)?;
    let grid = g.linear_grid((rows * kv_dim).div_ceil(WG) as u64)?;
    g.dispatch(&APPEND_KV_BATCH, &[], &params, &[k_new.tensor, v_new.tensor, k_cache, v_cache, positions], grid)
}

/// Attention of row r of q (`[B, n_heads * head_dim]` columns) over the first `positions[r] + 1` rows of sequence
/// r's cache (`[B, max_len, kv_dim]`): the token appended at `positions[r]` and everything before it. Split along the
/// sequence into `scratch` (made for at least B rows), then combined into rows 0..B of out [>= B, q_dim].
#[allow(clippy::too_many_arguments)]
pub fn decode_batch<'a>(
    g: &mut Graph,
    q: impl IntoCols<'a>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    positions: &Tensor,
    shape: AttentionShape,
    scratch: &DecodeScratch,
    out: &Tensor,
) -> Result<()> {
    let q = q.into_cols()?;
    let op = "attention decode_batch";
    shape.validate()?;
    let [rows, max_len] = batch_caches(op, k_cache, v_cache, shape.kv_dim())?;
    scratch.check(op, shape, rows)?;
    expect_cols(op, "q", &q, shape.q_dim())?;
    if q.rows != rows {
        return Err(Error::shape(op, format!("q `{}` has {} rows for {rows} sequences", q.tensor.label(), q.rows)));
    }
    expect_positions(op, positions, rows)?;
    expect_out(op, out, rows, shape.q_dim())?;
    let params = DecodeParams {
        n_heads: u32_of(op, "n_heads", shape.n_heads)?,
        n_kv_heads: u32_of(op, "n_kv_heads", shape.n_kv_heads)?,
        q_offset: u32_of(op, "q offset", q.offset)?,
        n_splits: u32_of(op, "n_splits", scratch.n_splits)?,
        scale: shape.scale(),
        rows: u32_of(op, "rows", rows)?,
        q_stride: u32_of(op, "q stride", q.stride())?,
        max_len: u32_of(op, "max_len", max_len)?,
        head_dim: u32_of(op, "head_dim", shape.head_dim)?,
        ..Default::default()
    };
    u32_of(op, "cache elements", rows * max_len * shape.kv_dim())?;
    let constants = shape.head_dim_constant();
    let tensors = [q.tensor, k_cache, v_cache, &scratch.partials, out, positions];
    let (kernel, split_constants, grid) = split_kernel(g, &q, shape, rows * shape.n_heads * scratch.n_splits, true)?;
    g.dispatch(kernel, &split_constants, &params, &tensors, grid)?;
    let combine_grid = g.linear_grid((rows * shape.n_heads) as u64)?;
    g.dispatch(&DECODE_COMBINE, &constants, &params, &tensors, combine_grid)?;
    Ok(())
}
