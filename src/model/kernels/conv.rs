//! The trained convolution on the CPU as one burn operation with its own backward pass,
//! plugged in through burn's backend-extension API (no fork of burn).
//!
//! Forward, per image: the input's shifted views gathered into a column buffer (im2col, the
//! zero padding written there, not into a padded copy), then one GEMM `W . cols`. Backward, per
//! image: `dcols = W^T . dY` scattered back onto the input (col2im) and `dW += dY . cols^T`.
//! Each is a call to the `gemm` crate (the one burn-flex uses) on buffers in the layouts it
//! reads directly; composed from burn's tensor ops instead ([`super::super::conv::im2col_conv2d`]), autodiff
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
    fn new(x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize) -> Self {
        let [batch, c_in, h, w] = dims(x);
        let [c_out, c_in_w, k, k_w] = dims(weight);
        assert!(
            c_in == c_in_w && k == k_w,
            "gemm_conv2d: weight {c_out}x{c_in_w}x{k}x{k_w} for {c_in} input channels"
        );
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

    /// For kernel offset `kx` along an axis of `len` input pixels: the output positions
    /// `lo..hi` whose input pixel `o * stride + kx - pad` lies inside the image.
    fn valid(&self, kx: usize, len: usize, out_len: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = self.pad.saturating_sub(kx).div_ceil(s);
        let hi = (len + self.pad).saturating_sub(kx).div_ceil(s).min(out_len);
        (lo.min(hi), hi)
    }

    /// Visits, for every tap row of the column buffer and output row `oy` that reads inside
    /// the image, the input row offset, the buffer offset and the valid output columns.
    fn for_each_span(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (k, n) = (self.k, self.pixels());
        for ci in 0..self.c_in {
            for ky in 0..k {
                let (oy_lo, oy_hi) = self.valid(ky, self.h, self.h_out);
                for kx in 0..k {
                    let (ox_lo, ox_hi) = self.valid(kx, self.w, self.w_out);
                    let row = ((ci * k + ky) * k + kx) * n;
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

    /// The column buffer of one image (`taps x pixels`, row-major).
    fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        cols.fill(0.0);
        let s = self.stride;
        self.for_each_span(|input, at, lo, hi| {
            let out = &mut cols[at..at + (hi - lo)];
            if s == 1 {
                out.copy_from_slice(&x[input..input + (hi - lo)]);
            } else {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = x[input + j * s];
                }
            }
        });
    }

    /// Adds a column buffer's entries back onto the input pixels they were read from.
    fn col2im(&self, cols: &[f32], dx: &mut [f32]) {
        let s = self.stride;
        self.for_each_span(|input, at, lo, hi| {
            let cols = &cols[at..at + (hi - lo)];
            if s == 1 {
                let dx = &mut dx[input..input + cols.len()];
                dx.iter_mut().zip(cols).for_each(|(d, c)| *d += c);
            } else {
                for (j, c) in cols.iter().enumerate() {
                    dx[input + j * s] += c;
                }
            }
        });
    }
}

fn dims(t: &FlexTensor) -> [usize; 4] {
    let shape = t.layout().shape();
    assert_eq!(shape.num_dims(), 4, "gemm_conv2d takes 4-D tensors");
    std::array::from_fn(|i| shape[i])
}

/// `dst (m x n) = [dst +] lhs (m x k) . rhs (k x n)`, each given by its row and column strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    [lhs_rs, lhs_cs]: [usize; 2],
    rhs: &[f32],
    [rhs_rs, rhs_cs]: [usize; 2],
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
            gemm::Parallelism::None,
        );
    }
}

fn forward(x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize) -> FlexTensor {
    let g = Geometry::new(x, weight, stride, pad);
    let (x, weight) = (values(x), values(weight));
    let (taps, pixels) = (g.taps(), g.pixels());
    let mut out = vec![0f32; g.batch * g.output_len()];
    if g.batch > 0 && pixels > 0 {
        out.par_chunks_mut(g.output_len() * GROUP)
            .enumerate()
            .for_each(|(group, out)| {
                let mut cols = vec![0f32; taps * pixels];
                for (i, out) in out.chunks_mut(g.output_len()).enumerate() {
                    let b = group * GROUP + i;
                    g.im2col(&x[b * g.input_len()..(b + 1) * g.input_len()], &mut cols);
                    gemm(
                        [g.c_out, pixels, taps],
                        out,
                        false,
                        &weight,
                        [taps, 1],
                        &cols,
                        [pixels, 1],
                    );
                }
            });
    }
    tensor(out, [g.batch, g.c_out, g.h_out, g.w_out])
}

