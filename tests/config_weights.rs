//! config.json parsing and the layer schedule, the tensor list a config implies, and the checkpoint loader on
//! every fixture layout (single f32 file, bf16, six shards, static bytes).

mod common;

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use common::{default_model_dir, fixture_dir, FIXTURES};
use jamba_wgpu::config::{Ffn, JambaConfig, Mixer};
use jamba_wgpu::weights::{expected_tensors, Checkpoint, DType};

#[test]
fn layer_schedule_matches_transformers() -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let cfg = JambaConfig::from_file(dir.join("config.json"))?;
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
        let block_types: Vec<&str> = cfg
            .layers()
            .iter()
            .map(|k| match k.mixer {
                Mixer::Attention => "attention",
                Mixer::Mamba => "mamba",
            })
            .collect();
        let experts: Vec<usize> =
            cfg.layers().iter().map(|k| if k.ffn == Ffn::Moe { cfg.num_experts } else { 1 }).collect();
        assert_eq!(block_types, serde_json::from_value::<Vec<String>>(json["layers_block_type"].clone())?);
        assert_eq!(experts, serde_json::from_value::<Vec<usize>>(json["layers_num_experts"].clone())?);
    }
    Ok(())
}

#[test]
fn config_variants_transformers_writes() -> Result<()> {
    let base = std::fs::read_to_string(fixture_dir("tiny").join("config.json"))?;
    let mut json: serde_json::Value = serde_json::from_str(&base)?;
    let map = json.as_object_mut().context("object")?;
    // Older transformers: torch_dtype and num_local_experts; "auto" dt rank; eos as a list; a null pad id;
    // fields we do not know.
    map.remove("dtype");
    map.insert("torch_dtype".into(), "bfloat16".into());
    let experts = map.remove("num_experts").context("num_experts")?;
    map.insert("num_local_experts".into(), experts);
    map.insert("mamba_dt_rank".into(), "auto".into());
    map.insert("eos_token_id".into(), serde_json::json!([2, 3]));
    map.insert("pad_token_id".into(), serde_json::Value::Null);
    map.insert("some_future_field".into(), serde_json::json!({"nested": [1, 2]}));
    let cfg = JambaConfig::from_json_str(&json.to_string())?;
    assert_eq!(cfg.dtype.as_deref(), Some("bfloat16"));
    assert_eq!(cfg.num_experts, 4);
    assert_eq!(cfg.dt_rank(), 4); // ceil(64 / 16)
    assert_eq!((cfg.eos_token_id.clone(), cfg.pad_token_id), (vec![2, 3], None));
    Ok(())
}

#[test]
fn expected_tensors_follow_the_config_flags() -> Result<()> {
    let mut cfg = JambaConfig::from_file(fixture_dir("tiny").join("config.json"))?;
    let names = |cfg: &JambaConfig| -> BTreeSet<String> { expected_tensors(cfg).into_iter().map(|t| t.0).collect() };
    let base = names(&cfg);
    assert!(base.contains("lm_head.weight") && base.contains("model.layers.0.mamba.conv1d.bias"));
    cfg.tie_word_embeddings = true;
    cfg.mamba_conv_bias = false;
    cfg.mamba_proj_bias = true;
    let changed = names(&cfg);
    assert!(!changed.contains("lm_head.weight") && !changed.contains("model.layers.0.mamba.conv1d.bias"));
    assert!(
        changed.contains("model.layers.0.mamba.in_proj.bias") && changed.contains("model.layers.7.mamba.out_proj.bias")
    );
    // One expert means a dense MLP in every layer, as transformers builds it.
    cfg.num_experts = 1;
    cfg.num_experts_per_tok = 1;
    assert!(cfg.layers().iter().all(|k| k.ffn == Ffn::Dense));
    assert!(names(&cfg).contains("model.layers.1.feed_forward.gate_proj.weight"));
    Ok(())
}

/// Every fixture holds exactly the tensors its config implies, with the right shapes and dtypes.
#[test]
fn checkpoints_hold_exactly_the_expected_tensors() -> Result<()> {
    let dirs = FIXTURES.iter().map(|n| fixture_dir(n)).chain([default_model_dir()]);
    for dir in dirs {
        let cfg = JambaConfig::from_file(dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(&dir)?;
        checkpoint.validate(&cfg)?;
        let expected: BTreeSet<String> = expected_tensors(&cfg).into_iter().map(|t| t.0).collect();
        let found: BTreeSet<String> = checkpoint.names().into_iter().map(str::to_string).collect();
        assert_eq!(expected, found, "{}", dir.display());
    }
    Ok(())
}

#[test]
fn sharded_checkpoint_spans_every_shard() -> Result<()> {
    let checkpoint = Checkpoint::open(fixture_dir("tiny-sharded"))?;
    let files: BTreeSet<String> = checkpoint
        .names()
        .into_iter()
        .map(|n| Ok(checkpoint.tensor(n)?.file.display().to_string()))
        .collect::<Result<_>>()?;
    assert_eq!(files.len(), 6);
    let lm_head = checkpoint.tensor_shaped("lm_head.weight", &[512, 64])?;
    assert!(lm_head.file.ends_with("model-00001-of-00006.safetensors"));
    Ok(())
}

/// tiny-bf16 is tiny rounded to bf16: upcasting it is exact, so it equals round-to-nearest-even of tiny's f32.
#[test]
fn bf16_upcast_is_exact() -> Result<()> {
    let (f32s, bf16s) = (Checkpoint::open(fixture_dir("tiny"))?, Checkpoint::open(fixture_dir("tiny-bf16"))?);
    assert_eq!((DType::BF16.size_bytes(), DType::F32.size_bytes()), (2, 4));
    for name in f32s.names() {
        let (a, b) = (f32s.tensor(name)?, bf16s.tensor(name)?);
        assert_eq!((a.dtype, b.dtype, &a.shape), (DType::F32, DType::BF16, &b.shape), "{name}");
        let rounded: Vec<f32> = a.to_f32().iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
        assert_eq!(rounded, b.to_f32(), "{name}");
    }
    Ok(())
}
