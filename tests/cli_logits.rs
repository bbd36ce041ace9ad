//! `jamba-wgpu logits` end to end: the binary writes [T, vocab] logits that match transformers, for prompts of
//! more than 1,000 tokens too. And the binary's errors for a missing file or a bad option: one clear line.

mod common;

use std::process::Command;

use anyhow::{ensure, Result};
use common::{check_close, fixture_dir, Expected, TempDir};

fn jamba_wgpu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jamba-wgpu"))
}

/// 1,200 ids: p300 four times. By causality the first 300 rows are transformers' p300 logits.
#[test]
fn long_prompt_ids_write_every_position() -> Result<()> {
    let dir = fixture_dir("tiny");
    let expected = Expected::open(&dir)?;
    let p300 = expected.ids("p300.input_ids")?;
    let ids: Vec<String> = p300.iter().cycle().take(4 * p300.len()).map(u32::to_string).collect();
    let tmp = TempDir::new("cli-long")?;
    let out = tmp.path().join("logits.safetensors");
    let status = jamba_wgpu()
        .args(["logits", "--device", "cpu", "--prompt-ids", &ids.join(",")])
        .arg("--model")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .status()?;
    ensure!(status.success(), "jamba-wgpu logits failed: {status}");

    let written = Expected::open_file(&out)?;
    let (shape, logits) = written.f32("logits")?;
    assert_eq!(shape, vec![1200, 512]);
    let (_, want) = expected.f32("p300.logits")?;
    check_close("first 300 rows of a 1,200-token prompt", &logits[..want.len()], &want, 1e-4)?;
    Ok(())
}

/// --prompt TEXT goes through the tokenizer; with --no-bos it is the fixture's text prompt exactly.
#[test]
fn text_prompt_matches_fixture() -> Result<()> {
    let dir = fixture_dir("tiny");
    let expected = Expected::open(&dir)?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    let text = json["text_prompt"].as_str().unwrap_or_default();
    let tmp = TempDir::new("cli-text")?;
    let out = tmp.path().join("logits.safetensors");
    let status = jamba_wgpu()
        .args(["logits", "--no-bos", "--prompt", text])
        .arg("--model")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .status()?;
    ensure!(status.success(), "jamba-wgpu logits failed: {status}");
    let (_, logits) = Expected::open_file(&out)?.f32("logits")?;
    let (_, want) = expected.f32("text.logits")?;
    check_close("text prompt logits", &logits, &want, 1e-4)?;
    Ok(())
}

/// The same command on the GPU writes the same logits (within the GPU tolerance), prefilled in chunks of 100,
/// with the adapter's prefill kernel and with each GPU kernel chosen by `--prefill-kernel`.
#[test]
fn gpu_device_writes_the_same_logits() -> Result<()> {
    let Some(_) = common::gpu() else { return Ok(()) };
    let tmp = TempDir::new("cli-gpu")?;
    let dir = fixture_dir("tiny");
    let expected = Expected::open(&dir)?;
    let ids = expected.ids("p300.input_ids")?;
    let (_, want) = expected.f32("p300.logits")?;
    for kernel in [None, Some("tiled"), Some("wide")] {
        let out = tmp.path().join("gpu.safetensors");
        let mut command = jamba_wgpu();
        command.args(["logits", "--device", "gpu", "--chunk", "100", "--prompt-ids"]);
        command.arg(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        command.arg("--model").arg(&dir).arg("--out").arg(&out);
        if let Some(kernel) = kernel {
            command.args(["--prefill-kernel", kernel]);
        }
        let status = command.status()?;
        ensure!(status.success(), "jamba-wgpu logits --device gpu (prefill kernel {kernel:?}) failed: {status}");
        let (shape, logits) = Expected::open_file(&out)?.f32("logits")?;
        ensure!(shape == [300, 512], "shape {shape:?}");
        check_close(&format!("gpu logits, prefill kernel {kernel:?}"), &logits, &want, 1e-3)?;
    }
    Ok(())
}

/// A model directory that is not there, an output file that cannot be written: the CLI fails with one line that
/// names the file and gives the reason once (errors that print their cause and also return it as their source
/// used to say it twice).
#[test]
fn a_missing_model_or_output_directory_is_one_clear_line() -> Result<()> {
    let tmp = TempDir::new("cli-missing")?;
    let absent = tmp.path().join("absent");
    let model = fixture_dir("tiny");
    // (model, output, the file the error names)
    let cases = [
        (&absent, tmp.path().join("logits.safetensors"), absent.join("config.json")),
        (&model, absent.join("x"), absent.join("x")),
    ];
    for (model, out, named) in cases {
        let run = jamba_wgpu()
            .args(["logits", "--device", "cpu", "--prompt-ids", "1"])
            .arg("--model")
            .arg(model)
            .arg("--out")
            .arg(&out)
            .output()?;
        let stderr = String::from_utf8_lossy(&run.stderr);
        ensure!(!run.status.success(), "succeeded: {stderr}");
        ensure!(stderr.lines().count() == 1, "not one line: {stderr}");
        ensure!(stderr.contains(&*named.to_string_lossy()), "{} is not named: {stderr}", named.display());
        let said = stderr.matches("os error 2").count();
        ensure!(said == 1, "the reason (not found) is said {said} times, not once: {stderr}");
    }
    Ok(())
}

/// `bench --config` with a path that is not there names the file (it used to say "unknown preset"), and a bad
/// --config or --dtype is refused before an adapter is opened: these run with no adapter at all.
#[test]
fn bench_config_errors_name_the_config() -> Result<()> {
    let tmp = TempDir::new("cli-bench-config")?;
    let absent = tmp.path().join("absent.json");
    let absent = absent.to_string_lossy();
    let cases: [(&[&str], &str); 4] = [
        (&["--config", &absent, "--random-weights"], &absent),
        (&["--config", "2.0-huge", "--random-weights"], "unknown preset `2.0-huge`"),
        (&["--config", "v0.1"], "--config needs --random-weights"),
        (&["--config", "v0.1", "--random-weights", "--dtype", "f8"], "--dtype f8"),
    ];
    for (args, named) in cases {
        // No adapter: a context opened before the check would fail on this one with another message.
        let run = jamba_wgpu().arg("bench").args(args).env("WGPU_BACKEND", "none-such").output()?;
        let stderr = String::from_utf8_lossy(&run.stderr);
        ensure!(!run.status.success(), "{args:?} succeeded: {stderr}");
        ensure!(stderr.contains(named), "{args:?}: `{named}` is not named: {stderr}");
    }
    Ok(())
}

/// Counts that leave nothing to time are refused, before any adapter is opened, rather than quietly raised.
#[test]
fn bench_counts_are_checked_first() -> Result<()> {
    let cases: [(&str, &str, &str); 5] = [
        ("--prompt-len", "0", "0 prompt tokens: at least 1"),
        ("--gen-len", "1", "a decode rate needs a second): at least 2"),
        ("--chunk", "0", "0 prompt tokens per prefill chunk: at least 1"),
        ("--runs", "0", "0 timed runs: at least 1"),
        ("--batch", "0", "0 sequences in the batch: at least 1"),
    ];
    for (flag, value, named) in cases {
        let run = jamba_wgpu().args(["bench", flag, value]).env("WGPU_BACKEND", "none-such").output()?;
        let stderr = String::from_utf8_lossy(&run.stderr);
        ensure!(!run.status.success(), "{flag} {value} succeeded: {stderr}");
        ensure!(stderr.contains(named), "{flag} {value}: `{named}` is not said: {stderr}");
    }
    Ok(())
}
