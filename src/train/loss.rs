//! The adversarial loss.

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

/// Binary cross-entropy of logits against an all-real (`true`) or all-fake target, averaged:
/// the same value as PyTorch's `BCELoss(sigmoid(x), t)`, computed stably.
pub fn bce_with_logits(logits: Tensor<2>, real: bool) -> Tensor<1> {
    let signed = if real { logits } else { logits.neg() };
    log_sigmoid(signed).mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_closed_form() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[0.0], [2.0], [-3.0]], &device);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let expected_real = -[0.0, 2.0, -3.0].iter().map(|&v| sig(v).ln()).sum::<f64>() / 3.0;
        let expected_fake = -[0.0, 2.0, -3.0]
            .iter()
            .map(|&v| (1.0 - sig(v)).ln())
            .sum::<f64>()
            / 3.0;
        let real: f32 = bce_with_logits(x.clone(), true).into_scalar();
        let fake: f32 = bce_with_logits(x, false).into_scalar();
        assert!((real as f64 - expected_real).abs() < 1e-5);
        assert!((fake as f64 - expected_fake).abs() < 1e-5);
        // ln 2 at a logit of 0: the loss of a D that cannot tell.
        let zero: f32 = bce_with_logits(Tensor::zeros([4, 1], &device), true).into_scalar();
        assert!((zero - std::f32::consts::LN_2).abs() < 1e-6);
    }
}
