// moe_common.wgsl: what the expert shaders (moe_matvec.wgsl for decode; moe.wgsl, moe_cpu.wgsl and moe_coop.wgsl
// for prefill) share, placed after the prelude in each: the parameters and the bindings every expert kernel takes
// (moe.wgsl's header has the layouts).

struct MoeParams {
    t: u32,
    top_k: u32,
    n: u32, // outputs per row: I for the SwiGLU kernels, H for down and combine
    k: u32, // inputs per row: H for the SwiGLU kernels, I for down
    first: u32,
    count: u32,
    n_experts: u32,
    eps: f32, // swiglu_norm_matvec only: rms_norm's epsilon
}

@group(0) @binding(0) var<uniform> p: MoeParams;
// Bindings 1-3 (x, and the gate / down and up weights of the stack): moe_matvec.wgsl and moe_cpu.wgsl bind them
// as vec4, the tiled prefill shaders as scalars (moe_words.wgsl).
@group(0) @binding(4) var<storage, read> ids: array<u32>;
@group(0) @binding(5) var<storage, read> groups: array<u32>;
@group(0) @binding(6) var<storage, read> weights: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>; // act, y_slots or out
