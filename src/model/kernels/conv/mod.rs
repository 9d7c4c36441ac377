//! The CPU convolution and transposed convolution, each one burn operation with its own
//! backward pass, plugged in through burn's backend-extension API (no fork of burn).
//!
//! Three building blocks on plain buffers, per image: the forward `W . cols(x)` (the input's
//! shifted views gathered into a column buffer, im2col, with the zero padding written there and
//! not into a padded copy; `columns.rs` has the buffers and their two layouts), the input
//! gradient `col2im(W^T . dY)` and the weight gradient `sum_b dY_b . cols(x_b)^T`. Each product
//! is one call to the `gemm` crate (the one burn-flex uses) with operands laid out so that it
//! reads them along their contiguous axis without repacking them. A transposed convolution is the input
//! gradient of a convolution, so it is built from the same three blocks in another order.
//! Composed from burn's tensor ops instead ([`crate::model::conv::im2col_conv2d`]), autodiff
//! copies, zero-fills and adds one input-sized tensor per kernel tap.
//!
//! Images run in parallel (rayon) in fixed groups of `GROUP`: the weight gradient is summed
//! per group and the groups' sums added in order, so results do not depend on the thread count.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

mod columns;

use super::{CHUNK, as_uninit, filled, tensor, transpose_into, unwritten, values, zeros};
use columns::{Geometry, Layout};

/// Images per parallel task (and per partial sum of the weight gradient).
const GROUP: usize = 4;

#[backend_extension(Flex, Autodiff)]
pub trait GemmConv: burn::backend::Backend {
    /// `x` `[B, Cin, H, W]` convolved with `weight` `[Cout, Cin, k, k]`: square kernel, the
    /// same stride and zero padding on both axes, no bias.
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self>;

    /// The transposed convolution of `x` `[B, Cin, H, W]` with `weight` `[Cin, Cout, k, k]`
    /// (PyTorch's and burn's layout): output side (H - 1) stride - 2 pad + k, no bias.
    fn gemm_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self>;
}

/// [`GemmConv::gemm_conv2d`] on burn tensors (CPU devices only).
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as GemmConv>::gemm_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        pad,
    ))
}

/// [`GemmConv::gemm_conv_transpose2d`] on burn tensors (CPU devices only).
pub fn conv_transpose2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as GemmConv>::gemm_conv_transpose2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        pad,
    ))
}

/// A matrix inside a buffer: entry (i, j) at `i * strides[0] + j * strides[1]`.
#[derive(Clone, Copy)]
struct View<'a> {
    values: &'a [f32],
    strides: [usize; 2],
}

fn view(values: &[f32], strides: [usize; 2]) -> View<'_> {
    View { values, strides }
}

/// `dst (m x n) = [dst +] lhs (m x k) . rhs (k x n)`, `dst`'s entries `dst_strides` apart
/// (read only when `accumulate`).
fn gemm_with(
    [m, n, k]: [usize; 3],
    (dst, [dst_rs, dst_cs]): (&mut [MaybeUninit<f32>], [usize; 2]),
    accumulate: bool,
    lhs: View,
    rhs: View,
    parallelism: gemm::Parallelism,
) {
    let last = |[rs, cs]: [usize; 2], rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    debug_assert!(dst.len() > last([dst_rs, dst_cs], m, n));
    debug_assert!(lhs.values.len() > last(lhs.strides, m, k));
    debug_assert!(rhs.values.len() > last(rhs.strides, k, n));
    let [lhs_rs, lhs_cs] = lhs.strides;
    let [rhs_rs, rhs_cs] = rhs.strides;
    // SAFETY: the strides describe matrices inside the slices (checked above in debug builds,
    // and by construction from `Geometry`); `dst` does not alias the inputs, and `gemm` reads
    // it only when told to accumulate, which callers do only onto written values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.values.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.values.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// [`gemm_with`] on the calling thread, writing fresh memory `dst`.
fn gemm(size: [usize; 3], dst: (&mut [MaybeUninit<f32>], [usize; 2]), lhs: View, rhs: View) {
    gemm_with(size, dst, false, lhs, rhs, gemm::Parallelism::None);
}

/// [`gemm_with`] on the calling thread, onto the values of `dst` (added to them when
/// `accumulate`, else overwriting them).
fn gemm_into(
    size: [usize; 3],
    (dst, strides): (&mut [f32], [usize; 2]),
    accumulate: bool,
    lhs: View,
    rhs: View,
) {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and `gemm` writes only floats through it.
    let dst: &mut [MaybeUninit<f32>] =
        unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast(), dst.len()) };
    let parallelism = gemm::Parallelism::None;
    gemm_with(size, (dst, strides), accumulate, lhs, rhs, parallelism);
}

