//! A kernel variant's own shader module: its override constants applied in naga's IR, and the branches they
//! rule out removed, before any driver sees it.
//!
//! A shader holds every path its variants may take (each weight type's decoding; a matvec's ways of reading rows:
//! quads of x in turns, quads, words, one weight at a time), chosen by `if`s. Drivers drop the untaken ones too,
//! but only after translating, inlining and optimising them: lavapipe built a decode matvec in 17 ms with its
//! untaken read paths deleted from the source, against 63 ms with them (BENCHMARKS.md, "Pipelines built
//! quicker"). Here each variant's module keeps only its entry point, the branches the constants do not rule out,
//! and the functions those reach. For that a shader tests its constants first in each condition: the matvecs'
//! read paths depend on x's offset and k, which the host names as a constant (`MATVEC_PATH`, matvec_x.wgsl)
//! before the shader tests them again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use naga::{Block, Expression, Function, Handle, Literal, Module, Statement};

/// `module` specialised for one entry point of one compute kernel, as WGSL: `constants` applied, every `if`
/// whose condition they decide replaced by the branch it takes, and what the entry point no longer reaches
/// dropped. (As WGSL because handing wgpu naga's IR needs a feature of it that pulls in a crate more; wgpu
/// parses the text again in well under a millisecond a kernel.)
pub fn specialize(
    module: &Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    constants: &[(&'static str, f64)],
) -> Result<String, String> {
    let constants: naga::back::PipelineConstants = constants.iter().map(|&(name, v)| (name.to_string(), v)).collect();
    let stage = Some((naga::ShaderStage::Compute, entry));
    let (module, _) = naga::back::pipeline_constants::process_overrides(module, info, stage, &constants)
        .map_err(|e| format!("override constants {constants:?}: {e}"))?;
    let mut module = module.into_owned();
    let globals = &module.global_expressions;
    let constants = &module.constants;
    let fold = |function: &mut Function| {
        let known = Known {
            function_expressions: &function.expressions,
            globals,
            constants,
            loads: RefCell::new(HashMap::new()),
            pruned: Cell::new(false),
        };
        let body = std::mem::take(&mut function.body);
        function.body = known.prune(body, &mut HashMap::new());
        if known.pruned.get() {
            // The names of `let`s hold their expressions alive through compaction, and a removed branch's
            // would then be left unevaluated, which validation refuses. Names are only for reading the text.
            function.named_expressions.clear();
        }
    };
    // Each function's body is taken out, pruned against the function's own expressions, and put back.
    let mut functions = std::mem::take(&mut module.functions);
    for (_, function) in functions.iter_mut() {
        fold(function);
    }
    let mut entry_points = std::mem::take(&mut module.entry_points);
    for entry_point in &mut entry_points {
        fold(&mut entry_point.function);
    }
    module.functions = functions;
    module.entry_points = entry_points;
    naga::compact::compact(&mut module, naga::compact::KeepUnused::No);
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("the specialised module: {e:?}"))?;
    naga::back::wgsl::write_string(&module, &info, naga::back::wgsl::WriterFlags::empty())
        .map_err(|e| format!("writing the specialised module: {e}"))
}

/// What a function's expressions are known to be once the override constants are applied.
struct Known<'a> {
    function_expressions: &'a naga::Arena<Expression>,
    globals: &'a naga::Arena<Expression>,
    constants: &'a naga::Arena<naga::Constant>,
    /// Loads of local variables whose value was known where they were evaluated: how naga writes `a && b` and
    /// `a || b`, an `if` on `a` that stores `b` or a constant into a local variable, then a load of it.
    loads: RefCell<HashMap<Handle<Expression>, Value>>,
    /// Whether an `if` was decided.
    pruned: Cell<bool>,
}

/// The local variables whose value is known at a point of a function, stored there by the statements before it.
type Locals = HashMap<Handle<naga::LocalVariable>, Value>;

