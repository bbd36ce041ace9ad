//! Tier 2: the mixture-of-experts FFN (routing, grouping, expert SwiGLU, weighted combine) and the dense MLP
//! against CPU references composed from reference functions, on whatever adapter is present: decode (indexed
//! matvec) and prefill (grouped tiled) paths forced in turn, f32 and bf16 experts, token counts around the
//! workgroup and tile sizes, experts split over several stacks.
//!
//! Tolerances: routing ids exact, routing weights 1e-6 absolute (the GPU's exp is not the CPU's); the FFN
//! 1e-5 absolute + 1e-5 relative (f32 sums of 24 and 40 products in another order); several stacks equal one
//! stack bit for bit (each slot's output does not depend on the stack, and the combine order is fixed).

mod common;

use common::{assert_close, coop_gpu, f16_rounded, gpu, upload_weights, Rng};
use jamba_wgpu::gpu::{Context, DType, Graph, MatvecReads, Prefill, Tensor, Tuning};
use jamba_wgpu::kernels::matmul::{matmul, RmsNorm};
use jamba_wgpu::kernels::moe::{dense_mlp, dense_mlp_rms_norm, moe_ffn, norm_route, route, ExpertStack, MoeScratch};
use jamba_wgpu::kernels::rms_norm::rms_norm;
use jamba_wgpu::kernels::Cols;
use jamba_wgpu::weights::quant::QuantFormat;
use jamba_wgpu::{reference, Error};

/// The decode path (indexed matvec: at two row widths, quantized rows by codes and by words, 1 to 8 rows per row
/// group, rounds of 1, 2 or 4 words) and the prefill path (grouped tiled, with each tiled kernel the adapter runs), forced.
fn paths(ctx: &Context) -> Vec<Tuning> {
    let decode = Tuning {
        row_threads: 1,
        tiled_min_rows: usize::MAX,
        moe_tiled_min_rows: 0,
        prefill: Prefill::Tiled,
        matvec_reads: MatvecReads::Codes,
        matvec_rows: 1,
        matvec_min_workgroups: 1,
        matvec_unroll: 1,
        matvec_split_workgroups: 0,
        serial_scan_min_channels: usize::MAX,
        head_loops_unrolled: true,
        decode_attention_lanes: false,
        x_lanes: 0,
    };
    let mut out = vec![
        decode,
        Tuning { matvec_rows: 8, matvec_reads: MatvecReads::Words, ..decode },
        Tuning { matvec_rows: 8, matvec_reads: MatvecReads::Quads, ..decode },
        Tuning { row_threads: 32, ..decode },
        Tuning { row_threads: 32, matvec_reads: MatvecReads::Words, matvec_rows: 2, ..decode },
        Tuning { row_threads: 32, matvec_reads: MatvecReads::Quads, ..decode },
        Tuning { row_threads: 32, matvec_rows: 4, ..decode },
        // One row per row group, 4 or 2 words a round.
        Tuning { matvec_unroll: 4, ..decode },
        Tuning { row_threads: 32, matvec_reads: MatvecReads::Words, matvec_unroll: 2, ..decode },
    ];
    // x read in turns across the subgroup, at 8 rows and at one row per row group, where subgroups allow.
    if let Some(x_lanes) = ctx.subgroup_width().filter(|&w| w > 1) {
        out.push(Tuning { matvec_rows: 8, matvec_reads: MatvecReads::Quads, x_lanes, ..decode });
        out.push(Tuning { matvec_reads: MatvecReads::Quads, x_lanes, ..decode });
    }
    for prefill in [Prefill::Tiled, Prefill::Blocked] {
        if ctx.supports(prefill) {
            out.push(Tuning { tiled_min_rows: 1, prefill, ..decode });
        }
    }
    out
}

