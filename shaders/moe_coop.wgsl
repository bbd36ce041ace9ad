// moe_coop.wgsl: moe.wgsl's prefill expert kernels (swiglu_tiled, down_tiled) on the adapter's matrix units
// through wgpu's experimental cooperative matrices (Prefill::Coop, opt-in), as matmul_coop.wgsl does for the dense
// matmul: the same values into the same layouts from the same bindings (moe.wgsl's header has them), each tile of
// an expert's grouped rows from 16 x 16 x 16 f16 fragments accumulated in f32, x and the weights rounded to f16 as
// they are staged (values beyond +-65,504 saturate).
//
// A workgroup is 4 subgroups of 32 (the kernels need subgroups exactly 32 wide: Context::supports) over a 64 x 64
// tile of an expert's grouped rows and outputs (moe_tiles.wgsl's tile_job); subgroup s takes the 32 x 32 quarter
// at rows 32 (s / 2), columns 32 (s % 2), as 2 x 2 fragments. k steps by 32 through workgroup memory. The SwiGLU
// kernel (GATED, an override: matrix operations must sit in uniform control flow, which naga does not grant a
// function's arguments) keeps gate and up fragments and stages them through y_tile one after the other. Rows past
// the expert's last are zeros when staged and never stored. Grid: moe.wgsl's tiled kernels', linear; a tile with
// no rows leaves at once.

enable f16;
enable wgpu_cooperative_matrix;

// COOP_WG, STEP_K, PITCH, Y_PITCH and to_f16: coop_common.wgsl.

// 1: the SwiGLU half (moe.wgsl's swiglu_tiled); 0: down (down_tiled).
override GATED: bool;

// MoeParams and bindings 0 and 4-7: moe_common.wgsl; bindings 1-3: moe_words.wgsl; TILE, w_at, w_up_at and the
// tile jobs: moe_tiles.wgsl.

var<workgroup> x_tile: array<f16, 2560>; // [TILE][PITCH]: the tile's rows of x (or act), columns k0 ..
var<workgroup> w_tile: array<f16, 2560>; // [TILE][PITCH]: the tile's rows of gate (or down)
var<workgroup> w_up_tile: array<f16, 2560>; // [TILE][PITCH]: of up (SwiGLU only)
var<workgroup> y_tile: array<f32, 4352>; // [TILE][Y_PITCH]: one product's tile

@compute @workgroup_size(COOP_WG)
fn expert_coop(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    let gated = GATED;
    let job = tile_job(workgroup_id, num_workgroups, lane);
    // Loaded uniformly (after a barrier), so the whole workgroup leaves together when the tile is empty.
    let live_rows = workgroupUniformLoad(&tile_live_rows);
    if live_rows == 0u {
        return;
    }
    let fr = (subgroup / 2u) * 32u; // the subgroup's first row and column in the tile
    let fc = (subgroup % 2u) * 32u;

    // Rows fr + 16 i, columns fc + 16 j: g_ij of x gate^T (or x down^T), u_ij of x up^T.
    var g00 = coop_mat16x16<f32, C>();
    var g01 = coop_mat16x16<f32, C>();
    var g10 = coop_mat16x16<f32, C>();
    var g11 = coop_mat16x16<f32, C>();
    var u00 = coop_mat16x16<f32, C>();
    var u01 = coop_mat16x16<f32, C>();
    var u10 = coop_mat16x16<f32, C>();
    var u11 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < p.k; k0 += STEP_K) {
        // Element e = lane + COOP_WG q of each 64 x 32 block: row e / 32, column e % 32; 0 past the matrices.
        for (var q = 0u; q < TILE * STEP_K / COOP_WG; q++) {
            let e = lane + COOP_WG * q;
            let row = e / STEP_K;
            let at = row * PITCH + e % STEP_K;
            let c = k0 + e % STEP_K;
            x_tile[at] = to_f16(expert_x(job, row, c, live_rows, gated));
            w_tile[at] = to_f16(expert_w(job, row, c, false));
            if gated {
                w_up_tile[at] = to_f16(expert_w(job, row, c, true));
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < STEP_K; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[fr * PITCH + kk], PITCH);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[(fr + 16u) * PITCH + kk], PITCH);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[fc * PITCH + kk], PITCH);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[(fc + 16u) * PITCH + kk], PITCH);
            g00 = coopMultiplyAdd(a0, b0, g00);
            g01 = coopMultiplyAdd(a0, b1, g01);
            g10 = coopMultiplyAdd(a1, b0, g10);
            g11 = coopMultiplyAdd(a1, b1, g11);
            if gated {
                let v0 = coopLoad<coop_mat16x16<f16, B>>(&w_up_tile[fc * PITCH + kk], PITCH);
                let v1 = coopLoad<coop_mat16x16<f16, B>>(&w_up_tile[(fc + 16u) * PITCH + kk], PITCH);
                u00 = coopMultiplyAdd(a0, v0, u00);
                u01 = coopMultiplyAdd(a0, v1, u01);
                u10 = coopMultiplyAdd(a1, v0, u10);
                u11 = coopMultiplyAdd(a1, v1, u11);
            }
        }
        workgroupBarrier();
    }

    // Element e = lane + COOP_WG q of the output tile: row e / 64, column e % 64.
    coopStoreT(g00, &y_tile[fr * Y_PITCH + fc], Y_PITCH);
    coopStoreT(g01, &y_tile[fr * Y_PITCH + fc + 16u], Y_PITCH);
    coopStoreT(g10, &y_tile[(fr + 16u) * Y_PITCH + fc], Y_PITCH);
    coopStoreT(g11, &y_tile[(fr + 16u) * Y_PITCH + fc + 16u], Y_PITCH);
    workgroupBarrier();
    var gate: array<f32, 32>; // SwiGLU: this invocation's elements of x gate^T
    for (var q = 0u; q < TILE * TILE / COOP_WG; q++) {
        let e = lane + COOP_WG * q;
        let row = e / TILE;
        let j = job.j0 + e % TILE;
        let value = y_tile[row * Y_PITCH + e % TILE];
        if gated {
            gate[q] = value;
        } else if row < live_rows && j < p.n {
            y[tile_slot[row] * p.n + j] = value;
        }
    }
    workgroupBarrier(); // every gate value is read before the up fragments take y_tile
    if gated {
        coopStoreT(u00, &y_tile[fr * Y_PITCH + fc], Y_PITCH);
        coopStoreT(u01, &y_tile[fr * Y_PITCH + fc + 16u], Y_PITCH);
        coopStoreT(u10, &y_tile[(fr + 16u) * Y_PITCH + fc], Y_PITCH);
        coopStoreT(u11, &y_tile[(fr + 16u) * Y_PITCH + fc + 16u], Y_PITCH);
    }
    workgroupBarrier();
    if gated {
        for (var q = 0u; q < TILE * TILE / COOP_WG; q++) {
            let e = lane + COOP_WG * q;
            let row = e / TILE;
            let j = job.j0 + e % TILE;
            if row < live_rows && j < p.n {
                y[(job.row0 + row) * p.n + j] = silu(gate[q]) * y_tile[row * Y_PITCH + e % TILE];
            }
        }
    }
}
