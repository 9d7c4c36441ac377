//! The compute device: the CPU (burn's pure-Rust `flex` backend) by default, or a GPU chosen
//! with `--device vulkan|cuda` (or `GANRUNNER_DEVICE`) in a build with that cargo feature.
//!
//! The choice is made once per process, before any tensor exists ([`select`]); a GPU that is
//! asked for but missing is an error, never a silent fall back to the CPU.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Result, bail};
use burn::prelude::Device;

/// Where training and sampling run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The CPU (burn's flex backend).
    Cpu,
    /// The first discrete GPU through Vulkan (build with `--features vulkan`).
    Vulkan,
    /// The first CUDA GPU (build with `--features cuda`).
    Cuda,
}

static SELECTED: OnceLock<DeviceChoice> = OnceLock::new();

impl DeviceChoice {
    /// The name recorded in `runs.backend`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu-flex",
            DeviceChoice::Vulkan => "vulkan",
            DeviceChoice::Cuda => "cuda",
        }
    }

    /// The `--device` value (and, for the GPUs, the cargo feature) that picks it.
    pub fn flag(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Vulkan => "vulkan",
            DeviceChoice::Cuda => "cuda",
        }
    }

    fn compiled(self) -> bool {
        match self {
            DeviceChoice::Cpu => true,
            DeviceChoice::Vulkan => cfg!(feature = "vulkan"),
            DeviceChoice::Cuda => cfg!(feature = "cuda"),
        }
    }

    fn device(self) -> Device {
        match self {
            DeviceChoice::Cpu => Device::flex(),
            // The one burn itself takes by default once `make_default` has run.
            _ => Device::default(),
        }
    }

    /// The `BURN_DEVICE` value that makes burn's default device this one.
    fn burn_device(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "flex",
            DeviceChoice::Vulkan => "vulkan",
            DeviceChoice::Cuda => "cuda",
        }
    }
}

/// Makes the chosen device burn's default device, and the runner's device that default
/// itself. burn puts some tensors on `Device::default()` whatever the program chose (a resumed
/// run's optimizer state, in `ModuleOptimizer::load_record`); in a GPU build that default is
/// CUDA, so resuming a Vulkan or CPU run needed a CUDA driver, and on a machine with one it
/// would have opened a second GPU context. `BURN_DEVICE` and, for Vulkan's adapter,
/// `CUBECL_WGPU_DEFAULT_DEVICE` are the overrides burn and cubecl read.
fn make_default(choice: DeviceChoice) {
    if !cfg!(any(feature = "vulkan", feature = "cuda")) {
        return; // the CPU build's only device is already the default
    }
    // SAFETY: `select` runs before the runner starts any thread or creates any device, so
    // nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("BURN_DEVICE", choice.burn_device());
        if choice == DeviceChoice::Vulkan {
            std::env::set_var("CUBECL_WGPU_DEFAULT_DEVICE", vulkan_adapter());
        }
    }
}

/// The Vulkan adapter, spelled for `CUBECL_WGPU_DEFAULT_DEVICE`: the first discrete GPU, or
/// the first of the kind `GANRUNNER_VULKAN_ADAPTER` names (`integrated`, `virtual`, or `cpu`
/// for a software driver). Never "whatever is there": that could be a software rasterizer.
fn vulkan_adapter() -> &'static str {
    match std::env::var("GANRUNNER_VULKAN_ADAPTER").as_deref() {
        Ok("integrated") => "IntegratedGpu(0)",
        Ok("virtual") => "VirtualGpu(0)",
        Ok("cpu") => "Cpu",
        _ => "DiscreteGpu(0)",
    }
}

/// `--device`, else `GANRUNNER_DEVICE`, else the CPU.
fn requested(flag: Option<DeviceChoice>) -> Result<DeviceChoice> {
    if let Some(choice) = flag {
        return Ok(choice);
    }
    match std::env::var("GANRUNNER_DEVICE") {
        Err(_) => Ok(DeviceChoice::Cpu),
        Ok(value) => <DeviceChoice as clap::ValueEnum>::from_str(&value, true)
            .map_err(|_| anyhow::anyhow!("GANRUNNER_DEVICE={value}: expected cpu, vulkan or cuda")),
    }
}

