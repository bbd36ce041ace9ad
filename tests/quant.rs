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
