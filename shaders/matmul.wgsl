// matmul.wgsl: y = x W^T (+ y when accumulating), the Linear layer without bias.
// Reference: reference::matmul. x: [t, k] f32 rows at x[r * x_stride + x_offset + c];
// W: [n, k] row-major, packed as W_DTYPE (float or quantized rows), starting at row w_row0; y: [t, n] f32 at
// y[r * y_stride + y_offset + j]. With accumulate = 1, y += x W^T (the residual connection fused in).
//
// Entry points (prefill; decode steps take matvec.wgsl's):
// - tiled: 64 x 64 output tiles per workgroup of 256 invocations, each computing 4 x 4 outputs, k in steps of
//   16 through workgroup memory. Grid: ceil(t / 64) * ceil(n / 64) workgroups, linear.
// - tiled_wide: 128 x 128 tiles, 8 x 8 outputs per invocation (below).

// MatmulParams, y and store(): matmul_common.wgsl; x, w and w_at: matmul_words.wgsl.

// The tiled kernel's output tile (TILE x TILE), its k step, and its workgroup: 16 x 16 invocations of 4 x 4
// outputs. The tiles are stored k-major, so that the inner loop reads an invocation's 4 rows of x and 4 columns
// of W as one vec4 each (2 workgroup loads per 16 multiply-adds); a k-row is padded from 16 to 17 vec4 so that
// the staging stores of 16 consecutive k by neighbouring invocations fall in different banks.
const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
const TILED_WG: u32 = 256u;
const TILE_STRIDE: u32 = 17u; // vec4 per k-row of a staged tile

var<workgroup> x_tile: array<vec4<f32>, 272>; // x[r0 + r, k0 + kk] at [kk * TILE_STRIDE + r / 4][r % 4]
var<workgroup> w_tile: array<vec4<f32>, 272>; // W[j0 + j, k0 + kk] at [kk * TILE_STRIDE + j / 4][j % 4]

@compute @workgroup_size(TILED_WG)
fn tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r0 = (g / tiles_n) * TILE;
    let j0 = (g % tiles_n) * TILE;
    // This invocation's 4 x 4 block: rows r0 + 4 ty + i, columns j0 + 4 tx + jj.
    let tx = lane % 16u;
    let ty = lane / 16u;
    // What it stages: element e = lane + TILED_WG q (q < 4) of each tile, row e / TILE_K, k0 + e % TILE_K, so
    // that neighbouring invocations read neighbouring columns of x and W. The next step's values are loaded
    // into registers before this step's arithmetic, to hide the loads' latency behind it.
    let kk = lane % TILE_K;
    let row = lane / TILE_K; // + 16 q
    var xs: array<f32, 4>;
    var ws: array<f32, 4>;
    for (var q = 0u; q < 4u; q++) {
        xs[q] = tile_x(r0 + row + 16u * q, kk);
        ws[q] = tile_w(j0 + row + 16u * q, kk);
    }

    var acc: array<vec4<f32>, 4>; // [row i] columns 4 tx .. 4 tx + 3
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        for (var q = 0u; q < 4u; q++) {
            let at = kk * TILE_STRIDE + (row + 16u * q) / 4u;
            x_tile[at][row % 4u] = xs[q];
            w_tile[at][row % 4u] = ws[q];
        }
        workgroupBarrier();
        if k0 + TILE_K < p.k {
            for (var q = 0u; q < 4u; q++) {
                xs[q] = tile_x(r0 + row + 16u * q, k0 + TILE_K + kk);
                ws[q] = tile_w(j0 + row + 16u * q, k0 + TILE_K + kk);
            }
        }
        for (var k = 0u; k < TILE_K; k++) {
            let a = x_tile[k * TILE_STRIDE + ty];
            let b = w_tile[k * TILE_STRIDE + tx];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + ty * 4u + i;
        for (var jj = 0u; jj < 4u; jj++) {
            let j = j0 + tx * 4u + jj;
            if r < p.t && j < p.n {
                store(r, j, acc[i][jj]);
            }
        }
    }
}

// x[r, c] for the tiled kernel, 0 past the matrix.
fn tile_x(r: u32, c: u32) -> f32 {
    if r < p.t && c < p.k {
        return x[r * p.x_stride + p.x_offset + c];
    }
    return 0.0;
}

// W[j, c] for the tiled kernel, 0 past the matrix.
fn tile_w(j: u32, c: u32) -> f32 {
    if j < p.n && c < p.k {
        return w_at(j, c);
    }
    return 0.0;
}

