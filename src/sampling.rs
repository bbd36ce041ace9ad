//! Choosing the next token from logits: greedy, or sampled with repetition penalty, temperature, top-k and
//! top-p, applied in that order (as transformers' logits processors do), from a seeded generator.

use crate::{Error, Result};

/// How to choose each next token. The default is greedy.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingOptions {
    /// 0 picks the most likely token (greedy); higher values flatten the distribution.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: no limit).
    pub top_p: f32,
    /// Divide positive (multiply negative) logits of tokens already seen by this (1: off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Input(what.to_string()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(&format!("temperature {} must be a finite number >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(&format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(&format!("repetition_penalty {} must be a finite number > 0", self.repetition_penalty));
        }
        Ok(())
    }

    /// Whether the choice is the argmax of the raw logits, which the GPU computes without a logits readback.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 && self.repetition_penalty == 1.0
    }
}

/// A sampler: the options and the generator's state.
pub struct Sampler {
    options: SamplingOptions,
    rng: u64,
}

impl Sampler {
    pub fn new(options: SamplingOptions) -> Result<Self> {
        options.validate()?;
        let rng = options.seed ^ 0x853c_49e6_748f_ea9b;
        Ok(Sampler { options, rng })
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// The next token from `logits` (`[vocab]`), given the tokens seen so far (for the repetition penalty).
    pub fn sample(&mut self, logits: &mut [f32], seen: &[u32]) -> u32 {
        let o = &self.options;
        if o.repetition_penalty != 1.0 {
            for &id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / o.repetition_penalty } else { *l * o.repetition_penalty };
                }
            }
        }
        if o.temperature == 0.0 {
            return crate::reference::argmax(logits, logits.len())[0];
        }
        // Candidates by descending logit; top-k cuts the list, top-p cuts its probability mass.
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if o.top_k > 0 {
            order.truncate(o.top_k);
        }
        let max = logits[order[0] as usize];
        let weights: Vec<f64> = order.iter().map(|&i| (((logits[i as usize] - max) / o.temperature) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut keep = weights.len();
        if o.top_p < 1.0 {
            let mut mass = 0.0;
            for (n, w) in weights.iter().enumerate() {
                mass += w / total;
                if mass >= o.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
        }
        let total: f64 = weights[..keep].iter().sum();
        let mut target = self.uniform() * total;
        for (n, w) in weights[..keep].iter().enumerate() {
            target -= w;
            if target < 0.0 {
                return order[n];
            }
        }
        order[keep - 1]
    }

    /// Uniform in [0, 1), from SplitMix64.
    fn uniform(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampler {
        Sampler::new(SamplingOptions { temperature, top_k, top_p, seed, ..Default::default() }).unwrap()
    }

    #[test]
    fn greedy_takes_the_argmax() {
        assert_eq!(sampler(0.0, 0, 1.0, 1).sample(&mut [0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = sampler(5.0, 1, 1.0, 7);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0], &[]), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // p = softmax([10, 9, 0, 0]) ~ [0.73, 0.27, 0.00005, 0.00005]: top_p 0.9 keeps tokens 0 and 1.
        let mut s = sampler(1.0, 0, 0.9, 3);
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[s.sample(&mut [10.0, 9.0, 0.0, 0.0], &[]) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0);
        assert!(seen[0] > seen[1] && seen[1] > 50, "{seen:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let draw = |seed| {
            let mut s = sampler(1.0, 0, 1.0, seed);
            (0..20).map(|_| s.sample(&mut [1.0, 1.1, 0.9, 1.2, 0.8], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn repetition_penalty_pushes_seen_tokens_down() {
        let mut s = Sampler::new(SamplingOptions { repetition_penalty: 2.0, ..Default::default() }).unwrap();
        assert_eq!(s.sample(&mut [3.0, 2.0], &[0]), 1);
    }

    #[test]
    fn bad_options_are_errors() {
        for o in [
            SamplingOptions { temperature: -1.0, ..Default::default() },
            SamplingOptions { top_p: 0.0, ..Default::default() },
            SamplingOptions { repetition_penalty: 0.0, ..Default::default() },
        ] {
            assert!(Sampler::new(o).is_err());
        }
    }
}
