//! The host values a training step uploads as its inputs (the real batch, the latents, the
//! dropout masks), which `runner bench --graph` holds fixed.
//!
//! Why: a graph captured on a GPU replays against the buffers its recording read, and an
//! upload inside the recording dooms it (wgpu refuses writes while recording; CUDA would record
//! a copy from host memory freed after it). While a [`Frozen`] lives on a thread, its first
//! pass uploads as usual and keeps what it uploaded; every later pass (from
//! [`Frozen::rewind`]) is served those same tensors in the same order, and uploads nothing.

use std::any::Any;
use std::cell::RefCell;

use burn::prelude::*;

/// The first pass's uploads, in order (each a `Tensor<D>`), and how many of them the current
/// pass has taken.
struct Record {
    uploaded: Vec<Box<dyn Any>>,
    taken: usize,
}

thread_local! {
    /// While a [`Frozen`] lives on this thread, its record.
    static FROZEN: RefCell<Option<Record>> = const { RefCell::new(None) };
}

/// `data` on `device`; while a [`Frozen`] lives on this thread, the tensor of this position in
/// its first pass instead (a tensor of another shape there is replaced by this upload).
pub fn upload<const D: usize>(data: TensorData, device: &Device) -> Tensor<D> {
    FROZEN.with_borrow_mut(|frozen| {
        let Some(Record { uploaded, taken }) = frozen else {
            return Tensor::from_data(data, device);
        };
        let kept = (uploaded.get(*taken))
            .and_then(|kept| kept.downcast_ref::<Tensor<D>>())
            .filter(|kept| kept.shape() == *data.shape())
            .cloned();
        let tensor = kept.unwrap_or_else(|| {
            let tensor = Tensor::<D>::from_data(data, device);
            uploaded.truncate(*taken);
            uploaded.push(Box::new(tensor.clone()));
            tensor
        });
        *taken += 1;
        tensor
    })
}

/// Holds this thread's step inputs fixed while it lives (see the module docs).
pub struct Frozen(());

impl Frozen {
    pub fn start() -> Frozen {
        FROZEN.set(Some(Record {
            uploaded: Vec::new(),
            taken: 0,
        }));
        Frozen(())
    }

    /// Starts a pass: its uploads are served the first pass's, from the first on.
    pub fn rewind(&self) {
        FROZEN.with_borrow_mut(|frozen| {
            if let Some(record) = frozen {
                record.taken = 0;
            }
        });
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        FROZEN.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn frozen_passes_get_the_first_passes_tensors_in_order() {
        let device = Device::flex();
        let data = |v: &[f32]| TensorData::new(v.to_vec(), [v.len()]);
        let frozen = Frozen::start();
        let first = [
            upload::<1>(data(&[1.0]), &device),
            upload(data(&[2.0]), &device),
        ];
        frozen.rewind();
        assert_eq!(values(upload(data(&[9.0]), &device)), [1.0]);
        assert_eq!(values(upload(data(&[8.0]), &device)), [2.0]);
        // Another shape at a position is uploaded and kept there.
        frozen.rewind();
        assert_eq!(values(upload(data(&[7.0, 7.0]), &device)), [7.0, 7.0]);
        frozen.rewind();
        assert_eq!(values(upload(data(&[6.0, 6.0]), &device)), [7.0, 7.0]);
        drop((frozen, first));
        assert_eq!(values(upload(data(&[5.0]), &device)), [5.0]);
    }
}
