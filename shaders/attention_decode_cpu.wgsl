// attention_decode_cpu.wgsl: attention_decode.wgsl's split kernels for CPU adapters with 8-wide subgroups
// (kernels::attention chooses them where decode attention goes by lanes and the prefill kernel is Blocked, for
// heads of up to 64): the same partials (m, l, o) of each (row, head, split) for decode_combine, from the same
// bindings and layouts (attention_decode.wgsl's header), q and the caches bound as vec4; the sums in another order.
//
// attention_cpu.wgsl's scheme over one split: a subgroup takes HEADS heads of a row that share a kv head, its
// 8 lanes 8 keys at a time, each lane loading its key and value rows 16 bytes a load, scoring its key against
// each head's q (held by every lane) and keeping its share of each head's output, scaled by the subgroup's running
// maximum; at the end the shares are added across the subgroup into the split's partial. Where each invocation of
// attention_decode.wgsl's _lanes kernels loaded a key's and a value's every element on its own (lavapipe, the
// default model at 3,900 tokens: attention 1.87-1.92 -> 0.63-0.73 ms a decode step).
//
// Grid: ceil(rows * n_heads / HEADS * n_splits / 8) workgroups of 8 subgroups, linear; subgroup u = 8 g + s takes
// split u % n_splits of heads h0 .. h0 + HEADS of row r, (r * n_heads + h0) / HEADS = u / n_splits.

// DecodeParams, p, bindings 4-6, HEAD_DIM, NEG_BIG and batch_keys: attention_decode_common.wgsl; HEADS, SG and
// the walk over keys: attention_lanes.wgsl.
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>; // [rows, q_stride], n_heads * HEAD_DIM columns at q_offset
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<f32>>; // [rows, max_len, n_kv_heads * HEAD_DIM]
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<f32>>; // [rows, max_len, n_kv_heads * HEAD_DIM]

// The partials of split `split` of heads h0 .. h0 + HEADS of row r, over keys [split * keys_per_split, ...) of the
// first kv_len rows of the row's cache (none: m = NEG_BIG, l = 0). The whole subgroup calls it.
fn split_partial_keys(r: u32, h0: u32, split: u32, kv_len: u32, keys_per_split: u32, lane: u32) {
    let first = min(split * keys_per_split, kv_len);
    let end = min(first + keys_per_split, kv_len);
    let quads = HEAD_DIM / 4u;
    let kv_quads = p.n_kv_heads * quads; // a cache row
    let kv_col = (h0 / (p.n_heads / p.n_kv_heads)) * quads;
    let cache0 = r * p.max_len; // the row's cache starts at this cache row

    var qv: BlockQuads; // q * scale, the same in every lane
    var o: BlockQuads; // the lane's share, over its keys
    var l: BlockScalars; // the lane's share
    var m: BlockScalars; // the subgroup's
    start_keys((r * p.q_stride + p.q_offset) / 4u + h0 * quads, &qv, &o, &l, &m);
    for (var j0 = first; j0 < end; j0 += SG) {
        // Key j0 + lane, clamped to the split's last (masked).
        add_keys((cache0 + min(j0 + lane, end - 1u)) * kv_quads + kv_col, j0 + lane < end, &qv, &o, &l, &m);
    }
    // Every lane's share added up; lane 0 writes m and l, lane l the quads l, l + 8, ... of o.
    for (var hh = 0u; hh < HEADS; hh++) {
        let row = ((r * p.n_heads + h0 + hh) * p.n_splits + split) * (HEAD_DIM + 2u);
        let sum = subgroupAdd(l[hh]);
        if lane == 0u {
            partials[row] = m[hh];
            partials[row + 1u] = sum;
        }
        for (var d = 0u; d < quads; d++) {
            let share = subgroupAdd(o[hh * quads + d]);
            if d % SG == lane {
                let at = row + 2u + 4u * d;
                partials[at] = share.x;
                partials[at + 1u] = share.y;
                partials[at + 2u] = share.z;
                partials[at + 3u] = share.w;
            }
        }
    }
}

@compute @workgroup_size(WG)
fn decode_split_keys(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let u = linear_workgroup(workgroup_id, num_workgroups) * (WG / SG) + index / SG;
    if u >= p.n_heads / HEADS * p.n_splits {
        return; // the whole subgroup
    }
    split_partial_keys(0u, u / p.n_splits * HEADS, u % p.n_splits, p.kv_len, p.keys_per_split, lane);
}

@compute @workgroup_size(WG)
fn decode_split_batch_keys(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let u = linear_workgroup(workgroup_id, num_workgroups) * (WG / SG) + index / SG;
    let rh = u / p.n_splits * HEADS; // r * n_heads + h0
    let r = rh / p.n_heads;
    if r >= p.rows {
        return; // the whole subgroup
    }
    let keys = batch_keys(r);
    split_partial_keys(r, rh % p.n_heads, u % p.n_splits, keys.x, keys.y, lane);
}
