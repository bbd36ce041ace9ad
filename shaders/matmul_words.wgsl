// matmul_words.wgsl: the tiled prefill matmul shaders' bindings of x and W (matmul.wgsl, matmul_coop.wgsl),
// placed after matmul_common.wgsl: x a value and W a word per element, and how a weight is read. A tiled kernel
// reads each weight once per tile, a value at a time, so a scalar binding costs it nothing. (matvec.wgsl and
// matmul_cpu.wgsl bind them as vec4, to load 16 bytes at a time.)

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;

// W[row, col] (row counted from w_row0), decoded from W_DTYPE.
fn w_at(row: u32, col: u32) -> f32 {
    let r = weight_ref(p.w_row0 + row, col, p.k);
    return weight_value(r, w[r.word], w[r.scale_word]);
}
