// ssm_scan.wgsl: Mamba's selective scan with everything around it fused: delta = softplus(dt + dt_bias),
// A = -exp(a_log), the state update, the C readout, the D skip and the SiLU(z) gate.
// Reference: reference::ssm::selective_scan. Per token t, channel ch, state index n:
//
//   delta       = softplus(dt[t, ch] + dt_bias[ch])
//   h[ch, n]    = exp(delta * A[ch, n]) * h[ch, n] + delta * B[t, n] * x[t, ch]
//   out[t, ch]  = (sum_n h[ch, n] * C[t, n] + D[ch] * x[t, ch]) * silu(z[t, ch])
//
// Layout (rows of T, I = d_inner, N = d_state = D_STATE):
//   x[t * I + ch], out[t * I + ch]                  [>=T, I]
//   dt[t * dt_stride + dt_offset + ch]              [T, I] (dt_proj output, no bias)
//   z[t * z_stride + z_offset + ch]                 [T, I] (the second half of in_proj's [T, 2I] output)
//   b[t * b_stride + b_offset + n], c likewise      [T, N] (column slices of x_proj's [T, R + 2N] output)
//   a_log[ch * N + n], state[ch * N + n]            [I, N]
//   chunk_h[(k * N + n) * I + ch]                   [chunks, N, I] scratch of the chunked path
//   chunk_delta[k * I + ch]                         [chunks, I]    scratch of the chunked path
//
// With NORM_BC = 1, b and c are x_proj's raw columns and the kernel applies Mamba's b_layernorm and
// c_layernorm itself (rms_norm over each row's N values, weights b_norm and c_norm, epsilon p.eps): two
// dispatches fewer per decode step than normalising them apart. Prefill normalises the rows it stages in
// workgroup memory in place; a decode or batch step's one row is normalised by each invocation as it reads it.
//
// With DT_PROJ = 1 as well (decode and batch steps: one row per workgroup), dt is x_proj's raw dt columns
// [T, R] and the kernel computes dt[t, ch] = rms_norm(dt_raw[t], dt_norm) . dt_proj[ch] itself (dt_layernorm
// and dt_proj, p.dt_rank = R, dt_proj packed as W_DTYPE): one dispatch for what was a norm and a matvec. With
// ROW_THREADS = 1 (CPU adapters) each invocation reads its own channel's row of dt_proj; with more (GPUs),
// ROW_THREADS invocations read each row together, 8 rows at a time, coalesced (projected_dt_shared).
//
// Each invocation owns one channel and keeps its N state values in registers; B and C rows are shared by
// the workgroup's 64 channels through workgroup memory, TILE_STEPS rows at a time.
//
// The recurrence h_t = a_t h_{t-1} + b_t is linear, so a chunk of L steps maps h_in to
// exp(A * sum(delta)) * h_in + S, where S is the chunk's scan from zero. Entry points:
// - scan_steps:    all T rows in order, from and back to `state`. The decode step (T = 1), a prefill of one
//                  chunk (T <= chunk_len), and the serial baseline for benchmarks. Grid: ceil(I / WG) workgroups.
// - chunk_local:   (1) per chunk k of chunk_len rows, in parallel: S into chunk_h[k], sum(delta) into
//                  chunk_delta[k]. Grid: chunks * ceil(I / WG) workgroups, linear.
// - chunk_carry:   (2) one invocation per (n, ch), serial over the chunks: replaces chunk_h[k] by the state
//                  entering chunk k and writes the final state. Grid: ceil(N * I / WG) workgroups.
// - chunk_output:  (3) per chunk in parallel, from the state entering it: the outputs. Grid as (1).
// - scan_batch:    a batch's decode step: row r is one token of sequence r, advanced from and back to that
//                  sequence's state, state[r * state_stride + ch * N + n]. Grid: T * ceil(I / WG) workgroups,
//                  linear (workgroup = r * ceil(I / WG) + channel group).

