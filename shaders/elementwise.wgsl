// elementwise.wgsl: the pointwise kernels, each updating `out` in place from `a`.
// Reference: reference::{silu_mul, add_assign, softplus}.
// Both tensors are flat f32 arrays of p.n elements. Grid: ceil(n / WG) workgroups, linear.

struct ElementwiseParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn element(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, lane: u32) -> u32 {
    return linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
}

// out = silu(out) * a: the SwiGLU gate, with the gate projection in `out` and the up projection in `a`.
@compute @workgroup_size(WG)
fn silu_mul(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element(workgroup_id, num_workgroups, lane);
    if i < p.n {
        out[i] = silu(out[i]) * a[i];
    }
}

// out += a: the residual connection.
@compute @workgroup_size(WG)
fn add_assign(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element(workgroup_id, num_workgroups, lane);
    if i < p.n {
        out[i] += a[i];
    }
}

// out = softplus(a).
@compute @workgroup_size(WG)
fn softplus_map(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = element(workgroup_id, num_workgroups, lane);
    if i < p.n {
        out[i] = softplus(a[i]);
    }
}