// ---- tiled_wide (prefill): 128 x 128 output tiles per workgroup of 16 x 16 invocations of 8 x 8 ----
//
// Invocation (tx, ty) computes rows {4 ty, 64 + 4 ty} + 0..3 and columns {4 tx, 64 + 4 tx} + 0..3 of the tile, so
// that a k-row of a staged tile is read as 16 consecutive vec4 by 16 neighbouring invocations. k steps by 8;
// the tiles are k-major, each k-row padded from 32 to 33 vec4 so that the staging stores spread over the
// banks. 64 multiply-adds per 4 workgroup loads, against tiled's 16 per 2. Needs t and n of 128 or more to
// fill its tiles; the 64 x 64 kernel is the default (Prefill::Tiled) until this one is measured on a GPU.
// Grid: ceil(t / 128) * ceil(n / 128) workgroups, linear.

const WIDE_TILE: u32 = 128u;
const WIDE_K: u32 = 8u;
const WIDE_STRIDE: u32 = 33u; // vec4 per k-row of a staged tile

var<workgroup> wide_x: array<vec4<f32>, 264>; // x[r0 + r, k0 + kk] at [kk * WIDE_STRIDE + r / 4][r % 4]
var<workgroup> wide_w: array<vec4<f32>, 264>; // W[j0 + j, k0 + kk] likewise

@compute @workgroup_size(TILED_WG)
fn tiled_wide(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let tiles_n = (p.n + WIDE_TILE - 1u) / WIDE_TILE;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r0 = (g / tiles_n) * WIDE_TILE;
    let j0 = (g % tiles_n) * WIDE_TILE;
    let tx = lane % 16u;
    let ty = lane / 16u;
    // Staging: element lane + TILED_WG q (q < 4) of each tile, row lane / WIDE_K + 32 q, k0 + lane % WIDE_K; the
    // next step's loaded into registers before this step's arithmetic.
    let kk = lane % WIDE_K;
    let row = lane / WIDE_K;
    var xs: array<f32, 4>;
    var ws: array<f32, 4>;
    for (var q = 0u; q < 4u; q++) {
        xs[q] = tile_x(r0 + row + 32u * q, kk);
        ws[q] = tile_w(j0 + row + 32u * q, kk);
    }

    // acc[4 b + i]: row (b / 2) * 64 + 4 ty + i, columns (b % 2) * 64 + 4 tx + 0..3.
    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += WIDE_K) {
        for (var q = 0u; q < 4u; q++) {
            let at = kk * WIDE_STRIDE + (row + 32u * q) / 4u;
            wide_x[at][row % 4u] = xs[q];
            wide_w[at][row % 4u] = ws[q];
        }
        workgroupBarrier();
        if k0 + WIDE_K < p.k {
            for (var q = 0u; q < 4u; q++) {
                xs[q] = tile_x(r0 + row + 32u * q, k0 + WIDE_K + kk);
                ws[q] = tile_w(j0 + row + 32u * q, k0 + WIDE_K + kk);
            }
        }
        for (var k = 0u; k < WIDE_K; k++) {
            let a0 = wide_x[k * WIDE_STRIDE + ty];
            let a1 = wide_x[k * WIDE_STRIDE + 16u + ty];
            let b0 = wide_w[k * WIDE_STRIDE + tx];
            let b1 = wide_w[k * WIDE_STRIDE + 16u + tx];
            acc[0] += a0.x * b0;
            acc[1] += a0.y * b0;
            acc[2] += a0.z * b0;
            acc[3] += a0.w * b0;
            acc[4] += a0.x * b1;
            acc[5] += a0.y * b1;
            acc[6] += a0.z * b1;
            acc[7] += a0.w * b1;
            acc[8] += a1.x * b0;
            acc[9] += a1.y * b0;
            acc[10] += a1.z * b0;
            acc[11] += a1.w * b0;
            acc[12] += a1.x * b1;
            acc[13] += a1.y * b1;
            acc[14] += a1.z * b1;
            acc[15] += a1.w * b1;
        }
        workgroupBarrier();
    }
    for (var b = 0u; b < 4u; b++) {
        for (var i = 0u; i < 4u; i++) {
            let r = r0 + (b / 2u) * 64u + ty * 4u + i;
            for (var jj = 0u; jj < 4u; jj++) {
                let j = j0 + (b % 2u) * 64u + tx * 4u + jj;
                if r < p.t && j < p.n {
                    store(r, j, acc[4u * b + i][jj]);
                }
            }
        }
    }
}
