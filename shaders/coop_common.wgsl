// coop_common.wgsl: what the cooperative-matrix prefill kernels share (matmul_coop.wgsl, moe_coop.wgsl): a
// workgroup of 4 subgroups of 32 over a 64 x 64 tile, k in steps of 32 staged as f16 rows, the output tile staged
// as f32 rows for the stores.

const COOP_WG: u32 = 128u;
const STEP_K: u32 = 32u;
// f16 per staged row: 32 and 8 of padding, 80 bytes (matrix loads want rows on 16 bytes).
const PITCH: u32 = 40u;
// f32 per row of the staged output tile, 272 bytes.
const Y_PITCH: u32 = 68u;
const F16_MAX: f32 = 65504.0;

// v rounded to f16 for staging, values beyond the largest f16 saturating there.
fn to_f16(v: f32) -> f16 {
    return f16(clamp(v, -F16_MAX, F16_MAX));
}