/// Chooses this process's device: refuses one this build lacks, and checks that a GPU really
/// answers (a small computation on it) before anything is trained.
pub fn select(flag: Option<DeviceChoice>) -> Result<DeviceChoice> {
    let choice = requested(flag)?;
    set_gpu_conv(requested_gpu_conv()?);
    set_step_adam(requested_step_adam()?);
    READ_EVERY.store(requested_read_every()?, Ordering::Relaxed);
    if !choice.compiled() {
        bail!(
            "--device {0}: this runner was built without the `{0}` feature; build one with \
             `make build-gpu` (or `cargo build --release --features {0}`)",
            choice.flag()
        );
    }
    if let Some(&already) = SELECTED.get() {
        if already != choice {
            bail!(
                "the device is already {}; one process uses one device",
                already.name()
            );
        }
        return Ok(choice);
    }
    make_default(choice);
    if choice != DeviceChoice::Cpu {
        #[cfg(any(feature = "vulkan", feature = "cuda"))]
        configure_fusion();
        probe(choice)?;
    }
    let _ = SELECTED.set(choice);
    Ok(choice)
}

/// How many independent chains of operations burn's fusion explores at once, where no
/// `burn.toml` says otherwise (burn's default is 5). At 5, fusion could not order the blocks
/// it had fused in a segment holding D's head and a loss, and ran the whole segment unfused
/// (`[repair] falling back to unfused stream order` in its log); at 1 each model's step took
/// the fewest kernels of the values from 1 to 12 (lavapipe, batch 16 and 32: the report's
/// DCGAN 290 -> 270 kernels, dcgan-classic about 14 fewer, the vanilla GAN 5 fewer).
#[cfg(any(feature = "vulkan", feature = "cuda", test))]
const FUSION_MAX_BLOCKS: usize = 1;

/// `config` with fusion's [`FUSION_MAX_BLOCKS`], unless it sets a value of its own (anything
/// but burn's default).
#[cfg(any(feature = "vulkan", feature = "cuda", test))]
fn with_fusion_blocks(config: burn::BurnConfig) -> burn::BurnConfig {
    let burns_default = burn::BurnConfig::default().fusion().beam_search.max_blocks;
    if config.fusion().beam_search.max_blocks != burns_default {
        return config;
    }
    // burn's config has no setter for it (its fields are private): edited as TOML.
    let Ok(toml::Value::Table(mut table)) = toml::Value::try_from(&config) else {
        return config;
    };
    let blocks = table
        .get_mut("fusion")
        .and_then(|fusion| fusion.get_mut("beam_search"))
        .and_then(|search| search.get_mut("max_blocks"));
    match blocks {
        Some(blocks) => *blocks = toml::Value::Integer(FUSION_MAX_BLOCKS as i64),
        None => return config,
    }
    toml::Value::Table(table).try_into().unwrap_or(config)
}

/// Installs burn's configuration as burn would load it (a `burn.toml` here or above, then
/// its environment variables), with [`with_fusion_blocks`], before the first tensor.
#[cfg(any(feature = "vulkan", feature = "cuda"))]
fn configure_fusion() {
    use burn_cubecl::cubecl::config::RuntimeConfig;
    let loaded = burn::BurnConfig::from_current_dir().override_from_env();
    // Already read (a second `select` in one process): it stays as it is.
    let _ = burn::BurnConfig::try_set(with_fusion_blocks(loaded));
}

