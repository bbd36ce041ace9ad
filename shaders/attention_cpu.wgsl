// attention_cpu.wgsl: attention.wgsl's prefill for CPU adapters (lavapipe's llvmpipe, with 8-wide subgroups:
// Prefill::Blocked): the same causal GQA of a chunk over the KV cache, from the same bindings and layouts (see
// attention.wgsl's header), bound as vec4 (HEAD_DIM, q's stride and offset multiples of 4); the same values, the
// sums in another order. Reference: reference::attention::attention.
//
// Why a second kernel: attention.wgsl gives each invocation a (query, head) row and has every invocation of the
// workgroup read every staged key and value, element by element; llvmpipe pays for each invocation's loads, runs
// a workgroup's barriers as context switches, and keeps arrays indexed by loop counters in memory. Here a
// subgroup takes one query and HEADS of its heads that share a kv head, and its 8 lanes take 8 keys at a time:
// lane l loads key j0 + l and value j0 + l, 16 bytes a load straight from the cache (no workgroup memory, no
// barriers), scores it against each head's q (held by every lane, in registers: the loops over a head's quads have
// constant bounds), and adds its weighted value into its own share of each head's output. The running maximum is
// the subgroup's, so the shares all scale alike; they and the sums of the weights are added across the subgroup
// at the end (the walk: attention_lanes.wgsl). Lavapipe, 256-token chunks: the default model's one attention layer
// 14.5 -> 2.7-2.8 ms (3 heads of 32 a subgroup), anchor-35m's two 39.4 -> 9.6 (2 heads of 32). Heads of more than
// 64 take attention.wgsl (kernels::attention::LANES_MAX_HEAD_DIM says why).
//
// Grid: ceil(t * n_heads / HEADS / 8) workgroups of 8 subgroups, linear; subgroup s of workgroup g takes query
// i = u / (n_heads / HEADS), heads h0 .. h0 + HEADS with h0 = HEADS (u % (n_heads / HEADS)), u = 8 g + s.

// PrefillParams, p, HEAD_DIM and NEG_BIG: attention_common.wgsl; HEADS, SG and the walk over keys:
// attention_lanes.wgsl.
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>; // [t, q_stride], n_heads * HEAD_DIM columns at q_offset
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<f32>>; // [max_len, n_kv_heads * HEAD_DIM]
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<f32>>; // [max_len, n_kv_heads * HEAD_DIM]
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>; // [>= t, out_stride], n_heads * HEAD_DIM used

@compute @workgroup_size(WG)
fn prefill_lanes(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let blocks_per_query = p.n_heads / HEADS;
    let unit = linear_workgroup(workgroup_id, num_workgroups) * (WG / SG) + index / SG;
    if unit >= p.t * blocks_per_query {
        return; // the whole subgroup
    }
    let i = unit / blocks_per_query;
    let h0 = (unit % blocks_per_query) * HEADS;
    let kv_head = h0 / (p.n_heads / p.n_kv_heads);
    let position = p.kv_len - p.t + i; // query i sees keys 0 ..= position
    let quads = HEAD_DIM / 4u;
    let kv_quads = p.n_kv_heads * quads; // a cache row
    let kv_col = kv_head * quads;

    var qv: BlockQuads; // q * scale, the same in every lane
    var o: BlockQuads; // the lane's share, over its keys
    var l: BlockScalars; // the lane's share
    var m: BlockScalars; // the subgroup's
    start_keys((i * p.q_stride + p.q_offset) / 4u + h0 * quads, &qv, &o, &l, &m);
    for (var j0 = 0u; j0 <= position; j0 += SG) {
        // Key j0 + lane, clamped to the last (masked).
        add_keys(min(j0 + lane, position) * kv_quads + kv_col, j0 + lane <= position, &qv, &o, &l, &m);
    }
    // Every lane's share added up; lane l writes quads l, l + 8, ... of each head.
    for (var r = 0u; r < HEADS; r++) {
        let sum = subgroupAdd(l[r]);
        for (var d = 0u; d < quads; d++) {
            let value = subgroupAdd(o[r * quads + d]) / sum;
            if d % SG == lane {
                out[(i * p.out_stride) / 4u + (h0 + r) * quads + d] = value;
            }
        }
    }
}
