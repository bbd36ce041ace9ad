// prelude.wgsl: helpers shared by every kernel. The harness (src/gpu/kernel.rs) prepends this file to each
// shader, so nothing here is ever pasted into a kernel file.
//
// Conventions:
// - Binding 0 is the kernel's parameter struct (uniform); storage bindings follow in the order that the
//   kernel's Rust declaration lists them.
// - Workgroups hold 64 invocations. Grids larger than the per-dimension limit are laid out in 2D; a kernel
//   recovers its linear workgroup index with `linear_workgroup`.
// - Weights are `array<u32>`: f32 one per word, f16 / bf16 two per word (element 2i in the low half), or
//   quantized rows (q8, q4: codes and scales in one word-aligned record per row; src/weights/quant.rs has the
//   layout and the CPU twin). The `W_DTYPE` override picks the decoding; constant folding removes the other
//   branches. Kernels read a weight matrix through `weight_ref` and `weight_value`, never by hand.

const WG: u32 = 64u;

const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;
const DTYPE_BF16: u32 = 2u;
const DTYPE_Q8: u32 = 3u;
const DTYPE_Q4_G32: u32 = 4u;
const DTYPE_Q4_G64: u32 = 5u;
const DTYPE_Q4_G32_MIN: u32 = 6u;
const DTYPE_Q4_G64_MIN: u32 = 7u;

// The storage type of the kernel's weight binding (one of DTYPE_*).
override W_DTYPE: u32 = DTYPE_F32;

// Invocations that cooperate on one row in row-reduction kernels: a power of two dividing WG. 1 on CPU
// adapters, where each barrier is a context switch; 32 or 64 on GPUs, for coalesced loads.
override ROW_THREADS: u32 = 1u;

fn linear_workgroup(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>) -> u32 {
    return workgroup_id.x + workgroup_id.y * num_workgroups.x;
}

// The word that holds element `i` of a packed weight array.
fn weight_word(i: u32) -> u32 {
    if W_DTYPE == DTYPE_F32 {
        return i;
    }
    return i >> 1u;
}

// An IEEE half in the low 16 bits, widened exactly to f32 (normals, subnormals, zeros, infinities, NaN).
// Written with integer ops so it needs no f16 capability, and without f32 denormals, which GPUs may flush.
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let magnitude = h & 0x7fffu;
    var bits: u32;
    if magnitude < 0x0400u {
        // Subnormal or zero: magnitude * 2^-24.
        bits = bitcast<u32>(f32(magnitude) * 5.9604644775390625e-8);
    } else if magnitude < 0x7c00u {
        // Normal: move exponent and mantissa into place and rebias the exponent by 127 - 15.
        bits = (magnitude << 13u) + (112u << 23u);
    } else {
        bits = 0x7f800000u | ((magnitude & 0x3ffu) << 13u);
    }
    return bitcast<f32>(sign | bits);
}

// Element `i` of a packed weight array, given the word that holds it.
fn unpack_weight(word: u32, i: u32) -> f32 {
    let half = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
    switch W_DTYPE {
        case DTYPE_F16: {
            return f16_to_f32(half);
        }
        case DTYPE_BF16: {
            return bitcast<f32>(half << 16u);
        }
        default: {
            return bitcast<f32>(word);
        }
    }
}

// ---- weight matrices of any W_DTYPE: element (row, col) of a matrix with `cols` columns ----

fn q4_group() -> u32 {
    return select(32u, 64u, W_DTYPE == DTYPE_Q4_G64 || W_DTYPE == DTYPE_Q4_G64_MIN);
}

fn q4_has_min() -> bool {
    return W_DTYPE == DTYPE_Q4_G32_MIN || W_DTYPE == DTYPE_Q4_G64_MIN;
}

// `words` rounded up to whole quads: a quantized row's scales and its codes are each padded to 16 bytes, so that
// its codes start on a quad (quant.rs, ROW_ALIGN).
fn whole_quads(words: u32) -> u32 {
    return (words + 3u) & ~3u;
}

// Words at the start of a quantized row that hold its scales, padding included (q8: one f32; q4 symmetric: two
// f16 per word; with min: one scale | min pair per word).
fn quant_scale_words(cols: u32) -> u32 {
    if W_DTYPE == DTYPE_Q8 {
        return 4u;
    }
    let groups = cols / q4_group();
    return whole_quads(select((groups + 1u) / 2u, groups, q4_has_min()));
}

