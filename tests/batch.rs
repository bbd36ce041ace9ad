//! Tier 3: batched decoding. Several sequences in one batch, at different positions, step by step equal each
//! sequence run alone through a Session: the same greedy ids exactly, logits within 1e-4 (the batch's matmuls
//! and MoE run over B rows, so sums may be ordered differently than for one row). Also the batch's bookkeeping:
//! resetting one sequence, and bad requests as clear errors that feed nothing.

mod common;

use anyhow::{ensure, Context as _, Result};
use common::{check_close, fixture_dir, gpu, own_gpu, Rng};
use jamba_wgpu::{LoadOptions, Model, SessionOptions};

const LOGIT_TOL: f32 = 1e-4;
const STEPS: usize = 10;

/// Prompt lengths: different, so the sequences sit at different positions; 21 crosses a prefill chunk of 16.
const PROMPT_LENS: [usize; 3] = [5, 21, 1];
/// `n` sequences with prompts of 1 to 30 tokens. At 12 a CPU adapter's step runs the matmuls tiled (the blocked
/// kernels from 10 rows) and tiny's 4 experts (top 2, 6 rows each on average) as matvecs; at 33 both tiled (the
/// experts from 8 rows each on average with the blocked kernels, the matmuls from 32 rows with the 32 x 32 tiles),
/// as GPUs do from 8 rows.
fn prompt_lens(n: usize) -> Vec<usize> {
    (0..n).map(|i| 1 + (i * 7) % 30).collect()
}

/// The greedy continuation of `prompt` alone: logits after the prompt and after each of `STEPS` fed tokens, and
/// the greedy ids chosen from them.
fn alone(model: &Model, options: SessionOptions, prompt: &[u32]) -> Result<(Vec<Vec<f32>>, Vec<u32>)> {
    let mut session = model.session(options)?;
    session.feed(prompt)?;
    let (mut logits, mut ids) = (vec![session.last_logits()?], vec![session.greedy_token()?]);
    for _ in 0..STEPS {
        session.feed(&[*ids.last().context("a token")?])?;
        logits.push(session.last_logits()?);
        ids.push(session.greedy_token()?);
    }
    Ok((logits, ids))
}

/// Once its first step has built the plan, a batch steps (and reads back its tokens) without creating any buffer,
/// bind group or pipeline.
#[test]
fn batch_steps_create_no_gpu_objects() -> Result<()> {
    let Some(ctx) = own_gpu() else { return Ok(()) };
    let model = Model::load(ctx.clone(), fixture_dir("tiny"), &LoadOptions::default())?;
    let mut batch = model.batch(3, SessionOptions { max_len: 32, chunk: 16 })?;
    for (seq, prompt) in [[5u32, 17, 42], [7, 9, 11], [1, 2, 3]].iter().enumerate() {
        batch.prefill(seq, prompt)?;
    }
    batch.step(&batch.greedy_tokens()?)?;
    let before = ctx.counts();
    for _ in 0..8 {
        batch.step(&batch.greedy_tokens()?)?;
    }
    let after = ctx.counts();
    ensure!(after.syncs == before.syncs + 8, "8 steps with 8 readbacks waited {} times", after.syncs - before.syncs);
    ensure!(after.objects() == before.objects(), "8 batch steps made GPU objects: {before:?} -> {after:?}");
    // Each step uploads its 3 tokens and 3 positions, nothing else: the plan's parameters went up once.
    let uploaded = after.uploaded_bytes - before.uploaded_bytes;
    ensure!(uploaded == 8 * 3 * 8, "8 batch steps of 3 sequences uploaded {uploaded} bytes, not 24 each");
    Ok(())
}

