//! Adam for the GPU path as one operation a parameter (`GANRUNNER_GPU_ADAM=step`): [`StepAdam`],
//! a burn optimizer whose step computes what burn's `Adam` does (PyTorch's Adam, no weight
//! decay) through one backend operation, [`AdamStep::adam_step`], one kernel of our own on a
//! GPU.
//!
//! Why: burn's Adam is thirteen tensor operations a parameter (the moments' scalings and sums,
//! the square, the square root, the division, the update). Fused, they cost a GPU few
//! kernels, but every operation still passes through burn's fusion on the host, and at batch
//! 64 a GPU step may be bound by that host work: the report's DCGAN's step registered about
//! 1 480 operations, of which 546 were its 42 parameters' Adam (counted in burn's fusion log
//! against `bench/cuda-compile.sh`'s stand-in driver, 2026-12-05). Here each parameter's
//! update is one (1 119 operations a step), but one kernel a parameter where fusion had made
//! about 25 kernels of the 42 updates (273 kernels a step on lavapipe, from 257), each one a
//! fusion segment of its own, and burn's fusion server, the host's slowest thread, did no
//! less work a step with it (`bench/cuda-host-profile.sh`, docs/gpu.md). So burn's `Adam`
//! is the default ([`crate::backend::step_adam`]) until `bench/gpu-check.sh` times both on a
//! GPU (rows `+step-adam`).
//!
//! Its state is burn's [`AdamState`], so checkpoints hold the same records whichever computes
//! the step (a CPU run resumes on a GPU and back). The CPU keeps burn's `Adam`, whose rounding
//! `make run`'s figures are; the backends without a kernel of their own (the CPU's tests, the
//! GPU path on the CPU) compose burn's operations in burn's order, to the bit what burn's
//! `Adam` computes.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::prelude::*;

/// Adam's scalars for one step.
#[derive(Debug, Clone, Copy)]
struct Scalars {
    beta_1: f32,
    beta_2: f32,
    /// `sqrt(1 - beta_2^t) / (1 - beta_1^t)`: both bias corrections in one factor.
    scale: f32,
    /// The epsilon added to `sqrt(v)`, times `sqrt(1 - beta_2^t)` as the factor above asks.
    epsilon: f32,
    learning_rate: f32,
}

/// From the operation's arguments (f64, as burn's scalar arguments go), in their order.
impl From<[f64; 5]> for Scalars {
    fn from([beta_1, beta_2, scale, epsilon, learning_rate]: [f64; 5]) -> Self {
        Self {
            beta_1: beta_1 as f32,
            beta_2: beta_2 as f32,
            scale: scale as f32,
            epsilon: epsilon as f32,
            learning_rate: learning_rate as f32,
        }
    }
}

#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "vulkan", feature = "cuda")),
    Fusion: cfg(any(feature = "vulkan", feature = "cuda"))
)]
pub trait AdamStep: Backend {
    /// One Adam step of a parameter from its gradient and moments: the parameter and the two
    /// moments after it, `m' = beta_1 m + (1 - beta_1) g`, `v' = beta_2 v + (1 - beta_2) g^2`,
    /// `p' = p - lr (scale m') / (sqrt(v') + epsilon)`.
    #[fusion(meta = |param, _grad, _m, _v, _b1, _b2, _scale, _eps, _lr| {
        (param.clone(), param.clone(), param.clone())
    })]
    #[allow(clippy::too_many_arguments)]
    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        beta_1: f64,
        beta_2: f64,
        scale: f64,
        epsilon: f64,
        learning_rate: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let s = Scalars::from([beta_1, beta_2, scale, epsilon, learning_rate]);
        composed::<Self>(param, grad, moment_1, moment_2, s)
    }
}

impl AdamStep for Flex {}

#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl AdamStep for burn_cubecl::CubeBackend {
    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        beta_1: f64,
        beta_2: f64,
        scale: f64,
        epsilon: f64,
        learning_rate: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let s = Scalars::from([beta_1, beta_2, scale, epsilon, learning_rate]);
        kernel::step(param, grad, moment_1, moment_2, s)
    }
}

