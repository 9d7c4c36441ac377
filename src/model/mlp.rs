//! The report's vanilla GAN: fully connected G and D with LeakyReLU and Dropout.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, tanh};
use rand::rngs::StdRng;

use super::{GanOptions, init};

/// A stack of linear layers; every layer but the last is followed by LeakyReLU and Dropout.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    slope: f64,
    dropout: f64,
}

impl Mlp {
    fn new(rng: &mut StdRng, sizes: &[usize], slope: f64, dropout: f64, device: &Device) -> Self {
        let layers = sizes
            .windows(2)
            .map(|w| init::linear(rng, w[0], w[1], device))
            .collect();
        Mlp {
            layers,
            slope,
            dropout,
        }
    }

    /// Without a dropout RNG, dropout is off (evaluation).
    fn forward(&self, mut x: Tensor<2>, mut dropout_rng: Option<&mut StdRng>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = leaky_relu(x, self.slope);
                if let Some(rng) = dropout_rng.as_deref_mut() {
                    let shape = x.dims();
                    x = init::dropout(x, self.dropout, shape, rng);
                }
            }
        }
        x
    }
}

/// G: latent -> hidden... -> 784, tanh; output reshaped to [B, 1, 28, 28].
#[derive(Module, Debug)]
pub struct MlpGenerator {
    mlp: Mlp,
}

impl MlpGenerator {
    pub fn new(rng: &mut StdRng, opts: &GanOptions, device: &Device) -> Self {
        let sizes: Vec<usize> = std::iter::once(opts.latent_dim)
            .chain(opts.g_hidden.iter().copied())
            .chain(std::iter::once(28 * 28))
            .collect();
        MlpGenerator {
            mlp: Mlp::new(rng, &sizes, opts.leaky_slope, opts.dropout, device),
        }
    }

    pub fn forward(&self, z: Tensor<2>, dropout_rng: Option<&mut StdRng>) -> Tensor<4> {
        let batch = z.dims()[0];
        tanh(self.mlp.forward(z, dropout_rng)).reshape([batch, 1, 28, 28])
    }
}

/// D: 784 -> hidden... -> 1 logit.
#[derive(Module, Debug)]
pub struct MlpDiscriminator {
    mlp: Mlp,
}

impl MlpDiscriminator {
    pub fn new(rng: &mut StdRng, opts: &GanOptions, device: &Device) -> Self {
        let sizes: Vec<usize> = std::iter::once(28 * 28)
            .chain(opts.d_hidden.iter().copied())
            .chain(std::iter::once(1))
            .collect();
        MlpDiscriminator {
            mlp: Mlp::new(rng, &sizes, opts.leaky_slope, opts.dropout, device),
        }
    }

    pub fn forward(&self, images: Tensor<4>, dropout_rng: Option<&mut StdRng>) -> Tensor<2> {
        let batch = images.dims()[0];
        self.mlp
            .forward(images.reshape([batch, 28 * 28]), dropout_rng)
    }
}
