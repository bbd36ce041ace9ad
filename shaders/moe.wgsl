// moe.wgsl: the experts of an MoE FFN, expert(x) = down(silu(gate(x)) * up(x)), run only for the routed
// (token, expert) slots, then out += sum_j weights[r, j] * expert_{ids[r, j]}(x[r]) in j order.
// Reference: reference::forward's moe_ffn and mlp_forward (JAMBA.md, "FFN").
//
// Layout. A slot s = r * top_k + j is token r's j-th choice. x: [>= t, H] f32 (the normalised input);
// ids, weights: [t * top_k] from moe_route.wgsl; groups: [E + 1 + t * top_k] u32 from moe_group.wgsl.
// Weights of one stack of experts first..first + count, packed as W_DTYPE (float or quantized rows, read through
// the prelude's weight_ref): w (gate) and w_up: [count, I, H]; w (down): [count, H, I]. act: [t * top_k, I] (silu(gate) * up per slot); y_slots: [t * top_k, H] (each slot's
// expert output, indexed by slot). Each kernel is dispatched once per stack and touches only its experts.
//
// Entry points (all share this file's bindings, norm_w aside; the Rust side binds a read-only stand-in where one is
// unused):
// - swiglu_matvec / down_matvec (decode, few tokens): ROW_THREADS invocations per row group of a slot, each
//   group computing MATVEC_ROWS consecutive output elements, reading only the weights of the expert in ids[s].
//   act and y_slots are indexed by slot. Grid: t * top_k * ceil(n / (WG / ROW_THREADS * MATVEC_ROWS))
//   workgroups, linear.
// - swiglu_norm_matvec (decode): swiglu_matvec with x the raw residual rows, rms_norm applied as they are read
//   (the dense MLP's pre-FFN norm), norm_w bound after the shared bindings.
// - swiglu_tiled / down_tiled (prefill): per expert, 64 x 64 output tiles over that expert's grouped rows, 256
//   invocations each computing 4 x 4 outputs (both gate and up for swiglu), k in steps of 16 through workgroup
//   memory. act is indexed by grouped row, y_slots by slot. Grid: count * ceil(t / 64) * ceil(n / 64) workgroups,
//   linear (the worst case: every token routed to each expert); tiles past an expert's rows exit at once.
// - down_combine_matvec (decode, one stack holding every expert): down_matvec and combine in one dispatch.
// - combine: out[r, c] += sum_j weights[r, j] * y_slots[r * top_k + j, c], in j order (no float atomics).
//   Grid: ceil(t * H / WG) workgroups, linear.

// MoeParams and bindings 0-7: moe_common.wgsl; w_at, w_up_at and the prefill's tile jobs: moe_tiles.wgsl.

// swiglu_norm_matvec only (the other entry points are bound without it): rms_norm's weight [H].
@group(0) @binding(8) var<storage, read> norm_w: array<f32>;

// The stack-local index of expert e, or count when e belongs to another stack (or to none).
fn local_expert(e: u32) -> u32 {
    return select(p.count, e - p.first, e >= p.first && e - p.first < p.count);
}

// ---- decode: indexed matrix-vector products ----
//
// Each reads a weight row by words where rows start on words (the prelude's word_dot), else weight by weight.

// x[x0 + c], 0 past the row (c >= k); the load clamped into the row, so that it needs no branch.
fn x_at(x0: u32, c: u32) -> f32 {
    return select(0.0, x[x0 + min(c, p.k - 1u)], c < p.k);
}

// x's row at x0, at the columns of word i of a weight row (the prelude's X8).
fn x_word(x0: u32, i: u32) -> X8 {
    let per = word_weights();
    let c = i * per;
    var xs: X8;
    xs.a.x = x_at(x0, c);
    if per >= 2u {
        xs.a.y = x_at(x0, c + 1u);
    }
    if per >= 4u {
        xs.a.z = x_at(x0, c + 2u);
        xs.a.w = x_at(x0, c + 3u);
    }
    if per == 8u {
        xs.b = vec4(x_at(x0, c + 4u), x_at(x0, c + 5u), x_at(x0, c + 6u), x_at(x0, c + 7u));
    }
    return xs;
}

