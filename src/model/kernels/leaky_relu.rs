//! LeakyReLU as one operation: y = x for x > 0, slope * x otherwise; backward
//! dx = dy or slope * dy by the sign of x. One pass over memory each way, where burn's
//! composition builds a mask tensor and selects through it, forward and backward.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn_flex::FlexTensor;

use super::{tensor, values};

#[backend_extension(Flex, Autodiff)]
pub trait LeakyRelu: burn::backend::Backend {
    /// `x` where positive, `slope * x` elsewhere.
    fn fused_leaky_relu(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self>;
}

/// LeakyReLU of `x`: this op on the CPU, burn's elsewhere.
pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    if !crate::backend::on_cpu() {
        return burn::tensor::activation::leaky_relu(x, slope);
    }
    Tensor::from_dispatch(<Dispatch as LeakyRelu>::fused_leaky_relu(
        x.into_dispatch(),
        slope,
    ))
}

/// `v` where `x > 0`, `slope * v` elsewhere, element by element (`v` has `x`'s shape).
fn by_sign(x: &FlexTensor, v: &FlexTensor, slope: f64) -> FlexTensor {
    let slope = slope as f32;
    let out = (values(x).iter())
        .zip(values(v).iter())
        .map(|(&x, &v)| if x > 0.0 { v } else { slope * v })
        .collect();
    tensor(out, x.layout().shape().clone())
}

fn forward(x: &FlexTensor, slope: f64) -> FlexTensor {
    by_sign(x, x, slope)
}

impl LeakyRelu for Flex {
    fn fused_leaky_relu(x: FlexTensor, slope: f64) -> FlexTensor {
        forward(&x, slope)
    }
}

/// The backward step; its state is the input (only its signs are read).
#[derive(Debug)]
struct LeakyReluBackward {
    slope: f64,
}

impl Backward<Flex, 1> for LeakyReluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            grads.register::<Flex>(node.id, by_sign(&ops.state, &dy, self.slope));
        }
    }
}

impl<C: CheckpointStrategy> LeakyRelu for Autodiff<Flex, C> {
    fn fused_leaky_relu(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        match (LeakyReluBackward { slope })
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.primitive().clone();
                let out = forward(&x, slope);
                prep.finish(x, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive(), slope)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    /// Value and gradient equal burn's LeakyReLU, on a non-contiguous input too.
    #[test]
    fn matches_burns_leaky_relu_with_gradient() {
        let device = crate::backend::device().autodiff();
        let x = burn::Tensor::<3>::random([3, 5, 7], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let probe = burn::Tensor::<3>::random([5, 3, 7], Distribution::Normal(0.0, 1.0), &device);
        for slope in [0.2, 0.01, 0.0] {
            let run = |f: &dyn Fn(burn::Tensor<3>) -> burn::Tensor<3>| {
                let y = f(x.clone().swap_dims(0, 1));
                let grads = (y.clone() * probe.clone()).sum().backward();
                (y.into_data(), x.grad(&grads).unwrap().into_data())
            };
            let (y, dx) = run(&|x| super::leaky_relu(x, slope));
            let (y_ref, dx_ref) = run(&|x| burn::tensor::activation::leaky_relu(x, slope));
            y.assert_approx_eq::<f32>(&y_ref, Default::default());
            dx.assert_approx_eq::<f32>(&dx_ref, Default::default());
        }
    }
}
