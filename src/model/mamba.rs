//! The Mamba mixer on the GPU. transformers: `JambaMambaMixer`; JAMBA.md, "Mamba layer". One kernel per line.

use super::jamba::{cols, rows, Scratch};
use super::weights::MambaWeights;
use crate::config::JambaConfig;
use crate::gpu::{Graph, Tensor};
use crate::kernels::{conv1d, rms_norm::rms_norm, ssm_scan};
use crate::Result;

/// x += mamba(normed) for `t` tokens, continuing from and updating the conv and SSM state.
pub(crate) fn encode(
    g: &mut Graph,
    cfg: &JambaConfig,
    w: &MambaWeights,
    conv_state: &Tensor, // [K-1, I]
    ssm_state: &Tensor,  // [I, N]
    sc: &Scratch,
    t: usize,
) -> Result<()> {
    let (i, n, r, eps) = (cfg.d_inner(), cfg.mamba_d_state, cfg.dt_rank(), cfg.rms_norm_eps);
    let cols = |tensor, offset, width| cols(tensor, offset, width, t);

    // [xs | z] = x in_proj^T
    w.in_proj.matmul(g, rows(&sc.normed, t)?, rows(&sc.xz, t)?, false)?;
    // xs = silu(causal_depthwise_conv1d(xs)), the conv state holding the last K-1 inputs
    conv1d::causal_conv1d_silu(g, cols(&sc.xz, 0, i)?, conv_state, &w.conv_weight, &w.conv_bias, &sc.xs)?;
    // [dt | B | C] = xs x_proj^T
    w.x_proj.matmul(g, rows(&sc.xs, t)?, rows(&sc.dbc, t)?, false)?;
    // dt = rms_norm(dt, dt_layernorm); B = rms_norm(B, b_layernorm); C = rms_norm(C, c_layernorm)
    for (norm, offset, width) in [(&w.dt_norm, 0, r), (&w.b_norm, r, n), (&w.c_norm, r + n, n)] {
        rms_norm(g, cols(&sc.dbc, offset, width)?, norm, eps, cols(&sc.dbc_normed, offset, width)?)?;
    }
    // dt = dt dt_proj.weight^T; dt_proj.bias and the softplus are fused into the scan
    w.dt_proj.matmul(g, cols(&sc.dbc_normed, 0, r)?, rows(&sc.dt, t)?, false)?;
    // h = exp(delta A) h + delta B xs;  y = h C + D xs;  y * silu(z)
    ssm_scan::selective_scan(
        g,
        &sc.xs,
        rows(&sc.dt, t)?,
        &w.dt_bias,
        &w.a_log,
        cols(&sc.dbc_normed, r, n)?,
        cols(&sc.dbc_normed, r + n, n)?,
        &w.d,
        cols(&sc.xz, i, i)?,
        ssm_state,
        &sc.scan,
        &sc.y,
    )?;
    // x += (y * silu(z)) out_proj^T
    w.out_proj.matmul(g, rows(&sc.y, t)?, rows(&sc.x, t)?, true)
}