// Words of one quantized row: its scales, then its codes (q8: 4 per word; q4: 8 per word), padding included.
fn quant_row_words(cols: u32) -> u32 {
    let codes = select(cols / 8u, (cols + 3u) / 4u, W_DTYPE == DTYPE_Q8);
    return quant_scale_words(cols) + whole_quads(codes);
}

// Where a weight lies: the word holding its value or code, the word holding its scale (the same word for float
// types), and its position for the decoding (the element index for floats, the column for quantized types).
struct WeightRef {
    word: u32,
    scale_word: u32,
    at: u32,
}

fn weight_ref(row: u32, col: u32, cols: u32) -> WeightRef {
    var r: WeightRef;
    if W_DTYPE <= DTYPE_BF16 {
        r.at = row * cols + col;
        r.word = weight_word(r.at);
        r.scale_word = r.word;
        return r;
    }
    let base = row * quant_row_words(cols);
    let codes = base + quant_scale_words(cols);
    r.at = col;
    if W_DTYPE == DTYPE_Q8 {
        r.word = codes + col / 4u;
        r.scale_word = base;
    } else {
        let g = col / q4_group();
        r.word = codes + col / 8u;
        r.scale_word = base + select(g / 2u, g, q4_has_min());
    }
    return r;
}

// A q8 weight's code, unscaled: byte col % 4 of its word, sign-extended.
fn q8_code(r: WeightRef, word: u32) -> f32 {
    return f32(bitcast<i32>(word << (24u - 8u * (r.at % 4u))) >> 24u);
}

// The weight's value, given the words that `weight_ref` pointed at. Kernels do the two loads themselves (each
// reads its own bindings): `let r = weight_ref(row, col, k); weight_value(r, w[r.word], w[r.scale_word])`.
fn weight_value(r: WeightRef, word: u32, scale_word: u32) -> f32 {
    if W_DTYPE <= DTYPE_BF16 {
        return unpack_weight(word, r.at);
    }
    if W_DTYPE == DTYPE_Q8 {
        return q8_code(r, word) * bitcast<f32>(scale_word);
    }
    let q = f32((word >> (4u * (r.at % 8u))) & 0xfu);
    if q4_has_min() {
        return q * f16_to_f32(scale_word & 0xffffu) + f16_to_f32(scale_word >> 16u);
    }
    let g = r.at / q4_group();
    return (q - 8.0) * f16_to_f32((scale_word >> (16u * (g % 2u))) & 0xffffu);
}

// ---- weight rows a word at a time (the decode matvecs) ----
//
// A matvec invocation reads whole words of a weight row rather than one weight each: ROW_THREADS invocations
// on a row then load ROW_THREADS consecutive words at once (bf16: two weights per load, q8 four, q4 eight), and
// each takes its word's dot product with the matching values of x, which the kernel gathers itself (x is its
// own binding) into an X8: word i of a row covers columns i * word_weights() .. + word_weights().
//
// How the decode matvecs read weight rows (MATVEC_READS, Tuning::matvec_reads):
// - READ_CODES: quantized rows a weight at a time; float rows by words wherever they start on a word.
// - READ_WORDS: quantized rows by words too (faster than codes on CPU adapters, slower than quads). On an H200 a
//   first version, decoding codes through arrays indexed in loops, made the q8 matvec about 2x slower (0.213 ms
//   of GPU time for [16384 x 4096], against 0.170 ms submit-to-completion weight by weight, of which about
//   0.07 ms is submitting and waiting). This one decodes with extractBits and vector dot products, no arrays;
//   it has not run on a GPU.
// - READ_QUADS: rows of whole quads four words (16 bytes) a load, the rest by words (rows_by_quad, below).
const READ_CODES: u32 = 0u;
const READ_WORDS: u32 = 1u;
const READ_QUADS: u32 = 2u;
override MATVEC_READS: u32 = READ_CODES;

// The x values of one word's columns: a.x alone for f32, a.xy for f16 and bf16, a for q8, a then b for q4.
struct X8 {
    a: vec4<f32>,
    b: vec4<f32>,
}

