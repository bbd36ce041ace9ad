// attention.wgsl: causal grouped-query attention of a prefill chunk over the KV cache, flash style (online
// softmax over tiles of keys; no [t, kv_len] score matrix ever exists). Jamba has no positional encoding.
// Reference: reference::attention::attention.
// Layout: q[i * q_stride + q_offset + h * HEAD_DIM + d], query i < t, head h < n_heads, d < HEAD_DIM (columns of a
// fused qkv projection, or a whole matrix); k_cache, v_cache: [max_len, n_kv_heads * HEAD_DIM] rows, the first kv_len
// valid, the chunk's own t rows last; out[i * out_stride + h * HEAD_DIM + d].
// Query i sits at position kv_len - t + i and sees cache rows 0..=position. Head h reads kv head h / group, where
// group = n_heads / n_kv_heads. Scores are q . k / sqrt(HEAD_DIM) (`scale` is folded into q once).
// Work: one invocation per (query i, head h) row. It keeps its scaled q, the running max m, the running sum l and
// the unnormalised output o in private memory, and walks the keys in tiles that the workgroup stages through
// workgroup memory with coalesced loads; per tile it rescales o and l once by exp(m_old - m_new). The 64 rows of a
// workgroup are consecutive (query, head-in-group) pairs of one kv head, so all of them use every staged tile.
// Grid: n_kv_heads * ceil(t * group / WG) workgroups, linear (workgroup = kv_head * blocks + block).
// HEAD_DIM (attention_common.wgsl) is an override constant (one pipeline per head size), so the loops over d can
// have constant bounds.

// Whether the loops over a head's values (d < HEAD_DIM) have that constant bound, which a compiler may unroll
// to keep q_row and o in registers (GPUs), or the same bound read from p.head_dim, which it cannot
// (Tuning::head_loops_unrolled; the same sums either way). Lavapipe unrolls them up to HEAD_DIM 32 and then
// compiles this kernel in 0.3-0.5 s (the default model's first prompt waited for it), against 0.05 s.
override HEAD_LOOPS_UNROLLED: bool = true;

const MAX_HEAD_DIM: u32 = 256u;
// Floats of K (and as many of V) staged per tile: 2 * 7 KiB of workgroup memory, under WebGPU's 16 KiB default.
const KV_TILE: u32 = 1792u;
const MAX_TILE_KEYS: u32 = 64u;

// PrefillParams, p, HEAD_DIM and NEG_BIG: attention_common.wgsl.
@group(0) @binding(1) var<storage, read> q: array<f32>; // [t, q_stride], n_heads * HEAD_DIM columns at q_offset
@group(0) @binding(2) var<storage, read> k_cache: array<f32>; // [max_len, n_kv_heads * HEAD_DIM]
@group(0) @binding(3) var<storage, read> v_cache: array<f32>; // [max_len, n_kv_heads * HEAD_DIM]
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [>= t, out_stride], n_heads * HEAD_DIM used

var<workgroup> k_tile: array<f32, KV_TILE>; // [tile_keys, HEAD_DIM]
var<workgroup> v_tile: array<f32, KV_TILE>; // [tile_keys, HEAD_DIM]

@compute @workgroup_size(WG)
fn prefill(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = p.n_heads / p.n_kv_heads;
    let rows = p.t * group; // (query, head-in-group) pairs per kv head
    let blocks = (rows + WG - 1u) / WG;
    let workgroup = linear_workgroup(workgroup_id, num_workgroups);
    let kv_head = workgroup / blocks;
    let r0 = (workgroup % blocks) * WG;
    let row = r0 + lane;
    let live = kv_head < p.n_kv_heads && row < rows;
    let i = row / group;
    let h = kv_head * group + row % group;
    let position = p.kv_len - p.t + i;
    // Keys any row of this workgroup sees: up to the position of its last query. None in a padding workgroup.
    var keys = 0u;
    if kv_head < p.n_kv_heads {
        keys = p.kv_len - p.t + (min(r0 + WG, rows) - 1u) / group + 1u;
    }
    let tile_keys = min(MAX_TILE_KEYS, KV_TILE / HEAD_DIM);
    let kv_dim = p.n_kv_heads * HEAD_DIM;
    let kv_col = kv_head * HEAD_DIM;
    let head_dim = select(p.head_dim, HEAD_DIM, HEAD_LOOPS_UNROLLED); // the loops' bound

    var q_row: array<f32, MAX_HEAD_DIM>; // [HEAD_DIM] q * scale
    var o: array<f32, MAX_HEAD_DIM>; // [HEAD_DIM] sum_j exp(s_j - m) v_j
    var s: array<f32, MAX_TILE_KEYS>; // [tile_keys] scores of the current tile
    var m = NEG_BIG;
    var l = 0.0;
    if live {
        let q0 = i * p.q_stride + p.q_offset + h * HEAD_DIM;
        for (var d = 0u; d < head_dim; d++) {
            q_row[d] = q[q0 + d] * p.scale;
            o[d] = 0.0;
        }
    }
    for (var j0 = 0u; j0 < keys; j0 += tile_keys) {
        let n = min(tile_keys, keys - j0);
        workgroupBarrier(); // every row is done with the previous tile
        for (var e = lane; e < n * HEAD_DIM; e += WG) {
            let src = (j0 + e / HEAD_DIM) * kv_dim + kv_col + e % HEAD_DIM;
            k_tile[e] = k_cache[src];
            v_tile[e] = v_cache[src];
        }
        workgroupBarrier();
        // This row sees keys j0 .. j0 + seen of the tile (causal mask).
        var seen = 0u;
        if live && position >= j0 {
            seen = min(n, position + 1u - j0);
        }
        if seen == 0u {
            continue;
        }
        var m_new = m;
        for (var jj = 0u; jj < seen; jj++) {
            var score = 0.0;
            for (var d = 0u; d < head_dim; d++) {
                score += q_row[d] * k_tile[jj * HEAD_DIM + d];
            }
            s[jj] = score;
            m_new = max(m_new, score);
        }
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var d = 0u; d < head_dim; d++) {
            o[d] *= alpha;
        }
        for (var jj = 0u; jj < seen; jj++) {
            let weight = exp(s[jj] - m_new);
            l += weight;
            for (var d = 0u; d < head_dim; d++) {
                o[d] += weight * v_tile[jj * HEAD_DIM + d];
            }
        }
        m = m_new;
    }
    if live {
        let out0 = i * p.out_stride + h * HEAD_DIM;
        for (var d = 0u; d < head_dim; d++) {
            out[out0 + d] = o[d] / l;
        }
    }
}