/// Runs `1 + 1` on the device; a missing driver or GPU (which the GPU runtimes report by
/// panicking, often on a thread of their own) becomes an error naming the device and the
/// first panic's message.
fn probe(choice: DeviceChoice) -> Result<()> {
    let first_panic = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let previous = std::panic::take_hook();
    let record = first_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        let mut first = record.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| panic_message(info.payload()));
    }));
    let outcome = std::panic::catch_unwind(|| {
        let device = choice.device();
        let one = burn::tensor::Tensor::<1>::ones([1], &device);
        (one.clone() + one).into_scalar::<f32>()
    });
    std::panic::set_hook(previous);
    match outcome {
        Ok(two) if (two - 2.0).abs() < 1e-6 => Ok(()),
        Ok(other) => bail!("--device {}: 1 + 1 gave {other}", choice.flag()),
        Err(panic) => {
            let first = first_panic.lock().unwrap_or_else(|e| e.into_inner()).take();
            bail!(
                "--device {}: no usable GPU ({}); see the README's \"Training on a GPU\"",
                choice.flag(),
                first.unwrap_or_else(|| panic_message(panic.as_ref()))
            )
        }
    }
}

/// The message a panic carried (`panic!` with a literal or a formatted string).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown error".into())
}

fn selected() -> DeviceChoice {
    *SELECTED.get().unwrap_or(&DeviceChoice::Cpu)
}

/// The device new tensors and models live on (without autodiff).
pub fn device() -> Device {
    selected().device()
}

/// Set by [`gpu_path_on_cpu`].
static GPU_PATH_ON_CPU: AtomicBool = AtomicBool::new(false);

/// From now on (`on`), the CPU runs the model code a GPU runs: burn's operations instead of
/// the runner's own kernels, so that the GPU path's training can be checked where no GPU is
/// (`tests/parity.rs`). Process-wide.
pub fn gpu_path_on_cpu(on: bool) {
    GPU_PATH_ON_CPU.store(on, Ordering::Relaxed);
}

/// Whether the runner's own CPU kernels apply: on the CPU, unless [`gpu_path_on_cpu`].
pub fn own_kernels() -> bool {
    selected() == DeviceChoice::Cpu && !GPU_PATH_ON_CPU.load(Ordering::Relaxed)
}

/// How the model code computes trained convolutions where the runner's CPU kernels do not
/// apply (a GPU, or the GPU path on the CPU). `GANRUNNER_GPU_CONV` picks one per process;
/// `bench/gpu-check.sh` times both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuConv {
    /// One matrix product over the input's im2col columns, gathered in one kernel
    /// ([`crate::model::gpu_ops::remap`]), and G's upsampling convolutions as four 2x2 phase
    /// convolutions: the fewest multiplies.
    Im2col,
    /// burn's own convolution kernels forward and backward, and G's upsampling convolutions as
    /// burn's nearest upsampling then a convolution (its direct convolution is the slower).
    Burn,
}

impl GpuConv {
    /// Its `GANRUNNER_GPU_CONV` value.
    pub fn value(self) -> &'static str {
        match self {
            GpuConv::Im2col => "im2col",
            GpuConv::Burn => "burn",
        }
    }
}

/// Without `GANRUNNER_GPU_CONV`: on the H200 the report's DCGAN stepped in 21 ms this way and
/// in 48 with burn's kernels (the classic DCGAN in 13 and 22; 2026-12-04, batch 64).
const DEFAULT_GPU_CONV: GpuConv = GpuConv::Im2col;

/// Set by [`set_gpu_conv`]: whether [`GpuConv::Burn`] is chosen.
static BURN_CONV: AtomicBool = AtomicBool::new(matches!(DEFAULT_GPU_CONV, GpuConv::Burn));

/// From now on, the GPU path convolves as `conv` says. Process-wide.
pub fn set_gpu_conv(conv: GpuConv) {
    BURN_CONV.store(conv == GpuConv::Burn, Ordering::Relaxed);
}

/// How the GPU path convolves (see [`GpuConv`]).
pub fn gpu_conv() -> GpuConv {
    if BURN_CONV.load(Ordering::Relaxed) {
        GpuConv::Burn
    } else {
        GpuConv::Im2col
    }
}

/// `GANRUNNER_GPU_CONV` (`im2col` or `burn`), else the default.
fn requested_gpu_conv() -> Result<GpuConv> {
    let Ok(value) = std::env::var("GANRUNNER_GPU_CONV") else {
        return Ok(DEFAULT_GPU_CONV);
    };
    [GpuConv::Im2col, GpuConv::Burn]
        .into_iter()
        .find(|conv| conv.value() == value)
        .ok_or_else(|| anyhow::anyhow!("GANRUNNER_GPU_CONV={value}: expected im2col or burn"))
}

