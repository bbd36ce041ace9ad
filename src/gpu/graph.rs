//! Recording and replaying dispatches.
//!
//! A [`Graph`] records dispatches (kernel, constants, parameters, tensors, grid) and checks each against the
//! kernel's declaration and the device's limits. [`Graph::build`] turns it into a [`Plan`]: the pipelines not
//! yet built compiled side by side, every bind group created once, every dispatch's parameters packed into one
//! uniform arena. Running a plan again costs one
//! compute pass, with no allocation, and a `write_buffer` of the arena if [`Plan::params_mut`] changed it. The
//! model's decode steps read their positions from buffers, so their plans replay unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::gpu::context::Counters;
use crate::gpu::{Context, Kernel, Params, Pipeline, Tensor, Tuning};
use crate::{Error, Result};

/// A handle to one recorded dispatch, for updating its parameters later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(usize);

struct Op {
    kernel: &'static Kernel,
    /// Its override constants: the pipeline is built with the graph's others ([`Graph::build`]).
    constants: Vec<(&'static str, f64)>,
    params: std::ops::Range<usize>,
    tensors: Vec<Tensor>,
    grid: [u32; 3],
}

/// Dispatches being recorded.
pub struct Graph<'c> {
    ctx: &'c Context,
    /// Kernel choices for the dispatches recorded from now on; starts as [`Context::tuning`].
    pub tuning: Tuning,
    ops: Vec<Op>,
    arena: Vec<u8>,
}

impl<'c> Graph<'c> {
    pub fn new(ctx: &'c Context) -> Self {
        Graph { ctx, tuning: ctx.tuning(), ops: Vec::new(), arena: Vec::new() }
    }

    pub fn context(&self) -> &'c Context {
        self.ctx
    }

    /// The dispatches recorded so far, leaving this graph empty (same tuning): to cut a forward where the CPU
    /// must act between two parts (expert streaming reads a layer's routing back there).
    pub fn take(&mut self) -> Graph<'c> {
        let empty = Graph { ctx: self.ctx, tuning: self.tuning, ops: Vec::new(), arena: Vec::new() };
        std::mem::replace(self, empty)
    }

    /// Records one dispatch of `kernel` over `grid` workgroups, with `tensors` bound to bindings 1.. in order.
    pub fn dispatch<P: Params>(
        &mut self,
        kernel: &'static Kernel,
        constants: &[(&'static str, f64)],
        params: &P,
        tensors: &[&Tensor],
        grid: [u32; 3],
    ) -> Result<OpId> {
        let name = kernel.name();
        if P::LAYOUT.wgsl_name != kernel.params.wgsl_name {
            return Err(Error::shape(&name, format!("takes {}, given {}", kernel.params.wgsl_name, P::LAYOUT.wgsl_name)));
        }
        if tensors.len() != kernel.bindings.len() {
            let names: Vec<_> = kernel.bindings.iter().map(|b| b.name).collect();
            return Err(Error::shape(&name, format!("binds {names:?}, given {} tensors", tensors.len())));
        }
        // wgpu rejects a buffer bound both for writing and for anything else in one dispatch: say which.
        for i in 0..tensors.len() {
            for j in i + 1..tensors.len() {
                let written = [i, j].iter().any(|&b| kernel.bindings[b].access == crate::gpu::Access::ReadWrite);
                if written && tensors[i].same_buffer(tensors[j]) {
                    let label = tensors[i].label();
                    return Err(Error::shape(&name, format!("`{label}` is bound twice and written")));
                }
            }
        }
        let max = self.ctx.limits().max_compute_workgroups_per_dimension;
        if let Some(&too_many) = grid.iter().find(|&&g| g > max) {
            return Err(Error::DispatchTooLarge { kernel: name, workgroups: too_many as u64, limit: max });
        }
        let align = self.ctx.limits().min_uniform_buffer_offset_alignment as usize;
        let start = self.arena.len().next_multiple_of(align);
        self.arena.resize(start, 0);
        self.arena.extend_from_slice(bytemuck::bytes_of(params));
        self.ops.push(Op {
            kernel,
            constants: constants.to_vec(),
            params: start..self.arena.len(),
            tensors: tensors.iter().map(|&t| t.clone()).collect(),
            grid,
        });
        Ok(OpId(self.ops.len() - 1))
    }

    /// A grid of `n` workgroups laid out in two dimensions when `n` exceeds the per-dimension limit; shaders
    /// recover the linear index with `linear_workgroup` (prelude.wgsl).
    pub fn linear_grid(&self, n: u64) -> Result<[u32; 3]> {
        linear_grid(self.ctx, n)
    }

    /// Builds the pipelines not yet built (side by side: [`Context::pipelines`]), then the bind groups and the
    /// parameter arena.
    pub fn build(self) -> Result<Plan> {
        let ctx = self.ctx;
        let variants: Vec<_> = self.ops.iter().map(|op| (op.kernel, op.constants.as_slice())).collect();
        let pipelines = ctx.pipelines(&variants)?;
        let arena_size = (self.arena.len().max(16) as u64).next_multiple_of(16);
        let arena = ctx.scoped(
            || "allocating the parameter arena".into(),
            || {
                ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params arena"),
                    size: arena_size,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            },
        )?;
        Counters::add(&ctx.counts.buffers);
        let written: std::collections::HashSet<_> = (self.ops.iter())
            .flat_map(|op| op.tensors.iter().zip(op.kernel.bindings))
            .filter(|(_, binding)| binding.access == crate::gpu::Access::ReadWrite)
            .map(|(tensor, _)| tensor.buffer_id())
            .collect();
        let mut steps = Vec::with_capacity(self.ops.len());
        for (op, pipeline) in self.ops.iter().zip(pipelines) {
            let params = wgpu::BufferBinding {
                buffer: &arena,
                offset: op.params.start as u64,
                size: wgpu::BufferSize::new(op.params.len() as u64),
            };
            let entries: Vec<_> = std::iter::once(wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::Buffer(params) })
                .chain(op.tensors.iter().enumerate().map(|(i, t)| wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: t.binding(),
                }))
                .collect();
            let name = op.kernel.name();
            let bind_group = ctx.scoped(
                || format!("binding {name}"),
                || {
                    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&name),
                        layout: &pipeline.layout,
                        entries: &entries,
                    })
                },
            )?;
            Counters::add(&ctx.counts.bind_groups);
            let reads = named_by(op, &written).map(|tensor| (Arc::from(tensor.label()), tensor.size_bytes()));
            steps.push(Step {
                kernel: op.kernel,
                pipeline,
                bind_group,
                grid: op.grid,
                params: op.params.clone(),
                reads,
            });
        }
        let tensors = self.ops.into_iter().flat_map(|o| o.tensors).collect();
        Ok(Plan { steps, arena, arena_bytes: self.arena, arena_stale: AtomicBool::new(true), _tensors: tensors })
    }

    /// Builds and runs the graph once, without waiting for it.
    pub fn run(self) -> Result<()> {
        let ctx = self.ctx;
        self.build()?.run(ctx)
    }
}

