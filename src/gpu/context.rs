//! Adapter selection and the device: one [`Context`] per process, built once, dispatched many times.
//!
//! The device is opened with the adapter's real limits (not wgpu's conservative defaults), and with
//! SHADER_F16, SUBGROUP and TIMESTAMP_QUERY when the adapter offers them; only the prefill kernels that an adapter
//! must support require any (`Blocked`: subgroups; [`Prefill::Coop`]: f16, subgroups and wgpu's experimental
//! cooperative matrices, which are requested for it alone). wgpu's uncaptured errors and device loss are
//! recorded here and surface as typed errors at the next sync point ([`Context::check`], every readback), never
//! as a panic or a hang.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::gpu::pipeline::PipelineCache;
use crate::{Error, Result};

/// How to choose an adapter. Empty options take the best adapter of any backend.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Backends to consider; `None` reads `WGPU_BACKEND` (e.g. `vulkan`, `metal,dx12`) and falls back to all.
    pub backends: Option<wgpu::Backends>,
    /// A case-insensitive substring of the adapter's name (e.g. `llvmpipe`, `H100`).
    pub adapter: Option<String>,
    /// Longest wait for one submission before [`Error::Timeout`]; default 10 minutes (software adapters are slow).
    pub timeout: Option<Duration>,
    /// [`Tuning::matvec_reads`] for every graph on this context; `None`: the adapter's default.
    pub matvec_reads: Option<MatvecReads>,
    /// [`Tuning::prefill`] for every graph on this context; `None`: the adapter's default.
    pub prefill: Option<Prefill>,
    /// [`Tuning::matvec_rows`] for every graph on this context (1, 2, 4 or 8); `None`: the adapter's default.
    pub matvec_rows: Option<u32>,
    /// [`Tuning::matvec_unroll`] for every graph on this context (1, 2 or 4); `None`: the adapter's default.
    pub matvec_unroll: Option<u32>,
    /// Every kernel choice at once, in place of the adapter's defaults (the options above still apply on
    /// top): [`Tuning::gpu`] runs a GPU's choices on a CPU adapter, as tests do.
    pub tuning: Option<Tuning>,
}

impl ContextOptions {
    /// Parses a backend name as the CLI's `--backend` takes it: vulkan, metal, dx12 or gl.
    pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
        match name.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
            "metal" | "mtl" => Ok(wgpu::Backends::METAL),
            "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
            "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
            other => Err(Error::Input(format!(
                "unknown backend `{other}`; expected one of vulkan, metal, dx12, gl"
            ))),
        }
    }
}

/// Optional adapter features the kernels can use; each kernel also runs without them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuFeatures {
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamps: bool,
    /// wgpu's experimental cooperative matrices, enabled only for [`Prefill::Coop`] (asked for in
    /// [`ContextOptions`]).
    pub cooperative_matrices: bool,
}

