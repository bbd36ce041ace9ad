//! The Mamba mixer's sequence kernels at Jamba-v0.1's d_inner scaled for the adapter (default I = 8192 / 8,
//! N = 16, K = 4): the selective scan's decode step, its chunked prefill against the naive serial-over-T form
//! as T grows, and the causal conv1d. `cargo bench --bench ssm_scan`; JAMBA_BENCH_SCALE=1 runs I = 8192.
//!
//! GB/s counts the bytes the operation must move once (inputs, outputs, state read and written), the same for
//! every path; the chunked path's scratch traffic is not counted.

use jamba_wgpu::bench::{report, time_plan};
use jamba_wgpu::gpu::{Context, ContextOptions, DType, Graph};
use jamba_wgpu::kernels::conv1d::causal_conv1d_silu;
use jamba_wgpu::kernels::ssm_scan::{selective_scan_with, ScanPath, ScanScratch};
use jamba_wgpu::kernels::Cols;

fn main() -> anyhow::Result<()> {
    let ctx = Context::new(&ContextOptions::default())?;
    let scale: usize = std::env::var("JAMBA_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    println!("adapter: {} ({:?}), d_inner divided by {scale}", ctx.info().name, ctx.info().backend);
    let (i, n, r, k) = (8192 / scale, 16, 256, 4); // d_inner, d_state, dt_rank, d_conv
    let f32s = |shape: &[usize]| ctx.zeros("bench", shape, DType::F32);
    let (dt_bias, a_log, d, state) = (f32s(&[i])?, f32s(&[i, n])?, f32s(&[i])?, f32s(&[i, n])?);
    let (conv_w, conv_b, conv_state) = (f32s(&[i, k])?, f32s(&[i])?, f32s(&[k - 1, i])?);

    for t in [1, 64, 256, 1024] {
        let in_proj = f32s(&[t, 2 * i])?; // [T, 2I]: xs | z
        let x_proj = f32s(&[t, r + 2 * n])?; // [T, R + 2N]: dt | B | C
        let (x, dt, out) = (f32s(&[t, i])?, f32s(&[t, i])?, f32s(&[t, i])?);
        let (b, c, z) = (Cols::slice(&x_proj, r, n)?, Cols::slice(&x_proj, r + n, n)?, Cols::slice(&in_proj, i, i)?);
        let bytes = 4 * (5 * t * i + 2 * t * n + 3 * i * n + 2 * i) as u64;
        let paths: &[ScanPath] =
            if t == 1 { &[ScanPath::Decode, ScanPath::Chunked] } else { &[ScanPath::Chunked, ScanPath::Serial] };
        for &path in paths {
            let mut g = Graph::new(&ctx);
            let scratch = ScanScratch::new(&ctx, t, i, n)?;
            selective_scan_with(&mut g, &x, &dt, &dt_bias, &a_log, b, c, &d, z, &state, &scratch, &out, path)?;
            let plan = g.build()?;
            let timing = time_plan(&ctx, &plan, 1, if t <= 64 { 10 } else { 3 })?;
            println!("{}", report(&format!("selective_scan {path:?} T={t} I={i} N={n}"), &timing, Some(bytes), None));
        }
        let mut g = Graph::new(&ctx);
        causal_conv1d_silu(&mut g, Cols::slice(&in_proj, 0, i)?, &conv_state, &conv_w, &conv_b, &out)?;
        let plan = g.build()?;
        let timing = time_plan(&ctx, &plan, 1, if t <= 64 { 10 } else { 3 })?;
        let bytes = 4 * (2 * t * i + 2 * (k - 1) * i + (k + 1) * i) as u64;
        println!("{}", report(&format!("causal_conv1d_silu T={t} C={i} K={k}"), &timing, Some(bytes), None));
    }
    Ok(())
}
