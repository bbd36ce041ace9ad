// matmul_words.wgsl: the prefill matmul shaders' bindings of x and W (matmul.wgsl, matmul_cpu.wgsl,
// matmul_coop.wgsl), placed after matmul_common.wgsl: x a value and W a word per element, and how a weight is
// read. A prefill kernel reads each weight once per tile, so a scalar binding costs it nothing; lavapipe takes
// 10-35% longer over its register blocks when each value is picked out of a vec4 (matvec.wgsl's bindings).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;

// W[row, col] (row counted from w_row0), decoded from W_DTYPE.
fn w_at(row: u32, col: u32) -> f32 {
    let r = weight_ref(p.w_row0 + row, col, p.k);
    return weight_value(r, w[r.word], w[r.scale_word]);
}
