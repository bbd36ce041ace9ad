// moe_tiles.wgsl: what the expert shaders that read weights by row and tile share (moe.wgsl, moe_coop.wgsl),
// placed after moe_words.wgsl: a weight of the stack by row, and how a prefill workgroup finds its tile of an
// expert's grouped rows (moe.wgsl's header has the layouts).

// Rows and columns of y per prefill workgroup.
const TILE: u32 = 64u;

// Row `row` (of all the stack's experts' rows, expert e's first at e * n) and column `col` of gate / down, and of up.
fn w_at(row: u32, col: u32) -> f32 {
    let r = weight_ref(row, col, p.k);
    return weight_value(r, w[r.word], w[r.scale_word]);
}

fn w_up_at(row: u32, col: u32) -> f32 {
    let r = weight_ref(row, col, p.k);
    return weight_value(r, w_up[r.word], w_up[r.scale_word]);
}

var<workgroup> tile_slot: array<u32, TILE>; // the slot of each of the tile's rows
var<workgroup> tile_live_rows: u32;

struct TileJob {
    expert_row0: u32, // the stack row of the expert's [n, k] matrix
    row0: u32, // grouped row of the tile's first row
    j0: u32, // first output column
}

fn tile_job(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32) -> TileJob {
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let tiles_m = (p.t + TILE - 1u) / TILE;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let e_local = g / (tiles_m * tiles_n);
    let tile = g % (tiles_m * tiles_n);
    let m0 = (tile / tiles_n) * TILE;
    var start = 0u;
    var rows = 0u;
    if e_local < p.count {
        start = groups[p.first + e_local];
        rows = groups[p.first + e_local + 1u] - start;
    }
    var job: TileJob;
    job.expert_row0 = e_local * p.n;
    job.j0 = (tile % tiles_n) * TILE;
    job.row0 = start + m0;
    if lane < TILE && m0 + lane < rows {
        tile_slot[lane] = groups[p.n_experts + 1u + job.row0 + lane];
    }
    if lane == 0u {
        tile_live_rows = select(0u, min(TILE, rows - m0), m0 < rows);
    }
    return job;
}

// The tile's row `row` of x at column c, 0 past its live rows or k. gated: the slot's token row of x;
// otherwise (down) the grouped row of act.
fn expert_x(job: TileJob, row: u32, c: u32, live_rows: u32, gated: bool) -> f32 {
    if row < live_rows && c < p.k {
        let x_row = select(job.row0 + row, tile_slot[row] / p.top_k, gated);
        return x[x_row * p.k + c];
    }
    return 0.0;
}

// The tile's column j of gate / down (or of up, when `up`), at column c of the weights; 0 past n or k.
fn expert_w(job: TileJob, j: u32, c: u32, up: bool) -> f32 {
    if job.j0 + j < p.n && c < p.k {
        let w_row = job.expert_row0 + job.j0 + j;
        if up {
            return w_up_at(w_row, c);
        }
        return w_at(w_row, c);
    }
    return 0.0;
}
