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
    /// How many times the forward was cut so far: the part of it that a dispatch recorded now belongs to.
    fn part(&self) -> usize {
        0
    }
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
            None => moe::dense_mlp(g, &sc.normed, t, gate, up, down, &sc.moe, &sc.x),
            // the norm fused into gate's matvec, which keeps the normalised rows in sc.normed for up
            Some(norm) => moe::dense_mlp_rms_norm(g, &sc.x, norm, &sc.normed, t, gate, up, down, &sc.moe, &sc.x),
        },
        // out = sum over the top-k experts e of p[e] * expert_e(x), p = softmax(x router^T), not renormalised
        FfnWeights::Moe { router, experts } => {
            let top_k = cfg.num_experts_per_tok;
            normed.matmul(g, router, rows(&sc.router_logits, t)?, true)?;
            moe::route(g, &sc.router_logits, t, top_k, &sc.expert_ids, &sc.expert_weights)?;
            experts_of.encode(g, layer, experts, sc, t)
        }
    }
}
