//! A stand-in for `cubecl-llvm` 0.11.3 that needs no LLVM.
//!
//! Why: every `cubecl-cuda` that burn 0.22 accepts depends on `cubecl-llvm` unconditionally,
//! and its build dependency `tracel-llvm-bundler` downloads an LLVM bundle, which this project's
//! offline machines cannot do. `cubecl-cuda` has a second compiler, CUDA C++ through NVRTC,
//! which its `cpp` feature makes the default; with it the LLVM path is never taken, but the
//! types it names must still exist. This crate keeps exactly those, with the real crate's
//! names and fields, and a [`PlironCompiler`] whose `compile` returns an error.
//!
//! What `cubecl-cuda` uses: [`PlironCompiler`], [`LlvmTarget`], [`PlironOptions`],
//! [`PlironArtifact`], [`NvptxModule`], [`nvptx::ptx_version::PtxVersion`] (it also names the
//! NVRTC backend's kernel cache) and [`shared::lowered_features::restrict_features`] (called
//! only when the LLVM backend is selected).
//!
//! Remove it (one line, the `[patch.crates-io]` entry of the root `Cargo.toml`) once a
//! `cubecl-cuda` that burn accepts makes LLVM optional.

pub mod nvptx;
pub mod shared;
pub mod target;

pub use shared::{NvptxModule, PlironArtifact, PlironCompiler, PlironOptions};
pub use target::LlvmTarget;
