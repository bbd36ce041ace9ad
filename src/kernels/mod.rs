//! One typed wrapper per WGSL shader family, named like its shader file in `shaders/`: each declares its
//! kernels (entry point, parameters, bindings, variants) and offers a constructor per operation that checks
//! shapes and dtypes, then records the dispatch into a [`Graph`](crate::gpu::Graph).

pub mod argmax;
pub mod attention;
pub mod conv1d;
pub mod elementwise;
pub mod embed;
pub mod fill;
pub mod matmul;
pub mod moe;
pub mod rms_norm;
pub mod ssm_scan;

use crate::gpu::{DType, Kernel, Prefill, Tensor};
use crate::weights::quant::QuantFormat;
use crate::{Error, Result};

/// Every kernel, for the tests that validate each shader and layout without a GPU.
pub fn all() -> Vec<&'static Kernel> {
    vec![
        &matmul::MATVEC,
        &matmul::MATVEC_PARTS,
        &matmul::MATVEC_NORM,
        &matmul::MATVEC_NORM_OUT,
        &matmul::MATVEC_NORM_CONV,
        &matmul::TILED,
        &matmul::TILED_WIDE,
        &matmul::BLOCKED,
        &matmul::COOP,
        &rms_norm::RMS_NORM,
        &elementwise::SILU_MUL,
        &elementwise::ADD_ASSIGN,
        &elementwise::SOFTPLUS,
        &embed::EMBED,
        &argmax::ARGMAX,
        &fill::FILL_RANDOM,
        &conv1d::CONV,
        &conv1d::CONV_STATE,
        &conv1d::CONV_BATCH,
        &ssm_scan::STEPS,
        &ssm_scan::CHUNK_LOCAL,
        &ssm_scan::CHUNK_CARRY,
        &ssm_scan::CHUNK_OUTPUT,
        &ssm_scan::BATCH,
        &ssm_scan::LANES,
        &ssm_scan::LANES_BATCH,
        &attention::APPEND_KV,
        &attention::APPEND_KV_BATCH,
        &attention::PREFILL,
        &attention::DECODE_SPLIT,
        &attention::DECODE_SPLIT_BATCH,
        &attention::DECODE_SPLIT_LANES,
        &attention::DECODE_SPLIT_BATCH_LANES,
        &attention::DECODE_COMBINE,
        &moe::ROUTE,
        &moe::ROUTER,
        &moe::GROUP,
        &moe::SWIGLU_MATVEC,
        &moe::SWIGLU_NORM_MATVEC,
        &moe::DOWN_MATVEC,
        &moe::DOWN_COMBINE_MATVEC,
        &moe::SWIGLU_TILED,
        &moe::DOWN_TILED,
        &moe::SWIGLU_BLOCKED,
        &moe::DOWN_BLOCKED,
        &moe::SWIGLU_COOP,
        &moe::DOWN_COOP,
        &moe::COMBINE,
    ]
}

/// The row-reduction widths every reducing kernel is built for.
pub const ROW_THREADS: [u32; 3] = [1, 32, 64];

/// Every `MATVEC_ROWS` (prelude.wgsl) the matvec kernels are built for: rows of W per row group.
pub const MATVEC_ROWS: [u32; 4] = [1, 2, 4, 8];

/// The float weight types: what the embedding lookup and the random fill handle.
pub const FLOAT_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// The weight storage types every matrix-reading kernel (matmul, the MoE experts) is built for: the float types
/// and every quantized format.
pub const WEIGHT_DTYPES: [DType; 8] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Quant(QuantFormat::ALL[0]),
    DType::Quant(QuantFormat::ALL[1]),
    DType::Quant(QuantFormat::ALL[2]),
    DType::Quant(QuantFormat::ALL[3]),
    DType::Quant(QuantFormat::ALL[4]),
];

fn no_variants() -> Vec<Vec<(&'static str, f64)>> {
    vec![vec![]]
}

fn weight_variants() -> Vec<Vec<(&'static str, f64)>> {
    WEIGHT_DTYPES.iter().map(|d| vec![("W_DTYPE", d.shader_code())]).collect()
}

fn float_weight_variants() -> Vec<Vec<(&'static str, f64)>> {
    FLOAT_DTYPES.iter().map(|d| vec![("W_DTYPE", d.shader_code())]).collect()
}

