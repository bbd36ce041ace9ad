//! Tier 3: the whole model on the GPU, against transformers' fixtures and against the CPU reference.
//!
//! Tolerances: 1e-3 on logits for f32 weights (the CPU reference is within 4e-5 of transformers), the same
//! for bf16 weights (both compute in f32 from the same rounded weights). Greedy ids must be identical where the
//! fixture guarantees a margin (gen0; the default model's prompts).

mod common;

use std::sync::Arc;

use anyhow::{ensure, Context as _, Result};
use common::{check_close, default_model_dir, fixture_dir, gpu, gpu_with_other_kernels, own_gpu, Expected, Rng, FIXTURES};
use jamba_wgpu::config::JambaConfig;
use jamba_wgpu::gpu::{Context, GpuCounts, MatvecReads};
use jamba_wgpu::reference::ReferenceModel;
use jamba_wgpu::weights::quant::{QuantFormat, Quantization};
use jamba_wgpu::weights::Checkpoint;
use jamba_wgpu::model::Tuned;
use jamba_wgpu::{generate, GenerateOptions, LoadOptions, Model, ReferenceSession, SessionOptions, Tune};

const LOGIT_TOL: f32 = 1e-3;

fn load(ctx: &Arc<Context>, dir: &std::path::Path) -> Result<Model> {
    Ok(Model::load(ctx.clone(), dir, &LoadOptions::default())?)
}

fn options(max_len: usize, chunk: usize) -> SessionOptions {
    SessionOptions { max_len, chunk }
}

#[test]
fn fixture_logits_match_transformers() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    fixture_logits_match(ctx)
}

/// Every fixture's prompts, prefilled, against transformers' logits.
fn fixture_logits_match(ctx: &Arc<Context>) -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let model = load(ctx, &dir)?;
        let expected = Expected::open(&dir)?;
        for prompt in ["p1", "p7", "p64", "p300", "text"] {
            let ids = expected.ids(&format!("{prompt}.input_ids"))?;
            let mut session = model.session(options(ids.len(), 128))?;
            let logits = session.feed_all_logits(&ids)?;
            let (_, want) = expected.f32(&format!("{prompt}.logits"))?;
            let diff = check_close(&format!("{name} {prompt}"), &logits, &want, LOGIT_TOL)?;
            println!("{name} {prompt}: max |gpu - transformers| = {diff:e}");
        }
    }
    Ok(())
}

#[test]
fn gen0_greedy_ids_identical_and_gen1_step_logits_close() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    generations_match(ctx)
}

/// The other kind of adapter's kernels (a GPU's on a CPU adapter, a CPU adapter's on a GPU) through the whole
/// model: prefill and decode against transformers, as the two tests above check this adapter's own.
#[test]
fn the_other_adapter_kinds_kernels_match_transformers() -> Result<()> {
    let Some(ctx) = gpu_with_other_kernels() else { return Ok(()) };
    fixture_logits_match(&ctx)?;
    generations_match(&ctx)
}

/// transformers' greedy generation (gen0) and the logits that chose each of its steps (gen1), decoded through the
/// replayed plan.
fn generations_match(ctx: &Arc<Context>) -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let model = load(ctx, &dir)?;
        let expected = Expected::open(&dir)?;
        let prompt = expected.ids("gen0.prompt_ids")?;
        let want = expected.ids("gen0.output_ids")?;
        let mut session = model.session(options(want.len(), 64))?;
        let opts = GenerateOptions { max_new_tokens: 32, sampling: Default::default(), stop_ids: vec![], stop_strings: vec![] };
        let ids: Vec<u32> = generate(&mut session, &prompt, opts, None)?.map(|g| g.map(|g| g.id)).collect::<jamba_wgpu::Result<_>>()?;
        ensure!(ids == want[prompt.len()..], "{name}: gen0 ids {ids:?} != {:?}", &want[prompt.len()..]);

        // gen1: cached decode, comparing the logits that chose each step.
        let prompt = expected.ids("gen1.prompt_ids")?;
        let output = expected.ids("gen1.output_ids")?;
        let (_, want) = expected.f32("gen1.step_logits")?;
        let v = model.config().vocab_size;
        let mut session = model.session(options(output.len(), 64))?;
        session.feed(&prompt)?;
        let mut got = session.last_logits()?;
        for &id in &output[prompt.len()..output.len() - 1] {
            session.feed(&[id])?;
            got.extend(session.last_logits()?);
        }
        let diff = check_close(&format!("{name} gen1 step logits"), &got, &want[..got.len()], LOGIT_TOL)?;
        ensure!(got.len() == 32 * v);
        println!("{name}: gen1 step logits max diff {diff:e}");
    }
    Ok(())
}

