// cpu_blocks.wgsl: what the CPU prefill kernels (matmul_cpu.wgsl, moe_cpu.wgsl) share, placed before them: the
// register block's sizes and sums, a lane's weights of a round of k decoded into registers, and a round's products
// added into the sums. matmul_cpu.wgsl's header says how the rounds go. Each kernel binds its weights as vec4<u32>
// and gives them to these functions by matrix_quad(second, i) and matrix_word(second, i): quad or word i of its
// first weight matrix, or of its second with `second` (a constant at every call, so no branch is left to run); and
// its rows of x by x_word(i, c) and x_quad(i, c), and stores row i of the block by store_row(i).
//
// llvmpipe keeps an invocation's array in registers (or plain stack slots) only while every index into it is a
// constant once functions are inlined and short loops unrolled: one index that is not, anywhere in the kernel, and
// every access to the array is a gather or scatter of 8 scalars. A loop over the block's rows is too long to be
// unrolled, so the rounds and the stores are written out below, a line a row, and the rows take the round's
// weights by value, read at constant indices (read through the array variable, lavapipe's passes over variables
// took 0.38 s to build matmul_cpu instead of 0.23). Lavapipe, matmul_cpu at [256 x 512] x [1024 x 512]^T, f32 /
// bf16: the sums indexed by loop counters 12.9 / 11.4 ms, written out 8.5 / 7.0 ms. Blocks of 32 rows took 7.0 /
// 6.3 ms but 0.74 s to build (0.13 s with the loops), which a process's first prompt waits for.

const SG: u32 = 8u; // subgroup width
const ROWS: u32 = 16u; // rows of y per invocation (shared by its subgroup); the lists below have one line a row
const COLS: u32 = 4u; // columns of y per invocation: the lanes of a vec4
const K_WORDS: u32 = SG; // columns of k per round read by words: lane l loads x[r, k0 + l]
const K_QUADS: u32 = 4u * SG; // per round read by quads (matmul_cpu.wgsl): lane l loads x[r, k0 + 4l .. 4l + 4]

// A lane's weights for one round: at column kk of the round (of K_ROUND), those of its COLS columns of y.
alias RoundWeights = array<vec4<f32>, K_QUADS>;
// A lane's sums: row i's COLS columns at [i].
alias Block = array<vec4<f32>, ROWS>;

// The invocation's sums, and moe_cpu's SwiGLU by words' sums of up; the weights of the round, and of up's.
var<private> acc: Block;
var<private> acc_up: Block;
var<private> ws: RoundWeights;
var<private> ws_up: RoundWeights;

// The word_weights() weights of v (the prelude's word_values of one word) into column `col` of (*into)[at ..], in
// order.
fn put_word(into: ptr<private, RoundWeights>, col: u32, at: u32, v: X8) {
    let per = word_weights();
    (*into)[at][col] = v.a.x;
    if per >= 2u {
        (*into)[at + 1u][col] = v.a.y;
    }
    if per >= 4u {
        (*into)[at + 2u][col] = v.a.z;
        (*into)[at + 3u][col] = v.a.w;
    }
    if per == 8u {
        (*into)[at + 4u][col] = v.b.x;
        (*into)[at + 5u][col] = v.b.y;
        (*into)[at + 6u][col] = v.b.z;
        (*into)[at + 7u][col] = v.b.w;
    }
}

// Whether W's rows (of `cols` weights) are whole quads: quantized rows always (their scales and codes are padded
// to 16 bytes), f32 rows of a multiple of 4, f16 and bf16 rows of a multiple of 8.
fn rows_whole_quads(cols: u32) -> bool {
    return W_DTYPE > DTYPE_BF16 || (rows_on_words(cols) && word_row(0u, cols).words % 4u == 0u);
}

// The weights of `quad`, words i .. i + 4 of its row, into column `col` of (*into)[at ..], given the word holding
// their scale (word_values_scale: a quad lies in one q4 group).
fn put_quad(into: ptr<private, RoundWeights>, col: u32, at: u32, quad: vec4<u32>, scale_word: u32, i: u32) {
    let per = word_weights();
    put_word(into, col, at, word_values(quad.x, scale_word, i));
    put_word(into, col, at + per, word_values(quad.y, scale_word, i + 1u));
    put_word(into, col, at + 2u * per, word_values(quad.z, scale_word, i + 2u));
    put_word(into, col, at + 3u * per, word_values(quad.w, scale_word, i + 3u));
}