/// The whole batch's product `lhs (m x k) . rhs (k x n)`, in parallel, into a new buffer of
/// `m * n` values whose entries are `dst_strides` apart (so that they fill it).
fn batch_gemm([m, n, k]: [usize; 3], dst_strides: [usize; 2], lhs: View, rhs: View) -> Vec<f32> {
    let parallel = gemm::Parallelism::Rayon(0);
    // SAFETY: the product writes its m x n entries, which fill the buffer.
    unsafe {
        filled(m * n, |dst| {
            gemm_with([m, n, k], (dst, dst_strides), false, lhs, rhs, parallel)
        })
    }
}

/// Below this many output pixels per image, the images' columns share one buffer and each
/// product is one GEMM over the whole batch (per image it would be a matrix-vector product
/// re-reading the weight once per image), at the cost of reordering the output.
const BATCHED_BELOW: usize = 64;

/// Where image `b`'s columns start in a buffer holding the whole batch's.
fn image_offset(g: &Geometry, b: usize) -> usize {
    b * g.pixels() * g.pixel_stride()
}

/// The columns of every image in one buffer, `batch * pixels` of them (tap rows: side by side
/// in each row; pixel rows: image after image).
fn batch_columns(g: &Geometry, x: &[f32]) -> Vec<f32> {
    let (pixels, ld) = (g.pixels(), g.batch * g.pixels());
    let mut cols = zeros(g.taps() * ld);
    match g.layout() {
        Layout::PixelRows => {
            cols.par_chunks_mut((g.taps() * pixels).max(1))
                .zip(x.par_chunks(g.input_len().max(1)))
                .for_each_init(Vec::new, |scratch, (cols, x)| {
                    g.im2col(x, cols, pixels, scratch)
                });
        }
        // In parallel over input channels, whose rows are contiguous blocks of the buffer.
        Layout::TapRows => {
            let plane = g.input_len() / g.c_in;
            let one_channel = g.one_channel();
            cols.par_chunks_mut((one_channel.taps() * ld).max(1))
                .enumerate()
                .for_each(|(ci, rows)| {
                    for b in 0..g.batch {
                        let x = &x[b * g.input_len() + ci * plane..][..plane];
                        one_channel.im2col(x, &mut rows[b * pixels..], ld, &mut Vec::new());
                    }
                });
        }
    }
    cols
}

/// `[B, C, P]` values reordered as `[C, B, P]` (and back with `batch` and `c` swapped).
fn swap_outer(values: &[f32], [batch, c, pixels]: [usize; 3]) -> Vec<f32> {
    // SAFETY: each of the `c * batch` runs of `pixels` values is copied.
    unsafe {
        filled(values.len(), |out| {
            out.par_chunks_mut((batch * pixels).max(1))
                .enumerate()
                .for_each(|(ch, out)| {
                    for (b, out) in out.chunks_mut(pixels.max(1)).enumerate() {
                        let from = (b * c + ch) * pixels;
                        out.copy_from_slice(as_uninit(&values[from..from + pixels]));
                    }
                })
        })
    }
}

/// Images of `[P, C]` values reordered as `[C, P]`.
fn channels_first(values: &[f32], [pixels, c]: [usize; 2]) -> Vec<f32> {
    let image = (pixels * c).max(1);
    // SAFETY: each image is transposed whole.
    unsafe {
        filled(values.len(), |out| {
            out.par_chunks_mut(image)
                .zip(values.par_chunks(image))
                .for_each(|(out, values)| transpose_into(values, out, c, pixels))
        })
    }
}

