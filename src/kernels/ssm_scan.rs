//! ssm_scan.wgsl: Mamba's selective scan with softplus(dt + dt_bias), A = -exp(a_log), the D skip and the
//! SiLU(z) gate fused; the decode step and the chunked prefill. ssm_scan_cpu.wgsl: the serial rows and the decode
//! step on CPU adapters, a subgroup per 8 channels ([`LANES`]).

use crate::gpu::{read, read_write, Binding, Context, DType, Graph, Kernel, Tensor};
use crate::kernels::{dims2, expect_dtype, expect_shape, u32_of, IntoCols, Cols};
use crate::{params, shader, Error, Result};

shader!(SSM_SCAN, "ssm_scan", common "ssm_scan_common");
shader!(SSM_SCAN_CPU, "ssm_scan_cpu", common "ssm_scan_common");

params! {
    pub struct ScanParams {
        pub t: u32,
        pub i: u32,
        pub chunk_len: u32,
        pub chunks: u32,
        pub dt_stride: u32,
        pub dt_offset: u32,
        pub z_stride: u32,
        pub z_offset: u32,
        pub b_stride: u32,
        pub b_offset: u32,
        pub c_stride: u32,
        pub c_offset: u32,
        pub state_stride: u32,
        pub eps: f32,
        pub dt_rank: u32,
        pub parts: u32,
        pub part_stride: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

/// What every entry point binds, then `$extra`. The steps (a decode step, a batch's, a single chunk) bind no more;
/// the chunked passes also bind their scratch ([`ScanScratch`]).
macro_rules! scan_bindings {
    ($($extra:expr),*) => {
        &[
            read("x"),
            read("dt"),
            read("dt_bias"),
            read("a_log"),
            read("b"),
            read("c"),
            read("d"),
            read("z"),
            read_write("state"),
            read_write("out"),
            read("b_norm"),
            read("c_norm"),
            read("dt_norm"),
            read("dt_proj"),
            $($extra),*
        ]
    };
}

const STEP_BINDINGS: &[Binding] = scan_bindings!();
const CHUNK_BINDINGS: &[Binding] = scan_bindings!(read_write("chunk_h"), read_write("chunk_delta"));

/// The d_state values each kernel is validated with; any N up to [`MAX_D_STATE`] builds.
pub const D_STATES: [u32; 5] = [4, 8, 16, 32, 64];

/// The largest d_state the shader's register arrays hold (`MAX_D_STATE` in ssm_scan.wgsl).
pub const MAX_D_STATE: usize = 64;

/// The largest dt_rank whose projection the decode scan fuses (`MAX_DT_RANK` in ssm_scan.wgsl: the raw dt row is
/// staged in workgroup memory). Jamba-1.5-Large's is 512.
pub const MAX_DT_RANK: usize = 1024;

/// Rows per chunk of the chunked prefill (more when T needs more chunks than the scratch binding holds).
pub const CHUNK_LEN: usize = 64;

fn d_state_variants() -> Vec<Vec<(&'static str, f64)>> {
    let mut out = Vec::new();
    // Each d_state, with B and C as given or normalised in the kernel, read by each invocation and in turns.
    for n in D_STATES {
        for norm in [0.0, 1.0] {
            for lanes in [0, crate::kernels::TEST_X_LANES] {
                out.push(vec![("D_STATE", n as f64), ("NORM_BC", norm), ("DT_PROJ", 0.0), ("X_LANES", lanes as f64)]);
            }
        }
    }
    // dt projected in the kernel, from weights of every storage type, by each invocation alone (B and C read by
    // each and in turns) or by rows of invocations.
    for dtype in crate::kernels::WEIGHT_DTYPES {
        for row_threads in crate::kernels::ROW_THREADS {
            for lanes in [0, crate::kernels::TEST_X_LANES].into_iter().filter(|&l| l == 0 || row_threads == 1) {
                let code = dtype.shader_code();
                let dt_proj = [("DT_PROJ", 1.0), ("W_DTYPE", code), ("ROW_THREADS", row_threads as f64)];
                let norms = [("D_STATE", 16.0), ("NORM_BC", 1.0), ("X_LANES", lanes as f64)];
                out.push([norms.to_vec(), dt_proj.to_vec()].concat());
            }
        }
    }
    out
}

macro_rules! scan_kernel {
    ($name:ident, $entry:literal, $bindings:ident, $doc:literal) => {
        #[doc = $doc]
        pub static $name: Kernel = Kernel {
            shader: &SSM_SCAN,
            entry: $entry,
            params: &<ScanParams as crate::gpu::Params>::LAYOUT,
            bindings: $bindings,
            variants: d_state_variants,
        };
    };
}

scan_kernel!(
    STEPS,
    "scan_steps",
    STEP_BINDINGS,
    "All rows in order, one invocation per channel: the decode step, and the serial baseline."
);
scan_kernel!(
    CHUNK_LOCAL,
    "chunk_local",
    CHUNK_BINDINGS,
    "Chunked prefill (1): each chunk's scan from a zero state, chunks in parallel."
);
scan_kernel!(CHUNK_CARRY, "chunk_carry", CHUNK_BINDINGS, "Chunked prefill (2): the state entering each chunk, serial over chunks.");
scan_kernel!(CHUNK_OUTPUT, "chunk_output", CHUNK_BINDINGS, "Chunked prefill (3): each chunk's outputs from its entering state.");
scan_kernel!(BATCH, "scan_batch", STEP_BINDINGS, "A batch's decode step: row r advances sequence r's state by one token.");

/// All rows in order on CPU adapters, a subgroup per 8 channels (ssm_scan_cpu.wgsl): [`STEPS`] (with dt's
/// projection on decode steps) on 8-wide subgroups, for d_state 16 and operands whose rows lie on vec4s.
pub static LANES: Kernel = Kernel {
    shader: &SSM_SCAN_CPU,
    entry: "scan_lanes",
    params: &<ScanParams as crate::gpu::Params>::LAYOUT,
    bindings: STEP_BINDINGS,
    variants: lanes_variants,
};

/// A batch's decode step on CPU adapters, a subgroup per 8 channels of a row (ssm_scan_cpu.wgsl): [`BATCH`] where
/// [`LANES`] would take the operands.
pub static LANES_BATCH: Kernel = Kernel {
    shader: &SSM_SCAN_CPU,
    entry: "scan_lanes_batch",
    params: &<ScanParams as crate::gpu::Params>::LAYOUT,
    bindings: STEP_BINDINGS,
    variants: lanes_variants,
};

fn lanes_variants() -> Vec<Vec<(&'static str, f64)>> {
    let f32_code = DType::F32.shader_code();
    let mut out: Vec<_> = [0.0, 1.0].map(|norm| vec![("NORM_BC", norm), ("DT_PROJ", 0.0), ("W_DTYPE", f32_code)]).into();
    for dtype in crate::kernels::WEIGHT_DTYPES {
        out.push(vec![("NORM_BC", 1.0), ("DT_PROJ", 1.0), ("W_DTYPE", dtype.shader_code())]);
    }
    out
}

/// The d_state [`LANES`] is built for.
const LANES_D_STATE: usize = 16;

/// Whether [`LANES`] (or [`LANES_BATCH`]) takes a scan of these operands: 8-wide subgroups read in turns (a CPU
/// adapter's tuning), d_state 16, I a multiple of 8, dt's (given, or raw with `projected`: dt_rank a multiple of 4)
/// and z's rows on vec4s, C right after B in rows on vec4s (x_proj's columns), x_proj's parts a multiple of 4 apart.
fn lanes_fit(g: &Graph, n: usize, i: usize, cols: [&Cols; 4], projected: bool, parts: (usize, usize)) -> bool {
    let [dt, b, c, z] = cols;
    let (parts, part_stride) = parts;
    let on_quads = |cols: &Cols| cols.stride() % 4 == 0 && cols.offset % 4 == 0;
    g.tuning.x_lanes == 8
        && n == LANES_D_STATE
        && i % 8 == 0
        && (!projected || dt.width % 4 == 0)
        && (parts == 1 || part_stride % 4 == 0)
        && on_quads(dt)
        && on_quads(z)
        && on_quads(b)
        && std::ptr::eq(b.tensor, c.tensor)
        && c.stride() == b.stride()
        && c.offset == b.offset + n
}

/// The chunked prefill's working memory: the state each chunk of up to [`CHUNK_LEN`] rows reaches from zero,
/// [chunks, N, I], and its sum of delta, [chunks, I]. Allocated once for the longest prefill (a session's chunk)
/// and shared by every layer; a longer T uses longer chunks rather than more memory.
pub struct ScanScratch {
    chunk_h: Tensor,
    chunk_delta: Tensor,
    chunks: usize,
}

impl ScanScratch {
    pub fn new(ctx: &Context, max_t: usize, d_inner: usize, d_state: usize) -> Result<Self> {
        let chunks = max_t.div_ceil(CHUNK_LEN).max(1);
        Ok(ScanScratch {
            chunk_h: ctx.zeros("ssm chunk_h", &[chunks, d_state, d_inner], DType::F32)?,
            chunk_delta: ctx.zeros("ssm chunk_delta", &[chunks, d_inner], DType::F32)?,
            chunks,
        })
    }
}

/// How [`selective_scan_with`] runs the recurrence over T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanPath {
    /// One invocation per channel, one step: needs T = 1.
    Decode,
    /// Chunks of rows scanned in parallel, their carries chained, then their outputs in parallel. Any T; a
    /// single chunk (T <= [`CHUNK_LEN`]) is scanned straight from the state by the decode kernel.
    Chunked,
    /// One invocation per channel looping over all of T: on CPU adapters, whose cores a workgroup per 64 channels
    /// fills, faster than the chunked passes ([`Tuning::serial_scan_min_channels`]). Where their subgroups are 8
    /// wide and the operands allow, [`LANES`] takes it (and the decode step).
    ///
    /// [`Tuning::serial_scan_min_channels`]: crate::gpu::Tuning::serial_scan_min_channels
    Serial,
    /// A batch's decode step: each row is one token of its own sequence, advancing row r of a batch's state
    /// [T, >= I * N] (sequence r's [I, N] in its first I * N elements) by one step.
    Batch,
}

/// The selective scan (reference::ssm::selective_scan): decode for T = 1, chunked prefill otherwise. T is the
/// row count of `dt`.
///
/// x: `[>=T, I]` post-conv; dt: `[T, I]` dt_proj output without bias; dt_bias: `[I]`; a_log: `[I, N]`; b, c: `[T, N]`
/// (columns of the normalised x_proj output); d: `[I]`; z: `[T, I]` (the second half of in_proj's output);
/// state: [I, N], read and updated; out: [>=T, I]. All f32. For a batch, see [`ScanPath::Batch`].
#[allow(clippy::too_many_arguments)]
pub fn selective_scan<'a>(
    g: &mut Graph,
    x: &Tensor,
    dt: impl IntoCols<'a>,
    dt_bias: &Tensor,
    a_log: &Tensor,
    b: impl IntoCols<'a>,
    c: impl IntoCols<'a>,
    d: &Tensor,
    z: impl IntoCols<'a>,
    state: &Tensor,
    scratch: &ScanScratch,
    out: &Tensor,
) -> Result<()> {
    let dt = dt.into_cols()?;
    let path = if dt.rows == 1 { ScanPath::Decode } else { ScanPath::Chunked };
    selective_scan_with(g, x, dt, dt_bias, a_log, b, c, d, z, state, scratch, out, path)
}

