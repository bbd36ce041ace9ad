// moe_router.wgsl: a decode step's MoE router in one dispatch, for few tokens:
//
//   normed    = rms_norm(x[r], norm_w)          // the pre-FFN norm, written out for the expert kernels
//   logits[r] = normed router^T                  // [E]
//   ids, weights = top-k of softmax(logits[r])   // as moe_route.wgsl (prelude's softmax_of, next_choice)
//
// Reference: reference::rms_norm, reference::matmul, reference::moe::route. One workgroup of 256 invocations
// per token: together they take the row's sum of squares and write the normalised row; then 16 (or, past 16
// experts, 8) invocations per expert take its router row by words (the prelude's word_dot); invocation 0
// routes. Three dispatches' work (rms_norm, the router matvec, route) for a token's 2 x H reads of x and E x H
// of the router. A workgroup of 64 invocations each holding every expert's partial sum took 640 us per token
// on an H200 at Jamba-1.5-Mini's width (H 4096, 16 experts): one workgroup is all the parallelism there is.
//
// router_lanes, for CPU adapters (`Tuning::row_threads` 1, where each barrier is a context switch and a
// workgroup of 256 is 32 turns of 8 lanes): MAX_N invocations per token and one barrier. Each takes the row's
// sum of squares itself (every one reads the same x), writes every MAX_N-th column of normed, and invocation e
// sums expert e's whole router row; invocation 0 routes. Lavapipe, the default model's 4 routers: 0.45-0.52 ->
// 0.18-0.23 ms a decode step; at 32 sequences 3.3-4.1 -> 1.1-1.2 ms.
//
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

// Experts of the router, fixed when the pipeline is built.
override N_EXPERTS: u32 = 16u;
// The most experts this kernel handles (MAX_FUSED_EXPERTS in src/kernels/moe.rs).
const MAX_N: u32 = 32u;
// A workgroup: 16 invocations per expert up to 16 experts, 8 up to 32.
const ROUTER_WG: u32 = 256u;
// Words of its router row an invocation loads per round, all before it uses any. One workgroup is all the
// parallelism there is, so memory latency is hidden only by each invocation's loads in flight: with one word a
// round (one load in flight) the router took 106 us a token on an H200 at H 4096. The sums are taken in the same
// order whatever it is.
const ROUND: u32 = 8u;

var<workgroup> partial: array<f32, ROUTER_WG>;
var<workgroup> expert_logit: array<f32, MAX_N>;

