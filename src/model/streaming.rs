//! Expert streaming: models whose experts do not fit the GPU memory they are given (`LoadOptions::gpu_memory`).
//!
//! The weights other than the experts stay resident. The experts stay in the memory-mapped checkpoint and are
//! uploaded on demand into one fixed pool of `slots` expert slots shared by every MoE layer (stacks of
//! [slots, I, H] gate/up and [slots, H, I] down, so the MoE kernels run on it unchanged), least recently used
//! evicted. Knowing which experts a layer needs takes its routing, computed on the GPU, so a streamed forward is
//! cut after each MoE layer's `route`:
//!
//! 1. run what was recorded, read back the layer's expert ids ([T, top_k] u32: the one readback inside a
//!    forward, and only in streaming mode);
//! 2. group the distinct experts into groups of at most `slots` (the resident ones first); per group, upload
//!    the misses into free or least recently used slots outside the group (`queue.write_buffer_with`, from the
//!    mmap straight into wgpu's staging memory), write the ids remapped to pool slots (experts outside the
//!    group get `slots`, which the kernels skip), and record `moe_experts` over the pool: each routed slot's
//!    expert output lands in `y_slots`;
//! 3. once every group ran, `moe_combine` with the real ids sums each token's k outputs in k order, exactly as
//!    the resident model does, so the output is bit-identical to it.
//!
//! A group's uploads are read and copied on the CPU while the GPU still runs the previous group (its submit
//! does not wait), and the GPU copies run just before the group's dispatches. A decode step needs top_k <=
//! slots experts per layer, so it is always one group: its parts are built once into plans (one per cut) and
//! replayed, with the readback and uploads between them. The cost against a resident model: one round trip
//! GPU -> CPU per MoE layer per step (the pipeline drains there), and the PCIe time of the misses.

use std::collections::HashMap;
use std::sync::Mutex;

use super::ffn::Experts;
use super::jamba::Scratch;
use super::weights::{ExpertFeed, GpuWeights};
use crate::config::{Ffn, JambaConfig};
use crate::gpu::{Context, Graph, Plan, Tensor};
use crate::kernels::moe::{moe_combine, moe_experts, ExpertStack, MAX_EXPERTS};
use crate::{Error, Result};

/// What streaming did: expert uses served from the pool (hits) or uploaded first (misses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamingStats {
    /// Experts the pool holds at once.
    pub slots: usize,
    /// Bytes of one expert (gate, up and down).
    pub expert_bytes: u64,
    /// Tokens fed.
    pub tokens: u64,
    /// (layer, expert) uses found in the pool: per MoE layer and chunk of tokens, each distinct expert once.
    pub hits: u64,
    /// (layer, expert) uses that needed an upload.
    pub misses: u64,
    /// Bytes uploaded: misses x expert_bytes.
    pub bytes_uploaded: u64,
}

impl StreamingStats {
    pub fn hits_per_token(&self) -> f64 {
        self.hits as f64 / self.tokens.max(1) as f64
    }

    pub fn misses_per_token(&self) -> f64 {
        self.misses as f64 / self.tokens.max(1) as f64
    }

    pub fn bytes_per_token(&self) -> f64 {
        self.bytes_uploaded as f64 / self.tokens.max(1) as f64
    }

    fn count(&mut self, hit: bool, bytes: u64) {
        match hit {
            true => self.hits += 1,
            false => self.misses += 1,
        }
        self.bytes_uploaded += bytes;
    }
}

/// A model's streamed experts: where they come from, the pool on the GPU, and what the pool holds.
pub(crate) struct Streaming {
    pub feed: ExpertFeed,
    /// The pool: `slots` experts, expert index = slot.
    pub stacks: Vec<ExpertStack>,
    pub top_k: usize,
    pub n_experts: usize,
    pub pool: Mutex<Pool>,
}