/// What names a dispatch in a profile ([`DispatchTime::reads`]): the largest tensor it reads that no dispatch of
/// the plan writes (a matmul's weight, a norm's), else the largest it reads (a cache, an activation); index
/// tensors (u32: token ids, positions, routed experts) only when it reads nothing else.
fn named_by<'t>(op: &'t Op, written: &std::collections::HashSet<usize>) -> Option<&'t Tensor> {
    let read = (op.tensors.iter().zip(op.kernel.bindings))
        .filter(|(_, binding)| binding.access == crate::gpu::Access::Read)
        .map(|(tensor, _)| tensor);
    read.max_by_key(|t| (t.dtype() != crate::gpu::DType::U32, !written.contains(&t.buffer_id()), t.size_bytes()))
}

pub(crate) fn linear_grid(ctx: &Context, n: u64) -> Result<[u32; 3]> {
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
    let n = n.max(1);
    let y = n.div_ceil(max);
    if y > max {
        return Err(Error::DispatchTooLarge { kernel: "linear grid".into(), workgroups: n, limit: max as u32 });
    }
    Ok([n.div_ceil(y) as u32, y as u32, 1])
}

struct Step {
    kernel: &'static Kernel,
    pipeline: Arc<Pipeline>,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
    params: std::ops::Range<usize>,
    /// The largest tensor the dispatch reads: label and bytes ([`DispatchTime::reads`]).
    reads: Option<(Arc<str>, u64)>,
}

