//! `train.g_ema`: an exponential moving average of G's weights (Karras et al.; Yazici et al.
//! 2019), which samples better than the raw G at no training cost. After every G step each
//! parameter of the average becomes `decay * average + (1 - decay) * current`. BatchNorm's
//! running statistics are averaged the same way. The average never enters a loss: its tensors
//! are rebuilt off the autodiff graph.
//!
//! Averaged statistics belong to no one set of weights, though: they mix those of every G the
//! average has seen, early ones included, and a BatchNorm G samples badly with them. The
//! average therefore samples and is scored [`settle`]d: with statistics of its own.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use super::rng::{Stream, rng_for};
use crate::model::{Generator, ModelConfig, conditional::one_hot};

/// Every float tensor of a module, flattened, in visiting order.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().inner().reshape([-1]));
    }
}

/// Blends each parameter with the next collected one.
struct Blend<I: Iterator<Item = Tensor<1>>> {
    decay: f64,
    current: I,
}

impl<I: Iterator<Item = Tensor<1>>> ModuleMapper for Blend<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = self
            .current
            .next()
            .expect("the average and G have one structure");
        let decay = self.decay;
        param.map(|average| {
            let shape = average.shape();
            let blended =
                average.inner().mul_scalar(decay) + current.reshape(shape).mul_scalar(1.0 - decay);
            Tensor::from_inner(blended)
        })
    }
}

/// The decay of the average's update at `step` (from 1): `g_ema`, or with `warmup` the
/// smaller of `g_ema` and (1 + step) / (10 + step), the ramp of TensorFlow's
/// `ExponentialMovingAverage(num_updates)`. Until it reaches `g_ema` (step 8 990 for 0.999)
/// the average spans about the last tenth of the steps so far, instead of keeping G's first
/// weights: at decay 0.999 those still weigh 13% at step 2 000.
pub fn decay(g_ema: f64, warmup: bool, step: u64) -> f64 {
    if warmup {
        let step = step as f64;
        g_ema.min((1.0 + step) / (10.0 + step))
    } else {
        g_ema
    }
}

/// The average after one more G step: `decay * average + (1 - decay) * generator`.
pub fn update(average: Generator, generator: &Generator, decay: f64) -> Generator {
    let mut current = Collect(Vec::new());
    generator.visit(&mut current);
    average.map(&mut Blend {
        decay,
        current: current.0.into_iter(),
    })
}

/// A fresh average: G's weights as they are, detached, with running statistics of its own
/// (a clone's are G's, shared, which every G step would then write over).
pub fn start(generator: &Generator) -> Generator {
    update(generator.valid().train(), generator, 0.0)
}

/// Batches of noise that settle an average's BatchNorm statistics, and their size.
const SETTLE_BATCHES: u64 = 16;
const SETTLE_BATCH: usize = 64;