// The sum of `value` over the workgroup, in every invocation (a tree through workgroup memory).
fn workgroup_sum(lane: u32, value: f32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var stride = ROUTER_WG / 2u; stride > 0u; stride >>= 1u) {
        if lane < stride {
            partial[lane] += partial[lane + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Columns first, first + stride, ... of the normalised row into normed.
fn write_normed(x0: u32, scale: f32, first: u32, stride: u32) {
    for (var c = first; c < p.hidden; c += stride) {
        normed[x0 + c] = norm_w[c] * (x[x0 + c] * scale);
    }
}

// Expert e's logit summed over columns first, first + stride, ... a weight at a time (rows that do not start on
// words), x normalised as it is read.
fn expert_dot_by_weights(e: u32, x0: u32, scale: f32, first: u32, stride: u32) -> f32 {
    var dot = 0.0;
    for (var c = first; c < p.hidden; c += stride) {
        let wr = weight_ref(e, c, p.hidden);
        dot += norm_w[c] * (x[x0 + c] * scale) * weight_value(wr, w[wr.word], w[wr.scale_word]);
    }
    return dot;
}

// norm_w[c] * (x[x0 + c] * scale), 0 past the row (loads clamped).
fn normalised_at(x0: u32, c: u32, scale: f32) -> f32 {
    let at = min(c, p.hidden - 1u);
    return select(0.0, norm_w[at] * (x[x0 + at] * scale), c < p.hidden);
}

// The normalised row at the columns of word i of a router row (the prelude's X8).
fn normalised_word(x0: u32, i: u32, scale: f32) -> X8 {
    let per = word_weights();
    let c = i * per;
    var xs: X8;
    xs.a.x = normalised_at(x0, c, scale);
    if per >= 2u {
        xs.a.y = normalised_at(x0, c + 1u, scale);
    }
    if per >= 4u {
        xs.a.z = normalised_at(x0, c + 2u, scale);
        xs.a.w = normalised_at(x0, c + 3u, scale);
    }
    if per == 8u {
        xs.b = vec4(normalised_at(x0, c + 4u, scale), normalised_at(x0, c + 5u, scale),
            normalised_at(x0, c + 6u, scale), normalised_at(x0, c + 7u, scale));
    }
    return xs;
}

@compute @workgroup_size(ROUTER_WG)
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

    // rms_norm: the sum of squares over the row, by the workgroup; normed = norm_w * (x * scale).
    var own = 0.0;
    for (var c = lane; c < p.hidden; c += ROUTER_WG) {
        own += x[x0 + c] * x[x0 + c];
    }
    let scale = 1.0 / sqrt(workgroup_sum(lane, own) / f32(p.hidden) + p.eps);
    write_normed(x0, scale, lane, ROUTER_WG);

    // Expert e's logit by its `per` invocations, each taking every per-th word of the router's row e (or every
    // per-th weight, where rows do not start on words), x normalised as it is read.
    let per = select(8u, 16u, N_EXPERTS <= 16u);
    let e = lane / per;
    var dot = 0.0;
    if e < N_EXPERTS && rows_by_word(p.hidden) {
        let row = word_row(e, p.hidden);
        for (var i0 = lane % per; i0 < row.words; i0 += per * ROUND) {
            // Words past the row's last are loaded clamped into it and meet x of 0 (normalised_word).
            var words: array<vec2<u32>, ROUND>;
            var xs: array<X8, ROUND>;
            for (var u = 0u; u < ROUND; u++) {
                let i = min(i0 + u * per, row.words - 1u);
                words[u] = vec2(w[row.first + i], w[word_scale(row, i)]);
                xs[u] = normalised_word(x0, i0 + u * per, scale);
            }
            for (var u = 0u; u < ROUND; u++) {
                dot += word_dot(words[u].x, words[u].y, min(i0 + u * per, row.words - 1u), xs[u]);
            }
        }
    } else if e < N_EXPERTS {
        dot = expert_dot_by_weights(e, x0, scale, lane % per, per);
    }
    partial[lane] = dot;
    workgroupBarrier();
    if lane % per == 0u && e < N_EXPERTS {
        var sum = 0.0;
        for (var i = 0u; i < per; i++) {
            sum += partial[lane + i];
        }
        expert_logit[e] = sum;
        logits[r * N_EXPERTS + e] = sum;
    }
    workgroupBarrier();
    if lane == 0u {
        route_token(r);
    }
}

// Token r's top-k experts and their weights from the logits in expert_logit (as moe_route.wgsl chooses them).
fn route_token(r: u32) {
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

@compute @workgroup_size(MAX_N)
fn router_lanes(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let r = linear_workgroup(workgroup_id, num_workgroups);
    if r >= p.t {
        return; // the whole workgroup
    }
    let x0 = r * p.hidden;
    var sum_sq = 0.0;
    for (var c = 0u; c < p.hidden; c++) {
        sum_sq += x[x0 + c] * x[x0 + c];
    }
    let scale = 1.0 / sqrt(sum_sq / f32(p.hidden) + p.eps);
    write_normed(x0, scale, lane, MAX_N);
    let e = lane;
    if e < N_EXPERTS {
        var dot = 0.0;
        if rows_by_word(p.hidden) {
            let row = word_row(e, p.hidden);
            for (var i = 0u; i < row.words; i++) {
                dot += word_dot(w[row.first + i], w[word_scale(row, i)], i, normalised_word(x0, i, scale));
            }
        } else {
            dot = expert_dot_by_weights(e, x0, scale, 0u, 1u);
        }
        expert_logit[e] = dot;
        logits[r * N_EXPERTS + e] = dot;
    }
    workgroupBarrier();
    if lane == 0u {
        route_token(r);
    }
}
