// lanes.wgsl: values passed between the invocations of a subgroup, for the kernels that read x in turns
// (X_LANES in prelude.wgsl). Placed after the prelude in every shader where the device has subgroup operations;
// lanes_none.wgsl stands in where it has none (X_LANES is 0 there, so nothing calls them).

// This invocation's index in its subgroup: how many of the subgroup come before it. The whole subgroup must call
// it together (uniform control flow, every invocation active), as the readers in turns do.
fn subgroup_lane() -> u32 {
    return subgroupExclusiveAdd(1u);
}

// v as invocation `source` of the subgroup holds it (`source` the same in every invocation).
fn lane_value(v: vec4<f32>, source: u32) -> vec4<f32> {
    return subgroupShuffle(v, source);
}
