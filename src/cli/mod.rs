//! Subcommands, one module each.

mod info;
mod logits;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jamba_wgpu::gpu::{Context, ContextOptions};

#[derive(Parser, Debug)]
#[command(name = "jamba-wgpu", version, about = "Run Jamba language models with WGSL compute shaders")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the GPU adapter, its backend, driver, limits and features.
    Info(info::InfoArgs),
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
}

impl GpuArgs {
    pub fn context(&self) -> anyhow::Result<Context> {
        let backends = self.backend.as_deref().map(ContextOptions::parse_backend).transpose()?;
        let options = ContextOptions { backends, adapter: self.adapter.clone(), timeout: None };
        Ok(Context::new(&options)?)
    }
}
