//! The FFN on the GPU: a dense SwiGLU MLP, or a mixture of experts. JAMBA.md, "FFN".

use super::jamba::{rows, Scratch};
use super::weights::FfnWeights;
use crate::config::JambaConfig;
use crate::gpu::Graph;
use crate::kernels::{matmul::matmul, moe};
use crate::Result;

/// x += ffn(normed) for `t` tokens.
pub(crate) fn encode(g: &mut Graph, cfg: &JambaConfig, w: &FfnWeights, sc: &Scratch, t: usize) -> Result<()> {
    match w {
        // down(silu(gate(x)) * up(x))
        FfnWeights::Dense { gate, up, down } => moe::dense_mlp(g, &sc.normed, t, gate, up, down, &sc.moe, &sc.x),
        // out = sum over the top-k experts e of p[e] * expert_e(x), p = softmax(x router^T), not renormalised
        FfnWeights::Moe { router, experts } => {
            let top_k = cfg.num_experts_per_tok;
            matmul(g, rows(&sc.normed, t)?, router, rows(&sc.router_logits, t)?, false)?;
            moe::route(g, &sc.router_logits, t, top_k, &sc.expert_ids, &sc.expert_weights)?;
            moe::moe_ffn(g, &sc.normed, t, experts, &sc.expert_ids, &sc.expert_weights, top_k, &sc.moe, &sc.x)
        }
    }
}
