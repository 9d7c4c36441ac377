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
//!
//! The vectors live on the training device and the iteration is tensor operations, as in
//! PyTorch: on a GPU, reading the weights back to the host every step would wait for
//! everything queued (each step would start with the GPU idle, and steps could not queue
//! behind each other, `GANRUNNER_READ_EVERY`).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::model::Discriminator;

/// The power-iteration vectors of every normalized weight, in D's visiting order, as rows:
/// u `[1, rows]`, v `[1, cols]` (constants: on D's device, without autodiff).
#[derive(Debug, Clone)]
pub struct SpectralNorm {
    us: Vec<Tensor<2>>,
    vs: Vec<Tensor<2>>,
}

/// The vectors as a checkpoint holds them.
#[derive(Serialize, Deserialize)]
struct Saved {
    us: Vec<Vec<f32>>,
    vs: Vec<Vec<f32>>,
}

/// D's weights of rank 2 or more, as constant `[rows, cols]` matrices.
struct Matrices(Vec<Tensor<2>>);

impl ModuleVisitor for Matrices {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D >= 2 {
            // A constant, without autodiff (`detach` would keep a parameter's require-grad).
            let w = param.val().inner();
            let rows = w.dims()[0];
            self.0.push(w.reshape([rows as i32, -1]));
        }
    }
}

fn matrices(discriminator: &Discriminator) -> Vec<Tensor<2>> {
    let mut found = Matrices(Vec::new());
    discriminator.visit(&mut found);
    found.0
}

/// `x` / max(|x|, 1e-12), PyTorch's `normalize`.
fn normalized(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum().sqrt().clamp_min(1e-12);
    x / norm.reshape([1, 1])
}

/// A host vector as a `[1, len]` row on `device`.
fn row(values: Vec<f32>, device: &Device) -> Tensor<2> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [1, len]), device)
}

impl SpectralNorm {
    /// Random unit vectors u for every matrix weight of `discriminator`, and their v.
    pub fn new(discriminator: &Discriminator, rng: &mut StdRng) -> Self {
        let (mut us, mut vs) = (Vec::new(), Vec::new());
        for m in matrices(discriminator) {
            let rows = m.dims()[0];
            let u = row(
                (0..rows).map(|_| StandardNormal.sample(rng)).collect(),
                &m.device(),
            );
            let u = normalized(u);
            vs.push(normalized(u.clone().matmul(m)));
            us.push(u);
        }
        SpectralNorm { us, vs }
    }

    /// One power iteration on `discriminator`'s current weights.
    pub fn iterate(&mut self, discriminator: &Discriminator) {
        for ((m, u), v) in matrices(discriminator)
            .into_iter()
            .zip(&mut self.us)
            .zip(&mut self.vs)
        {
            *v = normalized(u.clone().matmul(m.clone()));
            *u = normalized(v.clone().matmul(m.transpose()));
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
        let host = |rows: &[Tensor<2>]| -> Vec<Vec<f32>> {
            rows.iter()
                .map(|r| r.clone().into_data().try_to_vec().expect("f32 vectors"))
                .collect()
        };
        let saved = Saved {
            us: host(&self.us),
            vs: host(&self.vs),
        };
        serde_json::to_vec(&saved).expect("vectors serialize")
    }

    pub fn from_bytes(bytes: &[u8], discriminator: &Discriminator) -> anyhow::Result<Self> {
        let saved: Saved = serde_json::from_slice(bytes)?;
        let weights = matrices(discriminator);
        let shapes: Vec<(usize, usize)> =
            weights.iter().map(|m| (m.dims()[0], m.dims()[1])).collect();
        let lengths: Vec<(usize, usize)> = saved
            .us
            .iter()
            .zip(&saved.vs)
            .map(|(u, v)| (u.len(), v.len()))
            .collect();
        anyhow::ensure!(
            lengths == shapes,
            "vectors of other weights ({lengths:?} vs {shapes:?})"
        );
        let device = weights.first().map(|m| m.device()).unwrap_or_default();
        let rows = |vectors: Vec<Vec<f32>>| -> Vec<Tensor<2>> {
            vectors.into_iter().map(|x| row(x, &device)).collect()
        };
        Ok(SpectralNorm {
            us: rows(saved.us),
            vs: rows(saved.vs),
        })
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
            let rows = w.dims()[0];
            let sigma = (u.clone().matmul(w.clone().reshape([rows as i32, -1])))
                .matmul(v.clone().transpose());
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
            .map(|m| {
                let [rows, cols] = m.dims();
                let values = m.into_data().try_to_vec::<f32>().unwrap();
                let m = nalgebra::DMatrix::from_row_slice(rows, cols, &values);
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

    /// The vectors as host values: (us, vs).
    fn host(norm: &SpectralNorm) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let saved: Saved = serde_json::from_slice(&norm.to_bytes()).unwrap();
        (saved.us, saved.vs)
    }

    #[test]
    fn each_iteration_is_the_power_iteration_computed_in_f64() {
        fn unit(x: Vec<f64>) -> Vec<f64> {
            let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            x.into_iter().map(|v| v / norm).collect()
        }
        for model in [
            ModelConfig::default(),
            ModelConfig::Gan(GanOptions::default()),
            ModelConfig::DcganClassic(Default::default()),
        ] {
            let d = discriminator(&model);
            let mut norm = SpectralNorm::new(&d, &mut rng_for(0, Stream::Init, 9));
            let (us, _) = host(&norm);
            norm.iterate(&d);
            let (next_us, next_vs) = host(&norm);
            for (i, m) in matrices(&d).into_iter().enumerate() {
                let [rows, cols] = m.dims();
                let m: Vec<f64> = m.into_data().iter::<f32>().map(f64::from).collect();
                let u: Vec<f64> = us[i].iter().map(|&x| x as f64).collect();
                let v = unit(
                    (0..cols)
                        .map(|c| (0..rows).map(|r| m[r * cols + c] * u[r]).sum())
                        .collect(),
                );
                let u = unit(
                    (0..rows)
                        .map(|r| (0..cols).map(|c| m[r * cols + c] * v[c]).sum())
                        .collect(),
                );
                let worst = |ours: &[f32], exact: &[f64]| {
                    ours.iter()
                        .zip(exact)
                        .map(|(a, b)| (*a as f64 - b).abs())
                        .fold(0.0, f64::max)
                };
                let (du, dv) = (worst(&next_us[i], &u), worst(&next_vs[i], &v));
                assert!(
                    du < 1e-5 && dv < 1e-5,
                    "{} weight {i}: {du:e} {dv:e}",
                    model.arch()
                );
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
        let bytes = norm.to_bytes();
        assert_eq!(
            SpectralNorm::from_bytes(&bytes, &d).unwrap().to_bytes(),
            bytes
        );
        let other = discriminator(&ModelConfig::Gan(Default::default()));
        assert!(SpectralNorm::from_bytes(&norm.to_bytes(), &other).is_err());
    }
}
