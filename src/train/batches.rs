//! Real batches, in a seeded order per epoch, as PyTorch's `DataLoader(shuffle=True)`.

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::seq::SliceRandom;

use super::rng::{Stream, rng_for};
use crate::data::byte_to_unit;

/// The training images (bytes, scaled to [-1, 1] as each batch is served: a quarter of the
/// memory floats would take, 180 MiB less for MNIST at 32x32), their labels, and the order
/// they are served in.
#[derive(Clone)]
pub struct Batches {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    image_len: usize,
    side: usize,
    batch_size: usize,
    seed: u64,
    /// The permutation of the epoch last served: (epoch, order).
    order: Option<(u64, Vec<u32>)>,
}

impl Batches {
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u8>,
        side: usize,
        batch_size: usize,
        seed: u64,
    ) -> Self {
        assert_eq!(
            pixels.len(),
            labels.len() * side * side,
            "one label per image"
        );
        Batches {
            pixels,
            labels,
            image_len: side * side,
            side,
            batch_size,
            seed,
            order: None,
        }
    }

    pub fn len_images(&self) -> usize {
        self.pixels.len() / self.image_len
    }

    /// Batches per epoch; the last one may be partial (the report's loader keeps it).
    pub fn per_epoch(&self) -> u64 {
        self.len_images().div_ceil(self.batch_size) as u64
    }

    /// The `index`-th batch since the start of training, as `[B, 1, side, side]`, with its
    /// labels.
    pub fn batch(&mut self, index: u64, device: &Device) -> (Tensor<4>, Vec<u8>) {
        let per_epoch = self.per_epoch();
        let (epoch, within) = (index / per_epoch, (index % per_epoch) as usize);
        let n = self.len_images();
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.shuffle(&mut rng_for(self.seed, Stream::Shuffle, epoch));
            self.order = Some((epoch, order));
        }
        let order = &self.order.as_ref().expect("set above").1;
        let picked = &order[within * self.batch_size..((within + 1) * self.batch_size).min(n)];
        let mut values = Vec::with_capacity(picked.len() * self.image_len);
        for &i in picked {
            let start = i as usize * self.image_len;
            let image = &self.pixels[start..start + self.image_len];
            values.extend(image.iter().map(|&p| byte_to_unit(p)));
        }
        let labels = picked.iter().map(|&i| self.labels[i as usize]).collect();
        let shape = [picked.len(), 1, self.side, self.side];
        (
            crate::model::uploads::upload(TensorData::new(values, shape), device),
            labels,
        )
    }
}
