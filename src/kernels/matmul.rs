//! matvec.wgsl (decode) and matmul.wgsl (prefill): y = x W^T (+ y), the Linear layer, for f32, f16, bf16 and
//! quantized (q8, q4) weights; and y = rms_norm(x) W^T (+ y), the norm fused into the matvec on decode steps.

use crate::gpu::{read, read_write, DType, Graph, Kernel, OpId, Prefill, Tensor, Tuning};
use crate::kernels::rms_norm::rms_norm;
use crate::kernels::{
    dims2, expect_dtype, expect_shape, matvec_launch, matvec_variants, matvec_workgroups, prefill_kernel,
    rows_whole_quads, u32_of, weight_variants, Cols, IntoCols, MatvecLaunch, WEIGHT_DTYPES,
};
use crate::{params, shader, Error, Result};

shader!(MATVEC_SHADER, "matvec", common "matmul_common", "matvec_x");
shader!(MATMUL, "matmul", common "matmul_common", "matmul_words");
shader!(MATMUL_CPU, "matmul_cpu", common "matmul_common", "cpu_blocks");
shader!(MATMUL_COOP, "matmul_coop", common "matmul_common", "matmul_words", "coop_common");

params! {
    pub struct MatmulParams {
        pub t: u32,
        pub n: u32,
        pub k: u32,
        pub w_row0: u32,
        pub x_stride: u32,
        pub x_offset: u32,
        pub y_stride: u32,
        pub y_offset: u32,
        pub accumulate: u32,
        pub eps: f32,
        pub normed_stride: u32,
        pub normed_offset: u32,
        pub conv_channels: u32,
        pub conv_k: u32,
        pub state_stride: u32,
        pub part_cols: u32,
        pub part_stride: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

const BINDINGS: &[crate::gpu::Binding] = &[read("x"), read("w"), read_write("y")];
const NORM_BINDINGS: &[crate::gpu::Binding] = &[read("x"), read("w"), read_write("y"), read("norm_w")];
const NORM_OUT_BINDINGS: &[crate::gpu::Binding] =
    &[read("x"), read("w"), read_write("y"), read("norm_w"), read_write("side")];
const NORM_CONV_BINDINGS: &[crate::gpu::Binding] = &[
    read("x"),
    read("w"),
    read_write("y"),
    read("norm_w"),
    read_write("side"),
    read("conv_w"),
    read("conv_bias"),
    read_write("conv_state"),
];

/// Decode: a row reduction per output element.
pub static MATVEC: Kernel = Kernel {
    shader: &MATVEC_SHADER,
    entry: "matvec",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: matvec_variants,
};

/// Decode: a matvec over k in parts, for the reader of y to add up ([`matmul_parts`]).
pub static MATVEC_PARTS: Kernel = Kernel {
    shader: &MATVEC_SHADER,
    entry: "matvec_parts",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: matvec_variants,
};

/// Decode: the matvec of rms_norm(x), normalising x as it is read.
pub static MATVEC_NORM: Kernel = Kernel {
    shader: &MATVEC_SHADER,
    entry: "matvec_norm",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: NORM_BINDINGS,
    variants: matvec_variants,
};

/// [`MATVEC_NORM`] that also stores the normalised rows, for later kernels that read them.
pub static MATVEC_NORM_OUT: Kernel = Kernel {
    shader: &MATVEC_SHADER,
    entry: "matvec_norm_out",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: NORM_OUT_BINDINGS,
    variants: matvec_variants,
};

/// [`MATVEC_NORM`] for Mamba's in_proj on a decode step, the causal conv of the xs columns fused in.
pub static MATVEC_NORM_CONV: Kernel = Kernel {
    shader: &MATVEC_SHADER,
    entry: "matvec_norm_conv",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: NORM_CONV_BINDINGS,
    variants: matvec_variants,
};

/// Prefill: 64 x 64 output tiles through workgroup memory.
pub static TILED: Kernel = Kernel {
    shader: &MATMUL,
    entry: "tiled",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: weight_variants,
};

/// Prefill: 128 x 128 output tiles, 8 x 8 per invocation ([`Prefill::Wide`]).
pub static TILED_WIDE: Kernel = Kernel {
    shader: &MATMUL,
    entry: "tiled_wide",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: weight_variants,
};

/// Prefill on CPU adapters: register blocks of 16 rows x 4 columns per invocation, x shared across the subgroup;
/// x and W read by quads or by words, as the host finds (`QUADS`).
pub static BLOCKED: Kernel = Kernel {
    shader: &MATMUL_CPU,
    entry: "blocked",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: blocked_variants,
};

/// [`BLOCKED`]'s: every weight type, by quads and by words.
fn blocked_variants() -> Vec<Vec<(&'static str, f64)>> {
    let by = |v: Vec<(&'static str, f64)>| [0.0, 1.0].map(|quads| [v.clone(), vec![("QUADS", quads)]].concat());
    weight_variants().into_iter().flat_map(by).collect()
}

/// Whether [`BLOCKED`] reads x and W 16 bytes a load (matmul_cpu.wgsl's QUADS): W's rows whole quads (f32 rows of
/// a multiple of 4 weights, f16 and bf16 of 8, every quantized row), and every row of x starting on a vec4.
fn blocked_by_quads(w: &Tensor, x: &Cols) -> bool {
    rows_whole_quads(w.dtype(), w.shape()[1]) && x.stride() % 4 == 0 && x.offset % 4 == 0
}

/// Prefill on matrix units: 64 x 64 output tiles of 16 x 16 f16 cooperative matrices ([`Prefill::Coop`]).
pub static COOP: Kernel = Kernel {
    shader: &MATMUL_COOP,
    entry: "coop",
    params: &<MatmulParams as crate::gpu::Params>::LAYOUT,
    bindings: BINDINGS,
    variants: weight_variants,
};

/// Rows and columns of y per workgroup of [`TILED`] and [`COOP`], and of [`TILED_WIDE`].
const TILE: usize = 64;
const WIDE_TILE: usize = 128;

/// Rows and columns of y per workgroup of [`BLOCKED`] (8 subgroups of 16 rows each; 8 lanes of 4 columns each).
const BLOCK_ROWS: usize = 128;
const BLOCK_COLS: usize = 32;

/// y = x W^T, or y += x W^T when `accumulate`. x: [t, k] columns, w: [n, k] weights, y: [t, n] columns.
pub fn matmul<'a>(
    g: &mut Graph,
    x: impl IntoCols<'a>,
    w: &Tensor,
    y: impl IntoCols<'a>,
    accumulate: bool,
) -> Result<OpId> {
    let (x, y) = (x.into_cols()?, y.into_cols()?);
    let params = matmul_params("matmul", x, w, y, accumulate)?;
    let dtype = ("W_DTYPE", w.dtype().shader_code());
    let tensors = [x.tensor, w, y.tensor];
    let n = w.shape()[0];
    let prefill = prefill_kernel(&g.tuning, w.dtype(), w.shape()[1]);
    if is_matvec(g, x.rows) {
        let MatvecLaunch { constants, grid, .. } = matvec_launch(g, w, x.rows, n, x.on_vec4())?;
        g.dispatch(&MATVEC, &constants, &params, &tensors, grid)
    } else if prefill == Prefill::Blocked {
        let grid = g.linear_grid((x.rows.div_ceil(BLOCK_ROWS) * n.div_ceil(BLOCK_COLS)) as u64)?;
        let quads = ("QUADS", blocked_by_quads(w, &x) as u32 as f64);
        g.dispatch(&BLOCKED, &[dtype, quads], &params, &tensors, grid)
    } else if prefill == Prefill::Wide {
        let grid = g.linear_grid((x.rows.div_ceil(WIDE_TILE) * n.div_ceil(WIDE_TILE)) as u64)?;
        g.dispatch(&TILED_WIDE, &[dtype], &params, &tensors, grid)
    } else if prefill == Prefill::Coop {
        let grid = g.linear_grid((x.rows.div_ceil(TILE) * n.div_ceil(TILE)) as u64)?;
        g.dispatch(&COOP, &[dtype], &params, &tensors, grid)
    } else {
        let grid = g.linear_grid((x.rows.div_ceil(TILE) * n.div_ceil(TILE)) as u64)?;
        g.dispatch(&TILED, &[dtype], &params, &tensors, grid)
    }
}

/// The most parts [`matmul_parts`] cuts k into.
pub const MAX_K_PARTS: usize = 16;

/// How many parts a decode matvec of `rows` rows of x over `w` ([n, k]) should cut k into ([`matmul_parts`]):
/// enough for [`Tuning::matvec_split_workgroups`] workgroups at one row per row group, as many as k allows at
/// the fewest columns a part takes (64 per 8 invocations sharing a row: 256 at 32, 64 at 1), at most
/// [`MAX_K_PARTS`]; 1 where one part has the workgroups already, or the rows take the tiled path.
///
/// [`Tuning::matvec_split_workgroups`]: crate::gpu::Tuning::matvec_split_workgroups
pub fn k_parts(g: &Graph, rows: usize, w: &Tensor) -> usize {
    let (n, k) = match w.shape() {
        [n, k] => (*n, *k),
        _ => return 1,
    };
    let workgroups = matvec_workgroups(&g.tuning, rows, n, 1);
    if !is_matvec(g, rows) || workgroups == 0 || workgroups >= g.tuning.matvec_split_workgroups {
        return 1;
    }
    parts_of(&g.tuning, k, g.tuning.matvec_split_workgroups.div_ceil(workgroups))
}

/// At most `wanted` parts of k (and [`MAX_K_PARTS`]), each of at least [`min_part_cols`]: a count that
/// [`part_cols`] gives back, k.div_ceil(part_cols(k, parts)) == parts, as [`matmul_parts`] requires.
fn parts_of(tuning: &Tuning, k: usize, wanted: usize) -> usize {
    let parts = wanted.min(MAX_K_PARTS).min(k / min_part_cols(tuning)).max(1);
    // Rounding the columns up can leave fewer parts, p = k.div_ceil(cols). That count gives itself back: p parts
    // take at least k / p columns each, so no more than p parts; and at most cols each, so no fewer.
    k.div_ceil(part_cols(tuning, k, parts))
}

/// The fewest columns a part of k gets: 64 per 8 invocations sharing a row (whole words, whole q4 groups).
fn min_part_cols(tuning: &Tuning) -> usize {
    64 * (tuning.row_threads as usize).div_ceil(8)
}

/// Columns per part when k is cut into `parts`: a multiple of 64 (whole words and q4 groups), at least
/// [`min_part_cols`].
fn part_cols(tuning: &Tuning, k: usize, parts: usize) -> usize {
    k.div_ceil(parts.max(1)).next_multiple_of(64).max(min_part_cols(tuning))
}

/// x W^T over k in `parts` parts (as [`k_parts`] counts them), each part's sums stored on their own: part s at
/// `part_stride` elements past `y`'s place in its buffer, for the kernel that reads y to add them up (the scan,
/// for Mamba's x_proj: see `ssm_scan::ScanNorms::parts`). A decode matvec of a matrix with few rows and a long
/// k spreads over that many times the workgroups. x: [t, k] columns, w: [n, k], y: [t, n] columns.
pub fn matmul_parts<'a>(
    g: &mut Graph,
    x: impl IntoCols<'a>,
    w: &Tensor,
    y: impl IntoCols<'a>,
    parts: usize,
    part_stride: usize,
) -> Result<OpId> {
    let op = "matmul_parts";
    let (x, y) = (x.into_cols()?, y.into_cols()?);
    let k = w.shape().get(1).copied().unwrap_or(0);
    let cols = part_cols(&g.tuning, k, parts);
    if parts == 0 || parts > MAX_K_PARTS || k.div_ceil(cols) != parts || !is_matvec(g, x.rows) {
        return Err(Error::shape(op, format!("{parts} parts of k = {k} (k_parts counts them) on {} rows", x.rows)));
    }
    let end = y.end(parts, part_stride);
    if end > y.tensor.len() {
        let label = y.tensor.label();
        return Err(Error::shape(op, format!("{parts} parts {part_stride} apart end at {end}, past `{label}`'s {} elements", y.tensor.len())));
    }
    let params = MatmulParams {
        part_cols: u32_of(op, "columns per part", cols)?,
        part_stride: u32_of(op, "part stride", part_stride)?,
        ..matmul_params(op, x, w, y, false)?
    };
    let n = w.shape()[0];
    let MatvecLaunch { constants, workgroups, .. } = matvec_launch(g, w, x.rows, n, x.on_vec4())?;
    let grid = g.linear_grid((workgroups * parts) as u64)?;
    g.dispatch(&MATVEC_PARTS, &constants, &params, &[x.tensor, w, y.tensor], grid)
}

/// rms_norm(x, weight) for [`matmul_rms_norm`] to apply to x: weight `[k]` f32.
#[derive(Clone, Copy, Debug)]
pub struct RmsNorm<'a> {
    pub weight: &'a Tensor,
    pub eps: f32,
}

