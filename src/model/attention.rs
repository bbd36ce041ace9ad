//! The attention mixer on the GPU. transformers: `JambaAttention`; JAMBA.md, "Attention layer". No positional
//! encoding of any kind. One kernel per line.

use super::jamba::{cols, rows, Scratch};
use super::weights::AttentionWeights;
use crate::config::JambaConfig;
use crate::gpu::{Graph, OpId, Tensor};
use crate::kernels::attention::{self, AttentionShape, DecodeOps};
use crate::Result;

/// The dispatches a decode plan updates as the position advances.
pub(crate) struct AttentionOps {
    pub append: OpId,
    pub decode: Option<DecodeOps>,
}

pub(crate) fn shape(cfg: &JambaConfig) -> AttentionShape {
    AttentionShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim() }
}

/// x += attention(normed) for `t` tokens at positions `pos..pos + t`, appending their k and v to the cache.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    g: &mut Graph,
    cfg: &JambaConfig,
    w: &AttentionWeights,
    k_cache: &Tensor, // [max_len, kv_dim]
    v_cache: &Tensor, // [max_len, kv_dim]
    sc: &Scratch,
    t: usize,
    pos: usize,
) -> Result<AttentionOps> {
    let shape = shape(cfg);
    let (q_dim, kv_dim) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
    let qkv = |offset, width| cols(&sc.qkv, offset, width, t);

    // q = x Wq^T, k = x Wk^T, v = x Wv^T, in one matmul
    w.qkv.matmul(g, rows(&sc.normed, t)?, rows(&sc.qkv, t)?, false)?;
    // k and v join the cache at rows pos..pos + t
    let append = attention::append_kv(g, qkv(q_dim, kv_dim)?, qkv(q_dim + kv_dim, kv_dim)?, k_cache, v_cache, pos)?;
    // o = causal softmax(q k^T / sqrt(head_dim)) v over the whole cache
    let decode = match (&sc.decode, t) {
        (Some(scratch), 1) => Some(attention::decode(g, qkv(0, q_dim)?, k_cache, v_cache, pos + 1, shape, scratch, &sc.attn)?),
        _ => {
            attention::prefill(g, qkv(0, q_dim)?, k_cache, v_cache, pos + t, shape, &sc.attn)?;
            None
        }
    };
    // x += o o_proj^T
    w.o_proj.matmul(g, rows(&sc.attn, t)?, rows(&sc.x, t)?, true)?;
    Ok(AttentionOps { append, decode })
}
