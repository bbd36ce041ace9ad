//! `jamba-wgpu run`: generate text from a prompt, streamed to the terminal as it is made, or as one JSON object.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use jamba_wgpu::reference::ReferenceModel;
use jamba_wgpu::{generate, Forward, GenerateOptions, LoadOptions, Model, ReferenceSession, SamplingOptions, SessionOptions};

use super::{Device, FormatArg, GpuArgs, MemoryArgs, ModelArgs, QuantArgs};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to continue; BOS is prepended (unless --no-bos). Without a prompt, generation starts from BOS alone.
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    /// Token ids to continue, comma-separated, used exactly as given.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Vec<u32>,
    /// With --prompt: do not prepend BOS.
    #[arg(long)]
    pub no_bos: bool,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample among the most likely tokens holding this much probability.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop once the output contains this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past the model's eos ids.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Context length to allocate (0: max_position_embeddings, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub context: usize,
    /// Most prompt tokens per prefill pass.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    pub device: Device,
    /// Quantize the weights at load (GPU only): q8 or q4, the FFNs unless --all-linear.
    #[arg(long, value_enum)]
    pub quantize: Option<FormatArg>,
    #[command(flatten)]
    pub quant: QuantArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Print one JSON object (ids, text, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: RunArgs) -> Result<()> {
    let (cfg, checkpoint, tokenizer) = args.model.open()?;
    let quantize = args.quant.quantization(args.quantize)?;
    if quantize.is_some() && args.device == Device::Cpu {
        bail!("--quantize runs on the GPU; the CPU reference computes with the stored weights");
    }
    let bos = tokenizer.as_ref().and_then(|t| t.special_tokens().bos).or(cfg.bos_token_id);
    let prompt: Vec<u32> = match (&args.prompt, args.prompt_ids.is_empty()) {
        (Some(text), _) => {
            let Some(tokenizer) = &tokenizer else { bail!("--prompt needs a tokenizer.json beside the model; use --prompt-ids") };
            bos.filter(|_| !args.no_bos).into_iter().chain(tokenizer.encode(text)?).collect()
        }
        (None, false) => args.prompt_ids.clone(),
        (None, true) => match bos {
            Some(bos) => vec![bos],
            None => bail!("the model has no BOS token: give --prompt or --prompt-ids"),
        },
    };
    let stop_ids = if args.ignore_eos {
        vec![]
    } else {
        tokenizer.as_ref().map(|t| t.special_tokens().eos.clone()).unwrap_or_else(|| cfg.eos_token_id.clone())
    };
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingOptions {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        },
        stop_ids,
        stop_strings: args.stop.clone(),
    };
    let session_options = SessionOptions { chunk: args.chunk, ..SessionOptions::for_model(&cfg, args.context) };
    if prompt.len() + args.max_new_tokens > session_options.max_len {
        bail!(
            "the prompt ({} tokens) and --max-new-tokens {} exceed the context of {} tokens (--context, at most max_position_embeddings = {})",
            prompt.len(),
            args.max_new_tokens,
            session_options.max_len,
            cfg.max_position_embeddings
        );
    }
    match args.device {
        Device::Gpu => {
            let ctx = Arc::new(args.gpu.context()?);
            let adapter = format!("{} ({:?})", ctx.info().name, ctx.info().backend);
            let gpu_memory = args.memory.weights_budget(&cfg, session_options.max_len)?;
            let load = LoadOptions { progress: !args.json, quantize, gpu_memory, tune: args.gpu.tune(), ..Default::default() };
            let model = Model::from_checkpoint(ctx, cfg, &checkpoint, tokenizer, &load)?;
            let tuned = model.tuned();
            if !args.json {
                for timed in [&tuned.decode, &tuned.prefill].into_iter().flatten() {
                    eprintln!("[tuned] {}: {}", timed.work, timed.summary());
                }
            }
            let mut session = model.session(session_options)?;
            let tuning = (tuned.decode.is_some() || tuned.prefill.is_some()).then(|| serde_json::json!(tuned));
            emit(&mut session, &prompt, options, model.tokenizer(), args.json, &adapter, tuning)?;
            if let (Some(s), false) = (session.streaming_stats(), args.json) {
                eprintln!(
                    "[experts streamed through {} slots] {} hits, {} misses, {:.1} MiB uploaded ({:.1} KiB per token)",
                    s.slots,
                    s.hits,
                    s.misses,
                    s.bytes_uploaded as f64 / (1 << 20) as f64,
                    s.bytes_per_token() / 1024.0
                );
            }
            Ok(())
        }
        Device::Cpu => {
            if args.memory.gpu_memory.is_some() {
                bail!("--gpu-memory limits the GPU; the CPU reference holds the model in host memory");
            }
            let model = ReferenceModel::new(&cfg, &checkpoint)?;
            let mut session = ReferenceSession::new(&model, session_options.max_len);
            emit(&mut session, &prompt, options, tokenizer.as_ref(), args.json, "cpu reference", None)
        }
    }
}

