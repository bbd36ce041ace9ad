//! `jamba-wgpu perplexity`: perplexity of a model over a text file, in non-overlapping windows.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use jamba_wgpu::{perplexity, LoadOptions, Model};

use super::{FormatArg, GpuArgs, ModelArgs, QuantArgs};

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to score, tokenized whole without special tokens.
    #[arg(long)]
    pub text_file: PathBuf,
    /// Tokens per window; each window is fed as BOS + its first W - 1 tokens and all W are scored.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Score only the first N tokens of the file.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Quantize the weights at load: q8 or q4.
    #[arg(long, value_enum)]
    pub quantize: Option<FormatArg>,
    #[command(flatten)]
    pub quant: QuantArgs,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let (cfg, checkpoint, tokenizer) = args.model.open()?;
    let Some(tokenizer) = tokenizer else { bail!("perplexity needs a tokenizer.json beside the model") };
    let text = std::fs::read_to_string(&args.text_file).with_context(|| args.text_file.display().to_string())?;
    let mut tokens = tokenizer.encode(&text)?;
    if let Some(n) = args.max_tokens {
        tokens.truncate(n);
    }
    let Some(bos) = tokenizer.special_tokens().bos.or(cfg.bos_token_id) else { bail!("the model has no BOS token") };
    let quantize = args.quant.quantization(args.quantize)?;
    let ctx = Arc::new(args.gpu.context()?);
    let load = LoadOptions { progress: !args.json, quantize, tune: args.gpu.tune(), ..Default::default() };
    let model = Model::from_checkpoint(ctx, cfg, &checkpoint, Some(tokenizer), &load)?;

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(tokens.len().div_ceil(args.window.max(1)) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("scoring {bar:40} {pos}/{len} windows {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let p = perplexity(&model, &tokens, bos, args.window, |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let weights = quantize.map_or_else(
        || model.config().quantization.map_or("as stored".into(), |q| q.format.to_string()),
        |q| q.format.to_string(),
    );
    if args.json {
        let object = serde_json::json!({
            "file": args.text_file.display().to_string(),
            "tokens_scored": p.tokens_scored,
            "windows": p.windows,
            "window": args.window,
            "mean_nll": p.mean_nll,
            "perplexity": p.perplexity,
            "weights": weights,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{object}");
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.6} nats) over {} tokens in {} windows of {}; weights {weights}; {:.1} s",
            p.perplexity,
            p.mean_nll,
            p.tokens_scored,
            p.windows,
            args.window,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
