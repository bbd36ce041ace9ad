// moe_words.wgsl: the tiled prefill expert shaders' bindings of x and the weights (moe.wgsl, moe_coop.wgsl),
// placed after moe_common.wgsl: a value or a word per element (moe_matvec.wgsl and moe_cpu.wgsl bind them as
// vec4; matmul_words.wgsl says why the tiled kernels do not).

@group(0) @binding(1) var<storage, read> x: array<f32>; // x, act or y_slots, as moe.wgsl's header says
@group(0) @binding(2) var<storage, read> w: array<u32>; // gate or down weights of the stack
@group(0) @binding(3) var<storage, read> w_up: array<u32>; // up weights of the stack
