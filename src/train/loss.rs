//! The adversarial losses (`train.loss`), on D's raw outputs (logits).
//!
//! | loss | D minimises | G minimises |
//! |---|---|---|
//! | `bce` (the report's) | (BCE(D(x), t) + BCE(D(G(z)), 0)) / 2 | BCE(D(G(z)), 1) (non-saturating) |
//! | `minimax` | as `bce` | mean log(1 - sigmoid(D(G(z)))) (Goodfellow's saturating form) |
//! | `lsgan` | (mean (D(x) - t)^2 + mean D(G(z))^2) / 2 | mean (D(G(z)) - 1)^2 / 2 |
//! | `hinge` | mean relu(1 - D(x)) + mean relu(1 + D(G(z))) | -mean D(G(z)) |
//! | `wgan` | mean D(G(z)) - mean D(x) (weights clipped to `train.clip`) | -mean D(G(z)) |
//! | `wgan-gp` | as `wgan` plus the gradient penalty (`train.gp_weight`), no clipping | -mean D(G(z)) |
//!
//! t is `train.real_label` (1, or less for one-sided label smoothing). The penalties (WGAN-GP's,
//! and R1 for any loss) are in `train::penalty`. With `model.conditional = "acgan"` both nets
//! add [`class_cross_entropy`] of D's class prediction against the label: G on its fakes, D
//! on the mean of its real and fake batches' (as its adversarial loss averages them).

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax, relu};
use serde::{Deserialize, Serialize};

use crate::model::gpu_ops::bce::logit_bce;

/// `train.loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    #[default]
    Bce,
    Minimax,
    Lsgan,
    Hinge,
    Wgan,
    #[serde(rename = "wgan-gp")]
    WganGp,
}

impl LossKind {
    /// Whether real images have a target that `train.real_label` can smooth.
    pub fn has_real_label(self) -> bool {
        matches!(self, LossKind::Bce | LossKind::Minimax | LossKind::Lsgan)
    }

    /// D's loss on its outputs for a real and a fake batch.
    pub fn d_loss(self, real: Tensor<2>, fake: Tensor<2>, real_label: f64) -> Tensor<1> {
        match self {
            LossKind::Bce | LossKind::Minimax => {
                (bce_with_target(real, real_label) + bce_with_logits(fake, false)).div_scalar(2.0)
            }
            LossKind::Lsgan => (real.sub_scalar(real_label).powi_scalar(2).mean()
                + fake.powi_scalar(2).mean())
            .div_scalar(2.0),
            LossKind::Hinge => {
                relu(real.neg().add_scalar(1.0)).mean() + relu(fake.add_scalar(1.0)).mean()
            }
            LossKind::Wgan | LossKind::WganGp => fake.mean() - real.mean(),
        }
    }

    /// G's loss on D's outputs for its fakes.
    pub fn g_loss(self, fake: Tensor<2>) -> Tensor<1> {
        match self {
            LossKind::Bce => bce_with_logits(fake, true),
            LossKind::Minimax => bce_with_logits(fake, false).neg(),
            LossKind::Lsgan => fake.sub_scalar(1.0).powi_scalar(2).mean().div_scalar(2.0),
            LossKind::Hinge | LossKind::Wgan | LossKind::WganGp => fake.mean().neg(),
        }
    }
}

/// The mean cross-entropy of class logits `[B, C]` against one-hot labels `[B, C]`.
pub fn class_cross_entropy(logits: Tensor<2>, labels: Tensor<2>) -> Tensor<1> {
    (log_softmax(logits, 1) * labels).sum_dim(1).mean().neg()
}

