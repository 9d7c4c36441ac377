//! The report's DCGAN: an Upsample+Conv generator and a strided-conv discriminator with
//! Dropout2d and BatchNorm (including the report's `BatchNorm2d(C, 0.8)` eps quirk).
//!
//! G's "nearest-upsample x2, then 3x3 convolution" layers run as [`upsample_conv3`]: the same
//! function computed on the low-resolution input with 2x2 kernels, 2.25x fewer multiplies.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use rand::rngs::StdRng;

use super::conditional::{ClassHead, Verdict, with_label_channels};
use super::kernels::activation::{leaky_relu, tanh};
use super::kernels::batch_norm::{batch_norm, uses_batch_statistics};
use super::{DcganOptions, conv, init};
use crate::backend::GpuConv;

/// Side of the images this model makes.
pub const SIDE: usize = 32;
/// The generator starts from SIDE/4 and upsamples twice.
const INIT_SIDE: usize = SIDE / 4;

fn conv3(rng: &mut StdRng, c_in: usize, c_out: usize, stride: usize, device: &Device) -> Conv2d {
    let config = Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1));
    init::conv2d(rng, config, device)
}

#[derive(Module, Debug)]
pub struct DcganGenerator {
    project: Linear,
    bn0: BatchNorm,
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv_out: Conv2d,
    channels: usize,
}

impl DcganGenerator {
    pub fn new(rng: &mut StdRng, opts: &DcganOptions, device: &Device) -> Self {
        let [c1, c2] = opts.g_channels;
        let (eps, momentum) = (opts.bn_eps, opts.bn_momentum);
        DcganGenerator {
            project: init::linear(
                rng,
                opts.latent_dim + opts.conditional.generator_inputs(),
                c1 * INIT_SIDE * INIT_SIDE,
                device,
            ),
            // The report's first BatchNorm2d(128) has PyTorch's defaults, quirk or not.
            bn0: init::batch_norm(rng, c1, 1e-5, 0.1, device),
            conv1: conv3(rng, c1, c1, 1, device),
            bn1: init::batch_norm(rng, c1, eps, momentum, device),
            conv2: conv3(rng, c1, c2, 1, device),
            bn2: init::batch_norm(rng, c2, eps, momentum, device),
            conv_out: conv3(rng, c2, 1, 1, device),
            channels: c1,
        }
    }

    /// `z` carries the one-hot label already when the model is conditional.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<4> {
        let batch = z.dims()[0];
        let x = self
            .project
            .forward(z)
            .reshape([batch, self.channels, INIT_SIDE, INIT_SIDE]);
        let x = batch_norm(&self.bn0, x);
        let x = leaky_relu(upsample_conv3_bn(&self.conv1, &self.bn1, x), 0.2);
        let x = leaky_relu(upsample_conv3_bn(&self.conv2, &self.bn2, x), 0.2);
        tanh(conv::forward(&self.conv_out, x))
    }

    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        vec![&mut self.bn0, &mut self.bn1, &mut self.bn2]
    }
}

/// `bn(upsample_conv3(conv, x))`. When not training, BatchNorm is an affine map per channel
/// with its running statistics, folded into the convolution's weight and bias (one pass over
/// the output fewer; sampling is inference only). A training-mode forward without gradients
/// (the fakes of D steps after the first) normalizes with the batch's statistics.
fn upsample_conv3_bn(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if uses_batch_statistics(bn, &x) {
        return batch_norm(bn, upsample_conv3(conv, x));
    }
    let weight = conv.weight.val();
    let c_out = weight.dims()[0];
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
    let bias = match &conv.bias {
        Some(b) => b.val() * scale.clone() + shift,
        None => shift,
    };
    upsampled_conv3(x, weight * scale.reshape([c_out, 1, 1, 1]), Some(bias))
}

/// `conv` (3x3, stride 1, padding 1) applied to the nearest-neighbour x2 upsampling of `x`,
/// computed without the upsampling. Output pixel (2i+a, 2j+b) only ever sees input rows
/// {i-1, i} (a = 0) or {i, i+1} (a = 1), and likewise columns, each with the sum of the 3x3
/// kernel's taps that land on it: [`conv::phase_conv`] with taps [w0, w1 + w2] (phase 0) and
/// [w0 + w1, w2] (phase 1) per axis. The kernels are sums of the weight's slices, so gradients
/// reach the same 3x3 weight as before.
pub fn upsample_conv3(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    upsampled_conv3(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()))
}

/// The 3x3 convolution (`weight`, `bias`) of `x` upsampled x2: as phase convolutions, or on a
/// GPU with [`GpuConv::Burn`] as burn's nearest upsampling then its convolution (two kernels).
fn upsampled_conv3(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    if !crate::backend::own_kernels() && crate::backend::gpu_conv() == GpuConv::Burn {
        let twice = InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([2.0, 2.0]);
        let upsampled = interpolate(x, twice);
        return conv::conv2d(upsampled, weight, bias, [1, 1]);
    }
    conv::phase_conv(x, weight, bias, &UPSAMPLE_TAPS)
}

