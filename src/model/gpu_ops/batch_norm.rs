//! BatchNorm in training mode for the GPU path, with its own backward pass: the textbook
//! gradients from two per-channel sums.
//!
//! Why: differentiated by autodiff, the composition of means, a centering, a variance and a
//! scaling took a reduction for every broadcast operand of every operation backward, and
//! BatchNorm was most of the ~250 reductions and ~400 small elementwise kernels of the report's
//! DCGAN step on the H200 (cubecl's profile, 2026-12-04): launch-bound. Here each direction is
//! one op for the per-channel statistics (on a GPU one kernel of our own,
//! [`super::channel_sums`]; elsewhere burn's reductions, two per statistic) and elementwise
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

    /// The mean and biased variance per channel of `x` `[B, C, H, W]`, each `[1, C, 1, 1]`:
    /// burn's reductions here, one kernel on a GPU ([`super::channel_sums`]).
    #[fusion(meta = |x| (per_channel_spec(x), per_channel_spec(x)))]
    fn channel_moments(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let mean = channel_means::<Self>(x.clone());
        let centered = Self::float_sub(x, mean.clone());
        let squares = Self::float_mul(centered.clone(), centered);
        (mean, channel_means::<Self>(squares))
    }

    /// `sum(dy)` and `sum(dy x_hat)` per channel, `x_hat = (x - mean) inverse_std`, for `dy`
    /// and `x` `[B, C, H, W]` and the others `[1, C, 1, 1]`, as these: burn's reductions
    /// here, one kernel on a GPU ([`super::channel_sums`]).
    #[fusion(meta = |_dy, _x, mean, _inverse_std| (mean.clone(), mean.clone()))]
    fn channel_gradient_sums(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        inverse_std: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let x_hat = Self::float_mul(Self::float_sub(x, mean), inverse_std);
        let dy_sum = channel_sums::<Self>(dy.clone());
        (dy_sum, channel_sums::<Self>(Self::float_mul(dy, x_hat)))
    }
}

impl ComposedBatchNorm for Flex {}

#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl ComposedBatchNorm for burn_cubecl::CubeBackend {
    fn channel_moments(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        super::channel_sums::moments(x)
    }

    fn channel_gradient_sums(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        inverse_std: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        super::channel_sums::gradient_sums(dy, x, mean, inverse_std)
    }
}

/// What a per-channel statistic of `x` `[B, C, H, W]` is to fusion: `[1, C, 1, 1]`, x's type.
#[cfg(any(feature = "vulkan", feature = "cuda"))]
pub(super) fn per_channel_spec(
    x: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    burn::backend::fusion::custom::TensorSpec::new(Shape::new([1, x.shape[1], 1, 1]), x.dtype)
}

/// `[C]` as `[1, C, 1, 1]`, to broadcast over an NCHW tensor.
pub(super) fn per_channel<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let channels = t.shape().num_elements();
    B::float_reshape(t, Shape::new([1, channels, 1, 1]))
}

/// `[1, C, 1, 1]` as `[C]`.
pub(super) fn flat<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let channels = t.shape().num_elements();
    B::float_reshape(t, Shape::new([channels]))
}

/// `t` `[B, C, H, W]` reduced per channel to `[1, C, 1, 1]` by `reduce` (the backend's sum or
/// mean along a dimension): over the batch, then over the pixels (each reduction with
/// thousands of outputs or contiguous inputs, not one thread a channel over a strided walk).
fn per_channel_reduce<B: Backend>(
    t: FloatTensor<B>,
    reduce: fn(FloatTensor<B>, usize) -> FloatTensor<B>,
) -> FloatTensor<B> {
    let [_, channels, height, width] = t.shape().dims();
    let images = reduce(t, 0);
    let planes = B::float_reshape(images, Shape::new([channels, height * width]));
    B::float_reshape(reduce(planes, 1), Shape::new([1, channels, 1, 1]))
}