/// The `X_LANES` (prelude.wgsl) the decode matvecs are built with besides 0, for tests: x read in turns across
/// subgroups this wide (lavapipe's; the adapter's own width at run time).
pub const TEST_X_LANES: u32 = 8;

/// The kernel a prefill matmul over weight rows of `k` values of type `dtype` takes: the tuning's, except that
/// the CPU kernels ([`Prefill::Blocked`]: matmul_cpu.wgsl, moe_cpu.wgsl) read whole 4-byte words only, so f16 and
/// bf16 rows of odd length, which do not start on words, take [`Prefill::Tiled`] there.
pub fn prefill_kernel(tuning: &crate::gpu::Tuning, dtype: DType, k: usize) -> Prefill {
    let half = matches!(dtype, DType::F16 | DType::BF16);
    match tuning.prefill {
        Prefill::Blocked if half && k % 2 == 1 => Prefill::Tiled,
        prefill => prefill,
    }
}

/// Every `MATVEC_UNROLL` (prelude.wgsl) the decode matvecs are built for: words per invocation per round.
pub const MATVEC_UNROLLS: [u32; 3] = [1, 2, 4];

/// Every variant of a decode matvec: each weight type, row width, way of reading rows and count of rows per row
/// group; with one row per group, each unrolled round ([`MATVEC_UNROLLS`]); with one row per invocation, x read
/// by each invocation and in turns ([`TEST_X_LANES`]); and each path its loop over a row may then take
/// ([`matvec_path`]: rows of x on vec4s or not, k even or odd).
fn matvec_variants() -> Vec<Vec<(&'static str, f64)>> {
    let mut out = Vec::new();
    for d in WEIGHT_DTYPES {
        for r in ROW_THREADS {
            for reads in crate::gpu::MatvecReads::ALL {
                for rows in MATVEC_ROWS {
                    for lanes in [0, TEST_X_LANES].into_iter().filter(|&l| l == 0 || r == 1) {
                        for unroll in MATVEC_UNROLLS.into_iter().filter(|&u| u == 1 || rows == 1) {
                            let shapes = [(64, true), (64, false), (65, true)];
                            let path = |(k, on_vec4)| matvec_path(d, k, reads, unroll, lanes, r, on_vec4);
                            let mut paths: Vec<u32> = shapes.into_iter().map(path).collect();
                            paths.sort();
                            paths.dedup();
                            for path in paths {
                                out.push(vec![
                                    ("W_DTYPE", d.shader_code()),
                                    ("ROW_THREADS", r as f64),
                                    ("MATVEC_READS", reads.shader_code()),
                                    ("MATVEC_ROWS", rows as f64),
                                    ("X_LANES", lanes as f64),
                                    ("MATVEC_UNROLL", unroll as f64),
                                    ("MATVEC_PATH", path as f64),
                                ]);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// A kernel chosen for a dispatch where several could do it: the kernel, its override constants and its grid.
type Chosen = (&'static Kernel, Vec<(&'static str, f64)>, [u32; 3]);

/// W_DTYPE, ROW_THREADS, MATVEC_ROWS, MATVEC_READS, MATVEC_UNROLL, X_LANES and MATVEC_PATH of a decode matvec.
type MatvecConstants = [(&'static str, f64); 7];

/// A decode matvec's launch ([`matvec_launch`]).
struct MatvecLaunch {
    constants: MatvecConstants,
    grid: [u32; 3],
    /// The workgroups `grid` holds.
    workgroups: usize,
}

/// Workgroups of a decode matvec over `rows` rows of `n` outputs each, `per_group` outputs per row group of
/// ROW_THREADS invocations (64-invocation workgroups).
fn matvec_workgroups(tuning: &crate::gpu::Tuning, rows: usize, n: usize, per_group: u32) -> usize {
    rows * n.div_ceil((64 / tuning.row_threads.max(1) * per_group) as usize)
}

/// The override constants and grid of a decode matvec (matvec.wgsl's and moe_matvec.wgsl's) over weights `w` for
/// `rows` rows (tokens, or MoE slots) of `n` outputs each: the weight type, the graph's row width and way of
/// reading quantized rows, and its rows per row group, halved while the dispatch would have fewer workgroups than
/// [`Tuning::matvec_min_workgroups`](crate::gpu::Tuning::matvec_min_workgroups); at one row per group (by the
/// tuning, or halved down to it: Mamba's x_proj), [`Tuning::matvec_unroll`](crate::gpu::Tuning::matvec_unroll)
/// words a round, for the loads in flight more rows would give; with one row per invocation, x read in turns
/// across [`Tuning::x_lanes`](crate::gpu::Tuning::x_lanes) invocations; and the path its loop over a row takes
/// ([`matvec_path`]), where every row of x starts on a vec4 when `x_on_vec4`.
fn matvec_launch(g: &crate::gpu::Graph, w: &Tensor, rows: usize, n: usize, x_on_vec4: bool) -> Result<MatvecLaunch> {
    let tuning = g.tuning;
    let workgroups = |per_group: u32| matvec_workgroups(&tuning, rows, n, per_group);
    let mut per_group = tuning.matvec_rows.max(1);
    while per_group > 1 && workgroups(per_group) < tuning.matvec_min_workgroups {
        per_group /= 2;
    }
    let unroll = if per_group == 1 { tuning.matvec_unroll } else { 1 };
    let x_lanes = if tuning.row_threads == 1 { tuning.x_lanes } else { 0 };
    let k = w.shape().last().copied().unwrap_or(0); // the last dimension: expert stacks are [experts, n, k]
    let path = matvec_path(w.dtype(), k, tuning.matvec_reads, unroll, x_lanes, tuning.row_threads, x_on_vec4);
    let constants = [
        ("W_DTYPE", w.dtype().shader_code()),
        ("ROW_THREADS", tuning.row_threads as f64),
        ("MATVEC_ROWS", per_group as f64),
        ("MATVEC_READS", tuning.matvec_reads.shader_code()),
        ("MATVEC_UNROLL", unroll as f64),
        ("X_LANES", x_lanes as f64),
        ("MATVEC_PATH", path as f64),
    ];
    let grid = g.linear_grid(workgroups(per_group) as u64)?;
    Ok(MatvecLaunch { constants, grid, workgroups: workgroups(per_group) })
}

/// The path a decode matvec's loop over a row of x and its rows of W takes (`MATVEC_PATH`, matvec_x.wgsl), as
/// the shader's own tests would choose it for W's type and `k` columns, the tuning's reads and the kernel's
/// unroll, x_lanes and row threads, with every row of x starting on a vec4 where `x_on_vec4`: quads where the
/// reads are quads and the rows whole quads (x in turns, or four values a load, where x starts on a vec4; else
/// a word's values at a time), else words where the rows start on them (and quantized rows are not read by
/// codes), in rounds where unrolled, else one weight at a time. Named on the host so that each variant's module
/// holds its own path alone; the shader still tests the facts, so a path named wrongly costs speed, not results.
fn matvec_path(
    dtype: DType,
    k: usize,
    reads: crate::gpu::MatvecReads,
    unroll: u32,
    x_lanes: u32,
    row_threads: u32,
    x_on_vec4: bool,
) -> u32 {
    use crate::gpu::MatvecReads;
    let (turns, quads_x, quads, rounds, words, weights) = (1, 2, 3, 4, 5, 6);
    let quantized = dtype.is_quantized();
    let on_words = quantized || matches!(dtype, DType::F32 | DType::U32) || k % 2 == 0;
    let by_word = on_words && (!quantized || reads != MatvecReads::Codes);
    let by_quad = reads == MatvecReads::Quads && rows_whole_quads(dtype, k);
    match () {
        _ if by_quad && x_on_vec4 && x_lanes > 1 && row_threads == 1 => turns,
        _ if by_quad && x_on_vec4 => quads_x,
        _ if by_quad => quads,
        _ if by_word && unroll > 1 => rounds,
        _ if by_word => words,
        _ => weights,
    }
}

/// Whether every row of a weight matrix of type `dtype` with `k` columns is whole 16-byte quads (the shaders'
/// `rows_whole_quads`, and `rows_by_quad` where rows are read by quads): f32 rows of a multiple of 4 weights, f16
/// and bf16 rows of 8, every quantized row (its scales and codes padded to 16 bytes).
fn rows_whole_quads(dtype: DType, k: usize) -> bool {
    match dtype {
        DType::F32 | DType::U32 => k % 4 == 0,
        DType::F16 | DType::BF16 => k % 8 == 0,
        DType::Quant(_) => true,
    }
}

/// Columns `offset..offset + width` of the first `rows` rows of a 2-D f32 tensor `[rows, cols]`: how kernels
/// read and write slices such as the xs and z halves of Mamba's in_proj output without copies.
#[derive(Clone, Copy, Debug)]
pub struct Cols<'a> {
    pub tensor: &'a Tensor,
    pub rows: usize,
    pub offset: usize,
    pub width: usize,
}

impl<'a> Cols<'a> {
    /// Columns `offset..offset + width` of every row.
    pub fn slice(tensor: &'a Tensor, offset: usize, width: usize) -> Result<Self> {
        let [rows, cols] = dims2(tensor)?;
        if offset + width > cols {
            return Err(Error::shape(
                format!("slice of `{}`", tensor.label()),
                format!("columns {offset}..{} of {cols}", offset + width),
            ));
        }
        Ok(Cols { tensor, rows, offset, width })
    }

    /// Whether every row starts on a vec4 (a multiple of 4 elements into the buffer): what lets a decode matvec
    /// read x four values a load.
    pub fn on_vec4(&self) -> bool {
        self.offset % 4 == 0 && (self.rows <= 1 || self.stride() % 4 == 0)
    }

    /// The first `rows` rows only (a shorter prefill chunk in a buffer sized for the longest).
    pub fn rows(self, rows: usize) -> Result<Self> {
        if rows > self.tensor.shape()[0] {
            return Err(Error::shape(
                format!("rows of `{}`", self.tensor.label()),
                format!("{rows} rows asked of {:?}", self.tensor.shape()),
            ));
        }
        Ok(Cols { rows, ..self })
    }

    /// Elements between consecutive rows.
    pub fn stride(&self) -> usize {
        self.tensor.shape()[1]
    }

    /// One past the last element of these columns in `copies` of them, each `stride` elements past the one
    /// before (a matvec's output in parts over k): what the tensor must hold.
    pub fn end(&self, copies: usize, stride: usize) -> usize {
        self.offset + (self.rows.max(1) - 1) * self.stride() + self.width + (copies.max(1) - 1) * stride
    }
}

/// What a kernel accepts where it reads or writes columns: a whole matrix, or a [`Cols`] slice of one.
pub trait IntoCols<'a> {
    fn into_cols(self) -> Result<Cols<'a>>;
}

impl<'a> IntoCols<'a> for Cols<'a> {
    fn into_cols(self) -> Result<Cols<'a>> {
        Ok(self)
    }
}

impl<'a> IntoCols<'a> for &'a Tensor {
    fn into_cols(self) -> Result<Cols<'a>> {
        let [_, cols] = dims2(self)?;
        Cols::slice(self, 0, cols)
    }
}

/// The two dimensions of a matrix.
pub fn dims2(t: &Tensor) -> Result<[usize; 2]> {
    match *t.shape() {
        [rows, cols] => Ok([rows, cols]),
        _ => Err(Error::shape(format!("`{}`", t.label()), format!("expected a matrix, found shape {:?}", t.shape()))),
    }
}

/// Fails unless `t` holds `dtype`.
pub fn expect_dtype(op: &str, t: &Tensor, dtypes: &[DType]) -> Result<()> {
    if dtypes.contains(&t.dtype()) {
        return Ok(());
    }
    Err(Error::shape(op, format!("`{}` is {:?}, expected one of {dtypes:?}", t.label(), t.dtype())))
}

/// Fails unless `t` has exactly `shape`.
pub fn expect_shape(op: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape() == shape {
        return Ok(());
    }
    Err(Error::shape(op, format!("`{}` is {:?}, expected {shape:?}", t.label(), t.shape())))
}

/// Fails unless `t` holds at least `len` elements.
pub fn expect_len(op: &str, t: &Tensor, len: usize) -> Result<()> {
    if t.len() >= len {
        return Ok(());
    }
    Err(Error::shape(op, format!("`{}` holds {} elements, needs {len}", t.label(), t.len())))
}

fn u32_of(op: &str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(op, format!("{what} = {v} does not fit in u32")))
}
