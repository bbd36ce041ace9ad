//! Timing helpers shared by `cargo bench` (benches/) and `jamba-wgpu bench`: run a plan repeatedly after a
//! warm-up and report the median, with the achieved bandwidth and arithmetic rate when the caller knows the
//! bytes moved and the operations done.

use std::time::{Duration, Instant};

use crate::gpu::{Context, DispatchTime, Plan};
use crate::Result;

/// Times of repeated runs: the GPU's by timestamps, or wall-clock from submission to completion (see
/// [`time_plan`]).
#[derive(Clone, Debug)]
pub struct Timing {
    pub median: Duration,
    pub min: Duration,
    pub runs: usize,
}

impl Timing {
    /// Median and minimum of measured durations.
    pub fn of(mut samples: Vec<Duration>) -> Timing {
        samples.sort();
        let runs = samples.len();
        Timing { median: samples.get(runs / 2).copied().unwrap_or_default(), min: samples.first().copied().unwrap_or_default(), runs }
    }
}

/// Times `f` (which must block until its work is done) `runs` times after `warmup` untimed calls.
pub fn time(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed());
    }
    Ok(Timing::of(samples))
}

/// Times one plan: by the adapter's timestamp queries where it has them, each sample the GPU time of one run
/// out of 8 back to back ([`Plan::time_repeated`]), else by the host clock from submission to completion. The
/// host clock also counts submitting and waiting, 0.06-0.08 ms a run on an H200 under Vulkan, and a GPU left
/// idle between runs lowers its clocks: both are most of a decode-sized kernel's time there.
pub fn time_plan(ctx: &Context, plan: &Plan, warmup: usize, runs: usize) -> Result<Timing> {
    if !ctx.features().timestamps {
        return time(warmup, runs, || {
            plan.run(ctx)?;
            ctx.wait("benchmark")
        });
    }
    const BACK_TO_BACK: usize = 8;
    for _ in 0..warmup {
        plan.time_repeated(ctx, BACK_TO_BACK)?;
    }
    let samples = (0..runs.max(1)).map(|_| plan.time_repeated(ctx, BACK_TO_BACK)).collect::<Result<Vec<_>>>()?;
    Ok(Timing::of(samples))
}

/// One line of a benchmark report: `name  1.234 ms  12.3 GB/s  4.56 GFLOP/s`.
pub fn report(name: &str, timing: &Timing, bytes: Option<u64>, flops: Option<u64>) -> String {
    let secs = timing.median.as_secs_f64().max(1e-9);
    let mut line = format!("{name:<48} {:>10.3} ms (min {:.3}, {} runs)", secs * 1e3, timing.min.as_secs_f64() * 1e3, timing.runs);
    if let Some(b) = bytes {
        line += &format!("  {:>8.2} GB/s", b as f64 / secs / 1e9);
    }
    if let Some(f) = flops {
        line += &format!("  {:>8.2} GFLOP/s", f as f64 / secs / 1e9);
    }
    line
}

// ---- Whole-model benchmarks (`jamba-wgpu bench`) ----

use crate::config::JambaConfig;
use crate::gpu::{DType, Graph};
use crate::model::{FfnWeights, MixerWeights, Model, SessionOptions};

/// The configurations of released Jamba models, by name: `v0.1`, `1.5-mini` (same shapes), `1.5-large`.
pub fn preset_config(name: &str) -> crate::Result<JambaConfig> {
    let (h, inter, layers, heads, dt_rank, max_pos) = match name {
        "v0.1" | "1.5-mini" | "mini" => (4096, 14336, 32, 32, 256, 262144),
        "1.5-large" | "large" => (8192, 24576, 72, 64, 512, 262144),
        other => {
            return Err(crate::Error::Input(format!(
                "unknown preset `{other}`: expected v0.1, 1.5-mini, 1.5-large or a config.json path"
            )))
        }
    };
    JambaConfig::from_json_str(&format!(
        r#"{{"vocab_size": 65536, "hidden_size": {h}, "intermediate_size": {inter}, "num_hidden_layers": {layers},
            "num_attention_heads": {heads}, "num_key_value_heads": 8, "attn_layer_period": 8, "attn_layer_offset": 4,
            "expert_layer_period": 2, "expert_layer_offset": 1, "num_experts": 16, "num_experts_per_tok": 2,
            "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": {dt_rank},
            "rms_norm_eps": 1e-6, "max_position_embeddings": {max_pos}, "tie_word_embeddings": false}}"#
    ))
}

