//! Quantized weights (q8, q4): the CPU reference formats, the GPU kernels reading them (matmul, the MoE experts)
//! against the reference on the dequantized weights, and the fidelity of quantized models against unquantized
//! ones (top-1 agreement of logits on the fixtures; perplexity on the default model's held-out text).

mod common;

use common::{assert_close, gpu, Rng};
use jamba_wgpu::gpu::{Context, DType, Graph, Tensor, Tuning};
use jamba_wgpu::kernels::{matmul, ROW_THREADS};
use jamba_wgpu::reference;
use jamba_wgpu::weights::quant::{self, QuantFormat};

/// Every tuning a kernel is built with on this adapter: each row width, matvec and tiled matmul.
fn tunings() -> Vec<Tuning> {
    let mut out = Vec::new();
    for row_threads in ROW_THREADS {
        for tiled_min_rows in [1, usize::MAX] {
            out.push(Tuning { row_threads, tiled_min_rows });
        }
    }
    out
}

/// Quantizes `w` [rows, cols], uploads the packed rows; returns the tensor and the dequantized values.
fn upload_quantized(ctx: &Context, label: &str, format: QuantFormat, w: &[f32], shape: &[usize]) -> (Tensor, Vec<f32>) {
    let cols = *shape.last().unwrap();
    let q = quant::quantize(format, w, w.len() / cols, cols).unwrap();
    let tensor = ctx.tensor(label, shape, DType::Quant(format), Some(&q.packed())).unwrap();
    (tensor, q.dequantize())
}

/// K for a format: any for q8, a multiple of the group for q4.
fn k_for(format: QuantFormat, k: usize) -> usize {
    format.group_size().map_or(k, |g| k.div_ceil(g) * g)
}

// ---- the reference formats (no GPU) ----

#[test]
fn quantization_error_is_within_half_a_step() {
    let mut rng = Rng::new(11);
    let (rows, cols) = (7, 128);
    let mut w = rng.vec(rows * cols, 1.0);
    w[5] = 3.0; // an outlier
    w[cols..2 * cols].fill(0.0); // an all-zero row
    for format in QuantFormat::ALL {
        let q = quant::quantize(format, &w, rows, cols).unwrap();
        let back = q.dequantize();
        let group = format.group_size().unwrap_or(cols);
        for (r, (row, got)) in w.chunks(cols).zip(back.chunks(cols)).enumerate() {
            for (g, (values, got)) in row.chunks(group).zip(got.chunks(group)).enumerate() {
                let (lo, hi) = values.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let amax = lo.abs().max(hi.abs());
                // Half a quantization step, plus f16 rounding of the scale (and of the min) for q4. Symmetric q4
                // maps the extreme to -8 (llama.cpp's Q4_0), so the far side clips at 7 steps: a whole step there.
                let tol = match format {
                    QuantFormat::Q8 => amax / 127.0 * 0.5,
                    QuantFormat::Q4 { min: false, .. } => amax / 8.0,
                    QuantFormat::Q4 { min: true, .. } => (hi - lo) / 15.0 * 0.5,
                } + amax * 2e-3
                    + 1e-7;
                for (&v, &b) in values.iter().zip(got) {
                    assert!((v - b).abs() <= tol, "{format} row {r} group {g}: {v} -> {b} (tol {tol})");
                }
            }
        }
        assert!(back[cols..2 * cols].iter().all(|&v| v == 0.0), "{format}: a zero row stays zero");
    }
}

#[test]
fn packed_rows_hold_the_disk_bytes_in_whole_words() {
    let mut rng = Rng::new(12);
    for format in QuantFormat::ALL {
        for cols in [64, 192, 320] {
            let q = quant::quantize(format, &rng.vec(3 * cols, 1.0), 3, cols).unwrap();
            let packed = q.packed();
            assert_eq!(packed.len(), 3 * 4 * format.row_words(cols), "{format} cols {cols}");
            assert_eq!(packed.len(), DType::Quant(format).storage_bytes(&[3, cols]));
            let row = &packed[4 * format.row_words(cols)..];
            assert_eq!(&row[..format.scale_bytes(cols)], &q.scales[format.scale_bytes(cols)..2 * format.scale_bytes(cols)]);
        }
    }
    // q8 takes any K; its rows are padded to a word.
    assert_eq!(QuantFormat::Q8.row_words(5), 1 + 2);
}

#[test]
fn bad_quantization_requests_are_clear_errors() {
    let e = QuantFormat::parse("q3", 32, false).unwrap_err().to_string();
    assert!(e.contains("unknown quantization format `q3`"), "{e}");
    let e = QuantFormat::parse("q4", 48, false).unwrap_err().to_string();
    assert!(e.contains("group size 48"), "{e}");
    let q4 = QuantFormat::parse("q4", 64, false).unwrap();
    let e = quant::quantize(q4, &[0.0; 2 * 96], 2, 96).unwrap_err().to_string();
    assert!(e.contains("96 columns") && e.contains("group size 64"), "{e}");
}

// ---- the kernels on quantized weights ----

