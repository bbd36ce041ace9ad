//! Shared by the integration tests: the GPU context, seeded random data, and tolerance checks.
#![allow(dead_code)]

use std::sync::OnceLock;

use jamba_wgpu::gpu::{Context, ContextOptions};

/// The adapter every GPU test runs on, opened once per test binary (WGPU_BACKEND and JAMBA_WGPU_ADAPTER
/// choose it). With no adapter the test FAILS, naming the cause; only JAMBA_WGPU_SKIP_GPU=1 skips GPU tests,
/// and then each says so.
pub fn gpu() -> Option<&'static Context> {
    if std::env::var("JAMBA_WGPU_SKIP_GPU").is_ok_and(|v| v == "1") {
        eprintln!("GPU test skipped: JAMBA_WGPU_SKIP_GPU=1");
        return None;
    }
    static CONTEXT: OnceLock<Result<Context, String>> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(|| {
        let options = ContextOptions { adapter: std::env::var("JAMBA_WGPU_ADAPTER").ok(), ..Default::default() };
        Context::new(&options).map_err(|e| e.to_string())
    });
    match ctx {
        Ok(ctx) => Some(ctx),
        Err(e) => panic!("GPU tests need an adapter ({e}). Set JAMBA_WGPU_SKIP_GPU=1 to skip them explicitly."),
    }
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

/// Asserts |a - b| <= atol + rtol * |b| elementwise, reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if !(excess <= worst.1) || g.is_nan() != w.is_nan() {
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

/// max |a - b|.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}
