//! Choosing a model's kernels by timing them on the adapter at hand.
//!
//! The kernel choices of a [`Tuning`] were measured on lavapipe, which sets the CPU adapters' defaults, but a
//! GPU's best choices depend on its memory system, its caches and its driver. So [`Model::tune`] builds the
//! model's own work with each choice the context leaves open, times it (GPU timestamps where the adapter has
//! them, else submission to completion), and keeps the fastest:
//! - the decode step, for the matvec choices: rows of W per row group ([`Tuning::matvec_rows`]) and, with
//!   how rows are read: by quads, by words, and with quantized weights by codes ([`Tuning::matvec_reads`]);
//! - a prefill chunk, for the tiled kernel ([`Tuning::prefill`]: 64 x 64 tiles, 128 x 128, or register blocks
//!   where subgroups are 8 wide).

use std::time::{Duration, Instant};

use super::jamba::{Head, Rows};
use super::{Model, Session, SessionOptions};
use crate::gpu::{Context, MatvecReads, Plan, Prefill, Tuning};
use crate::{Error, Result};

/// A faster candidate replaces the adapter's default only when its time is shorter by this fraction: near ties
/// keep the default, so that timing noise does not change the kernels (and the last bits of the logits) from
/// one load to the next.
pub const SWITCH_MARGIN: f64 = 0.05;

/// The smallest model [`Tune::Auto`](super::Tune::Auto) tunes: 1 GiB of weights, whose decode step is
/// bandwidth-bound on a GPU (a millisecond or more) and whose load takes seconds already. Tuning costs a few
/// dozen steps and prefill chunks, and a pipeline build per choice.
pub const AUTO_MIN_BYTES: u64 = 1 << 30;

/// The context the timed decode steps attend over: a few splits of the attention cache, as a real step has.
const TUNING_CONTEXT: usize = 512;

/// Tokens of the timed prefill chunk (fewer when the context is shorter): a session's default chunk.
const PREFILL_ROWS: usize = 256;

/// What [`Model::tune`] times: a session of `options` fed `ids` from `position`, its plan run `runs` times back
/// to back per measurement.
struct Work {
    name: String,
    options: SessionOptions,
    ids: Vec<u32>,
    position: usize,
    runs: u32,
}

/// One timed choice.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub matvec_rows: u32,
    pub matvec_reads: MatvecReads,
    pub prefill: Prefill,
    /// The work's time with this choice: the shorter of two measurements (decode: of three steps each).
    pub ms: f64,
}

/// What [`Model::tune`] measured for one kind of work, and what it chose.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Timed {
    /// What was timed: `decode step`, `prefill chunk of 256 tokens`.
    pub work: String,
    pub candidates: Vec<Candidate>,
    /// The adapter's default among the candidates ([`Context::tuning`]).
    pub default: usize,
    /// The candidate the model now uses: the fastest if it beat the default by [`SWITCH_MARGIN`], else the
    /// default.
    pub chosen: usize,
    /// Whether the work was timed by GPU timestamps (else by the host clock, submission to completion).
    pub timestamps: bool,
}

impl Timed {
    pub fn chosen(&self) -> Candidate {
        self.candidates[self.chosen]
    }

    /// The candidates as `rows 4, words: 12.345 ms` (only what differs between them), the chosen one and the
    /// default marked.
    pub fn summary(&self) -> String {
        let first = self.candidates[0];
        let varies = |f: fn(&Candidate) -> String| self.candidates.iter().any(|c| f(c) != f(&first));
        let rows = varies(|c| c.matvec_rows.to_string());
        let reads = varies(|c| c.matvec_reads.name().to_string());
        let prefill = varies(|c| format!("{:?}", c.prefill));
        let line = |(i, c): (usize, &Candidate)| {
            let mut what = Vec::new();
            if rows {
                what.push(format!("rows {}", c.matvec_rows));
            }
            if reads {
                what.push(c.matvec_reads.name().to_string());
            }
            if prefill {
                what.push(format!("{:?}", c.prefill).to_lowercase());
            }
            let mark = match (i == self.chosen, i == self.default) {
                (true, true) => " (default, chosen)",
                (true, false) => " (chosen)",
                (false, true) => " (default)",
                (false, false) => "",
            };
            format!("{}: {:.3} ms{mark}", what.join(", "), c.ms)
        };
        self.candidates.iter().enumerate().map(line).collect::<Vec<_>>().join("; ")
    }
}

/// Everything [`Model::tune`] timed: None for work with a single choice left.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Tuned {
    pub decode: Option<Timed>,
    pub prefill: Option<Timed>,
}

/// The index of the candidate to use: the fastest, unless it beats `default` by less than [`SWITCH_MARGIN`].
pub fn choose(ms: &[f64], default: usize) -> usize {
    let fastest = (0..ms.len()).min_by(|&a, &b| ms[a].total_cmp(&ms[b])).unwrap_or(default);
    if ms[fastest] < ms[default] * (1.0 - SWITCH_MARGIN) {
        fastest
    } else {
        default
    }
}

