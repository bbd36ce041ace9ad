//! `jamba-wgpu info`: what the GPU is and allows; with --model, what the model would take on it.

use anyhow::Result;
use clap::Args;
use jamba_wgpu::gpu::DType;
use jamba_wgpu::model::footprint::footprint;

use super::{parse_size, FormatArg, GpuArgs, ModelArgs, QuantArgs};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A checkpoint directory: print its parameters and memory per component, and whether it fits the adapter.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Context length (tokens) to size the KV cache and Mamba state for (default: max_position_embeddings,
    /// at most 4096, as `run` allocates).
    #[arg(long)]
    pub context: Option<usize>,
    /// Size the model as if quantized at load: q8 or q4.
    #[arg(long, value_enum)]
    pub quantize: Option<FormatArg>,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// The memory to check against, e.g. 80G or 24GiB, instead of what the adapter reports (Vulkan's device-local
    /// heaps; a CPU adapter's host memory available).
    #[arg(long)]
    pub gpu_memory: Option<String>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let ctx = args.gpu.context();
    let Some(dir) = &args.model else {
        println!("{}", ctx?.describe());
        return Ok(());
    };
    let (cfg, checkpoint, _) = ModelArgs { model: Some(dir.clone()) }.open()?;
    let quantize = args.quant.quantization(args.quantize)?;
    let context = args.context.unwrap_or(cfg.max_position_embeddings.min(4096));
    let f = footprint(&cfg, Some(&checkpoint), DType::BF16, quantize, context)?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let weights = match (quantize, cfg.quantization) {
        (Some(q), _) => format!("quantized at load: {} ({})", q.format, q.scope.name()),
        (None, Some(q)) => format!("stored quantized: {} ({})", q.format, q.scope.name()),
        (None, None) => format!("as stored ({})", checkpoint.main_dtype().map_or("?".into(), |d| format!("{d:?}"))),
    };
    println!(
        "model:      {} ({} layers, H {}, {} experts top-{}); weights {weights}",
        dir.display(),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_experts,
        cfg.num_experts_per_tok
    );
    println!("{:<12} {:>14} {:>12}", "component", "parameters", "MiB");
    for c in f.components.iter().filter(|c| c.params > 0) {
        println!("{:<12} {:>14} {:>12.2}", c.name, c.params, mib(c.bytes));
    }
    println!("{:<12} {:>14} {:>12.2}", "weights", f.params(), mib(f.weight_bytes()));
    println!(
        "KV cache for {} tokens: {:.2} MiB; Mamba state: {:.2} MiB (f32, one sequence)",
        context,
        mib(f.kv_cache_bytes),
        mib(f.mamba_state_bytes)
    );
    println!("total: {:.3} GiB (activations, a few MiB per 256-token chunk, not counted)", gib(f.total_bytes()));
    let capacity = ctx.as_ref().ok().and_then(|ctx| ctx.memory_capacity());
    match ctx {
        Ok(ctx) => {
            let l = ctx.limits();
            let binding = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
            println!("adapter:    {} ({:?})", ctx.info().name, ctx.info().backend);
            let verdict = if f.largest_buffer <= binding { "fits" } else { "does NOT fit" };
            println!(
                "largest unsplittable buffer {:.2} MiB {verdict} the binding limit of {:.0} MiB",
                mib(f.largest_buffer),
                mib(binding)
            );
        }
        Err(e) => println!("adapter:    none ({e}); buffer limits not checked"),
    }
    let verdict = |memory: u64| if f.total_bytes() <= memory { "fits" } else { "does NOT fit" };
    match (&args.gpu_memory, capacity) {
        (Some(size), _) => {
            let memory = parse_size("--gpu-memory", size)?;
            println!("{:.3} GiB {} in --gpu-memory {size} ({:.3} GiB)", gib(f.total_bytes()), verdict(memory), gib(memory));
        }
        (None, Some(c)) => {
            println!("{:.3} GiB {} in the adapter's {} ({:.3} GiB)", gib(f.total_bytes()), verdict(c.bytes), c.what, gib(c.bytes))
        }
        (None, None) => println!(
            "the adapter does not report its memory on this backend: pass --gpu-memory (e.g. 80G) to check the total"
        ),
    }
    Ok(())
}
