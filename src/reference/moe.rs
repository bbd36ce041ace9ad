//! The mixture-of-experts router: softmax over all experts, then top-k, weights not renormalised.
//!
//! transformers: `JambaSparseMoeBlock.route_tokens_to_experts`: `softmax(router_logits, dtype=float)`, then
//! `torch.topk(routing_weights, top_k)`; Jamba does not renormalise the chosen weights.

use super::ops::softmax;

/// logits: [T, E] -> (expert ids [T, k], weights [T, k]), per token largest probability first, ties to the lower
/// expert index. The weights are the softmax probabilities over all E experts (they sum to less than 1).
pub fn route(logits: &[f32], e: usize, top_k: usize) -> (Vec<u32>, Vec<f32>) {
    assert!(top_k <= e, "route: top_k is more than the number of experts");
    assert_eq!(logits.len() % e.max(1), 0, "route: logits are not [t, e]");
    let t = logits.len().checked_div(e).unwrap_or(0);
    let mut ids = Vec::with_capacity(t * top_k); // [T, k]
    let mut weights = Vec::with_capacity(t * top_k); // [T, k]
    for row in logits.chunks_exact(e) {
        let p = softmax(row); // [E]
        let mut order: Vec<usize> = (0..e).collect();
        // A stable sort keeps equal probabilities in index order.
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        for &expert in &order[..top_k] {
            ids.push(expert as u32);
            weights.push(p[expert]);
        }
    }
    (ids, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_largest_first_ties_to_lower_index() {
        let (ids, w) = route(&[0.0, 2.0, 1.0, 2.0], 4, 2);
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(w[0], w[1]);
        assert!(w[0] + w[1] < 1.0, "weights are not renormalised");
    }
}
