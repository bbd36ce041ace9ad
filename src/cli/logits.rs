//! `jamba-wgpu logits`: the logits of every position of a prompt, written as one f32 safetensors tensor
//! `logits` of shape [T, vocab]. Used to compare backends and to check against transformers.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use jamba_wgpu::config::JambaConfig;
use jamba_wgpu::reference::ReferenceModel;
use jamba_wgpu::tokenizer::Tokenizer;
use jamba_wgpu::weights::Checkpoint;
use jamba_wgpu::{LoadOptions, Model, SessionOptions};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::{Device, GpuArgs};

#[derive(Args, Debug)]
pub struct LogitsArgs {
    /// Checkpoint directory: config.json, model.safetensors (or shards and their index), tokenizer.json.
    #[arg(long)]
    pub model: PathBuf,
    /// Token ids, comma-separated, used exactly as given (no BOS is added).
    #[arg(long, value_delimiter = ',', required_unless_present = "prompt", conflicts_with = "prompt")]
    pub prompt_ids: Vec<u32>,
    /// Text, encoded with the model's tokenizer; BOS is prepended when the model has one, unless --no-bos.
    #[arg(long)]
    pub prompt: Option<String>,
    /// With --prompt: do not prepend BOS.
    #[arg(long, requires = "prompt")]
    pub no_bos: bool,
    /// Where to write the safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// With --device gpu: most tokens per prefill pass.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: LogitsArgs) -> Result<()> {
    let cfg = JambaConfig::from_file(args.model.join("config.json"))?;
    let ids = prompt_ids(&args)?;
    let logits = match args.device {
        Device::Cpu => {
            let checkpoint = Checkpoint::open(&args.model)?;
            let model = ReferenceModel::new(&cfg, &checkpoint)?;
            model.forward(&mut model.new_state(), &ids)? // [T, V]
        }
        Device::Gpu => {
            let checkpoint = Checkpoint::open(&args.model)?;
            let ctx = Arc::new(args.gpu.context()?);
            // Logits of a prompt are a prefill: no decode step to tune (LoadOptions' default).
            let model = Model::from_checkpoint(ctx, cfg.clone(), &checkpoint, None, &LoadOptions::default())?;
            let options = SessionOptions { max_len: ids.len().max(1), chunk: args.chunk };
            model.session(options)?.feed_all_logits(&ids)? // [T, V]
        }
    };
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, vec![ids.len(), cfg.vocab_size], &bytes)?;
    safetensors::serialize_to_file([("logits", view)], None, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote logits [{}, {}] to {}", ids.len(), cfg.vocab_size, args.out.display());
    Ok(())
}

/// The ids to run: --prompt-ids as given, or --prompt encoded (BOS first unless --no-bos).
fn prompt_ids(args: &LogitsArgs) -> Result<Vec<u32>> {
    let Some(text) = &args.prompt else {
        return Ok(args.prompt_ids.clone());
    };
    let tokenizer = Tokenizer::from_dir(&args.model)?;
    let bos = tokenizer.special_tokens().bos.filter(|_| !args.no_bos);
    Ok(bos.into_iter().chain(tokenizer.encode(text)?).collect())
}