// Weights per word: 1 (f32), 2 (f16, bf16), 4 (q8), 8 (q4).
fn word_weights() -> u32 {
    switch W_DTYPE {
        case DTYPE_F32: {
            return 1u;
        }
        case DTYPE_F16, DTYPE_BF16: {
            return 2u;
        }
        case DTYPE_Q8: {
            return 4u;
        }
        default: {
            return 8u;
        }
    }
}

// Whether every row of a matrix with `cols` columns starts on a word: quantized rows (word-aligned records),
// f32 rows, f16 and bf16 rows when cols is even.
fn rows_on_words(cols: u32) -> bool {
    return W_DTYPE > DTYPE_BF16 || W_DTYPE == DTYPE_F32 || cols % 2u == 0u;
}

// Whether the decode matvecs read the rows of a matrix with `cols` columns by words: rows that start on words,
// quantized ones unless read by codes.
fn rows_by_word(cols: u32) -> bool {
    return rows_on_words(cols) && (W_DTYPE <= DTYPE_BF16 || MATVEC_READS != READ_CODES);
}

// A row read by words: the word holding its first weight (or code), its words of weights, and (quantized) the
// first word of its scales.
struct WordRow {
    first: u32,
    words: u32,
    scales: u32,
}

fn word_row(row: u32, cols: u32) -> WordRow {
    var r: WordRow;
    let per = word_weights();
    r.words = (cols + per - 1u) / per;
    if W_DTYPE <= DTYPE_BF16 {
        r.first = row * r.words;
        r.scales = r.first;
    } else {
        r.scales = row * quant_row_words(cols);
        r.first = r.scales + quant_scale_words(cols);
    }
    return r;
}

// The word holding the scale of word i of the row: q4's group scale; for the others the word itself, which
// word_dot ignores (floats have no scale, q8's is its row's: row_scaled).
fn word_scale(r: WordRow, i: u32) -> u32 {
    if W_DTYPE <= DTYPE_Q8 {
        return r.first + i;
    }
    let g = i * 8u / q4_group();
    return r.scales + select(g / 2u, g, q4_has_min());
}

// The weights of `word`, word i of its row, in column order (the first word_weights() of a, then b), each as
// weight_value decodes it, given the word that holds its scale: q8's row scale (its WordRow's `scales`), q4's
// group scale (word_scale's); floats ignore it. For kernels that decode whole words into registers (the CPU
// prefill kernels), where word_dot takes a dot product.
fn word_values(word: u32, scale_word: u32, i: u32) -> X8 {
    var v: X8;
    switch W_DTYPE {
        case DTYPE_F32: {
            v.a.x = bitcast<f32>(word);
        }
        case DTYPE_F16: {
            v.a = vec4(f16_to_f32(word & 0xffffu), f16_to_f32(word >> 16u), 0.0, 0.0);
        }
        case DTYPE_BF16: {
            v.a = vec4(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u), 0.0, 0.0);
        }
        case DTYPE_Q8: {
            let c = bitcast<i32>(word);
            let codes = vec4(extractBits(c, 0u, 8u), extractBits(c, 8u, 8u), extractBits(c, 16u, 8u), extractBits(c, 24u, 8u));
            v.a = vec4<f32>(codes) * bitcast<f32>(scale_word);
        }
        default: {
            let lo = vec4<f32>(vec4(extractBits(word, 0u, 4u), extractBits(word, 4u, 4u), extractBits(word, 8u, 4u), extractBits(word, 12u, 4u)));
            let hi = vec4<f32>(vec4(extractBits(word, 16u, 4u), extractBits(word, 20u, 4u), extractBits(word, 24u, 4u), extractBits(word, 28u, 4u)));
            if q4_has_min() {
                let scale = f16_to_f32(scale_word & 0xffffu);
                let min = f16_to_f32(scale_word >> 16u);
                v = X8(lo * scale + min, hi * scale + min);
            } else {
                let g = i * 8u / q4_group();
                let scale = f16_to_f32((scale_word >> (16u * (g % 2u))) & 0xffffu);
                v = X8((lo - 8.0) * scale, (hi - 8.0) * scale);
            }
        }
    }
    return v;
}

