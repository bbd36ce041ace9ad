// ssm_scan_cpu.wgsl: the selective scan over a prefill's rows, a decode step's row or a batch's rows, for CPU
// adapters (lavapipe's llvmpipe): what ssm_scan.wgsl's scan_steps and scan_batch compute, from the same bindings,
// in the same order (its header has the math and the layouts), for d_state 16 on subgroups 8 wide.
// Reference: reference::ssm.
//
// llvmpipe loads an invocation's value from a buffer (workgroup memory included) in a loop over the subgroup's 8
// lanes, whatever the addresses, a vec4 for little more than a scalar; scan_steps spends most of its time in such
// loops: each step's B and C staged in workgroup memory, normalised there and read back four values a lane, and
// x, dt and z a value a lane. Here:
// - lane l loads quad l of the step's B and C (x_proj's columns, C right after B) and takes the other seven quads
//   by subgroupBroadcast: one load a step, and every lane normalises the rows for itself;
// - x, dt and z come 8 steps at a time: lane l loads the subgroup's 8 channels of row t0 + l as two vec4s, and
//   each lane takes its channel of row t0 + s from lane s.
// A subgroup's channels are its own: no workgroup memory, no barriers.
//
// With DT_PROJ (a decode step's row, or a batch's), dt is x_proj's raw dt columns, projected for each lane's
// channel as scan_steps projects it (dt_layernorm, then dt_proj's row), the raw row and its norm weights read in
// turns: lane l loads quads l, l + 8, ... and every lane takes the others by subgroupBroadcast, where scan_steps
// staged the row in workgroup memory and read every value of it in every lane. x_proj's output may come in parts
// (p.parts).
//
// Needs (kernels::ssm_scan chooses it only so): D_STATE 16; I a multiple of 8, x's rows I apart; dt's and z's
// strides and offsets multiples of 4; C at b_offset + 16 in b's rows, whose stride and offset are multiples of 4;
// with DT_PROJ, dt_rank a multiple of 4 (and scan_lanes T = 1); x_proj's parts a multiple of 4 apart.
// Grid (scan_lanes): ceil(I / WG) workgroups, linear; the 8 lanes of subgroup s take channels 8 s .. 8 s + 8 of the
// workgroup's. scan_lanes_batch: below.

// ScanParams and p: ssm_scan_common.wgsl. The bindings are scan_steps', those read here by vec4 where they can be.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;     // [>=T, I] post-conv
@group(0) @binding(2) var<storage, read> dt: array<vec4<f32>>;    // [T, I] columns; DT_PROJ: raw, [1, R]
@group(0) @binding(3) var<storage, read> dt_bias: array<f32>;     // [I]
@group(0) @binding(4) var<storage, read> a_log: array<f32>;       // [I, N]
@group(0) @binding(5) var<storage, read> b: array<vec4<f32>>;     // [T, 2N] columns: B, then C
@group(0) @binding(6) var<storage, read> c: array<vec4<f32>>;     // the same buffer as b: read through b
@group(0) @binding(7) var<storage, read> d: array<f32>;           // [I]
@group(0) @binding(8) var<storage, read> z: array<vec4<f32>>;     // [T, I] columns
@group(0) @binding(9) var<storage, read_write> state: array<f32>; // [I, N]
@group(0) @binding(10) var<storage, read_write> out: array<f32>;  // [>=T, I]
@group(0) @binding(11) var<storage, read> b_norm: array<f32>;     // [N], read when NORM_BC = 1
@group(0) @binding(12) var<storage, read> c_norm: array<f32>;     // [N], read when NORM_BC = 1
@group(0) @binding(13) var<storage, read> dt_norm: array<vec4<f32>>; // [R], read when DT_PROJ = 1
@group(0) @binding(14) var<storage, read> dt_proj: array<u32>;     // [I, R] W_DTYPE, read when DT_PROJ = 1

// 1: normalise the rows of B and C (ssm_scan.wgsl's header).
override NORM_BC: u32 = 0u;
// 1: dt from x_proj's raw dt columns through dt_layernorm and dt_proj (ssm_scan.wgsl's header): one row a
// workgroup (scan_lanes: T = 1).
override DT_PROJ: u32 = 0u;