/// From the column buffers of the convolution's input `x`: its output `[B, Cout, Ho, Wo]`
/// (given the weight `w`) and its weight gradient `[Cout, Cin, k, k]` (given the output
/// gradient `dy`), whichever are asked for; one im2col per image serves both.
fn column_products(
    g: &Geometry,
    x: &[f32],
    w: Option<&[f32]>,
    dy: Option<&[f32]>,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (taps, pixels) = (g.taps(), g.pixels());
    if g.is_empty() || (w.is_none() && dy.is_none()) {
        return (
            w.map(|_| zeros(g.batch * g.output_len())),
            dy.map(|_| zeros(g.c_out * taps)),
        );
    }
    let w = w.map(|w| g.forward_weight(w));
    let w = w.as_ref().map(|(w, strides)| view(w, *strides));
    if pixels < BATCHED_BELOW {
        let n = g.batch * pixels;
        let cols = batch_columns(g, x);
        let [tap_stride, pixel_stride] = g.column_strides(n);
        let out = w.map(|w| {
            let cols = view(&cols, [tap_stride, pixel_stride]);
            match g.layout() {
                Layout::TapRows => {
                    let product = batch_gemm([g.c_out, n, taps], [n, 1], w, cols);
                    swap_outer(&product, [g.c_out, g.batch, pixels])
                }
                Layout::PixelRows => {
                    let product = batch_gemm([g.c_out, n, taps], [1, g.c_out], w, cols);
                    channels_first(&product, [pixels, g.c_out])
                }
            }
        });
        let dw = dy.map(|dy| {
            let dy = swap_outer(dy, [g.batch, g.c_out, pixels]);
            let cols_t = view(&cols, [pixel_stride, tap_stride]);
            let dw = batch_gemm([g.c_out, taps, n], [taps, 1], view(&dy, [n, 1]), cols_t);
            g.weight_from_tap_order(dw)
        });
        return (out, dw);
    }
    let [tap_stride, pixel_stride] = g.column_strides(pixels);
    let out_len = g.batch * g.output_len();
    let mut out = w.map(|_| Vec::new());
    let groups: Vec<Option<&mut [MaybeUninit<f32>]>> = match out.as_mut() {
        Some(out) => (unwritten(out, out_len).chunks_mut(g.output_len() * GROUP))
            .map(Some)
            .collect(),
        None => (0..g.batch.div_ceil(GROUP)).map(|_| None).collect(),
    };
    let partials: Vec<Option<Vec<f32>>> = groups
        .into_par_iter()
        .enumerate()
        .map(|(group, mut out)| {
            let (mut cols, mut scratch) = (vec![0f32; taps * pixels], Vec::new());
            // Pixel rows' forward product, channels-last, before it is transposed into `out`.
            let mut product = match (g.layout(), w) {
                (Layout::PixelRows, Some(_)) => vec![0f32; g.output_len()],
                _ => Vec::new(),
            };
            // The group's weight gradient, from its first image's product on.
            let mut dw: Option<Vec<f32>> = None;
            for (i, b) in (group * GROUP..((group + 1) * GROUP).min(g.batch)).enumerate() {
                let x = &x[b * g.input_len()..(b + 1) * g.input_len()];
                g.im2col(x, &mut cols, pixels, &mut scratch);
                if let (Some(w), Some(out)) = (w, out.as_deref_mut()) {
                    // out_b (Cout x pixels) = W (Cout x taps) . cols (taps x pixels)
                    let out = &mut out[i * g.output_len()..(i + 1) * g.output_len()];
                    let cols = view(&cols, [tap_stride, pixel_stride]);
                    let size = [g.c_out, pixels, taps];
                    match g.layout() {
                        Layout::TapRows => gemm(size, (out, g.output_strides()), w, cols),
                        Layout::PixelRows => {
                            let dst = (&mut product[..], g.output_strides());
                            gemm_into(size, dst, false, w, cols);
                            transpose_into(&product, out, g.c_out, pixels);
                        }
                    }
                }
                if let Some(dy) = dy {
                    // dW (Cout x taps) += dY_b (Cout x pixels) . cols^T (pixels x taps)
                    let dy = view(
                        &dy[b * g.output_len()..(b + 1) * g.output_len()],
                        [pixels, 1],
                    );
                    let cols_t = view(&cols, [pixel_stride, tap_stride]);
                    let size = [g.c_out, taps, pixels];
                    match dw.as_mut() {
                        Some(dw) => gemm_into(size, (dw, [taps, 1]), true, dy, cols_t),
                        None => {
                            let first = |dw: &mut _| gemm(size, (dw, [taps, 1]), dy, cols_t);
                            // SAFETY: the product's c_out x taps entries fill the buffer.
                            dw = Some(unsafe { filled(g.c_out * taps, first) });
                        }
                    }
                }
            }
            dw
        })
        .collect();
    if let Some(out) = out.as_mut() {
        // SAFETY: each group wrote the outputs of each of its images, which fill the buffer.
        unsafe { out.set_len(out_len) };
    }
    // The groups' sums added in order onto the first's, so the result does not depend on the
    // thread count.
    let dw = dy.map(|_| {
        let mut partials = partials.into_iter().flatten();
        let mut sum = partials.next().expect("a batch has a first group");
        let rest: Vec<Vec<f32>> = partials.collect();
        sum.par_chunks_mut(CHUNK).enumerate().for_each(|(i, sum)| {
            for partial in &rest {
                let partial = &partial[i * CHUNK..];
                sum.iter_mut().zip(partial).for_each(|(s, p)| *s += p);
            }
        });
        g.weight_from_tap_order(sum)
    });
    (out, dw)
}

