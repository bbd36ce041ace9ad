// matvec.wgsl: matmul.wgsl's y = x W^T (+ y when accumulating) for decode steps, a few rows of x: the matrix-
// vector products that read every weight once, bound by the bandwidth of those reads.
// Reference: reference::matmul. x, W and y as matmul.wgsl has them (matmul_common.wgsl): x: [t, k] f32 rows at
// x[r * x_stride + x_offset + c]; W: [n, k] row-major, packed as W_DTYPE, starting at row w_row0; y: [t, n] f32
// at y[r * y_stride + y_offset + j]. With accumulate = 1, y += x W^T.
//
// x and W are bound as vec4 (the prelude's quads, MATVEC_READS): a row of W read by quads takes 16 bytes a
// load, and its x four values a load where x's rows start on a vec4. Read a word or a value at a time through
// w_word and x_value.
//
// Entry points:
// - matvec (decode, small t): ROW_THREADS invocations per row group, striding over k, each group computing
//   MATVEC_ROWS consecutive output elements (the prelude's Rows8).
//   Grid: t * ceil(n / (WG / ROW_THREADS * MATVEC_ROWS)) workgroups, linear.
// - matvec_norm, matvec_norm_out: matvec of rms_norm(x, norm_w) (reference::rms_norm then reference::matmul),
//   normalising x as it is read, so a decode step needs no rms_norm dispatch before the matmul that consumes it.
//   Each row group recomputes its row's sum of squares in rms_norm.wgsl's order (x is one short row, cached),
//   so the product matches rms_norm then matvec. matvec_norm_out also stores the normalised rows for later
//   kernels: normed[r * normed_stride + normed_offset + c], written by the first workgroup of each row.
//   Grid: as matvec.
// - matvec_norm_conv: matvec_norm for Mamba's in_proj on a decode step, with the causal conv1d + SiLU of the
//   first conv_channels output columns (xs) fused into its epilogue, as conv1d.wgsl's conv_batch computes it:
//   each such column is one channel, owned by the one invocation that produced it, which convolves it with its
//   row's conv state, writes silu(conv + bias) to side[r * normed_stride + normed_offset + ch] and shifts the
//   state (row r's at conv_state[r * state_stride + j * conv_channels + ch]). The other columns (z) go to y as
//   usual. Needs w_row0 = 0 and y_offset = 0 (in_proj in one part). Grid: as matvec.
// - matvec_parts: matvec with k cut into parts of p.part_cols columns (a multiple of 64), one more factor of
//   workgroups: part s sums columns [s * part_cols, (s + 1) * part_cols) of each row and stores it, never
//   accumulating, at y[s * p.part_stride + r * y_stride + y_offset + j]; the kernel that reads y adds the
//   parts (ssm_scan.wgsl's dt, b and c: Mamba's x_proj, a matrix of few rows and a long k, whose dispatch
//   would otherwise have too few workgroups to keep the memory busy). Grid: parts * t * ceil(n / rows per
//   workgroup), linear.

// MatmulParams, y and store(): matmul_common.wgsl; reading x and w (x_value, w_word, x_quad, normalised_*...):
// matvec_x.wgsl.

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

// matvec_norm only: rms_norm's weight [k]; the second output: matvec_norm_out's normalised rows [t, k],
// matvec_norm_conv's conv output xs [t, conv_channels].
@group(0) @binding(4) var<storage, read> norm_w: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> side: array<f32>;
// matvec_norm_conv only: the conv's weight [C, K], bias [C] and state (read and shifted).
@group(0) @binding(6) var<storage, read> conv_w: array<f32>;
@group(0) @binding(7) var<storage, read> conv_bias: array<f32>;
@group(0) @binding(8) var<storage, read_write> conv_state: array<f32>;

// Quad g of W's row j (clamped to the last row) dotted with xs: the prelude's quad_dot.
fn row_quad_dot(j: u32, g: u32, xs: QuadXs) -> f32 {
    let row = word_row(p.w_row0 + min(j, p.n - 1u), p.k);
    var scale_word = 0u;
    if quad_scaled() {
        scale_word = w_word(word_scale(row, 4u * g));
    }
    return quad_dot(w[row.first / 4u + g], scale_word, g, xs);
}

