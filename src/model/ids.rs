//! Fixed parameter ids, so that the same run writes the same checkpoint bytes in every process.
//!
//! burn draws every parameter's `ParamId` at random. Checkpoints store it beside each tensor,
//! and the optimizers' state is keyed and named by it there, so two processes training the same
//! run wrote different files from the same weights. [`ModelConfig::build`](super::ModelConfig::build)
//! numbers G's parameters from [`GENERATOR_FIRST`] and D's from [`DISCRIMINATOR_FIRST`] in
//! module order instead (disjoint, as burn's random ones were). A checkpoint written before
//! keeps its own ids: loading one restores the ids it stores.

use burn::module::{Module, ModuleMapper, Param, ParamId, RunningState};
use burn::nn::BatchNorm;
use burn::prelude::*;

/// The id of G's first parameter.
pub const GENERATOR_FIRST: u64 = 1;
/// The id of D's first parameter: far past any G's last.
pub const DISCRIMINATOR_FIRST: u64 = 1 << 32;

/// `module` with its trainable parameters numbered from `first` in the order burn visits them
/// (the order of its fields), then the running statistics of `batch_norms` (which the mapper
/// cannot renumber: burn keeps a running state's id through a map).
pub fn numbered<M: Module>(
    module: M,
    first: u64,
    batch_norms: impl FnOnce(&mut M) -> Vec<&mut BatchNorm>,
) -> M {
    let mut numbering = Numbering { next: first };
    let mut module = module.map(&mut numbering);
    for bn in batch_norms(&mut module) {
        for state in [&mut bn.running_mean, &mut bn.running_var] {
            *state = RunningState::with_id(numbering.take(), state.value());
        }
    }
    module
}

struct Numbering {
    next: u64,
}

impl Numbering {
    fn take(&mut self) -> ParamId {
        self.next += 1;
        ParamId::from(self.next - 1)
    }
}

impl ModuleMapper for Numbering {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(self.take(), value, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::train::rng::{Stream, rng_for};
    use burn::module::ModuleVisitor;

    /// Every id a module holds, its running statistics' included, in visiting order.
    #[derive(Default)]
    struct Ids(Vec<u64>);

    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id.val());
        }
    }

    fn ids(module: &impl Module) -> Vec<u64> {
        let mut ids = Ids::default();
        module.visit(&mut ids);
        ids.0
    }

    #[test]
    fn every_parameter_has_its_own_id_and_every_build_the_same_ones() {
        let device = crate::backend::device();
        for model in ModelConfig::families() {
            let build = |seed| model.build(&mut rng_for(seed, Stream::Init, 0), &device);
            let (g, d) = build(0);
            let (g_ids, d_ids) = (ids(&g), ids(&d));
            let mut all: Vec<u64> = g_ids.iter().chain(&d_ids).copied().collect();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), g_ids.len() + d_ids.len(), "{}", model.arch());
            assert!(g_ids.iter().all(|&id| id < DISCRIMINATOR_FIRST));
            assert!(d_ids.iter().all(|&id| id >= DISCRIMINATOR_FIRST));
            // Another seed draws other weights under the same ids.
            let (g2, d2) = build(1);
            assert_eq!((ids(&g2), ids(&d2)), (g_ids, d_ids), "{}", model.arch());
        }
    }
}
