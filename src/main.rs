//! The `jamba-wgpu` command line: a thin layer over the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain_message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `a: b: c`, leaving out a cause whose text the message already holds: many
/// errors (safetensors', the standard library's wrappers) print their cause and also return it as `source()`.
fn chain_message(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}