/// Where [`matmul_rms_norm`] leaves rms_norm(x).
#[derive(Clone, Copy, Debug)]
pub enum Normed<'a> {
    /// Stored here, for later kernels that read the normalised rows.
    Keep(Cols<'a>),
    /// Nothing reads them after this matmul: stored here only when x has too many rows to fuse the norm (the
    /// matmul then reads them back), else not at all.
    Scratch(Cols<'a>),
}

impl<'a> Normed<'a> {
    pub fn cols(self) -> Cols<'a> {
        match self {
            Normed::Keep(c) | Normed::Scratch(c) => c,
        }
    }
}

/// Whether a matmul of `rows` rows of x takes the matvec path (decode steps), where [`matmul_rms_norm`] fuses
/// the norm.
pub fn is_matvec(g: &Graph, rows: usize) -> bool {
    rows < g.tuning.tiled_min_rows
}

/// y = rms_norm(x, norm) W^T, or y += that when `accumulate`, each row of x normalised by its own RMS; the
/// normalised rows also into `normed` when it says [`Normed::Keep`]. On the matvec path (few rows: decode
/// steps) one dispatch does it all; with more rows it is rms_norm into `normed`, then [`matmul`] reading it.
/// x: [t, k] columns, w: [n, k] weights, y: [t, n] columns, normed: [t, k] columns of another buffer than x.
pub fn matmul_rms_norm<'a>(
    g: &mut Graph,
    x: impl IntoCols<'a>,
    norm: RmsNorm<'_>,
    w: &Tensor,
    y: impl IntoCols<'a>,
    accumulate: bool,
    normed: Normed<'a>,
) -> Result<OpId> {
    let (x, y, out) = (x.into_cols()?, y.into_cols()?, normed.cols());
    let op = "matmul_rms_norm";
    expect_dtype(op, norm.weight, &[DType::F32])?;
    expect_shape(op, norm.weight, &[x.width])?;
    if out.width != x.width || out.rows != x.rows {
        return Err(Error::shape(
            op,
            format!(
                "x is [{}, {}] but normed `{}` is [{}, {}]",
                x.rows,
                x.width,
                out.tensor.label(),
                out.rows,
                out.width
            ),
        ));
    }
    if !is_matvec(g, x.rows) {
        rms_norm(g, x, norm.weight, norm.eps, out)?;
        return matmul(g, out, w, y, accumulate);
    }
    let params = MatmulParams {
        eps: norm.eps,
        normed_stride: u32_of(op, "normed stride", out.stride())?,
        normed_offset: u32_of(op, "normed offset", out.offset)?,
        ..matmul_params(op, x, w, y, accumulate)?
    };
    let MatvecLaunch { constants, grid, .. } = matvec_launch(g, w, x.rows, w.shape()[0], x.on_vec4())?;
    match normed {
        Normed::Keep(out) => {
            let tensors = [x.tensor, w, y.tensor, norm.weight, out.tensor];
            g.dispatch(&MATVEC_NORM_OUT, &constants, &params, &tensors, grid)
        }
        Normed::Scratch(_) => {
            let tensors = [x.tensor, w, y.tensor, norm.weight];
            g.dispatch(&MATVEC_NORM, &constants, &params, &tensors, grid)
        }
    }
}

