//! The tokenizer (Hugging Face `tokenizer.json`, through the `tokenizers` crate) and the special token ids
//! gathered from the files beside it.
//!
//! `encode` never adds BOS: callers prepend [`SpecialTokens::bos`] themselves, as Jamba's tokenizers expect.
//! `decode` keeps special tokens (`<|endoftext|>` shows up in the text, as in transformers' greedy outputs).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Begin/end/padding ids. `eos` may hold several ids (Jamba 1.5: [2, 518]); any of them ends generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    pub pad: Option<u32>,
}

/// The JSON files (their text) that may name special tokens, beside tokenizer.json. Absent files are `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SideFiles<'a> {
    pub generation_config: Option<&'a str>,
    pub config: Option<&'a str>,
    pub tokenizer_config: Option<&'a str>,
    pub special_tokens_map: Option<&'a str>,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` and the special ids from the side files present in `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let tokenizer_json = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let read_optional = |name: &str| -> Result<Option<String>> {
            let path = dir.join(name);
            if path.is_file() {
                std::fs::read_to_string(&path).map(Some).map_err(|e| Error::io(&path, e))
            } else {
                Ok(None)
            }
        };
        let generation_config = read_optional("generation_config.json")?;
        let config = read_optional("config.json")?;
        let tokenizer_config = read_optional("tokenizer_config.json")?;
        let special_tokens_map = read_optional("special_tokens_map.json")?;
        let side = SideFiles {
            generation_config: generation_config.as_deref(),
            config: config.as_deref(),
            tokenizer_config: tokenizer_config.as_deref(),
            special_tokens_map: special_tokens_map.as_deref(),
        };
        Self::from_bytes(&tokenizer_json, side)
    }

    /// A tokenizer from the bytes of tokenizer.json (e.g. embedded with `include_bytes!`) and its side files.
    pub fn from_bytes(tokenizer_json: &[u8], side: SideFiles<'_>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json could not be loaded: {e}")))?;
        let special = gather_special_tokens(&inner, side)?;
        Ok(Tokenizer { inner, special })
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Text -> ids, without BOS or any other added special token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids -> text, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer(format!("decode of {} ids: {e}", ids.len())))
    }

    /// A decoder for streaming: feed it ids one at a time, get back the text each one completes.
    pub fn decode_stream(&self) -> StreamDecoder<'_> {
        StreamDecoder { tokenizer: self, ids: Vec::new(), prefix: String::new(), prefix_len: 0 }
    }
}

/// Incremental decoding (the scheme of transformers' TextStreamer and tokenizers' DecodeStream): decode a short
/// window of ids, and print only what extends the text already printed. A token that ends in the middle of a
/// multi-byte UTF-8 character decodes to U+FFFD; we wait for the next ids to complete it.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    /// The window: `prefix_len` ids already printed (kept as context), then ids not yet printed.
    ids: Vec<u32>,
    /// decode(ids[..prefix_len]).
    prefix: String,
    prefix_len: usize,
}

impl StreamDecoder<'_> {
    /// Adds one id; returns the new text it completes (empty while a character is still incomplete).
    pub fn step(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.len() <= self.prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new_text = text
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| Error::Tokenizer(format!("stream decode: `{text}` does not extend `{}`", self.prefix)))?
            .to_string();
        // Keep only the ids just printed as context for the next step.
        self.ids.drain(..self.prefix_len);
        self.prefix = self.tokenizer.decode(&self.ids)?;
        self.prefix_len = self.ids.len();
        Ok(new_text)
    }
}

/// bos/pad: the first source that names them; eos: every id any source names, deduplicated, in source order.
/// Sources, most authoritative first: generation_config.json (what generation uses), config.json, then the token
/// strings of tokenizer_config.json and special_tokens_map.json resolved through the vocabulary.
fn gather_special_tokens(tokenizer: &tokenizers::Tokenizer, side: SideFiles<'_>) -> Result<SpecialTokens> {
    let mut special = SpecialTokens::default();
    let id_sources = [("generation_config.json", side.generation_config), ("config.json", side.config)];
    for (file, text) in id_sources {
        let Some(json) = parse_side_file(file, text)? else { continue };
        special.bos = special.bos.or(ids_field(&json, "bos_token_id").first().copied());
        special.pad = special.pad.or(ids_field(&json, "pad_token_id").first().copied());
        special.eos.extend(ids_field(&json, "eos_token_id"));
    }
    let string_sources =
        [("tokenizer_config.json", side.tokenizer_config), ("special_tokens_map.json", side.special_tokens_map)];
    for (file, text) in string_sources {
        let Some(json) = parse_side_file(file, text)? else { continue };
        let resolve = |field: &str| token_field(tokenizer, file, &json, field);
        special.bos = special.bos.or(resolve("bos_token")?);
        special.pad = special.pad.or(resolve("pad_token")?);
        special.eos.extend(resolve("eos_token")?);
    }
    let mut seen = Vec::new();
    special.eos.retain(|id| {
        if seen.contains(id) {
            false
        } else {
            seen.push(*id);
            true
        }
    });
    Ok(special)
}

fn parse_side_file(file: &str, text: Option<&str>) -> Result<Option<Value>> {
    text.map(|t| serde_json::from_str(t).map_err(|e| Error::Tokenizer(format!("{file}: invalid JSON: {e}"))))
        .transpose()
}

/// A token id field that may be a number, a list of numbers, or null.
fn ids_field(json: &Value, field: &str) -> Vec<u32> {
    let as_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match json.get(field) {
        Some(Value::Array(items)) => items.iter().filter_map(as_id).collect(),
        Some(v) => as_id(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// A special token given as a string (or `{"content": string}`), resolved to its id.
fn token_field(tokenizer: &tokenizers::Tokenizer, file: &str, json: &Value, field: &str) -> Result<Option<u32>> {
    let token = match json.get(field) {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => match o.get("content").and_then(Value::as_str) {
            Some(s) => s,
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    tokenizer
        .token_to_id(token)
        .map(Some)
        .ok_or_else(|| Error::Tokenizer(format!("{file}: {field} `{token}` is not in the vocabulary")))
}
