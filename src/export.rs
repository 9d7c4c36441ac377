//! `runner export`: a trained generator's (or discriminator's) weights as a safetensors file
//! whose tensor names are those of the report's PyTorch modules (`MlpG`, `DcganG`, `ClassicG`
//! and `MlpD`, `DcganD`, `ClassicD` in `bench/pytorch_reference.py`), so that PyTorch's
//! `load_state_dict` takes them as they are.
//!
//! burn names a parameter by its module path (`Dcgan.conv1.weight`); each arch has a table
//! from those paths to PyTorch's (`conv_blocks.2.weight`), and a parameter without one is an
//! error rather than a file missing it. Linear weights are transposed (burn stores them
//! in x out, PyTorch out x in); BatchNorm's gamma and beta become `weight` and `bias`, with the
//! `num_batches_tracked` PyTorch's BatchNorm also keeps (0: momentum is fixed, so unused).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use safetensors::{Dtype, tensor::TensorView};

use crate::generate::{load_generator, load_latest};
use crate::model::{Discriminator, Generator, ModelConfig};
use crate::spec::RunConfig;
use crate::train::checkpoint::{self, CheckpointMeta};
use crate::train::rng::{Stream, rng_for};

/// Which of a run's two networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Net {
    /// The generator.
    #[default]
    G,
    /// The discriminator.
    D,
}

impl Net {
    pub fn noun(self) -> &'static str {
        match self {
            Net::G => "generator",
            Net::D => "discriminator",
        }
    }
}

/// A network in memory, to be written.
#[derive(Clone, Copy)]
pub enum Network<'a> {
    G(&'a Generator),
    D(&'a Discriminator),
}

impl Network<'_> {
    fn net(self) -> Net {
        match self {
            Network::G(_) => Net::G,
            Network::D(_) => Net::D,
        }
    }
}

/// What [`export`] wrote.
pub struct Exported {
    /// The PyTorch module the names are those of.
    pub module: &'static str,
    pub tensors: usize,
    pub step: u64,
    /// Whether the weights are the moving average of G's (`train.g_ema`).
    pub averaged: bool,
}

/// One tensor on its way out: its shape and values, row-major.
struct Weight {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// Collects every float parameter under its burn path (`Dcgan.bn0.running_mean`), Linear
/// weights transposed to PyTorch's layout.
#[derive(Default)]
struct Collector {
    path: Vec<String>,
    /// The type of the module holding the field last entered (`Struct:Linear`).
    holder: Vec<String>,
    weights: BTreeMap<String, Weight>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.holder.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.holder.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let mut weight = Weight {
            shape: tensor.dims().to_vec(),
            values: tensor.into_data().try_to_vec::<f32>().expect("f32 weights"),
        };
        let linear = self.holder.last().is_some_and(|h| h == "Struct:Linear");
        if let (&[rows, cols], true) = (weight.shape.as_slice(), linear) {
            let mut transposed = vec![0.0; weight.values.len()];
            transpose::transpose(&weight.values, &mut transposed, cols, rows);
            weight = Weight {
                shape: vec![cols, rows],
                values: transposed,
            };
        }
        self.weights.insert(self.path.join("."), weight);
    }
}

