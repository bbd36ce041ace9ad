//! What a sequence has seen, on the GPU: a KV cache for each attention layer, conv and SSM state for each Mamba
//! layer. Mamba state is constant in the context length; only the few attention layers grow with it.
//!
//! A batch of sequences keeps the same state in one tensor per layer and kind, one slot per sequence
//! ([`BatchState`]), so one dispatch reaches every sequence; each slot is also seen as a [`SequenceState`] of
//! views, so a sequence's prefill runs the single-sequence kernels on its own slot.

use crate::config::{JambaConfig, Mixer};
use crate::gpu::{Context, DType, Tensor};
use crate::{Error, Result};

/// One layer's state. A sequence's shapes are given; a batch's tensors hold B slots, each padded so that a
/// slot starts at a storage binding's alignment: k, v [B, slot_rows >= max_len, kv_dim], conv [B, >= (d_conv - 1)
/// * d_inner], ssm [B, >= d_inner * d_state], each slot laid out as one sequence's.
pub enum LayerState {
    Attention {
        k: Tensor, // [max_len, n_kv_heads * head_dim]
        v: Tensor, // [max_len, n_kv_heads * head_dim]
    },
    Mamba {
        conv: Tensor, // [d_conv - 1, d_inner], the last pre-conv inputs, oldest first
        ssm: Tensor,  // [d_inner, d_state]
    },
}

pub struct SequenceState {
    pub layers: Vec<LayerState>,
    /// Longest context the KV caches hold.
    pub max_len: usize,
}

impl SequenceState {
    /// The state of an empty sequence able to hold `max_len` tokens.
    pub fn new(ctx: &Context, cfg: &JambaConfig, max_len: usize) -> Result<Self> {
        let kv_dim = cfg.num_key_value_heads * cfg.head_dim();
        let (i, n, k) = (cfg.d_inner(), cfg.mamba_d_state, cfg.mamba_d_conv);
        let layers = cfg
            .layers()
            .iter()
            .enumerate()
            .map(|(l, kind)| match kind.mixer {
                Mixer::Attention => Ok(LayerState::Attention {
                    k: ctx.zeros(&format!("layer {l} k cache"), &[max_len, kv_dim], DType::F32)?,
                    v: ctx.zeros(&format!("layer {l} v cache"), &[max_len, kv_dim], DType::F32)?,
                }),
                Mixer::Mamba => Ok(LayerState::Mamba {
                    conv: ctx.zeros(&format!("layer {l} conv state"), &[k - 1, i], DType::F32)?,
                    ssm: ctx.zeros(&format!("layer {l} ssm state"), &[i, n], DType::F32)?,
                }),
            })
            .collect::<Result<_>>()?;
        Ok(SequenceState { layers, max_len })
    }

    /// Bytes of GPU memory a state of `max_len` tokens takes.
    pub fn bytes(cfg: &JambaConfig, max_len: usize) -> u64 {
        let kv_dim = cfg.num_key_value_heads * cfg.head_dim();
        let (i, n, k) = (cfg.d_inner(), cfg.mamba_d_state, cfg.mamba_d_conv);
        let per_layer = |mixer| match mixer {
            Mixer::Attention => 2 * max_len * kv_dim,
            Mixer::Mamba => (k - 1) * i + i * n,
        };
        cfg.layers().iter().map(|l| 4 * per_layer(l.mixer) as u64).sum()
    }

    /// Zeroes the recurrent state (the KV caches need no clearing: the position goes back to 0).
    pub fn clear(&self, ctx: &Context) {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        for layer in &self.layers {
            if let LayerState::Mamba { conv, ssm } = layer {
                for t in [conv, ssm] {
                    encoder.clear_buffer(t.buffer(), t.offset(), Some(t.size_bytes()));
                }
            }
        }
        ctx.queue.submit([encoder.finish()]);
    }

    /// A copy of this state (the first `len` rows of each KV cache), for forking a sequence.
    pub fn fork(&self, ctx: &Context, cfg: &JambaConfig, len: usize) -> Result<Self> {
        let copy = SequenceState::new(ctx, cfg, self.max_len)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        for (from, to) in self.layers.iter().zip(&copy.layers) {
            let pairs: Vec<(&Tensor, &Tensor, u64)> = match (from, to) {
                (LayerState::Attention { k, v }, LayerState::Attention { k: k2, v: v2 }) => {
                    let bytes = (len * k.shape()[1] * 4) as u64;
                    vec![(k, k2, bytes), (v, v2, bytes)]
                }
                (LayerState::Mamba { conv, ssm }, LayerState::Mamba { conv: c2, ssm: s2 }) => {
                    vec![(conv, c2, conv.size_bytes()), (ssm, s2, ssm.size_bytes())]
                }
                _ => unreachable!("both states were built from the same config"),
            };
            for (src, dst, bytes) in pairs {
                if bytes > 0 {
                    encoder.copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), 0, bytes);
                }
            }
        }
        ctx.queue.submit([encoder.finish()]);
        ctx.check()?;
        Ok(copy)
    }
}

