//! Subcommands, one module each.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "jamba-wgpu", version, about = "Run Jamba language models with WGSL compute shaders")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {}
}
