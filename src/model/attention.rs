//! The attention mixer on the GPU. transformers: `JambaAttention`; JAMBA.md, "Attention layer". No positional
//! encoding of any kind. One kernel per line.

use super::jamba::{cols, rows, Input, Rows, Scratch};
use super::weights::AttentionWeights;
use crate::config::JambaConfig;
use crate::gpu::{Graph, Tensor};
use crate::kernels::attention::{self, AttentionShape};
use crate::{Error, Result};

pub(crate) fn shape(cfg: &JambaConfig) -> AttentionShape {
    AttentionShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim() }
}

/// x += attention(normed) for the rows fed, appending their k and v to the cache: a sequence's `t` tokens at
/// positions `pos..pos + t`, or one token per sequence (a session's step, a batch's) at the position the GPU
/// reads from `sc.positions`.
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
) -> Result<()> {
    let (shape, t) = (shape(cfg), fed.t());
    let (q_dim, kv_dim) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
    let qkv = |offset, width| cols(&sc.qkv, offset, width, t);

    // q = normed Wq^T, k = normed Wk^T, v = normed Wv^T, in one matmul
    normed.matmul(g, &w.qkv, rows(&sc.qkv, t)?, false)?;
    let (q, k, v) = (qkv(0, q_dim)?, qkv(q_dim, kv_dim)?, qkv(q_dim + kv_dim, kv_dim)?);
    match (fed, &sc.decode) {
        // k and v join the cache at rows pos..pos + t; o = causal softmax(q k^T / sqrt(head_dim)) v over it
        (Rows::Sequence { t: 1, pos }, Some(scratch)) => {
            attention::append_kv(g, k, v, k_cache, v_cache, pos)?;
            attention::decode(g, q, k_cache, v_cache, pos + 1, shape, scratch, &sc.attn)?;
        }
        (Rows::Sequence { pos, .. }, _) => {
            attention::append_kv(g, k, v, k_cache, v_cache, pos)?;
            attention::prefill(g, q, k_cache, v_cache, pos + t, shape, &sc.attn)?;
        }
        // the same per row r, at sequence r's position and over its cache: a session's step is a batch of one
        (Rows::Step | Rows::Batch { .. }, scratch) => {
            let no_scratch = || Error::shape("attention", "a decode step needs decode scratch");
            let scratch = scratch.as_ref().ok_or_else(no_scratch)?;
            let as_batch = |cache: &Tensor| match fed {
                Rows::Step => cache.reshape(&[1, cache.shape()[0], kv_dim]),
                _ => Ok(cache.clone()),
            };
            let (k_cache, v_cache) = (as_batch(k_cache)?, as_batch(v_cache)?);
            attention::append_kv_batch(g, k, v, &k_cache, &v_cache, &sc.positions)?;
            attention::decode_batch(g, q, &k_cache, &v_cache, &sc.positions, shape, scratch, &sc.attn)?;
        }
    };
    // x += o o_proj^T
    w.o_proj.matmul(g, rows(&sc.attn, t)?, rows(&sc.x, t)?, true)
}
