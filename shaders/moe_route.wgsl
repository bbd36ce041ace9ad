// moe_route.wgsl: the MoE router after its matmul: p = softmax(logits) over ALL experts in f32, then the top-k
// experts by p, largest first, ties to the lower expert index; the chosen p are NOT renormalised.
// Reference: reference::moe::route.
// logits: [>= t, n_experts] f32, row-major; ids: [>= t * top_k] u32 and weights: [>= t * top_k] f32, token r's
// choices at r * top_k + j. A row whose probabilities are NaN gets id n_experts (no expert) and weight 0, which
// every later MoE kernel skips.
// Grid: ceil(t / WG) workgroups, linear; one invocation per token (E is small: 16 in Jamba).

struct RouteParams {
    t: u32,
    n_experts: u32,
    top_k: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: RouteParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;

@compute @workgroup_size(WG)
fn route(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let r = linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
    if r >= p.t {
        return;
    }
    let row = r * p.n_experts;
    var logit: array<f32, MAX_ROUTED_EXPERTS>;
    for (var e = 0u; e < p.n_experts; e++) {
        logit[e] = logits[row + e];
    }
    // prelude.wgsl's softmax and top-k, as moe_router.wgsl's.
    let softmax = softmax_of(&logit, p.n_experts);
    var choice = Choice(2.0, 0u);
    for (var j = 0u; j < p.top_k; j++) {
        choice = next_choice(&logit, p.n_experts, softmax, choice);
        ids[r * p.top_k + j] = choice.e;
        weights[r * p.top_k + j] = select(0.0, choice.p, choice.e < p.n_experts);
    }
}