/// The gradient for the convolution's input `[B, Cin, H, W]`, given its weight `w` and the
/// gradient `dy` of its output.
fn input_grad(g: &Geometry, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (taps, pixels) = (g.taps(), g.pixels());
    let dx_len = g.batch * g.input_len();
    if g.is_empty() {
        return zeros(dx_len);
    }
    let (w_t, w_t_strides) = g.input_grad_weight(w);
    let w_t = view(&w_t, w_t_strides);
    if pixels < BATCHED_BELOW {
        let n = g.batch * pixels;
        let dy = swap_outer(dy, [g.batch, g.c_out, pixels]);
        let cols = batch_gemm(
            [taps, n, g.c_out],
            g.column_strides(n),
            w_t,
            view(&dy, [n, 1]),
        );
        // SAFETY: col2im writes each image's input gradient whole.
        return unsafe {
            filled(dx_len, |dx| {
                dx.par_chunks_mut(g.input_len().max(1))
                    .enumerate()
                    .for_each_init(Vec::new, |scratch, (b, dx)| {
                        g.col2im(&cols[image_offset(g, b)..], dx, n, scratch)
                    })
            })
        };
    }
    let col_strides = g.column_strides(pixels);
    // SAFETY: col2im writes each image's input gradient whole.
    unsafe {
        filled(dx_len, |dx| {
            dx.par_chunks_mut(g.input_len() * GROUP)
                .enumerate()
                .for_each(|(group, dx)| {
                    let (mut cols, mut scratch) = (vec![0f32; taps * pixels], Vec::new());
                    for (i, dx) in dx.chunks_mut(g.input_len()).enumerate() {
                        let b = group * GROUP + i;
                        let dy = view(
                            &dy[b * g.output_len()..(b + 1) * g.output_len()],
                            [pixels, 1],
                        );
                        // dcols (taps x pixels) = W^T (taps x Cout) . dY_b (Cout x pixels)
                        let size = [taps, pixels, g.c_out];
                        gemm_into(size, (&mut cols, col_strides), false, w_t, dy);
                        g.col2im(&cols, dx, pixels, &mut scratch);
                    }
                })
        })
    }
}

/// Which of the two operations.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Conv,
    Transposed,
}