/// What `bench_model` measures.
#[derive(Clone, Debug)]
pub struct ModelBenchOptions {
    pub prompt_len: usize,
    pub gen_len: usize,
    pub chunk: usize,
    pub warmup: usize,
    pub runs: usize,
    /// Sequences decoded together (a [`Batch`](crate::model::Batch) when above 1), each prefilled with its own
    /// prompt of `prompt_len` tokens and decoding `gen_len` tokens.
    pub batch: usize,
    /// Print each run's prefill and decode times to stderr as it ends: a full-size model's runs take minutes.
    pub progress: bool,
}

impl ModelBenchOptions {
    /// Fails on options that leave nothing to time: an empty prompt, batch, chunk or set of runs, or fewer than 2
    /// generated tokens (the first comes from the prefill, so a decode rate needs a second).
    pub fn check(&self) -> crate::Result<()> {
        let least = [
            (self.prompt_len, 1, "prompt tokens"),
            (self.gen_len, 2, "generated tokens (the first comes from the prefill; a decode rate needs a second)"),
            (self.chunk, 1, "prompt tokens per prefill chunk"),
            (self.runs, 1, "timed runs"),
            (self.batch, 1, "sequences in the batch"),
        ];
        match least.into_iter().find(|&(value, min, _)| value < min) {
            Some((value, min, what)) => Err(crate::Error::Input(format!("{value} {what}: at least {min} needed"))),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelBench {
    pub adapter: String,
    /// The kernel choices timed at load and the ones taken ([`Model::tune`]), if they were.
    pub tuning: crate::model::Tuned,
    /// The kernel choices the model ran with ([`Model::tuning`]).
    pub kernels: String,
    pub backend: String,
    pub prompt_len: usize,
    pub gen_len: usize,
    pub batch: usize,
    pub runs: usize,
    /// Median over runs; prefill and decode rates count the tokens of every sequence of the batch.
    pub prefill_tokens_per_s: f64,
    /// Until every sequence's first token is known.
    pub time_to_first_token_ms: f64,
    /// The same for the first prompt the loaded model saw (the warm-up's): with the kernels its prefill builds
    /// (those that tuning at load has not), what a one-shot `jamba-wgpu run` waits for.
    pub first_time_to_first_token_ms: f64,
    pub decode_tokens_per_s: f64,
    /// CPU time of one decode step's call (no waiting): write the token, submit the step, and (a single
    /// sequence with resident experts) record the next step while the GPU runs this one. A batch records its
    /// step before submitting it.
    pub host_us_per_decode_step: f64,
    /// Recording a step's commands (parameter upload, pass, dispatches, finish), measured apart with the GPU
    /// idle: the host cost of a replay, without the submission.
    pub encode_us_per_decode_step: f64,
    /// The fastest of those recordings: what a busy or slowed host moves least.
    pub encode_min_us_per_decode_step: f64,
    pub dispatches_per_decode_step: usize,
    /// GPU objects (buffers, bind groups, pipelines) that decode steps after the first created, over the last
    /// run: 0 when each step replays what the first built.
    pub gpu_objects_created_decoding: u64,
    /// Times per decode step (after the first, last run) that the host waited for the GPU: 1, reading the step's
    /// tokens back; more for a model streaming its experts, which reads each layer's routing.
    pub syncs_per_decode_step: f64,
    /// Bytes per decode step (after the first, last run) that the host wrote to GPU buffers: each sequence's token
    /// and position, 8 bytes, when the step's plan replays unchanged.
    pub uploaded_bytes_per_decode_step: f64,
    pub weight_bytes: u64,
    /// Bytes a decode step must read: the weights it uses (the experts that B x top-k uniform choices are
    /// expected to touch) and the state of every sequence.
    pub decode_bytes_per_token: u64,
    pub decode_gb_per_s: f64,
    /// A streaming kernel's bandwidth on this adapter, the decode roofline.
    pub copy_gb_per_s: f64,
    pub peak_gpu_bytes: u64,
    /// GPU time per kernel family for one decode step (timestamp queries), when the adapter has them (not for
    /// a model that streams its experts).
    pub decode_kernel_ms: Vec<(String, f64)>,
    /// When profiled: the decode step's GPU time run whole, 8 times back to back. The kernel times put each
    /// dispatch in a pass of its own between two timestamps, which adds to them on a software adapter
    /// (lavapipe, the default model: kernels adding up to 22.6 ms against a 16.6 ms step); this is the step as
    /// it runs.
    pub decode_step_gpu_ms: Option<f64>,
    /// The same for the first prefill chunk of one sequence (min(chunk, prompt_len) tokens), when profiled.
    pub prefill_chunk_kernel_ms: Vec<(String, f64)>,
    /// The decode step's dispatches grouped by kernel and what they read, the layer left out (the in_proj
    /// matvecs of all Mamba layers together), most time first, when profiled.
    pub decode_dispatches: Vec<DispatchGroup>,
    /// The same for the first prefill chunk.
    pub prefill_chunk_dispatches: Vec<DispatchGroup>,
    /// Expert streaming during the last timed run (prefill and decode), when the model streams its experts.
    pub streaming: Option<crate::model::StreamingStats>,
}

/// A session, or a batch of several, as `bench_model` drives them (one per benchmark: size does not matter).
#[allow(clippy::large_enum_variant)]
enum Sequences<'m> {
    One(crate::Session<'m>),
    Batch(crate::Batch<'m>),
}

impl Sequences<'_> {
    fn open<'m>(model: &'m Model, o: &ModelBenchOptions) -> crate::Result<Sequences<'m>> {
        let options = SessionOptions { max_len: o.prompt_len + o.gen_len + 1, chunk: o.chunk };
        Ok(match o.batch {
            1 => Sequences::One(model.session(options)?),
            b => Sequences::Batch(model.batch(b, options)?),
        })
    }

    /// Feeds each sequence its prompt; returns the first greedy tokens.
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> crate::Result<Vec<u32>> {
        match self {
            Sequences::One(s) => {
                s.feed(&prompts[0])?;
                Ok(vec![s.greedy_token()?])
            }
            Sequences::Batch(b) => {
                for (seq, prompt) in prompts.iter().enumerate() {
                    b.prefill(seq, prompt)?;
                }
                b.greedy_tokens()
            }
        }
    }

    /// Submits one decode step (no waiting).
    fn step(&mut self, tokens: &[u32]) -> crate::Result<()> {
        match self {
            Sequences::One(s) => s.feed(tokens),
            Sequences::Batch(b) => b.step(tokens),
        }
    }

    fn greedy(&self) -> crate::Result<Vec<u32>> {
        match self {
            Sequences::One(s) => Ok(vec![s.greedy_token()?]),
            Sequences::Batch(b) => b.greedy_tokens(),
        }
    }

    fn streaming_stats(&self) -> Option<crate::model::StreamingStats> {
        match self {
            Sequences::One(s) => s.streaming_stats(),
            Sequences::Batch(_) => None,
        }
    }

    fn encode_cost(&mut self, runs: usize) -> crate::Result<crate::gpu::EncodeCost> {
        match self {
            Sequences::One(s) => s.decode_encode_cost(runs),
            Sequences::Batch(b) => b.step_encode_cost(runs),
        }
    }

    fn profile_step(&mut self, tokens: &[u32]) -> crate::Result<Vec<DispatchTime>> {
        match self {
            Sequences::One(s) => s.profile_step(tokens[0]),
            Sequences::Batch(b) => b.profile_step(tokens),
        }
    }

    fn time_step(&mut self, tokens: &[u32], runs: usize) -> crate::Result<Duration> {
        match self {
            Sequences::One(s) => s.time_step(tokens[0], runs),
            Sequences::Batch(b) => b.time_step(tokens, runs),
        }
    }
}

/// Kernel times added up by family (the kernel name before `::`), in ms, largest first.
fn by_family(times: &[DispatchTime]) -> Vec<(String, f64)> {
    let mut families: Vec<(String, f64)> = Vec::new();
    for d in times {
        let family = d.kernel.split("::").next().unwrap_or(&d.kernel).to_string();
        match families.iter_mut().find(|(f, _)| *f == family) {
            Some((_, ms)) => *ms += d.time.as_secs_f64() * 1e3,
            None => families.push((family, d.time.as_secs_f64() * 1e3)),
        }
    }
    families.sort_by(|a, b| b.1.total_cmp(&a.1));
    families
}

/// The dispatches of one kernel reading the same tensor of different layers (a profile's [`DispatchTime`]s
/// grouped): where a step's time goes, matrix by matrix.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DispatchGroup {
    pub kernel: String,
    /// The label of the largest tensor each reads, the layer number as `#`: `model.layers.#.mamba.in_proj.weight`.
    pub reads: String,
    pub dispatches: usize,
    /// GPU time of them all.
    pub ms: f64,
    /// The largest grid among them, in workgroups.
    pub workgroups: u64,
    /// The largest tensor read by one of them, in bytes (bound: a decode step reads the routed experts only).
    pub read_bytes: u64,
}

