// moe_matvec.wgsl: moe.wgsl's experts for decode steps, a few tokens: each (token, expert) slot's
// matrix-vector products, reading only the weights of the experts its tokens chose.
// Reference: reference::forward's moe_ffn and mlp_forward (JAMBA.md, "FFN"). Layouts: moe.wgsl's header.
//
// x, w and w_up are bound as vec4 (the prelude's quads, MATVEC_READS): a row read by quads takes 16 bytes a
// load, and its x four values a load where x's rows start on a vec4. Read a word or a value at a time through
// w_word, w_up_word and x_value.
//
// Entry points (all share these bindings, norm_w aside; the Rust side binds a read-only stand-in where one is
// unused):
// - swiglu_matvec / down_matvec (decode, few tokens): ROW_THREADS invocations per row group of a slot, each
//   group computing MATVEC_ROWS consecutive output elements, reading only the weights of the expert in ids[s].
//   act and y_slots are indexed by slot. Grid: t * top_k * ceil(n / (WG / ROW_THREADS * MATVEC_ROWS))
//   workgroups, linear.
// - swiglu_norm_matvec (decode): swiglu_matvec with x the raw residual rows, rms_norm applied as they are read
//   (the dense MLP's pre-FFN norm), norm_w bound after the shared bindings.
// - down_combine_matvec (decode, one stack holding every expert): down_matvec and moe.wgsl's combine in one
//   dispatch.

// MoeParams and bindings 0 and 4-7: moe_common.wgsl; reading x (x_at, x_word, x_quad, normalised_*):
// matvec_x.wgsl.

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>; // x, act or y_slots, as moe.wgsl's header says
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>; // gate or down weights of the stack
@group(0) @binding(3) var<storage, read> w_up: array<vec4<u32>>; // up weights of the stack

// Word i of up (matvec_x.wgsl has x_value, w_word and norm_value).
fn w_up_word(i: u32) -> u32 {
    return w_up[i / 4u][i % 4u];
}

// swiglu_norm_matvec only (the other entry points are bound without it): rms_norm's weight [H].
@group(0) @binding(8) var<storage, read> norm_w: array<vec4<f32>>;

// The stack-local index of expert e, or count when e belongs to another stack (or to none).
fn local_expert(e: u32) -> u32 {
    return select(p.count, e - p.first, e >= p.first && e - p.first < p.count);
}

// ---- decode: indexed matrix-vector products ----
//
// Each reads a weight row by quads or by words as the prelude's MATVEC_READS says (quad_dot, word_dot), else
// weight by weight.

// A word of gate / down (up = false) or of up: the two bindings read through one function, called with a
// constant `up` so that compilers keep only the load it names.
fn stack_word(up: bool, at: u32) -> u32 {
    if up {
        return w_up_word(at);
    }
    return w_word(at);
}

// Quad g of stack row `row` of gate / down or up, dotted with xs (the prelude's quad_dot).
fn row_quad_dot(up: bool, row: u32, g: u32, xs: QuadXs) -> f32 {
    let wr = word_row(row, p.k);
    var scale_word = 0u;
    if quad_scaled() {
        scale_word = stack_word(up, word_scale(wr, 4u * g));
    }
    return quad_dot(stack_quad(up, wr.first / 4u + g), scale_word, g, xs);
}

// Quad `at` of gate / down or of up, as stack_word.
fn stack_quad(up: bool, at: u32) -> vec4<u32> {
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
    // Whether the slot's expert is in this stack: the same in the whole workgroup, whose invocations then all
    // read (x may be read in turns, matvec_x.wgsl's x_in_turns), those whose rows lie past the matrix too.
    in_stack: bool,
    // in_stack, and j0 inside the matrix: whether the invocation's sums are stored.
    live: bool,
}

fn matvec_job(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32) -> MatvecJob {
    // Slots vary fastest (matvec.wgsl's matvec_slot_of): the slots that share an expert (a dense MLP's tokens, or
    // tokens routed alike) read each block of its rows together. Past the last block, j0 >= n.
    let rows_per_group = WG / ROW_THREADS * MATVEC_ROWS;
    let slots = p.t * p.top_k;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    return slot_job(g % slots, (g / slots) * rows_per_group + lane / ROW_THREADS * MATVEC_ROWS);
}

