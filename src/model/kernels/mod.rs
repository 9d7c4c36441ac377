//! The runner's own CPU kernels for the operations that dominate a GAN step, each one burn
//! operation with its own backward pass, plugged in through burn's backend-extension API
//! (`#[backend_extension]` on burn's `Flex` CPU backend and its `Autodiff` wrapper).
//!
//! - [`conv`]: the convolution and transposed convolution (im2col + GEMM, col2im);
//! - [`batch_norm`]: BatchNorm in training mode from per-channel sums on NCHW memory;
//! - [`activation`]: LeakyReLU in one pass each way (burn's builds masks and selects), and
//!   tanh differentiated from its output (burn's computes it again);
//! - [`phase`]: the interleaving of the upsampling convolution's four phases.
//!
//! They apply on the CPU only ([`crate::backend::on_cpu`]); on a GPU the models use burn's ops.

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub mod phase;

use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;

/// The values of `t`, contiguous (copied only when they are not).
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => std::borrow::Cow::Borrowed(v),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("the runner's kernels take f32 tensors")
                .to_vec(),
        ),
    }
}

/// A CPU tensor of `values` with `shape`.
fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}