/// Decides where the experts go for a model loaded with a memory budget and/or a pool size: resident into
/// `weights` when they all fit (and no pool size was asked), else a pool of as many slots as fit.
pub(crate) fn place(
    ctx: &Context,
    cfg: &JambaConfig,
    weights: &mut GpuWeights,
    feed: ExpertFeed,
    gpu_memory: Option<u64>,
    slots: Option<usize>,
) -> Result<Option<Streaming>> {
    let moe_layers = cfg.layers().iter().filter(|l| l.ffn == Ffn::Moe).count();
    let all = moe_layers * cfg.num_experts;
    let (resident, expert_bytes) = (weights.size_bytes(), feed.layout.expert_bytes());
    let budget = gpu_memory.unwrap_or(u64::MAX);
    let top_k = cfg.num_experts_per_tok;
    if resident > budget {
        let what = "the weights other than the experts (which cannot be streamed)".to_string();
        return Err(Error::MemoryBudget { budget, need: resident, what });
    }
    let fit = usize::try_from((budget - resident) / expert_bytes.max(1)).unwrap_or(usize::MAX);
    let slots = match slots {
        _ if all == 0 => return Ok(None),
        Some(slots) if slots < top_k => {
            return Err(Error::Input(format!("an expert pool of {slots} slots is below num_experts_per_tok = {top_k}")))
        }
        Some(slots) => slots,
        None if fit >= all => {
            feed.upload_all(ctx, cfg, weights)?;
            return Ok(None);
        }
        None => fit.max(top_k),
    };
    if slots > fit {
        let what = format!(
            "{resident} bytes of weights besides the experts and a pool of {slots} experts of {expert_bytes} bytes \
             (a MoE layer uses num_experts_per_tok = {top_k} at once)"
        );
        return Err(Error::MemoryBudget { budget, need: resident + slots as u64 * expert_bytes, what });
    }
    feed.check_streamable(ctx, cfg)?;
    // The MoE kernels address at most MAX_EXPERTS experts per stack set (ample: 256 slots of Jamba-Mini's
    // experts are 90 GB in bf16).
    let slots = slots.min(all).min(MAX_EXPERTS);
    let stacks = feed.pool(ctx, slots)?;
    let pool = Pool { slots: vec![None; slots], index: HashMap::new(), clock: 0, stats: StreamingStats::default() };
    let pool = Pool { stats: StreamingStats { slots, expert_bytes, ..pool.stats }, ..pool };
    Ok(Some(Streaming { feed, stacks, top_k, n_experts: cfg.num_experts, pool: Mutex::new(pool) }))
}

/// One slot of the pool: the (layer, expert) it holds and when it was last used.
#[derive(Clone, Copy, Debug)]
struct Slot {
    layer: usize,
    expert: usize,
    used: u64,
}

/// What the pool holds, and the model-wide statistics.
pub(crate) struct Pool {
    slots: Vec<Option<Slot>>,
    /// (layer, expert) -> slot.
    index: HashMap<(usize, usize), usize>,
    clock: u64,
    pub stats: StreamingStats,
}

impl Pool {
    /// The distinct experts `ids` names, in groups of at most as many as the pool holds: the resident ones first
    /// (so they are used before anything is evicted), each group in expert order.
    fn groups(&self, layer: usize, ids: &[u32]) -> Vec<Vec<usize>> {
        let mut distinct: Vec<usize> = ids.iter().map(|&e| e as usize).collect();
        distinct.sort_unstable();
        distinct.dedup();
        distinct.sort_by_key(|&e| !self.index.contains_key(&(layer, e)));
        let mut groups: Vec<Vec<usize>> = distinct.chunks(self.slots.len()).map(<[usize]>::to_vec).collect();
        groups.iter_mut().for_each(|g| g.sort_unstable());
        groups
    }

    /// Makes `group`'s experts of `layer` resident, uploading the misses into free or least recently used slots
    /// outside the group, and writes `ids` remapped to pool slots into `slot_ids` (ids outside the group become
    /// the pool size, which the kernels skip). Counts into `session` and the pool's own statistics.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &mut self,
        ctx: &Context,
        stream: &Streaming,
        layer: usize,
        ids: &[u32],
        group: &[usize],
        slot_ids: &Tensor,
        session: &mut StreamingStats,
    ) -> Result<()> {
        let n_slots = self.slots.len();
        let mut slot_of = vec![n_slots as u32; stream.n_experts];
        self.clock += 1;
        let in_group: Vec<usize> = group.iter().filter_map(|&e| self.index.get(&(layer, e)).copied()).collect();
        for &expert in group {
            if expert >= stream.n_experts {
                return Err(Error::Input(format!("the router chose expert {expert} of {}", stream.n_experts)));
            }
            let (slot, bytes) = match self.index.get(&(layer, expert)) {
                Some(&slot) => (slot, 0),
                None => {
                    let slot = self.victim(&in_group, &slot_of)?;
                    if let Some(old) = self.slots[slot] {
                        self.index.remove(&(old.layer, old.expert));
                    }
                    let bytes = stream.feed.upload(ctx, &stream.stacks, slot, layer, expert)?;
                    self.index.insert((layer, expert), slot);
                    (slot, bytes)
                }
            };
            self.slots[slot] = Some(Slot { layer, expert, used: self.clock });
            slot_of[expert] = slot as u32;
            session.count(bytes == 0, bytes);
            self.stats.count(bytes == 0, bytes);
        }
        let remapped: Vec<u32> =
            ids.iter().map(|&e| slot_of.get(e as usize).copied().unwrap_or(n_slots as u32)).collect();
        ctx.write(slot_ids, bytemuck::cast_slice(&remapped))
    }

    /// A free slot, else the least recently used one that holds no expert of the current group.
    fn victim(&self, in_group: &[usize], taken: &[u32]) -> Result<usize> {
        let busy = |slot: usize| in_group.contains(&slot) || taken.contains(&(slot as u32));
        if let Some(free) = (0..self.slots.len()).find(|&s| self.slots[s].is_none() && !busy(s)) {
            return Ok(free);
        }
        (0..self.slots.len())
            .filter(|&s| !busy(s))
            .min_by_key(|&s| self.slots[s].map_or(0, |slot| slot.used))
            .ok_or_else(|| Error::shape("expert pool", "no slot left outside the current group"))
    }
}

