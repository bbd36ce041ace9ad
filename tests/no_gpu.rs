//! Tier 1: no GPU needed. Every shader parses and validates with naga in every variant it is built with
//! (override constants applied, then written to SPIR-V), and every kernel's Rust declaration agrees with its
//! WGSL: the parameter struct's size and field offsets, and each binding's name, index and access.

use jamba_wgpu::gpu::{Access, Context, ContextOptions, Kernel};
use jamba_wgpu::kernels;
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// The shaders that use subgroup operations (CPU-adapter kernels and the cooperative-matrix prefill, chosen only
/// where subgroups exist); every other shader must validate with no optional capability but the extensions it
/// enables, as a device without subgroups composes it.
const SUBGROUP_SHADERS: [&str; 5] = ["matmul_cpu", "moe_cpu", "ssm_scan_cpu", "matmul_coop", "moe_coop"];

/// The kernel's shader as a device with subgroup operations composes it (`subgroups`: with lanes.wgsl) or one
/// without (lanes_none.wgsl), parsed and validated with the capabilities such a device gives it.
fn parse(kernel: &Kernel, subgroups: bool) -> (naga::Module, naga::valid::ModuleInfo) {
    let source = kernel.shader.wgsl(subgroups);
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("shaders/{}.wgsl: {}", kernel.shader.name, e.emit_to_string(&source)));
    let mut capabilities = match subgroups || SUBGROUP_SHADERS.contains(&kernel.shader.name) {
        true => Capabilities::SUBGROUP,
        false => Capabilities::empty(),
    };
    if kernel.shader.enables("f16") {
        capabilities |= Capabilities::SHADER_FLOAT16;
    }
    if kernel.shader.enables("wgpu_cooperative_matrix") {
        capabilities |= Capabilities::COOPERATIVE_MATRIX;
    }
    let info = Validator::new(ValidationFlags::all(), capabilities)
        .validate(&module)
        .unwrap_or_else(|e| panic!("shaders/{}.wgsl: {}", kernel.shader.name, e.emit_to_string(&source)));
    (module, info)
}

/// Each variant compiles from the module a device that builds it composes: with subgroup operations where it
/// reads x in turns (X_LANES), else without.
#[test]
fn every_kernel_variant_compiles_to_spirv() {
    for kernel in kernels::all() {
        let modules = [false, true].map(|subgroups| parse(kernel, subgroups));
        let (module, _) = &modules[0];
        assert!(
            module.entry_points.iter().any(|e| e.name == kernel.entry),
            "{}: no entry point `{}`",
            kernel.name(),
            kernel.entry
        );
        for constants in (kernel.variants)() {
            let in_turns = constants.iter().any(|&(name, lanes)| name == "X_LANES" && lanes > 0.0);
            let (module, info) = &modules[in_turns as usize];
            let constants: naga::back::PipelineConstants =
                constants.iter().map(|&(name, value)| (name.to_string(), value)).collect();
            let (module, info) =
                naga::back::pipeline_constants::process_overrides(module, info, None, &constants)
                    .unwrap_or_else(|e| panic!("{} with {constants:?}: {e}", kernel.name()));
            let options = naga::back::spv::Options::default();
            let pipeline = naga::back::spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: kernel.entry.to_string(),
            };
            naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
                .unwrap_or_else(|e| panic!("{} with {constants:?}: SPIR-V: {e}", kernel.name()));
        }
    }
}

#[test]
fn params_structs_match_wgsl() {
    for kernel in kernels::all() {
        let (module, _) = parse(kernel, false);
        let layout = kernel.params;
        let (_, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(layout.wgsl_name))
            .unwrap_or_else(|| panic!("{}: no WGSL struct {}", kernel.name(), layout.wgsl_name));
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{}: {} is not a struct", kernel.name(), layout.wgsl_name)
        };
        assert_eq!(*span as usize, layout.size, "{}: size of {}", kernel.name(), layout.wgsl_name);
        let wgsl: Vec<(&str, usize)> =
            members.iter().map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize)).collect();
        assert_eq!(wgsl, layout.fields.to_vec(), "{}: fields of {}", kernel.name(), layout.wgsl_name);
    }
}

#[test]
fn bindings_match_wgsl() {
    for kernel in kernels::all() {
        let (module, info) = parse(kernel, false);
        let global = |binding: u32| {
            module
                .global_variables
                .iter()
                .map(|(_, g)| g)
                .find(|g| g.binding.as_ref().is_some_and(|b| b.group == 0 && b.binding == binding))
                .unwrap_or_else(|| panic!("{}: nothing at @binding({binding})", kernel.name()))
        };
        let params = global(0);
        assert_eq!(params.space, naga::AddressSpace::Uniform, "{}: binding 0 must be the uniform params", kernel.name());
        assert_eq!(module.types[params.ty].name.as_deref(), Some(kernel.params.wgsl_name));
        for (i, binding) in kernel.bindings.iter().enumerate() {
            let g = global(i as u32 + 1);
            assert_eq!(g.name.as_deref(), Some(binding.name), "{}: name of @binding({})", kernel.name(), i + 1);
            let naga::AddressSpace::Storage { access } = g.space else {
                panic!("{}: @binding({}) is not a storage buffer", kernel.name(), i + 1)
            };
            let wants = match binding.access {
                Access::Read => naga::StorageAccess::LOAD,
                Access::ReadWrite => naga::StorageAccess::LOAD | naga::StorageAccess::STORE,
            };
            assert_eq!(access, wants, "{}: access of `{}`", kernel.name(), binding.name);
        }
        // A shader file may declare bindings for its other entry points (matmul.wgsl's matvec_norm binds more
        // than matvec): what must hold is that this entry point uses none past its kernel's list.
        let entry = module.entry_points.iter().position(|e| e.name == kernel.entry);
        let uses = info.get_entry_point(entry.unwrap_or_else(|| panic!("{}: no entry point", kernel.name())));
        for (handle, g) in module.global_variables.iter() {
            if let (Some(b), false) = (&g.binding, uses[handle].is_empty()) {
                let listed = b.group == 0 && b.binding as usize <= kernel.bindings.len();
                assert!(listed, "{}: uses @binding({}) `{:?}`, not in its list", kernel.name(), b.binding, g.name);
            }
        }
    }
}

#[test]
fn a_broken_shader_is_reported_with_its_name() {
    let broken =
        jamba_wgpu::gpu::Shader { name: "broken", source: "fn f() -> f32 { return undefined_name; }", common: &[] };
    let source = broken.wgsl(false);
    let error = naga::front::wgsl::parse_str(&source).expect_err("an undefined name must not parse");
    assert!(error.emit_to_string(&source).contains("undefined_name"));
}

/// A count of matvec rows (or words per round) the kernels are not built for is refused before any adapter is
/// opened.
#[test]
fn unsupported_matvec_rows_are_a_clear_error() {
    for rows in [0, 3, 16] {
        let options = ContextOptions { matvec_rows: Some(rows), ..Default::default() };
        let err = Context::new(&options).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(&format!("matvec rows {rows}: expected one of [1, 2, 4, 8]")), "rows {rows}: {err:?}");
    }
    // Likewise words per round of a thin matvec (its shader holds at most 4).
    for unroll in [0, 3, 8] {
        let options = ContextOptions { matvec_unroll: Some(unroll), ..Default::default() };
        let err = Context::new(&options).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(&format!("matvec unroll {unroll}: expected one of [1, 2, 4]")), "unroll {unroll}: {err:?}");
    }
}