/// burn's `Adam` step, operation for operation (`AdaptiveMomentum::transform`, then `tensor -
/// grad * lr`), the factors `1 - beta` in f32 as burn computes them.
fn composed<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moment_1: FloatTensor<B>,
    moment_2: FloatTensor<B>,
    s: Scalars,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let moment_1 = B::float_add(
        B::float_mul_scalar(moment_1, s.beta_1.into()),
        B::float_mul_scalar(grad.clone(), (1.0 - s.beta_1).into()),
    );
    let moment_2 = B::float_add(
        B::float_mul_scalar(moment_2, s.beta_2.into()),
        B::float_mul_scalar(
            B::float_powi_scalar(grad, 2.into()),
            (1.0 - s.beta_2).into(),
        ),
    );
    let update = B::float_div(
        B::float_mul_scalar(moment_1.clone(), s.scale.into()),
        B::float_add_scalar(B::float_sqrt(moment_2.clone()), s.epsilon.into()),
    );
    let param = B::float_sub(param, B::float_mul_scalar(update, s.learning_rate.into()));
    (param, moment_1, moment_2)
}

/// [`AdamStep::adam_step`] as a CubeCL kernel: a unit an element, reading the parameter, its
/// gradient and moments once and writing the three results.
#[cfg(any(feature = "vulkan", feature = "cuda"))]
mod kernel {
    use burn_cubecl::cubecl;
    use burn_cubecl::cubecl::prelude::*;
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::ops::numeric::empty_device_dtype;
    use burn_cubecl::tensor::CubeTensor;

    use super::Scalars;

    /// Units a cube.
    const UNITS: usize = 256;

    /// The composition's arithmetic, in its order.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    fn adam_step_kernel(
        param: &Tensor<f32>,
        grad: &Tensor<f32>,
        moment_1: &Tensor<f32>,
        moment_2: &Tensor<f32>,
        param_out: &mut Tensor<f32>,
        moment_1_out: &mut Tensor<f32>,
        moment_2_out: &mut Tensor<f32>,
        beta_1: f32,
        beta_2: f32,
        scale: f32,
        epsilon: f32,
        learning_rate: f32,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let g = grad[i];
            let m = moment_1[i] * beta_1 + g * (f32::new(1.0) - beta_1);
            let v = moment_2[i] * beta_2 + g * g * (f32::new(1.0) - beta_2);
            let update = m * scale / (v.sqrt() + epsilon);
            param_out[i] = param[i] - update * learning_rate;
            moment_1_out[i] = m;
            moment_2_out[i] = v;
        }
    }

    pub(super) fn step(
        param: CubeTensor,
        grad: CubeTensor,
        moment_1: CubeTensor,
        moment_2: CubeTensor,
        s: Scalars,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let [param, grad, moment_1, moment_2] =
            [param, grad, moment_1, moment_2].map(into_contiguous);
        crate::model::gpu_ops::check_f32(&[&param, &grad, &moment_1, &moment_2], "Adam");
        let output = || {
            empty_device_dtype(
                param.client.clone(),
                param.device.clone(),
                param.meta.shape().clone(),
                param.dtype,
            )
        };
        let (param_out, moment_1_out, moment_2_out) = (output(), output(), output());
        let count = param.meta.shape().num_elements();
        let (client, units) = (param.client.clone(), CubeDim::new_1d(UNITS as u32));
        adam_step_kernel::launch(
            &client,
            cubecl::calculate_cube_count_elemwise(&client, count, units),
            units,
            param.into_tensor_arg(),
            grad.into_tensor_arg(),
            moment_1.into_tensor_arg(),
            moment_2.into_tensor_arg(),
            param_out.clone().into_tensor_arg(),
            moment_1_out.clone().into_tensor_arg(),
            moment_2_out.clone().into_tensor_arg(),
            s.beta_1,
            s.beta_2,
            s.scale,
            s.epsilon,
            s.learning_rate,
        );
        (param_out, moment_1_out, moment_2_out)
    }
}

/// Adam (PyTorch's, no weight decay) through [`AdamStep::adam_step`]: the GPU path's
/// optimizer, with burn's `Adam`'s state.
#[derive(Debug, Clone)]
pub struct StepAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
}

impl StepAdam {
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        Self {
            beta_1,
            beta_2,
            epsilon,
        }
    }
}