/// The expert ids of a layer's `t` tokens, read back after its routing ran.
fn read_ids(ctx: &Context, sc: &Scratch, slots: usize) -> Result<Vec<u32>> {
    Ok(bytemuck::pod_collect_to_vec(&ctx.read_range(&sc.expert_ids, 0, slots as u64 * 4)?))
}

/// Cuts a forward at each MoE layer and runs its parts as they are recorded (prefill chunks).
pub(crate) struct RunParts<'a> {
    pub stream: &'a Streaming,
    pub pool: &'a mut Pool,
    /// [max_t * top_k] u32: the routed ids remapped to pool slots.
    pub slot_ids: &'a Tensor,
    pub stats: &'a mut StreamingStats,
}

impl Experts for RunParts<'_> {
    fn encode(&mut self, g: &mut Graph<'_>, layer: usize, _: &[ExpertStack], sc: &Scratch, t: usize) -> Result<()> {
        let (ctx, s, k) = (g.context(), self.stream, self.stream.top_k);
        g.take().run()?;
        let ids = read_ids(ctx, sc, t * k)?;
        let groups = self.pool.groups(layer, &ids);
        for (n, group) in groups.iter().enumerate() {
            if n > 0 {
                g.take().run()?;
            }
            self.pool.stage(ctx, s, layer, &ids, group, self.slot_ids, self.stats)?;
            moe_experts(g, &sc.normed, t, &s.stacks, self.slot_ids, &sc.expert_weights, k, &sc.moe)?;
        }
        moe_combine(g, t, &sc.expert_ids, &sc.expert_weights, k, s.n_experts, &sc.moe, &sc.x)
    }
}

/// Cuts a forward at each MoE layer into plans, for a decode step to replay ([`run_decode`]).
pub(crate) struct PlanParts<'a> {
    pub stream: &'a Streaming,
    pub slot_ids: &'a Tensor,
    pub plans: Vec<Plan>,
    /// The MoE layer whose routing ends each plan but the last.
    pub cuts: Vec<usize>,
}

impl Experts for PlanParts<'_> {
    fn encode(&mut self, g: &mut Graph<'_>, layer: usize, _: &[ExpertStack], sc: &Scratch, t: usize) -> Result<()> {
        let (s, k) = (self.stream, self.stream.top_k);
        self.plans.push(g.take().build()?);
        self.cuts.push(layer);
        moe_experts(g, &sc.normed, t, &s.stacks, self.slot_ids, &sc.expert_weights, k, &sc.moe)?;
        moe_combine(g, t, &sc.expert_ids, &sc.expert_weights, k, s.n_experts, &sc.moe, &sc.x)
    }
}

/// One decode token through plans built by [`PlanParts`]: each plan, then its MoE layer's experts made resident.
pub(crate) fn run_decode(
    ctx: &Context,
    stream: &Streaming,
    pool: &mut Pool,
    (plans, cuts): (&[Plan], &[usize]),
    sc: &Scratch,
    slot_ids: &Tensor,
    stats: &mut StreamingStats,
) -> Result<()> {
    for (i, plan) in plans.iter().enumerate() {
        plan.run(ctx)?;
        let Some(&layer) = cuts.get(i) else { continue };
        let ids = read_ids(ctx, sc, stream.top_k)?;
        match pool.groups(layer, &ids).as_slice() {
            [group] => pool.stage(ctx, stream, layer, &ids, group, slot_ids, stats)?,
            groups => {
                return Err(Error::shape(
                    "expert streaming",
                    format!("a decode step split into {} groups", groups.len()),
                ))
            }
        }
    }
    Ok(())
}