/// Choices that shape kernels for an adapter. [`Context::tuning`] picks them; a [`Graph`](crate::gpu::Graph)
/// carries a copy that tests change to exercise every variant on one adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Invocations per row in row reductions (`ROW_THREADS` in prelude.wgsl): 1, 2, 4, ..., 64.
    pub row_threads: u32,
    /// Matmuls with at least this many rows of activations take the tiled path instead of matvec.
    pub tiled_min_rows: usize,
    /// Mixtures of experts take the grouped tiled path (tokens grouped by expert, a tiled matmul per expert) from
    /// this many rows if that is more than `tiled_min_rows` ([`Tuning::moe_tiled`]); below, each token's chosen
    /// experts run as matvecs. 0 but in a CPU adapter's batch step, whose B rows spread over every expert.
    pub moe_tiled_min_rows: usize,
    /// How the tiled path (matmul, the MoE experts) computes its tiles.
    pub prefill: Prefill,
    /// How the matvec path reads weight rows: quantized ones a code at a time, a word (4 or 8 codes) at a time,
    /// or every row a 16-byte quad at a time (`MATVEC_READS` in prelude.wgsl; `--matvec-reads` chooses).
    pub matvec_reads: MatvecReads,
    /// Rows of W each row group of a matvec computes (`MATVEC_ROWS` in prelude.wgsl: 1, 2, 4 or 8), so that the
    /// values of x a weight word needs are loaded once for that many rows. 8 on CPU adapters; 1 on GPUs until
    /// it is measured there (`--matvec-rows` chooses).
    pub matvec_rows: u32,
    /// The fewest workgroups a matvec dispatch should have: where `matvec_rows` rows per group would leave
    /// fewer, it takes half as many, and so on down to 1. On a GPU enough to fill every compute unit of a large
    /// one (128); on a CPU adapter two per hardware thread of the host.
    pub matvec_min_workgroups: usize,
    /// Words each invocation of a decode matvec (matvec.wgsl's, and moe_matvec.wgsl's experts and dense MLP) computing
    /// one row per row group loads per round (`MATVEC_UNROLL` in prelude.wgsl: 1, 2 or 4), all before it uses any: the loads in flight that `matvec_rows` rows would give,
    /// for matvecs at one row, by the tuning or for lack of workgroups (Mamba's x_proj). A GPU hides memory
    /// latency with loads in flight: one 4-byte load per invocation explains both an H200's 106 us router (one
    /// workgroup) and its 1.1 TB/s in_proj matvec. 4 on GPUs, not yet measured there; 1 on CPU adapters, where it
    /// makes no difference (lavapipe). The sums are the same bit for bit whatever it is.
    pub matvec_unroll: u32,
    /// A decode matvec whose dispatch would have fewer workgroups than this at one row per row group cuts k into
    /// parts for that many (`matmul::matmul_parts`; Mamba's x_proj, whose parts the scan adds up as it reads
    /// them). GPUs: 1024, for the loads in flight that hide memory latency (an H200's x_proj at Jamba-1.5-Mini's
    /// width is 144 workgroups of 64 invocations in one part); CPU adapters: two per host thread, as
    /// `matvec_min_workgroups`, so one thin matvec uses every core.
    pub matvec_split_workgroups: usize,
    /// Prefill scans over at least this many channels (d_inner) run serially per channel, one workgroup per 64
    /// channels, instead of chunked (three passes, twice the exponentials, for parallelism over time). CPU
    /// adapters: 64 per hardware thread of the host, so the workgroups still fill it (lavapipe, the default
    /// model's 256-token chunk: ssm_scan 61-98 -> 38-44 ms); GPUs: never (`usize::MAX`).
    pub serial_scan_min_channels: usize,
    /// Whether prefill attention's loops over a head's values have the constant bound a compiler unrolls
    /// (`HEAD_LOOPS_UNROLLED` in attention.wgsl), to hold a row's q and output in registers: GPUs. Not on CPU
    /// adapters: lavapipe unrolls them at head_dim 32 and below and then takes 0.3-0.5 s to compile the kernel
    /// (0.05 s with the bound read from the parameters), which the default model's first prompt waited for;
    /// the kernel ran 15 -> 20-35 ms slower at 512 tokens there.
    pub head_loops_unrolled: bool,
    /// Whether decode attention's split kernel runs each (sequence, head, split) in one invocation, its keys in
    /// order, rather than in a workgroup of 64 that scores a tile of keys side by side through workgroup memory
    /// and barriers (`decode_split_lanes` in attention_decode.wgsl). CPU adapters: lavapipe runs a barrier as a
    /// context switch and the workgroup's redundant exponentials and maxima 64 times over; GPUs: the workgroups.
    /// Where the subgroups are 8 wide (`prefill` Blocked) and heads of up to 64 allow, a subgroup takes each split
    /// instead, its lanes 8 keys at a time (`decode_split_keys` in attention_decode_cpu.wgsl).
    pub decode_attention_lanes: bool,
    /// Invocations of a subgroup that read a decode matvec's x in turns (`X_LANES` in prelude.wgsl), each
    /// loading an X_LANES-th of it and passing it round, where every invocation reads all of x: one row per
    /// invocation (`row_threads` 1). CPU adapters whose subgroups have one width: that width (lavapipe: 8, and
    /// with it the default model's decode matvecs 6.6-6.7 -> 4.3-5.0 ms a step); 0 (off) elsewhere. The selective
    /// scan reads its rows of B and C so too (ssm_scan.wgsl), where d_state is at most 8 times the width.
    pub x_lanes: u32,
}

impl Tuning {
    /// Whether a mixture of experts over `rows` rows takes the grouped tiled path.
    pub fn moe_tiled(&self, rows: usize) -> bool {
        rows >= self.tiled_min_rows.max(self.moe_tiled_min_rows)
    }

    /// A GPU's defaults: rows reduced by 32 invocations, for coalesced loads; 64 x 64 tiles through workgroup
    /// memory for prefill; one row per matvec row group and quantized rows read a code at a time, until tuned
    /// ([`Model::tune`](crate::Model::tune)); enough matvec workgroups to fill a large GPU.
    pub fn gpu() -> Tuning {
        Tuning {
            row_threads: 32,
            tiled_min_rows: 8,
            moe_tiled_min_rows: 0,
            prefill: Prefill::Tiled,
            matvec_reads: MatvecReads::Codes,
            matvec_rows: 1,
            matvec_min_workgroups: 128,
            matvec_unroll: 4,
            matvec_split_workgroups: 1024,
            serial_scan_min_channels: usize::MAX,
            head_loops_unrolled: true,
            decode_attention_lanes: false,
            x_lanes: 0,
        }
    }