// The job of rows j0 .. of the expert that slot `slot` chose.
fn slot_job(slot: u32, j0: u32) -> MatvecJob {
    let e = local_expert(ids[slot]);
    let in_stack = e < p.count;
    return MatvecJob(slot, j0, e * p.n, in_stack, in_stack && j0 < p.n);
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

// Quad g of the job's rows of gate / down (into [0]) and with `both` of up (into [1]), dotted with xs, added to
// acc.
fn job_quad(job: MatvecJob, g: u32, xs: QuadXs, both: bool, acc_in: array<Rows8, 2>) -> array<Rows8, 2> {
    var acc = acc_in;
    for (var q = 0u; q < MATVEC_ROWS; q++) {
        let row = job_row(job, job.j0 + q);
        acc[0] = rows8_add_at(acc[0], q, row_quad_dot(false, row, g, xs));
        if both {
            acc[1] = rows8_add_at(acc[1], q, row_quad_dot(true, row, g, xs));
        }
    }
    return acc;
}

// This invocation's parts of x's row at x0 . the job's rows j0 .. j0 + MATVEC_ROWS of gate / down (in [0]),
// and with `both` of up (in [1]), x read once for all of them. Every invocation of the workgroup calls it where
// the job is in_stack.
fn rows_part(job: MatvecJob, x0: u32, both: bool, lane: u32) -> array<Rows8, 2> {
    var acc: array<Rows8, 2>;
    let quads = (p.k + quad_weights() - 1u) / quad_weights();
    if MATVEC_PATH == PATH_TURNS && quads_of_x(x0) && x_in_turns(x0) {
        let mine = subgroup_lane();
        for (var g0 = 0u; g0 < quads; g0 += X_LANES) {
            let held = quad_vec4s(x0, g0 + mine);
            for (var turn = 0u; turn < turns_from(g0, quads); turn++) {
                let xs = quad_in_lane(held, turn);
                if job.live {
                    acc = job_quad(job, g0 + turn, xs, both, acc);
                }
            }
        }
    } else if !job.live {
        return acc;
    } else if MATVEC_PATH == PATH_QUADS_X && quads_of_x(x0) {
        for (var g = lane % ROW_THREADS; g < quads; g += ROW_THREADS) {
            acc = job_quad(job, g, x_quad(x0, g), both, acc);
        }
    } else if MATVEC_PATH == PATH_QUADS && rows_by_quad(p.k) {
        for (var g = lane % ROW_THREADS; g < quads; g += ROW_THREADS) {
            acc = job_quad(job, g, x_quad_by_words(x0, g), both, acc);
        }
    } else if MATVEC_PATH == PATH_ROUNDS && rows_by_word(p.k) && MATVEC_UNROLL > 1u {
        let words = word_row(0u, p.k).words;
        for (var i0 = lane % ROW_THREADS; i0 < words; i0 += ROW_THREADS * MATVEC_UNROLL) {
            var x: RoundXs; // 0 past the row (x_word)
            for (var u = 0u; u < MATVEC_UNROLL; u++) {
                x.xs[u] = x_word(x0, i0 + u * ROW_THREADS);
            }
            acc = job_round(job, i0, words, x, both, acc);
        }
    } else if MATVEC_PATH == PATH_WORDS && rows_by_word(p.k) {
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
            let xc = x_value(x0 + c);
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
    if job.in_stack {
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

// swiglu_matvec of rms_norm(x, norm_w) (reference::rms_norm, then the expert): x holds the raw residual rows,
// normalised as they are read, so a decode step needs no rms_norm dispatch before the SwiGLU. Each row group
// recomputes its token's sum of squares in rms_norm.wgsl's order (as matvec.wgsl's matvec_norm does) and
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
    let inv_rms = 1.0 / sqrt(row_sum(lane, x_sum_sq(x0, lane)) / f32(p.k) + p.eps);

    // rows_part of the normalised row, gate and up
    var acc: array<Rows8, 2>;
    let quads = (p.k + quad_weights() - 1u) / quad_weights();
    if MATVEC_PATH == PATH_TURNS && job.in_stack && quads_of_x(x0) && x_in_turns(x0) {
        let mine = subgroup_lane();
        for (var g0 = 0u; g0 < quads; g0 += X_LANES) {
            let held = quad_normalised_vec4s(x0, g0 + mine, inv_rms);
            for (var turn = 0u; turn < turns_from(g0, quads); turn++) {
                let xs = quad_in_lane(held, turn);
                if job.live {
                    acc = job_quad(job, g0 + turn, xs, true, acc);
                }
            }
        }
    } else if MATVEC_PATH == PATH_QUADS_X && job.live && quads_of_x(x0) {
        for (var g = lane % ROW_THREADS; g < quads; g += ROW_THREADS) {
            acc = job_quad(job, g, normalised_quad(x0, g, inv_rms), true, acc);
        }
    } else if MATVEC_PATH == PATH_QUADS && job.live && rows_by_quad(p.k) {
        for (var g = lane % ROW_THREADS; g < quads; g += ROW_THREADS) {
            acc = job_quad(job, g, normalised_quad_by_words(x0, g, inv_rms), true, acc);
        }
    } else if MATVEC_PATH == PATH_ROUNDS && job.live && rows_by_word(p.k) && MATVEC_UNROLL > 1u {
        let words = word_row(0u, p.k).words;
        for (var i0 = lane % ROW_THREADS; i0 < words; i0 += ROW_THREADS * MATVEC_UNROLL) {
            var x: RoundXs; // 0 past the row (normalised_word)
            for (var u = 0u; u < MATVEC_UNROLL; u++) {
                x.xs[u] = normalised_word(x0, i0 + u * ROW_THREADS, inv_rms);
            }
            acc = job_round(job, i0, words, x, true, acc);
        }
    } else if MATVEC_PATH == PATH_WORDS && job.live && rows_by_word(p.k) {
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
            let xn = norm_value(c) * (x_value(x0 + c) * inv_rms);
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
    if job.in_stack {
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
    // Tokens vary fastest, as in matvec_job.
    let rows_per_group = WG / ROW_THREADS * MATVEC_ROWS;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r = g % p.t;
    let j0 = (g / p.t) * rows_per_group + lane / ROW_THREADS * MATVEC_ROWS;
    var sum: Rows8;
    for (var choice = 0u; choice < p.top_k; choice++) {
        let job = slot_job(r * p.top_k + choice, j0);
        var acc: array<Rows8, 2>;
        if job.in_stack {
            acc = rows_part(job, job.slot * p.k, false, lane);
        }
        let sums = row_sum8(lane, acc[0]);
        if job.live {
            sum = Rows8(sum.a + weights[job.slot] * sums.a, sum.b + weights[job.slot] * sums.b);
        }
    }
    if lane % ROW_THREADS == 0u {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            if j0 + q < p.n {
                y[r * p.n + j0 + q] += rows8_at(sum, q);
            }
        }
    }
}
