// embed.wgsl: y[t, :] = table[ids[t], :], the embedding lookup, converting the table's W_DTYPE to f32.
// Reference: reference::embed. A table too large for one binding is split by rows: this dispatch holds rows
// row0 .. row0 + rows and writes only the tokens whose id falls there (every id falls in exactly one part).
// table: [rows, dim] packed as W_DTYPE; ids: [t] u32 (checked < vocab on the host); y: [t, dim] f32.
// Grid: ceil(t * dim / WG) workgroups, linear.

struct EmbedParams {
    t: u32,
    dim: u32,
    rows: u32,
    row0: u32,
}

@group(0) @binding(0) var<uniform> p: EmbedParams;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn embed(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = linear_workgroup(workgroup_id, num_workgroups) * WG + lane;
    if i >= p.t * p.dim {
        return;
    }
    let id = ids[i / p.dim];
    if id < p.row0 || id - p.row0 >= p.rows {
        return;
    }
    let e = (id - p.row0) * p.dim + i % p.dim;
    y[i] = unpack_weight(table[weight_word(e)], e);
}
