//! Tier 2: the basic kernels (matmul, RMSNorm, pointwise, embedding, argmax) against their CPU references on
//! whatever adapter is present, for every weight dtype and every tuning variant, on shapes that are not
//! multiples of the workgroup or tile sizes. Tolerances are stated per case.

mod common;

use common::{assert_close, coop_gpu, f16_rounded, gpu, own_gpu, upload_weights, Rng};
use jamba_wgpu::gpu::{Context, ContextOptions, DType, Graph, MatvecReads, Tensor, Tuning};
use jamba_wgpu::kernels::matmul::{Normed, RmsNorm};
use jamba_wgpu::kernels::{argmax, elementwise, embed, matmul, rms_norm, Cols, IntoCols, FLOAT_DTYPES, WEIGHT_DTYPES};
use jamba_wgpu::{reference, Error};

#[test]
fn matmul_matches_reference() {
    let Some(ctx) = gpu() else { return };
    // (40, 33, 72): rows of whole quads (f32, bf16) over more rows than a CPU invocation's block, k past a round.
    let shapes =
        [(1, 1, 1), (1, 37, 65), (2, 100, 33), (3, 64, 64), (33, 70, 130), (40, 33, 72), (65, 31, 17), (129, 131, 50)];
    let mut rng = Rng::new(1);
    for &(t, n, k) in &shapes {
        let x = rng.vec(t * k, 1.0);
        let x_gpu = ctx.upload_f32("x", &[t, k], &x).unwrap();
        for dtype in FLOAT_DTYPES {
            let (w, w_rounded) = upload_weights(ctx, "w", &[n, k], &rng.vec(n * k, 1.0), dtype);
            let want = reference::matmul(&x, &w_rounded, t, n, k);
            for tuning in ctx.tunings() {
                let y = ctx.zeros("y", &[t, n], DType::F32).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = tuning;
                matmul::matmul(&mut g, &x_gpu, &w, &y, false).unwrap();
                g.run().unwrap();
                let got = ctx.read_f32(&y).unwrap();
                // f32 accumulation in another order: error grows with k.
                assert_close(&format!("matmul {t}x{n}x{k} {dtype:?} {tuning:?}"), &got, &want, 2e-6 * k as f32, 1e-5);
            }
        }
    }
}

/// A tuning that reads a matvec's x in turns across subgroups of a width the adapter's are not is refused as the
/// context opens, naming the width and what the adapter has; the adapter's own width is its CPU tuning's.
#[test]
fn x_in_turns_needs_subgroups_of_its_width() {
    let Some(shared) = gpu() else { return };
    let adapter = std::env::var("JAMBA_WGPU_ADAPTER").ok();
    let tuning = Tuning { x_lanes: 3, ..Tuning::cpu(false) };
    let options = ContextOptions { adapter: adapter.clone(), tuning: Some(tuning), ..Default::default() };
    let e = Context::new(&options).err().expect("no adapter has subgroups 3 wide").to_string();
    let named = e.contains("x read in turns of 3 lanes needs subgroups exactly 3 wide") && e.contains(&shared.info().name);
    assert!(named, "{e}");
    if let Some(width) = shared.subgroup_width().filter(|_| shared.is_cpu()) {
        assert_eq!(shared.tuning().x_lanes, width);
        let options = ContextOptions { adapter, tuning: Some(Tuning { x_lanes: width, ..tuning }), ..Default::default() };
        Context::new(&options).expect("the adapter's own width");
    }
}

