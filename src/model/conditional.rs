//! Conditional generation (`model.conditional`): how a class label enters G and D.
//!
//! In every conditional mode G reads its latent vector with the label's one-hot code appended
//! (Mirza & Osindero 2014). D differs:
//! - `concat`: D reads the one-hot code too: appended to the flattened image (MLP) or as ten
//!   constant channels beside the image (conv);
//! - `projection`: D's logit gains <embed(y), phi(x)>, phi being D's last features before its
//!   head (Miyato & Koyama 2018);
//! - `acgan`: D also predicts the class from phi(x), and both nets add that prediction's
//!   cross-entropy against the label to their losses (Odena et al. 2017).
//!
//! Labels travel as one-hot `[B, CLASSES]` float tensors.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::init;

/// Classes of the data sets the runner knows (digits and Fashion-MNIST's garments).
pub const CLASSES: usize = 10;

/// `model.conditional`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Conditioning {
    /// Unconditional: the report's models.
    #[default]
    None,
    Concat,
    Projection,
    Acgan,
}

impl Conditioning {
    pub fn is_conditional(self) -> bool {
        self != Conditioning::None
    }

    /// Whether D gains a head on its features (projection's embedding, AC-GAN's classifier).
    pub fn has_class_head(self) -> bool {
        matches!(self, Conditioning::Projection | Conditioning::Acgan)
    }

    /// Inputs G gains beside the latent vector.
    pub fn generator_inputs(self) -> usize {
        if self.is_conditional() { CLASSES } else { 0 }
    }

    /// Inputs (MLP) or channels (conv) D gains beside the image.
    pub fn discriminator_inputs(self) -> usize {
        if self == Conditioning::Concat {
            CLASSES
        } else {
            0
        }
    }

    /// D's extra head on its features of width `features`, if this mode has one.
    pub fn head(self, rng: &mut StdRng, features: usize, device: &Device) -> Option<ClassHead> {
        match self {
            Conditioning::None | Conditioning::Concat => None,
            Conditioning::Projection => Some(ClassHead::Projection(init::linear_without_bias(
                rng, CLASSES, features, device,
            ))),
            Conditioning::Acgan => Some(ClassHead::Auxiliary(init::linear(
                rng, features, CLASSES, device,
            ))),
        }
    }
}

/// Labels as one-hot rows `[labels.len(), CLASSES]`.
pub fn one_hot(labels: &[u8], device: &Device) -> Tensor<2> {
    let mut values = vec![0f32; labels.len() * CLASSES];
    for (row, &label) in labels.iter().enumerate() {
        values[row * CLASSES + label as usize] = 1.0;
    }
    super::uploads::upload(TensorData::new(values, [labels.len(), CLASSES]), device)
}

/// `images` `[B, C, H, W]` with the one-hot `labels` appended as constant channels when
/// given.
pub fn with_label_channels(images: Tensor<4>, labels: Option<&Tensor<2>>) -> Tensor<4> {
    let Some(labels) = labels else {
        return images;
    };
    let [batch, _, h, w] = images.dims();
    let maps = labels
        .clone()
        .reshape([batch, CLASSES, 1, 1])
        .expand([batch, CLASSES, h, w]);
    Tensor::cat(vec![images, maps], 1)
}

/// `x` `[B, N]` with the one-hot `labels` appended when given.
pub fn with_labels(x: Tensor<2>, labels: Option<&Tensor<2>>) -> Tensor<2> {
    match labels {
        Some(labels) => Tensor::cat(vec![x, labels.clone()], 1),
        None => x,
    }
}

/// D's class-aware head on its features.
#[derive(Module, Debug)]
pub enum ClassHead {
    /// The class embedding, `[CLASSES, features]` (`projection`).
    Projection(Linear),
    /// The auxiliary classifier, features -> class logits (`acgan`).
    Auxiliary(Linear),
}

/// What D says about a batch: real-vs-fake logits `[B, 1]`, and class logits `[B, CLASSES]`
/// when it has an auxiliary classifier.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub logits: Tensor<2>,
    pub class_logits: Option<Tensor<2>>,
}

impl Verdict {
    /// D's verdict from its `features` `[B, F]`, its unconditional `logits`, its class head
    /// and the batch's labels (needed by a projection head).
    pub fn new(
        features: Tensor<2>,
        logits: Tensor<2>,
        head: Option<&ClassHead>,
        labels: Option<&Tensor<2>>,
    ) -> Verdict {
        match head {
            None => Verdict {
                logits,
                class_logits: None,
            },
            Some(ClassHead::Projection(embed)) => {
                let labels = labels.expect("a projection discriminator is given labels");
                let projection = (embed.forward(labels.clone()) * features).sum_dim(1);
                Verdict {
                    logits: logits + projection,
                    class_logits: None,
                }
            }
            Some(ClassHead::Auxiliary(classifier)) => Verdict {
                logits,
                class_logits: Some(classifier.forward(features)),
            },
        }
    }
}
