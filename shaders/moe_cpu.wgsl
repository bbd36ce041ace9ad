// moe_cpu.wgsl: the prefill expert kernels of moe.wgsl (swiglu_tiled, down_tiled) for CPU adapters (lavapipe's
// llvmpipe), computing the same values into the same layouts from the same bindings; moe.wgsl's header has them.
// Reference: reference::forward's moe_ffn.
//
// matmul_cpu.wgsl's register blocks and rounds (cpu_blocks.wgsl; matmul_cpu.wgsl's header says why) over an
// expert's grouped rows: no workgroup memory or barriers; each invocation accumulates ROWS grouped rows x COLS
// columns; the 8 lanes of a subgroup share their rows of x. Two ways, chosen by the weights (QUADS):
// - Float weights whose rows are whole quads (every released Jamba's): rounds by quads, as matmul_cpu.wgsl's.
//   swiglu's COLS columns are two of gate and the same two of up, so that an invocation holds as many sums and
//   weights as matmul_cpu's. Lavapipe, the default model's 256-token chunk (bf16): swiglu 37.3-37.7 -> 33.5-34.0
//   ms, down 24.8-24.9 -> 15.3-15.8; anchor-35m f32: swiglu 169-179 -> 162-163, down 110-112 -> 76.
// - Else rounds by words, swiglu's COLS columns each of gate and of up, each x value broadcast once for both:
//   quantized experts took longer by quads (anchor-35m q8 swiglu 135 -> 240 ms, q4 173-185 -> 300-305; down
//   unchanged) and by words with two columns of each (q8 135 -> 186, q4 173 -> 240-268): x's loads, the same for
//   COLS columns as for two, are most of a quantized round's.
//
// Grid: count * ceil(t / (8 ROWS)) * ceil(n / (8 columns)) workgroups, linear, where columns is COLS, swiglu's by
// quads COLS / 2 (the worst case: every token routed to each expert). A workgroup is 8 subgroups of 8: subgroup s
// takes the expert's grouped rows m0 + ROWS s + i, lane l columns j0 + l + 8 c; a subgroup with none of the
// expert's rows leaves at once.

// MoeParams and bindings 0 and 4-7: moe_common.wgsl; the block's sizes, sums and weights of a round, and the
// rounds: cpu_blocks.wgsl.

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>; // x (swiglu) or act (down)
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>; // gate or down weights of the stack
@group(0) @binding(3) var<storage, read> w_up: array<vec4<u32>>; // up weights of the stack

// 1: rounds by quads, for float weights whose rows are whole quads (x's rows then start on vec4s); kernels::moe
// chooses, and sizes the grid by it.
override QUADS: u32 = 0u;

// cpu_blocks.wgsl's access to the weights: gate or down, or with `second` up.
fn matrix_quad(second: bool, i: u32) -> vec4<u32> {
    if second {
        return w_up[i];
    }
    return w[i];
}

fn matrix_word(second: bool, i: u32) -> u32 {
    if second {
        return w_up[i / 4u][i % 4u];
    }
    return w[i / 4u][i % 4u];
}

// The invocation's block: the expert's grouped rows block_first + i, the first block_live of them its own (the
// rest repeat the expert's last row, read and never stored), each row's slot and first element in x; columns
// block_j0 + 8 cc; swiglu's (block_gated) or down's.
var<private> block_first: u32;
var<private> block_live: u32;
var<private> block_slot: array<u32, ROWS>;
var<private> block_x: array<u32, ROWS>;
var<private> block_j0: u32;
var<private> block_gated: bool;

// Whether swiglu's columns are half gate, half up (by quads): then a row's sums hold COLS / 2 columns of gate,
// then the same of up.
fn paired(gated: bool) -> bool {
    return gated && QUADS != 0u;
}

// Row i of the block at columns c .. c + 4 (c a multiple of 4, the rows on vec4s), 0 past k.
fn x_quad(i: u32, c: u32) -> vec4<f32> {
    let v = x[(block_x[i] + min(c, p.k - 1u)) / 4u];
    return select(vec4(0.0), v, vec4(c) + vec4(0u, 1u, 2u, 3u) < vec4(p.k));
}

// Row i of the block at column c, 0 past k.
fn x_word(i: u32, c: u32) -> f32 {
    let e = block_x[i] + min(c, p.k - 1u);
    return select(0.0, x[e / 4u][e % 4u], c < p.k);
}

