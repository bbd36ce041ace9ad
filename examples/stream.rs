//! Streaming generation with sampling: each token is printed as soon as it is chosen, and the session is forked
//! after the prompt to continue it twice with different seeds.
//! `cargo run --release --example stream -- "A friend is"`

use std::io::Write;
use std::sync::Arc;

use jamba_wgpu::gpu::{Context, ContextOptions};
use jamba_wgpu::{generate, GenerateOptions, LoadOptions, Model, SamplingOptions, SessionOptions};

fn main() -> anyhow::Result<()> {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "A friend is".to_string());
    let ctx = Arc::new(Context::new(&ContextOptions::default())?);
    eprintln!("adapter: {}", ctx.info().name);
    let model = Model::load_default(ctx, &LoadOptions::default())?;
    let tokenizer = model.tokenizer().expect("the default model has a tokenizer");
    let ids: Vec<u32> = tokenizer.special_tokens().bos.into_iter().chain(tokenizer.encode(&prompt)?).collect();

    // Prefill the shared beginning once; every fork continues from it. The last prompt token is fed by
    // `generate`, which needs its logits.
    let mut base = model.session(SessionOptions::for_model(model.config(), 256))?;
    base.feed(&ids[..ids.len() - 1])?;

    for seed in [1, 2] {
        let mut session = base.fork()?;
        let options = GenerateOptions {
            max_new_tokens: 48,
            sampling: SamplingOptions { temperature: 0.8, top_p: 0.95, seed, ..Default::default() },
            stop_ids: tokenizer.special_tokens().eos.clone(),
            stop_strings: vec![],
        };
        print!("[seed {seed}] {prompt}");
        let mut generation = generate(&mut session, &ids[ids.len() - 1..], options, Some(tokenizer))?;
        for token in generation.by_ref() {
            print!("{}", token?.text);
            std::io::stdout().flush()?;
        }
        let t = generation.timings();
        println!("\n  ({:?}; {:.1} tokens/s)", generation.finish_reason(), t.decode_tokens_per_s());
    }
    Ok(())
}
