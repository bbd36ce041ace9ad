// matmul_common.wgsl: what the matmul shaders (matvec.wgsl for decode; matmul.wgsl, matmul_cpu.wgsl and
// matmul_coop.wgsl for prefill) share, placed after the prelude in each: the parameters, the binding of y and how
// an output is stored. x and W are bound by matvec.wgsl and matmul_cpu.wgsl as vec4, by the tiled kernels as
// scalars (matmul_words.wgsl).
// x: [t, k] f32 rows at x[r * x_stride + x_offset + c]; W: [n, k] row-major, packed as W_DTYPE, from row w_row0;
// y: [t, n] f32 at y[r * y_stride + y_offset + j]; with accumulate = 1, y += x W^T (the residual fused in).

struct MatmulParams {
    t: u32,
    n: u32,
    k: u32,
    w_row0: u32,
    x_stride: u32,
    x_offset: u32,
    y_stride: u32,
    y_offset: u32,
    accumulate: u32,
    // matvec_norm only: rms_norm's epsilon and where matvec_norm_out stores the normalised rows.
    eps: f32,
    normed_stride: u32,
    normed_offset: u32,
    // matvec_norm_conv only: the conv's channels (xs columns), taps, and the stride of a row's conv state.
    conv_channels: u32,
    conv_k: u32,
    state_stride: u32,
    // matvec_parts only: columns per part, and elements between consecutive parts of y.
    part_cols: u32,
    part_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// y[r, j] = value, or += value when accumulating.
fn store(r: u32, j: u32, value: f32) {
    let i = r * p.y_stride + p.y_offset + j;
    if p.accumulate != 0u {
        y[i] += value;
    } else {
        y[i] = value;
    }
}
