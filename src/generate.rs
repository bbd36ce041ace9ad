//! Generation: feed a prompt, then choose and feed one token at a time, streaming each with its text, until an
//! eos id, a stop string, the token budget or the end of the context. The same loop drives the GPU
//! [`Session`](crate::model::Session) and the CPU reference ([`ReferenceSession`]) through [`Forward`].

use std::time::{Duration, Instant};

use crate::reference::{ReferenceModel, State};
use crate::sampling::{Sampler, SamplingOptions};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};

/// A sequence that can be fed tokens and asked for its next one.
pub trait Forward {
    fn vocab_size(&self) -> usize;
    /// Tokens fed so far.
    fn position(&self) -> usize;
    /// Longest context the sequence holds.
    fn max_len(&self) -> usize;
    fn feed(&mut self, ids: &[u32]) -> Result<()>;
    /// The argmax of the last fed token's logits.
    fn greedy_token(&mut self) -> Result<u32>;
    /// The logits of the last fed token: `[vocab]`.
    fn last_logits(&mut self) -> Result<Vec<f32>>;
    /// What expert streaming did so far, for a GPU session whose model streams its experts.
    fn streaming_stats(&self) -> Option<crate::model::StreamingStats> {
        None
    }
}

impl Forward for crate::model::Session<'_> {
    fn vocab_size(&self) -> usize {
        self.last_logits_len()
    }
    fn position(&self) -> usize {
        crate::model::Session::position(self)
    }
    fn max_len(&self) -> usize {
        self.options().max_len
    }
    fn feed(&mut self, ids: &[u32]) -> Result<()> {
        crate::model::Session::feed(self, ids)
    }
    fn greedy_token(&mut self) -> Result<u32> {
        crate::model::Session::greedy_token(self)
    }
    fn last_logits(&mut self) -> Result<Vec<f32>> {
        crate::model::Session::last_logits(self)
    }
    fn streaming_stats(&self) -> Option<crate::model::StreamingStats> {
        crate::model::Session::streaming_stats(self)
    }
}

/// A sequence on the CPU reference model.
pub struct ReferenceSession<'m> {
    model: &'m ReferenceModel,
    state: State,
    max_len: usize,
    last: Option<Vec<f32>>,
}

impl<'m> ReferenceSession<'m> {
    pub fn new(model: &'m ReferenceModel, max_len: usize) -> Self {
        ReferenceSession { model, state: model.new_state(), max_len, last: None }
    }
}

impl Forward for ReferenceSession<'_> {
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }
    fn position(&self) -> usize {
        self.state.position
    }
    fn max_len(&self) -> usize {
        self.max_len
    }
    fn feed(&mut self, ids: &[u32]) -> Result<()> {
        if self.state.position + ids.len() > self.max_len {
            return Err(Error::Input(format!(
                "{} tokens after {} already fed exceed the context of {} tokens",
                ids.len(),
                self.state.position,
                self.max_len
            )));
        }
        let logits = self.model.forward(&mut self.state, ids)?;
        let v = self.vocab_size();
        self.last = Some(logits[logits.len() - v..].to_vec());
        Ok(())
    }
    fn greedy_token(&mut self) -> Result<u32> {
        let last = self.last_logits()?;
        Ok(crate::reference::argmax(&last, last.len())[0])
    }
    fn last_logits(&mut self) -> Result<Vec<f32>> {
        self.last.clone().ok_or_else(|| Error::Input("no token was fed yet".into()))
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingOptions,
    /// Token ids that end generation (the config's eos ids, usually); the id itself is yielded.
    pub stop_ids: Vec<u32>,
    /// Texts that end generation once the output contains one.
    pub stop_strings: Vec<String>,
}

/// Why generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    StopId(u32),
    StopString(String),
    MaxNewTokens,
    ContextFull,
}

impl FinishReason {
    /// The OpenAI-style name: `stop` (an eos id or a stop string), `length` (the token budget or the context).
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::StopId(_) | FinishReason::StopString(_) => "stop",
            FinishReason::MaxNewTokens | FinishReason::ContextFull => "length",
        }
    }
}

