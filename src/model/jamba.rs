//! The interleaved layer stack: the per-layer plan read from the config's schedule, encoded into one graph
//! per forward step. transformers: `JambaModel.forward`; JAMBA.md, "The network".

use super::attention;
use super::state::LayerState;
use super::weights::{GpuWeights, Matrix, MixerWeights};
use super::{ffn, mamba};
use crate::config::JambaConfig;
use crate::gpu::{Context, DType, Graph, Tensor};
use crate::kernels::attention::DecodeScratch;
use crate::kernels::matmul::{self, Normed, RmsNorm};
use crate::kernels::moe::MoeScratch;
use crate::kernels::ssm_scan::ScanScratch;
use crate::kernels::{argmax::argmax, embed, rms_norm::rms_norm, IntoCols, Cols};
use crate::Result;

/// The first `t` rows of a matrix.
pub(crate) fn rows(tensor: &Tensor, t: usize) -> Result<Cols<'_>> {
    tensor.into_cols()?.rows(t)
}

/// Columns `offset..offset + width` of the first `t` rows of a matrix.
pub(crate) fn cols(tensor: &Tensor, offset: usize, width: usize, t: usize) -> Result<Cols<'_>> {
    Cols::slice(tensor, offset, width)?.rows(t)
}

/// The input of a block, rms_norm(x, norm): on prefill written into `normed` before the block, as a dispatch of
/// its own; on decode steps left to the block's first kernel, which normalises x as it reads it, one dispatch
/// fewer: a matvec (kernels::matmul::matmul_rms_norm), the MoE router (moe::norm_route) or the dense MLP's
/// SwiGLU (moe::dense_mlp_rms_norm).
#[derive(Clone, Copy)]
pub(crate) struct Input<'a> {
    x: Cols<'a>,
    normed: Cols<'a>,
    /// The norm still to apply; None once `normed` holds the input.
    pending: Option<RmsNorm<'a>>,
}

impl<'a> Input<'a> {
    /// rms_norm(x, norm) into `normed` for the block reading it, now or (`fuse`) by the block's first matmul.
    pub fn new(g: &mut Graph, x: Cols<'a>, norm: RmsNorm<'a>, normed: Cols<'a>, fuse: bool) -> Result<Self> {
        if fuse {
            return Ok(Input { x, normed, pending: Some(norm) });
        }
        rms_norm(g, x, norm.weight, norm.eps, normed)?;
        Ok(Input { x, normed, pending: None })
    }

    /// The rows the norm applies to.
    pub fn x(&self) -> Cols<'a> {
        self.x
    }

    /// The norm still to apply, for a block whose first kernel applies it itself; None once `normed` holds the
    /// input.
    pub fn pending(&self) -> Option<RmsNorm<'a>> {
        self.pending
    }

    /// y = input W^T. With `keep`, `normed` holds the input afterwards for later kernels of the block.
    pub fn matmul(self, g: &mut Graph, w: &impl Linear, y: Cols, keep: bool) -> Result<()> {
        match self.pending {
            None => w.matmul(g, self.normed, y),
            Some(norm) => {
                let normed = if keep { Normed::Keep(self.normed) } else { Normed::Scratch(self.normed) };
                w.matmul_rms_norm(g, self.x, norm, y, normed)
            }
        }
    }
}

/// A weight the model multiplies activations by: a [`Matrix`] in parts, or one tensor.
pub(crate) trait Linear {
    /// y = x W^T.
    fn matmul(&self, g: &mut Graph, x: Cols, y: Cols) -> Result<()>;
    /// y = rms_norm(x, norm) W^T (kernels::matmul::matmul_rms_norm).
    fn matmul_rms_norm<'a>(&self, g: &mut Graph, x: Cols<'a>, norm: RmsNorm, y: Cols<'a>, normed: Normed<'a>)
        -> Result<()>;
}

impl Linear for Matrix {
    fn matmul(&self, g: &mut Graph, x: Cols, y: Cols) -> Result<()> {
        Matrix::matmul(self, g, x, y, false)
    }

    fn matmul_rms_norm<'a>(&self, g: &mut Graph, x: Cols<'a>, norm: RmsNorm, y: Cols<'a>, normed: Normed<'a>)
        -> Result<()> {
        Matrix::matmul_rms_norm(self, g, x, norm, y, normed)
    }
}

impl Linear for Tensor {
    fn matmul(&self, g: &mut Graph, x: Cols, y: Cols) -> Result<()> {
        matmul::matmul(g, x, self, y, false).map(drop)
    }

    fn matmul_rms_norm<'a>(&self, g: &mut Graph, x: Cols<'a>, norm: RmsNorm, y: Cols<'a>, normed: Normed<'a>)
        -> Result<()> {
        matmul::matmul_rms_norm(g, x, norm, self, y, false, normed).map(drop)
    }
}

