//! `train.g_ema`: an exponential moving average of G's weights (Karras et al.; Yazici et al.
//! 2019), which samples better than the raw G at no training cost. After every G step each
//! parameter of the average becomes `decay * average + (1 - decay) * current`. BatchNorm's
//! running statistics are averaged the same way. The average never enters a loss: its tensors
//! are rebuilt off the autodiff graph.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::model::Generator;

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

/// The average after one more G step: `decay * average + (1 - decay) * generator`.
pub fn update(average: Generator, generator: &Generator, decay: f64) -> Generator {
    let mut current = Collect(Vec::new());
    generator.visit(&mut current);
    average.map(&mut Blend {
        decay,
        current: current.0.into_iter(),
    })
}

/// A fresh average: G's weights as they are, detached.
pub fn start(generator: &Generator) -> Generator {
    update(generator.clone(), generator, 0.0)
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
}
