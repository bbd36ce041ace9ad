//! The Jamba model on the GPU: weights uploaded once ([`Model`]), and sequences ([`Session`]) that feed tokens
//! through prebuilt plans.
//!
//! A prefill is cut into chunks of at most [`SessionOptions::chunk`] tokens, each one graph of dispatches; a
//! decode step replays one plan built on the first step, unchanged (the token and its position are read from GPU
//! buffers), so a step allocates nothing. No forward reads anything back: the greedy token (4 bytes) or the
//! logits, when asked for, are the one readback of a step. The kernels may be chosen by timing them on the model
//! at load ([`tune`]; the CLI does on GPUs).
//!
//! The exception is a model that streams its experts ([`LoadOptions::gpu_memory`], [`streaming`]): its forward
//! reads each MoE layer's routing back to upload the experts it picks, so it runs in parts, one per MoE layer
//! (decode: one plan per part, replayed).

mod attention;
mod batch;
mod ffn;
pub mod footprint;
mod jamba;
mod mamba;
mod state;
pub mod streaming;
pub mod tune;
mod weights;

use std::path::Path;
use std::sync::Arc;

pub use batch::Batch;
pub use jamba::{Head, Scratch};
pub use state::{BatchState, LayerState, SequenceState};
pub use streaming::StreamingStats;
pub use tune::{Candidate, Timed, Tuned};
pub use weights::{
    AttentionWeights, ExpertFeed, ExpertLayout, FfnWeights, GpuWeights, LayerWeights, MambaWeights, Matrix, MixerWeights,
};

use crate::config::JambaConfig;
use crate::gpu::{Context, Graph, Plan, Tensor, Tuning};
use jamba::Rows;
use crate::tokenizer::Tokenizer;
use crate::weights::{Checkpoint, Quantization};
use crate::{default_model, Error, Result};

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Show a progress bar on stderr while uploading.
    pub progress: bool,
    /// Quantize the weights it covers while uploading (on the CPU, tensor by tensor from the mmap). None keeps
    /// the stored types; a checkpoint written quantized (`jamba-wgpu quantize`) loads as it is, and asking to
    /// quantize it again is an error.
    pub quantize: Option<Quantization>,
    /// GPU memory for the weights, in bytes (a session's KV cache, state and activations come on top). The
    /// weights other than the experts must fit; the experts go resident when they all fit too, else they stay
    /// in the memory-mapped checkpoint and stream through a pool of as many expert slots as fit (at least
    /// num_experts_per_tok); a budget over what the adapter has ([`Context::memory_capacity`], where known) is
    /// refused. None: everything resident, refused at load when the weights need more than the adapter has.
    pub gpu_memory: Option<u64>,
    /// Stream the experts through a pool of exactly this many slots (at least num_experts_per_tok), even when
    /// they would fit: for tests and benchmarks of streaming. Checked against `gpu_memory` when both are given.
    pub expert_slots: Option<usize>,
    /// Whether to time the kernel choices on the model once loaded and keep the fastest ([`Model::tune`]).
    pub tune: Tune,
}

/// When loading tunes the model's kernels ([`Model::tune`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tune {
    /// Keep the adapter's defaults: the same kernels at every load (the library's default).
    #[default]
    Off,
    /// On GPUs, whose best choices are not known in advance, for models of at least [`tune::AUTO_MIN_BYTES`] of
    /// weights (a smaller one's steps are over before timing them would pay), when the context leaves a choice
    /// open; not on CPU adapters, whose defaults were measured, nor for models that stream their experts (the
    /// CLI's default).
    Auto,
    /// Always (but never for a model that streams its experts).
    On,
}

/// A model on the GPU: config, weights, tokenizer.
pub struct Model {
    ctx: Arc<Context>,
    cfg: JambaConfig,
    weights: GpuWeights,
    tokenizer: Option<Tokenizer>,
    /// The expert pool, when the experts are streamed.
    streaming: Option<streaming::Streaming>,
    /// The kernel choices of the model's graphs, once [`Model::tune`] or [`Model::set_tuning`] chose them; else
    /// the context's.
    tuning: Option<Tuning>,
    /// What the last [`Model::tune`] measured.
    tuned: Tuned,
}

