//! Mamba's causal depthwise conv1d followed by SiLU, with a rolling state so prefill can come in pieces.
//!
//! transformers: `self.act(self.conv1d(hidden_states)[..., :seq_len])` with padding K-1 on the left (the
//! prefill), or `sum(conv_state * conv1d.weight) + bias` over a rolled state (decode). Both are this function.

use super::ops::silu;

/// `out[t, c] = silu(bias[c] + sum_j weight[c, j] * input[t - (K-1) + j, c])`, where input rows before the first
/// of `x` come from `state` (the K-1 previous pre-conv inputs, oldest first; zeros at the start of a sequence).
///
/// x: [T, C], state: [K-1, C] (updated to the last K-1 rows of state ++ x), weight: [C, K] (HF's [C, 1, K]),
/// bias: `[C]` -> `[T, C]`.
pub fn causal_conv1d_silu(
    x: &[f32],
    state: &mut [f32],
    weight: &[f32],
    bias: &[f32],
    t: usize,
    c: usize,
    k: usize,
) -> Vec<f32> {
    assert!(k >= 1, "conv1d: width must be at least 1");
    assert_eq!(x.len(), t * c, "conv1d: x is not [t, c]");
    assert_eq!(state.len(), (k - 1) * c, "conv1d: state is not [k-1, c]");
    assert_eq!(weight.len(), c * k, "conv1d: weight is not [c, k]");
    assert_eq!(bias.len(), c, "conv1d: bias is not [c]");

    // The input seen by the convolution: the K-1 remembered rows, then the new ones.
    let mut window = Vec::with_capacity((k - 1 + t) * c); // [K-1+T, C]
    window.extend_from_slice(state);
    window.extend_from_slice(x);

    let mut out = vec![0.0f32; t * c]; // [T, C]
    for (ti, out_row) in out.chunks_exact_mut(c).enumerate() {
        for (ch, y) in out_row.iter_mut().enumerate() {
            let taps = &weight[ch * k..(ch + 1) * k];
            let conv: f32 = taps.iter().enumerate().map(|(j, w)| w * window[(ti + j) * c + ch]).sum();
            *y = silu(conv + bias[ch]);
        }
    }
    state.copy_from_slice(&window[t * c..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| ((i * 7 + 3) % 11) as f32 * scale - 0.4).collect()
    }

    #[test]
    fn pieces_equal_whole() {
        let (t, c, k) = (9, 5, 4);
        let (x, w, b) = (seq(t * c, 0.1), seq(c * k, 0.07), seq(c, 0.05));
        let mut whole_state = vec![0.0; (k - 1) * c];
        let whole = causal_conv1d_silu(&x, &mut whole_state, &w, &b, t, c, k);
        let mut state = vec![0.0; (k - 1) * c];
        let mut pieces = Vec::new();
        for (start, len) in [(0, 2), (2, 1), (3, 6)] {
            pieces.extend(causal_conv1d_silu(&x[start * c..(start + len) * c], &mut state, &w, &b, len, c, k));
        }
        assert_eq!(whole, pieces);
        assert_eq!(whole_state, state);
    }

    #[test]
    fn first_row_sees_zero_padding() {
        // One channel, K = 3: out[0] = silu(w[2] * x[0] + b).
        let mut state = vec![0.0; 2];
        let y = causal_conv1d_silu(&[2.0], &mut state, &[5.0, 7.0, 0.5], &[0.25], 1, 1, 3);
        assert_eq!(y, vec![silu(0.5 * 2.0 + 0.25)]);
        assert_eq!(state, vec![0.0, 2.0]);
    }
}
