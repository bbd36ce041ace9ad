//! Quantized weight formats, their CPU reference (quantize / dequantize), and their two layouts: the packed rows
//! the GPU reads (prelude.wgsl, `weight_ref` / `weight_value`) and the tensors a quantized checkpoint stores.
//!
//! - `q8`: int8, symmetric, one f32 scale per output row (vLLM's ExpertsInt8): scale = max|w[n, :]| / 127,
//!   q = round(w / scale) in -127..=127, w ~ q * scale.
//! - `q4`: 4-bit codes q in 0..=15, one f16 scale per group of 32 or 64 consecutive inputs (along K).
//!   Symmetric: w ~ (q - 8) * scale, scale = m / -8 where m is the group's value of largest magnitude (the
//!   full -8..=7 range, as llama.cpp's Q4_0). With a minimum: w ~ q * scale + min, scale = (max - min) / 15,
//!   min and scale both f16 (as Q4_1). K must be a multiple of the group size.
//!
//! Scales are rounded to their stored precision before the codes are chosen, so [`Quantized::dequantize`] is
//! exactly what the GPU computes.
//!
//! GPU layout: a matrix [rows, cols] is `rows` packed rows of [`QuantFormat::row_words`] u32 words each, so a
//! row range is a contiguous byte range (matrices split by rows, expert stacks) and one binding holds a matrix:
//! ```text
//! q8:            [scale f32] [pad] [codes: cols i8, 4 per word, column c in byte c % 4 of word c / 4] [pad]
//! q4 symmetric:  [scales: groups f16, 2 per word, group g in half g % 2] [pad] [codes: 8 per word, nibble c % 8] [pad]
//! q4 with min:   [groups words: scale f16 in the low half, min f16 in the high half] [pad] [codes as above] [pad]
//! ```
//! Each `[pad]` fills its part to a multiple of 16 bytes ([`ROW_ALIGN`]), so every row's codes start on 16 bytes
//! and a decode matvec can read them 16 bytes at a time (prelude.wgsl, `MATVEC_READS`): q8 spends 12 bytes a
//! row on it, 0.3% of a row of 4,096 codes.
//! On disk (safetensors, beside the unquantized tensors), a weight `X.weight` becomes `X.qweight` (q8: I8
//! `[rows, cols]`; q4: U8 `[rows, cols / 2]`, column 2i in the low nibble of byte i) and `X.scales` (q8: F32
//! `[rows]`; q4: F16 `[rows, groups]`, or `[rows, groups, 2]` as (scale, min) pairs). A GPU row is the disk
//! row's scales, then its codes, each padded to 16 bytes: loading a quantized checkpoint is a copy.

use half::f16;

use crate::error::{Error, Result};

/// Group sizes of q4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Q4Group {
    G32,
    G64,
}

impl Q4Group {
    pub fn size(self) -> usize {
        match self {
            Q4Group::G32 => 32,
            Q4Group::G64 => 64,
        }
    }
}

/// A quantized storage format of a weight matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// int8 per output channel.
    Q8,
    /// 4-bit, group-wise along K, with an f16 minimum per group when `min`.
    Q4 { group: Q4Group, min: bool },
}

impl QuantFormat {
    /// The format named `q8` or `q4`; `group_size` (32 or 64) and `min` apply to q4 only.
    pub fn parse(name: &str, group_size: usize, min: bool) -> Result<Self> {
        let group = match group_size {
            32 => Q4Group::G32,
            64 => Q4Group::G64,
            other => return Err(Error::Input(format!("q4 group size {other} is not supported (expected 32 or 64)"))),
        };
        match name.to_ascii_lowercase().as_str() {
            "q8" | "int8" => Ok(QuantFormat::Q8),
            "q4" | "int4" => Ok(QuantFormat::Q4 { group, min }),
            other => Err(Error::Input(format!("unknown quantization format `{other}` (expected q8 or q4)"))),
        }
    }