// ScanParams and p: ssm_scan_common.wgsl.
@group(0) @binding(1) var<storage, read> x: array<f32>;                   // [>=T, I] post-conv
@group(0) @binding(2) var<storage, read> dt: array<f32>;                  // [T, I] columns
@group(0) @binding(3) var<storage, read> dt_bias: array<f32>;             // [I]
@group(0) @binding(4) var<storage, read> a_log: array<f32>;               // [I, N]
@group(0) @binding(5) var<storage, read> b: array<f32>;                   // [T, N] columns
@group(0) @binding(6) var<storage, read> c: array<f32>;                   // [T, N] columns
@group(0) @binding(7) var<storage, read> d: array<f32>;                   // [I]
@group(0) @binding(8) var<storage, read> z: array<f32>;                   // [T, I] columns
@group(0) @binding(9) var<storage, read_write> state: array<f32>;         // [I, N]; a batch's [T, state_stride]
@group(0) @binding(10) var<storage, read_write> out: array<f32>;          // [>=T, I]
@group(0) @binding(11) var<storage, read> b_norm: array<f32>;             // [N], read when NORM_BC = 1
@group(0) @binding(12) var<storage, read> c_norm: array<f32>;             // [N], read when NORM_BC = 1
@group(0) @binding(13) var<storage, read> dt_norm: array<f32>;            // [R], read when DT_PROJ = 1
@group(0) @binding(14) var<storage, read> dt_proj: array<u32>;            // [I, R] W_DTYPE, when DT_PROJ = 1
// The chunked path's scratch, bound by chunk_local, chunk_carry and chunk_output only: scan_steps and
// scan_batch never touch it, and a binding written costs a barrier at every dispatch that binds it.
@group(0) @binding(15) var<storage, read_write> chunk_h: array<f32>;      // [chunks, N, I]
@group(0) @binding(16) var<storage, read_write> chunk_delta: array<f32>;  // [chunks, I]

// d_state, fixed when the pipeline is built so the loops over n unroll and h stays in registers.
override D_STATE: u32 = 16u;
// 1: normalise the rows of b and c in the kernel (see above).
override NORM_BC: u32 = 0u;
// 1: dt from x_proj's raw output through dt_layernorm and dt_proj in the kernel (see above).
override DT_PROJ: u32 = 0u;
// The largest d_state the register arrays hold.
const MAX_D_STATE: u32 = 64u;
// Rows of B and C staged in workgroup memory at a time.
const TILE_STEPS: u32 = 16u;
const_assert WG >= 2u * TILE_STEPS; // NORM_BC's lanes

var<workgroup> b_tile: array<f32, 1024>; // [TILE_STEPS, D_STATE]
var<workgroup> c_tile: array<f32, 1024>; // [TILE_STEPS, D_STATE]

// Element i of x_proj's raw dt columns, b or c: its parts added in order (see ScanParams::parts).
fn dt_raw(i: u32) -> f32 {
    var v = dt[i];
    for (var s = 1u; s < p.parts; s++) {
        v += dt[i + s * p.part_stride];
    }
    return v;
}

fn b_raw(i: u32) -> f32 {
    var v = b[i];
    for (var s = 1u; s < p.parts; s++) {
        v += b[i + s * p.part_stride];
    }
    return v;
}

fn c_raw(i: u32) -> f32 {
    var v = c[i];
    for (var s = 1u; s < p.parts; s++) {
        v += c[i + s * p.part_stride];
    }
    return v;
}

// DT_PROJ: the raw dt row being projected (x_proj's first dt_rank columns, parts added up), staged once per
// workgroup: every channel reads all of it, twice.
const MAX_DT_RANK: u32 = 1024u;
var<workgroup> dt_row: array<f32, MAX_DT_RANK>;

// Row t's raw dt into dt_row, by the whole workgroup (every invocation calls it: it holds a barrier).
fn stage_dt_row(t: u32, lane: u32) {
    let row = t * p.dt_stride + p.dt_offset;
    for (var j = lane; j < p.dt_rank; j += WG) {
        dt_row[j] = dt_raw(row + j);
    }
    workgroupBarrier();
}

// The scale 1 / rms of the staged dt row (rms_norm.wgsl's order).
fn dt_inv_rms() -> f32 {
    var sum_sq = 0.0;
    for (var j = 0u; j < p.dt_rank; j++) {
        sum_sq += dt_row[j] * dt_row[j];
    }
    return 1.0 / sqrt(sum_sq / f32(p.dt_rank) + p.eps);
}

