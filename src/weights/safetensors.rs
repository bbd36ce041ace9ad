//! One safetensors file, memory-mapped (or static bytes embedded in the binary), with its parsed header.
//!
//! The header is parsed by the `safetensors` crate, which also checks that the tensors' offsets cover the data
//! exactly (so a truncated file is caught here). Tensor bytes are handed out as plain `&[u8]` slices: nothing
//! requires them to be aligned, and nothing is copied.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, SafeTensorError, TensorInfo};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// The bytes of a file: a read-only memory map, or a static slice (`include_bytes!`).
enum Bytes {
    Mapped(Mmap),
    Static(&'static [u8]),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Static(bytes) => bytes,
        }
    }
}

/// A parsed safetensors file.
pub(crate) struct SafetensorsFile {
    /// Where it came from (a path, or the name given to static bytes); shown in every error.
    pub path: PathBuf,
    bytes: Bytes,
    /// Offset of the data section: 8 bytes of header length, then the JSON header.
    data_start: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    /// Memory-maps `path` and parses its header. The file is never read whole into memory.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and we never hand out a mutable view. Like every mmap-based loader we
        // assume the checkpoint is not modified while it is open; if it were, reads could see new bytes but
        // memory safety of the Rust side does not depend on their values.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), Bytes::Mapped(map))
    }

    /// Parses static bytes (a checkpoint embedded with `include_bytes!`); `name` stands for the path in errors.
    pub fn from_static(name: &str, bytes: &'static [u8]) -> Result<Self> {
        Self::parse(PathBuf::from(name), Bytes::Static(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let (header_len, metadata) = match SafeTensors::read_metadata(bytes.as_slice()) {
            Ok(parsed) => parsed,
            Err(e) => return Err(Error::Checkpoint { message: describe(&e, bytes.as_slice().len()), path }),
        };
        Ok(SafetensorsFile { path, bytes, data_start: 8 + header_len, metadata })
    }

    /// Names of the tensors in this file, in data order.
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.metadata.info(name)
    }

    /// The raw little-endian bytes of a tensor of this file.
    pub fn data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let (start, end) = info.data_offsets;
        // read_metadata checked that the offsets tile the data section exactly; `get` keeps this panic-free anyway.
        self.bytes.as_slice().get(self.data_start + start..self.data_start + end).ok_or_else(|| Error::Checkpoint {
            path: self.path.clone(),
            message: format!("data offsets {start}..{end} run past the end of the file"),
        })
    }
}

/// A safetensors error in words a user can act on.
fn describe(e: &SafeTensorError, file_len: usize) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => format!("not a safetensors file: only {file_len} bytes, no header"),
        SafeTensorError::InvalidHeaderLength => {
            format!("not a safetensors file, or truncated: the header length runs past the end ({file_len} bytes)")
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            format!("truncated or padded: the header's tensors do not cover the {file_len} bytes of the file exactly")
        }
        other => format!("invalid safetensors header: {other}"),
    }
}