// The word holding the scale that word_values takes for word i of row r: q8's row scale, q4's group scale; for
// floats the word itself (read again, unused).
fn word_values_scale(r: WordRow, i: u32) -> u32 {
    if W_DTYPE == DTYPE_Q8 {
        return r.scales;
    }
    return word_scale(r, i);
}

// ---- weight rows a quad at a time (MATVEC_READS = READ_QUADS) ----
//
// Quad g of a row is its words 4g .. 4g + 3, read in one 16-byte load (matvec.wgsl and moe_matvec.wgsl bind W
// as vec4<u32>): ROW_THREADS invocations on a row load ROW_THREADS consecutive quads at once, f32 4 weights a
// load, f16 and bf16 8, q8 16, q4 32. A GPU's widest load moves 4 times the bytes of a word's per instruction, and a decode
// matvec by words or codes is bound by load instructions, not by memory (an H200: q8 by codes 0.32 TB/s, f32 by
// words 1.68). A row is read by quads where it is whole quads: every quantized row (quant.rs pads its scales
// and its codes to 16 bytes; a quad past the last code meets xs of 0), a float row whose words are a multiple of
// 4 (so it starts on a quad); other rows by words.

// The xs of a quad's four words (x_word of each).
struct QuadXs {
    w: array<X8, 4>,
}

// The QuadXs of a quad whose columns' x values are given four at a time: its word_weights() vec4s, in order (f32
// takes 1, f16 and bf16 2, q8 4, q4 8), for kernels that load x as vec4.
fn quad_xs_of(v: array<vec4<f32>, 8>) -> QuadXs {
    var xs: QuadXs;
    switch word_weights() {
        case 1u: {
            xs.w[0].a.x = v[0].x;
            xs.w[1].a.x = v[0].y;
            xs.w[2].a.x = v[0].z;
            xs.w[3].a.x = v[0].w;
        }
        case 2u: {
            xs.w[0].a = vec4(v[0].xy, 0.0, 0.0);
            xs.w[1].a = vec4(v[0].zw, 0.0, 0.0);
            xs.w[2].a = vec4(v[1].xy, 0.0, 0.0);
            xs.w[3].a = vec4(v[1].zw, 0.0, 0.0);
        }
        case 4u: {
            for (var e = 0u; e < 4u; e++) {
                xs.w[e].a = v[e];
            }
        }
        default: {
            for (var e = 0u; e < 4u; e++) {
                xs.w[e] = X8(v[2u * e], v[2u * e + 1u]);
            }
        }
    }
    return xs;
}

// Whether the rows of a matrix with `cols` columns are read by quads (see above).
fn rows_by_quad(cols: u32) -> bool {
    if MATVEC_READS != READ_QUADS {
        return false;
    }
    return W_DTYPE > DTYPE_BF16 || (rows_by_word(cols) && word_row(0u, cols).words % 4u == 0u);
}

// Weights per quad.
fn quad_weights() -> u32 {
    return 4u * word_weights();
}

// Whether a quad's words need a scale word of their own (word_scale's): q4's group scales. A quad lies in one
// group (groups are 4 or 8 words), so one scale word serves all four.
fn quad_scaled() -> bool {
    return W_DTYPE > DTYPE_Q8;
}

// The dot product of quad g of a row with the xs of its words, given its scale word where quad_scaled: the four
// words' word_dot, summed in pairs.
fn quad_dot(quad: vec4<u32>, scale_word: u32, g: u32, xs: QuadXs) -> f32 {
    let i = 4u * g;
    return (word_dot(quad.x, scale_word, i, xs.w[0]) + word_dot(quad.y, scale_word, i + 1u, xs.w[1]))
        + (word_dot(quad.z, scale_word, i + 2u, xs.w[2]) + word_dot(quad.w, scale_word, i + 3u, xs.w[3]));
}

// A q8 row has one scale, so the decode matvecs scale each row's sum once (row_scaled) instead of every weight:
// word_dot and matvec_weight leave q8 weights unscaled, which saves a load and a multiply per word or weight.
// Every other type comes out of them whole.
fn scales_per_row() -> bool {
    return W_DTYPE == DTYPE_Q8;
}

// A matvec row's sum with its scale applied, given the word at its WordRow's `scales` (see scales_per_row).
fn row_scaled(sum: f32, scale_word: u32) -> f32 {
    if scales_per_row() {
        return sum * bitcast<f32>(scale_word);
    }
    return sum;
}

