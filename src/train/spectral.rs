//! `model.spectral_norm`: D's weights divided by their largest singular value (Miyato et al.
//! 2018), for every arch without touching its layers.
//!
//! Each weight of rank 2 or more (linear and convolution kernels, read as a matrix of its first
//! dimension by the rest) keeps two vectors u and v. Once per training step, before D is used,
//! one power iteration refines them from the current weights (v = M^T u / |M^T u|, u = M v /
//! |M v|), as PyTorch's `spectral_norm` does once per forward pass. D is then used as a copy
//! whose weights are M / sigma with sigma = u^T M v: u and v are constants, sigma is
//! differentiated through, and the gradients reach the stored weights M. The vectors are saved
//! with each checkpoint (`spectral-norm.json`), so a resumed run continues exactly.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::model::Discriminator;

/// The power-iteration vectors of every normalized weight, in D's visiting order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectralNorm {
    us: Vec<Vec<f32>>,
    vs: Vec<Vec<f32>>,
}

/// D's weights of rank 2 or more, as (rows, values) matrices.
struct Matrices(Vec<(usize, Vec<f32>)>);

impl ModuleVisitor for Matrices {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D >= 2 {
            let w = param.val();
            let rows = w.dims()[0];
            self.0
                .push((rows, w.into_data().try_to_vec().expect("f32 weights")));
        }
    }
}

fn matrices(discriminator: &Discriminator) -> Vec<(usize, Vec<f32>)> {
    let mut found = Matrices(Vec::new());
    discriminator.visit(&mut found);
    found.0
}

fn normalized(mut x: Vec<f32>) -> Vec<f32> {
    let norm = x
        .iter()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    x.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
    x
}