/// Activations for up to `max_t` tokens, allocated once per session and shared by every layer and step.
pub struct Scratch {
    pub max_t: usize,
    pub ids: Tensor,    // [max_t] u32
    pub x: Tensor,      // [max_t, H], the residual stream
    pub normed: Tensor, // [max_t, H]
    // Mamba
    pub xz: Tensor,         // [max_t, 2I]: xs | z
    pub xs: Tensor,         // [max_t, I], after the conv
    pub dbc: Tensor,        // [max_t, R + 2N]: dt | B | C
    pub dbc_normed: Tensor, // [max_t, R + 2N]
    /// A decode step's x_proj output in parts over d_inner (`matmul::matmul_parts`): part s of row r at row
    /// s * decode_rows + r.
    pub dbc_parts: Tensor, // [MAX_K_PARTS * decode_rows, R + 2N]
    pub dt: Tensor,         // [max_t, I]
    pub y: Tensor,          // [max_t, I]
    pub scan: ScanScratch,  // the chunked scan's per-chunk states
    // attention
    pub qkv: Tensor,  // [max_t, q_dim + 2 kv_dim]
    pub attn: Tensor, // [max_t, q_dim]
    /// Split-k partials for single-token decode over the whole cache.
    pub decode: Option<DecodeScratch>,
    // FFN
    pub router_logits: Tensor,  // [max_t, E]
    pub expert_ids: Tensor,     // [max_t * top_k] u32
    pub expert_weights: Tensor, // [max_t * top_k]
    pub moe: MoeScratch,
    // head
    pub last: Tensor,   // [1, H], the final-normed last row
    pub logits: Tensor, // [max_t, V]
    pub next: Tensor,   // [max_t] u32, the greedy token (of each row, for a batch)
    /// `[decode_rows]` u32: where each row of a decode step (a session's, or a batch's) puts its token, written
    /// before each step, so that the step's plan serves every position.
    pub positions: Tensor,
}

impl Scratch {
    /// Activations for steps of up to `max_t` rows over caches of up to `max_len` rows; single-token attention
    /// for up to `decode_rows` sequences at once (1 for a session, B for a batch's step).
    pub fn new(ctx: &Context, cfg: &JambaConfig, max_t: usize, max_len: usize, decode_rows: usize) -> Result<Self> {
        Scratch::with_expert_slots(ctx, cfg, max_t, max_len, decode_rows, cfg.num_experts)
    }

    /// A scratch whose MoE buffers serve stacks of `expert_slots` experts (at least the config's): an expert
    /// pool's when the experts are streamed.
    pub fn with_expert_slots(
        ctx: &Context,
        cfg: &JambaConfig,
        max_t: usize,
        max_len: usize,
        decode_rows: usize,
        expert_slots: usize,
    ) -> Result<Self> {
        let (h, i, n, r) = (cfg.hidden_size, cfg.d_inner(), cfg.mamba_d_state, cfg.dt_rank());
        let (e, k, v) = (cfg.num_experts.max(1), cfg.num_experts_per_tok.max(1), cfg.vocab_size);
        let shape = attention::shape(cfg);
        let (q_dim, kv_dim) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
        let f32s = |label: &str, shape: &[usize]| ctx.zeros(label, shape, DType::F32);
        let has_attention = cfg.layers().iter().any(|l| l.mixer == crate::config::Mixer::Attention);
        Ok(Scratch {
            max_t,
            ids: ctx.zeros("ids", &[max_t], DType::U32)?,
            x: f32s("x", &[max_t, h])?,
            normed: f32s("normed", &[max_t, h])?,
            xz: f32s("xz", &[max_t, 2 * i])?,
            xs: f32s("xs", &[max_t, i])?,
            dbc: f32s("dbc", &[max_t, r + 2 * n])?,
            dbc_normed: f32s("dbc_normed", &[max_t, r + 2 * n])?,
            dbc_parts: f32s("dbc parts", &[matmul::MAX_K_PARTS * decode_rows.max(1), r + 2 * n])?,
            dt: f32s("dt", &[max_t, i])?,
            y: f32s("y", &[max_t, i])?,
            scan: ScanScratch::new(ctx, max_t, i, n)?,
            qkv: f32s("qkv", &[max_t, q_dim + 2 * kv_dim])?,
            attn: f32s("attn", &[max_t, q_dim])?,
            decode: if has_attention { Some(DecodeScratch::batched(ctx, shape, max_len, decode_rows)?) } else { None },
            router_logits: f32s("router_logits", &[max_t, e])?,
            expert_ids: ctx.zeros("expert_ids", &[max_t * k], DType::U32)?,
            expert_weights: f32s("expert_weights", &[max_t * k])?,
            moe: MoeScratch::new(ctx, max_t, h, cfg.intermediate_size, e.max(expert_slots), k)?,
            last: f32s("last", &[1, h])?,
            logits: f32s("logits", &[max_t, v])?,
            next: ctx.zeros("next", &[max_t], DType::U32)?,
            positions: ctx.zeros("positions", &[decode_rows.max(1)], DType::U32)?,
        })
    }
}