/// The taps of [`upsample_conv3`]'s phase kernels along one axis.
const UPSAMPLE_TAPS: conv::PhaseTaps = [[&[0], &[1, 2]], [&[0, 1], &[2]]];

/// One D block: Conv(k3, s2, p1) -> LeakyReLU(0.2) -> Dropout2d -> BatchNorm (not in the first).
#[derive(Module, Debug)]
struct DownBlock {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

/// D: the blocks, then a linear head on their flattened output (its features).
#[derive(Module, Debug)]
pub struct DcganDiscriminator {
    blocks: Vec<DownBlock>,
    head: Linear,
    dropout: f64,
    class_head: Option<ClassHead>,
    concat_labels: bool,
}

impl DcganDiscriminator {
    pub fn new(rng: &mut StdRng, opts: &DcganOptions, device: &Device) -> Self {
        let label_channels = opts.conditional.discriminator_inputs();
        let mut c_in = 1 + label_channels;
        let mut blocks = Vec::new();
        for (i, &c_out) in opts.d_channels.iter().enumerate() {
            let conv = conv3(rng, c_in, c_out, 2, device);
            let bn = (i > 0)
                .then(|| init::batch_norm(rng, c_out, opts.bn_eps, opts.bn_momentum, device));
            blocks.push(DownBlock { conv, bn });
            c_in = c_out;
        }
        let side = SIDE >> opts.d_channels.len();
        let features = c_in * side * side;
        let head = init::linear(rng, features, 1, device);
        DcganDiscriminator {
            blocks,
            head,
            dropout: opts.d_dropout,
            class_head: opts.conditional.head(rng, features, device),
            concat_labels: label_channels > 0,
        }
    }

    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        (self.blocks.iter_mut())
            .filter_map(|block| block.bn.as_mut())
            .collect()
    }

    pub fn forward(
        &self,
        images: Tensor<4>,
        labels: Option<&Tensor<2>>,
        mut dropout_rng: Option<&mut StdRng>,
    ) -> Verdict {
        let mut x = with_label_channels(images, labels.filter(|_| self.concat_labels));
        for block in &self.blocks {
            // Drawn before the layer runs: on a GPU its upload then comes before the
            // activation, and applying it joins the activation's fused kernel.
            let mask = dropout_rng.as_deref_mut().and_then(|rng| {
                let shape = [x.dims()[0], block.conv.weight.dims()[0], 1, 1];
                init::dropout_mask(self.dropout, shape, rng, &x.device())
            });
            x = leaky_relu(conv::forward(&block.conv, x), 0.2);
            if let Some(mask) = mask {
                x = x * mask;
            }
            if let Some(bn) = &block.bn {
                x = batch_norm(bn, x);
            }
        }
        let batch = x.dims()[0];
        let features: Tensor<2> = x.reshape([batch as i32, -1]);
        let logits = self.head.forward(features.clone());
        Verdict::new(features, logits, self.class_head.as_ref(), labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conv::tests::max_relative_error;
    use burn::nn::interpolate::{Interpolate2dConfig, InterpolateMode};
    use burn::tensor::Distribution;
    use rand::SeedableRng;

    /// Forward, input gradient and weight gradient of the phase form against burn's own
    /// upsample + conv, on odd sizes, batch 1, single channels, with and without bias.
    #[test]
    fn upsample_conv3_equals_upsample_then_conv() {
        let device = crate::backend::device().autodiff();
        let upsample = Interpolate2dConfig::new()
            .with_scale_factor(Some([2.0, 2.0]))
            .with_mode(InterpolateMode::Nearest)
            .init();
        let mut rng = StdRng::seed_from_u64(7);
        for (batch, c_in, c_out, h, w, bias) in [
            (2, 3, 4, 5, 7, true),
            (1, 1, 1, 1, 1, true),
            (3, 8, 2, 4, 4, false),
            (1, 16, 16, 8, 3, true),
        ] {
            let conv = init::conv2d(
                &mut rng,
                Conv2dConfig::new([c_in, c_out], [3, 3])
                    .with_bias(bias)
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
                &device,
            );
            let x =
                Tensor::<4>::random([batch, c_in, h, w], Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
            let probe = Tensor::<4>::random(
                [batch, c_out, 2 * h, 2 * w],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let grads_of = |y: Tensor<4>| {
                let grads = (y * probe.clone()).sum().backward();
                (
                    x.grad(&grads).unwrap(),
                    conv.weight.val().grad(&grads).unwrap(),
                )
            };
            let fast = upsample_conv3(&conv, x.clone());
            let slow = conv.forward(upsample.forward(x.clone()));
            assert!(max_relative_error(fast.clone(), slow.clone()) < 1e-4);
            let (dx_fast, dw_fast) = grads_of(fast);
            let (dx_slow, dw_slow) = grads_of(slow);
            assert!(max_relative_error(dx_fast, dx_slow) < 1e-4);
            assert!(max_relative_error(dw_fast, dw_slow) < 1e-4);
        }
    }
}
