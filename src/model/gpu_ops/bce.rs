//! The binary cross-entropy of D's logits against one target for the whole batch, averaged,
//! for the GPU path, with its own backward pass: `mean(softplus(x) - t x)`, whose gradient is
//! `(sigmoid(x) - t) / n`.
//!
//! Why: burn's `log_sigmoid`, differentiated by autodiff, took about twenty kernels for each
//! of the step's three losses on a `[64, 1]` tensor (comparisons, masked fills, and a kernel
//! for each operation of its backward), about 60 of the report's DCGAN's 550 a step on
//! lavapipe (2026-12-04). Here the elementwise work is one fused kernel each way, and the
//! mean a reduction. The CPU keeps burn's composition ([`crate::train::loss`]), which the
//! tests compare this with.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;

#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "vulkan", feature = "cuda")),
    Fusion: cfg(any(feature = "vulkan", feature = "cuda")),
    Autodiff
)]
pub trait LogitBce: Backend {
    /// The mean over `logits` (any shape) of the cross-entropy of `sigmoid(logits)` with
    /// `target`: `[1]`.
    #[fusion(default)]
    fn logit_bce(logits: FloatTensor<Self>, target: f64) -> FloatTensor<Self> {
        forward::<Self>(logits, target)
    }
}

impl LogitBce for Flex {}

#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl LogitBce for burn_cubecl::CubeBackend {}

/// `mean(softplus(x) - t x)`, with `softplus(x) = max(x, 0) + ln(1 + exp(-|x|))` (no overflow
/// for any x) and `max(x, 0) = (x + |x|) / 2` (exact, and fused where a comparison and a masked
/// fill are not).
fn forward<B: Backend>(x: FloatTensor<B>, t: f64) -> FloatTensor<B> {
    let magnitude = B::float_abs(x.clone());
    let positive = B::float_mul_scalar(B::float_add(x.clone(), magnitude.clone()), 0.5.into());
    let tail = B::float_log1p(B::float_exp(B::float_neg(magnitude)));
    let softplus = B::float_add(positive, tail);
    B::float_mean(B::float_sub(softplus, B::float_mul_scalar(x, t.into())))
}

/// The gradient for the logits from the loss's, `dy` (`[1]`): `(sigmoid(x) - t) dy / n`.
fn backward<B: Backend>(x: FloatTensor<B>, t: f64, dy: FloatTensor<B>) -> FloatTensor<B> {
    let shape = x.shape();
    let n = shape.num_elements().max(1) as f64;
    // exp(-x) is infinite below x = -88, and 1 / inf is sigmoid's 0 there.
    let sigmoid = B::float_recip(B::float_add_scalar(
        B::float_exp(B::float_neg(x)),
        1.0.into(),
    ));
    let scale = B::float_reshape(dy, Shape::from(vec![1; shape.num_dims()]));
    let per_item = B::float_div_scalar(B::float_sub_scalar(sigmoid, t.into()), n.into());
    B::float_mul(per_item, scale)
}

#[derive(Debug)]
struct LogitBceBackward;

impl<B: Backend> Backward<B, 1> for LogitBceBackward {
    /// The logits and the target.
    type State = (FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let (x, t) = ops.state;
            grads.register::<B>(node.id, backward::<B>(x, t, dy));
        }
    }
}

impl<B: Backend + LogitBce, C: CheckpointStrategy> LogitBce for Autodiff<B, C> {
    fn logit_bce(logits: FloatTensor<Self>, target: f64) -> FloatTensor<Self> {
        let loss = B::logit_bce(logits.primitive().clone(), target);
        match LogitBceBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((logits.primitive().clone(), target), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        }
    }
}

/// The mean binary cross-entropy of `sigmoid(logits)` with `target` (0 fake, 1 real, or a
/// smoothed label between), differentiable: PyTorch's `BCEWithLogitsLoss`.
pub fn logit_bce(logits: Tensor<2>, target: f64) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as LogitBce>::logit_bce(
        logits.into_dispatch(),
        target,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_sigmoid;

    /// Value and gradient against burn's `log_sigmoid` composition (autodiff's backward), for
    /// the real, fake and a smoothed target, on logits from 0 to far past exp's range.
    #[test]
    fn matches_log_sigmoid_with_its_gradient() {
        let device = Device::flex().autodiff();
        let values = [0.0f32, 0.5, -2.0, 3.5, -7.0, 40.0, -90.0, 100.0, -1e-4];
        let logits = || {
            Tensor::<1>::from_floats(values, &device)
                .reshape([values.len(), 1])
                .require_grad()
        };
        for t in [1.0, 0.0, 0.9] {
            let (ours, theirs) = (logits(), logits());
            let mine = logit_bce(ours.clone(), t);
            let reference = (log_sigmoid(theirs.clone()).mul_scalar(t)
                + log_sigmoid(theirs.clone().neg()).mul_scalar(1.0 - t))
            .mean()
            .neg();
            let (a, b) = (
                mine.clone().into_scalar::<f32>(),
                reference.clone().into_scalar::<f32>(),
            );
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "t {t}: {a} vs {b}"
            );
            // Weighted, so that a wrong factor of dy shows.
            let (d_mine, d_reference) = (
                ours.grad(&mine.mul_scalar(3.0).backward()).unwrap(),
                theirs.grad(&reference.mul_scalar(3.0).backward()).unwrap(),
            );
            let (d_mine, d_reference) = (
                d_mine.into_data().try_to_vec::<f32>().unwrap(),
                d_reference.into_data().try_to_vec::<f32>().unwrap(),
            );
            for (i, (a, b)) in d_mine.iter().zip(&d_reference).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "t {t}, logit {}: {a} vs {b}",
                    values[i]
                );
            }
        }
    }
}