const N: u32 = 16u; // d_state
const SG: u32 = 8u; // subgroup width

// The lane's channel: its state, A = -exp(a_log), dt_bias and D; the norms' weights (the same in every lane).
var<private> h: array<f32, N>;
var<private> a: array<f32, N>;
var<private> b_weight: array<f32, N>;
var<private> c_weight: array<f32, N>;
var<private> channel: u32;
var<private> bias: f32;
var<private> skip: f32;

// Element `lane` of the eight values lo, hi.
fn pick(lo: vec4<f32>, hi: vec4<f32>, lane: u32) -> f32 {
    return select(hi[lane % 4u], lo[lane % 4u], lane < 4u);
}

// The lane's channel of rows t0 .. t0 + 8, from row t0 + s's eight channels (lo, hi) held by lane s.
fn own_of_rows(lo: vec4<f32>, hi: vec4<f32>, lane: u32) -> array<f32, SG> {
    return array(
        pick(subgroupBroadcast(lo, 0u), subgroupBroadcast(hi, 0u), lane),
        pick(subgroupBroadcast(lo, 1u), subgroupBroadcast(hi, 1u), lane),
        pick(subgroupBroadcast(lo, 2u), subgroupBroadcast(hi, 2u), lane),
        pick(subgroupBroadcast(lo, 3u), subgroupBroadcast(hi, 3u), lane),
        pick(subgroupBroadcast(lo, 4u), subgroupBroadcast(hi, 4u), lane),
        pick(subgroupBroadcast(lo, 5u), subgroupBroadcast(hi, 5u), lane),
        pick(subgroupBroadcast(lo, 6u), subgroupBroadcast(hi, 6u), lane),
        pick(subgroupBroadcast(lo, 7u), subgroupBroadcast(hi, 7u), lane),
    );
}

// 1 / rms of the row v (rms_norm.wgsl's order, as ssm_scan.wgsl's tile_inv_rms).
fn inv_rms(v: array<vec4<f32>, 4>) -> f32 {
    var sum_sq = 0.0;
    for (var n = 0u; n < N; n++) {
        sum_sq += v[n / 4u][n % 4u] * v[n / 4u][n % 4u];
    }
    return 1.0 / sqrt(sum_sq / f32(N) + p.eps);
}

// Quad `quad` of x_proj's raw dt row t, its parts added in order (ssm_scan.wgsl's dt_raw).
fn dt_raw_quad(t: u32, quad: u32) -> vec4<f32> {
    let at = (t * p.dt_stride + p.dt_offset) / 4u + quad;
    var v = dt[at];
    for (var s = 1u; s < p.parts; s++) {
        v += dt[at + s * p.part_stride / 4u];
    }
    return v;
}

// sum += the squares of v's components, in order.
fn add_squares(sum: f32, v: vec4<f32>) -> f32 {
    return sum + v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
}

// acc += dt_norm[j] * (raw[j] * scale) * dt_proj[channel, j] for the four columns j = 4 quad .. of the row (those
// before R), in order: ssm_scan.wgsl's projected_dt.
fn add_projected(acc: f32, quad: u32, raw: vec4<f32>, norm: vec4<f32>, scale: f32) -> f32 {
    var sum = acc;
    for (var c = 0u; c < 4u; c++) {
        let j = 4u * quad + c;
        let w = weight_ref(channel, min(j, p.dt_rank - 1u), p.dt_rank);
        let term = norm[c] * (raw[c] * scale) * weight_value(w, dt_proj[w.word], dt_proj[w.scale_word]);
        sum = select(sum, sum + term, j < p.dt_rank);
    }
    return sum;
}