    /// A CPU adapter's defaults, measured on lavapipe: one invocation per row (each barrier is a context switch),
    /// register-blocked prefill where subgroups are 8 wide (`blocked`), rows by quads, 8 rows per matvec row
    /// group, two matvec workgroups per host thread. x is read by every invocation (`x_lanes` 0), which any
    /// adapter runs; [`Context::tuning`] reads it in turns where subgroups allow.
    pub fn cpu(blocked: bool) -> Tuning {
        Tuning {
            row_threads: 1,
            tiled_min_rows: 8,
            moe_tiled_min_rows: 0,
            prefill: if blocked { Prefill::Blocked } else { Prefill::Tiled },
            matvec_reads: MatvecReads::Quads,
            matvec_rows: 8,
            matvec_min_workgroups: 2 * cpu_threads(),
            matvec_unroll: 1,
            matvec_split_workgroups: 2 * cpu_threads(),
            serial_scan_min_channels: 64 * cpu_threads(),
            head_loops_unrolled: false,
            decode_attention_lanes: true,
            x_lanes: 0,
        }
    }
}

impl std::fmt::Display for Tuning {
    /// `32 lanes per row, tiled prefill from 8 rows, 1 matvec rows per group (>= 128 workgroups; at 1, 4 words a
    /// round; k in parts below 1024), quantized rows by codes, chunked prefill scans, decode attention by
    /// workgroups`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lanes per row, {} prefill from {} rows, {} matvec rows per group (>= {} workgroups{}{}), {}{}, {}, {}",
            self.row_threads,
            format!("{:?}", self.prefill).to_lowercase(),
            self.tiled_min_rows,
            self.matvec_rows,
            self.matvec_min_workgroups,
            match self.matvec_unroll {
                1 => String::new(),
                unroll => format!("; at 1, {unroll} words a round"),
            },
            match self.matvec_split_workgroups {
                0 => String::new(),
                split => format!("; k in parts below {split}"),
            },
            self.matvec_reads.description(),
            match self.x_lanes {
                0 | 1 => String::new(),
                lanes => format!(" (x in turns of {lanes} lanes)"),
            },
            match self.serial_scan_min_channels {
                usize::MAX => "chunked prefill scans".to_string(),
                // 8-wide lanes: the scans by lanes (kernels::ssm_scan::LANES) where the operands allow.
                min if self.x_lanes == 8 => format!("serial prefill scans from {min} channels, scans by lanes of 8"),
                min => format!("serial prefill scans from {min} channels"),
            },
            if self.decode_attention_lanes { "decode attention by lanes" } else { "decode attention by workgroups" }
        )
    }
}

/// The host's hardware threads: a CPU adapter's compute units.
fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How the decode matvecs read weight rows (`MATVEC_READS` in prelude.wgsl); the results are the same within
/// rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum MatvecReads {
    /// Quantized rows a weight at a time, float rows a word at a time (f32 one weight, f16 and bf16 two): the
    /// GPUs' default until the others are measured there (on an H200, q8 by codes ran at 0.32 TB/s).
    Codes,
    /// Every row a word (4 bytes) a load, q8 4 codes and q4 8 decoded from it (lavapipe: anchor-35m's decode
    /// with q8 weights 10.4-12.1 -> 13.0-19.5 tokens/s against codes). Not yet measured on a GPU in this form.
    Words,
    /// Rows that are whole 16-byte quads (every quantized row; float rows of a multiple of 4 words) a quad a
    /// load, the others by words: a GPU's widest load, 4 times the bytes per load instruction, which bound the
    /// others on an H200; not yet measured on a GPU. The CPU adapters' default: lavapipe checks the bounds of
    /// each load, so a quad costs about what a word does (anchor-35m f32: a decode step's matvecs 54-63 -> 37-44
    /// ms of GPU time, by words against by quads).
    Quads,
}

impl MatvecReads {
    pub const ALL: [MatvecReads; 3] = [MatvecReads::Codes, MatvecReads::Words, MatvecReads::Quads];

    /// The name `--matvec-reads` takes.
    pub fn name(self) -> &'static str {
        match self {
            MatvecReads::Codes => "codes",
            MatvecReads::Words => "words",
            MatvecReads::Quads => "quads",
        }
    }

    /// The reading named `name` (codes, words or quads).
    pub fn parse(name: &str) -> Result<MatvecReads> {
        MatvecReads::ALL.into_iter().find(|r| r.name() == name).ok_or_else(|| {
            Error::Input(format!("unknown matvec reading `{name}`; expected one of codes, words, quads"))
        })
    }

    /// The value of `MATVEC_READS` (prelude.wgsl, READ_*).
    pub fn shader_code(self) -> f64 {
        match self {
            MatvecReads::Codes => 0.0,
            MatvecReads::Words => 1.0,
            MatvecReads::Quads => 2.0,
        }
    }

    fn description(self) -> &'static str {
        match self {
            MatvecReads::Codes => "quantized rows by codes",
            MatvecReads::Words => "rows by words",
            MatvecReads::Quads => "rows by quads",
        }
    }
}