/// The average as it samples: a copy whose BatchNorm running statistics are recomputed from
/// its own activations on 1 024 latents of `seed`'s own stream ("standing statistics", Brock
/// et al. 2019), the mean over 16 batches in training mode. The average itself is left as it
/// is (a resumed run goes on averaging exactly). A G without BatchNorm is a plain copy.
pub fn settle(average: &Generator, model: &ModelConfig, seed: u64) -> Generator {
    let mut copy = average.clone();
    if copy.batch_norms_mut().is_empty() {
        return copy;
    }
    // A copy with its own running statistics (a clone's share the average's), trained so
    // that BatchNorm normalizes with the batch's statistics and updates them. Its passes
    // track no gradients: tracked ones, which no backward pass consumes, left their graphs
    // to the autodiff server (the first grid of a run took 3-4 s instead of 0.8).
    let device = super::training_device();
    let mut settled = copy.valid().fork(&device).train().set_require_grad(false);
    let momenta: Vec<f64> = settled
        .batch_norms_mut()
        .iter()
        .map(|bn| bn.momentum)
        .collect();
    // Every class in turn for a conditional G, as an evaluation draws them.
    let labels = super::eval_labels(model, SETTLE_BATCH).map(|l| one_hot(&l, &device));
    for batch in 0..SETTLE_BATCHES {
        // The k-th batch's momentum 1/k keeps each statistic the mean over the k batches.
        for bn in settled.batch_norms_mut() {
            bn.momentum = 1.0 / (batch + 1) as f64;
        }
        let z = super::latents(
            &mut rng_for(seed, Stream::Statistics, batch),
            SETTLE_BATCH,
            model.latent_dim(),
            &device,
        );
        settled.forward(z, labels.as_ref(), None);
    }
    for (bn, momentum) in settled.batch_norms_mut().into_iter().zip(momenta) {
        bn.momentum = momentum;
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::train::rng::{Stream, rng_for};

    fn values(generator: &Generator) -> Vec<f32> {
        let mut all = Collect(Vec::new());
        generator.visit(&mut all);
        all.0
            .into_iter()
            .flat_map(|t| t.into_data().try_to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn the_warm_up_ramps_the_decay_to_its_ceiling_and_no_further() {
        assert_eq!(decay(0.999, false, 1), 0.999);
        assert!((decay(0.999, true, 1) - 2.0 / 11.0).abs() < 1e-12);
        assert!((decay(0.999, true, 2_000) - 2_001.0 / 2_010.0).abs() < 1e-12);
        assert!(decay(0.999, true, 8_989) < 0.999);
        assert_eq!(decay(0.999, true, 8_991), 0.999);
        assert_eq!(decay(0.999, true, u64::MAX), 0.999);
        let steps = 1..=20_000;
        let ramp: Vec<f64> = steps.map(|t| decay(0.999, true, t)).collect();
        assert!(ramp.windows(2).all(|w| w[0] <= w[1]), "never decreases");
    }

    #[test]
    fn the_average_follows_its_formula_and_leaves_the_graph() {
        let device = crate::train::training_device();
        for model in [ModelConfig::default(), ModelConfig::Gan(Default::default())] {
            let build = |seed| model.build(&mut rng_for(seed, Stream::Init, 0), &device).0;
            let (a, b) = (build(1), build(2));
            let average = start(&a);
            assert_eq!(values(&average), values(&a));
            let average = update(average, &b, 0.9);
            let (va, vb, vm) = (values(&a), values(&b), values(&average));
            assert_eq!(vm.len(), va.len());
            for ((x, y), m) in va.iter().zip(&vb).zip(&vm) {
                assert!((0.9 * x + 0.1 * y - m).abs() <= 1e-6 * (1.0 + m.abs()));
            }
            let mut tracked = false;
            struct AnyTracked<'a>(&'a mut bool);
            impl ModuleVisitor for AnyTracked<'_> {
                fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                    *self.0 |= param.val().is_require_grad();
                }
            }
            average.visit(&mut AnyTracked(&mut tracked));
            assert!(!tracked, "the average is not trained");
        }
    }

    /// G's output on `z` in training mode, on all of it as one batch.
    fn train_forward(generator: &Generator, z: &[f32], latent_dim: usize) -> Vec<f32> {
        let device = crate::train::training_device();
        let n = z.len() / latent_dim;
        let z = Tensor::from_data(TensorData::new(z.to_vec(), [n, latent_dim]), &device);
        let out = generator.forward(z, None, None);
        out.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn the_average_keeps_its_own_statistics_and_samples_with_settled_ones() {
        let device = crate::train::training_device();
        let model = ModelConfig::default();
        let latent_dim = model.latent_dim();
        let generator = model.build(&mut rng_for(1, Stream::Init, 0), &device).0;
        let average = start(&generator);
        let before = values(&average);
        // G's training (a forward in training mode updates its statistics) leaves them.
        let z: Vec<f32> = (0..SETTLE_BATCHES)
            .flat_map(|b| {
                crate::train::normal_values(
                    &mut rng_for(7, Stream::Statistics, b),
                    SETTLE_BATCH * latent_dim,
                )
            })
            .collect();
        let in_training = train_forward(&generator, &z, latent_dim);
        assert!(values(&generator) != before, "G's statistics moved");
        assert!(values(&average) == before, "the average's did not");
        // Settled on the same latents, the average in evaluation mode draws nearly what G
        // draws in training mode on all of them at once (the same weights, statistics of
        // the same activations); with the statistics it started with, far from it.
        let settled = settle(&average, &model, 7);
        assert!(values(&average) == before, "settling leaves the average");
        assert!(values(&settle(&average, &model, 7)) == values(&settled));
        let sampled = |g: &Generator| {
            crate::train::sample_latents(g, &model, &z, None, &mut rng_for(0, Stream::Eval, 1))
        };
        let distance = |a: &[f32], b: &[f32]| {
            a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
        };
        let (settled_gap, unsettled_gap) = (
            distance(&sampled(&settled), &in_training),
            distance(&sampled(&average), &in_training),
        );
        eprintln!("settled {settled_gap}, unsettled {unsettled_gap}");
        assert!(
            settled_gap < 1e-3 && unsettled_gap > 0.02,
            "{settled_gap} {unsettled_gap}"
        );
    }
}
