//! Subcommands, one module each.

mod bench;
mod info;
mod logits;
mod perplexity;
mod quantize;
mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jamba_wgpu::config::JambaConfig;
use jamba_wgpu::gpu::{Context, ContextOptions, MatvecReads, Prefill};
use jamba_wgpu::tokenizer::Tokenizer;
use jamba_wgpu::weights::quant::{QuantFormat, Quantization, Scope};
use jamba_wgpu::weights::Checkpoint;
use jamba_wgpu::Tune;

#[derive(Parser, Debug)]
#[command(name = "jamba-wgpu", version, about = "Run Jamba language models with WGSL compute shaders")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt (the embedded default model unless --model is given).
    Run(run::RunArgs),
    /// Measure prefill and decode speed (a checkpoint, or a released configuration with random weights).
    Bench(bench::BenchArgs),
    /// Show the GPU adapter, its backend, driver, limits and features; with --model, the model's memory per
    /// component and whether it fits.
    Info(info::InfoArgs),
    /// Write a quantized copy of a checkpoint (q8 or q4), loadable with --model.
    Quantize(quantize::QuantizeArgs),
    /// Perplexity of a model over a text file, in non-overlapping windows.
    Perplexity(perplexity::PerplexityArgs),
    /// Write the logits of every position of a prompt to a safetensors file.
    Logits(logits::LogitsArgs),
}

/// Where a command computes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The f32 CPU reference (exact, slow; for small models and checks).
    Cpu,
    /// WGSL compute shaders through wgpu.
    Gpu,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Info(args) => info::run(args),
        Command::Logits(args) => logits::run(args),
    }
}

/// How to choose the GPU, shared by every subcommand that uses one.
#[derive(Args, Debug, Clone, Default)]
pub struct GpuArgs {
    /// Backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else the best available).
    #[arg(long)]
    pub backend: Option<String>,
    /// Adapter whose name contains this text (case-insensitive), e.g. llvmpipe.
    #[arg(long)]
    pub adapter: Option<String>,
    /// How decode matvecs read weight rows: `codes` (quantized ones a code per load; the default on GPUs),
    /// `words` (4 bytes per load; the default on CPU adapters) or `quads` (16 bytes per load where rows are whole
    /// 16-byte quads); the last two not yet measured on a GPU.
    #[arg(long, alias = "quant-matvec", value_parser = ["codes", "words", "quads"])]
    pub matvec_reads: Option<String>,
    /// Prefill matmul kernel: `tiled` (64 x 64 tiles; the default on GPUs), `wide` (128 x 128 tiles, not yet
    /// measured on a GPU), `blocked` (the default on CPU adapters with 8-wide subgroups) or `coop` (f16 matrix
    /// units through wgpu's experimental cooperative matrices, enabled only by this choice; not yet run on a GPU).
    #[arg(long, value_parser = ["tiled", "wide", "blocked", "coop"])]
    pub prefill_kernel: Option<String>,
    /// Rows of each weight matrix one decode matvec invocation computes, reading x once for all of them: 1, 2,
    /// 4 or 8 (default: 8 on CPU adapters; 1 on GPUs, where more is not yet measured).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub matvec_rows: Option<u32>,
    /// Words each invocation of a decode matvec at one row per invocation (--matvec-rows 1, or too few rows to
    /// fill the GPU: Mamba's x_proj) loads per round, for more loads in flight: 1, 2 or 4 (default: 4 on GPUs,
    /// not yet measured there; 1 on CPU adapters, where it makes no difference). Results are the same bit for bit.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub matvec_unroll: Option<u32>,
    /// Time the kernel choices the flags above leave open on the model at load (decode: rows per matvec
    /// invocation, quantized codes or words; prefill: the tiled kernel) and keep the fastest: `auto` (on GPUs),
    /// `on` or `off`.
    #[arg(long, value_parser = ["auto", "on", "off"], default_value = "auto")]
    pub tune: String,
}

impl GpuArgs {
    /// [`LoadOptions::tune`](jamba_wgpu::LoadOptions::tune) as asked.
    pub fn tune(&self) -> Tune {
        match self.tune.as_str() {
            "on" => Tune::On,
            "off" => Tune::Off,
            _ => Tune::Auto,
        }
    }

