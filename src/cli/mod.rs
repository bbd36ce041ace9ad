//! Subcommands, one module each.

mod logits;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "jamba-wgpu", version, about = "Run Jamba language models with WGSL compute shaders")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
        Command::Logits(args) => logits::run(args),
    }
}
