//! Narrowing a device's features to what the LLVM backend lowers.

use cubecl_core::ir::DeviceProperties;

/// The GPU target a device's features are narrowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    Nvptx,
}

/// Leaves `props` as they are. `cubecl-cuda` calls this only when the LLVM backend is
/// selected, whose kernels this stand-in refuses to compile anyway; the NVRTC backend
/// advertises the device's features unnarrowed, as with the real crate.
pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
