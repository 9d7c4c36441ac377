//! The three model families, built at run time from their config values.
//!
//! - `gan`: the report's vanilla MLP GAN ([`mlp`]);
//! - `dcgan`: the report's DCGAN ([`dcgan`]), eps = 0.8 quirk by default;
//! - `dcgan-classic`: the Radford et al. form the report discusses ([`classic`]).
//!
//! Every discriminator returns logits; the trainer applies BCE-with-logits, which equals the
//! report's `Sigmoid` + `BCELoss` and is numerically safer.

pub mod classic;
pub mod conditional;
pub mod conv;
pub mod dcgan;
pub mod gpu_ops;
pub mod ids;
pub mod init;
pub mod kernels;
pub mod mlp;
pub mod uploads;

use burn::prelude::*;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

pub use conditional::{CLASSES, Conditioning, Verdict};

fn default_latent() -> usize {
    100
}

/// `[model]` options of the vanilla GAN; defaults are exactly the report's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GanOptions {
    pub latent_dim: usize,
    pub g_hidden: Vec<usize>,
    pub d_hidden: Vec<usize>,
    pub dropout: f64,
    pub leaky_slope: f64,
    /// Keep G's dropout on when drawing samples. The report sampled during training (dropout
    /// on), and this G uses dropout as a noise source: turning it off collapses diversity.
    pub sample_dropout: bool,
    /// Spectral normalization of D's weights (see `train::spectral`).
    pub spectral_norm: bool,
    /// How class labels enter G and D ([`conditional`]).
    pub conditional: Conditioning,
}

impl Default for GanOptions {
    fn default() -> Self {
        GanOptions {
            latent_dim: default_latent(),
            g_hidden: vec![32, 64, 128],
            d_hidden: vec![128, 64, 32],
            dropout: 0.3,
            leaky_slope: 0.01,
            sample_dropout: true,
            spectral_norm: false,
            conditional: Conditioning::None,
        }
    }
}

/// `[model]` options of the report's DCGAN. The defaults reproduce the report, including its
/// `BatchNorm2d(C, 0.8)` (eps = 0.8, momentum 0.1); the intended setting is
/// `bn_eps = 1e-5, bn_momentum = 0.2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DcganOptions {
    pub latent_dim: usize,
    pub g_channels: [usize; 2],
    pub d_channels: Vec<usize>,
    pub d_dropout: f64,
    pub bn_eps: f64,
    pub bn_momentum: f64,
    /// Spectral normalization of D's weights (see `train::spectral`).
    pub spectral_norm: bool,
    /// How class labels enter G and D ([`conditional`]).
    pub conditional: Conditioning,
}

impl Default for DcganOptions {
    fn default() -> Self {
        DcganOptions {
            latent_dim: default_latent(),
            g_channels: [128, 64],
            d_channels: vec![16, 32, 64, 128],
            d_dropout: 0.25,
            bn_eps: 0.8,
            bn_momentum: 0.1,
            spectral_norm: false,
            conditional: Conditioning::None,
        }
    }
}

/// `[model]` options of the Radford et al. DCGAN (three widths each, 32x32 images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassicOptions {
    pub latent_dim: usize,
    pub g_channels: [usize; 3],
    pub d_channels: [usize; 3],
    /// Spectral normalization of D's weights (see `train::spectral`).
    pub spectral_norm: bool,
    /// How class labels enter G and D ([`conditional`]).
    pub conditional: Conditioning,
}

impl Default for ClassicOptions {
    fn default() -> Self {
        ClassicOptions {
            latent_dim: default_latent(),
            g_channels: [256, 128, 64],
            d_channels: [64, 128, 256],
            spectral_norm: false,
            conditional: Conditioning::None,
        }
    }
}

/// The `[model]` table: `arch` picks the family, the other keys are that family's options.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum ModelConfig {
    Gan(GanOptions),
    Dcgan(DcganOptions),
    DcganClassic(ClassicOptions),
}

