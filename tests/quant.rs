//! Quantized weights (q8, q4): the CPU reference formats, the GPU kernels reading them (matmul, the MoE experts)
//! against the reference on the dequantized weights, and the fidelity of quantized models against unquantized
//! ones (top-1 agreement of logits on the fixtures; perplexity on the default model's held-out text).

mod common;

use common::{assert_close, gpu, Rng};
use jamba_wgpu::gpu::{Context, DType, Graph, Tensor};
use jamba_wgpu::kernels::matmul;
use jamba_wgpu::reference;
use jamba_wgpu::weights::quant::{self, QuantFormat};

/// Quantizes `w`, uploads the packed rows; returns the tensor and the dequantized values.
fn upload_quantized(ctx: &Context, label: &str, format: QuantFormat, w: &[f32], shape: &[usize]) -> (Tensor, Vec<f32>) {
    common::upload_weights(ctx, label, shape, w, DType::Quant(format))
}

/// K for a format: any for q8, a multiple of the group for q4.
fn k_for(format: QuantFormat, k: usize) -> usize {
    format.group_size().map_or(k, |g| k.div_ceil(g) * g)
}

// ---- the reference formats (no GPU) ----

#[test]
fn quantization_error_is_within_half_a_step() {
    let mut rng = Rng::new(11);
    let (rows, cols) = (7, 128);
    let mut w = rng.vec(rows * cols, 1.0);
    w[5] = 3.0; // an outlier
    w[cols..2 * cols].fill(0.0); // an all-zero row
    for format in QuantFormat::ALL {
        let q = quant::quantize(format, &w, rows, cols).unwrap();
        let back = q.dequantize();
        let group = format.group_size().unwrap_or(cols);
        for (r, (row, got)) in w.chunks(cols).zip(back.chunks(cols)).enumerate() {
            for (g, (values, got)) in row.chunks(group).zip(got.chunks(group)).enumerate() {
                let (lo, hi) = values.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let amax = lo.abs().max(hi.abs());
                // Half a quantization step, plus f16 rounding of the scale (and of the min) for q4. Symmetric q4
                // maps the extreme to -8 (llama.cpp's Q4_0), so the far side clips at 7 steps: a whole step there.
                let tol = match format {
                    QuantFormat::Q8 => amax / 127.0 * 0.5,
                    QuantFormat::Q4 { min: false, .. } => amax / 8.0,
                    QuantFormat::Q4 { min: true, .. } => (hi - lo) / 15.0 * 0.5,
                } + amax * 2e-3
                    + 1e-7;
                for (&v, &b) in values.iter().zip(got) {
                    assert!((v - b).abs() <= tol, "{format} row {r} group {g}: {v} -> {b} (tol {tol})");
                }
            }
        }
        assert!(back[cols..2 * cols].iter().all(|&v| v == 0.0), "{format}: a zero row stays zero");
    }
}

#[test]
fn packed_rows_hold_the_disk_bytes_in_whole_words() {
    let mut rng = Rng::new(12);
    for format in QuantFormat::ALL {
        for cols in [64, 192, 320] {
            let q = quant::quantize(format, &rng.vec(3 * cols, 1.0), 3, cols).unwrap();
            let packed = q.packed();
            assert_eq!(packed.len(), 3 * 4 * format.row_words(cols), "{format} cols {cols}");
            assert_eq!(packed.len(), DType::Quant(format).storage_bytes(&[3, cols]));
            // A row range (a matrix part under the binding limit, an expert stack) is a byte range of the whole.
            let rw = 4 * format.row_words(cols);
            assert!(q.view().packed_rows(1, 2).concat() == packed[rw..3 * rw], "{format} cols {cols}: rows 1..3");
            let row = &packed[4 * format.row_words(cols)..];
            assert_eq!(
                &row[..format.scale_bytes(cols)],
                &q.scales[format.scale_bytes(cols)..2 * format.scale_bytes(cols)]
            );
        }
    }
    // q8 takes any K; its scale and its codes are each padded to 16 bytes, so that its codes start on 16.
    assert_eq!(QuantFormat::Q8.row_words(5), 4 + 4);
    assert_eq!(QuantFormat::Q8.row_words(4096), 4 + 1024);
    for format in QuantFormat::ALL {
        for cols in [64, 192, 320, 4096, 14336] {
            assert_eq!(format.row_words(cols) % 4, 0, "{format} cols {cols}: rows of whole 16-byte quads");
        }
    }
}