// Row `row` of y: the expert's grouped row (swiglu's act) or its slot (down's y_slots), at column j.
fn put(row: u32, j: u32, value: f32) {
    y[row * p.n + j] = value;
}

// Row i of the block into y, the columns in it: down's sums into the row's slot, swiglu's silu(gate) * up into
// the grouped row.
fn store_row(i: u32) {
    let cols = select(COLS, COLS / 2u, paired(block_gated));
    for (var cc = 0u; cc < COLS; cc++) {
        let j = block_j0 + SG * cc;
        if cc < cols && i < block_live && j < p.n {
            if !block_gated {
                put(block_slot[i], j, acc[i][cc]);
            } else if paired(block_gated) {
                put(block_first + i, j, silu(acc[i][cc]) * acc[i][COLS / 2u + cc]);
            } else {
                put(block_first + i, j, silu(acc[i][cc]) * acc_up[i][cc]);
            }
        }
    }
}

// The block's sums by quads: down's COLS columns, or swiglu's COLS / 2 columns of gate then the same of up. Rows
// of W past the expert's n are clamped into it (their sums are not stored).
fn block_by_quads(row0: u32, lane: u32, gated: bool) {
    for (var k0 = 0u; k0 < p.k; k0 += K_QUADS) {
        if gated {
            for (var cc = 0u; cc < COLS / 2u; cc++) {
                let row = row0 + min(block_j0 + SG * cc, p.n - 1u);
                row_weights(&ws, cc, false, row, k0, K_QUADS);
                row_weights(&ws, COLS / 2u + cc, true, row, k0, K_QUADS);
            }
        } else {
            for (var cc = 0u; cc < COLS; cc++) {
                row_weights(&ws, cc, false, row0 + min(block_j0 + SG * cc, p.n - 1u), k0, K_QUADS);
            }
        }
        add_round_by_quads(k0 + 4u * lane);
    }
}

// The block's sums by words: COLS columns of gate (or down) and, gated, the same of up into acc_up. Rows of W past
// the expert's n are clamped into it.
fn block_by_words(row0: u32, lane: u32, gated: bool) {
    for (var k0 = 0u; k0 < p.k; k0 += K_WORDS) {
        for (var cc = 0u; cc < COLS; cc++) {
            let row = row0 + min(block_j0 + SG * cc, p.n - 1u);
            row_weights(&ws, cc, false, row, k0, K_WORDS);
            if gated {
                row_weights(&ws_up, cc, true, row, k0, K_WORDS);
            }
        }
        add_round_by_words(k0 + lane, gated);
    }
}

fn expert_blocked(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, index: u32, lane: u32, gated: bool) {
    let cols = select(COLS, COLS / 2u, paired(gated));
    let tiles_n = (p.n + SG * cols - 1u) / (SG * cols);
    let tiles_m = (p.t + SG * ROWS - 1u) / (SG * ROWS);
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let e_local = g / (tiles_m * tiles_n);
    let tile = g % (tiles_m * tiles_n);
    let m0 = (tile / tiles_n) * SG * ROWS + (index / SG) * ROWS;
    if e_local >= p.count {
        return;
    }
    let start = groups[p.first + e_local];
    let rows = groups[p.first + e_local + 1u] - start;
    // The subgroup's rows are its own: it leaves whole when the expert has none of them.
    if m0 >= rows {
        return;
    }
    block_first = start + m0;
    block_live = min(ROWS, rows - m0);
    block_j0 = (tile % tiles_n) * SG * cols + lane;
    block_gated = gated;
    for (var i = 0u; i < ROWS; i++) {
        let m = block_first + min(i, block_live - 1u);
        block_slot[i] = groups[p.n_experts + 1u + m];
        block_x[i] = select(m, block_slot[i] / p.top_k, gated) * p.k;
    }
    if QUADS != 0u {
        block_by_quads(e_local * p.n, lane, gated);
    } else {
        block_by_words(e_local * p.n, lane, gated);
    }
    store_block();
}

@compute @workgroup_size(WG)
fn swiglu_blocked(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    expert_blocked(workgroup_id, num_workgroups, index, lane, true);
}

@compute @workgroup_size(WG)
fn down_blocked(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    expert_blocked(workgroup_id, num_workgroups, index, lane, false);
}
