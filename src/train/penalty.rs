//! Gradient penalties on D: WGAN-GP's (Gulrajani et al. 2017) on interpolates of real and fake
//! images, and R1 (Mescheder et al. 2018) on real images.
//!
//! Both are functions of g = dD(x)/dx, so their gradient with respect to D's weights is a
//! second-order one. burn 0.22 would need an autodiff backend nested in another for that, and
//! its dispatch backend (the one this runner uses) refuses to wrap an autodiff tensor. So the
//! penalty's weight gradient is computed as a Hessian-vector product by central finite
//! differences of first-order quantities: for a penalty P = sum_i f(g_i) its gradient is
//! sum_i grad_theta (v_i . dD(x_i)/dx) with v_i = f'(g_i), held constant, and
//!
//!   v . dD(x)/dx = (D(x + e v) - D(x - e v)) / 2e + O(e^2).
//!
//! So the surrogate `(sum D(x + e v) - sum D(x - e v)) / 2e`, added to D's loss, gives D's
//! weights the penalty's gradient (two more D passes, one more backward pass for g). e is
//! chosen so that the largest perturbation is [`PERTURBATION`] in pixel units (images lie in
//! [-1, 1]). Every D pass of one step uses the same dropout masks. The penalty's value itself
//! is exact; tests compare the gradient with finite differences of that value.

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::RngExt;
use rand::rngs::StdRng;

use crate::model::Discriminator;

/// The largest change of a pixel in the finite-difference passes.
pub const PERTURBATION: f64 = 1e-3;

/// Cuts every parameter off the autodiff graph.
struct Detach;

impl burn::module::ModuleMapper for Detach {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        param.map(|t| Tensor::from_inner(t.inner()))
    }
}

/// Which penalty, with its weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Penalty {
    /// lambda * mean (|g| - 1)^2 on random interpolates of real and fake images.
    WganGp { weight: f64 },
    /// gamma / 2 * mean |g|^2 on real images.
    R1 { gamma: f64 },
}

/// A penalty's value (for the logged D loss) and the surrogate that carries its gradient.
pub struct Penalized {
    pub value: f64,
    pub surrogate: Tensor<1>,
}