/// PyTorch's name, in the report's module for `net` of `model`, for the parameter at burn
/// `path`, or None for a path the table does not know.
fn torch_name(model: &ModelConfig, net: Net, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    match (model, net, parts.as_slice()) {
        (ModelConfig::Gan(_), _, ["Gan", "mlp", "layers", i, name]) => {
            Some(format!("fc.{i}.{}", param(name)))
        }
        (ModelConfig::Dcgan(_), Net::G, ["Dcgan", module, name]) => {
            let at = match *module {
                "project" => "l1.0",
                "bn0" => "conv_blocks.0",
                "conv1" => "conv_blocks.2",
                "bn1" => "conv_blocks.3",
                "conv2" => "conv_blocks.6",
                "bn2" => "conv_blocks.7",
                "conv_out" => "conv_blocks.9",
                _ => return None,
            };
            Some(format!("{at}.{}", param(name)))
        }
        // Block i is model.4i-1 (its convolution; 0 for the first, which has no BatchNorm)
        // followed by LeakyReLU, Dropout2d and model.4i+2 (its BatchNorm).
        (ModelConfig::Dcgan(_), Net::D, ["Dcgan", "blocks", i, layer, name]) => {
            let i: usize = i.parse().ok()?;
            let at = match *layer {
                "conv" => (4 * i).saturating_sub(1),
                "bn" => 4 * i + 2,
                _ => return None,
            };
            Some(format!("model.{at}.{}", param(name)))
        }
        (ModelConfig::Dcgan(_), Net::D, ["Dcgan", "head", name]) => {
            Some(format!("adv_layer.0.{name}"))
        }
        // Block i is net.3i (the transposed convolution) and net.3i+1 (its BatchNorm); the
        // last convolution follows the last block's ReLU.
        (ModelConfig::DcganClassic(_), Net::G, ["Classic", "blocks", i, layer, name]) => {
            let i: usize = i.parse().ok()?;
            let at = match *layer {
                "conv" => 3 * i,
                "bn" => 3 * i + 1,
                _ => return None,
            };
            Some(format!("net.{at}.{}", param(name)))
        }
        (ModelConfig::DcganClassic(opts), Net::G, ["Classic", "conv_out", name]) => {
            Some(format!("net.{}.{}", 3 * opts.g_channels.len(), param(name)))
        }
        // Block i is net.3i-1 (its convolution; 0 for the first, which has no BatchNorm) and
        // net.3i (its BatchNorm), each followed by a LeakyReLU.
        (ModelConfig::DcganClassic(_), Net::D, ["Classic", "blocks", i, layer, name]) => {
            let i: usize = i.parse().ok()?;
            let at = match *layer {
                "conv" => (3 * i).saturating_sub(1),
                "bn" => 3 * i,
                _ => return None,
            };
            Some(format!("net.{at}.{}", param(name)))
        }
        (ModelConfig::DcganClassic(opts), Net::D, ["Classic", "conv_out", name]) => Some(format!(
            "net.{}.{}",
            3 * opts.d_channels.len() - 1,
            param(name)
        )),
        _ => None,
    }
}

/// BatchNorm's affine parameters under PyTorch's names; the other names are the same.
fn param(name: &str) -> &str {
    match name {
        "gamma" => "weight",
        "beta" => "bias",
        other => other,
    }
}

fn torch_module(model: &ModelConfig, net: Net) -> &'static str {
    match (model, net) {
        (ModelConfig::Gan(_), Net::G) => "MlpG",
        (ModelConfig::Gan(_), Net::D) => "MlpD",
        (ModelConfig::Dcgan(_), Net::G) => "DcganG",
        (ModelConfig::Dcgan(_), Net::D) => "DcganD",
        (ModelConfig::DcganClassic(_), Net::G) => "ClassicG",
        (ModelConfig::DcganClassic(_), Net::D) => "ClassicD",
    }
}

/// The network's tensors under PyTorch's names, as PyTorch lays them out.
fn torch_weights(network: Network, model: &ModelConfig) -> Result<BTreeMap<String, Weight>> {
    let mut collector = Collector::default();
    match network {
        Network::G(g) => g.visit(&mut collector),
        Network::D(d) => d.visit(&mut collector),
    }
    let net = network.net();
    let mut out = BTreeMap::new();
    for (path, weight) in collector.weights {
        let Some(name) = torch_name(model, net, &path) else {
            bail!(
                "internal: no PyTorch name for {} {} parameter `{path}`",
                model.arch(),
                net.noun()
            );
        };
        out.insert(name, weight);
    }
    Ok(out)
}

/// Writes `net` of `checkpoint` to `out` as safetensors, with the run's config and step as
/// metadata: the generator's moving average of weights when the run kept one, unless `raw`;
/// the discriminator as the losses saw it (spectrally normalized with `model.spectral_norm`).
pub fn export(checkpoint: &Path, net: Net, raw: bool, out: &Path) -> Result<Exported> {
    anyhow::ensure!(
        out.extension().is_some_and(|e| e == "safetensors"),
        "{}: the weights are written as safetensors; use a name ending in .safetensors",
        out.display()
    );
    crate::train::refuse_run_entry(out)?;
    match net {
        Net::G => {
            let loaded = load_generator(checkpoint, raw)?;
            let g = Network::G(&loaded.generator);
            let trained = Trained {
                step: loaded.step,
                averaged: loaded.averaged,
                runner: loaded.runner.as_deref(),
            };
            write(g, &loaded.config, trained, out)
        }
        Net::D => {
            anyhow::ensure!(
                !raw,
                "--raw picks G's weights over their average; D has no average"
            );
            let (d, meta) = load_discriminator(checkpoint)?;
            let trained = Trained {
                step: meta.step,
                averaged: false,
                runner: meta.runner.as_deref(),
            };
            write(Network::D(&d), &meta.config, trained, out)
        }
    }
}

