//! The runner's own CPU kernels for the operations that dominate a GAN step, each one burn
//! operation with its own backward pass, plugged in through burn's backend-extension API
//! (`#[backend_extension]` on burn's `Flex` CPU backend and its `Autodiff` wrapper).
//!
//! - [`conv`]: the convolution and transposed convolution (im2col + GEMM, col2im);
//! - [`batch_norm`]: BatchNorm in training mode from per-channel sums on NCHW memory;
//! - [`activation`]: LeakyReLU in one pass each way (burn's builds masks and selects), and
//!   tanh differentiated from its output (burn's computes it again);
//! - [`phase`]: the interleaving of the upsampling convolution's four phases;
//! - [`pool`]: 2x2 max pooling (the evaluator's LeNet).
//!
//! They apply on the CPU only ([`crate::backend::own_kernels`]); on a GPU the models use burn's ops.

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub mod phase;
pub mod pool;

use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Buffers and elementwise passes below this many values stay on the calling thread: handing
/// them to the thread pool costs more than it saves (the vanilla GAN's are all smaller).
const PARALLEL_FROM: usize = 1 << 16;

/// Values per parallel task of the elementwise passes.
const CHUNK: usize = PARALLEL_FROM / 4;

/// Whether a pass over `len` values is worth splitting among the pool's threads.
fn in_parallel(len: usize) -> bool {
    len >= PARALLEL_FROM && rayon::current_num_threads() > 1
}

/// `len` zeros, written in parallel when there are many. `vec![0.0; len]` zeroes reused
/// memory on the calling thread while the pool's threads wait: on two threads that serial
/// zeroing was 5% of a dcgan-classic step.
fn zeros(len: usize) -> Vec<f32> {
    if !in_parallel(len) {
        return vec![0.0; len];
    }
    let mut out = Vec::with_capacity(len);
    (out.spare_capacity_mut()[..len].par_chunks_mut(CHUNK))
        .for_each(|chunk| chunk.fill(MaybeUninit::new(0.0)));
    // SAFETY: the chunks cover all `len` values, and each was written.
    unsafe { out.set_len(len) };
    out
}

/// A new buffer of `len` values that `fill` writes, without zeroing it first: zeroing reused
/// memory that a product or a transpose then overwrote took 13% of a dcgan-classic step on one
/// thread.
///
/// # Safety
///
/// `fill` must write every one of the `len` values.
unsafe fn filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(unwritten(&mut out, len));
    // SAFETY: the caller's promise.
    unsafe { out.set_len(len) };
    out
}

/// The first `len` values of an empty buffer's memory, to write before `set_len(len)`. They
/// are NaN in the unit tests and debug builds, so that a value never written shows.
fn unwritten(buffer: &mut Vec<f32>, len: usize) -> &mut [MaybeUninit<f32>] {
    buffer.clear();
    buffer.reserve(len);
    let spare = &mut buffer.spare_capacity_mut()[..len];
    if cfg!(any(test, debug_assertions)) {
        spare.fill(MaybeUninit::new(f32::NAN));
    }
    spare
}

/// `values` as the source of a copy into a buffer being [`filled`].
fn as_uninit(values: &[f32]) -> &[MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and initialized values are valid ones.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) }
}

/// The `height x width` matrix `values` transposed into `out`, which it writes whole.
fn transpose_into(values: &[f32], out: &mut [MaybeUninit<f32>], width: usize, height: usize) {
    transpose::transpose(as_uninit(values), out, width, height);
}

/// `f(a[i], b[i])` for every index of two equally long slices, in parallel when they are long.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let len = a.len();
    assert_eq!(len, b.len(), "zip_map: slices of different lengths");
    if !in_parallel(len) {
        return a.iter().zip(b).map(|(&a, &b)| f(a, b)).collect();
    }
    let mut out = Vec::with_capacity(len);
    (out.spare_capacity_mut()[..len].par_chunks_mut(CHUNK))
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(out, (a, b))| {
            for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
                o.write(f(a, b));
            }
        });
    // SAFETY: the three slices have `len` values and are cut into chunks of the same sizes,
    // so every output value was written.
    unsafe { out.set_len(len) };
    out
}

/// `f(a[i])` for every index, in parallel when the slice is long.
fn map(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    zip_map(a, a, |a, _| f(a))
}

/// The values of `t`, contiguous (copied only when they are not).
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => std::borrow::Cow::Borrowed(v),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("the runner's kernels take f32 tensors")
                .to_vec(),
        ),
    }
}

/// A CPU tensor of `values` with `shape`.
fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_passes_write_every_value_as_the_serial_ones_do() {
        // Long enough for the parallel path, and not a whole number of chunks.
        let len = 3 * PARALLEL_FROM + 7;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
        let f = |a: f32, b: f32| if a > 0.0 { b } else { 0.2 * b };
        let (zs, mapped) = pool.install(|| {
            assert!(in_parallel(len));
            (zeros(len), zip_map(&a, &b, f))
        });
        assert_eq!(zs.len(), len);
        assert!(zs.iter().all(|&z| z == 0.0));
        let serial: Vec<f32> = a.iter().zip(&b).map(|(&a, &b)| f(a, b)).collect();
        assert_eq!(mapped, serial);
    }
}
