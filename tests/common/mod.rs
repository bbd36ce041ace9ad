//! Helpers shared by the integration tests: the GPU context, seeded random data, tolerance checks, fixture paths,
//! reading expected.safetensors, comparing logits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use jamba_wgpu::config::JambaConfig;
use jamba_wgpu::gpu::{Context as GpuContext, ContextOptions, DType, Tensor};
use jamba_wgpu::reference::ReferenceModel;
use jamba_wgpu::weights::Checkpoint;
use safetensors::{Dtype, SafeTensors};

/// The transformers fixtures copied into the repository.
pub const FIXTURES: [&str; 4] = ["tiny", "tiny-bf16", "tiny-sharded", "v01-shape-lite"];

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn default_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/jamba-tiny-quotes")
}

/// Config and reference model of a checkpoint directory.
pub fn load_model(dir: &Path) -> Result<(JambaConfig, ReferenceModel)> {
    let cfg = JambaConfig::from_file(dir.join("config.json"))?;
    let checkpoint = Checkpoint::open(dir)?;
    let model = ReferenceModel::new(&cfg, &checkpoint)?;
    Ok((cfg, model))
}

/// expected.safetensors, read whole (it is small) so tests can index it by key.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_file(&dir.join("expected.safetensors"))
    }

    /// Any safetensors file, e.g. one written by the CLI.
    pub fn open_file(path: &Path) -> Result<Self> {
        Ok(Expected { bytes: std::fs::read(path).with_context(|| path.display().to_string())? })
    }

    fn view(&self, key: &str) -> Result<safetensors::tensor::TensorView<'_>> {
        let st = SafeTensors::deserialize(&self.bytes)?;
        st.tensor(key).map_err(|e| anyhow!("expected.safetensors `{key}`: {e}"))
    }

    pub fn has(&self, key: &str) -> bool {
        self.view(key).is_ok()
    }

    /// An f32 tensor, flattened, with its shape.
    pub fn f32(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let view = self.view(key)?;
        if view.dtype() != Dtype::F32 {
            bail!("`{key}` is {:?}, not F32", view.dtype());
        }
        let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok((view.shape().to_vec(), data))
    }

    /// An i64 id tensor, flattened to u32.
    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let view = self.view(key)?;
        if view.dtype() != Dtype::I64 {
            bail!("`{key}` is {:?}, not I64", view.dtype());
        }
        view.data()
            .chunks_exact(8)
            .map(|b| {
                let id = i64::from_le_bytes(b.try_into()?);
                Ok(u32::try_from(id)?)
            })
            .collect()
    }
}

/// Largest |a - b|; errors when the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> Result<f32> {
    if a.len() != b.len() {
        bail!("length {} vs {}", a.len(), b.len());
    }
    // f32::max would skip a NaN; a NaN anywhere must fail the comparison.
    Ok(a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) }))
}

/// Fails with `what` and the difference when it is above `tol`; returns the difference for reporting.
pub fn check_close(what: &str, got: &[f32], want: &[f32], tol: f32) -> Result<f32> {
    let diff = max_abs_diff(got, want).with_context(|| what.to_string())?;
    if diff.is_nan() || diff > tol {
        bail!("{what}: max abs diff {diff:e} > {tol:e}");
    }
    Ok(diff)
}

/// A fresh, empty directory under the system temp dir, unique to this process and `tag`. Removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("jamba-wgpu-test-{}-{tag}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- GPU, random data, tolerances ----

/// The adapter every GPU test runs on, opened once per test binary (WGPU_BACKEND and JAMBA_WGPU_ADAPTER
/// choose it). With no adapter the test FAILS, naming the cause; only JAMBA_WGPU_SKIP_GPU=1 skips GPU tests,
/// and then each says so.
pub fn gpu() -> Option<&'static std::sync::Arc<GpuContext>> {
    if std::env::var("JAMBA_WGPU_SKIP_GPU").is_ok_and(|v| v == "1") {
        eprintln!("GPU test skipped: JAMBA_WGPU_SKIP_GPU=1");
        return None;
    }
    static CONTEXT: OnceLock<Result<std::sync::Arc<GpuContext>, String>> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(|| {
        let options = ContextOptions { adapter: std::env::var("JAMBA_WGPU_ADAPTER").ok(), ..Default::default() };
        GpuContext::new(&options).map(std::sync::Arc::new).map_err(|e| e.to_string())
    });
    match ctx {
        Ok(ctx) => Some(ctx),
        Err(e) => panic!("GPU tests need an adapter ({e}). Set JAMBA_WGPU_SKIP_GPU=1 to skip them explicitly."),
    }
}

