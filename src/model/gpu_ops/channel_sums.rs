//! Sums per channel of `[B, C, H, W]` on a GPU as CubeCL kernels of our own: BatchNorm's
//! statistics, one kernel each way, and a convolution bias's gradient. A cube a channel, its
//! units striding over that channel's values in the batch, their partial sums added in shared
//! memory.
//!
//! Why: out of burn's reductions each statistic took two kernels (over the batch, then over
//! the pixels), four a BatchNorm forward and four backward: 96 of the report's DCGAN step's
//! 429 kernels (lavapipe). Each cube adds its values in a fixed order, so a step stays
//! deterministic. Called through the `Cube` backend of [`super::batch_norm::ComposedBatchNorm`]
//! and [`super::channel_bias::ChannelBias`]; the traits' default bodies (burn's reductions)
//! are what the CPU's tests compare. These kernels run on a GPU backend alone: `make
//! vulkan-smoke` checks them on lavapipe, a training step against the CPU's (losses within
//! 1.4e-7 over 6 steps, 2026-12-05).

use burn::prelude::Shape;
use burn_cubecl::cubecl;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

/// The most units a cube: enough loads in flight for a channel of a large BatchNorm (the
/// report's G ends in 64 channels of 64 x 32 x 32 values at batch 64).
const MAX_UNITS: usize = 1024;

/// The sum of `value` over the cube's units, returned to every unit. `partial` holds one
/// value a unit; it is free for reuse when this returns.
#[cube]
fn cube_sum(partial: &mut Shared<[f32]>, value: f32) -> f32 {
    let unit = UNIT_POS as usize;
    partial[unit] = value;
    sync_cube();
    let mut active = CUBE_DIM as usize / 2;
    while active > 0 {
        if unit < active {
            let other = partial[unit + active];
            partial[unit] += other;
        }
        sync_cube();
        active /= 2;
    }
    let total = partial[0];
    sync_cube();
    total
}

/// Where the `i`-th value of channel `CUBE_POS_X` lies in `x`, a contiguous `[B, C, H, W]`.
#[cube]
fn channel_offset(x: &Tensor<f32>, i: usize) -> usize {
    let plane = x.shape(2) * x.shape(3);
    (i / plane * x.shape(1) + CUBE_POS_X as usize) * plane + i % plane
}

/// The values of channel `CUBE_POS_X` of `x` `[B, C, H, W]`.
#[cube]
fn channel_count(x: &Tensor<f32>) -> usize {
    x.shape(0) * x.shape(2) * x.shape(3)
}

/// This unit's share of the sum over channel `CUBE_POS_X` of `x` of `x - shift`, or of its
/// square (`squared`): every `units`-th value from the unit's position. Four reads an
/// iteration, independent of each other: a unit waits on memory once for four values, not
/// once for each (a channel of the report's G has up to 65 536 values, read by 1024 units).
#[cube]
fn unit_sum(
    x: &Tensor<f32>,
    shift: f32,
    #[comptime] squared: bool,
    #[comptime] units: usize,
) -> f32 {
    let count = channel_count(x);
    let (mut s0, mut s1, mut s2, mut s3) =
        (f32::new(0.0), f32::new(0.0), f32::new(0.0), f32::new(0.0));
    let mut i = UNIT_POS as usize;
    while i + 3 * units < count {
        s0 += term(x, i, shift, squared);
        s1 += term(x, i + units, shift, squared);
        s2 += term(x, i + 2 * units, shift, squared);
        s3 += term(x, i + 3 * units, shift, squared);
        i += 4 * units;
    }
    while i < count {
        s0 += term(x, i, shift, squared);
        i += units;
    }
    (s0 + s1) + (s2 + s3)
}

/// The `i`-th value of channel `CUBE_POS_X` of `x` minus `shift`, or its square.
#[cube]
fn term(x: &Tensor<f32>, i: usize, shift: f32, #[comptime] squared: bool) -> f32 {
    let value = x[channel_offset(x, i)] - shift;
    if squared { value * value } else { value }
}

/// The mean and biased variance of channel `CUBE_POS_X` of `x` `[B, C, H, W]`, in two passes
/// (the squares of the centered values, as the composition computes them).
#[cube(launch)]
fn moments_kernel(
    x: &Tensor<f32>,
    mean: &mut Tensor<f32>,
    variance: &mut Tensor<f32>,
    #[comptime] units: usize,
) {
    let count = f32::cast_from(channel_count(x));
    let mut partial = Shared::<[f32]>::new_slice(units);
    let sum = unit_sum(x, f32::new(0.0), false, units);
    let average = cube_sum(&mut partial, sum) / count;
    let squares = unit_sum(x, average, true, units);
    let spread = cube_sum(&mut partial, squares) / count;
    if UNIT_POS == 0 {
        mean[CUBE_POS_X as usize] = average;
        variance[CUBE_POS_X as usize] = spread;
    }
}

