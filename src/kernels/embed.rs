//! embed.wgsl: the embedding lookup, `y[t] = table[ids[t]]`.

use crate::gpu::{read, read_write, DType, Graph, Kernel, OpId, Tensor};
use crate::kernels::{IntoCols, dims2, expect_dtype, expect_len, u32_of, float_weight_variants, FLOAT_DTYPES};
use crate::{params, shader, Error, Result};

shader!(EMBED_SHADER, "embed");

params! {
    pub struct EmbedParams {
        pub t: u32,
        pub dim: u32,
        pub rows: u32,
        pub row0: u32,
    }
}

pub static EMBED: Kernel = Kernel {
    shader: &EMBED_SHADER,
    entry: "embed",
    params: &<EmbedParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read("table"), read("ids"), read_write("y")],
    variants: float_weight_variants,
};

/// `y[i] = table[ids[i]]` for the first `y.rows` ids. table: `[vocab, dim]`; ids: u32, checked < vocab by the
/// caller; y: [t, dim] f32.
pub fn embed<'a>(g: &mut Graph, table: &Tensor, ids: &Tensor, y: impl IntoCols<'a>) -> Result<OpId> {
    embed_rows(g, table, 0, ids, y)
}

/// The lookup for one part of a row-split table holding rows `row0..row0 + table.rows`: writes only the tokens
/// whose id falls in the part.
pub fn embed_rows<'a>(g: &mut Graph, table: &Tensor, row0: usize, ids: &Tensor, y: impl IntoCols<'a>) -> Result<OpId> {
    let y = y.into_cols()?;
    let op = "embed";
    let [rows, dim] = dims2(table)?;
    expect_dtype(op, table, &FLOAT_DTYPES)?;
    expect_dtype(op, ids, &[DType::U32])?;
    expect_len(op, ids, y.rows)?;
    if y.width != dim || y.offset != 0 || y.stride() != dim {
        return Err(Error::shape(op, format!("y `{}` must be [t, {dim}]", y.tensor.label())));
    }
    let params = EmbedParams {
        t: u32_of(op, "t", y.rows)?,
        dim: u32_of(op, "dim", dim)?,
        rows: u32_of(op, "rows", rows)?,
        row0: u32_of(op, "row0", row0)?,
    };
    let grid = g.linear_grid((y.rows * dim).div_ceil(64) as u64)?;
    g.dispatch(&EMBED, &[("W_DTYPE", table.dtype().shader_code())], &params, &[table, ids, y.tensor], grid)
}
