//! The library's one error type. Every message names the thing at fault and what was expected of it.

use std::path::PathBuf;

/// Everything that can go wrong in jamba-wgpu.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched the request (backend, name), or none exists at all.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),

    /// The adapter refused to create a device.
    #[error("could not open a device on adapter {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },

    /// A wgpu validation or out-of-memory error, with what we were doing when it was raised.
    #[error("GPU error while {context}: {message}")]
    Gpu { context: String, message: String },

    /// The device was lost (driver reset, out of memory, destroyed).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),

    /// Waiting for the GPU took longer than the configured limit.
    #[error("GPU did not finish {context} within {seconds} s")]
    Timeout { context: String, seconds: u64 },

    /// A buffer or binding larger than the device allows.
    #[error("buffer `{name}` needs {size} bytes, over the device's {limit_name} of {limit} bytes")]
    BufferTooLarge { name: String, size: u64, limit_name: &'static str, limit: u64 },

    /// A dispatch larger than the device allows.
    #[error("dispatch of `{kernel}` needs {workgroups} workgroups, over the device's limit of {limit} per dimension")]
    DispatchTooLarge { kernel: String, workgroups: u64, limit: u32 },

    /// Shapes that do not fit together in an operation.
    #[error("shape mismatch in {op}: {message}")]
    Shape { op: String, message: String },

    /// A file could not be read. The I/O error is in the message, not a `source()`, so that a chain printer
    /// (`{e:#}`) does not say it twice.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    /// A config.json field is missing or holds a value we cannot run.
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },

    /// A tensor in a checkpoint is missing, or of the wrong dtype or shape.
    #[error("tensor `{name}` ({file}): {message}")]
    Tensor { name: String, file: String, message: String },

    /// A checkpoint file that is not valid safetensors, or a broken shard index.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },

    /// The tokenizer could not be loaded or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A request that cannot be served: an out-of-range token id, an empty or too-long prompt, ...
    #[error("invalid input: {0}")]
    Input(String),

    /// A model whose weights, all resident, need more memory than the adapter has ([`Context::memory_capacity`]).
    ///
    /// [`Context::memory_capacity`]: crate::gpu::Context::memory_capacity
    #[error(
        "the model's weights need {} ({need} bytes), more than the {} ({have} bytes) of {memory} on {adapter}{hint}",
        gib(*.need),
        gib(*.have)
    )]
    OutOfMemory { need: u64, have: u64, memory: &'static str, adapter: String, hint: &'static str },

    /// A model that cannot run within the GPU memory it was given (`--gpu-memory`): what it needs at least.
    #[error("GPU memory budget of {budget} bytes is too small: {what} need {need} bytes")]
    MemoryBudget { budget: u64, need: u64, what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bytes as GiB with one decimal, for messages.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }

    pub(crate) fn shape(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Shape { op: op.into(), message: message.into() }
    }
}
