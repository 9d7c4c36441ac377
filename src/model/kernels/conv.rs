//! The CPU convolution and transposed convolution, each one burn operation with its own
//! backward pass, plugged in through burn's backend-extension API (no fork of burn).
//!
//! Three building blocks on plain buffers, per image: the forward `W . cols(x)` (the input's
//! shifted views gathered into a column buffer, im2col, with the zero padding written there and
//! not into a padded copy), the input gradient `col2im(W^T . dY)` and the weight gradient
//! `sum_b dY_b . cols(x_b)^T`. Each product is one call to the `gemm` crate (the one burn-flex
//! uses) on buffers in the layouts it reads directly. A transposed convolution is the input
//! gradient of a convolution, so it is built from the same three blocks in another order.
//! Composed from burn's tensor ops instead ([`crate::model::conv::im2col_conv2d`]), autodiff
//! copies, zero-fills and adds one input-sized tensor per kernel tap.
//!
//! Images run in parallel (rayon) in fixed groups of [`GROUP`]: the weight gradient is summed
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

use super::{tensor, values};

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

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    h_out: usize,
    w_out: usize,
}

impl Geometry {
    /// The convolution of `x` with `weight`.
    fn conv(x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize) -> Self {
        let [batch, c_in, h, w] = dims(x);
        let [c_out, c_in_w, k, k_w] = dims(weight);
        assert!(
            c_in == c_in_w && k == k_w,
            "gemm_conv2d: weight {c_out}x{c_in_w}x{k}x{k_w} for {c_in} input channels"
        );
        Geometry::new([batch, c_in, h, w], [c_out, k], stride, pad)
    }

    /// The convolution whose input gradient is the transposed convolution of `x` with
    /// `weight`: its input is the transposed convolution's output, its output `x`'s shape.
    fn transposed(x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize) -> Self {
        let [batch, c_in, h, w] = dims(x);
        let [c_in_w, c_out, k, k_w] = dims(weight);
        assert!(
            c_in == c_in_w && k == k_w && stride > 0,
            "gemm_conv_transpose2d: weight {c_in_w}x{c_out}x{k}x{k_w} for {c_in} input channels"
        );
        let side = |n: usize| ((n - 1) * stride + k).checked_sub(2 * pad);
        let (Some(h_up), Some(w_up)) = (side(h), side(w)) else {
            panic!("gemm_conv_transpose2d: padding {pad} larger than the output");
        };
        let g = Geometry::new([batch, c_out, h_up, w_up], [c_in, k], stride, pad);
        assert_eq!((g.h_out, g.w_out), (h, w), "gemm_conv_transpose2d: sizes");
        g
    }

    fn new(
        [batch, c_in, h, w]: [usize; 4],
        [c_out, k]: [usize; 2],
        stride: usize,
        pad: usize,
    ) -> Self {
        assert!(
            h + 2 * pad >= k && w + 2 * pad >= k && stride > 0,
            "gemm_conv2d: kernel larger than the padded input"
        );
        Geometry {
            batch,
            c_in,
            h,
            w,
            c_out,
            k,
            stride,
            pad,
            h_out: (h + 2 * pad - k) / stride + 1,
            w_out: (w + 2 * pad - k) / stride + 1,
        }
    }

    /// Rows of the column buffer: one per (input channel, kernel row, kernel column).
    fn taps(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Columns of the column buffer: one per output pixel.
    fn pixels(&self) -> usize {
        self.h_out * self.w_out
    }

    fn input_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    fn output_len(&self) -> usize {
        self.c_out * self.pixels()
    }

    fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.c_in, self.h, self.w]
    }

    fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.c_out, self.h_out, self.w_out]
    }

    fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in, self.k, self.k]
    }

    /// Whether there is anything to compute.
    fn is_empty(&self) -> bool {
        self.batch == 0 || self.pixels() == 0
    }

    /// For kernel offset `kx` along an axis of `len` input pixels: the output positions
    /// `lo..hi` whose input pixel `o * stride + kx - pad` lies inside the image.
    fn valid(&self, kx: usize, len: usize, out_len: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = self.pad.saturating_sub(kx).div_ceil(s);
        let hi = (len + self.pad).saturating_sub(kx).div_ceil(s).min(out_len);
        (lo.min(hi), hi)
    }

    /// Visits, for every tap row of a column buffer whose rows start `ld` apart and output row
    /// `oy` that reads inside the image, the input row offset, the buffer offset and the valid
    /// output columns.
    fn for_each_span(&self, ld: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
        let k = self.k;
        for ci in 0..self.c_in {
            for ky in 0..k {
                let (oy_lo, oy_hi) = self.valid(ky, self.h, self.h_out);
                for kx in 0..k {
                    let (ox_lo, ox_hi) = self.valid(kx, self.w, self.w_out);
                    let row = ((ci * k + ky) * k + kx) * ld;
                    for oy in oy_lo..oy_hi {
                        let iy = oy * self.stride + ky - self.pad;
                        let input =
                            (ci * self.h + iy) * self.w + ox_lo * self.stride + kx - self.pad;
                        f(input, row + oy * self.w_out + ox_lo, ox_lo, ox_hi);
                    }
                }
            }
        }
    }

    /// The column buffer of one image: `taps` rows of `pixels` values, `ld` apart (`pixels`
    /// for a buffer of its own; several images' columns can share rows). Only the entries
    /// that read the image are written: `cols` must hold zeros where taps read the padding,
    /// as a zeroed buffer does, and one that only this geometry's im2col wrote since.
    fn im2col(&self, x: &[f32], cols: &mut [f32], ld: usize) {
        let s = self.stride;
        self.for_each_span(ld, |input, at, lo, hi| {
            let out = &mut cols[at..at + (hi - lo)];
            match s {
                1 => out.copy_from_slice(&x[input..input + (hi - lo)]),
                2 => gather::<2>(out, &x[input..]),
                _ => out
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, o)| *o = x[input + j * s]),
            }
        });
    }

    /// Adds a column buffer's entries (laid out as [`Self::im2col`] writes them) back onto the
    /// input pixels they were read from.
    fn col2im(&self, cols: &[f32], dx: &mut [f32], ld: usize) {
        let s = self.stride;
        self.for_each_span(ld, |input, at, lo, hi| {
            let cols = &cols[at..at + (hi - lo)];
            match s {
                1 => {
                    let dx = &mut dx[input..input + cols.len()];
                    dx.iter_mut().zip(cols).for_each(|(d, c)| *d += c);
                }
                2 => scatter_add::<2>(cols, &mut dx[input..]),
                _ => cols
                    .iter()
                    .enumerate()
                    .for_each(|(j, c)| dx[input + j * s] += c),
            }
        });
    }
}