impl Model {
    /// Loads a Hugging Face checkpoint directory: config.json, safetensors (one file or sharded), and
    /// tokenizer.json when present.
    pub fn load(ctx: Arc<Context>, dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Model> {
        let dir = dir.as_ref();
        let cfg = JambaConfig::from_file(dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        let tokenizer = if dir.join("tokenizer.json").is_file() { Some(Tokenizer::from_dir(dir)?) } else { None };
        Model::from_checkpoint(ctx, cfg, &checkpoint, tokenizer, options)
    }

    /// The model embedded in the binary (see [`default_model`]).
    pub fn load_default(ctx: Arc<Context>, options: &LoadOptions) -> Result<Model> {
        let checkpoint = default_model::checkpoint()?;
        Model::from_checkpoint(ctx, default_model::config()?, &checkpoint, Some(default_model::tokenizer()?), options)
    }

    /// A model of `cfg`'s shapes with pseudo-random weights generated on the GPU (matrices in `dtype`), for
    /// benchmarking full-size configurations without a download. It has no tokenizer.
    pub fn random(ctx: Arc<Context>, cfg: JambaConfig, dtype: crate::gpu::DType, seed: u32) -> Result<Model> {
        Model::random_quantized(ctx, cfg, dtype, None, seed)
    }

    /// [`Model::random`] with the matrices `quantize` covers quantized (random codes and plausible scales, made
    /// on the GPU): to size and time quantized full-size models without a checkpoint.
    pub fn random_quantized(
        ctx: Arc<Context>,
        cfg: JambaConfig,
        dtype: crate::gpu::DType,
        quantize: Option<Quantization>,
        seed: u32,
    ) -> Result<Model> {
        let weights = weights::random(&ctx, &cfg, dtype, quantize, seed)?;
        Ok(Model { ctx, cfg, weights, tokenizer: None, streaming: None, tuning: None, tuned: Tuned::default() })
    }

    pub fn from_checkpoint(
        ctx: Arc<Context>,
        cfg: JambaConfig,
        checkpoint: &Checkpoint,
        tokenizer: Option<Tokenizer>,
        options: &LoadOptions,
    ) -> Result<Model> {
        cfg.validate()?;
        if let (Some(budget), Some(capacity)) = (options.gpu_memory, ctx.memory_capacity()) {
            if budget > capacity.bytes {
                return Err(Error::Input(format!(
                    "a GPU memory budget of {budget} bytes is more than the {} bytes of {} on {}",
                    capacity.bytes,
                    capacity.what,
                    ctx.info().name
                )));
            }
        }
        let limited = options.gpu_memory.is_some() || options.expert_slots.is_some();
        let (mut weights, feed) =
            weights::upload(&ctx, &cfg, checkpoint, options.quantize, options.progress, !limited)?;
        let streaming = match limited {
            true => streaming::place(&ctx, &cfg, &mut weights, feed, options.gpu_memory, options.expert_slots)?,
            false => None,
        };
        ctx.check()?;
        let mut model = Model { ctx, cfg, weights, tokenizer, streaming, tuning: None, tuned: Tuned::default() };
        if model.tunes_at_load(options.tune) {
            model.tune()?;
        }
        Ok(model)
    }

    /// Whether loading with `tune` tunes this model's kernels (see [`Tune`]).
    pub fn tunes_at_load(&self, tune: Tune) -> bool {
        let open = self.decode_candidates().len() > 1 || self.ctx.prefill_choices().len() > 1;
        let wanted = match tune {
            Tune::Off => false,
            Tune::Auto => !self.ctx.is_cpu() && open && self.weights.size_bytes() >= tune::AUTO_MIN_BYTES,
            Tune::On => true,
        };
        wanted && self.streaming.is_none()
    }

    /// The kernel choices the model's graphs (prefill chunks, decode steps, a batch's steps) are built with.
    pub fn tuning(&self) -> Tuning {
        self.tuning.unwrap_or_else(|| self.ctx.tuning())
    }

    /// Sets the kernel choices of the graphs built from now on (a session's decode plan is built on its first
    /// step, a batch's on its first).
    pub fn set_tuning(&mut self, tuning: Tuning) {
        self.tuning = Some(tuning);
    }

    /// What the last [`Model::tune`] measured and chose (nothing if it never ran).
    pub fn tuned(&self) -> &Tuned {
        &self.tuned
    }

    /// An empty graph with the model's kernel choices.
    fn graph(&self) -> Graph<'_> {
        let mut g = Graph::new(&self.ctx);
        g.tuning = self.tuning();
        g
    }

    /// What expert streaming did so far, over every session: None when the experts are resident.
    pub fn streaming_stats(&self) -> Option<StreamingStats> {
        let stream = self.streaming.as_ref()?;
        Some(stream.pool.lock().unwrap_or_else(|p| p.into_inner()).stats)
    }

    pub fn config(&self) -> &JambaConfig {
        &self.cfg
    }

    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn weights(&self) -> &GpuWeights {
        &self.weights
    }

    /// Opens a sequence able to hold `options.max_len` tokens.
    pub fn session(&self, options: SessionOptions) -> Result<Session<'_>> {
        Session::new(self, options)
    }

