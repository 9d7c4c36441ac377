//! Convolutions: on the CPU the runner's own kernel ([`super::kernels::conv`]); on a GPU, when
//! differentiated, one matrix product over the input's columns (im2col, gathered in one kernel
//! each way by [`super::gpu_ops::remap`]), and burn's own convolution when sampling (or always,
//! with `GANRUNNER_GPU_CONV=burn`: [`crate::backend::GpuConv`]). Transposed convolutions go the
//! same way on a GPU: the doubling ones as four 2x2 phase convolutions ([`phase_conv`]), any
//! other as a product over its columns.
//!
//! Why not burn's convolution when training: burn-flex differentiates `conv2d` through a
//! transposed convolution (input gradient) and a convolution with batch and channels swapped
//! (weight gradient) whose output is only k x k: its matrix products are a few columns wide
//! and run at a fraction of the machine's peak.
//! Written as `W . cols(x)`, autodiff's backward is two well-shaped matrix products instead
//! (`dW = sum_b dY_b . cols_b^T`, `dcols = W^T . dY`) plus the gather of the columns' gradient
//! back onto the input. Forward results and gradients equal burn's `conv2d` to float
//! rounding (tested against it below).

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::prelude::*;

use super::gpu_ops::channel_bias::add_channel_bias;
use super::gpu_ops::remap::{Map, MapKey, remap};
use crate::backend::GpuConv;

/// `conv` (square kernel, symmetric padding, no dilation or groups) applied to `x`.
pub fn forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [pad, _] = padding(conv);
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        [conv.stride[0], pad],
    )
}

/// `conv` (square kernel, the same stride and padding on both axes, no output padding,
/// dilation or groups) applied to `x`: the runner's kernel on the CPU; on a GPU
/// [`columns_conv_transpose2d`] when differentiated and [`GpuConv::Im2col`] is chosen, burn's
/// own otherwise.
pub fn transposed(conv: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
    let square = |v: [usize; 2]| (v[0] == v[1]).then_some(v[0]);
    let (Some(stride), Some(pad), [0, 0], [1, 1], 1) = (
        square(conv.stride),
        square(conv.padding),
        conv.padding_out,
        conv.dilation,
        conv.groups,
    ) else {
        panic!("conv::transposed needs a plain square transposed convolution, got {conv:?}");
    };
    let (weight, bias) = (conv.weight.val(), conv.bias.as_ref().map(|b| b.val()));
    if crate::backend::own_kernels() {
        let out = super::kernels::conv::conv_transpose2d(x, weight, stride, pad);
        with_bias(out, bias)
    } else if in_columns(&x, &weight) {
        columns_conv_transpose2d(x, weight, bias, stride, pad)
    } else {
        conv.forward(x)
    }
}

/// `out` `[B, C, H, W]` plus `bias` `[C]` per channel, when given (on a GPU, an op whose
/// backward sums the bias's gradient in one kernel: [`super::gpu_ops::channel_bias`]).
fn with_bias(out: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    match bias {
        Some(bias) if crate::backend::own_kernels() => {
            let c_out = bias.dims()[0];
            out + bias.reshape([1, c_out, 1, 1])
        }
        Some(bias) => add_channel_bias(out, bias),
        None => out,
    }
}

/// Whether `conv`'s weight is being trained (it is not in a `valid()` copy, e.g. for sampling).
pub fn is_trained(conv: &Conv2d) -> bool {
    conv.weight.val().is_require_grad()
}

/// Whether the GPU path computes a convolution of `x` with `weight` as a product over columns:
/// when [`GpuConv::Im2col`] is chosen and autodiff will differentiate it, i.e. either is
/// tracked (the input alone is in the G step, which reads D through constant weights but needs
/// the gradient of D's input).
fn in_columns(x: &Tensor<4>, weight: &Tensor<4>) -> bool {
    crate::backend::gpu_conv() == GpuConv::Im2col && (x.is_tracked() || weight.is_tracked())
}