/// Runs route on the GPU over `logits` [t, e]; returns (ids, weights).
fn gpu_route(ctx: &Context, logits: &[f32], t: usize, e: usize, k: usize) -> (Vec<u32>, Vec<f32>) {
    let logits = ctx.upload_f32("logits", &[t, e], logits).unwrap();
    let ids = ctx.zeros("ids", &[t * k], DType::U32).unwrap();
    let weights = ctx.zeros("weights", &[t * k], DType::F32).unwrap();
    let mut g = Graph::new(ctx);
    route(&mut g, &logits, t, k, &ids, &weights).unwrap();
    g.run().unwrap();
    (ctx.read_u32(&ids).unwrap(), ctx.read_f32(&weights).unwrap())
}

#[test]
fn norm_route_matches_rms_norm_matmul_and_route() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(16);
    let (eps, mut worst) = (1e-6, 0.0f32);
    for (h, e) in [(24, 4), (37, 5), (100, 16), (300, 32)] {
        for k in [1, 2] {
            for dtype in [DType::F32, DType::BF16] {
                for (t, row_threads) in [(1, 1), (3, 1), (1, 32), (3, 32)] {
                    let x = rng.vec(t * h, 1.0);
                    let norm_w = rng.vec(h, 1.0);
                    let (router, router_values) = upload_weights(ctx, "router", &[e, h], &rng.vec(e * h, 1.0), dtype);
                    let normed_want = reference::rms_norm(&x, &norm_w, eps);
                    let logits_want = reference::matmul(&normed_want, &router_values, t, e, h);
                    let (ids_want, weights_want) = reference::moe::route(&logits_want, e, k);

                    let f32s = |name, shape: &[usize]| ctx.zeros(name, shape, DType::F32).unwrap();
                    let (normed, logits, weights) = (f32s("normed", &[t, h]), f32s("logits", &[t, e]), f32s("w", &[t * k]));
                    let ids = ctx.zeros("ids", &[t * k], DType::U32).unwrap();
                    let x_gpu = ctx.upload_f32("x", &[t, h], &x).unwrap();
                    let norm_gpu = ctx.upload_f32("norm", &[h], &norm_w).unwrap();
                    let mut g = Graph::new(ctx);
                    g.tuning.row_threads = row_threads; // an invocation per expert (1), or workgroups sharing rows
                    norm_route(&mut g, &x_gpu, t, &norm_gpu, eps, &router, &normed, &logits, k, &ids, &weights).unwrap();
                    g.run().unwrap();

                    let what = format!("norm_route H = {h}, E = {e}, k = {k}, {dtype:?}, T = {t}, {row_threads} lanes/row");
                    let logits_got = ctx.read_f32(&logits).unwrap();
                    assert_close(&format!("{what}: normed"), &ctx.read_f32(&normed).unwrap(), &normed_want, 1e-6, 1e-5);
                    assert_close(&format!("{what}: logits"), &logits_got, &logits_want, 1e-5, 1e-5);
                    // Random logits have no near-ties: the choices are the reference's.
                    assert_eq!(ctx.read_u32(&ids).unwrap(), ids_want, "{what}: ids");
                    assert_close(&format!("{what}: weights"), &ctx.read_f32(&weights).unwrap(), &weights_want, 1e-6, 1e-5);
                    worst = logits_got.iter().zip(&logits_want).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
                }
            }
        }
    }
    eprintln!("norm_route: max |logit - reference| = {worst:e}");
}

#[test]
fn moe_route_matches_reference_with_ties() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(11);
    let t = 70; // more than one workgroup of tokens
    for e in [4, 8, 16] {
        for k in [1, 2, 4].into_iter().filter(|&k| k <= e) {
            let mut logits = rng.vec(t * e, 4.0);
            logits[..e].fill(0.5); // every expert tied: ids 0, 1, 2, ...
            logits[e + 1] = 9.0; // a tie for first place: the lower index first
            logits[e + e - 1] = 9.0;
            for c in 0..e {
                logits[2 * e + c] = [1.0, 3.0, 3.0, 3.0][c % 4]; // ties across the top-k boundary
            }
            let (want_ids, want_w) = reference::moe::route(&logits, e, k);
            let (ids, w) = gpu_route(ctx, &logits, t, e, k);
            assert_eq!(ids, want_ids, "ids, E = {e}, k = {k}");
            assert_close(&format!("weights, E = {e}, k = {k}"), &w, &want_w, 1e-6, 0.0);
        }
    }
}