// DT_PROJ: dt[t, ch] = rms_norm(dt_raw[t], dt_norm) . dt_proj[ch], the raw row staged in dt_row. Every
// invocation sums the same R values in order, as rms_norm.wgsl with one invocation per row does.
fn projected_dt(ch: u32) -> f32 {
    let r = p.dt_rank;
    let scale = dt_inv_rms();
    var acc = 0.0;
    for (var j = 0u; j < r; j++) {
        let w = weight_ref(ch, j, r);
        acc += dt_norm[j] * (dt_row[j] * scale) * weight_value(w, dt_proj[w.word], dt_proj[w.scale_word]);
    }
    return acc;
}

// DT_PROJ with ROW_THREADS > 1: the dt of the workgroup's channels, for each lane to take its own.
var<workgroup> dt_lanes: array<f32, WG>;

// Column j of the normalised staged dt row (0 past its end), as projected_dt weighs it.
fn dt_normed(j: u32, scale: f32) -> f32 {
    let k = min(j, p.dt_rank - 1u);
    return select(0.0, dt_norm[k] * (dt_row[k] * scale), j < p.dt_rank);
}

// The normalised dt values of word i of a dt_proj row (the prelude's X8).
fn dt_word(i: u32, scale: f32) -> X8 {
    let per = word_weights();
    let c = i * per;
    var xs: X8;
    xs.a.x = dt_normed(c, scale);
    if per >= 2u {
        xs.a.y = dt_normed(c + 1u, scale);
    }
    if per >= 4u {
        xs.a.z = dt_normed(c + 2u, scale);
        xs.a.w = dt_normed(c + 3u, scale);
    }
    if per == 8u {
        xs.b = vec4(dt_normed(c + 4u, scale), dt_normed(c + 5u, scale), dt_normed(c + 6u, scale), dt_normed(c + 7u, scale));
    }
    return xs;
}

// DT_PROJ with ROW_THREADS > 1: dt[t, ch] of the lane's channel, ch = ch0 + lane, computed by the whole workgroup
// (every invocation calls it: it holds barriers). Each row group of ROW_THREADS lanes takes 8 channels at a
// time, its lanes striding over the words of their rows, so each load of the group reads consecutive words and
// each normalised dt value serves 8 rows; row_sum4 then adds up each row's lanes.
fn projected_dt_shared(ch0: u32, lane: u32) -> f32 {
    let r = p.dt_rank;
    let scale = dt_inv_rms();
    let per_round = WG / ROW_THREADS * 8u;
    for (var c0 = 0u; c0 < WG; c0 += per_round) {
        let first = c0 + lane / ROW_THREADS * 8u; // the group's first channel, from ch0
        var acc: Rows8;
        if rows_by_word(r) {
            let words = word_row(0u, r).words;
            for (var i = lane % ROW_THREADS; i < words; i += ROW_THREADS) {
                let xs = dt_word(i, scale);
                for (var q = 0u; q < 8u; q++) {
                    let w = word_row(min(ch0 + first + q, p.i - 1u), r);
                    acc = rows8_add_at(acc, q, word_dot(dt_proj[w.first + i], dt_proj[word_scale(w, i)], i, xs));
                }
            }
        } else {
            for (var j = lane % ROW_THREADS; j < r; j += ROW_THREADS) {
                let x_j = dt_normed(j, scale);
                for (var q = 0u; q < 8u; q++) {
                    let w = weight_ref(min(ch0 + first + q, p.i - 1u), j, r);
                    acc = rows8_add_at(acc, q, weight_value(w, dt_proj[w.word], dt_proj[w.scale_word]) * x_j);
                }
            }
        }
        let sums = Rows8(row_sum4(lane, acc.a), row_sum4(lane, acc.b));
        if lane % ROW_THREADS == 0u && first < WG {
            for (var q = 0u; q < 8u; q++) {
                dt_lanes[first + q] = rows8_at(sums, q);
            }
        }
    }
    workgroupBarrier();
    return dt_lanes[lane];
}

// Element n of row s of b_tile (or c_tile), and its norm weight: each reads only the array it names.
fn tile_at(s: u32, n: u32, is_c: bool) -> f32 {
    if is_c {
        return c_tile[s * D_STATE + n];
    }
    return b_tile[s * D_STATE + n];
}

fn bc_norm(n: u32, is_c: bool) -> f32 {
    if is_c {
        return c_norm[n];
    }
    return b_norm[n];
}

