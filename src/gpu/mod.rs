//! The GPU layer: adapter and device ([`Context`]), tensors in buffers, the kernel harness and its pipeline cache.

mod context;
mod graph;
mod kernel;
mod pipeline;
pub mod specialize;
pub(crate) mod tensor;

pub use context::{
    Context, ContextOptions, GpuCounts, GpuFeatures, MatvecReads, MemoryCapacity, Prefill, Tuning, COOP_WORKGROUP_BYTES,
};
pub use graph::{DispatchTime, EncodeCost, Graph, OpId, Plan};
pub use kernel::{read, read_write, Access, Binding, Kernel, Params, ParamsLayout, Shader, LANES, NO_LANES, PRELUDE};
pub use pipeline::{Pipeline, Variant};
pub use tensor::{DType, Tensor};
