//! The NVPTX target's one pure-Rust part `cubecl-cuda` reads.

pub mod ptx_version;
