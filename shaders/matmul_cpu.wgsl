// matmul_cpu.wgsl: y = x W^T (+ y when accumulating), the prefill matmul for CPU adapters (lavapipe's llvmpipe).
// Reference: reference::matmul. Parameters, bindings and layouts: matmul_common.wgsl.
//
// Why a second kernel: llvmpipe runs the 8 invocations of a subgroup as the 8 lanes of one SIMD vector, so
// arithmetic costs one instruction per 8 invocations, but every load from a buffer (workgroup memory included) is
// 8 scalar loads, and every barrier a coroutine switch. The tiled kernel stages through workgroup memory and
// spends about one load per multiply-add; this one spends about 1/ROWS + 1/(8 COLS):
// - no workgroup memory, no barriers;
// - each invocation accumulates ROWS rows x COLS columns of y in registers;
// - the 8 lanes of a subgroup share their rows of x: lane l loads x[r, k0 + l], and subgroupShuffle hands each
//   value to every lane, so each element of x is loaded once per subgroup, and each weight once.
//
// Grid: ceil(t / (8 ROWS)) * ceil(n / (8 COLS)) workgroups, linear. A workgroup is 8 subgroups of 8 (the kernel
// needs 8-wide subgroups; Tuning picks it only on such adapters): subgroup s takes rows r0 + ROWS s + i, lane l
// takes columns j0 + l + 8 c.

const SG: u32 = 8u; // subgroup width, and k step
const ROWS: u32 = 16u; // rows of y per invocation (shared by its subgroup)
const COLS: u32 = 4u; // columns of y per invocation

// MatmulParams, y and store(): matmul_common.wgsl; x and w: matmul_words.wgsl; put_word: cpu_blocks.wgsl.

// W[row, k0 .. k0 + SG], k0 a multiple of SG, into ws[b ..], whole words at a time (f32 8 loads, f16 and bf16 4,
// q8 2 and its row scale, q4 1 and its group scale: a group is 4 or 8 words), decoded as weight_value decodes
// each weight. W's rows start on words: f16 and bf16 rows of odd length take the tiled kernel instead
// (kernels::prefill_kernel), where a branch here to read them weight by weight would cost every block its loads,
// masked (llvmpipe runs both sides of a branch). The row is clamped into the matrix (its results are not stored),
// and a word past the row's last is its last word again (x is 0 there).
fn w_block(ws: ptr<function, array<f32, COLS * SG>>, b: u32, row: u32, k0: u32) {
    let r = word_row(p.w_row0 + min(row, p.n - 1u), p.k);
    let per = word_weights();
    for (var u = 0u; u < SG / per; u++) {
        let i = min(k0 / per + u, r.words - 1u);
        let v = word_values(w[r.first + i], w[word_values_scale(r, i)], i);
        put_word(ws, b + u * per, v);
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
    let r0 = (g / tiles_n) * (WG / SG) * ROWS + (index / SG) * ROWS;
    let j0 = (g % tiles_n) * SG * COLS + lane;
    // The subgroup's rows are its own: it leaves whole when they are all past t.
    if r0 >= p.t {
        return;
    }

    var acc: array<f32, ROWS * COLS>; // [ROWS][COLS]
    for (var k0 = 0u; k0 < p.k; k0 += SG) {
        let c = k0 + lane;
        var xs: array<f32, ROWS>; // x[r0 + i, k0 + lane]
        for (var i = 0u; i < ROWS; i++) {
            // Clamped loads, no branch: rows past t are never stored, columns past k must add nothing.
            let v = x[min(r0 + i, p.t - 1u) * p.x_stride + p.x_offset + min(c, p.k - 1u)];
            xs[i] = select(0.0, v, c < p.k);
        }
        var ws: array<f32, COLS * SG>; // [COLS][SG]: W[j0 + 8 cc, k0 + kk]
        for (var cc = 0u; cc < COLS; cc++) {
            w_block(&ws, cc * SG, j0 + SG * cc, k0);
        }
        // subgroupBroadcast with constant lanes is a register extract on llvmpipe (subgroupShuffle is a loop), and
        // the eight products are written out: an array of them here is not kept in registers.
        for (var i = 0u; i < ROWS; i++) {
            let x0 = subgroupBroadcast(xs[i], 0u);
            let x1 = subgroupBroadcast(xs[i], 1u);
            let x2 = subgroupBroadcast(xs[i], 2u);
            let x3 = subgroupBroadcast(xs[i], 3u);
            let x4 = subgroupBroadcast(xs[i], 4u);
            let x5 = subgroupBroadcast(xs[i], 5u);
            let x6 = subgroupBroadcast(xs[i], 6u);
            let x7 = subgroupBroadcast(xs[i], 7u);
            for (var cc = 0u; cc < COLS; cc++) {
                let b = cc * SG;
                acc[i * COLS + cc] += x0 * ws[b] + x1 * ws[b + 1u] + x2 * ws[b + 2u] + x3 * ws[b + 3u]
                    + x4 * ws[b + 4u] + x5 * ws[b + 5u] + x6 * ws[b + 6u] + x7 * ws[b + 7u];
            }
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
