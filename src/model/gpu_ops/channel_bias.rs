//! A bias per channel added to `[B, C, H, W]` on the GPU path, with its own backward pass:
//! the input's gradient is the output's, and the bias's is the output's summed per channel,
//! one kernel on a GPU ([`super::channel_sums`]).
//!
//! Why: autodiff's backward of the broadcast addition reduced each broadcast axis, two
//! reductions (over the pixels, then over the batch) for each convolution's bias and pass,
//! 22 of the report's DCGAN step's kernels (lavapipe). The CPU keeps burn's addition
//! ([`crate::model::conv`]), which the tests compare this with.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;

use super::batch_norm::{channel_sums, flat, per_channel};

#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "vulkan", feature = "cuda")),
    Fusion: cfg(any(feature = "vulkan", feature = "cuda")),
    Autodiff
)]
pub trait ChannelBias: Backend {
    /// `x` `[B, C, H, W]` plus `bias` `[C]` per channel.
    #[fusion(default)]
    fn channel_bias(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_add(x, per_channel::<Self>(bias))
    }

    /// The sum per channel of `x` `[B, C, H, W]`, `[1, C, 1, 1]`: burn's reductions here, one
    /// kernel on a GPU.
    #[fusion(meta = |x| super::batch_norm::per_channel_spec(x))]
    fn channel_sum(x: FloatTensor<Self>) -> FloatTensor<Self> {
        channel_sums::<Self>(x)
    }
}

impl ChannelBias for Flex {}

#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl ChannelBias for burn_cubecl::CubeBackend {
    fn channel_sum(x: FloatTensor<Self>) -> FloatTensor<Self> {
        super::channel_sums::sum(x)
    }
}

#[derive(Debug)]
struct ChannelBiasBackward;

impl<B: ChannelBias> Backward<B, 2> for ChannelBiasBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [x, bias] = ops.parents;
        if let Some(bias) = bias {
            grads.register::<B>(bias.id, flat::<B>(B::channel_sum(dy.clone())));
        }
        if let Some(x) = x {
            grads.register::<B>(x.id, dy);
        }
    }
}

impl<B: ChannelBias, C: CheckpointStrategy> ChannelBias for Autodiff<B, C> {
    fn channel_bias(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let output = B::channel_bias(x.primitive().clone(), bias.primitive().clone());
        ChannelBiasBackward
            .prepare::<C>([x.node(), bias.node()])
            .compute_bound()
            .stateless(output)
    }
}

/// `x` `[B, C, H, W]` plus `bias` `[C]` per channel; differentiable.
pub fn add_channel_bias(x: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ChannelBias>::channel_bias(
        x.into_dispatch(),
        bias.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conv::tests::max_relative_error;
    use burn::tensor::Distribution;

    /// Output and both gradients equal burn's broadcast addition.
    #[test]
    fn matches_burns_broadcast_addition_with_gradients() {
        let device = crate::backend::device().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        for [batch, channels, h, w] in [[2, 3, 4, 5], [1, 1, 1, 1], [3, 5, 2, 1]] {
            let x = Tensor::<4>::random([batch, channels, h, w], normal, &device).require_grad();
            let bias = Tensor::<1>::random([channels], normal, &device).require_grad();
            let probe = Tensor::<4>::random(x.dims(), normal, &device);
            let run = |y: Tensor<4>| {
                let grads = (y.clone() * probe.clone()).sum().backward();
                let bias_grad = bias.grad(&grads).unwrap().reshape([1, 1, 1, channels]);
                [y, x.grad(&grads).unwrap(), bias_grad]
            };
            let mine = run(add_channel_bias(x.clone(), bias.clone()));
            let theirs = run(x.clone() + bias.clone().reshape([1, channels, 1, 1]));
            for (name, (a, b)) in ["y", "dx", "dbias"]
                .iter()
                .zip(mine.into_iter().zip(theirs))
            {
                let error = max_relative_error(a, b);
                assert!(
                    error < 1e-5,
                    "{batch}x{channels}x{h}x{w}: {name} off by {error}"
                );
            }
        }
    }
}