/// The state of a batch of sequences: every layer's state for all of them, one tensor per layer and kind.
pub struct BatchState {
    /// Per layer: k, v [B, slot_rows, kv_dim]; conv, ssm [B, slot] (see [`LayerState`]).
    pub layers: Vec<LayerState>,
    /// Sequence s's slot of every tensor, as one sequence's state of views.
    sequences: Vec<SequenceState>,
}

impl BatchState {
    /// The state of `sequences` empty sequences able to hold `max_len` tokens each. Fails, saying by how much,
    /// when a layer's KV cache for all of them exceeds what one storage binding may hold.
    pub fn new(ctx: &Context, cfg: &JambaConfig, sequences: usize, max_len: usize) -> Result<Self> {
        let kv_dim = cfg.num_key_value_heads * cfg.head_dim();
        let (i, n, d_conv) = (cfg.d_inner(), cfg.mamba_d_state, cfg.mamba_d_conv);
        // Slots start at multiples of the binding alignment (a power of two, in bytes), so each is a view.
        let align = ctx.storage_alignment().max(4) as usize;
        let slot_rows = max_len.next_multiple_of(align / gcd(align, 4 * kv_dim.max(1)));
        let slot = |elements: usize| elements.next_multiple_of(align / 4);
        let has_attention = cfg.layers().iter().any(|l| l.mixer == Mixer::Attention);
        let cache_bytes = (sequences * slot_rows * kv_dim * 4) as u64;
        let limit = ctx.limits().max_storage_buffer_binding_size;
        if has_attention && cache_bytes > limit.min(ctx.limits().max_buffer_size) {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            return Err(Error::Input(format!(
                "a batch of {sequences} sequences of {max_len} tokens needs {:.1} MiB per layer's K (and V) cache \
                 ({sequences} x {slot_rows} rows x {kv_dim} x 4 bytes), over the device's storage binding limit of \
                 {:.1} MiB: use fewer sequences or a shorter context",
                mib(cache_bytes),
                mib(limit)
            )));
        }
        let mut layers = Vec::new();
        for (l, kind) in cfg.layers().iter().enumerate() {
            let zeros = |what: &str, shape: &[usize]| ctx.zeros(&format!("layer {l} batch {what}"), shape, DType::F32);
            layers.push(match kind.mixer {
                Mixer::Attention => LayerState::Attention {
                    k: zeros("k cache", &[sequences, slot_rows, kv_dim])?,
                    v: zeros("v cache", &[sequences, slot_rows, kv_dim])?,
                },
                Mixer::Mamba => LayerState::Mamba {
                    conv: zeros("conv state", &[sequences, slot((d_conv - 1) * i)])?,
                    ssm: zeros("ssm state", &[sequences, slot(i * n)])?,
                },
            });
        }
        let sequences = (0..sequences)
            .map(|s| {
                let view = |t: &Tensor, shape: &[usize]| {
                    let slot_bytes = t.size_bytes() / t.shape()[0] as u64;
                    ctx.view(t, s as u64 * slot_bytes, shape, &format!("{} of sequence {s}", t.label()))
                };
                let layers = layers
                    .iter()
                    .map(|layer| match layer {
                        LayerState::Attention { k, v } => Ok(LayerState::Attention {
                            k: view(k, &[max_len, kv_dim])?,
                            v: view(v, &[max_len, kv_dim])?,
                        }),
                        LayerState::Mamba { conv, ssm } => Ok(LayerState::Mamba {
                            conv: view(conv, &[d_conv - 1, i])?,
                            ssm: view(ssm, &[i, n])?,
                        }),
                    })
                    .collect::<Result<_>>()?;
                Ok(SequenceState { layers, max_len })
            })
            .collect::<Result<_>>()?;
        Ok(BatchState { layers, sequences })
    }

    /// Sequences in the batch.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// Sequence `s`'s state: views of its slots, for the single-sequence kernels (prefill).
    pub fn sequence(&self, s: usize) -> &SequenceState {
        &self.sequences[s]
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