/// 2-D convolution of `x` `[B, Cin, H, W]` with `weight` `[Cout, Cin, k, k]`, stride and zero
/// padding on every side: the runner's kernel on the CPU; on a GPU [`im2col_conv2d`] when it
/// will be differentiated and [`GpuConv::Im2col`] is chosen, burn's own otherwise (e.g. when
/// sampling).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    [stride, pad]: [usize; 2],
) -> Tensor<4> {
    if crate::backend::own_kernels() {
        with_bias(super::kernels::conv::conv2d(x, weight, stride, pad), bias)
    } else if in_columns(&x, &weight) {
        im2col_conv2d(x, weight, bias, stride, pad)
    } else {
        burn::tensor::module::conv2d(
            x,
            weight,
            bias,
            burn::tensor::ops::ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
        )
    }
}

/// The symmetric padding of a `Conv2d` built with explicit padding.
fn padding(conv: &Conv2d) -> [usize; 2] {
    match conv.padding {
        burn::nn::PaddingConfig2d::Explicit(top, left, bottom, right)
            if top == bottom && left == right && top == left =>
        {
            [top, left]
        }
        burn::nn::PaddingConfig2d::Valid => [0, 0],
        ref other => panic!("conv::forward needs symmetric explicit padding, got {other:?}"),
    }
}