#[test]
fn chunked_prefill_and_decode_equal_one_shot() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let dir = fixture_dir("v01-shape-lite");
    let model = load(ctx, &dir)?;
    let expected = Expected::open(&dir)?;
    let ids = expected.ids("p300.input_ids")?;
    let one_shot = model.session(options(300, 300))?.feed_all_logits(&ids)?;
    for chunk in [1, 7, 64, 65] {
        let chunked = model.session(options(300, chunk))?.feed_all_logits(&ids)?;
        check_close(&format!("chunk {chunk}"), &chunked, &one_shot, 1e-4)?;
    }
    // Prefill 200, then decode one token at a time through the replayed plan.
    let v = model.config().vocab_size;
    let mut session = model.session(options(300, 64))?;
    session.feed(&ids[..200])?;
    for (i, &id) in ids[200..].iter().enumerate() {
        session.feed(&[id])?;
        let row = &one_shot[(200 + i) * v..(201 + i) * v];
        check_close(&format!("decode step {i}"), &session.last_logits()?, row, 1e-4)?;
    }
    Ok(())
}

#[test]
fn default_model_generates_the_same_text_on_gpu_and_cpu() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let model = Model::load_default(ctx.clone(), &LoadOptions::default())?;
    let cfg = model.config().clone();
    let reference = ReferenceModel::new(&cfg, &jamba_wgpu::default_model::checkpoint()?)?;
    let tokenizer = model.tokenizer().context("the default model has a tokenizer")?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(default_model_dir().join("expected.json"))?)?;
    for p in json["prompts"].as_array().context("prompts")? {
        let text = p["prompt"].as_str().context("prompt")?;
        let prompt: Vec<u32> = std::iter::once(1).chain(tokenizer.encode(text)?).collect();
        let want: Vec<u32> = serde_json::from_value(p["greedy_ids_40_no_eos_stop"].clone())?;
        let opts = GenerateOptions { max_new_tokens: 40, sampling: Default::default(), stop_ids: vec![], stop_strings: vec![] };

        let mut session = model.session(options(64, 64))?;
        let mut gpu_run = generate(&mut session, &prompt, opts.clone(), Some(tokenizer))?;
        let gpu_ids: Vec<u32> = gpu_run.by_ref().map(|g| g.map(|g| g.id)).collect::<jamba_wgpu::Result<_>>()?;
        let gpu_text = gpu_run.text().to_string();

        let mut cpu = ReferenceSession::new(&reference, 64);
        let mut cpu_run = generate(&mut cpu, &prompt, opts, Some(tokenizer))?;
        let cpu_ids: Vec<u32> = cpu_run.by_ref().map(|g| g.map(|g| g.id)).collect::<jamba_wgpu::Result<_>>()?;
        ensure!(gpu_ids == want, "{text}: GPU ids {gpu_ids:?} != transformers {want:?}");
        ensure!(cpu_ids == want, "{text}: CPU ids {cpu_ids:?} != transformers {want:?}");
        ensure!(gpu_text == cpu_run.text(), "{text}: GPU and CPU texts differ");
        println!("{text}{gpu_text}");
    }
    Ok(())
}

