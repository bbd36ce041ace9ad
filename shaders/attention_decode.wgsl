// attention_decode.wgsl: attention of one new token over a KV cache of any length, split along the sequence
// (split-k, "flash decoding"), in two dispatches; or of one new token of each of `rows` sequences of a batch, each
// over its own cache and length. Jamba has no positional encoding.
// Reference: reference::attention::attention with t = 1 (the query sits at position kv_len - 1 and sees every row).
// Layout: q[r * q_stride + q_offset + h * HEAD_DIM + d] (row r of a fused qkv projection, or of a whole
// [rows, n_heads * HEAD_DIM] matrix); k_cache, v_cache: [rows, max_len, n_kv_heads * HEAD_DIM], sequence r's
// cache at rows r * max_len .., the first kv_len valid; head h reads kv head h / group. One sequence is rows = 1.
// partials: [rows * n_heads * n_splits, HEAD_DIM + 2], row (r * n_heads + h) * n_splits + split = (m, l, o[HEAD_DIM]):
// the split's maximum score, its sum of exp(score - m), and its unnormalised output sum_j exp(s_j - m) v_j.
// out: [>= rows, n_heads * HEAD_DIM].
// - decode_split: one sequence (rows = 1), kv_len and keys_per_split from the params. One workgroup per (head h,
//   split); the split covers keys [split * keys_per_split, ... + keys_per_split) clipped to kv_len, possibly none
//   (then it writes l = 0). Tiles of WG keys: invocation j scores key j (q staged in workgroup memory), then the
//   invocations, one per output element d, accumulate the tile's weighted values (coalesced reads of V rows).
//   Grid: n_heads * n_splits workgroups, linear (workgroup = h * n_splits + split).
// - decode_split_batch: the same per (row r, head, split), with kv_len = positions[r] + 1 (the row's token was
//   appended at positions[r]) and keys_per_split computed from it as the Rust side does for one sequence.
//   Grid: rows * n_heads * n_splits workgroups, linear (workgroup = (r * n_heads + h) * n_splits + split).
// - decode_combine: one workgroup per (row, head), one invocation per d: out = sum_s e^(m_s - M) o_s /
//   sum_s e^(m_s - M) l_s over the splits with l_s > 0, M their largest m_s. Grid: rows * n_heads workgroups, linear.
// - decode_split_lanes, decode_split_batch_lanes: decode_split and decode_split_batch with one invocation per
//   (row, head, split) instead of a workgroup (Tuning::decode_attention_lanes: CPU adapters, where every barrier
//   is a context switch and every invocation's load its own): no workgroup memory or barriers; the split's keys
//   KEYS_A_ROUND at a time, their scores kept in registers, the running maximum and the output rescaled once a
//   round. The same partials, rounded otherwise. Grid: ceil(rows * n_heads * n_splits / LANES_WG) workgroups of
//   LANES_WG, linear (invocation (r * n_heads + h) * n_splits + split).
// n_splits is fixed by the cache's length; keys_per_split follows kv_len, so a plan replays with a growing kv_len.
// decode_split does not read `positions` (its caller binds any read-only buffer there).

const MAX_HEAD_DIM: u32 = 256u;
const D_PER_LANE: u32 = MAX_HEAD_DIM / WG;
// Value rows a split loads per round, all before it uses any: with one at a time, each invocation had a single
// load in flight, and a split's 64 keys waited out 64 memory latencies in a row.
const KEYS_A_ROUND: u32 = 8u;

// DecodeParams, p, bindings 4-6, HEAD_DIM, NEG_BIG and batch_keys: attention_decode_common.wgsl.
@group(0) @binding(1) var<storage, read> q: array<f32>; // [rows, q_stride], n_heads * HEAD_DIM columns at q_offset
@group(0) @binding(2) var<storage, read> k_cache: array<f32>; // [rows, max_len, n_kv_heads * HEAD_DIM]
@group(0) @binding(3) var<storage, read> v_cache: array<f32>; // [rows, max_len, n_kv_heads * HEAD_DIM]

var<workgroup> q_head: array<f32, MAX_HEAD_DIM>; // [HEAD_DIM] q * scale of this workgroup's head
var<workgroup> scores: array<f32, WG>; // [WG] scores of the tile's keys

