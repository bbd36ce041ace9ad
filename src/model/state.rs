//! What a sequence has seen, on the GPU: a KV cache for each attention layer, conv and SSM state for each Mamba
//! layer. Mamba state is constant in the context length; only the few attention layers grow with it.

use crate::config::{JambaConfig, Mixer};
use crate::gpu::{Context, DType, Tensor};
use crate::Result;

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
                encoder.clear_buffer(conv.buffer(), 0, None);
                encoder.clear_buffer(ssm.buffer(), 0, None);
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