#[test]
fn coop_prefill_matches_the_f16_reference_or_names_what_the_adapter_lacks() {
    // Prefill::Coop needs matrix units that software adapters lack: there, asking for it is a typed refusal that
    // names the kernel, what it needs and what the adapter has. Where it runs, its products are of x and W
    // rounded to f16, summed in f32: the reference of the rounded values, to f32 summation order.
    let Some(ctx) = coop_gpu() else { return };
    let mut rng = Rng::new(17);
    // Whole tiles, edges in every dimension, k not a multiple of the 32-wide step, k of many steps.
    for (t, n, k) in [(64, 64, 32), (65, 70, 130), (129, 131, 50), (17, 200, 1000)] {
        let x = rng.vec(t * k, 1.0);
        let x_gpu = ctx.upload_f32("x", &[t, k], &x).unwrap();
        let base = rng.vec(t * n, 1.0);
        for dtype in WEIGHT_DTYPES {
            let (w, w_rounded) = upload_weights(&ctx, "w", &[n, k], &rng.vec(n * k, 1.0), dtype);
            let product = reference::matmul(&f16_rounded(&x), &f16_rounded(&w_rounded), t, n, k);
            for accumulate in [false, true] {
                let y = ctx.upload_f32("y", &[t, n], &base).unwrap();
                let mut g = Graph::new(&ctx);
                g.tuning.tiled_min_rows = 1;
                matmul::matmul(&mut g, &x_gpu, &w, &y, accumulate).unwrap();
                g.run().unwrap();
                let want: Vec<f32> = match accumulate {
                    true => base.iter().zip(&product).map(|(b, p)| b + p).collect(),
                    false => product.clone(),
                };
                let what = format!("coop matmul {t}x{n}x{k} {dtype:?} accumulate {accumulate}");
                assert_close(&what, &ctx.read_f32(&y).unwrap(), &want, 2e-6 * k as f32, 1e-5);
            }
        }
    }
}

