//! Several independent sequences decoded together: each step feeds one token of every sequence through one
//! replayed plan, one pass over the weights for all of them (the matmuls and the MoE experts run over B rows; the
//! decode matvecs run the B rows' workgroups for each block of weight rows side by side, for a GPU's cache to
//! serve), with one submission and one readback of B tokens.
//!
//! Every sequence keeps its own position. Its state lives in its slot of the batch's tensors ([`BatchState`]):
//! the step's conv, scan and attention kernels address slot r from row r, and attention reads each row's position
//! from a u32 [B] buffer (the step scratch's `positions`) written before the step, so the plan never changes. A
//! prefill runs the single-sequence path ([`Session`](super::Session)'s chunks) on one sequence's slot, seen as
//! views.

use super::ffn::Resident;
use super::jamba::{self, Head, Rows, Scratch};
use super::state::{BatchState, SequenceState};
use super::{check_ids, Model, SessionOptions};
use crate::gpu::{Plan, Prefill};
use crate::{Error, Result};

/// Rows of x from which a CPU adapter's batch step takes the tiled matmul path: the blocked kernels overtake a
/// matvec per row at 10 rows on lavapipe (default model, the step's GPU time with matvecs against blocked
/// matmuls: B = 8 22.0 against 23.8 ms, B = 10 26.3 against 26.1, B = 12 30.8 against 27.7), the 32 x 32 tiled
/// kernels only at a full tile.
fn cpu_tiled_min_rows(prefill: Prefill) -> usize {
    match prefill {
        Prefill::Blocked => 10,
        _ => 32,
    }
}

/// Rows per expert, on average, from which that step's experts take the grouped path (B x top_k rows spread over
/// every expert): lavapipe, default model, B = 16 (8 rows an expert), matvec experts 33.3-33.5 ms a step against
/// blocked 30.2-32.3; B = 24, 43-44 against 37-38.
fn cpu_moe_rows_per_expert(prefill: Prefill) -> usize {
    match prefill {
        Prefill::Blocked => 8,
        _ => 32,
    }
}

/// B sequences that advance together, one token each per [`Batch::step`].
pub struct Batch<'m> {
    model: &'m Model,
    options: SessionOptions,
    state: BatchState,
    /// Activations of one sequence's prefill chunks.
    prefill: Scratch,
    /// Activations of a step, one row per sequence; its `logits` [B, V] and `next` [B] hold each sequence's last
    /// fed token's logits and greedy token, whichever way it was fed; its `positions` [B], where each
    /// sequence's next token goes, are written before each step.
    step: Scratch,
    plan: Option<Plan>,
    /// The next step's commands, recorded while the GPU ran the last one: the plan reads its positions and
    /// tokens from buffers, so a recording serves any step (see Session::decode_step).
    next_step: Option<wgpu::CommandBuffer>,
    /// Tokens each sequence has seen.
    position: Vec<usize>,
}

impl<'m> Batch<'m> {
    pub(super) fn new(model: &'m Model, sequences: usize, options: SessionOptions) -> Result<Self> {
        let (ctx, cfg) = (&*model.ctx, &model.cfg);
        let options = options.checked(cfg)?;
        if sequences == 0 {
            return Err(Error::Input("a batch needs at least one sequence".into()));
        }
        if model.streaming.is_some() {
            let message = "batched decoding of a model that streams its experts (--gpu-memory) is not supported";
            return Err(Error::Input(message.into()));
        }
        Ok(Batch {
            model,
            options,
            state: BatchState::new(ctx, cfg, sequences, options.max_len)?,
            prefill: Scratch::new(ctx, cfg, options.chunk, options.max_len, 1)?,
            step: Scratch::new(ctx, cfg, sequences, options.max_len, sequences)?,
            plan: None,
            next_step: None,
            position: vec![0; sequences],
        })
    }

    /// Sequences in the batch.
    pub fn len(&self) -> usize {
        self.position.len()
    }

    pub fn is_empty(&self) -> bool {
        self.position.is_empty()
    }

    pub fn options(&self) -> SessionOptions {
        self.options
    }

