// matmul_cpu.wgsl: y = x W^T (+ y when accumulating), the prefill matmul for CPU adapters (lavapipe's llvmpipe).
// Reference: reference::matmul. Parameters and layouts: matmul_common.wgsl; x and W bound as vec4 here.
//
// Why a second kernel: llvmpipe runs the 8 invocations of a subgroup as the 8 lanes of one SIMD vector, so
// arithmetic costs one instruction per 8 invocations, but every load from a buffer (workgroup memory included) is
// 8 scalar loads, and every barrier a coroutine switch. The tiled kernel stages through workgroup memory and
// spends about one load per multiply-add; this one far fewer:
// - no workgroup memory, no barriers;
// - each invocation accumulates ROWS rows x COLS columns of y in registers (cpu_blocks.wgsl);
// - the 8 lanes of a subgroup share their rows of x: each element of x is loaded once per subgroup, each weight
//   once, and each x value reaches every lane through subgroupBroadcast with a constant lane (a register extract
//   on llvmpipe, where subgroupShuffle is a loop);
// - k goes by rounds. Where W's rows are whole quads and x's rows start on vec4s (every released Jamba's
//   matrices), a round reads 16 bytes a load: lane l loads x[r, k0 + 4l .. 4l + 4] and whole quads of its rows
//   of W (K_QUADS columns; lavapipe, the default model's prefill matmuls: 119-134 -> 76-88 ms a 256-token
//   chunk). Else a value and a word at a time (K_WORDS columns). Either way the products are added eight columns
//   of k at a time, then into the sum, so both give the same result. The choice is made once, before the loop
//   over k: llvmpipe runs both sides of a branch, masked.
//
// Grid: ceil(t / (8 ROWS)) * ceil(n / (8 COLS)) workgroups, linear. A workgroup is 8 subgroups of 8 (the kernel
// needs 8-wide subgroups; Tuning picks it only on such adapters): subgroup s takes rows r0 + ROWS s + i, lane l
// takes columns j0 + l + 8 c.

// MatmulParams, y and store(): matmul_common.wgsl; the block's sizes and put_word: cpu_blocks.wgsl.

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

fn x_value(i: u32) -> f32 {
    return x[i / 4u][i % 4u];
}

fn w_word(i: u32) -> u32 {
    return w[i / 4u][i % 4u];
}

// A lane's sums, [ROWS][COLS].
alias Block = array<f32, ROWS * COLS>;
// A lane's x values of a round for each of its ROWS rows: x[row, k0 + lane] by words, x[row, k0 + 4 lane ..] by
// quads.
alias XWords = array<f32, ROWS>;
alias XQuads = array<vec4<f32>, ROWS>;
// Helpers take these by pointer: arrays passed by value made lavapipe's rounds 12 times slower.

// Whether W's rows (of `cols` weights) are whole quads: quantized rows always (their scales and codes are padded
// to 16 bytes), f32 rows of a multiple of 4, f16 and bf16 rows of a multiple of 8.
fn rows_whole_quads(cols: u32) -> bool {
    return W_DTYPE > DTYPE_BF16 || (rows_on_words(cols) && word_row(0u, cols).words % 4u == 0u);
}

// The weights of `quad`, words i .. i + 4 of its row, into ws[at ..], given the word holding their scale
// (word_values_scale: a quad lies in one q4 group).
fn put_quad(ws: ptr<function, RoundWeights>, at: u32, quad: vec4<u32>, scale_word: u32, i: u32) {
    let per = word_weights();
    put_word(ws, at, word_values(quad.x, scale_word, i));
    put_word(ws, at + per, word_values(quad.y, scale_word, i + 1u));
    put_word(ws, at + 2u * per, word_values(quad.z, scale_word, i + 2u));
    put_word(ws, at + 3u * per, word_values(quad.w, scale_word, i + 3u));
}