/// What [`selective_scan_normed`] applies to x_proj's raw output inside the scan: Mamba's RMSNorms of the B and C
/// rows (b_layernorm, c_layernorm) and, on decode and batch steps, dt's norm and projection.
#[derive(Clone, Copy)]
pub struct ScanNorms<'a> {
    /// `[N]` f32 each.
    pub b_weight: &'a Tensor,
    pub c_weight: &'a Tensor,
    /// Every norm's epsilon.
    pub eps: f32,
    /// dt_layernorm's weight `[R]` f32 and dt_proj's weight `[I, R]` (any weight dtype): `dt` is then x_proj's raw dt
    /// columns [T, R], and dt = rms_norm(dt_raw) dt_proj^T is computed in the scan. [`ScanPath::Decode`] and
    /// [`ScanPath::Batch`] only (one row per workgroup).
    pub dt: Option<(&'a Tensor, &'a Tensor)>,
    /// With `dt`: x_proj's output in this many parts over k (`matmul::matmul_parts`), `part_stride` elements
    /// apart in the buffers of dt, b and c, which the scan adds up as it reads them; 1 (and 0): as it is.
    pub parts: usize,
    pub part_stride: usize,
}

impl<'a> ScanNorms<'a> {
    /// The norms (and, with `dt`, dt's norm and projection) of x_proj's output in one part.
    pub fn new(b_weight: &'a Tensor, c_weight: &'a Tensor, eps: f32, dt: Option<(&'a Tensor, &'a Tensor)>) -> Self {
        ScanNorms { b_weight, c_weight, eps, dt, parts: 1, part_stride: 0 }
    }
}

