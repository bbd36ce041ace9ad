//! `jamba-wgpu bench`: prefill and decode speed of a model, a released configuration with random weights
//! generated on the GPU (no download), or any config.json.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use jamba_wgpu::bench::{bench_model, preset_config, ModelBenchOptions};
use jamba_wgpu::config::JambaConfig;
use jamba_wgpu::gpu::DType;
use jamba_wgpu::{LoadOptions, Model};

use super::{FormatArg, GpuArgs, MemoryArgs, ModelArgs, QuantArgs};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A released configuration (v0.1, 1.5-mini, 1.5-large) or a config.json path, with --random-weights.
    #[arg(long, conflicts_with = "model")]
    pub config: Option<String>,
    /// Generate the weights on the GPU instead of loading a checkpoint (needed with --config).
    #[arg(long)]
    pub random_weights: bool,
    /// Storage type of random weight matrices: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    #[arg(long, default_value_t = 512)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub gen_len: usize,
    /// Most prompt tokens per prefill pass.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// Sequences decoded together, one token each per step (each with its own prompt of --prompt-len tokens).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed runs after one warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long)]
    pub json: bool,
    /// Quantize the weights at load (random weights: random codes): q8 or q4.
    #[arg(long, value_enum)]
    pub quantize: Option<FormatArg>,
    #[command(flatten)]
    pub quant: QuantArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let options = ModelBenchOptions {
        prompt_len: args.prompt_len,
        gen_len: args.gen_len,
        chunk: args.chunk,
        warmup: 1,
        runs: args.runs,
        batch: args.batch,
        progress: true,
    };
    options.check()?; // before the adapter and the weights, which can take minutes
    if args.random_weights && args.memory.gpu_memory.is_some() {
        bail!("--gpu-memory streams experts from a checkpoint; random weights have none");
    }
    // The synthetic model's config and dtype are checked before an adapter is opened. A name that looks like a
    // path is read as one, so that a missing file is reported as missing, not as an unknown preset.
    let synthetic = match &args.config {
        Some(config) if args.random_weights => {
            let path = Path::new(config);
            let is_path = path.is_file() || config.ends_with(".json") || path.components().count() > 1;
            let cfg = if is_path { JambaConfig::from_file(config)? } else { preset_config(config)? };
            let dtype = match args.dtype.as_str() {
                "f32" => DType::F32,
                "f16" => DType::F16,
                "bf16" => DType::BF16,
                other => bail!("--dtype {other}: expected f32, f16 or bf16"),
            };
            Some((cfg, dtype))
        }
        Some(_) => bail!("--config needs --random-weights (there is no checkpoint to load)"),
        None => None,
    };
    let ctx = Arc::new(args.gpu.context()?);
    let loading = std::time::Instant::now();
    let model = match synthetic {
        Some((cfg, dtype)) => {
            let mut model = Model::random_quantized(ctx, cfg, dtype, args.quant.quantization(args.quantize)?, 0)?;
            if model.tunes_at_load(args.gpu.tune()) {
                model.tune()?;
            }
            model
        }
        None => {
            let (cfg, checkpoint, tokenizer) = args.model.open()?;
            let quantize = args.quant.quantization(args.quantize)?;
            let gpu_memory = args.memory.weights_budget(&cfg, args.prompt_len + args.gen_len + 1)?;
            let load = LoadOptions { progress: !args.json, quantize, gpu_memory, tune: args.gpu.tune(), ..Default::default() };
            Model::from_checkpoint(ctx, cfg, &checkpoint, tokenizer, &load)?
        }
    };
    eprintln!("bench: weights ready in {:.1} s", loading.elapsed().as_secs_f64());
    let b = bench_model(&model, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
        return Ok(());
    }
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    println!("adapter:   {} ({})", b.adapter, b.backend);
    println!("weights:   {:.3} GiB; peak GPU memory {:.3} GiB", gib(b.weight_bytes), gib(b.peak_gpu_bytes));
    let per = if b.batch > 1 { format!(" x {} sequences", b.batch) } else { String::new() };
    println!(
        "prefill:   {} tokens{per} at {:.1} tokens/s (time to first token {:.1} ms; {:.1} ms for the first prompt)",
        b.prompt_len, b.prefill_tokens_per_s, b.time_to_first_token_ms, b.first_time_to_first_token_ms
    );
    println!("decode:    {} tokens{per} at {:.2} tokens/s", b.gen_len, b.decode_tokens_per_s);
    println!("kernels:   {}", b.kernels);
    for timed in [&b.tuning.decode, &b.tuning.prefill].into_iter().flatten() {
        let how = if timed.timestamps { "GPU timestamps" } else { "host clock" };
        println!("tuning:    {} by kernel choice ({how}): {}", timed.work, timed.summary());
    }
    println!(
        "roofline:  a decode step reads {:.1} MiB: {:.2} GB/s achieved vs {:.2} GB/s streaming ({:.0}%)",
        b.decode_bytes_per_token as f64 / (1 << 20) as f64,
        b.decode_gb_per_s,
        b.copy_gb_per_s,
        100.0 * b.decode_gb_per_s / b.copy_gb_per_s.max(1e-9)
    );
    if let Some(s) = &b.streaming {
        println!(
            "streaming: {} expert slots; per token {:.2} hits, {:.2} misses, {:.1} KiB uploaded",
            s.slots,
            s.hits_per_token(),
            s.misses_per_token(),
            s.bytes_per_token() / 1024.0
        );
    }
    println!(
        "host:      {:.1} us per decode step call ({} dispatches, the next step recorded ahead); recording {:.1} us (fastest {:.1})",
        b.host_us_per_decode_step, b.dispatches_per_decode_step, b.encode_us_per_decode_step, b.encode_min_us_per_decode_step
    );
    println!(
        "syncs:     {} GPU objects created by decode steps after the first; per step {:.2} waits for the GPU, {:.0} bytes uploaded",
        b.gpu_objects_created_decoding, b.syncs_per_decode_step, b.uploaded_bytes_per_decode_step
    );
    if !b.decode_kernel_ms.is_empty() {
        println!("decode step GPU time by kernel family (timestamps, one dispatch per pass):");
        for (family, ms) in &b.decode_kernel_ms {
            println!("  {family:<16} {ms:>9.3} ms");
        }
        if let Some(step) = b.decode_step_gpu_ms {
            let sum: f64 = b.decode_kernel_ms.iter().map(|(_, ms)| ms).sum();
            println!("  the step run whole, 8 times back to back: {step:.3} ms a step (the kernels above add up to {sum:.3})");
        }
        print_dispatches("decode step", &b.decode_dispatches);
    }
    if !b.prefill_chunk_kernel_ms.is_empty() {
        let t = args.chunk.min(args.prompt_len);
        println!("prefill chunk of {t} tokens, GPU time by kernel family:");
        for (family, ms) in &b.prefill_chunk_kernel_ms {
            println!("  {family:<16} {ms:>9.3} ms");
        }
        print_dispatches("prefill chunk", &b.prefill_chunk_dispatches);
    }
    Ok(())
}

/// The most expensive groups of a profile's dispatches (one kernel reading the same tensor in every layer).
fn print_dispatches(what: &str, groups: &[jamba_wgpu::bench::DispatchGroup]) {
    const SHOWN: usize = 12;
    println!("{what}: the {} costliest kernels by what they read (of {}; all in --json):", SHOWN.min(groups.len()), groups.len());
    for g in groups.iter().take(SHOWN) {
        let each_us = g.ms * 1e3 / g.dispatches as f64;
        let mib = g.read_bytes as f64 / (1 << 20) as f64;
        println!(
            "  {:>9.3} ms {:>3} x {each_us:>9.1} us  {:<28} {} ({mib:.1} MiB, {} workgroups)",
            g.ms, g.dispatches, g.kernel, g.reads, g.workgroups
        );
    }
}