/// `times` grouped by kernel and tensor read, the layer left out; most time first.
pub fn by_dispatch(times: &[DispatchTime]) -> Vec<DispatchGroup> {
    let mut groups: Vec<DispatchGroup> = Vec::new();
    for d in times {
        let (label, bytes) = d.reads.as_ref().map_or(("-", 0), |(label, bytes)| (&**label, *bytes));
        let layerless = |part| if !str::is_empty(part) && part.bytes().all(|b| b.is_ascii_digit()) { "#" } else { part };
        let reads = label.split('.').map(layerless);
        let reads = reads.collect::<Vec<_>>().join(".");
        let ms = d.time.as_secs_f64() * 1e3;
        match groups.iter_mut().find(|g| g.kernel == d.kernel && g.reads == reads) {
            Some(g) => {
                g.dispatches += 1;
                g.ms += ms;
                g.workgroups = g.workgroups.max(d.workgroups);
                g.read_bytes = g.read_bytes.max(bytes);
            }
            None => groups.push(DispatchGroup {
                kernel: d.kernel.clone(),
                reads,
                dispatches: 1,
                ms,
                workgroups: d.workgroups,
                read_bytes: bytes,
            }),
        }
    }
    groups.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    groups
}

/// Runs prefill of `prompt_len` pseudo-random tokens and `gen_len` greedy decode steps for each of `batch`
/// sequences, `warmup` + `runs` times.
pub fn bench_model(model: &Model, o: &ModelBenchOptions) -> crate::Result<ModelBench> {
    o.check()?;
    let ctx = model.context();
    let cfg = model.config();
    let b = o.batch;
    let prompts: Vec<Vec<u32>> = (0..b as u32)
        .map(|s| {
            let token = |i: u32| (i.wrapping_add(s * 7919).wrapping_mul(2_654_435_761) >> 7) % cfg.vocab_size as u32;
            (0..o.prompt_len as u32).map(token).collect()
        })
        .collect();
    let (mut prefill, mut decode, mut host) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_ttft = Duration::ZERO;
    let mut dispatches = 0;
    let mut streaming = None;
    let mut encode = crate::gpu::EncodeCost::default();
    let mut created_decoding = 0;
    let mut syncs_per_step = 0.0;
    let mut uploaded_per_step = 0.0;
    // A streamed model's decode step is several plans with readbacks between them: not profiled.
    let profile = ctx.features().timestamps && model.streaming_stats().is_none();
    for run in 0..o.warmup + o.runs {
        let mut sequences = Sequences::open(model, o)?;
        let start = Instant::now();
        let mut tokens = sequences.prefill(&prompts)?;
        let ttft = start.elapsed();
        if run == 0 {
            first_ttft = ttft;
        }
        let start = Instant::now();
        let mut host_time = Duration::ZERO;
        let mut counts = None;
        for step in 1..o.gen_len {
            if step == 2 {
                counts = Some(ctx.counts());
            }
            let submit = Instant::now();
            sequences.step(&tokens)?;
            host_time += submit.elapsed();
            tokens = sequences.greedy()?;
        }
        if o.progress {
            let what = if run < o.warmup { "warm-up".to_string() } else { format!("run {}", run - o.warmup + 1) };
            let decoded = start.elapsed();
            eprintln!(
                "bench: {what}: prefill {:.3} s, decode {:.3} s ({:.1} tokens/s)",
                ttft.as_secs_f64(),
                decoded.as_secs_f64(),
                (b * (o.gen_len - 1)) as f64 / decoded.as_secs_f64().max(1e-9)
            );
        }
        if let Some(before) = counts {
            let after = ctx.counts();
            created_decoding = after.objects() - before.objects();
            syncs_per_step = (after.syncs - before.syncs) as f64 / (o.gen_len - 2) as f64;
            uploaded_per_step = (after.uploaded_bytes - before.uploaded_bytes) as f64 / (o.gen_len - 2) as f64;
        }
        if run >= o.warmup {
            prefill.push(ttft);
            decode.push(start.elapsed());
            host.push(host_time / (o.gen_len - 1) as u32);
            streaming = sequences.streaming_stats();
            ctx.wait("a decode run")?;
            encode = sequences.encode_cost(200)?;
        }
        if run == 0 && profile {
            dispatches = sequences.profile_step(&tokens)?.len();
        }
    }
    let median = |v: Vec<Duration>| Timing::of(v).median.as_secs_f64();
    let (prefill_s, decode_s) = (median(prefill), median(decode));
    let decode_tokens_per_s = (b * (o.gen_len - 1)) as f64 / decode_s.max(1e-9);

    let (mut decode_profile, mut prefill_profile, mut decode_step) = (Vec::new(), Vec::new(), None);
    if profile {
        let mut sequences = Sequences::open(model, o)?;
        let tokens = sequences.prefill(&prompts)?;
        decode_profile = sequences.profile_step(&tokens)?;
        decode_step = Some(sequences.time_step(&tokens, 8)?.as_secs_f64() * 1e3);
        // The first chunk of one sequence's prompt.
        if let Sequences::One(mut session) = Sequences::open(model, &ModelBenchOptions { batch: 1, ..o.clone() })? {
            let chunk = &prompts[0][..o.chunk.min(o.prompt_len)];
            if chunk.len() >= 2 {
                prefill_profile = session.profile_feed(chunk)?;
            }
        }
    }
    let (weight_bytes, decode_bytes) = decode_bytes(model, o.prompt_len + o.gen_len / 2, b);
    Ok(ModelBench {
        adapter: ctx.info().name.clone(),
        tuning: model.tuned().clone(),
        kernels: model.tuning().to_string(),
        backend: format!("{:?}", ctx.info().backend),
        prompt_len: o.prompt_len,
        gen_len: o.gen_len,
        batch: b,
        runs: o.runs,
        prefill_tokens_per_s: (b * o.prompt_len) as f64 / prefill_s.max(1e-9),
        time_to_first_token_ms: prefill_s * 1e3,
        first_time_to_first_token_ms: first_ttft.as_secs_f64() * 1e3,
        decode_tokens_per_s,
        host_us_per_decode_step: median(host) * 1e6,
        encode_us_per_decode_step: encode.median.as_secs_f64() * 1e6,
        encode_min_us_per_decode_step: encode.min.as_secs_f64() * 1e6,
        dispatches_per_decode_step: dispatches,
        gpu_objects_created_decoding: created_decoding,
        syncs_per_decode_step: syncs_per_step,
        uploaded_bytes_per_decode_step: uploaded_per_step,
        weight_bytes,
        decode_bytes_per_token: decode_bytes,
        decode_gb_per_s: decode_bytes as f64 * decode_tokens_per_s / b as f64 / 1e9,
        copy_gb_per_s: copy_bandwidth(ctx)?,
        peak_gpu_bytes: ctx.memory().1,
        decode_kernel_ms: by_family(&decode_profile),
        decode_step_gpu_ms: decode_step,
        prefill_chunk_kernel_ms: by_family(&prefill_profile),
        decode_dispatches: by_dispatch(&decode_profile),
        prefill_chunk_dispatches: by_dispatch(&prefill_profile),
        streaming,
    })
}

