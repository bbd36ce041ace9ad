// matmul.wgsl: y = x W^T (+ y when accumulating), the Linear layer without bias.
// Reference: reference::matmul. x: [t, k] f32 rows at x[r * x_stride + x_offset + c];
// W: [n, k] row-major, packed as W_DTYPE (float or quantized rows), starting at row w_row0; y: [t, n] f32 at
// y[r * y_stride + y_offset + j]. With accumulate = 1, y += x W^T (the residual connection fused in).
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
// - tiled (prefill): 64 x 64 output tiles per workgroup of 256 invocations, each computing 4 x 4 outputs, k in
//   steps of 16 through workgroup memory. Grid: ceil(t / 64) * ceil(n / 64) workgroups, linear.

// MatmulParams, x, w, y, w_at and store(): matmul_common.wgsl.

// matvec_norm only: rms_norm's weight [k]; the second output: matvec_norm_out's normalised rows [t, k],
// matvec_norm_conv's conv output xs [t, conv_channels].
@group(0) @binding(4) var<storage, read> norm_w: array<f32>;
@group(0) @binding(5) var<storage, read_write> side: array<f32>;
// matvec_norm_conv only: the conv's weight [C, K], bias [C] and state (read and shifted).
@group(0) @binding(6) var<storage, read> conv_w: array<f32>;
@group(0) @binding(7) var<storage, read> conv_bias: array<f32>;
@group(0) @binding(8) var<storage, read_write> conv_state: array<f32>;

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

// Word i of W's row j (clamped to the last row) dotted with xs: the prelude's word_dot.
fn row_word_dot(j: u32, i: u32, xs: X8) -> f32 {
    let row = word_row(p.w_row0 + min(j, p.n - 1u), p.k);
    return word_dot(w[row.first + i], w[word_scale(row, i)], i, xs);
}

// W[row, col] (row counted from w_row0) as the matvecs take it: the prelude's matvec_weight (q8 unscaled).
fn w_matvec_at(row: u32, col: u32) -> f32 {
    let r = weight_ref(p.w_row0 + row, col, p.k);
    var scale_word = 0u;
    if !scales_per_row() {
        scale_word = w[r.scale_word];
    }
    return matvec_weight(r, w[r.word], scale_word);
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
        scaled = rows8_add_at(scaled, q, row_scaled(rows8_at(acc, q), w[row.scales]));
    }
    return scaled;
}