fn emit<F: Forward>(
    forward: &mut F,
    prompt: &[u32],
    options: GenerateOptions,
    tokenizer: Option<&jamba_wgpu::tokenizer::Tokenizer>,
    json: bool,
    device: &str,
    tuning: Option<serde_json::Value>,
) -> Result<()> {
    let mut generation = generate(forward, prompt, options, tokenizer)?;
    let mut ids = prompt.to_vec();
    let mut stdout = std::io::stdout().lock();
    if !json {
        if let Some(t) = tokenizer {
            let skip = usize::from(prompt.first().is_some_and(|&id| Some(id) == t.special_tokens().bos));
            write!(stdout, "{}", t.decode(&prompt[skip..])?)?;
        }
    }
    for token in generation.by_ref() {
        let token = token?;
        ids.push(token.id);
        if !json {
            if tokenizer.is_some() {
                write!(stdout, "{}", token.text)?;
            } else {
                write!(stdout, "{} ", token.id)?;
            }
            stdout.flush()?;
        }
    }
    let t = generation.timings();
    if json {
        let mut object = serde_json::json!({
            "prompt_ids": prompt,
            "output_ids": ids,
            "text": generation.text(),
            "finish_reason": generation.finish_reason().map(|r| r.as_str()),
            "device": device,
            "timings": {
                "prompt_tokens": t.prompt_tokens,
                "generated_tokens": t.generated_tokens,
                "prefill_ms": t.prefill.as_secs_f64() * 1e3,
                "decode_ms": t.decode.as_secs_f64() * 1e3,
                "prefill_tokens_per_s": t.prefill_tokens_per_s(),
                "decode_tokens_per_s": t.decode_tokens_per_s(),
            }
        });
        if let Some(s) = &t.streaming {
            object["timings"]["streaming"] = streaming_json(s);
        }
        if let Some(tuning) = tuning {
            object["tuning"] = tuning;
        }
        writeln!(stdout, "{object}")?;
    } else {
        writeln!(stdout)?;
        eprintln!(
            "[{device}] prefill {} tokens at {:.1} tokens/s, decode {} tokens at {:.1} tokens/s",
            t.prompt_tokens,
            t.prefill_tokens_per_s(),
            t.generated_tokens,
            t.decode_tokens_per_s()
        );
    }
    Ok(())
}

/// Expert streaming's counts, and per token fed (prompt and generated).
pub fn streaming_json(s: &jamba_wgpu::model::StreamingStats) -> serde_json::Value {
    serde_json::json!({
        "slots": s.slots,
        "expert_bytes": s.expert_bytes,
        "tokens": s.tokens,
        "hits": s.hits,
        "misses": s.misses,
        "bytes_uploaded": s.bytes_uploaded,
        "hits_per_token": s.hits_per_token(),
        "misses_per_token": s.misses_per_token(),
        "bytes_uploaded_per_token": s.bytes_per_token(),
    })
}