/// `out[j] = src[j * S]`: stride 2 (the common one) gets a loop without bounds checks.
fn gather<const S: usize>(out: &mut [f32], src: &[f32]) {
    if let Some(last) = out.len().checked_sub(1) {
        let src = &src[..last * S + 1];
        out.iter_mut()
            .zip(src.chunks(S))
            .for_each(|(o, chunk)| *o = chunk[0]);
    }
}

/// `dst[j * S] += values[j]`, the reverse of [`gather`].
fn scatter_add<const S: usize>(values: &[f32], dst: &mut [f32]) {
    if let Some(last) = values.len().checked_sub(1) {
        let dst = &mut dst[..last * S + 1];
        dst.chunks_mut(S)
            .zip(values)
            .for_each(|(chunk, v)| chunk[0] += v);
    }
}

fn dims(t: &FlexTensor) -> [usize; 4] {
    let shape = t.layout().shape();
    assert_eq!(
        shape.num_dims(),
        4,
        "the convolution kernels take 4-D tensors"
    );
    std::array::from_fn(|i| shape[i])
}

/// `dst (m x n) = [dst +] lhs (m x k) . rhs (k x n)`, each given by its row and column
/// strides, on the calling thread.
fn gemm(
    size: [usize; 3],
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: [usize; 2],
    rhs: &[f32],
    rhs_strides: [usize; 2],
) {
    let serial = gemm::Parallelism::None;
    gemm_with(
        size,
        dst,
        accumulate,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        serial,
    );
}