#[test]
fn bad_quantization_requests_are_clear_errors() {
    let e = QuantFormat::parse("q3", 32, false).unwrap_err().to_string();
    assert!(e.contains("unknown quantization format `q3`"), "{e}");
    let e = QuantFormat::parse("q4", 48, false).unwrap_err().to_string();
    assert!(e.contains("group size 48"), "{e}");
    let q4 = QuantFormat::parse("q4", 64, false).unwrap();
    let e = quant::quantize(q4, &[0.0; 2 * 96], 2, 96).unwrap_err().to_string();
    assert!(e.contains("96 columns") && e.contains("group size 64"), "{e}");
}

// ---- the kernels on quantized weights ----

#[test]
fn matmul_on_quantized_weights_matches_reference_on_dequantized() {
    let Some(ctx) = gpu() else { return };
    // (t, n, K before rounding K up to the group size): n and t not multiples of the tiles or workgroups.
    let shapes = [(1, 1, 5), (1, 37, 65), (2, 100, 33), (33, 70, 130), (65, 31, 17)];
    let mut rng = Rng::new(13);
    for format in QuantFormat::ALL {
        for &(t, n, k) in &shapes {
            let k = k_for(format, k);
            let x = rng.vec(t * k, 1.0);
            let x_gpu = ctx.upload_f32("x", &[t, k], &x).unwrap();
            let (w, dequantized) = upload_quantized(ctx, "w", format, &rng.vec(n * k, 1.0), &[n, k]);
            let want = reference::matmul(&x, &dequantized, t, n, k);
            for tuning in ctx.tunings() {
                let y = ctx.zeros("y", &[t, n], DType::F32).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = tuning;
                matmul::matmul(&mut g, &x_gpu, &w, &y, false).unwrap();
                g.run().unwrap();
                let got = ctx.read_f32(&y).unwrap();
                assert_close(&format!("{format} matmul {t}x{n}x{k} {tuning:?}"), &got, &want, 2e-6 * k as f32, 1e-4);
            }
        }
    }
}

/// out += sum_j p_j expert_{e_j}(x) on the CPU, from the dequantized expert weights [E][gate, up, down].
fn reference_moe(
    x: &[f32],
    logits: &[f32],
    experts: &[[Vec<f32>; 3]],
    t: usize,
    h: usize,
    f: usize,
    top_k: usize,
) -> Vec<f32> {
    let (ids, weights) = reference::moe::route(logits, experts.len(), top_k);
    let mut out = vec![0.0f32; t * h];
    for (slot, (&e, &p)) in ids.iter().zip(&weights).enumerate() {
        let r = slot / top_k;
        let [gate, up, down] = &experts[e as usize];
        let xr = &x[r * h..(r + 1) * h];
        let act = reference::silu_mul(&reference::matmul(xr, gate, 1, f, h), &reference::matmul(xr, up, 1, f, h));
        let y = reference::matmul(&act, down, 1, h, f);
        out[r * h..(r + 1) * h].iter_mut().zip(&y).for_each(|(o, y)| *o += p * y);
    }
    out
}