/// One layer's experts as the GPU and the CPU reference see them.
struct Experts {
    stacks: Vec<ExpertStack>,
    gate: Vec<f32>, // [E, I, H], rounded to the stored dtype
    up: Vec<f32>,   // [E, I, H]
    down: Vec<f32>, // [E, H, I]
}

/// Random experts of hidden size h and intermediate size i, stored as `dtype` in stacks of the given sizes.
fn experts(ctx: &Context, rng: &mut Rng, sizes: &[usize], h: usize, i: usize, dtype: DType) -> Experts {
    let e: usize = sizes.iter().sum();
    let (gate, up, down) = (rng.vec(e * i * h, 0.5), rng.vec(e * i * h, 0.5), rng.vec(e * h * i, 0.5));
    stack(ctx, sizes, h, i, dtype, [gate, up, down])
}

fn stack(ctx: &Context, sizes: &[usize], h: usize, i: usize, dtype: DType, [gate, up, down]: [Vec<f32>; 3]) -> Experts {
    let mut out = Experts { stacks: Vec::new(), gate: Vec::new(), up: Vec::new(), down: Vec::new() };
    let mut first = 0;
    for &count in sizes {
        let part = |w: &[f32]| w[first * i * h..(first + count) * i * h].to_vec();
        let (g, g_rounded) = upload_weights(ctx, "gate", &[count, i, h], &part(&gate), dtype);
        let (u, u_rounded) = upload_weights(ctx, "up", &[count, i, h], &part(&up), dtype);
        let (d, d_rounded) = upload_weights(ctx, "down", &[count, h, i], &part(&down), dtype);
        out.gate.extend(g_rounded);
        out.up.extend(u_rounded);
        out.down.extend(d_rounded);
        out.stacks.push(ExpertStack { first, count, gate: g, up: u, down: d });
        first += count;
    }
    out
}

/// The CPU reference: residual + sum_j weights[r, j] * down_e(silu(gate_e(x_r)) * up_e(x_r)), in j order.
fn reference_moe(x: &[f32], residual: &[f32], logits: &[f32], ex: &Experts, k: usize, h: usize, i: usize) -> Vec<f32> {
    reference_moe_rounded(x, residual, logits, ex, k, h, i, |v| v.to_vec())
}