/// M^T u for a row-major `rows` x `cols` matrix.
fn transposed_times(m: &[f32], rows: usize, u: &[f32]) -> Vec<f32> {
    let cols = m.len() / rows;
    let mut out = vec![0f64; cols];
    for (r, row) in m.chunks(cols).enumerate() {
        for (o, w) in out.iter_mut().zip(row) {
            *o += *w as f64 * u[r] as f64;
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

/// M v.
fn times(m: &[f32], rows: usize, v: &[f32]) -> Vec<f32> {
    let cols = m.len() / rows;
    m.chunks(cols)
        .map(|row| {
            row.iter()
                .zip(v)
                .map(|(w, x)| *w as f64 * *x as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

impl SpectralNorm {
    /// Random unit vectors u for every matrix weight of `discriminator`, and their v.
    pub fn new(discriminator: &Discriminator, rng: &mut StdRng) -> Self {
        let mut norm = SpectralNorm {
            us: Vec::new(),
            vs: Vec::new(),
        };
        for (rows, m) in matrices(discriminator) {
            let u = normalized((0..rows).map(|_| StandardNormal.sample(rng)).collect());
            norm.vs.push(normalized(transposed_times(&m, rows, &u)));
            norm.us.push(u);
        }
        norm
    }

    /// One power iteration on `discriminator`'s current weights.
    pub fn iterate(&mut self, discriminator: &Discriminator) {
        for (i, (rows, m)) in matrices(discriminator).into_iter().enumerate() {
            let v = normalized(transposed_times(&m, rows, &self.us[i]));
            self.us[i] = normalized(times(&m, rows, &v));
            self.vs[i] = v;
        }
    }

    /// `discriminator` with every matrix weight divided by its estimated largest singular
    /// value (differentiable in the weights).
    pub fn apply(&self, discriminator: &Discriminator) -> Discriminator {
        discriminator.clone().map(&mut Normalize {
            norm: self,
            next: 0,
        })
    }

    /// The vectors as checkpoint bytes, and back (checked against D's weights).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("vectors serialize")
    }

    pub fn from_bytes(bytes: &[u8], discriminator: &Discriminator) -> anyhow::Result<Self> {
        let norm: SpectralNorm = serde_json::from_slice(bytes)?;
        let shapes: Vec<(usize, usize)> = matrices(discriminator)
            .iter()
            .map(|(rows, m)| (*rows, m.len() / rows))
            .collect();
        let saved: Vec<(usize, usize)> = norm
            .us
            .iter()
            .zip(&norm.vs)
            .map(|(u, v)| (u.len(), v.len()))
            .collect();
        anyhow::ensure!(
            saved == shapes,
            "vectors of other weights ({saved:?} vs {shapes:?})"
        );
        Ok(norm)
    }
}

struct Normalize<'a> {
    norm: &'a SpectralNorm,
    next: usize,
}

impl ModuleMapper for Normalize<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D < 2 {
            return param;
        }
        let (u, v) = (&self.norm.us[self.next], &self.norm.vs[self.next]);
        self.next += 1;
        param.map(|w| {
            let device = w.device();
            let rows = w.dims()[0];
            let u = Tensor::<2>::from_data(TensorData::new(u.clone(), [1, rows]), &device);
            let v = Tensor::<2>::from_data(TensorData::new(v.clone(), [v.len(), 1]), &device);
            let sigma = u.matmul(w.clone().reshape([rows as i32, -1])).matmul(v);
            w / sigma.reshape([1; D])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GanOptions, ModelConfig};
    use crate::train::rng::{Stream, rng_for};
    use crate::train::testing::{Nudge, param_values};

    fn discriminator(model: &ModelConfig) -> Discriminator {
        let device = crate::train::training_device();
        model.build(&mut rng_for(5, Stream::Init, 0), &device).1
    }

    fn largest_singular_values(d: &Discriminator) -> Vec<f64> {
        matrices(d)
            .into_iter()
            .map(|(rows, m)| {
                let m = nalgebra::DMatrix::from_row_slice(rows, m.len() / rows, &m);
                m.map(|x| x as f64).singular_values().max()
            })
            .collect()
    }

    #[test]
    fn the_largest_singular_value_converges_to_one() {
        for model in [
            ModelConfig::default(),
            ModelConfig::Gan(GanOptions::default()),
            ModelConfig::DcganClassic(Default::default()),
        ] {
            let d = discriminator(&model);
            assert!(
                largest_singular_values(&d)
                    .iter()
                    .any(|s| (s - 1.0).abs() > 0.1)
            );
            let mut norm = SpectralNorm::new(&d, &mut rng_for(0, Stream::Init, 9));
            for _ in 0..300 {
                norm.iterate(&d);
            }
            for s in largest_singular_values(&norm.apply(&d)) {
                assert!((s - 1.0).abs() < 1e-2, "{}: {s}", model.arch());
            }
        }
    }

    #[test]
    fn gradients_reach_the_stored_weights_through_sigma() {
        // Loss = sum D_sn(x): the gradient of the first weight entry against central
        // differences with u and v held fixed.
        let model = ModelConfig::Gan(GanOptions {
            d_hidden: vec![6],
            dropout: 0.0,
            ..Default::default()
        });
        let d = discriminator(&model);
        let norm = SpectralNorm::new(&d, &mut rng_for(0, Stream::Init, 9));
        let device = crate::train::training_device();
        let x = Tensor::<4>::ones([2, 1, 28, 28], &device).mul_scalar(0.3);
        let loss = |d: &Discriminator| norm.apply(d).forward(x.clone(), None, None).logits.sum();
        let grads = loss(&d).backward();
        let at = |h: f32| loss(&d.clone().map(&mut Nudge::new(0, h))).into_scalar::<f32>() as f64;
        let numeric = (at(1e-2) - at(-1e-2)) / 2e-2;
        let analytic = param_values(&d, Some(&grads))[0][0] as f64;
        assert!(
            (analytic - numeric).abs() < 0.02 * numeric.abs().max(1e-3),
            "{analytic} vs {numeric}"
        );
    }

    #[test]
    fn vectors_round_trip_and_refuse_other_weights() {
        let d = discriminator(&ModelConfig::default());
        let norm = SpectralNorm::new(&d, &mut rng_for(0, Stream::Init, 9));
        assert_eq!(
            SpectralNorm::from_bytes(&norm.to_bytes(), &d).unwrap(),
            norm
        );
        let other = discriminator(&ModelConfig::Gan(Default::default()));
        assert!(SpectralNorm::from_bytes(&norm.to_bytes(), &other).is_err());
    }
}