#[test]
fn matmul_on_quantized_weights_matches_reference_on_dequantized() {
    let Some(ctx) = gpu() else { return };
    // (t, n, K before rounding K up to the group size): n and t not multiples of the tiles or workgroups.
    let shapes = [(1, 1, 5), (1, 37, 65), (2, 100, 33), (33, 70, 130), (65, 31, 17)];
    let mut rng = Rng::new(13);
    for format in QuantFormat::ALL {
        for &(t, n, k) in &shapes {
            let k = k_for(format, k);
            let x = rng.vec(t * k, 1.0);
            let x_gpu = ctx.upload_f32("x", &[t, k], &x).unwrap();
            let (w, dequantized) = upload_quantized(ctx, "w", format, &rng.vec(n * k, 1.0), &[n, k]);
            let want = reference::matmul(&x, &dequantized, t, n, k);
            for tuning in tunings() {
                let y = ctx.zeros("y", &[t, n], DType::F32).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = tuning;
                matmul::matmul(&mut g, &x_gpu, &w, &y, false).unwrap();
                g.run().unwrap();
                let got = ctx.read_f32(&y).unwrap();
                assert_close(&format!("{format} matmul {t}x{n}x{k} {tuning:?}"), &got, &want, 2e-6 * k as f32, 1e-4);
            }
        }
    }
}

/// out += sum_j p_j expert_{e_j}(x) on the CPU, from the dequantized expert weights [E][gate, up, down].
fn reference_moe(x: &[f32], logits: &[f32], experts: &[[Vec<f32>; 3]], t: usize, h: usize, f: usize, top_k: usize) -> Vec<f32> {
    let (ids, weights) = reference::moe::route(logits, experts.len(), top_k);
    let mut out = vec![0.0f32; t * h];
    for (slot, (&e, &p)) in ids.iter().zip(&weights).enumerate() {
        let r = slot / top_k;
        let [gate, up, down] = &experts[e as usize];
        let xr = &x[r * h..(r + 1) * h];
        let act = reference::silu_mul(&reference::matmul(xr, gate, 1, f, h), &reference::matmul(xr, up, 1, f, h));
        let y = reference::matmul(&act, down, 1, h, f);
        out[r * h..(r + 1) * h].iter_mut().zip(&y).for_each(|(o, y)| *o += p * y);
    }
    out
}

#[test]
fn moe_on_quantized_experts_matches_reference_decode_and_prefill() {
    use jamba_wgpu::kernels::moe::{self, ExpertStack, MoeScratch};
    let Some(ctx) = gpu() else { return };
    let (h, f, n_experts, top_k) = (64, 128, 5, 2);
    let mut rng = Rng::new(14);
    for format in QuantFormat::ALL {
        // Experts 0..3 and 3..5 in two stacks, as a layer over the binding limit is uploaded.
        let mut dequantized: Vec<[Vec<f32>; 3]> = Vec::new();
        let mut stacks = Vec::new();
        for (first, count) in [(0, 3), (3, 2)] {
            let mut upload = |rows: usize, cols: usize, which: &str| {
                let w = rng.vec(count * rows * cols, 0.2);
                let label = format!("experts[{first}..].{which}");
                let (tensor, values) = upload_quantized(ctx, &label, format, &w, &[count, rows, cols]);
                (tensor, values)
            };
            let (gate, gate_v) = upload(f, h, "gate");
            let (up, up_v) = upload(f, h, "up");
            let (down, down_v) = upload(h, f, "down");
            for e in 0..count {
                let (a, b) = (e * f * h, (e + 1) * f * h);
                dequantized.push([gate_v[a..b].to_vec(), up_v[a..b].to_vec(), down_v[a..b].to_vec()]);
            }
            stacks.push(ExpertStack { first, count, gate, up, down });
        }
        for t in [1, 3, 37] {
            let x = rng.vec(t * h, 1.0);
            let logits = rng.vec(t * n_experts, 2.0);
            let want = reference_moe(&x, &logits, &dequantized, t, h, f, top_k);
            for tuning in tunings() {
                let x_gpu = ctx.upload_f32("x", &[t, h], &x).unwrap();
                let logits_gpu = ctx.upload_f32("logits", &[t, n_experts], &logits).unwrap();
                let ids = ctx.zeros("ids", &[t * top_k], DType::U32).unwrap();
                let weights = ctx.zeros("weights", &[t * top_k], DType::F32).unwrap();
                let out = ctx.zeros("out", &[t, h], DType::F32).unwrap();
                let scratch = MoeScratch::new(ctx, t, h, f, n_experts, top_k).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = tuning;
                moe::route(&mut g, &logits_gpu, t, top_k, &ids, &weights).unwrap();
                moe::moe_ffn(&mut g, &x_gpu, t, &stacks, &ids, &weights, top_k, &scratch, &out).unwrap();
                g.run().unwrap();
                let got = ctx.read_f32(&out).unwrap();
                assert_close(&format!("{format} moe t={t} {tuning:?}"), &got, &want, 1e-5, 1e-4);
            }
        }
    }
}