/// Writes a checkpoint of random weights for `cfg` into `dir` (config.json + model.safetensors).
fn random_checkpoint(dir: &std::path::Path, config_json: &serde_json::Value, seed: u64) -> Result<JambaConfig> {
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(config_json)?)?;
    let cfg = JambaConfig::from_file(dir.join("config.json"))?;
    let mut rng = Rng::new(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = jamba_wgpu::weights::expected_tensors(&cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("A_log") {
                (0..n).map(|_| rng.uniform(1.0).abs().ln_1p()).collect()
            } else if name.contains("norm") || name.ends_with(".D") {
                (0..n).map(|_| 1.0 + rng.uniform(0.2)).collect()
            } else {
                let fan_in = *shape.last().unwrap_or(&1) as f32;
                rng.vec(n, 1.5 / fan_in.sqrt())
            };
            (name, shape, bytemuck::cast_slice(&values).to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| Ok((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))?;
    Ok(cfg)
}

#[test]
fn random_configs_match_the_cpu_reference() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    // (attn period, offset, expert period, offset, heads, kv heads, d_state, experts, top-k, layers)
    let cases = [
        (2, 1, 2, 0, 4, 1, 4, 8, 1, 4),   // MQA, attention every other layer, top-1 of 8
        (3, 0, 3, 2, 6, 3, 32, 4, 3, 5),  // d_state 32, top-3
        (4, 3, 1, 0, 2, 2, 16, 2, 2, 4),  // MoE on every layer, MHA
        (8, 7, 2, 1, 4, 2, 8, 1, 1, 3),   // no attention layer at all; one expert = dense
    ];
    for (n, &(ap, ao, ep, eo, heads, kv, d_state, experts, top_k, layers)) in cases.iter().enumerate() {
        let dir = common::TempDir::new(&format!("random-{n}"))?;
        let config = serde_json::json!({
            "vocab_size": 97, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv,
            "attn_layer_period": ap, "attn_layer_offset": ao, "expert_layer_period": ep, "expert_layer_offset": eo,
            "num_experts": experts, "num_experts_per_tok": top_k, "mamba_d_state": d_state, "mamba_d_conv": 4,
            "mamba_expand": 2, "mamba_dt_rank": "auto", "rms_norm_eps": 1e-6, "max_position_embeddings": 512,
            "tie_word_embeddings": n % 2 == 1,
        });
        let cfg = random_checkpoint(dir.path(), &config, 100 + n as u64)?;
        let checkpoint = Checkpoint::open(dir.path())?;
        let reference = ReferenceModel::new(&cfg, &checkpoint)?;
        let model = Model::from_checkpoint(ctx.clone(), cfg.clone(), &checkpoint, None, &LoadOptions::default())?;
        let mut rng = Rng::new(7 + n as u64);
        let ids: Vec<u32> = (0..70).map(|_| rng.below(97)).collect();
        let want = reference.forward(&mut reference.new_state(), &ids)?;
        let got = model.session(options(80, 32))?.feed_all_logits(&ids)?;
        let diff = check_close(&format!("random config {n}"), &got, &want, LOGIT_TOL)?;
        println!("random config {n}: max diff {diff:e}");
    }
    Ok(())
}

#[test]
fn fork_and_reset() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let model = load(ctx, &fixture_dir("tiny"))?;
    let mut a = model.session(options(64, 16))?;
    a.feed(&[5, 17, 42, 7])?;
    let mut b = a.fork()?;
    a.feed(&[9])?;
    b.feed(&[9])?;
    check_close("fork", &b.last_logits()?, &a.last_logits()?, 0.0)?;
    let after = a.last_logits()?;
    a.reset();
    a.feed(&[5, 17, 42, 7, 9])?;
    check_close("reset", &a.last_logits()?, &after, 1e-5)?;
    Ok(())
}