/// The tiled path's kernels: two for GPUs, one for CPU adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Prefill {
    /// 64 x 64 tiles staged through workgroup memory (matmul.wgsl `tiled`, moe.wgsl `*_tiled`): coalesced loads
    /// on GPUs. 7.7-8.8 TFLOP/s in f32 on an H200 (in_proj and expert-up shapes at 64 rows).
    Tiled,
    /// 128 x 128 tiles, 8 x 8 outputs per invocation (matmul.wgsl `tiled_wide`; the MoE experts take `Tiled`'s
    /// kernels): four times the arithmetic per workgroup load. Not yet measured on a GPU, so no adapter's
    /// default; `cargo bench --bench matmul` times it beside `Tiled`.
    Wide,
    /// Register blocks, x shared across 8-wide subgroups, no workgroup memory or barriers (matmul_cpu.wgsl,
    /// moe_cpu.wgsl), and prefill attention by a subgroup per query, its lanes 8 keys (attention_cpu.wgsl, heads of
    /// up to 64): for CPU adapters, where each load costs one scalar load per invocation and each barrier a
    /// context switch.
    Blocked,
    /// 64 x 64 tiles of 16 x 16 x 16 f16 cooperative matrices accumulated in f32 (matmul_coop.wgsl, and
    /// moe_coop.wgsl for the experts): the adapter's matrix units (tensor cores), where the others use its
    /// f32 units (`Tiled`: 6.8-9.6 TFLOP/s of an H200's 67). x and W are rounded to f16 as they are staged
    /// (values beyond +-65,504 saturate). Through wgpu's experimental cooperative matrices, which wgpu says may still
    /// hold bugs with undefined behaviour, so a context enables them only when this kernel is asked for
    /// ([`ContextOptions::prefill`], `--prefill-kernel coop`), never by default or by tuning. Needs 16 x 16 x 16
    /// f16 -> f32 matrices, subgroups exactly 32 wide, and [`COOP_WORKGROUP_BYTES`] of workgroup memory. Not yet
    /// run on a GPU: software adapters have no matrix units.
    Coop,
}

/// Workgroup memory [`Prefill::Coop`]'s kernels need, the most of any: the SwiGLU experts' three 64 x 40 f16
/// staging tiles, a 64 x 68 f32 output tile and the tile's 64 slots and row count (the dense matmul takes two
/// staging tiles and the output tile: 27,648 bytes).
pub const COOP_WORKGROUP_BYTES: u32 = 3 * 64 * 40 * 2 + 64 * 68 * 4 + 64 * 4 + 4;

/// How many GPU objects a [`Context`] has made, by kind, through this crate's paths (tensors, plans' parameter
/// arenas and bind groups, readback staging, timestamp queries, pipelines), how often the host has waited for
/// the GPU (readbacks, [`Context::wait`]), and how many bytes it has written to GPU buffers (tensors' contents,
/// [`Context::write`], plans' parameters, streamed experts): two readings around some work tell whether it
/// allocated anything, synchronised or uploaded, e.g. that a decode step replays what the first one built,
/// without a wait, writing only its token and position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounts {
    pub buffers: u64,
    pub bind_groups: u64,
    pub pipelines: u64,
    pub syncs: u64,
    pub uploaded_bytes: u64,
}

impl GpuCounts {
    /// The GPU objects of every kind: buffers, bind groups and pipelines.
    pub fn objects(&self) -> u64 {
        self.buffers + self.bind_groups + self.pipelines
    }
}

/// [`GpuCounts`]'s counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) buffers: AtomicU64,
    pub(crate) bind_groups: AtomicU64,
    pub(crate) pipelines: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) uploaded_bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The GPU: device, queue, what the adapter is and allows, and the pipeline cache.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    /// The cooperative matrix shapes and types the adapter offers (tensor cores, simdgroup matrices), if any.
    cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
    /// The adapter's device-local memory, where its backend tells (Vulkan's heaps).
    device_local_bytes: Option<u64>,
    features: GpuFeatures,
    /// First error wgpu reported outside an error scope, or the reason the device was lost.
    fault: Arc<Mutex<Option<Error>>>,
    timeout: Duration,
    matvec_reads: Option<MatvecReads>,
    prefill: Option<Prefill>,
    matvec_rows: Option<u32>,
    matvec_unroll: Option<u32>,
    base_tuning: Option<Tuning>,
    pub(crate) pipelines: PipelineCache,
    pub(crate) readback: Mutex<Option<wgpu::Buffer>>,
    pub(crate) memory: Arc<crate::gpu::tensor::MemoryCounter>,
    pub(crate) counts: Counters,
}

