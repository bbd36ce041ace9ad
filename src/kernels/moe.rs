//! moe_route.wgsl, moe_group.wgsl, moe.wgsl, moe_matvec.wgsl: the mixture-of-experts FFN on the GPU, with no CPU
//! round trip, and the dense SwiGLU MLP. Reference: reference::moe::route and reference::forward's moe_ffn /
//! mlp_forward.
//!
//! The MoE block after its router matmul (logits = x router^T, [T, E]):
//! 1. [`route`]: softmax over all experts and top-k -> ids [T, k], weights [T, k].
//! 2. prefill only: the routed slots grouped by expert (counts, offsets and a slot list per expert, on the GPU).
//! 3. per stack of experts: silu(x gate^T) * (x up^T), then down, for the routed slots only (decode: indexed
//!    matrix-vector products that read just the chosen experts; prefill: one tiled matmul per expert over its
//!    tokens, all experts in one dispatch).
//! 4. `out += sum_j weights[r, j] * expert_{ids[r, j]}(x[r])`, summed in j order (deterministic).

use crate::gpu::{read, read_write, Binding, Context, DType, Graph, Kernel, OpId, Prefill, Tensor};
use crate::kernels::elementwise::silu_mul;
use crate::kernels::matmul::{matmul, RmsNorm};
use crate::kernels::rms_norm::rms_norm;
use crate::kernels::{
    dims2, expect_dtype, expect_len, expect_shape, matvec_launch, matvec_variants, no_variants, prefill_kernel,
    rows_whole_quads, u32_of, weight_variants, Chosen, IntoCols, MatvecLaunch, FLOAT_DTYPES, WEIGHT_DTYPES,
};
use crate::{params, shader, Error, Result};

shader!(MOE_ROUTE_SHADER, "moe_route");
shader!(MOE_ROUTER_SHADER, "moe_router");
shader!(MOE_GROUP_SHADER, "moe_group");
shader!(MOE_MATVEC_SHADER, "moe_matvec", common "moe_common", "matvec_x");
shader!(MOE_SHADER, "moe", common "moe_common", "moe_words", "moe_tiles");
shader!(MOE_CPU_SHADER, "moe_cpu", common "moe_common", "cpu_blocks");
shader!(MOE_COOP_SHADER, "moe_coop", common "moe_common", "moe_words", "moe_tiles", "coop_common");

/// The most experts the grouping kernel handles (its workgroup arrays; `MAX_EXPERTS` in moe_group.wgsl).
pub const MAX_EXPERTS: usize = 256;

/// Rows of a prefill tile in the expert matmuls (`TILE` in moe.wgsl).
const TILE: usize = 64;

/// Rows and columns of a workgroup's block in the CPU expert kernels (8 subgroups x `ROWS`, 8 lanes x `COLS` in
/// moe_cpu.wgsl); the SwiGLU kernel's columns are half of them, each of gate and of up.
const BLOCK_ROWS: usize = 128;
const BLOCK_COLS: usize = 32;

params! {
    pub struct RouteParams {
        pub t: u32,
        pub n_experts: u32,
        pub top_k: u32,
        pub _pad0: u32,
    }
}

