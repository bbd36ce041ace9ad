//! Causal grouped-query attention over a KV cache, without positional encoding (Jamba has none).
//!
//! transformers: `JambaAttention.forward` (eager): `softmax(q k^T / sqrt(head_dim) + causal_mask) v`.

use super::ops::{dot, softmax};

/// q: [T, n_heads * head_dim]; k, v: [kv_len, n_kv_heads * head_dim], the whole cache with the T new rows last.
/// Query i sits at position kv_len - T + i and attends to cache rows 0..=that position. Query head h reads kv head
/// h / (n_heads / n_kv_heads). Scores are scaled by 1 / sqrt(head_dim). -> [T, n_heads * head_dim].
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    kv_len: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    assert!(t <= kv_len, "attention: more queries than cache rows");
    assert!(n_kv_heads > 0 && n_heads % n_kv_heads == 0, "attention: kv heads do not divide heads");
    let (q_dim, kv_dim) = (n_heads * head_dim, n_kv_heads * head_dim);
    assert_eq!(q.len(), t * q_dim, "attention: q is not [t, n_heads * head_dim]");
    assert_eq!(k.len(), kv_len * kv_dim, "attention: k is not [kv_len, n_kv_heads * head_dim]");
    assert_eq!(v.len(), kv_len * kv_dim, "attention: v is not [kv_len, n_kv_heads * head_dim]");

    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0.0f32; t * q_dim]; // [T, n_heads * head_dim]
    for qi in 0..t {
        let position = kv_len - t + qi;
        for h in 0..n_heads {
            let kv_off = (h / group) * head_dim;
            let q_h = &q[qi * q_dim + h * head_dim..][..head_dim]; // [head_dim]
            let scores: Vec<f32> = (0..=position) // [position + 1]
                .map(|j| dot(q_h, &k[j * kv_dim + kv_off..][..head_dim]) * scale)
                .collect();
            let p = softmax(&scores);
            let o = &mut out[qi * q_dim + h * head_dim..][..head_dim]; // [head_dim]
            for (j, p_j) in p.iter().enumerate() {
                let v_j = &v[j * kv_dim + kv_off..][..head_dim];
                o.iter_mut().zip(v_j).for_each(|(o, v)| *o += p_j * v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_query_of_cache_equals_full() {
        let (t, n_heads, n_kv, hd) = (5, 4, 2, 3);
        let q: Vec<f32> = (0..t * n_heads * hd).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let k: Vec<f32> = (0..t * n_kv * hd).map(|i| (i % 5) as f32 * 0.2 - 0.4).collect();
        let v: Vec<f32> = (0..t * n_kv * hd).map(|i| (i % 3) as f32 * 0.3 - 0.2).collect();
        let full = attention(&q, &k, &v, t, t, n_heads, n_kv, hd);
        let q_last = &q[(t - 1) * n_heads * hd..];
        let last = attention(q_last, &k, &v, 1, t, n_heads, n_kv, hd);
        assert_eq!(&full[(t - 1) * n_heads * hd..], &last[..]);
        // The first query sees only row 0: its output is v's row 0 for its kv head.
        assert_eq!(&full[..hd], &v[..hd]);
    }
}