/// For channel `CUBE_POS_X`: `sum(dy)` and `sum(dy x_hat)`, `x_hat = (x - mean) inverse_std`.
/// Two values an iteration (four reads in flight, as [`unit_sum`]).
#[cube(launch)]
fn gradient_sums_kernel(
    dy: &Tensor<f32>,
    x: &Tensor<f32>,
    mean: &Tensor<f32>,
    inverse_std: &Tensor<f32>,
    dy_sum: &mut Tensor<f32>,
    dy_x_hat_sum: &mut Tensor<f32>,
    #[comptime] units: usize,
) {
    let channel = CUBE_POS_X as usize;
    let count = channel_count(x);
    let average = mean[channel];
    let mut partial = Shared::<[f32]>::new_slice(units);

    let (mut gradients, mut gradients_next) = (f32::new(0.0), f32::new(0.0));
    let (mut along_centered, mut along_centered_next) = (f32::new(0.0), f32::new(0.0));
    let mut i = UNIT_POS as usize;
    while i + units < count {
        let (at, next) = (channel_offset(x, i), channel_offset(x, i + units));
        let (gradient, gradient_next) = (dy[at], dy[next]);
        gradients += gradient;
        gradients_next += gradient_next;
        along_centered += gradient * (x[at] - average);
        along_centered_next += gradient_next * (x[next] - average);
        i += 2 * units;
    }
    if i < count {
        let at = channel_offset(x, i);
        gradients += dy[at];
        along_centered += dy[at] * (x[at] - average);
    }
    let gradients = cube_sum(&mut partial, gradients + gradients_next);
    let along_centered = cube_sum(&mut partial, along_centered + along_centered_next);

    if UNIT_POS == 0 {
        dy_sum[channel] = gradients;
        dy_x_hat_sum[channel] = along_centered * inverse_std[channel];
    }
}

/// The sum of channel `CUBE_POS_X` of `x` `[B, C, H, W]`.
#[cube(launch)]
fn sum_kernel(x: &Tensor<f32>, sum: &mut Tensor<f32>, #[comptime] units: usize) {
    let mut partial = Shared::<[f32]>::new_slice(units);
    let total = cube_sum(&mut partial, unit_sum(x, f32::new(0.0), false, units));
    if UNIT_POS == 0 {
        sum[CUBE_POS_X as usize] = total;
    }
}

/// Units a cube for `x` `[B, C, H, W]`: a power of two (for the tree sum), about a quarter
/// of a channel's values, at least 32 and at most what the device allows.
fn units(x: &CubeTensor) -> usize {
    let per_channel = x.meta.shape().num_elements() / x.meta.shape()[1].max(1);
    let device_most = x.client.properties().hardware.max_units_per_cube as usize;
    let most = (per_channel / 4)
        .clamp(32, MAX_UNITS)
        .min(device_most.max(1));
    1 << most.ilog2()
}

/// A `[1, C, 1, 1]` tensor for the per-channel results of `x` `[B, C, H, W]`.
fn per_channel_output(x: &CubeTensor) -> CubeTensor {
    super::check_f32(&[x], "per-channel");
    let channels = x.meta.shape()[1];
    empty_device_dtype(
        x.client.clone(),
        x.device.clone(),
        Shape::new([1, channels, 1, 1]),
        x.dtype,
    )
}

/// A cube for each of `x`'s channels.
fn cube_per_channel(x: &CubeTensor) -> CubeCount {
    CubeCount::Static(x.meta.shape()[1] as u32, 1, 1)
}

/// The sum per channel of `x` `[B, C, H, W]`, `[1, C, 1, 1]`.
pub fn sum(x: CubeTensor) -> CubeTensor {
    let x = into_contiguous(x);
    let sum = per_channel_output(&x);
    let units = units(&x);
    sum_kernel::launch(
        &x.client.clone(),
        cube_per_channel(&x),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        sum.clone().into_tensor_arg(),
        units,
    );
    sum
}

/// The mean and biased variance per channel of `x` `[B, C, H, W]`, each `[1, C, 1, 1]`.
pub fn moments(x: CubeTensor) -> (CubeTensor, CubeTensor) {
    let x = into_contiguous(x);
    let (mean, variance) = (per_channel_output(&x), per_channel_output(&x));
    let units = units(&x);
    moments_kernel::launch(
        &x.client.clone(),
        cube_per_channel(&x),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        variance.clone().into_tensor_arg(),
        units,
    );
    (mean, variance)
}

/// `sum(dy)` and `sum(dy x_hat)` per channel, `x_hat = (x - mean) inverse_std`, for `dy` and
/// `x` `[B, C, H, W]` and the others `[1, C, 1, 1]`, as these.
pub fn gradient_sums(
    dy: CubeTensor,
    x: CubeTensor,
    mean: CubeTensor,
    inverse_std: CubeTensor,
) -> (CubeTensor, CubeTensor) {
    let (dy, x) = (into_contiguous(dy), into_contiguous(x));
    let (mean, inverse_std) = (into_contiguous(mean), into_contiguous(inverse_std));
    super::check_f32(&[&dy], "per-channel");
    let (dy_sum, dy_x_hat_sum) = (per_channel_output(&x), per_channel_output(&x));
    let units = units(&x);
    gradient_sums_kernel::launch(
        &x.client.clone(),
        cube_per_channel(&x),
        CubeDim::new_1d(units as u32),
        dy.into_tensor_arg(),
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        inverse_std.into_tensor_arg(),
        dy_sum.clone().into_tensor_arg(),
        dy_x_hat_sum.clone().into_tensor_arg(),
        units,
    );
    (dy_sum, dy_x_hat_sum)
}