// A word of gate / down (up = false) or of up: the two bindings read through one function, called with a
// constant `up` so that compilers keep only the load it names.
fn stack_word(up: bool, at: u32) -> u32 {
    if up {
        return w_up[at];
    }
    return w[at];
}

// Word i of stack row `row` of gate / down or up, dotted with xs (the prelude's word_dot).
fn row_word_dot(up: bool, row: u32, i: u32, xs: X8) -> f32 {
    let wr = word_row(row, p.k);
    return word_dot(stack_word(up, wr.first + i), stack_word(up, word_scale(wr, i)), i, xs);
}

// Stack row `row`, column c, of gate / down or up, as the matvecs take it: the prelude's matvec_weight (q8
// unscaled).
fn stack_matvec_at(up: bool, row: u32, c: u32) -> f32 {
    let r = weight_ref(row, c, p.k);
    var scale_word = 0u;
    if !scales_per_row() {
        scale_word = stack_word(up, r.scale_word);
    }
    return matvec_weight(r, stack_word(up, r.word), scale_word);
}

// A decode matvec's outputs for one slot: rows j0 .. j0 + MATVEC_ROWS of the expert's matrix, whose first row is
// stack row expert_row0.
struct MatvecJob {
    slot: u32,
    j0: u32,
    expert_row0: u32,
    live: bool,
}

fn matvec_job(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32) -> MatvecJob {
    let rows_per_group = WG / ROW_THREADS * MATVEC_ROWS;
    let groups_per_slot = (p.n + rows_per_group - 1u) / rows_per_group;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    var job: MatvecJob;
    job.slot = g / groups_per_slot;
    job.j0 = (g % groups_per_slot) * rows_per_group + lane / ROW_THREADS * MATVEC_ROWS;
    var e = p.count;
    if job.slot < p.t * p.top_k {
        e = local_expert(ids[job.slot]);
    }
    job.expert_row0 = e * p.n;
    job.live = e < p.count && job.j0 < p.n;
    return job;
}

// The stack row of row j of the job's expert, clamped to the expert's last row.
fn job_row(job: MatvecJob, j: u32) -> u32 {
    return job.expert_row0 + min(j, p.n - 1u);
}

// acc's sums of the job's rows of gate / down ([0]) and with `both` of up ([1]) with their scales applied (the
// prelude's row_scaled): one load per q8 row; other types as they are.
fn job_scaled(job: MatvecJob, both: bool, acc: array<Rows8, 2>) -> array<Rows8, 2> {
    if !scales_per_row() {
        return acc;
    }
    var scaled: array<Rows8, 2>;
    for (var q = 0u; q < MATVEC_ROWS; q++) {
        let wr = word_row(job_row(job, job.j0 + q), p.k);
        scaled[0] = rows8_add_at(scaled[0], q, row_scaled(rows8_at(acc[0], q), stack_word(false, wr.scales)));
        if both {
            scaled[1] = rows8_add_at(scaled[1], q, row_scaled(rows8_at(acc[1], q), stack_word(true, wr.scales)));
        }
    }
    return scaled;
}

