//! Expert streaming (LoadOptions::gpu_memory / expert_slots): a model whose experts stream through a pool of GPU
//! slots computes exactly what the fully resident model does, for prefill chunks that need more experts than
//! the pool holds (split into groups) and for decode; its statistics add up; budgets too small are clear errors.
//!
//! The default model has 4 MoE layers of 4 experts (top-2), each expert 192 x 384 x 3 bf16 = 442,368 bytes.

mod common;

use std::sync::Arc;

use anyhow::{ensure, Result};
use common::gpu;
use jamba_wgpu::gpu::Context;
use jamba_wgpu::weights::quant::{QuantFormat, Quantization, Scope};
use jamba_wgpu::{Error, LoadOptions, Model, SessionOptions, StreamingStats};

/// 16-token prefill chunks: 37 prompt tokens make chunks of 16, 16 and 5 (tiled and matrix-vector expert paths).
const CHUNK: usize = 16;
const DECODE_STEPS: usize = 20;

fn load(ctx: &Arc<Context>, options: LoadOptions) -> Result<Model> {
    Ok(Model::load_default(ctx.clone(), &options)?)
}

fn prompt(model: &Model) -> Result<Vec<u32>> {
    let text = "Life is what happens to you while you are busy making other plans, said someone wise once, and then \
                he went on to say that the secret of life is honesty and fair dealing; if you can fake that, you've got it made.";
    let mut ids = vec![1];
    ids.extend(model.tokenizer().expect("the default model has a tokenizer").encode(text)?);
    ids.truncate(37);
    ensure!(ids.len() == 37, "the prompt has {} tokens", ids.len());
    Ok(ids)
}

/// What a run computes: every prompt position's logits, then DECODE_STEPS greedy steps' ids and logits.
struct Run {
    prompt_logits: Vec<f32>,
    ids: Vec<u32>,
    step_logits: Vec<f32>,
    stats: Option<StreamingStats>,
}

