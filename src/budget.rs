//! Up-front memory estimates, so that an absurd size (`latent_dim = 100000000`,
//! `generate --n 100000000`, `bench --batch 100000000`) is refused with a message naming the
//! key and the estimate instead of ending in an out-of-memory abort.
//!
//! The estimates are coarse on purpose (parameters with their gradients and Adam moments,
//! layer outputs kept for the backward pass, sample buffers): they only need to be within a
//! small factor, since what they catch is orders of magnitude too big.

use anyhow::{Result, bail};

use crate::model::{ClassicOptions, DcganOptions, GanOptions, ModelConfig};
use crate::spec::RunConfig;

const F32: f64 = 4.0;

/// Bytes of memory the system can still give, if known (`MemAvailable` on Linux).
pub fn available_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// A byte count for people: `3.0 TiB`.
pub fn human(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

/// (parameters, layer-output elements per image) of G and D together.
fn model_sizes(model: &ModelConfig) -> (f64, f64) {
    let f = |n: usize| n as f64;
    match model {
        ModelConfig::Gan(o) => {
            let chain = |sizes: &[usize]| -> (f64, f64) {
                let params = sizes.windows(2).map(|w| f(w[0]) * f(w[1]) + f(w[1])).sum();
                (params, sizes.iter().map(|&s| f(s)).sum())
            };
            let (gp, ga) = chain(&[&[o.latent_dim][..], &o.g_hidden, &[784]].concat());
            let (dp, da) = chain(&[&[784][..], &o.d_hidden, &[1]].concat());
            (gp + dp, ga + da)
        }
        ModelConfig::Dcgan(o) => {
            let [c1, c2] = o.g_channels.map(f);
            let side = f(crate::model::dcgan::SIDE);
            let quarter = (side / 4.0) * (side / 4.0);
            let g_params =
                f(o.latent_dim) * c1 * quarter + 9.0 * (c1 * c1 + c1 * c2 + c2) + 6.0 * c1;
            let g_acts = c1 * quarter * 2.0 + c1 * quarter * 4.0 * 4.0 + c2 * side * side * 4.0;
            let (mut d_params, mut d_acts, mut c_in, mut s) = (0.0, 0.0, 1.0, side);
            for &c in &o.d_channels {
                s /= 2.0;
                d_params += 9.0 * c_in * f(c) + 3.0 * f(c);
                d_acts += 4.0 * f(c) * s * s;
                c_in = f(c);
            }
            d_params += c_in * s * s;
            (g_params + d_params, g_acts + d_acts + side * side)
        }
        ModelConfig::DcganClassic(o) => {
            let [g1, g2, g3] = o.g_channels.map(f);
            let [d1, d2, d3] = o.d_channels.map(f);
            let z = f(o.latent_dim);
            let params = 16.0 * (z * g1 + g1 * g2 + g2 * g3 + g3 + d1 + d1 * d2 + d2 * d3 + d3)
                + 4.0 * (g1 + g2 + g3 + d2 + d3);
            let acts = 3.0
                * (g1 * 16.0 + g2 * 64.0 + g3 * 256.0 + d1 * 256.0 + d2 * 64.0 + d3 * 16.0)
                + 1024.0;
            (params, acts)
        }
    }
}

/// Estimated peak bytes of training `config` (one run), evaluation included.
pub fn run_bytes(config: &RunConfig) -> f64 {
    let (params, acts) = model_sizes(&config.model);
    let batch = config.train.batch_size as f64;
    let side = config.model.image_side() as f64;
    // Weights, gradients, two Adam moments and the updated copy; outputs of every layer for
    // the backward pass, with their gradients and temporaries, on a real and a fake batch.
    let training = F32 * (5.0 * params + 8.0 * batch * acts);
    let eval = config.log.eval_samples as f64 * F32 * (3.0 * side * side + 2.0 * 128.0);
    training + eval
}

/// The keys whose size drives memory, with the value each has by default for this arch.
fn size_keys(config: &RunConfig) -> Vec<(&'static str, RunConfig)> {
    let mut keys = Vec::new();
    let mut with = |key: &'static str, edit: &dyn Fn(&mut RunConfig)| {
        let mut reset = config.clone();
        edit(&mut reset);
        keys.push((key, reset));
    };
    with("train.batch_size", &|c| c.train.batch_size = 64);
    with("log.eval_samples", &|c| c.log.eval_samples = 10_000);
    match &config.model {
        ModelConfig::Gan(_) => {
            let d = GanOptions::default();
            with("model.latent_dim", &|c| {
                set_gan(c, |o| o.latent_dim = d.latent_dim)
            });
            with("model.g_hidden", &|c| {
                set_gan(c, |o| o.g_hidden = d.g_hidden.clone())
            });
            with("model.d_hidden", &|c| {
                set_gan(c, |o| o.d_hidden = d.d_hidden.clone())
            });
        }
        ModelConfig::Dcgan(_) => {
            let d = DcganOptions::default();
            with("model.latent_dim", &|c| {
                set_dcgan(c, |o| o.latent_dim = d.latent_dim)
            });
            with("model.g_channels", &|c| {
                set_dcgan(c, |o| o.g_channels = d.g_channels)
            });
            with("model.d_channels", &|c| {
                set_dcgan(c, |o| o.d_channels = d.d_channels.clone())
            });
        }
        ModelConfig::DcganClassic(_) => {
            let d = ClassicOptions::default();
            with("model.latent_dim", &|c| {
                set_classic(c, |o| o.latent_dim = d.latent_dim)
            });
            with("model.g_channels", &|c| {
                set_classic(c, |o| o.g_channels = d.g_channels)
            });
            with("model.d_channels", &|c| {
                set_classic(c, |o| o.d_channels = d.d_channels)
            });
        }
    }
    keys
}