/// `arch` defaults to the DCGAN, as the whole table does: a `[model]` table that changes one
/// of the DCGAN's options need not name it (serde's tagged enums take no default tag).
impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "arch", rename_all = "kebab-case")]
        enum Tagged {
            Gan(GanOptions),
            Dcgan(DcganOptions),
            DcganClassic(ClassicOptions),
        }
        let mut table = toml::Table::deserialize(deserializer)?;
        table
            .entry("arch")
            .or_insert_with(|| ModelConfig::default().arch().into());
        Ok(match Tagged::deserialize(table) {
            Ok(Tagged::Gan(o)) => ModelConfig::Gan(o),
            Ok(Tagged::Dcgan(o)) => ModelConfig::Dcgan(o),
            Ok(Tagged::DcganClassic(o)) => ModelConfig::DcganClassic(o),
            Err(e) => return Err(serde::de::Error::custom(e.message().trim_end())),
        })
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Dcgan(DcganOptions::default())
    }
}

impl ModelConfig {
    /// Each family with its defaults (the report's).
    pub fn families() -> [ModelConfig; 3] {
        [
            ModelConfig::Gan(GanOptions::default()),
            ModelConfig::Dcgan(DcganOptions::default()),
            ModelConfig::DcganClassic(ClassicOptions::default()),
        ]
    }

