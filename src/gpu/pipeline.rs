//! The pipeline cache: one compute pipeline per (kernel, override constants), built on first use.

use std::collections::HashMap;
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

impl Context {
    /// The pipeline of `kernel` specialised with `constants`, compiled once and cached.
    pub fn pipeline(&self, kernel: &'static Kernel, constants: &[(&'static str, f64)]) -> Result<Arc<Pipeline>> {
        let key = format!("{}{constants:?}", kernel.name());
        if let Some(p) = self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
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

    fn module(&self, kernel: &'static Kernel) -> Result<Arc<wgpu::ShaderModule>> {
        let shader = kernel.shader;
        if let Some(m) = self.pipelines.modules.lock().unwrap_or_else(|p| p.into_inner()).get(shader.name) {
            return Ok(m.clone());
        }
        let source = shader.wgsl();
        let module = self.scoped(
            || format!("compiling shaders/{}.wgsl", shader.name),
            || {
                self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
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
