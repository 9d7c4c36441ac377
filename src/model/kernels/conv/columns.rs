//! The column buffers of a convolution: its sizes ([`Geometry`]), and the copies between an
//! image and the matrix of the input values each output pixel reads (im2col), and back
//! (col2im, adding each value onto the pixel it was read from).
//!
//! Two layouts, picked per convolution ([`Layout`]): with few input channels, one row per tap
//! filled from the channels-first image a span of an output row at a time; with many, one row
//! per output pixel filled with whole runs of channel values from a channels-last copy of the
//! image. Small images with many channels (D's and G's inner layers) make the first layout's
//! spans a few values long, and copying them one short span at a time cost a fifth of a
//! dcgan-classic step.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::super::{filled, transpose_into};

/// Column buffers are [`Layout::PixelRows`] from this many input channels on (runs of at least
/// 64 bytes) when the tap rows' spans would be short: strided, or under
/// [`LONG_SPAN`] output columns.
const PIXEL_ROWS_FROM: usize = 16;

/// Stride-1 spans this long are copied about as fast as pixel rows' runs, without the
/// channels-last copies of the input and output.
const LONG_SPAN: usize = 8;

/// How a column buffer holds its `taps x pixels` matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// One row per tap (input channel, kernel row, kernel column), rows `ld` apart (several
    /// images' columns can share rows), one column per output pixel.
    TapRows,
    /// One row per output pixel, its taps ordered (kernel row, kernel column, input channel);
    /// images' buffers follow each other.
    PixelRows,
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) batch: usize,
    pub(super) c_in: usize,
    h: usize,
    w: usize,
    pub(super) c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    h_out: usize,
    w_out: usize,
}

