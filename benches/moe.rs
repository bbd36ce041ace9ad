//! The MoE FFN (route + experts + combine) at Jamba-v0.1's shapes scaled for the adapter: decode reads only the
//! chosen experts (GB/s of expert weights actually read: k of E experts), prefill runs grouped tiled matmuls
//! (GFLOP/s of the routed work, 2 * T * k * 3 * I * H). A dense MLP over the same T * k rows is the yardstick for
//! the grouping and gather overhead. `cargo bench --bench moe`; JAMBA_BENCH_SCALE=1 runs the full sizes
//! (H 4096, I 14336), the default 8 divides them by 8 for software adapters.

use jamba_wgpu::bench::{report, time_plan};
use jamba_wgpu::gpu::{Context, ContextOptions, DType, Graph};
use jamba_wgpu::kernels::matmul::RmsNorm;
use jamba_wgpu::kernels::moe::{dense_mlp, dense_mlp_rms_norm, moe_ffn, route, ExpertStack, MoeScratch};
use jamba_wgpu::kernels::{rms_norm, IntoCols};

fn main() -> anyhow::Result<()> {
    let ctx = Context::new(&ContextOptions::default())?;
    let scale: usize = std::env::var("JAMBA_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    println!("adapter: {} ({:?}), dims divided by {scale}", ctx.info().name, ctx.info().backend);
    let (h, inter, e, k) = (4096 / scale, 14336 / scale, 16, 2);
    let max_t = 256;
    let scratch = MoeScratch::new(&ctx, max_t, h, inter, e, k)?;
    // Spread routing: logits from a fixed pseudo-random sequence, so tokens land on many experts.
    let logits: Vec<f32> = (0..max_t * e).map(|n| ((n * 7919 % 1009) as f32 / 1009.0 - 0.5) * 8.0).collect();
    let logits = ctx.upload_f32("logits", &[max_t, e], &logits)?;
    let ids = ctx.zeros("ids", &[max_t * k], DType::U32)?;
    let weights = ctx.zeros("weights", &[max_t * k], DType::F32)?;
    let x = ctx.zeros("x", &[max_t, h], DType::F32)?;
    let out = ctx.zeros("out", &[max_t, h], DType::F32)?;
    for dtype in [DType::F32, DType::BF16] {
        let stack = ExpertStack {
            first: 0,
            count: e,
            gate: ctx.zeros("gate", &[e, inter, h], dtype)?,
            up: ctx.zeros("up", &[e, inter, h], dtype)?,
            down: ctx.zeros("down", &[e, h, inter], dtype)?,
        };
        for t in [1, 64, 256] {
            let mut g = Graph::new(&ctx);
            route(&mut g, &logits, t, k, &ids, &weights)?;
            moe_ffn(&mut g, &x, t, std::slice::from_ref(&stack), &ids, &weights, k, &scratch, &out)?;
            let plan = g.build()?;
            let timing = time_plan(&ctx, &plan, 1, if t == 1 { 10 } else { 3 })?;
            let expert_bytes = (k * 3 * dtype.storage_bytes(&[inter, h])) as u64;
            let flops = (2 * t * k * 3 * inter * h) as u64;
            let name = format!("moe_ffn T={t} H={h} I={inter} E={e} k={k} {dtype:?}");
            let bytes = (t == 1).then_some(expert_bytes);
            println!("{}", report(&name, &timing, bytes, (t > 1).then_some(flops)));
        }
        // Yardstick: one dense MLP over the T * k = 128 rows that moe_ffn at T = 64 routes.
        let rows = 64 * k;
        let dense = MoeScratch::new(&ctx, rows, h, inter, 0, 0)?;
        let (xd, outd) = (ctx.zeros("x", &[rows, h], DType::F32)?, ctx.zeros("out", &[rows, h], DType::F32)?);
        let down = stack.down.reshape(&[e * h, inter])?.first_rows(h)?;
        let (gate, up) = (
            stack.gate.reshape(&[e * inter, h])?.first_rows(inter)?,
            stack.up.reshape(&[e * inter, h])?.first_rows(inter)?,
        );
        let mut g = Graph::new(&ctx);
        dense_mlp(&mut g, &xd, rows, &gate, &up, &down, &dense, &outd)?;
        let timing = time_plan(&ctx, &g.build()?, 1, 3)?;
        let flops = (2 * rows * 3 * inter * h) as u64;
        println!("{}", report(&format!("dense_mlp rows={rows} (yardstick) {dtype:?}"), &timing, None, Some(flops)));

        // A decode step's dense MLP and its pre-FFN norm: three dispatches, or two (the norm in the SwiGLU).
        let norm_w = ctx.zeros("norm", &[h], DType::F32)?;
        let norm = RmsNorm { weight: &norm_w, eps: 1e-6 };
        let (x1, normed) = (ctx.zeros("x", &[1, h], DType::F32)?, ctx.zeros("normed", &[1, h], DType::F32)?);
        for fused in [false, true] {
            let mut g = Graph::new(&ctx);
            if fused {
                dense_mlp_rms_norm(&mut g, &x1, norm, 1, &gate, &up, &down, &normed, &dense, &x1)?;
            } else {
                rms_norm::rms_norm(&mut g, x1.into_cols()?, &norm_w, norm.eps, normed.into_cols()?)?;
                dense_mlp(&mut g, &normed, 1, &gate, &up, &down, &dense, &x1)?;
            }
            let timing = time_plan(&ctx, &g.build()?, 2, 10)?;
            let way = if fused { "dense_mlp_rms_norm" } else { "rms_norm + dense_mlp" };
            let bytes = dtype.storage_bytes(&[3 * inter, h]) as u64;
            println!("{}", report(&format!("{way} T=1 H={h} I={inter} {dtype:?}"), &timing, Some(bytes), None));
        }
    }
    Ok(())
}