/// Mamba's causal conv1d step, fused into in_proj's matvec by [`matmul_rms_norm_conv`].
#[derive(Clone, Copy)]
pub struct ConvStep<'a> {
    /// `[C, K]` f32 and `[C]` f32.
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    /// A sequence's [K-1, C] (one row of x), or a batch's [>= t, >= (K-1) * C] (row r of x is sequence r's
    /// token, its state in the first (K-1) * C elements of row r); read and advanced.
    pub state: &'a Tensor,
    /// [>= t, C] f32: silu(conv + bias) of the first C columns of the product, which y does not receive.
    pub out: &'a Tensor,
}

/// A Mamba decode step's in_proj and conv in one dispatch ([`MATVEC_NORM_CONV`]): with u = rms_norm(x, norm) W^T,
/// columns C.. of y = u (z), and `conv.out` = silu(causal_conv1d(state ++ u[:, ..C]) + bias) (xs) with the conv
/// state advanced, as conv1d::causal_conv1d_silu_batch computes it. Decode-sized t only (the matvec path); W in
/// one tensor, y from column 0.
pub fn matmul_rms_norm_conv<'a>(
    g: &mut Graph,
    x: impl IntoCols<'a>,
    norm: RmsNorm<'_>,
    w: &Tensor,
    y: impl IntoCols<'a>,
    conv: ConvStep<'_>,
) -> Result<OpId> {
    let (x, y) = (x.into_cols()?, y.into_cols()?);
    let op = "matmul_rms_norm_conv";
    expect_dtype(op, norm.weight, &[DType::F32])?;
    expect_shape(op, norm.weight, &[x.width])?;
    let [c, k] = dims2(conv.weight)?;
    if c == 0 || k == 0 {
        return Err(Error::shape(op, format!("conv weight `{}` is [{c}, {k}]", conv.weight.label())));
    }
    for tensor in [conv.weight, conv.bias, conv.state, conv.out] {
        expect_dtype(op, tensor, &[DType::F32])?;
    }
    expect_shape(op, conv.bias, &[c])?;
    let state_stride = match dims2(conv.state)? {
        [rows, cols] if x.rows == 1 && [rows, cols] == [k - 1, c] => (k - 1) * c,
        [rows, stride] if rows >= x.rows && stride >= (k - 1) * c => stride,
        found => {
            let (label, rows) = (conv.state.label(), x.rows);
            let message = format!("conv state `{label}` is {found:?}, expected [{}, {c}] or [>= {rows}, >= {}]", k - 1, (k - 1) * c);
            return Err(Error::shape(op, message));
        }
    };
    let [out_rows, out_width] = dims2(conv.out)?;
    if out_rows < x.rows || out_width != c {
        let (label, rows) = (conv.out.label(), x.rows);
        return Err(Error::shape(op, format!("conv out `{label}` is [{out_rows}, {out_width}], expected [>= {rows}, {c}]")));
    }
    if !is_matvec(g, x.rows) || y.offset != 0 || c > y.width {
        let (rows, from) = (x.rows, y.offset);
        let message = format!("{rows} rows into columns {from}.. of y, {c} conv channels: decode steps only, y from column 0");
        return Err(Error::shape(op, message));
    }
    let params = MatmulParams {
        eps: norm.eps,
        normed_stride: u32_of(op, "conv channels", c)?,
        conv_channels: u32_of(op, "conv channels", c)?,
        conv_k: u32_of(op, "conv taps", k)?,
        state_stride: u32_of(op, "conv state stride", state_stride)?,
        ..matmul_params(op, x, w, y, false)?
    };
    u32_of(op, "conv state", x.rows * state_stride)?;
    let MatvecLaunch { constants, grid, .. } = matvec_launch(g, w, x.rows, w.shape()[0], x.on_vec4())?;
    let tensors = [x.tensor, w, y.tensor, norm.weight, conv.out, conv.weight, conv.bias, conv.state];
    g.dispatch(&MATVEC_NORM_CONV, &constants, &params, &tensors, grid)
}