/// [`reference_moe`] with x, the weights and each SwiGLU output passed through `round` where a kernel stages
/// them (the cooperative-matrix kernels round them to f16).
#[allow(clippy::too_many_arguments)]
fn reference_moe_rounded(
    x: &[f32],
    residual: &[f32],
    logits: &[f32],
    ex: &Experts,
    k: usize,
    h: usize,
    i: usize,
    round: impl Fn(&[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let e = ex.gate.len() / (i * h);
    let (ids, weights) = reference::moe::route(logits, e, k);
    let (gate, up, down) = (round(&ex.gate), round(&ex.up), round(&ex.down));
    let mut out = residual.to_vec();
    for (r, row) in round(x).chunks_exact(h).enumerate() {
        let mut sum = vec![0.0f32; h];
        for j in 0..k {
            let (expert, p) = (ids[r * k + j] as usize, weights[r * k + j]);
            let (gate, up) = (&gate[expert * i * h..][..i * h], &up[expert * i * h..][..i * h]);
            let (gated, upped) = (reference::matmul(row, gate, 1, i, h), reference::matmul(row, up, 1, i, h));
            let act = round(&reference::silu_mul(&gated, &upped));
            let y = reference::matmul(&act, &down[expert * h * i..][..h * i], 1, h, i);
            sum.iter_mut().zip(y).for_each(|(s, y)| *s += p * y);
        }
        out[r * h..(r + 1) * h].iter_mut().zip(sum).for_each(|(o, s)| *o += s);
    }
    out
}

/// down(silu(gate(x)) * up(x)), x: [t, h] -> [t, h].
fn reference_mlp(x: &[f32], gate: &[f32], up: &[f32], down: &[f32], t: usize, h: usize, i: usize) -> Vec<f32> {
    let act = reference::silu_mul(&reference::matmul(x, gate, t, i, h), &reference::matmul(x, up, t, i, h));
    reference::matmul(&act, down, t, h, i)
}

/// The MoE block as the model runs it: router matmul, route, experts; returns (out, GPU router logits).
#[allow(clippy::too_many_arguments)]
fn gpu_moe(
    ctx: &Context,
    tuning: Tuning,
    x: &Tensor,
    router: &Tensor,
    t: usize,
    ex: &Experts,
    k: usize,
    scratch: &MoeScratch,
    residual: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let e: usize = ex.stacks.iter().map(|s| s.count).sum();
    let h = x.shape()[1];
    let logits = ctx.zeros("logits", &[t, e], DType::F32).unwrap();
    let ids = ctx.zeros("ids", &[t * k], DType::U32).unwrap();
    let weights = ctx.zeros("weights", &[t * k], DType::F32).unwrap();
    let out = ctx.upload_f32("out", &[t, h], residual).unwrap();
    let mut g = Graph::new(ctx);
    g.tuning = tuning;
    matmul(&mut g, x, router, &logits, false).unwrap();
    route(&mut g, &logits, t, k, &ids, &weights).unwrap();
    moe_ffn(&mut g, x, t, &ex.stacks, &ids, &weights, k, scratch, &out).unwrap();
    g.run().unwrap();
    (ctx.read_f32(&out).unwrap(), ctx.read_f32(&logits).unwrap())
}

/// The MoE block over `t` random rows on every path of `paths`, each checked against the reference; returns the
/// largest absolute error. `what` names the case in a failure.
#[allow(clippy::too_many_arguments)]
fn check_moe_on_every_path(
    ctx: &Context,
    rng: &mut Rng,
    router: &Tensor,
    ex: &Experts,
    t: usize,
    k: usize,
    i: usize,
    scratch: &MoeScratch,
    what: &str,
) -> f32 {
    let h = router.shape()[1];
    let x = rng.vec(t * h, 1.0);
    let residual = rng.vec(t * h, 1.0);
    let x_gpu = ctx.upload_f32("x", &[t, h], &x).unwrap();
    let mut worst = 0.0f32;
    for tuning in paths(ctx) {
        let (got, logits) = gpu_moe(ctx, tuning, &x_gpu, router, t, ex, k, scratch, &residual);
        let want = reference_moe(&x, &residual, &logits, ex, k, h, i);
        assert_close(&format!("{what}, T = {t}, {tuning:?}"), &got, &want, 1e-5, 1e-5);
        worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
    }
    worst
}

#[test]
fn moe_ffn_matches_reference() {
    let Some(ctx) = gpu() else { return };
    let (h, i, max_t) = (24, 40, 300);
    let mut rng = Rng::new(12);
    let mut worst = 0.0f32;
    for e in [4, 16] {
        for k in [1, 2] {
            // One scratch for every chunk length: allocated once for the longest.
            let scratch = MoeScratch::new(ctx, max_t, h, i, e, k).unwrap();
            let router = ctx.upload_f32("router", &[e, h], &rng.vec(e * h, 1.0)).unwrap();
            for dtype in [DType::F32, DType::BF16] {
                let ex = experts(ctx, &mut rng, &[e], h, i, dtype);
                for t in [1, 2, 63, 64, 65, 300] {
                    let what = format!("moe_ffn E = {e}, k = {k}, {dtype:?}");
                    worst = worst.max(check_moe_on_every_path(ctx, &mut rng, &router, &ex, t, k, i, &scratch, &what));
                }
            }
        }
    }
    eprintln!("moe_ffn: max abs error {worst:e}");
}

/// Odd widths: bf16 rows that do not start on words (the prefill kernels then read them weight by weight, where
/// whole-word reads would straddle two rows) and rows that are not a whole number of 8-column blocks, on every
/// path; the gate / up rows (k = h) and the down rows (k = i) in turn.
#[test]
fn moe_ffn_with_odd_widths_matches_reference() {
    let Some(ctx) = gpu() else { return };
    let (e, k) = (4, 2);
    let mut rng = Rng::new(15);
    for (h, i) in [(25, 40), (24, 41)] {
        let scratch = MoeScratch::new(ctx, 65, h, i, e, k).unwrap();
        let router = ctx.upload_f32("router", &[e, h], &rng.vec(e * h, 1.0)).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let ex = experts(ctx, &mut rng, &[e], h, i, dtype);
            for t in [1, 65] {
                let what = format!("moe_ffn H = {h}, I = {i}, {dtype:?}");
                check_moe_on_every_path(ctx, &mut rng, &router, &ex, t, k, i, &scratch, &what);
            }
        }
    }
}

#[test]
fn coop_experts_match_the_f16_reference_or_are_refused() {
    // Prefill::Coop's expert kernels (moe_coop.wgsl) where the adapter runs them: the reference with x, the
    // weights and the SwiGLU output rounded to f16 where they are staged. A SwiGLU output that lands near an f16
    // rounding boundary may round the other way on the GPU (its f32 sums run in another order), an error of half
    // an f16 step (2^-11 relative) passed through down: hence 2e-3. Elsewhere (software adapters), the refusal.
    let Some(ctx) = coop_gpu() else { return };
    // Neither size a multiple of the 64-wide tiles or the 32-deep k steps.
    let (h, i, max_t) = (40, 72, 200);
    let mut rng = Rng::new(19);
    for e in [4, 16] {
        for k in [1, 2] {
            let scratch = MoeScratch::new(&ctx, max_t, h, i, e, k).unwrap();
            let router = ctx.upload_f32("router", &[e, h], &rng.vec(e * h, 1.0)).unwrap();
            for dtype in [DType::F32, DType::BF16, DType::Quant(QuantFormat::Q8)] {
                let ex = experts(&ctx, &mut rng, &[e], h, i, dtype);
                for t in [65, 200] {
                    let x = rng.vec(t * h, 1.0);
                    let residual = rng.vec(t * h, 1.0);
                    let x_gpu = ctx.upload_f32("x", &[t, h], &x).unwrap();
                    let tuning = Tuning { tiled_min_rows: 1, ..ctx.tuning() };
                    let (got, logits) = gpu_moe(&ctx, tuning, &x_gpu, &router, t, &ex, k, &scratch, &residual);
                    let want = reference_moe_rounded(&x, &residual, &logits, &ex, k, h, i, f16_rounded);
                    let what = format!("coop experts T = {t}, E = {e}, k = {k}, {dtype:?}");
                    assert_close(&what, &got, &want, 2e-3, 1e-3);
                }
            }
        }
    }
}

#[test]
fn moe_stacks_split_equal_one_stack() {
    let Some(ctx) = gpu() else { return };
    let (h, i, e, k) = (24, 40, 16, 2);
    let mut rng = Rng::new(13);
    let weights = [rng.vec(e * i * h, 0.5), rng.vec(e * i * h, 0.5), rng.vec(e * h * i, 0.5)];
    let one = stack(ctx, &[e], h, i, DType::BF16, weights.clone());
    let split = stack(ctx, &[5, 11], h, i, DType::BF16, weights);
    let router = ctx.upload_f32("router", &[e, h], &rng.vec(e * h, 1.0)).unwrap();
    let scratch = MoeScratch::new(ctx, 65, h, i, e, k).unwrap();
    for t in [1, 65] {
        let x = ctx.upload_f32("x", &[t, h], &rng.vec(t * h, 1.0)).unwrap();
        let residual = rng.vec(t * h, 1.0);
        for tuning in paths(ctx) {
            let (want, _) = gpu_moe(ctx, tuning, &x, &router, t, &one, k, &scratch, &residual);
            let (got, _) = gpu_moe(ctx, tuning, &x, &router, t, &split, k, &scratch, &residual);
            assert_close(&format!("stacks 5 + 11 vs 16, T = {t}, {tuning:?}"), &got, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn moe_dense_mlp_matches_reference() {
    let Some(ctx) = gpu() else { return };
    let (h, i) = (24, 40);
    let mut rng = Rng::new(14);
    // A scratch longer than every chunk: only the chunk's rows are computed and written.
    let scratch = MoeScratch::new(ctx, 100, h, i, 0, 0).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let (gate, gate_r) = upload_weights(ctx, "gate", &[i, h], &rng.vec(i * h, 0.5), dtype);
        let (up, up_r) = upload_weights(ctx, "up", &[i, h], &rng.vec(i * h, 0.5), dtype);
        let (down, down_r) = upload_weights(ctx, "down", &[h, i], &rng.vec(h * i, 0.5), dtype);
        for t in [1, 7, 64, 65] {
            let x = rng.vec(t * h, 1.0);
            let residual = rng.vec((t + 3) * h, 1.0); // three rows past the chunk must stay as they are
            let mut want = residual.clone();
            let y = reference_mlp(&x, &gate_r, &up_r, &down_r, t, h, i);
            want.iter_mut().zip(y).for_each(|(o, y)| *o += y);
            for tuning in paths(ctx) {
                let x_gpu = ctx.upload_f32("x", &[t, h], &x).unwrap();
                let out = ctx.upload_f32("out", &[t + 3, h], &residual).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = tuning;
                dense_mlp(&mut g, &x_gpu, t, &gate, &up, &down, &scratch, &out).unwrap();
                g.run().unwrap();
                let got = ctx.read_f32(&out).unwrap();
                assert_close(&format!("dense_mlp T = {t}, {dtype:?}, {tuning:?}"), &got, &want, 1e-5, 1e-5);
            }
        }
    }
}

#[test]
fn expert_matvecs_unrolled_sum_exactly_as_one_word_a_round() {
    // The SwiGLU (norm fused, and not) and down matvecs at one row per row group, 2 or 4 words a round: the same
    // output bit for bit as one word a round, for each weight type, at widths that end rounds part way.
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(19);
    let (h, i, t) = (320, 192, 2);
    let scratch = MoeScratch::new(ctx, t, h, i, 0, 0).unwrap();
    let norm_gpu = ctx.upload_f32("norm", &[h], &rng.vec(h, 1.0)).unwrap();
    let norm = RmsNorm { weight: &norm_gpu, eps: 1e-6 };
    let residual = rng.vec(t * h, 1.0);
    for dtype in [DType::F32, DType::BF16, DType::Quant(QuantFormat::Q8), DType::Quant(QuantFormat::ALL[1])] {
        let (gate, _) = upload_weights(ctx, "gate", &[i, h], &rng.vec(i * h, 0.5), dtype);
        let (up, _) = upload_weights(ctx, "up", &[i, h], &rng.vec(i * h, 0.5), dtype);
        let (down, _) = upload_weights(ctx, "down", &[h, i], &rng.vec(h * i, 0.5), dtype);
        for row_threads in [1, 32] {
            let run = |unroll: u32, fused: bool| {
                let stream = ctx.upload_f32("stream", &[t, h], &residual).unwrap();
                let normed = ctx.zeros("normed", &[t, h], DType::F32).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = Tuning { row_threads, matvec_unroll: unroll, matvec_min_workgroups: usize::MAX, ..paths(ctx)[0] };
                match fused {
                    true => dense_mlp_rms_norm(&mut g, &stream, norm, t, &gate, &up, &down, &normed, &scratch, &stream).unwrap(),
                    false => dense_mlp(&mut g, &stream, t, &gate, &up, &down, &scratch, &stream).unwrap(),
                }
                g.run().unwrap();
                ctx.read_f32(&stream).unwrap()
            };
            for fused in [false, true] {
                let once = run(1, fused);
                for unroll in [2, 4] {
                    let what = format!("{dtype:?}, {row_threads} lanes, fused norm {fused}, unroll {unroll}");
                    assert!(run(unroll, fused) == once, "{what}: differs from one word a round");
                }
            }
        }
    }
}

#[test]
fn moe_dense_mlp_rms_norm_matches_reference() {
    let Some(ctx) = gpu() else { return };
    // An epsilon that moves the result well past the tolerances (rows of x have mean squares near 1 / 3). h not a
    // multiple of 4: q8 rows are read by quads all the same, and token 1's row of x then starts off a vec4.
    let (h, i, eps) = (26, 40, 0.05);
    let mut rng = Rng::new(17);
    let scratch = MoeScratch::new(ctx, 3, h, i, 0, 0).unwrap();
    let norm_w = rng.vec(h, 1.0);
    let norm_gpu = ctx.upload_f32("norm", &[h], &norm_w).unwrap();
    let norm = RmsNorm { weight: &norm_gpu, eps };
    let mut worst = (0.0f32, 0.0f32); // max |fused - reference|, max |fused - unfused|
    for dtype in [DType::F32, DType::BF16, DType::Quant(QuantFormat::Q8)] {
        let (gate, gate_r) = upload_weights(ctx, "gate", &[i, h], &rng.vec(i * h, 0.5), dtype);
        let (up, up_r) = upload_weights(ctx, "up", &[i, h], &rng.vec(i * h, 0.5), dtype);
        let (down, down_r) = upload_weights(ctx, "down", &[h, i], &rng.vec(h * i, 0.5), dtype);
        for t in 1..=3 {
            // The residual stream, x and out alike as the model passes them; the row past the chunk must stay.
            let residual = rng.vec((t + 1) * h, 1.0);
            let normed_want = reference::rms_norm(&residual[..t * h], &norm_w, eps);
            let mut want = residual.clone();
            let y = reference_mlp(&normed_want, &gate_r, &up_r, &down_r, t, h, i);
            want.iter_mut().zip(y).for_each(|(o, y)| *o += y);
            for tuning in paths(ctx) {
                let what = format!("dense_mlp_rms_norm T = {t}, {dtype:?}, {tuning:?}");
                let stream = ctx.upload_f32("stream", &[t + 1, h], &residual).unwrap();
                let normed = ctx.zeros("normed", &[t, h], DType::F32).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = tuning;
                dense_mlp_rms_norm(&mut g, &stream, norm, t, &gate, &up, &down, &normed, &scratch, &stream).unwrap();
                // The unfused pair on the same tuning: rms_norm, then dense_mlp reading its output.
                let pair = ctx.upload_f32("pair stream", &[t + 1, h], &residual).unwrap();
                let pair_normed = ctx.zeros("pair normed", &[t, h], DType::F32).unwrap();
                rms_norm(&mut g, Cols::slice(&pair, 0, h).unwrap().rows(t).unwrap(), &norm_gpu, eps, &pair_normed)
                    .unwrap();
                dense_mlp(&mut g, &pair_normed, t, &gate, &up, &down, &scratch, &pair).unwrap();
                g.run().unwrap();

                let (got, unfused) = (ctx.read_f32(&stream).unwrap(), ctx.read_f32(&pair).unwrap());
                let rtol = if dtype.is_quantized() { 1e-4 } else { 1e-5 };
                assert_close(&what, &got, &want, 1e-5, rtol);
                assert_close(&format!("{what} vs unfused"), &got, &unfused, 1e-6, 1e-5);
                let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                worst = (worst.0.max(max_diff(&got, &want)), worst.1.max(max_diff(&got, &unfused)));
            }
        }
    }
    eprintln!("dense_mlp_rms_norm: max |out - reference| = {:e}, max |out - unfused| = {:e}", worst.0, worst.1);
}

#[test]
fn moe_bad_shapes_give_typed_errors() {
    let Some(ctx) = gpu() else { return };
    let (h, i, e, k, t) = (8, 12, 4, 2, 3);
    let mut rng = Rng::new(15);
    let ex = experts(ctx, &mut rng, &[2, 2], h, i, DType::F32);
    let f32s = |shape: &[usize]| ctx.zeros("f32", shape, DType::F32).unwrap();
    let (x, out, logits) = (f32s(&[t, h]), f32s(&[t, h]), f32s(&[t, e]));
    let ids = ctx.zeros("ids", &[t * k], DType::U32).unwrap();
    let weights = f32s(&[t * k]);
    let scratch = MoeScratch::new(ctx, t, h, i, e, k).unwrap();
    let gapped = vec![ex.stacks[0].clone(), ExpertStack { first: 3, ..ex.stacks[1].clone() }];
    let mut mixed = ex.stacks.clone();
    mixed[1].up = upload_weights(ctx, "up", &[2, i, h], &vec![0.0; 2 * i * h], DType::BF16).0;
    let wide_x = f32s(&[t, h + 1]);
    let (gate, down) = (f32s(&[i, h]), f32s(&[h, i])); // a dense MLP's weights
    let long_norm = f32s(&[h + 1]);
    let norm = RmsNorm { weight: &long_norm, eps: 1e-6 };
    type Case<'a> = (&'a str, Box<dyn Fn(&mut Graph) -> Result<(), Error> + 'a>);
    let cases: Vec<Case> = vec![
        ("route: top_k 0", Box::new(|g| route(g, &logits, t, 0, &ids, &weights).map(drop))),
        ("route: top_k > E", Box::new(|g| route(g, &logits, t, e + 1, &ids, &weights).map(drop))),
        ("route: t > rows", Box::new(|g| route(g, &logits, t + 1, k, &ids, &weights).map(drop))),
        ("route: ids not u32", Box::new(|g| route(g, &logits, t, k, &weights, &weights).map(drop))),
        ("route: ids too short", Box::new(|g| route(g, &logits, t, 3, &ids, &f32s(&[t * 3])).map(drop))),
        ("route: 1-D logits", Box::new(|g| route(g, &f32s(&[t * e]), t, k, &ids, &weights).map(drop))),
        ("moe: t = 0", Box::new(|g| moe_ffn(g, &x, 0, &ex.stacks, &ids, &weights, k, &scratch, &out))),
        ("moe: t > scratch", Box::new(|g| moe_ffn(g, &x, t + 1, &ex.stacks, &ids, &weights, k, &scratch, &out))),
        ("moe: x width", Box::new(|g| moe_ffn(g, &wide_x, t, &ex.stacks, &ids, &weights, k, &scratch, &out))),
        ("moe: out width", Box::new(|g| moe_ffn(g, &x, t, &ex.stacks, &ids, &weights, k, &scratch, &wide_x))),
        ("moe: stack gap", Box::new(|g| moe_ffn(g, &x, t, &gapped, &ids, &weights, k, &scratch, &out))),
        ("moe: no stacks", Box::new(|g| moe_ffn(g, &x, t, &[], &ids, &weights, k, &scratch, &out))),
        ("moe: mixed dtypes", Box::new(|g| moe_ffn(g, &x, t, &mixed, &ids, &weights, k, &scratch, &out))),
        (
            "moe: one stack of 2 of 4",
            Box::new(|g| moe_ffn(g, &x, t, &ex.stacks[..1], &ids, &weights, k, &scratch, &out)),
        ),
        ("moe: top_k > scratch", Box::new(|g| moe_ffn(g, &x, t, &ex.stacks, &ids, &weights, k + 1, &scratch, &out))),
        ("moe: weights not f32", Box::new(|g| moe_ffn(g, &x, t, &ex.stacks, &ids, &ids, k, &scratch, &out))),
        ("mlp: down transposed", Box::new(|g| dense_mlp(g, &x, t, &gate, &gate, &gate, &scratch, &out))),
        ("mlp: t > scratch", Box::new(|g| dense_mlp(g, &x, t + 1, &gate, &gate, &down, &scratch, &out))),
        (
            "mlp norm: weight [H + 1], decode",
            Box::new(|g| dense_mlp_rms_norm(g, &x, norm, t, &gate, &gate, &down, &out, &scratch, &x)),
        ),
        (
            "mlp norm: weight [H + 1], prefill",
            Box::new(|g| {
                g.tuning.tiled_min_rows = 1;
                dense_mlp_rms_norm(g, &x, norm, t, &gate, &gate, &down, &out, &scratch, &x)
            }),
        ),
        ("scratch: top_k > E", Box::new(|_| MoeScratch::new(ctx, t, h, i, e, e + 1).map(drop))),
    ];
    for (what, case) in cases {
        let mut g = Graph::new(ctx);
        match case(&mut g) {
            Err(Error::Shape { op, message }) => eprintln!("{what}: {op}: {message}"),
            other => panic!("{what}: expected a shape error, got {other:?}"),
        }
    }
}
