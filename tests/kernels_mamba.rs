//! Tier 2: the Mamba mixer's kernels, causal conv1d (`conv`) and the selective scan (`scan`), against their CPU
//! references (reference::conv1d, reference::ssm) on whatever adapter is present. Inputs are laid out as in
//! the model: xs and z are the two halves of in_proj's [T, 2I] output, B and C column slices of x_proj's
//! [T, R + 2N] output. Lengths straddle the chunk size (63, 64, 65, 300), the state is carried across calls,
//! and every scan path is run. `--nocapture` prints the largest errors seen.

mod common;

use common::{assert_close, gpu, upload_weights, Rng};
use jamba_wgpu::gpu::{Context, DType, Graph, Tensor, Tuning};
use jamba_wgpu::kernels::ssm_scan::{
    selective_scan, selective_scan_normed, selective_scan_with, ScanNorms, ScanPath, ScanScratch,
};
use jamba_wgpu::kernels::matmul::{self, ConvStep, RmsNorm};
use jamba_wgpu::kernels::{conv1d, Cols};
use jamba_wgpu::{reference, Error};

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// Columns `offset..offset + width` of a row-major [rows, cols] matrix.
fn columns(m: &[f32], cols: usize, offset: usize, width: usize) -> Vec<f32> {
    m.chunks(cols).flat_map(|row| row[offset..offset + width].to_vec()).collect()
}

// ---- conv1d ----

/// The conv's weights and its state, on the CPU and the GPU.
struct Conv {
    c: usize,
    k: usize,
    weight: Vec<f32>, // [C, K]
    bias: Vec<f32>,   // [C]
    state: Vec<f32>,  // [K-1, C], the reference's copy
    weight_gpu: Tensor,
    bias_gpu: Tensor,
    state_gpu: Tensor,
}

impl Conv {
    fn new(ctx: &Context, rng: &mut Rng, c: usize, k: usize) -> Conv {
        let (weight, bias, state) = (rng.vec(c * k, 0.5), rng.vec(c, 0.5), rng.vec((k - 1) * c, 1.0));
        Conv {
            weight_gpu: ctx.upload_f32("conv weight", &[c, k], &weight).unwrap(),
            bias_gpu: ctx.upload_f32("conv bias", &[c], &bias).unwrap(),
            state_gpu: ctx.upload_f32("conv state", &[k - 1, c], &state).unwrap(),
            c,
            k,
            weight,
            bias,
            state,
        }
    }

    /// Runs `t` rows of xs through both, reading xs as the first C columns of a [t, 2C] in_proj output.
    /// Returns (GPU out, reference out).
    fn step(&mut self, ctx: &Context, rng: &mut Rng, t: usize) -> (Vec<f32>, Vec<f32>) {
        let (c, k) = (self.c, self.k);
        let in_proj = rng.vec(t * 2 * c, 1.0); // [T, 2C]
        let want = reference::conv1d::causal_conv1d_silu(
            &columns(&in_proj, 2 * c, 0, c),
            &mut self.state,
            &self.weight,
            &self.bias,
            t,
            c,
            k,
        );
        let in_proj_gpu = ctx.upload_f32("in_proj out", &[t, 2 * c], &in_proj).unwrap();
        let out = ctx.zeros("conv out", &[t + 3, c], DType::F32).unwrap(); // more rows than needed
        let mut g = Graph::new(ctx);
        let xs = Cols::slice(&in_proj_gpu, 0, c).unwrap();
        conv1d::causal_conv1d_silu(&mut g, xs, &self.state_gpu, &self.weight_gpu, &self.bias_gpu, &out).unwrap();
        g.run().unwrap();
        let got = ctx.read_f32(&out).unwrap();
        (got[..t * c].to_vec(), want)
    }

    fn check_state(&self, ctx: &Context, what: &str) -> f32 {
        let got = ctx.read_f32(&self.state_gpu).unwrap();
        // The state is a copy of inputs: exact.
        assert_eq!(got, self.state, "{what}: conv state");
        max_diff(&got, &self.state)
    }
}

#[test]
fn conv_matches_reference() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(10);
    let mut worst = 0.0f32;
    for &(t, c, k) in
        &[(1, 24, 4), (2, 40, 2), (1, 40, 2), (63, 24, 3), (64, 40, 4), (65, 24, 2), (300, 40, 4), (2, 24, 4), (40, 24, 16)]
    {
        let mut conv = Conv::new(ctx, &mut rng, c, k);
        let (got, want) = conv.step(ctx, &mut rng, t);
        let what = format!("conv T={t} C={c} K={k}");
        assert_close(&what, &got, &want, 1e-6, 1e-5);
        conv.check_state(ctx, &what);
        worst = worst.max(max_diff(&got, &want));
    }
    eprintln!("conv: max |out - reference| = {worst:e}");
}

#[test]
fn conv_state_carries_across_calls() {
    let Some(ctx) = gpu() else { return };
    for k in [2, 3, 4] {
        let c = 40;
        // Same data fed whole and in pieces: the reference checks itself (tested in reference::conv1d) and the
        // GPU against it after every piece, so the pieces equal the whole.
        let mut rng = Rng::new(11);
        let mut conv = Conv::new(ctx, &mut rng, c, k);
        for t in [65, 1, 64, 1, 2, 1] {
            let (got, want) = conv.step(ctx, &mut rng, t);
            let what = format!("conv piece T={t} K={k}");
            assert_close(&what, &got, &want, 1e-6, 1e-5);
            conv.check_state(ctx, &what);
        }
    }
}

