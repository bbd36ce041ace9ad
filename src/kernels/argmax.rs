//! argmax.wgsl: greedy sampling, the index of each row's largest value.

use crate::gpu::{read, read_write, DType, Graph, Kernel, OpId, Tensor};
use crate::kernels::{IntoCols, expect_dtype, expect_len, no_variants, u32_of};
use crate::{params, shader, Error, Result};

shader!(ARGMAX_SHADER, "argmax");

params! {
    pub struct ArgmaxParams {
        pub rows: u32,
        pub cols: u32,
        pub x_stride: u32,
        pub x_offset: u32,
    }
}

pub static ARGMAX: Kernel = Kernel {
    shader: &ARGMAX_SHADER,
    entry: "argmax",
    params: &<ArgmaxParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read("x"), read_write("out")],
    variants: no_variants,
};

/// `out[r]` = argmax of row r of x (ties to the lowest index). x: `[rows, cols]` f32 columns; out: u32.
pub fn argmax<'a>(g: &mut Graph, x: impl IntoCols<'a>, out: &Tensor) -> Result<OpId> {
    let x = x.into_cols()?;
    let op = "argmax";
    expect_dtype(op, x.tensor, &[DType::F32])?;
    expect_dtype(op, out, &[DType::U32])?;
    expect_len(op, out, x.rows)?;
    if x.width == 0 {
        return Err(Error::shape(op, format!("x `{}` has no columns", x.tensor.label())));
    }
    let params = ArgmaxParams {
        rows: u32_of(op, "rows", x.rows)?,
        cols: u32_of(op, "cols", x.width)?,
        x_stride: u32_of(op, "x stride", x.stride())?,
        x_offset: u32_of(op, "x offset", x.offset)?,
    };
    let grid = g.linear_grid(x.rows as u64)?;
    g.dispatch(&ARGMAX, &[], &params, &[x.tensor, out], grid)
}