// The weights of W's row `row` at columns k0 .. k0 + `cols` into ws[b ..], k0 a multiple of `cols`: by words
// (cols K_WORDS: f32 8 loads, f16 and bf16 4, q8 2 and its row scale, q4 1 and its group scale) or by quads (cols
// K_QUADS, rows_whole_quads: f32 8 loads, f16 and bf16 4, q8 2, q4 1, and their scale), decoded as weight_value
// decodes each weight. A word or quad past the row's last is its last again (x is 0 there).
fn row_weights(ws: ptr<function, RoundWeights>, b: u32, row: u32, k0: u32, cols: u32) {
    let r = word_row(row, p.k);
    let per = word_weights();
    if cols == K_WORDS {
        for (var u = 0u; u < K_WORDS / per; u++) {
            let i = min(k0 / per + u, r.words - 1u);
            put_word(ws, b + u * per, word_values(w_word(r.first + i), w_word(word_values_scale(r, i)), i));
        }
        return;
    }
    let quads = (r.words + 3u) / 4u; // a quantized row's codes are padded to a whole quad
    for (var u = 0u; u < K_QUADS / (4u * per); u++) {
        let i = 4u * min(k0 / (4u * per) + u, quads - 1u);
        var scale_word = 0u;
        if W_DTYPE >= DTYPE_Q8 {
            scale_word = w_word(word_values_scale(r, i));
        }
        put_quad(ws, b + 4u * u * per, w[(r.first + i) / 4u], scale_word, i);
    }
}

// acc[i][cc] += x[row i, k0 .. k0 + SG] . W[column cc, k0 .. k0 + SG], a round by words: xs[i] is this lane's
// x[row i, k0 + lane], ws[cc * K_WORDS ..] the weights.
fn add_round_by_words(acc: ptr<function, Block>, xs: ptr<function, XWords>, ws: ptr<function, RoundWeights>) {
    for (var i = 0u; i < ROWS; i++) {
        let x0 = subgroupBroadcast((*xs)[i], 0u);
        let x1 = subgroupBroadcast((*xs)[i], 1u);
        let x2 = subgroupBroadcast((*xs)[i], 2u);
        let x3 = subgroupBroadcast((*xs)[i], 3u);
        let x4 = subgroupBroadcast((*xs)[i], 4u);
        let x5 = subgroupBroadcast((*xs)[i], 5u);
        let x6 = subgroupBroadcast((*xs)[i], 6u);
        let x7 = subgroupBroadcast((*xs)[i], 7u);
        for (var cc = 0u; cc < COLS; cc++) {
            let b = cc * K_WORDS;
            (*acc)[i * COLS + cc] += x0 * (*ws)[b] + x1 * (*ws)[b + 1u] + x2 * (*ws)[b + 2u] + x3 * (*ws)[b + 3u]
                + x4 * (*ws)[b + 4u] + x5 * (*ws)[b + 5u] + x6 * (*ws)[b + 6u] + x7 * (*ws)[b + 7u];
        }
    }
}

// add_round_by_words over a round by quads, K_QUADS columns: xs[i] is this lane's x[row i, k0 + 4 lane ..],
// ws[cc * K_QUADS ..] the weights. Eight columns at a time, as four rounds by words would add them.
fn add_round_by_quads(acc: ptr<function, Block>, xs: ptr<function, XQuads>, ws: ptr<function, RoundWeights>) {
    for (var i = 0u; i < ROWS; i++) {
        let a0 = subgroupBroadcast((*xs)[i], 0u);
        let a1 = subgroupBroadcast((*xs)[i], 1u);
        let a2 = subgroupBroadcast((*xs)[i], 2u);
        let a3 = subgroupBroadcast((*xs)[i], 3u);
        let a4 = subgroupBroadcast((*xs)[i], 4u);
        let a5 = subgroupBroadcast((*xs)[i], 5u);
        let a6 = subgroupBroadcast((*xs)[i], 6u);
        let a7 = subgroupBroadcast((*xs)[i], 7u);
        for (var cc = 0u; cc < COLS; cc++) {
            let b = cc * K_QUADS;
            var s = (*acc)[i * COLS + cc];
            s += a0.x * (*ws)[b] + a0.y * (*ws)[b + 1u] + a0.z * (*ws)[b + 2u] + a0.w * (*ws)[b + 3u]
                + a1.x * (*ws)[b + 4u] + a1.y * (*ws)[b + 5u] + a1.z * (*ws)[b + 6u] + a1.w * (*ws)[b + 7u];
            s += a2.x * (*ws)[b + 8u] + a2.y * (*ws)[b + 9u] + a2.z * (*ws)[b + 10u] + a2.w * (*ws)[b + 11u]
                + a3.x * (*ws)[b + 12u] + a3.y * (*ws)[b + 13u] + a3.z * (*ws)[b + 14u] + a3.w * (*ws)[b + 15u];
            s += a4.x * (*ws)[b + 16u] + a4.y * (*ws)[b + 17u] + a4.z * (*ws)[b + 18u] + a4.w * (*ws)[b + 19u]
                + a5.x * (*ws)[b + 20u] + a5.y * (*ws)[b + 21u] + a5.z * (*ws)[b + 22u] + a5.w * (*ws)[b + 23u];
            s += a6.x * (*ws)[b + 24u] + a6.y * (*ws)[b + 25u] + a6.z * (*ws)[b + 26u] + a6.w * (*ws)[b + 27u]
                + a7.x * (*ws)[b + 28u] + a7.y * (*ws)[b + 29u] + a7.z * (*ws)[b + 30u] + a7.w * (*ws)[b + 31u];
            (*acc)[i * COLS + cc] = s;
        }
    }
}