#[test]
fn conv_rejects_bad_shapes() {
    let Some(ctx) = gpu() else { return };
    let (t, c, k) = (5, 8, 4);
    let z = |shape: &[usize]| ctx.zeros("t", shape, DType::F32).unwrap();
    let (x, state, weight, bias, out) = (z(&[t, c]), z(&[k - 1, c]), z(&[c, k]), z(&[c]), z(&[t, c]));
    let run = |x: &Tensor, state: &Tensor, weight: &Tensor, bias: &Tensor, out: &Tensor| {
        let mut g = Graph::new(ctx);
        conv1d::causal_conv1d_silu(&mut g, x, state, weight, bias, out).map(|_| ())
    };
    run(&x, &state, &weight, &bias, &out).unwrap();
    let u32s = ctx.zeros("ints", &[c, k], DType::U32).unwrap();
    let taps = conv1d::MAX_TAPS + 1;
    let cases: [(&str, Result<(), Error>); 7] = [
        ("x width", run(&z(&[t, c + 1]), &state, &weight, &bias, &out)),
        ("taps past MAX_TAPS", run(&x, &z(&[taps - 1, c]), &z(&[c, taps]), &bias, &out)),
        ("state rows", run(&x, &z(&[k, c]), &weight, &bias, &out)),
        ("bias", run(&x, &state, &weight, &z(&[c + 1]), &out)),
        ("out rows", run(&x, &state, &weight, &bias, &z(&[t - 1, c]))),
        ("weight dtype", run(&x, &state, &u32s, &bias, &out)),
        ("out aliases x", run(&x, &state, &weight, &bias, &x)),
    ];
    for (what, result) in cases {
        let e = result.expect_err(what);
        assert!(matches!(e, Error::Shape { .. }), "{what}: {e}");
    }
}

// ---- selective scan ----

/// The SSM's weights and state on the CPU and the GPU.
struct Ssm {
    i: usize,
    n: usize,
    r: usize,
    dt_bias: Vec<f32>, // [I]
    a_log: Vec<f32>,   // [I, N]
    d: Vec<f32>,       // [I]
    state: Vec<f32>,   // [I, N], the reference's copy
    dt_bias_gpu: Tensor,
    a_log_gpu: Tensor,
    d_gpu: Tensor,
    state_gpu: Tensor,
    /// b_layernorm's and c_layernorm's weights ([N] each) on both sides: the scan is then given x_proj's raw B
    /// and C and normalises them itself (`selective_scan_normed`), the reference normalises them first.
    bc_norm: Option<(Vec<f32>, Vec<f32>, Tensor, Tensor)>,
    /// dt_layernorm's weight [R] and dt_proj's [I, R] (as stored) on both sides, with `bc_norm`: the scan is then
    /// given x_proj's raw dt columns and projects them itself, the reference projects them first.
    dt_proj: Option<(Vec<f32>, Vec<f32>, Tensor, Tensor)>,
    /// The kernel choices of the scan's graphs (None: the context's).
    tuning: Option<Tuning>,
    /// The kernels the last step dispatched, `shader::entry`.
    kernels: Vec<String>,
}

const BC_EPS: f32 = 1e-6;

impl Ssm {
    fn new(ctx: &Context, rng: &mut Rng, i: usize, n: usize) -> Ssm {
        // Mamba's initialisation: A = -(1..=N) per channel, delta = softplus(dt + dt_bias) in about [0.01, 1].
        let a_log: Vec<f32> = (0..i * n).map(|e| ((e % n + 1) as f32).ln() + rng.uniform(0.1)).collect();
        let dt_bias: Vec<f32> = (0..i).map(|_| rng.uniform(1.5) - 2.0).collect();
        let (d, state) = (rng.vec(i, 1.0), rng.vec(i * n, 1.0));
        Ssm {
            dt_bias_gpu: ctx.upload_f32("dt_bias", &[i], &dt_bias).unwrap(),
            a_log_gpu: ctx.upload_f32("a_log", &[i, n], &a_log).unwrap(),
            d_gpu: ctx.upload_f32("d", &[i], &d).unwrap(),
            state_gpu: ctx.upload_f32("ssm state", &[i, n], &state).unwrap(),
            i,
            n,
            r: 5,
            bc_norm: None,
            dt_proj: None,
            tuning: None,
            kernels: Vec::new(),
            dt_bias,
            a_log,
            d,
            state,
        }
    }

    fn with_bc_norm(mut self, ctx: &Context, rng: &mut Rng) -> Ssm {
        let (b, c) = (rng.vec(self.n, 1.0), rng.vec(self.n, 1.0));
        let upload = |name, w: &[f32]| ctx.upload_f32(name, &[w.len()], w).unwrap();
        self.bc_norm = Some((b.clone(), c.clone(), upload("b_norm", &b), upload("c_norm", &c)));
        self
    }

    /// dt from x_proj's raw output, through dt_layernorm and a dt_proj [I, r] stored as `dtype`, in the scan.
    fn with_dt_proj(mut self, ctx: &Context, rng: &mut Rng, dtype: DType, r: usize) -> Ssm {
        self.r = r;
        let i = self.i;
        let norm = rng.vec(r, 1.0);
        let (weight, values) = upload_weights(ctx, "dt_proj", &[i, r], &rng.vec(i * r, 0.5), dtype);
        let norm_gpu = ctx.upload_f32("dt_norm", &[r], &norm).unwrap();
        self.dt_proj = Some((norm, values, norm_gpu, weight));
        self
    }