// One round of MATVEC_UNROLL words from i0 (the prelude's MATVEC_UNROLL) of the job's rows of gate / down (into
// [0]) and with `both` of up (into [1]), added to acc. Words past the row's last are loaded clamped into it and
// meet xs of 0.
fn job_round(job: MatvecJob, i0: u32, words: u32, x: RoundXs, both: bool, acc_in: array<Rows8, 2>) -> array<Rows8, 2> {
    var loaded: array<array<vec4<u32>, 8>, 4>; // [round word][row]: gate / down word and scale word, up's
    for (var u = 0u; u < MATVEC_UNROLL; u++) {
        let i = min(i0 + u * ROW_THREADS, words - 1u);
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            let wr = word_row(job_row(job, job.j0 + q), p.k);
            loaded[u][q] = vec4(stack_word(false, wr.first + i), stack_word(false, word_scale(wr, i)), 0u, 0u);
            if both {
                loaded[u][q].z = stack_word(true, wr.first + i);
                loaded[u][q].w = stack_word(true, word_scale(wr, i));
            }
        }
    }
    var acc = acc_in;
    for (var u = 0u; u < MATVEC_UNROLL; u++) {
        let i = min(i0 + u * ROW_THREADS, words - 1u);
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            let l = loaded[u][q];
            acc[0] = rows8_add_at(acc[0], q, word_dot(l.x, l.y, i, x.xs[u]));
            if both {
                acc[1] = rows8_add_at(acc[1], q, word_dot(l.z, l.w, i, x.xs[u]));
            }
        }
    }
    return acc;
}

// This invocation's parts of x's row at x0 . the job's rows j0 .. j0 + MATVEC_ROWS of gate / down (in [0]),
// and with `both` of up (in [1]), x read once for all of them.
fn rows_part(job: MatvecJob, x0: u32, both: bool, lane: u32) -> array<Rows8, 2> {
    var acc: array<Rows8, 2>;
    if rows_by_word(p.k) && MATVEC_UNROLL > 1u {
        let words = word_row(0u, p.k).words;
        for (var i0 = lane % ROW_THREADS; i0 < words; i0 += ROW_THREADS * MATVEC_UNROLL) {
            var x: RoundXs; // 0 past the row (x_word)
            for (var u = 0u; u < MATVEC_UNROLL; u++) {
                x.xs[u] = x_word(x0, i0 + u * ROW_THREADS);
            }
            acc = job_round(job, i0, words, x, both, acc);
        }
    } else if rows_by_word(p.k) {
        let words = word_row(0u, p.k).words;
        for (var i = lane % ROW_THREADS; i < words; i += ROW_THREADS) {
            let xs = x_word(x0, i);
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                let row = job_row(job, job.j0 + q);
                acc[0] = rows8_add_at(acc[0], q, row_word_dot(false, row, i, xs));
                if both {
                    acc[1] = rows8_add_at(acc[1], q, row_word_dot(true, row, i, xs));
                }
            }
        }
    } else {
        for (var c = lane % ROW_THREADS; c < p.k; c += ROW_THREADS) {
            let xc = x[x0 + c];
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                let row = job_row(job, job.j0 + q);
                acc[0] = rows8_add_at(acc[0], q, xc * stack_matvec_at(false, row, c));
                if both {
                    acc[1] = rows8_add_at(acc[1], q, xc * stack_matvec_at(true, row, c));
                }
            }
        }
    }
    return job_scaled(job, both, acc);
}

// act[s, j] = silu(x[r] . gate_e[j]) * (x[r] . up_e[j]) for slot s = r * top_k + j'.
@compute @workgroup_size(WG)
fn swiglu_matvec(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let job = matvec_job(workgroup_id, num_workgroups, lane);
    var acc: array<Rows8, 2>;
    if job.live {
        acc = rows_part(job, (job.slot / p.top_k) * p.k, true, lane);
    }
    store_swiglu(job, lane, acc);
}

// act[s, j] = silu(gate) * up for the job's rows j, each summed over its row group (gate in acc[0], up in
// acc[1]). Every invocation must call it (barriers).
fn store_swiglu(job: MatvecJob, lane: u32, acc: array<Rows8, 2>) {
    let gate = row_sum8(lane, acc[0]);
    let up = row_sum8(lane, acc[1]);
    if job.live && lane % ROW_THREADS == 0u {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            if job.j0 + q < p.n {
                y[job.slot * p.n + job.j0 + q] = silu(rows8_at(gate, q)) * rows8_at(up, q);
            }
        }
    }
}

