//! A fixed rearrangement of a tensor's last axis, each output value a copy of one input value
//! or a zero, as one gather forward and one gather backward: the GPU path's im2col
//! ([`crate::model::conv::im2col_conv2d`]) and the interleave of the upsampling convolution's phases
//! ([`crate::model::conv::phase_conv`]).
//!
//! Why: composed of burn's slices, the columns of a k x k convolution took k^2 slices and
//! copies forward and k^2 zero-filled scatters and sums backward, and at batch 64 the DCGAN's GPU
//! step was a thousand ~10 us kernels (H200, 2026-12-04): launch-bound. burn's `select` is one
//! kernel forward, but its backward (`select_assign`) walks every output position serially in
//! one thread per row. Here the backward gathers instead: for each input position, the output
//! positions that copied it (at most `fan` of them, padded with a zero), summed: parallel, and
//! deterministic, unlike an atomic scatter. On a GPU that gather and sum are one kernel of our
//! own (a gather into `[B, C, n, fan]` and a reduction composed: 13 kernels more a step of
//! the report's DCGAN, lavapipe).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;

#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "vulkan", feature = "cuda")),
    Fusion: cfg(any(feature = "vulkan", feature = "cuda")),
    Autodiff
)]
pub trait Remap: Backend {
    /// `x` `[B, C, N]` -> `[B, C, M]`: output position m is `x[.., at[m]] * at_mask[m]` (the
    /// mask is 0 where the output is a zero, 1 elsewhere). `inverse` and `inverse_mask`
    /// (`[N * fan]`, see [`Map`]) are for the backward pass.
    #[fusion(default)]
    fn remap(
        x: FloatTensor<Self>,
        at: IntTensor<Self>,
        at_mask: FloatTensor<Self>,
        inverse: IntTensor<Self>,
        inverse_mask: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // read by the backward pass alone (the Autodiff impl's)
        drop((inverse, inverse_mask));
        gather::<Self>(x, at, at_mask)
    }

    /// The gradient of [`remap`](Remap::remap)'s input `[B, C, n]` from its output's, `dy`:
    /// for each input position, the sum of `dy` at its `fan` entries of `inverse`, each
    /// times its mask. A gather and a sum here, one kernel on a GPU.
    #[fusion(meta = |dy, _inverse, _inverse_mask, n| {
        let [batch, channels, _] = dy.shape.dims();
        burn::backend::fusion::custom::TensorSpec::new(Shape::new([batch, channels, *n]), dy.dtype)
    })]
    fn remap_gradient(
        dy: FloatTensor<Self>,
        inverse: IntTensor<Self>,
        inverse_mask: FloatTensor<Self>,
        n: usize,
    ) -> FloatTensor<Self> {
        remap_backward::<Self>(dy, (inverse, inverse_mask), n)
    }
}

/// `values` `[B, C, N]` gathered along the last axis at `at`, times `mask` per position: a
/// select and a product, where padding `values` with the zero to read took a fill and a copy.
fn gather<B: Backend>(
    values: FloatTensor<B>,
    at: IntTensor<B>,
    mask: FloatTensor<B>,
) -> FloatTensor<B> {
    let positions = mask.shape().num_elements();
    let mask = B::float_reshape(mask, Shape::new([1, 1, positions]));
    B::float_mul(B::float_select(values, 2, at), mask)
}

/// [`Remap::remap_gradient`] composed: a gather of `dy` into `[B, C, n, fan]`, summed over
/// the fan.
fn remap_backward<B: Backend>(
    dy: FloatTensor<B>,
    (inverse, mask): Inverse<B>,
    n: usize,
) -> FloatTensor<B> {
    let [batch, channels, _] = dy.shape().dims();
    let fan = inverse.shape().num_elements() / n;
    let gathered = gather::<B>(dy, inverse, mask);
    if fan == 1 {
        return gathered;
    }
    let per_input = B::float_reshape(gathered, Shape::new([batch, channels, n, fan]));
    B::float_reshape(
        B::float_sum_dim(per_input, 3),
        Shape::new([batch, channels, n]),
    )
}

impl Remap for Flex {}

#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl Remap for burn_cubecl::CubeBackend {
    fn remap_gradient(
        dy: FloatTensor<Self>,
        inverse: IntTensor<Self>,
        inverse_mask: FloatTensor<Self>,
        n: usize,
    ) -> FloatTensor<Self> {
        kernel::gradient(dy, inverse, inverse_mask, n)
    }
}

/// [`Remap::remap_gradient`] as a CubeCL kernel: a unit an input position, adding its `fan`
/// copies in the output's gradient (the composition's gather and sum, in one pass).
#[cfg(any(feature = "vulkan", feature = "cuda"))]
mod kernel {
    use burn::prelude::Shape;
    use burn::tensor::DType;
    use burn_cubecl::cubecl;
    use burn_cubecl::cubecl::prelude::*;
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::ops::numeric::empty_device_dtype;
    use burn_cubecl::tensor::CubeTensor;

    /// Units a cube.
    const UNITS: usize = 256;

