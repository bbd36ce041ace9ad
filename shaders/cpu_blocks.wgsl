// cpu_blocks.wgsl: what the CPU prefill kernels (matmul_cpu.wgsl, moe_cpu.wgsl) share, placed before them: the
// register block's sizes, a lane's weights of a round of k decoded into registers, and a round's products added
// into a lane's sums. matmul_cpu.wgsl's header says how the rounds go. Each kernel binds its weights as vec4<u32>
// and gives them to these functions by matrix_quad(second, i) and matrix_word(second, i): quad or word i of its
// first weight matrix, or of its second with `second` (a constant at every call, so no branch is left to run).

const SG: u32 = 8u; // subgroup width
const ROWS: u32 = 16u; // rows of y per invocation (shared by its subgroup)
const COLS: u32 = 4u; // columns of y per invocation
const K_WORDS: u32 = SG; // columns of k per round read by words: lane l loads x[r, k0 + l]
const K_QUADS: u32 = 4u * SG; // per round read by quads (matmul_cpu.wgsl): lane l loads x[r, k0 + 4l .. 4l + 4]

// A lane's weights for one round, [COLS][K_ROUND]: K_ROUND of the row of each of its COLS columns of y.
alias RoundWeights = array<f32, COLS * K_QUADS>;

// The word_weights() weights of v (the prelude's word_values of one word) into ws[at ..], in column order.
fn put_word(ws: ptr<function, RoundWeights>, at: u32, v: X8) {
    let per = word_weights();
    (*ws)[at] = v.a.x;
    if per >= 2u {
        (*ws)[at + 1u] = v.a.y;
    }
    if per >= 4u {
        (*ws)[at + 2u] = v.a.z;
        (*ws)[at + 3u] = v.a.w;
    }
    if per == 8u {
        (*ws)[at + 4u] = v.b.x;
        (*ws)[at + 5u] = v.b.y;
        (*ws)[at + 6u] = v.b.z;
        (*ws)[at + 7u] = v.b.w;
    }
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

// The weights of W's row `row` (of the kernel's second matrix with `second`: moe_cpu.wgsl's up) at columns
// k0 .. k0 + `cols` into ws[b ..], k0 a multiple of `cols`: by words (cols K_WORDS: f32 8 loads, f16 and bf16 4,
// q8 2 and its row scale, q4 1 and its group scale) or by quads (cols K_QUADS, rows_whole_quads: f32 8 loads, f16
// and bf16 4, q8 2, q4 1, and their scale), decoded as weight_value decodes each weight. A word or quad past the
// row's last is its last again (x is 0 there).
fn row_weights(ws: ptr<function, RoundWeights>, b: u32, second: bool, row: u32, k0: u32, cols: u32) {
    let r = word_row(row, p.k);
    let per = word_weights();
    if cols == K_WORDS {
        for (var u = 0u; u < K_WORDS / per; u++) {
            let i = min(k0 / per + u, r.words - 1u);
            let scale_word = matrix_word(second, word_values_scale(r, i));
            put_word(ws, b + u * per, word_values(matrix_word(second, r.first + i), scale_word, i));
        }
        return;
    }
    let quads = (r.words + 3u) / 4u; // a quantized row's codes are padded to a whole quad
    for (var u = 0u; u < K_QUADS / (4u * per); u++) {
        let i = 4u * min(k0 / (4u * per) + u, quads - 1u);
        var scale_word = 0u;
        if W_DTYPE >= DTYPE_Q8 {
            scale_word = matrix_word(second, word_values_scale(r, i));
        }
        put_quad(ws, b + 4u * u * per, matrix_quad(second, (r.first + i) / 4u), scale_word, i);
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
