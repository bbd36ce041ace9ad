//! The host's cost per dispatch: the CPU time to record a plan of N dispatches (parameter upload, pass, every
//! set_pipeline / set_bind_group / dispatch, finish) divided by N, for kernels that bind few and many buffers.
//! A decode step is a few hundred dispatches, so this is what the host pays per token before any GPU work.
//! Where the adapter has timestamps, also the GPU time per dispatch of the same plans, whose every dispatch
//! writes what the next one reads or writes (a barrier between each, as in a decode step) and does almost no
//! work: what a GPU spends per dispatch on launching it and waiting for the one before. `cargo bench --bench
//! dispatch`.

use jamba_wgpu::gpu::{Context, ContextOptions, DType, Graph};
use jamba_wgpu::kernels::ssm_scan::{selective_scan_with, ScanPath, ScanScratch};
use jamba_wgpu::kernels::{elementwise, matmul, Cols};

const DISPATCHES: usize = 256;

fn main() -> anyhow::Result<()> {
    let ctx = Context::new(&ContextOptions::default())?;
    println!("adapter: {} ({:?}); {DISPATCHES} dispatches per plan", ctx.info().name, ctx.info().backend);
    let z = |shape: &[usize]| ctx.zeros("t", shape, DType::F32);
    let (a, b) = (z(&[64])?, z(&[64])?);
    let (x, w, y) = (z(&[1, 64])?, z(&[64, 64])?, z(&[1, 64])?);
    let (i, n) = (64, 16);
    let (xs, dt, dt_bias, a_log, bc, d, zs, state, out) =
        (z(&[1, i])?, z(&[1, i])?, z(&[i])?, z(&[i, n])?, z(&[1, 2 * n])?, z(&[i])?, z(&[1, i])?, z(&[i, n])?, z(&[1, i])?);
    let scratch = ScanScratch::new(&ctx, 1, i, n)?;
    type Record<'a> = Box<dyn Fn(&mut Graph) -> jamba_wgpu::Result<()> + 'a>;
    let cases: [(&str, usize, Record); 3] = [
        ("silu_mul", 2, Box::new(|g| elementwise::silu_mul(g, &a, &b).map(drop))),
        ("matvec", 3, Box::new(|g| matmul::matmul(g, &x, &w, &y, false).map(drop))),
        (
            // 12 tensors and 4 stand-ins for the norms and dt_proj it is not asked to fuse
            "selective scan (decode)",
            16,
            Box::new(|g| {
                let (bs, cs) = (Cols::slice(&bc, 0, n)?, Cols::slice(&bc, n, n)?);
                selective_scan_with(g, &xs, &dt, &dt_bias, &a_log, bs, cs, &d, &zs, &state, &scratch, &out, ScanPath::Decode)
            }),
        ),
    ];
    // A decode step changes kernel at nearly every dispatch: the same two kernels taking turns.
    let mut g = Graph::new(&ctx);
    for _ in 0..DISPATCHES / 2 {
        (cases[0].2)(&mut g)?;
        (cases[1].2)(&mut g)?;
    }
    let plan = g.build()?;
    let (median, min) = per_dispatch(plan.encode_cost(&ctx, 200));
    println!("{:<24} 2-3 storage buffers: {median:.2} us per dispatch to record (fastest {min:.2})", "silu_mul, matvec in turn");
    for (name, buffers, record) in &cases {
        let mut g = Graph::new(&ctx);
        for _ in 0..DISPATCHES {
            record(&mut g)?;
        }
        let plan = g.build()?;
        let (median, min) = per_dispatch(plan.encode_cost(&ctx, 200));
        let mut line = format!("{name:<24} {buffers:>2} storage buffers: {median:.2} us per dispatch to record (fastest {min:.2})");
        if ctx.features().timestamps {
            // Each a median of 4 runs back to back in one submission (no idle GPU between them).
            let mut gpu = (0..5).map(|_| plan.time_repeated(&ctx, 4)).collect::<jamba_wgpu::Result<Vec<_>>>()?;
            gpu.sort();
            let us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / DISPATCHES as f64;
            line += &format!("; {:.2} us per dispatch on the GPU (fastest {:.2})", us(gpu[gpu.len() / 2]), us(gpu[0]));
        }
        println!("{line}");
    }
    Ok(())
}

/// Microseconds per dispatch of a plan's recording: the median and the fastest.
fn per_dispatch(cost: jamba_wgpu::gpu::EncodeCost) -> (f64, f64) {
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / DISPATCHES as f64;
    (us(cost.median), us(cost.min))
}
