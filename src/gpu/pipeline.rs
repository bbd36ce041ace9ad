//! The pipeline cache: one compute pipeline per (kernel, override constants), built on first use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::gpu::context::Counters;
use crate::gpu::{Access, Context, Kernel};
use crate::Result;

/// A built kernel variant: its pipeline and the bind group layout that matches its binding list.
pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<String, Arc<Pipeline>>>,
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
    pub fn pipeline(&self, kernel: &'static Kernel, constants: &[(&'static str, f64)]) -> Result<Arc<Pipeline>> {
        let key = key_of((kernel, constants));
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        let module = self.module(kernel)?;
        let pipeline = self.scoped(
            || format!("building kernel {key}"),
            || build(&self.device, kernel, &module, constants),
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
            // Shader modules first, one thread: each is shared by its kernels' variants, and cheap (naga).
            for (_, (kernel, _)) in &missing {
                self.module(kernel)?;
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

    fn module(&self, kernel: &'static Kernel) -> Result<Arc<wgpu::ShaderModule>> {
        let shader = kernel.shader;
        if let Some(m) = self.pipelines.modules.lock().unwrap_or_else(|p| p.into_inner()).get(shader.name) {
            return Ok(m.clone());
        }
        let source = shader.wgsl(self.features().subgroups);
        let module = self.scoped(
            || format!("compiling shaders/{}.wgsl", shader.name),
            || {
                let descriptor = wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                };
                // SAFETY: the one check left out bounds loops that would never end, and none can: every loop in
                // shaders/ is a `for` whose counter, its own, steps up to a bound it compares with `<` or halves
                // down to zero (held by tests/no_gpu.rs, `every_shader_loop_is_counted`).
                unsafe { self.device.create_shader_module_trusted(descriptor, RUNTIME_CHECKS) }
            },
        )?;
        let module = Arc::new(module);
        self.pipelines.modules.lock().unwrap_or_else(|p| p.into_inner()).insert(shader.name, module.clone());
        Ok(module)
    }
}

fn build(
    device: &wgpu::Device,
    kernel: &'static Kernel,
    module: &wgpu::ShaderModule,
    constants: &[(&'static str, f64)],
) -> Pipeline {
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
        compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: false },
        cache: None,
    });
    Pipeline { pipeline, layout }
}