// dt of the lane's channel at row t (DT_PROJ): rms_norm(raw dt row, dt_norm) . dt_proj[channel], the raw row and
// its norm weights read in turns (each lane loads quads lane, lane + 8, ... and takes the rest from the others),
// its squares and the products summed in ssm_scan.wgsl's order. The whole subgroup calls it.
fn projected_dt(t: u32, lane: u32) -> f32 {
    let quads = p.dt_rank / 4u;
    var sum_sq = 0.0;
    for (var q0 = 0u; q0 < quads; q0 += SG) {
        // Quads past the row are loaded as its last and add nothing.
        let v = select(vec4(0.0), dt_raw_quad(t, min(q0 + lane, quads - 1u)), q0 + lane < quads);
        sum_sq = add_squares(sum_sq, subgroupBroadcast(v, 0u));
        sum_sq = add_squares(sum_sq, subgroupBroadcast(v, 1u));
        sum_sq = add_squares(sum_sq, subgroupBroadcast(v, 2u));
        sum_sq = add_squares(sum_sq, subgroupBroadcast(v, 3u));
        sum_sq = add_squares(sum_sq, subgroupBroadcast(v, 4u));
        sum_sq = add_squares(sum_sq, subgroupBroadcast(v, 5u));
        sum_sq = add_squares(sum_sq, subgroupBroadcast(v, 6u));
        sum_sq = add_squares(sum_sq, subgroupBroadcast(v, 7u));
    }
    let scale = 1.0 / sqrt(sum_sq / f32(p.dt_rank) + p.eps);
    var acc = 0.0;
    for (var q0 = 0u; q0 < quads; q0 += SG) {
        let own = min(q0 + lane, quads - 1u);
        let v = dt_raw_quad(t, own);
        let nv = dt_norm[own];
        acc = add_projected(acc, q0, subgroupBroadcast(v, 0u), subgroupBroadcast(nv, 0u), scale);
        acc = add_projected(acc, q0 + 1u, subgroupBroadcast(v, 1u), subgroupBroadcast(nv, 1u), scale);
        acc = add_projected(acc, q0 + 2u, subgroupBroadcast(v, 2u), subgroupBroadcast(nv, 2u), scale);
        acc = add_projected(acc, q0 + 3u, subgroupBroadcast(v, 3u), subgroupBroadcast(nv, 3u), scale);
        acc = add_projected(acc, q0 + 4u, subgroupBroadcast(v, 4u), subgroupBroadcast(nv, 4u), scale);
        acc = add_projected(acc, q0 + 5u, subgroupBroadcast(v, 5u), subgroupBroadcast(nv, 5u), scale);
        acc = add_projected(acc, q0 + 6u, subgroupBroadcast(v, 6u), subgroupBroadcast(nv, 6u), scale);
        acc = add_projected(acc, q0 + 7u, subgroupBroadcast(v, 7u), subgroupBroadcast(nv, 7u), scale);
    }
    return acc;
}

// Row t: the state advanced by one step, out[t, channel] written. The whole subgroup calls it (the B and C
// broadcasts), with t < T.
fn step(t: u32, lane: u32, x_t: f32, dt_t: f32, z_t: f32) {
    let at = (t * p.b_stride + p.b_offset) / 4u + lane;
    var q = b[at];
    for (var s = 1u; s < p.parts; s++) {
        q += b[at + s * p.part_stride / 4u];
    }
    let bq = array(subgroupBroadcast(q, 0u), subgroupBroadcast(q, 1u), subgroupBroadcast(q, 2u),
        subgroupBroadcast(q, 3u));
    let cq = array(subgroupBroadcast(q, 4u), subgroupBroadcast(q, 5u), subgroupBroadcast(q, 6u),
        subgroupBroadcast(q, 7u));
    var b_scale = 1.0;
    var c_scale = 1.0;
    if NORM_BC != 0u {
        b_scale = inv_rms(bq);
        c_scale = inv_rms(cq);
    }
    let delta = softplus(dt_t + bias);
    var y = 0.0;
    for (var n = 0u; n < N; n++) {
        var b_n = bq[n / 4u][n % 4u];
        var c_n = cq[n / 4u][n % 4u];
        if NORM_BC != 0u {
            b_n = b_weight[n] * (b_n * b_scale);
            c_n = c_weight[n] * (c_n * c_scale);
        }
        let h_n = exp(delta * a[n]) * h[n] + delta * b_n * x_t;
        h[n] = h_n;
        y += h_n * c_n;
    }
    out[t * p.i + channel] = (y + skip * x_t) * silu(z_t);
}