impl Kind {
    fn geometry(self, x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize) -> Geometry {
        match self {
            Kind::Conv => Geometry::conv(x, weight, stride, pad),
            Kind::Transposed => Geometry::transposed(x, weight, stride, pad),
        }
    }

    fn forward(self, x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize) -> FlexTensor {
        let g = self.geometry(x, weight, stride, pad);
        let (x, w) = (values(x), values(weight));
        match self {
            Kind::Conv => {
                let (out, _) = column_products(&g, &x, Some(&w), None);
                tensor(out.expect("asked for"), g.output_shape())
            }
            // The convolution's input gradient, `x` in the role of its output gradient.
            Kind::Transposed => tensor(input_grad(&g, &w, &x), g.input_shape()),
        }
    }

    /// The gradients for the input (when `want_dx`) and the weight (when `want_dw`).
    fn backward(
        self,
        x: &FlexTensor,
        weight: &FlexTensor,
        d_out: &FlexTensor,
        [stride, pad]: [usize; 2],
        [want_dx, want_dw]: [bool; 2],
    ) -> (Option<FlexTensor>, Option<FlexTensor>) {
        let g = self.geometry(x, weight, stride, pad);
        let (x, w, d_out) = (values(x), values(weight), values(d_out));
        match self {
            Kind::Conv => (
                want_dx.then(|| tensor(input_grad(&g, &w, &d_out), g.input_shape())),
                column_products(&g, &x, None, want_dw.then_some(&d_out[..]))
                    .1
                    .map(|dw| tensor(dw, g.weight_shape())),
            ),
            // The output gradient is the convolution's input, `x` its output gradient: both
            // gradients come from the column buffers of `d_out`.
            Kind::Transposed => {
                let (dx, dw) = column_products(
                    &g,
                    &d_out,
                    want_dx.then_some(&w[..]),
                    want_dw.then_some(&x[..]),
                );
                (
                    dx.map(|dx| tensor(dx, g.output_shape())),
                    dw.map(|dw| tensor(dw, g.weight_shape())),
                )
            }
        }
    }
}

impl GemmConv for Flex {
    fn gemm_conv2d(x: FlexTensor, weight: FlexTensor, stride: usize, pad: usize) -> FlexTensor {
        Kind::Conv.forward(&x, &weight, stride, pad)
    }

    fn gemm_conv_transpose2d(
        x: FlexTensor,
        weight: FlexTensor,
        stride: usize,
        pad: usize,
    ) -> FlexTensor {
        Kind::Transposed.forward(&x, &weight, stride, pad)
    }
}

/// The backward step of both operations; its state is the forward's input and weight.
#[derive(Debug)]
struct GemmConvBackward {
    kind: Kind,
    stride: usize,
    pad: usize,
}

impl Backward<Flex, 2> for GemmConvBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        let (x, weight) = ops.state;
        let (dx, dw) = self.kind.backward(
            &x,
            &weight,
            &d_out,
            [self.stride, self.pad],
            [node_x.is_some(), node_weight.is_some()],
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (node_weight, dw) {
            grads.register::<Flex>(node.id, dw);
        }
    }
}

/// Either operation on the autodiff backend: the forward, and its backward step registered.
fn tracked<C: CheckpointStrategy>(
    kind: Kind,
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    stride: usize,
    pad: usize,
) -> FloatTensor<Autodiff<Flex, C>> {
    match (GemmConvBackward { kind, stride, pad })
        .prepare::<C>([x.node(), weight.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (x, weight) = (x.primitive().clone(), weight.primitive().clone());
            let out = kind.forward(&x, &weight, stride, pad);
            prep.finish((x, weight), out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(kind.forward(x.primitive(), weight.primitive(), stride, pad))
        }
    }
}

impl<C: CheckpointStrategy> GemmConv for Autodiff<Flex, C> {
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        tracked::<C>(Kind::Conv, x, weight, stride, pad)
    }

    fn gemm_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        tracked::<C>(Kind::Transposed, x, weight, stride, pad)
    }
}
