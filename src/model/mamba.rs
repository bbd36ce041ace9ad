//! The Mamba mixer on the GPU. transformers: `JambaMambaMixer`; JAMBA.md, "Mamba layer". One kernel per line.

use super::jamba::{cols, rows, Input, Rows, Scratch};
use super::weights::MambaWeights;
use crate::config::JambaConfig;
use crate::gpu::{Graph, Tensor};
use crate::kernels::matmul::{self, ConvStep, RmsNorm};
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

    match (normed.pending(), w.in_proj.parts.as_slice()) {
        // A decode step (in_proj in one part): the norm, in_proj and the conv in one dispatch.
        (Some(norm), [(0, in_proj)]) if matmul::is_matvec(g, t) => {
            // [xs | z] = rms_norm(x) in_proj^T;  xs = silu(causal_depthwise_conv1d(xs)), the state advanced
            let conv = ConvStep { weight: &w.conv_weight, bias: &w.conv_bias, state: conv_state, out: &sc.xs };
            matmul::matmul_rms_norm_conv(g, normed.x(), norm, in_proj, rows(&sc.xz, t)?, conv)?;
        }
        _ => {
            // [xs | z] = normed in_proj^T
            normed.matmul(g, &w.in_proj, rows(&sc.xz, t)?, false)?;
            // xs = silu(causal_depthwise_conv1d(xs)), the conv state holding the last K-1 inputs
            let conv = match fed {
                Rows::Sequence { .. } | Rows::Step => conv1d::causal_conv1d_silu,
                Rows::Batch { .. } => conv1d::causal_conv1d_silu_batch,
            };
            conv(g, cols(&sc.xz, 0, i)?, conv_state, &w.conv_weight, &w.conv_bias, &sc.xs)?;
        }
    }
    let path = match fed {
        Rows::Sequence { t: 1, .. } | Rows::Step => ScanPath::Decode,
        Rows::Sequence { .. } if i >= g.tuning.serial_scan_min_channels => ScanPath::Serial,
        Rows::Sequence { .. } => ScanPath::Chunked,
        Rows::Batch { .. } => ScanPath::Batch,
    };
    // A decode step's scan applies dt_proj itself when dt_proj is in one part and dt_rank is at most
    // ssm_scan::MAX_DT_RANK (below); it can then also add up x_proj's output in parts over d_inner, which spreads
    // x_proj (R + 2N rows of a long d_inner) over more workgroups.
    let dt_proj = match (path, w.dt_proj.parts.as_slice()) {
        (ScanPath::Decode | ScanPath::Batch, [(0, weight)]) if r <= ssm_scan::MAX_DT_RANK => Some((&w.dt_norm, weight)),
        _ => None,
    };
    let parts = match (dt_proj, w.x_proj.parts.as_slice()) {
        (Some(_), [(0, x_proj)]) => matmul::k_parts(g, t, x_proj),
        _ => 1,
    };
    // [dt | B | C] = xs x_proj^T
    let (dbc, part_stride) = match w.x_proj.parts.as_slice() {
        [(0, x_proj)] if parts > 1 => {
            let part_stride = sc.dbc_parts.len() / matmul::MAX_K_PARTS;
            matmul::matmul_parts(g, rows(&sc.xs, t)?, x_proj, rows(&sc.dbc_parts, t)?, parts, part_stride)?;
            (&sc.dbc_parts, part_stride)
        }
        _ => {
            w.x_proj.matmul(g, rows(&sc.xs, t)?, rows(&sc.dbc, t)?, false)?;
            (&sc.dbc, 0)
        }
    };
    let z = cols(&sc.xz, i, i)?;
    if matches!(path, ScanPath::Chunked | ScanPath::Serial) {
        // dt = rms_norm(dt, dt_layernorm); B = rms_norm(B, b_layernorm); C = rms_norm(C, c_layernorm)
        for (norm, offset, width) in [(&w.dt_norm, 0, r), (&w.b_norm, r, n), (&w.c_norm, r + n, n)] {
            rms_norm(g, cols(&sc.dbc, offset, width)?, norm, eps, cols(&sc.dbc_normed, offset, width)?)?;
        }
        // dt = dt dt_proj.weight^T; dt_proj.bias and the softplus are fused into the scan
        w.dt_proj.matmul(g, cols(&sc.dbc_normed, 0, r)?, rows(&sc.dt, t)?, false)?;
        // h = exp(delta A) h + delta B xs;  y = h C + D xs;  y * silu(z)
        let (dt, b, c) = (rows(&sc.dt, t)?, cols(&sc.dbc_normed, r, n)?, cols(&sc.dbc_normed, r + n, n)?);
        ssm_scan::selective_scan_with(g, &sc.xs, dt, &w.dt_bias, &w.a_log, b, c, &w.d, z, ssm_state, &sc.scan, &sc.y, path)?;
    } else {
        // A decode step's scan takes x_proj's raw output and applies the three norms and dt_proj itself (dt_proj
        // in one part; otherwise dt's norm and projection stay apart): 4 dispatches fewer.
        let dt = match dt_proj {
            Some(_) => cols(dbc, 0, r)?,
            None => {
                // dt = rms_norm(dt, dt_layernorm) dt_proj.weight^T, the norm fused into the matvec
                let dt_norm = RmsNorm { weight: &w.dt_norm, eps };
                let dt = Input::new(g, cols(&sc.dbc, 0, r)?, dt_norm, cols(&sc.dbc_normed, 0, r)?, true)?;
                dt.matmul(g, &w.dt_proj, rows(&sc.dt, t)?, false)?;
                rows(&sc.dt, t)?
            }
        };
        // h = exp(delta A) h + delta B xs;  y = h C + D xs;  y * silu(z), with the norms (and dt_proj) inside
        let norms = ssm_scan::ScanNorms { parts, part_stride, ..ssm_scan::ScanNorms::new(&w.b_norm, &w.c_norm, eps, dt_proj) };
        let (b, c, state) = (cols(dbc, r, n)?, cols(dbc, r + n, n)?, ssm_state);
        ssm_scan::selective_scan_normed(g, &sc.xs, dt, &w.dt_bias, &w.a_log, b, c, norms, &w.d, z, state, &sc.scan, &sc.y, path)?;
    }
    // x += (y * silu(z)) out_proj^T
    w.out_proj.matmul(g, rows(&sc.y, t)?, rows(&sc.x, t)?, true)
}