impl Penalty {
    /// The penalty of `discriminator` on this step's batches (both of the one-hot `labels`,
    /// when conditional: the gradient is taken at fixed labels); `rng` draws the interpolation
    /// weights and then D's dropout masks (the same for every pass).
    pub fn apply(
        self,
        discriminator: &Discriminator,
        real: &Tensor<4>,
        fake: &Tensor<4>,
        labels: Option<&Tensor<2>>,
        rng: &mut StdRng,
    ) -> Penalized {
        let n = real.dims()[0];
        let device = real.device();
        let at = match self {
            Penalty::WganGp { .. } => {
                let alpha: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
                let alpha = Tensor::<1>::from_data(TensorData::new(alpha, [n]), &device)
                    .reshape([n, 1, 1, 1]);
                real.clone().detach() * alpha.clone()
                    + fake.clone().detach() * alpha.neg().add_scalar(1.0)
            }
            Penalty::R1 { .. } => real.clone().detach(),
        };
        // One dropout seed for every pass of this penalty.
        let masks: u64 = rng.random();
        let pass = |d: &Discriminator, x: Tensor<4>| {
            let mut masks = <StdRng as rand::SeedableRng>::seed_from_u64(masks);
            d.forward(x, labels, Some(&mut masks)).logits.sum()
        };
        // g: D's input gradient, through a copy of D cut off from the graph: this backward
        // pass must not consume the graph that D's loss (and, with spectral normalization,
        // its weights) still needs.
        let x = at.clone().require_grad();
        let frozen = discriminator.clone().map(&mut Detach);
        let grads = pass(&frozen, x.clone()).backward();
        let g: Vec<f32> = x
            .grad(&grads)
            .expect("D's output depends on its input")
            .into_data()
            .try_to_vec()
            .expect("f32 gradients");
        let per_image = g.len() / n;
        let norms: Vec<f64> = g
            .chunks(per_image)
            .map(|gi| gi.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
            .collect();
        // P = sum_i f(g_i); v_i = df/dg_i = scale_i * g_i.
        let (value, scales): (f64, Vec<f64>) = match self {
            Penalty::WganGp { weight } => (
                weight * norms.iter().map(|m| (m - 1.0).powi(2)).sum::<f64>() / n as f64,
                norms
                    .iter()
                    .map(|&m| weight * 2.0 * (m - 1.0) / (m.max(1e-12) * n as f64))
                    .collect(),
            ),
            Penalty::R1 { gamma } => (
                gamma / 2.0 * norms.iter().map(|m| m * m).sum::<f64>() / n as f64,
                vec![gamma / n as f64; n],
            ),
        };
        let v: Vec<f32> = g
            .chunks(per_image)
            .zip(&scales)
            .flat_map(|(gi, &s)| gi.iter().map(move |&x| (x as f64 * s) as f32))
            .collect();
        let largest = v.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        let surrogate = if largest == 0.0 {
            Tensor::zeros([1], &device)
        } else {
            let e = PERTURBATION / largest;
            let dims = at.dims();
            let step = Tensor::<4>::from_data(TensorData::new(v, dims), &device).mul_scalar(e);
            (pass(discriminator, at.clone() + step.clone()) - pass(discriminator, at - step))
                .div_scalar(2.0 * e)
        };
        Penalized { value, surrogate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GanOptions, ModelConfig};
    use crate::train::rng::{Stream, rng_for};
    use crate::train::testing::{Nudge, param_values};
    use burn::module::Module;

    /// An MLP D with `hidden` layers (none: D is linear), and two image batches for it.
    fn setup(hidden: Vec<usize>, dropout: f64) -> (Discriminator, Tensor<4>, Tensor<4>) {
        let device = crate::train::training_device();
        let model = ModelConfig::Gan(GanOptions {
            latent_dim: 4,
            g_hidden: vec![8],
            d_hidden: hidden,
            dropout,
            ..Default::default()
        });
        let (_, d) = model.build(&mut rng_for(3, Stream::Init, 0), &device);
        let images = |seed: u64| {
            let mut rng = rng_for(seed, Stream::Shuffle, 0);
            let values: Vec<f32> = (0..4 * 784)
                .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                .collect();
            Tensor::<4>::from_data(TensorData::new(values, [4, 1, 28, 28]), &device)
        };
        (d, images(1), images(2))
    }

    /// The penalty and its surrogate's gradient for every parameter.
    fn penalized(
        penalty: Penalty,
        d: &Discriminator,
        real: &Tensor<4>,
        fake: &Tensor<4>,
    ) -> (f64, Vec<Vec<f32>>) {
        let out = penalty.apply(d, real, fake, None, &mut rng_for(0, Stream::Step, 1));
        let grads = out.surrogate.backward();
        (out.value, param_values(d, Some(&grads)))
    }

    #[test]
    fn a_linear_d_gets_the_closed_form_value_and_gradient() {
        // D(x) = w.x + b: g = w for every image, so R1 = gamma/2 |w|^2 with gradient gamma w,
        // and WGAN-GP = lambda (|w| - 1)^2 with gradient 2 lambda (|w| - 1) w / |w|.
        let (d, real, fake) = setup(vec![], 0.0);
        let w: Vec<f64> = param_values(&d, None)[0]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        // Within 0.1% of the largest entry (float rounding of the perturbed images).
        let close = |got: &[f32], want: &dyn Fn(f64) -> f64| {
            let scale = w.iter().map(|x| want(*x).abs()).fold(0.0, f64::max);
            for (g, x) in got.iter().zip(&w) {
                assert!(
                    (*g as f64 - want(*x)).abs() <= 1e-3 * scale,
                    "{g} vs {}",
                    want(*x)
                );
            }
        };
        let (value, grads) = penalized(Penalty::R1 { gamma: 4.0 }, &d, &real, &fake);
        assert!((value - 2.0 * norm * norm).abs() < 1e-4 * value);
        close(&grads[0], &|x| 4.0 * x);
        let (value, grads) = penalized(Penalty::WganGp { weight: 10.0 }, &d, &real, &fake);
        assert!((value - 10.0 * (norm - 1.0).powi(2)).abs() < 1e-4 * value);
        close(&grads[0], &|x| 20.0 * (norm - 1.0) * x / norm);
    }

    #[test]
    fn a_nonlinear_d_with_dropout_gets_the_gradient_of_the_penalty() {
        // Against central differences of the (exact) penalty value in one weight per layer.
        let (d, real, fake) = setup(vec![16, 8], 0.3);
        for penalty in [Penalty::WganGp { weight: 10.0 }, Penalty::R1 { gamma: 5.0 }] {
            let (_, grads) = penalized(penalty, &d, &real, &fake);
            for which in [0, 2, 4] {
                let at = |h: f32| {
                    let nudged = d.clone().map(&mut Nudge::new(which, h));
                    penalty
                        .apply(
                            &nudged,
                            &real,
                            &fake,
                            None,
                            &mut rng_for(0, Stream::Step, 1),
                        )
                        .value
                };
                let h = 1e-2;
                let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
                let analytic = grads[which][0] as f64;
                assert!(
                    (analytic - numeric).abs() <= 0.03 * numeric.abs().max(1e-2),
                    "{penalty:?}, parameter {which}: surrogate {analytic}, differences {numeric}"
                );
            }
        }
    }
}
