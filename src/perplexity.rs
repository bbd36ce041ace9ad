//! Perplexity over a token sequence: non-overlapping windows of W tokens, each fed as BOS followed by the
//! window's first W - 1 tokens so that all W window tokens are scored (the method of
//! models/jamba-tiny-quotes/expected.json, "validation"). The log-softmax is computed on the host, in f64, from
//! [`Session::feed_all_logits`](crate::Session::feed_all_logits).

use crate::model::{Model, SessionOptions};
use crate::{Error, Result};

/// The result of [`perplexity`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    pub tokens_scored: usize,
    pub windows: usize,
    /// Mean negative log-likelihood per token, in nats.
    pub mean_nll: f64,
    /// exp(mean_nll).
    pub perplexity: f64,
}

/// The perplexity of `model` on `tokens` in windows of `window` tokens (the last one may be shorter), with
/// `bos` starting each window. `on_window(done, total)` is called after each window (progress bars).
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    bos: u32,
    window: usize,
    mut on_window: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    if window == 0 || tokens.is_empty() {
        return Err(Error::Input(format!(
            "perplexity needs tokens and a window of at least 1 (window {window}, {} tokens)",
            tokens.len()
        )));
    }
    let vocab = model.config().vocab_size;
    let mut session = model.session(SessionOptions { max_len: window, chunk: window })?;
    let windows = tokens.len().div_ceil(window);
    let mut nll = 0.0f64;
    for (i, targets) in tokens.chunks(window).enumerate() {
        let input: Vec<u32> = std::iter::once(bos).chain(targets[..targets.len() - 1].iter().copied()).collect();
        session.reset();
        let logits = session.feed_all_logits(&input)?;
        for (row, &target) in logits.chunks_exact(vocab).zip(targets) {
            nll += negative_log_likelihood(row, target as usize);
        }
        on_window(i + 1, windows);
    }
    let mean_nll = nll / tokens.len() as f64;
    Ok(Perplexity { tokens_scored: tokens.len(), windows, mean_nll, perplexity: mean_nll.exp() })
}

/// `-log softmax(logits)[target]`, in f64.
pub fn negative_log_likelihood(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - logits[target] as f64
}