#[test]
fn batch_steps_equal_each_sequence_run_alone() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let cases = [
        ("tiny", PROMPT_LENS.to_vec()),
        ("v01-shape-lite", PROMPT_LENS.to_vec()),
        ("tiny", prompt_lens(12)),
        ("tiny", prompt_lens(33)),
    ];
    for (name, lens) in cases {
        let model = Model::load(ctx.clone(), fixture_dir(name), &LoadOptions::default())?;
        let vocab = model.config().vocab_size as u32;
        let mut rng = Rng::new(42);
        let prompts: Vec<Vec<u32>> = lens.iter().map(|&n| (0..n).map(|_| rng.below(vocab)).collect()).collect();
        let options = SessionOptions { max_len: 48, chunk: 16 };
        let want: Vec<_> = prompts.iter().map(|p| alone(&model, options, p)).collect::<Result<_>>()?;

        let mut batch = model.batch(prompts.len(), options)?;
        // Prefill out of order, so a later prefill must not disturb an earlier sequence's logits.
        for seq in (0..prompts.len()).rev() {
            batch.prefill(seq, &prompts[seq])?;
        }
        let mut worst = 0.0f32;
        for step in 0..=STEPS {
            let tokens = batch.greedy_tokens()?;
            for (seq, (logits, ids)) in want.iter().enumerate() {
                let what = format!("{name} sequence {seq} at step {step}");
                ensure!(tokens[seq] == ids[step], "{what}: greedy id {} alone, {} in the batch", ids[step], tokens[seq]);
                worst = worst.max(check_close(&what, &batch.last_logits(seq)?, &logits[step], LOGIT_TOL)?);
                ensure!(batch.position(seq)? == prompts[seq].len() + step, "{what}: position");
            }
            if step < STEPS {
                batch.step(&tokens)?;
            }
        }
        println!("{name}: {} sequences (prompts {lens:?}), {STEPS} steps: max |batch - alone| logits {worst:e}", lens.len());
    }
    Ok(())
}

#[test]
fn batch_reset_and_bad_requests() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let model = Model::load(ctx.clone(), fixture_dir("tiny"), &LoadOptions::default())?;
    let options = SessionOptions { max_len: 8, chunk: 4 };
    let mut batch = model.batch(2, options)?;
    let e = batch.greedy_tokens().unwrap_err().to_string();
    ensure!(e.contains("sequence 0") && e.contains("no token"), "{e}");
    batch.prefill(0, &[5, 17, 42])?;
    batch.prefill(1, &[9, 9, 9, 9, 9, 9, 9])?;
    let refused = [
        (batch.step(&[1]).unwrap_err().to_string(), "1 tokens for a batch of 2"),
        (batch.step(&[1, 512]).unwrap_err().to_string(), "token id 512"),
        (batch.prefill(2, &[1]).unwrap_err().to_string(), "sequence 2 of a batch of 2"),
        (batch.prefill(0, &[]).unwrap_err().to_string(), "no token ids"),
        (batch.prefill(0, &[1; 6]).unwrap_err().to_string(), "context of 8 tokens"),
    ];
    for (e, needle) in refused {
        ensure!(e.contains(needle), "`{e}` does not say `{needle}`");
    }
    ensure!(batch.position(0)? == 3 && batch.position(1)? == 7, "a refused request fed something");
    batch.step(&[7, 7])?;
    // Sequence 1 is full now: the next step is refused, naming it.
    let e = batch.step(&[7, 7]).unwrap_err().to_string();
    ensure!(e.contains("sequence 1") && e.contains("context of 8 tokens"), "{e}");

    // Resetting sequence 0 and feeding it again gives what a fresh session gives; sequence 1 is untouched.
    let before = batch.last_logits(1)?;
    batch.reset(0)?;
    ensure!(batch.position(0)? == 0);
    batch.prefill(0, &[3, 1, 4, 1])?;
    let mut session = model.session(options)?;
    session.feed(&[3, 1, 4, 1])?;
    check_close("sequence 0 after reset", &batch.last_logits(0)?, &session.last_logits()?, LOGIT_TOL)?;
    check_close("sequence 1 after sequence 0's reset", &batch.last_logits(1)?, &before, 0.0)?;

    // Caches over one storage binding are refused up front, saying what to change.
    let e = model.batch(4096, SessionOptions { max_len: 4096, chunk: 16 }).err().context("a batch too large")?;
    ensure!(e.to_string().contains("storage binding limit") && e.to_string().contains("fewer sequences"), "{e}");
    let e = model.batch(0, options).err().context("an empty batch")?.to_string();
    ensure!(e.contains("at least one sequence"), "{e}");
    Ok(())
}