/// The sum per channel.
pub(super) fn channel_sums<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
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

/// The op's output, and what its backward step keeps. Every per-channel value is kept as
/// `[1, C, 1, 1]`: each reshape between `[C]` and it ends a fusion block, and with too many
/// blocks in a segment fusion stops short and runs the rest unfused (lavapipe's fusion log).
fn forward<B: ComposedBatchNorm>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> (Normalized<B>, Saved<B>) {
    let (gamma, beta) = (per_channel::<B>(gamma), per_channel::<B>(beta));
    let (mean, variance) = B::channel_moments(x.clone());
    let inverse_std = B::float_recip(B::float_sqrt(B::float_add_scalar(
        variance.clone(),
        epsilon.into(),
    )));
    let scale = B::float_mul(gamma, inverse_std.clone());
    let centered = B::float_sub(x.clone(), mean.clone());
    let output = B::float_add(B::float_mul(centered, scale.clone()), beta);
    let saved = Saved {
        x,
        mean: mean.clone(),
        inverse_std,
        scale,
    };
    let normalized = Normalized {
        output,
        mean: flat::<B>(mean),
        variance: flat::<B>(variance),
    };
    (normalized, saved)
}

/// What the backward step keeps: the input, and per channel the batch's mean, `1 / std` and
/// `gamma / std`, each `[1, C, 1, 1]`.
#[derive(Debug, Clone)]
struct Saved<B: Backend> {
    x: FloatTensor<B>,
    mean: FloatTensor<B>,
    inverse_std: FloatTensor<B>,
    scale: FloatTensor<B>,
}

/// The gradients for the input, gamma and beta from the output's, `dy`:
/// `dgamma = sum(dy x_hat)`, `dbeta = sum(dy)`, and
/// `dx = (dy - (dbeta + x_hat dgamma) / n) gamma inv`, per channel, x_hat = (x - mean) inv.
///
/// `dx` is computed at full size from the per-channel sums as they come: arithmetic on the
/// per-channel values between the reductions and it (`dbeta / n`) was a kernel each, where at
/// full size it joins one fused kernel (lavapipe's profile).
fn backward<B: ComposedBatchNorm>(saved: Saved<B>, dy: FloatTensor<B>) -> [FloatTensor<B>; 3] {
    let Saved {
        x,
        mean,
        inverse_std,
        scale,
    } = saved;
    let n = count(&x.shape());
    // the sums first: x_hat, issued after them, joins dx's fused kernel
    let (d_beta, d_gamma) =
        B::channel_gradient_sums(dy.clone(), x.clone(), mean.clone(), inverse_std.clone());
    let x_hat = B::float_mul(B::float_sub(x, mean), inverse_std);
    let along_x_hat = B::float_mul(x_hat, d_gamma.clone());
    let correction = B::float_div_scalar(B::float_add(along_x_hat, d_beta.clone()), n.into());
    let d_x = B::float_mul(B::float_sub(dy, correction), scale);
    [d_x, flat::<B>(d_gamma), flat::<B>(d_beta)]
}

#[derive(Debug)]
struct ComposedBatchNormBackward;

impl<B: ComposedBatchNorm> Backward<B, 3> for ComposedBatchNormBackward {
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

/// The forward is the trait's own composition (no backend overrides it), run here to keep what
/// the backward step needs rather than compute it a second time.
impl<B: ComposedBatchNorm, C: CheckpointStrategy> ComposedBatchNorm for Autodiff<B, C> {
    fn composed_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Normalized<Self> {
        let (inner, saved) = forward::<B>(
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
            OpsKind::Tracked(prep) => prep.finish(saved, inner.output),
            OpsKind::UnTracked(prep) => prep.finish(inner.output),
        };
        Normalized {
            output,
            mean: Self::from_inner(inner.mean),
            variance: Self::from_inner(inner.variance),
        }
    }
}
