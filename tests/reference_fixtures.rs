//! The CPU reference forward against transformers' outputs on the golden fixtures (tests/fixtures/*), and
//! against itself: cached decode and chunked prefill must equal the one-shot forward.
//!
//! Max |diff| seen (f32 reference vs transformers, on this machine), over p1/p7/p64/p300/text (tolerance 1e-4):
//!   logits: tiny 1.5e-5, tiny-bf16 9.8e-6, tiny-sharded 1.1e-5, v01-shape-lite 3.8e-5;
//!   hidden states + layer outputs + router logits (p1, p7, p64): tiny 5.5e-6, tiny-bf16 5.8e-6,
//!   tiny-sharded 7.0e-6, v01-shape-lite 2.3e-5;
//!   gen1 step logits: at most 1.9e-5 (v01-shape-lite), gen1 full logits at most 2.8e-5;
//!   cached decode and chunked prefill vs one-shot: 0 (the same f32 operations in the same order).

mod common;

use anyhow::Result;
use common::{check_close, fixture_dir, load_model, Expected, FIXTURES};

const LOGIT_TOL: f32 = 1e-4;
const PROMPTS: [&str; 5] = ["p1", "p7", "p64", "p300", "text"];

#[test]
fn prompt_logits_match_transformers() -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let (_, model) = load_model(&dir)?;
        let expected = Expected::open(&dir)?;
        let mut worst = 0.0f32;
        for prompt in PROMPTS {
            let ids = expected.ids(&format!("{prompt}.input_ids"))?;
            let logits = model.forward(&mut model.new_state(), &ids)?;
            let (_, want) = expected.f32(&format!("{prompt}.logits"))?;
            worst = worst.max(check_close(&format!("{name} {prompt} logits"), &logits, &want, LOGIT_TOL)?);
        }
        println!("{name}: logits max diff {worst:e}");
    }
    Ok(())
}

#[test]
fn hidden_states_layer_outputs_router_logits_match_transformers() -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let (_, model) = load_model(&dir)?;
        let expected = Expected::open(&dir)?;
        let mut worst = 0.0f32;
        for prompt in ["p1", "p7", "p64"] {
            if !expected.has(&format!("{prompt}.hidden_states")) {
                continue;
            }
            let ids = expected.ids(&format!("{prompt}.input_ids"))?;
            let trace = model.forward_traced(&mut model.new_state(), &ids)?;
            let checks = [
                ("hidden_states", trace.hidden_states.concat()),
                ("layer_outputs", trace.layer_outputs.concat()),
                ("router_logits", trace.router_logits.concat()),
            ];
            for (key, got) in checks {
                let (_, want) = expected.f32(&format!("{prompt}.{key}"))?;
                worst = worst.max(check_close(&format!("{name} {prompt} {key}"), &got, &want, LOGIT_TOL)?);
            }
        }
        println!("{name}: hidden states, layer outputs, router logits max diff {worst:e}");
    }
    Ok(())
}

/// gen0's prompt keeps a top-1 margin of at least 0.05 at every step: the ids must be identical.
#[test]
fn gen0_greedy_ids_identical() -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let (_, model) = load_model(&dir)?;
        let expected = Expected::open(&dir)?;
        let prompt = expected.ids("gen0.prompt_ids")?;
        let output = expected.ids("gen0.output_ids")?;
        let generation = model.greedy(&mut model.new_state(), &prompt, output.len() - prompt.len(), &[])?;
        assert_eq!(generation.ids, output[prompt.len()..], "{name}: gen0 greedy ids");
        let (_, want) = expected.f32("gen0.step_logits")?;
        check_close(&format!("{name} gen0 step logits"), &generation.step_logits, &want, LOGIT_TOL)?;
    }
    Ok(())
}

/// gen1 (the text prompt) has margins down to 0.002: compare the logits of every step, and the full forward
/// over prompt + generated ids.
#[test]
fn gen1_step_and_full_logits_close() -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let (_, model) = load_model(&dir)?;
        let expected = Expected::open(&dir)?;
        let prompt = expected.ids("gen1.prompt_ids")?;
        let output = expected.ids("gen1.output_ids")?;
        let generation = model.greedy(&mut model.new_state(), &prompt, output.len() - prompt.len(), &[])?;
        let (_, want) = expected.f32("gen1.step_logits")?;
        let step = check_close(&format!("{name} gen1 step logits"), &generation.step_logits, &want, LOGIT_TOL)?;
        let full_logits = model.forward(&mut model.new_state(), &output)?;
        let (_, want) = expected.f32("gen1.full_logits")?;
        let full = check_close(&format!("{name} gen1 full logits"), &full_logits, &want, LOGIT_TOL)?;
        println!("{name}: gen1 step logits max diff {step:e}, full logits {full:e}");
    }
    Ok(())
}

/// Prefill one token, then feed the rest one at a time: each step's logits equal the one-shot forward's row.
#[test]
fn cached_decode_equals_full_forward() -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let (cfg, model) = load_model(&dir)?;
        let ids = Expected::open(&dir)?.ids("p64.input_ids")?;
        let full = model.forward(&mut model.new_state(), &ids)?;
        let mut state = model.new_state();
        let mut stepped = Vec::with_capacity(full.len());
        for &id in &ids {
            stepped.extend(model.forward(&mut state, &[id])?);
        }
        assert_eq!(state.position, ids.len());
        let diff = check_close(&format!("{name} cached decode"), &stepped, &full, 1e-5)?;
        println!("{name}: token-by-token vs one-shot max diff {diff:e} (vocab {})", cfg.vocab_size);
    }
    Ok(())
}

/// A prompt fed in uneven pieces carries conv, SSM and KV state across calls and equals the one-shot forward.
#[test]
fn chunked_prefill_equals_full_forward() -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let (_, model) = load_model(&dir)?;
        let ids = Expected::open(&dir)?.ids("p300.input_ids")?;
        let full = model.forward(&mut model.new_state(), &ids)?;
        let mut state = model.new_state();
        let mut chunked = Vec::with_capacity(full.len());
        let mut start = 0;
        for len in [1, 2, 3, 50, 117, 127] {
            chunked.extend(model.forward(&mut state, &ids[start..start + len])?);
            start += len;
        }
        assert_eq!(start, ids.len());
        let diff = check_close(&format!("{name} chunked prefill"), &chunked, &full, 1e-5)?;
        println!("{name}: chunked vs one-shot max diff {diff:e}");
    }
    Ok(())
}