// The weights of W's row `row` (of the kernel's second matrix with `second`: moe_cpu.wgsl's up) at columns
// k0 .. k0 + `cols` into column `col` of *into, k0 a multiple of `cols`: by words (cols K_WORDS: f32 8 loads, f16
// and bf16 4, q8 2 and its row scale, q4 1 and its group scale) or by quads (cols K_QUADS, rows_whole_quads: f32 8
// loads, f16 and bf16 4, q8 2, q4 1, and their scale), decoded as weight_value decodes each weight. A word or quad
// past the row's last is its last again (x is 0 there).
fn row_weights(into: ptr<private, RoundWeights>, col: u32, second: bool, row: u32, k0: u32, cols: u32) {
    let r = word_row(row, p.k);
    let per = word_weights();
    if cols == K_WORDS {
        for (var u = 0u; u < K_WORDS / per; u++) {
            let i = min(k0 / per + u, r.words - 1u);
            let scale_word = matrix_word(second, word_values_scale(r, i));
            put_word(into, col, u * per, word_values(matrix_word(second, r.first + i), scale_word, i));
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
        put_quad(into, col, 4u * u * per, matrix_quad(second, (r.first + i) / 4u), scale_word, i);
    }
}

// acc[i] += x[row i, k0 .. k0 + SG] . W[columns, k0 .. k0 + SG], a round by words: x_word(i, c) is this lane's
// x[row i, k0 + lane] (c = k0 + lane), w the weights; with `gated` the same into acc_up from w_up, each x value
// broadcast once for both. The weights come by value and are read at constant indices: no array access is left
// for lavapipe's passes over variables, which take time that grows faster than the kernel.
fn add_row_by_words(i: u32, c: u32, gated: bool, w: RoundWeights, w_up: RoundWeights) {
    let xw = x_word(i, c);
    let x0 = subgroupBroadcast(xw, 0u);
    let x1 = subgroupBroadcast(xw, 1u);
    let x2 = subgroupBroadcast(xw, 2u);
    let x3 = subgroupBroadcast(xw, 3u);
    let x4 = subgroupBroadcast(xw, 4u);
    let x5 = subgroupBroadcast(xw, 5u);
    let x6 = subgroupBroadcast(xw, 6u);
    let x7 = subgroupBroadcast(xw, 7u);
    acc[i] += x0 * w[0] + x1 * w[1] + x2 * w[2] + x3 * w[3] + x4 * w[4] + x5 * w[5] + x6 * w[6] + x7 * w[7];
    if gated {
        acc_up[i] += x0 * w_up[0] + x1 * w_up[1] + x2 * w_up[2] + x3 * w_up[3] + x4 * w_up[4] + x5 * w_up[5]
            + x6 * w_up[6] + x7 * w_up[7];
    }
}

// add_row_by_words over a round by quads, K_QUADS columns: x_quad(i, c) is this lane's x[row i, k0 + 4 lane ..]
// (c = k0 + 4 lane), w the weights. Eight columns at a time, as four rounds by words would add them.
fn add_row_by_quads(i: u32, c: u32, w: RoundWeights) {
    let xq = x_quad(i, c);
    let a0 = subgroupBroadcast(xq, 0u);
    let a1 = subgroupBroadcast(xq, 1u);
    let a2 = subgroupBroadcast(xq, 2u);
    let a3 = subgroupBroadcast(xq, 3u);
    let a4 = subgroupBroadcast(xq, 4u);
    let a5 = subgroupBroadcast(xq, 5u);
    let a6 = subgroupBroadcast(xq, 6u);
    let a7 = subgroupBroadcast(xq, 7u);
    var s = acc[i];
    s += a0.x * w[0] + a0.y * w[1] + a0.z * w[2] + a0.w * w[3] + a1.x * w[4] + a1.y * w[5] + a1.z * w[6] + a1.w * w[7];
    s += a2.x * w[8] + a2.y * w[9] + a2.z * w[10] + a2.w * w[11] + a3.x * w[12] + a3.y * w[13] + a3.z * w[14]
        + a3.w * w[15];
    s += a4.x * w[16] + a4.y * w[17] + a4.z * w[18] + a4.w * w[19] + a5.x * w[20] + a5.y * w[21] + a5.z * w[22]
        + a5.w * w[23];
    s += a6.x * w[24] + a6.y * w[25] + a6.z * w[26] + a6.w * w[27] + a7.x * w[28] + a7.y * w[29] + a7.z * w[30]
        + a7.w * w[31];
    acc[i] = s;
}

// The rounds and the stores of all ROWS rows, written out (the header says why).
fn add_round_by_quads(c: u32) {
    let w = ws;
    add_row_by_quads(0u, c, w);
    add_row_by_quads(1u, c, w);
    add_row_by_quads(2u, c, w);
    add_row_by_quads(3u, c, w);
    add_row_by_quads(4u, c, w);
    add_row_by_quads(5u, c, w);
    add_row_by_quads(6u, c, w);
    add_row_by_quads(7u, c, w);
    add_row_by_quads(8u, c, w);
    add_row_by_quads(9u, c, w);
    add_row_by_quads(10u, c, w);
    add_row_by_quads(11u, c, w);
    add_row_by_quads(12u, c, w);
    add_row_by_quads(13u, c, w);
    add_row_by_quads(14u, c, w);
    add_row_by_quads(15u, c, w);
}

fn add_round_by_words(c: u32, gated: bool) {
    let w = ws;
    let w_up = ws_up;
    add_row_by_words(0u, c, gated, w, w_up);
    add_row_by_words(1u, c, gated, w, w_up);
    add_row_by_words(2u, c, gated, w, w_up);
    add_row_by_words(3u, c, gated, w, w_up);
    add_row_by_words(4u, c, gated, w, w_up);
    add_row_by_words(5u, c, gated, w, w_up);
    add_row_by_words(6u, c, gated, w, w_up);
    add_row_by_words(7u, c, gated, w, w_up);
    add_row_by_words(8u, c, gated, w, w_up);
    add_row_by_words(9u, c, gated, w, w_up);
    add_row_by_words(10u, c, gated, w, w_up);
    add_row_by_words(11u, c, gated, w, w_up);
    add_row_by_words(12u, c, gated, w, w_up);
    add_row_by_words(13u, c, gated, w, w_up);
    add_row_by_words(14u, c, gated, w, w_up);
    add_row_by_words(15u, c, gated, w, w_up);
}

fn store_block() {
    store_row(0u);
    store_row(1u);
    store_row(2u);
    store_row(3u);
    store_row(4u);
    store_row(5u);
    store_row(6u);
    store_row(7u);
    store_row(8u);
    store_row(9u);
    store_row(10u);
    store_row(11u);
    store_row(12u);
    store_row(13u);
    store_row(14u);
    store_row(15u);
}