/// The parameters of y (+)= x W^T, once the shapes and the weight type are checked.
fn matmul_params(op: &str, x: Cols, w: &Tensor, y: Cols, accumulate: bool) -> Result<MatmulParams> {
    let [n, k] = dims2(w)?;
    expect_dtype(op, w, &WEIGHT_DTYPES)?;
    if x.width != k || y.width != n || x.rows != y.rows {
        return Err(Error::shape(
            op,
            format!(
                "x `{}` [{}, {}] times `{}` [{n}, {k}]^T does not fit y `{}` [{}, {}]",
                x.tensor.label(),
                x.rows,
                x.width,
                w.label(),
                y.tensor.label(),
                y.rows,
                y.width
            ),
        ));
    }
    Ok(MatmulParams {
        t: u32_of(op, "t", x.rows)?,
        n: u32_of(op, "n", n)?,
        k: u32_of(op, "k", k)?,
        x_stride: u32_of(op, "x stride", x.stride())?,
        x_offset: u32_of(op, "x offset", x.offset)?,
        y_stride: u32_of(op, "y stride", y.stride())?,
        y_offset: u32_of(op, "y offset", y.offset)?,
        accumulate: accumulate as u32,
        ..Default::default()
    })
}



#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_k_are_a_count_their_columns_give_back() {
        for row_threads in [1, 32, 64] {
            let tuning = Tuning { row_threads, ..Tuning::gpu() };
            for k in (1..5000).step_by(37).chain([4096, 8192, 14336]) {
                for wanted in 1..=20 {
                    let parts = parts_of(&tuning, k, wanted);
                    let cols = part_cols(&tuning, k, parts);
                    assert!((1..=MAX_K_PARTS.min(wanted)).contains(&parts), "k {k}, wanted {wanted}: {parts} parts");
                    assert_eq!(k.div_ceil(cols), parts, "k {k}, wanted {wanted}, {row_threads} lanes: {cols} columns a part");
                    assert!(cols % 64 == 0 && (parts == 1 || cols >= min_part_cols(&tuning)), "k {k}: {cols} columns");
                }
            }
        }
        // Jamba-1.5-Mini's x_proj on a GPU: 144 workgroups in one part, 8 parts of 1,024 columns for 1,024.
        let gpu = Tuning::gpu();
        assert_eq!((parts_of(&gpu, 8192, 1024usize.div_ceil(144)), part_cols(&gpu, 8192, 8)), (8, 1024));
    }
}