impl Geometry {
    /// The convolution of `x` with `weight`.
    pub(super) fn conv(x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize) -> Self {
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
    pub(super) fn transposed(
        x: &FlexTensor,
        weight: &FlexTensor,
        stride: usize,
        pad: usize,
    ) -> Self {
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
    pub(super) fn taps(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Columns of the column buffer: one per output pixel.
    pub(super) fn pixels(&self) -> usize {
        self.h_out * self.w_out
    }

    pub(super) fn input_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    pub(super) fn output_len(&self) -> usize {
        self.c_out * self.pixels()
    }

    pub(super) fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.c_in, self.h, self.w]
    }

    pub(super) fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.c_out, self.h_out, self.w_out]
    }

    pub(super) fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in, self.k, self.k]
    }

    /// Whether there is anything to compute.
    pub(super) fn is_empty(&self) -> bool {
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

    /// The same convolution of one input channel.
    pub(super) fn one_channel(&self) -> Self {
        Geometry { c_in: 1, ..*self }
    }

    /// The layout of this convolution's column buffers. Measured with `runner bench` and
    /// `runner generate`: dcgan-classic trains 1.3-1.4x faster with pixel rows for its inner
    /// layers (strided, or a single output pixel); the report's DCGAN trains as fast either
    /// way, and samples 4% faster with its stride-1 phase convolutions (9 and 17 output
    /// columns) left in tap rows.
    pub(super) fn layout(&self) -> Layout {
        let short_spans = self.stride > 1 || self.w_out < LONG_SPAN;
        if self.c_in >= PIXEL_ROWS_FROM && short_spans {
            Layout::PixelRows
        } else {
            Layout::TapRows
        }
    }

    /// The distances `[tap, pixel]` between neighbouring entries of a column buffer whose tap
    /// rows start `ld` apart (when they are rows).
    pub(super) fn column_strides(&self, ld: usize) -> [usize; 2] {
        match self.layout() {
            Layout::TapRows => [ld, self.pixel_stride()],
            Layout::PixelRows => [1, self.pixel_stride()],
        }
    }

    /// The distance between neighbouring pixels' entries of a column buffer.
    pub(super) fn pixel_stride(&self) -> usize {
        match self.layout() {
            Layout::TapRows => 1,
            Layout::PixelRows => self.taps(),
        }
    }

    /// The weight `[Cout, Cin, k, k]` as the left operand of the forward product
    /// `out (Cout x pixels) = W (Cout x taps) . cols`, and its strides. For pixel rows it is
    /// stored `[taps, Cout]`, taps in their order there: the product then reads both operands
    /// along their contiguous axis, as `gemm` does without repacking them, and comes out
    /// channels-last (see [`Self::output_strides`]).
    pub(super) fn forward_weight<'a>(&self, w: &'a [f32]) -> (Cow<'a, [f32]>, [usize; 2]) {
        match self.layout() {
            Layout::TapRows => (Cow::Borrowed(w), [self.taps(), 1]),
            Layout::PixelRows => {
                let w = self.weight_in_tap_order(w);
                // SAFETY: the transpose writes every value.
                let out = unsafe {
                    filled(w.len(), |out| {
                        transpose_into(&w, out, self.taps(), self.c_out)
                    })
                };
                (Cow::Owned(out), [1, self.c_out])
            }
        }
    }

    /// Where the forward product writes output channel o of pixel p: `o * s[0] + p * s[1]`,
    /// channels-first for tap rows, channels-last for pixel rows.
    pub(super) fn output_strides(&self) -> [usize; 2] {
        match self.layout() {
            Layout::TapRows => [self.pixels(), 1],
            Layout::PixelRows => [1, self.c_out],
        }
    }

    /// `W^T` (`taps x Cout`) as the left operand of the input gradient's product
    /// `dcols = W^T . dY`, and its strides.
    pub(super) fn input_grad_weight<'a>(&self, w: &'a [f32]) -> (Cow<'a, [f32]>, [usize; 2]) {
        (self.weight_in_tap_order(w), [1, self.taps()])
    }

    /// The weight `[Cout, Cin, k, k]` with each output channel's taps in the column buffer's
    /// order.
    fn weight_in_tap_order<'a>(&self, w: &'a [f32]) -> Cow<'a, [f32]> {
        match self.layout() {
            Layout::TapRows => Cow::Borrowed(w),
            Layout::PixelRows => {
                Cow::Owned(self.per_output_channel(w, [self.c_in, self.k * self.k]))
            }
        }
    }

    /// A weight gradient with taps in the column buffer's order, as `[Cout, Cin, k, k]`.
    pub(super) fn weight_from_tap_order(&self, dw: Vec<f32>) -> Vec<f32> {
        match self.layout() {
            Layout::TapRows => dw,
            Layout::PixelRows => self.per_output_channel(&dw, [self.k * self.k, self.c_in]),
        }
    }

    /// Each output channel's `[rows, cols]` block of a weight-shaped buffer, transposed.
    fn per_output_channel(&self, values: &[f32], [rows, cols]: [usize; 2]) -> Vec<f32> {
        let taps = self.taps();
        // SAFETY: a weight-shaped buffer is whole blocks of `taps` values, each transposed
        // whole.
        unsafe {
            filled(values.len(), |out| {
                (out.par_chunks_exact_mut(taps))
                    .zip(values.par_chunks_exact(taps))
                    .for_each(|(out, values)| transpose_into(values, out, cols, rows))
            })
        }
    }

    /// Writes the column buffer of one image `x` (`Cin x H x W`) into `cols`: for tap rows,
    /// `taps` rows of `pixels` values `ld` apart (`pixels` for a buffer of its own); for pixel
    /// rows, `pixels` rows of `taps` values, using `scratch` for the channels-last copy. Only
    /// the entries that read the image are written: `cols` must hold zeros where taps read
    /// the padding, as a zeroed buffer does, and one that only this geometry's im2col wrote
    /// since.
    pub(super) fn im2col(&self, x: &[f32], cols: &mut [f32], ld: usize, scratch: &mut Vec<f32>) {
        match self.layout() {
            Layout::TapRows => self.im2col_tap_rows(x, cols, ld),
            Layout::PixelRows => {
                scratch.resize(self.input_len(), 0.0);
                transpose::transpose(x, scratch, self.h * self.w, self.c_in);
                self.for_each_run(|input, at, len| {
                    cols[at..at + len].copy_from_slice(&scratch[input..input + len]);
                });
            }
        }
    }

    /// Writes into `dx` (one image's `Cin x H x W` values, every one) the sum, per input
    /// pixel, of the column buffer's entries read from it; `cols` and `ld` as
    /// [`Self::im2col`] writes them.
    pub(super) fn col2im(
        &self,
        cols: &[f32],
        dx: &mut [MaybeUninit<f32>],
        ld: usize,
        scratch: &mut Vec<f32>,
    ) {
        match self.layout() {
            Layout::TapRows => {
                dx.fill(MaybeUninit::new(0.0));
                // SAFETY: every value was just written; `MaybeUninit<f32>` has `f32`'s layout.
                let dx = unsafe { &mut *(dx as *mut [MaybeUninit<f32>] as *mut [f32]) };
                self.col2im_tap_rows(cols, dx, ld)
            }
            Layout::PixelRows => {
                scratch.clear();
                scratch.resize(self.input_len(), 0.0);
                self.for_each_run(|input, at, len| {
                    let sums = &mut scratch[input..input + len];
                    sums.iter_mut().zip(&cols[at..]).for_each(|(s, c)| *s += c);
                });
                transpose_into(scratch, dx, self.c_in, self.h * self.w);
            }
        }
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

    /// Visits, for every output pixel and kernel row that reads inside the image, the run of
    /// the kernel columns that do: its offset in the channels-last image, its offset in a
    /// pixel-rows column buffer and its length, whole pixels' channels (adjacent kernel
    /// columns read adjacent pixels).
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (c, k, s, pad) = (self.c_in, self.k, self.stride, self.pad);
        for oy in 0..self.h_out {
            for ky in 0..k {
                let iy = oy * s + ky;
                if iy < pad || iy - pad >= self.h {
                    continue;
                }
                let iy = iy - pad;
                for ox in 0..self.w_out {
                    let kx_lo = pad.saturating_sub(ox * s);
                    let kx_hi = k.min((self.w + pad).saturating_sub(ox * s));
                    if kx_lo < kx_hi {
                        let ix = ox * s + kx_lo - pad;
                        let at = (oy * self.w_out + ox) * self.taps() + (ky * k + kx_lo) * c;
                        f((iy * self.w + ix) * c, at, (kx_hi - kx_lo) * c);
                    }
                }
            }
        }
    }

    fn im2col_tap_rows(&self, x: &[f32], cols: &mut [f32], ld: usize) {
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

    fn col2im_tap_rows(&self, cols: &[f32], dx: &mut [f32], ld: usize) {
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
