//! Parameter initialisation and dropout masks drawn from the run's own seeded RNG.
//!
//! Burn's initialisers and dropout draw from a process-global generator, which makes runs
//! depend on thread scheduling; drawing everything from a [`StdRng`] the trainer seeds
//! per step keeps every run reproducible and every resume exact.

use std::cell::RefCell;

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::RngExt;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// A tensor of values drawn uniformly from [-bound, bound].
pub fn uniform<const D: usize>(
    rng: &mut StdRng,
    shape: [usize; D],
    bound: f64,
    device: &Device,
) -> Tensor<D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A tensor of values drawn from N(mean, std^2).
pub fn normal<const D: usize>(
    rng: &mut StdRng,
    shape: [usize; D],
    mean: f64,
    std: f64,
    device: &Device,
) -> Tensor<D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let x: f64 = StandardNormal.sample(rng);
            (mean + std * x) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A linear layer initialised as PyTorch's `nn.Linear`: weight and bias U(-k, k), k = 1/sqrt(fan_in).
pub fn linear(rng: &mut StdRng, d_in: usize, d_out: usize, device: &Device) -> burn::nn::Linear {
    let mut layer = linear_without_bias(rng, d_in, d_out, device);
    let bound = 1.0 / (d_in as f64).sqrt();
    layer.bias = Some(Param::from_tensor(uniform(rng, [d_out], bound, device)));
    layer
}