// weight_value as the decode matvecs take it: q8 weights unscaled (see scales_per_row), scale_word unread.
fn matvec_weight(r: WeightRef, word: u32, scale_word: u32) -> f32 {
    if scales_per_row() {
        return q8_code(r, word);
    }
    return weight_value(r, word, scale_word);
}

// The dot product of the weights in `word`, word i of its row, with xs (0 past the row's end), given the word
// that word_scale points at. q4 words take the codes' dot product and scale it once: the weights as
// weight_value decodes them, summed in another order; q8 words are left unscaled (scales_per_row).
fn word_dot(word: u32, scale_word: u32, i: u32, xs: X8) -> f32 {
    switch W_DTYPE {
        case DTYPE_F32: {
            return bitcast<f32>(word) * xs.a.x;
        }
        case DTYPE_F16: {
            return f16_to_f32(word & 0xffffu) * xs.a.x + f16_to_f32(word >> 16u) * xs.a.y;
        }
        case DTYPE_BF16: {
            return bitcast<f32>(word << 16u) * xs.a.x + bitcast<f32>(word & 0xffff0000u) * xs.a.y;
        }
        case DTYPE_Q8: {
            let v = bitcast<i32>(word);
            let codes = vec4(extractBits(v, 0u, 8u), extractBits(v, 8u, 8u), extractBits(v, 16u, 8u), extractBits(v, 24u, 8u));
            return dot(vec4<f32>(codes), xs.a);
        }
        default: {
            let lo = vec4<f32>(vec4(extractBits(word, 0u, 4u), extractBits(word, 4u, 4u), extractBits(word, 8u, 4u), extractBits(word, 12u, 4u)));
            let hi = vec4<f32>(vec4(extractBits(word, 16u, 4u), extractBits(word, 20u, 4u), extractBits(word, 24u, 4u), extractBits(word, 28u, 4u)));
            if q4_has_min() {
                let sum = dot(xs.a + xs.b, vec4(1.0));
                return (dot(lo, xs.a) + dot(hi, xs.b)) * f16_to_f32(scale_word & 0xffffu) + sum * f16_to_f32(scale_word >> 16u);
            }
            let g = i * 8u / q4_group();
            let scale = f16_to_f32((scale_word >> (16u * (g % 2u))) & 0xffffu);
            return (dot(lo - 8.0, xs.a) + dot(hi - 8.0, xs.b)) * scale;
        }
    }
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// ln(1 + e^x), as PyTorch's softplus with threshold 20.
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        return x;
    }
    return log(1.0 + exp(x));
}

var<workgroup> row_scratch: array<vec4<f32>, WG>;

// The sums of four values over the ROW_THREADS consecutive invocations that share a row. Every invocation of the
// workgroup must call it (it holds barriers when ROW_THREADS > 1).
fn row_sum4(lane: u32, value: vec4<f32>) -> vec4<f32> {
    if ROW_THREADS == 1u {
        return value;
    }
    row_scratch[lane] = value;
    workgroupBarrier();
    for (var stride = ROW_THREADS / 2u; stride > 0u; stride >>= 1u) {
        if lane % ROW_THREADS < stride {
            row_scratch[lane] += row_scratch[lane + stride];
        }
        workgroupBarrier();
    }
    let total = row_scratch[lane - lane % ROW_THREADS];
    workgroupBarrier();
    return total;
}

// row_sum4 of one value.
fn row_sum(lane: u32, value: f32) -> f32 {
    return row_sum4(lane, vec4(value, 0.0, 0.0, 0.0)).x;
}

// ---- several weight rows per invocation (the decode matvecs) ----
//
// Each row group of a matvec computes MATVEC_ROWS consecutive output elements (rows of W) rather than one: the
// values of x that a word's dot product needs are loaded once and serve every row, so a step loads x that many
// times less often, and each invocation has that many weight loads in flight. Rows past the matrix's last are
// read clamped to it and not stored.
override MATVEC_ROWS: u32 = 1u; // 1, 2, 4 or 8

