//! The instruments behind `jamba-wgpu bench`: per-dispatch profiles, back-to-back GPU timing, and the profiled
//! prefill chunk, which must feed the session exactly as `Session::feed` does.

mod common;

use anyhow::{ensure, Result};
use common::{gpu, own_gpu};
use jamba_wgpu::bench::{bench_model, ModelBenchOptions};
use jamba_wgpu::config::Mixer;
use jamba_wgpu::gpu::{DType, Graph};
use jamba_wgpu::kernels::matmul;
use jamba_wgpu::model::{LoadOptions, Model, SessionOptions};

#[test]
fn plans_profile_every_dispatch_and_time_back_to_back() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let x = ctx.zeros("x", &[3, 40], DType::F32)?;
    let w = ctx.zeros("w", &[24, 40], DType::F32)?;
    let v = ctx.zeros("v", &[2, 24], DType::F32)?;
    let (y, z) = (ctx.zeros("y", &[3, 24], DType::F32)?, ctx.zeros("z", &[3, 2], DType::F32)?);
    let mut g = Graph::new(ctx);
    matmul::matmul(&mut g, &x, &w, &y, false)?;
    // Reads y (288 bytes), which the first writes, and v (192).
    matmul::matmul(&mut g, &y, &v, &z, true)?;
    let plan = g.build()?;
    if !ctx.features().timestamps {
        ensure!(plan.profile(ctx).is_err() && plan.time_repeated(ctx, 4).is_err(), "no timestamps, yet timed");
        return Ok(());
    }
    let profile = plan.profile(ctx)?;
    ensure!(profile.len() == 2, "{} kernel times for 2 dispatches", profile.len());
    ensure!(profile.iter().all(|d| d.kernel == "matvec::matvec"), "kernel names: {profile:?}");
    // Each dispatch is named by the largest tensor it reads that the plan does not write: its weight, not y.
    let reads: Vec<_> = profile.iter().map(|d| d.reads.as_ref().map(|(label, bytes)| (label.to_string(), *bytes))).collect();
    ensure!(reads == [Some(("w".into(), 24 * 40 * 4)), Some(("v".into(), 2 * 24 * 4))], "named by {reads:?}");
    ensure!(profile.iter().all(|d| d.workgroups >= 1), "grids {profile:?}");
    let once = plan.time_repeated(ctx, 1)?;
    let each_of_four = plan.time_repeated(ctx, 4)?;
    ensure!(!once.is_zero() && !each_of_four.is_zero(), "GPU times of zero: {once:?}, {each_of_four:?}");
    Ok(())
}

#[test]
fn a_profiled_prefill_chunk_feeds_the_session_like_feed() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    if !ctx.features().timestamps {
        return Ok(()); // plans_profile_every_dispatch_and_time_back_to_back checks the error
    }
    let model = Model::load_default(ctx.clone(), &LoadOptions::default())?;
    let options = SessionOptions { max_len: 64, chunk: 16 };
    let prompt: Vec<u32> = (0..12).map(|i| 100 + 7 * i).collect();

    let mut fed = model.session(options)?;
    fed.feed(&prompt)?;
    let mut profiled = model.session(options)?;
    let times = profiled.profile_feed(&prompt)?;
    ensure!(!times.is_empty(), "no kernel times");
    ensure!(profiled.position() == prompt.len(), "position {} after {} tokens", profiled.position(), prompt.len());
    let diff = common::max_abs_diff(&profiled.last_logits()?, &fed.last_logits()?)?;
    ensure!(diff == 0.0, "profiled prefill logits differ from feed's by {diff}");
    // Decoding goes on from the profiled prefill as from the fed one.
    let next = fed.greedy_token()?;
    ensure!(profiled.greedy_token()? == next, "greedy token after the profiled prefill");
    fed.feed(&[next])?;
    profiled.feed(&[next])?;
    ensure!(common::max_abs_diff(&profiled.last_logits()?, &fed.last_logits()?)? == 0.0, "decode after it");

    // One token, or more than a chunk, is not a prefill chunk: a clear error that feeds nothing.
    for ids in [&prompt[..1], &[5u32; 17][..]] {
        let mut session = model.session(options)?;
        let err = session.profile_feed(ids).expect_err("not a prefill chunk").to_string();
        ensure!(err.contains("2 to 16 tokens"), "error: {err}");
        ensure!(session.position() == 0, "an error fed {} tokens", session.position());
    }
    Ok(())
}

