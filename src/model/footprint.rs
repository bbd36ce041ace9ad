//! What a model takes on the GPU before it is loaded: parameters and bytes per component, the per-sequence state
//! for a context length, and whether the largest buffers fit the adapter's limits (`jamba-wgpu info --model`).
//!
//! Bytes are those the loader allocates: matrices in their stored (or quantized) type, vectors in f32, the KV
//! cache and the Mamba state in f32. Activations (a few MiB for a 256-token chunk) are not counted.

use crate::config::JambaConfig;
use crate::gpu::DType;
use crate::model::state::SequenceState;
use crate::weights::{self, Checkpoint, Quantization};
use crate::Result;

/// The parts of a Jamba model, as `info` lists them.
pub const COMPONENTS: [&str; 7] = ["embeddings", "attention", "mamba", "dense mlp", "experts", "lm_head", "norms"];

/// Parameters and bytes of one component.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Component {
    pub name: &'static str,
    pub params: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub components: Vec<Component>,
    /// KV caches and Mamba state of one sequence of `context` tokens.
    pub context: usize,
    pub kv_cache_bytes: u64,
    pub mamba_state_bytes: u64,
    /// The largest buffer that cannot be split: one row of a split matrix, an expert's or a dense MLP's matrix,
    /// a layer's K or V cache.
    pub largest_buffer: u64,
}

impl Footprint {
    pub fn weight_bytes(&self) -> u64 {
        self.components.iter().map(|c| c.bytes).sum()
    }

    pub fn params(&self) -> u64 {
        self.components.iter().map(|c| c.params).sum()
    }

    /// Weights and the state of one sequence.
    pub fn total_bytes(&self) -> u64 {
        self.weight_bytes() + self.kv_cache_bytes + self.mamba_state_bytes
    }
}

/// The component a checkpoint tensor belongs to.
fn component(name: &str) -> &'static str {
    if name.contains("embed_tokens") {
        "embeddings"
    } else if name.starts_with("lm_head") {
        "lm_head"
    } else if name.contains("layernorm") {
        "norms"
    } else if name.contains(".self_attn.") {
        "attention"
    } else if name.contains(".mamba.") {
        "mamba"
    } else if name.contains(".experts.") || name.contains(".router.") {
        "experts"
    } else {
        "dense mlp"
    }
}

/// Whether the loader keeps a tensor in its stored type (matrices) rather than f32 (norms, biases, A_log, D, the
/// conv taps).
fn is_matrix(name: &str) -> bool {
    name.ends_with("_proj.weight")
        || name.ends_with("router.weight")
        || name.ends_with("embed_tokens.weight")
        || name == "lm_head.weight"
}

/// The footprint of `cfg` with its weights stored as in `checkpoint` (None: as `stored`, e.g. bf16 for a
/// config alone), quantized by `quantize` where it applies, and one sequence of `context` tokens.
pub fn footprint(
    cfg: &JambaConfig,
    checkpoint: Option<&Checkpoint>,
    stored: DType,
    quantize: Option<Quantization>,
    context: usize,
) -> Result<Footprint> {
    let mut components: Vec<Component> =
        COMPONENTS.iter().map(|&name| Component { name, ..Default::default() }).collect();
    let mut largest = 0u64;
    let stored_format = cfg.quantization.map(|q| q.format);
    for (name, shape) in weights::expected_tensors(cfg) {
        let params: usize = shape.iter().product();
        let dtype = if !is_matrix(&name) {
            DType::F32
        } else if let Some(q) = checkpoint.map(|c| c.quantized(&name, stored_format, &shape)).transpose()?.flatten() {
            DType::Quant(q.format)
        } else {
            let cols = shape[shape.len() - 1];
            match (quantize.and_then(|q| q.format_for(&name, cols)), checkpoint) {
                (Some(format), _) => DType::Quant(format),
                (None, Some(c)) => match c.tensor(&name)?.dtype {
                    weights::DType::F32 => DType::F32,
                    weights::DType::F16 => DType::F16,
                    weights::DType::BF16 => DType::BF16,
                },
                (None, None) => stored,
            }
        };
        let bytes = dtype.storage_bytes(&shape) as u64;
        // Mixer projections, embeddings and lm_head are split by rows to fit a binding; an expert's matrix, a dense
        // MLP matrix and the vectors are one buffer each.
        let split = matches!(component(&name), "attention" | "mamba" | "embeddings" | "lm_head") && is_matrix(&name);
        let cols = shape[shape.len() - 1];
        largest = largest.max(if split { dtype.row_bytes(cols) as u64 } else { bytes });
        if let Some(c) = components.iter_mut().find(|c| c.name == component(&name)) {
            c.params += params as u64;
            c.bytes += bytes;
        }
    }
    let kv_dim = cfg.num_key_value_heads * cfg.head_dim();
    let kv_layers = cfg.layers().iter().filter(|l| l.mixer == crate::config::Mixer::Attention).count() as u64;
    let kv_cache_bytes = kv_layers * 2 * (context * kv_dim * 4) as u64;
    let mamba_state_bytes = SequenceState::bytes(cfg, context) - kv_cache_bytes;
    if kv_layers > 0 {
        largest = largest.max((context * kv_dim * 4) as u64);
    }
    Ok(Footprint { components, context, kv_cache_bytes, mamba_state_bytes, largest_buffer: largest })
}
