//! jamba-tiny-quotes, the model to embed in the binary: bf16 weights computed in f32 against transformers.
//!
//! Max |diff| seen vs `logits_bf16_weights_f32_compute` (257 positions x 4096 logits): 1.2e-5 (tolerance 1e-4).

mod common;

use anyhow::{Context, Result};
use common::{check_close, default_model_dir, load_model, Expected};
use jamba_wgpu::config::JambaConfig;
use jamba_wgpu::reference::ReferenceModel;
use jamba_wgpu::weights::{Checkpoint, DType};

/// BOS + the first 256 held-out tokens.
#[test]
fn logits_match_bf16_reference() -> Result<()> {
    let dir = default_model_dir();
    let (_, model) = load_model(&dir)?;
    let expected = Expected::open(&dir)?;
    let ids = expected.ids("input_ids")?;
    let logits = model.forward(&mut model.new_state(), &ids)?;
    let (_, want) = expected.f32("logits_bf16_weights_f32_compute")?;
    let diff = check_close("jamba-tiny-quotes logits", &logits, &want, 1e-4)?;
    println!("jamba-tiny-quotes: logits max diff {diff:e}");
    Ok(())
}

/// transformers' greedy ids: stopping at EOS, and 40 steps ignoring EOS.
#[test]
fn greedy_matches_transformers() -> Result<()> {
    let dir = default_model_dir();
    let (cfg, model) = load_model(&dir)?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    for p in json["prompts"].as_array().context("prompts")? {
        let prompt: Vec<u32> = serde_json::from_value(p["prompt_ids"].clone())?;
        let stop_at_eos: Vec<u32> = serde_json::from_value(p["greedy_ids"].clone())?;
        let no_stop: Vec<u32> = serde_json::from_value(p["greedy_ids_40_no_eos_stop"].clone())?;
        let got = model.greedy(&mut model.new_state(), &prompt, 40, &cfg.eos_token_id)?;
        assert_eq!(got.ids, stop_at_eos, "prompt {}", p["prompt"]);
        let got = model.greedy(&mut model.new_state(), &prompt, 40, &[])?;
        assert_eq!(got.ids, no_stop, "prompt {} (no EOS stop)", p["prompt"]);
    }
    Ok(())
}

/// The same checkpoint from static bytes (as `include_bytes!` would give) equals the memory-mapped one.
#[test]
fn static_bytes_checkpoint_equals_mapped() -> Result<()> {
    let dir = default_model_dir();
    let bytes: &'static [u8] = Box::leak(std::fs::read(dir.join("model.safetensors"))?.into_boxed_slice());
    let embedded = Checkpoint::from_static("embedded:jamba-tiny-quotes", bytes)?;
    let mapped = Checkpoint::open(&dir)?;
    assert_eq!(embedded.names(), mapped.names());
    assert_eq!(embedded.main_dtype(), Some(DType::BF16));
    let cfg = JambaConfig::from_file(dir.join("config.json"))?;
    embedded.validate(&cfg)?;
    let (a, b) = (ReferenceModel::new(&cfg, &embedded)?, ReferenceModel::new(&cfg, &mapped)?);
    let ids = [1, 319, 3465, 291, 678, 302];
    assert_eq!(a.forward(&mut a.new_state(), &ids)?, b.forward(&mut b.new_state(), &ids)?);
    Ok(())
}