/// Binary cross-entropy of logits against an all-real (`true`) or all-fake target, averaged:
/// the same value as PyTorch's `BCELoss(sigmoid(x), t)`, computed stably (on a GPU as one
/// operation with its own backward pass: [`logit_bce`]).
pub fn bce_with_logits(logits: Tensor<2>, real: bool) -> Tensor<1> {
    if !crate::backend::own_kernels() {
        return logit_bce(logits, if real { 1.0 } else { 0.0 });
    }
    let signed = if real { logits } else { logits.neg() };
    log_sigmoid(signed).mean().neg()
}

/// BCE of logits against the target `t` for every item; exactly [`bce_with_logits`] at t = 1.
fn bce_with_target(logits: Tensor<2>, t: f64) -> Tensor<1> {
    if t == 1.0 {
        return bce_with_logits(logits, true);
    }
    if !crate::backend::own_kernels() {
        return logit_bce(logits, t);
    }
    (log_sigmoid(logits.clone()).mul_scalar(t) + log_sigmoid(logits.neg()).mul_scalar(1.0 - t))
        .mean()
        .neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: [f32; 3] = [0.0, 2.0, -3.0];
    const Y: [f32; 3] = [0.5, -1.5, 1.2];

    fn sig(v: f64) -> f64 {
        1.0 / (1.0 + (-v).exp())
    }

    #[test]
    fn matches_the_closed_form() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[0.0], [2.0], [-3.0]], &device);
        let expected_real = -X.iter().map(|&v| sig(v as f64).ln()).sum::<f64>() / 3.0;
        let expected_fake = -X.iter().map(|&v| (1.0 - sig(v as f64)).ln()).sum::<f64>() / 3.0;
        let real: f32 = bce_with_logits(x.clone(), true).into_scalar();
        let fake: f32 = bce_with_logits(x, false).into_scalar();
        assert!((real as f64 - expected_real).abs() < 1e-5);
        assert!((fake as f64 - expected_fake).abs() < 1e-5);
        // ln 2 at a logit of 0: the loss of a D that cannot tell.
        let zero: f32 = bce_with_logits(Tensor::zeros([4, 1], &device), true).into_scalar();
        assert!((zero - std::f32::consts::LN_2).abs() < 1e-6);
    }

    /// The loss's value and its gradients with respect to D's real and fake outputs.
    fn evaluate(loss: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<1>) -> (f64, Vec<f32>, Vec<f32>) {
        let device = Device::flex().autodiff();
        let column = |v: [f32; 3]| {
            Tensor::<1>::from_floats(v, &device)
                .reshape([3, 1])
                .require_grad()
        };
        let (real, fake) = (column(X), column(Y));
        let value = loss(real.clone(), fake.clone());
        let scalar = value.clone().into_scalar::<f32>() as f64;
        let grads = value.backward();
        let grad = |t: &Tensor<2>| {
            t.grad(&grads)
                .map(|g| g.into_data().try_to_vec::<f32>().unwrap())
                .unwrap_or_else(|| vec![0.0; 3])
        };
        (scalar, grad(&real), grad(&fake))
    }

    fn close(got: &[f32], want: impl Iterator<Item = f64>) {
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn each_loss_matches_its_closed_form_value_and_gradient() {
        let n = 3.0;
        let mean =
            |f: &dyn Fn(f64) -> f64, v: [f32; 3]| v.iter().map(|&x| f(x as f64)).sum::<f64>() / n;
        let real_f = |f: &'static dyn Fn(f64) -> f64| X.map(|x| f(x as f64)).into_iter();
        let fake_f = |f: &'static dyn Fn(f64) -> f64| Y.map(|y| f(y as f64)).into_iter();
        // Smoothed BCE for D (t = 0.9): d/dr = (sigmoid(r) - t) / 2n, d/df = sigmoid(f) / 2n.
        let (v, gr, gf) = evaluate(|r, f| LossKind::Bce.d_loss(r, f, 0.9));
        let want = (mean(&|x| -(0.9 * sig(x).ln() + 0.1 * (1.0 - sig(x)).ln()), X)
            + mean(&|y| -(1.0 - sig(y)).ln(), Y))
            / 2.0;
        assert!((v - want).abs() < 1e-5, "{v} {want}");
        close(&gr, real_f(&|x| (sig(x) - 0.9) / 6.0));
        close(&gf, fake_f(&|y| sig(y) / 6.0));
        // G losses: non-saturating -log D, saturating log(1 - D).
        let (v, _, gf) = evaluate(|_, f| LossKind::Bce.g_loss(f));
        assert!((v - mean(&|y| -sig(y).ln(), Y)).abs() < 1e-5);
        close(&gf, fake_f(&|y| -(1.0 - sig(y)) / 3.0));
        let (v, _, gf) = evaluate(|_, f| LossKind::Minimax.g_loss(f));
        assert!((v - mean(&|y| (1.0 - sig(y)).ln(), Y)).abs() < 1e-5);
        close(&gf, fake_f(&|y| -sig(y) / 3.0));
        // LSGAN.
        let (v, gr, gf) = evaluate(|r, f| LossKind::Lsgan.d_loss(r, f, 1.0));
        let want = (mean(&|x| (x - 1.0).powi(2), X) + mean(&|y| y * y, Y)) / 2.0;
        assert!((v - want).abs() < 1e-5);
        close(&gr, real_f(&|x| (x - 1.0) / 3.0));
        close(&gf, fake_f(&|y| y / 3.0));
        let (v, _, gf) = evaluate(|_, f| LossKind::Lsgan.g_loss(f));
        assert!((v - mean(&|y| (y - 1.0).powi(2) / 2.0, Y)).abs() < 1e-5);
        close(&gf, fake_f(&|y| (y - 1.0) / 3.0));
        // Hinge: only margins that are violated pull.
        let (v, gr, gf) = evaluate(|r, f| LossKind::Hinge.d_loss(r, f, 1.0));
        let want = mean(&|x| (1.0 - x).max(0.0), X) + mean(&|y| (1.0 + y).max(0.0), Y);
        assert!((v - want).abs() < 1e-5);
        close(&gr, real_f(&|x| if x < 1.0 { -1.0 / 3.0 } else { 0.0 }));
        close(&gf, fake_f(&|y| if y > -1.0 { 1.0 / 3.0 } else { 0.0 }));
        // Wasserstein: the critic's mean difference.
        let (v, gr, gf) = evaluate(|r, f| LossKind::Wgan.d_loss(r, f, 1.0));
        assert!((v - (mean(&|y| y, Y) - mean(&|x| x, X))).abs() < 1e-5);
        close(&gr, real_f(&|_| -1.0 / 3.0));
        close(&gf, fake_f(&|_| 1.0 / 3.0));
        let (v, _, gf) = evaluate(|_, f| LossKind::Hinge.g_loss(f));
        assert!((v + mean(&|y| y, Y)).abs() < 1e-5);
        close(&gf, fake_f(&|_| -1.0 / 3.0));
    }

    #[test]
    fn class_cross_entropy_matches_the_closed_form() {
        use burn::tensor::TensorData;
        let device = crate::backend::device();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 0.5, -1.0], [2, 2]),
            &device,
        );
        let labels = crate::model::conditional::one_hot(&[1, 0], &device).slice([0..2, 0..2]);
        let got: f32 = class_cross_entropy(logits, labels).into_scalar();
        // -(log softmax(1, 2)[1] + log softmax(0.5, -1)[0]) / 2
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        let want = ((lse(1.0, 2.0) - 2.0) + (lse(0.5, -1.0) - 0.5)) / 2.0;
        assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn an_unsmoothed_label_is_exactly_the_reports_loss() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[40.0], [-90.0]], &device);
        let smoothed: f32 = bce_with_target(x.clone(), 1.0).into_scalar();
        let plain: f32 = bce_with_logits(x, true).into_scalar();
        assert_eq!(smoothed.to_bits(), plain.to_bits());
    }
}
