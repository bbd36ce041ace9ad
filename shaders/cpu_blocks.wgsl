// cpu_blocks.wgsl: what the CPU prefill kernels (matmul_cpu.wgsl, moe_cpu.wgsl) share, placed before them: the
// register block's sizes, and a lane's weights of a round of k decoded into registers.

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