    pub fn context(&self) -> anyhow::Result<Context> {
        let backends = self.backend.as_deref().map(ContextOptions::parse_backend).transpose()?;
        let matvec_reads = self.matvec_reads.as_deref().map(MatvecReads::parse).transpose()?;
        let prefill = self.prefill_kernel.as_deref().map(|k| match k {
            "wide" => Prefill::Wide,
            "blocked" => Prefill::Blocked,
            "coop" => Prefill::Coop,
            _ => Prefill::Tiled,
        });
        let options = ContextOptions {
            backends,
            adapter: self.adapter.clone(),
            timeout: None,
            matvec_reads,
            prefill,
            matvec_rows: self.matvec_rows,
            matvec_unroll: self.matvec_unroll,
            tuning: None,
        };
        Ok(Context::new(&options)?)
    }
}

/// Which model, shared by every subcommand that runs one.
#[derive(Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Checkpoint directory (config.json, safetensors, tokenizer.json); default: the embedded jamba-tiny-quotes.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

impl ModelArgs {
    /// The config, the memory-mapped weights and the tokenizer (when there is one).
    pub fn open(&self) -> anyhow::Result<(JambaConfig, Checkpoint, Option<Tokenizer>)> {
        use jamba_wgpu::default_model;
        Ok(match &self.model {
            None => (default_model::config()?, default_model::checkpoint()?, Some(default_model::tokenizer()?)),
            Some(dir) => {
                let cfg = JambaConfig::from_file(dir.join("config.json"))?;
                let tokenizer = if dir.join("tokenizer.json").is_file() { Some(Tokenizer::from_dir(dir)?) } else { None };
                (cfg, Checkpoint::open(dir)?, tokenizer)
            }
        })
    }
}

/// A quantized format, as the command line names it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// int8, one scale per output row.
    Q8,
    /// 4-bit, one f16 scale per group of --group-size inputs.
    Q4,
}

/// How to quantize, shared by every subcommand that loads a model (`--quantize`) or writes one (`--format`).
#[derive(Args, Debug, Clone, Default)]
pub struct QuantArgs {
    /// q4: inputs per scale, 32 or 64.
    #[arg(long, default_value_t = 32)]
    pub group_size: usize,
    /// q4: store a minimum per group (w = q * scale + min) instead of symmetric codes (w = (q - 8) * scale).
    #[arg(long)]
    pub q4_min: bool,
    /// Quantize every linear layer (Mamba and attention projections, an untied lm_head), not only the FFNs
    /// (experts and dense MLPs). The router and the embeddings stay unquantized.
    #[arg(long)]
    pub all_linear: bool,
}

impl QuantArgs {
    pub fn quantization(&self, format: Option<FormatArg>) -> anyhow::Result<Option<Quantization>> {
        let Some(format) = format else { return Ok(None) };
        let name = match format {
            FormatArg::Q8 => "q8",
            FormatArg::Q4 => "q4",
        };
        let format = QuantFormat::parse(name, self.group_size, self.q4_min)?;
        let scope = if self.all_linear { Scope::AllLinear } else { Scope::Ffn };
        Ok(Some(Quantization { format, scope }))
    }
}

/// `--gpu-memory`, shared by the subcommands that load a model.
#[derive(Args, Debug, Clone, Default)]
pub struct MemoryArgs {
    /// GPU memory for the model and one sequence's KV cache and state, e.g. 24GiB, 80G, 512MiB or bytes, at most
    /// what the adapter has where it says (`info`); default: everything resident. Experts that do not fit stay in
    /// the memory-mapped checkpoint and are streamed through a pool of GPU slots as the router picks them.
    #[arg(long)]
    pub gpu_memory: Option<String>,
}

impl MemoryArgs {
    /// The budget for the weights: --gpu-memory less the KV cache and state of a `context`-token sequence.
    pub fn weights_budget(&self, cfg: &JambaConfig, context: usize) -> anyhow::Result<Option<u64>> {
        let Some(text) = &self.gpu_memory else { return Ok(None) };
        let total = parse_size("--gpu-memory", text)?;
        let state = jamba_wgpu::model::SequenceState::bytes(cfg, context);
        if state >= total {
            anyhow::bail!(
                "--gpu-memory {text} ({total} bytes) does not even hold the KV cache and state of {context} tokens \
                 ({state} bytes)"
            );
        }
        Ok(Some(total - state))
    }
}

/// "80G", "80GB", "24GiB", "512M", "1.5T", or a plain number of bytes.
pub fn parse_size(flag: &str, text: &str) -> anyhow::Result<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.trim_end_matches("IB").trim_end_matches('B');
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => anyhow::bail!("{flag} {text}: expected a size such as 80G, 24GiB or 512M"),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n > 0.0 => Ok((n * scale as f64) as u64),
        _ => anyhow::bail!("{flag} {text}: expected a size such as 80G, 24GiB or 512M"),
    }
}
