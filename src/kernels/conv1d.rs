//! conv1d.wgsl: Mamba's causal depthwise conv1d + bias + SiLU, carrying the last K-1 inputs as state.

use crate::gpu::{read, read_write, Binding, DType, Graph, Kernel, Tensor};
use crate::kernels::{dims2, expect_dtype, expect_shape, no_variants, u32_of, IntoCols, Cols};
use crate::{params, shader, Error, Result};

shader!(CONV1D, "conv1d");

params! {
    pub struct ConvParams {
        pub t: u32,
        pub c: u32,
        pub k: u32,
        pub x_stride: u32,
        pub x_offset: u32,
        pub state_stride: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

const BINDINGS: &[Binding] = &[read("x"), read("weight"), read("bias"), read_write("state"), read_write("out")];

/// Rows per invocation of [`CONV`] (`CONV_ROWS` in conv1d.wgsl).
const CONV_ROWS: usize = 16;

/// The convolution: one invocation per channel and block of rows; reads the old state.
/// The most taps (d_conv) the prefill conv holds in registers (`MAX_TAPS` in conv1d.wgsl); every Jamba has 4.
pub const MAX_TAPS: usize = 16;

pub static CONV: Kernel = Kernel {
    shader: &CONV1D,
    entry: "conv",
    params: &<ConvParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: taps_variants,
};

/// [`CONV`]'s: a tap alone, Jamba's 4, and the most it holds.
fn taps_variants() -> Vec<Vec<(&'static str, f64)>> {
    [1, 4, MAX_TAPS].iter().map(|&k| vec![("TAPS", k as f64)]).collect()
}

/// The state update: the last K-1 rows of state ++ x, one invocation per channel. Runs after [`CONV`].
pub static CONV_STATE: Kernel = Kernel {
    shader: &CONV1D,
    entry: "conv_state",
    params: &<ConvParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: no_variants,
};

/// One token of each of a batch's sequences: output and state update together, one invocation per (row, channel).
pub static CONV_BATCH: Kernel = Kernel {
    shader: &CONV1D,
    entry: "conv_batch",
    params: &<ConvParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: no_variants,
};

/// out = silu(causal_conv1d(state ++ x) + bias), then state = the last K-1 rows of state ++ x
/// (reference::conv1d::causal_conv1d_silu). K comes from `weight`'s shape; T from `x`'s rows.
///
/// x: [T, C] columns (e.g. the first C columns of in_proj's [T, 2C] output); state: [K-1, C] f32, read and
/// updated; weight: `[C, K]` f32; bias: `[C]` f32; out: `[>=T, C]` f32. Records two dispatches (the conv, then the
/// state update), so the update never races with the conv reading the old state; one for T = 1, where each
/// invocation reads and rewrites only its own channel's state.
pub fn causal_conv1d_silu<'a>(
    g: &mut Graph,
    x: impl IntoCols<'a>,
    state: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let x = x.into_cols()?;
    let op = "causal_conv1d_silu";
    let [c, k] = check(op, &x, weight, bias, out)?;
    expect_dtype(op, state, &[DType::F32])?;
    expect_shape(op, state, &[k - 1, c])?;
    if x.rows == 0 {
        return Ok(());
    }
    let params = ConvParams {
        t: u32_of(op, "t", x.rows)?,
        c: u32_of(op, "c", c)?,
        k: u32_of(op, "k", k)?,
        x_stride: u32_of(op, "x stride", x.stride())?,
        x_offset: u32_of(op, "x offset", x.offset)?,
        ..Default::default()
    };
    u32_of(op, "t * c", x.rows * c)?;
    let tensors = [x.tensor, weight, bias, state, out];
    if x.rows == 1 {
        // A decode step: a batch of one sequence, whose state is [K-1, C]. One dispatch instead of two, and the
        // same sums in the same order.
        let params = ConvParams { state_stride: u32_of(op, "state stride", (k - 1) * c)?, ..params };
        let grid = g.linear_grid(c.div_ceil(64) as u64)?;
        g.dispatch(&CONV_BATCH, &[], &params, &tensors, grid)?;
        return Ok(());
    }
    if k > MAX_TAPS {
        let label = weight.label();
        let message = format!("weight `{label}` has {k} taps (d_conv); the prefill conv holds at most {MAX_TAPS}");
        return Err(Error::shape(op, message));
    }
    let grid = g.linear_grid((x.rows.div_ceil(CONV_ROWS) * c.div_ceil(64)) as u64)?;
    g.dispatch(&CONV, &[("TAPS", k as f64)], &params, &tensors, grid)?;
    if k > 1 {
        let grid = g.linear_grid(c.div_ceil(64) as u64)?;
        g.dispatch(&CONV_STATE, &[], &params, &tensors, grid)?;
    }
    Ok(())
}

/// The decode step of a batch: row r of x is one token of sequence r, convolved with and appended to that
/// sequence's state (row r of `state`, [K-1, C] in its first (K-1) * C elements), as [`causal_conv1d_silu`] does
/// for one sequence and T = 1. Sequence slots may be padded (a batch's slots are aligned for views).
///
/// x: `[B, C]` columns; state: `[B, >= (K-1) * C]` f32, read and updated; weight: `[C, K]`; bias: `[C]`;
/// out: `[>= B, C]`.
pub fn causal_conv1d_silu_batch<'a>(
    g: &mut Graph,
    x: impl IntoCols<'a>,
    state: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let x = x.into_cols()?;
    let op = "causal_conv1d_silu_batch";
    let [c, k] = check(op, &x, weight, bias, out)?;
    expect_dtype(op, state, &[DType::F32])?;
    let [rows, stride] = dims2(state)?;
    if rows != x.rows || stride < (k - 1) * c {
        return Err(Error::shape(
            op,
            format!("state `{}` is [{rows}, {stride}], needs [{}, >= {}] for K = {k}, C = {c}", state.label(), x.rows, (k - 1) * c),
        ));
    }
    if x.rows == 0 {
        return Ok(());
    }
    let params = ConvParams {
        t: u32_of(op, "rows", x.rows)?,
        c: u32_of(op, "c", c)?,
        k: u32_of(op, "k", k)?,
        x_stride: u32_of(op, "x stride", x.stride())?,
        x_offset: u32_of(op, "x offset", x.offset)?,
        state_stride: u32_of(op, "state stride", stride)?,
        ..Default::default()
    };
    u32_of(op, "rows * state stride", x.rows * stride)?;
    let grid = g.linear_grid((x.rows * c).div_ceil(64) as u64)?;
    g.dispatch(&CONV_BATCH, &[], &params, &[x.tensor, weight, bias, state, out], grid)?;
    Ok(())
}

/// The checks both entry points share: dtypes, x's width against weight [C, K], bias [C], out [>= T, C].
/// Returns [C, K].
fn check(op: &str, x: &Cols, weight: &Tensor, bias: &Tensor, out: &Tensor) -> Result<[usize; 2]> {
    let [c, k] = dims2(weight)?;
    for t in [x.tensor, weight, bias, out] {
        expect_dtype(op, t, &[DType::F32])?;
    }
    if x.width != c {
        return Err(Error::shape(
            op,
            format!("x has {} columns but weight `{}` is [{c}, {k}]", x.width, weight.label()),
        ));
    }
    if k == 0 {
        return Err(Error::shape(
            op,
            format!("weight `{}` is [{c}, 0]: the conv needs at least one tap", weight.label()),
        ));
    }
    expect_shape(op, bias, &[c])?;
    let [out_rows, out_cols] = dims2(out)?;
    if out_cols != c || out_rows < x.rows {
        return Err(Error::shape(
            op,
            format!("out `{}` is [{out_rows}, {out_cols}], needs [>={}, {c}]", out.label(), x.rows),
        ));
    }
    Ok([c, k])
}