/// One dispatch of a profiled plan ([`Plan::profile`]): the kernel, its grid, what it reads, its GPU time.
#[derive(Clone, Debug)]
pub struct DispatchTime {
    /// `shader::entry`.
    pub kernel: String,
    /// Workgroups in the grid.
    pub workgroups: u64,
    /// The largest tensor the dispatch binds for reading, which names it: a matmul's weight (a whole stack of
    /// experts, of which a decode step reads the routed ones), a decode attention's cache. Label and bytes
    /// bound; None when it reads nothing but its parameters.
    pub reads: Option<(Arc<str>, u64)>,
    pub time: std::time::Duration,
}

/// A built sequence of dispatches, replayable with new parameters.
pub struct Plan {
    steps: Vec<Step>,
    arena: wgpu::Buffer,
    arena_bytes: Vec<u8>,
    /// Whether `arena_bytes` changed since they were last queued for upload: a plan whose parameters stay put
    /// (a batch's step, which reads its positions from a buffer) uploads them once.
    arena_stale: AtomicBool,
    /// Keeps every bound buffer alive as long as the plan.
    _tensors: Vec<Tensor>,
}

impl Plan {
    /// The parameters of dispatch `op`, to change before the next run.
    pub fn params_mut<P: Params>(&mut self, op: OpId) -> &mut P {
        let range = self.steps[op.0].params.clone();
        *self.arena_stale.get_mut() = true;
        bytemuck::from_bytes_mut(&mut self.arena_bytes[range])
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Queues the parameters' upload if they changed since the last one (see [`Plan::record`] for when it lands).
    fn upload_params(&self, ctx: &Context) {
        if self.arena_stale.swap(false, Ordering::Relaxed) {
            ctx.queue.write_buffer(&self.arena, 0, &self.arena_bytes);
            ctx.count_upload(self.arena_bytes.len() as u64);
        }
    }

    /// Uploads the parameters and records every dispatch into `encoder`, in one compute pass.
    pub fn encode(&self, ctx: &Context, encoder: &mut wgpu::CommandEncoder) {
        self.upload_params(ctx);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        self.record_pass(&mut pass);
    }

    /// Every dispatch of the plan into `pass`.
    fn record_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        // Consecutive dispatches of one kernel variant (a stack of experts, the matmuls of a layer) keep the
        // pipeline bound: each set_pipeline costs wgpu-core a command and a state check.
        let mut bound: Option<&Arc<Pipeline>> = None;
        for step in &self.steps {
            if !bound.is_some_and(|p| Arc::ptr_eq(p, &step.pipeline)) {
                pass.set_pipeline(&step.pipeline.pipeline);
                bound = Some(&step.pipeline);
            }
            pass.set_bind_group(0, &step.bind_group, &[]);
            pass.dispatch_workgroups(step.grid[0], step.grid[1], step.grid[2]);
        }
    }

