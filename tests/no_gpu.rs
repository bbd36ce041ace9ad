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
    let info = Validator::new(ValidationFlags::all(), capabilities(kernel, subgroups))
        .validate(&module)
        .unwrap_or_else(|e| panic!("shaders/{}.wgsl: {}", kernel.shader.name, e.emit_to_string(&source)));
    (module, info)
}

/// The capabilities a device gives the kernel's shader: subgroup operations where it has them (or the shader
/// is chosen only where it does), and the extensions the shader enables.
fn capabilities(kernel: &Kernel, subgroups: bool) -> Capabilities {
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
    capabilities
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

/// What a device is handed for each variant, its own module with the constants applied and the branches they
/// rule out removed (`gpu::specialize`), parses and validates with the capabilities the shader asks for.
#[test]
fn every_kernel_variant_specialises() {
    for kernel in kernels::all() {
        let modules = [false, true].map(|subgroups| parse(kernel, subgroups));
        for constants in (kernel.variants)() {
            let in_turns = constants.iter().any(|&(name, lanes)| name == "X_LANES" && lanes > 0.0);
            let (module, info) = &modules[in_turns as usize];
            let what = || format!("{} with {constants:?}", kernel.name());
            let wgsl = jamba_wgpu::gpu::specialize::specialize(module, info, kernel.entry, &constants)
                .unwrap_or_else(|e| panic!("{}: {e}", what()));
            let specialised = naga::front::wgsl::parse_str(&wgsl)
                .unwrap_or_else(|e| panic!("{}: {}", what(), e.emit_to_string(&wgsl)));
            assert!(specialised.overrides.is_empty(), "{}: overrides left", what());
            Validator::new(ValidationFlags::all(), capabilities(kernel, in_turns))
                .validate(&specialised)
                .unwrap_or_else(|e| panic!("{}: {}", what(), e.emit_to_string(&wgsl)));
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

/// A decode matvec's variant holds the read path the host named (MATVEC_PATH, matvec_x.wgsl) and the one that
/// reads a weight at a time, which its conditions fall to, and no other: what keeps its pipeline quick to build.
#[test]
fn a_matvec_variant_holds_its_read_path_alone() {
    let kernel = kernels::all().into_iter().find(|k| k.name() == "matvec::matvec").expect("matvec::matvec");
    let (module, info) = parse(kernel, true);
    let (turns, quads_x, quads, words, weights) = (1.0, 2.0, 3.0, 5.0, 6.0);
    let variant = |path: f64| {
        let constants = [
            ("W_DTYPE", 2.0),
            ("ROW_THREADS", 1.0),
            ("MATVEC_READS", 2.0),
            ("MATVEC_ROWS", 8.0),
            ("X_LANES", 8.0),
            ("MATVEC_UNROLL", 1.0),
            ("MATVEC_PATH", path),
        ];
        jamba_wgpu::gpu::specialize::specialize(&module, &info, kernel.entry, &constants).unwrap()
    };
    // Each path's own helpers: x taken from another lane, x four values a load, x a word's values at a time,
    // rows by words; and the weight-at-a-time fallback's.
    let helpers = ["fn quad_in_lane", "fn x_quad(", "fn x_quad_by_words", "fn row_word_dot", "fn w_matvec_at"];
    for (path, holds) in [
        (turns, [true, false, false, false, true]),
        (quads_x, [false, true, false, false, true]),
        (quads, [false, false, true, false, true]),
        (words, [false, false, false, true, true]),
        (weights, [false, false, false, false, true]),
    ] {
        let wgsl = variant(path);
        for (helper, held) in helpers.iter().zip(holds) {
            assert_eq!(wgsl.contains(helper), held, "MATVEC_PATH {path}: `{helper}`");
        }
    }
}

/// Every loop in every shader ends: no `loop` or `while`, and each `for` counts a variable of its own up to a
/// bound it compares with `<` (by `++`, or `+=` a step: a literal other than zero, or a lane count, workgroup size
/// or tile width), or halves it down to zero, with no other assignment to it. That is the promise under which the
/// pipelines are built without wgpu's loop bounds (`RUNTIME_CHECKS`, src/gpu/pipeline.rs).
#[test]
fn every_shader_loop_is_counted() {
    let mut seen = std::collections::HashSet::new();
    for kernel in kernels::all() {
        for subgroups in [false, true] {
            let source = kernel.shader.wgsl(subgroups);
            if seen.insert(source.clone()) {
                let faults = uncounted_loops(&source);
                assert!(faults.is_empty(), "shaders/{}.wgsl: {}", kernel.shader.name, faults.join("; "));
            }
        }
    }
}

/// The check itself: each kind of loop that may not end is caught, and a counted one is not.
#[test]
fn uncounted_loops_are_caught() {
    let counted = "fn f(n: u32) { for (var i = 0u; i < n; i++) { for (var j = i; j + 1u < n && i == j; j += 4u) { } } \
                   for (var k = n; k > 0u; k >>= 1u) { let kept = k & 1u; } }";
    assert_eq!(uncounted_loops(counted), Vec::<String>::new());
    for (looping, why) in [
        ("fn f() { loop { break; } }", "`loop`"),
        ("fn f(n: u32) { var i = 0u; while i < n { i++; } }", "`while`"),
        ("fn f(n: u32) { for (var i = 0u; i <= n; i++) { } }", "not `<`"),
        ("fn f(n: u32) { for (var i = 0u; n > i; i++) { } }", "not `<`"),
        ("fn f(n: u32) { for (var i = 0u; i < n || n == 0u; i++) { } }", "`||`"),
        ("fn f(n: u32) { for (var i = 0u; i < n; i += 0u) { } }", "step"),
        ("fn f(n: u32) { for (var i = 0u; i < n; i--) { } }", "step"),
        ("fn f(n: u32) { for (var i = 0u; i < n; i++) { i = 0u; } }", "assigned"),
        ("fn f(n: u32) { for (var i = 0u; i < n; i++) { // i = 0u;\n i -= 1u; } }", "assigned"),
        ("fn g(p: ptr<function, u32>) {} fn f(n: u32) { for (var i = 0u; i < n; i++) { g(&i); } }", "assigned"),
        ("fn f(n: u32) { for (var i = 1u; i > 0u; i >>= 1u) { i++; } }", "assigned"),
    ] {
        let faults = uncounted_loops(looping);
        assert!(faults.len() == 1 && faults[0].contains(why), "{looping:?}: {faults:?}");
    }
}

/// What keeps each loop of a WGSL module from being a counted one, one line per loop.
fn uncounted_loops(source: &str) -> Vec<String> {
    let code = without_comments(source);
    let line = |at: usize| code[..at].lines().count().max(1);
    let mut faults: Vec<String> = ["loop", "while"]
        .iter()
        .flat_map(|&keyword| words(&code, keyword).into_iter().map(move |at| (keyword, at)))
        .map(|(keyword, at)| format!("line {}: a `{keyword}`", line(at)))
        .collect();
    for at in words(&code, "for") {
        let open = at + code[at..].find('(').expect("`for (`");
        let close = open + matching(&code[open..], '(', ')') - 1;
        let header = &code[open + 1..close];
        let body_open = close + code[close..].find('{').expect("a `for` body");
        let body = &code[body_open..body_open + matching(&code[body_open..], '{', '}')];
        if let Err(fault) = counted(header, body) {
            faults.push(format!("line {}: for ({header}): {fault}", line(at)));
        }
    }
    faults
}

/// Whether a `for` loop with this header and body ends: a counter declared by the header, compared with `<` a
/// bound and stepped up by the update, or halved down to zero (`c > 0u; c >>= 1u`), and not assigned in the body.
fn counted(header: &str, body: &str) -> Result<(), String> {
    let parts: Vec<&str> = header.split(';').map(str::trim).collect();
    let [init, condition, update] = parts[..] else { return Err("not `init; condition; update`".into()) };
    let counter = init.strip_prefix("var ").and_then(|v| v.split(|c: char| !is_ident(c)).next());
    let counter = counter.filter(|c| !c.is_empty()).ok_or(format!("`{init}` declares no counter"))?;
    let halved = condition == format!("{counter} > 0u") && update == format!("{counter} >>= 1u");
    if !halved {
        if condition.contains("||") {
            return Err(format!("`{condition}`: `||`"));
        }
        // One of the terms joined by `&&` is `counter ... < bound`, the bound free of the counter.
        let bounded = condition.split("&&").filter_map(|term| term.split_once('<')).any(|(left, right)| {
            !right.starts_with('=') && !variable(left, counter).is_empty() && variable(right, counter).is_empty()
        });
        if !bounded {
            return Err(format!("`{condition}`: not `<` a bound"));
        }
        let step = update.strip_prefix(counter).map(str::trim);
        let up = step == Some("++")
            || step.and_then(|s| s.strip_prefix("+=")).is_some_and(|s| !["0", "0u", "0i"].contains(&s.trim()));
        if !up {
            return Err(format!("`{update}`: not a step up"));
        }
    }
    const ASSIGNMENTS: [&str; 12] = ["+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=", "++", "--"];
    let assigned = variable(body, counter).into_iter().any(|i| {
        let (before, after) = (body[..i].trim_end(), body[i + counter.len()..].trim_start());
        let pointer = before.ends_with('&') && !before.ends_with("&&");
        let assignment = after.starts_with('=') && !after.starts_with("==");
        pointer || assignment || ASSIGNMENTS.iter().any(|a| after.starts_with(a))
    });
    match assigned {
        true => Err(format!("`{counter}` assigned in the body")),
        false => Ok(()),
    }
}

/// Where the variable `name` is used in `text`: the word, not a field of that name (`p.t`).
fn variable(text: &str, name: &str) -> Vec<usize> {
    words(text, name).into_iter().filter(|&at| !text[..at].trim_end().ends_with('.')).collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The byte offsets where `word` stands alone in `text`.
fn words(text: &str, word: &str) -> Vec<usize> {
    text.match_indices(word)
        .filter(|&(at, _)| {
            let alone_before = text[..at].chars().next_back().is_none_or(|c| !is_ident(c));
            alone_before && text[at + word.len()..].chars().next().is_none_or(|c| !is_ident(c))
        })
        .map(|(at, _)| at)
        .collect()
}

/// The length of the bracketed text `text` opens with, through its matching close.
fn matching(text: &str, open: char, close: char) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        depth += (c == open) as i32 - (c == close) as i32;
        if depth == 0 {
            return i + 1;
        }
    }
    panic!("unclosed `{open}` in {text:?}")
}

/// `source` with its `//` and `/* */` comments blanked out, lines kept where they were.
fn without_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut block = 0;
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('/', Some('*')) => (block, _) = (block + 1, chars.next()),
            ('*', Some('/')) if block > 0 => (block, _) = (block - 1, chars.next()),
            ('/', Some('/')) if block == 0 => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            _ => out.push(if block > 0 && c != '\n' { ' ' } else { c }),
        }
    }
    out
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