// Word i of W's row j (clamped to the last row) dotted with xs: the prelude's word_dot.
fn row_word_dot(j: u32, i: u32, xs: X8) -> f32 {
    let row = word_row(p.w_row0 + min(j, p.n - 1u), p.k);
    return word_dot(w_word(row.first + i), w_word(word_scale(row, i)), i, xs);
}

// W[row, col] (row counted from w_row0) as the matvecs take it: the prelude's matvec_weight (q8 unscaled).
fn w_matvec_at(row: u32, col: u32) -> f32 {
    let r = weight_ref(p.w_row0 + row, col, p.k);
    var scale_word = 0u;
    if !scales_per_row() {
        scale_word = w_word(r.scale_word);
    }
    return matvec_weight(r, w_word(r.word), scale_word);
}

// acc's sums of rows j0 .. j0 + MATVEC_ROWS of W with their scales applied (the prelude's row_scaled): one load
// per q8 row; other types as they are.
fn rows_scaled(j0: u32, acc: Rows8) -> Rows8 {
    if !scales_per_row() {
        return acc;
    }
    var scaled: Rows8;
    for (var q = 0u; q < MATVEC_ROWS; q++) {
        let row = word_row(p.w_row0 + min(j0 + q, p.n - 1u), p.k);
        scaled = rows8_add_at(scaled, q, row_scaled(rows8_at(acc, q), w_word(row.scales)));
    }
    return scaled;
}

// Quad g of rows j0 .. j0 + MATVEC_ROWS of W dotted with xs, added to acc.
fn rows_quad(j0: u32, g: u32, xs: QuadXs, acc_in: Rows8) -> Rows8 {
    var acc = acc_in;
    for (var q = 0u; q < MATVEC_ROWS; q++) {
        acc = rows8_add_at(acc, q, row_quad_dot(j0 + q, g, xs));
    }
    return acc;
}

// One round of MATVEC_UNROLL words from i0 of rows j0 .. j0 + MATVEC_ROWS, added to acc (see MATVEC_UNROLL).
// Words past the row's last are loaded clamped into it and meet xs of 0.
fn rows_round(j0: u32, i0: u32, words: u32, x: RoundXs, acc_in: Rows8) -> Rows8 {
    var loaded: array<array<vec2<u32>, 8>, 4>; // [round word][row]: the word and its scale word
    for (var u = 0u; u < MATVEC_UNROLL; u++) {
        let i = min(i0 + u * ROW_THREADS, words - 1u);
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            let row = word_row(p.w_row0 + min(j0 + q, p.n - 1u), p.k);
            loaded[u][q] = vec2(w_word(row.first + i), w_word(word_scale(row, i)));
        }
    }
    var acc = acc_in;
    for (var u = 0u; u < MATVEC_UNROLL; u++) {
        let i = min(i0 + u * ROW_THREADS, words - 1u);
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            acc = rows8_add_at(acc, q, word_dot(loaded[u][q].x, loaded[u][q].y, i, x.xs[u]));
        }
    }
    return acc;
}

// This invocation's part of the dot products of x's row at x0 with W's rows j0 .. j0 + MATVEC_ROWS: the quads or
// the words lane, lane + ROW_THREADS, ... of each row, or its weights one by one where rows are not read by
// words. Every invocation of the workgroup calls it, those whose rows lie past the matrix too (x may be read in
// turns: matvec_x.wgsl's x_in_turns); they add up nothing.
fn rows_part(x0: u32, j0: u32, lane: u32) -> Rows8 {
    return rows_part_of(x0, j0, lane, 0u, p.k);
}