// 1 / rms of row s of b_tile (or c_tile), as rms_norm.wgsl computes it.
fn tile_inv_rms(s: u32, is_c: bool) -> f32 {
    var sum_sq = 0.0;
    for (var n = 0u; n < D_STATE; n++) {
        let v = tile_at(s, n, is_c);
        sum_sq += v * v;
    }
    return 1.0 / sqrt(sum_sq / f32(D_STATE) + p.eps);
}

// rms_norm of row s of b_tile (or c_tile), in place.
fn normalise_row(s: u32, is_c: bool) {
    let scale = tile_inv_rms(s, is_c);
    for (var n = 0u; n < D_STATE; n++) {
        let v = bc_norm(n, is_c) * (tile_at(s, n, is_c) * scale);
        if is_c {
            c_tile[s * D_STATE + n] = v;
        } else {
            b_tile[s * D_STATE + n] = v;
        }
    }
}

// B[t0 + s, n] (or C) from its tile; normalised here by the row's `scale` when `lane_norm` (a tile normalised
// in place holds it normalised already).
fn tile_value(s: u32, n: u32, is_c: bool, lane_norm: bool, scale: f32) -> f32 {
    let v = tile_at(s, n, is_c);
    if !lane_norm {
        return v;
    }
    return bc_norm(n, is_c) * (v * scale);
}

// A row of d_state values in registers.
alias StateRow = array<f32, MAX_D_STATE>;

// Row s of the B and C tiles (C with `emit`), normalised as tile_value normalises them, into b_row and c_row,
// read in turns (X_LANES, prelude.wgsl): each invocation of the subgroup loads D_STATE / X_LANES elements of each
// row and of its norm weight, and takes the others from the invocations that loaded them, where otherwise each
// loads all of them (lavapipe pays for every invocation's load). The same values, their squares summed in the same
// order (lavapipe, the default model's decode scan: 1.02-1.84 -> 0.76-1.31 ms a step in three alternated pairs).
// The whole subgroup calls it (uniform control flow); D_STATE is at most 8 X_LANES (ssm_scan.rs).
fn bc_rows_in_turns(s: u32, emit: bool, b_row: ptr<function, StateRow>, c_row: ptr<function, StateRow>) {
    let mine = subgroup_lane();
    let width = max(X_LANES, 1u);
    // Round r: B, its norm weight, C and its norm weight at element r * width + mine.
    var held: array<vec4<f32>, 8>;
    for (var r = 0u; r * width < D_STATE; r++) {
        let n = min(r * width + mine, D_STATE - 1u);
        held[r] = vec4(b_tile[s * D_STATE + n], b_norm[n], 0.0, 0.0);
        if emit {
            held[r].z = c_tile[s * D_STATE + n];
            held[r].w = c_norm[n];
        }
    }
    var sum_sq = vec2(0.0); // B's, C's
    for (var n = 0u; n < D_STATE; n++) {
        let v = lane_value(held[n / width], n % width);
        (*b_row)[n] = v.x;
        (*c_row)[n] = v.z;
        sum_sq += v.xz * v.xz;
    }
    let scale = 1.0 / sqrt(sum_sq / f32(D_STATE) + p.eps); // tile_inv_rms
    for (var n = 0u; n < D_STATE; n++) {
        let v = lane_value(held[n / width], n % width);
        (*b_row)[n] = v.y * ((*b_row)[n] * scale.x);
        (*c_row)[n] = v.w * ((*c_row)[n] * scale.y);
    }
}

// Row s of the B and C tiles (C with `emit`) into b_row and c_row as they are (a prefill tile is normalised in
// place), read in turns as bc_rows_in_turns reads a decode step's row: each invocation of the subgroup loads
// D_STATE / X_LANES elements of each, B and C of two rounds in one vec4, and takes the others from the invocations
// that loaded them (lavapipe, two alternated pairs: the default model's 256-token chunk, ssm_scan 28.9-33.4 ->
// 19.8-20.1 ms; anchor-35m's, 77.6-79.1 -> 53.1-53.9). The whole subgroup calls it; D_STATE is at most 8 X_LANES
// (ssm_scan.rs).
fn tile_rows_in_turns(s: u32, emit: bool, b_row: ptr<function, StateRow>, c_row: ptr<function, StateRow>) {
    let mine = subgroup_lane();
    let width = max(X_LANES, 1u);
    // Pair q: B and C at element 2q * width + mine, then at (2q + 1) * width + mine.
    var held: array<vec4<f32>, 4>;
    for (var q = 0u; 2u * q * width < D_STATE; q++) {
        let first = s * D_STATE + min(2u * q * width + mine, D_STATE - 1u);
        let second = s * D_STATE + min((2u * q + 1u) * width + mine, D_STATE - 1u);
        held[q] = vec4(b_tile[first], 0.0, b_tile[second], 0.0);
        if emit {
            held[q].y = c_tile[first];
            held[q].w = c_tile[second];
        }
    }
    for (var n = 0u; n < D_STATE; n++) {
        let v = lane_value(held[n / (2u * width)], n % width);
        let odd = (n / width) % 2u == 1u;
        (*b_row)[n] = select(v.x, v.z, odd);
        (*c_row)[n] = select(v.y, v.w, odd);
    }
}