/// A decode step is recorded while the GPU runs the one before (Session::decode_step): submitted at its own
/// position only, with its parameters, whether the host reads each token back in between or not, and dropped by
/// anything else the session does (a prefill, a reset, a context full).
#[test]
fn steps_recorded_ahead_decode_as_steps_recorded_on_demand() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let model = load(ctx, &fixture_dir("tiny"))?;
    let (prompt, tokens) = ([5, 17, 42, 7], [9, 300, 11, 2, 64, 128]);
    // Reference: every token's logits through the prefill path (feed_all_logits), which records nothing ahead.
    let mut want = Vec::new();
    for n in 1..=tokens.len() {
        let mut s = model.session(options(16, 16))?;
        s.feed(&prompt)?;
        let all = s.feed_all_logits(&tokens[..n])?;
        want.push(all[(n - 1) * 512..].to_vec());
    }
    // Steps with a readback between each, then steps submitted back to back with no readback.
    let mut a = model.session(options(16, 16))?;
    a.feed(&prompt)?;
    for (i, &t) in tokens.iter().enumerate() {
        a.feed(&[t])?;
        check_close(&format!("step {i}, read back"), &a.last_logits()?, &want[i], 1e-4)?;
    }
    let mut b = model.session(options(16, 16))?;
    b.feed(&prompt)?;
    for &t in &tokens {
        b.feed(&[t])?;
    }
    check_close("steps back to back", &b.last_logits()?, &a.last_logits()?, 0.0)?;
    // A prefill between decode steps, and a reset to the same position as the step recorded ahead.
    b.reset();
    b.feed(&prompt)?;
    b.feed(&tokens[..2])?;
    b.feed(&[tokens[2]])?;
    check_close("decode after a prefill", &b.last_logits()?, &want[2], 1e-4)?;
    // Decoding up to a full context, where nothing is recorded ahead.
    let mut c = model.session(options(prompt.len() + 2, 16))?;
    c.feed(&prompt)?;
    c.feed(&[tokens[0]])?;
    c.feed(&[tokens[1]])?;
    check_close("the last position", &c.last_logits()?, &want[1], 1e-4)?;
    ensure!(c.feed(&[1]).is_err(), "a full context took another token");
    Ok(())
}

/// Issue 7's "no allocation per token" and "no GPU-to-CPU sync inside a forward": once the first decode step has
/// built its plan, decoding more tokens (their greedy ids and logits read back, as generation does) creates no
/// buffer, bind group or pipeline, waits for the GPU only in the readbacks, and uploads only each token and its
/// position: the plan replays unchanged, its parameters uploaded once.
#[test]
fn decode_steps_create_no_gpu_objects() -> Result<()> {
    let Some(ctx) = own_gpu() else { return Ok(()) };
    let model = load(&ctx, &fixture_dir("tiny"))?;
    let mut s = model.session(options(32, 16))?;
    s.feed(&[5, 17, 42, 7])?;
    s.feed(&[s.greedy_token()?])?;
    s.last_logits()?; // the readback staging buffer grows once, to the logits' size
    let before = ctx.counts();
    for _ in 0..8 {
        s.feed(&[s.greedy_token()?])?;
        s.last_logits()?;
    }
    let after = ctx.counts();
    ensure!(after.syncs == before.syncs + 16, "8 steps and 16 readbacks waited {} times", after.syncs - before.syncs);
    let uploaded = after.uploaded_bytes - before.uploaded_bytes;
    ensure!(uploaded == 8 * 8, "8 decode steps uploaded {uploaded} bytes, not 8 each (token and position)");
    let objects_made = after != GpuCounts { syncs: before.syncs + 16, uploaded_bytes: after.uploaded_bytes, ..before };
    ensure!(!objects_made, "8 decode steps made GPU objects: {before:?} -> {after:?}");
    // Steps fed back to back wait for nothing: no readback, no sync inside a forward.
    for _ in 0..4 {
        s.feed(&[7])?;
    }
    let want = GpuCounts { uploaded_bytes: after.uploaded_bytes + 4 * 8, ..after };
    ensure!(ctx.counts() == want, "4 steps without readbacks: {after:?} -> {:?}", ctx.counts());
    // The counter counts: a prefill chunk builds a plan of its own.
    s.feed(&[1, 2, 3])?;
    ensure!(ctx.counts().bind_groups > before.bind_groups, "a prefill chunk made no bind groups");
    Ok(())
}

