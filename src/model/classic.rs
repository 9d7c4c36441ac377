//! The Radford et al. DCGAN the report discusses: transposed convs with ReLU and BatchNorm in
//! G, strided convs with LeakyReLU(0.2) in D, no BatchNorm on G's output or D's input.

use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use rand::rngs::StdRng;

use super::conditional::{ClassHead, Verdict, with_label_channels};
use super::kernels::activation::{leaky_relu, tanh};
use super::kernels::batch_norm::batch_norm;
use super::{ClassicOptions, conv, init};

/// ConvT(k4, s2, p1) doubles the side; the first ConvT (k4, s1, p0) turns 1x1 into 4x4.
fn up(
    rng: &mut StdRng,
    c_in: usize,
    c_out: usize,
    first: bool,
    device: &Device,
) -> ConvTranspose2d {
    let (stride, pad) = if first { (1, 0) } else { (2, 1) };
    let config = ConvTranspose2dConfig::new([c_in, c_out], [4, 4])
        .with_stride([stride, stride])
        .with_padding([pad, pad]);
    init::conv_transpose2d(rng, config, device)
}

/// Conv(k4, s2, p1) halves the side; the last one (k4, s1, p0) turns 4x4 into 1x1.
fn down(rng: &mut StdRng, c_in: usize, c_out: usize, last: bool, device: &Device) -> Conv2d {
    let (stride, pad) = if last { (1, 0) } else { (2, 1) };
    let config = Conv2dConfig::new([c_in, c_out], [4, 4])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false);
    init::conv2d(rng, config, device)
}

#[derive(Module, Debug)]
struct UpBlock {
    conv: ConvTranspose2d,
    bn: BatchNorm,
}

#[derive(Module, Debug)]
pub struct ClassicGenerator {
    blocks: Vec<UpBlock>,
    conv_out: ConvTranspose2d,
}

impl ClassicGenerator {
    /// With three widths the side goes 1 -> 4 -> 8 -> 16 -> 32.
    pub fn new(rng: &mut StdRng, opts: &ClassicOptions, device: &Device) -> Self {
        let mut c_in = opts.latent_dim + opts.conditional.generator_inputs();
        let mut blocks = Vec::new();
        for (i, &c_out) in opts.g_channels.iter().enumerate() {
            let conv = up(rng, c_in, c_out, i == 0, device);
            blocks.push(UpBlock {
                conv,
                bn: init::batch_norm(rng, c_out, 1e-5, 0.1, device),
            });
            c_in = c_out;
        }
        ClassicGenerator {
            blocks,
            conv_out: up(rng, c_in, 1, false, device),
        }
    }

    /// `z` carries the one-hot label already when the model is conditional.
    pub fn forward(&self, z: Tensor<2>) -> Tensor<4> {
        let [batch, latent] = z.dims();
        let mut x = z.reshape([batch, latent, 1, 1]);
        for block in &self.blocks {
            x = relu(batch_norm(&block.bn, conv::transposed(&block.conv, x)));
        }
        tanh(conv::transposed(&self.conv_out, x))
    }

    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        self.blocks.iter_mut().map(|block| &mut block.bn).collect()
    }
}

#[derive(Module, Debug)]
struct ClassicDownBlock {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

/// D: the blocks, then a 4x4 convolution to one logit; its features are the blocks' 4x4
/// output, flattened.
#[derive(Module, Debug)]
pub struct ClassicDiscriminator {
    blocks: Vec<ClassicDownBlock>,
    conv_out: Conv2d,
    class_head: Option<ClassHead>,
    concat_labels: bool,
}

impl ClassicDiscriminator {
    /// With three widths the side goes 32 -> 16 -> 8 -> 4 -> 1.
    pub fn new(rng: &mut StdRng, opts: &ClassicOptions, device: &Device) -> Self {
        let label_channels = opts.conditional.discriminator_inputs();
        let mut c_in = 1 + label_channels;
        let mut blocks = Vec::new();
        for (i, &c_out) in opts.d_channels.iter().enumerate() {
            let conv = down(rng, c_in, c_out, false, device);
            let bn = (i > 0).then(|| init::batch_norm(rng, c_out, 1e-5, 0.1, device));
            blocks.push(ClassicDownBlock { conv, bn });
            c_in = c_out;
        }
        ClassicDiscriminator {
            blocks,
            conv_out: down(rng, c_in, 1, true, device),
            class_head: opts.conditional.head(rng, c_in * 4 * 4, device),
            concat_labels: label_channels > 0,
        }
    }

    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        (self.blocks.iter_mut())
            .filter_map(|block| block.bn.as_mut())
            .collect()
    }

    pub fn forward(&self, images: Tensor<4>, labels: Option<&Tensor<2>>) -> Verdict {
        let mut x = with_label_channels(images, labels.filter(|_| self.concat_labels));
        for block in &self.blocks {
            x = conv::forward(&block.conv, x);
            if let Some(bn) = &block.bn {
                x = batch_norm(bn, x);
            }
            x = leaky_relu(x, 0.2);
        }
        let batch = x.dims()[0];
        let logits = conv::forward(&self.conv_out, x.clone()).reshape([batch, 1]);
        let features = x.reshape([batch as i32, -1]);
        Verdict::new(features, logits, self.class_head.as_ref(), labels)
    }
}
