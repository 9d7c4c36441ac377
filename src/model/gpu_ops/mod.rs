//! The GPU path's own operations: compositions of the backend's tensor operations (and, for
//! per-channel sums and some gradients, CubeCL kernels of our own) with a backward pass of
//! their own, plugged in through burn's backend-extension API for every backend (the GPUs',
//! and the CPU's for the tests). Each exists because autodiff's backward of the plain
//! composition launched many times more kernels, and at batch 64 a GPU step is bound by its
//! kernel launches (see the README's "Measured on an NVIDIA H200").
//!
//! - [`remap`]: a fixed rearrangement of an axis as one gather each way (im2col, and the
//!   interleave of the upsampling convolution's phases), the backward's gather and sum one
//!   kernel of our own on a GPU;
//! - [`batch_norm`]: BatchNorm in training, its per-channel sums one kernel each way on a GPU
//!   ([`channel_sums`], CubeCL kernels of our own), burn's reductions on the CPU;
//! - [`channel_bias`]: a convolution's bias, its gradient one kernel on a GPU;
//! - [`bce`]: the binary cross-entropy of D's logits, one fused kernel and a reduction forward,
//!   one kernel backward (of our own on a GPU).
//!
//! On the CPU the runner's own kernels ([`super::kernels`]) apply instead.

pub mod batch_norm;
pub mod bce;
pub mod channel_bias;
#[cfg(any(feature = "vulkan", feature = "cuda"))]
pub mod channel_sums;
pub mod remap;

/// The CubeCL kernels of [`channel_sums`], [`bce`] and [`remap`] (and the GPU path's Adam,
/// `crate::train::adam`) read `f32`, the runner's only float type on every device; `kernels`
/// names them in the panic.
#[cfg(any(feature = "vulkan", feature = "cuda"))]
pub(crate) fn check_f32(tensors: &[&burn_cubecl::tensor::CubeTensor], kernels: &str) {
    for t in tensors {
        assert_eq!(
            t.dtype,
            burn::tensor::DType::F32,
            "the {kernels} kernels read f32 tensors"
        );
    }
}
