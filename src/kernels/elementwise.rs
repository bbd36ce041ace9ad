//! elementwise.wgsl: in-place pointwise kernels: the SwiGLU gate, the residual add, softplus.

use crate::gpu::{read, read_write, DType, Graph, Kernel, OpId, Tensor};
use crate::kernels::{expect_dtype, no_variants, u32_of};
use crate::{params, shader, Error, Result};

shader!(ELEMENTWISE, "elementwise");

params! {
    pub struct ElementwiseParams {
        pub n: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

macro_rules! elementwise_kernel {
    ($name:ident, $entry:literal) => {
        pub static $name: Kernel = Kernel {
            shader: &ELEMENTWISE,
            entry: $entry,
            params: &<ElementwiseParams as crate::gpu::Params>::LAYOUT,
            bindings: &[read("a"), read_write("out")],
            variants: no_variants,
        };
    };
}

elementwise_kernel!(SILU_MUL, "silu_mul");
elementwise_kernel!(ADD_ASSIGN, "add_assign");
elementwise_kernel!(SOFTPLUS, "softplus_map");

fn pointwise(g: &mut Graph, kernel: &'static Kernel, a: &Tensor, out: &Tensor) -> Result<OpId> {
    let op = kernel.name();
    expect_dtype(&op, a, &[DType::F32])?;
    expect_dtype(&op, out, &[DType::F32])?;
    if a.len() != out.len() {
        return Err(Error::shape(&op, format!("`{}` has {} elements, `{}` {}", a.label(), a.len(), out.label(), out.len())));
    }
    let params = ElementwiseParams { n: u32_of(&op, "n", a.len())?, ..Default::default() };
    let grid = g.linear_grid(a.len().div_ceil(64) as u64)?;
    g.dispatch(kernel, &[], &params, &[a, out], grid)
}

/// gate = silu(gate) * up: the SwiGLU gate, in place.
pub fn silu_mul(g: &mut Graph, gate: &Tensor, up: &Tensor) -> Result<OpId> {
    pointwise(g, &SILU_MUL, up, gate)
}

/// x += y: the residual connection, in place.
pub fn add_assign(g: &mut Graph, x: &Tensor, y: &Tensor) -> Result<OpId> {
    pointwise(g, &ADD_ASSIGN, y, x)
}

/// out = softplus(a).
pub fn softplus(g: &mut Graph, a: &Tensor, out: &Tensor) -> Result<OpId> {
    pointwise(g, &SOFTPLUS, a, out)
}