    /// `q8` or `q4`.
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8 => "q8",
            QuantFormat::Q4 { .. } => "q4",
        }
    }

    /// The q4 group size; None for q8.
    pub fn group_size(self) -> Option<usize> {
        match self {
            QuantFormat::Q8 => None,
            QuantFormat::Q4 { group, .. } => Some(group.size()),
        }
    }

    /// Whether q4 stores a minimum per group.
    pub fn has_min(self) -> bool {
        matches!(self, QuantFormat::Q4 { min: true, .. })
    }

    /// Whether rows of `cols` inputs can be stored in this format (q4: a whole number of groups).
    pub fn fits(self, cols: usize) -> bool {
        cols > 0 && self.group_size().is_none_or(|g| cols % g == 0)
    }

    /// Fails unless rows of `cols` inputs can be stored in this format; `what` names the matrix.
    pub fn check_cols(self, what: &str, cols: usize) -> Result<()> {
        if self.fits(cols) {
            return Ok(());
        }
        Err(Error::shape(
            format!("{} quantization of {what}", self.name()),
            format!(
                "{cols} columns (K) are not a positive multiple of the group size {}",
                self.group_size().unwrap_or(1)
            ),
        ))
    }

    /// Quantization groups per row.
    pub fn groups(self, cols: usize) -> usize {
        self.group_size().map_or(1, |g| cols / g)
    }

    /// Bytes of one row's scales on disk (and at the start of a GPU row, before padding).
    pub fn scale_bytes(self, cols: usize) -> usize {
        match self {
            QuantFormat::Q8 => 4,
            QuantFormat::Q4 { min, .. } => self.groups(cols) * if min { 4 } else { 2 },
        }
    }

    /// Bytes of one row's codes on disk.
    pub fn code_bytes(self, cols: usize) -> usize {
        match self {
            QuantFormat::Q8 => cols,
            QuantFormat::Q4 { .. } => cols.div_ceil(2),
        }
    }

    /// u32 words of one packed GPU row: the scales, then the codes, each padded to [`ROW_ALIGN`] bytes.
    pub fn row_words(self, cols: usize) -> usize {
        (self.scale_bytes(cols).next_multiple_of(ROW_ALIGN) + self.code_bytes(cols).next_multiple_of(ROW_ALIGN)) / 4
    }

    /// The value of the `W_DTYPE` override that makes a kernel read this format (prelude.wgsl, DTYPE_Q*).
    pub fn shader_code(self) -> f64 {
        match self {
            QuantFormat::Q8 => 3.0,
            QuantFormat::Q4 { group: Q4Group::G32, min: false } => 4.0,
            QuantFormat::Q4 { group: Q4Group::G64, min: false } => 5.0,
            QuantFormat::Q4 { group: Q4Group::G32, min: true } => 6.0,
            QuantFormat::Q4 { group: Q4Group::G64, min: true } => 7.0,
        }
    }

    /// Every format, for tests and shader variants.
    pub const ALL: [QuantFormat; 5] = [
        QuantFormat::Q8,
        QuantFormat::Q4 { group: Q4Group::G32, min: false },
        QuantFormat::Q4 { group: Q4Group::G64, min: false },
        QuantFormat::Q4 { group: Q4Group::G32, min: true },
        QuantFormat::Q4 { group: Q4Group::G64, min: true },
    ];
}

impl std::fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantFormat::Q8 => write!(f, "q8"),
            QuantFormat::Q4 { group, min } => {
                write!(f, "q4 (groups of {}{})", group.size(), if *min { ", with min" } else { "" })
            }
        }
    }
}

/// One quantized row as stored on disk: its scale bytes and its code bytes.
struct DiskRow {
    scales: Vec<u8>,
    codes: Vec<u8>,
}

/// Quantizes one row (its scales rounded to their stored precision first).
fn quantize_row(format: QuantFormat, row: &[f32]) -> DiskRow {
    match format {
        QuantFormat::Q8 => {
            let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let codes = row
                .iter()
                .map(|&v| if scale > 0.0 { (v / scale).round().clamp(-127.0, 127.0) as i8 as u8 } else { 0 })
                .collect();
            DiskRow { scales: scale.to_le_bytes().to_vec(), codes }
        }
        QuantFormat::Q4 { group, min } => {
            let mut scales = Vec::with_capacity(format.scale_bytes(row.len()));
            let mut q = Vec::with_capacity(row.len());
            for values in row.chunks(group.size()) {
                if min {
                    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let scale = f16::from_f32((hi - lo) / 15.0);
                    let lo = f16::from_f32(lo);
                    let (s, m) = (scale.to_f32(), lo.to_f32());
                    q.extend(
                        values.iter().map(|&v| if s > 0.0 { ((v - m) / s).round().clamp(0.0, 15.0) as u8 } else { 0 }),
                    );
                    scales.extend(scale.to_le_bytes());
                    scales.extend(lo.to_le_bytes());
                } else {
                    let extreme = values.iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                    let scale = f16::from_f32(extreme / -8.0);
                    let s = scale.to_f32();
                    q.extend(values.iter().map(|&v| {
                        if s != 0.0 {
                            ((v / s).round() + 8.0).clamp(0.0, 15.0) as u8
                        } else {
                            8
                        }
                    }));
                    scales.extend(scale.to_le_bytes());
                }
            }
            let codes = q.chunks(2).map(|pair| pair[0] | pair.get(1).copied().unwrap_or(0) << 4).collect();
            DiskRow { scales, codes }
        }
    }
}

/// The values of one row from its disk form.
fn dequantize_row(format: QuantFormat, scales: &[u8], codes: &[u8], cols: usize) -> Vec<f32> {
    let f16_at = |i: usize| f16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]).to_f32();
    match format {
        QuantFormat::Q8 => {
            let scale = f32::from_le_bytes([scales[0], scales[1], scales[2], scales[3]]);
            codes[..cols].iter().map(|&q| q as i8 as f32 * scale).collect()
        }
        QuantFormat::Q4 { group, min } => (0..cols)
            .map(|c| {
                let q = ((codes[c / 2] >> (4 * (c % 2))) & 0xf) as f32;
                let g = c / group.size();
                if min {
                    q * f16_at(2 * g) + f16_at(2 * g + 1)
                } else {
                    (q - 8.0) * f16_at(g)
                }
            })
            .collect(),
    }
}