// rows_part over columns [c_begin, c_end) only, c_begin a multiple of 32 (a quad's first weight, any type).
fn rows_part_of(x0: u32, j0: u32, lane: u32, c_begin: u32, c_end: u32) -> Rows8 {
    var acc: Rows8;
    let per = word_weights();
    let w_begin = c_begin / per;
    let w_end = (c_end + per - 1u) / per;
    let first = c_begin / quad_weights(); // the range in quads
    let end = (c_end + quad_weights() - 1u) / quad_weights();
    let live = j0 < p.n;
    if MATVEC_PATH == PATH_TURNS && quads_of_x(x0) && x_in_turns(x0) {
        let mine = subgroup_lane();
        for (var g0 = first; g0 < end; g0 += X_LANES) {
            let held = quad_vec4s(x0, g0 + mine);
            for (var turn = 0u; turn < turns_from(g0, end); turn++) {
                let xs = quad_in_lane(held, turn);
                if live {
                    acc = rows_quad(j0, g0 + turn, xs, acc);
                }
            }
        }
    } else if !live {
        return acc;
    } else if MATVEC_PATH == PATH_QUADS_X && quads_of_x(x0) {
        for (var g = first + lane % ROW_THREADS; g < end; g += ROW_THREADS) {
            acc = rows_quad(j0, g, x_quad(x0, g), acc);
        }
    } else if MATVEC_PATH == PATH_QUADS && rows_by_quad(p.k) {
        for (var g = first + lane % ROW_THREADS; g < end; g += ROW_THREADS) {
            acc = rows_quad(j0, g, x_quad_by_words(x0, g), acc);
        }
    } else if MATVEC_PATH == PATH_ROUNDS && rows_by_word(p.k) && MATVEC_UNROLL > 1u {
        let words = word_row(0u, p.k).words;
        for (var i0 = w_begin + lane % ROW_THREADS; i0 < w_end; i0 += ROW_THREADS * MATVEC_UNROLL) {
            var x: RoundXs; // 0 past the range
            for (var u = 0u; u < MATVEC_UNROLL; u++) {
                if i0 + u * ROW_THREADS < w_end {
                    x.xs[u] = x_word(x0, i0 + u * ROW_THREADS);
                }
            }
            acc = rows_round(j0, i0, words, x, acc);
        }
    } else if MATVEC_PATH == PATH_WORDS && rows_by_word(p.k) {
        for (var i = w_begin + lane % ROW_THREADS; i < w_end; i += ROW_THREADS) {
            let xs = x_word(x0, i);
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                acc = rows8_add_at(acc, q, row_word_dot(j0 + q, i, xs));
            }
        }
    } else {
        for (var c = c_begin + lane % ROW_THREADS; c < c_end; c += ROW_THREADS) {
            let xc = x_value(x0 + c);
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                acc = rows8_add_at(acc, q, w_matvec_at(min(j0 + q, p.n - 1u), c) * xc);
            }
        }
    }
    return rows_scaled(j0, acc);
}

// The output elements of a matvec invocation: row r of x and y, columns j0 .. j0 + MATVEC_ROWS of y (rows of
// W), and which block of WG / ROW_THREADS * MATVEC_ROWS columns its workgroup computes.
struct MatvecSlot {
    r: u32,
    j0: u32,
    block: u32,
}

fn matvec_slot(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32) -> MatvecSlot {
    return matvec_slot_of(linear_workgroup(workgroup_id, num_workgroups), lane);
}

// Workgroups per row of x (token): each computes WG / ROW_THREADS * MATVEC_ROWS columns of y.
fn matvec_groups() -> u32 {
    let rows_per_group = WG / ROW_THREADS * MATVEC_ROWS;
    return (p.n + rows_per_group - 1u) / rows_per_group;
}

// matvec_slot of linear workgroup g. The rows of x vary fastest: the workgroups of every row of x for one block of
// W's rows are neighbours, which a GPU runs together, so that one read of the block from memory serves them all
// through its cache (a batch's decode step), where row-major order streamed the whole of W once per row of x.
// Workgroups past the last block (a grid rounded up) have j0 >= n.
fn matvec_slot_of(g: u32, lane: u32) -> MatvecSlot {
    let rows_per_group = WG / ROW_THREADS * MATVEC_ROWS;
    var s: MatvecSlot;
    s.r = g % p.t;
    s.block = g / p.t;
    s.j0 = s.block * rows_per_group + lane / ROW_THREADS * MATVEC_ROWS;
    return s;
}

