// kv_cache.wgsl: append a chunk's keys and values to an attention layer's KV cache.
// k_cache[pos + r, c] = k_new[r, c] and v_cache[pos + r, c] = v_new[r, c] for r < rows, c < kv_dim.
// Reference: the caller's bookkeeping; reference::attention::attention reads the cache this fills.
// Layout: k_new[r * k_stride + k_offset + c] (columns of a fused qkv projection, or a whole matrix), the same for
// v_new; k_cache, v_cache: [max_len, kv_dim] rows. Rows at or past max_len are dropped, never written out of bounds
// (the Rust wrapper refuses them; this guards plans replayed with a new pos).
// Grid: ceil(rows * kv_dim / WG) workgroups, linear; one invocation per copied element of K and of V.
// append_kv_batch: a batch's decode step, row r one token of sequence r. The caches are [rows, max_len, kv_dim]
// (sequence r's cache at rows r * max_len ..), and row r lands at its own position, positions[r] (pos is unused).
// Same grid. append_kv does not read `positions` (its caller binds any read-only buffer there).

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
@group(0) @binding(4) var<storage, read_write> v_cache: array<f32>; // [max_len, kv_dim]; a batch's [rows, max_len, kv_dim]
@group(0) @binding(5) var<storage, read> positions: array<u32>; // [rows]: append_kv_batch only

// Copies element c of row r of k_new and v_new to cache row `dst_row`.
fn copy_row(r: u32, c: u32, dst_row: u32) {
    let dst = dst_row * p.kv_dim + c;
    k_cache[dst] = k_new[r * p.k_stride + p.k_offset + c];
    v_cache[dst] = v_new[r * p.v_stride + p.v_offset + c];
}

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
    copy_row(r, c, p.pos + r);
}

@compute @workgroup_size(WG)
fn append_kv_batch(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
    let r = e / p.kv_dim;
    if r >= p.rows || positions[r] >= p.max_len {
        return; // a sequence already full drops its row rather than write into the next one's cache
    }
    copy_row(r, e % p.kv_dim, r * p.max_len + positions[r]);
}