impl Context {
    /// Opens the best adapter that matches `options`.
    pub fn new(options: &ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    async fn new_async(options: &ContextOptions) -> Result<Self> {
        if let Some(rows) = options.matvec_rows.filter(|r| !crate::kernels::MATVEC_ROWS.contains(r)) {
            return Err(Error::Input(format!("matvec rows {rows}: expected one of {:?}", crate::kernels::MATVEC_ROWS)));
        }
        let unrolls = crate::kernels::MATVEC_UNROLLS;
        if let Some(unroll) = options.matvec_unroll.filter(|u| !unrolls.contains(u)) {
            return Err(Error::Input(format!("matvec unroll {unroll}: expected one of {unrolls:?}")));
        }
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
        descriptor.backends = options.backends.unwrap_or_else(|| wgpu::Backends::all().with_env());
        let backends = descriptor.backends;
        let instance = wgpu::Instance::new(descriptor);
        let adapters = instance.enumerate_adapters(backends).await;
        let adapter = choose_adapter(adapters, backends, options.adapter.as_deref())?;
        let info = adapter.get_info();
        let device_local_bytes = device_local_bytes(&adapter);

        let offered = adapter.features();
        // What matrix units the adapter offers through wgpu (no kernel uses them yet): `info` reports them.
        let cooperative_matrices = match offered.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            true => adapter.cooperative_matrix_properties(),
            false => Vec::new(),
        };
        let mut wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let asked = options.prefill.or(options.tuning.map(|t| t.prefill));
        let coop = asked == Some(Prefill::Coop);
        if coop {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let required_features = offered & wanted;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("jamba-wgpu"),
                required_features,
                // SAFETY: wgpu's experimental features may hold bugs with undefined behaviour. They are enabled
                // only when the caller asked for the one kernel that uses them (Prefill::Coop, documented so).
                experimental_features: match coop {
                    true => unsafe { wgpu::ExperimentalFeatures::enabled() },
                    false => wgpu::ExperimentalFeatures::disabled(),
                },
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice { adapter: info.name.clone(), message: e.to_string() })?;

        let fault = Arc::new(Mutex::new(None::<Error>));
        let on_error = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = on_error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(Error::Gpu { context: "running".into(), message: e.to_string() });
        }));
        let on_lost = fault.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                let mut slot = on_lost.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(Error::DeviceLost(format!("{reason:?}: {message}")));
            }
        });

        let ctx = Context {
            device,
            queue,
            features: GpuFeatures {
                shader_f16: required_features.contains(wgpu::Features::SHADER_F16),
                subgroups: required_features.contains(wgpu::Features::SUBGROUP),
                timestamps: required_features.contains(wgpu::Features::TIMESTAMP_QUERY),
                cooperative_matrices: required_features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
            },
            info,
            limits,
            cooperative_matrices,
            device_local_bytes,
            fault,
            timeout: options.timeout.unwrap_or(Duration::from_secs(600)),
            matvec_reads: options.matvec_reads,
            prefill: options.prefill,
            matvec_rows: options.matvec_rows,
            matvec_unroll: options.matvec_unroll,
            base_tuning: options.tuning,
            pipelines: PipelineCache::default(),
            readback: Mutex::new(None),
            memory: Default::default(),
            counts: Default::default(),
        };
        if let Some(prefill) = asked.filter(|&p| !ctx.supports(p)) {
            return Err(Error::Input(ctx.unsupported(prefill)));
        }
        if let Some(lanes) = options.tuning.map(|t| t.x_lanes).filter(|&l| l > 1 && ctx.subgroup_width() != Some(l)) {
            let (adapter, has) = (&ctx.info.name, ctx.describe_subgroups());
            let needs = format!("x read in turns of {lanes} lanes needs subgroups exactly {lanes} wide");
            return Err(Error::Input(format!("{needs}; {adapter} has {has}")));
        }
        Ok(ctx)
    }

    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// How many bytes of buffers the adapter can hold, as well as anyone can tell before allocating them: a
    /// GPU's device-local memory (Vulkan's heaps; unknown on other backends), a CPU adapter's host memory
    /// available now (Linux), since its buffers are host memory whatever heap it reports (lavapipe: 2 GiB).
    pub fn memory_capacity(&self) -> Option<MemoryCapacity> {
        if self.is_cpu() {
            return host_memory_available().map(|bytes| MemoryCapacity { bytes, what: "host memory available" });
        }
        self.device_local_bytes.map(|bytes| MemoryCapacity { bytes, what: "device-local memory" })
    }

    /// Longest wait for the GPU before [`Error::Timeout`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn features(&self) -> GpuFeatures {
        self.features
    }

    /// A CPU adapter (lavapipe, llvmpipe, WARP): barriers are costly there, so row reductions use one thread per row.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Kernel choices for this adapter: CPU adapters pay a context switch per barrier, so they reduce rows with
    /// one invocation each; GPUs spread a row over 32 invocations for coalesced loads.
    /// CPU adapters with 8-wide subgroups take the register-blocked prefill kernels, CPU adapters read
    /// rows by quads and compute 8 rows per matvec invocation, and where their subgroups have one width they read
    /// x in turns. [`ContextOptions`] overrides the prefill kernel, the matvec reads and the matvec rows.
    pub fn tuning(&self) -> Tuning {
        let adapter = match self.is_cpu() {
            true => {
                let blocked = self.supports(Prefill::Blocked);
                Tuning { x_lanes: self.subgroup_width().unwrap_or(0), ..Tuning::cpu(blocked) }
            }
            false => Tuning::gpu(),
        };
        let base = self.base_tuning.unwrap_or(adapter);
        Tuning {
            prefill: self.prefill.unwrap_or(base.prefill),
            matvec_reads: self.matvec_reads.unwrap_or(base.matvec_reads),
            matvec_rows: self.matvec_rows.unwrap_or(base.matvec_rows),
            matvec_unroll: self.matvec_unroll.unwrap_or(base.matvec_unroll),
            ..base
        }
    }

    /// The decode matvec choices a model may time on this adapter ([`Model::tune`]): every row count per row
    /// group and every way of reading rows, except what [`ContextOptions`] fixed.
    ///
    /// [`Model::tune`]: crate::Model::tune
    pub fn decode_choices(&self) -> (Vec<u32>, Vec<MatvecReads>) {
        let rows = match self.matvec_rows {
            Some(rows) => vec![rows],
            None => crate::kernels::MATVEC_ROWS.to_vec(),
        };
        let reads = match self.matvec_reads {
            Some(reads) => vec![reads],
            None => MatvecReads::ALL.to_vec(),
        };
        (rows, reads)
    }

    /// The prefill kernels a model may time on this adapter ([`Model::tune`]): the tiled ones, and the blocked
    /// one where subgroups are 8 wide, unless [`ContextOptions`] fixed one.
    ///
    /// [`Model::tune`]: crate::Model::tune
    pub fn prefill_choices(&self) -> Vec<Prefill> {
        match self.prefill {
            Some(prefill) => vec![prefill],
            // Coop only when asked for (it needs the experimental feature): `Some` above.
            None => [Prefill::Tiled, Prefill::Wide, Prefill::Blocked].into_iter().filter(|&p| self.supports(p)).collect(),
        }
    }

    /// Every tuning this adapter runs, for tests: each row width on the matvec path, and each tiled kernel the
    /// adapter supports on the tiled path. Matvecs take their rows per group whatever the size of the test, or
    /// all run at one row per group, their rounds unrolled.
    pub fn tunings(&self) -> Vec<Tuning> {
        let mut out = Vec::new();
        for row_threads in crate::kernels::ROW_THREADS {
            // Each way of reading rows, rows per row group in both halves of Rows8 (prelude.wgsl), prefill
            // attention's head loops unrolled or not, decode attention by workgroups or by lanes, and with one
            // row per invocation, x read in turns where subgroups allow (from the last of these on).
            use MatvecReads::*;
            let lanes = if row_threads == 1 { self.subgroup_width().unwrap_or(0) } else { 0 };
            let each = [(Codes, 1, true, 0), (Words, 8, false, 0), (Quads, 2, true, 0), (Quads, 8, false, lanes)];
            for (matvec_reads, matvec_rows, head_loops_unrolled, x_lanes) in each {
                out.push(Tuning {
                    row_threads,
                    tiled_min_rows: usize::MAX,
                    moe_tiled_min_rows: 0,
                    prefill: Prefill::Tiled,
                    matvec_reads,
                    matvec_rows,
                    matvec_min_workgroups: 1,
                    matvec_unroll: 1,
                    matvec_split_workgroups: 0,
                    serial_scan_min_channels: usize::MAX,
                    head_loops_unrolled,
                    decode_attention_lanes: !head_loops_unrolled,
                    x_lanes,
                });
            }
            // Every matvec at one row per group (for lack of workgroups), 2 or 4 words a round (rounds of quads
            // are one quad), rows read each way.
            let unroll = if row_threads == 32 { 2 } else { 4 };
            let one_row = Tuning { matvec_min_workgroups: usize::MAX, matvec_unroll: unroll, ..out[out.len() - 1] };
            let matvec_reads = match row_threads {
                1 => Words,
                32 => Codes,
                _ => Quads,
            };
            out.push(Tuning { matvec_reads, ..one_row });
            if lanes > 1 {
                out.push(Tuning { matvec_reads: Quads, ..one_row });
            }
            // Not Coop, whose f16 inputs need a reference of their own (tests/kernels_basic.rs).
            for prefill in [Prefill::Tiled, Prefill::Wide, Prefill::Blocked] {
                if self.supports(prefill) {
                    let decode = out[out.len() - 1];
                    out.push(Tuning { tiled_min_rows: 1, prefill, matvec_reads: Codes, matvec_rows: 1, ..decode });
                }
            }
        }
        out
    }

    /// Whether this adapter can run `prefill`'s kernels: Blocked needs subgroups exactly 8 wide.
    pub fn supports(&self, prefill: Prefill) -> bool {
        match prefill {
            Prefill::Tiled | Prefill::Wide => true,
            Prefill::Blocked => self.subgroups_exactly(8),
            Prefill::Coop => {
                let f = self.features;
                let l = &self.limits;
                f.cooperative_matrices
                    && f.shader_f16
                    && self.subgroups_exactly(32)
                    && self.cooperative_matrices.iter().any(is_coop_shape)
                    && l.max_compute_workgroup_storage_size >= COOP_WORKGROUP_BYTES
                    && l.max_compute_invocations_per_workgroup >= 128
            }
        }
    }

    fn subgroups_exactly(&self, width: u32) -> bool {
        self.subgroup_width() == Some(width)
    }

    /// The width of every subgroup, where the device has subgroup operations and its subgroups one width.
    pub fn subgroup_width(&self) -> Option<u32> {
        let (min, max) = (self.info.subgroup_min_size, self.info.subgroup_max_size);
        (self.features.subgroups && min == max && min > 0).then_some(min)
    }

    /// Why this adapter cannot run `prefill`'s kernels: what they need, and what it has.
    fn unsupported(&self, prefill: Prefill) -> String {
        let subgroups = self.describe_subgroups();
        let needs = match prefill {
            Prefill::Coop => format!(
                "wgpu's cooperative matrices of 16x16x16 F16->F32, f16 shaders, subgroups exactly 32 wide and \
                 {COOP_WORKGROUP_BYTES} bytes of workgroup memory; it has cooperative matrices: {}, f16 shaders: {}, \
                 {subgroups}, {} bytes",
                self.describe_cooperative_matrices(),
                self.features.shader_f16,
                self.limits.max_compute_workgroup_storage_size
            ),
            _ => format!("subgroups exactly 8 wide; it has {subgroups}"),
        };
        format!("prefill kernel {prefill:?} cannot run on {}: it needs {needs}", self.info.name)
    }

    /// `subgroups 8 to 8 wide`, or `no subgroups`.
    fn describe_subgroups(&self) -> String {
        let (min, max) = (self.info.subgroup_min_size, self.info.subgroup_max_size);
        match self.features.subgroups {
            true => format!("subgroups {min} to {max} wide"),
            false => "no subgroups".into(),
        }
    }

    /// Bytes of tensors alive now, and the most alive at once since the context was created.
    pub fn memory(&self) -> (u64, u64) {
        (self.memory.live(), self.memory.peak())
    }

    /// Counts `bytes` written to GPU buffers by the host (see [`GpuCounts`]).
    pub(crate) fn count_upload(&self, bytes: u64) {
        self.counts.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The GPU objects made, the waits for the GPU and the bytes uploaded so far (see [`GpuCounts`]).
    pub fn counts(&self) -> GpuCounts {
        let c = &self.counts;
        GpuCounts {
            buffers: c.buffers.load(Ordering::Relaxed),
            bind_groups: c.bind_groups.load(Ordering::Relaxed),
            pipelines: c.pipelines.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            uploaded_bytes: c.uploaded_bytes.load(Ordering::Relaxed),
        }
    }

    /// Returns the first error wgpu reported since the last check, if any.
    pub fn check(&self) -> Result<()> {
        let mut slot = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            None => Ok(()),
            // Device loss is permanent: keep reporting it.
            Some(Error::DeviceLost(m)) => {
                *slot = Some(Error::DeviceLost(m.clone()));
                Err(Error::DeviceLost(m))
            }
            Some(e) => Err(e),
        }
    }

    /// Blocks until all submitted work is done, then reports any error it raised.
    pub fn wait(&self, context: &str) -> Result<()> {
        Counters::add(&self.counts.syncs);
        self.poll_wait(context)
    }

    /// [`Context::wait`], not counted: the polls of one readback.
    pub(crate) fn poll_wait(&self, context: &str) -> Result<()> {
        let poll = self.device.poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(self.timeout) });
        self.check()?;
        match poll {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => {
                Err(Error::Timeout { context: context.to_string(), seconds: self.timeout.as_secs() })
            }
            Err(e) => Err(Error::Gpu { context: context.to_string(), message: e.to_string() }),
        }
    }

    /// Runs `f` inside a validation + out-of-memory error scope and returns what it raised as a typed error.
    pub fn scoped<T>(&self, context: impl FnOnce() -> String, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let errors = [pollster::block_on(validation.pop()), pollster::block_on(oom.pop())];
        match errors.into_iter().flatten().next() {
            None => Ok(value),
            Some(e) => Err(Error::Gpu { context: context(), message: e.to_string() }),
        }
    }

    /// A multi-line description of the adapter, its limits and features, for `jamba-wgpu info`.
    pub fn describe(&self) -> String {
        let i = &self.info;
        let l = &self.limits;
        let f = self.features;
        let mib = |b: u64| format!("{} MiB", b >> 20);
        [
            format!("adapter:  {} ({:?})", i.name, i.device_type),
            format!("backend:  {:?}", i.backend),
            format!("driver:   {} {}", i.driver, i.driver_info),
            format!("vendor:   {:#06x}, device {:#06x}", i.vendor, i.device),
            format!("memory:   {}", match self.memory_capacity() {
                Some(c) => format!("{} of {}", mib(c.bytes), c.what),
                None => "not reported on this backend".into(),
            }),
            format!("max_buffer_size:                  {}", mib(l.max_buffer_size)),
            format!("max_storage_buffer_binding_size:  {}", mib(l.max_storage_buffer_binding_size)),
            format!("max_storage_buffers_per_stage:    {}", l.max_storage_buffers_per_shader_stage),
            format!("max_compute_workgroup_storage:    {} bytes", l.max_compute_workgroup_storage_size),
            format!("max_compute_invocations:          {}", l.max_compute_invocations_per_workgroup),
            format!("max_workgroups_per_dimension:     {}", l.max_compute_workgroups_per_dimension),
            format!("min_uniform_buffer_offset_align:  {}", l.min_uniform_buffer_offset_alignment),
            format!("features: shader_f16={} subgroups={} timestamps={}", f.shader_f16, f.subgroups, f.timestamps),
            format!("cooperative matrices (M x N x K, A/B -> C): {}", self.describe_cooperative_matrices()),
            format!("kernels:  {} (defaults; `--tune` times the others on a model)", self.tuning()),
        ]
        .join("\n")
    }

    fn describe_cooperative_matrices(&self) -> String {
        if self.cooperative_matrices.is_empty() {
            return "none offered through wgpu".into();
        }
        let one = |c: &wgpu::CooperativeMatrixProperties| {
            format!("{}x{}x{} {:?}->{:?}", c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type)
        };
        self.cooperative_matrices.iter().map(one).collect::<Vec<_>>().join(", ")
    }
}

