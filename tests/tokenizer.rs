//! The tokenizer against the fixtures: ids equal to transformers', non-ASCII round trips, streaming decode,
//! special ids gathered from the side files.

mod common;

use anyhow::{Context, Result};
use common::{default_model_dir, fixture_dir, Expected, FIXTURES};
use jamba_wgpu::tokenizer::{SideFiles, SpecialTokens, Tokenizer};

fn text_prompt(dir: &std::path::Path) -> Result<String> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    Ok(json["text_prompt"].as_str().context("expected.json has no text_prompt")?.to_string())
}

#[test]
fn fixture_text_encodes_to_transformers_ids_and_round_trips() -> Result<()> {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let tokenizer = Tokenizer::from_dir(&dir)?;
        let text = text_prompt(&dir)?;
        assert!(!text.is_ascii(), "the fixture text is meant to hold non-ASCII characters");
        let ids = tokenizer.encode(&text)?;
        assert_eq!(ids, Expected::open(&dir)?.ids("text.input_ids")?, "{name}: text ids");
        assert_eq!(tokenizer.decode(&ids)?, text, "{name}: round trip");
    }
    Ok(())
}

#[test]
fn stream_decode_equals_full_decode_across_split_characters() -> Result<()> {
    let dir = fixture_dir("tiny");
    let tokenizer = Tokenizer::from_dir(&dir)?;
    let text = text_prompt(&dir)?;
    let ids = tokenizer.encode(&text)?;
    let mut stream = tokenizer.decode_stream();
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.push(stream.step(id)?);
    }
    assert_eq!(pieces.concat(), text);
    // "é" is two byte-level tokens here: the first yields nothing, the second the whole character.
    assert!(pieces.iter().any(String::is_empty), "some token ends mid-character");
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    Ok(())
}

#[test]
fn special_ids_from_side_files() -> Result<()> {
    let fixture = Tokenizer::from_dir(fixture_dir("tiny"))?;
    assert_eq!(fixture.special_tokens(), &SpecialTokens { bos: Some(1), eos: vec![2], pad: Some(0) });

    let quotes = Tokenizer::from_dir(default_model_dir())?;
    assert_eq!(quotes.special_tokens(), &SpecialTokens { bos: Some(1), eos: vec![2], pad: Some(0) });
    assert_eq!(quotes.token_to_id("<|endoftext|>"), Some(2));

    // Only tokenizer_config.json: the strings are resolved through the vocabulary.
    let tokenizer_json = std::fs::read(default_model_dir().join("tokenizer.json"))?;
    let tokenizer_config = std::fs::read_to_string(default_model_dir().join("tokenizer_config.json"))?;
    let side = SideFiles { tokenizer_config: Some(&tokenizer_config), ..SideFiles::default() };
    let from_strings = Tokenizer::from_bytes(&tokenizer_json, side)?;
    assert_eq!(from_strings.special_tokens(), quotes.special_tokens());

    // A generation_config.json eos list (Jamba 1.5 style) is kept whole.
    let side = SideFiles { generation_config: Some(r#"{"eos_token_id": [2, 518]}"#), ..SideFiles::default() };
    assert_eq!(Tokenizer::from_bytes(&tokenizer_json, side)?.special_tokens().eos, vec![2, 518]);
    Ok(())
}

#[test]
fn default_model_prompts_encode_like_transformers() -> Result<()> {
    let dir = default_model_dir();
    let tokenizer = Tokenizer::from_dir(&dir)?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    let prompts = json["prompts"].as_array().context("expected.json has no prompts")?;
    for p in prompts {
        let text = p["prompt"].as_str().context("prompt")?;
        let want: Vec<u32> = serde_json::from_value(p["prompt_ids"].clone())?;
        let bos = tokenizer.special_tokens().bos.context("bos")?;
        let ids: Vec<u32> = std::iter::once(bos).chain(tokenizer.encode(text)?).collect();
        assert_eq!(ids, want, "prompt {text:?}");
        let greedy: Vec<u32> = serde_json::from_value(p["greedy_ids"].clone())?;
        assert_eq!(tokenizer.decode(&greedy)?, p["greedy_text"].as_str().context("greedy_text")?);
    }
    Ok(())
}