#[test]
fn bad_requests_are_clear_errors() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let model = load(ctx, &fixture_dir("tiny"))?;
    let mut s = model.session(options(8, 4))?;
    let e = s.feed(&[1; 9]).unwrap_err().to_string();
    ensure!(e.contains("context of 8 tokens"), "{e}");
    let e = s.feed(&[512]).unwrap_err().to_string();
    ensure!(e.contains("token id 512") && e.contains("vocab_size 512"), "{e}");
    let e = s.feed(&[]).unwrap_err().to_string();
    ensure!(e.contains("no token ids"), "{e}");
    let e = model.session(options(1 << 20, 4)).err().context("a context over max_position_embeddings")?.to_string();
    ensure!(e.contains("max_position_embeddings"), "{e}");
    // Nothing was consumed by the refused requests.
    ensure!(s.position() == 0);
    Ok(())
}

/// The dispatches of one decode step, per layer kind: what each token costs the host to encode (about 1 us each
/// in wgpu) and the GPU in launches and barriers. A fused kernel split apart again fails here.
#[test]
fn a_decode_step_is_a_known_number_of_dispatches() -> Result<()> {
    use jamba_wgpu::config::{Ffn, Mixer};
    let Some(ctx) = gpu() else { return Ok(()) };
    // Jamba-v0.1's schedule (32 layers, attention every 8th, MoE every other) at small widths.
    let cfg = JambaConfig::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/configs/v0.1-layout.json"))?;
    let model = Model::random(ctx.clone(), cfg.clone(), jamba_wgpu::gpu::DType::BF16, 7)?;
    let mut session = model.session(SessionOptions { max_len: 16, chunk: 16 })?;
    session.feed(&[1, 2, 3])?;
    // Mamba: in_proj (with the norm and the conv), x_proj, the scan (with dt's norm and projection and the B and
    // C norms), out_proj. Attention: qkv (with the norm), append, split-k decode, combine, o_proj. MoE: norm,
    // router and routing; SwiGLU; down and combine. Dense MLP: norm and SwiGLU; down.
    let per_layer: usize = cfg
        .layers()
        .iter()
        .map(|kind| {
            let mixer = match kind.mixer {
                Mixer::Mamba => 4,
                Mixer::Attention => 5,
            };
            let ffn = match kind.ffn {
                Ffn::Moe => 3,
                Ffn::Dense => 2,
            };
            mixer + ffn
        })
        .sum();
    // The embedding gather; the head: lm_head (with the final norm) and argmax.
    let want = 1 + per_layer + 2;
    let got = session.decode_dispatches()?;
    println!("v0.1 layout: {got} dispatches per decode step");
    ensure!(got == want, "a decode step at the v0.1 layout records {got} dispatches, expected {want}");
    Ok(())
}