    /// `dx[r, i] = sum over f of dy[r, inverse[i fan + f]] mask[i fan + f]`, for each row r
    /// (a batch item's channel) and input position i.
    #[cube(launch)]
    fn remap_gradient_kernel<I: Int>(
        dy: &Tensor<f32>,
        inverse: &Tensor<I>,
        mask: &Tensor<f32>,
        dx: &mut Tensor<f32>,
        #[comptime] fan: usize,
    ) {
        let at = ABSOLUTE_POS;
        if at < dx.len() {
            let n = dx.shape(2);
            let (row, position) = (at / n, at % n);
            let copies = row * dy.shape(2);
            let mut total = f32::new(0.0);
            #[unroll]
            for f in 0..fan {
                let entry = position * fan + f;
                total += dy[copies + usize::cast_from(inverse[entry])] * mask[entry];
            }
            dx[at] = total;
        }
    }

    pub(super) fn gradient(
        dy: CubeTensor,
        inverse: CubeTensor,
        mask: CubeTensor,
        n: usize,
    ) -> CubeTensor {
        let (dy, inverse, mask) = (
            into_contiguous(dy),
            into_contiguous(inverse),
            into_contiguous(mask),
        );
        super::super::check_f32(&[&dy, &mask], "remap");
        let [batch, channels, _] = dy.meta.shape().dims();
        let fan = inverse.meta.shape().num_elements() / n.max(1);
        let dx = empty_device_dtype(
            dy.client.clone(),
            dy.device.clone(),
            Shape::new([batch, channels, n]),
            dy.dtype,
        );
        let client = dy.client.clone();
        let units = CubeDim::new_1d(UNITS as u32);
        // Over two grid axes where one would pass a driver's limit (65 535 cubes on some
        // Vulkan drivers: the largest gradient of the report's DCGAN at batch 256, 16.8
        // million values, is 65 536 cubes' worth).
        let count = cubecl::calculate_cube_count_elemwise(&client, batch * channels * n, units);
        let (dy_arg, mask_arg, dx_arg) = (
            dy.into_tensor_arg(),
            mask.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
        );
        let index_dtype = inverse.dtype;
        let inverse = inverse.into_tensor_arg();
        match index_dtype {
            DType::I32 => remap_gradient_kernel::launch::<i32>(
                &client, count, units, dy_arg, inverse, mask_arg, dx_arg, fan,
            ),
            DType::I64 => remap_gradient_kernel::launch::<i64>(
                &client, count, units, dy_arg, inverse, mask_arg, dx_arg, fan,
            ),
            DType::U32 => remap_gradient_kernel::launch::<u32>(
                &client, count, units, dy_arg, inverse, mask_arg, dx_arg, fan,
            ),
            other => panic!("the remap kernel reads i32, i64 or u32 positions, not {other:?}"),
        }
        dx
    }
}

/// The inverse map and its mask.
type Inverse<B> = (IntTensor<B>, FloatTensor<B>);

/// The backward step; its state is the inverse map and the input's last axis.
#[derive(Debug)]
struct RemapBackward;

impl<B: Remap> Backward<B, 1> for RemapBackward {
    type State = (Inverse<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let (inverse, n) = ops.state;
            let (inverse, inverse_mask) = inverse;
            grads.register::<B>(node.id, B::remap_gradient(dy, inverse, inverse_mask, n));
        }
    }
}

impl<B: Backend + Remap, C: CheckpointStrategy> Remap for Autodiff<B, C> {
    fn remap(
        x: FloatTensor<Self>,
        at: IntTensor<Self>,
        at_mask: FloatTensor<Self>,
        inverse: IntTensor<Self>,
        inverse_mask: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (at_mask, inverse_mask) = (at_mask.into_primitive(), inverse_mask.into_primitive());
        let forward = |inverse, inverse_mask| {
            B::remap(x.primitive().clone(), at, at_mask, inverse, inverse_mask)
        };
        match RemapBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let n = x.primitive().shape()[2];
                let out = forward(inverse.clone(), inverse_mask.clone());
                prep.finish(((inverse, inverse_mask), n), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(inverse, inverse_mask)),
        }
    }
}

/// A rearrangement of an axis of `n` positions into `m`, on the host: `at[i]` is the input
/// position output position i copies, or `n` for a zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    n: usize,
    at: Vec<usize>,
}

impl Map {
    /// # Panics
    ///
    /// When a position of `at` is above `n`, or `n` is 0.
    pub fn new(n: usize, at: Vec<usize>) -> Map {
        assert!(n > 0, "remap::Map: no input positions");
        assert!(
            at.iter().all(|&i| i <= n),
            "remap::Map: a position past {n}"
        );
        Map { n, at }
    }

    /// For each input position, the output positions that copy it, in increasing order and
    /// padded with `m` (a zero) to the largest such count (at least 1): `[n * fan]`.
    fn inverse(&self) -> Vec<usize> {
        let mut copies = vec![0; self.n + 1];
        for &source in &self.at {
            copies[source] += 1;
        }
        let fan = copies[..self.n].iter().copied().max().unwrap_or(0).max(1);
        let mut inverse = vec![self.at.len(); self.n * fan];
        let mut filled = vec![0; self.n];
        for (out, &source) in self.at.iter().enumerate() {
            if source < self.n {
                inverse[source * fan + filled[source]] = out;
                filled[source] += 1;
            }
        }
        inverse
    }
}