    /// Runs `t` fresh random rows through both on `path` (None: the default choice). B and C are read from an
    /// x_proj output [T, R + 2N], z from an in_proj output [T, 2I]. Returns (GPU out, reference out).
    fn step(&mut self, ctx: &Context, rng: &mut Rng, t: usize, path: Option<ScanPath>) -> (Vec<f32>, Vec<f32>) {
        let (i, n, r) = (self.i, self.n, self.r);
        let x = rng.vec(t * i, 1.0); // [T, I]
        let dt = rng.vec(t * i, 1.0); // [T, I]
        let x_proj = rng.vec(t * (r + 2 * n), 1.0); // [T, R + 2N]
        let in_proj = rng.vec(t * 2 * i, 2.0); // [T, 2I]
        let (b, c) = (columns(&x_proj, r + 2 * n, r, n), columns(&x_proj, r + 2 * n, r + n, n));
        let z = columns(&in_proj, 2 * i, i, i);
        let (b_ref, c_ref) = match &self.bc_norm {
            Some((wb, wc, ..)) => (reference::rms_norm(&b, wb, BC_EPS), reference::rms_norm(&c, wc, BC_EPS)),
            None => (b.clone(), c.clone()),
        };
        // With dt_proj, dt is projected from x_proj's first R columns.
        let dt = match &self.dt_proj {
            Some((norm, weight, ..)) => {
                let raw = columns(&x_proj, r + 2 * n, 0, r);
                reference::matmul(&reference::rms_norm(&raw, norm, BC_EPS), weight, t, i, r)
            }
            None => dt,
        };
        let want = reference::ssm::selective_scan(
            &x,
            &dt,
            &self.dt_bias,
            &self.a_log,
            &b_ref,
            &c_ref,
            &self.d,
            &z,
            &mut self.state,
            t,
            i,
            n,
        );

        let x_gpu = ctx.upload_f32("x", &[t, i], &x).unwrap();
        let dt_gpu = ctx.upload_f32("dt", &[t, i], &dt).unwrap();
        let x_proj_gpu = ctx.upload_f32("x_proj out", &[t, r + 2 * n], &x_proj).unwrap();
        let in_proj_gpu = ctx.upload_f32("in_proj out", &[t, 2 * i], &in_proj).unwrap();
        let out = ctx.zeros("scan out", &[t + 2, i], DType::F32).unwrap();
        let b_cols = Cols::slice(&x_proj_gpu, r, n).unwrap();
        let c_cols = Cols::slice(&x_proj_gpu, r + n, n).unwrap();
        let z_cols = Cols::slice(&in_proj_gpu, i, i).unwrap();
        let mut g = Graph::new(ctx);
        g.tuning = self.tuning.unwrap_or(g.tuning);
        let (dt_bias, a_log, d, state) = (&self.dt_bias_gpu, &self.a_log_gpu, &self.d_gpu, &self.state_gpu);
        // Scratch for fewer rows than T on odd calls: the scan then lengthens its chunks instead.
        let scratch = ScanScratch::new(ctx, if t % 2 == 1 { t.div_ceil(2) } else { t }, i, n).unwrap();
        match (path, &self.bc_norm) {
            (path, Some((_, _, b_weight, c_weight))) => {
                let dt_proj = self.dt_proj.as_ref().map(|(_, _, norm, weight)| (norm, weight));
                let norm = ScanNorms::new(b_weight, c_weight, BC_EPS, dt_proj);
                let path = path.unwrap_or(if t == 1 { ScanPath::Decode } else { ScanPath::Chunked });
                let dt = match dt_proj {
                    Some(_) => Cols::slice(&x_proj_gpu, 0, r).unwrap(),
                    None => Cols::slice(&dt_gpu, 0, i).unwrap(),
                };
                selective_scan_normed(
                    &mut g, &x_gpu, dt, dt_bias, a_log, b_cols, c_cols, norm, d, z_cols, state, &scratch, &out, path,
                )
            }
            (None, None) => {
                selective_scan(&mut g, &x_gpu, &dt_gpu, dt_bias, a_log, b_cols, c_cols, d, z_cols, state, &scratch, &out)
            }
            (Some(path), None) => selective_scan_with(
                &mut g, &x_gpu, &dt_gpu, dt_bias, a_log, b_cols, c_cols, d, z_cols, state, &scratch, &out, path,
            ),
        }
        .unwrap();
        let plan = g.build().unwrap();
        self.kernels = plan.kernels();
        plan.run(ctx).unwrap();
        let got = ctx.read_f32(&out).unwrap();
        (got[..t * i].to_vec(), want)
    }

    /// Checks the GPU state against the reference's; returns the largest difference.
    fn check_state(&self, ctx: &Context, what: &str) -> f32 {
        let got = ctx.read_f32(&self.state_gpu).unwrap();
        // exp(A * sum(delta)) for a chunk vs the product of per-step exps, and exp/log1p rounding: ~1e-4
        // relative after hundreds of steps.
        assert_close(&format!("{what}: ssm state"), &got, &self.state, 1e-5, 2e-4);
        max_diff(&got, &self.state)
    }
}

/// Output tolerance: the state's, carried through the C readout (N terms) and the gate.
fn check_out(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_close(what, got, want, 5e-5, 2e-4);
    max_diff(got, want)
}

