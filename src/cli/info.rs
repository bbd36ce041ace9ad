//! `jamba-wgpu info`: what the GPU is and allows.

use clap::Args;

use super::GpuArgs;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let ctx = args.gpu.context()?;
    println!("{}", ctx.describe());
    Ok(())
}