fn set_gan(c: &mut RunConfig, edit: impl FnOnce(&mut GanOptions)) {
    if let ModelConfig::Gan(o) = &mut c.model {
        edit(o);
    }
}

fn set_dcgan(c: &mut RunConfig, edit: impl FnOnce(&mut DcganOptions)) {
    if let ModelConfig::Dcgan(o) = &mut c.model {
        edit(o);
    }
}

fn set_classic(c: &mut RunConfig, edit: impl FnOnce(&mut ClassicOptions)) {
    if let ModelConfig::DcganClassic(o) = &mut c.model {
        edit(o);
    }
}

/// Refuses a run that would need more memory than the machine has, naming the key whose
/// value contributes most (the one whose default would save the most).
pub fn check_run(config: &RunConfig) -> Result<()> {
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    let needed = run_bytes(config);
    if needed <= available {
        return Ok(());
    }
    let culprit = size_keys(config)
        .into_iter()
        .map(|(key, reset)| (key, needed - run_bytes(&reset)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(key, _)| key)
        .unwrap_or("model");
    let value = crate::spec::flatten_params(&serde_json::to_value(config)?)
        .into_iter()
        .find(|(k, _)| k == culprit)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    bail!(
        "`{culprit}` = {value} makes a run need about {} of memory; this machine has {} \
         available",
        human(needed),
        human(available)
    )
}

/// How many runs of `configs` can train at once within the memory available: `jobs`, or
/// fewer when that many of the largest would not fit (at least one; each alone was checked by
/// [`check_run`]). With the estimate per run when it caps.
pub fn runs_at_once<'a>(
    jobs: usize,
    configs: impl IntoIterator<Item = &'a RunConfig>,
) -> (usize, Option<f64>) {
    let largest = configs.into_iter().map(run_bytes).fold(0.0, f64::max);
    match available_bytes() {
        Some(available) if largest > 0.0 && jobs as f64 * largest > available => {
            let fit = ((available / largest).floor() as usize).clamp(1, jobs);
            (fit, Some(largest))
        }
        _ => (jobs, None),
    }
}

/// Refuses `n` images of `side`x`side` (what `generate` and `eval` hold at once) when they
/// do not fit; `flag` names the option in the message.
pub fn check_images(n: usize, side: usize, flag: &str) -> Result<()> {
    let per_image = F32 * 3.0 * (side * side) as f64 + F32 * 2.0 * 128.0;
    let needed = n as f64 * per_image;
    if let Some(available) = available_bytes()
        && needed > available
    {
        bail!(
            "`{flag}` {n} needs about {} of memory for its images; this machine has {} available",
            human(needed),
            human(available)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reports_models_are_small_and_absurd_sizes_are_named() {
        let dcgan = RunConfig::default();
        let bytes = run_bytes(&dcgan);
        assert!(bytes > 50e6 && bytes < 4e9, "{}", human(bytes));
        let mut huge = dcgan.clone();
        set_dcgan(&mut huge, |o| o.latent_dim = 100_000_000);
        assert!(run_bytes(&huge) > 1e12);
        if available_bytes().is_some() {
            check_run(&dcgan).unwrap();
            let err = check_run(&huge).unwrap_err().to_string();
            assert!(err.starts_with("`model.latent_dim` = 100000000"), "{err}");
            let mut batch = dcgan.clone();
            batch.train.batch_size = 100_000_000;
            let err = check_run(&batch).unwrap_err().to_string();
            assert!(err.starts_with("`train.batch_size`"), "{err}");
            assert!(check_images(usize::MAX, 32, "--n").is_err());
            check_images(10_000, 32, "--n").unwrap();
        }
        assert_eq!(human(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }

    #[test]
    fn runs_at_once_are_as_many_as_fit_in_memory_together() {
        let Some(available) = available_bytes() else {
            return;
        };
        let small = RunConfig::default();
        assert_eq!(runs_at_once(2, [&small]), (2, None));
        // A batch that makes a run need about 40% of the memory available: two fit, not four.
        let with_batch = |batch| {
            let mut config = RunConfig::default();
            config.train.batch_size = batch;
            config
        };
        let per_image = run_bytes(&with_batch(2)) - run_bytes(&with_batch(1));
        let batch = ((0.4 * available - run_bytes(&with_batch(0))) / per_image) as usize;
        let large = with_batch(batch);
        check_run(&large).unwrap();
        let (fit, each) = runs_at_once(4, [&small, &large, &small]);
        assert_eq!(fit, 2);
        assert_eq!(each, Some(run_bytes(&large)));
        assert_eq!(runs_at_once(2, [&large]), (2, None));
        // One run at a time always, however large.
        let (fit, _) = runs_at_once(4, [&with_batch(batch * 2)]);
        assert_eq!(fit, 1);
    }
}
