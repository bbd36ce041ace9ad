// moe_group.wgsl: the routed slots grouped by expert, for the tiled expert matmuls of prefill (a counting sort).
// Reference: the `routed` lists of reference::forward's moe_ffn (per expert, its slots in token order).
// ids: [slots] u32, slot s = token * top_k + j holding token's j-th expert (ids >= n_experts are skipped).
// groups: [n_experts + 1 + slots] u32, written here:
//   groups[e]                    the first grouped row of expert e (an exclusive prefix sum of the counts),
//   groups[n_experts]            the number of routed slots,
//   groups[n_experts + 1 + row]  the slot at grouped row `row`: expert e's slots are rows groups[e]..groups[e + 1],
//                                in increasing slot order (a stable sort, so the layout is deterministic).
// Grid: one workgroup (slots is T * top_k, a few thousand at most per chunk).

const MAX_EXPERTS: u32 = 256u;

struct GroupParams {
    slots: u32,
    n_experts: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: GroupParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> groups: array<u32>;

var<workgroup> expert_count: array<atomic<u32>, MAX_EXPERTS>;
var<workgroup> next_row: array<u32, MAX_EXPERTS>; // [n_experts]: the next free grouped row of each expert
var<workgroup> chunk_expert: array<u32, WG>; // the experts of the WG slots being placed

@compute @workgroup_size(WG)
fn group(@builtin(local_invocation_index) lane: u32) {
    let n_experts = min(p.n_experts, MAX_EXPERTS);
    for (var e = lane; e < n_experts; e += WG) {
        atomicStore(&expert_count[e], 0u);
    }
    workgroupBarrier();
    // Histogram: integer atomics, so the counts do not depend on the order of the adds.
    for (var s = lane; s < p.slots; s += WG) {
        let e = ids[s];
        if e < n_experts {
            atomicAdd(&expert_count[e], 1u);
        }
    }
    workgroupBarrier();
    if lane == 0u {
        var total = 0u;
        for (var e = 0u; e < n_experts; e++) {
            groups[e] = total;
            next_row[e] = total;
            total += atomicLoad(&expert_count[e]);
        }
        groups[n_experts] = total;
    }
    workgroupBarrier();
    // Placement, WG slots at a time: a slot's row is its expert's next free row plus the number of earlier
    // slots of this chunk routed to the same expert. The last of them moves the expert's next free row on.
    for (var base = 0u; base < p.slots; base += WG) {
        let s = base + lane;
        var e = n_experts;
        if s < p.slots {
            e = min(ids[s], n_experts);
        }
        chunk_expert[lane] = e;
        workgroupBarrier();
        var before = 0u;
        var after = 0u;
        for (var l = 0u; l < WG; l++) {
            let same = chunk_expert[l] == e;
            before += select(0u, 1u, same && l < lane);
            after += select(0u, 1u, same && l > lane);
        }
        let row = next_row[min(e, MAX_EXPERTS - 1u)] + before;
        workgroupBarrier();
        if e < n_experts {
            groups[n_experts + 1u + row] = s;
            if after == 0u {
                next_row[e] = row + 1u;
            }
        }
        workgroupBarrier();
    }
}