/// The CPU adapters' scan by lanes (ssm_scan_cpu.wgsl), which takes d_state 16 with I a multiple of 8 and B and C
/// on vec4s (dt_rank `r` a multiple of 4) on 8-wide subgroups read in turns, serial or a decode step: whether
/// `ssm`'s last step on `path` dispatched it where it should and only there.
fn check_lanes_kernel(ssm: &Ssm, path: Option<ScanPath>, tuning: Tuning, what: &str) {
    let lanes = ssm.kernels.iter().any(|k| k == "ssm_scan_cpu::scan_lanes");
    let fits = tuning.x_lanes == 8 && ssm.n == 16 && ssm.i % 8 == 0 && ssm.r % 4 == 0;
    if matches!(path, Some(ScanPath::Serial | ScanPath::Decode)) {
        assert_eq!(lanes, fits, "{what}: the scan by lanes taken ({lanes}) where it fits ({fits}): {:?}", ssm.kernels);
    } else {
        assert!(!lanes || fits, "{what}: the scan by lanes taken where it does not fit: {:?}", ssm.kernels);
    }
}

/// The dt_rank values a scan of d_state `n` is run with: 5 (B and C off vec4s), and for d_state 16 also 8, which
/// the CPU adapters' scan by lanes takes.
fn dt_ranks(n: usize) -> Vec<usize> {
    if n == 16 {
        vec![5, 8]
    } else {
        vec![5]
    }
}

/// The context's tuning, and where it reads B and C in turns across subgroups (`x_lanes`), the same with each
/// invocation reading all of them.
fn b_and_c_readings(ctx: &Context) -> Vec<Tuning> {
    let tuning = ctx.tuning();
    let mut out = vec![tuning];
    if tuning.x_lanes > 1 {
        out.push(Tuning { x_lanes: 0, ..tuning });
    }
    out
}

#[test]
fn scan_matches_reference_on_every_path() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(20);
    let (mut worst_out, mut worst_state) = (0.0f32, 0.0f32);
    let shapes =
        [(1, 24, 4), (1, 40, 32), (2, 40, 8), (63, 24, 16), (64, 40, 32), (65, 24, 8), (300, 40, 16), (300, 24, 4)];
    for &(t, i, n) in &shapes {
        let mut paths = vec![None, Some(ScanPath::Chunked), Some(ScanPath::Serial)];
        if t == 1 {
            paths.push(Some(ScanPath::Decode));
        }
        for path in paths {
            let readings = b_and_c_readings(ctx).into_iter();
            for (tuning, r) in readings.flat_map(|tuning| dt_ranks(n).into_iter().map(move |r| (tuning, r))) {
                let mut ssm = Ssm { tuning: Some(tuning), r, ..Ssm::new(ctx, &mut rng, i, n) };
                let (got, want) = ssm.step(ctx, &mut rng, t, path);
                let what = format!("scan T={t} I={i} N={n} R={r} {path:?} x_lanes {}", tuning.x_lanes);
                check_lanes_kernel(&ssm, path, tuning, &what);
                worst_out = worst_out.max(check_out(&what, &got, &want));
                worst_state = worst_state.max(ssm.check_state(ctx, &what));
            }
        }
    }
    eprintln!("scan: max |out - reference| = {worst_out:e}, max |state - reference| = {worst_state:e}");
}

#[test]
fn scan_normalises_b_and_c_itself() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(22);
    let mut worst = 0.0f32;
    for &(t, i, n) in &[(1, 24, 4), (1, 70, 16), (2, 40, 8), (17, 24, 16), (65, 40, 32), (300, 24, 16)] {
        let mut paths = vec![None, Some(ScanPath::Chunked), Some(ScanPath::Serial)];
        if t == 1 {
            paths.push(Some(ScanPath::Decode));
        }
        for path in paths {
            let readings = b_and_c_readings(ctx).into_iter();
            for (tuning, r) in readings.flat_map(|tuning| dt_ranks(n).into_iter().map(move |r| (tuning, r))) {
                let ssm = Ssm::new(ctx, &mut rng, i, n).with_bc_norm(ctx, &mut rng);
                let mut ssm = Ssm { tuning: Some(tuning), r, ..ssm };
                // Twice, so the second step starts from a state the normalised inputs wrote.
                for step in 0..2 {
                    let (got, want) = ssm.step(ctx, &mut rng, t, path);
                    let lanes = tuning.x_lanes;
                    let what = format!("normalising scan T={t} I={i} N={n} R={r} {path:?} x_lanes {lanes} step {step}");
                    check_lanes_kernel(&ssm, path, tuning, &what);
                    worst = worst.max(check_out(&what, &got, &want));
                    ssm.check_state(ctx, &what);
                }
            }
        }
    }
    eprintln!("scan with B/C norms: max |out - reference| = {worst:e}");
}

