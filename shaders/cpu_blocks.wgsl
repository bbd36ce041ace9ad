// cpu_blocks.wgsl: what the CPU prefill kernels (matmul_cpu.wgsl, moe_cpu.wgsl) share, placed before them: a
// lane's block of SG weights of a row, COLS blocks per invocation, decoded from whole words into registers.

// The word_weights() weights of v (the prelude's word_values of one word) into ws[at ..], in column order.
fn put_word(ws: ptr<function, array<f32, COLS * SG>>, at: u32, v: X8) {
    let per = word_weights();
    (*ws)[at] = v.a.x;
    if per >= 2u {
        (*ws)[at + 1u] = v.a.y;
    }
    if per >= 4u {
        (*ws)[at + 2u] = v.a.z;
        (*ws)[at + 3u] = v.a.w;
    }
    if per == 8u {
        (*ws)[at + 4u] = v.b.x;
        (*ws)[at + 5u] = v.b.y;
        (*ws)[at + 6u] = v.b.z;
        (*ws)[at + 7u] = v.b.w;
    }
}
