//! Checkpoints: memory-mapped safetensors files (one file or shards listed in an index), tensor views over their
//! bytes, and the list of tensors a config implies.
//!
//! Nothing is copied or converted at open time; [`TensorView::to_f32`] upcasts on demand.

mod checkpoint;
mod expected;
mod index;
pub mod quant;
mod write;
mod safetensors;

pub use checkpoint::Checkpoint;
pub use expected::expected_tensors;
pub use index::INDEX_FILE;
pub use quant::{QuantFormat, QuantView, Quantization};
pub use write::{write_quantized, QuantizeReport};

use std::path::Path;

use crate::error::{Error, Result};

/// The element types a Jamba checkpoint may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Raw little-endian bytes of this dtype as f32 (f16 and bf16 upcast exactly).
    pub fn to_f32(self, data: &[u8]) -> Vec<f32> {
        let halves = data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        match self {
            DType::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            DType::F16 => halves.map(|bits| half::f16::from_bits(bits).to_f32()).collect(),
            DType::BF16 => halves.map(|bits| half::bf16::from_bits(bits).to_f32()).collect(),
        }
    }

    /// Our dtype for a safetensors dtype, or None for the ones a checkpoint of ours cannot hold (ints, f64, fp8).
    fn from_safetensors(dtype: ::safetensors::Dtype) -> Option<Self> {
        match dtype {
            ::safetensors::Dtype::F32 => Some(DType::F32),
            ::safetensors::Dtype::F16 => Some(DType::F16),
            ::safetensors::Dtype::BF16 => Some(DType::BF16),
            _ => None,
        }
    }
}

/// A tensor inside a checkpoint: its metadata and its raw little-endian bytes (not necessarily aligned).
#[derive(Clone, Debug)]
pub struct TensorView<'a> {
    pub name: &'a str,
    /// The safetensors file holding it (for static bytes, the name they were given).
    pub file: &'a Path,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements: the product of the shape.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32; f16 and bf16 are upcast exactly.
    pub fn to_f32(&self) -> Vec<f32> {
        self.dtype.to_f32(self.data)
    }

    /// An [`Error::Tensor`] about this tensor.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Tensor { name: self.name.to_string(), file: self.file.display().to_string(), message: message.into() }
    }

    /// Checks the shape; the error names the tensor, its file, the expected and the found shape.
    pub fn expect_shape(self, shape: &[usize]) -> Result<Self> {
        if self.shape == shape {
            Ok(self)
        } else {
            Err(self.error(format!("expected shape {shape:?}, found {:?}", self.shape)))
        }
    }
}
