//! The interleaving step of [`crate::model::conv::phase_conv`] as one operation: the four
//! phase outputs (each a crop of one convolution's output) woven into the doubled image in a
//! single pass, and their gradients gathered back in a single pass, where burn's composition
//! (four crops, a stack, a permuting copy; slices written into zeros backward) copies each
//! element three times.

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

use super::{tensor, values, zeros};

#[backend_extension(Flex, Autodiff)]
pub trait InterleavePhases: burn::backend::Backend {
    /// `y` `[B, 4 C, H + 1, W + 1]` -> `[B, C, 2H, 2W]`: output pixel (2i + a, 2j + b) of
    /// channel c is `y[(2a + b) C + c, i + a, j + b]`.
    fn interleave_phases(y: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// [`InterleavePhases::interleave_phases`] on burn tensors (CPU devices only).
pub fn interleave(y: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as InterleavePhases>::interleave_phases(
        y.into_dispatch(),
    ))
}

/// Sizes: batch, output channels C, and the doubled image's source side H x W.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    batch: usize,
    c: usize,
    h: usize,
    w: usize,
}

impl Sizes {
    fn of_phases(y: &FlexTensor) -> Sizes {
        let shape = y.layout().shape();
        assert!(
            shape.num_dims() == 4 && shape[1].is_multiple_of(4),
            "interleave_phases: [B, 4C, H+1, W+1]"
        );
        Sizes {
            batch: shape[0],
            c: shape[1] / 4,
            h: shape[2] - 1,
            w: shape[3] - 1,
        }
    }

    fn phases_len(&self) -> usize {
        4 * self.c * (self.h + 1) * (self.w + 1)
    }

    fn image_len(&self) -> usize {
        self.c * 4 * self.h * self.w
    }

    /// Calls `f(even, odd, row)` for every row of one image's output: the output row starting
    /// at `row` (2W values) takes its even columns from the W phase values starting at `even`
    /// and its odd columns from those starting at `odd` (`odd > even`).
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (h, w, c) = (self.h, self.w, self.c);
        let plane = |a: usize, b: usize, ch: usize| ((2 * a + b) * c + ch) * (h + 1) * (w + 1);
        for ch in 0..c {
            for i in 0..h {
                for a in 0..2 {
                    let source = |b| plane(a, b, ch) + (i + a) * (w + 1) + b;
                    f(source(0), source(1), (ch * 2 * h + 2 * i + a) * 2 * w);
                }
            }
        }
    }
}

fn forward(y: &FlexTensor) -> FlexTensor {
    let s = Sizes::of_phases(y);
    let y = values(y);
    let mut out = zeros(s.batch * s.image_len());
    out.par_chunks_mut(s.image_len().max(1))
        .enumerate()
        .for_each(|(n, out)| {
            let y = &y[n * s.phases_len()..(n + 1) * s.phases_len()];
            s.for_each_row(|even, odd, row| {
                let (out, e, o) = (&mut out[row..row + 2 * s.w], &y[even..], &y[odd..]);
                let (e, o) = (&e[..s.w], &o[..s.w]);
                for j in 0..s.w {
                    out[2 * j] = e[j];
                    out[2 * j + 1] = o[j];
                }
            });
        });
    tensor(out, [s.batch, s.c, 2 * s.h, 2 * s.w])
}

fn backward(s: Sizes, d_out: &FlexTensor) -> FlexTensor {
    let d_out = values(d_out);
    let mut dy = zeros(s.batch * s.phases_len());
    dy.par_chunks_mut(s.phases_len().max(1))
        .enumerate()
        .for_each(|(n, dy)| {
            let d_out = &d_out[n * s.image_len()..(n + 1) * s.image_len()];
            s.for_each_row(|even, odd, row| {
                let (head, tail) = dy.split_at_mut(odd);
                let (e, o) = (&mut head[even..even + s.w], &mut tail[..s.w]);
                let d = &d_out[row..row + 2 * s.w];
                for j in 0..s.w {
                    e[j] = d[2 * j];
                    o[j] = d[2 * j + 1];
                }
            });
        });
    tensor(dy, [s.batch, 4 * s.c, s.h + 1, s.w + 1])
}

impl InterleavePhases for Flex {
    fn interleave_phases(y: FlexTensor) -> FlexTensor {
        forward(&y)
    }
}

/// The backward step; it needs only the sizes.
#[derive(Debug)]
struct InterleaveBackward;

impl Backward<Flex, 1> for InterleaveBackward {
    type State = [usize; 4];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            let [batch, c, h, w] = ops.state;
            grads.register::<Flex>(node.id, backward(Sizes { batch, c, h, w }, &d_out));
        }
    }
}

impl<C: CheckpointStrategy> InterleavePhases for Autodiff<Flex, C> {
    fn interleave_phases(y: FloatTensor<Self>) -> FloatTensor<Self> {
        match InterleaveBackward
            .prepare::<C>([y.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let s = Sizes::of_phases(y.primitive());
                prep.finish([s.batch, s.c, s.h, s.w], forward(y.primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(y.primitive())),
        }
    }
}