    /// Runs the plan `times` times back to back in one submission and returns the GPU time of one run: the
    /// span from the start of the first run to the end of the last (timestamp queries), divided by `times`.
    /// Steady-state time, with no submission or wait between runs to let an idle GPU lower its clocks (an
    /// H200 idles at 345 MHz). Needs the adapter's TIMESTAMP_QUERY feature, and a plan that may run twice.
    pub fn time_repeated(&self, ctx: &Context, times: usize) -> Result<std::time::Duration> {
        let times = times.max(1);
        let queries = Timestamps::new(ctx, 2, "time_repeated")?;
        self.upload_params(ctx);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        for run in 0..times {
            let first = run == 0;
            let last = run + 1 == times;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: (first || last).then(|| wgpu::ComputePassTimestampWrites {
                    query_set: &queries.set,
                    beginning_of_pass_write_index: first.then_some(0),
                    end_of_pass_write_index: last.then_some(1),
                }),
            });
            self.record_pass(&mut pass);
        }
        let ticks = queries.read(ctx, encoder)?;
        Ok(queries.span(ticks[0], ticks[1]) / times as u32)
    }

    /// Each dispatch's kernel, `shader::entry`, in order.
    pub fn kernels(&self) -> Vec<String> {
        self.steps.iter().map(|step| step.kernel.name()).collect()
    }

    /// Runs the plan once with a GPU timestamp around every dispatch (each in a pass of its own) and returns the
    /// time each dispatch took, in order. Needs the adapter's TIMESTAMP_QUERY feature.
    pub fn profile(&self, ctx: &Context) -> Result<Vec<DispatchTime>> {
        let queries = Timestamps::new(ctx, 2 * self.steps.len(), "profile")?;
        self.upload_params(ctx);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        for (i, step) in self.steps.iter().enumerate() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries.set,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            pass.set_pipeline(&step.pipeline.pipeline);
            pass.set_bind_group(0, &step.bind_group, &[]);
            pass.dispatch_workgroups(step.grid[0], step.grid[1], step.grid[2]);
        }
        let ticks = queries.read(ctx, encoder)?;
        let times = self.steps.iter().zip(ticks.chunks_exact(2)).map(|(step, t)| DispatchTime {
            kernel: step.kernel.name(),
            workgroups: step.grid.iter().map(|&n| n as u64).product(),
            reads: step.reads.clone(),
            time: queries.span(t[0], t[1]),
        });
        Ok(times.collect())
    }

    /// The CPU time to record this plan into a command buffer (pass, every dispatch, finish, and the parameters'
    /// upload if they changed), the median of `runs` recordings that are then dropped unsubmitted: the host cost
    /// of a replay, apart from the submission and whatever the driver does at submit.
    pub fn encode_cost(&self, ctx: &Context, runs: usize) -> EncodeCost {
        let mut times: Vec<_> = (0..runs.max(1))
            .map(|_| {
                let start = std::time::Instant::now();
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                self.encode(ctx, &mut encoder);
                let commands = encoder.finish();
                let elapsed = start.elapsed();
                drop(commands);
                elapsed
            })
            .collect();
        times.sort();
        EncodeCost { median: times[times.len() / 2], min: times[0] }
    }

    /// Encodes and submits the plan; does not wait.
    pub fn run(&self, ctx: &Context) -> Result<()> {
        ctx.queue.submit([self.record(ctx)]);
        ctx.check()
    }

    /// The plan's commands, recorded now to be submitted later: wgpu resolves resource states when a command
    /// buffer is submitted, not when it is recorded. The parameters' upload, if they changed since the last, is
    /// queued now, so it lands at the next submission on the queue, whichever that is: the parameters must not
    /// change in between.
    pub fn record(&self, ctx: &Context) -> wgpu::CommandBuffer {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.encode(ctx, &mut encoder);
        encoder.finish()
    }
}

/// The host time of recording a plan ([`Plan::encode_cost`]): the median of the recordings, and the fastest,
/// which a busy or slowed host moves least. Plans recorded one after another add up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeCost {
    pub median: std::time::Duration,
    pub min: std::time::Duration,
}

impl std::ops::Add for EncodeCost {
    type Output = EncodeCost;

    fn add(self, other: EncodeCost) -> EncodeCost {
        EncodeCost { median: self.median + other.median, min: self.min + other.min }
    }
}

impl std::iter::Sum for EncodeCost {
    fn sum<I: Iterator<Item = EncodeCost>>(costs: I) -> EncodeCost {
        costs.fold(EncodeCost::default(), |a, b| a + b)
    }
}

/// A set of GPU timestamp queries and the buffers to read them back.
struct Timestamps {
    set: wgpu::QuerySet,
    count: u32,
    resolve: wgpu::Buffer,
    resolved: Tensor,
    period_ns: f64,
}

impl Timestamps {
    fn new(ctx: &Context, count: usize, label: &str) -> Result<Timestamps> {
        if !ctx.features().timestamps {
            return Err(Error::Gpu { context: label.into(), message: "the adapter has no timestamp queries".into() });
        }
        let count = count.max(2) as u32;
        let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some(label),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolved = ctx.zeros(&format!("{label} timestamps"), &[count as usize * 2], crate::gpu::DType::U32)?;
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Counters::add(&ctx.counts.buffers);
        Ok(Timestamps { set, count, resolve, resolved, period_ns: ctx.queue.get_timestamp_period() as f64 })
    }

    /// Resolves the queries at the end of `encoder`, submits it and reads them back: ticks, one per query.
    fn read(&self, ctx: &Context, mut encoder: wgpu::CommandEncoder) -> Result<Vec<u64>> {
        encoder.resolve_query_set(&self.set, 0..self.count, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, self.resolved.buffer(), 0, self.count as u64 * 8);
        ctx.queue.submit([encoder.finish()]);
        Ok(bytemuck::pod_collect_to_vec(&ctx.read_bytes(&self.resolved)?))
    }

    /// The time between two ticks.
    fn span(&self, start: u64, end: u64) -> std::time::Duration {
        std::time::Duration::from_nanos((end.saturating_sub(start) as f64 * self.period_ns) as u64)
    }
}
