//! The report's DCGAN: an Upsample+Conv generator and a strided-conv discriminator with
//! Dropout2d and BatchNorm (including the report's `BatchNorm2d(C, 0.8)` eps quirk).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::interpolate::{Interpolate2d, Interpolate2dConfig, InterpolateMode};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, tanh};
use rand::rngs::StdRng;

use super::{DcganOptions, init};

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
    upsample: Interpolate2d,
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
            project: init::linear(rng, opts.latent_dim, c1 * INIT_SIDE * INIT_SIDE, device),
            // The report's first BatchNorm2d(128) has PyTorch's defaults, quirk or not.
            bn0: init::batch_norm(rng, c1, 1e-5, 0.1, device),
            upsample: Interpolate2dConfig::new()
                .with_scale_factor(Some([2.0, 2.0]))
                .with_mode(InterpolateMode::Nearest)
                .init(),
            conv1: conv3(rng, c1, c1, 1, device),
            bn1: init::batch_norm(rng, c1, eps, momentum, device),
            conv2: conv3(rng, c1, c2, 1, device),
            bn2: init::batch_norm(rng, c2, eps, momentum, device),
            conv_out: conv3(rng, c2, 1, 1, device),
            channels: c1,
        }
    }

    pub fn forward(&self, z: Tensor<2>) -> Tensor<4> {
        let batch = z.dims()[0];
        let x = self
            .project
            .forward(z)
            .reshape([batch, self.channels, INIT_SIDE, INIT_SIDE]);
        let x = self.upsample.forward(self.bn0.forward(x));
        let x = leaky_relu(self.bn1.forward(self.conv1.forward(x)), 0.2);
        let x = self.upsample.forward(x);
        let x = leaky_relu(self.bn2.forward(self.conv2.forward(x)), 0.2);
        tanh(self.conv_out.forward(x))
    }
}

/// One D block: Conv(k3, s2, p1) -> LeakyReLU(0.2) -> Dropout2d -> BatchNorm (not in the first).
#[derive(Module, Debug)]
struct DownBlock {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

#[derive(Module, Debug)]
pub struct DcganDiscriminator {
    blocks: Vec<DownBlock>,
    head: Linear,
    dropout: f64,
}

impl DcganDiscriminator {
    pub fn new(rng: &mut StdRng, opts: &DcganOptions, device: &Device) -> Self {
        let mut c_in = 1;
        let mut blocks = Vec::new();
        for (i, &c_out) in opts.d_channels.iter().enumerate() {
            let conv = conv3(rng, c_in, c_out, 2, device);
            let bn = (i > 0)
                .then(|| init::batch_norm(rng, c_out, opts.bn_eps, opts.bn_momentum, device));
            blocks.push(DownBlock { conv, bn });
            c_in = c_out;
        }
        let side = SIDE >> opts.d_channels.len();
        let head = init::linear(rng, c_in * side * side, 1, device);
        DcganDiscriminator {
            blocks,
            head,
            dropout: opts.d_dropout,
        }
    }

    pub fn forward(&self, images: Tensor<4>, mut dropout_rng: Option<&mut StdRng>) -> Tensor<2> {
        let mut x = images;
        for block in &self.blocks {
            x = leaky_relu(block.conv.forward(x), 0.2);
            if let Some(rng) = dropout_rng.as_deref_mut() {
                let [b, c, _, _] = x.dims();
                x = init::dropout(x, self.dropout, [b, c, 1, 1], rng);
            }
            if let Some(bn) = &block.bn {
                x = bn.forward(x);
            }
        }
        let batch = x.dims()[0];
        self.head.forward(x.reshape([batch as i32, -1]))
    }
}