/// A context of the test's own on gpu()'s adapter, for tests that count what a context does
/// ([`GpuContext::counts`]): the binary's other tests use the shared one at the same time.
#[allow(dead_code)]
pub fn own_gpu() -> Option<std::sync::Arc<GpuContext>> {
    gpu()?;
    let options = ContextOptions { adapter: std::env::var("JAMBA_WGPU_ADAPTER").ok(), ..Default::default() };
    Some(std::sync::Arc::new(GpuContext::new(&options).expect("gpu() opened this adapter")))
}

/// A context of the test's own on gpu()'s adapter with the other kind of adapter's kernel choices: a GPU's
/// ([`Tuning::gpu`]: rows reduced by 32 invocations, tiled prefill, codes) on a CPU adapter, a CPU adapter's
/// (without the subgroup-bound blocked prefill) on a GPU, so that one machine runs both through the model.
#[allow(dead_code)]
pub fn gpu_with_other_kernels() -> Option<std::sync::Arc<GpuContext>> {
    use jamba_wgpu::gpu::Tuning;
    let tuning = if gpu()?.is_cpu() { Tuning::gpu() } else { Tuning::cpu(false) };
    let adapter = std::env::var("JAMBA_WGPU_ADAPTER").ok();
    let options = ContextOptions { adapter, tuning: Some(tuning), ..Default::default() };
    Some(std::sync::Arc::new(GpuContext::new(&options).expect("gpu() opened this adapter")))
}

/// A context of the test's own on gpu()'s adapter with the cooperative-matrix prefill (Prefill::Coop), which
/// enables wgpu's experimental feature; None where the adapter cannot run it (software adapters have no matrix
/// units), after checking that asking for it there is the typed refusal that names the kernel, what it needs and
/// what the adapter has.
#[allow(dead_code)]
pub fn coop_gpu() -> Option<GpuContext> {
    use jamba_wgpu::gpu::Prefill;
    let shared = gpu()?;
    let adapter = std::env::var("JAMBA_WGPU_ADAPTER").ok();
    let options = ContextOptions { adapter, prefill: Some(Prefill::Coop), ..Default::default() };
    match GpuContext::new(&options) {
        Ok(ctx) => {
            assert!(ctx.features().cooperative_matrices && ctx.tuning().prefill == Prefill::Coop);
            Some(ctx)
        }
        Err(e) => {
            let e = e.to_string();
            let named = e.contains("prefill kernel Coop cannot run on") && e.contains(&shared.info().name);
            assert!(named && e.contains("16x16x16 F16->F32") && e.contains("subgroups"), "{e}");
            eprintln!("not run: {e}");
            None
        }
    }
}

/// Each value rounded to the nearest f16, as the cooperative-matrix kernels stage them.
#[allow(dead_code)]
pub fn f16_rounded(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

/// A small deterministic generator (SplitMix64), so tests need no dependency and every run sees the same data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    pub fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(scale)).collect()
    }

    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// Rounds `values` to `dtype` and uploads them; returns the tensor and the rounded values.
pub fn upload_weights(
    ctx: &GpuContext,
    label: &str,
    shape: &[usize],
    values: &[f32],
    dtype: DType,
) -> (Tensor, Vec<f32>) {
    let (bytes, rounded): (Vec<u8>, Vec<f32>) = match dtype {
        DType::F32 => (bytemuck::cast_slice(values).to_vec(), values.to_vec()),
        DType::F16 => {
            let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|v| v.to_f32()).collect())
        }
        DType::BF16 => {
            let h: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|v| v.to_f32()).collect())
        }
        DType::Quant(format) => {
            let cols = *shape.last().expect("a matrix");
            let q = jamba_wgpu::weights::quant::quantize(format, values, values.len() / cols, cols).expect("quantize");
            (q.packed(), q.dequantize())
        }
        DType::U32 => unreachable!("weights are floating point or quantized"),
    };
    (ctx.tensor(label, shape, dtype, Some(&bytes)).expect("upload"), rounded)
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise, reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess.is_nan() || excess > worst.1 || g.is_nan() != w.is_nan() {
            worst = (i, if excess.is_nan() { f32::INFINITY } else { excess });
        }
    }
    let (i, excess) = worst;
    assert!(
        excess <= 0.0,
        "{what}: element {i} is {} but the reference is {} (|diff| {} > atol {atol} + rtol {rtol})",
        got[i],
        want[i],
        (got[i] - want[i]).abs()
    );
}
