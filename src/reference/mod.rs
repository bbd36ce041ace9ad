//! The CPU f32 twin of every kernel family, and (in `forward`) the reference forward built from them.
//!
//! Everything here is plain, single-threaded-looking f32 code written to be read: it is the executable
//! specification that each WGSL kernel is tested against, and the oracle for the GPU model.

pub mod ops;

pub use ops::*;