/// The cooperative matrix shape [`Prefill::Coop`]'s kernel uses: 16 x 16 x 16, f16 inputs, f32 accumulator.
fn is_coop_shape(c: &wgpu::CooperativeMatrixProperties) -> bool {
    (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
        && c.ab_type == wgpu::CooperativeScalarType::F16
        && c.cr_type == wgpu::CooperativeScalarType::F32
}

/// Picks an adapter: matching `name` if given, preferring real GPUs, then a non-GL backend.
fn choose_adapter(adapters: Vec<wgpu::Adapter>, backends: wgpu::Backends, name: Option<&str>) -> Result<wgpu::Adapter> {
    let found: Vec<String> = adapters.iter().map(|a| describe_short(&a.get_info())).collect();
    let wanted = name.map(str::to_lowercase);
    let rank = |info: &wgpu::AdapterInfo| {
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        (kind, info.backend == wgpu::Backend::Gl)
    };
    adapters
        .into_iter()
        .filter(|a| wanted.as_ref().is_none_or(|w| a.get_info().name.to_lowercase().contains(w.as_str())))
        .min_by_key(|a| rank(&a.get_info()))
        .ok_or_else(|| {
            let what = match name {
                Some(n) => format!("none named like `{n}`"),
                None => "none found".into(),
            };
            let seen = if found.is_empty() { "no adapters at all".into() } else { format!("found: {}", found.join("; ")) };
            Error::NoAdapter(format!(
                "{what} on backends {backends:?} ({seen}). Without a GPU, install Mesa's software Vulkan \
                 (apt-get install mesa-vulkan-drivers); set WGPU_BACKEND or --backend to choose a backend"
            ))
        })
}

/// The bytes an adapter's buffers can take ([`Context::memory_capacity`]), and which memory that is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryCapacity {
    pub bytes: u64,
    /// "device-local memory" or "host memory available".
    pub what: &'static str,
}

/// The sum of a Vulkan adapter's device-local heaps; None on other backends.
fn device_local_bytes(adapter: &wgpu::Adapter) -> Option<u64> {
    #[cfg(not(any(target_vendor = "apple", target_family = "wasm")))]
    {
        // SAFETY: reads the physical device's memory properties through wgpu's own Vulkan instance; nothing is
        // created, destroyed or kept.
        let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
        let instance = hal.shared_instance().raw_instance();
        let memory = unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
        let heaps = memory.memory_heaps.iter().take(memory.memory_heap_count as usize);
        const DEVICE_LOCAL: u32 = 1; // VK_MEMORY_HEAP_DEVICE_LOCAL_BIT
        Some(heaps.filter(|h| h.flags.as_raw() & DEVICE_LOCAL != 0).map(|h| h.size).sum())
    }
    #[cfg(any(target_vendor = "apple", target_family = "wasm"))]
    {
        let _ = adapter;
        None
    }
}

/// The host's available memory (Linux: MemAvailable of /proc/meminfo); None where it cannot be read.
fn host_memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn describe_short(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}