// Advances the state `h` of channel `ch` over rows [t_begin, t_end), writing out[t, ch] when `emit`; returns
// the sum of delta over those rows. Every invocation of the workgroup must call it with the same rows (it holds
// barriers, and reads B and C in turns across the subgroup). The invocations past the last channel, not `live`,
// run the steps on the last channel's values and write nothing.
fn advance(
    ch: u32,
    live: bool,
    lane: u32,
    t_begin: u32,
    t_end: u32,
    emit: bool,
    dt_given: f32, // DT_PROJ: dt of the one row [t_begin, t_begin + 1)
    h: ptr<function, array<f32, MAX_D_STATE>>,
) -> f32 {
    let own = min(ch, p.i - 1u);
    var a: array<f32, MAX_D_STATE>; // A[ch, :] = -exp(a_log[ch, :])
    for (var n = 0u; n < D_STATE; n++) {
        a[n] = -exp(a_log[own * D_STATE + n]);
    }
    let bias = dt_bias[own];
    let skip = d[own];
    var delta_sum = 0.0;
    for (var t0 = t_begin; t0 < t_end; t0 += TILE_STEPS) {
        let steps = min(TILE_STEPS, t_end - t0);
        workgroupBarrier(); // every invocation is done with the previous tile
        for (var e = lane; e < steps * D_STATE; e += WG) {
            let row = t0 + e / D_STATE;
            let n = e % D_STATE;
            b_tile[e] = b_raw(row * p.b_stride + p.b_offset + n);
            if emit {
                c_tile[e] = c_raw(row * p.c_stride + p.c_offset + n);
            }
        }
        workgroupBarrier();
        // With DT_PROJ (decode and batch steps) the tile is one row, which every invocation normalises for
        // itself as it reads it (tile_value): no barrier, and no invocations idle while two do the work.
        // Longer tiles are normalised once, in place: lane s normalises row s of B, lane TILE_STEPS + s row s
        // of C (WG >= 2 * TILE_STEPS).
        let lane_norm = NORM_BC != 0u && DT_PROJ != 0u;
        if NORM_BC != 0u && !lane_norm {
            let s = lane % TILE_STEPS;
            let is_c = lane >= TILE_STEPS;
            if s < steps && lane < 2u * TILE_STEPS && (emit || !is_c) {
                normalise_row(s, is_c);
            }
            workgroupBarrier();
        }
        for (var s = 0u; s < steps; s++) {
            let t = t0 + s;
            let x_t = x[t * p.i + own];
            var dt_t = dt_given;
            if DT_PROJ == 0u {
                dt_t = dt[t * p.dt_stride + p.dt_offset + own];
            }
            let delta = softplus(dt_t + bias);
            delta_sum += delta;
            var b_row: StateRow; // the step's B and C, as the recurrence takes them
            var c_row: StateRow;
            if X_LANES > 1u && lane_norm {
                bc_rows_in_turns(s, emit, &b_row, &c_row);
            } else if X_LANES > 1u {
                tile_rows_in_turns(s, emit, &b_row, &c_row);
            } else {
                var b_scale = 1.0;
                var c_scale = 1.0;
                if lane_norm {
                    b_scale = tile_inv_rms(s, false);
                    if emit {
                        c_scale = tile_inv_rms(s, true);
                    }
                }
                for (var n = 0u; n < D_STATE; n++) {
                    b_row[n] = tile_value(s, n, false, lane_norm, b_scale);
                    if emit {
                        c_row[n] = tile_value(s, n, true, lane_norm, c_scale);
                    }
                }
            }
            var y = 0.0;
            for (var n = 0u; n < D_STATE; n++) {
                let h_n = exp(delta * a[n]) * (*h)[n] + delta * b_row[n] * x_t;
                (*h)[n] = h_n;
                if emit {
                    y += h_n * c_row[n];
                }
            }
            if emit && live {
                out[t * p.i + ch] = (y + skip * x_t) * silu(z[t * p.z_stride + p.z_offset + own]);
            }
        }
    }
    return delta_sum;
}