    /// Tokens sequence `seq` has seen.
    pub fn position(&self, seq: usize) -> Result<usize> {
        self.check_seq(seq)?;
        Ok(self.position[seq])
    }

    /// Feeds `ids` to sequence `seq` alone, after what it has seen, in chunks as a session does; its logits and
    /// greedy token are then ready as if it had been stepped.
    pub fn prefill(&mut self, seq: usize, ids: &[u32]) -> Result<()> {
        self.check_seq(seq)?;
        check_ids(&self.model.cfg, ids, self.position[seq], self.options.max_len)?;
        let state = self.state.sequence(seq);
        for chunk in ids.chunks(self.options.chunk) {
            feed_chunk(self.model, state, &self.prefill, chunk, self.position[seq])?;
            self.position[seq] += chunk.len();
        }
        // Row 0 of the prefill's head is this sequence's: into its row of the step's outputs.
        let (ctx, v) = (&*self.model.ctx, self.model.cfg.vocab_size as u64 * 4);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        let (from, to) = (&self.prefill, &self.step);
        encoder.copy_buffer_to_buffer(from.logits.buffer(), 0, to.logits.buffer(), seq as u64 * v, v);
        encoder.copy_buffer_to_buffer(from.next.buffer(), 0, to.next.buffer(), seq as u64 * 4, 4);
        ctx.queue.submit([encoder.finish()]);
        ctx.check()
    }

    /// Feeds `tokens[r]` to sequence r, every sequence at its own position, in one replayed plan: one
    /// submission for the whole batch. Fails, feeding nothing, unless there is one token per sequence and each
    /// sequence has room for it.
    pub fn step(&mut self, tokens: &[u32]) -> Result<()> {
        let ctx = &*self.model.ctx;
        let recorded = self.next_step.take();
        let plan = self.prepare_step(tokens)?;
        ctx.queue.submit([recorded.unwrap_or_else(|| plan.record(ctx))]);
        ctx.check()?;
        self.next_step = Some(plan.record(ctx));
        self.position.iter_mut().for_each(|p| *p += 1);
        Ok(())
    }

    /// [`Batch::step`] with a GPU timestamp around every dispatch: the time of each kernel of the step, in order
    /// (benchmarks; needs timestamp queries).
    pub fn profile_step(&mut self, tokens: &[u32]) -> Result<Vec<crate::gpu::DispatchTime>> {
        let ctx = &*self.model.ctx;
        let times = self.prepare_step(tokens)?.profile(ctx)?;
        self.position.iter_mut().for_each(|p| *p += 1);
        Ok(times)
    }

    /// The step's GPU time run whole, `runs` times back to back at one position (as
    /// [`Session::time_step`](super::Session::time_step); benchmarks only, needs timestamp queries).
    pub fn time_step(&mut self, tokens: &[u32], runs: usize) -> Result<std::time::Duration> {
        let ctx = &*self.model.ctx;
        let time = self.prepare_step(tokens)?.time_repeated(ctx, runs)?;
        self.position.iter_mut().for_each(|p| *p += 1);
        Ok(time)
    }

    /// The CPU time to record one step's commands without submitting them (see [`Plan::encode_cost`]), the
    /// median of `runs`; the step's plan is built by the first [`Batch::step`].
    pub fn step_encode_cost(&self, runs: usize) -> Result<crate::gpu::EncodeCost> {
        let plan = self.plan.as_ref().ok_or_else(|| Error::Input("no step was run yet: nothing to encode".into()))?;
        Ok(plan.encode_cost(&self.model.ctx, runs))
    }

