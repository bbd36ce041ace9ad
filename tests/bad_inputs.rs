//! Bad checkpoints, configs and requests: each one is a clear, typed error that names the thing at fault, and
//! none panics. Bad checkpoints are written into a temporary directory from the `tiny` fixture.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use common::{fixture_dir, TempDir};
use jamba_wgpu::config::JambaConfig;
use jamba_wgpu::reference::ReferenceModel;
use jamba_wgpu::weights::Checkpoint;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// One tensor to write: name, dtype, shape, bytes.
type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// The tensors of tiny's model.safetensors.
fn tiny_tensors() -> Result<Vec<Tensor>> {
    let bytes = std::fs::read(fixture_dir("tiny").join("model.safetensors"))?;
    let st = SafeTensors::deserialize(&bytes)?;
    Ok(st.iter().map(|(name, t)| (name.to_string(), t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect())
}

/// A checkpoint directory `dir/sub`: tiny's config.json and `tensors` as model.safetensors.
fn write_checkpoint(dir: &Path, sub: &str, tensors: &[Tensor]) -> Result<PathBuf> {
    let out = dir.join(sub);
    std::fs::create_dir_all(&out)?;
    std::fs::copy(fixture_dir("tiny").join("config.json"), out.join("config.json"))?;
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| Ok((name.clone(), TensorView::new(*dtype, shape.clone(), data)?)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::write(out.join("model.safetensors"), safetensors::serialize(views, None)?)?;
    Ok(out)
}

/// Loads a checkpoint directory the way the runtime does: config, checkpoint, model.
fn load(dir: &Path) -> jamba_wgpu::Result<()> {
    let cfg = JambaConfig::from_file(dir.join("config.json"))?;
    let checkpoint = Checkpoint::open(dir)?;
    checkpoint.validate(&cfg)?;
    ReferenceModel::new(&cfg, &checkpoint).map(|_| ())
}

/// tiny's config.json with one field replaced (`None`: removed).
fn tiny_config_with(field: &str, value: Option<serde_json::Value>) -> jamba_wgpu::Result<JambaConfig> {
    let text = std::fs::read_to_string(fixture_dir("tiny").join("config.json")).unwrap_or_default();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        match value {
            Some(v) => map.insert(field.to_string(), v),
            None => map.remove(field),
        };
    }
    JambaConfig::from_json_str(&json.to_string())
}

/// Feeds `ids` to the tiny reference model.
fn run_tiny(ids: &[u32]) -> jamba_wgpu::Result<()> {
    let dir = fixture_dir("tiny");
    let cfg = JambaConfig::from_file(dir.join("config.json"))?;
    let model = ReferenceModel::new(&cfg, &Checkpoint::open(&dir)?)?;
    model.forward(&mut model.new_state(), ids).map(|_| ())
}

struct Case {
    name: &'static str,
    run: Box<dyn Fn() -> jamba_wgpu::Result<()>>,
    /// The error's variant (its Debug name) and fragments its message must contain.
    variant: &'static str,
    message: Vec<String>,
}

fn case(
    name: &'static str,
    variant: &'static str,
    message: &[&str],
    run: impl Fn() -> jamba_wgpu::Result<()> + 'static,
) -> Case {
    Case { name, run: Box::new(run), variant, message: message.iter().map(|s| s.to_string()).collect() }
}

#[test]
fn every_bad_input_is_a_clear_error() -> Result<()> {
    let tmp = TempDir::new("bad-inputs")?;
    let good = tiny_tensors()?;
    let mut cases = Vec::new();

    let missing_name = "model.layers.2.self_attn.k_proj.weight";
    let missing: Vec<Tensor> = good.iter().filter(|t| t.0 != missing_name).cloned().collect();
    let dir = write_checkpoint(tmp.path(), "missing-tensor", &missing)?;
    cases.push(case("missing tensor", "Tensor", &[missing_name, "missing"], move || load(&dir)));

    let shape_name = "model.layers.0.mamba.A_log";
    let mut reshaped = good.clone();
    reshaped.iter_mut().filter(|t| t.0 == shape_name).for_each(|t| t.2 = vec![8, 128]);
    let dir = write_checkpoint(tmp.path(), "wrong-shape", &reshaped)?;
    let file = dir.join("model.safetensors").display().to_string();
    let message = [shape_name, file.as_str(), "expected shape [128, 8]", "found [8, 128]"];
    cases.push(case("wrong shape", "Tensor", &message, move || load(&dir)));

    let dtype_name = "model.layers.0.mamba.D";
    let mut retyped = good.clone();
    retyped.iter_mut().filter(|t| t.0 == dtype_name).for_each(|t| t.1 = Dtype::I32);
    let dir = write_checkpoint(tmp.path(), "wrong-dtype", &retyped)?;
    cases.push(case("int tensor", "Tensor", &[dtype_name, "I32", "not supported"], move || load(&dir)));

    let dir = write_checkpoint(tmp.path(), "truncated", &good)?;
    let bytes = std::fs::read(dir.join("model.safetensors"))?;
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 1000])?;
    cases.push(case("truncated file", "Checkpoint", &["model.safetensors", "truncated"], move || load(&dir)));

    let dir = write_checkpoint(tmp.path(), "no-header", &good)?;
    std::fs::write(dir.join("model.safetensors"), b"abc")?;
    cases.push(case("3-byte file", "Checkpoint", &["model.safetensors", "no header"], move || load(&dir)));

    let dir = write_checkpoint(tmp.path(), "empty-file", &good)?;
    std::fs::write(dir.join("model.safetensors"), b"")?;
    cases.push(case("empty file", "Checkpoint", &["model.safetensors", "0 bytes"], move || load(&dir)));

    let dir = write_checkpoint(tmp.path(), "bad-json", &good)?;
    let mut bytes = 16u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{not json at all");
    std::fs::write(dir.join("model.safetensors"), bytes)?;
    cases.push(case("header not JSON", "Checkpoint", &["model.safetensors", "header"], move || load(&dir)));

    let dir = tmp.path().join("empty-dir");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(fixture_dir("tiny").join("config.json"), dir.join("config.json"))?;
    cases.push(case("no weights", "Checkpoint", &["model.safetensors", "empty-dir"], move || load(&dir)));

    let dir = copy_sharded(tmp.path(), "missing-shard")?;
    std::fs::remove_file(dir.join("model-00003-of-00006.safetensors"))?;
    let message = ["model-00003-of-00006.safetensors", "missing", "index"];
    cases.push(case("shard named in the index but absent", "Checkpoint", &message, move || load(&dir)));

    let dir = copy_sharded(tmp.path(), "index-disagrees")?;
    let index = std::fs::read_to_string(dir.join("model.safetensors.index.json"))?;
    let index = index.replacen(
        r#""lm_head.weight": "model-00001-of-00006.safetensors""#,
        r#""lm_head.weight": "model-00002-of-00006.safetensors""#,
        1,
    );
    std::fs::write(dir.join("model.safetensors.index.json"), index)?;
    let message = ["lm_head.weight", "model-00002-of-00006.safetensors", "does not hold it"];
    cases.push(case("index names the wrong shard", "Checkpoint", &message, move || load(&dir)));

    let config_cases: [(&'static str, &str, Option<serde_json::Value>, &[&str]); 8] = [
        (
            "attention offset >= period",
            "attn_layer_offset",
            Some(4.into()),
            &["attn_layer_offset", "attn_layer_period"],
        ),
        ("expert offset >= period", "expert_layer_offset", Some(2.into()), &["expert_layer_offset"]),
        ("kv heads do not divide heads", "num_key_value_heads", Some(3.into()), &["num_key_value_heads", "divide"]),
        ("top-k > experts", "num_experts_per_tok", Some(5.into()), &["num_experts_per_tok", "num_experts (4)"]),
        ("missing field", "hidden_size", None, &["hidden_size", "missing"]),
        ("wrong type", "mamba_d_state", Some("eight".into()), &["mamba_d_state", "integer"]),
        ("zero size", "vocab_size", Some(0.into()), &["vocab_size", "greater than 0"]),
        ("unknown activation", "hidden_act", Some("gelu".into()), &["hidden_act", "gelu"]),
    ];
    for (name, field, value, message) in config_cases {
        cases.push(case(name, "Config", message, move || tiny_config_with(field, value.clone()).map(|_| ())));
    }

    cases.push(case("token id >= vocab", "Input", &["token id 512", "vocab_size 512"], || run_tiny(&[5, 512])));
    cases.push(case("empty prompt", "Input", &["no token ids"], || run_tiny(&[])));
    cases.push(case("state of another model", "Input", &["state has 32 layers", "another model"], || {
        let (tiny, v01) = (fixture_dir("tiny"), fixture_dir("v01-shape-lite"));
        let model = |dir: &Path| -> jamba_wgpu::Result<ReferenceModel> {
            ReferenceModel::new(&JambaConfig::from_file(dir.join("config.json"))?, &Checkpoint::open(dir)?)
        };
        let mut foreign_state = model(&v01)?.new_state();
        model(&tiny)?.forward(&mut foreign_state, &[5]).map(|_| ())
    }));

    let mut failures = Vec::new();
    for c in &cases {
        match catch_unwind(AssertUnwindSafe(|| (c.run)())) {
            Err(_) => failures.push(format!("{}: panicked", c.name)),
            Ok(Ok(())) => failures.push(format!("{}: no error", c.name)),
            Ok(Err(e)) => {
                let (debug, shown) = (format!("{e:?}"), e.to_string());
                println!("{:<40} {shown}", c.name);
                let missing: Vec<&String> = c.message.iter().filter(|m| !shown.contains(m.as_str())).collect();
                if !debug.starts_with(c.variant) || !missing.is_empty() {
                    failures
                        .push(format!("{}: got {debug} / `{shown}`, wanted {} with {missing:?}", c.name, c.variant));
                }
            }
        }
    }
    if !failures.is_empty() {
        bail!("{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    }
    Ok(())
}

/// A copy of the tiny-sharded checkpoint under `dir/sub`.
fn copy_sharded(dir: &Path, sub: &str) -> Result<PathBuf> {
    let out = dir.join(sub);
    std::fs::create_dir_all(&out)?;
    for entry in std::fs::read_dir(fixture_dir("tiny-sharded"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), out.join(entry.file_name()))?;
    }
    Ok(out)
}
