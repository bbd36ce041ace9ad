//! Matmul and RMSNorm at Jamba's shapes, scaled to what the adapter holds: achieved GB/s (decode, bound by
//! reading the weights) and GFLOP/s (prefill). `cargo bench --bench matmul`; JAMBA_BENCH_SCALE=1 runs
//! Jamba-v0.1's full hidden size (4096), the default 8 divides every dimension by 8 for software adapters.

use jamba_wgpu::bench::{report, time_plan};
use jamba_wgpu::gpu::{Context, ContextOptions, DType, Graph, MatvecReads, Prefill};
use jamba_wgpu::kernels::matmul::{Normed, RmsNorm};
use jamba_wgpu::kernels::{matmul, rms_norm, IntoCols};
use jamba_wgpu::weights::quant::QuantFormat;

fn main() -> anyhow::Result<()> {
    let ctx = Context::new(&ContextOptions::default())?;
    let scale: usize = std::env::var("JAMBA_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    println!("adapter: {} ({:?}), dims divided by {scale}", ctx.info().name, ctx.info().backend);
    println!("tuning: {:?}", ctx.tuning());
    let (h, inter) = (4096 / scale, 14336 / scale);
    for (name, n, k) in [("in_proj", 4 * h, h), ("expert up", inter, h), ("expert down", h, inter)] {
        for dtype in [DType::F32, DType::BF16, DType::Quant(QuantFormat::Q8), DType::Quant(QuantFormat::ALL[1])] {
            let w = ctx.zeros("w", &[n, k], dtype)?;
            // Decode (matvec): the adapter's tuning, then on GPUs 64 invocations per row (one row per workgroup)
            // instead of 32, each other count of rows per row group, and each other way of reading rows (by
            // codes, words or quads; floats read by words either of the first two ways); a batch of 4 sequences'
            // step (4 rows of x: where the GPU's cache serves the 4 reads of each block of W, as long as 1 row);
            // then prefill with each tiled kernel the adapter runs.
            let base = Path::of(&ctx);
            let wide = (!ctx.is_cpu()).then_some(Path { row_threads: 64, ..base });
            let other_rows = [1, 4, 8].into_iter().filter(|&r| r != base.matvec_rows);
            let rows = other_rows.map(|r| Path { matvec_rows: r, ..base });
            let other_reads = if dtype.is_quantized() {
                MatvecReads::ALL.into_iter().filter(|&r| r != base.matvec_reads).collect()
            } else if base.matvec_reads == MatvecReads::Quads {
                vec![MatvecReads::Words] // float rows are read by words for codes and for words alike
            } else {
                vec![MatvecReads::Quads]
            };
            let other_reads = other_reads.into_iter().map(|matvec_reads| Path { matvec_reads, ..base });
            let prefills = [Prefill::Tiled, Prefill::Wide, Prefill::Blocked].into_iter().filter(|&p| ctx.supports(p));
            let paths = std::iter::once(base)
                .chain(wide)
                .chain(std::iter::once(Path { t: 4, ..base }))
                .chain(rows)
                .chain(other_reads)
                .chain(prefills.flat_map(|p| [64, 256].map(|t| Path { t, prefill: Some(p), ..base })));
            for path in paths {
                let t = path.t;
                let x = ctx.zeros("x", &[t, k], DType::F32)?;
                let y = ctx.zeros("y", &[t, n], DType::F32)?;
                let mut g = Graph::new(&ctx);
                g.tuning.prefill = path.prefill.unwrap_or(g.tuning.prefill);
                g.tuning.matvec_reads = path.matvec_reads;
                g.tuning.row_threads = path.row_threads;
                g.tuning.matvec_rows = path.matvec_rows;
                g.tuning.matvec_min_workgroups = 1; // the rows asked for, however few workgroups they leave
                matmul::matmul(&mut g, &x, &w, &y, false)?;
                let plan = g.build()?;
                let timing = time_plan(&ctx, &plan, 2, if path.prefill.is_none() { 10 } else { 3 })?;
                let bytes = w.size_bytes() + x.size_bytes() + y.size_bytes();
                let flops = 2 * (t * n * k) as u64;
                let kind = match path.prefill {
                    Some(p) => format!(" {p:?}"),
                    None => format!(
                        " {} per row, {} rows, by {}",
                        path.row_threads,
                        path.matvec_rows,
                        path.matvec_reads.name()
                    ),
                };
                let name = format!("matmul {name} [{t}x{k}]x[{n}x{k}]^T {dtype:?}{kind}");
                println!("{}", report(&name, &timing, Some(bytes), Some(flops)));
            }
        }
    }
    // A decode step's norm and the matvec that reads it: two dispatches, or one (matmul_rms_norm).
    let (x, norm) = (ctx.zeros("x", &[1, h], DType::F32)?, ctx.zeros("norm", &[h], DType::F32)?);
    let (normed, y) = (ctx.zeros("normed", &[1, h], DType::F32)?, ctx.zeros("y", &[1, 4 * h], DType::F32)?);
    for dtype in [DType::F32, DType::BF16] {
        let w = ctx.zeros("w", &[4 * h, h], dtype)?;
        for fused in [false, true] {
            let mut g = Graph::new(&ctx);
            if fused {
                let norm = RmsNorm { weight: &norm, eps: 1e-6 };
                matmul::matmul_rms_norm(&mut g, &x, norm, &w, &y, false, Normed::Scratch(normed.into_cols()?))?;
            } else {
                rms_norm::rms_norm(&mut g, &x, &norm, 1e-6, &normed)?;
                matmul::matmul(&mut g, &normed, &w, &y, false)?;
            }
            let plan = g.build()?;
            let timing = time_plan(&ctx, &plan, 2, 10)?;
            let way = if fused { "matmul_rms_norm" } else { "rms_norm + matmul" };
            let name = format!("{way} in_proj [1x{h}]x[{}x{h}]^T {dtype:?}", 4 * h);
            println!("{}", report(&name, &timing, Some(w.size_bytes()), None));
        }
    }
    for t in [1, 64] {
        let x = ctx.zeros("x", &[t, h], DType::F32)?;
        let w = ctx.zeros("w", &[h], DType::F32)?;
        let y = ctx.zeros("y", &[t, h], DType::F32)?;
        let mut g = Graph::new(&ctx);
        rms_norm::rms_norm(&mut g, &x, &w, 1e-6, &y)?;
        let plan = g.build()?;
        let timing = time_plan(&ctx, &plan, 2, 10)?;
        println!("{}", report(&format!("rms_norm [{t}x{h}]"), &timing, Some(x.size_bytes() * 2), None));
    }
    Ok(())
}

/// One way to run a matmul in this bench: rows of x, the tiled kernel (prefill) or the matvec's tuning (decode).
#[derive(Clone, Copy)]
struct Path {
    t: usize,
    prefill: Option<Prefill>,
    matvec_reads: MatvecReads,
    row_threads: u32,
    matvec_rows: u32,
}

impl Path {
    fn of(ctx: &Context) -> Path {
        let tuning = ctx.tuning();
        Path {
            t: 1,
            prefill: None,
            matvec_reads: tuning.matvec_reads,
            row_threads: tuning.row_threads,
            matvec_rows: tuning.matvec_rows,
        }
    }
}