// The lane's channel ch0 + lane, its state from state[s0 ..], and what the steps read of its weights.
fn load_channel(ch0: u32, lane: u32, s0: u32) {
    channel = ch0 + lane;
    for (var n = 0u; n < N; n++) {
        h[n] = state[s0 + channel * N + n];
        a[n] = -exp(a_log[channel * N + n]);
        if NORM_BC != 0u {
            b_weight[n] = b_norm[n];
            c_weight[n] = c_norm[n];
        }
    }
    bias = dt_bias[channel];
    skip = d[channel];
}

fn store_state(s0: u32) {
    for (var n = 0u; n < N; n++) {
        state[s0 + channel * N + n] = h[n];
    }
}

// Row r alone: a decode step's (r = 0) or a batch's (row r, its sequence's state loaded), dt given or projected.
// The whole subgroup calls it.
fn one_row(r: u32, lane: u32) {
    let x_at = r * p.i + channel;
    let z_at = r * p.z_stride + p.z_offset + channel;
    var dt_r = 0.0;
    if DT_PROJ != 0u {
        dt_r = projected_dt(r, lane);
    } else {
        let dt_at = r * p.dt_stride + p.dt_offset + channel;
        dt_r = dt[dt_at / 4u][dt_at % 4u];
    }
    step(r, lane, x[x_at / 4u][x_at % 4u], dt_r, z[z_at / 4u][z_at % 4u]);
}

@compute @workgroup_size(WG)
fn scan_lanes(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let ch0 = linear_workgroup(workgroup_id, num_workgroups) * WG + index / SG * SG;
    // A subgroup's channels are all in I or all past it (I is a multiple of 8).
    if ch0 >= p.i {
        return;
    }
    load_channel(ch0, lane, 0u);
    if DT_PROJ != 0u {
        one_row(0u, lane);
    }
    for (var t0 = 0u; t0 < select(p.t, 0u, DT_PROJ != 0u); t0 += SG) {
        // Rows past T repeat the last (read, never stepped).
        let row = min(t0 + lane, p.t - 1u);
        let xi = (row * p.i + ch0) / 4u;
        let di = (row * p.dt_stride + p.dt_offset + ch0) / 4u;
        let zi = (row * p.z_stride + p.z_offset + ch0) / 4u;
        let xs = own_of_rows(x[xi], x[xi + 1u], lane);
        let dts = own_of_rows(dt[di], dt[di + 1u], lane);
        let zs = own_of_rows(z[zi], z[zi + 1u], lane);
        // Written out: the arrays' indices must be constants (cpu_blocks.wgsl's header says why).
        step(t0, lane, xs[0], dts[0], zs[0]);
        if t0 + 1u < p.t {
            step(t0 + 1u, lane, xs[1], dts[1], zs[1]);
        }
        if t0 + 2u < p.t {
            step(t0 + 2u, lane, xs[2], dts[2], zs[2]);
        }
        if t0 + 3u < p.t {
            step(t0 + 3u, lane, xs[3], dts[3], zs[3]);
        }
        if t0 + 4u < p.t {
            step(t0 + 4u, lane, xs[4], dts[4], zs[4]);
        }
        if t0 + 5u < p.t {
            step(t0 + 5u, lane, xs[5], dts[5], zs[5]);
        }
        if t0 + 6u < p.t {
            step(t0 + 6u, lane, xs[6], dts[6], zs[6]);
        }
        if t0 + 7u < p.t {
            step(t0 + 7u, lane, xs[7], dts[7], zs[7]);
        }
    }
    store_state(0u);
}

// A batch's decode step (ssm_scan.wgsl's scan_batch): row r is one token of sequence r, advanced from and back to
// its state at state[r * state_stride ..]. Grid: T * ceil(I / WG) workgroups, linear (r * ceil(I / WG) + channel
// group).
@compute @workgroup_size(WG)
fn scan_lanes_batch(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let groups_per_row = (p.i + WG - 1u) / WG;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let r = g / groups_per_row;
    let ch0 = (g % groups_per_row) * WG + index / SG * SG;
    // Past the rows (padding of a 2-D grid), or a subgroup's channels all past I (I is a multiple of 8).
    if r >= p.t || ch0 >= p.i {
        return;
    }
    load_channel(ch0, lane, r * p.state_stride);
    one_row(r, lane);
    store_state(r * p.state_stride);
}
