// fill.wgsl: deterministic pseudo-random weights, generated on the GPU so a full-size synthetic model needs no
// host memory (benchmarks). Element e gets mean + scale * u, u uniform in [-1, 1) from a hash of (seed, e).
// out: `words` u32 words holding W_DTYPE elements (f32: one per word; f16 / bf16: two per word), or quantized
// rows of `cols` columns (prelude.wgsl): each row's scale words set so the codes span mean +- scale, its code
// words random bits. Grid: ceil(words / WG) workgroups, linear.

struct FillParams {
    words: u32,
    seed: u32,
    mean: f32,
    scale: f32,
    cols: u32, // quantized types: columns per row
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: FillParams;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

// PCG-style integer hash.
fn hash(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn value(e: u32) -> f32 {
    let u = f32(hash(e ^ hash(p.seed)) >> 8u) / 8388608.0 - 1.0;
    return p.mean + p.scale * u;
}

// f32 -> IEEE half bits, rounding toward zero; values below the half range become zero.
fn f32_to_f16_bits(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    let sign = (bits >> 16u) & 0x8000u;
    let exponent = i32((bits >> 23u) & 0xffu) - 127 + 15;
    if exponent <= 0 {
        return sign;
    }
    if exponent >= 31 {
        return sign | 0x7c00u;
    }
    return sign | (u32(exponent) << 10u) | ((bits >> 13u) & 0x3ffu);
}

fn half_bits(v: f32) -> u32 {
    if W_DTYPE == DTYPE_F16 {
        return f32_to_f16_bits(v);
    }
    return bitcast<u32>(v) >> 16u;
}

// Word i of a quantized matrix: a scale word (codes times it span mean +- scale) or random codes.
fn quantized_word(i: u32) -> u32 {
    if i % quant_row_words(p.cols) >= quant_scale_words(p.cols) {
        return hash(i ^ hash(p.seed));
    }
    if W_DTYPE == DTYPE_Q8 {
        return bitcast<u32>(p.scale / 127.0);
    }
    if q4_has_min() {
        return f32_to_f16_bits(2.0 * p.scale / 15.0) | (f32_to_f16_bits(p.mean - p.scale) << 16u);
    }
    let half = f32_to_f16_bits(p.scale / 8.0);
    return half | (half << 16u);
}

@compute @workgroup_size(WG)
fn fill_random(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
    if i >= p.words {
        return;
    }
    if W_DTYPE > DTYPE_BF16 {
        out[i] = quantized_word(i);
    } else if W_DTYPE == DTYPE_F32 {
        out[i] = bitcast<u32>(value(i));
    } else {
        out[i] = half_bits(value(2u * i)) | (half_bits(value(2u * i + 1u)) << 16u);
    }
}
