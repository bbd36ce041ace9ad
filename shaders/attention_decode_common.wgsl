// attention_decode_common.wgsl: what the decode attention shaders (attention_decode.wgsl; attention_decode_cpu.wgsl
// for CPU adapters) share, placed after the prelude in each: the parameters, the bindings both declare alike
// (each binds q and the caches itself), the head size, and a batch row's keys. attention_decode.wgsl's header has
// the layouts.

override HEAD_DIM: u32;

// The running maximum before any key: finite, so exp(m_old - m_new) is 0 without infinities.
const NEG_BIG: f32 = -3.0e38;

struct DecodeParams {
    kv_len: u32,
    n_heads: u32,
    n_kv_heads: u32,
    q_offset: u32,
    n_splits: u32,
    keys_per_split: u32,
    scale: f32,
    rows: u32,
    q_stride: u32,
    max_len: u32,
    head_dim: u32, // HEAD_DIM, the _lanes kernels' loop bound
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: DecodeParams;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>; // [rows * n_heads * n_splits, HEAD_DIM + 2]
@group(0) @binding(5) var<storage, read_write> out: array<f32>; // [>= rows, n_heads * HEAD_DIM]
@group(0) @binding(6) var<storage, read> positions: array<u32>; // [rows]: decode_split_batch only

// Row r of a batch: its kv_len and keys per split. A full sequence (positions[r] = max_len, its row dropped by
// append_kv_batch) attends over what it holds; keys_per_split is as attention.rs computes it, kv_len over the
// splits in whole tiles of WG keys.
fn batch_keys(r: u32) -> vec2<u32> {
    let kv_len = min(positions[r] + 1u, p.max_len);
    let keys_per_split = (kv_len + p.n_splits - 1u) / p.n_splits;
    return vec2(kv_len, (keys_per_split + WG - 1u) / WG * WG);
}