/// (all weight bytes, bytes a decode step of `batch` sequences reads at context `kv_len`).
fn decode_bytes(model: &Model, kv_len: usize, batch: usize) -> (u64, u64) {
    let cfg = model.config();
    let w = model.weights();
    let (mut all, mut read, mut state_read) = (0u64, 0u64, 0u64);
    let mut count = |bytes: u64, fraction: f64| {
        all += bytes;
        read += (bytes as f64 * fraction) as u64;
    };
    let kv_dim = (cfg.num_key_value_heads * cfg.head_dim()) as u64;
    let state = (cfg.d_inner() * (cfg.mamba_d_state + cfg.mamba_d_conv - 1) * 4) as u64;
    for layer in &w.layers {
        match &layer.mixer {
            MixerWeights::Attention(a) => {
                count(a.qkv.size_bytes() + a.o_proj.size_bytes(), 1.0);
                state_read += 2 * kv_len as u64 * kv_dim * 4;
            }
            MixerWeights::Mamba(m) => {
                count(m.in_proj.size_bytes() + m.x_proj.size_bytes() + m.dt_proj.size_bytes() + m.out_proj.size_bytes(), 1.0);
                state_read += 2 * state;
            }
        }
        match &layer.ffn {
            FfnWeights::Dense { gate, up, down } => count(gate.size_bytes() + up.size_bytes() + down.size_bytes(), 1.0),
            FfnWeights::Moe { router, experts } => {
                count(router.size_bytes(), 1.0);
                let bytes: u64 = match model.streaming_stats() {
                    // Streamed: the pool holds them in turn.
                    Some(stream) => stream.expert_bytes * cfg.num_experts as u64,
                    None => experts.iter().map(|s| s.gate.size_bytes() + s.up.size_bytes() + s.down.size_bytes()).sum(),
                };
                // The share of experts that batch x top_k uniform choices touch at least once.
                let missed = 1.0 - cfg.num_experts_per_tok as f64 / cfg.num_experts as f64;
                count(bytes, 1.0 - missed.powi(batch as i32));
            }
        }
    }
    count(w.embed_tokens.size_bytes(), batch as f64 / cfg.vocab_size as f64);
    match &w.lm_head {
        Some(head) => count(head.size_bytes(), 1.0),
        None => read += w.embed_tokens.size_bytes(),
    }
    (all, read + batch as u64 * state_read)
}