/// Tuning times every kernel choice the context leaves open on the model's own work: on the decode step each row
/// count, codes and words (quantized weights); on a prefill chunk each prefill kernel the adapter runs. It keeps
/// one of each, and the tuned model computes what the untuned one does.
#[test]
fn tuning_times_every_choice_and_computes_the_same() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let dir = fixture_dir("tiny");
    let quantize = Some(Quantization::new(QuantFormat::Q8));
    let load = |tune| Model::load(ctx.clone(), &dir, &LoadOptions { quantize, tune, ..Default::default() });
    let mut tuned = load(Tune::On)?;
    let report = tuned.tuned().clone();
    let decode = report.decode.context("Tune::On did not time the decode step")?;
    let mut timed: Vec<_> = decode.candidates.iter().map(|c| (c.matvec_rows, c.matvec_reads)).collect();
    timed.sort();
    let all: Vec<_> = [1, 2, 4, 8].into_iter().flat_map(|rows| MatvecReads::ALL.map(|r| (rows, r))).collect();
    ensure!(timed == all, "timed {timed:?}, expected every row count with codes, words and quads");
    let prefill = report.prefill.context("Tune::On did not time a prefill chunk")?;
    let kernels: Vec<_> = prefill.candidates.iter().map(|c| c.prefill).collect();
    ensure!(kernels == ctx.prefill_choices(), "prefill timed {kernels:?}");
    for timed in [&decode, &prefill] {
        ensure!(timed.candidates.iter().all(|c| c.ms > 0.0 && c.ms.is_finite()), "{}", timed.summary());
        eprintln!("{}: {}", timed.work, timed.summary());
    }
    // Each default is the context's.
    let (base, default) = (ctx.tuning(), decode.candidates[decode.default]);
    ensure!((default.matvec_rows, default.matvec_reads) == (base.matvec_rows, base.matvec_reads), "{default:?}");
    ensure!(prefill.candidates[prefill.default].prefill == base.prefill, "prefill default {:?}", prefill.default);
    let (chosen, d, p) = (tuned.tuning(), decode.chosen(), prefill.chosen());
    ensure!((chosen.matvec_rows, chosen.matvec_reads, chosen.prefill) == (d.matvec_rows, d.matvec_reads, p.prefill));
    // The prefill kernels were timed with the decode choice already made.
    ensure!(prefill.candidates.iter().all(|c| (c.matvec_rows, c.matvec_reads) == (d.matvec_rows, d.matvec_reads)));

    let untuned = load(Tune::Off)?;
    ensure!(untuned.tuned() == &Tuned::default() && untuned.tuning() == base, "Tune::Off tuned");
    // Auto tunes on GPUs only, models of a GiB or more; the library's default is off.
    ensure!(untuned.weights().size_bytes() < jamba_wgpu::model::tune::AUTO_MIN_BYTES);
    ensure!(!untuned.tunes_at_load(Tune::Auto), "Auto tuned a {} byte model", untuned.weights().size_bytes());
    ensure!(!untuned.tunes_at_load(LoadOptions::default().tune), "the library tunes by default");
    let run = |model: &Model| -> Result<Vec<f32>> {
        let mut s = model.session(options(32, 16))?;
        let mut logits = s.feed_all_logits(&[5, 17, 42, 7, 9, 11, 13, 2, 3, 4, 8, 1])?;
        for _ in 0..3 {
            s.feed(&[s.greedy_token()?])?;
            logits.extend(s.last_logits()?);
        }
        Ok(logits)
    };
    check_close("tuned against untuned prefill and decode", &run(&tuned)?, &run(&untuned)?, 1e-4)?;
    // Tuning again re-times the same choices; a model streaming its experts cannot be tuned.
    let again = tuned.tune()?.clone();
    ensure!(again.decode.map(|t| t.candidates.len()) == Some(all.len()), "a second tuning timed other choices");
    let mut streamed = Model::load(ctx.clone(), &dir, &LoadOptions { expert_slots: Some(2), ..Default::default() })?;
    let e = streamed.tune().expect_err("tuned a streaming model").to_string();
    ensure!(e.contains("streams its experts"), "{e}");
    Ok(())
}

