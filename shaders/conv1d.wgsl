// conv1d.wgsl: Mamba's causal depthwise conv1d over time, plus bias, then SiLU; with a rolling state of the
// last K-1 pre-conv inputs so that a prefill can come in pieces and decode is the case T = 1.
// Reference: reference::conv1d::causal_conv1d_silu.
//
//   window = state ++ x                                   // [K-1 + T, C], state oldest first
//   out[t, ch] = silu(sum_j weight[ch, j] * window[t + j, ch] + bias[ch])
//   state      = window[T .. T + K-1]                     // the last K-1 rows
//
// Layout: x[t * x_stride + x_offset + ch] (x may be the first C columns of in_proj's [T, 2C] output),
// state[j * C + ch], weight[ch * K + j] (HF's [C, 1, K]), bias[ch], out[t * C + ch].
//
// A batch (conv_batch) holds one sequence per row instead: row r is one token of sequence r, whose state is
// state[r * state_stride + j * C + ch]; window_r = state_r ++ x[r], and state_r = window_r[1 .. K].
//
// Two entry points for one sequence, recorded as two dispatches in this order (the second overwrites what the
// first reads):
// - conv:        one invocation per channel and block of CONV_ROWS rows; grid ceil(T / CONV_ROWS) * ceil(C / WG)
//                workgroups, linear. Consecutive invocations take consecutive channels: loads and stores coalesce.
// - conv_state:  one invocation per channel, moving the window's last K-1 rows into the state;
//                grid ceil(C / WG) workgroups.
// And one for a batch:
// - conv_batch:  one invocation per (row, channel), the output and that row's state update together (an
//                invocation reads and writes only its own sequence's channel); grid ceil(T * C / WG) workgroups.

struct ConvParams {
    t: u32,
    c: u32,
    k: u32,
    x_stride: u32,
    x_offset: u32,
    state_stride: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;              // [T, C] columns of a wider matrix
@group(0) @binding(2) var<storage, read> weight: array<f32>;         // [C, K]
@group(0) @binding(3) var<storage, read> bias: array<f32>;           // [C]
@group(0) @binding(4) var<storage, read_write> state: array<f32>;    // [K-1, C]; a batch's [T, state_stride]
@group(0) @binding(5) var<storage, read_write> out: array<f32>;      // [>=T, C]

// Row `row` of the window state ++ x, channel `ch`.
fn window(row: u32, ch: u32) -> f32 {
    let remembered = p.k - 1u;
    if row < remembered {
        return state[row * p.c + ch];
    }
    return x[(row - remembered) * p.x_stride + p.x_offset + ch];
}

// Rows per invocation of `conv`: its taps and bias are loaded once for all of them.
const CONV_ROWS: u32 = 16u;

// K for `conv`, fixed when its pipeline is built so that the taps and the window stay in registers (kernels::conv1d
// passes p.k; the other entry points read p.k).
override TAPS: u32 = 4u;
// The most taps `conv` holds (MAX_TAPS in conv1d.rs).
const MAX_TAPS: u32 = 16u;

@compute @workgroup_size(WG)
fn conv(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let groups_per_block = (p.c + WG - 1u) / WG;
    let g = linear_workgroup(workgroup_id, num_workgroups);
    let ch = (g % groups_per_block) * WG + lane;
    let t_begin = (g / groups_per_block) * CONV_ROWS;
    if ch >= p.c {
        return;
    }
    var taps: array<f32, MAX_TAPS>;
    // The window rows t .. t + K of the row t at hand: its first K-1 loaded for the block's first row, then each
    // row loads one input, its last (x's row t), and moves the others down: a load an output, where reading every
    // tap's input and weight took 2K-1 (lavapipe, the default model's 256-token chunk: conv 9.6-10.5 -> 2.9-3.0 ms).
    var win: array<f32, MAX_TAPS>;
    for (var j = 0u; j < TAPS; j++) {
        taps[j] = weight[ch * TAPS + j];
    }
    for (var j = 0u; j + 1u < TAPS; j++) {
        win[j] = window(t_begin + j, ch);
    }
    let b = bias[ch];
    for (var t = t_begin; t < min(t_begin + CONV_ROWS, p.t); t++) {
        win[TAPS - 1u] = x[t * p.x_stride + p.x_offset + ch]; // window row t + K-1
        var acc = 0.0;
        for (var j = 0u; j < TAPS; j++) {
            acc += taps[j] * win[j];
        }
        out[t * p.c + ch] = silu(acc + b);
        for (var j = 0u; j + 1u < TAPS; j++) {
            win[j] = win[j + 1u];
        }
    }
}

@compute @workgroup_size(WG)
fn conv_state(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let ch = linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
    if ch >= p.c {
        return;
    }
    // In place: row j takes window row T + j > j, which this loop has not overwritten yet (T >= 1).
    for (var j = 0u; j + 1u < p.k; j++) {
        state[j * p.c + ch] = window(p.t + j, ch);
    }
}

@compute @workgroup_size(WG)
fn conv_batch(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + lane; // r * C + ch
    if e >= p.t * p.c {
        return;
    }
    let r = e / p.c;
    let ch = e % p.c;
    let s0 = r * p.state_stride + ch; // state_r[j, ch] at s0 + j * C
    let x_r = x[r * p.x_stride + p.x_offset + ch];
    // In the order `conv` sums, so a batch row equals the same token decoded alone.
    var acc = 0.0;
    for (var j = 0u; j < p.k; j++) {
        var win = x_r; // window_r[j]: state_r[j] for j < K-1, then x_r
        if j + 1u < p.k {
            win = state[s0 + j * p.c];
        }
        acc += weight[ch * p.k + j] * win;
    }
    out[r * p.c + ch] = silu(acc + bias[ch]);
    // state_r = window_r[1 .. K], in place: row j takes row j + 1, read before it is overwritten.
    for (var j = 0u; j + 1u < p.k; j++) {
        var next = x_r;
        if j + 2u < p.k {
            next = state[s0 + (j + 1u) * p.c];
        }
        state[s0 + j * p.c] = next;
    }
}
