//! The Mamba mixer on the GPU. transformers: `JambaMambaMixer`; JAMBA.md, "Mamba layer". One kernel per line.

use super::jamba::{cols, rows, Input, Rows, Scratch};
use super::weights::MambaWeights;
use crate::config::JambaConfig;
use crate::gpu::{Graph, Tensor};
use crate::kernels::matmul::RmsNorm;
use crate::kernels::ssm_scan::{self, ScanPath};
use crate::kernels::{conv1d, rms_norm::rms_norm};
use crate::Result;

/// x += mamba(normed) for the rows fed, continuing from and updating the conv and SSM state (a batch's: each
/// row its own sequence's).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    g: &mut Graph,
    cfg: &JambaConfig,
    w: &MambaWeights,
    conv_state: &Tensor, // [K-1, I]; a batch's [B, >= (K-1) * I]
    ssm_state: &Tensor,  // [I, N]; a batch's [B, >= I * N]
    sc: &Scratch,
    fed: Rows,
    normed: Input, // rms_norm(x, input_layernorm)
) -> Result<()> {
    let (i, n, r, eps, t) = (cfg.d_inner(), cfg.mamba_d_state, cfg.dt_rank(), cfg.rms_norm_eps, fed.t());
    let cols = |tensor, offset, width| cols(tensor, offset, width, t);

    // [xs | z] = normed in_proj^T
    normed.matmul(g, &w.in_proj, rows(&sc.xz, t)?, false)?;
    // xs = silu(causal_depthwise_conv1d(xs)), the conv state holding the last K-1 inputs
    let conv = match fed {
        Rows::Sequence { .. } => conv1d::causal_conv1d_silu,
        Rows::Batch { .. } => conv1d::causal_conv1d_silu_batch,
    };
    conv(g, cols(&sc.xz, 0, i)?, conv_state, &w.conv_weight, &w.conv_bias, &sc.xs)?;
    // [dt | B | C] = xs x_proj^T
    w.x_proj.matmul(g, rows(&sc.xs, t)?, rows(&sc.dbc, t)?, false)?;
    // dt = rms_norm(dt, dt_layernorm), on decode steps fused into dt_proj's matvec below
    let dt_norm = RmsNorm { weight: &w.dt_norm, eps };
    let dt = Input::new(g, cols(&sc.dbc, 0, r)?, dt_norm, cols(&sc.dbc_normed, 0, r)?, fed.is_decode())?;
    // B = rms_norm(B, b_layernorm); C = rms_norm(C, c_layernorm)
    for (norm, offset, width) in [(&w.b_norm, r, n), (&w.c_norm, r + n, n)] {
        rms_norm(g, cols(&sc.dbc, offset, width)?, norm, eps, cols(&sc.dbc_normed, offset, width)?)?;
    }
    // dt = dt dt_proj.weight^T; dt_proj.bias and the softplus are fused into the scan
    dt.matmul(g, &w.dt_proj, rows(&sc.dt, t)?, false)?;
    // h = exp(delta A) h + delta B xs;  y = h C + D xs;  y * silu(z)
    let path = match fed {
        Rows::Sequence { t: 1, .. } => ScanPath::Decode,
        Rows::Sequence { .. } => ScanPath::Chunked,
        Rows::Batch { .. } => ScanPath::Batch,
    };
    ssm_scan::selective_scan_with(
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
        path,
    )?;
    // x += (y * silu(z)) out_proj^T
    w.out_proj.matmul(g, rows(&sc.y, t)?, rows(&sc.x, t)?, true)
}