/// The model's graphs are built with the model's tuning: setting one that no plan used yet makes the next
/// session's decode step compile pipelines for it.
#[test]
fn decode_plans_take_the_models_tuning() -> Result<()> {
    let Some(ctx) = own_gpu() else { return Ok(()) };
    let mut model = load(&ctx, &fixture_dir("tiny"))?;
    let run = |model: &Model| -> Result<(u64, u64)> {
        let mut s = model.session(options(16, 8))?;
        s.feed(&[5, 17, 42])?;
        let prefilled = ctx.counts().pipelines;
        s.feed(&[s.greedy_token()?])?;
        Ok((prefilled, ctx.counts().pipelines))
    };
    run(&model)?;
    // Codes where the context reads words (or the other way round): a pipeline constant no plan has used yet.
    let base = ctx.tuning();
    let other = if base.matvec_reads == MatvecReads::Words { MatvecReads::Codes } else { MatvecReads::Words };
    model.set_tuning(jamba_wgpu::gpu::Tuning { matvec_reads: other, ..base });
    let (prefilled, decoded) = run(&model)?;
    ensure!(decoded > prefilled, "the decode step ignored the model's tuning: no new pipeline");
    Ok(())
}

/// `run --tune on --json` reports what it timed and chose; `off` never tunes, nor does `auto` for the default model
/// (too small to pay for it on a GPU; never on a CPU adapter).
#[test]
fn cli_run_reports_tuning_in_json() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let run = |tune: &str| -> Result<serde_json::Value> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jamba-wgpu"))
            .args(["run", "--prompt", "The secret", "--max-new-tokens", "2", "--context", "32", "--json", "--tune", tune])
            .output()?;
        ensure!(out.status.success(), "run --tune {tune} failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let tuned = run("on")?;
    let (decode, prefill) = (&tuned["tuning"]["decode"], &tuned["tuning"]["prefill"]);
    // The default model's weights are floats: each row count, read by words and by quads.
    ensure!(decode["candidates"].as_array().map(Vec::len) == Some(2 * 4), "decode timed {decode}");
    ensure!(prefill["candidates"].as_array().map(Vec::len) == Some(ctx.prefill_choices().len()), "prefill timed {prefill}");
    ensure!(decode["chosen"].as_u64().is_some() && prefill["work"] == "prefill chunk of 256 tokens", "{tuned}");
    ensure!(run("off")?.get("tuning").is_none(), "--tune off tuned");
    ensure!(run("auto")?.get("tuning").is_none(), "--tune auto tuned the default model");
    Ok(())
}

/// A model whose weights exceed what the adapter can hold is refused before anything is allocated, saying what
/// it needs and what there is: on lavapipe, whose buffers are host memory, loading 1.5-Large would otherwise take
/// memory until the system ran out. What the adapter can hold is known on Vulkan and on CPU adapters.
#[test]
fn a_model_larger_than_the_adapter_is_refused_before_any_allocation() -> Result<()> {
    let Some(ctx) = own_gpu() else { return Ok(()) };
    let known = ctx.is_cpu() || ctx.info().backend == wgpu::Backend::Vulkan;
    let Some(capacity) = ctx.memory_capacity() else {
        ensure!(!known, "{} ({:?}) says nothing of its memory", ctx.info().name, ctx.info().backend);
        return Ok(());
    };
    ensure!(capacity.bytes > 0, "a capacity of 0 bytes: {capacity:?}");
    // 398B parameters in f32: 1.6 TB, more than any adapter or host.
    let cfg = jamba_wgpu::bench::preset_config("1.5-large")?;
    let err = Model::random(ctx.clone(), cfg, jamba_wgpu::gpu::DType::F32, 1).err().context("1.5-Large in f32 loaded")?;
    let jamba_wgpu::Error::OutOfMemory { need, have, memory, .. } = &err else { anyhow::bail!("not OutOfMemory: {err}") };
    ensure!(*need > 1_000_000_000_000 && *need > *have && *memory == capacity.what, "{err}");
    // A CPU adapter's figure is the host's available memory, which moves between two readings.
    ensure!(ctx.is_cpu() || *have == capacity.bytes, "{err}: the adapter has {capacity:?}");
    let message = err.to_string();
    ensure!(message.contains(&ctx.info().name) && message.contains(&need.to_string()), "{message}");
    ensure!(ctx.memory() == (0, 0), "allocated before refusing: (live, peak) = {:?}", ctx.memory());
    Ok(())
}