#[test]
fn scan_projects_dt_itself_on_decode_steps() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(23);
    let mut worst = 0.0f32;
    let q8 = DType::Quant(jamba_wgpu::weights::quant::QuantFormat::Q8);
    for dtype in [DType::F32, DType::BF16, q8] {
        // dt_rank 5 reads 16-bit rows weight by weight (odd), 16 by words; I = 70 and 130 leave the last
        // workgroup part empty. Each invocation projecting its own channel (CPU adapters), and rows of 32 or 64
        // invocations projecting 8 channels at a time (GPUs).
        for &(i, n, r) in &[(24, 4, 5), (70, 16, 16), (130, 32, 5), (130, 16, 16), (40, 16, 12), (48, 16, 36)] {
            for row_threads in jamba_wgpu::kernels::ROW_THREADS {
                let tuning = Tuning { row_threads, ..ctx.tuning() };
                let ssm = Ssm::new(ctx, &mut rng, i, n).with_bc_norm(ctx, &mut rng);
                let mut ssm = Ssm { tuning: Some(tuning), ..ssm.with_dt_proj(ctx, &mut rng, dtype, r) };
                for step in 0..3 {
                    let (got, want) = ssm.step(ctx, &mut rng, 1, Some(ScanPath::Decode));
                    let what = format!("scan with dt_proj I={i} N={n} R={r} {dtype:?} {row_threads} lanes step {step}");
                    check_lanes_kernel(&ssm, Some(ScanPath::Decode), tuning, &what);
                    worst = worst.max(check_out(&what, &got, &want));
                    ssm.check_state(ctx, &what);
                }
            }
        }
    }
    // Not on a prefill (one row per workgroup only), nor with a dt_proj of the wrong shape: typed errors.
    let ssm = Ssm::new(ctx, &mut rng, 24, 4).with_bc_norm(ctx, &mut rng).with_dt_proj(ctx, &mut rng, DType::F32, 5);
    let (t, i, n, r) = (5, 24, 4, ssm.r);
    let z = |shape: &[usize]| ctx.zeros("t", shape, DType::F32).unwrap();
    let (x, x_proj, in_proj, out, wrong) = (z(&[t, i]), z(&[t, r + 2 * n]), z(&[t, 2 * i]), z(&[t, i]), z(&[r, i]));
    let scratch = ScanScratch::new(ctx, t, i, n).unwrap();
    let (_, _, b_weight, c_weight) = ssm.bc_norm.as_ref().unwrap();
    let (_, _, dt_norm, dt_weight) = ssm.dt_proj.as_ref().unwrap();
    for (what, rows, weight, path) in
        [("chunked", t, dt_weight, ScanPath::Chunked), ("dt_proj transposed", 1, &wrong, ScanPath::Decode)]
    {
        let norms = ScanNorms::new(b_weight, c_weight, BC_EPS, Some((dt_norm, weight)));
        let cols = |offset, width| Cols::slice(&x_proj, offset, width).unwrap().rows(rows).unwrap();
        let z_cols = Cols::slice(&in_proj, i, i).unwrap().rows(rows).unwrap();
        let (a_log, d, state) = (&ssm.a_log_gpu, &ssm.d_gpu, &ssm.state_gpu);
        let mut g = Graph::new(ctx);
        let result = selective_scan_normed(
            &mut g, &x, cols(0, r), &ssm.dt_bias_gpu, a_log, cols(r, n), cols(r + n, n), norms, d, z_cols, state, &scratch, &out, path,
        );
        assert!(matches!(result, Err(Error::Shape { .. })), "{what}: {result:?}");
    }
    eprintln!("scan with dt_proj: max |out - reference| = {worst:e}");
}

#[test]
fn scan_adds_up_x_proj_in_parts_as_it_reads_it() {
    // x_proj's output in parts over d_inner (matmul::matmul_parts), which the decode scan adds up in order as
    // it reads dt, B and C: the same outputs and state, bit for bit, as the scan of the parts added up here in
    // the same order; for a session's step and a batch's, each way of projecting dt.
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(29);
    let (n, r) = (16, 16);
    let width = r + 2 * n;
    // I = 40: the scans by lanes on CPU adapters (ssm_scan_cpu.wgsl).
    let cases = [(1, ScanPath::Decode, 70), (1, ScanPath::Decode, 40), (2, ScanPath::Batch, 70)];
    for (t, path, i) in cases.into_iter().chain([(2, ScanPath::Batch, 40)]) {
        for parts in [2, 5] {
            for row_threads in jamba_wgpu::kernels::ROW_THREADS {
                let raw: Vec<Vec<f32>> = (0..parts).map(|_| rng.vec(t * width, 1.0)).collect();
                let summed: Vec<f32> = (0..t * width).map(|e| raw.iter().skip(1).fold(raw[0][e], |v, part| v + part[e])).collect();
                let stride = t * width; // part s at rows s * t ..
                let in_parts = ctx.upload_f32("dbc parts", &[parts * t, width], &raw.concat()).unwrap();
                let whole = ctx.upload_f32("dbc", &[t, width], &summed).unwrap();
                let mut up = |label, shape: &[usize], scale| ctx.upload_f32(label, shape, &rng.vec(shape.iter().product(), scale)).unwrap();
                let (x, in_proj, dt_bias, a_log, d) = (up("x", &[t, i], 1.0), up("xz", &[t, 2 * i], 1.0), up("dt_bias", &[i], 0.5), up("a_log", &[i, n], 0.5), up("d", &[i], 1.0));
                let (b_norm, c_norm, dt_norm, dt_proj) = (up("b_norm", &[n], 1.0), up("c_norm", &[n], 1.0), up("dt_norm", &[r], 1.0), up("dt_proj", &[i, r], 0.3));
                let state0 = rng.vec(t * i * n, 0.5);
                let state_shape = if path == ScanPath::Batch { [t, i * n] } else { [i, n] };
                let run = |dbc: &Tensor, parts: usize, part_stride: usize| {
                    let state = ctx.upload_f32("state", &state_shape, &state0).unwrap();
                    let out = ctx.zeros("out", &[t, i], DType::F32).unwrap();
                    let scratch = ScanScratch::new(ctx, t, i, n).unwrap();
                    let norms = ScanNorms { parts, part_stride, ..ScanNorms::new(&b_norm, &c_norm, BC_EPS, Some((&dt_norm, &dt_proj))) };
                    let cols = |offset, width| Cols::slice(dbc, offset, width).unwrap().rows(t).unwrap();
                    let z = Cols::slice(&in_proj, i, i).unwrap().rows(t).unwrap();
                    let mut g = Graph::new(ctx);
                    g.tuning.row_threads = row_threads;
                    selective_scan_normed(&mut g, &x, cols(0, r), &dt_bias, &a_log, cols(r, n), cols(r + n, n), norms, &d, z, &state, &scratch, &out, path).unwrap();
                    g.run().unwrap();
                    (ctx.read_f32(&out).unwrap(), ctx.read_f32(&state).unwrap())
                };
                let what = format!("{path:?}, {parts} parts, {row_threads} lanes");
                assert!(run(&in_parts, parts, stride) == run(&whole, 1, 0), "{what}: differs from the parts added up");
                // A part past the end of the buffer is a typed error.
                let norms = ScanNorms { parts: parts + 1, part_stride: stride, ..ScanNorms::new(&b_norm, &c_norm, BC_EPS, Some((&dt_norm, &dt_proj))) };
                let cols = |offset, width| Cols::slice(&in_parts, offset, width).unwrap().rows(t).unwrap();
                let (state, out) = (ctx.zeros("s", &state_shape, DType::F32).unwrap(), ctx.zeros("o", &[t, i], DType::F32).unwrap());
                let scratch = ScanScratch::new(ctx, t, i, n).unwrap();
                let z = Cols::slice(&in_proj, i, i).unwrap().rows(t).unwrap();
                let result = selective_scan_normed(&mut Graph::new(ctx), &x, cols(0, r), &dt_bias, &a_log, cols(r, n), cols(r + n, n), norms, &d, z, &state, &scratch, &out, path);
                assert!(matches!(result, Err(Error::Shape { .. })), "{what}, one part too many: {result:?}");
            }
        }
    }
}