// norm_w[c] * (x[x0 + c] * inv_rms), rms_norm as rms_norm.wgsl computes it, 0 past the row (loads clamped).
fn normalised_at(x0: u32, c: u32, inv_rms: f32) -> f32 {
    let at = min(c, p.k - 1u);
    return select(0.0, norm_w[at] * (x[x0 + at] * inv_rms), c < p.k);
}

// x_word of the normalised row.
fn normalised_word(x0: u32, i: u32, inv_rms: f32) -> X8 {
    let per = word_weights();
    let c = i * per;
    var xs: X8;
    xs.a.x = normalised_at(x0, c, inv_rms);
    if per >= 2u {
        xs.a.y = normalised_at(x0, c + 1u, inv_rms);
    }
    if per >= 4u {
        xs.a.z = normalised_at(x0, c + 2u, inv_rms);
        xs.a.w = normalised_at(x0, c + 3u, inv_rms);
    }
    if per == 8u {
        xs.b = vec4(normalised_at(x0, c + 4u, inv_rms), normalised_at(x0, c + 5u, inv_rms),
            normalised_at(x0, c + 6u, inv_rms), normalised_at(x0, c + 7u, inv_rms));
    }
    return xs;
}

// swiglu_matvec of rms_norm(x, norm_w) (reference::rms_norm, then the expert): x holds the raw residual rows,
// normalised as they are read, so a decode step needs no rms_norm dispatch before the SwiGLU. Each row group
// recomputes its token's sum of squares in rms_norm.wgsl's order (as matmul.wgsl's matvec_norm does) and
// normalises as rms_norm.wgsl does, so act equals rms_norm then swiglu_matvec's, bit for bit where the
// compiler treats the two alike. (The loop cannot be swiglu_matvec's: a function reading norm_w would make
// swiglu_matvec bind it too.)
@compute @workgroup_size(WG)
fn swiglu_norm_matvec(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let job = matvec_job(workgroup_id, num_workgroups, lane);
    let r = job.slot / p.top_k;
    let x0 = r * p.k;
    // 1 / sqrt(mean(x^2) + eps), the same in every row group: the whole workgroup works on one slot.
    var sum_sq = 0.0;
    if r < p.t {
        for (var c = lane % ROW_THREADS; c < p.k; c += ROW_THREADS) {
            let v = x[x0 + c];
            sum_sq += v * v;
        }
    }
    let inv_rms = 1.0 / sqrt(row_sum(lane, sum_sq) / f32(p.k) + p.eps);

    // rows_part of the normalised row, gate and up
    var acc: array<Rows8, 2>;
    if job.live && rows_by_word(p.k) && MATVEC_UNROLL > 1u {
        let words = word_row(0u, p.k).words;
        for (var i0 = lane % ROW_THREADS; i0 < words; i0 += ROW_THREADS * MATVEC_UNROLL) {
            var x: RoundXs; // 0 past the row (normalised_word)
            for (var u = 0u; u < MATVEC_UNROLL; u++) {
                x.xs[u] = normalised_word(x0, i0 + u * ROW_THREADS, inv_rms);
            }
            acc = job_round(job, i0, words, x, true, acc);
        }
    } else if job.live && rows_by_word(p.k) {
        let words = word_row(0u, p.k).words;
        for (var i = lane % ROW_THREADS; i < words; i += ROW_THREADS) {
            let xs = normalised_word(x0, i, inv_rms);
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                let row = job_row(job, job.j0 + q);
                acc[0] = rows8_add_at(acc[0], q, row_word_dot(false, row, i, xs));
                acc[1] = rows8_add_at(acc[1], q, row_word_dot(true, row, i, xs));
            }
        }
    } else if job.live {
        for (var c = lane % ROW_THREADS; c < p.k; c += ROW_THREADS) {
            let xn = norm_w[c] * (x[x0 + c] * inv_rms);
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                let row = job_row(job, job.j0 + q);
                acc[0] = rows8_add_at(acc[0], q, xn * stack_matvec_at(false, row, c));
                acc[1] = rows8_add_at(acc[1], q, xn * stack_matvec_at(true, row, c));
            }
        }
    }
    if job.live {
        acc = job_scaled(job, true, acc);
    }
    store_swiglu(job, lane, acc);
}