/// The input gradient (when `want_dx`) and the weight gradient (when `want_dw`).
fn backward(
    x: &FlexTensor,
    weight: &FlexTensor,
    dy: &FlexTensor,
    [stride, pad]: [usize; 2],
    [want_dx, want_dw]: [bool; 2],
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let g = Geometry::new(x, weight, stride, pad);
    let (x, weight, dy) = (values(x), values(weight), values(dy));
    let (taps, pixels) = (g.taps(), g.pixels());
    let mut dx = vec![0f32; if want_dx { g.batch * g.input_len() } else { 0 }];
    let groups = g.batch.div_ceil(GROUP);
    let work = |group: usize, dx: &mut [f32]| -> Vec<f32> {
        let mut cols = vec![0f32; taps * pixels];
        let mut dw = vec![0f32; if want_dw { g.c_out * taps } else { 0 }];
        let images = group * GROUP..((group + 1) * GROUP).min(g.batch);
        for (i, b) in images.enumerate() {
            let dy_b = &dy[b * g.output_len()..(b + 1) * g.output_len()];
            if want_dw {
                g.im2col(&x[b * g.input_len()..(b + 1) * g.input_len()], &mut cols);
                // dW (Cout x taps) += dY_b (Cout x pixels) . cols^T (pixels x taps)
                gemm(
                    [g.c_out, taps, pixels],
                    &mut dw,
                    i > 0,
                    dy_b,
                    [pixels, 1],
                    &cols,
                    [1, pixels],
                );
            }
            if want_dx {
                // dcols (taps x pixels) = W^T (taps x Cout) . dY_b (Cout x pixels)
                gemm(
                    [taps, pixels, g.c_out],
                    &mut cols,
                    false,
                    &weight,
                    [1, taps],
                    dy_b,
                    [pixels, 1],
                );
                let len = g.input_len();
                g.col2im(&cols, &mut dx[i * len..(i + 1) * len]);
            }
        }
        dw
    };
    let partials: Vec<Vec<f32>> = if g.batch == 0 || pixels == 0 {
        Vec::new()
    } else if want_dx {
        dx.par_chunks_mut(g.input_len() * GROUP)
            .enumerate()
            .map(|(group, dx)| work(group, dx))
            .collect()
    } else {
        (0..groups)
            .into_par_iter()
            .map(|group| work(group, &mut []))
            .collect()
    };
    let dw = want_dw.then(|| {
        let mut sum = vec![0f32; g.c_out * taps];
        for partial in &partials {
            sum.iter_mut().zip(partial).for_each(|(s, p)| *s += p);
        }
        tensor(sum, [g.c_out, g.c_in, g.k, g.k])
    });
    let dx = want_dx.then(|| tensor(dx, [g.batch, g.c_in, g.h, g.w]));
    (dx, dw)
}

impl GemmConv for Flex {
    fn gemm_conv2d(x: FlexTensor, weight: FlexTensor, stride: usize, pad: usize) -> FlexTensor {
        forward(&x, &weight, stride, pad)
    }
}

/// The backward step of [`GemmConv::gemm_conv2d`]; its state is the forward's input and weight.
#[derive(Debug)]
struct GemmConvBackward {
    stride: usize,
    pad: usize,
}

impl Backward<Flex, 2> for GemmConvBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight) = ops.state;
        let (dx, dw) = backward(
            &x,
            &weight,
            &dy,
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

impl<C: CheckpointStrategy> GemmConv for Autodiff<Flex, C> {
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        match (GemmConvBackward { stride, pad })
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.primitive().clone(), weight.primitive().clone());
                let out = forward(&x, &weight, stride, pad);
                prep.finish((x, weight), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(forward(x.primitive(), weight.primitive(), stride, pad))
            }
        }
    }
}
