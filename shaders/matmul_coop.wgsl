// matmul_coop.wgsl: y = x W^T (+ y when accumulating), the prefill matmul on an adapter's matrix units (tensor
// cores) through wgpu's experimental cooperative matrices (Prefill::Coop, opt-in). Reference: reference::matmul.
// Parameters, bindings and layouts: matmul_common.wgsl and matmul_words.wgsl.
//
// The products are 16 x 16 x 16 matrices of f16 accumulated in f32: x and W are rounded to f16 as they are
// staged (11-bit significands, finer than bf16's 8; values beyond +-65,504 saturate there).
//
// A workgroup is 4 subgroups of 32 (the kernel needs subgroups exactly 32 wide: Context::supports) computing a
// 64 x 64 tile of y; subgroup s the 32 x 32 quarter at rows 32 (s / 2), columns 32 (s % 2), as 2 x 2 fragments.
// k steps by 32 through workgroup memory, where x's rows and W's rows (the columns of W^T) lie as rows of PITCH
// f16: A fragments load row-major from x's, B fragments column-major from W's. The fragments go through
// workgroup memory once at the end, so that edges and accumulation are stored as the other matmuls store them.
// Grid: ceil(t / 64) * ceil(n / 64) workgroups, linear.

enable f16;
enable wgpu_cooperative_matrix;

// COOP_WG, STEP_K, PITCH, Y_PITCH and to_f16: coop_common.wgsl.

const TILE: u32 = 64u; // rows and columns of y per workgroup

// MatmulParams, y and store(): matmul_common.wgsl; x, w and w_at: matmul_words.wgsl.

var<workgroup> x_tile: array<f16, 2560>; // [TILE][PITCH]: x[r0 + row, k0 + c]
var<workgroup> w_tile: array<f16, 2560>; // [TILE][PITCH]: W[j0 + row, k0 + c]
var<workgroup> y_tile: array<f32, 4352>; // [TILE][Y_PITCH]: the workgroup's tile of x W^T

@compute @workgroup_size(COOP_WG)
fn coop(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r0 = (g / tiles_n) * TILE;
    let j0 = (g % tiles_n) * TILE;
    let fr = (subgroup / 2u) * 32u; // the subgroup's first row and column in the tile
    let fc = (subgroup % 2u) * 32u;

    // Rows fr + 16 i, columns fc + 16 j of the tile: c_ij.
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < p.k; k0 += STEP_K) {
        // Element e = lane + COOP_WG q of each 64 x 32 block: row e / 32, column e % 32; 0 past the matrices.
        for (var q = 0u; q < TILE * STEP_K / COOP_WG; q++) {
            let e = lane + COOP_WG * q;
            let row = e / STEP_K;
            let c = k0 + e % STEP_K;
            var xv = 0.0;
            if r0 + row < p.t && c < p.k {
                xv = x[(r0 + row) * p.x_stride + p.x_offset + c];
            }
            var wv = 0.0;
            if j0 + row < p.n && c < p.k {
                wv = w_at(j0 + row, c);
            }
            x_tile[row * PITCH + e % STEP_K] = to_f16(xv);
            w_tile[row * PITCH + e % STEP_K] = to_f16(wv);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < STEP_K; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[fr * PITCH + kk], PITCH);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[(fr + 16u) * PITCH + kk], PITCH);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[fc * PITCH + kk], PITCH);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[(fc + 16u) * PITCH + kk], PITCH);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    coopStoreT(c00, &y_tile[fr * Y_PITCH + fc], Y_PITCH);
    coopStoreT(c01, &y_tile[fr * Y_PITCH + fc + 16u], Y_PITCH);
    coopStoreT(c10, &y_tile[(fr + 16u) * Y_PITCH + fc], Y_PITCH);
    coopStoreT(c11, &y_tile[(fr + 16u) * Y_PITCH + fc + 16u], Y_PITCH);
    workgroupBarrier();
    for (var q = 0u; q < TILE * TILE / COOP_WG; q++) {
        let e = lane + COOP_WG * q;
        let row = e / TILE;
        let col = e % TILE;
        if r0 + row < p.t && j0 + col < p.n {
            store(r0 + row, j0 + col, y_tile[row * Y_PITCH + col]);
        }
    }
}