#[test]
fn scan_state_carries_across_calls() {
    let Some(ctx) = gpu() else { return };
    // The reference equals itself whole and in pieces (reference::ssm's tests); here the GPU follows it piece
    // by piece, prefill and decode interleaved as in generation.
    let mut rng = Rng::new(21);
    for n in [8, 16] {
        let mut ssm = Ssm::new(ctx, &mut rng, 40, n);
        for t in [65, 1, 64, 1, 130, 1] {
            let (got, want) = ssm.step(ctx, &mut rng, t, None);
            let what = format!("scan piece T={t} N={n}");
            check_out(&what, &got, &want);
            ssm.check_state(ctx, &what);
        }
    }
}

#[test]
fn scan_rejects_bad_shapes() {
    let Some(ctx) = gpu() else { return };
    let (t, i, n) = (5, 8, 4);
    let z = |shape: &[usize]| ctx.zeros("t", shape, DType::F32).unwrap();
    let (x, dt, dt_bias, a_log, bc, d, zs, state, out) =
        (z(&[t, i]), z(&[t, i]), z(&[i]), z(&[i, n]), z(&[t, 2 * n]), z(&[i]), z(&[t, i]), z(&[i, n]), z(&[t, i]));
    let b = Cols::slice(&bc, 0, n).unwrap();
    let c = Cols::slice(&bc, n, n).unwrap();
    type Args<'a> = (&'a Tensor, &'a Tensor, &'a Tensor, Cols<'a>, &'a Tensor, &'a Tensor, &'a Tensor);
    let ok: Args = (&x, &a_log, &dt, b, &zs, &state, &out);
    let scratch = ScanScratch::new(ctx, t, i, n).unwrap();
    let run = |(x, a_log, dt, b, zs, state, out): Args, path: ScanPath| {
        let mut g = Graph::new(ctx);
        selective_scan_with(&mut g, x, dt, &dt_bias, a_log, b, c, &d, zs, state, &scratch, out, path)
    };
    run(ok, ScanPath::Chunked).unwrap();
    let (wide_a, short_out, narrow_b) = (z(&[i, 65]), z(&[t - 1, i]), Cols::slice(&bc, 0, n - 1).unwrap());
    let (state_t, long_z, u32s) = (z(&[n, i]), z(&[t + 1, i]), ctx.zeros("ints", &[t, i], DType::U32).unwrap());
    let cases: [(&str, Args, ScanPath); 8] = [
        ("decode with T > 1", ok, ScanPath::Decode),
        ("d_state over the maximum", (&x, &wide_a, &dt, b, &zs, &state, &out), ScanPath::Chunked),
        ("out rows", (&x, &a_log, &dt, b, &zs, &state, &short_out), ScanPath::Chunked),
        ("b width", (&x, &a_log, &dt, narrow_b, &zs, &state, &out), ScanPath::Chunked),
        ("state transposed", (&x, &a_log, &dt, b, &zs, &state_t, &out), ScanPath::Serial),
        ("z rows", (&x, &a_log, &dt, b, &long_z, &state, &out), ScanPath::Chunked),
        ("dt dtype", (&x, &a_log, &u32s, b, &zs, &state, &out), ScanPath::Chunked),
        ("out aliases x", (&x, &a_log, &dt, b, &zs, &state, &x), ScanPath::Chunked),
    ];
    for (what, args, path) in cases {
        let e = run(args, path).expect_err(what);
        assert!(matches!(e, Error::Shape { .. }), "{what}: {e}");
    }
}

// ---- a batch's decode step: row r is one token of sequence r, advancing that sequence's state slot ----

/// B states of `len` elements each in slots of `len + PAD`, the padding set to a sentinel the kernels must not
/// touch, as a [B, len + PAD] tensor.
const PAD: usize = 5;
const SENTINEL: f32 = 7.0;

fn upload_slots(ctx: &Context, label: &str, states: &[Vec<f32>]) -> Tensor {
    let len = states[0].len();
    let padded: Vec<f32> = states.iter().flat_map(|s| s.iter().copied().chain([SENTINEL; PAD])).collect();
    ctx.upload_f32(label, &[states.len(), len + PAD], &padded).unwrap()
}