// W's row for row j of y, clamped into the matrix (its results are not stored).
fn w_row(j: u32) -> u32 {
    return p.w_row0 + min(j, p.n - 1u);
}

// Whether the rounds read x and W by quads: W's rows whole quads, x's rows starting on vec4s.
fn by_quads() -> bool {
    return rows_whole_quads(p.k) && p.x_stride % 4u == 0u && p.x_offset % 4u == 0u;
}

// Row r of x (clamped to the last: rows past t are never stored), at column c, 0 past k.
fn x_at(r: u32, c: u32) -> f32 {
    return select(0.0, x_value(min(r, p.t - 1u) * p.x_stride + p.x_offset + min(c, p.k - 1u)), c < p.k);
}

// Row r of x at columns c .. c + 4 (c a multiple of 4, the row on a vec4), 0 past k.
fn x_quad_at(r: u32, c: u32) -> vec4<f32> {
    let v = x[(min(r, p.t - 1u) * p.x_stride + p.x_offset + min(c, p.k - 1u)) / 4u];
    return select(vec4(0.0), v, vec4(c) + vec4(0u, 1u, 2u, 3u) < vec4(p.k));
}

@compute @workgroup_size(WG)
fn blocked(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let tiles_n = (p.n + SG * COLS - 1u) / (SG * COLS);
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r0 = (g / tiles_n) * (WG / SG) * ROWS + (index / SG) * ROWS;
    let j0 = (g % tiles_n) * SG * COLS + lane;
    // The subgroup's rows are its own: it leaves whole when they are all past t.
    if r0 >= p.t {
        return;
    }

    var acc: Block;
    if by_quads() {
        for (var k0 = 0u; k0 < p.k; k0 += K_QUADS) {
            var xs: XQuads;
            for (var i = 0u; i < ROWS; i++) {
                xs[i] = x_quad_at(r0 + i, k0 + 4u * lane);
            }
            var ws: RoundWeights;
            for (var cc = 0u; cc < COLS; cc++) {
                row_weights(&ws, cc * K_QUADS, w_row(j0 + SG * cc), k0, K_QUADS);
            }
            add_round_by_quads(&acc, &xs, &ws);
        }
    } else {
        for (var k0 = 0u; k0 < p.k; k0 += K_WORDS) {
            var xs: XWords;
            for (var i = 0u; i < ROWS; i++) {
                xs[i] = x_at(r0 + i, k0 + lane);
            }
            var ws: RoundWeights;
            for (var cc = 0u; cc < COLS; cc++) {
                row_weights(&ws, cc * K_WORDS, w_row(j0 + SG * cc), k0, K_WORDS);
            }
            add_round_by_words(&acc, &xs, &ws);
        }
    }
    for (var i = 0u; i < ROWS; i++) {
        for (var cc = 0u; cc < COLS; cc++) {
            let r = r0 + i;
            let j = j0 + SG * cc;
            if r < p.t && j < p.n {
                store(r, j, acc[i * COLS + cc]);
            }
        }
    }
}