/// [`selective_scan_with`] on x_proj's raw B and C columns (and dt, see [`ScanNorms::dt`]), which the scan
/// normalises (and projects) itself: a decode step without the separate norm and dt_proj dispatches.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_normed<'a>(
    g: &mut Graph,
    x: &Tensor,
    dt: impl IntoCols<'a>,
    dt_bias: &Tensor,
    a_log: &Tensor,
    b: impl IntoCols<'a>,
    c: impl IntoCols<'a>,
    norms: ScanNorms<'_>,
    d: &Tensor,
    z: impl IntoCols<'a>,
    state: &Tensor,
    scratch: &ScanScratch,
    out: &Tensor,
    path: ScanPath,
) -> Result<()> {
    scan(g, x, dt.into_cols()?, dt_bias, a_log, b.into_cols()?, c.into_cols()?, Some(norms), d, z.into_cols()?, state, scratch, out, path)
}

/// [`selective_scan`] on a chosen path.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_with<'a>(
    g: &mut Graph,
    x: &Tensor,
    dt: impl IntoCols<'a>,
    dt_bias: &Tensor,
    a_log: &Tensor,
    b: impl IntoCols<'a>,
    c: impl IntoCols<'a>,
    d: &Tensor,
    z: impl IntoCols<'a>,
    state: &Tensor,
    scratch: &ScanScratch,
    out: &Tensor,
    path: ScanPath,
) -> Result<()> {
    scan(g, x, dt.into_cols()?, dt_bias, a_log, b.into_cols()?, c.into_cols()?, None, d, z.into_cols()?, state, scratch, out, path)
}

