//! Choosing a model's decode matvec kernels by timing them on the adapter at hand.
//!
//! How many rows of W a decode matvec's row group computes ([`Tuning::matvec_rows`]) and whether it reads
//! quantized rows a word at a time ([`Tuning::quant_words`]) were measured on lavapipe, which sets the CPU
//! adapters' defaults, but a GPU's best choice depends on its memory system and driver, and may differ between
//! dense and expert shapes. So [`Model::tune_decode`] builds the model's own decode step with each choice, times
//! it (GPU timestamps where the adapter has them, else submission to completion), and keeps the fastest for the
//! model's decode plans. Prefill chunks keep the context's tuning: their matmuls take the tiled path.

use std::time::{Duration, Instant};

use super::jamba::{Head, Rows};
use super::{Model, Session, SessionOptions};
use crate::gpu::{Context, Plan, Tuning};
use crate::{Error, Result};

/// A faster candidate replaces the adapter's default only when its step is shorter by this fraction: near ties
/// keep the default, so that timing noise does not change the kernels (and the last bits of the logits) from
/// one load to the next.
pub const SWITCH_MARGIN: f64 = 0.05;

/// The context the timed decode steps attend over: a few splits of the attention cache, as a real step has.
const TUNING_CONTEXT: usize = 512;

/// One timed choice.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct DecodeCandidate {
    pub matvec_rows: u32,
    pub quant_words: bool,
    /// The decode step's time with this choice: the shorter of two measurements of three steps each.
    pub step_ms: f64,
}

/// What [`Model::tune_decode`] measured, and what it chose.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DecodeTuning {
    pub candidates: Vec<DecodeCandidate>,
    /// The adapter's default among the candidates ([`Context::tuning`]).
    pub default: usize,
    /// The candidate the model's decode steps now use: the fastest if it beat the default by
    /// [`SWITCH_MARGIN`], else the default.
    pub chosen: usize,
    /// Whether the steps were timed by GPU timestamps (else by the host clock, submission to completion).
    pub timestamps: bool,
}

impl DecodeTuning {
    pub fn chosen(&self) -> DecodeCandidate {
        self.candidates[self.chosen]
    }

    /// The candidates as `rows 4, words: 12.345 ms` (how quantized rows are read, when that was timed), the
    /// chosen one and the default marked.
    pub fn summary(&self) -> String {
        let both_reads = self.candidates.iter().any(|c| c.quant_words != self.candidates[0].quant_words);
        let line = |(i, c): (usize, &DecodeCandidate)| {
            let read = match (both_reads, c.quant_words) {
                (false, _) => "",
                (true, true) => ", words",
                (true, false) => ", codes",
            };
            let mark = match (i == self.chosen, i == self.default) {
                (true, true) => " (default, chosen)",
                (true, false) => " (chosen)",
                (false, true) => " (default)",
                (false, false) => "",
            };
            format!("rows {}{read}: {:.3} ms{mark}", c.matvec_rows, c.step_ms)
        };
        self.candidates.iter().enumerate().map(line).collect::<Vec<_>>().join("; ")
    }
}

/// The index of the candidate to use: the fastest, unless it beats `default` by less than [`SWITCH_MARGIN`].
pub fn choose(step_ms: &[f64], default: usize) -> usize {
    let fastest = (0..step_ms.len()).min_by(|&a, &b| step_ms[a].total_cmp(&step_ms[b])).unwrap_or(default);
    if step_ms[fastest] < step_ms[default] * (1.0 - SWITCH_MARGIN) {
        fastest
    } else {
        default
    }
}

impl Model {
    /// Times the model's decode step with every matvec choice the context leaves open ([`Context::decode_choices`];
    /// the ways of reading quantized rows only when some weights are quantized) and makes the fastest the
    /// model's decode tuning (see [`choose`]). Each choice's step runs once to build its pipelines and warm the
    /// adapter, then is timed twice over three steps (once in each of two rounds over the choices), on a session
    /// of its own (token 0 at position 0, its state advanced and thrown away). Not for models that stream their
    /// experts, whose steps wait on the host.
    pub fn tune_decode(&mut self) -> Result<DecodeTuning> {
        if self.streaming.is_some() {
            let message = "tuning the decode step of a model that streams its experts is not supported";
            return Err(Error::Input(message.into()));
        }
        let ctx = &*self.ctx;
        let base = ctx.tuning();
        let (rows, mut words) = ctx.decode_choices();
        if !self.weights.any_quantized() {
            words = vec![base.quant_words];
        }
        let tunings: Vec<Tuning> = rows
            .iter()
            .flat_map(|&matvec_rows| words.iter().map(move |&quant_words| Tuning { matvec_rows, quant_words, ..base }))
            .collect();
        let default = tunings.iter().position(|t| *t == base).unwrap_or(0);
        let max_len = TUNING_CONTEXT.min(self.cfg.max_position_embeddings);
        let session = Session::new(self, SessionOptions { max_len, chunk: 1 })?;
        let plans = tunings
            .iter()
            .map(|tuning| session.resident_graph(Rows::Step, Head::Last, *tuning)?.build())
            .collect::<Result<Vec<_>>>()?;
        for plan in &plans {
            plan.run(ctx)?;
        }
        ctx.wait("the first decode step of each tuning candidate")?;
        // Two rounds, the second in reverse order, each candidate's shorter time kept: a drift of the adapter's
        // clocks over the rounds then favours no candidate by its place.
        let mut best = vec![Duration::MAX; plans.len()];
        let order: Vec<usize> = (0..plans.len()).chain((0..plans.len()).rev()).collect();
        for i in order {
            best[i] = best[i].min(time_step(ctx, &plans[i])?);
        }
        drop(plans);
        drop(session);
        let candidates: Vec<DecodeCandidate> = tunings
            .iter()
            .zip(&best)
            .map(|(t, step)| DecodeCandidate {
                matvec_rows: t.matvec_rows,
                quant_words: t.quant_words,
                step_ms: step.as_secs_f64() * 1e3,
            })
            .collect();
        let step_ms: Vec<f64> = candidates.iter().map(|c| c.step_ms).collect();
        let chosen = choose(&step_ms, default);
        let report = DecodeTuning { candidates, default, chosen, timestamps: ctx.features().timestamps };
        self.decode_tuning = Some(tunings[chosen]);
        self.tuned = Some(report.clone());
        Ok(report)
    }
}

/// The time of one step of `plan`, over three run back to back.
fn time_step(ctx: &Context, plan: &Plan) -> Result<Duration> {
    const STEPS: u32 = 3;
    if ctx.features().timestamps {
        return plan.time_repeated(ctx, STEPS as usize);
    }
    let start = Instant::now();
    for _ in 0..STEPS {
        plan.run(ctx)?;
    }
    ctx.wait("timing a tuning candidate")?;
    Ok(start.elapsed() / STEPS)
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn a_candidate_replaces_the_default_only_when_clearly_faster() {
        assert_eq!(choose(&[10.0, 9.6, 9.8], 0), 0, "4% faster is a tie");
        assert_eq!(choose(&[10.0, 9.4, 9.0], 0), 2, "the fastest, 10% faster");
        assert_eq!(choose(&[9.0, 10.0, 8.0], 1), 2);
        assert_eq!(choose(&[12.0, 10.0], 1), 1, "the default is the fastest");
        assert_eq!(choose(&[10.0], 0), 0);
    }
}