impl Optimizer for StepAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // A first step's moments start at zero: `0 beta + x` is `x` to the bit, burn's
        // first step.
        let (time, moment_1, moment_2) = match state {
            Some(state) => {
                let momentum = state.momentum;
                (momentum.time + 1, momentum.moment_1, momentum.moment_2)
            }
            None => (1, tensor.zeros_like(), tensor.zeros_like()),
        };
        // As burn computes them, in f32.
        let t = time as i32;
        let correction_2 = (1.0 - self.beta_2.powi(t)).sqrt();
        let scale = correction_2 / (1.0 - self.beta_1.powi(t));
        let (tensor, moment_1, moment_2) = <Dispatch as AdamStep>::adam_step(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            self.beta_1.into(),
            self.beta_2.into(),
            scale.into(),
            (self.epsilon * correction_2).into(),
            (lr as f32).into(),
        );
        let momentum = AdaptiveMomentumState::new(
            time,
            Tensor::from_dispatch(moment_1),
            Tensor::from_dispatch(moment_2),
        );
        (
            Tensor::from_dispatch(tensor),
            Some(AdamState::new(momentum)),
        )
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
    use burn::tensor::Distribution;

    fn values<const D: usize>(tensor: &Tensor<D>) -> Vec<f32> {
        tensor.clone().into_data().try_to_vec::<f32>().unwrap()
    }

    fn config() -> AdamConfig {
        AdamConfig::new()
            .with_beta_1(0.5)
            .with_beta_2(0.999)
            .with_epsilon(1e-8)
    }

    /// Five steps of a parameter with [`StepAdam`] and with burn's `Adam` (the report's betas,
    /// eps 1e-8, gradients of growing size, a learning rate that changes): the same parameter
    /// and moments to the bit after each.
    #[test]
    fn steps_as_burns_adam_does() {
        let device = Device::flex();
        let (ours, theirs) = (StepAdam::new(0.5, 0.999, 1e-8), config().build());
        let start = Tensor::<2>::random([3, 6], Distribution::Default, &device);
        let (mut p_ours, mut p_theirs) = (start.clone(), start);
        let (mut s_ours, mut s_theirs) = (None, None);
        for step in 0..5 {
            let scale = step as f64 + 1.0;
            let grad = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, scale), &device);
            let lr = 2e-4 * scale;
            (p_ours, s_ours) = ours.step(lr, p_ours, grad.clone(), s_ours);
            (p_theirs, s_theirs) = theirs.step(lr, p_theirs, grad, s_theirs);
            assert_eq!(values(&p_ours), values(&p_theirs), "step {}", step + 1);
            let (a, b) = (
                &s_ours.as_ref().unwrap().momentum,
                &s_theirs.as_ref().unwrap().momentum,
            );
            assert_eq!(a.time, b.time);
            assert_eq!(
                values(&a.moment_1),
                values(&b.moment_1),
                "step {}",
                step + 1
            );
            assert_eq!(
                values(&a.moment_2),
                values(&b.moment_2),
                "step {}",
                step + 1
            );
        }
    }

    /// burn's `Adam`'s saved state, loaded by a module optimizer of [`StepAdam`]: its next step
    /// is burn's (the states are one record type, so a checkpoint loads either way).
    #[test]
    fn loads_burns_adam_state() {
        let device = Device::flex().autodiff();
        let mut model: Linear = LinearConfig::new(6, 3).init(&device);
        let mut adam = config().init();
        let x = Tensor::<2>::random([4, 6], Distribution::Default, &device);
        let grads = |model: &Linear| {
            let loss = model.forward(x.clone()).powf_scalar(2.0).mean();
            GradientsParams::from_grads(loss.backward(), model)
        };
        for _ in 0..3 {
            model = adam.step(2e-4, model.clone(), grads(&model));
        }
        let mut ours = ModuleOptimizer::from(StepAdam::new(0.5, 0.999, 1e-8))
            .from_bytes(adam.into_bytes().unwrap())
            .unwrap();
        let next_ours = ours.step(1e-3, model.clone(), grads(&model));
        let next_theirs = adam.step(1e-3, model.clone(), grads(&model));
        assert_eq!(
            values(&next_ours.weight.val()),
            values(&next_theirs.weight.val())
        );
        let bias = |m: &Linear| values(&m.bias.as_ref().unwrap().val());
        assert_eq!(bias(&next_ours), bias(&next_theirs));
        // A fresh StepAdam (no state) steps otherwise: the state was really loaded.
        let fresh = ModuleOptimizer::from(StepAdam::new(0.5, 0.999, 1e-8)).step(
            1e-3,
            model.clone(),
            grads(&model),
        );
        assert_ne!(
            values(&fresh.weight.val()),
            values(&next_theirs.weight.val())
        );
    }
}