/// The discriminator of a checkpoint (or of a run directory's latest checkpoint) as its
/// losses saw it (spectrally normalized with `model.spectral_norm`), with the checkpoint's
/// record (the run's config, the step).
pub fn load_discriminator(checkpoint: &Path) -> Result<(Discriminator, CheckpointMeta)> {
    load_latest(checkpoint, discriminator_in)
}

/// `file` (safetensors bytes) with its header's keys in sorted order, at the same length.
/// safetensors writes the metadata in a `HashMap`'s order, which changes from one call to the
/// next: the same weights exported twice made two files, and a checksum or a store of model
/// files saw a new one each time.
fn with_sorted_header(mut file: Vec<u8>) -> Result<Vec<u8>> {
    // Sorted here rather than left to serde_json's map, which keeps keys sorted only while no
    // crate in the build turns on its `preserve_order` feature (then it keeps the read order).
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let map: BTreeMap<_, _> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(map.into_iter().collect())
            }
            other => other,
        }
    }
    let len_bytes: [u8; 8] = file
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .context("safetensors wrote no header")?;
    let len = usize::try_from(u64::from_le_bytes(len_bytes))?;
    let header = file
        .get(8..8 + len)
        .context("safetensors wrote a short header")?;
    let json = serde_json::to_vec(&sorted(serde_json::from_slice(header)?))?;
    // The same keys and values in another order: as long as the original, which safetensors
    // padded with spaces so that the tensors' data stays aligned.
    if json.len() > len {
        bail!("the sorted safetensors header is longer than safetensors' own");
    }
    file[8..8 + json.len()].copy_from_slice(&json);
    file[8 + json.len()..8 + len].fill(b' ');
    Ok(file)
}

fn discriminator_in(dir: &Path) -> Result<(Discriminator, CheckpointMeta)> {
    let opened = checkpoint::Opened::open(dir)?;
    let config = opened.meta.config.clone();
    let device = crate::backend::device();
    let (_, template) =
        (config.model).build(&mut rng_for(config.train.seed, Stream::Init, 0), &device);
    let d = opened.discriminator(template)?;
    let d = if config.model.spectral_norm() {
        opened.spectral(&d)?.apply(&d)
    } else {
        d
    };
    Ok((d, opened.meta))
}

/// Where exported weights come from, for the file's metadata.
pub struct Trained<'a> {
    /// The checkpoint's step.
    pub step: u64,
    /// The weights are G's moving average.
    pub averaged: bool,
    /// The runner that wrote the checkpoint, when it recorded itself.
    pub runner: Option<&'a str>,
}

