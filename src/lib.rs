//! jamba-wgpu: a portable runtime for AI21's Jamba language models (Mamba-1 state-space layers interleaved with
//! attention, mixture-of-experts MLPs), running WGSL compute shaders through wgpu on Vulkan, Metal and DX12.
//!
//! The data flow: checkpoint directory -> [`config`] + memory-mapped [`weights`] -> GPU buffers -> per-layer plan
//! -> encoded compute passes -> sampled token -> text. Every GPU kernel in [`kernels`] has a CPU twin in
//! [`reference`](mod@reference), and tests hold each to the other.

pub mod bench;
pub mod config;
pub mod default_model;
pub mod error;
pub mod generate;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod perplexity;
pub mod reference;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
pub use generate::{generate, FinishReason, Forward, GenerateOptions, Generated, Generation, ReferenceSession, Timings};
pub use model::{Batch, LoadOptions, Model, Session, SessionOptions, StreamingStats, Tune};
pub use perplexity::{perplexity, Perplexity};
pub use sampling::SamplingOptions;
