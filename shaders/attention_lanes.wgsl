// attention_lanes.wgsl: what the CPU attention kernels (attention_cpu.wgsl for prefill, attention_decode_cpu.wgsl
// for decode's splits) share, placed after their common file: a subgroup's walk over keys 8 at a time, each lane
// one key, for HEADS heads that share a kv head. Each shader binds q, k_cache and v_cache as vec4.

// Heads a subgroup takes together, sharing their kv head's keys and values: a divisor of the group
// (kernels::attention picks it).
override HEADS: u32 = 1u;

const SG: u32 = 8u; // subgroup width

// A lane's values of the subgroup's heads, head r's quad d at r * HEAD_DIM / 4 + d: HEADS * HEAD_DIM is at most
// 96 (LANES_BLOCK_FLOATS in kernels::attention).
const MAX_BLOCK_QUADS: u32 = 24u;
const MAX_HEADS: u32 = 8u;
alias BlockQuads = array<vec4<f32>, MAX_BLOCK_QUADS>;
alias BlockScalars = array<f32, MAX_HEADS>;

// The walk's start: each head's q * scale from quad q0 of q (the same in every lane), no output, no weight, and
// the running maxima at NEG_BIG.
fn start_keys(q0: u32, qv: ptr<function, BlockQuads>, o: ptr<function, BlockQuads>, l: ptr<function, BlockScalars>,
              m: ptr<function, BlockScalars>) {
    for (var e = 0u; e < HEADS * HEAD_DIM / 4u; e++) {
        (*qv)[e] = q[q0 + e] * p.scale;
        (*o)[e] = vec4(0.0);
    }
    for (var r = 0u; r < HEADS; r++) {
        (*m)[r] = NEG_BIG;
        (*l)[r] = 0.0;
    }
}

// One step of the walk: this lane's key and value rows start at quad row0 of the caches (`seen`: one of the
// query's keys; else masked, its row any valid one). Each head's score, the subgroup's running maximum m, and the
// lane's shares of the weights l and of the output o, rescaled to the new maximum and added to.
fn add_keys(row0: u32, seen: bool, qv: ptr<function, BlockQuads>, o: ptr<function, BlockQuads>,
            l: ptr<function, BlockScalars>, m: ptr<function, BlockScalars>) {
    let quads = HEAD_DIM / 4u;
    var scores: BlockScalars;
    for (var r = 0u; r < HEADS; r++) {
        scores[r] = 0.0;
    }
    for (var d = 0u; d < quads; d++) {
        let k = k_cache[row0 + d];
        for (var r = 0u; r < HEADS; r++) {
            scores[r] += dot((*qv)[r * quads + d], k);
        }
    }
    var alpha: BlockScalars;
    var weight: BlockScalars;
    for (var r = 0u; r < HEADS; r++) {
        let score = select(NEG_BIG, scores[r], seen);
        let m_new = max((*m)[r], subgroupMax(score));
        alpha[r] = exp((*m)[r] - m_new);
        weight[r] = select(0.0, exp(score - m_new), seen);
        (*l)[r] = (*l)[r] * alpha[r] + weight[r];
        (*m)[r] = m_new;
    }
    for (var d = 0u; d < quads; d++) {
        let v = v_cache[row0 + d];
        for (var r = 0u; r < HEADS; r++) {
            (*o)[r * quads + d] = (*o)[r * quads + d] * alpha[r] + weight[r] * v;
        }
    }
}
