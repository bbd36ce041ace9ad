//! The `jamba-wgpu` command line: a thin layer over the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc for the whole process on Linux: with its `override` feature it also defines `malloc` and `free`, so
/// the Vulkan driver, which allocates for every command recorded (lavapipe 4-10 times a dispatch), uses it as
/// well. Recording the v0.1 layout's decode step on lavapipe: 207-210 us on glibc's malloc, 167-170 us on
/// mimalloc (BENCHMARKS.md). The library leaves the allocator to the program that embeds it; the default feature
/// `mimalloc` can be left out.
#[cfg(all(target_os = "linux", feature = "mimalloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