#[test]
fn moe_on_quantized_experts_matches_reference_decode_and_prefill() {
    use jamba_wgpu::kernels::moe::{self, ExpertStack, MoeScratch};
    let Some(ctx) = gpu() else { return };
    let (h, f, n_experts, top_k) = (64, 128, 5, 2);
    let mut rng = Rng::new(14);
    for format in QuantFormat::ALL {
        // Experts 0..3 and 3..5 in two stacks, as a layer over the binding limit is uploaded.
        let mut dequantized: Vec<[Vec<f32>; 3]> = Vec::new();
        let mut stacks = Vec::new();
        for (first, count) in [(0, 3), (3, 2)] {
            let mut upload = |rows: usize, cols: usize, which: &str| {
                let w = rng.vec(count * rows * cols, 0.2);
                let label = format!("experts[{first}..].{which}");
                let (tensor, values) = upload_quantized(ctx, &label, format, &w, &[count, rows, cols]);
                (tensor, values)
            };
            let (gate, gate_v) = upload(f, h, "gate");
            let (up, up_v) = upload(f, h, "up");
            let (down, down_v) = upload(h, f, "down");
            for e in 0..count {
                let (a, b) = (e * f * h, (e + 1) * f * h);
                dequantized.push([gate_v[a..b].to_vec(), up_v[a..b].to_vec(), down_v[a..b].to_vec()]);
            }
            stacks.push(ExpertStack { first, count, gate, up, down });
        }
        for t in [1, 3, 37] {
            let x = rng.vec(t * h, 1.0);
            let logits = rng.vec(t * n_experts, 2.0);
            let want = reference_moe(&x, &logits, &dequantized, t, h, f, top_k);
            for tuning in ctx.tunings() {
                let x_gpu = ctx.upload_f32("x", &[t, h], &x).unwrap();
                let logits_gpu = ctx.upload_f32("logits", &[t, n_experts], &logits).unwrap();
                let ids = ctx.zeros("ids", &[t * top_k], DType::U32).unwrap();
                let weights = ctx.zeros("weights", &[t * top_k], DType::F32).unwrap();
                let out = ctx.zeros("out", &[t, h], DType::F32).unwrap();
                let scratch = MoeScratch::new(ctx, t, h, f, n_experts, top_k).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = tuning;
                moe::route(&mut g, &logits_gpu, t, top_k, &ids, &weights).unwrap();
                moe::moe_ffn(&mut g, &x_gpu, t, &stacks, &ids, &weights, top_k, &scratch, &out).unwrap();
                g.run().unwrap();
                let got = ctx.read_f32(&out).unwrap();
                assert_close(&format!("{format} moe t={t} {tuning:?}"), &got, &want, 1e-5, 1e-4);
            }
        }
    }
}

// ---- fidelity of quantized models ----

use std::sync::Arc;

use anyhow::{ensure, Context as _, Result};
use common::{default_model_dir, fixture_dir, Expected};
use jamba_wgpu::weights::quant::{Q4Group, Quantization, Scope};
use jamba_wgpu::{LoadOptions, Model, SessionOptions};

const Q8: QuantFormat = QuantFormat::Q8;
const Q4: QuantFormat = QuantFormat::Q4 { group: Q4Group::G32, min: false };

fn load(ctx: &Arc<jamba_wgpu::gpu::Context>, dir: &std::path::Path, quantize: Option<Quantization>) -> Result<Model> {
    Ok(Model::load(ctx.clone(), dir, &LoadOptions { progress: false, quantize, ..Default::default() })?)
}

fn all_logits(model: &Model, ids: &[u32]) -> Result<Vec<f32>> {
    Ok(model.session(SessionOptions { max_len: ids.len(), chunk: 128 })?.feed_all_logits(ids)?)
}

/// The fraction of positions whose argmax agrees.
fn top1_agreement(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    let argmax = |row: &[f32]| row.iter().enumerate().fold(0, |m, (i, &v)| if v > row[m] { i } else { m });
    let rows = a.len() / vocab;
    let same = a.chunks(vocab).zip(b.chunks(vocab)).filter(|(x, y)| argmax(x) == argmax(y)).count();
    same as f64 / rows as f64
}

/// RMS of the logit error relative to the RMS spread of the unquantized logits (each row centred).
fn relative_rms_error(got: &[f32], want: &[f32], vocab: usize) -> f64 {
    let (mut err, mut spread) = (0.0f64, 0.0f64);
    for (g, w) in got.chunks(vocab).zip(want.chunks(vocab)) {
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / vocab as f64;
        err += g.iter().zip(w).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>();
        spread += w.iter().map(|&b| (b as f64 - mean).powi(2)).sum::<f64>();
    }
    (err / spread).sqrt()
}

