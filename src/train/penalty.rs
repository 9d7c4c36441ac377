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
//! is exact; tests compare the gradient with finite differences of that value. Everything
//! stays on the device: read back mid-step, g would make a GPU wait for everything queued.

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

/// A penalty's value (for the logged D loss; a constant, without autodiff) and the surrogate
/// that carries its gradient, both `[1]` on the device.
pub struct Penalized {
    pub value: Tensor<1>,
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
                let alpha =
                    crate::model::uploads::upload::<1>(TensorData::new(alpha, [n]), &device)
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
        // its weights) still needs. A constant, without autodiff.
        let x = at.clone().require_grad();
        let frozen = discriminator.clone().map(&mut Detach);
        let grads = pass(&frozen, x.clone()).backward();
        let g = x.grad(&grads).expect("D's output depends on its input");
        let dims = g.dims();
        let g = g.reshape([n as i32, -1]);
        let norms = g.clone().square().sum_dim(1).sqrt();
        // P = sum_i f(g_i); v_i = df/dg_i = scale_i * g_i.
        let (value, v) = match self {
            Penalty::WganGp { weight } => {
                let off = norms.clone().sub_scalar(1.0);
                let scales =
                    off.clone().mul_scalar(2.0 * weight / n as f64) / norms.clamp_min(1e-12);
                (off.square().mean().mul_scalar(weight), g * scales)
            }
            Penalty::R1 { gamma } => (
                norms.square().mean().mul_scalar(gamma / 2.0),
                g.mul_scalar(gamma / n as f64),
            ),
        };
        // The perturbation e v with its largest pixel PERTURBATION. A v of zeros perturbs
        // nothing, and the two passes then cancel exactly.
        let e = v
            .clone()
            .abs()
            .max()
            .clamp_min(1e-30)
            .recip()
            .mul_scalar(PERTURBATION);
        let step = (v * e.clone().reshape([1, 1])).reshape(dims);
        let surrogate = (pass(discriminator, at.clone() + step.clone())
            - pass(discriminator, at - step))
            / e.mul_scalar(2.0);
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

    fn value_of(value: Tensor<1>) -> f64 {
        value.into_scalar::<f32>() as f64
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
        (value_of(out.value), param_values(d, Some(&grads)))
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
                    let value = penalty
                        .apply(
                            &nudged,
                            &real,
                            &fake,
                            None,
                            &mut rng_for(0, Stream::Step, 1),
                        )
                        .value;
                    value_of(value)
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
