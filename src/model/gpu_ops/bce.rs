//! The binary cross-entropy of D's logits against one target for the whole batch, averaged,
//! for the GPU path, with its own backward pass: `mean(softplus(x) - t x)`, whose gradient is
//! `(sigmoid(x) - t) / n`.
//!
//! Why: burn's `log_sigmoid`, differentiated by autodiff, took about twenty kernels for each
//! of the step's three losses on a `[64, 1]` tensor (comparisons, masked fills, and a kernel
//! for each operation of its backward), about 60 of the report's DCGAN's 550 a step on
//! lavapipe (2026-12-04). Here the forward is one fused kernel and the mean a reduction, the
//! backward one kernel of our own on a GPU. The CPU keeps burn's composition
//! ([`crate::train::loss`]), which the tests compare this with.
//!
//! Why the backward is a kernel of ours: composed, it multiplied by `dy` reshaped to
//! `[1, 1]`, which fusion put in a block of its own that the blocks around it depended on;
//! unable to order them, fusion ran the segments holding a loss's backward unfused (`[repair]
//! falling back to unfused stream order` in lavapipe's fusion log), D's head and BatchNorm's
//! running statistics with them: the report's DCGAN step went from 325 kernels to 290 with
//! this kernel (and to 270 with fusion's search narrowed, `crate::backend`).

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

    /// The gradient of [`logit_bce`](LogitBce::logit_bce) for the logits, from the loss's
    /// `dy` (`[1]`): `(sigmoid(logits) - target) dy / n`, n the logits' count. One kernel on
    /// a GPU.
    #[fusion(meta = |logits, _target, _dy| logits.clone())]
    fn logit_bce_gradient(
        logits: FloatTensor<Self>,
        target: f64,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        backward::<Self>(logits, target, dy)
    }
}

impl LogitBce for Flex {}

#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl LogitBce for burn_cubecl::CubeBackend {
    fn logit_bce_gradient(
        logits: FloatTensor<Self>,
        target: f64,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        kernel::gradient(logits, target, dy)
    }
}

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
/// What the backends without a kernel of their own compute (the CPU's tests).
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

impl<B: LogitBce> Backward<B, 1> for LogitBceBackward {
    /// The logits and the target.
    type State = (FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let (x, t) = ops.state;
            grads.register::<B>(node.id, B::logit_bce_gradient(x, t, dy));
        }
    }
}

impl<B: LogitBce, C: CheckpointStrategy> LogitBce for Autodiff<B, C> {
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

/// [`LogitBce::logit_bce_gradient`] as a CubeCL kernel: a unit a logit.
#[cfg(any(feature = "vulkan", feature = "cuda"))]
mod kernel {
    use burn_cubecl::cubecl;
    use burn_cubecl::cubecl::prelude::*;
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::ops::numeric::empty_device_dtype;
    use burn_cubecl::tensor::CubeTensor;

    /// Units a cube.
    const UNITS: usize = 256;

    /// `(sigmoid(x) - target) / count * dy[0]` at each of `x`'s positions, as the composition
    /// computes it (`exp(-x)` is infinite below x = -88, and 1 / inf is sigmoid's 0 there).
    #[cube(launch)]
    fn logit_bce_gradient_kernel(
        x: &Tensor<f32>,
        dy: &Tensor<f32>,
        gradient: &mut Tensor<f32>,
        target: f32,
        count: f32,
    ) {
        let i = ABSOLUTE_POS;
        if i < x.len() {
            let sigmoid = f32::new(1.0) / ((-x[i]).exp() + f32::new(1.0));
            gradient[i] = (sigmoid - target) / count * dy[0];
        }
    }

    pub(super) fn gradient(x: CubeTensor, target: f64, dy: CubeTensor) -> CubeTensor {
        let (x, dy) = (into_contiguous(x), into_contiguous(dy));
        super::super::check_f32(&[&x, &dy], "BCE");
        let count = x.meta.shape().num_elements();
        let gradient = empty_device_dtype(
            x.client.clone(),
            x.device.clone(),
            x.meta.shape().clone(),
            x.dtype,
        );
        let (client, units) = (x.client.clone(), CubeDim::new_1d(UNITS as u32));
        logit_bce_gradient_kernel::launch(
            &client,
            cubecl::calculate_cube_count_elemwise(&client, count, units),
            units,
            x.into_tensor_arg(),
            dy.into_tensor_arg(),
            gradient.clone().into_tensor_arg(),
            target as f32,
            count.max(1) as f32,
        );
        gradient
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