/// Top-1 agreement with the unquantized model, and the relative RMS logit error, over the 300-token prompt of two
/// fixtures. Their weights are random (transformers' init), so their logits are nearly flat and the argmax
/// flips under small changes: the agreement bounds are loose there, and the error bound carries the weight.
#[test]
fn quantized_fixtures_agree_with_unquantized() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    // (format, scope, least top-1 agreement, largest relative RMS error)
    let cases = [
        (Q8, Scope::Ffn, 0.85, 0.15),
        (Q8, Scope::AllLinear, 0.8, 0.15),
        (Q4, Scope::Ffn, 0.35, 0.6),
        (Q4, Scope::AllLinear, 0.3, 0.75),
    ];
    for name in ["tiny", "v01-shape-lite"] {
        let dir = fixture_dir(name);
        let ids = Expected::open(&dir)?.ids("p300.input_ids")?;
        let base = load(ctx, &dir, None)?;
        let vocab = base.config().vocab_size;
        let want = all_logits(&base, &ids)?;
        for (format, scope, least_agreement, most_error) in cases {
            let got = all_logits(&load(ctx, &dir, Some(Quantization { format, scope }))?, &ids)?;
            let (agreement, error) = (top1_agreement(&got, &want, vocab), relative_rms_error(&got, &want, vocab));
            let what = format!("{name} {format} {}", scope.name());
            println!("{what}: top-1 agreement {agreement:.3}, relative RMS logit error {error:.4}");
            ensure!(agreement >= least_agreement, "{what}: top-1 agreement {agreement:.3} < {least_agreement}");
            ensure!(error <= most_error, "{what}: relative RMS logit error {error:.4} > {most_error}");
        }
    }
    Ok(())
}

/// The first `n` tokens of the default model's held-out text.
fn heldout_tokens(model: &Model, n: usize) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(default_model_dir().join("heldout.txt"))?;
    let mut tokens = model.tokenizer().context("tokenizer")?.encode(&text)?;
    tokens.truncate(n);
    Ok(tokens)
}

/// The bounds on the trained default model, over the first 3 windows of 256 held-out tokens: perplexity
/// within 1% of f32 for q8 and within 5% for q4 (the FFNs quantized, the default scope); and top-1 agreement of
/// the logits over the first window.
#[test]
fn perplexity_of_quantized_default_model_is_within_bounds() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let dir = default_model_dir();
    let base = load(ctx, &dir, None)?;
    let tokens = heldout_tokens(&base, 3 * 256)?;
    let f32_ppl = jamba_wgpu::perplexity(&base, &tokens, 1, 256, |_, _| {})?.perplexity;
    let window: Vec<u32> = std::iter::once(1).chain(tokens[..255].iter().copied()).collect();
    let want = all_logits(&base, &window)?;
    let vocab = base.config().vocab_size;
    drop(base);
    println!("f32: perplexity {f32_ppl:.4} over {} tokens", tokens.len());
    // (format, largest |ratio - 1|, least top-1 agreement over the first window)
    for (format, bound, least_agreement) in [(Q8, 0.01, 0.97), (Q4, 0.05, 0.85)] {
        let model = load(ctx, &dir, Some(Quantization::new(format)))?;
        let ppl = jamba_wgpu::perplexity(&model, &tokens, 1, 256, |_, _| {})?.perplexity;
        let ratio = ppl / f32_ppl;
        let agreement = top1_agreement(&all_logits(&model, &window)?, &want, vocab);
        println!("{format}: perplexity {ppl:.4}, ratio to f32 {ratio:.4}; top-1 agreement {agreement:.3}");
        ensure!((ratio - 1.0).abs() <= bound, "{format}: perplexity ratio {ratio:.4} is not within {bound} of 1");
        ensure!(agreement >= least_agreement, "{format}: top-1 agreement {agreement:.3} < {least_agreement}");
    }
    Ok(())
}

/// The whole quantized model on the GPU equals the CPU reference run on the same quantized checkpoint (which
/// dequantizes as it loads): what the fixtures' disagreement above measures is the quantization, not the kernels.
#[test]
fn quantized_model_equals_reference_on_dequantized_weights() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let dir = fixture_dir("tiny");
    let ids = Expected::open(&dir)?.ids("p64.input_ids")?;
    for q in
        [Quantization { format: Q4, scope: Scope::AllLinear }, Quantization { format: Q8, scope: Scope::AllLinear }]
    {
        let tmp = common::TempDir::new(&format!("reference-{}", q.format.name()))?;
        jamba_wgpu::weights::write_quantized(&dir, tmp.path(), q, false)?;
        let (_, reference) = common::load_model(tmp.path())?;
        let want = reference.forward(&mut reference.new_state(), &ids)?;
        let got = all_logits(&load(ctx, tmp.path(), None)?, &ids)?;
        let diff = common::check_close(&format!("{} all-linear: GPU vs reference", q.format), &got, &want, 1e-3)?;
        println!("{} all-linear, GPU vs reference on the dequantized weights: max diff {diff:e}", q.format);
    }
    Ok(())
}

