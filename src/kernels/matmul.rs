//! matmul.wgsl: y = x W^T (+ y), the Linear layer, for f32, f16, bf16 and quantized (q8, q4) weights.

use crate::gpu::{read, read_write, Graph, Kernel, OpId, Prefill, Tensor};
use crate::kernels::{IntoCols, dims2, expect_dtype, u32_of, weight_row_variants, weight_variants, WEIGHT_DTYPES};
use crate::{params, shader, Error, Result};

shader!(MATMUL, "matmul");
shader!(MATMUL_CPU, "matmul_cpu");

params! {
    pub struct MatmulParams {
        pub t: u32,
        pub n: u32,
        pub k: u32,
        pub w_row0: u32,
        pub x_stride: u32,
        pub x_offset: u32,
        pub y_stride: u32,
        pub y_offset: u32,
        pub accumulate: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

const BINDINGS: &[crate::gpu::Binding] = &[read("x"), read("w"), read_write("y")];

/// Decode: a row reduction per output element.
pub static MATVEC: Kernel = Kernel {
    shader: &MATMUL,
    entry: "matvec",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: weight_row_variants,
};

/// Prefill: 32 x 32 output tiles through workgroup memory.
pub static TILED: Kernel = Kernel {
    shader: &MATMUL,
    entry: "tiled",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: weight_variants,
};

/// Prefill on CPU adapters: register blocks of 16 rows x 4 columns per invocation, x shared across the subgroup.
pub static BLOCKED: Kernel = Kernel {
    shader: &MATMUL_CPU,
    entry: "blocked",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: weight_variants,
};

/// Rows and columns of y per workgroup of [`BLOCKED`] (8 subgroups of 16 rows each; 8 lanes of 4 columns each).
const BLOCK_ROWS: usize = 128;
const BLOCK_COLS: usize = 32;

/// y = x W^T, or y += x W^T when `accumulate`. x: [t, k] columns, w: [n, k] weights, y: [t, n] columns.
pub fn matmul<'a>(
    g: &mut Graph,
    x: impl IntoCols<'a>,
    w: &Tensor,
    y: impl IntoCols<'a>,
    accumulate: bool,
) -> Result<OpId> {
    let (x, y) = (x.into_cols()?, y.into_cols()?);
    let op = "matmul";
    let [n, k] = dims2(w)?;
    expect_dtype(op, w, &WEIGHT_DTYPES)?;
    if x.width != k || y.width != n || x.rows != y.rows {
        return Err(Error::shape(
            op,
            format!(
                "x `{}` [{}, {}] times `{}` [{n}, {k}]^T does not fit y `{}` [{}, {}]",
                x.tensor.label(),
                x.rows,
                x.width,
                w.label(),
                y.tensor.label(),
                y.rows,
                y.width
            ),
        ));
    }
    let params = MatmulParams {
        t: u32_of(op, "t", x.rows)?,
        n: u32_of(op, "n", n)?,
        k: u32_of(op, "k", k)?,
        x_stride: u32_of(op, "x stride", x.stride())?,
        x_offset: u32_of(op, "x offset", x.offset)?,
        y_stride: u32_of(op, "y stride", y.stride())?,
        y_offset: u32_of(op, "y offset", y.offset)?,
        accumulate: accumulate as u32,
        ..Default::default()
    };
    let dtype = ("W_DTYPE", w.dtype().shader_code());
    let tensors = [x.tensor, w, y.tensor];
    if x.rows >= g.tuning.tiled_min_rows && g.tuning.prefill == Prefill::Blocked {
        let grid = g.linear_grid((x.rows.div_ceil(BLOCK_ROWS) * n.div_ceil(BLOCK_COLS)) as u64)?;
        g.dispatch(&BLOCKED, &[dtype], &params, &tensors, grid)
    } else if x.rows >= g.tuning.tiled_min_rows {
        let grid = g.linear_grid((x.rows.div_ceil(32) * n.div_ceil(32)) as u64)?;
        g.dispatch(&TILED, &[dtype], &params, &tensors, grid)
    } else {
        let rows_per_group = (64 / g.tuning.row_threads) as usize;
        let grid = g.linear_grid((x.rows * n.div_ceil(rows_per_group)) as u64)?;
        let row_threads = ("ROW_THREADS", g.tuning.row_threads as f64);
        g.dispatch(&MATVEC, &[dtype, row_threads], &params, &tensors, grid)
    }
}
