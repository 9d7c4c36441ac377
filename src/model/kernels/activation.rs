//! Activations as single operations with their own backward pass.
//!
//! - LeakyReLU: y = x for x > 0, slope * x otherwise; backward dx = dy or slope * dy by the
//!   sign of x. One pass over memory each way, where burn's composition builds a mask tensor
//!   and selects through it, forward and backward.
//! - Tanh: backward dx = dy (1 - y^2) from the saved output, where burn's backward computes
//!   tanh of the input again; forward a rational approximation that vectorizes (`fast_tanh`,
//!   within 5e-7 of tanh), where libm's scalar tanhf took a fifth of the vanilla GAN's step.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn_flex::FlexTensor;

use super::{map, tensor, values, zip_map};

#[backend_extension(Flex, Autodiff)]
pub trait Activations: burn::backend::Backend {
    /// `x` where positive, `slope * x` elsewhere.
    fn fused_leaky_relu(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self>;

    /// tanh of `x`, element by element.
    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// LeakyReLU of `x`: this op on the CPU, burn's elsewhere.
pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    if !crate::backend::own_kernels() {
        return burn::tensor::activation::leaky_relu(x, slope);
    }
    Tensor::from_dispatch(<Dispatch as Activations>::fused_leaky_relu(
        x.into_dispatch(),
        slope,
    ))
}

/// tanh of `x`: this op on the CPU, burn's elsewhere.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !crate::backend::own_kernels() {
        return burn::tensor::activation::tanh(x);
    }
    Tensor::from_dispatch(<Dispatch as Activations>::fused_tanh(x.into_dispatch()))
}

fn tanh_forward(x: &FlexTensor) -> FlexTensor {
    let x_values = values(x);
    let out = map(&x_values, fast_tanh);
    tensor(out, x.layout().shape().clone())
}

/// tanh as Eigen's (and TensorFlow's) float kernel computes it: an odd degree-13 over even
/// degree-6 rational function of x clamped to where tanh rounds to +-1. Absolute error under
/// 5e-7 (tested: a few units in the last place); no branches, so loops over it vectorize.
fn fast_tanh(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347e-4, 1.198_258_4e-6];
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = ALPHA.iter().rev().fold(0.0, |p, &a| p * x2 + a) * x;
    let q = BETA.iter().rev().fold(0.0, |q, &b| q * x2 + b);
    p / q
}

/// `v` where `x > 0`, `slope * v` elsewhere, element by element (`v` has `x`'s shape).
fn by_sign(x: &FlexTensor, v: &FlexTensor, slope: f64) -> FlexTensor {
    let slope = slope as f32;
    let out = zip_map(
        &values(x),
        &values(v),
        move |x, v| if x > 0.0 { v } else { slope * v },
    );
    tensor(out, x.layout().shape().clone())
}

fn forward(x: &FlexTensor, slope: f64) -> FlexTensor {
    by_sign(x, x, slope)
}

impl Activations for Flex {
    fn fused_leaky_relu(x: FlexTensor, slope: f64) -> FlexTensor {
        forward(&x, slope)
    }

    fn fused_tanh(x: FlexTensor) -> FlexTensor {
        tanh_forward(&x)
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

/// Tanh's backward step; its state is the output.
#[derive(Debug)]
struct TanhBackward;

impl Backward<Flex, 1> for TanhBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            let dx = zip_map(&values(&ops.state), &values(&dy), |y, dy| {
                dy * (1.0 - y * y)
            });
            grads.register::<Flex>(node.id, tensor(dx, dy.layout().shape().clone()));
        }
    }
}

impl<C: CheckpointStrategy> Activations for Autodiff<Flex, C> {
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

    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match TanhBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = tanh_forward(x.primitive());
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(tanh_forward(x.primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    /// Values and gradients equal burn's LeakyReLU and tanh, on a non-contiguous input too.
    #[test]
    fn match_burns_activations_with_gradients() {
        let device = crate::backend::device().autodiff();
        let x = burn::Tensor::<3>::random([3, 5, 7], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let probe = burn::Tensor::<3>::random([5, 3, 7], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(burn::Tensor<3>) -> burn::Tensor<3>| {
            let y = f(x.clone().swap_dims(0, 1));
            let grads = (y.clone() * probe.clone()).sum().backward();
            (y.into_data(), x.grad(&grads).unwrap().into_data())
        };
        let check = |ours: &dyn Fn(burn::Tensor<3>) -> burn::Tensor<3>,
                     burns: &dyn Fn(burn::Tensor<3>) -> burn::Tensor<3>| {
            let ((y, dx), (y_ref, dx_ref)) = (run(ours), run(burns));
            y.assert_approx_eq::<f32>(&y_ref, Default::default());
            dx.assert_approx_eq::<f32>(&dx_ref, Default::default());
        };
        for slope in [0.2, 0.01, 0.0] {
            check(&|x| super::leaky_relu(x, slope), &|x| {
                burn::tensor::activation::leaky_relu(x, slope)
            });
        }
        check(&|x| super::tanh(x * 3.0), &|x| {
            burn::tensor::activation::tanh(x * 3.0)
        });
    }

    #[test]
    fn fast_tanh_is_within_5e_7_of_tanh() {
        let worst = (-1_200_000..=1_200_000)
            .map(|i| i as f32 * 1e-5)
            .map(|x| (super::fast_tanh(x) as f64 - (x as f64).tanh()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "{worst}");
        assert_eq!(super::fast_tanh(50.0), 1.0);
        assert_eq!(super::fast_tanh(-50.0), -1.0);
    }
}
