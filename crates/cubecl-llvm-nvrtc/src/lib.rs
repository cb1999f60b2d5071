//! Offline stand-in for `cubecl-llvm` 0.11.3, so that celldiff's `cuda` feature builds without
//! LLVM (issue 21).
//!
//! # Why this crate exists
//! Burn's CUDA backend is `cubecl-cuda` 0.11.3, which depends — not optionally — on
//! `cubecl-llvm`, CubeCL's second kernel compiler (CubeCL IR → pliron → LLVM NVPTX → PTX).
//! `cubecl-llvm`'s build pulls `llvm-sys 231` and `tracel-llvm-bundler`, whose build script
//! downloads a prebuilt LLVM 23 from the internet. celldiff's build machines reach only the
//! package registries, so that download fails and `cargo build --features cuda` could not be
//! built at all. `cubecl-cuda` has a first compiler that needs no LLVM: with its `cpp` feature
//! it translates kernels to CUDA C++ and compiles them at run time with NVIDIA's NVRTC (the
//! library that ships with every CUDA toolkit). celldiff enables that feature
//! (`crates/celldiff/Cargo.toml`), so LLVM is never used; but `cubecl-cuda` still names
//! `cubecl-llvm`'s types in its code. This crate supplies exactly those names, written for
//! celldiff (no code taken from `cubecl-llvm`), and the workspace's `[patch.crates-io]` puts
//! it in `cubecl-llvm`'s place. `llvm-sys`, `pliron-llvm` and `tracel-llvm-bundler` leave the
//! dependency graph, and the `cuda` binary builds offline.
//!
//! # What it provides
//! The items `cubecl-cuda` 0.11.3 refers to (`src/compiler.rs`, `src/runtime.rs`,
//! `src/compute/context.rs` of that crate):
//! - [`nvptx::ptx_version::PtxVersion`]: the PTX ISA version a CUDA driver loads. `cubecl-cuda`
//!   computes it for every device and uses it in its compilation-cache namespace; the table is
//!   NVIDIA's (PTX ISA release notes: which CUDA release introduced which PTX version).
//! - [`shared::lowered_features`]: `GpuTarget` and `restrict_features`, which `cubecl-cuda`
//!   calls only when the LLVM compiler is selected. Here it withdraws every matrix feature, the
//!   conservative answer for a compiler that lowers nothing.
//! - [`PlironCompiler`], [`PlironOptions`], [`PlironArtifact`], [`NvptxModule`], [`LlvmTarget`]:
//!   the LLVM compiler's types. [`PlironCompiler`]'s `compile` returns a
//!   [`CompilationError::Generic`] that says the build has no LLVM and to use the C++/NVRTC
//!   compiler; with `cubecl-cuda`'s `cpp` feature on (celldiff's `cuda` feature turns it on) it
//!   is never called.
//!
//! # Re-syncing on a Burn upgrade
//! This crate mirrors the public surface of `cubecl-llvm` **0.11.3** that `cubecl-cuda`
//! **0.11.3** uses (Burn 0.22.1). On an upgrade: bump `version` in `Cargo.toml` (the patch
//! applies only when the versions match; cargo warns "patch was not used" otherwise), then
//! `grep -rn cubecl_llvm` in the new `cubecl-cuda`'s sources and add or change the items it
//! names; `DOCS_RS=1 cargo check -p celldiff-cli --features cuda` without the patch shows the
//! upstream types to compare against. If `cubecl-cuda` ever makes `cubecl-llvm` optional, delete
//! this crate and the `[patch]` entry.

#![warn(missing_docs)]

pub mod nvptx;
pub mod shared;

use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::compiler::{CompilationError, Compiler};
use cubecl_runtime::kernel::{BufferIOAttr, KernelDefinition};

/// The message of every compilation attempt through this stand-in.
pub const NO_LLVM: &str = "this build of celldiff has no LLVM kernel compiler (cubecl-llvm is \
     replaced by crates/cubecl-llvm-nvrtc); CUDA kernels are compiled by NVRTC through \
     cubecl-cuda's `cpp` feature, which celldiff's `cuda` feature enables — a build that \
     reaches this has lost that feature";

/// The targets `cubecl-llvm` compiles for. Only the GPU target `cubecl-cuda` names exists here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    /// CubeCL's CPU JIT target (unused by celldiff; kept as the default, as upstream).
    #[default]
    Cpu,
    /// NVIDIA PTX through LLVM's NVPTX back end.
    Nvptx,
}

/// The LLVM kernel compiler. Compiling with it fails with [`NO_LLVM`].
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    /// What it would compile for.
    pub target: LlvmTarget,
}

/// Options of the LLVM compiler, as `cubecl-cuda` fills them in. Read by nothing here.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMD architecture (always `None` from `cubecl-cuda`).
    pub arch: Option<String>,
    /// NVIDIA compute capability of the device.
    pub sm_arch: Option<cubecl_core::ir::nvidia::SmArch>,
    /// PTX ISA version to emit.
    pub ptx_version: Option<nvptx::ptx_version::PtxVersion>,
    /// Whether scalars travel in the kernel parameter block.
    pub grid_constants: bool,
}

/// A compiled PTX module (never produced here; the type is part of `cubecl-cuda`'s API).
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX text.
    pub ptx: Vec<core::ffi::c_char>,
    /// Entry-point symbol.
    pub entrypoint: String,
    /// LLVM IR, for logs and cache keys.
    pub ir: String,
    /// Dynamic shared memory per launch, bytes.
    pub shared_memory_size: usize,
    /// Read/write mode of each buffer binding.
    pub io: Vec<BufferIOAttr>,
}

/// What the LLVM compiler produces.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    /// A PTX module.
    NvptxCode(NvptxModule),
}

impl core::fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let PlironArtifact::NvptxCode(module) = self;
        f.write_str(&module.ir)
    }
}

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    /// # Errors
    /// Always [`CompilationError::Generic`] with [`NO_LLVM`].
    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &PlironOptions,
    ) -> Result<PlironArtifact, CompilationError> {
        Err(CompilationError::Generic {
            reason: NO_LLVM.to_string(),
            backtrace: BackTrace::capture(),
        })
    }

    fn buffer_io(repr: &PlironArtifact) -> Option<Vec<BufferIOAttr>> {
        let PlironArtifact::NvptxCode(module) = repr;
        Some(module.io.clone())
    }

    fn extension(&self) -> &'static str {
        "ll"
    }

    fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}
