//! embed.wgsl: the embedding lookup, y[t] = table[ids[t]].

use crate::gpu::{read, read_write, DType, Graph, Kernel, OpId, Tensor};
use crate::kernels::{AsCols, dims2, expect_dtype, expect_len, u32_of, weight_variants, WEIGHT_DTYPES};
use crate::{params, shader, Error, Result};

shader!(EMBED_SHADER, "embed");

params! {
    pub struct EmbedParams {
        pub t: u32,
        pub dim: u32,
        pub vocab: u32,
        pub _pad0: u32,
    }
}

pub static EMBED: Kernel = Kernel {
    shader: &EMBED_SHADER,
    entry: "embed",
    params: &<EmbedParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read("table"), read("ids"), read_write("y")],
    variants: weight_variants,
};

/// y[i] = table[ids[i]] for the first `y.rows` ids. table: [vocab, dim]; ids: u32, checked < vocab by the
/// caller (the kernel clamps); y: [t, dim] f32.
pub fn embed<'a>(g: &mut Graph, table: &Tensor, ids: &Tensor, y: impl AsCols<'a>) -> Result<OpId> {
    let y = y.as_cols()?;
    let op = "embed";
    let [vocab, dim] = dims2(table)?;
    expect_dtype(op, table, &WEIGHT_DTYPES)?;
    expect_dtype(op, ids, &[DType::U32])?;
    expect_len(op, ids, y.rows)?;
    if y.width != dim || y.offset != 0 || y.stride() != dim {
        return Err(Error::shape(op, format!("y `{}` must be [t, {dim}]", y.tensor.label())));
    }
    let params = EmbedParams {
        t: u32_of(op, "t", y.rows)?,
        dim: u32_of(op, "dim", dim)?,
        vocab: u32_of(op, "vocab", vocab)?,
        _pad0: 0,
    };
    let grid = g.linear_grid((y.rows * dim).div_ceil(64) as u64)?;
    g.dispatch(&EMBED, &[("W_DTYPE", table.dtype().shader_code())], &params, &[table, ids, y.tensor], grid)
}
