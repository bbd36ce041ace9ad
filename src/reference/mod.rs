//! The CPU f32 twin of every kernel family, and (in `forward`) the reference forward built from them.
//!
//! Everything here is plain, single-threaded-looking f32 code written to be read: it is the executable
//! specification that each WGSL kernel is tested against, and the oracle for the GPU model.
//!
//! Kernel families: [`ops`] (matmul, norms, activations), [`conv1d`], [`ssm`] (selective scan), [`attention`],
//! [`moe`] (routing). [`params`] loads the weights; [`forward`] is the model.

pub mod attention;
pub mod conv1d;
pub mod forward;
pub mod moe;
pub mod ops;
pub mod params;
pub mod ssm;

pub use forward::{Generation, KvCache, LayerState, MambaState, ReferenceModel, State, Trace};
pub use ops::*;