/// Set by [`set_step_adam`].
static STEP_ADAM: AtomicBool = AtomicBool::new(false);

/// From now on (`on`), Adam on the GPU path is `train::adam::StepAdam`, one operation a
/// parameter, rather than burn's thirteen (`GANRUNNER_GPU_ADAM=step`). Process-wide.
pub fn set_step_adam(on: bool) {
    STEP_ADAM.store(on, Ordering::Relaxed);
}

/// Whether Adam on the GPU path is `train::adam::StepAdam` (see [`set_step_adam`]).
pub fn step_adam() -> bool {
    STEP_ADAM.load(Ordering::Relaxed)
}

/// The `GANRUNNER_GPU_ADAM` value that asks for what [`step_adam`] says.
pub fn gpu_adam_value() -> &'static str {
    if step_adam() { "step" } else { "burn" }
}

/// `GANRUNNER_GPU_ADAM`: `step` for [`set_step_adam`], `burn` (the default) for burn's Adam.
/// Burn's by default: on the stand-in CUDA driver (`make cuda-compile`), the 2 cores' host
/// stepped the report's DCGAN in 72 ms with `step` against 61-64 with burn's, though it
/// registers 1 119 operations a step against 1 479 (2026-12-05); a GPU's host decides.
fn requested_step_adam() -> Result<bool> {
    match std::env::var("GANRUNNER_GPU_ADAM").as_deref() {
        Err(_) | Ok("burn") => Ok(false),
        Ok("step") => Ok(true),
        Ok(value) => bail!("GANRUNNER_GPU_ADAM={value}: expected burn or step"),
    }
}

/// The most steps whose losses training leaves unread (`GANRUNNER_READ_EVERY`).
pub const MAX_READ_EVERY: usize = 1000;

/// Set by [`select`] from `GANRUNNER_READ_EVERY`.
static READ_EVERY: AtomicUsize = AtomicUsize::new(1);

/// Every how many steps training reads its losses (and at every sample, evaluation,
/// checkpoint and stop): on a GPU, where a read waits for everything queued, the steps
/// between reads queue behind the running ones.
pub fn read_every() -> usize {
    READ_EVERY.load(Ordering::Relaxed)
}

/// `GANRUNNER_READ_EVERY`: 1 to [`MAX_READ_EVERY`], default 1 (every step, as `runner bench
/// --read-every` times it: whether a GPU's host gains from more waits for `bench/gpu-check.sh`'s
/// `+read-10` rows; on the CPU, which computes each operation as it is asked for, it only
/// delays the progress line).
fn requested_read_every() -> Result<usize> {
    let Ok(value) = std::env::var("GANRUNNER_READ_EVERY") else {
        return Ok(1);
    };
    value
        .parse::<usize>()
        .ok()
        .filter(|steps| (1..=MAX_READ_EVERY).contains(steps))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "GANRUNNER_READ_EVERY={value}: expected a number of steps from 1 to {MAX_READ_EVERY}"
            )
        })
}

/// A short name of the backend in use, for logs and the database: the device, and on a GPU
/// what rounds otherwise than the defaults: burn's convolutions (not the im2col form), Adam as
/// one operation (`step-adam`).
pub fn name() -> &'static str {
    let device = selected();
    if device == DeviceChoice::Cpu {
        return device.name();
    }
    let cuda = device == DeviceChoice::Cuda;
    match (gpu_conv(), step_adam()) {
        (GpuConv::Im2col, false) => device.name(),
        (GpuConv::Burn, false) if cuda => "cuda+burn-conv",
        (GpuConv::Burn, false) => "vulkan+burn-conv",
        (GpuConv::Im2col, true) if cuda => "cuda+step-adam",
        (GpuConv::Im2col, true) => "vulkan+step-adam",
        (GpuConv::Burn, true) if cuda => "cuda+burn-conv+step-adam",
        (GpuConv::Burn, true) => "vulkan+burn-conv+step-adam",
    }
}