// Whether this invocation stores its row group's outputs.
fn stores(s: MatvecSlot, lane: u32) -> bool {
    return lane % ROW_THREADS == 0u;
}

// Stores output q of the slot's rows, if it lies inside y.
fn store_row(s: MatvecSlot, q: u32, sums: Rows8) {
    if s.j0 + q < p.n {
        store(s.r, s.j0 + q, rows8_at(sums, q));
    }
}

@compute @workgroup_size(WG)
fn matvec(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let s = matvec_slot(workgroup_id, num_workgroups, lane);
    let sums = row_sum8(lane, rows_part(s.r * p.x_stride + p.x_offset, s.j0, lane));
    if stores(s, lane) {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            store_row(s, q, sums);
        }
    }
}

@compute @workgroup_size(WG)
fn matvec_parts(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let per_part = p.t * matvec_groups();
    let part = g / per_part;
    let s = matvec_slot_of(g % per_part, lane);
    let c_begin = part * p.part_cols;
    var acc: Rows8;
    if c_begin < p.k {
        acc = rows_part_of(s.r * p.x_stride + p.x_offset, s.j0, lane, c_begin, min(c_begin + p.part_cols, p.k));
    }
    let sums = row_sum8(lane, acc);
    if stores(s, lane) && c_begin < p.k {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            if s.j0 + q < p.n {
                y[part * p.part_stride + s.r * p.y_stride + p.y_offset + s.j0 + q] = rows8_at(sums, q);
            }
        }
    }
}

struct NormDot {
    inv_rms: f32, // the row's 1 / rms
    sums: Rows8,  // the output elements, in the invocations that store them (see `stores`)
}

// matvec of rms_norm(x), stored by the caller. Every invocation must call it (barriers).
fn matvec_norm_of(s: MatvecSlot, lane: u32) -> NormDot {
    let x0 = s.r * p.x_stride + p.x_offset;
    // 1 / sqrt(mean(x^2) + eps), summed as rms_norm.wgsl sums it: each row group on its own, so that every
    // invocation of the workgroup holds the same value, also those past the last column.
    let inv_rms = 1.0 / sqrt(row_sum(lane, x_sum_sq(x0, lane)) / f32(p.k) + p.eps);

    // Read in turns, every invocation loads its share of x, those whose rows lie past the matrix too.
    let live = s.j0 < p.n;
    var acc: Rows8;
    let quads = (p.k + quad_weights() - 1u) / quad_weights();
    if MATVEC_PATH == PATH_TURNS && quads_of_x(x0) && x_in_turns(x0) {
        let mine = subgroup_lane();
        for (var g0 = 0u; g0 < quads; g0 += X_LANES) {
            let held = quad_normalised_vec4s(x0, g0 + mine, inv_rms);
            for (var turn = 0u; turn < turns_from(g0, quads); turn++) {
                let xs = quad_in_lane(held, turn);
                if live {
                    acc = rows_quad(s.j0, g0 + turn, xs, acc);
                }
            }
        }
    } else if MATVEC_PATH == PATH_QUADS_X && live && quads_of_x(x0) {
        for (var g = lane % ROW_THREADS; g < quads; g += ROW_THREADS) {
            acc = rows_quad(s.j0, g, normalised_quad(x0, g, inv_rms), acc);
        }
    } else if MATVEC_PATH == PATH_QUADS && live && rows_by_quad(p.k) {
        for (var g = lane % ROW_THREADS; g < quads; g += ROW_THREADS) {
            acc = rows_quad(s.j0, g, normalised_quad_by_words(x0, g, inv_rms), acc);
        }
    } else if MATVEC_PATH == PATH_ROUNDS && live && rows_by_word(p.k) && MATVEC_UNROLL > 1u {
        let words = word_row(0u, p.k).words;
        for (var i0 = lane % ROW_THREADS; i0 < words; i0 += ROW_THREADS * MATVEC_UNROLL) {
            var x: RoundXs;
            for (var u = 0u; u < MATVEC_UNROLL; u++) {
                x.xs[u] = normalised_word(x0, i0 + u * ROW_THREADS, inv_rms);
            }
            acc = rows_round(s.j0, i0, words, x, acc);
        }
    } else if MATVEC_PATH == PATH_WORDS && live && rows_by_word(p.k) {
        // rows_part, x normalised as it is read (a function reading norm_w would make matvec bind it too)
        let words = word_row(0u, p.k).words;
        for (var i = lane % ROW_THREADS; i < words; i += ROW_THREADS) {
            let xs = normalised_word(x0, i, inv_rms);
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                acc = rows8_add_at(acc, q, row_word_dot(s.j0 + q, i, xs));
            }
        }
    } else if live {
        for (var c = lane % ROW_THREADS; c < p.k; c += ROW_THREADS) {
            let xc = normalised(x0, c, inv_rms);
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                acc = rows8_add_at(acc, q, w_matvec_at(min(s.j0 + q, p.n - 1u), c) * xc);
            }
        }
    }
    return NormDot(inv_rms, row_sum8(lane, rows_scaled(s.j0, acc)));
}

