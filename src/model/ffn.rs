//! The FFN on the GPU: a dense SwiGLU MLP, or a mixture of experts. JAMBA.md, "FFN".

use super::jamba::{rows, Input, Scratch};
use super::weights::FfnWeights;
use crate::config::JambaConfig;
use crate::gpu::Graph;
use crate::kernels::moe::{self, ExpertStack};
use crate::Result;

/// How a MoE layer's experts are recorded once its routing (`sc.expert_ids`, `sc.expert_weights`) is.
pub(crate) trait Experts {
    /// Records x += sum over each token's top-k experts of weight * expert(normed), for MoE layer `layer`.
    fn encode(
        &mut self,
        g: &mut Graph<'_>,
        layer: usize,
        experts: &[ExpertStack],
        sc: &Scratch,
        t: usize,
    ) -> Result<()>;
}

/// Every expert is on the GPU: the whole layer in one graph.
pub(crate) struct Resident {
    pub top_k: usize,
}

impl Experts for Resident {
    fn encode(
        &mut self,
        g: &mut Graph<'_>,
        _layer: usize,
        experts: &[ExpertStack],
        sc: &Scratch,
        t: usize,
    ) -> Result<()> {
        moe::moe_ffn(g, &sc.normed, t, experts, &sc.expert_ids, &sc.expert_weights, self.top_k, &sc.moe, &sc.x)
    }
}

/// x += ffn(normed) for `t` tokens; layer `layer`'s experts through `experts`. The kernels after the first matmul
/// read the input from `sc.normed`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    g: &mut Graph,
    cfg: &JambaConfig,
    w: &FfnWeights,
    sc: &Scratch,
    t: usize,
    normed: Input, // rms_norm(x, pre_ff_layernorm) into sc.normed
    layer: usize,
    experts_of: &mut dyn Experts,
) -> Result<()> {
    match w {
        // down(silu(gate(x)) * up(x))
        FfnWeights::Dense { gate, up, down } => match normed.pending() {
            // a decode step: the SwiGLU of the expert kernels applies the norm as it reads x
            Some(norm) => moe::dense_mlp_rms_norm(g, &sc.x, norm, t, gate, up, down, &sc.normed, &sc.moe, &sc.x),
            None => moe::dense_mlp(g, &sc.normed, t, gate, up, down, &sc.moe, &sc.x),
        },
        // out = sum over the top-k experts e of p[e] * expert_e(x), p = softmax(x router^T), not renormalised
        FfnWeights::Moe { router, experts } => {
            let top_k = cfg.num_experts_per_tok;
            let (ids, weights) = (&sc.expert_ids, &sc.expert_weights);
            match normed.pending() {
                // a decode step: the norm, the router and the routing in one dispatch, normed kept for the experts
                Some(norm) if router.shape()[0] <= moe::MAX_FUSED_EXPERTS => {
                    let (x, logits) = (&sc.x, &sc.router_logits);
                    moe::norm_route(g, x, t, norm.weight, norm.eps, router, &sc.normed, logits, top_k, ids, weights)?;
                }
                _ => {
                    normed.matmul(g, router, rows(&sc.router_logits, t)?, true)?;
                    moe::route(g, &sc.router_logits, t, top_k, ids, weights)?;
                }
            }
            experts_of.encode(g, layer, experts, sc, t)
        }
    }
}
