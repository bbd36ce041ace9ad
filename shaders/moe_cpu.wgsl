// moe_cpu.wgsl: the prefill expert kernels of moe.wgsl (swiglu_tiled, down_tiled) for CPU adapters (lavapipe's
// llvmpipe), computing the same values into the same layouts from the same bindings; moe.wgsl's header has them.
// Reference: reference::forward's moe_ffn.
//
// The register-blocked scheme of matmul_cpu.wgsl (its header says why): no workgroup memory or barriers; each
// invocation accumulates ROWS grouped rows x COLS columns (of gate and up for swiglu); the 8 lanes of a subgroup
// share their rows of x, lane l loading column k0 + l and subgroupBroadcast handing it to every lane.
//
// Grid: count * ceil(t / (8 ROWS)) * ceil(n / (8 COLS)) workgroups, linear (the worst case: every token routed
// to each expert). A workgroup is 8 subgroups of 8: subgroup s takes the expert's grouped rows m0 + ROWS s + i,
// lane l columns j0 + l + 8 c; a subgroup with none of the expert's rows leaves at once.

// MoeParams and bindings 0 and 4-7: moe_common.wgsl; bindings 1-3: moe_words.wgsl; the block's sizes and
// put_word: cpu_blocks.wgsl. Rounds by words only, gate and up together, each x value broadcast once for both:
// rounds by quads as matmul_cpu.wgsl reads them took longer here (lavapipe, anchor-35m's q8 SwiGLU experts:
// 131 -> 202-256 ms, with gate and up one after the other or together), and so did the rounds of cpu_blocks.wgsl
// (131 -> 165 ms, each x value broadcast for gate and again for up).

// Word i of the gate / down stack, or of the up stack.
fn stack_word(up: bool, i: u32) -> u32 {
    if up {
        return w_up[i];
    }
    return w[i];
}

// Row j of expert e_local's gate / down (or up) at columns k0 .. k0 + SG into ws[b ..], k0 a multiple of SG:
// matmul_cpu.wgsl's w_block (whole words; rows that do not start on words take the tiled kernel), the row
// clamped into the expert's.
fn w_block(ws: ptr<function, RoundWeights>, b: u32, up: bool, e_local: u32, j: u32, k0: u32) {
    let r = word_row(e_local * p.n + min(j, p.n - 1u), p.k);
    let per = word_weights();
    for (var u = 0u; u < SG / per; u++) {
        let i = min(k0 / per + u, r.words - 1u);
        let v = word_values(stack_word(up, r.first + i), stack_word(up, word_values_scale(r, i)), i);
        put_word(ws, b + u * per, v);
    }
}

fn expert_blocked(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, index: u32, lane: u32, gated: bool) {
    let tiles_n = (p.n + SG * COLS - 1u) / (SG * COLS);
    let tiles_m = (p.t + SG * ROWS - 1u) / (SG * ROWS);
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let e_local = g / (tiles_m * tiles_n);
    let tile = g % (tiles_m * tiles_n);
    let m0 = (tile / tiles_n) * SG * ROWS + (index / SG) * ROWS;
    let j0 = (tile % tiles_n) * SG * COLS + lane;
    if e_local >= p.count {
        return;
    }
    let start = groups[p.first + e_local];
    let rows = groups[p.first + e_local + 1u] - start;
    // The subgroup's rows are its own: it leaves whole when the expert has none of them.
    if m0 >= rows {
        return;
    }
    let live = min(ROWS, rows - m0);

    // Rows past the expert's last repeat its last row (loaded, never stored), so no load needs a branch.
    var slot: array<u32, ROWS>; // each row's slot
    var x_row: array<u32, ROWS>; // each row's first element in x
    for (var i = 0u; i < ROWS; i++) {
        let m = start + m0 + min(i, live - 1u);
        slot[i] = groups[p.n_experts + 1u + m];
        x_row[i] = select(m, slot[i] / p.top_k, gated) * p.k;
    }
    var acc: array<f32, ROWS * COLS>; // [ROWS][COLS] x W^T
    var acc_up: array<f32, ROWS * COLS>; // [ROWS][COLS] x W_up^T (swiglu)
    for (var k0 = 0u; k0 < p.k; k0 += SG) {
        let c = k0 + lane;
        var xs: array<f32, ROWS>; // x[row i, k0 + lane], 0 past k
        for (var i = 0u; i < ROWS; i++) {
            xs[i] = select(0.0, x[x_row[i] + min(c, p.k - 1u)], c < p.k);
        }
        var ws: RoundWeights; // [COLS][SG]: gate / down [j0 + 8 cc, k0 + kk]
        var ws_up: RoundWeights; // [COLS][SG]: up
        for (var cc = 0u; cc < COLS; cc++) {
            w_block(&ws, cc * SG, false, e_local, j0 + SG * cc, k0);
            if gated {
                w_block(&ws_up, cc * SG, true, e_local, j0 + SG * cc, k0);
            }
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
                if gated {
                    acc_up[i * COLS + cc] += x0 * ws_up[b] + x1 * ws_up[b + 1u] + x2 * ws_up[b + 2u]
                        + x3 * ws_up[b + 3u] + x4 * ws_up[b + 4u] + x5 * ws_up[b + 5u] + x6 * ws_up[b + 6u]
                        + x7 * ws_up[b + 7u];
                }
            }
        }
    }
    for (var i = 0u; i < ROWS; i++) {
        for (var cc = 0u; cc < COLS; cc++) {
            let j = j0 + SG * cc;
            if i < live && j < p.n {
                if gated {
                    y[(start + m0 + i) * p.n + j] = silu(acc[i * COLS + cc]) * acc_up[i * COLS + cc];
                } else {
                    y[slot[i] * p.n + j] = acc[i * COLS + cc];
                }
            }
        }
    }
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
