//! `runner export`: a trained generator's weights as a safetensors file whose tensor names
//! are those of the report's PyTorch modules (`MlpG`, `DcganG`, `ClassicG` in
//! `bench/pytorch_reference.py`), so that PyTorch's `load_state_dict` takes them as they are.
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

use crate::generate::{Loaded, load_generator};
use crate::model::ModelConfig;

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

/// The PyTorch module of `model`'s generator and its name for the parameter at burn `path`,
/// or None for a path the table does not know.
fn torch_name(model: &ModelConfig, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    match (model, parts.as_slice()) {
        (ModelConfig::Gan(_), ["Gan", "mlp", "layers", i, name]) => {
            Some(format!("fc.{i}.{}", param(name)))
        }
        (ModelConfig::Dcgan(_), ["Dcgan", module, name]) => {
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
        // Block i is net.3i (the transposed convolution) and net.3i+1 (its BatchNorm); the
        // last convolution follows the last block's ReLU.
        (ModelConfig::DcganClassic(_), ["Classic", "blocks", i, layer, name]) => {
            let i: usize = i.parse().ok()?;
            let at = match *layer {
                "conv" => 3 * i,
                "bn" => 3 * i + 1,
                _ => return None,
            };
            Some(format!("net.{at}.{}", param(name)))
        }
        (ModelConfig::DcganClassic(opts), ["Classic", "conv_out", name]) => {
            Some(format!("net.{}.{}", 3 * opts.g_channels.len(), param(name)))
        }
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

fn torch_module(model: &ModelConfig) -> &'static str {
    match model {
        ModelConfig::Gan(_) => "MlpG",
        ModelConfig::Dcgan(_) => "DcganG",
        ModelConfig::DcganClassic(_) => "ClassicG",
    }
}

/// The generator's tensors under PyTorch's names, as PyTorch lays them out.
fn torch_weights(loaded: &Loaded) -> Result<BTreeMap<String, Weight>> {
    let mut collector = Collector::default();
    loaded.generator.visit(&mut collector);
    let model = &loaded.config.model;
    let mut out = BTreeMap::new();
    for (path, weight) in collector.weights {
        let Some(name) = torch_name(model, &path) else {
            bail!(
                "internal: no PyTorch name for {} parameter `{path}`",
                model.arch()
            );
        };
        out.insert(name, weight);
    }
    Ok(out)
}

/// Writes the generator of `checkpoint` (its moving average of weights when the run kept one,
/// unless `raw`) to `out` as safetensors, with the run's config and step as metadata.
pub fn export(checkpoint: &Path, raw: bool, out: &Path) -> Result<Exported> {
    anyhow::ensure!(
        out.extension().is_some_and(|e| e == "safetensors"),
        "{}: the weights are written as safetensors; use a name ending in .safetensors",
        out.display()
    );
    let loaded = load_generator(checkpoint, raw)?;
    let weights = torch_weights(&loaded)?;
    anyhow::ensure!(
        weights
            .values()
            .all(|w| w.values.iter().all(|v| v.is_finite())),
        "{}: the generator has NaN or infinite weights; nothing written",
        checkpoint.display()
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
    let model = &loaded.config.model;
    let metadata = HashMap::from([
        // What Hugging Face's loaders expect of PyTorch weights.
        ("format".to_string(), "pt".to_string()),
        ("ganrunner.module".into(), torch_module(model).into()),
        ("ganrunner.arch".into(), model.arch().into()),
        (
            "ganrunner.latent_dim".into(),
            model.latent_dim().to_string(),
        ),
        // A conditional G takes z followed by the one-hot label (10 more inputs).
        (
            "ganrunner.label_inputs".into(),
            model.conditional().generator_inputs().to_string(),
        ),
        // The report's vanilla G drew its samples with dropout on (`module.train()`).
        (
            "ganrunner.sample_dropout".into(),
            model.sample_dropout().to_string(),
        ),
        ("ganrunner.step".into(), loaded.step.to_string()),
        ("ganrunner.averaged".into(), loaded.averaged.to_string()),
        (
            "ganrunner.config".into(),
            serde_json::to_string(&loaded.config).context("the run's config as JSON")?,
        ),
    ]);
    let tensors = views.len();
    let file = safetensors::serialize(views, Some(metadata))?;
    crate::fsutil::write_atomic(out, &file)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(Exported {
        module: torch_module(model),
        tensors,
        step: loaded.step,
        averaged: loaded.averaged,
    })
}