// matvec_norm_conv's epilogue for channel ch of row r, whose pre-conv value is `value`: conv1d.wgsl's
// conv_batch, the sums in the same order.
fn conv_step(r: u32, ch: u32, value: f32) {
    let c = p.conv_channels;
    let s0 = r * p.state_stride + ch; // state_r[j, ch] at s0 + j * C
    var acc = 0.0;
    for (var j = 0u; j < p.conv_k; j++) {
        var win = value; // window_r[j]: state_r[j] for j < K-1, then the new value
        if j + 1u < p.conv_k {
            win = conv_state[s0 + j * c];
        }
        acc += conv_w[ch * p.conv_k + j] * win;
    }
    side[r * p.normed_stride + p.normed_offset + ch] = silu(acc + conv_bias[ch]);
    // state_r = window_r[1 .. K], in place: row j takes row j + 1, read before it is overwritten.
    for (var j = 0u; j + 1u < p.conv_k; j++) {
        var next = value;
        if j + 2u < p.conv_k {
            next = conv_state[s0 + (j + 1u) * c];
        }
        conv_state[s0 + j * c] = next;
    }
}

@compute @workgroup_size(WG)
fn matvec_norm(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let s = matvec_slot(workgroup_id, num_workgroups, lane);
    let dot = matvec_norm_of(s, lane);
    if stores(s, lane) {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            store_row(s, q, dot.sums);
        }
    }
}

@compute @workgroup_size(WG)
fn matvec_norm_out(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let s = matvec_slot(workgroup_id, num_workgroups, lane);
    let dot = matvec_norm_of(s, lane);
    if stores(s, lane) {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            store_row(s, q, dot.sums);
        }
    }
    let inv_rms = dot.inv_rms;
    // The row's first workgroup stores the normalised row, its whole width striding over the workgroup.
    if s.block == 0u {
        let x0 = s.r * p.x_stride + p.x_offset;
        let n0 = s.r * p.normed_stride + p.normed_offset;
        for (var c = lane; c < p.k; c += WG) {
            side[n0 + c] = normalised(x0, c, inv_rms);
        }
    }
}

@compute @workgroup_size(WG)
fn matvec_norm_conv(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let s = matvec_slot(workgroup_id, num_workgroups, lane);
    let dot = matvec_norm_of(s, lane);
    if stores(s, lane) {
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            let j = s.j0 + q;
            if j < p.conv_channels {
                conv_step(s.r, j, rows8_at(dot.sums, q));
            } else {
                store_row(s, q, dot.sums);
            }
        }
    }
}
