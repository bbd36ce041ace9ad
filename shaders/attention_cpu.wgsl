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
// at the end. Lavapipe, 256-token chunks: the default model's one attention layer 14.5 -> 4.2 ms (3 heads of 32 a
// subgroup), anchor-35m's two 39.4 -> 13.7 (2 heads of 32). Heads of more than 64 take attention.wgsl
// (kernels::attention::LANES_MAX_HEAD_DIM says why).
//
// Grid: ceil(t * n_heads / HEADS / 8) workgroups of 8 subgroups, linear; subgroup s of workgroup g takes query
// i = u / (n_heads / HEADS), heads h0 .. h0 + HEADS with h0 = HEADS (u % (n_heads / HEADS)), u = 8 g + s.

// Heads of one query a subgroup takes together, sharing their kv head's keys and values: a divisor of the group
// (kernels::attention picks it).
override HEADS: u32 = 1u;

const SG: u32 = 8u; // subgroup width

// PrefillParams, p, HEAD_DIM and NEG_BIG: attention_common.wgsl.
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>; // [t, q_stride], n_heads * HEAD_DIM columns at q_offset
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<f32>>; // [max_len, n_kv_heads * HEAD_DIM]
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<f32>>; // [max_len, n_kv_heads * HEAD_DIM]
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>; // [>= t, out_stride], n_heads * HEAD_DIM used

// A lane's values of the subgroup's heads, head r's quad d at r * HEAD_DIM / 4 + d: HEADS * HEAD_DIM is at most
// 96 (LANES_BLOCK_FLOATS in kernels::attention).
const MAX_BLOCK_QUADS: u32 = 24u;
const MAX_HEADS: u32 = 8u;
alias BlockQuads = array<vec4<f32>, MAX_BLOCK_QUADS>;
alias BlockScalars = array<f32, MAX_HEADS>;

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

    // q * scale, the same in every lane; o and l each lane's share, over its keys.
    var qv: BlockQuads;
    var o: BlockQuads;
    var l: BlockScalars;
    var m: BlockScalars;
    let q0 = (i * p.q_stride + p.q_offset) / 4u + h0 * quads;
    for (var e = 0u; e < HEADS * quads; e++) {
        qv[e] = q[q0 + e] * p.scale;
        o[e] = vec4(0.0);
    }
    for (var r = 0u; r < HEADS; r++) {
        m[r] = NEG_BIG;
        l[r] = 0.0;
    }
    for (var j0 = 0u; j0 <= position; j0 += SG) {
        // Key j0 + lane, clamped to the last (masked below).
        let seen = j0 + lane <= position;
        let row0 = min(j0 + lane, position) * kv_quads + kv_col;
        var scores: BlockScalars;
        for (var r = 0u; r < HEADS; r++) {
            scores[r] = 0.0;
        }
        for (var d = 0u; d < quads; d++) {
            let k = k_cache[row0 + d];
            for (var r = 0u; r < HEADS; r++) {
                scores[r] += dot(qv[r * quads + d], k);
            }
        }
        var alpha: BlockScalars;
        var weight: BlockScalars;
        for (var r = 0u; r < HEADS; r++) {
            let score = select(NEG_BIG, scores[r], seen);
            let m_new = max(m[r], subgroupMax(score));
            alpha[r] = exp(m[r] - m_new);
            weight[r] = select(0.0, exp(score - m_new), seen);
            l[r] = l[r] * alpha[r] + weight[r];
            m[r] = m_new;
        }
        for (var d = 0u; d < quads; d++) {
            let v = v_cache[row0 + d];
            for (var r = 0u; r < HEADS; r++) {
                o[r * quads + d] = o[r * quads + d] * alpha[r] + weight[r] * v;
            }
        }
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