/// For each output phase (0, 1) along one axis of [`phase_conv`], its two taps, each the sum
/// of the weight's slices along that axis that it lists.
pub type PhaseTaps = [[&'static [usize]; 2]; 2];

/// A layer that doubles the side of `x` `[B, Cin, H, W]` (such as an upsample-then-convolve),
/// computed as four 2x2 convolutions on `x`, one per output phase: output pixel (2i+a, 2j+b)
/// is kernel (a, b) applied to input rows {i-1, i} (a = 0) or {i, i+1} (a = 1), and likewise
/// columns. `taps` gives each phase's two taps along one axis as sums of the weight's slices;
/// the 2x2 kernels are those of the rows crossed with those of the columns. `weight` is
/// `[Cout, Cin, k, k]`.
///
/// The four kernels run as one convolution with 4x the output channels over `x` padded by 1;
/// phase (a, b) is its crop starting at (a, b), and the crops interleave into `[B, Cout, 2H, 2W]`.
pub fn phase_conv(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    taps: &PhaseTaps,
) -> Tensor<4> {
    let [batch, _, h, w] = x.dims();
    let c_out = weight.dims()[0];
    if crate::backend::own_kernels() {
        let bias = bias.map(|b| {
            b.unsqueeze_dim::<2>(0)
                .repeat_dim(0, 4)
                .reshape([4 * c_out])
        });
        let out = conv2d(x, summed_kernels(&weight, taps), bias, [1, 1]);
        return super::kernels::phase::interleave(out);
    }
    // The bias is added once the phases are interleaved: no copy of it per phase, and the
    // addition can join the next layer's fused kernel.
    let out = conv2d(x, product_kernels(weight, taps), None, [1, 1]);
    debug_assert_eq!(out.dims(), [batch, 4 * c_out, h + 1, w + 1]);
    // Output pixel (2i + a, 2j + b) of channel c is phase (a, b)'s crop at (i, j).
    let interleave = || {
        let at = (0..c_out * 4 * h * w).map(|out| {
            let (c, y, x) = (out / (4 * h * w), out / (2 * w) % (2 * h), out % (2 * w));
            let (a, i, b, j) = (y % 2, y / 2, x % 2, x / 2);
            (((2 * a + b) * c_out + c) * (h + 1) + i + a) * (w + 1) + j + b
        });
        Map::new(4 * c_out * (h + 1) * (w + 1), at.collect())
    };
    let phases = out.reshape([batch, 1, 4 * c_out * (h + 1) * (w + 1)]);
    let interleaved = remap(phases, ("interleave", [c_out, h, w, 0, 0]), interleave);
    with_bias(interleaved.reshape([batch, c_out, 2 * h, 2 * w]), bias)
}

/// [`phase_conv`]'s four 2x2 kernels `[4 Cout, Cin, 2, 2]`, phase (a, b) at 2a + b, as sums of
/// the weight's slices.
fn summed_kernels(weight: &Tensor<4>, taps: &PhaseTaps) -> Tensor<4> {
    let axis = |k: &Tensor<4>, dim: usize| -> Vec<Tensor<4>> {
        let tap = |slices: &[usize]| {
            (slices.iter().map(|&i| k.clone().narrow(dim, i, 1)))
                .reduce(|sum, slice| sum + slice)
                .expect("a phase's tap sums at least one slice")
        };
        (taps.iter())
            .map(|pair| Tensor::cat(pair.iter().map(|slices| tap(slices)).collect(), dim))
            .collect()
    };
    let rows = axis(weight, 2);
    Tensor::cat(rows.iter().flat_map(|rows| axis(rows, 3)).collect(), 0)
}

/// [`summed_kernels`] as one product of the weight with a 0/1 matrix: two kernels on a GPU,
/// where the slices and sums launch dozens (forward and backward, at every step).
fn product_kernels(weight: Tensor<4>, taps: &PhaseTaps) -> Tensor<4> {
    let [c_out, c_in, k, _] = weight.dims();
    let sums = tap_sums(taps, k, &weight.device());
    (weight.reshape([c_out * c_in, k * k]))
        .matmul(sums)
        .reshape([c_out, c_in, 4, 2, 2])
        .permute([2, 0, 1, 3, 4])
        .reshape([4 * c_out, c_in, 2, 2])
}

thread_local! {
    /// [`tap_sums`]' matrices on their device, by taps, size and device: uploaded once, not
    /// at every step (an upload also ends a fusion block on a GPU).
    static TAP_SUMS: std::cell::RefCell<std::collections::HashMap<String, Tensor<2>>> =
        Default::default();
}

/// `[k k, 16]`, column (a, b, t, u) 1 at the weight's taps (kh, kw) that phase kernel
/// (a, b)'s tap (t, u) sums, 0 elsewhere.
fn tap_sums(taps: &PhaseTaps, k: usize, device: &Device) -> Tensor<2> {
    TAP_SUMS.with_borrow_mut(|uploaded| {
        let key = format!("{taps:?} {k} {device:?} {}", device.is_autodiff());
        let build = || {
            let mut sums = vec![0f32; k * k * 16];
            for column in 0..16 {
                let (a, b, t, u) = (column / 8, column / 4 % 2, column / 2 % 2, column % 2);
                for &kh in taps[a][t] {
                    for &kw in taps[b][u] {
                        sums[(kh * k + kw) * 16 + column] = 1.0;
                    }
                }
            }
            Tensor::<2>::from_data(TensorData::new(sums, [k * k, 16]), device)
        };
        uploaded.entry(key).or_insert_with(build).clone()
    })
}

/// [`conv2d`] as one matrix product over the input's columns.
pub fn im2col_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pad: usize,
) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let [c_out, c_in, k, _] = weight.dims();
    let h_out = (h + 2 * pad - k) / stride + 1;
    let w_out = (w + 2 * pad - k) / stride + 1;
    // Output pixel i reads input pixel i stride + tap - pad, or a zero in the padding.
    let source = |i: usize, tap: usize, side: usize| {
        (i * stride + tap).checked_sub(pad).filter(|&y| y < side)
    };
    let key = ("im2col", [h, w, k, stride, pad]);
    let weights = weight.reshape([c_out, c_in * k * k]);
    columns_product(x, weights, bias, key, [k, h_out, w_out], source)
}

/// For the transposed convolutions that double the side (kernel 4, stride 2, padding 1, as
/// dcgan-classic's G), output pixel (2i + a, 2j + b) takes its rows from input rows {i - 1, i}
/// (a = 0) through kernel rows 3 and 1, and from rows {i, i + 1} (a = 1) through 2 and 0:
/// [`phase_conv`]'s taps, with the kernel flipped as a transposed convolution reads it.
const DOUBLING_TAPS: PhaseTaps = [[&[3], &[1]], [&[2], &[0]]];