// The partial result of split `split` of head h of row r, over keys [split * keys_per_split, ...) of the first
// kv_len rows of the row's cache. Every invocation of the workgroup calls it with the same arguments (it holds
// barriers).
fn split_partial(r: u32, h: u32, split: u32, kv_len: u32, keys_per_split: u32, lane: u32) {
    let first = min(split * keys_per_split, kv_len);
    let end = min(first + keys_per_split, kv_len);
    let kv_dim = p.n_kv_heads * HEAD_DIM;
    let kv_col = (h / (p.n_heads / p.n_kv_heads)) * HEAD_DIM;
    let cache0 = r * p.max_len; // the row's cache starts at this cache row
    for (var d = lane; d < HEAD_DIM; d += WG) {
        q_head[d] = q[r * p.q_stride + p.q_offset + h * HEAD_DIM + d] * p.scale;
    }

    var o: array<f32, D_PER_LANE>; // o[c] is element lane + c * WG
    var m = NEG_BIG;
    var l = 0.0;
    for (var j0 = first; j0 < end; j0 += WG) {
        workgroupBarrier(); // q_head is written; every invocation is done with the previous tile's scores
        let j = j0 + lane;
        var score = NEG_BIG;
        if j < end {
            score = 0.0;
            let k0 = (cache0 + j) * kv_dim + kv_col;
            for (var d = 0u; d < HEAD_DIM; d++) {
                score += q_head[d] * k_cache[k0 + d];
            }
        }
        scores[lane] = score;
        workgroupBarrier();
        let n = min(WG, end - j0);
        var m_new = m;
        for (var jj = 0u; jj < n; jj++) {
            m_new = max(m_new, scores[jj]);
        }
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var c = 0u; c < D_PER_LANE; c++) {
            o[c] *= alpha;
        }
        let d_lanes = (HEAD_DIM + WG - 1u) / WG; // the o[c] in use
        for (var jj0 = 0u; jj0 < n; jj0 += KEYS_A_ROUND) {
            var vs: array<array<f32, D_PER_LANE>, KEYS_A_ROUND>; // past the tile's keys or the head: clamped loads
            for (var u = 0u; u < KEYS_A_ROUND; u++) {
                let v0 = (cache0 + j0 + min(jj0 + u, n - 1u)) * kv_dim + kv_col;
                for (var c = 0u; c < d_lanes; c++) {
                    vs[u][c] = v_cache[v0 + min(lane + c * WG, HEAD_DIM - 1u)];
                }
            }
            for (var u = 0u; u < KEYS_A_ROUND; u++) {
                if jj0 + u < n {
                    let weight = exp(scores[jj0 + u] - m_new);
                    l += weight;
                    for (var c = 0u; c < d_lanes; c++) {
                        if lane + c * WG < HEAD_DIM {
                            o[c] += weight * vs[u][c];
                        }
                    }
                }
            }
        }
        m = m_new;
    }
    let row = ((r * p.n_heads + h) * p.n_splits + split) * (HEAD_DIM + 2u);
    if lane == 0u {
        partials[row] = m;
        partials[row + 1u] = l;
    }
    for (var c = 0u; c < D_PER_LANE; c++) {
        let d = lane + c * WG;
        if d < HEAD_DIM {
            partials[row + 2u + d] = o[c];
        }
    }
}

@compute @workgroup_size(WG)
fn decode_split(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let workgroup = linear_workgroup(workgroup_id, num_workgroups);
    let h = workgroup / p.n_splits;
    if h >= p.n_heads {
        return; // padding of a 2-D grid: the whole workgroup leaves
    }
    split_partial(0u, h, workgroup % p.n_splits, p.kv_len, p.keys_per_split, lane);
}

@compute @workgroup_size(WG)
fn decode_split_batch(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let workgroup = linear_workgroup(workgroup_id, num_workgroups);
    let rh = workgroup / p.n_splits; // r * n_heads + h
    let r = rh / p.n_heads;
    if r >= p.rows {
        return;
    }
    let keys = batch_keys(r);
    split_partial(r, rh % p.n_heads, workgroup % p.n_splits, keys.x, keys.y, lane);
}

// Invocations per workgroup of the _lanes entry points: one subgroup of a CPU adapter, so that a cache's few
// hundred splits still spread over every core.
const LANES_WG: u32 = 8u;

