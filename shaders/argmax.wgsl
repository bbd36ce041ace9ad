// argmax.wgsl: the index of the largest value of each row (greedy sampling); ties go to the lowest index.
// Reference: reference::argmax. x: [rows, cols] f32 at x[r * x_stride + x_offset + c]; out: [rows] u32.
// Grid: rows workgroups, linear; the WG invocations of a workgroup stride over the row, then reduce.

struct ArgmaxParams {
    rows: u32,
    cols: u32,
    x_stride: u32,
    x_offset: u32,
}

@group(0) @binding(0) var<uniform> p: ArgmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

// Values of the row an invocation loads per round, all before it compares any: one workgroup per row is all the
// parallelism a decode step's argmax has, so memory latency is hidden only by each invocation's loads in flight
// (one at a time, an H200 took 0.38 ms per step over a 65,536-token vocabulary). Compared in the same order.
const ROUND: u32 = 16u;

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

// Whether (v, i) beats (w, j): larger value, or equal value and lower index. NaN never wins.
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(WG)
fn argmax(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = linear_workgroup(workgroup_id, num_workgroups);
    var v = bitcast<f32>(0xff800000u); // -inf
    var i = 0xffffffffu;
    if row < p.rows {
        let x0 = row * p.x_stride + p.x_offset;
        for (var c0 = lane; c0 < p.cols; c0 += WG * ROUND) {
            var xs: array<f32, ROUND>; // past the row: the last column, never compared
            for (var u = 0u; u < ROUND; u++) {
                xs[u] = x[x0 + min(c0 + u * WG, p.cols - 1u)];
            }
            for (var u = 0u; u < ROUND; u++) {
                let c = c0 + u * WG;
                if c < p.cols && beats(xs[u], c, v, i) {
                    v = xs[u];
                    i = c;
                }
            }
        }
    }
    best_value[lane] = v;
    best_index[lane] = i;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride && beats(best_value[lane + stride], best_index[lane + stride], best_value[lane], best_index[lane]) {
            best_value[lane] = best_value[lane + stride];
            best_index[lane] = best_index[lane + stride];
        }
        workgroupBarrier();
    }
    if lane == 0u && row < p.rows {
        out[row] = min(best_index[0], p.cols - 1u);
    }
}
