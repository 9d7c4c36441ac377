//! BatchNorm in training mode as one operation: the batch statistics, the normalized output
//! and, backward, the gradients for the input, gamma and beta, each in one or two passes over
//! NCHW memory. burn's default computes the statistics and their gradients through
//! channel-first copies (`swap_dims` + `reshape`) and about a dozen elementwise tensors.
//!
//! Statistics are accumulated in f64 per channel; the variance that normalizes is the biased
//! one (as PyTorch's and burn's), the running variance takes the unbiased one (PyTorch's).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Dispatch, ExtensionType, Flex, backend_extension};
use burn::module::RunningState;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{tensor, values, zeros};
use crate::model::gpu_ops::batch_norm::ComposedBatchNorm;

/// What the operation returns: the output, and the batch's mean and biased variance per
/// channel (constants, for the running statistics).
#[derive(ExtensionType)]
pub struct Normalized<B: burn::backend::Backend> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub variance: FloatTensor<B>,
}

#[backend_extension(Flex, Autodiff)]
pub trait FusedBatchNorm: burn::backend::Backend {
    /// `x` `[B, C, ...]` normalized per channel with its batch statistics, then scaled by
    /// `gamma` and shifted by `beta` (both `[C]`).
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Normalized<Self>;
}

/// `bn` applied to `x`, updating its running statistics when training (with this op on the
/// CPU, the GPU path's [`ComposedBatchNorm`](crate::model::gpu_ops::batch_norm) on a GPU);
/// burn's module, with those statistics, otherwise.
///
/// The running variance is updated as PyTorch's BatchNorm updates it, with the batch's
/// unbiased variance (burn's `BatchNorm` uses the biased one): the report's G samples in
/// evaluation mode with PyTorch's statistics (the training step is the same either way).
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if !uses_batch_statistics(bn, &x) {
        return bn.forward(x);
    }
    batch_norm_train(bn, x, crate::backend::own_kernels())
}

/// Whether [`batch_norm`] normalizes `x` with the batch's statistics (training mode on the
/// training device, gradients tracked or not) rather than with `bn`'s running ones.
pub fn uses_batch_statistics(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    x.device().is_autodiff() && bn.training.is_enabled()
}

/// [`batch_norm`] in training, through this op (`fused`) or the GPU path's.
fn batch_norm_train(bn: &BatchNorm, x: Tensor<4>, fused: bool) -> Tensor<4> {
    let [batch, _, height, width] = x.dims();
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    let (x, gamma, beta) = (
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
    );
    let normalized = if fused {
        <Dispatch as FusedBatchNorm>::fused_batch_norm_train(x, gamma, beta, bn.epsilon)
    } else {
        <Dispatch as ComposedBatchNorm>::composed_batch_norm_train(x, gamma, beta, bn.epsilon)
    };
    let output = Tensor::from_dispatch(normalized.output);
    let mean = Tensor::<1>::from_dispatch(normalized.mean).detach();
    let variance = Tensor::<1>::from_dispatch(normalized.variance).detach();
    let count = (batch * height * width) as f64;
    let unbiased = variance.mul_scalar(count / (count - 1.0).max(1.0));
    // As burn's `BatchNorm::forward` in training, and settled at once: burn keeps an update
    // pending until the state is read with `value_sync()` (or the module through `valid()`),
    // and a checkpoint's record, an export or the moving average of G, which read the module
    // as it is, would miss the latest one (a run resumed from that checkpoint would sample
    // and score with other statistics than the run that never stopped).
    let momentum = bn.momentum;
    let device = mean.device();
    let update = |state: &RunningState<Tensor<1>>, batch: Tensor<1>| {
        let running = (state.value_sync().to_device(&device))
            .mul_scalar(1.0 - momentum)
            .add(batch.mul_scalar(momentum))
            .detach();
        state.update(running);
        state.value_sync();
    };
    update(&bn.running_mean, mean);
    update(&bn.running_var, unbiased);
    output
}

