//! The attention mixer on the GPU. transformers: `JambaAttention`; JAMBA.md, "Attention layer". No positional
//! encoding of any kind. One kernel per line.

use super::jamba::{cols, rows, Input, Rows, Scratch};
use super::weights::AttentionWeights;
use crate::config::JambaConfig;
use crate::gpu::{Graph, OpId, Tensor};
use crate::kernels::attention::{self, AttentionShape, DecodeOps};
use crate::{Error, Result};

/// The dispatches a decode plan updates as the position advances.
pub(crate) struct AttentionOps {
    pub append: OpId,
    pub decode: Option<DecodeOps>,
}

pub(crate) fn shape(cfg: &JambaConfig) -> AttentionShape {
    AttentionShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim() }
}

/// x += attention(normed) for the rows fed, appending their k and v to the cache: a sequence's `t` tokens at
/// positions `pos..pos + t`, or a batch's row r at sequence r's own position. Returns the dispatches a replayed
/// plan must update for a sequence; a batch's step reads its positions from the GPU and needs none.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    g: &mut Graph,
    cfg: &JambaConfig,
    w: &AttentionWeights,
    k_cache: &Tensor, // [max_len, kv_dim]; a batch's [B, slot_rows, kv_dim]
    v_cache: &Tensor, // [max_len, kv_dim]; a batch's [B, slot_rows, kv_dim]
    sc: &Scratch,
    fed: Rows,
    normed: Input, // rms_norm(x, input_layernorm)
) -> Result<Option<AttentionOps>> {
    let (shape, t) = (shape(cfg), fed.t());
    let (q_dim, kv_dim) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
    let qkv = |offset, width| cols(&sc.qkv, offset, width, t);

    // q = normed Wq^T, k = normed Wk^T, v = normed Wv^T, in one matmul
    normed.matmul(g, &w.qkv, rows(&sc.qkv, t)?, false)?;
    let (q, k, v) = (qkv(0, q_dim)?, qkv(q_dim, kv_dim)?, qkv(q_dim + kv_dim, kv_dim)?);
    let ops = match (fed, &sc.decode) {
        // k and v join the cache at rows pos..pos + t; o = causal softmax(q k^T / sqrt(head_dim)) v over it
        (Rows::Sequence { t: 1, pos }, Some(scratch)) => {
            let append = attention::append_kv(g, k, v, k_cache, v_cache, pos)?;
            let decode = attention::decode(g, q, k_cache, v_cache, pos + 1, shape, scratch, &sc.attn)?;
            Some(AttentionOps { append, decode: Some(decode) })
        }
        (Rows::Sequence { pos, .. }, _) => {
            let append = attention::append_kv(g, k, v, k_cache, v_cache, pos)?;
            attention::prefill(g, q, k_cache, v_cache, pos + t, shape, &sc.attn)?;
            Some(AttentionOps { append, decode: None })
        }
        // the same per row r, at sequence r's position and over its cache
        (Rows::Batch { positions, .. }, scratch) => {
            let scratch = scratch.as_ref().ok_or_else(|| Error::shape("attention", "a batch's step needs decode scratch"))?;
            attention::append_kv_batch(g, k, v, k_cache, v_cache, positions)?;
            attention::decode_batch(g, q, k_cache, v_cache, positions, shape, scratch, &sc.attn)?;
            None
        }
    };
    // x += o o_proj^T
    w.o_proj.matmul(g, rows(&sc.attn, t)?, rows(&sc.x, t)?, true)?;
    Ok(ops)
}
