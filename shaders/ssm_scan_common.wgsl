// ssm_scan_common.wgsl: the selective scan's parameters, placed after the prelude in ssm_scan.wgsl and
// ssm_scan_cpu.wgsl. ssm_scan.wgsl's header says what each means.

struct ScanParams {
    t: u32,
    i: u32,
    chunk_len: u32,
    chunks: u32,
    dt_stride: u32,
    dt_offset: u32,
    z_stride: u32,
    z_offset: u32,
    b_stride: u32,
    b_offset: u32,
    c_stride: u32,
    c_offset: u32,
    state_stride: u32,
    eps: f32,
    dt_rank: u32,
    // x_proj's output in parts over k (matvec.wgsl's matvec_parts), NORM_BC with DT_PROJ only: dt, b and c are
    // the sums of `parts` parts, part_stride elements apart (1 and 0: read as they are).
    parts: u32,
    part_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ScanParams;