    pub fn arch(&self) -> &'static str {
        match self {
            ModelConfig::Gan(_) => "gan",
            ModelConfig::Dcgan(_) => "dcgan",
            ModelConfig::DcganClassic(_) => "dcgan-classic",
        }
    }

    pub fn latent_dim(&self) -> usize {
        match self {
            ModelConfig::Gan(o) => o.latent_dim,
            ModelConfig::Dcgan(o) => o.latent_dim,
            ModelConfig::DcganClassic(o) => o.latent_dim,
        }
    }

    /// Side of the square images the model works on (the data is resized to it at load time).
    pub fn image_side(&self) -> usize {
        match self {
            ModelConfig::Gan(_) => 28,
            ModelConfig::Dcgan(_) | ModelConfig::DcganClassic(_) => dcgan::SIDE,
        }
    }

    /// Whether D's weights are spectrally normalized.
    pub fn spectral_norm(&self) -> bool {
        match self {
            ModelConfig::Gan(o) => o.spectral_norm,
            ModelConfig::Dcgan(o) => o.spectral_norm,
            ModelConfig::DcganClassic(o) => o.spectral_norm,
        }
    }

    /// How class labels enter G and D.
    pub fn conditional(&self) -> Conditioning {
        match self {
            ModelConfig::Gan(o) => o.conditional,
            ModelConfig::Dcgan(o) => o.conditional,
            ModelConfig::DcganClassic(o) => o.conditional,
        }
    }

    /// Whether samples are drawn with G's dropout on.
    pub fn sample_dropout(&self) -> bool {
        matches!(self, ModelConfig::Gan(o) if o.sample_dropout)
    }

    /// Impossible values, as (key, message) pairs; empty when the config is valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.latent_dim() == 0 {
            out.push(("latent_dim", "must be at least 1, got 0".to_string()));
        }
        let mut positive = |key: &'static str, values: &[usize]| {
            if values.is_empty() || values.contains(&0) {
                out.push((
                    key,
                    format!("must be a non-empty list of positive sizes, got {values:?}"),
                ));
            }
        };
        match self {
            ModelConfig::Gan(o) => {
                positive("g_hidden", &o.g_hidden);
                positive("d_hidden", &o.d_hidden);
            }
            ModelConfig::Dcgan(o) => {
                positive("g_channels", &o.g_channels);
                positive("d_channels", &o.d_channels);
                if o.d_channels.len() > 5 {
                    out.push((
                        "d_channels",
                        format!(
                            "at most 5 blocks fit a 32x32 image, got {}",
                            o.d_channels.len()
                        ),
                    ));
                }
            }
            ModelConfig::DcganClassic(o) => {
                positive("g_channels", &o.g_channels);
                positive("d_channels", &o.d_channels);
            }
        }
        let mut probability = |key: &'static str, p: f64| {
            if !(0.0..1.0).contains(&p) {
                out.push((key, format!("must be in [0, 1), got {p}")));
            }
        };
        match self {
            ModelConfig::Gan(o) => {
                probability("dropout", o.dropout);
                if !(o.leaky_slope.is_finite() && o.leaky_slope >= 0.0) {
                    out.push((
                        "leaky_slope",
                        format!("must be >= 0, got {}", o.leaky_slope),
                    ));
                }
            }
            ModelConfig::Dcgan(o) => {
                probability("d_dropout", o.d_dropout);
                if let Err(msg) = positive_f32(o.bn_eps) {
                    out.push(("bn_eps", msg));
                }
                if !(0.0..=1.0).contains(&o.bn_momentum) {
                    out.push((
                        "bn_momentum",
                        format!("must be in [0, 1], got {}", o.bn_momentum),
                    ));
                }
            }
            ModelConfig::DcganClassic(_) => {}
        }
        out
    }

    /// Analytic multiply-add FLOPs (2 per MAC) of one forward pass of G and of D on a batch:
    /// linear and convolution layers only (activations, norms and resizes are a rounding error).
    pub fn forward_flops(&self, batch: usize) -> (u64, u64) {
        let linear = |i: usize, o: usize| 2 * i * o;
        // A conv producing an `out_side` x `out_side` map, or a transposed conv reading an
        // `in_side` map: 2 * Cin * Cout * k * k per position.
        let conv = |ci: usize, co: usize, k: usize, side: usize| 2 * ci * co * k * k * side * side;
        let g_inputs = self.latent_dim() + self.conditional().generator_inputs();
        let d_inputs = self.conditional().discriminator_inputs();
        let (g, d) = match self {
            ModelConfig::Gan(o) => {
                let chain =
                    |sizes: Vec<usize>| sizes.windows(2).map(|w| linear(w[0], w[1])).sum::<usize>();
                let g = chain([vec![g_inputs], o.g_hidden.clone(), vec![784]].concat());
                let d = chain([vec![784 + d_inputs], o.d_hidden.clone(), vec![1]].concat());
                (g, d)
            }
            ModelConfig::Dcgan(o) => {
                let [c1, c2] = o.g_channels;
                let s = dcgan::SIDE;
                let g = linear(g_inputs, c1 * (s / 4) * (s / 4))
                    + conv(c1, c1, 3, s / 2)
                    + conv(c1, c2, 3, s)
                    + conv(c2, 1, 3, s);
                let (mut d, mut c_in, mut side) = (0, 1 + d_inputs, s);
                for &c in &o.d_channels {
                    side /= 2;
                    d += conv(c_in, c, 3, side);
                    c_in = c;
                }
                (g, d + linear(c_in * side * side, 1))
            }
            ModelConfig::DcganClassic(o) => {
                let [g1, g2, g3] = o.g_channels;
                // ConvT FLOPs counted on the input side: 1, 4, 8, 16.
                let g = conv(g_inputs, g1, 4, 1)
                    + conv(g1, g2, 4, 4)
                    + conv(g2, g3, 4, 8)
                    + conv(g3, 1, 4, 16);
                let [d1, d2, d3] = o.d_channels;
                let d = conv(1 + d_inputs, d1, 4, 16)
                    + conv(d1, d2, 4, 8)
                    + conv(d2, d3, 4, 4)
                    + conv(d3, 1, 4, 1);
                (g, d)
            }
        };
        ((g * batch) as u64, (d * batch) as u64)
    }

    /// Analytic FLOPs of one training step with `d_steps` D steps: backward counted as twice
    /// the forward. G step: G and D forward + backward (3G + 3D); each D step: D forward +
    /// backward on a real and a fake batch (6D), plus a fresh G forward after the first.
    pub fn step_flops(&self, batch: usize, d_steps: usize) -> u64 {
        let (g, d) = self.forward_flops(batch);
        let d_steps = d_steps.max(1) as u64;
        3 * g + 3 * d + d_steps * 6 * d + (d_steps - 1) * g
    }

    /// Builds G and D with the report's initialisation, drawn from `rng`, their parameters
    /// numbered by [`ids`].
    pub fn build(&self, rng: &mut StdRng, device: &Device) -> (Generator, Discriminator) {
        let (generator, discriminator) = match self {
            ModelConfig::Gan(o) => (
                Generator::Gan(mlp::MlpGenerator::new(rng, o, device)),
                Discriminator::Gan(mlp::MlpDiscriminator::new(rng, o, device)),
            ),
            ModelConfig::Dcgan(o) => (
                Generator::Dcgan(dcgan::DcganGenerator::new(rng, o, device)),
                Discriminator::Dcgan(dcgan::DcganDiscriminator::new(rng, o, device)),
            ),
            ModelConfig::DcganClassic(o) => (
                Generator::Classic(classic::ClassicGenerator::new(rng, o, device)),
                Discriminator::Classic(classic::ClassicDiscriminator::new(rng, o, device)),
            ),
        };
        (
            ids::numbered(generator, ids::GENERATOR_FIRST, Generator::batch_norms_mut),
            ids::numbered(
                discriminator,
                ids::DISCRIMINATOR_FIRST,
                Discriminator::batch_norms_mut,
            ),
        )
    }
}

