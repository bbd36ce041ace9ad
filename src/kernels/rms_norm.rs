//! rms_norm.wgsl: y = w * x / sqrt(mean(x^2) + eps), per row.

use crate::gpu::{read, read_write, DType, Graph, Kernel, OpId, Tensor};
use crate::kernels::{IntoCols, expect_dtype, expect_shape, u32_of, ROW_THREADS};
use crate::{params, shader, Error, Result};

shader!(RMS_NORM_SHADER, "rms_norm");

params! {
    pub struct RmsNormParams {
        pub rows: u32,
        pub cols: u32,
        pub x_stride: u32,
        pub x_offset: u32,
        pub y_stride: u32,
        pub y_offset: u32,
        pub eps: f32,
        pub _pad0: u32,
    }
}

pub static RMS_NORM: Kernel = Kernel {
    shader: &RMS_NORM_SHADER,
    entry: "rms_norm",
    params: &<RmsNormParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read("x"), read("w"), read_write("y")],
    variants: rms_norm_variants,
};

/// Each row width, and with one invocation per row, rows by quads.
fn rms_norm_variants() -> Vec<Vec<(&'static str, f64)>> {
    let mut out = Vec::new();
    for row_threads in ROW_THREADS {
        for quads in [false, true].into_iter().filter(|&q| !q || row_threads == 1) {
            out.push(vec![("ROW_THREADS", row_threads as f64), ("QUADS", quads as u32 as f64)]);
        }
    }
    out
}

/// y = rms_norm(x, w). x, y: `[rows, w.len()]` columns (they may be slices of wider tensors); w: `[cols]` f32.
pub fn rms_norm<'a>(
    g: &mut Graph,
    x: impl IntoCols<'a>,
    w: &Tensor,
    eps: f32,
    y: impl IntoCols<'a>,
) -> Result<OpId> {
    let (x, y) = (x.into_cols()?, y.into_cols()?);
    let op = "rms_norm";
    expect_dtype(op, w, &[DType::F32])?;
    expect_shape(op, w, &[x.width])?;
    if y.width != x.width || y.rows != x.rows {
        return Err(Error::shape(op, format!("x is [{}, {}] but y is [{}, {}]", x.rows, x.width, y.rows, y.width)));
    }
    let params = RmsNormParams {
        rows: u32_of(op, "rows", x.rows)?,
        cols: u32_of(op, "cols", x.width)?,
        x_stride: u32_of(op, "x stride", x.stride())?,
        x_offset: u32_of(op, "x offset", x.offset)?,
        y_stride: u32_of(op, "y stride", y.stride())?,
        y_offset: u32_of(op, "y offset", y.offset)?,
        eps,
        _pad0: 0,
    };
    let rows_per_group = (64 / g.tuning.row_threads) as usize;
    let grid = g.linear_grid(x.rows.div_ceil(rows_per_group) as u64)?;
    // One invocation per row (CPU adapters) reads whole rows by quads where they start on them.
    let quads = g.tuning.row_threads == 1 && [x.width, x.stride(), x.offset].iter().all(|v| v % 4 == 0);
    let constants = [("ROW_THREADS", g.tuning.row_threads as f64), ("QUADS", quads as u32 as f64)];
    g.dispatch(&RMS_NORM, &constants, &params, &[x.tensor, w, y.tensor], grid)
}
