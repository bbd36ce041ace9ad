//! `jamba-wgpu quantize`: write a quantized copy of a checkpoint, loadable with `--model` like any other.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use jamba_wgpu::weights::write_quantized;

use super::{FormatArg, QuantArgs};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The checkpoint directory to quantize (config.json, safetensors, tokenizer files).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write the quantized checkpoint (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum)]
    pub format: FormatArg,
    #[command(flatten)]
    pub quant: QuantArgs,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let q = args.quant.quantization(Some(args.format))?.expect("a format was given");
    let report = write_quantized(&args.model, &args.out, q, true)?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "{}: {} weights as {}, {:.1} MiB -> {:.1} MiB of tensors",
        args.out.display(),
        report.quantized.len(),
        q.format,
        mib(report.bytes_in),
        mib(report.bytes_out)
    );
    if !report.kept.is_empty() {
        eprintln!("kept unquantized (K not a multiple of the group size): {}", report.kept.join(", "));
    }
    Ok(())
}
