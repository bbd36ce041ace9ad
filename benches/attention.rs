//! Attention at Jamba-v0.1's head shapes (32 heads, 8 kv heads, head_dim 128), heads scaled for the adapter:
//! causal prefill of T = 64, 256, 1024 tokens from an empty cache, and split-k decode of one token over caches of
//! 1K, 4K and 16K rows with each split kernel (`Tuning::decode_attention_lanes`). Reports GB/s (bytes of K and V
//! read, each row once) and GFLOP/s (4 * head_dim per query head and visible key: q.k and p.v). `cargo bench
//! --bench attention`; JAMBA_BENCH_SCALE=1 runs all 32 heads, the default 4 runs 8 heads / 2 kv heads for
//! software adapters.

use jamba_wgpu::bench::{report, time_plan};
use jamba_wgpu::gpu::{Context, ContextOptions, DType, Graph};
use jamba_wgpu::kernels::attention::{self, AttentionShape, DecodeScratch};

fn main() -> anyhow::Result<()> {
    let ctx = Context::new(&ContextOptions::default())?;
    let scale: usize = std::env::var("JAMBA_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let shape = AttentionShape { n_heads: 32 / scale, n_kv_heads: (8 / scale).max(1), head_dim: 128 };
    println!("adapter: {} ({:?}), {shape:?}", ctx.info().name, ctx.info().backend);
    let flops_per_key = 4 * (shape.n_heads * shape.head_dim) as u64;
    let kv_bytes = |rows: usize| 2 * (rows * shape.kv_dim() * 4) as u64;

    for t in [64, 256, 1024] {
        let q = ctx.zeros("q", &[t, shape.q_dim()], DType::F32)?;
        let k_cache = ctx.zeros("k_cache", &[t, shape.kv_dim()], DType::F32)?;
        let v_cache = ctx.zeros("v_cache", &[t, shape.kv_dim()], DType::F32)?;
        let out = ctx.zeros("out", &[t, shape.q_dim()], DType::F32)?;
        let mut g = Graph::new(&ctx);
        attention::prefill(&mut g, &q, &k_cache, &v_cache, t, shape, &out)?;
        let plan = g.build()?;
        let timing = time_plan(&ctx, &plan, 1, if t > 256 { 3 } else { 5 })?;
        let visible_keys = (t * (t + 1) / 2) as u64;
        let name = format!("attention prefill T={t}");
        println!("{}", report(&name, &timing, Some(kv_bytes(t)), Some(flops_per_key * visible_keys)));
    }
    for kv_len in [1024, 4096, 16384] {
        let q = ctx.zeros("q", &[1, shape.q_dim()], DType::F32)?;
        let k_cache = ctx.zeros("k_cache", &[kv_len, shape.kv_dim()], DType::F32)?;
        let v_cache = ctx.zeros("v_cache", &[kv_len, shape.kv_dim()], DType::F32)?;
        let out = ctx.zeros("out", &[1, shape.q_dim()], DType::F32)?;
        let scratch = DecodeScratch::new(&ctx, shape, kv_len)?;
        // The adapter's split kernel first, then the other (Tuning::decode_attention_lanes).
        for lanes in [ctx.tuning().decode_attention_lanes, !ctx.tuning().decode_attention_lanes] {
            let mut g = Graph::new(&ctx);
            g.tuning.decode_attention_lanes = lanes;
            attention::decode(&mut g, &q, &k_cache, &v_cache, kv_len, shape, &scratch, &out)?;
            let plan = g.build()?;
            let timing = time_plan(&ctx, &plan, 2, 10)?;
            let by = if lanes { "lanes" } else { "workgroups" };
            let name = format!("attention decode kv_len={kv_len} ({} splits, by {by})", scratch.n_splits());
            println!("{}", report(&name, &timing, Some(kv_bytes(kv_len)), Some(flops_per_key * kv_len as u64)));
        }
    }
    Ok(())
}
