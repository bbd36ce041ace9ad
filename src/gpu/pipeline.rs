//! The pipeline cache: one compute pipeline per (kernel, override constants), built on first use from a shader
//! module of its own, the shader specialised to those constants ([`specialize`](crate::gpu::specialize)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::gpu::context::Counters;
use crate::gpu::specialize::specialize;
use crate::gpu::{Access, Context, Kernel};
use crate::{Error, Result};

/// A built kernel variant: its pipeline and the bind group layout that matches its binding list.
pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub struct PipelineCache {
    /// Each shader parsed and validated once, for the variants of its kernels to be specialised from.
    modules: Mutex<HashMap<&'static str, Arc<Parsed>>>,
    pipelines: Mutex<HashMap<String, Arc<Pipeline>>>,
}

/// A shader in naga's IR, and what validation found of it (which specialising needs).
struct Parsed {
    module: naga::Module,
    info: naga::valid::ModuleInfo,
}

/// What wgpu checks in our shaders as they run: each buffer access stays inside its binding and each integer
/// division is guarded, but no loop gets wgpu's bounding counter (an extra variable and branch in every loop,
/// against loops that never end, which ours cannot be: the SAFETY note where modules are made). With the counters
/// lavapipe took 1.7 times as long to build the pipelines (2.4 against 1.4 s of CPU for the default model's first
/// 128-token prompt; the prefill scan 262 against 53 ms), and the kernels ran no faster.
const RUNTIME_CHECKS: wgpu::ShaderRuntimeChecks =
    wgpu::ShaderRuntimeChecks { force_loop_bounding: false, ..wgpu::ShaderRuntimeChecks::checked() };

/// A kernel and the override constants it is specialised with: one pipeline.
pub type Variant<'a> = (&'static Kernel, &'a [(&'static str, f64)]);

fn key_of((kernel, constants): Variant<'_>) -> String {
    format!("{}{constants:?}", kernel.name())
}

impl Context {
    /// The pipeline of `kernel` specialised with `constants`, compiled once and cached.
    ///
    /// The constants are applied here, in naga's IR, rather than by wgpu at pipeline creation, so that the
    /// branches they rule out never reach the driver.
    pub fn pipeline(&self, kernel: &'static Kernel, constants: &[(&'static str, f64)]) -> Result<Arc<Pipeline>> {
        let key = key_of((kernel, constants));
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        let parsed = self.parsed(kernel)?;
        let wgsl = specialize(&parsed.module, &parsed.info, kernel.entry, constants)
            .map_err(|message| Error::Gpu { context: format!("specialising kernel {key}"), message })?;
        let pipeline = self.scoped(
            || format!("building kernel {key}"),
            || {
                let descriptor = wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.shader.name),
                    source: wgpu::ShaderSource::Wgsl(wgsl.into()),
                };
                // SAFETY: the one check left out bounds loops that would never end, and none can: every loop in
                // shaders/ is a `for` whose counter, its own, steps up to a bound it compares with `<` or halves
                // down to zero (held by tests/no_gpu.rs, `every_shader_loop_is_counted`).
                let module = unsafe { self.device.create_shader_module_trusted(descriptor, RUNTIME_CHECKS) };
                build(&self.device, kernel, &module)
            },
        )?;
        Counters::add(&self.counts.pipelines);
        let pipeline = Arc::new(pipeline);
        self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The pipelines of `variants`, in order. Those not yet cached are compiled side by side, on as many threads
    /// as the host has cores: a driver compiles a pipeline on one core, lavapipe (LLVM) in 20-100 ms, so the
    /// dozen or more that a forward's first graph needs cost a second one after another there.
    pub fn pipelines(&self, variants: &[Variant<'_>]) -> Result<Vec<Arc<Pipeline>>> {
        let mut missing: Vec<(String, Variant<'_>)> = Vec::new();
        for &v in variants {
            let key = key_of(v);
            if self.cached(&key).is_none() && !missing.iter().any(|(k, _)| *k == key) {
                missing.push((key, v));
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(missing.len());
        if threads > 1 {
            // Shaders parsed first, one thread: each is shared by its kernels' variants, and cheap (naga).
            for (_, (kernel, _)) in &missing {
                self.parsed(kernel)?;
            }
            // Each thread takes the next variant nobody has taken.
            let next = AtomicUsize::new(0);
            let compile = || -> Result<()> {
                while let Some((_, (kernel, constants))) = missing.get(next.fetch_add(1, Ordering::Relaxed)) {
                    self.pipeline(kernel, constants)?;
                }
                Ok(())
            };
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads).map(|_| s.spawn(compile)).collect();
                workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            })?;
        }
        variants.iter().map(|&(kernel, constants)| self.pipeline(kernel, constants)).collect()
    }

    fn cached(&self, key: &str) -> Option<Arc<Pipeline>> {
        self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// `kernel`'s shader parsed and validated, once.
    fn parsed(&self, kernel: &'static Kernel) -> Result<Arc<Parsed>> {
        let shader = kernel.shader;
        if let Some(m) = self.pipelines.modules.lock().unwrap_or_else(|p| p.into_inner()).get(shader.name) {
            return Ok(m.clone());
        }
        let source = shader.wgsl(self.features().subgroups);
        let context = format!("compiling shaders/{}.wgsl", shader.name);
        let failed = |message: String| Error::Gpu { context: context.clone(), message };
        let module = naga::front::wgsl::parse_str(&source).map_err(|e| failed(e.emit_to_string(&source)))?;
        // Every capability: wgpu validates each variant's module again, against what the device has.
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .map_err(|e| failed(e.emit_to_string(&source)))?;
        let parsed = Arc::new(Parsed { module, info });
        self.pipelines.modules.lock().unwrap_or_else(|p| p.into_inner()).insert(shader.name, parsed.clone());
        Ok(parsed)
    }
}

/// The pipeline of `kernel` from `module`, a variant's own (its constants already applied).
fn build(device: &wgpu::Device, kernel: &'static Kernel, module: &wgpu::ShaderModule) -> Pipeline {
    let params = wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: wgpu::BufferSize::new(kernel.params.size as u64),
        },
        count: None,
    };
    let storage = kernel.bindings.iter().enumerate().map(|(i, b)| wgpu::BindGroupLayoutEntry {
        binding: i as u32 + 1,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: b.access == Access::Read },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    });
    let entries: Vec<_> = std::iter::once(params).chain(storage).collect();
    let label = kernel.name();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: Some(&pipeline_layout),
        module,
        entry_point: Some(kernel.entry),
        compilation_options: wgpu::PipelineCompilationOptions { zero_initialize_workgroup_memory: false, ..Default::default() },
        cache: None,
    });
    Pipeline { pipeline, layout }
}