/// Writes `network` of a run with `config`, `trained` as it says, to `out` as safetensors.
pub fn write(
    network: Network,
    config: &RunConfig,
    trained: Trained,
    out: &Path,
) -> Result<Exported> {
    let (model, net) = (&config.model, network.net());
    anyhow::ensure!(
        net == Net::G || !model.conditional().has_class_head(),
        "the discriminator's class head (model.conditional = projection or acgan) has no \
         counterpart in the report's PyTorch modules; nothing written"
    );
    let weights = torch_weights(network, model)?;
    anyhow::ensure!(
        weights
            .values()
            .all(|w| w.values.iter().all(|v| v.is_finite())),
        "the {} has NaN or infinite weights; nothing written",
        net.noun()
    );
    let encoded: Vec<(&String, &Weight, Vec<u8>)> = weights
        .iter()
        .map(|(name, w)| {
            let bytes = w.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, w, bytes)
        })
        .collect();
    // PyTorch's BatchNorm also keeps a count of batches; every `running_mean` has one.
    let tracked: Vec<String> = weights
        .keys()
        .filter_map(|name| name.strip_suffix(".running_mean"))
        .map(|module| format!("{module}.num_batches_tracked"))
        .collect();
    let zero = 0i64.to_le_bytes();
    let mut views: Vec<(String, TensorView)> = Vec::new();
    for (name, weight, data) in &encoded {
        let view = TensorView::new(Dtype::F32, weight.shape.clone(), data)?;
        views.push(((*name).clone(), view));
    }
    for name in tracked {
        views.push((name, TensorView::new(Dtype::I64, vec![], &zero)?));
    }
    let (label_inputs, sample_dropout) = match net {
        Net::G => (
            model.conditional().generator_inputs(),
            model.sample_dropout(),
        ),
        Net::D => (model.conditional().discriminator_inputs(), false),
    };
    let Trained {
        step,
        averaged,
        runner,
    } = trained;
    let mut metadata = HashMap::from([
        // What Hugging Face's loaders expect of PyTorch weights.
        ("format".to_string(), "pt".to_string()),
        ("ganrunner.module".into(), torch_module(model, net).into()),
        ("ganrunner.net".into(), net.noun().into()),
        ("ganrunner.arch".into(), model.arch().into()),
        (
            "ganrunner.latent_dim".into(),
            model.latent_dim().to_string(),
        ),
        // A conditional G takes z followed by the one-hot label (10 more inputs); a `concat`
        // D, the label as 10 more inputs (MLP) or constant channels (conv) after the image.
        ("ganrunner.label_inputs".into(), label_inputs.to_string()),
        // The report's vanilla G drew its samples with dropout on (`module.train()`).
        (
            "ganrunner.sample_dropout".into(),
            sample_dropout.to_string(),
        ),
        ("ganrunner.step".into(), step.to_string()),
        ("ganrunner.averaged".into(), averaged.to_string()),
        (
            "ganrunner.config".into(),
            serde_json::to_string(config).context("the run's config as JSON")?,
        ),
    ]);
    if let Some(runner) = runner {
        metadata.insert("ganrunner.trained_by".into(), runner.into());
    }
    let tensors = views.len();
    let file = with_sorted_header(safetensors::serialize(views, Some(metadata))?)?;
    crate::fsutil::write_atomic(out, &file)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(Exported {
        module: torch_module(model, net),
        tensors,
        step,
        averaged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// safetensors bytes of two small tensors and ten metadata entries, the metadata in a
    /// fresh `HashMap` (whose order changes from one map to the next).
    fn serialized() -> Vec<u8> {
        let (a, b) = ([1f32, 2.0, 3.0], [4f32; 6]);
        let (a, b): (Vec<u8>, Vec<u8>) = (
            a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            b.iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        let views = vec![
            (
                "z.weight",
                TensorView::new(Dtype::F32, vec![3], &a).unwrap(),
            ),
            (
                "a.bias",
                TensorView::new(Dtype::F32, vec![2, 3], &b).unwrap(),
            ),
        ];
        let metadata = (0..10)
            .map(|i| (format!("key{i}"), format!("\"value\" {i}")))
            .collect();
        safetensors::serialize(views, Some(metadata)).unwrap()
    }

    #[test]
    fn the_same_weights_make_the_same_bytes() {
        let files: Vec<Vec<u8>> = (0..8)
            .map(|_| with_sorted_header(serialized()).unwrap())
            .collect();
        assert!(files.iter().all(|file| *file == files[0]));
        // Same length as safetensors' own, and what it wrote reads back unchanged.
        let original = serialized();
        assert_eq!(files[0].len(), original.len());
        let (read, theirs) = (
            safetensors::SafeTensors::read_metadata(&files[0])
                .unwrap()
                .1,
            safetensors::SafeTensors::read_metadata(&original)
                .unwrap()
                .1,
        );
        assert_eq!(read.metadata(), theirs.metadata());
        let tensors = safetensors::SafeTensors::deserialize(&files[0]).unwrap();
        assert_eq!(
            tensors.tensor("a.bias").unwrap().data(),
            &[0, 0, 128, 64].repeat(6)
        );
        assert_eq!(tensors.tensor("z.weight").unwrap().shape(), &[3]);
        // The header's keys in order: the metadata's and the tensors'.
        let len = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&files[0][8..8 + len]).unwrap();
        let at = |key: &str| header.find(&format!("\"{key}\"")).unwrap();
        assert!((0..9).all(|i| at(&format!("key{i}")) < at(&format!("key{}", i + 1))));
        assert!(at("__metadata__") < at("a.bias") && at("a.bias") < at("z.weight"));
    }
}
