// moe_router.wgsl: a decode step's MoE router in one dispatch, for few tokens:
//
//   normed    = rms_norm(x[r], norm_w)          // the pre-FFN norm, written out for the expert kernels
//   logits[r] = normed router^T                  // [E]
//   ids, weights = top-k of softmax(logits[r])   // as moe_route.wgsl (prelude's softmax_of, next_choice)
//
// Reference: reference::rms_norm, reference::matmul, reference::moe::route. One workgroup per token: each
// invocation takes the columns c = lane, lane + WG, ... of the row, holds a partial dot product for every
// expert (N_EXPERTS, fixed when the pipeline is built), and the workgroup adds the partials up through
// workgroup memory, one invocation per expert; invocation 0 then routes. Three dispatches' work (rms_norm, the
// router matvec, route) for a token's 2 x H reads of x and E x H of the router.
// Layout: x[r * hidden + c], normed likewise; router w: [E, hidden] packed as W_DTYPE; logits: [>= t, E];
// ids, weights: [>= t * top_k]. Grid: t workgroups, linear.

struct RouterParams {
    t: u32,
    hidden: u32,
    top_k: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: RouterParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> norm_w: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read_write> normed: array<f32>;
@group(0) @binding(5) var<storage, read_write> logits: array<f32>;
@group(0) @binding(6) var<storage, read_write> ids: array<u32>;
@group(0) @binding(7) var<storage, read_write> weights: array<f32>;

// Experts of the router, fixed when the pipeline is built: the partial sums stay in registers.
override N_EXPERTS: u32 = 16u;
// The most experts this kernel handles (MAX_FUSED_EXPERTS in src/kernels/moe.rs).
const MAX_N: u32 = 32u;

var<workgroup> partial: array<f32, 2048>; // [N_EXPERTS][WG] (MAX_N * WG: 8 KiB, within every limit)
var<workgroup> sum_sq: array<f32, WG>;
var<workgroup> expert_logit: array<f32, MAX_N>;

@compute @workgroup_size(WG)
fn router(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let r = linear_workgroup(workgroup_id, num_workgroups);
    if r >= p.t {
        return; // the whole workgroup
    }
    let x0 = r * p.hidden;

    // rms_norm: the sum of squares over the row, by the workgroup.
    var own = 0.0;
    for (var c = lane; c < p.hidden; c += WG) {
        own += x[x0 + c] * x[x0 + c];
    }
    sum_sq[lane] = own;
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < WG; i++) {
        total += sum_sq[i];
    }
    let scale = 1.0 / sqrt(total / f32(p.hidden) + p.eps);

    // normed = norm_w * (x * scale), and every expert's partial dot product with it.
    var acc: array<f32, MAX_N>;
    for (var c = lane; c < p.hidden; c += WG) {
        let v = norm_w[c] * (x[x0 + c] * scale);
        normed[x0 + c] = v;
        for (var e = 0u; e < N_EXPERTS; e++) {
            let wr = weight_ref(e, c, p.hidden);
            acc[e] += v * weight_value(wr, w[wr.word], w[wr.scale_word]);
        }
    }
    for (var e = 0u; e < N_EXPERTS; e++) {
        partial[e * WG + lane] = acc[e];
    }
    workgroupBarrier();
    // Invocation e adds up expert e's partials, in parallel rather than N_EXPERTS x WG serial loads by one
    // invocation; then invocation 0 routes.
    if lane < N_EXPERTS {
        var dot = 0.0;
        for (var i = 0u; i < WG; i++) {
            dot += partial[lane * WG + i];
        }
        expert_logit[lane] = dot;
        logits[r * N_EXPERTS + lane] = dot;
    }
    workgroupBarrier();
    if lane != 0u {
        return;
    }
    var logit: array<f32, MAX_ROUTED_EXPERTS>;
    for (var e = 0u; e < N_EXPERTS; e++) {
        logit[e] = expert_logit[e];
    }
    let softmax = softmax_of(&logit, N_EXPERTS);
    var choice = Choice(2.0, 0u);
    for (var j = 0u; j < p.top_k; j++) {
        choice = next_choice(&logit, N_EXPERTS, softmax, choice);
        ids[r * p.top_k + j] = choice.e;
        weights[r * p.top_k + j] = select(0.0, choice.p, choice.e < N_EXPERTS);
    }
}
