//! Timing helpers shared by `cargo bench` (benches/) and `jamba-wgpu bench`: run a plan repeatedly after a
//! warm-up and report the median, with the achieved bandwidth and arithmetic rate when the caller knows the
//! bytes moved and the operations done.

use std::time::{Duration, Instant};

use crate::gpu::{Context, Plan};
use crate::Result;

/// Wall-clock times of repeated runs, each from submission to completion.
#[derive(Clone, Debug)]
pub struct Timing {
    pub median: Duration,
    pub min: Duration,
    pub runs: usize,
}

impl Timing {
    /// Median and minimum of measured durations.
    pub fn of(mut samples: Vec<Duration>) -> Timing {
        samples.sort();
        let runs = samples.len();
        Timing { median: samples.get(runs / 2).copied().unwrap_or_default(), min: samples.first().copied().unwrap_or_default(), runs }
    }
}

/// Times `f` (which must block until its work is done) `runs` times after `warmup` untimed calls.
pub fn time(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed());
    }
    Ok(Timing::of(samples))
}

/// Times one plan: submit, wait, repeat.
pub fn time_plan(ctx: &Context, plan: &Plan, warmup: usize, runs: usize) -> Result<Timing> {
    time(warmup, runs, || {
        plan.run(ctx)?;
        ctx.wait("benchmark")
    })
}

/// One line of a benchmark report: `name  1.234 ms  12.3 GB/s  4.56 GFLOP/s`.
pub fn report(name: &str, timing: &Timing, bytes: Option<u64>, flops: Option<u64>) -> String {
    let secs = timing.median.as_secs_f64().max(1e-9);
    let mut line = format!("{name:<48} {:>10.3} ms (min {:.3}, {} runs)", secs * 1e3, timing.min.as_secs_f64() * 1e3, timing.runs);
    if let Some(b) = bytes {
        line += &format!("  {:>8.2} GB/s", b as f64 / secs / 1e9);
    }
    if let Some(f) = flops {
        line += &format!("  {:>8.2} GFLOP/s", f as f64 / secs / 1e9);
    }
    line
}