fn run(model: &Model) -> Result<Run> {
    let prompt = prompt(model)?;
    let mut session = model.session(SessionOptions { max_len: prompt.len() + DECODE_STEPS + 1, chunk: CHUNK })?;
    let prompt_logits = session.feed_all_logits(&prompt)?;
    let (mut ids, mut step_logits) = (Vec::new(), Vec::new());
    for _ in 0..DECODE_STEPS {
        let id = session.greedy_token()?;
        ids.push(id);
        session.feed(&[id])?;
        step_logits.extend(session.last_logits()?);
    }
    Ok(Run { prompt_logits, ids, step_logits, stats: session.streaming_stats() })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Fails unless `got` computed what `want` did (ids equal, logits within 1e-6; in practice bit-identical).
fn check_same(what: &str, got: &Run, want: &Run) -> Result<()> {
    ensure!(got.ids == want.ids, "{what}: greedy ids {:?} != resident {:?}", got.ids, want.ids);
    ensure!(got.prompt_logits.len() == want.prompt_logits.len() && got.step_logits.len() == want.step_logits.len());
    let diff = max_diff(&got.prompt_logits, &want.prompt_logits).max(max_diff(&got.step_logits, &want.step_logits));
    println!("{what}: ids identical, max |logit diff| = {diff:e}, {:?}", got.stats);
    ensure!(diff <= 1e-6, "{what}: logits differ from the resident model's by {diff:e}");
    Ok(())
}

fn slots(n: usize) -> LoadOptions {
    LoadOptions { expert_slots: Some(n), ..Default::default() }
}

#[test]
fn streamed_experts_compute_what_resident_ones_do() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let resident = load(ctx, LoadOptions::default())?;
    ensure!(resident.streaming_stats().is_none());
    let want = run(&resident)?;
    let expert_bytes = 3 * 192 * 384 * 2;
    for n in [2, 3, 16] {
        let model = load(ctx, slots(n))?;
        let got = run(&model)?;
        check_same(&format!("{n} slots"), &got, &want)?;
        let s = got.stats.expect("a streamed session has statistics");
        ensure!(s.slots == n && s.expert_bytes == expert_bytes, "{s:?}");
        ensure!(s.tokens == (37 + DECODE_STEPS) as u64, "{s:?}");
        ensure!(s.misses > 0 && s.bytes_uploaded == s.misses * expert_bytes, "{s:?}");
        ensure!(model.streaming_stats() == Some(s), "one session: the model's statistics are the session's");
        // Each of the 37 + 20 tokens uses top-2 experts in each of 4 layers: at most 8 (layer, expert) uses each.
        ensure!(s.hits + s.misses <= s.tokens * 8, "{s:?}");
        match n {
            // Every expert of every layer fits: each is uploaded once, then only hit.
            16 => ensure!(s.misses <= 16 && s.hits > 0, "{s:?}"),
            // 2 slots for 4 layers of 2 experts each: evicted before every use.
            2 => ensure!(s.hits == 0 && s.misses >= 4 * 2 * DECODE_STEPS as u64, "{s:?}"),
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn gpu_memory_sizes_the_pool_or_keeps_everything_resident() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let probe = load(ctx, slots(2))?;
    let other = probe.weights().size_bytes();
    let expert = probe.streaming_stats().expect("streamed").expert_bytes;
    drop(probe);

    // Room for 3 experts and a half: a pool of 3 (a budget of a few MiB: ~8.4 MiB of other weights + 1.3 MiB).
    let budget = other + 3 * expert + expert / 2;
    let model = load(ctx, LoadOptions { gpu_memory: Some(budget), ..Default::default() })?;
    ensure!(model.weights().size_bytes() == other);
    ensure!(model.streaming_stats().map(|s| s.slots) == Some(3), "{:?}", model.streaming_stats());
    let resident = load(ctx, LoadOptions::default())?;
    check_same("gpu_memory budget of 3 experts", &run(&model)?, &run(&resident)?)?;

    // Room for all 16: resident, nothing streamed.
    let model = load(ctx, LoadOptions { gpu_memory: Some(other + 16 * expert), ..Default::default() })?;
    ensure!(model.streaming_stats().is_none() && model.weights().size_bytes() == other + 16 * expert);
    Ok(())
}

#[test]
fn budgets_too_small_are_clear_errors() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let probe = load(ctx, slots(2))?;
    let other = probe.weights().size_bytes();
    let expert = probe.streaming_stats().expect("streamed").expert_bytes;
    drop(probe);
    let cases = [
        ("below the other weights", LoadOptions { gpu_memory: Some(1 << 20), ..Default::default() }, other),
        (
            "room for one expert",
            LoadOptions { gpu_memory: Some(other + expert), ..Default::default() },
            other + 2 * expert,
        ),
        (
            "3 slots in room for 2",
            LoadOptions { gpu_memory: Some(other + 2 * expert), expert_slots: Some(3), ..Default::default() },
            other + 3 * expert,
        ),
    ];
    for (what, options, want_need) in cases {
        let budget = options.gpu_memory.expect("every case has a budget");
        let Err(e) = load(ctx, options) else { anyhow::bail!("{what}: loaded") };
        println!("{what}: {e}");
        match e.downcast_ref::<Error>() {
            Some(Error::MemoryBudget { budget: b, need, .. }) => {
                ensure!(*b == budget && *need == want_need, "{what}: {e} (expected a need of {want_need})")
            }
            _ => anyhow::bail!("{what}: expected a MemoryBudget error, got {e}"),
        }
    }
    match load(ctx, slots(1)) {
        Err(e) => ensure!(e.to_string().contains("num_experts_per_tok"), "{e}"),
        Ok(_) => anyhow::bail!("a pool of one slot for a top-2 model loaded"),
    }
    // A budget over what the adapter has (where it says) would let a pool take memory that is not there.
    if let Some(capacity) = ctx.memory_capacity() {
        let budget = capacity.bytes.saturating_mul(4);
        match load(ctx, LoadOptions { gpu_memory: Some(budget), ..Default::default() }) {
            Err(e) => ensure!(e.to_string().contains(&format!("budget of {budget} bytes is more than")), "{e}"),
            Ok(_) => anyhow::bail!("a budget of {budget} bytes, 4 times the adapter's {capacity:?}, was taken"),
        }
    }
    Ok(())
}

#[test]
fn quantized_experts_stream_identically() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let q8 = Some(Quantization { format: QuantFormat::Q8, scope: Scope::Ffn });
    let resident = load(ctx, LoadOptions { quantize: q8, ..Default::default() })?;
    let streamed = load(ctx, LoadOptions { quantize: q8, expert_slots: Some(3), ..Default::default() })?;
    let got = run(&streamed)?;
    check_same("q8, 3 slots", &got, &run(&resident)?)?;
    let s = got.stats.expect("streamed");
    // q8 rows: the scale and the codes, each padded to 16 bytes, per row of gate, up (384 rows of 192) and down
    // (192 rows of 384).
    ensure!(s.expert_bytes == 2 * 384 * (16 + 192) + 192 * (16 + 384), "{s:?}");
    ensure!(s.bytes_uploaded == s.misses * s.expert_bytes, "{s:?}");
    Ok(())
}

/// `run --gpu-memory --json`: the same tokens as without, and the streaming counts under `timings.streaming`.
#[test]
fn cli_run_reports_streaming_in_json_timings() -> Result<()> {
    if gpu().is_none() {
        return Ok(());
    }
    let run = |extra: &[&str]| -> Result<serde_json::Value> {
        let args =
            ["run", "--prompt", "The secret of life is", "--max-new-tokens", "12", "--ignore-eos", "--context", "64"];
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jamba-wgpu"))
            .args(args)
            .args(extra)
            .arg("--json")
            .output()?;
        ensure!(out.status.success(), "run {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let resident = run(&[])?;
    // ~8.4 MiB of other weights, 64 tokens of state (~35 KiB) and room for 3 experts of 432 KiB.
    let streamed = run(&["--gpu-memory", "9.9MiB"])?;
    ensure!(resident["output_ids"] == streamed["output_ids"], "{resident} vs {streamed}");
    ensure!(resident["timings"].get("streaming").is_none());
    let s = &streamed["timings"]["streaming"];
    println!("run --gpu-memory 9.9MiB: {s}");
    ensure!(s["slots"] == 3 && s["misses"].as_u64() > Some(0), "{s}");
    ensure!(s["bytes_uploaded"].as_u64() == Some(s["misses"].as_u64().unwrap_or(0) * 442_368), "{s}");
    ensure!(s["bytes_uploaded_per_token"].as_f64() > Some(0.0), "{s}");
    Ok(())
}