/// Reads back a [B, len + PAD] slot tensor: each slot's state, after checking its padding is untouched.
fn read_slots(ctx: &Context, slots: &Tensor, len: usize) -> Vec<Vec<f32>> {
    let all = ctx.read_f32(slots).unwrap();
    all.chunks(len + PAD)
        .map(|slot| {
            assert_eq!(slot[len..], [SENTINEL; PAD], "a slot's padding was written");
            slot[..len].to_vec()
        })
        .collect()
}

#[test]
fn conv_batch_matches_reference_per_row() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(12);
    let mut worst = 0.0f32;
    for &(b, c, k) in &[(1, 24, 4), (5, 40, 4), (3, 24, 2), (4, 40, 3), (2, 8, 1), (9, 70, 4)] {
        let (weight, bias) = (rng.vec(c * k, 0.5), rng.vec(c, 0.5));
        let weight_gpu = ctx.upload_f32("conv weight", &[c, k], &weight).unwrap();
        let bias_gpu = ctx.upload_f32("conv bias", &[c], &bias).unwrap();
        let mut states: Vec<Vec<f32>> = (0..b).map(|_| rng.vec((k - 1) * c, 1.0)).collect();
        let state_gpu = upload_slots(ctx, "batch conv state", &states);
        // Steps in a row: each row's state must carry to the next step.
        for step in 0..3 {
            let in_proj = rng.vec(b * 2 * c, 1.0); // [B, 2C]: row r is sequence r's token
            let in_proj_gpu = ctx.upload_f32("in_proj out", &[b, 2 * c], &in_proj).unwrap();
            let out = ctx.zeros("conv out", &[b + 1, c], DType::F32).unwrap();
            let mut g = Graph::new(ctx);
            let xs = Cols::slice(&in_proj_gpu, 0, c).unwrap();
            conv1d::causal_conv1d_silu_batch(&mut g, xs, &state_gpu, &weight_gpu, &bias_gpu, &out).unwrap();
            g.run().unwrap();
            let got = ctx.read_f32(&out).unwrap();
            for (r, state) in states.iter_mut().enumerate() {
                let x_r = &in_proj[r * 2 * c..][..c];
                let want = reference::conv1d::causal_conv1d_silu(x_r, state, &weight, &bias, 1, c, k);
                let what = format!("conv batch B={b} C={c} K={k} step {step} row {r}");
                assert_close(&what, &got[r * c..][..c], &want, 1e-6, 1e-5);
                worst = worst.max(max_diff(&got[r * c..][..c], &want));
            }
            // The state is a copy of inputs: exact.
            assert_eq!(read_slots(ctx, &state_gpu, (k - 1) * c), states, "conv batch B={b} K={k} step {step}: states");
        }
    }
    eprintln!("conv batch: max |out - reference| = {worst:e}");
}

#[test]
fn scan_batch_matches_reference_per_row() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(22);
    let (mut worst_out, mut worst_state) = (0.0f32, 0.0f32);
    let cases = [(1, 24, 4), (3, 40, 16), (5, 24, 8), (2, 70, 32), (9, 40, 16)];
    for (b, i, n, r_dt) in cases.into_iter().flat_map(|(b, i, n)| dt_ranks(n).into_iter().map(move |r| (b, i, n, r))) {
        let ssm = Ssm { r: r_dt, ..Ssm::new(ctx, &mut rng, i, n) }; // one layer's weights, shared by the sequences
        let mut states: Vec<Vec<f32>> = (0..b).map(|_| rng.vec(i * n, 1.0)).collect();
        let state_gpu = upload_slots(ctx, "batch ssm state", &states);
        let scratch = ScanScratch::new(ctx, b, i, n).unwrap();
        for step in 0..2 {
            let x = rng.vec(b * i, 1.0); // [B, I]
            let dt = rng.vec(b * i, 1.0); // [B, I]
            let x_proj = rng.vec(b * (r_dt + 2 * n), 1.0); // [B, R + 2N]
            let in_proj = rng.vec(b * 2 * i, 2.0); // [B, 2I]
            let x_gpu = ctx.upload_f32("x", &[b, i], &x).unwrap();
            let dt_gpu = ctx.upload_f32("dt", &[b, i], &dt).unwrap();
            let x_proj_gpu = ctx.upload_f32("x_proj out", &[b, r_dt + 2 * n], &x_proj).unwrap();
            let in_proj_gpu = ctx.upload_f32("in_proj out", &[b, 2 * i], &in_proj).unwrap();
            let out = ctx.zeros("scan out", &[b, i], DType::F32).unwrap();
            let b_cols = Cols::slice(&x_proj_gpu, r_dt, n).unwrap();
            let c_cols = Cols::slice(&x_proj_gpu, r_dt + n, n).unwrap();
            let z_cols = Cols::slice(&in_proj_gpu, i, i).unwrap();
            let mut g = Graph::new(ctx);
            let (dt_bias, a_log, d) = (&ssm.dt_bias_gpu, &ssm.a_log_gpu, &ssm.d_gpu);
            selective_scan_with(
                &mut g, &x_gpu, &dt_gpu, dt_bias, a_log, b_cols, c_cols, d, z_cols, &state_gpu, &scratch, &out,
                ScanPath::Batch,
            )
            .unwrap();
            let plan = g.build().unwrap();
            // The CPU adapters' batch scan by lanes where it fits (ssm_scan_cpu.wgsl), and only there.
            let lanes = plan.kernels().iter().any(|k| k == "ssm_scan_cpu::scan_lanes_batch");
            let fits = ctx.tuning().x_lanes == 8 && n == 16 && i % 8 == 0 && r_dt % 4 == 0;
            assert_eq!(lanes, fits, "scan batch B={b} I={i} N={n} R={r_dt}: {:?}", plan.kernels());
            plan.run(ctx).unwrap();
            let got = ctx.read_f32(&out).unwrap();
            let got_states = read_slots(ctx, &state_gpu, i * n);
            for (r, state) in states.iter_mut().enumerate() {
                let row = |m: &[f32], cols: usize, offset: usize, width: usize| m[r * cols + offset..][..width].to_vec();
                let (b_r, c_r) = (row(&x_proj, r_dt + 2 * n, r_dt, n), row(&x_proj, r_dt + 2 * n, r_dt + n, n));
                let want = reference::ssm::selective_scan(
                    &row(&x, i, 0, i),
                    &row(&dt, i, 0, i),
                    &ssm.dt_bias,
                    &ssm.a_log,
                    &b_r,
                    &c_r,
                    &ssm.d,
                    &row(&in_proj, 2 * i, i, i),
                    state,
                    1,
                    i,
                    n,
                );
                let what = format!("scan batch B={b} I={i} N={n} R={r_dt} step {step} row {r}");
                worst_out = worst_out.max(check_out(&what, &got[r * i..][..i], &want));
                assert_close(&format!("{what}: state"), &got_states[r], state, 1e-5, 2e-4);
                worst_state = worst_state.max(max_diff(&got_states[r], state));
            }
        }
    }
    eprintln!("scan batch: max |out - reference| = {worst_out:e}, max |state - reference| = {worst_state:e}");
}