/// A map's positions and masks on the device: `at`, its mask, the inverse and its mask.
type Uploaded = (Tensor<1, Int>, Tensor<1>, Tensor<1, Int>, Tensor<1>);

/// What a [`Map`] is cached under: its kind and sizes (the device is added).
pub type MapKey = (&'static str, [usize; 5]);

thread_local! {
    /// The maps' index tensors on their device, by key: built and uploaded once per layer
    /// shape, not at every step.
    static UPLOADED: std::cell::RefCell<std::collections::HashMap<String, Uploaded>> =
        Default::default();
}

/// `x` `[B, C, n]` rearranged by the map `key` names (built by `build` the first time) into
/// `[B, C, m]`; differentiable.
pub fn remap(x: Tensor<3>, key: MapKey, build: impl FnOnce() -> Map) -> Tensor<3> {
    // Constants, on the device without autodiff: one upload whether `x` is tracked or not.
    let device = x.device().without_autodiff();
    let n = x.dims()[2];
    let (at, at_mask, inverse, inverse_mask) = UPLOADED.with_borrow_mut(|uploaded| {
        uploaded
            .entry(format!("{key:?} {device:?}"))
            .or_insert_with(|| {
                let map = build();
                assert_eq!(map.n, n, "remap: the map {key:?} is for another length");
                // Positions past the end (a zero) read position 0, masked.
                let upload = |positions: Vec<usize>, end: usize| {
                    let len = positions.len();
                    let read: Vec<i64> = (positions.iter())
                        .map(|&i| if i < end { i as i64 } else { 0 })
                        .collect();
                    let mask: Vec<f32> = (positions.iter())
                        .map(|&i| if i < end { 1.0 } else { 0.0 })
                        .collect();
                    (
                        Tensor::<1, Int>::from_data(TensorData::new(read, [len]), &device),
                        Tensor::<1>::from_data(TensorData::new(mask, [len]), &device),
                    )
                };
                let (inverse, inverse_mask) = upload(map.inverse(), map.at.len());
                let (at, at_mask) = upload(map.at, map.n);
                (at, at_mask, inverse, inverse_mask)
            })
            .clone()
    });
    Tensor::from_dispatch(<Dispatch as Remap>::remap(
        x.into_dispatch(),
        at.into_dispatch(),
        at_mask.into_dispatch(),
        inverse.into_dispatch(),
        inverse_mask.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conv::tests::max_relative_error;
    use burn::tensor::Distribution;

    #[test]
    fn the_inverse_lists_each_inputs_copies_padded_with_a_zero() {
        // n = 3; position 3 is a zero; input 1 is copied twice, input 2 never.
        let map = Map::new(3, vec![1, 3, 0, 1]);
        assert_eq!(map.inverse(), vec![2, 4, 0, 3, 4, 4]);
        // A permutation: one copy each.
        assert_eq!(Map::new(3, vec![2, 0, 1]).inverse(), vec![1, 2, 0]);
        // Nothing copied at all: still one (zero) entry per input.
        assert_eq!(Map::new(2, vec![2, 2]).inverse(), vec![2, 2]);
    }

    /// Forward and input gradient against burn's `select` (with autodiff's own backward) of
    /// the input with a zero appended, on maps with zeros, repeats and inputs never read.
    #[test]
    fn matches_burns_select_with_gradients() {
        let device = crate::backend::device().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        for (case, n, at) in [
            ("repeats and zeros", 5, vec![4, 0, 5, 4, 4, 1, 5, 2]),
            ("a permutation", 4, vec![3, 1, 0, 2]),
            ("inputs unread", 6, vec![0, 0, 6]),
        ] {
            let x = Tensor::<3>::random([2, 3, n], normal, &device).require_grad();
            let probe = Tensor::<3>::random([2, 3, at.len()], normal, &device);
            let index: Vec<i64> = at.iter().map(|&i| i as i64).collect();
            let index = Tensor::<1, Int>::from_data(TensorData::new(index, [at.len()]), &device);
            let theirs =
                Tensor::cat(vec![x.clone(), Tensor::zeros([2, 3, 1], &device)], 2).select(2, index);
            let key = ("test", [n, at.len(), at[0], at[1], at[2]]);
            let ours = remap(x.clone(), key, || Map::new(n, at.clone()));
            let grad = |y: Tensor<3>| {
                let grads = (y * probe.clone()).sum().backward();
                x.grad(&grads).unwrap().unsqueeze::<4>()
            };
            let forward_error =
                max_relative_error(ours.clone().unsqueeze(), theirs.clone().unsqueeze());
            assert_eq!(forward_error, 0.0, "{case}");
            let (d_ours, d_theirs) = (grad(ours), grad(theirs));
            assert!(
                max_relative_error(d_ours, d_theirs) < 1e-6,
                "{case}: gradient"
            );
        }
    }
}
