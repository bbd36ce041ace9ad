//! fill.wgsl: pseudo-random weights generated on the GPU, for synthetic full-size models in benchmarks.

use crate::gpu::{read_write, Graph, Kernel, OpId, Tensor};
use crate::kernels::{expect_dtype, u32_of, weight_variants, WEIGHT_DTYPES};
use crate::{params, shader, Result};

shader!(FILL, "fill");

params! {
    pub struct FillParams {
        pub words: u32,
        pub seed: u32,
        pub mean: f32,
        pub scale: f32,
        pub cols: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

pub static FILL_RANDOM: Kernel = Kernel {
    shader: &FILL,
    entry: "fill_random",
    params: &<FillParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read_write("out")],
    variants: weight_variants,
};

/// Fills `out` (f32, f16 or bf16) with mean + scale * u, u uniform in [-1, 1), determined by `seed`; a
/// quantized `out` gets random codes and scales that spread them over about the same range.
pub fn fill_random(g: &mut Graph, out: &Tensor, seed: u32, mean: f32, scale: f32) -> Result<OpId> {
    let op = "fill_random";
    expect_dtype(op, out, &WEIGHT_DTYPES)?;
    let words = (out.size_bytes().div_ceil(4)) as usize;
    let cols = out.shape().last().copied().unwrap_or(1);
    let params = FillParams { words: u32_of(op, "words", words)?, seed, mean, scale, cols: u32_of(op, "cols", cols)?, ..Default::default() };
    let grid = g.linear_grid(words.div_ceil(64) as u64)?;
    g.dispatch(&FILL_RANDOM, &[("W_DTYPE", out.dtype().shader_code())], &params, &[out], grid)
}
