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
//   of k at a time, then into the sum, so both give the same result. The host makes the choice (QUADS), so that
//   each variant's module holds one way alone (gpu::specialize), and llvmpipe, which runs both sides of a branch
//   masked, never runs the other.
//
// Grid: ceil(t / (8 ROWS)) * ceil(n / (8 COLS)) workgroups, linear. A workgroup is 8 subgroups of 8 (the kernel
// needs 8-wide subgroups; Tuning picks it only on such adapters): subgroup s takes rows r0 + ROWS s + i, lane l
// takes columns j0 + l + 8 c.

// MatmulParams, y and store(): matmul_common.wgsl; the block's sizes, sums and weights of a round, and the
// rounds: cpu_blocks.wgsl.

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

fn x_value(i: u32) -> f32 {
    return x[i / 4u][i % 4u];
}

// cpu_blocks.wgsl's access to the weights: this kernel's one matrix.
fn matrix_quad(second: bool, i: u32) -> vec4<u32> {
    return w[i];
}

fn matrix_word(second: bool, i: u32) -> u32 {
    return w[i / 4u][i % 4u];
}

// W's row for row j of y, clamped into the matrix (its results are not stored).
fn w_row(j: u32) -> u32 {
    return p.w_row0 + min(j, p.n - 1u);
}

// Whether the rounds read x and W by quads, as the host found (matmul::blocked_by_quads): W's rows whole quads
// (cpu_blocks.wgsl's rows_whole_quads), x's rows starting on vec4s (x_stride and x_offset multiples of 4).
override QUADS: u32 = 0u;

// The invocation's block: rows block_r0 .. + ROWS of y (those past t are read as row t - 1 and never stored),
// columns block_j0 + 8 cc.
var<private> block_r0: u32;
var<private> block_j0: u32;

// Row i of the block at column c, 0 past k.
fn x_word(i: u32, c: u32) -> f32 {
    return select(0.0, x_value(min(block_r0 + i, p.t - 1u) * p.x_stride + p.x_offset + min(c, p.k - 1u)), c < p.k);
}

// Row i of the block at columns c .. c + 4 (c a multiple of 4, the row on a vec4), 0 past k.
fn x_quad(i: u32, c: u32) -> vec4<f32> {
    let v = x[(min(block_r0 + i, p.t - 1u) * p.x_stride + p.x_offset + min(c, p.k - 1u)) / 4u];
    return select(vec4(0.0), v, vec4(c) + vec4(0u, 1u, 2u, 3u) < vec4(p.k));
}

// Row i of the block into y, the columns in it.
fn store_row(i: u32) {
    let r = block_r0 + i;
    for (var cc = 0u; cc < COLS; cc++) {
        let j = block_j0 + SG * cc;
        if r < p.t && j < p.n {
            store(r, j, acc[i][cc]);
        }
    }
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
    block_r0 = (g / tiles_n) * (WG / SG) * ROWS + (index / SG) * ROWS;
    block_j0 = (g % tiles_n) * SG * COLS + lane;
    // The subgroup's rows are its own: it leaves whole when they are all past t.
    if block_r0 >= p.t {
        return;
    }
    if QUADS != 0u {
        for (var k0 = 0u; k0 < p.k; k0 += K_QUADS) {
            for (var cc = 0u; cc < COLS; cc++) {
                row_weights(&ws, cc, false, w_row(block_j0 + SG * cc), k0, K_QUADS);
            }
            add_round_by_quads(k0 + 4u * lane);
        }
    } else {
        for (var k0 = 0u; k0 < p.k; k0 += K_WORDS) {
            for (var cc = 0u; cc < COLS; cc++) {
                row_weights(&ws, cc, false, w_row(block_j0 + SG * cc), k0, K_WORDS);
            }
            add_round_by_words(k0 + lane, false);
        }
    }
    store_block();
}
