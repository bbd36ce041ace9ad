// rms_norm.wgsl: y = w * x / sqrt(mean(x^2) + eps), per row, in f32.
// Reference: reference::rms_norm. Used for the layer norms and for Mamba's dt/B/C norms, which normalise
// column slices of x_proj's output; hence the strides and offsets.
// Layout: x[row * x_stride + x_offset + c], y[row * y_stride + y_offset + c], w[c], c < cols.
// Grid: ceil(rows / (WG / ROW_THREADS)) workgroups; ROW_THREADS invocations per row.
//
// x and w are bound as vec4. With QUADS (one invocation per row, cols and x's stride and offset multiples of 4: CPU
// adapters, kernels::rms_norm decides) each invocation reads them a vec4 at a time, its squares summed in the same
// order: lavapipe pays per load, and per invocation even for w's one address (the default model's 256-token chunk:
// rms_norm 5.1-6.2 -> 2.7-3.0 ms). Else an element at a time.

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
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
// y stays scalar: a store to one element of a vec4 may write the whole vec4 on some backends, racing the
// invocations that write its other elements.
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// 1: rows read a vec4 at a time (see above).
override QUADS: u32 = 0u;

fn x_at(i: u32) -> f32 {
    return x[i / 4u][i % 4u];
}

fn w_at(i: u32) -> f32 {
    return w[i / 4u][i % 4u];
}

// One row by quads: x0 a multiple of 4.
fn rms_norm_quads(x0: u32, y0: u32) {
    let quads = p.cols / 4u;
    var sum_sq = 0.0;
    for (var c = 0u; c < quads; c++) {
        let v = x[x0 / 4u + c];
        sum_sq += v.x * v.x;
        sum_sq += v.y * v.y;
        sum_sq += v.z * v.z;
        sum_sq += v.w * v.w;
    }
    let scale = 1.0 / sqrt(sum_sq / f32(p.cols) + p.eps);
    for (var c = 0u; c < quads; c++) {
        let v = w[c] * (x[x0 / 4u + c] * scale);
        y[y0 + 4u * c] = v.x;
        y[y0 + 4u * c + 1u] = v.y;
        y[y0 + 4u * c + 2u] = v.z;
        y[y0 + 4u * c + 3u] = v.w;
    }
}

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
    if QUADS != 0u {
        if live {
            rms_norm_quads(x0, row * p.y_stride + p.y_offset);
        }
        return;
    }

    var sum_sq = 0.0;
    if live {
        for (var c = first; c < p.cols; c += ROW_THREADS) {
            let v = x_at(x0 + c);
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
        y[y0 + c] = w_at(c) * (x_at(x0 + c) * scale);
    }
}
