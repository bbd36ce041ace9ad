//! Mamba's selective scan (the SSM recurrence), one token at a time, with the state carried across calls.
//!
//! transformers: `JambaMambaMixer.slow_forward`, the loop over `discrete_A`, `deltaB_u` and `C`.

use super::ops::{silu, softplus};

/// For each token t, channel c and state index n (JAMBA.md, "Mamba layer"):
/// ```text
/// delta    = softplus(dt[t, c] + dt_bias[c])
/// A[c, n]  = -exp(a_log[c, n])
/// h[c, n]  = exp(delta * A[c, n]) * h[c, n] + delta * B[t, n] * x[t, c]
/// y[t, c]  = sum_n h[c, n] * C[t, n] + D[c] * x[t, c]
/// out[t, c] = y[t, c] * silu(z[t, c])
/// ```
/// x: `[T, I]` (post-conv), dt: `[T, I]` (dt_proj output without its bias), dt_bias: `[I]`, a_log: `[I, N]`,
/// b, c: `[T, N]` (after their RMSNorms), d: `[I]`, z: `[T, I]` (the gate), state h: `[I, N]` (updated) -> `[T, I]`.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan(
    x: &[f32],
    dt: &[f32],
    dt_bias: &[f32],
    a_log: &[f32],
    b: &[f32],
    c: &[f32],
    d: &[f32],
    z: &[f32],
    state: &mut [f32],
    t: usize,
    i: usize,
    n: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), t * i, "selective_scan: x is not [t, i]");
    assert_eq!(dt.len(), t * i, "selective_scan: dt is not [t, i]");
    assert_eq!(z.len(), t * i, "selective_scan: z is not [t, i]");
    assert_eq!(dt_bias.len(), i, "selective_scan: dt_bias is not [i]");
    assert_eq!(d.len(), i, "selective_scan: d is not [i]");
    assert_eq!(a_log.len(), i * n, "selective_scan: a_log is not [i, n]");
    assert_eq!(state.len(), i * n, "selective_scan: state is not [i, n]");
    assert_eq!(b.len(), t * n, "selective_scan: b is not [t, n]");
    assert_eq!(c.len(), t * n, "selective_scan: c is not [t, n]");

    let a: Vec<f32> = a_log.iter().map(|v| -v.exp()).collect(); // [I, N]
    let mut out = vec![0.0f32; t * i]; // [T, I]
    for ti in 0..t {
        let b_t = &b[ti * n..(ti + 1) * n]; // [N]
        let c_t = &c[ti * n..(ti + 1) * n]; // [N]
        for ch in 0..i {
            let x_tc = x[ti * i + ch];
            let delta = softplus(dt[ti * i + ch] + dt_bias[ch]);
            let h = &mut state[ch * n..(ch + 1) * n]; // [N]
            let a_c = &a[ch * n..(ch + 1) * n]; // [N]
            let mut y = 0.0f32;
            for s in 0..n {
                h[s] = (delta * a_c[s]).exp() * h[s] + delta * b_t[s] * x_tc;
                y += h[s] * c_t[s];
            }
            y += d[ch] * x_tc;
            out[ti * i + ch] = y * silu(z[ti * i + ch]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| ((i * 5 + 1) % 13) as f32 * scale - 0.3).collect()
    }

    #[test]
    fn pieces_equal_whole() {
        let (t, i, n) = (6, 3, 4);
        let (x, dt, z) = (seq(t * i, 0.1), seq(t * i, 0.2), seq(t * i, 0.15));
        let (b, c) = (seq(t * n, 0.11), seq(t * n, 0.09));
        let (dt_bias, d, a_log) = (seq(i, 0.1), seq(i, 0.3), seq(i * n, 0.05));
        let mut whole_state = vec![0.0; i * n];
        let whole = selective_scan(&x, &dt, &dt_bias, &a_log, &b, &c, &d, &z, &mut whole_state, t, i, n);
        let mut state = vec![0.0; i * n];
        let mut pieces = Vec::new();
        for (s, len) in [(0, 4), (4, 1), (5, 1)] {
            let (ti, tn) = (s * i..(s + len) * i, s * n..(s + len) * n);
            pieces.extend(selective_scan(
                &x[ti.clone()],
                &dt[ti.clone()],
                &dt_bias,
                &a_log,
                &b[tn.clone()],
                &c[tn],
                &d,
                &z[ti],
                &mut state,
                len,
                i,
                n,
            ));
        }
        assert_eq!(whole, pieces);
        assert_eq!(whole_state, state);
    }
}