// One round of MATVEC_UNROLL words from i0 of rows j0 .. j0 + MATVEC_ROWS, added to acc (see MATVEC_UNROLL).
// Words past the row's last are loaded clamped into it and meet xs of 0.
fn rows_round(j0: u32, i0: u32, words: u32, x: RoundXs, acc_in: Rows8) -> Rows8 {
    var loaded: array<array<vec2<u32>, 8>, 4>; // [round word][row]: the word and its scale word
    for (var u = 0u; u < MATVEC_UNROLL; u++) {
        let i = min(i0 + u * ROW_THREADS, words - 1u);
        for (var q = 0u; q < MATVEC_ROWS; q++) {
            let row = word_row(p.w_row0 + min(j0 + q, p.n - 1u), p.k);
            loaded[u][q] = vec2(w[row.first + i], w[word_scale(row, i)]);
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

// This invocation's part of the dot products of x's row at x0 with W's rows j0 .. j0 + MATVEC_ROWS: the words
// lane, lane + ROW_THREADS, ... of each row, or its weights one by one where rows are not read by words.
fn rows_part(x0: u32, j0: u32, lane: u32) -> Rows8 {
    return rows_part_of(x0, j0, lane, 0u, p.k);
}

// rows_part over columns [c_begin, c_end) only, c_begin a multiple of 8 (a word's first weight, any type).
fn rows_part_of(x0: u32, j0: u32, lane: u32, c_begin: u32, c_end: u32) -> Rows8 {
    var acc: Rows8;
    let per = word_weights();
    let w_begin = c_begin / per;
    let w_end = (c_end + per - 1u) / per;
    if rows_by_word(p.k) && MATVEC_UNROLL > 1u {
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
    } else if rows_by_word(p.k) {
        for (var i = w_begin + lane % ROW_THREADS; i < w_end; i += ROW_THREADS) {
            let xs = x_word(x0, i);
            for (var q = 0u; q < MATVEC_ROWS; q++) {
                acc = rows8_add_at(acc, q, row_word_dot(j0 + q, i, xs));
            }
        }
    } else {
        for (var c = c_begin + lane % ROW_THREADS; c < c_end; c += ROW_THREADS) {
            let xc = x[x0 + c];
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

// matvec_slot of linear workgroup g.
fn matvec_slot_of(g: u32, lane: u32) -> MatvecSlot {
    let rows_per_group = WG / ROW_THREADS * MATVEC_ROWS;
    let groups_per_token = matvec_groups();
    var s: MatvecSlot;
    s.r = g / groups_per_token;
    s.block = g % groups_per_token;
    s.j0 = s.block * rows_per_group + lane / ROW_THREADS * MATVEC_ROWS;
    return s;
}

// Whether this invocation stores its row group's outputs.
fn stores(s: MatvecSlot, lane: u32) -> bool {
    return s.r < p.t && lane % ROW_THREADS == 0u;
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
    var acc: Rows8;
    if s.r < p.t && s.j0 < p.n {
        acc = rows_part(s.r * p.x_stride + p.x_offset, s.j0, lane);
    }
    let sums = row_sum8(lane, acc);
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
    if s.r < p.t && s.j0 < p.n && c_begin < p.k {
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

// rms_norm(x)[r, c], as rms_norm.wgsl computes it, given the row's 1 / rms.
fn normalised(x0: u32, c: u32, inv_rms: f32) -> f32 {
    return norm_w[c] * (x[x0 + c] * inv_rms);
}

// x_word of the normalised row.
fn normalised_word(x0: u32, i: u32, inv_rms: f32) -> X8 {
    let per = word_weights();
    var xs: X8;
    xs.a.x = normalised_at(x0, i * per, inv_rms);
    if per >= 2u {
        xs.a.y = normalised_at(x0, i * per + 1u, inv_rms);
    }
    if per >= 4u {
        xs.a.z = normalised_at(x0, i * per + 2u, inv_rms);
        xs.a.w = normalised_at(x0, i * per + 3u, inv_rms);
    }
    if per == 8u {
        let c = i * per;
        xs.b = vec4(normalised_at(x0, c + 4u, inv_rms), normalised_at(x0, c + 5u, inv_rms),
            normalised_at(x0, c + 6u, inv_rms), normalised_at(x0, c + 7u, inv_rms));
    }
    return xs;
}

// normalised(x0, c, inv_rms), 0 past the row; the loads clamped into it.
fn normalised_at(x0: u32, c: u32, inv_rms: f32) -> f32 {
    return select(0.0, normalised(x0, min(c, p.k - 1u), inv_rms), c < p.k);
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
    var sum_sq = 0.0;
    if s.r < p.t {
        for (var c = lane % ROW_THREADS; c < p.k; c += ROW_THREADS) {
            let v = x[x0 + c];
            sum_sq += v * v;
        }
    }
    let inv_rms = 1.0 / sqrt(row_sum(lane, sum_sq) / f32(p.k) + p.eps);

    let live = s.r < p.t && s.j0 < p.n;
    var acc: Rows8;
    if live && rows_by_word(p.k) && MATVEC_UNROLL > 1u {
        let words = word_row(0u, p.k).words;
        for (var i0 = lane % ROW_THREADS; i0 < words; i0 += ROW_THREADS * MATVEC_UNROLL) {
            var x: RoundXs;
            for (var u = 0u; u < MATVEC_UNROLL; u++) {
                x.xs[u] = normalised_word(x0, i0 + u * ROW_THREADS, inv_rms);
            }
            acc = rows_round(s.j0, i0, words, x, acc);
        }
    } else if live && rows_by_word(p.k) {
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
    if live {
        acc = rows_scaled(s.j0, acc);
    }
    return NormDot(inv_rms, row_sum8(lane, acc));
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
    if s.block == 0u && s.r < p.t {
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

// The tiled kernel's output tile (TILE x TILE), its k step, and its workgroup: 16 x 16 invocations of 4 x 4
// outputs. The tiles are stored k-major, so that the inner loop reads an invocation's 4 rows of x and 4 columns
// of W as one vec4 each (2 workgroup loads per 16 multiply-adds); a k-row is padded from 16 to 17 vec4 so that
// the staging stores of 16 consecutive k by neighbouring invocations fall in different banks.
const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
const TILED_WG: u32 = 256u;
const TILE_STRIDE: u32 = 17u; // vec4 per k-row of a staged tile

var<workgroup> x_tile: array<vec4<f32>, 272>; // x[r0 + r, k0 + kk] at [kk * TILE_STRIDE + r / 4][r % 4]
var<workgroup> w_tile: array<vec4<f32>, 272>; // W[j0 + j, k0 + kk] at [kk * TILE_STRIDE + j / 4][j % 4]

@compute @workgroup_size(TILED_WG)
fn tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r0 = (g / tiles_n) * TILE;
    let j0 = (g % tiles_n) * TILE;
    // This invocation's 4 x 4 block: rows r0 + 4 ty + i, columns j0 + 4 tx + jj.
    let tx = lane % 16u;
    let ty = lane / 16u;
    // What it stages: element e = lane + TILED_WG q (q < 4) of each tile, row e / TILE_K, k0 + e % TILE_K, so
    // that neighbouring invocations read neighbouring columns of x and W. The next step's values are loaded
    // into registers before this step's arithmetic, to hide the loads' latency behind it.
    let kk = lane % TILE_K;
    let row = lane / TILE_K; // + 16 q
    var xs: array<f32, 4>;
    var ws: array<f32, 4>;
    for (var q = 0u; q < 4u; q++) {
        xs[q] = tile_x(r0 + row + 16u * q, kk);
        ws[q] = tile_w(j0 + row + 16u * q, kk);
    }

    var acc: array<vec4<f32>, 4>; // [row i] columns 4 tx .. 4 tx + 3
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        for (var q = 0u; q < 4u; q++) {
            let at = kk * TILE_STRIDE + (row + 16u * q) / 4u;
            x_tile[at][row % 4u] = xs[q];
            w_tile[at][row % 4u] = ws[q];
        }
        workgroupBarrier();
        if k0 + TILE_K < p.k {
            for (var q = 0u; q < 4u; q++) {
                xs[q] = tile_x(r0 + row + 16u * q, k0 + TILE_K + kk);
                ws[q] = tile_w(j0 + row + 16u * q, k0 + TILE_K + kk);
            }
        }
        for (var k = 0u; k < TILE_K; k++) {
            let a = x_tile[k * TILE_STRIDE + ty];
            let b = w_tile[k * TILE_STRIDE + tx];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + ty * 4u + i;
        for (var jj = 0u; jj < 4u; jj++) {
            let j = j0 + tx * 4u + jj;
            if r < p.t && j < p.n {
                store(r, j, acc[i][jj]);
            }
        }
    }
}

// x[r, c] for the tiled kernel, 0 past the matrix.
fn tile_x(r: u32, c: u32) -> f32 {
    if r < p.t && c < p.k {
        return x[r * p.x_stride + p.x_offset + c];
    }
    return 0.0;
}

// W[j, c] for the tiled kernel, 0 past the matrix.
fn tile_w(j: u32, c: u32) -> f32 {
    if j < p.n && c < p.k {
        return w_at(j, c);
    }
    return 0.0;
}

// ---- tiled_wide (prefill): 128 x 128 output tiles per workgroup of 16 x 16 invocations of 8 x 8 ----
//
// Invocation (tx, ty) computes rows {4 ty, 64 + 4 ty} + 0..3 and columns {4 tx, 64 + 4 tx} + 0..3 of the tile, so
// that a k-row of a staged tile is read as 16 consecutive vec4 by 16 neighbouring invocations. k steps by 8;
// the tiles are k-major, each k-row padded from 32 to 33 vec4 so that the staging stores spread over the
// banks. 64 multiply-adds per 4 workgroup loads, against tiled's 16 per 2. Needs t and n of 128 or more to
// fill its tiles; the 64 x 64 kernel is the default (Prefill::Tiled) until this one is measured on a GPU.
// Grid: ceil(t / 128) * ceil(n / 128) workgroups, linear.

const WIDE_TILE: u32 = 128u;
const WIDE_K: u32 = 8u;
const WIDE_STRIDE: u32 = 33u; // vec4 per k-row of a staged tile

var<workgroup> wide_x: array<vec4<f32>, 264>; // x[r0 + r, k0 + kk] at [kk * WIDE_STRIDE + r / 4][r % 4]
var<workgroup> wide_w: array<vec4<f32>, 264>; // W[j0 + j, k0 + kk] likewise

@compute @workgroup_size(TILED_WG)
fn tiled_wide(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let tiles_n = (p.n + WIDE_TILE - 1u) / WIDE_TILE;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r0 = (g / tiles_n) * WIDE_TILE;
    let j0 = (g % tiles_n) * WIDE_TILE;
    let tx = lane % 16u;
    let ty = lane / 16u;
    // Staging: element lane + TILED_WG q (q < 4) of each tile, row lane / WIDE_K + 32 q, k0 + lane % WIDE_K; the
    // next step's loaded into registers before this step's arithmetic.
    let kk = lane % WIDE_K;
    let row = lane / WIDE_K;
    var xs: array<f32, 4>;
    var ws: array<f32, 4>;
    for (var q = 0u; q < 4u; q++) {
        xs[q] = tile_x(r0 + row + 32u * q, kk);
        ws[q] = tile_w(j0 + row + 32u * q, kk);
    }

    // acc[4 b + i]: row (b / 2) * 64 + 4 ty + i, columns (b % 2) * 64 + 4 tx + 0..3.
    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += WIDE_K) {
        for (var q = 0u; q < 4u; q++) {
            let at = kk * WIDE_STRIDE + (row + 32u * q) / 4u;
            wide_x[at][row % 4u] = xs[q];
            wide_w[at][row % 4u] = ws[q];
        }
        workgroupBarrier();
        if k0 + WIDE_K < p.k {
            for (var q = 0u; q < 4u; q++) {
                xs[q] = tile_x(r0 + row + 32u * q, k0 + WIDE_K + kk);
                ws[q] = tile_w(j0 + row + 32u * q, k0 + WIDE_K + kk);
            }
        }
        for (var k = 0u; k < WIDE_K; k++) {
            let a0 = wide_x[k * WIDE_STRIDE + ty];
            let a1 = wide_x[k * WIDE_STRIDE + 16u + ty];
            let b0 = wide_w[k * WIDE_STRIDE + tx];
            let b1 = wide_w[k * WIDE_STRIDE + 16u + tx];
            acc[0] += a0.x * b0;
            acc[1] += a0.y * b0;
            acc[2] += a0.z * b0;
            acc[3] += a0.w * b0;
            acc[4] += a0.x * b1;
            acc[5] += a0.y * b1;
            acc[6] += a0.z * b1;
            acc[7] += a0.w * b1;
            acc[8] += a1.x * b0;
            acc[9] += a1.y * b0;
            acc[10] += a1.z * b0;
            acc[11] += a1.w * b0;
            acc[12] += a1.x * b1;
            acc[13] += a1.y * b1;
            acc[14] += a1.z * b1;
            acc[15] += a1.w * b1;
        }
        workgroupBarrier();
    }
    for (var b = 0u; b < 4u; b++) {
        for (var i = 0u; i < 4u; i++) {
            let r = r0 + (b / 2u) * 64u + ty * 4u + i;
            for (var jj = 0u; jj < 4u; jj++) {
                let j = j0 + (b % 2u) * 64u + tx * 4u + jj;
                if r < p.t && j < p.n {
                    store(r, j, acc[4u * b + i][jj]);
                }
            }
        }
    }
}