// y_slots[s, j] = act[s] . down_e[j].
@compute @workgroup_size(WG)
fn down_matvec(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let job = matvec_job(workgroup_id, num_workgroups, lane);
    var acc: array<Rows8, 2>;
    if job.live {
        acc = rows_part(job, job.slot * p.k, false, lane);
    }
    let sums = row_sum8(lane, acc[0]);
    if job.live && lane % ROW_THREADS == 0u {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            if job.j0 + q < p.n {
                y[job.slot * p.n + job.j0 + q] = rows8_at(sums, q);
            }
        }
    }
}

// out[r, j] += sum_j' weights[s] * (act[s] . down_{ids[s]}[j]) over token r's slots s = r * top_k + j', in j'
// order: down_matvec and combine in one dispatch, with the same sums in the same order (so bit for bit the
// same result). Needs every expert in this stack. Grid: t * ceil(n / (WG / ROW_THREADS * MATVEC_ROWS)) workgroups,
// linear.
@compute @workgroup_size(WG)
fn down_combine_matvec(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let rows_per_group = WG / ROW_THREADS * MATVEC_ROWS;
    let groups_per_token = (p.n + rows_per_group - 1u) / rows_per_group;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r = g / groups_per_token;
    let j0 = (g % groups_per_token) * rows_per_group + lane / ROW_THREADS * MATVEC_ROWS;
    var sum: Rows8;
    for (var choice = 0u; choice < p.top_k; choice++) {
        var job = MatvecJob(r * p.top_k + choice, j0, 0u, false);
        var e = p.count;
        if r < p.t {
            e = local_expert(ids[job.slot]);
        }
        job.expert_row0 = e * p.n;
        job.live = e < p.count && j0 < p.n;
        var acc: array<Rows8, 2>;
        if job.live {
            acc = rows_part(job, job.slot * p.k, false, lane);
        }
        let sums = row_sum8(lane, acc[0]);
        if job.live {
            sum = Rows8(sum.a + weights[job.slot] * sums.a, sum.b + weights[job.slot] * sums.b);
        }
    }
    if r < p.t && lane % ROW_THREADS == 0u {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            if j0 + q < p.n {
                y[r * p.n + j0 + q] += rows8_at(sum, q);
            }
        }
    }
}

// ---- prefill: tiled matmuls over each expert's grouped rows ----

// As matmul.wgsl's tiled kernel: TILE x TILE outputs per workgroup of 16 x 16 invocations of 4 x 4, k-major
// tiles read as vec4, each k-row padded to 17 vec4 against bank conflicts when staging.
// TILE and the tile jobs: moe_tiles.wgsl.
const TILE_K: u32 = 16u;
const TILED_WG: u32 = 256u;
const TILE_STRIDE: u32 = 17u;