    /// Checks `tokens`, writes them and every sequence's position, and returns the step's plan (built on first use).
    fn prepare_step(&mut self, tokens: &[u32]) -> Result<&Plan> {
        let (ctx, b) = (&*self.model.ctx, self.len());
        if tokens.len() != b {
            return Err(Error::Input(format!("{} tokens for a batch of {b} sequences: one per sequence", tokens.len())));
        }
        for (seq, &id) in tokens.iter().enumerate() {
            check_ids(&self.model.cfg, &[id], self.position[seq], self.options.max_len)
                .map_err(|e| Error::Input(format!("sequence {seq}: {e}")))?;
        }
        let positions: Vec<u32> = self.position.iter().map(|&p| p as u32).collect();
        ctx.write(&self.step.ids, bytemuck::cast_slice(tokens))?;
        ctx.write(&self.step.positions, bytemuck::cast_slice(&positions))?;
        if self.plan.is_none() {
            let mut g = self.model.graph();
            if ctx.is_cpu() {
                // A step's rows are B tokens of B sequences, not a prefill chunk: on a CPU adapter a tile costs
                // more than a matrix-vector product per row until enough rows share it. The experts see B * top_k
                // rows spread over all of them, and keep their matvecs until each expert averages enough rows.
                // GPUs keep the context's choice.
                let prefill = g.tuning.prefill;
                let cfg = &self.model.cfg;
                g.tuning.tiled_min_rows = g.tuning.tiled_min_rows.max(cpu_tiled_min_rows(prefill));
                let per_expert = cpu_moe_rows_per_expert(prefill);
                g.tuning.moe_tiled_min_rows = (per_expert * cfg.num_experts).div_ceil(cfg.num_experts_per_tok.max(1));
            }
            let fed = Rows::Batch { t: b };
            let (cfg, w, experts) = (&self.model.cfg, &self.model.weights, &mut Resident { top_k: self.model.cfg.num_experts_per_tok });
            jamba::encode(&mut g, cfg, w, &self.state.layers, &self.step, fed, Head::Each, experts)?;
            self.plan = Some(g.build()?);
        }
        Ok(self.plan.as_ref().expect("the step's plan was just built"))
    }

    /// The greedy token of every sequence, from its last fed token's logits (computed on the GPU): one readback
    /// of B u32. Fails if a sequence has been fed nothing.
    pub fn greedy_tokens(&self) -> Result<Vec<u32>> {
        if let Some(seq) = self.position.iter().position(|&p| p == 0) {
            return Err(Error::Input(format!("sequence {seq} of the batch was fed no token yet")));
        }
        let bytes = self.model.ctx.read_range(&self.step.next, 0, 4 * self.len() as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The logits of sequence `seq`'s last fed token: `[vocab]`.
    pub fn last_logits(&self, seq: usize) -> Result<Vec<f32>> {
        if self.position(seq)? == 0 {
            return Err(Error::Input(format!("sequence {seq} of the batch was fed no token yet")));
        }
        let v = self.model.cfg.vocab_size as u64 * 4;
        Ok(bytemuck::pod_collect_to_vec(&self.model.ctx.read_range(&self.step.logits, seq as u64 * v, v)?))
    }

    /// Forgets everything sequence `seq` was fed; the others are untouched.
    pub fn reset(&mut self, seq: usize) -> Result<()> {
        self.check_seq(seq)?;
        self.state.sequence(seq).clear(&self.model.ctx);
        self.position[seq] = 0;
        Ok(())
    }

    fn check_seq(&self, seq: usize) -> Result<()> {
        if seq >= self.len() {
            return Err(Error::Input(format!("sequence {seq} of a batch of {}", self.len())));
        }
        Ok(())
    }
}

/// Feeds `chunk` (at most `sc.max_t` tokens) to the sequence whose state is `state`, at position `pos`: one graph,
/// the last token's logits into row 0 of `sc.logits` and its greedy token into `sc.next[0]`.
fn feed_chunk(model: &Model, state: &SequenceState, sc: &Scratch, chunk: &[u32], pos: usize) -> Result<()> {
    model.ctx.write(&sc.ids, bytemuck::cast_slice(chunk))?;
    let mut g = model.graph();
    let (fed, experts) = (Rows::Sequence { t: chunk.len(), pos }, &mut Resident { top_k: model.cfg.num_experts_per_tok });
    jamba::encode(&mut g, &model.cfg, &model.weights, &state.layers, sc, fed, Head::Last, experts)?;
    g.run()
}