/// A generator: latent `[B, latent_dim]` (and one-hot labels `[B, CLASSES]` when
/// conditional) -> images `[B, 1, side, side]` in [-1, 1].
#[derive(Module, Debug)]
// One generator per run (or two with the average of G): its variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Generator {
    Gan(mlp::MlpGenerator),
    Dcgan(dcgan::DcganGenerator),
    Classic(classic::ClassicGenerator),
}

impl Generator {
    /// `labels` must be given exactly when the model is conditional; `dropout_rng` draws the
    /// dropout masks, `None` turns dropout off.
    pub fn forward(
        &self,
        z: Tensor<2>,
        labels: Option<&Tensor<2>>,
        dropout_rng: Option<&mut StdRng>,
    ) -> Tensor<4> {
        let z = conditional::with_labels(z, labels);
        match self {
            Generator::Gan(g) => g.forward(z, dropout_rng),
            Generator::Dcgan(g) => g.forward(z),
            Generator::Classic(g) => g.forward(z),
        }
    }

    /// G's BatchNorm layers, input side first (none in the vanilla GAN).
    pub fn batch_norms_mut(&mut self) -> Vec<&mut burn::nn::BatchNorm> {
        match self {
            Generator::Gan(_) => Vec::new(),
            Generator::Dcgan(g) => g.batch_norms_mut(),
            Generator::Classic(g) => g.batch_norms_mut(),
        }
    }
}

/// A discriminator: images `[B, 1, side, side]` (and one-hot labels when conditional) ->
/// logits `[B, 1]` (and class logits with `acgan`).
#[derive(Module, Debug)]
pub enum Discriminator {
    Gan(mlp::MlpDiscriminator),
    Dcgan(dcgan::DcganDiscriminator),
    Classic(classic::ClassicDiscriminator),
}

impl Discriminator {
    /// D's BatchNorm layers, input side first (none in the vanilla GAN).
    pub fn batch_norms_mut(&mut self) -> Vec<&mut burn::nn::BatchNorm> {
        match self {
            Discriminator::Gan(_) => Vec::new(),
            Discriminator::Dcgan(d) => d.batch_norms_mut(),
            Discriminator::Classic(d) => d.batch_norms_mut(),
        }
    }

    /// `labels` must be given exactly when the model is conditional; `dropout_rng` draws the
    /// dropout masks, `None` turns dropout off.
    pub fn forward(
        &self,
        images: Tensor<4>,
        labels: Option<&Tensor<2>>,
        dropout_rng: Option<&mut StdRng>,
    ) -> Verdict {
        match self {
            Discriminator::Gan(d) => d.forward(images, labels, dropout_rng),
            Discriminator::Dcgan(d) => d.forward(images, labels, dropout_rng),
            Discriminator::Classic(d) => d.forward(images, labels),
        }
    }
}

/// Why `value` is no positive number training can use, if it is not: training computes in
/// 32-bit floats, where 1e-300 is 0 (a learning rate that learns nothing) and 1e39 is infinite.
pub fn positive_f32(value: f64) -> Result<(), String> {
    if value.is_infinite() {
        Err(format!("must be finite, got {value}"))
    } else if value.is_nan() || value <= 0.0 {
        Err(format!("must be > 0, got {value}"))
    } else if !(value as f32).is_normal() {
        Err(format!(
            "must be between {:e} and {:e} (a 32-bit float), got {value:e}",
            f32::MIN_POSITIVE,
            f32::MAX
        ))
    } else {
        Ok(())
    }
}
