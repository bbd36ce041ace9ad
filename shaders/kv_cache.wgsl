// kv_cache.wgsl: append a chunk's keys and values to an attention layer's KV cache.
// k_cache[pos + r, c] = k_new[r, c] and v_cache[pos + r, c] = v_new[r, c] for r < rows, c < kv_dim.
// Reference: the caller's bookkeeping; reference::attention::attention reads the cache this fills.
// Layout: k_new[r * k_stride + k_offset + c] (columns of a fused qkv projection, or a whole matrix), the same for
// v_new; k_cache, v_cache: [max_len, kv_dim] rows. Rows at or past max_len are dropped, never written out of bounds
// (the Rust wrapper refuses them; this guards plans replayed with a new pos).
// Grid: ceil(rows * kv_dim / WG) workgroups, linear; one invocation per copied element of K and of V.

struct AppendKvParams {
    rows: u32,
    kv_dim: u32,
    pos: u32,
    max_len: u32,
    k_stride: u32,
    k_offset: u32,
    v_stride: u32,
    v_offset: u32,
}

@group(0) @binding(0) var<uniform> p: AppendKvParams;
@group(0) @binding(1) var<storage, read> k_new: array<f32>; // [rows, k_stride], kv_dim columns at k_offset
@group(0) @binding(2) var<storage, read> v_new: array<f32>; // [rows, v_stride], kv_dim columns at v_offset
@group(0) @binding(3) var<storage, read_write> k_cache: array<f32>; // [max_len, kv_dim]
@group(0) @binding(4) var<storage, read_write> v_cache: array<f32>; // [max_len, kv_dim]

@compute @workgroup_size(WG)
fn append_kv(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
    let r = e / p.kv_dim;
    let c = e % p.kv_dim;
    // Written so that pos + r cannot wrap around u32 (a replayed pos may be anything).
    if r >= p.rows || p.pos >= p.max_len || r >= p.max_len - p.pos {
        return;
    }
    let dst = (p.pos + r) * p.kv_dim + c;
    k_cache[dst] = k_new[r * p.k_stride + p.k_offset + c];
    v_cache[dst] = v_new[r * p.v_stride + p.v_offset + c];
}