/// What a step computes after the last layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// The logits of the last token into row 0 of `logits`, and its argmax into `next`.
    Last,
    /// The logits of every token into rows 0..t of `logits`, and the argmax of the last into `next`.
    All,
    /// The logits of every row into rows 0..t of `logits`, and each row's argmax into `next[0..t]`: a batch's
    /// step, one row per sequence.
    Each,
}

/// The rows a step feeds, and whose state each advances.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rows {
    /// `t` consecutive tokens of one sequence at positions pos..pos + t, in a graph built for them (a prefill
    /// chunk); the layers' state is a sequence's.
    Sequence { t: usize, pos: usize },
    /// A session's decode step: one token of one sequence, at the position in `sc.positions[0]`, so that one
    /// plan replays unchanged for every token; the layers' state is a sequence's.
    Step,
    /// One token of each of a batch's `t` sequences, row r at `sc.positions[r]`; the layers' state is a batch's.
    Batch { t: usize },
}

impl Rows {
    pub fn t(&self) -> usize {
        match *self {
            Rows::Sequence { t, .. } | Rows::Batch { t } => t,
            Rows::Step => 1,
        }
    }

    /// One row per sequence (a decode step, or a batch's): the rows where each rms_norm is fused into the matvec
    /// that reads it ([`Input`]).
    pub fn is_decode(&self) -> bool {
        matches!(self, Rows::Sequence { t: 1, .. } | Rows::Step | Rows::Batch { .. })
    }
}

/// Records one forward step over `fed` rows (their tokens already in `sc.ids`, and for decode steps their
/// positions in `sc.positions`), advancing `layers`' state, the MoE layers' experts through `experts`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    g: &mut Graph,
    cfg: &JambaConfig,
    w: &GpuWeights,
    layers: &[LayerState],
    sc: &Scratch,
    fed: Rows,
    head: Head,
    experts: &mut dyn ffn::Experts,
) -> Result<()> {
    let (h, eps, t) = (cfg.hidden_size, cfg.rms_norm_eps, fed.t());
    // x = embed_tokens[ids]
    for (row0, part) in &w.embed_tokens.parts {
        embed::embed_rows(g, part, *row0, &sc.ids, rows(&sc.x, t)?)?;
    }
    let input = |g: &mut Graph, weight| {
        Input::new(g, rows(&sc.x, t)?, RmsNorm { weight, eps }, rows(&sc.normed, t)?, fed.is_decode())
    };
    for (i, (layer, layer_state)) in w.layers.iter().zip(layers).enumerate() {
        // x = x + mixer(rms_norm(x, input_layernorm))
        let normed = input(g, &layer.input_norm)?;
        match (&layer.mixer, layer_state) {
            (MixerWeights::Attention(aw), LayerState::Attention { k, v }) => {
                attention::encode(g, cfg, aw, k, v, sc, fed, normed)?
            }
            (MixerWeights::Mamba(mw), LayerState::Mamba { conv, ssm }) => {
                mamba::encode(g, cfg, mw, conv, ssm, sc, fed, normed)?
            }
            _ => unreachable!("weights and state are built from the same config"),
        }
        // x = x + ffn(rms_norm(x, pre_ff_layernorm))
        let normed = input(g, &layer.pre_ff_norm)?;
        ffn::encode(g, cfg, &layer.ffn, sc, t, normed, i, experts)?;
    }
    // logits = rms_norm(x, final_layernorm) lm_head^T
    let v = cfg.vocab_size;
    match head {
        Head::All | Head::Each => {
            let normed = input(g, &w.final_norm)?;
            normed.matmul(g, w.lm_head(), rows(&sc.logits, t)?, false)?;
            if head == Head::Each {
                argmax(g, rows(&sc.logits, t)?, &sc.next)?;
            } else {
                let flat = sc.logits.reshape(&[1, sc.max_t * v])?;
                argmax(g, Cols::slice(&flat, (t - 1) * v, v)?, &sc.next)?;
            }
        }
        Head::Last => {
            let flat = sc.x.reshape(&[1, sc.max_t * h])?;
            let last = Cols::slice(&flat, (t - 1) * h, h)?;
            let final_norm = RmsNorm { weight: &w.final_norm, eps };
            let normed = Input::new(g, last, final_norm, sc.last.into_cols()?, fed.is_decode())?;
            normed.matmul(g, w.lm_head(), rows(&sc.logits, 1)?, false)?;
            argmax(g, rows(&sc.logits, 1)?, &sc.next)?;
        }
    }
    Ok(())
}