    /// Opens `sequences` independent sequences, each able to hold `options.max_len` tokens, that decode one
    /// token each per step, together.
    pub fn batch(&self, sequences: usize, options: SessionOptions) -> Result<Batch<'_>> {
        Batch::new(self, sequences, options)
    }
}

/// The shape of a session's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// Longest context (prompt and generated tokens); at most the config's max_position_embeddings.
    pub max_len: usize,
    /// Most tokens per prefill graph.
    pub chunk: usize,
}

impl SessionOptions {
    /// A context of `max_len` tokens (0: the config's max_position_embeddings, capped at 4096) in chunks of 256.
    pub fn for_model(cfg: &JambaConfig, max_len: usize) -> Self {
        let max_len = if max_len == 0 { cfg.max_position_embeddings.min(4096) } else { max_len };
        SessionOptions { max_len, chunk: 256.min(max_len) }
    }

    /// The options with the chunk capped at the context, or an error when either is out of range.
    fn checked(self, cfg: &JambaConfig) -> Result<Self> {
        if self.max_len == 0 || self.max_len > cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "a context of {} tokens is not in 1..={} (max_position_embeddings)",
                self.max_len, cfg.max_position_embeddings
            )));
        }
        if self.chunk == 0 {
            return Err(Error::Input("the prefill chunk must hold at least one token".into()));
        }
        Ok(SessionOptions { chunk: self.chunk.min(self.max_len), ..self })
    }
}

/// Fails unless `ids` is a non-empty list of ids below the vocabulary that fits after `position` tokens in a
/// context of `max_len`.
fn check_ids(cfg: &JambaConfig, ids: &[u32], position: usize, max_len: usize) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::Input("no token ids: at least one is needed".into()));
    }
    if let Some((at, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= cfg.vocab_size) {
        return Err(Error::Input(format!("token id {id} (at index {at}) is not below vocab_size {}", cfg.vocab_size)));
    }
    if position + ids.len() > max_len {
        return Err(Error::Input(format!(
            "{} tokens after {position} already fed exceed the session's context of {max_len} tokens",
            ids.len(),
        )));
    }
    Ok(())
}

/// The decode step, built on first use: one plan, or with streamed experts one per part of the forward (see
/// [`streaming`]), the MoE layer that ends each part but the last in `cuts`. The plans read the token and its
/// position from buffers (`Scratch::ids`, `Scratch::positions`), so they replay unchanged for every token.
struct Decode {
    plans: Vec<Plan>,
    cuts: Vec<usize>,
}

/// One sequence: its GPU state, activations, and the decode plan once built.
pub struct Session<'m> {
    model: &'m Model,
    options: SessionOptions,
    state: SequenceState,
    scratch: Scratch,
    decode: Option<Decode>,
    /// A decode step's commands, recorded while the GPU ran the last one (see `decode_step`): the plan reads
    /// everything that changes from buffers, so a recording serves whichever step comes next.
    next_step: Option<wgpu::CommandBuffer>,
    /// Streaming only: [chunk * top_k] u32, the routed ids remapped to expert pool slots.
    slot_ids: Option<Tensor>,
    stream_stats: StreamingStats,
    position: usize,
    /// The row of `scratch.logits` holding the last fed token's logits, once any token was fed.
    last_row: Option<usize>,
}

impl<'m> Session<'m> {
    fn new(model: &'m Model, options: SessionOptions) -> Result<Self> {
        let cfg = &model.cfg;
        let SessionOptions { chunk, .. } = options.checked(cfg)?;
        let state = SequenceState::new(&model.ctx, cfg, options.max_len)?;
        let pool_slots = model.streaming.as_ref().map_or(0, |s| s.stacks.iter().map(|s| s.count).sum());
        let scratch = Scratch::with_expert_slots(&model.ctx, cfg, chunk, options.max_len, 1, pool_slots)?;
        let slot_ids = match &model.streaming {
            Some(s) => Some(model.ctx.zeros("expert slot ids", &[chunk * s.top_k], crate::gpu::DType::U32)?),
            None => None,
        };
        let stream_stats =
            model.streaming_stats().map(|s| StreamingStats { slots: s.slots, expert_bytes: s.expert_bytes, ..Default::default() });
        Ok(Session {
            model,
            options: SessionOptions { chunk, ..options },
            state,
            scratch,
            decode: None,
            next_step: None,
            slot_ids,
            stream_stats: stream_stats.unwrap_or_default(),
            position: 0,
            last_row: None,
        })
    }

