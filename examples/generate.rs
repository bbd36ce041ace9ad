//! The smallest complete program: load the embedded default model on the best adapter and print a greedy
//! continuation. `cargo run --release --example generate -- "The secret of life is"`

use std::sync::Arc;

use jamba_wgpu::gpu::{Context, ContextOptions};
use jamba_wgpu::{generate, GenerateOptions, LoadOptions, Model, SessionOptions};

fn main() -> anyhow::Result<()> {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "The secret of life is".to_string());
    let ctx = Arc::new(Context::new(&ContextOptions::default())?);
    let model = Model::load_default(ctx, &LoadOptions::default())?;
    let tokenizer = model.tokenizer().expect("the default model has a tokenizer");

    // BOS, then the prompt's tokens (the tokenizer does not add BOS itself).
    let bos = tokenizer.special_tokens().bos.into_iter();
    let ids: Vec<u32> = bos.chain(tokenizer.encode(&prompt)?).collect();

    let mut session = model.session(SessionOptions::for_model(model.config(), 256))?;
    let options = GenerateOptions {
        max_new_tokens: 48,
        sampling: Default::default(), // greedy
        stop_ids: tokenizer.special_tokens().eos.clone(),
        stop_strings: vec![],
    };
    let mut generation = generate(&mut session, &ids, options, Some(tokenizer))?;
    for token in generation.by_ref() {
        token?;
    }
    println!("{prompt}{}", generation.text());
    Ok(())
}