/// Batch, channels and values per image and channel of an NCHW tensor.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Sizes {
    fn of(x: &FlexTensor) -> Sizes {
        let shape = x.layout().shape();
        assert!(shape.num_dims() >= 2, "batch norm takes [B, C, ...]");
        let (batch, channels) = (shape[0], shape[1]);
        Sizes {
            batch,
            channels,
            plane: shape.num_elements() / (batch * channels).max(1),
        }
    }

    fn count(&self) -> f64 {
        (self.batch * self.plane).max(1) as f64
    }

    /// `f(plane)` summed over the `plane`-sized slices of each channel, per channel, in
    /// parallel over channels: `f` gets the channel and the slice's offset.
    fn per_channel(&self, f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
        (0..self.channels)
            .into_par_iter()
            .map(|c| {
                (0..self.batch)
                    .map(|b| f(c, (b * self.channels + c) * self.plane))
                    .sum()
            })
            .collect()
    }

    /// Fills `out` plane by plane (images in parallel): `f(channel, offset, out plane)`.
    fn map(&self, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
        let image = self.channels * self.plane;
        out.par_chunks_mut(image.max(1))
            .enumerate()
            .for_each(|(b, out)| {
                for (c, plane) in out.chunks_mut(self.plane.max(1)).enumerate() {
                    f(c, b * image + c * self.plane, plane);
                }
            });
    }
}

/// The sum of `f(i)` over a slice's indices, in f32 lanes of 8 (vectorized) added up in f64.
fn sum(len: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut lanes = [0f32; 8];
    let full = len / 8 * 8;
    for start in (0..full).step_by(8) {
        for (j, lane) in lanes.iter_mut().enumerate() {
            *lane += f(start + j);
        }
    }
    let tail: f64 = (full..len).map(|i| f(i) as f64).sum();
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail
}

/// `(output, mean, biased variance)`.
fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, Vec<f64>, Vec<f64>) {
    let s = Sizes::of(x);
    let (xs, gamma, beta) = (values(x), values(gamma), values(beta));
    let plane = |at: usize| &xs[at..at + s.plane];
    let mean: Vec<f64> = s
        .per_channel(|_, at| sum(s.plane, |i| plane(at)[i]))
        .into_iter()
        .map(|total| total / s.count())
        .collect();
    let variance: Vec<f64> = s
        .per_channel(|c, at| {
            let m = mean[c] as f32;
            sum(s.plane, |i| (plane(at)[i] - m).powi(2))
        })
        .into_iter()
        .map(|total| total / s.count())
        .collect();
    // y = x * scale + shift per channel.
    let scale: Vec<f64> = (0..s.channels)
        .map(|c| gamma[c] as f64 / (variance[c] + epsilon).sqrt())
        .collect();
    let mut out = zeros(xs.len());
    s.map(&mut out, |c, at, out| {
        let (a, b) = (
            scale[c] as f32,
            (beta[c] as f64 - mean[c] * scale[c]) as f32,
        );
        out.iter_mut()
            .zip(plane(at))
            .for_each(|(o, &x)| *o = x * a + b);
    });
    (tensor(out, x.layout().shape().clone()), mean, variance)
}

fn channel_tensor(values: &[f64]) -> FlexTensor {
    tensor(values.iter().map(|&v| v as f32).collect(), [values.len()])
}

impl FusedBatchNorm for Flex {
    fn fused_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> Normalized<Self> {
        let (output, mean, variance) = forward(&x, &gamma, &beta, epsilon);
        Normalized {
            output,
            mean: channel_tensor(&mean),
            variance: channel_tensor(&variance),
        }
    }
}

/// What the backward step keeps: the input, gamma, the batch statistics and epsilon.
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: Vec<f64>,
    variance: Vec<f64>,
    epsilon: f64,
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy_tensor = grads.consume::<Flex>(&ops.node);
        let saved = ops.state;
        let s = Sizes::of(&saved.x);
        let (xs, gamma, dy) = (values(&saved.x), values(&saved.gamma), values(&dy_tensor));
        let inv_std: Vec<f64> = (saved.variance.iter())
            .map(|v| 1.0 / (v + saved.epsilon).sqrt())
            .collect();
        let (x_plane, dy_plane) = (|at: usize| &xs[at..], |at: usize| &dy[at..]);
        let sum_dy = s.per_channel(|_, at| sum(s.plane, |i| dy_plane(at)[i]));
        let sum_dy_x_hat: Vec<f64> = s
            .per_channel(|c, at| {
                let m = saved.mean[c] as f32;
                sum(s.plane, |i| dy_plane(at)[i] * (x_plane(at)[i] - m))
            })
            .into_iter()
            .zip(&inv_std)
            .map(|(total, inv)| total * inv)
            .collect();
        if let Some(node) = node_x {
            // dx = g inv (dy - sum_dy / n - x_hat sum_dy_x_hat / n) = a dy + b x + k per channel.
            let n = s.count();
            let mut dx = zeros(xs.len());
            s.map(&mut dx, |c, at, dx| {
                let a = gamma[c] as f64 * inv_std[c];
                let b = -a * inv_std[c] * sum_dy_x_hat[c] / n;
                let k = -a * sum_dy[c] / n - b * saved.mean[c];
                let (a, b, k) = (a as f32, b as f32, k as f32);
                dx.iter_mut()
                    .zip(dy_plane(at).iter().zip(x_plane(at)))
                    .for_each(|(d, (&dy, &x))| *d = a * dy + b * x + k);
            });
            grads.register::<Flex>(node.id, tensor(dx, saved.x.layout().shape().clone()));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, channel_tensor(&sum_dy_x_hat));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, channel_tensor(&sum_dy));
        }
    }
}