// ---- a decode step's in_proj with the conv fused into its epilogue ----

#[test]
fn in_proj_with_the_conv_fused_matches_the_kernels_apart() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(30);
    let (h, c, k, eps) = (40, 24, 4, 1e-6);
    let q8 = DType::Quant(jamba_wgpu::weights::quant::QuantFormat::Q8);
    let mut worst = 0.0f32;
    for dtype in [DType::F32, DType::BF16, q8] {
        let (w, w_values) = upload_weights(ctx, "in_proj", &[2 * c, h], &rng.vec(2 * c * h, 0.5), dtype);
        let (conv_w, conv_b, norm_w) = (rng.vec(c * k, 0.5), rng.vec(c, 0.5), rng.vec(h, 1.0));
        let conv_w_gpu = ctx.upload_f32("conv weight", &[c, k], &conv_w).unwrap();
        let conv_b_gpu = ctx.upload_f32("conv bias", &[c], &conv_b).unwrap();
        let norm_gpu = ctx.upload_f32("norm", &[h], &norm_w).unwrap();
        let norm = RmsNorm { weight: &norm_gpu, eps };
        // A sequence's state [K-1, C] for one row; a batch's [B, (K-1) * C + 5] slots for three.
        for (t, slot) in [(1, (k - 1) * c), (3, (k - 1) * c + 5)] {
            let x = rng.vec(t * h, 2.0);
            let states = rng.vec(t * slot, 1.0);
            // Reference: rms_norm, matmul, then each row's conv from its own state.
            let u = reference::matmul(&reference::rms_norm(&x, &norm_w, eps), &w_values, t, 2 * c, h);
            let (mut xs_want, mut states_want) = (Vec::new(), states.clone());
            for r in 0..t {
                let state = &mut states_want[r * slot..r * slot + (k - 1) * c];
                let u_xs = &u[r * 2 * c..r * 2 * c + c];
                xs_want.extend(reference::conv1d::causal_conv1d_silu(u_xs, state, &conv_w, &conv_b, 1, c, k));
            }
            let z_want = columns(&u, 2 * c, c, c);
            for tuning in ctx.tunings() {
                let what = format!("in_proj + conv, T = {t}, {dtype:?}, {tuning:?}");
                let x_gpu = ctx.upload_f32("x", &[t, h], &x).unwrap();
                let state_shape = if t == 1 { vec![k - 1, c] } else { vec![t, slot] };
                let state = ctx.upload_f32("conv state", &state_shape, &states).unwrap();
                let xz = ctx.zeros("xz", &[t, 2 * c], DType::F32).unwrap();
                let xs = ctx.zeros("xs", &[t, c], DType::F32).unwrap();
                let mut g = Graph::new(ctx);
                g.tuning = tuning;
                let conv = ConvStep { weight: &conv_w_gpu, bias: &conv_b_gpu, state: &state, out: &xs };
                let result = matmul::matmul_rms_norm_conv(&mut g, &x_gpu, norm, &w, &xz, conv);
                if !matmul::is_matvec(&g, t) {
                    // Prefill-sized for this tuning: refused, not run another way.
                    assert!(matches!(result, Err(Error::Shape { .. })), "{what}: {result:?}");
                    continue;
                }
                result.unwrap();
                g.run().unwrap();
                let (xs_got, xz_got) = (ctx.read_f32(&xs).unwrap(), ctx.read_f32(&xz).unwrap());
                assert_close(&format!("{what}: xs"), &xs_got, &xs_want, 1e-5, 1e-4);
                assert_close(&format!("{what}: z"), &columns(&xz_got, 2 * c, c, c), &z_want, 1e-5, 1e-4);
                // The state advanced, the slot padding untouched (the reference state is the f32 inputs, the
                // GPU's the products it computed: the same tolerance).
                assert_close(&format!("{what}: state"), &ctx.read_f32(&state).unwrap(), &states_want, 1e-5, 1e-4);
                worst = xs_got.iter().zip(&xs_want).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
            }
        }
    }
    eprintln!("in_proj + conv: max |xs - reference| = {worst:e}");
}