/// A quantized matrix [rows, cols] in its disk form: `X.qweight` and `X.scales`.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    pub qweight: Vec<u8>,
    pub scales: Vec<u8>,
}

/// Quantizes a row-major matrix [rows, cols].
pub fn quantize(format: QuantFormat, w: &[f32], rows: usize, cols: usize) -> Result<Quantized> {
    format.check_cols("a matrix", cols)?;
    if w.len() != rows * cols {
        return Err(Error::shape("quantize", format!("{} values for [{rows}, {cols}]", w.len())));
    }
    let mut out = Quantized { format, rows, cols, qweight: Vec::new(), scales: Vec::new() };
    for row in w.chunks(cols) {
        let r = quantize_row(format, row);
        out.qweight.extend(r.codes);
        out.scales.extend(r.scales);
    }
    Ok(out)
}

impl Quantized {
    /// The matrix the codes stand for, row-major [rows, cols]: the CPU twin of the GPU's dequantization.
    pub fn dequantize(&self) -> Vec<f32> {
        self.view().dequantize()
    }

    /// The packed GPU rows, as bytes.
    pub fn packed(&self) -> Vec<u8> {
        self.view().packed_rows(0, self.rows).concat()
    }

    pub fn view(&self) -> QuantView<'_> {
        QuantView {
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            qweight: &self.qweight,
            scales: &self.scales,
        }
    }
}

/// A quantized matrix whose bytes live elsewhere (a memory-mapped checkpoint).
#[derive(Clone, Copy, Debug)]
pub struct QuantView<'a> {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    pub qweight: &'a [u8],
    pub scales: &'a [u8],
}

/// What a packed GPU row's scales and its codes are each padded to, in bytes: one 16-byte load.
pub const ROW_ALIGN: usize = 16;

const ZEROS: [u8; ROW_ALIGN] = [0; ROW_ALIGN];

impl<'a> QuantView<'a> {
    fn scales_row(&self, r: usize) -> &'a [u8] {
        let n = self.format.scale_bytes(self.cols);
        &self.scales[r * n..(r + 1) * n]
    }

    fn codes_row(&self, r: usize) -> &'a [u8] {
        let n = self.format.code_bytes(self.cols);
        &self.qweight[r * n..(r + 1) * n]
    }

    /// Rows `row0..row0 + n` in the GPU layout, as slices to copy one after another (scales, padding, codes,
    /// padding per row): what [`Context::tensor_from_parts`](crate::gpu::Context::tensor_from_parts) takes.
    pub fn packed_rows(&self, row0: usize, n: usize) -> Vec<&'a [u8]> {
        let pad = |len: usize| &ZEROS[..len.next_multiple_of(ROW_ALIGN) - len];
        let mut parts = Vec::with_capacity(4 * n);
        for r in row0..row0 + n {
            let (s, c) = (self.scales_row(r), self.codes_row(r));
            parts.extend([s, pad(s.len()), c, pad(c.len())].into_iter().filter(|p| !p.is_empty()));
        }
        parts
    }

    /// The matrix the codes stand for, row-major [rows, cols]: the CPU twin of the GPU's dequantization.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.rows)
            .flat_map(|r| dequantize_row(self.format, self.scales_row(r), self.codes_row(r), self.cols))
            .collect()
    }

    /// Bytes of the disk form.
    pub fn size_bytes(&self) -> usize {
        self.qweight.len() + self.scales.len()
    }
}

/// Which weights a [`Quantization`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The FFNs: every expert and the dense MLPs (gate, up, down). The default.
    Ffn,
    /// The FFNs and every other linear layer: Mamba's in/x/dt/out projections, attention's q/k/v/o, and the
    /// lm_head when it is not tied to the embeddings. The router and the embeddings are never quantized.
    AllLinear,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Ffn => "ffn",
            Scope::AllLinear => "all-linear",
        }
    }
}

/// A quantization to apply at load, or that a quantized checkpoint was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quantization {
    pub format: QuantFormat,
    pub scope: Scope,
}

impl Quantization {
    pub fn new(format: QuantFormat) -> Self {
        Quantization { format, scope: Scope::Ffn }
    }

    /// The format a weight `name` of `cols` inputs is stored in under this quantization, or None if it stays as
    /// it is: outside the scope, or (q4) a K that is not a whole number of groups, such as a dt_proj whose rank
    /// is smaller than the group.
    pub fn format_for(&self, name: &str, cols: usize) -> Option<QuantFormat> {
        (self.covers(name) && self.format.fits(cols)).then_some(self.format)
    }

    /// Whether `name` (a checkpoint tensor name) is in the scope.
    pub fn covers(&self, name: &str) -> bool {
        let Some(stem) = name.strip_suffix(".weight") else { return false };
        let ffn = stem.contains(".feed_forward.") && !stem.ends_with(".router");
        let linear = ["q_proj", "k_proj", "v_proj", "o_proj", "in_proj", "x_proj", "dt_proj", "out_proj"]
            .iter()
            .any(|p| stem.ends_with(&format!(".{p}")))
            || stem == "lm_head";
        ffn || (self.scope == Scope::AllLinear && linear)
    }
}
