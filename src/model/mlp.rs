//! The report's vanilla GAN: fully connected G and D with LeakyReLU and Dropout.

use burn::nn::Linear;
use burn::prelude::*;
use rand::rngs::StdRng;

use super::conditional::{ClassHead, Verdict, with_labels};
use super::kernels::activation::{leaky_relu, tanh};
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

    /// Every layer but the last, each with its LeakyReLU and Dropout. Without a dropout RNG,
    /// dropout is off (evaluation).
    fn hidden(&self, mut x: Tensor<2>, mut dropout_rng: Option<&mut StdRng>) -> Tensor<2> {
        for layer in &self.layers[..self.layers.len() - 1] {
            x = leaky_relu(layer.forward(x), self.slope);
            if let Some(rng) = dropout_rng.as_deref_mut() {
                let shape = x.dims();
                x = init::dropout(x, self.dropout, shape, rng);
            }
        }
        x
    }

    fn last(&self) -> &Linear {
        self.layers.last().expect("an MLP has layers")
    }

    fn forward(&self, x: Tensor<2>, dropout_rng: Option<&mut StdRng>) -> Tensor<2> {
        self.last().forward(self.hidden(x, dropout_rng))
    }
}

/// G: latent -> hidden... -> 784, tanh; output reshaped to [B, 1, 28, 28].
#[derive(Module, Debug)]
pub struct MlpGenerator {
    mlp: Mlp,
}

impl MlpGenerator {
    pub fn new(rng: &mut StdRng, opts: &GanOptions, device: &Device) -> Self {
        let inputs = opts.latent_dim + opts.conditional.generator_inputs();
        let sizes: Vec<usize> = std::iter::once(inputs)
            .chain(opts.g_hidden.iter().copied())
            .chain(std::iter::once(28 * 28))
            .collect();
        MlpGenerator {
            mlp: Mlp::new(rng, &sizes, opts.leaky_slope, opts.dropout, device),
        }
    }

    /// `z` carries the one-hot label already when the model is conditional.
    pub fn forward(&self, z: Tensor<2>, dropout_rng: Option<&mut StdRng>) -> Tensor<4> {
        let batch = z.dims()[0];
        tanh(self.mlp.forward(z, dropout_rng)).reshape([batch, 1, 28, 28])
    }
}

/// D: 784 (+ one-hot label with `concat`) -> hidden... -> 1 logit; its features are the last
/// hidden layer's.
#[derive(Module, Debug)]
pub struct MlpDiscriminator {
    mlp: Mlp,
    class_head: Option<ClassHead>,
    concat_labels: bool,
}

impl MlpDiscriminator {
    pub fn new(rng: &mut StdRng, opts: &GanOptions, device: &Device) -> Self {
        let label_inputs = opts.conditional.discriminator_inputs();
        let sizes: Vec<usize> = std::iter::once(28 * 28 + label_inputs)
            .chain(opts.d_hidden.iter().copied())
            .chain(std::iter::once(1))
            .collect();
        let mlp = Mlp::new(rng, &sizes, opts.leaky_slope, opts.dropout, device);
        let features = sizes[sizes.len() - 2];
        MlpDiscriminator {
            mlp,
            class_head: opts.conditional.head(rng, features, device),
            concat_labels: label_inputs > 0,
        }
    }

    pub fn forward(
        &self,
        images: Tensor<4>,
        labels: Option<&Tensor<2>>,
        dropout_rng: Option<&mut StdRng>,
    ) -> Verdict {
        let batch = images.dims()[0];
        let x = images.reshape([batch, 28 * 28]);
        let x = with_labels(x, labels.filter(|_| self.concat_labels));
        let features = self.mlp.hidden(x, dropout_rng);
        let logits = self.mlp.last().forward(features.clone());
        Verdict::new(features, logits, self.class_head.as_ref(), labels)
    }
}
