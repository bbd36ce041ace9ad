// attention_common.wgsl: what the prefill attention shaders (attention.wgsl; attention_cpu.wgsl for CPU adapters)
// share, placed after the prelude in each: the parameters, their binding, the head size and the running maximum's
// start. Each binds q, the caches and out itself (attention.wgsl's header has the layouts).

// The head size: one pipeline per size, so that loops over a head's values can have constant bounds.
override HEAD_DIM: u32;

// The running maximum before any key: finite, so exp(m_old - m_new) is 0 without infinities.
const NEG_BIG: f32 = -3.0e38;

struct PrefillParams {
    t: u32,
    kv_len: u32,
    n_heads: u32,
    n_kv_heads: u32,
    q_stride: u32,
    q_offset: u32,
    out_stride: u32,
    scale: f32,
    head_dim: u32, // HEAD_DIM
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: PrefillParams;