/// `quantize` writes a checkpoint that loads straight from its mmap and gives the same logits as quantizing at
/// load; it keeps the tokenizer, records what it did in config.json, and refuses to quantize twice.
#[test]
fn quantized_checkpoint_round_trip() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let dir = default_model_dir();
    for (n, q) in [
        Quantization { format: Q4, scope: Scope::AllLinear },
        Quantization { format: QuantFormat::Q4 { group: Q4Group::G64, min: true }, scope: Scope::Ffn },
        Quantization { format: Q8, scope: Scope::Ffn },
    ]
    .into_iter()
    .enumerate()
    {
        let out = common::TempDir::new(&format!("quantized-{n}"))?;
        let report = jamba_wgpu::weights::write_quantized(&dir, out.path(), q, false)?;
        ensure!(report.bytes_out < report.bytes_in, "{}: {} -> {} bytes", q.format, report.bytes_in, report.bytes_out);
        // all-linear q4 keeps the dt_proj matrices (K = dt_rank 12 is not a whole group).
        ensure!(report.kept.iter().all(|name| name.ends_with("dt_proj.weight")), "{:?}", report.kept);
        ensure!(out.path().join("tokenizer.json").is_file());
        let from_disk = load(ctx, out.path(), None)?;
        ensure!(from_disk.config().quantization == Some(q), "{:?}", from_disk.config().quantization);
        let online = load(ctx, &dir, Some(q))?;
        let prompt: Vec<u32> = std::iter::once(1)
            .chain(from_disk.tokenizer().context("tokenizer")?.encode("The secret of life is")?)
            .collect();
        let (got, want) = (all_logits(&from_disk, &prompt)?, all_logits(&online, &prompt)?);
        common::check_close(&format!("{} from disk vs at load", q.format), &got, &want, 0.0)?;

        let e = load(ctx, out.path(), Some(q)).err().context("quantizing a quantized checkpoint")?.to_string();
        ensure!(e.contains("already quantized"), "{e}");
        let again = common::TempDir::new(&format!("quantized-again-{n}"))?;
        let e = jamba_wgpu::weights::write_quantized(out.path(), again.path(), q, false).unwrap_err().to_string();
        ensure!(e.contains("already quantized"), "{e}");
    }
    Ok(())
}

/// config.json's quantization section: anything we would misread is an error naming the field.
#[test]
fn bad_quantization_sections_are_clear_errors() -> Result<()> {
    use jamba_wgpu::config::JambaConfig;
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir("tiny").join("config.json"))?)?;
    let with = |section: serde_json::Value, key: &str| {
        let mut v = base.clone();
        v[key] = section;
        JambaConfig::from_json_str(&v.to_string()).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let q = "quantization";
    for (section, key, expect) in [
        (serde_json::json!({"format": "q3"}), q, "unknown format `q3`"),
        (serde_json::json!({"format": "q4", "group_size": 48}), q, "group size 48"),
        (serde_json::json!({"format": "q4"}), q, "quantization.group_size"),
        (serde_json::json!({"format": "q8", "group_size": 32}), q, "do not apply"),
        (serde_json::json!({"format": "q8", "bits": 8}), q, "quantization.bits"),
        (serde_json::json!({"format": "q8", "scope": "everything"}), q, "unknown scope"),
        (serde_json::json!({"quant_method": "gptq", "bits": 4}), "quantization_config", "gptq"),
    ] {
        let e = with(section.clone(), key);
        ensure!(e.contains(expect), "{key} {section}: `{e}` does not say `{expect}`");
    }

    // Quantized tensors with no section, and a section whose format the tensors do not match.
    let Some(ctx) = gpu() else { return Ok(()) };
    let out = common::TempDir::new("mismatch")?;
    jamba_wgpu::weights::write_quantized(&fixture_dir("tiny"), out.path(), Quantization::new(Q8), false)?;
    let config = out.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
    v["quantization"] = serde_json::json!({"format": "q4", "group_size": 32});
    std::fs::write(&config, v.to_string())?;
    let e = load(ctx, out.path(), None).err().context("q4 section over q8 tensors")?.to_string();
    ensure!(e.contains("qweight") && e.contains("I8"), "{e}");
    v.as_object_mut().context("object")?.remove("quantization");
    std::fs::write(&config, v.to_string())?;
    let e = load(ctx, out.path(), None).err().context("no section")?.to_string();
    ensure!(e.contains("no `quantization` section"), "{e}");
    Ok(())
}

