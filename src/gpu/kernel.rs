//! How a kernel is declared: its shader, entry point, parameter struct and binding list, written once.
//!
//! Binding 0 of every kernel is its parameter struct (a uniform); bindings 1.. are storage buffers in the order
//! of [`Kernel::bindings`]. The Rust parameter struct is declared with [`params!`](crate::params), which records its
//! layout so a test (tests/no_gpu.rs) can hold it against the WGSL struct of the same name through naga.

/// The shared WGSL helpers, prepended to every shader.
pub const PRELUDE: &str = include_str!("../../shaders/prelude.wgsl");

/// Values passed between the invocations of a subgroup (matvec_x.wgsl's x read in turns), placed after the
/// prelude where the device has subgroup operations; [`NO_LANES`] stands in elsewhere.
pub const LANES: &str = include_str!("../../shaders/lanes.wgsl");
/// [`LANES`]'s functions for a device without subgroup operations, where nothing calls them.
pub const NO_LANES: &str = include_str!("../../shaders/lanes_none.wgsl");

/// One WGSL source file of shaders/, and the file of declarations it shares with others, if any.
#[derive(Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    /// shaders/ files placed between the prelude and this one, in order: what a family of shaders shares
    /// (matmul_common.wgsl: the matmul shaders' parameters and bindings; moe_common.wgsl, the expert shaders';
    /// moe_tiles.wgsl, how the expert prefill kernels find their tiles). Empty for the rest.
    pub common: &'static [&'static str],
}

impl Shader {
    /// The full module text for a device with subgroup operations or without: the file's `enable` directives
    /// (which must open a module), the prelude, [`LANES`] or [`NO_LANES`], the shared declarations, then the
    /// rest of the file.
    pub fn wgsl(&self, subgroups: bool) -> String {
        let (enables, body): (Vec<&str>, Vec<&str>) = self.source.lines().partition(|l| l.starts_with("enable "));
        let enables: String = enables.iter().map(|l| format!("{l}\n")).collect();
        let (name, common) = (self.name, self.common.join("\n"));
        let lanes = if subgroups { LANES } else { NO_LANES };
        format!("{enables}{PRELUDE}\n{lanes}\n{common}\n// ---- {name}.wgsl ----\n{}\n", body.join("\n"))
    }

    /// Whether the file enables a WGSL extension (`enable f16;`, `enable wgpu_cooperative_matrix;`).
    pub fn enables(&self, extension: &str) -> bool {
        self.source.lines().any(|l| l.strip_prefix("enable ").and_then(|e| e.strip_suffix(';')) == Some(extension))
    }
}

/// Declares a shader of shaders/ by file stem, and the files of shared declarations placed before it if it has
/// any: `shader!(RMS_NORM_SHADER, "rms_norm")`, `shader!(MATMUL, "matmul", common "matmul_common")`.
#[macro_export]
macro_rules! shader {
    ($const_name:ident, $file:literal) => {
        pub static $const_name: $crate::gpu::Shader = $crate::gpu::Shader {
            name: $file,
            source: include_str!(concat!("../../shaders/", $file, ".wgsl")),
            common: &[],
        };
    };
    ($const_name:ident, $file:literal, common $($common:literal),+) => {
        pub static $const_name: $crate::gpu::Shader = $crate::gpu::Shader {
            name: $file,
            source: include_str!(concat!("../../shaders/", $file, ".wgsl")),
            common: &[$(include_str!(concat!("../../shaders/", $common, ".wgsl"))),+],
        };
    };
}

/// How a storage binding is accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub name: &'static str,
    pub access: Access,
}

pub const fn read(name: &'static str) -> Binding {
    Binding { name, access: Access::Read }
}

pub const fn read_write(name: &'static str) -> Binding {
    Binding { name, access: Access::ReadWrite }
}

/// The layout of a `#[repr(C)]` parameter struct: its WGSL name, size, and field offsets.
#[derive(Debug)]
pub struct ParamsLayout {
    pub wgsl_name: &'static str,
    pub size: usize,
    pub fields: &'static [(&'static str, usize)],
}

/// A parameter struct declared with [`params!`](crate::params).
pub trait Params: bytemuck::Pod {
    const LAYOUT: ParamsLayout;
}

/// A compute kernel: one entry point of one shader, with its parameters and bindings.
#[derive(Debug)]
pub struct Kernel {
    pub shader: &'static Shader,
    pub entry: &'static str,
    pub params: &'static ParamsLayout,
    /// Storage bindings 1, 2, ... in order.
    pub bindings: &'static [Binding],
    /// Every set of override constants the kernel is built with; tests compile each one.
    pub variants: fn() -> Vec<Vec<(&'static str, f64)>>,
}

impl Kernel {
    pub fn name(&self) -> String {
        format!("{}::{}", self.shader.name, self.entry)
    }
}

/// Declares a `#[repr(C)]` parameter struct whose layout is checked against the WGSL struct of the same name.
/// Fields are 4-byte scalars (u32, i32, f32); pad to a multiple of 16 bytes with `_padN` fields.
#[macro_export]
macro_rules! params {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }

        impl $crate::gpu::Params for $name {
            const LAYOUT: $crate::gpu::ParamsLayout = $crate::gpu::ParamsLayout {
                wgsl_name: stringify!($name),
                size: ::core::mem::size_of::<$name>(),
                fields: &[$((stringify!($field), ::core::mem::offset_of!($name, $field))),*],
            };
        }
    };
}