/// GB/s of a kernel that reads two buffers and writes one (the residual add), over buffers of up to 64 MiB.
pub fn copy_bandwidth(ctx: &crate::gpu::Context) -> crate::Result<f64> {
    let limit = ctx.limits().max_storage_buffer_binding_size.min(64 << 20) as usize;
    let n = limit / 4;
    let a = ctx.zeros("bandwidth a", &[n], DType::F32)?;
    let b = ctx.zeros("bandwidth b", &[n], DType::F32)?;
    let mut g = Graph::new(ctx);
    crate::kernels::elementwise::add_assign(&mut g, &a, &b)?;
    let plan = g.build()?;
    let timing = time_plan(ctx, &plan, 1, 5)?;
    Ok(3.0 * limit as f64 / timing.median.as_secs_f64().max(1e-9) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(kernel: &str, reads: Option<&str>, workgroups: u64, us: u64) -> DispatchTime {
        DispatchTime {
            kernel: kernel.into(),
            workgroups,
            reads: reads.map(|label| (label.into(), label.len() as u64)),
            time: Duration::from_micros(us),
        }
    }

    #[test]
    fn dispatches_group_by_kernel_and_what_they_read_across_layers() {
        let times = [
            dispatch("matmul::matvec", Some("model.layers.1.mamba.out_proj.weight"), 8, 100),
            dispatch("moe::swiglu_matvec", Some("model.layers.3.feed_forward.experts[0..16].up_proj"), 4, 50),
            dispatch("matmul::matvec", Some("model.layers.12.mamba.out_proj.weight"), 16, 300),
            dispatch("matmul::matvec_norm", Some("model.layers.12.mamba.out_proj.weight"), 16, 20),
            dispatch("argmax::argmax", None, 1, 10),
        ];
        let groups = by_dispatch(&times);
        let summary: Vec<_> = groups.iter().map(|g| (g.kernel.as_str(), g.reads.as_str(), g.dispatches, g.workgroups)).collect();
        assert_eq!(
            summary,
            [
                ("matmul::matvec", "model.layers.#.mamba.out_proj.weight", 2, 16),
                ("moe::swiglu_matvec", "model.layers.#.feed_forward.experts[0..16].up_proj", 1, 4),
                ("matmul::matvec_norm", "model.layers.#.mamba.out_proj.weight", 1, 16),
                ("argmax::argmax", "-", 1, 1),
            ]
        );
        assert!((groups[0].ms - 0.4).abs() < 1e-9, "{} ms", groups[0].ms);
        assert_eq!(groups[0].read_bytes, "model.layers.12.mamba.out_proj.weight".len() as u64, "the largest of the group");
    }
}