/// The CLI end to end: `quantize`, then `perplexity` and `info` on what it wrote; a bad group size is refused.
#[test]
fn cli_quantize_perplexity_info() -> Result<()> {
    if gpu().is_none() {
        return Ok(());
    }
    let exe = env!("CARGO_BIN_EXE_jamba-wgpu");
    let run =
        |args: &[&str]| -> Result<std::process::Output> { Ok(std::process::Command::new(exe).args(args).output()?) };
    let out = common::TempDir::new("cli")?;
    let (model, tmp) = (default_model_dir(), out.path().join("q8"));
    let (model, tmp) = (model.to_str().context("path")?, tmp.to_str().context("path")?);
    let o = run(&["quantize", "--model", model, "--out", tmp, "--format", "q8"])?;
    ensure!(o.status.success(), "quantize: {}", String::from_utf8_lossy(&o.stderr));

    let heldout = default_model_dir().join("heldout.txt");
    let o = run(&[
        "perplexity",
        "--model",
        tmp,
        "--text-file",
        heldout.to_str().context("path")?,
        "--max-tokens",
        "256",
        "--json",
    ])?;
    ensure!(o.status.success(), "perplexity: {}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let ppl = json["perplexity"].as_f64().context("perplexity")?;
    ensure!(json["tokens_scored"] == 256 && (20.0..500.0).contains(&ppl), "{json}");

    let o = run(&["info", "--model", tmp, "--context", "1024", "--gpu-memory", "1G"])?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(
        o.status.success()
            && text.contains("stored quantized: q8")
            && text.contains("experts")
            && text.contains("fits in --gpu-memory"),
        "{text}"
    );
    // Without a model: the adapter, its limits and features, and the matrix units wgpu offers on it.
    let o = run(&["info"])?;
    let text = String::from_utf8_lossy(&o.stdout);
    let lines = ["max_buffer_size", "cooperative matrices", "kernels:  "];
    ensure!(o.status.success() && lines.iter().all(|l| text.contains(l)), "{text}");

    let o = run(&["run", "--quantize", "q4", "--group-size", "48", "--max-new-tokens", "1"])?;
    let e = String::from_utf8_lossy(&o.stderr);
    ensure!(!o.status.success() && e.contains("group size 48"), "{e}");
    Ok(())
}

/// Random weights quantized on the GPU (benchmarks of full-size configurations): finite logits, fewer bytes.
#[test]
fn random_quantized_models_run() -> Result<()> {
    let Some(ctx) = gpu() else { return Ok(()) };
    let cfg = jamba_wgpu::config::JambaConfig::from_file(fixture_dir("tiny").join("config.json"))?;
    let bytes = |m: &Model| -> u64 { m.weights().layers.iter().map(|l| l.ffn.size_bytes()).sum() };
    let base = Model::random(ctx.clone(), cfg.clone(), DType::BF16, 3)?;
    for format in [Q8, Q4] {
        let q = Quantization::new(format);
        let model = Model::random_quantized(ctx.clone(), cfg.clone(), DType::BF16, Some(q), 3)?;
        let logits = all_logits(&model, &[1, 5, 9, 200, 7, 7, 7, 7, 7, 3])?;
        ensure!(logits.iter().all(|v| v.is_finite()), "{format}: non-finite logits");
        ensure!(bytes(&model) < bytes(&base), "{format}: {} FFN bytes, bf16 {}", bytes(&model), bytes(&base));
    }
    Ok(())
}