// split_partial computed by one invocation on its own (the _lanes entry points). Its loops over the head run to
// p.head_dim rather than the constant HEAD_DIM: llvmpipe unrolls constant loops of a small head and then takes
// a third of a second to compile the kernel (the default model's first decode step waited for it).
fn split_partial_lane(r: u32, h: u32, split: u32, kv_len: u32, keys_per_split: u32) {
    let head_dim = p.head_dim;
    let first = min(split * keys_per_split, kv_len);
    let end = min(first + keys_per_split, kv_len);
    let kv_dim = p.n_kv_heads * head_dim;
    let kv_col = (h / (p.n_heads / p.n_kv_heads)) * head_dim;
    let cache0 = r * p.max_len;
    let q0 = r * p.q_stride + p.q_offset + h * head_dim;
    var q_scaled: array<f32, MAX_HEAD_DIM>;
    for (var d = 0u; d < head_dim; d++) {
        q_scaled[d] = q[q0 + d] * p.scale;
    }
    var o: array<f32, MAX_HEAD_DIM>;
    var m = NEG_BIG;
    var l = 0.0;
    for (var j0 = first; j0 < end; j0 += KEYS_A_ROUND) {
        var scores_round: array<f32, KEYS_A_ROUND>; // NEG_BIG past the split's last key
        var m_new = m;
        for (var u = 0u; u < KEYS_A_ROUND; u++) {
            let k0 = (cache0 + min(j0 + u, end - 1u)) * kv_dim + kv_col;
            var score = 0.0;
            for (var d = 0u; d < head_dim; d++) {
                score += q_scaled[d] * k_cache[k0 + d];
            }
            scores_round[u] = select(NEG_BIG, score, j0 + u < end);
            m_new = max(m_new, scores_round[u]);
        }
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var d = 0u; d < head_dim; d++) {
            o[d] *= alpha;
        }
        for (var u = 0u; u < KEYS_A_ROUND; u++) {
            if j0 + u < end {
                let weight = exp(scores_round[u] - m_new);
                l += weight;
                let v0 = (cache0 + j0 + u) * kv_dim + kv_col;
                for (var d = 0u; d < head_dim; d++) {
                    o[d] += weight * v_cache[v0 + d];
                }
            }
        }
        m = m_new;
    }
    let row = ((r * p.n_heads + h) * p.n_splits + split) * (head_dim + 2u);
    partials[row] = m;
    partials[row + 1u] = l;
    for (var d = 0u; d < head_dim; d++) {
        partials[row + 2u + d] = o[d];
    }
}

@compute @workgroup_size(LANES_WG)
fn decode_split_lanes(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = linear_workgroup(workgroup_id, num_workgroups) * LANES_WG + lane; // h * n_splits + split
    if i >= p.n_heads * p.n_splits {
        return;
    }
    split_partial_lane(0u, i / p.n_splits, i % p.n_splits, p.kv_len, p.keys_per_split);
}

@compute @workgroup_size(LANES_WG)
fn decode_split_batch_lanes(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = linear_workgroup(workgroup_id, num_workgroups) * LANES_WG + lane;
    let rh = i / p.n_splits; // r * n_heads + h
    let r = rh / p.n_heads;
    if r >= p.rows {
        return;
    }
    let keys = batch_keys(r);
    split_partial_lane(r, rh % p.n_heads, i % p.n_splits, keys.x, keys.y);
}

@compute @workgroup_size(WG)
fn decode_combine(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let rh = linear_workgroup(workgroup_id, num_workgroups); // r * n_heads + h
    if rh >= p.rows * p.n_heads {
        return;
    }
    let first_row = rh * p.n_splits;
    let width = HEAD_DIM + 2u;
    // Splits are read KEYS_A_ROUND at a time, loaded before any is used (one at a time, each split cost a memory
    // latency); past the last split the loads are clamped and unused. Empty splits (l = 0: no keys for this
    // kv_len) have m = NEG_BIG and contribute nothing.
    var m_max = NEG_BIG;
    for (var s0 = 0u; s0 < p.n_splits; s0 += KEYS_A_ROUND) {
        var ml: array<vec2<f32>, KEYS_A_ROUND>;
        for (var u = 0u; u < KEYS_A_ROUND; u++) {
            let row = (first_row + min(s0 + u, p.n_splits - 1u)) * width;
            ml[u] = vec2(partials[row], partials[row + 1u]);
        }
        for (var u = 0u; u < KEYS_A_ROUND; u++) {
            if s0 + u < p.n_splits && ml[u].y > 0.0 {
                m_max = max(m_max, ml[u].x);
            }
        }
    }
    for (var d = lane; d < HEAD_DIM; d += WG) {
        var numerator = 0.0;
        var denominator = 0.0;
        for (var s0 = 0u; s0 < p.n_splits; s0 += KEYS_A_ROUND) {
            var mlo: array<vec3<f32>, KEYS_A_ROUND>; // m, l and o[d] of each split of the round
            for (var u = 0u; u < KEYS_A_ROUND; u++) {
                let row = (first_row + min(s0 + u, p.n_splits - 1u)) * width;
                mlo[u] = vec3(partials[row], partials[row + 1u], partials[row + 2u + d]);
            }
            for (var u = 0u; u < KEYS_A_ROUND; u++) {
                if s0 + u < p.n_splits && mlo[u].y > 0.0 {
                    let weight = exp(mlo[u].x - m_max);
                    numerator += weight * mlo[u].z;
                    denominator += weight * mlo[u].y;
                }
            }
        }
        out[rh * HEAD_DIM + d] = numerator / denominator; // row r, head h of [rows, n_heads * HEAD_DIM]
    }
}
