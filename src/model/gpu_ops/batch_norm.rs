//! BatchNorm in training mode for the GPU path, with its own backward pass: the textbook
//! gradients from two per-channel sums, out of the backend's tensor operations.
//!
//! Why: differentiated by autodiff, the composition of means, a centering, a variance and a
//! scaling took a reduction for every broadcast operand of every operation backward, and
//! BatchNorm was most of the ~250 reductions and ~400 small elementwise kernels of the report's
//! DCGAN step on the H200 (cubecl's profile, 2026-12-04): launch-bound. Here each direction is
//! four reductions (a sum over the batch, then over the pixels, per statistic) and elementwise
//! work that burn's fusion joins into a few kernels. The CPU keeps its own kernel
//! ([`crate::model::kernels::batch_norm`]), which the tests compare this with.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;

use crate::model::kernels::batch_norm::Normalized;

#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "vulkan", feature = "cuda")),
    Fusion: cfg(any(feature = "vulkan", feature = "cuda")),
    Autodiff
)]
pub trait ComposedBatchNorm: Backend {
    /// `x` `[B, C, H, W]` normalized per channel with its batch statistics, then scaled by
    /// `gamma` and shifted by `beta` (both `[C]`); the batch's mean and biased variance too.
    #[fusion(default)]
    fn composed_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Normalized<Self> {
        forward::<Self>(x, gamma, beta, epsilon).0
    }
}

impl ComposedBatchNorm for Flex {}

#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl ComposedBatchNorm for burn_cubecl::CubeBackend {}

/// `[C]` as `[1, C, 1, 1]`, to broadcast over an NCHW tensor.
fn per_channel<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let channels = t.shape().num_elements();
    B::float_reshape(t, Shape::new([1, channels, 1, 1]))
}

/// `t` `[B, C, H, W]` reduced per channel to `[C]` by `reduce` (the backend's sum or mean
/// along a dimension): over the batch, then over the pixels (each reduction with thousands of
/// outputs or contiguous inputs, not one thread a channel over a strided walk).
fn per_channel_reduce<B: Backend>(
    t: FloatTensor<B>,
    reduce: fn(FloatTensor<B>, usize) -> FloatTensor<B>,
) -> FloatTensor<B> {
    let [_, channels, height, width] = t.shape().dims();
    let images = reduce(t, 0);
    let planes = B::float_reshape(images, Shape::new([channels, height * width]));
    B::float_reshape(reduce(planes, 1), Shape::new([channels]))
}

/// The sum per channel.
fn channel_sums<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    per_channel_reduce::<B>(t, B::float_sum_dim)
}

/// The mean per channel (one kernel fewer than the sum, then a division).
fn channel_means<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    per_channel_reduce::<B>(t, B::float_mean_dim)
}

/// Values per channel of `[B, C, H, W]`.
fn count(shape: &Shape) -> f64 {
    (shape.num_elements() / shape[1].max(1)).max(1) as f64
}

/// `1 / sqrt(variance + epsilon)`.
fn inverse_std<B: Backend>(variance: FloatTensor<B>, epsilon: f64) -> FloatTensor<B> {
    B::float_recip(B::float_sqrt(B::float_add_scalar(variance, epsilon.into())))
}

/// The op's output, and `1 / std` per channel (what the backward step keeps).
fn forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> (Normalized<B>, FloatTensor<B>) {
    let mean = channel_means::<B>(x.clone());
    let centered = B::float_sub(x, per_channel::<B>(mean.clone()));
    let squares = B::float_mul(centered.clone(), centered.clone());
    let variance = channel_means::<B>(squares);
    let inverse_std = inverse_std::<B>(variance.clone(), epsilon);
    let scale = B::float_mul(gamma, inverse_std.clone());
    let output = B::float_add(
        B::float_mul(centered, per_channel::<B>(scale)),
        per_channel::<B>(beta),
    );
    let normalized = Normalized {
        output,
        mean,
        variance,
    };
    (normalized, inverse_std)
}

/// What the backward step keeps: the input, gamma, the batch's mean and `1 / std`.
#[derive(Debug, Clone)]
struct Saved<B: Backend> {
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    inverse_std: FloatTensor<B>,
}

/// The gradients for the input, gamma and beta from the output's, `dy`:
/// `dgamma = sum(dy x_hat)`, `dbeta = sum(dy)`, and
/// `dx = (dy - (dbeta + x_hat dgamma) / n) gamma inv`, per channel, x_hat = (x - mean) inv.
///
/// `dx` is computed at full size from the per-channel sums as they come: arithmetic on the
/// `[C]` values between the reductions and it (`dbeta / n`, `gamma inv`) was a kernel each,
/// three a BatchNorm, where at full size it joins one fused kernel (lavapipe's profile).
fn backward<B: Backend>(saved: Saved<B>, dy: FloatTensor<B>) -> [FloatTensor<B>; 3] {
    let Saved {
        x,
        gamma,
        mean,
        inverse_std,
    } = saved;
    let n = count(&x.shape());
    let x_hat = B::float_mul(
        B::float_sub(x, per_channel::<B>(mean)),
        per_channel::<B>(inverse_std.clone()),
    );
    let d_beta = channel_sums::<B>(dy.clone());
    let d_gamma = channel_sums::<B>(B::float_mul(dy.clone(), x_hat.clone()));
    let along_x_hat = B::float_mul(x_hat, per_channel::<B>(d_gamma.clone()));
    let correction = B::float_div_scalar(
        B::float_add(along_x_hat, per_channel::<B>(d_beta.clone())),
        n.into(),
    );
    let d_x = B::float_mul(
        B::float_mul(B::float_sub(dy, correction), per_channel::<B>(gamma)),
        per_channel::<B>(inverse_std),
    );
    [d_x, d_gamma, d_beta]
}

#[derive(Debug)]
struct ComposedBatchNormBackward;

impl<B: Backend> Backward<B, 3> for ComposedBatchNormBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let gradients = backward::<B>(ops.state, dy);
        for (node, gradient) in ops.parents.into_iter().zip(gradients) {
            if let Some(node) = node {
                grads.register::<B>(node.id, gradient);
            }
        }
    }
}

/// The forward is the trait's own composition (no backend overrides it), run here to keep its
/// `1 / std` for the backward step rather than compute it a second time.
impl<B: Backend, C: CheckpointStrategy> ComposedBatchNorm for Autodiff<B, C> {
    fn composed_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Normalized<Self> {
        let (inner, inverse_std) = forward::<B>(
            x.primitive().clone(),
            gamma.primitive().clone(),
            beta.primitive().clone(),
            epsilon,
        );
        let output = match ComposedBatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = Saved {
                    x: x.primitive().clone(),
                    gamma: gamma.primitive().clone(),
                    mean: inner.mean.clone(),
                    inverse_std,
                };
                prep.finish(saved, inner.output)
            }
            OpsKind::UnTracked(prep) => prep.finish(inner.output),
        };
        Normalized {
            output,
            mean: Self::from_inner(inner.mean),
            variance: Self::from_inner(inner.variance),
        }
    }
}