#[test]
fn unrolled_matvecs_sum_exactly_as_one_word_a_round() {
    // Rounds of 2 or 4 words per invocation (MATVEC_UNROLL, at one row per row group) add the same products in
    // the same order as one word a round: bit for bit the same y, with and without the fused norm, for every weight
    // type, at k that ends rounds part way (words past the row's last meet x of 0).
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(11);
    for (t, n, k) in [(1, 40, 192), (2, 9, 320), (1, 5, 64)] {
        let x = ctx.upload_f32("x", &[t, k], &rng.vec(t * k, 1.0)).unwrap();
        let norm = ctx.upload_f32("norm", &[k], &rng.vec(k, 1.0)).unwrap();
        for dtype in WEIGHT_DTYPES {
            let (w, _) = upload_weights(ctx, "w", &[n, k], &rng.vec(n * k, 1.0), dtype);
            for row_threads in jamba_wgpu::kernels::ROW_THREADS {
                let run = |unroll: u32, fused: bool| {
                    let y = ctx.zeros("y", &[t, n], DType::F32).unwrap();
                    let mut g = Graph::new(ctx);
                    g.tuning.row_threads = row_threads;
                    g.tuning.tiled_min_rows = usize::MAX;
                    g.tuning.matvec_min_workgroups = usize::MAX; // one row per row group
                    g.tuning.matvec_unroll = unroll;
                    if fused {
                        let normed = ctx.zeros("normed", &[t, k], DType::F32).unwrap();
                        let norm = RmsNorm { weight: &norm, eps: 1e-6 };
                        matmul::matmul_rms_norm(&mut g, &x, norm, &w, &y, false, Normed::Scratch(normed.into_cols().unwrap())).unwrap();
                    } else {
                        matmul::matmul(&mut g, &x, &w, &y, false).unwrap();
                    }
                    g.run().unwrap();
                    ctx.read_f32(&y).unwrap()
                };
                for fused in [false, true] {
                    let once = run(1, fused);
                    for unroll in [2, 4] {
                        let what = format!("{t}x{n}x{k} {dtype:?}, {row_threads} lanes, fused norm {fused}, unroll {unroll}");
                        assert!(run(unroll, fused) == once, "{what}: differs from one word a round");
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_parts_add_up_to_the_matmul() {
    // A decode matvec over k in parts, each part's sums stored apart: added up here, x W^T, for every weight
    // type, row width and way of reading, with k that leaves the last part short (1000) or not on words (999).
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(12);
    for (t, n, k) in [(1, 48, 512), (2, 9, 640), (1, 37, 1000), (1, 5, 999)] {
        let x = rng.vec(t * k, 1.0);
        let x_gpu = ctx.upload_f32("x", &[t, k], &x).unwrap();
        let dtypes = if k % 64 == 0 { WEIGHT_DTYPES.to_vec() } else { FLOAT_DTYPES.to_vec() };
        for dtype in dtypes {
            let (w, w_rounded) = upload_weights(ctx, "w", &[n, k], &rng.vec(n * k, 1.0), dtype);
            let want = reference::matmul(&x, &w_rounded, t, n, k);
            // The row widths of CPU adapters and GPUs (64 lanes take parts of at least 512 columns).
            for row_threads in [1, 32] {
                for (unroll, matvec_reads) in [(1, MatvecReads::Codes), (4, MatvecReads::Words), (1, MatvecReads::Quads)] {
                    let mut g = Graph::new(ctx);
                    g.tuning.row_threads = row_threads;
                    g.tuning.tiled_min_rows = usize::MAX;
                    g.tuning.matvec_unroll = unroll;
                    g.tuning.matvec_reads = matvec_reads;
                    g.tuning.matvec_split_workgroups = usize::MAX; // as many parts as k allows, up to 16
                    let parts = matmul::k_parts(&g, t, &w);
                    let what = format!(
                        "matmul_parts {t}x{n}x{k} {dtype:?}, {row_threads} lanes, unroll {unroll}, {matvec_reads:?}, {parts} parts"
                    );
                    assert!(parts > 1, "{what}: not cut");
                    let stride = (t + 1) * n; // parts need not be packed: a row apart
                    let y = ctx.zeros("y parts", &[parts * (t + 1), n], DType::F32).unwrap();
                    let y_rows = Cols::slice(&y, 0, n).unwrap().rows(t).unwrap();
                    matmul::matmul_parts(&mut g, &x_gpu, &w, y_rows, parts, stride).unwrap();
                    // Another count of parts than k_parts gives is refused.
                    assert!(matmul::matmul_parts(&mut g, &x_gpu, &w, y_rows, parts + 1, stride).is_err(), "{what}");
                    g.run().unwrap();
                    let got = ctx.read_f32(&y).unwrap();
                    let sums: Vec<f32> = (0..t * n).map(|e| (0..parts).map(|s| got[s * stride + e]).sum()).collect();
                    assert_close(&what, &sums, &want, 2e-6 * k as f32, 1e-5);
                }
            }
        }
    }
}

#[test]
fn matmul_accumulates_into_column_slices() {
    let Some(ctx) = gpu() else { return };
    let (t, n, k) = (9, 24, 40);
    let mut rng = Rng::new(2);
    // x is columns 5..45 of a [t, 50] tensor; y is columns 3..27 of a [t, 30] tensor that already holds values.
    let x_wide = rng.vec(t * 50, 1.0);
    let y_wide = rng.vec(t * 30, 1.0);
    let w = rng.vec(n * k, 1.0);
    let x: Vec<f32> = x_wide.chunks(50).flat_map(|r| r[5..45].to_vec()).collect();
    let product = reference::matmul(&x, &w, t, n, k);
    let mut want = y_wide.clone();
    for r in 0..t {
        for j in 0..n {
            want[r * 30 + 3 + j] += product[r * n + j];
        }
    }
    for tuning in ctx.tunings() {
        let x_gpu = ctx.upload_f32("x", &[t, 50], &x_wide).unwrap();
        let w_gpu = ctx.upload_f32("w", &[n, k], &w).unwrap();
        let y_gpu = ctx.upload_f32("y", &[t, 30], &y_wide).unwrap();
        let mut g = Graph::new(ctx);
        g.tuning = tuning;
        let x_cols = Cols::slice(&x_gpu, 5, 40).unwrap();
        let y_cols = Cols::slice(&y_gpu, 3, 24).unwrap();
        matmul::matmul(&mut g, x_cols, &w_gpu, y_cols, true).unwrap();
        g.run().unwrap();
        assert_close(&format!("accumulate {tuning:?}"), &ctx.read_f32(&y_gpu).unwrap(), &want, 1e-4, 1e-5);
    }
}

#[test]
fn matmul_rms_norm_matches_reference() {
    let Some(ctx) = gpu() else { return };
    // (t, n, K before rounding K up to a q4 group): K and n not multiples of anything, n = 1, t = 1..3.
    let shapes: [(usize, usize, usize); 5] = [(1, 1, 1), (1, 37, 65), (2, 100, 33), (3, 1, 130), (3, 64, 300)];
    let eps = 1e-6;
    let mut rng = Rng::new(10);
    for dtype in WEIGHT_DTYPES {
        for &(t, n, k) in &shapes {
            let k = match dtype {
                DType::Quant(format) => format.group_size().map_or(k, |g| k.div_ceil(g) * g),
                _ => k,
            };
            // x: columns 3..3 + K of the first t rows of a [t + 1, K + 5] tensor.
            let x_wide = rng.vec((t + 1) * (k + 5), 3.0);
            let x: Vec<f32> = x_wide.chunks(k + 5).take(t).flat_map(|r| r[3..3 + k].to_vec()).collect();
            let norm_w = rng.vec(k, 1.0);
            let (w, w_rounded) = upload_weights(ctx, "w", &[n, k], &rng.vec(n * k, 1.0), dtype);
            let y0 = rng.vec(t * n, 1.0);
            let normed_want = reference::rms_norm(&x, &norm_w, eps);
            let product = reference::matmul(&normed_want, &w_rounded, t, n, k);
            let x_gpu = ctx.upload_f32("x", &[t + 1, k + 5], &x_wide).unwrap();
            let norm_gpu = ctx.upload_f32("norm", &[k], &norm_w).unwrap();
            let norm = RmsNorm { weight: &norm_gpu, eps };
            let x_cols = Cols::slice(&x_gpu, 3, k).unwrap().rows(t).unwrap();
            for tuning in ctx.tunings() {
                for (accumulate, keep) in [(false, false), (false, true), (true, false), (true, true)] {
                    let what = format!("matmul_rms_norm {t}x{n}x{k} {dtype:?} {tuning:?} acc {accumulate} keep {keep}");
                    let y = ctx.upload_f32("y", &[t, n], &y0).unwrap();
                    let pair_y = ctx.upload_f32("pair y", &[t, n], &y0).unwrap();
                    // normed: [t + 1, K], one row more than fed, which must stay untouched.
                    let normed = ctx.zeros("normed", &[t + 1, k], DType::F32).unwrap();
                    let pair_normed = ctx.zeros("pair normed", &[t, k], DType::F32).unwrap();
                    let normed_rows = Cols::slice(&normed, 0, k).unwrap().rows(t).unwrap();
                    let out = if keep { Normed::Keep(normed_rows) } else { Normed::Scratch(normed_rows) };
                    let mut g = Graph::new(ctx);
                    g.tuning = tuning;
                    matmul::matmul_rms_norm(&mut g, x_cols, norm, &w, &y, accumulate, out).unwrap();
                    // The unfused pair on the same tuning: rms_norm, then matmul reading its output.
                    rms_norm::rms_norm(&mut g, x_cols, &norm_gpu, eps, &pair_normed).unwrap();
                    matmul::matmul(&mut g, &pair_normed, &w, &pair_y, accumulate).unwrap();
                    let fused = matmul::is_matvec(&g, t);
                    g.run().unwrap();

                    let got = ctx.read_f32(&y).unwrap();
                    let want: Vec<f32> =
                        product.iter().zip(&y0).map(|(p, y)| if accumulate { p + y } else { *p }).collect();
                    let rtol = if dtype.is_quantized() { 1e-4 } else { 1e-5 };
                    // f32 accumulation in another order than the reference's: error grows with K.
                    assert_close(&what, &got, &want, 2e-6 * k as f32, rtol);
                    assert_close(&format!("{what} vs unfused"), &got, &ctx.read_f32(&pair_y).unwrap(), 1e-6, 1e-5);
                    // The normalised rows are stored when kept (and always on the unfused path), else not at all;
                    // never past the rows fed.
                    let got_normed = ctx.read_f32(&normed).unwrap();
                    let (rows, past) = got_normed.split_at(t * k);
                    if keep || !fused {
                        assert_close(&format!("{what} normed"), rows, &normed_want, 1e-6, 1e-6);
                    } else {
                        assert!(rows.iter().all(|&v| v == 0.0), "{what}: normed written though not kept");
                    }
                    assert!(past.iter().all(|&v| v == 0.0), "{what}: normed written past row {t}");
                }
            }
        }
    }
}

#[test]
fn matmul_rms_norm_bad_calls_are_typed_errors() {
    let Some(ctx) = gpu() else { return };
    let f32s = |label: &str, shape: &[usize]| ctx.zeros(label, shape, DType::F32).unwrap();
    let (x, w, y, normed) = (f32s("x", &[2, 8]), f32s("w", &[4, 8]), f32s("y", &[2, 4]), f32s("normed", &[2, 8]));
    let (norm_w, short, narrow) = (f32s("norm", &[8]), f32s("short", &[7]), f32s("narrow", &[2, 7]));
    let halves = ctx.zeros("halves", &[8], DType::F16).unwrap();
    let cols = |t| Cols::slice(t, 0, t.shape()[1]).unwrap();
    let cases = [
        ("`short` is [7], expected [8]", &short, &normed),
        ("`halves` is F16", &halves, &normed),
        ("normed `narrow` is [2, 7]", &norm_w, &narrow),
        ("`x` is bound twice and written", &norm_w, &x),
    ];
    for (message, weight, out) in cases {
        let mut g = Graph::new(ctx);
        g.tuning.tiled_min_rows = usize::MAX;
        let norm = RmsNorm { weight, eps: 1e-6 };
        let e = matmul::matmul_rms_norm(&mut g, &x, norm, &w, &y, false, Normed::Keep(cols(out))).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains(message), "{message}: {e}");
    }
}

#[test]
fn rms_norm_matches_reference() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(3);
    for &(rows, cols) in &[(1, 1), (1, 192), (5, 7), (64, 64), (65, 300), (3, 4096)] {
        let x = rng.vec(rows * cols, 3.0);
        let w = rng.vec(cols, 1.0);
        let want = reference::rms_norm(&x, &w, 1e-6);
        for tuning in ctx.tunings() {
            let x_gpu = ctx.upload_f32("x", &[rows, cols], &x).unwrap();
            let w_gpu = ctx.upload_f32("w", &[cols], &w).unwrap();
            let y = ctx.zeros("y", &[rows, cols], DType::F32).unwrap();
            let mut g = Graph::new(ctx);
            g.tuning = tuning;
            rms_norm::rms_norm(&mut g, &x_gpu, &w_gpu, 1e-6, &y).unwrap();
            g.run().unwrap();
            assert_close(&format!("rms_norm {rows}x{cols} {tuning:?}"), &ctx.read_f32(&y).unwrap(), &want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn rms_norm_of_column_slices() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(4);
    // Mamba's dt/B/C norms: columns 8..24 of a [7, 40] x_proj output, into the same columns of another tensor
    // (rows on quads: read by quads with one invocation per row); and columns 6..22 (rows off them).
    for first in [8, 6] {
        let x = rng.vec(7 * 40, 2.0);
        let w = rng.vec(16, 1.0);
        let slice: Vec<f32> = x.chunks(40).flat_map(|r| r[first..first + 16].to_vec()).collect();
        let want = reference::rms_norm(&slice, &w, 1e-6);
        let x_gpu = ctx.upload_f32("x", &[7, 40], &x).unwrap();
        let w_gpu = ctx.upload_f32("w", &[16], &w).unwrap();
        let y = ctx.zeros("y", &[7, 40], DType::F32).unwrap();
        let mut g = Graph::new(ctx);
        let (x_cols, y_cols) = (Cols::slice(&x_gpu, first, 16).unwrap(), Cols::slice(&y, first, 16).unwrap());
        rms_norm::rms_norm(&mut g, x_cols, &w_gpu, 1e-6, y_cols).unwrap();
        g.run().unwrap();
        let got = ctx.read_f32(&y).unwrap();
        let outside = got.chunks(40).flat_map(|r| [&r[..first], &r[first + 16..]].concat()).all(|v| v == 0.0);
        assert!(outside, "rms_norm slice at {first} wrote outside its columns");
        let got: Vec<f32> = got.chunks(40).flat_map(|r| r[first..first + 16].to_vec()).collect();
        assert_close(&format!("rms_norm slice at {first}"), &got, &want, 1e-5, 1e-5);
    }
}

#[test]
fn pointwise_kernels_match_reference() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(5);
    for n in [1, 63, 64, 65, 1000] {
        let a = rng.vec(n, 30.0); // spans softplus's threshold at 20
        let b = rng.vec(n, 2.0);
        let run = |f: &dyn Fn(&mut Graph, &Tensor, &Tensor), a: &[f32], b: &[f32]| {
            let a_gpu = ctx.upload_f32("a", &[n], a).unwrap();
            let b_gpu = ctx.upload_f32("b", &[n], b).unwrap();
            let mut g = Graph::new(ctx);
            f(&mut g, &a_gpu, &b_gpu);
            g.run().unwrap();
            ctx.read_f32(&a_gpu).unwrap()
        };
        let got = run(&|g, gate, up| { elementwise::silu_mul(g, gate, up).unwrap(); }, &a, &b);
        assert_close("silu_mul", &got, &reference::silu_mul(&a, &b), 1e-5, 1e-5);

        let got = run(&|g, x, y| { elementwise::add_assign(g, x, y).unwrap(); }, &a, &b);
        let mut want = a.clone();
        reference::add_assign(&mut want, &b);
        assert_close("add_assign", &got, &want, 1e-6, 0.0);

        let got = run(&|g, out, x| { elementwise::softplus(g, x, out).unwrap(); }, &b, &a);
        let want: Vec<f32> = a.iter().map(|&v| reference::softplus(v)).collect();
        assert_close("softplus", &got, &want, 1e-5, 1e-5);
    }
}

#[test]
fn embed_matches_reference() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(6);
    let (vocab, dim) = (37, 19);
    let ids: Vec<u32> = vec![0, 36, 5, 5, 17, 1, 36];
    for dtype in FLOAT_DTYPES {
        let (table, rounded) = upload_weights(ctx, "table", &[vocab, dim], &rng.vec(vocab * dim, 1.0), dtype);
        let ids_gpu = ctx.upload_u32("ids", &[ids.len()], &ids).unwrap();
        let y = ctx.zeros("y", &[ids.len(), dim], DType::F32).unwrap();
        let mut g = Graph::new(ctx);
        embed::embed(&mut g, &table, &ids_gpu, &y).unwrap();
        g.run().unwrap();
        // A lookup is exact: no arithmetic.
        assert_close(&format!("embed {dtype:?}"), &ctx.read_f32(&y).unwrap(), &reference::embed(&rounded, dim, &ids), 0.0, 0.0);
    }
}

#[test]
fn argmax_matches_reference() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(7);
    for &(rows, cols) in &[(1, 1), (1, 65), (3, 1000), (2, 70_000)] {
        let mut x = rng.vec(rows * cols, 5.0);
        if cols > 10 {
            // A tie between two maxima: the lower index must win.
            x[7] = 100.0;
            x[cols - 2] = 100.0;
        }
        let x_gpu = ctx.upload_f32("x", &[rows, cols], &x).unwrap();
        let out = ctx.zeros("out", &[rows], DType::U32).unwrap();
        let mut g = Graph::new(ctx);
        argmax::argmax(&mut g, &x_gpu, &out).unwrap();
        g.run().unwrap();
        assert_eq!(ctx.read_u32(&out).unwrap(), reference::argmax(&x, cols), "argmax {rows}x{cols}");
    }
}

#[test]
fn bad_calls_are_typed_errors() {
    let Some(ctx) = gpu() else { return };
    let x = ctx.zeros("x", &[2, 8], DType::F32).unwrap();
    let w = ctx.zeros("w", &[4, 9], DType::F32).unwrap();
    let y = ctx.zeros("y", &[2, 4], DType::F32).unwrap();
    let mut g = Graph::new(ctx);
    let e = matmul::matmul(&mut g, &x, &w, &y, false).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("`w` [4, 9]"), "{e}");

    // The same buffer as input and output of one dispatch.
    let sq = ctx.zeros("square", &[4, 4], DType::F32).unwrap();
    let w4 = ctx.zeros("w4", &[4, 4], DType::F32).unwrap();
    let e = matmul::matmul(&mut g, &sq, &w4, &sq, false).unwrap_err();
    assert!(e.to_string().contains("`square` is bound twice"), "{e}");

    // A buffer over the device's binding limit.
    let limit = ctx.limits().max_storage_buffer_binding_size;
    let e = ctx.zeros("huge", &[(limit / 4 + 1) as usize], DType::F32).unwrap_err();
    assert!(matches!(e, Error::BufferTooLarge { .. }) && e.to_string().contains("`huge`"), "{e}");
}

#[test]
fn a_broken_shader_is_a_typed_error_on_the_device() {
    let Some(ctx) = gpu() else { return };
    static BROKEN: jamba_wgpu::gpu::Shader = jamba_wgpu::gpu::Shader {
        name: "broken",
        source: "@compute @workgroup_size(1) fn main() { let v: f32 = not_defined; }",
        common: &[],
    };
    static KERNEL: jamba_wgpu::gpu::Kernel = jamba_wgpu::gpu::Kernel {
        shader: &BROKEN,
        entry: "main",
        params: &<elementwise::ElementwiseParams as jamba_wgpu::gpu::Params>::LAYOUT,
        bindings: &[],
        variants: || vec![vec![]],
    };
    let e = ctx.pipeline(&KERNEL, &[]).err().expect("a broken shader must not compile");
    assert!(e.to_string().contains("shaders/broken.wgsl"), "{e}");
    ctx.check().expect("the error was reported once, through the scope");
}

#[test]
fn pipelines_are_built_side_by_side_once_each_in_order() {
    // Its own context, so that no other test has built these variants yet.
    let Some(ctx) = own_gpu() else { return };
    let matvecs = (matmul::MATVEC.variants)();
    let [a, b] = [&matvecs[0], &matvecs[1]].map(|c| (&matmul::MATVEC, c.as_slice()));
    let variants = [a, (&argmax::ARGMAX, &[][..]), a, b];
    let before = ctx.counts().pipelines;
    let built = ctx.pipelines(&variants).unwrap();
    assert_eq!(ctx.counts().pipelines - before, 3, "three variants, one of them twice");
    for (pipeline, &(kernel, constants)) in built.iter().zip(&variants) {
        let cached = ctx.pipeline(kernel, constants).unwrap();
        let name = kernel.name();
        assert!(std::sync::Arc::ptr_eq(pipeline, &cached), "{name} {constants:?} is not the cached pipeline");
    }
    assert_eq!(ctx.counts().pipelines - before, 3, "built again");

    // A variant the device rejects (an override the shader does not declare), built beside others: its error.
    let unknown = [("NOT_AN_OVERRIDE", 1.0)];
    let built = ctx.pipelines(&[(&argmax::ARGMAX, &unknown[..]), b, (&elementwise::SOFTPLUS, &[][..])]);
    let e = built.err().expect("an unknown override must not build");
    assert!(e.to_string().contains("argmax::argmax"), "{e}");
    ctx.check().expect("the error was reported once, through its thread's scope");
}

#[test]
fn embed_from_a_row_split_table() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(8);
    let (vocab, dim) = (50, 12);
    let table = rng.vec(vocab * dim, 1.0);
    let ids: Vec<u32> = vec![49, 0, 20, 21, 7, 33];
    let ids_gpu = ctx.upload_u32("ids", &[ids.len()], &ids).unwrap();
    let y = ctx.zeros("y", &[ids.len(), dim], DType::F32).unwrap();
    let mut g = Graph::new(ctx);
    // Three parts, as a table over the binding limit is uploaded: rows 0..21, 21..40, 40..50.
    for (row0, row1) in [(0, 21), (21, 40), (40, 50)] {
        let part = ctx.upload_f32("part", &[row1 - row0, dim], &table[row0 * dim..row1 * dim]).unwrap();
        embed::embed_rows(&mut g, &part, row0, &ids_gpu, &y).unwrap();
    }
    g.run().unwrap();
    assert_close("embed parts", &ctx.read_f32(&y).unwrap(), &reference::embed(&table, dim, &ids), 0.0, 0.0);
}

/// `Context::pack` copies tensors (views among them) into one buffer, each at an offset a binding may start at,
/// and returns views that read back the same bytes: what the loader does with each layer's vectors.
#[test]
fn packed_tensors_read_back_unchanged_from_one_buffer() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(9);
    let align = ctx.storage_alignment() as usize;
    let whole = ctx.upload_f32("whole", &[align / 2], &rng.vec(align / 2, 1.0)).unwrap();
    let bf16: Vec<u8> = (0..6u16).flat_map(|i| half::bf16::from_f32(i as f32 - 2.5).to_bits().to_le_bytes()).collect();
    let tensors = [
        ctx.upload_f32("a", &[3], &rng.vec(3, 1.0)).unwrap(),
        ctx.upload_u32("b", &[2, 70], &(0..140).collect::<Vec<u32>>()).unwrap(),
        ctx.tensor("c", &[6], DType::BF16, Some(&bf16)).unwrap(),
        ctx.view(&whole, align as u64, &[5], "d, a view").unwrap(),
    ];
    let packed = ctx.pack("packed", &tensors.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(packed.len(), tensors.len());
    for (t, p) in tensors.iter().zip(&packed) {
        assert_eq!((p.label(), p.shape(), p.dtype()), (t.label(), t.shape(), t.dtype()));
        assert!(std::ptr::eq(p.buffer(), packed[0].buffer()), "`{}` is not in the packed buffer", p.label());
        assert_eq!(p.offset() % align as u64, 0, "`{}` at {}", p.label(), p.offset());
        assert_eq!(ctx.read_bytes(p).unwrap(), ctx.read_bytes(t).unwrap(), "bytes of `{}`", p.label());
    }
    let ends: Vec<_> = packed.iter().map(|p| (p.offset(), p.offset() + p.size_bytes())).collect();
    assert!(ends.windows(2).all(|w| w[0].1 <= w[1].0), "packed tensors overlap: {ends:?}");
}