params! {
    pub struct GroupParams {
        pub slots: u32,
        pub n_experts: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

params! {
    pub struct MoeParams {
        pub t: u32,
        pub top_k: u32,
        pub n: u32,
        pub k: u32,
        pub first: u32,
        pub count: u32,
        pub n_experts: u32,
        pub eps: f32,
    }
}

/// Softmax over all experts and top-k.
pub static ROUTE: Kernel = Kernel {
    shader: &MOE_ROUTE_SHADER,
    entry: "route",
    params: &<RouteParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read("logits"), read_write("ids"), read_write("weights")],
    variants: no_variants,
};

params! {
    pub struct RouterParams {
        pub t: u32,
        pub hidden: u32,
        pub top_k: u32,
        pub eps: f32,
    }
}

/// The most experts [`ROUTER`] handles (`MAX_N` in moe_router.wgsl); more go through matmul and [`route`].
pub const MAX_FUSED_EXPERTS: usize = 32;

fn router_variants() -> Vec<Vec<(&'static str, f64)>> {
    let experts = [4.0, 16.0, MAX_FUSED_EXPERTS as f64];
    FLOAT_DTYPES.iter().flat_map(|d| experts.map(|e| vec![("W_DTYPE", d.shader_code()), ("N_EXPERTS", e)])).collect()
}

const ROUTER_BINDINGS: &[Binding] = &[
    read("x"),
    read("norm_w"),
    read("w"),
    read_write("normed"),
    read_write("logits"),
    read_write("ids"),
    read_write("weights"),
];

/// The pre-FFN norm, the router's matmul and [`ROUTE`] in one dispatch, one workgroup per token (decode).
pub static ROUTER: Kernel = Kernel {
    shader: &MOE_ROUTER_SHADER,
    entry: "router",
    params: &<RouterParams as crate::gpu::Params>::LAYOUT,
    bindings: ROUTER_BINDINGS,
    variants: router_variants,
};

/// [`ROUTER`] for one invocation per row (`Tuning::row_threads` 1: CPU adapters): each expert's logit summed by
/// one invocation, one barrier.
pub static ROUTER_LANES: Kernel = Kernel {
    shader: &MOE_ROUTER_SHADER,
    entry: "router_lanes",
    params: &<RouterParams as crate::gpu::Params>::LAYOUT,
    bindings: ROUTER_BINDINGS,
    variants: router_variants,
};

/// The routed slots grouped by expert (a counting sort in one workgroup).
pub static GROUP: Kernel = Kernel {
    shader: &MOE_GROUP_SHADER,
    entry: "group",
    params: &<GroupParams as crate::gpu::Params>::LAYOUT,
    bindings: &[read("ids"), read_write("groups")],
    variants: no_variants,
};

/// The expert shaders' bindings in order: every entry point's, then rms_norm's weight for swiglu_norm_matvec alone.
const EXPERT_NORM_BINDINGS: &[Binding] = &[
    read("x"),
    read("w"),
    read("w_up"),
    read("ids"),
    read("groups"),
    read("weights"),
    read_write("y"),
    read("norm_w"),
];
const EXPERT_BINDINGS: &[Binding] = EXPERT_NORM_BINDINGS.split_at(7).0;

macro_rules! expert_kernel {
    ($(#[$meta:meta])* $name:ident, $entry:literal, $variants:expr) => {
        expert_kernel!($(#[$meta])* $name, MOE_SHADER, $entry, $variants);
    };
    ($(#[$meta:meta])* $name:ident, $shader:ident, $entry:literal, $variants:expr) => {
        expert_kernel!($(#[$meta])* $name, $shader, $entry, $variants, EXPERT_BINDINGS);
    };
    ($(#[$meta:meta])* $name:ident, $shader:ident, $entry:literal, $variants:expr, $bindings:expr) => {
        $(#[$meta])*
        pub static $name: Kernel = Kernel {
            shader: &$shader,
            entry: $entry,
            params: &<MoeParams as crate::gpu::Params>::LAYOUT,
            bindings: $bindings,
            variants: $variants,
        };
    };
}

expert_kernel!(/** Decode: `act[s] = silu(x gate_e^T) * (x up_e^T)` for the expert in `ids[s]`. */
    SWIGLU_MATVEC, MOE_MATVEC_SHADER, "swiglu_matvec", matvec_variants);
expert_kernel!(
    /** Decode: SWIGLU_MATVEC of rms_norm(x, norm_w), normalising the raw rows as it reads them. */
    SWIGLU_NORM_MATVEC,
    MOE_MATVEC_SHADER,
    "swiglu_norm_matvec",
    matvec_variants,
    EXPERT_NORM_BINDINGS
);
expert_kernel!(/** Decode: `y_slots[s] = act[s] down_e^T`. */
    DOWN_MATVEC, MOE_MATVEC_SHADER, "down_matvec", matvec_variants);
expert_kernel!(/** Prefill: the SwiGLU half of every expert of a stack over its grouped rows. */
    SWIGLU_TILED, "swiglu_tiled", weight_variants);
expert_kernel!(/** Prefill: down of every expert of a stack over its grouped rows. */
    DOWN_TILED, "down_tiled", weight_variants);
expert_kernel!(/** Prefill on CPU adapters: SwiGLU_TILED's values, in register blocks with x shared per subgroup. */
    SWIGLU_BLOCKED, MOE_CPU_SHADER, "swiglu_blocked", blocked_variants);
expert_kernel!(/** Prefill on matrix units ([`Prefill::Coop`]): SWIGLU_TILED's values from f16 fragments (GATED 1). */
    SWIGLU_COOP, MOE_COOP_SHADER, "expert_coop", gated_variants);
expert_kernel!(/** Prefill on matrix units ([`Prefill::Coop`]): DOWN_TILED's values from f16 fragments (GATED 0). */
    DOWN_COOP, MOE_COOP_SHADER, "expert_coop", down_variants);

/// [`SWIGLU_COOP`]'s and [`DOWN_COOP`]'s: every weight type, the half of the expert fixed.
fn gated_variants() -> Vec<Vec<(&'static str, f64)>> {
    weight_variants().into_iter().map(|v| [v, vec![("GATED", 1.0)]].concat()).collect()
}

fn down_variants() -> Vec<Vec<(&'static str, f64)>> {
    weight_variants().into_iter().map(|v| [v, vec![("GATED", 0.0)]].concat()).collect()
}
expert_kernel!(/** Prefill on CPU adapters: DOWN_TILED's values, in register blocks with x shared per subgroup. */
    DOWN_BLOCKED, MOE_CPU_SHADER, "down_blocked", blocked_variants);

/// [`SWIGLU_BLOCKED`]'s and [`DOWN_BLOCKED`]'s: every weight type by words, and the float ones by quads.
fn blocked_variants() -> Vec<Vec<(&'static str, f64)>> {
    let mut out = Vec::new();
    for dtype in crate::kernels::WEIGHT_DTYPES {
        for quads in [false, true].into_iter().filter(|&q| !q || !dtype.is_quantized()) {
            out.push(vec![("W_DTYPE", dtype.shader_code()), ("QUADS", quads as u32 as f64)]);
        }
    }
    out
}
expert_kernel!(
    /** Decode with every expert in one stack: out += the routing-weighted sum of `act[s] down_e^T`. */
    DOWN_COMBINE_MATVEC,
    MOE_MATVEC_SHADER,
    "down_combine_matvec",
    matvec_variants
);
expert_kernel!(/** out += the routing-weighted sum of each token's expert outputs. */ COMBINE, "combine", no_variants);

/// ids, weights = top-k of softmax(logits) per token: the MoE router after its matmul.
/// logits: [>= t, E] f32; ids: [>= t * top_k] u32; weights: [>= t * top_k] f32 (token r's j-th choice at
/// r * top_k + j, largest probability first, ties to the lower expert index, not renormalised).
pub fn route(g: &mut Graph, logits: &Tensor, t: usize, top_k: usize, ids: &Tensor, weights: &Tensor) -> Result<OpId> {
    let op = "moe route";
    expect_dtype(op, logits, &[DType::F32])?;
    expect_dtype(op, ids, &[DType::U32])?;
    expect_dtype(op, weights, &[DType::F32])?;
    let [rows, n_experts] = dims2(logits)?;
    if t == 0 || t > rows {
        return Err(Error::shape(op, format!("t = {t} tokens, `{}` holds {rows} rows of logits", logits.label())));
    }
    if top_k == 0 || top_k > n_experts {
        return Err(Error::shape(op, format!("top_k = {top_k} of {n_experts} experts")));
    }
    expect_len(op, ids, t * top_k)?;
    expect_len(op, weights, t * top_k)?;
    let params = RouteParams {
        t: u32_of(op, "t", t)?,
        n_experts: u32_of(op, "n_experts", n_experts)?,
        top_k: u32_of(op, "top_k", top_k)?,
        _pad0: 0,
    };
    let grid = g.linear_grid(t.div_ceil(64) as u64)?;
    g.dispatch(&ROUTE, &[], &params, &[logits, ids, weights], grid)
}

/// A decode step's router in one dispatch: normed = rms_norm(x, norm_w, eps) for the first `t` rows (written for
/// the expert kernels), logits = normed router^T, then [`route`]'s ids and weights. The values equal rms_norm,
/// matmul and route's up to the order of the float sums. Few tokens only: one workgroup per token, whose
/// invocations share each expert's row (GPUs) or take one expert each (`Tuning::row_threads` 1).
///
/// x, normed: `[>= t, H]` f32; norm_w: `[H]` f32; router: `[E, H]` float (E <= [`MAX_FUSED_EXPERTS`]);
/// logits: [>= t, E] f32; ids, weights: [>= t * top_k].
#[allow(clippy::too_many_arguments)]
pub fn norm_route(
    g: &mut Graph,
    x: &Tensor,
    t: usize,
    norm_w: &Tensor,
    eps: f32,
    router: &Tensor,
    normed: &Tensor,
    logits: &Tensor,
    top_k: usize,
    ids: &Tensor,
    weights: &Tensor,
) -> Result<OpId> {
    let op = "moe norm_route";
    let [n_experts, hidden] = dims2(router)?;
    expect_dtype(op, router, &FLOAT_DTYPES)?;
    for tensor in [x, norm_w, normed, logits, weights] {
        expect_dtype(op, tensor, &[DType::F32])?;
    }
    expect_dtype(op, ids, &[DType::U32])?;
    if n_experts == 0 || n_experts > MAX_FUSED_EXPERTS || top_k == 0 || top_k > n_experts {
        let message = format!("top_k {top_k} of {n_experts} experts; this kernel takes 1..={MAX_FUSED_EXPERTS}");
        return Err(Error::shape(op, message));
    }
    check_x(op, x, t, hidden)?;
    check_x(op, normed, t, hidden)?;
    expect_shape(op, norm_w, &[hidden])?;
    let [rows, width] = dims2(logits)?;
    if rows < t || width != n_experts {
        return Err(Error::shape(op, format!("logits `{}` is [{rows}, {width}], expected [>= {t}, {n_experts}]", logits.label())));
    }
    expect_len(op, ids, t * top_k)?;
    expect_len(op, weights, t * top_k)?;
    let params = RouterParams {
        t: u32_of(op, "t", t)?,
        hidden: u32_of(op, "hidden", hidden)?,
        top_k: u32_of(op, "top_k", top_k)?,
        eps,
    };
    u32_of(op, "t * hidden", t * hidden)?;
    let constants = [("W_DTYPE", router.dtype().shader_code()), ("N_EXPERTS", n_experts as f64)];
    let grid = g.linear_grid(t as u64)?;
    let kernel = if g.tuning.row_threads == 1 { &ROUTER_LANES } else { &ROUTER };
    g.dispatch(kernel, &constants, &params, &[x, norm_w, router, normed, logits, ids, weights], grid)
}

/// Experts `first..first + count` of a layer, stacked in three tensors (f32, f16 or bf16, all three alike).
/// A layer's experts are one stack, or several when one would exceed the device's storage binding size.
#[derive(Clone, Debug)]
pub struct ExpertStack {
    /// The layer-wide index of the stack's first expert.
    pub first: usize,
    pub count: usize,
    pub gate: Tensor, // [count, I, H]
    pub up: Tensor,   // [count, I, H]
    pub down: Tensor, // [count, H, I]
}

impl ExpertStack {
    /// Fails unless the stack holds `count` experts of hidden size `hidden` and intermediate size `inter`.
    fn check(&self, op: &str, hidden: usize, inter: usize) -> Result<()> {
        let dtype = self.gate.dtype();
        for (w, shape) in [
            (&self.gate, [self.count, inter, hidden]),
            (&self.up, [self.count, inter, hidden]),
            (&self.down, [self.count, hidden, inter]),
        ] {
            expect_dtype(op, w, &WEIGHT_DTYPES)?;
            if w.shape() != shape || w.dtype() != dtype {
                return Err(Error::shape(
                    op,
                    format!(
                        "expert stack {}..{}: `{}` is {:?} {:?}, expected {shape:?} {dtype:?}",
                        self.first,
                        self.first + self.count,
                        w.label(),
                        w.shape(),
                        w.dtype()
                    ),
                ));
            }
        }
        u32_of(op, "elements of an expert stack", self.count * inter * hidden).map(|_| ())
    }
}

/// Every intermediate buffer of the MoE FFN and the dense MLP, allocated once for the longest chunk.
pub struct MoeScratch {
    max_t: usize,
    hidden: usize,
    intermediate: usize,
    n_experts: usize,
    top_k: usize,
    act: Tensor,     // [max_t * max(top_k, 1), I]: silu(gate) * up per routed slot; the dense MLP's gate
    up: Tensor,      // [max_t, I]: the dense MLP's up projection
    y_slots: Tensor, // [max_t * top_k, H]: each routed slot's expert output
    groups: Tensor,  // [E + 1 + max_t * top_k] u32: see moe_group.wgsl
    /// The dense MLP's decode step as a mixture of one expert: [max_t] u32 zeros (every token's expert 0)
    /// and [max_t] f32 ones (its weight).
    dense_ids: Tensor,
    dense_weights: Tensor,
}

impl MoeScratch {
    pub fn new(
        ctx: &Context,
        max_t: usize,
        hidden: usize,
        intermediate: usize,
        n_experts: usize,
        top_k: usize,
    ) -> Result<MoeScratch> {
        let op = "MoeScratch";
        if max_t == 0 || hidden == 0 || intermediate == 0 || top_k > n_experts || n_experts > MAX_EXPERTS {
            return Err(Error::shape(
                op,
                format!(
                    "max_t {max_t}, hidden {hidden}, intermediate {intermediate}, top_k {top_k} of {n_experts} \
                     experts: need sizes >= 1 and top_k <= experts <= {MAX_EXPERTS}"
                ),
            ));
        }
        let slots = max_t * top_k;
        u32_of(op, "routed slots x width", slots * hidden.max(intermediate))?;
        Ok(MoeScratch {
            max_t,
            hidden,
            intermediate,
            n_experts,
            top_k,
            act: ctx.zeros("moe act", &[max_t * top_k.max(1), intermediate], DType::F32)?,
            up: ctx.zeros("mlp up", &[max_t, intermediate], DType::F32)?,
            y_slots: ctx.zeros("moe y_slots", &[slots.max(1), hidden], DType::F32)?,
            groups: ctx.zeros("moe groups", &[n_experts + 1 + slots], DType::U32)?,
            dense_ids: ctx.zeros("mlp expert ids", &[max_t], DType::U32)?,
            dense_weights: ctx.upload_f32("mlp expert weights", &[max_t], &vec![1.0; max_t])?,
        })
    }

    /// Fails unless a chunk of `t` tokens fits this scratch.
    fn check(&self, op: &str, t: usize, hidden: usize, intermediate: usize) -> Result<()> {
        if t == 0 || t > self.max_t || hidden != self.hidden || intermediate != self.intermediate {
            return Err(Error::shape(
                op,
                format!(
                    "t = {t}, H = {hidden}, I = {intermediate}, but the scratch was made for t in 1..={}, H = {}, I = {}",
                    self.max_t, self.hidden, self.intermediate
                ),
            ));
        }
        Ok(())
    }
}

/// `out += sum_j weights[r, j] * expert_{ids[r, j]}(x[r])` for the first `t` rows, expert(x) = down(silu(gate(x)) *
/// up(x)). x: [>= t, H] (the normalised input); out: [>= t, H] (the residual stream); ids, weights: from
/// [`route`]. Decode-sized chunks (see [`Tuning::moe_tiled`](crate::gpu::Tuning::moe_tiled)) read only the
/// chosen experts' weights; longer ones group the tokens by expert on the GPU and run one tiled matmul per expert.
#[allow(clippy::too_many_arguments)]
pub fn moe_ffn(
    g: &mut Graph,
    x: &Tensor,
    t: usize,
    experts: &[ExpertStack],
    ids: &Tensor,
    weights: &Tensor,
    top_k: usize,
    scratch: &MoeScratch,
    out: &Tensor,
) -> Result<()> {
    let held: usize = experts.iter().map(|s| s.count).sum();
    if held != scratch.n_experts {
        return Err(Error::shape("moe_ffn", format!("{held} experts; the scratch was made for {}", scratch.n_experts)));
    }
    if let [stack] = experts {
        if !g.tuning.moe_tiled(t) {
            // Decode with every expert in one stack: the down projection and the weighted sum in one dispatch.
            return moe_decode_one_stack(g, x, None, t, stack, ids, weights, top_k, scratch, out);
        }
    }
    let n_experts = moe_experts(g, x, t, experts, ids, weights, top_k, scratch)?;
    moe_combine(g, t, ids, weights, top_k, n_experts, scratch, out)
}

/// [`moe_ffn`]'s decode step when one stack holds every expert: SwiGLU per slot, then down and combine fused
/// (the same sums in the same order as down_matvec + combine). With `norm` (checked by the caller), x holds the
/// raw rows and the SwiGLU reads rms_norm(x, norm) instead.
#[allow(clippy::too_many_arguments)]
fn moe_decode_one_stack(
    g: &mut Graph,
    x: &Tensor,
    norm: Option<RmsNorm>,
    t: usize,
    stack: &ExpertStack,
    ids: &Tensor,
    weights: &Tensor,
    top_k: usize,
    scratch: &MoeScratch,
    out: &Tensor,
) -> Result<()> {
    let op = "moe_ffn";
    let [_, hidden] = dims2(x)?;
    let inter = stack.gate.shape().get(1).copied().unwrap_or(0);
    let n_experts = check_stacks(op, std::slice::from_ref(stack), hidden, inter)?;
    scratch.check(op, t, hidden, inter)?;
    if top_k == 0 || top_k > scratch.top_k.max(1) {
        return Err(Error::shape(op, format!("top_k {top_k}; the scratch was made for top_k <= {}", scratch.top_k)));
    }
    check_x(op, x, t, hidden)?;
    check_x(op, out, t, hidden)?;
    check_routing(op, ids, weights, t * top_k)?;
    let base = MoeParams {
        t: u32_of(op, "t", t)?,
        top_k: u32_of(op, "top_k", top_k)?,
        n_experts: u32_of(op, "n_experts", n_experts)?,
        first: 0,
        count: u32_of(op, "experts", stack.count)?,
        ..Default::default()
    };
    let s = scratch;
    let swiglu = MoeParams { n: inter as u32, k: hidden as u32, ..base };
    let MatvecLaunch { constants, grid, .. } = matvec_launch(g, &stack.gate, t * top_k, inter, hidden % 4 == 0)?;
    let bind = [x, &stack.gate, &stack.up, ids, &s.groups, weights, &s.act];
    match norm {
        None => g.dispatch(&SWIGLU_MATVEC, &constants, &swiglu, &bind, grid)?,
        Some(norm) => {
            let swiglu = MoeParams { eps: norm.eps, ..swiglu };
            let bind = [x, &stack.gate, &stack.up, ids, &s.groups, weights, &s.act, norm.weight];
            g.dispatch(&SWIGLU_NORM_MATVEC, &constants, &swiglu, &bind, grid)?
        }
    };
    let down = MoeParams { n: hidden as u32, k: inter as u32, ..base };
    let MatvecLaunch { constants, grid, .. } = matvec_launch(g, &stack.down, t, hidden, inter % 4 == 0)?;
    let bind = [&s.act, &stack.down, &stack.down, ids, &s.groups, weights, out];
    g.dispatch(&DOWN_COMBINE_MATVEC, &constants, &down, &bind, grid)?;
    Ok(())
}

/// The expert half of [`moe_ffn`]: each routed slot's expert output into the scratch's y_slots, for the slots whose
/// id names an expert of `experts` (ids past the last expert are skipped: their y_slots rows are left as they
/// were). Returns how many experts the stacks hold. Expert streaming runs this once per group of resident experts,
/// with ids remapped to pool slots, then [`moe_combine`] once with the real ids.
#[allow(clippy::too_many_arguments)]
pub fn moe_experts(
    g: &mut Graph,
    x: &Tensor,
    t: usize,
    experts: &[ExpertStack],
    ids: &Tensor,
    weights: &Tensor,
    top_k: usize,
    scratch: &MoeScratch,
) -> Result<usize> {
    let op = "moe_experts";
    let [_, hidden] = dims2(x)?;
    let Some(inter) = experts.first().map(|s| s.gate.shape().get(1).copied().unwrap_or(0)) else {
        return Err(Error::shape(op, "no expert stacks"));
    };
    let n_experts = check_stacks(op, experts, hidden, inter)?;
    scratch.check(op, t, hidden, inter)?;
    if n_experts > scratch.n_experts || top_k == 0 || top_k > scratch.top_k {
        return Err(Error::shape(
            op,
            format!(
                "{n_experts} experts, top_k {top_k}; the scratch was made for <= {} experts, top_k <= {}",
                scratch.n_experts, scratch.top_k
            ),
        ));
    }
    check_x(op, x, t, hidden)?;
    check_routing(op, ids, weights, t * top_k)?;

    let slots = t * top_k;
    let base = MoeParams {
        t: u32_of(op, "t", t)?,
        top_k: u32_of(op, "top_k", top_k)?,
        n_experts: u32_of(op, "n_experts", n_experts)?,
        ..Default::default()
    };
    let s = scratch;
    let decode = !g.tuning.moe_tiled(t);
    if !decode {
        let params = GroupParams { slots: base.t * base.top_k, n_experts: base.n_experts, ..Default::default() };
        g.dispatch(&GROUP, &[], &params, &[ids, &s.groups], [1, 1, 1])?;
    }
    for stack in experts {
        let stack_params = MoeParams { first: stack.first as u32, count: stack.count as u32, ..base };
        let swiglu = MoeParams { n: inter as u32, k: hidden as u32, ..stack_params };
        let down = MoeParams { n: hidden as u32, k: inter as u32, ..stack_params };
        let swiglu_bind = [x, &stack.gate, &stack.up, ids, &s.groups, weights, &s.act];
        let down_bind = [&s.act, &stack.down, &stack.down, ids, &s.groups, weights, &s.y_slots];
        if decode {
            let MatvecLaunch { constants, grid, .. } = matvec_launch(g, &stack.gate, slots, inter, hidden % 4 == 0)?;
            g.dispatch(&SWIGLU_MATVEC, &constants, &swiglu, &swiglu_bind, grid)?;
            let MatvecLaunch { constants, grid, .. } = matvec_launch(g, &stack.down, slots, hidden, inter % 4 == 0)?;
            g.dispatch(&DOWN_MATVEC, &constants, &down, &down_bind, grid)?;
        } else {
            let (kernel, constants, grid) = expert_prefill(g, stack, t, hidden, inter, true)?;
            g.dispatch(kernel, &constants, &swiglu, &swiglu_bind, grid)?;
            let (kernel, constants, grid) = expert_prefill(g, stack, t, inter, hidden, false)?;
            g.dispatch(kernel, &constants, &down, &down_bind, grid)?;
        }
    }
    Ok(n_experts)
}

/// The prefill kernel of one half of a stack's experts over `t` rows (`gated`: SwiGLU, else down), its override
/// constants and its grid: rows of `k` weights (prefill_kernel chooses by them), `n` outputs, and the worst case,
/// every row routed to each expert of the stack (empty tiles and blocks exit at once).
fn expert_prefill(
    g: &Graph,
    stack: &ExpertStack,
    t: usize,
    k: usize,
    n: usize,
    gated: bool,
) -> Result<Chosen> {
    let dtype = stack.gate.dtype();
    let constants = vec![("W_DTYPE", dtype.shader_code())];
    let tiles = |rows: usize, cols: usize| g.linear_grid((stack.count * t.div_ceil(rows) * n.div_ceil(cols)) as u64);
    // The CPU kernels' rounds by quads (moe_cpu.wgsl's QUADS): float rows of whole quads, x's rows on vec4s. Their
    // SwiGLU blocks hold half the columns, each of gate and of up.
    let quads = !dtype.is_quantized() && rows_whole_quads(dtype, k);
    let blocked = [constants.clone(), vec![("QUADS", quads as u32 as f64)]].concat();
    Ok(match (prefill_kernel(&g.tuning, dtype, k), gated) {
        (Prefill::Blocked, true) => {
            (&SWIGLU_BLOCKED, blocked, tiles(BLOCK_ROWS, if quads { BLOCK_COLS / 2 } else { BLOCK_COLS })?)
        }
        (Prefill::Blocked, false) => (&DOWN_BLOCKED, blocked, tiles(BLOCK_ROWS, BLOCK_COLS)?),
        (Prefill::Coop, true) => (&SWIGLU_COOP, [constants, vec![("GATED", 1.0)]].concat(), tiles(TILE, TILE)?),
        (Prefill::Coop, false) => (&DOWN_COOP, [constants, vec![("GATED", 0.0)]].concat(), tiles(TILE, TILE)?),
        (_, true) => (&SWIGLU_TILED, constants, tiles(TILE, TILE)?),
        (_, false) => (&DOWN_TILED, constants, tiles(TILE, TILE)?),
    })
}

/// The combining half of [`moe_ffn`]: out += sum_j weights[r, j] * y_slots[r * top_k + j] for the first `t` rows,
/// in j order, over the slots whose id is below `n_experts` (every slot, with ids from [`route`]).
#[allow(clippy::too_many_arguments)]
pub fn moe_combine(
    g: &mut Graph,
    t: usize,
    ids: &Tensor,
    weights: &Tensor,
    top_k: usize,
    n_experts: usize,
    scratch: &MoeScratch,
    out: &Tensor,
) -> Result<()> {
    let op = "moe_combine";
    let hidden = scratch.hidden;
    scratch.check(op, t, hidden, scratch.intermediate)?;
    if top_k == 0 || top_k > scratch.top_k {
        return Err(Error::shape(op, format!("top_k {top_k}; the scratch was made for top_k <= {}", scratch.top_k)));
    }
    check_x(op, out, t, hidden)?;
    check_routing(op, ids, weights, t * top_k)?;
    let combine = MoeParams {
        t: u32_of(op, "t", t)?,
        top_k: u32_of(op, "top_k", top_k)?,
        n: u32_of(op, "hidden", hidden)?,
        n_experts: u32_of(op, "n_experts", n_experts)?,
        ..Default::default()
    };
    let grid = g.linear_grid((t * hidden).div_ceil(64) as u64)?;
    // w and w_up are unused by combine: ids stands in for them.
    let s = scratch;
    g.dispatch(&COMBINE, &[], &combine, &[&s.y_slots, ids, ids, ids, &s.groups, weights, out], grid)?;
    Ok(())
}

/// Fails unless `tensor` is f32 [>= t, hidden].
fn check_x(op: &str, tensor: &Tensor, t: usize, hidden: usize) -> Result<()> {
    expect_dtype(op, tensor, &[DType::F32])?;
    let [rows, cols] = dims2(tensor)?;
    if rows < t || cols != hidden {
        return Err(Error::shape(
            op,
            format!("`{}` is {:?}, expected [>= {t}, {hidden}]", tensor.label(), tensor.shape()),
        ));
    }
    Ok(())
}

/// Fails unless ids (u32) and weights (f32) hold `slots` routed slots each.
fn check_routing(op: &str, ids: &Tensor, weights: &Tensor, slots: usize) -> Result<()> {
    expect_dtype(op, ids, &[DType::U32])?;
    expect_dtype(op, weights, &[DType::F32])?;
    expect_len(op, ids, slots)?;
    expect_len(op, weights, slots)
}

/// Checks that the stacks hold experts 0, 1, ... in order with no gap, all of one shape; returns how many.
fn check_stacks(op: &str, experts: &[ExpertStack], hidden: usize, inter: usize) -> Result<usize> {
    let mut next = 0;
    for stack in experts {
        if stack.first != next || stack.count == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "expert stack {}..{} does not follow on from expert {next}",
                    stack.first,
                    stack.first + stack.count
                ),
            ));
        }
        stack.check(op, hidden, inter)?;
        next += stack.count;
    }
    if next == 0 || next > MAX_EXPERTS {
        return Err(Error::shape(op, format!("{next} experts, expected 1..={MAX_EXPERTS}")));
    }
    Ok(next)
}

/// out += down(silu(gate(x)) * up(x)) for the first `t` rows: the dense SwiGLU MLP, through kernels::matmul (a
/// decode step's few rows: through the expert kernels, as one expert).
/// x: [>= t, H]; gate, up: [I, H]; down: [H, I]; out: [>= t, H] (the residual stream).
#[allow(clippy::too_many_arguments)]
pub fn dense_mlp(
    g: &mut Graph,
    x: &Tensor,
    t: usize,
    gate: &Tensor,
    up: &Tensor,
    down: &Tensor,
    scratch: &MoeScratch,
    out: &Tensor,
) -> Result<()> {
    let stack = dense_expert("dense_mlp", t, gate, up, down, scratch)?;
    if t < g.tuning.tiled_min_rows {
        // A decode step: the MLP is a mixture of one expert with weight 1, whose kernels compute the SwiGLU in one
        // dispatch and down in another (instead of gate, up, silu_mul and down), with the same sums.
        let (ids, weights) = (&scratch.dense_ids, &scratch.dense_weights);
        return moe_decode_one_stack(g, x, None, t, &stack, ids, weights, 1, scratch, out);
    }
    let gate_out = scratch.act.first_rows(t)?; // [t, I]
    let up_out = scratch.up.first_rows(t)?; // [t, I]
    let x = x.into_cols()?.rows(t)?;
    matmul(g, x, gate, &gate_out, false)?;
    matmul(g, x, up, &up_out, false)?;
    silu_mul(g, &gate_out, &up_out)?;
    matmul(g, &gate_out, down, out.into_cols()?.rows(t)?, true)?;
    Ok(())
}

/// out += [`dense_mlp`] of rms_norm(x, norm) for the first `t` rows: the pre-FFN norm and the MLP. A decode step
/// (t below `g.tuning.tiled_min_rows`) is two dispatches: the SwiGLU normalises x as it reads it, with rms_norm's
/// sums, then down; longer chunks store rms_norm(x) into `normed` first, then run [`dense_mlp`] over it.
/// x, normed, out: [>= t, H] f32 (x and out may be one buffer, the residual stream; normed another);
/// norm.weight: `[H]` f32; gate, up, down as in [`dense_mlp`].
#[allow(clippy::too_many_arguments)]
pub fn dense_mlp_rms_norm(
    g: &mut Graph,
    x: &Tensor,
    norm: RmsNorm,
    t: usize,
    gate: &Tensor,
    up: &Tensor,
    down: &Tensor,
    normed: &Tensor,
    scratch: &MoeScratch,
    out: &Tensor,
) -> Result<()> {
    let op = "dense_mlp_rms_norm";
    let stack = dense_expert(op, t, gate, up, down, scratch)?;
    let hidden = scratch.hidden;
    expect_dtype(op, norm.weight, &[DType::F32])?;
    expect_shape(op, norm.weight, &[hidden])?;
    check_x(op, x, t, hidden)?;
    check_x(op, out, t, hidden)?;
    if t < g.tuning.tiled_min_rows {
        let (ids, weights) = (&scratch.dense_ids, &scratch.dense_weights);
        return moe_decode_one_stack(g, x, Some(norm), t, &stack, ids, weights, 1, scratch, out);
    }
    check_x(op, normed, t, hidden)?;
    rms_norm(g, x.into_cols()?.rows(t)?, norm.weight, norm.eps, normed.into_cols()?.rows(t)?)?;
    dense_mlp(g, normed, t, gate, up, down, scratch, out)
}

/// The dense MLP's weights as a stack of one expert, once their shapes agree with each other and the scratch
/// fits `t` rows: gate, up: [I, H]; down: [H, I].
fn dense_expert(
    op: &str,
    t: usize,
    gate: &Tensor,
    up: &Tensor,
    down: &Tensor,
    scratch: &MoeScratch,
) -> Result<ExpertStack> {
    let [inter, hidden] = dims2(gate)?;
    scratch.check(op, t, hidden, inter)?;
    for (w, shape) in [(up, [inter, hidden]), (down, [hidden, inter])] {
        if dims2(w)? != shape {
            let (label, found, gate) = (w.label(), w.shape(), gate.label());
            let message = format!("`{label}` is {found:?}, expected {shape:?} (gate `{gate}` is [{inter}, {hidden}])");
            return Err(Error::shape(op, message));
        }
    }
    Ok(ExpertStack {
        first: 0,
        count: 1,
        gate: gate.reshape(&[1, inter, hidden])?,
        up: up.reshape(&[1, inter, hidden])?,
        down: down.reshape(&[1, hidden, inter])?,
    })
}