// Rows [t_begin, t_end) of channel `ch`, from and back to the state at state[s0 + ch * N ..].
fn scan_rows(ch: u32, lane: u32, t_begin: u32, t_end: u32, s0: u32) {
    let live = ch < p.i;
    var h: array<f32, MAX_D_STATE>;
    if live {
        for (var n = 0u; n < D_STATE; n++) {
            h[n] = state[s0 + ch * D_STATE + n];
        }
    }
    var dt_given = 0.0;
    if DT_PROJ != 0u {
        stage_dt_row(t_begin, lane); // by the whole workgroup: before `live`
    }
    if DT_PROJ != 0u && ROW_THREADS > 1u {
        dt_given = projected_dt_shared(ch - lane, lane); // by the whole workgroup: before `live`
    } else if DT_PROJ != 0u && live {
        dt_given = projected_dt(ch);
    }
    advance(ch, live, lane, t_begin, t_end, true, dt_given, &h);
    if live {
        for (var n = 0u; n < D_STATE; n++) {
            state[s0 + ch * D_STATE + n] = h[n];
        }
    }
}

@compute @workgroup_size(WG)
fn scan_steps(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    scan_rows(linear_workgroup(workgroup_id, num_workgroups) * WG + lane, lane, 0u, p.t, 0u);
}

@compute @workgroup_size(WG)
fn scan_batch(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let groups_per_row = (p.i + WG - 1u) / WG;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r = g / groups_per_row;
    if r >= p.t {
        return; // padding of a 2-D grid: the whole workgroup leaves
    }
    scan_rows((g % groups_per_row) * WG + lane, lane, r, r + 1u, r * p.state_stride);
}

// The chunk and channel of an invocation of chunk_local / chunk_output, and the chunk's rows.
struct ChunkLane {
    k: u32,
    ch: u32,
    t_begin: u32,
    t_end: u32,
}

fn chunk_lane(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32) -> ChunkLane {
    let groups_per_chunk = (p.i + WG - 1u) / WG;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let k = g / groups_per_chunk;
    let t_begin = k * p.chunk_len;
    return ChunkLane(k, (g % groups_per_chunk) * WG + lane, t_begin, min(t_begin + p.chunk_len, p.t));
}

@compute @workgroup_size(WG)
fn chunk_local(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let q = chunk_lane(workgroup_id, num_workgroups, lane);
    let live = q.ch < p.i;
    var h: array<f32, MAX_D_STATE>; // zeros
    let delta_sum = advance(q.ch, live, lane, q.t_begin, q.t_end, false, 0.0, &h);
    if live {
        for (var n = 0u; n < D_STATE; n++) {
            chunk_h[(q.k * D_STATE + n) * p.i + q.ch] = h[n];
        }
        chunk_delta[q.k * p.i + q.ch] = delta_sum;
    }
}

@compute @workgroup_size(WG)
fn chunk_carry(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + lane; // n * I + ch
    if e >= D_STATE * p.i {
        return;
    }
    let n = e / p.i;
    let ch = e % p.i;
    let a = -exp(a_log[ch * D_STATE + n]);
    var h = state[ch * D_STATE + n];
    for (var k = 0u; k < p.chunks; k++) {
        let i = (k * D_STATE + n) * p.i + ch;
        let local_end = chunk_h[i];
        chunk_h[i] = h;
        h = exp(a * chunk_delta[k * p.i + ch]) * h + local_end;
    }
    state[ch * D_STATE + n] = h;
}

@compute @workgroup_size(WG)
fn chunk_output(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let q = chunk_lane(workgroup_id, num_workgroups, lane);
    let live = q.ch < p.i;
    var h: array<f32, MAX_D_STATE>;
    if live {
        for (var n = 0u; n < D_STATE; n++) {
            h[n] = chunk_h[(q.k * D_STATE + n) * p.i + q.ch];
        }
    }
    advance(q.ch, live, lane, q.t_begin, q.t_end, true, 0.0, &h);
}