impl Model {
    /// Times the choices the context leaves open ([`Context::decode_choices`], [`Context::prefill_choices`]) on
    /// this model's work and makes the fastest the model's tuning (see [`choose`]): first the decode step's
    /// matvec choices (the ways of reading quantized rows only when some weights are quantized), then, with
    /// those, the prefill kernel. Each choice runs once to build its pipelines and warm the adapter, then is
    /// timed once in each of two rounds over the choices (the second in reverse order, so that a drift of the
    /// adapter's clocks favours none by its place), on sessions of their own (the decode step at the end of a
    /// 512-token context, the prefill chunk from position 0; their state advanced and thrown away). Not for
    /// models that stream their experts, whose forwards wait on the host.
    pub fn tune(&mut self) -> Result<&Tuned> {
        if self.streaming.is_some() {
            return Err(Error::Input("tuning a model that streams its experts is not supported".into()));
        }
        let ctx = &*self.ctx;
        let base = ctx.tuning();
        let decode = self.decode_candidates();
        // The decode step at the end of its context, attending over every row of the cache.
        let max_len = TUNING_CONTEXT.min(self.cfg.max_position_embeddings);
        let step = Work {
            name: "decode step".into(),
            options: SessionOptions { max_len, chunk: 1 },
            ids: vec![0],
            position: max_len - 1,
            runs: 3,
        };
        let (decode, tuning) =
            self.time_choices(&step, &decode, base, |s, t| s.resident_graph(Rows::Step, Head::Last, t)?.build())?;
        // Tokens spread over the vocabulary, so that the MoE layers route them as text would, over many experts.
        let prefill: Vec<Tuning> =
            ctx.prefill_choices().into_iter().map(|prefill| Tuning { prefill, ..tuning }).collect();
        let rows = PREFILL_ROWS.min(self.cfg.max_position_embeddings);
        let chunk = Work {
            name: format!("prefill chunk of {rows} tokens"),
            options: SessionOptions { max_len: rows, chunk: rows },
            ids: (0..rows as u64).map(|i| ((i * 7919 + 13) % self.cfg.vocab_size as u64) as u32).collect(),
            position: 0,
            runs: 1,
        };
        let (prefill, tuning) = self.time_choices(&chunk, &prefill, tuning, |s, t| {
            s.resident_graph(Rows::Sequence { t: rows, pos: 0 }, Head::Last, t)?.build()
        })?;
        self.tuning = Some(tuning);
        self.tuned = Tuned { decode, prefill };
        Ok(&self.tuned)
    }

    /// The decode tunings [`Model::tune`] times: the context's, with each matvec choice it leaves open
    /// ([`Context::decode_choices`]; reading quantized rows by codes or by words only when some weights are
    /// quantized).
    pub(super) fn decode_candidates(&self) -> Vec<Tuning> {
        let base = self.ctx.tuning();
        let (rows, mut reads) = self.ctx.decode_choices();
        if !self.weights.any_quantized() {
            // Float rows are read by words whether quantized ones are read by codes or by words: time one of the
            // two, the default's where it is one of them.
            let same = if base.matvec_reads == MatvecReads::Codes { MatvecReads::Words } else { MatvecReads::Codes };
            reads.retain(|&r| r != same);
        }
        rows.iter()
            .flat_map(|&matvec_rows| reads.iter().map(move |&matvec_reads| Tuning { matvec_rows, matvec_reads, ..base }))
            .collect()
    }

    /// Times `work` as `plan_of` builds it with each of `tunings`, and returns what was measured (None when there
    /// was only one choice, which is then not timed) and the tuning chosen, `default`'s when it is not among the
    /// candidates.
    fn time_choices(
        &self,
        work: &Work,
        tunings: &[Tuning],
        default: Tuning,
        plan_of: impl Fn(&Session, Tuning) -> Result<Plan>,
    ) -> Result<(Option<Timed>, Tuning)> {
        let Some(default_at) = tunings.iter().position(|t| *t == default).filter(|_| tunings.len() > 1) else {
            return Ok((None, tunings.first().copied().unwrap_or(default)));
        };
        let ctx = &*self.ctx;
        let mut session = Session::new(self, work.options)?;
        ctx.write(&session.scratch.ids, bytemuck::cast_slice(&work.ids))?;
        session.position = work.position;
        session.write_position()?;
        let plans = tunings.iter().map(|t| plan_of(&session, *t)).collect::<Result<Vec<_>>>()?;
        for plan in &plans {
            plan.run(ctx)?;
        }
        ctx.wait(&format!("the first {} of each tuning candidate", work.name))?;
        let mut best = vec![Duration::MAX; plans.len()];
        for i in (0..plans.len()).chain((0..plans.len()).rev()) {
            best[i] = best[i].min(time_runs(ctx, &plans[i], work.runs)?);
        }
        let candidates: Vec<Candidate> = tunings
            .iter()
            .zip(&best)
            .map(|(t, ms)| Candidate {
                matvec_rows: t.matvec_rows,
                matvec_reads: t.matvec_reads,
                prefill: t.prefill,
                ms: ms.as_secs_f64() * 1e3,
            })
            .collect();
        let chosen = choose(&candidates.iter().map(|c| c.ms).collect::<Vec<_>>(), default_at);
        let timestamps = ctx.features().timestamps;
        let timed = Timed { work: work.name.clone(), candidates, default: default_at, chosen, timestamps };
        Ok((Some(timed), tunings[chosen]))
    }
}

/// The time of one run of `plan`, over `runs` back to back.
fn time_runs(ctx: &Context, plan: &Plan, runs: u32) -> Result<Duration> {
    if ctx.features().timestamps {
        return plan.time_repeated(ctx, runs as usize);
    }
    let start = Instant::now();
    for _ in 0..runs {
        plan.run(ctx)?;
    }
    ctx.wait("timing a tuning candidate")?;
    Ok(start.elapsed() / runs)
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