/// [`gemm`] with the given parallelism.
#[allow(clippy::too_many_arguments)]
fn gemm_with(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    [lhs_rs, lhs_cs]: [usize; 2],
    rhs: &[f32],
    [rhs_rs, rhs_cs]: [usize; 2],
    parallelism: gemm::Parallelism,
) {
    debug_assert!(dst.len() >= m * n);
    debug_assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the strides describe matrices inside the slices (checked above in debug builds,
    // and by construction from `Geometry`); `dst` does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
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

/// Below this many output pixels per image, the images' columns share one buffer and each
/// product is one GEMM over the whole batch (per image it would be a matrix-vector product
/// re-reading the weight once per image), at the cost of reordering the output.
const BATCHED_BELOW: usize = 64;

/// The columns of every image side by side: `taps` rows of `batch * pixels` values.
fn batch_columns(g: &Geometry, x: &[f32]) -> Vec<f32> {
    let (pixels, ld) = (g.pixels(), g.batch * g.pixels());
    let mut cols = vec![0f32; g.taps() * ld];
    // In parallel over input channels, whose rows are contiguous blocks of the buffer.
    let plane = g.h * g.w;
    let one_channel = Geometry { c_in: 1, ..*g };
    cols.par_chunks_mut((g.k * g.k * ld).max(1))
        .enumerate()
        .for_each(|(ci, rows)| {
            for b in 0..g.batch {
                let x = &x[b * g.input_len() + ci * plane..][..plane];
                one_channel.im2col(x, &mut rows[b * pixels..], ld);
            }
        });
    cols
}

/// `[B, C, P]` values reordered as `[C, B, P]` (and back with `batch` and `c` swapped).
fn swap_outer(values: &[f32], [batch, c, pixels]: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    out.par_chunks_mut((batch * pixels).max(1))
        .enumerate()
        .for_each(|(ch, out)| {
            for (b, out) in out.chunks_mut(pixels.max(1)).enumerate() {
                let from = (b * c + ch) * pixels;
                out.copy_from_slice(&values[from..from + pixels]);
            }
        });
    out
}

/// The whole batch's product `dst (m x n) = lhs (m x k) . rhs (k x n)`, in parallel.
fn batch_gemm(
    [m, n, k]: [usize; 3],
    lhs: &[f32],
    lhs_strides: [usize; 2],
    rhs: &[f32],
    rhs_strides: [usize; 2],
) -> Vec<f32> {
    let mut dst = vec![0f32; m * n];
    gemm_with(
        [m, n, k],
        &mut dst,
        false,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        gemm::Parallelism::Rayon(0),
    );
    dst
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
            w.map(|_| vec![0f32; g.batch * g.output_len()]),
            dy.map(|_| vec![0f32; g.c_out * taps]),
        );
    }
    if pixels < BATCHED_BELOW {
        let n = g.batch * pixels;
        let cols = batch_columns(g, x);
        let out = w.map(|w| {
            let product = batch_gemm([g.c_out, n, taps], w, [taps, 1], &cols, [n, 1]);
            swap_outer(&product, [g.c_out, g.batch, pixels])
        });
        let dw = dy.map(|dy| {
            let dy = swap_outer(dy, [g.batch, g.c_out, pixels]);
            batch_gemm([g.c_out, taps, n], &dy, [n, 1], &cols, [1, n])
        });
        return (out, dw);
    }
    let mut out = w.map(|_| vec![0f32; g.batch * g.output_len()]);
    let groups: Vec<Option<&mut [f32]>> = match out.as_mut() {
        Some(out) => out.chunks_mut(g.output_len() * GROUP).map(Some).collect(),
        None => (0..g.batch.div_ceil(GROUP)).map(|_| None).collect(),
    };
    let partials: Vec<Option<Vec<f32>>> = groups
        .into_par_iter()
        .enumerate()
        .map(|(group, mut out)| {
            let mut cols = vec![0f32; taps * pixels];
            let mut dw = dy.map(|_| vec![0f32; g.c_out * taps]);
            for (i, b) in (group * GROUP..((group + 1) * GROUP).min(g.batch)).enumerate() {
                g.im2col(
                    &x[b * g.input_len()..(b + 1) * g.input_len()],
                    &mut cols,
                    pixels,
                );
                if let (Some(w), Some(out)) = (w, out.as_deref_mut()) {
                    // out_b (Cout x pixels) = W (Cout x taps) . cols (taps x pixels)
                    let out = &mut out[i * g.output_len()..(i + 1) * g.output_len()];
                    let size = [g.c_out, pixels, taps];
                    gemm(size, out, false, w, [taps, 1], &cols, [pixels, 1]);
                }
                if let (Some(dy), Some(dw)) = (dy, dw.as_mut()) {
                    // dW (Cout x taps) += dY_b (Cout x pixels) . cols^T (pixels x taps)
                    let dy = &dy[b * g.output_len()..(b + 1) * g.output_len()];
                    let size = [g.c_out, taps, pixels];
                    gemm(size, dw, i > 0, dy, [pixels, 1], &cols, [1, pixels]);
                }
            }
            dw
        })
        .collect();
    // The groups' sums added in order, so the result does not depend on the thread count.
    let dw = dy.map(|_| {
        let mut sum = vec![0f32; g.c_out * taps];
        for partial in partials.iter().flatten() {
            sum.iter_mut().zip(partial).for_each(|(s, p)| *s += p);
        }
        sum
    });
    (out, dw)
}

/// The gradient for the convolution's input `[B, Cin, H, W]`, given its weight `w` and the
/// gradient `dy` of its output.
fn input_grad(g: &Geometry, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (taps, pixels) = (g.taps(), g.pixels());
    let mut dx = vec![0f32; g.batch * g.input_len()];
    if g.is_empty() {
        return dx;
    }
    if pixels < BATCHED_BELOW {
        let n = g.batch * pixels;
        let dy = swap_outer(dy, [g.batch, g.c_out, pixels]);
        let cols = batch_gemm([taps, n, g.c_out], w, [1, taps], &dy, [n, 1]);
        dx.par_chunks_mut(g.input_len().max(1))
            .enumerate()
            .for_each(|(b, dx)| g.col2im(&cols[b * pixels..], dx, n));
        return dx;
    }
    dx.par_chunks_mut(g.input_len() * GROUP)
        .enumerate()
        .for_each(|(group, dx)| {
            let mut cols = vec![0f32; taps * pixels];
            for (i, dx) in dx.chunks_mut(g.input_len()).enumerate() {
                let b = group * GROUP + i;
                let dy = &dy[b * g.output_len()..(b + 1) * g.output_len()];
                // dcols (taps x pixels) = W^T (taps x Cout) . dY_b (Cout x pixels)
                gemm(
                    [taps, pixels, g.c_out],
                    &mut cols,
                    false,
                    w,
                    [1, taps],
                    dy,
                    [pixels, 1],
                );
                g.col2im(&cols, dx, pixels);
            }
        });
    dx
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