// Words per invocation per round of a decode matvec's loop over k (matvec.wgsl's and moe_matvec.wgsl's): 1, or up to 4
// at one row per row group, where a round of one word leaves an invocation a single weight load in flight
// (MATVEC_ROWS gives that many). A round loads the words i0, i0 + ROW_THREADS, ... of its rows before it uses
// any, so each invocation has MATVEC_UNROLL times the loads in flight; the sums are taken in the same order as
// one word per round, so the results are the same.
override MATVEC_UNROLL: u32 = 1u;

// With one invocation per row group (ROW_THREADS 1: CPU adapters) every invocation of a decode matvec reads the
// same row of x, and a CPU adapter pays for every invocation's load of it (lavapipe loads storage invocation by
// invocation, even where all of them read one address). With X_LANES, the width of the adapter's subgroups, the
// invocations of a subgroup read x in turns instead (matvec_x.wgsl's *_in_turn): each loads the x values of
// one quad of weights, X_LANES quads at a time, and takes the others' from the invocations that loaded them
// (lanes.wgsl). The same values in the same order, a load in X_LANES. 0 (off) where ROW_THREADS > 1, whose
// invocations read different columns, and on adapters without subgroup operations.
override X_LANES: u32 = 0u;

// xs of the MATVEC_UNROLL words of a round, gathered by the caller (x_word, normalised_word): 0 past the row.
struct RoundXs {
    xs: array<X8, 4>,
}

// One value per row of a row group: rows 0-3 in a, 4-7 in b.
struct Rows8 {
    a: vec4<f32>,
    b: vec4<f32>,
}

// s with v added to row q's value. Called with the counter of a loop over MATVEC_ROWS rows, which compilers
// unroll, so the masks fold away.
fn rows8_add_at(s: Rows8, q: u32, v: f32) -> Rows8 {
    let at = vec4(0u, 1u, 2u, 3u);
    return Rows8(s.a + select(vec4(0.0), vec4(v), at == vec4(q)), s.b + select(vec4(0.0), vec4(v), at + 4u == vec4(q)));
}

fn rows8_at(s: Rows8, q: u32) -> f32 {
    return select(s.b[q % 4u], s.a[q % 4u], q < 4u);
}

// row_sum of each row's value; only the rows MATVEC_ROWS uses (every invocation must call it).
fn row_sum8(lane: u32, value: Rows8) -> Rows8 {
    var total = Rows8(row_sum4(lane, value.a), vec4(0.0));
    if MATVEC_ROWS > 4u {
        total.b = row_sum4(lane, value.b);
    }
    return total;
}

// ---- MoE routing (reference::moe::route), shared by moe_route.wgsl and moe_router.wgsl ----

// The most experts a router row may have (MAX_EXPERTS in src/kernels/moe.rs).
const MAX_ROUTED_EXPERTS: u32 = 256u;

// A router row's softmax over all experts, as reference::ops::softmax: p[e] = exp(logit[e] - max) / sum, the
// sum taken in index order.
struct Softmax {
    max_logit: f32,
    sum: f32,
}

fn softmax_of(logits: ptr<function, array<f32, MAX_ROUTED_EXPERTS>>, n: u32) -> Softmax {
    var max_logit = (*logits)[0];
    for (var e = 1u; e < n; e++) {
        max_logit = max(max_logit, (*logits)[e]);
    }
    var sum = 0.0;
    for (var e = 0u; e < n; e++) {
        sum += exp((*logits)[e] - max_logit);
    }
    return Softmax(max_logit, sum);
}

struct Choice {
    p: f32,
    e: u32, // n when no expert qualifies (a row of NaN)
}

// Top-k without a sort: the j-th choice is the best (p, e) ordered strictly after the (j-1)-th (`prev`; start
// from Choice(2.0, 0u)) in the order "larger p first, then lower index". Probabilities are recomputed
// identically on each pass.
fn next_choice(logits: ptr<function, array<f32, MAX_ROUTED_EXPERTS>>, n: u32, softmax: Softmax, prev: Choice) -> Choice {
    var best = Choice(-1.0, n);
    for (var e = 0u; e < n; e++) {
        let pe = exp((*logits)[e] - softmax.max_logit) / softmax.sum;
        let after_prev = pe < prev.p || (pe == prev.p && e > prev.e);
        if after_prev && pe > best.p {
            best = Choice(pe, e);
        }
    }
    return best;
}