#[test]
fn the_model_bench_reports_both_profiles() -> Result<()> {
    // Its own context: the bench counts the objects and waits of its decode steps.
    let Some(ctx) = own_gpu() else { return Ok(()) };
    let model = Model::load_default(ctx.clone(), &LoadOptions::default())?;
    let options = ModelBenchOptions { prompt_len: 10, gen_len: 3, chunk: 8, warmup: 0, runs: 1, batch: 1, progress: false };
    let b = bench_model(&model, &options)?;
    ensure!(b.prefill_tokens_per_s > 0.0 && b.decode_tokens_per_s > 0.0, "rates {b:?}");
    // No warm-up: the one timed prompt is the model's first.
    let (first, median) = (b.first_time_to_first_token_ms, b.time_to_first_token_ms);
    ensure!(first > 0.0 && first == median, "first prompt {first} ms, median {median} ms");
    ensure!(b.dispatches_per_decode_step > 0 || !ctx.features().timestamps, "no dispatch count");
    ensure!(b.gpu_objects_created_decoding == 0, "decode steps made {} GPU objects", b.gpu_objects_created_decoding);
    ensure!(b.syncs_per_decode_step == 1.0, "{} waits per decode step, not 1 (the token)", b.syncs_per_decode_step);
    ensure!(b.kernels == model.tuning().to_string() && b.kernels.contains("matvec rows"), "kernels {}", b.kernels);
    let (median, fastest) = (b.encode_us_per_decode_step, b.encode_min_us_per_decode_step);
    ensure!(fastest > 0.0 && fastest <= median, "recording {median} us, fastest {fastest} us");
    let uploaded = b.uploaded_bytes_per_decode_step;
    ensure!(uploaded == 8.0, "{uploaded} bytes uploaded per decode step, not 8 (the token and its position)");
    if ctx.features().timestamps {
        let total = |families: &[(String, f64)]| families.iter().map(|(_, ms)| ms).sum::<f64>();
        ensure!(total(&b.decode_kernel_ms) > 0.0, "decode profile {:?}", b.decode_kernel_ms);
        ensure!(b.decode_step_gpu_ms.is_some_and(|ms| ms > 0.0), "the step run whole: {:?}", b.decode_step_gpu_ms);
        ensure!(total(&b.prefill_chunk_kernel_ms) > 0.0, "prefill profile {:?}", b.prefill_chunk_kernel_ms);
        // The prefill chunk (8 tokens, the tiled path's minimum) runs its norms on their own, unlike a decode step.
        ensure!(b.prefill_chunk_kernel_ms.iter().any(|(f, _)| f == "rms_norm"), "{:?}", b.prefill_chunk_kernel_ms);
        // The same dispatches grouped by what they read: every one of them, the same time, and the Mamba layers'
        // out_proj matvecs in one group.
        let dispatches: usize = b.decode_dispatches.iter().map(|g| g.dispatches).sum();
        ensure!(dispatches == b.dispatches_per_decode_step, "{dispatches} dispatches grouped, {} profiled", b.dispatches_per_decode_step);
        let grouped: f64 = b.decode_dispatches.iter().map(|g| g.ms).sum();
        ensure!((grouped - total(&b.decode_kernel_ms)).abs() < 1e-6, "grouped {grouped} ms, by family {:?}", b.decode_kernel_ms);
        let mamba = model.config().layers().iter().filter(|l| l.mixer == Mixer::Mamba).count();
        let out_proj = b.decode_dispatches.iter().find(|g| g.reads == "model.layers.#.mamba.out_proj.weight");
        ensure!(out_proj.is_some_and(|g| g.dispatches == mamba && g.kernel == "matvec::matvec"), "{:?}", b.decode_dispatches);
        ensure!(b.decode_dispatches.windows(2).all(|w| w[0].ms >= w[1].ms), "not most time first");
        let prefill: usize = b.prefill_chunk_dispatches.iter().map(|g| g.dispatches).sum();
        ensure!(prefill > dispatches, "{prefill} prefill dispatches grouped");
    } else {
        ensure!(b.decode_step_gpu_ms.is_none(), "a step timed with no timestamps: {:?}", b.decode_step_gpu_ms);
    }
    Ok(())
}