#[allow(clippy::too_many_arguments)]
fn scan(
    g: &mut Graph,
    x: &Tensor,
    dt: Cols,
    dt_bias: &Tensor,
    a_log: &Tensor,
    b: Cols,
    c: Cols,
    norm: Option<ScanNorms>,
    d: &Tensor,
    z: Cols,
    state: &Tensor,
    scratch: &ScanScratch,
    out: &Tensor,
    path: ScanPath,
) -> Result<()> {
    let op = "selective_scan";
    let [i, n] = dims2(a_log)?;
    let t = dt.rows;
    for tensor in [x, dt.tensor, dt_bias, a_log, b.tensor, c.tensor, d, z.tensor, state, out] {
        expect_dtype(op, tensor, &[DType::F32])?;
    }
    if n == 0 || n > MAX_D_STATE {
        return Err(Error::shape(
            op,
            format!("d_state N = {n} from a_log `{}`; supported: 1..={MAX_D_STATE}", a_log.label()),
        ));
    }
    let dt_proj = norm.and_then(|norm| norm.dt);
    match dt_proj {
        None => expect_cols(op, "dt", &dt, t, i)?,
        Some((dt_norm, dt_weight)) => {
            let r = dt.width;
            expect_cols(op, "raw dt", &dt, t, r)?;
            expect_dtype(op, dt_norm, &[DType::F32])?;
            expect_shape(op, dt_norm, &[r])?;
            expect_dtype(op, dt_weight, &crate::kernels::WEIGHT_DTYPES)?;
            expect_shape(op, dt_weight, &[i, r])?;
            if r == 0 || r > MAX_DT_RANK || !matches!(path, ScanPath::Decode | ScanPath::Batch) {
                let message = format!("dt_proj in the scan takes decode and batch steps, dt_rank 1..={MAX_DT_RANK}; given {r} on {path:?}");
                return Err(Error::shape(op, message));
            }
        }
    }
    expect_cols(op, "z", &z, t, i)?;
    expect_cols(op, "b", &b, t, n)?;
    expect_cols(op, "c", &c, t, n)?;
    expect_rows(op, x, t, i)?;
    expect_rows(op, out, t, i)?;
    expect_shape(op, dt_bias, &[i])?;
    expect_shape(op, d, &[i])?;
    if let Some(norm) = &norm {
        for weight in [norm.b_weight, norm.c_weight] {
            expect_dtype(op, weight, &[DType::F32])?;
            expect_shape(op, weight, &[n])?;
        }
        if norm.parts == 0 || (norm.parts > 1 && norm.dt.is_none()) {
            let message = format!("x_proj's output in {} parts: 1, or more with dt's projection in the scan", norm.parts);
            return Err(Error::shape(op, message));
        }
        // The last part of each of dt, b and c inside its buffer.
        for (what, cols) in [("raw dt", &dt), ("b", &b), ("c", &c)] {
            let end = cols.end(norm.parts, norm.part_stride);
            if end > cols.tensor.len() {
                let (parts, stride, label) = (norm.parts, norm.part_stride, cols.tensor.label());
                let message = format!("{what} in {parts} parts {stride} apart ends at {end}, past `{label}`'s {} elements", cols.tensor.len());
                return Err(Error::shape(op, message));
            }
        }
    }
    let state_stride = match path {
        ScanPath::Batch => {
            let [rows, stride] = dims2(state)?;
            if rows != t || stride < i * n {
                return Err(Error::shape(
                    op,
                    format!("batch state `{}` is [{rows}, {stride}], expected [{t}, >= {}]", state.label(), i * n),
                ));
            }
            stride
        }
        _ => {
            expect_shape(op, state, &[i, n])?;
            0
        }
    };
    if path == ScanPath::Decode && t != 1 {
        return Err(Error::shape(op, format!("the decode path takes one row, given {t}")));
    }
    if t == 0 {
        return Ok(());
    }

    // The chunked path's chunks: longer ones when T has more rows than the scratch holds at CHUNK_LEN.
    let chunk_len = CHUNK_LEN.max(t.div_ceil(scratch.chunks));
    let chunks = t.div_ceil(chunk_len);
    let [scratch_n, scratch_i] = [scratch.chunk_h.shape()[1], scratch.chunk_h.shape()[2]];
    if (scratch_n, scratch_i) != (n, i) {
        return Err(Error::shape(op, format!("the scratch is for N = {scratch_n}, I = {scratch_i}; the scan has N = {n}, I = {i}")));
    }

    let params = ScanParams {
        t: u32_of(op, "t", t)?,
        i: u32_of(op, "i", i)?,
        chunk_len: u32_of(op, "chunk length", chunk_len)?,
        chunks: u32_of(op, "chunks", chunks)?,
        dt_stride: u32_of(op, "dt stride", dt.stride())?,
        dt_offset: u32_of(op, "dt offset", dt.offset)?,
        z_stride: u32_of(op, "z stride", z.stride())?,
        z_offset: u32_of(op, "z offset", z.offset)?,
        b_stride: u32_of(op, "b stride", b.stride())?,
        b_offset: u32_of(op, "b offset", b.offset)?,
        c_stride: u32_of(op, "c stride", c.stride())?,
        c_offset: u32_of(op, "c offset", c.offset)?,
        state_stride: u32_of(op, "state stride", state_stride)?,
        eps: norm.map_or(0.0, |norm| norm.eps),
        dt_rank: u32_of(op, "dt rank", dt_proj.map_or(0, |_| dt.width))?,
        parts: u32_of(op, "x_proj parts", norm.map_or(1, |norm| norm.parts))?,
        part_stride: u32_of(op, "x_proj part stride", norm.map_or(0, |norm| norm.part_stride))?,
        ..Default::default()
    };
    u32_of(op, "t * i", t * i)?;
    u32_of(op, "t * state stride", t * state_stride)?;
    u32_of(op, "chunks * n * i", chunks * n * i)?;
    let dt_dtype = dt_proj.map_or(DType::F32, |(_, w)| w.dtype());
    // Invocations per dt_proj row: GPUs read the rows together, coalesced; CPU adapters one invocation each.
    let row_threads = if dt_proj.is_some() { g.tuning.row_threads } else { 1 };
    let lanes = g.tuning.x_lanes as usize;
    // What the kernel fuses: B and C's norms, dt's norm and projection (its weights' type). LANES takes just these.
    let fused = [
        ("NORM_BC", norm.is_some() as u32 as f64),
        ("DT_PROJ", dt_proj.is_some() as u32 as f64),
        ("W_DTYPE", dt_dtype.shader_code()),
    ];
    let constants = [
        ("D_STATE", n as f64),
        fused[0],
        fused[1],
        fused[2],
        ("ROW_THREADS", row_threads as f64),
        // B and C rows read in turns (bc_rows_in_turns, tile_rows_in_turns: at most 8 rounds) where matvecs read x
        // so, and one invocation projects each channel's dt.
        ("X_LANES", if row_threads == 1 && n <= 8 * lanes { lanes as f64 } else { 0.0 }),
    ];
    // The kernel never reads the bindings of what it does not fuse: `d` stands in for them.
    let (b_norm, c_norm) = norm.map_or((d, d), |norm| (norm.b_weight, norm.c_weight));
    let (dt_norm, dt_weight) = dt_proj.unwrap_or((d, d));
    let tensors = [x, dt.tensor, dt_bias, a_log, b.tensor, c.tensor, d, z.tensor, state, out, b_norm, c_norm, dt_norm, dt_weight];
    let chunk_tensors = [&tensors[..], &[&scratch.chunk_h, &scratch.chunk_delta]].concat();
    let channel_groups = i.div_ceil(64);
    // A single chunk needs no carries: it is scanned straight from the state, without the 3 passes' doubled work.
    let single_chunk = path == ScanPath::Chunked && chunks == 1;
    let serial = single_chunk || matches!(path, ScanPath::Serial | ScanPath::Decode);
    let parts = norm.map_or((1, 0), |norm| (norm.parts, norm.part_stride));
    let by_lanes = lanes_fit(g, n, i, [&dt, &b, &c, &z], dt_proj.is_some(), parts);
    match path {
        _ if serial && by_lanes => {
            let grid = g.linear_grid(channel_groups as u64)?;
            g.dispatch(&LANES, &fused, &params, &tensors, grid)?;
        }
        ScanPath::Batch if by_lanes => {
            let grid = g.linear_grid((t * channel_groups) as u64)?;
            g.dispatch(&LANES_BATCH, &fused, &params, &tensors, grid)?;
        }
        _ if single_chunk => {
            let grid = g.linear_grid(channel_groups as u64)?;
            g.dispatch(&STEPS, &constants, &params, &tensors, grid)?;
        }
        ScanPath::Decode | ScanPath::Serial => {
            let grid = g.linear_grid(channel_groups as u64)?;
            g.dispatch(&STEPS, &constants, &params, &tensors, grid)?;
        }
        ScanPath::Chunked => {
            let per_chunk = g.linear_grid((chunks * channel_groups) as u64)?;
            g.dispatch(&CHUNK_LOCAL, &constants, &params, &chunk_tensors, per_chunk)?;
            let grid = g.linear_grid((n * i).div_ceil(64) as u64)?;
            g.dispatch(&CHUNK_CARRY, &constants, &params, &chunk_tensors, grid)?;
            g.dispatch(&CHUNK_OUTPUT, &constants, &params, &chunk_tensors, per_chunk)?;
        }
        ScanPath::Batch => {
            let grid = g.linear_grid((t * channel_groups) as u64)?;
            g.dispatch(&BATCH, &constants, &params, &tensors, grid)?;
        }
    }
    Ok(())
}

/// Fails unless `cols` is `rows` x `width`.
fn expect_cols(op: &str, what: &str, cols: &Cols, rows: usize, width: usize) -> Result<()> {
    if cols.rows == rows && cols.width == width {
        return Ok(());
    }
    let label = cols.tensor.label();
    Err(Error::shape(
        op,
        format!("{what} `{label}` is [{}, {}] columns, expected [{rows}, {width}]", cols.rows, cols.width),
    ))
}

/// Fails unless `t` is a matrix of `width` columns and at least `rows` rows.
fn expect_rows(op: &str, t: &Tensor, rows: usize, width: usize) -> Result<()> {
    let [r, w] = dims2(t)?;
    if w == width && r >= rows {
        return Ok(());
    }
    Err(Error::shape(op, format!("`{}` is [{r}, {w}], expected [>={rows}, {width}]", t.label())))
}
