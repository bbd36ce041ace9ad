// moe.wgsl: the experts of an MoE FFN, expert(x) = down(silu(gate(x)) * up(x)), run only for the routed
// (token, expert) slots, then out += sum_j weights[r, j] * expert_{ids[r, j]}(x[r]) in j order.
// Reference: reference::forward's moe_ffn and mlp_forward (JAMBA.md, "FFN").
//
// Layout. A slot s = r * top_k + j is token r's j-th choice. x: [>= t, H] f32 (the normalised input);
// ids, weights: [t * top_k] from moe_route.wgsl; groups: [E + 1 + t * top_k] u32 from moe_group.wgsl.
// Weights of one stack of experts first..first + count, packed as W_DTYPE (float or quantized rows, read through
// the prelude's weight_ref): w (gate) and w_up: [count, I, H]; w (down): [count, H, I]. act: [t * top_k, I] (silu(gate) * up per slot); y_slots: [t * top_k, H] (each slot's
// expert output, indexed by slot). Each kernel is dispatched once per stack and touches only its experts.
//
//
// Entry points (prefill and the combine; decode steps take moe_matvec.wgsl's; the Rust side binds a read-only
// stand-in where one is unused):
// - swiglu_tiled / down_tiled (prefill): per expert, 64 x 64 output tiles over that expert's grouped rows, 256
//   invocations each computing 4 x 4 outputs (both gate and up for swiglu), k in steps of 16 through workgroup
//   memory. act is indexed by grouped row, y_slots by slot. Grid: count * ceil(t / 64) * ceil(n / 64) workgroups,
//   linear (the worst case: every token routed to each expert); tiles past an expert's rows exit at once.
// - combine: out[r, c] += sum_j weights[r, j] * y_slots[r * top_k + j, c], in j order (no float atomics).
//   Grid: ceil(t * H / WG) workgroups, linear.

// MoeParams and bindings 0 and 4-7: moe_common.wgsl; x, w, w_up and the weight reads: moe_words.wgsl; the
// prefill's tile jobs: moe_tiles.wgsl.

// ---- prefill: tiled matmuls over each expert's grouped rows ----

// As matmul.wgsl's tiled kernel: TILE x TILE outputs per workgroup of 16 x 16 invocations of 4 x 4, k-major
// tiles read as vec4, each k-row padded to 17 vec4 against bank conflicts when staging.
// TILE and the tile jobs: moe_tiles.wgsl.
const TILE_K: u32 = 16u;
const TILED_WG: u32 = 256u;
const TILE_STRIDE: u32 = 17u;

var<workgroup> x_tile: array<vec4<f32>, 272>; // row r, k0 + kk at [kk * TILE_STRIDE + r / 4][r % 4]
var<workgroup> w_tile: array<vec4<f32>, 272>; // gate or down: column j, k0 + kk likewise
var<workgroup> w_up_tile: array<vec4<f32>, 272>; // up
// The tiled product of one expert over its grouped rows. gated (SwiGLU): rows of x are the slots' tokens, the
// result silu(x gate^T) * (x up^T) goes to act at the grouped row. Otherwise (down): rows of act are grouped
// rows, the result goes to y_slots at the row's slot.
fn expert_tiled(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32, gated: bool) {
    let job = tile_job(workgroup_id, num_workgroups, lane);
    // The rows of the tile that hold slots, loaded uniformly (after a barrier), so the whole workgroup leaves
    // together when the tile is empty.
    let live_rows = workgroupUniformLoad(&tile_live_rows);
    if live_rows == 0u {
        return;
    }
    // This invocation's 4 x 4 block: rows 4 ty + i, columns 4 tx + jj of the tile. It stages element
    // lane + TILED_WG q of each tile (row lane / TILE_K + 16 q, k0 + lane % TILE_K), the next step's loaded into
    // registers before this step's arithmetic.
    let tx = lane % 16u;
    let ty = lane / 16u;
    let kk = lane % TILE_K;
    let row = lane / TILE_K;
    var xs: array<f32, 4>;
    var ws: array<f32, 4>;
    var ws_up: array<f32, 4>;
    for (var q = 0u; q < 4u; q++) {
        xs[q] = expert_x(job, row + 16u * q, kk, live_rows, gated);
        ws[q] = expert_w(job, row + 16u * q, kk, false);
        if gated {
            ws_up[q] = expert_w(job, row + 16u * q, kk, true);
        }
    }
    // Invocations whose 4 rows are all past the expert's last row skip the arithmetic, which matters when
    // experts get few rows.
    let computes = ty * 4u < live_rows;
    var acc: array<vec4<f32>, 4>;
    var acc_up: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        for (var q = 0u; q < 4u; q++) {
            let at = kk * TILE_STRIDE + (row + 16u * q) / 4u;
            x_tile[at][row % 4u] = xs[q];
            w_tile[at][row % 4u] = ws[q];
            if gated {
                w_up_tile[at][row % 4u] = ws_up[q];
            }
        }
        workgroupBarrier();
        if k0 + TILE_K < p.k {
            let c = k0 + TILE_K + kk;
            for (var q = 0u; q < 4u; q++) {
                xs[q] = expert_x(job, row + 16u * q, c, live_rows, gated);
                ws[q] = expert_w(job, row + 16u * q, c, false);
                if gated {
                    ws_up[q] = expert_w(job, row + 16u * q, c, true);
                }
            }
        }
        if computes {
            for (var k = 0u; k < TILE_K; k++) {
                let a = x_tile[k * TILE_STRIDE + ty];
                let b = w_tile[k * TILE_STRIDE + tx];
                acc[0] += a.x * b;
                acc[1] += a.y * b;
                acc[2] += a.z * b;
                acc[3] += a.w * b;
                if gated {
                    let b_up = w_up_tile[k * TILE_STRIDE + tx];
                    acc_up[0] += a.x * b_up;
                    acc_up[1] += a.y * b_up;
                    acc_up[2] += a.z * b_up;
                    acc_up[3] += a.w * b_up;
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = ty * 4u + i;
        for (var jj = 0u; jj < 4u; jj++) {
            let j = job.j0 + tx * 4u + jj;
            if r < live_rows && j < p.n {
                if gated {
                    y[(job.row0 + r) * p.n + j] = silu(acc[i][jj]) * acc_up[i][jj];
                } else {
                    y[tile_slot[r] * p.n + j] = acc[i][jj];
                }
            }
        }
    }
}

@compute @workgroup_size(TILED_WG)
fn swiglu_tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    expert_tiled(workgroup_id, num_workgroups, lane, true);
}

@compute @workgroup_size(TILED_WG)
fn down_tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    expert_tiled(workgroup_id, num_workgroups, lane, false);
}

// ---- the weighted sum into the residual stream ----

@compute @workgroup_size(WG)
fn combine(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
    if i >= p.t * p.n {
        return;
    }
    let r = i / p.n;
    let c = i % p.n;
    var sum = 0.0;
    for (var j = 0u; j < p.top_k; j++) {
        let s = r * p.top_k + j;
        if ids[s] < p.n_experts {
            sum += weights[s] * x[s * p.n + c];
        }
    }
    y[i] += sum;
}