/// [`linear`] without a bias (a class embedding read through one-hot rows); the weight is
/// drawn first in both, so `linear` draws what this does, then its bias.
pub fn linear_without_bias(
    rng: &mut StdRng,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> burn::nn::Linear {
    let bound = 1.0 / (d_in as f64).sqrt();
    burn::nn::Linear {
        weight: Param::from_tensor(uniform(rng, [d_in, d_out], bound, device)),
        bias: None,
    }
}

/// A conv layer with the report's init: weight N(0, 0.02), bias (when present) as PyTorch's
/// default U(-k, k), k = 1/sqrt(fan_in).
pub fn conv2d(
    rng: &mut StdRng,
    config: burn::nn::conv::Conv2dConfig,
    device: &Device,
) -> burn::nn::conv::Conv2d {
    let mut conv = config.clone().with_bias(config.bias).init(device);
    let [c_in, c_out] = config.channels;
    let [kh, kw] = config.kernel_size;
    conv.weight = Param::from_tensor(normal(rng, [c_out, c_in, kh, kw], 0.0, 0.02, device));
    if config.bias {
        let bound = 1.0 / ((c_in * kh * kw) as f64).sqrt();
        conv.bias = Some(Param::from_tensor(uniform(rng, [c_out], bound, device)));
    }
    conv
}

/// A transposed conv layer without bias, weight N(0, 0.02) (Radford et al.).
pub fn conv_transpose2d(
    rng: &mut StdRng,
    config: burn::nn::conv::ConvTranspose2dConfig,
    device: &Device,
) -> burn::nn::conv::ConvTranspose2d {
    let mut conv = config.clone().with_bias(false).init(device);
    let [c_in, c_out] = config.channels;
    let [kh, kw] = config.kernel_size;
    conv.weight = Param::from_tensor(normal(rng, [c_in, c_out, kh, kw], 0.0, 0.02, device));
    conv
}

/// A batch norm with the report's init: gamma N(1, 0.02), beta 0. Both are built here rather
/// than left to burn's lazy initialization: a lazy parameter's pending state is shared by the
/// module's clones, so `no_grad()` on a clone (the trainer's G step) would make the original's
/// beta untrainable too.
pub fn batch_norm(
    rng: &mut StdRng,
    features: usize,
    epsilon: f64,
    momentum: f64,
    device: &Device,
) -> BatchNorm {
    let mut bn = burn::nn::BatchNormConfig::new(features)
        .with_epsilon(epsilon)
        .with_momentum(momentum)
        .init(device);
    bn.gamma = Param::from_tensor(normal(rng, [features], 1.0, 0.02, device));
    bn.beta = Param::from_tensor(Tensor::zeros([features], device));
    bn
}

thread_local! {
    /// The masks [`dropout`] drew on this thread since [`record_dropout_masks`], in order:
    /// instrumentation for replaying a run's step in another implementation
    /// (`tests/parity.rs`).
    static RECORDED_MASKS: RefCell<Option<Vec<TensorData>>> = const { RefCell::new(None) };
}

/// From now on, keeps every dropout mask drawn on this thread (see [`take_dropout_masks`]).
pub fn record_dropout_masks() {
    RECORDED_MASKS.with_borrow_mut(|masks| *masks = Some(Vec::new()));
}

/// The masks drawn on this thread since the last call, as drawn (each value 0 or
/// `1 / (1 - p)`, in its mask shape); none unless [`record_dropout_masks`] was called.
pub fn take_dropout_masks() -> Vec<TensorData> {
    RECORDED_MASKS.with_borrow_mut(|masks| masks.as_mut().map(std::mem::take).unwrap_or_default())
}

/// Inverted dropout with a host-drawn mask of shape `mask_shape`, broadcast over `x`: a
/// `[B, C, 1, 1]` mask is PyTorch's Dropout2d, a full-shape mask is plain Dropout.
pub fn dropout<const D: usize>(
    x: Tensor<D>,
    p: f64,
    mask_shape: [usize; D],
    rng: &mut StdRng,
) -> Tensor<D> {
    match dropout_mask(p, mask_shape, rng, &x.device()) {
        Some(mask) => x * mask,
        None => x,
    }
}

/// [`dropout`]'s mask on `device`, each value 0 or `1 / (1 - p)`; none when `p` is 0.
pub fn dropout_mask<const D: usize>(
    p: f64,
    mask_shape: [usize; D],
    rng: &mut StdRng,
    device: &Device,
) -> Option<Tensor<D>> {
    if p <= 0.0 {
        return None;
    }
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let n: usize = mask_shape.iter().product();
    let mask = keep_mask(rng, keep, n, scale);
    let mask = TensorData::new(mask, mask_shape);
    RECORDED_MASKS.with_borrow_mut(|masks| {
        if let Some(masks) = masks {
            masks.push(mask.clone());
        }
    });
    Some(super::uploads::upload(mask, device))
}

/// `n` values, each `scale` with probability `keep` and 0 otherwise: the draws of `n`
/// `rng.random_bool(keep)` calls, the same values in the same order, made from one bulk fill
/// of the generator (a call per draw costs a fifth of a vanilla GAN step).
fn keep_mask(rng: &mut StdRng, keep: f64, n: usize, scale: f32) -> Vec<f32> {
    // rand's Bernoulli: a 64-bit draw below keep * 2^64, and no draw at all when keep is 1.
    if keep >= 1.0 {
        return vec![scale; n];
    }
    let threshold = (keep * 2f64.powi(64)) as u64;
    let mut draws = vec![0u64; n];
    rng.fill(&mut draws[..]);
    draws
        .iter()
        .map(|&draw| if draw < threshold { scale } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The bulk draws equal one `random_bool` call per draw, from any position of the stream
    /// (here after an odd number of 32-bit words), for the probabilities dropout uses and the
    /// edges.
    #[test]
    fn bulk_mask_draws_equal_random_bool_calls() {
        for keep in [0.7, 0.75, 0.5, 1.0 / 3.0, 0.0, 1.0, 1.0 - 1e-12] {
            for (seed, skip) in [(3, 0), (4, 1), (5, 7)] {
                let mut one_by_one = StdRng::seed_from_u64(seed);
                let mut bulk = StdRng::seed_from_u64(seed);
                for _ in 0..skip {
                    let _: u32 = one_by_one.random();
                    let _: u32 = bulk.random();
                }
                let expected: Vec<f32> = (0..1001)
                    .map(|_| {
                        if one_by_one.random_bool(keep) {
                            2.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let got = keep_mask(&mut bulk, keep, 1001, 2.0);
                assert_eq!(got, expected, "keep {keep}, seed {seed}, skip {skip}");
                assert_eq!(
                    bulk.random::<u64>(),
                    one_by_one.random::<u64>(),
                    "same position after"
                );
            }
        }
    }

    /// The mask keeps each value with probability 1 - p (within four binomial standard errors),
    /// scales kept values by 1 / (1 - p), and is the same for the same seed; odd sizes too.
    #[test]
    fn dropout_keeps_the_right_share_scaled_and_reproducibly() {
        let device = crate::backend::device();
        for (p, n) in [(0.3, 100_003), (0.25, 7), (0.5, 40_000)] {
            let mask = |seed| {
                let ones = Tensor::<1>::ones([n], &device);
                dropout(ones, p, [n], &mut StdRng::seed_from_u64(seed))
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap()
            };
            let values = mask(1);
            assert_eq!(values, mask(1));
            assert_ne!(values, mask(2));
            let scale = (1.0 / (1.0 - p)) as f32;
            assert!(values.iter().all(|&v| v == 0.0 || v == scale));
            let kept = values.iter().filter(|&&v| v > 0.0).count() as f64;
            let (mean, sd) = (n as f64 * (1.0 - p), (n as f64 * p * (1.0 - p)).sqrt());
            assert!(
                (kept - mean).abs() <= 4.0 * sd + 1.0,
                "p {p}: kept {kept} of {n}"
            );
        }
    }
}
