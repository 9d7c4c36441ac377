//! The compute device. The CPU (burn's pure-Rust `flex` backend) by default; with the `cuda`
//! cargo feature, the first CUDA GPU unless `GANRUNNER_DEVICE=cpu`.

use burn::prelude::Device;

/// The device new tensors and models live on (without autodiff).
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if std::env::var("GANRUNNER_DEVICE").as_deref() != Ok("cpu") {
        return Device::cuda(0);
    }
    Device::flex()
}

/// A short name of the backend in use, for logs and the database.
pub fn name() -> &'static str {
    #[cfg(feature = "cuda")]
    if std::env::var("GANRUNNER_DEVICE").as_deref() != Ok("cpu") {
        return "cuda";
    }
    "cpu-flex"
}