/// A scalar value known without running the shader.
#[derive(Clone, Copy, PartialEq)]
enum Value {
    Bool(bool),
    U32(u32),
    I32(i32),
}

impl Known<'_> {
    /// `block` with each `if` whose condition is known replaced by the block it takes (a `Block` statement, so
    /// that a `break`, `continue` or `return` inside still leaves what it left), inner blocks pruned alike.
    /// `locals` holds the local variables known on entry, and on return those known after the block.
    fn prune(&self, block: Block, locals: &mut Locals) -> Block {
        let mut out = Block::with_capacity(block.len());
        for (statement, span) in block.span_into_iter() {
            let statement = match statement {
                Statement::Emit(ref range) => {
                    for e in range.clone() {
                        let local = match self.function_expressions[e] {
                            Expression::Load { pointer } => self.local(pointer),
                            _ => None,
                        };
                        if let Some(&value) = local.and_then(|v| locals.get(&v)) {
                            self.loads.borrow_mut().insert(e, value);
                        }
                    }
                    statement
                }
                Statement::Store { pointer, value } => {
                    let Some(variable) = self.root_local(pointer) else {
                        out.push(statement, span);
                        continue;
                    };
                    match (self.local(pointer), self.value(value, self.function_expressions)) {
                        (Some(_), Some(known)) => locals.insert(variable, known),
                        _ => locals.remove(&variable),
                    };
                    statement
                }
                Statement::If { condition, accept, reject } => match self.value(condition, self.function_expressions) {
                    Some(Value::Bool(taken)) => {
                        self.pruned.set(true);
                        Statement::Block(self.prune(if taken { accept } else { reject }, locals))
                    }
                    _ => {
                        let accept = self.prune(accept, &mut locals.clone());
                        let reject = self.prune(reject, &mut locals.clone());
                        locals.clear();
                        Statement::If { condition, accept, reject }
                    }
                },
                Statement::Block(inner) => Statement::Block(self.prune(inner, locals)),
                Statement::Loop { body, continuing, break_if } => {
                    locals.clear();
                    let body = self.prune(body, &mut Locals::new());
                    let continuing = self.prune(continuing, &mut Locals::new());
                    Statement::Loop { body, continuing, break_if }
                }
                // A case may be entered from the one before it (fall_through): none starts knowing anything.
                Statement::Switch { selector, cases } => {
                    let fresh = |c: naga::SwitchCase| {
                        naga::SwitchCase { body: self.prune(c.body, &mut Locals::new()), ..c }
                    };
                    let cases = cases.into_iter().map(fresh).collect();
                    locals.clear();
                    Statement::Switch { selector, cases }
                }
                // A call may store through a pointer it is given; what else may store is not tracked.
                other => {
                    locals.clear();
                    other
                }
            };
            out.push(statement, span);
        }
        out
    }

    /// The local variable `pointer` is, if it is one.
    fn local(&self, pointer: Handle<Expression>) -> Option<Handle<naga::LocalVariable>> {
        match self.function_expressions[pointer] {
            Expression::LocalVariable(v) => Some(v),
            _ => None,
        }
    }

    /// The local variable `pointer` points into (an element or member of it), if any.
    fn root_local(&self, pointer: Handle<Expression>) -> Option<Handle<naga::LocalVariable>> {
        match self.function_expressions[pointer] {
            Expression::LocalVariable(v) => Some(v),
            Expression::Access { base, .. } | Expression::AccessIndex { base, .. } => self.root_local(base),
            _ => None,
        }
    }

    /// The value of expression `e` of `arena` (a function's, or the module's global ones), if constants decide it:
    /// literals, constants, and comparisons, `!`, `&&` and `||` of those.
    fn value(&self, e: Handle<Expression>, arena: &naga::Arena<Expression>) -> Option<Value> {
        use naga::BinaryOperator as Op;
        match arena[e] {
            Expression::Literal(Literal::Bool(b)) => Some(Value::Bool(b)),
            Expression::Literal(Literal::U32(u)) => Some(Value::U32(u)),
            Expression::Literal(Literal::I32(i)) => Some(Value::I32(i)),
            Expression::Constant(c) => self.value(self.constants[c].init, self.globals),
            Expression::Load { .. } if std::ptr::eq(arena, self.function_expressions) => {
                self.loads.borrow().get(&e).copied()
            }
            Expression::Unary { op: naga::UnaryOperator::LogicalNot, expr } => match self.value(expr, arena)? {
                Value::Bool(b) => Some(Value::Bool(!b)),
                _ => None,
            },
            Expression::Binary { op, left, right } => {
                let (l, r) = (self.value(left, arena), self.value(right, arena));
                let ordering = match (l, r) {
                    (Some(Value::U32(a)), Some(Value::U32(b))) => Some(a.cmp(&b)),
                    (Some(Value::I32(a)), Some(Value::I32(b))) => Some(a.cmp(&b)),
                    _ => None,
                };
                let bools = |value| if let Some(Value::Bool(b)) = value { Some(b) } else { None };
                let equal = || ordering.map(|o| o.is_eq()).or_else(|| Some(bools(l)? == bools(r)?));
                let result = match op {
                    Op::Equal => equal(),
                    Op::NotEqual => equal().map(|eq| !eq),
                    Op::Less => ordering.map(|o| o.is_lt()),
                    Op::LessEqual => ordering.map(|o| o.is_le()),
                    Op::Greater => ordering.map(|o| o.is_gt()),
                    Op::GreaterEqual => ordering.map(|o| o.is_ge()),
                    // One known side may decide these alone.
                    Op::LogicalAnd => match (bools(l), bools(r)) {
                        (Some(false), _) | (_, Some(false)) => Some(false),
                        (Some(a), Some(b)) => Some(a && b),
                        _ => None,
                    },
                    Op::LogicalOr => match (bools(l), bools(r)) {
                        (Some(true), _) | (_, Some(true)) => Some(true),
                        (Some(a), Some(b)) => Some(a || b),
                        _ => None,
                    },
                    _ => None,
                };
                result.map(Value::Bool)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::specialize;

    const SHADER: &str = "
        override MODE: u32 = 0u;
        @group(0) @binding(0) var<storage, read_write> out: array<u32>;
        fn fast() -> u32 { return 1u; }
        fn slow() -> u32 { return 2u; }
        fn spare() -> u32 { return 3u; }
        @compute @workgroup_size(1)
        fn main() {
            var total = 0u;
            for (var i = 0u; i < 4u; i++) {
                if MODE == 1u && i < 2u {
                    total += fast();
                } else {
                    if !(MODE != 1u || out[1] == 0u) { out[2] = 77u; }
                    total += slow();
                }
            }
            if i32(out[0]) < 0 { total += spare(); }
            out[0] = total;
        }";

    fn specialised(mode: f64) -> String {
        let module = naga::front::wgsl::parse_str(SHADER).unwrap();
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap();
        specialize(&module, &info, "main", &[("MODE", mode)]).unwrap()
    }

    /// A condition one known side of `&&` or `||` decides is folded, and with it the functions only the untaken
    /// branch called; a condition the constants do not decide (`i < 2u`, `out[0]`) keeps both branches.
    #[test]
    fn the_branches_the_constants_rule_out_are_removed() {
        let slow_path = specialised(2.0);
        assert!(!slow_path.contains("fn fast"), "{slow_path}");
        assert!(slow_path.contains("fn slow") && slow_path.contains("fn spare"), "{slow_path}");
        assert!(!slow_path.contains("77u"), "MODE != 1u decides the inner `if` too: {slow_path}");
        let both = specialised(1.0);
        for kept in ["fn fast", "fn slow", "fn spare", "77u"] {
            assert!(both.contains(kept), "{kept}: {both}");
        }
        assert!(!both.contains("MODE ==") && !both.contains("MODE !="), "every test of MODE decided: {both}");
    }
}