/// A transposed convolution of `x` `[B, Cin, H, W]` with `weight` `[Cin, Cout, k, k]` out of
/// the GPU path's operations: the doubling ones as four 2x2 phase convolutions (no product
/// with the zeros between the input's pixels), any other as one matrix product over columns
/// that gather, for each output pixel and tap, the input pixel it reads (or a zero).
pub fn columns_conv_transpose2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pad: usize,
) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let [c_in, c_out, k, _] = weight.dims();
    // `[Cout, Cin, k, k]`, the layout of the convolutions' weights
    let weight = weight.swap_dims(0, 1);
    if (k, stride, pad) == (4, 2, 1) {
        return phase_conv(x, weight, bias, &DOUBLING_TAPS);
    }
    let h_out = (h - 1) * stride + k - 2 * pad;
    let w_out = (w - 1) * stride + k - 2 * pad;
    // Output pixel i reads input pixel y through a tap where i = y stride - pad + tap: where
    // the division is exact and y in range.
    let source = |i: usize, tap: usize, side: usize| {
        let shifted = (i + pad).checked_sub(tap)?;
        (shifted % stride == 0 && shifted / stride < side).then_some(shifted / stride)
    };
    let key = ("transposed columns", [h, w, k, stride, pad]);
    let weights = weight.reshape([c_out, c_in * k * k]);
    columns_product(x, weights, bias, key, [k, h_out, w_out], source)
}