/// The widest x86 vector extension the CPU offers, which `gemm` (burn-flex's matrix kernels)
/// dispatches on at run time: `avx512f`, `avx2+fma` or `sse2` (`native` elsewhere). Kernels of
/// other widths add in another order, so CPUs with different ones round differently.
pub fn cpu_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2+fma";
        }
        return "sse2";
    }
    #[allow(unreachable_code)]
    "native"
}

/// The CPU kernels training uses, recorded per run (`runs.kernels`): [`cpu_kernels`] on the
/// CPU, none on a GPU (whose arithmetic the backend's name says).
pub fn kernels() -> Option<&'static str> {
    (selected() == DeviceChoice::Cpu).then(cpu_kernels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// burn's default becomes the runner's; a value of a `burn.toml`'s own stays, and so do
    /// the other settings.
    #[test]
    fn fusion_explores_one_chain_unless_burn_toml_says_otherwise() {
        let default = with_fusion_blocks(burn::BurnConfig::default());
        assert_eq!(default.fusion().beam_search.max_blocks, FUSION_MAX_BLOCKS);
        let own: burn::BurnConfig = toml::from_str(
            "[fusion.beam_search]\nmax_blocks = 3\n[fusion.logger]\nlevel = \"full\"",
        )
        .unwrap();
        let own = with_fusion_blocks(own);
        assert_eq!(own.fusion().beam_search.max_blocks, 3);
        let logged: burn::BurnConfig =
            toml::from_str("[fusion.logger]\nlevel = \"full\"\nfile = \"f.log\"").unwrap();
        let logged = with_fusion_blocks(logged);
        assert_eq!(logged.fusion().beam_search.max_blocks, FUSION_MAX_BLOCKS);
        let level = format!("{:?}", logged.fusion().logger.level);
        assert_eq!(level, "Full");
    }

    #[test]
    fn a_device_this_build_lacks_is_refused_by_name() {
        if !cfg!(feature = "vulkan") {
            let err = select(Some(DeviceChoice::Vulkan)).unwrap_err().to_string();
            assert!(err.contains("built without the `vulkan` feature"), "{err}");
        }
        if !cfg!(feature = "cuda") {
            let err = select(Some(DeviceChoice::Cuda)).unwrap_err().to_string();
            assert!(err.contains("`cuda` feature"), "{err}");
        }
        assert_eq!(select(Some(DeviceChoice::Cpu)).unwrap(), DeviceChoice::Cpu);
        assert_eq!(name(), "cpu-flex");
    }

    /// The `cuda` feature builds offline only while the stand-in for cubecl-llvm replaces the
    /// real one (whose build downloads LLVM): a burn upgrade moving cubecl-cuda to a version
    /// the patch does not match would bring the download back, and this fails first.
    #[test]
    fn the_cuda_build_resolves_to_the_llvm_stand_in() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
            .expect("Cargo.lock is committed");
        let version_of = |name: &str| {
            let at = lock.find(&format!("name = \"{name}\"\n"))?;
            let rest = &lock[at..];
            let line = rest.lines().nth(1)?;
            Some((
                line.to_string(),
                rest.lines().nth(2).unwrap_or("").to_string(),
            ))
        };
        let (llvm, llvm_source) = version_of("cubecl-llvm").expect("cubecl-llvm is locked");
        let (cuda, _) = version_of("cubecl-cuda").expect("cubecl-cuda is locked");
        assert_eq!(llvm, cuda, "the stand-in's version must be cubecl-cuda's");
        assert!(
            !llvm_source.starts_with("source"),
            "cubecl-llvm comes from a registry, not crates/cubecl-llvm-nvrtc"
        );
        for downloader in ["tracel-llvm-bundler", "llvm-sys"] {
            assert!(
                !lock.contains(&format!("name = \"{downloader}\"")),
                "{downloader} is back in Cargo.lock"
            );
        }
    }
}
