// rms_norm.wgsl: y = w * x / sqrt(mean(x^2) + eps), per row, in f32.
// Reference: reference::rms_norm. Used for the layer norms and for Mamba's dt/B/C norms, which normalise
// column slices of x_proj's output; hence the strides and offsets.
// Layout: x[row * x_stride + x_offset + c], y[row * y_stride + y_offset + c], w[c], c < cols.
// Grid: ceil(rows / (WG / ROW_THREADS)) workgroups; ROW_THREADS invocations per row.

struct RmsNormParams {
    rows: u32,
    cols: u32,
    x_stride: u32,
    x_offset: u32,
    y_stride: u32,
    y_offset: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: RmsNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn rms_norm(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = linear_workgroup(workgroup_id, num_workgroups) * (WG / ROW_THREADS) + lane / ROW_THREADS;
    let first = lane % ROW_THREADS;
    let live = row < p.rows;
    let x0 = row * p.x_stride + p.x_offset;

    var sum_sq = 0.0;
    if live {
        for (var c = first; c < p.cols; c += ROW_THREADS) {
            let v = x[x0 + c];
            sum_sq += v * v;
        }
    }
    let total = row_sum(lane, sum_sq);
    if !live {
        return;
    }
    let scale = 1.0 / sqrt(total / f32(p.cols) + p.eps);
    let y0 = row * p.y_stride + p.y_offset;
    for (var c = first; c < p.cols; c += ROW_THREADS) {
        y[y0 + c] = w[c] * (x[x0 + c] * scale);
    }
}