    pub(crate) fn last_logits_len(&self) -> usize {
        self.model.cfg.vocab_size
    }

    /// Tokens fed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn options(&self) -> SessionOptions {
        self.options
    }

    /// Feeds `ids` after what the session has seen; the next token's logits are then ready on the GPU.
    pub fn feed(&mut self, ids: &[u32]) -> Result<()> {
        self.feed_with(ids, Head::Last, None)
    }

    /// Feeds `ids` and returns the logits of every one of them: [ids.len(), vocab].
    pub fn feed_all_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(ids.len() * self.model.cfg.vocab_size);
        self.feed_with(ids, Head::All, Some(&mut out))?;
        Ok(out)
    }

    fn feed_with(&mut self, ids: &[u32], head: Head, mut sink: Option<&mut Vec<f32>>) -> Result<()> {
        self.check_input(ids)?;
        let ctx = &*self.model.ctx;
        let v = self.model.cfg.vocab_size;
        for chunk in ids.chunks(self.options.chunk) {
            let t = chunk.len();
            ctx.write(&self.scratch.ids, bytemuck::cast_slice(chunk))?;
            if t == 1 && head == Head::Last {
                self.decode_step()?;
            } else {
                self.forward(t, head)?;
            }
            self.count_tokens(t);
            self.last_row = Some(if head == Head::All { t - 1 } else { 0 });
            self.position += t;
            if let Some(sink) = sink.as_deref_mut() {
                let bytes = ctx.read_range(&self.scratch.logits, 0, (t * v * 4) as u64)?;
                sink.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes));
            }
        }
        ctx.check()
    }

    /// `t` tokens through one graph, or with streamed experts through one graph per part.
    fn forward(&mut self, t: usize, head: Head) -> Result<()> {
        let model = self.model;
        let (cfg, w, state, sc, pos) = (&model.cfg, &model.weights, &self.state, &self.scratch, self.position);
        match (&model.streaming, &self.slot_ids) {
            (Some(stream), Some(slot_ids)) => {
                let mut g = model.graph();
                let mut pool = stream.pool.lock().unwrap_or_else(|p| p.into_inner());
                let stats = &mut self.stream_stats;
                let mut parts = streaming::RunParts { stream, pool: &mut pool, slot_ids, stats };
                jamba::encode(&mut g, cfg, w, &state.layers, sc, Rows::Sequence { t, pos }, head, &mut parts)?;
                g.run()
            }
            _ => self.resident_graph(Rows::Sequence { t, pos }, head, model.tuning())?.run(),
        }
    }

    /// The graph of the rows `fed` with every expert resident, its kernels chosen by `tuning`: a prefill chunk,
    /// or the decode plan.
    fn resident_graph(&self, fed: Rows, head: Head, tuning: Tuning) -> Result<Graph<'m>> {
        let model = self.model;
        let mut g = Graph::new(&model.ctx);
        g.tuning = tuning;
        let mut resident = ffn::Resident { top_k: model.cfg.num_experts_per_tok };
        let (layers, sc) = (&self.state.layers, &self.scratch);
        jamba::encode(&mut g, &model.cfg, &model.weights, layers, sc, fed, head, &mut resident)?;
        Ok(g)
    }

    fn count_tokens(&mut self, t: usize) {
        if let Some(stream) = &self.model.streaming {
            self.stream_stats.tokens += t as u64;
            stream.pool.lock().unwrap_or_else(|p| p.into_inner()).stats.tokens += t as u64;
        }
    }

    /// What expert streaming did for this session: None when the model's experts are resident.
    pub fn streaming_stats(&self) -> Option<StreamingStats> {
        self.model.streaming.as_ref().map(|_| self.stream_stats)
    }

    /// One token (already in `scratch.ids`) through the decode plan (with streamed experts, its plans).
    ///
    /// With resident experts the step is one plan, and the host records it while the GPU runs the step before:
    /// after submitting a step, the next one is recorded at once and kept in `next_step`, so that recording,
    /// a few hundred microseconds for a 215-dispatch step, is not paid between one step's token and the next
    /// step's start. The plan never changes: each step writes only its token and position (8 bytes).
    fn decode_step(&mut self) -> Result<()> {
        let (model, ctx) = (self.model, &*self.model.ctx);
        self.write_position()?;
        self.build_decode()?;
        let decode = self.decode.as_ref().expect("the decode plans were just built");
        if let (Some(stream), Some(slot_ids)) = (&model.streaming, &self.slot_ids) {
            let mut pool = stream.pool.lock().unwrap_or_else(|p| p.into_inner());
            let parts = (decode.plans.as_slice(), decode.cuts.as_slice());
            let stats = &mut self.stream_stats;
            return streaming::run_decode(ctx, stream, &mut pool, parts, &self.scratch, slot_ids, stats);
        }
        let commands = match self.next_step.take() {
            Some(commands) => commands,
            None => decode.plans[0].record(ctx),
        };
        ctx.queue.submit([commands]);
        ctx.check()?;
        if self.position + 1 < self.options.max_len {
            self.next_step = Some(decode.plans[0].record(ctx));
        }
        Ok(())
    }

    /// Writes the position of the next token fed, where a decode plan reads it.
    fn write_position(&self) -> Result<()> {
        let position = u32::try_from(self.position)
            .map_err(|_| Error::Input(format!("position {} does not fit the u32 a decode step reads", self.position)))?;
        self.model.ctx.write(&self.scratch.positions, bytemuck::bytes_of(&position))
    }

    /// Builds the decode plans, if not yet built.
    fn build_decode(&mut self) -> Result<()> {
        if self.decode.is_none() {
            let model = self.model;
            let (cfg, w, state, sc) = (&model.cfg, &model.weights, &self.state, &self.scratch);
            self.decode = Some(match (&model.streaming, &self.slot_ids) {
                (Some(stream), Some(slot_ids)) => {
                    let mut g = model.graph();
                    let mut parts = streaming::PlanParts { stream, slot_ids, plans: Vec::new(), cuts: Vec::new() };
                    jamba::encode(&mut g, cfg, w, &state.layers, sc, Rows::Step, Head::Last, &mut parts)?;
                    parts.plans.push(g.build()?);
                    Decode { plans: parts.plans, cuts: parts.cuts }
                }
                _ => {
                    let g = self.resident_graph(Rows::Step, Head::Last, model.tuning())?;
                    Decode { plans: vec![g.build()?], cuts: Vec::new() }
                }
            });
        }
        Ok(())
    }

    /// Feeds one token through the decode plan with a GPU timestamp around every dispatch: the time of each
    /// kernel of a decode step, in order (benchmarks; needs timestamp queries).
    pub fn profile_step(&mut self, id: u32) -> Result<Vec<crate::gpu::DispatchTime>> {
        self.measure_step(id, "profiling", |plan, ctx| plan.profile(ctx))
    }

    /// Runs the decode step `runs` times back to back at one position and returns the GPU time of one run
    /// ([`Plan::time_repeated`]): the step whole, where [`Session::profile_step`]'s times add each dispatch's
    /// own, timestamps and all. The token's KV rows are written `runs` times and the Mamba state advanced as many:
    /// for benchmarks only (needs timestamp queries).
    ///
    /// [`Plan::time_repeated`]: crate::gpu::Plan::time_repeated
    pub fn time_step(&mut self, id: u32, runs: usize) -> Result<std::time::Duration> {
        self.measure_step(id, "timing", |plan, ctx| plan.time_repeated(ctx, runs))
    }

    /// Writes `id` and the position, builds the decode plan if needed, and measures it with `measure` as one
    /// step fed (profile_step, time_step).
    fn measure_step<T>(
        &mut self,
        id: u32,
        what: &str,
        measure: impl FnOnce(&Plan, &crate::gpu::Context) -> Result<T>,
    ) -> Result<T> {
        self.check_input(&[id])?;
        let model = self.model;
        let ctx = &*model.ctx;
        if model.streaming.is_some() {
            let message = format!("{what} a decode step of a model that streams its experts is not supported");
            return Err(Error::Input(message));
        }
        ctx.write(&self.scratch.ids, bytemuck::bytes_of(&id))?;
        self.write_position()?;
        self.build_decode()?;
        let measured = measure(&self.decode.as_ref().expect("the decode plan was just built").plans[0], ctx)?;
        self.position += 1;
        self.last_row = Some(0);
        Ok(measured)
    }

    /// Feeds `ids`, 2 to `chunk` tokens (one prefill chunk), with a GPU timestamp around every dispatch: the time
    /// of each kernel of a prefill chunk, in order (benchmarks; needs timestamp queries; not with streamed
    /// experts). The next token's logits are then ready, as after [`Session::feed`].
    pub fn profile_feed(&mut self, ids: &[u32]) -> Result<Vec<crate::gpu::DispatchTime>> {
        self.check_input(ids)?;
        let (model, ctx) = (self.model, &*self.model.ctx);
        if model.streaming.is_some() {
            let message = "profiling a prefill chunk of a model that streams its experts is not supported";
            return Err(Error::Input(message.into()));
        }
        let t = ids.len();
        if t < 2 || t > self.options.chunk {
            let chunk = self.options.chunk;
            return Err(Error::Input(format!("profiling a prefill chunk takes 2 to {chunk} tokens (the chunk), not {t}")));
        }
        ctx.write(&self.scratch.ids, bytemuck::cast_slice(ids))?;
        let g = self.resident_graph(Rows::Sequence { t, pos: self.position }, Head::Last, model.tuning())?;
        let times = g.build()?.profile(ctx)?;
        self.count_tokens(t);
        self.last_row = Some(0);
        self.position += t;
        Ok(times)
    }

    /// The CPU time to record one decode step's commands, without submitting them (see [`Plan::encode_cost`]):
    /// the median of `runs`. Builds the decode plan if needed; feeds nothing.
    pub fn decode_encode_cost(&mut self, runs: usize) -> Result<crate::gpu::EncodeCost> {
        self.build_decode()?;
        let decode = self.decode.as_ref().expect("the decode plan was just built");
        Ok(decode.plans.iter().map(|plan| plan.encode_cost(&self.model.ctx, runs)).sum())
    }

    /// The number of GPU dispatches one decode step records (the plans built if needed; feeds nothing): what
    /// each token costs the host to encode, and the GPU in launches and barriers.
    pub fn decode_dispatches(&mut self) -> Result<usize> {
        self.build_decode()?;
        Ok(self.decode.as_ref().expect("the decode plan was just built").plans.iter().map(Plan::len).sum())
    }

    fn check_input(&self, ids: &[u32]) -> Result<()> {
        check_ids(&self.model.cfg, ids, self.position, self.options.max_len)
    }

    /// The argmax of the last fed token's logits, computed on the GPU: a 4-byte readback.
    pub fn greedy_token(&self) -> Result<u32> {
        self.last_row.ok_or_else(|| Error::Input("no token was fed yet".into()))?;
        let bytes = self.model.ctx.read_range(&self.scratch.next, 0, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// The logits of the last fed token: `[vocab]`.
    pub fn last_logits(&self) -> Result<Vec<f32>> {
        let row = self.last_row.ok_or_else(|| Error::Input("no token was fed yet".into()))?;
        let v = self.model.cfg.vocab_size as u64;
        let bytes = self.model.ctx.read_range(&self.scratch.logits, row as u64 * v * 4, v * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Forgets everything fed: back to an empty sequence.
    pub fn reset(&mut self) {
        self.state.clear(&self.model.ctx);
        self.position = 0;
        self.last_row = None;
    }

    /// An independent copy of this sequence (its state and position), e.g. to continue one prompt two ways.
    pub fn fork(&self) -> Result<Session<'m>> {
        let mut copy = Session::new(self.model, self.options)?;
        copy.state = self.state.fork(&self.model.ctx, &self.model.cfg, self.position)?;
        copy.position = self.position;
        if self.last_row.is_some() {
            // The copy has its own activations: recompute nothing, but carry the logits over.
            let mut encoder = self.model.ctx.device.create_command_encoder(&Default::default());
            let (from, to) = (&self.scratch, &copy.scratch);
            encoder.copy_buffer_to_buffer(from.logits.buffer(), 0, to.logits.buffer(), 0, from.logits.size_bytes());
            encoder.copy_buffer_to_buffer(from.next.buffer(), 0, to.next.buffer(), 0, 4);
            self.model.ctx.queue.submit([encoder.finish()]);
            copy.last_row = self.last_row;
        }
        Ok(copy)
    }
}