/// One generated token and the text it completes (empty while a multi-byte character is still incomplete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub id: u32,
    pub text: String,
}

/// Time spent, for the prefill and per decoded token.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prefill: Duration,
    pub generated_tokens: usize,
    pub decode: Duration,
    /// Expert streaming over the whole generation (prompt and generated tokens), when the model streams.
    pub streaming: Option<crate::model::StreamingStats>,
}

impl Timings {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }
    /// Tokens fed back after the first: the first generated token comes from the prefill.
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// The streaming iterator over generated tokens.
pub struct Generation<'f, 't, F: Forward> {
    forward: &'f mut F,
    sampler: Sampler,
    options: GenerateOptions,
    decoder: Option<StreamDecoder<'t>>,
    seen: Vec<u32>,
    text: String,
    generated: usize,
    pending: Option<u32>,
    finish: Option<FinishReason>,
    timings: Timings,
}

/// Feeds `prompt` to `forward` and returns the iterator over what follows it.
pub fn generate<'f, 't, F: Forward>(
    forward: &'f mut F,
    prompt: &[u32],
    options: GenerateOptions,
    tokenizer: Option<&'t Tokenizer>,
) -> Result<Generation<'f, 't, F>> {
    let sampler = Sampler::new(options.sampling.clone())?;
    let start = Instant::now();
    forward.feed(prompt)?;
    let mut generation = Generation {
        forward,
        sampler,
        options,
        decoder: tokenizer.map(|t| t.decode_stream()),
        seen: prompt.to_vec(),
        text: String::new(),
        generated: 0,
        pending: None,
        finish: None,
        timings: Timings { prompt_tokens: prompt.len(), ..Default::default() },
    };
    let first = generation.choose()?;
    generation.timings.prefill = start.elapsed();
    generation.timings.streaming = generation.forward.streaming_stats();
    generation.pending = Some(first);
    Ok(generation)
}

impl<F: Forward> Generation<'_, '_, F> {
    /// Why generation ended, once it has.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish.as_ref()
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// The text generated so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn choose(&mut self) -> Result<u32> {
        if self.sampler.options().is_greedy() {
            self.forward.greedy_token()
        } else {
            let mut logits = self.forward.last_logits()?;
            Ok(self.sampler.sample(&mut logits, &self.seen))
        }
    }

    fn step(&mut self) -> Result<Option<Generated>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.generated >= self.options.max_new_tokens {
            self.finish = Some(FinishReason::MaxNewTokens);
            return Ok(None);
        }
        let id = match self.pending.take() {
            Some(id) => id,
            None => {
                let last = *self.seen.last().expect("the prompt is never empty");
                if self.forward.position() >= self.forward.max_len() {
                    self.finish = Some(FinishReason::ContextFull);
                    return Ok(None);
                }
                let start = Instant::now();
                self.forward.feed(&[last])?;
                let id = self.choose()?;
                self.timings.decode += start.elapsed();
                self.timings.streaming = self.forward.streaming_stats();
                id
            }
        };
        self.generated += 1;
        self.timings.generated_tokens = self.generated;
        self.seen.push(id);
        let text = match &mut self.decoder {
            Some(d) => d.step(id)?,
            None => String::new(),
        };
        self.text.push_str(&text);
        if self.options.stop_ids.contains(&id) {
            self.finish = Some(FinishReason::StopId(id));
        } else if let Some(s) = self.options.stop_strings.iter().find(|s| !s.is_empty() && self.text.contains(s.as_str())) {
            self.finish = Some(FinishReason::StopString(s.clone()));
        }
        Ok(Some(Generated { id, text }))
    }
}

impl<F: Forward> Iterator for Generation<'_, '_, F> {
    type Item = Result<Generated>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(g)) => Some(Ok(g)),
            Ok(None) => None,
            Err(e) => {
                self.finish = Some(FinishReason::MaxNewTokens);
                Some(Err(e))
            }
        }
    }
}