/// `weights` `[Cout, Cin k k]` times the columns of `x` `[B, Cin, H, W]`, plus `bias` per
/// output channel: `[B, Cout, H', W']`. Column row (c, kh, kw), position (i, j) is input pixel
/// (`source(i, kh, H)`, `source(j, kw, W)`) of channel c, or a zero where either is none; the
/// columns are one gather ([`remap`], its map cached under `key`).
fn columns_product(
    x: Tensor<4>,
    weights: Tensor<2>,
    bias: Option<Tensor<1>>,
    key: MapKey,
    [k, h_out, w_out]: [usize; 3],
    source: impl Fn(usize, usize, usize) -> Option<usize>,
) -> Tensor<4> {
    let [batch, c_in, h, w] = x.dims();
    let [c_out, rows] = weights.dims();
    let map = || {
        let at = (0..k * k * h_out * w_out).map(|column| {
            let (tap, position) = (column / (h_out * w_out), column % (h_out * w_out));
            let y = source(position / w_out, tap / k, h);
            let x = source(position % w_out, tap % k, w);
            y.zip(x).map_or(h * w, |(y, x)| y * w + x)
        });
        Map::new(h * w, at.collect())
    };
    let columns =
        remap(x.reshape([batch, c_in, h * w]), key, map).reshape([batch, rows, h_out * w_out]);
    let product =
        (weights.unsqueeze_dim::<3>(0).matmul(columns)).reshape([batch, c_out, h_out, w_out]);
    // Added after the reshape: added before it, the bias was a kernel of its own (fusion ends
    // at a reshape); after it, it joins the activation's kernel.
    with_bias(product, bias)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;

    /// `mine` and `theirs` agree to a relative 1e-4, and so do the gradients `read` takes
    /// from the backward pass of one random probe through each.
    fn assert_agree(
        case: &str,
        mine: Tensor<4>,
        theirs: Tensor<4>,
        read: impl Fn(&burn::tensor::Gradients) -> Vec<Tensor<4>>,
    ) {
        assert_eq!(mine.dims(), theirs.dims(), "{case}");
        assert!(
            max_relative_error(mine.clone(), theirs.clone()) < 1e-4,
            "{case}"
        );
        let normal = Distribution::Normal(0.0, 1.0);
        let probe = Tensor::<4>::random(mine.dims(), normal, &mine.device());
        let grads = |y: Tensor<4>| read(&(y * probe.clone()).sum().backward());
        for (i, (a, b)) in grads(mine).into_iter().zip(grads(theirs)).enumerate() {
            assert!(max_relative_error(a, b) < 1e-4, "{case}: gradient {i}");
        }
    }

    /// The largest absolute difference relative to the largest magnitude of `b`.
    pub(crate) fn max_relative_error(a: Tensor<4>, b: Tensor<4>) -> f32 {
        // A value a kernel never wrote (NaN in the tests, see `kernels::filled`) must not hide
        // from `max`.
        if a.clone().is_nan().any().into_scalar::<bool>() {
            return f32::INFINITY;
        }
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-6);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Forward, input gradient and weight gradient against burn's own `conv2d` on random
    /// shapes: stride 1 and 2, padding 0 to 2, odd sizes, batch 1, single channels, batches
    /// that do not fill the kernel's last group, outputs small enough for its whole-batch
    /// products and large enough for its per-image ones, few input channels and many (the
    /// kernel's two layouts of column buffers); for the kernel op ([`conv2d`] when
    /// trained) and for the composition of burn ops ([`im2col_conv2d`], the GPU path).
    #[test]
    fn matches_burns_conv2d_with_gradients() {
        let device = crate::backend::device().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        type Conv = fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, usize, usize) -> Tensor<4>;
        let kernel: Conv = |x, w, b, stride, pad| conv2d(x, w, b, [stride, pad]);
        for (name, ours) in [("kernel", kernel), ("im2col", im2col_conv2d as Conv)] {
            for (batch, c_in, c_out, h, w, k, stride, pad, bias) in [
                (2, 3, 4, 9, 7, 3, 1, 1, true),
                (1, 1, 1, 5, 5, 3, 2, 1, true),
                (3, 4, 8, 32, 32, 3, 2, 1, false),
                (2, 5, 3, 6, 9, 2, 1, 1, true),
                (1, 2, 6, 7, 4, 3, 1, 0, true),
                (4, 16, 1, 8, 8, 3, 2, 1, true),
                (9, 3, 5, 6, 5, 3, 2, 1, true),
                (6, 2, 3, 4, 4, 4, 2, 1, false),
                (5, 7, 2, 3, 3, 3, 1, 2, true),
                (9, 2, 3, 20, 18, 3, 1, 1, true),
                (6, 3, 4, 17, 16, 3, 2, 1, false),
                // 16 or more input channels, strided or under 8 output columns: the kernel's
                // pixel-row column buffers
                (5, 16, 4, 8, 8, 4, 2, 1, false),
                (3, 17, 5, 9, 7, 3, 1, 1, true),
                (2, 20, 3, 5, 5, 3, 1, 2, true),
                (6, 16, 2, 16, 16, 4, 2, 1, false),
                (1, 24, 3, 4, 4, 4, 1, 0, true),
                (5, 16, 6, 14, 6, 2, 1, 1, true),
                (3, 18, 2, 11, 10, 3, 2, 0, false),
                // the quickstart D's layers at batch 64 (products large enough to be threaded)
                (64, 16, 32, 16, 16, 3, 2, 1, true),
                (64, 32, 64, 8, 8, 3, 2, 1, true),
                (64, 64, 128, 4, 4, 3, 2, 1, true),
            ] {
                let case =
                    format!("{name} {batch}x{c_in}x{h}x{w} -> {c_out}, k{k} s{stride} p{pad}");
                let x = Tensor::<4>::random([batch, c_in, h, w], normal, &device).require_grad();
                let weight =
                    Tensor::<4>::random([c_out, c_in, k, k], normal, &device).require_grad();
                let b = bias.then(|| Tensor::<1>::random([c_out], normal, &device).require_grad());
                let mine = ours(x.clone(), weight.clone(), b.clone(), stride, pad);
                let theirs = burn_conv2d(
                    x.clone(),
                    weight.clone(),
                    b.clone(),
                    ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
                );
                assert_agree(&case, mine, theirs, |grads| {
                    let db = b
                        .as_ref()
                        .map(|b| b.grad(grads).unwrap().reshape([1, 1, 1, c_out]));
                    [
                        Some(x.grad(grads).unwrap()),
                        Some(weight.grad(grads).unwrap()),
                        db,
                    ]
                    .into_iter()
                    .flatten()
                    .collect()
                });
            }
        }
    }

    /// The transposed convolution against burn's, forward and all gradients: the shapes of
    /// dcgan-classic's G (1x1 -> 4x4, then doubling) and odd ones, inputs small and large
    /// (the kernel's whole-batch and per-image products), few output channels and many; for
    /// the kernel op and for the GPU path's composition ([`columns_conv_transpose2d`]: phase
    /// convolutions for the doubling ones, one product over columns for the others).
    #[test]
    fn transposed_matches_burns_with_gradients() {
        use burn::nn::conv::ConvTranspose2dConfig;
        let device = crate::backend::device().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        for (batch, c_in, c_out, side, k, stride, pad, bias) in [
            (3, 8, 4, 1, 4, 1, 0, false),
            (2, 4, 3, 4, 4, 2, 1, true),
            (5, 3, 1, 7, 4, 2, 1, false),
            (1, 1, 2, 5, 3, 1, 1, true),
            (6, 2, 3, 3, 3, 2, 0, true),
            (5, 3, 2, 10, 4, 2, 1, true),
            (9, 4, 3, 12, 3, 1, 1, false),
            // 16 or more output channels, strided or under 8 input columns: the kernel's
            // pixel-row column buffers
            (5, 8, 16, 1, 4, 1, 0, false),
            (3, 6, 18, 4, 4, 2, 1, true),
            (6, 4, 16, 8, 4, 2, 1, false),
            (2, 3, 17, 5, 3, 1, 1, true),
        ] {
            let case = format!("{batch}x{c_in}x{side} -> {c_out}, k{k} s{stride} p{pad}");
            let conv = ConvTranspose2dConfig::new([c_in, c_out], [k, k])
                .with_stride([stride, stride])
                .with_padding([pad, pad])
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<4>::random([batch, c_in, side, side], normal, &device).require_grad();
            let (weight, b) = (conv.weight.val(), conv.bias.as_ref().map(|b| b.val()));
            let read = |grads: &burn::tensor::Gradients| {
                let db = (b.as_ref()).map(|b| b.grad(grads).unwrap().reshape([1, 1, 1, c_out]));
                [Some(x.grad(grads).unwrap()), weight.grad(grads), db]
                    .into_iter()
                    .flatten()
                    .collect()
            };
            let kernel = transposed(&conv, x.clone());
            assert_agree(&case, kernel, conv.forward(x.clone()), read);
            let columns =
                columns_conv_transpose2d(x.clone(), weight.clone(), b.clone(), stride, pad);
            let case = format!("{case}, columns");
            assert_agree(&case, columns, conv.forward(x.clone()), read);
        }
    }

    /// The phase kernels as one product with a 0/1 matrix (the GPU path) equal the sums of
    /// the weight's slices (the CPU's), with the weight's gradient: the upsampling taps, and
    /// single slices of a 4x4 kernel.
    #[test]
    fn product_kernels_equal_summed_kernels_with_gradients() {
        let device = crate::backend::device().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        let upsample: PhaseTaps = [[&[0], &[1, 2]], [&[0, 1], &[2]]];
        let single: PhaseTaps = [[&[3], &[1]], [&[2], &[0]]];
        for (taps, k) in [(upsample, 3), (single, 4)] {
            let weight = Tensor::<4>::random([5, 3, k, k], normal, &device).require_grad();
            let summed = summed_kernels(&weight, &taps);
            let product = product_kernels(weight.clone(), &taps);
            assert_agree(&format!("{k}x{k} taps"), product, summed, |grads| {
                vec![weight.grad(grads).unwrap()]
            });
        }
    }

    /// The kernel op on a constant input (D's first layer on real images): only the weight
    /// gradient is asked for, and it is burn's.
    #[test]
    fn kernel_weight_gradient_alone() {
        let device = crate::backend::device().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([7, 3, 10, 10], normal, &device);
        let weight = Tensor::<4>::random([4, 3, 3, 3], normal, &device).require_grad();
        let dw = |y: Tensor<4>| weight.grad(&(y.powi_scalar(2).sum().backward())).unwrap();
        let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
        let mine = dw(conv2d(x.clone(), weight.clone(), None, [2, 1]));
        let theirs = dw(burn_conv2d(x, weight.clone(), None, options));
        assert!(max_relative_error(mine, theirs) < 1e-4);
    }
}