var<workgroup> x_tile: array<vec4<f32>, 272>; // row r, k0 + kk at [kk * TILE_STRIDE + r / 4][r % 4]
var<workgroup> w_tile: array<vec4<f32>, 272>; // gate or down: column j, k0 + kk likewise
var<workgroup> w_up_tile: array<vec4<f32>, 272>; // up
// The tiled product of one expert over its grouped rows. gated (SwiGLU): rows of x are the slots' tokens, the
// result silu(x gate^T) * (x up^T) goes to act at the grouped row. Otherwise (down): rows of act are grouped
// rows, the result goes to y_slots at the row's slot.
fn expert_tiled(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32, gated: bool) {
    let job = tile_job(workgroup_id, num_workgroups, lane);
    // The rows of the tile that hold slots, loaded uniformly (after a barrier), so the whole workgroup leaves
    // together when the tile is empty.
    let live_rows = workgroupUniformLoad(&tile_live_rows);
    if live_rows == 0u {
        return;
    }
    // This invocation's 4 x 4 block: rows 4 ty + i, columns 4 tx + jj of the tile. It stages element
    // lane + TILED_WG q of each tile (row lane / TILE_K + 16 q, k0 + lane % TILE_K), the next step's loaded into
    // registers before this step's arithmetic.
    let tx = lane % 16u;
    let ty = lane / 16u;
    let kk = lane % TILE_K;
    let row = lane / TILE_K;
    var xs: array<f32, 4>;
    var ws: array<f32, 4>;
    var ws_up: array<f32, 4>;
    for (var q = 0u; q < 4u; q++) {
        xs[q] = expert_x(job, row + 16u * q, kk, live_rows, gated);
        ws[q] = expert_w(job, row + 16u * q, kk, false);
        if gated {
            ws_up[q] = expert_w(job, row + 16u * q, kk, true);
        }
    }
    // Invocations whose 4 rows are all past the expert's last row skip the arithmetic, which matters when
    // experts get few rows.
    let computes = ty * 4u < live_rows;
    var acc: array<vec4<f32>, 4>;
    var acc_up: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        for (var q = 0u; q < 4u; q++) {
            let at = kk * TILE_STRIDE + (row + 16u * q) / 4u;
            x_tile[at][row % 4u] = xs[q];
            w_tile[at][row % 4u] = ws[q];
            if gated {
                w_up_tile[at][row % 4u] = ws_up[q];
            }
        }
        workgroupBarrier();
        if k0 + TILE_K < p.k {
            let c = k0 + TILE_K + kk;
            for (var q = 0u; q < 4u; q++) {
                xs[q] = expert_x(job, row + 16u * q, c, live_rows, gated);
                ws[q] = expert_w(job, row + 16u * q, c, false);
                if gated {
                    ws_up[q] = expert_w(job, row + 16u * q, c, true);
                }
            }
        }
        if computes {
            for (var k = 0u; k < TILE_K; k++) {
                let a = x_tile[k * TILE_STRIDE + ty];
                let b = w_tile[k * TILE_STRIDE + tx];
                acc[0] += a.x * b;
                acc[1] += a.y * b;
                acc[2] += a.z * b;
                acc[3] += a.w * b;
                if gated {
                    let b_up = w_up_tile[k * TILE_STRIDE + tx];
                    acc_up[0] += a.x * b_up;
                    acc_up[1] += a.y * b_up;
                    acc_up[2] += a.z * b_up;
                    acc_up[3] += a.w * b_up;
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = ty * 4u + i;
        for (var jj = 0u; jj < 4u; jj++) {
            let j = job.j0 + tx * 4u + jj;
            if r < live_rows && j < p.n {
                if gated {
                    y[(job.row0 + r) * p.n + j] = silu(acc[i][jj]) * acc_up[i][jj];
                } else {
                    y[tile_slot[r] * p.n + j] = acc[i][jj];
                }
            }
        }
    }
}

@compute @workgroup_size(TILED_WG)
fn swiglu_tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    expert_tiled(workgroup_id, num_workgroups, lane, true);
}

@compute @workgroup_size(TILED_WG)
fn down_tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    expert_tiled(workgroup_id, num_workgroups, lane, false);
}

// ---- the weighted sum into the residual stream ----

@compute @workgroup_size(WG)
fn combine(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
    if i >= p.t * p.n {
        return;
    }
    let r = i / p.n;
    let c = i % p.n;
    var sum = 0.0;
    for (var j = 0u; j < p.top_k; j++) {
        let s = r * p.top_k + j;
        if ids[s] < p.n_experts {
            sum += weights[s] * x[s * p.n + c];
        }
    }
    y[i] += sum;
}
