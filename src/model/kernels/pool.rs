//! 2x2 max pooling with stride 2 (the evaluator's LeNet) as one operation with its own
//! backward pass. burn's CPU backend pools through a generic 3-D loop that took a third of
//! an evaluation; this is one pass over each image plane forward, and one backward that sends
//! each output's gradient to the input it took its value from.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::ops::MaxPoolOptions;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{tensor, values, zeros};

#[backend_extension(Flex, Autodiff)]
pub trait MaxPool: burn::backend::Backend {
    /// `x` `[B, C, H, W]` -> `[B, C, H / 2, W / 2]` (sides rounded down): the largest of each
    /// 2x2 block.
    fn max_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// 2x2 max pooling with stride 2: this op on the CPU, burn's elsewhere.
pub fn max_pool_2x2(x: Tensor<4>) -> Tensor<4> {
    if !crate::backend::own_kernels() {
        return burn::tensor::module::max_pool2d(x, MaxPoolOptions::new([2, 2]));
    }
    Tensor::from_dispatch(<Dispatch as MaxPool>::max_pool_2x2(x.into_dispatch()))
}

/// The sizes of one pooling: image planes (batch x channels) of h x w in, h/2 x w/2 out.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    planes: usize,
    h: usize,
    w: usize,
}

impl Sizes {
    fn of(x: &FlexTensor) -> Sizes {
        let shape = x.layout().shape();
        assert_eq!(shape.num_dims(), 4, "max_pool_2x2: [B, C, H, W]");
        Sizes {
            planes: shape[0] * shape[1],
            h: shape[2],
            w: shape[3],
        }
    }

    fn out_plane(&self) -> usize {
        (self.h / 2) * (self.w / 2)
    }

    /// Calls `f(output index, input index of its block's largest value)` for one plane
    /// (the first of equal values, in row order).
    fn for_each_max(&self, x: &[f32], mut f: impl FnMut(usize, usize)) {
        let (wo, w) = (self.w / 2, self.w);
        for i in 0..self.h / 2 {
            for j in 0..wo {
                let top = 2 * i * w + 2 * j;
                let block = [top, top + 1, top + w, top + w + 1];
                let best = block
                    .into_iter()
                    .reduce(|a, b| if x[b] > x[a] { b } else { a })
                    .expect("four values");
                f(i * wo + j, best);
            }
        }
    }

    /// Each 2x2 block's largest value, as `for_each_max` picks it, for one plane: the same
    /// comparisons without the indices, which the compiler vectorizes (the evaluator pools
    /// 20 000 images' planes per evaluation).
    fn max_of_blocks(&self, x: &[f32], out: &mut [f32]) {
        let (wo, w) = (self.w / 2, self.w);
        let larger = |a: f32, b: f32| if b > a { b } else { a };
        for (i, out) in out.chunks_exact_mut(wo.max(1)).enumerate() {
            let top = x[2 * i * w..][..2 * wo].chunks_exact(2);
            let bottom = x[(2 * i + 1) * w..][..2 * wo].chunks_exact(2);
            for ((o, t), b) in out.iter_mut().zip(top).zip(bottom) {
                *o = larger(larger(larger(t[0], t[1]), b[0]), b[1]);
            }
        }
    }
}

fn forward(x: &FlexTensor) -> FlexTensor {
    let s = Sizes::of(x);
    let shape = x.layout().shape();
    let x = values(x);
    let mut out = zeros(s.planes * s.out_plane());
    out.par_chunks_mut(s.out_plane().max(1))
        .zip(x.par_chunks((s.h * s.w).max(1)))
        .for_each(|(out, x)| s.max_of_blocks(x, out));
    tensor(out, [shape[0], shape[1], s.h / 2, s.w / 2])
}

/// The input's gradient: each output's gradient at the input its value came from.
fn backward(x: &FlexTensor, d_out: &FlexTensor) -> FlexTensor {
    let s = Sizes::of(x);
    let shape = x.layout().shape().clone();
    let (x, d_out) = (values(x), values(d_out));
    let mut dx = zeros(x.len());
    dx.par_chunks_mut((s.h * s.w).max(1))
        .zip(x.par_chunks((s.h * s.w).max(1)))
        .zip(d_out.par_chunks(s.out_plane().max(1)))
        .for_each(|((dx, x), d_out)| s.for_each_max(x, |o, i| dx[i] = d_out[o]));
    tensor(dx, shape)
}

impl MaxPool for Flex {
    fn max_pool_2x2(x: FlexTensor) -> FlexTensor {
        forward(&x)
    }
}

/// The backward step; its state is the input (to find each block's largest value again).
#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            grads.register::<Flex>(node.id, backward(&ops.state, &d_out));
        }
    }
}

impl<C: CheckpointStrategy> MaxPool for Autodiff<Flex, C> {
    fn max_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.primitive().clone();
                let out = forward(&x);
                prep.finish(x, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;
    use burn::tensor::module::max_pool2d;

    use super::*;

    /// Values and gradients equal burn's pooling, on odd and even sides and a
    /// non-contiguous input.
    #[test]
    fn matches_burns_max_pooling_with_gradients() {
        let device = crate::backend::device().autodiff();
        for [h, w] in [[8, 6], [7, 9]] {
            let x =
                burn::Tensor::<4>::random([3, 2, h, w], Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
            let probe = burn::Tensor::<4>::random(
                [2, 3, h / 2, w / 2],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let run = |f: &dyn Fn(burn::Tensor<4>) -> burn::Tensor<4>| {
                let y = f(x.clone().swap_dims(0, 1));
                let grads = (y.clone() * probe.clone()).sum().backward();
                (y.into_data(), x.grad(&grads).unwrap().into_data())
            };
            let (y, dx) = run(&|x| max_pool_2x2(x));
            let (y_ref, dx_ref) = run(&|x| max_pool2d(x, MaxPoolOptions::new([2, 2])));
            assert_eq!(y, y_ref);
            assert_eq!(dx, dx_ref);
        }
    }
}
