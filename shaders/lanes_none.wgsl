// lanes_none.wgsl: lanes.wgsl's functions for a device without subgroup operations, where X_LANES is 0 and
// nothing calls them; they keep the shaders that would valid.

fn subgroup_lane() -> u32 {
    return 0u;
}

fn lane_value(v: vec4<f32>, source: u32) -> vec4<f32> {
    return v;
}