impl<C: CheckpointStrategy> FusedBatchNorm for Autodiff<Flex, C> {
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> Normalized<Self> {
        let (output, mean, variance) =
            forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon);
        let (mean_tensor, variance_tensor) = (channel_tensor(&mean), channel_tensor(&variance));
        let output = match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = Saved {
                    x: x.primitive().clone(),
                    gamma: gamma.primitive().clone(),
                    mean,
                    variance,
                    epsilon,
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        Normalized {
            output,
            mean: Self::from_inner(mean_tensor),
            variance: Self::from_inner(variance_tensor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conv::tests::max_relative_error;
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;

    const NAMES: [&str; 6] = ["y", "dx", "dgamma", "dbeta", "running mean", "running var"];

    /// Output, gradients (input, gamma, beta) and the running mean equal burn's BatchNorm; the
    /// running variance is updated with the unbiased batch variance (PyTorch's), not burn's
    /// biased one. The path a GPU takes (its composed op) computes the same.
    #[test]
    fn matches_burns_batch_norm_in_training_and_pytorchs_running_variance() {
        let device = crate::backend::device().autodiff();
        let normal = Distribution::Normal(0.5, 2.0);
        for (batch, channels, side) in [(4, 3, 5), (1, 2, 3), (7, 8, 4)] {
            // Two layers (a clone would share its running statistics with the original).
            let layer = || {
                BatchNormConfig::new(channels)
                    .with_epsilon(0.8)
                    .with_momentum(0.2)
                    .init(&device)
            };
            let (ours, theirs) = (layer(), layer());
            let x =
                Tensor::<4>::random([batch, channels, side, side], normal, &device).require_grad();
            let probe = Tensor::<4>::random(x.dims(), normal, &device);
            let run = |bn: &BatchNorm, f: &dyn Fn(&BatchNorm, Tensor<4>) -> Tensor<4>| {
                let y = f(bn, x.clone());
                let grads = (y.clone() * probe.clone()).sum().backward();
                let grad = |t: Tensor<1>| t.grad(&grads).unwrap().reshape([1, 1, 1, channels]);
                let stats = |t: Tensor<1>| t.reshape([1, 1, 1, channels]);
                [
                    y,
                    x.grad(&grads).unwrap(),
                    grad(bn.gamma.val()),
                    grad(bn.beta.val()),
                    stats(bn.running_mean.value_sync()),
                    stats(bn.running_var.value_sync()),
                ]
            };
            // The GPU's path (its composed op, the same update) on the CPU, and this op's.
            let mine = run(&ours, &|bn, x| batch_norm_train(bn, x, true));
            let unfused = run(&layer(), &|bn, x| batch_norm_train(bn, x, false));
            for (name, (a, b)) in NAMES.iter().zip(mine.iter().cloned().zip(unfused)) {
                let error = max_relative_error(a, b);
                assert!(
                    error < 1e-4,
                    "{batch}x{channels}x{side}: unfused {name} off by {error}"
                );
            }
            let mut reference = run(&theirs, &|bn, x| bn.forward(x));
            // burn's running variance is (1 - m) + m v with v biased; PyTorch's takes
            // v n / (n - 1), n the values per channel.
            let (m, n) = (0.2, (batch * side * side) as f64);
            reference[5] = (reference[5].clone().sub_scalar(1.0 - m))
                .mul_scalar(n / (n - 1.0))
                .add_scalar(1.0 - m);
            for (name, (a, b)) in NAMES.iter().zip(mine.into_iter().zip(reference)) {
                let error = max_relative_error(a, b);
                assert!(
                    error < 1e-4,
                    "{batch}x{channels}x{side}: {name} off by {error}"
                );
            }
        }
    }
}
