//! Reference versions of the basic kernels: matmul, RMSNorm, activations, embedding gather, argmax.
//! Matrices are row-major slices; shapes are given explicitly and documented as `[rows, cols]`.

/// y = x W^T. x: [t, k], w: [n, k] (a PyTorch `Linear` weight) -> y: [t, n].
pub fn matmul(x: &[f32], w: &[f32], t: usize, n: usize, k: usize) -> Vec<f32> {
    assert_eq!(x.len(), t * k, "matmul: x is not [t, k]");
    assert_eq!(w.len(), n * k, "matmul: w is not [n, k]");
    let mut y = vec![0.0f32; t * n];
    for (x_row, y_row) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
        for (w_row, y) in w.chunks_exact(k).zip(y_row.iter_mut()) {
            *y = dot(x_row, w_row);
        }
    }
    y
}

/// The dot product, accumulated in f32 in index order.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// rms_norm(x, w) = w * x / sqrt(mean(x^2) + eps), row by row. x: [rows, w.len()].
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(w.len()) {
        let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let scale = 1.0 / (mean_sq + eps).sqrt();
        y.extend(row.iter().zip(w).map(|(v, w)| w * (v * scale)));
    }
    y
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// softplus(x) = ln(1 + e^x), with PyTorch's threshold: x itself above 20.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The SwiGLU gate: silu(a) * b, elementwise.
pub fn silu_mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "silu_mul: operands differ in length");
    a.iter().zip(b).map(|(&a, &b)| silu(a) * b).collect()
}

/// x += y, elementwise (the residual connection).
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "add_assign: operands differ in length");
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

/// Rows `ids` of a table [vocab, dim] -> [ids.len(), dim].
pub fn embed(table: &[f32], dim: usize, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| &table[id as usize * dim..(id as usize + 1) * dim])
        .copied()
        .collect()
}

/// Index of the largest value of each row of x: [rows, cols]; ties go to the lowest index (as torch.argmax).
pub fn argmax(x: &[f32], cols: usize) -> Vec<u32> {
    x.chunks_exact(cols)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// softmax of one row, in f32, max-subtracted.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}
