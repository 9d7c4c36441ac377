//! `.npy` arrays: what numpy and PyTorch scripts save. Written as uint8 (N, S, S); read as
//! uint8 or floats, with a header checked against the file before anything is allocated.

use std::path::Path;

use npyz::WriterBuilder;

use super::ImageBatch;
use crate::data::unit_to_byte;

/// The images as a uint8 (N, side, side) array.
pub fn encode(batch: &ImageBatch) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let shape = [batch.len() as u64, batch.side as u64, batch.side as u64];
    let mut writer = npyz::WriteOptions::<u8>::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut out)
        .begin_nd()?;
    writer.extend(batch.pixels.iter().copied())?;
    writer.finish()?;
    Ok(out)
}

/// A `.npy` file read whole, its header checked against its size before anything is
/// allocated for what it claims: the file's bytes, the array's shape and its type.
fn open_npy(path: &Path) -> anyhow::Result<(Vec<u8>, Vec<u64>, npyz::TypeStr)> {
    let name = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
        .len();
    if let Some(available) = crate::budget::available_bytes() {
        anyhow::ensure!(
            (size as f64) * 1.5 < available,
            "{name}: {} does not fit in the {} of memory available",
            crate::budget::human(size as f64),
            crate::budget::human(available)
        );
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| anyhow::anyhow!("{name}: not a .npy array: {e}"))?;
    let shape = npy.shape().to_vec();
    anyhow::ensure!(
        npy.order() == npyz::Order::C,
        "{name}: a Fortran-ordered array; save it in C order (numpy's default)"
    );
    let npyz::DType::Plain(dtype) = npy.dtype() else {
        anyhow::bail!("{name}: a structured array; save plain numbers");
    };
    let item = dtype.num_bytes().unwrap_or(0).max(1) as u64;
    let count = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    anyhow::ensure!(
        count.is_some_and(|n| n.saturating_mul(item) <= bytes.len() as u64),
        "{name}: its header says {shape:?} of {dtype}, more than the file's {} bytes hold",
        bytes.len()
    );
    Ok((bytes, shape, dtype))
}

/// The values of a `.npy` array of `T` in `bytes`.
fn npy_values<T: npyz::Deserialize>(bytes: &[u8]) -> anyhow::Result<Vec<T>> {
    let data = npyz::NpyFile::new(bytes)?.data::<T>()?;
    Ok(data.collect::<std::io::Result<_>>()?)
}

/// A `.npy` array's shape, its values as pixels, and how they were read.
pub fn read_images(path: &Path) -> anyhow::Result<(Vec<u64>, Vec<u8>, String)> {
    let (bytes, shape, dtype) = open_npy(path)?;
    let (pixels, how) = match (dtype.type_char(), dtype.num_bytes()) {
        (npyz::TypeChar::Uint, Some(1)) => (npy_values::<u8>(&bytes)?, "bytes".to_string()),
        (npyz::TypeChar::Float, Some(size)) if size == 4 || size == 8 => {
            let (pixels, range) = if size == 4 {
                float_pixels::<f32>(&bytes, path)?
            } else {
                float_pixels::<f64>(&bytes, path)?
            };
            (pixels, format!("{dtype} in {range}"))
        }
        _ => anyhow::bail!(
            "{}: values of type {dtype}; use uint8, float32 or float64",
            path.display()
        ),
    };
    Ok((shape, pixels, how))
}

/// The pixels of a `.npy` array of floats, read twice (its range first, then its values) so
/// that nothing larger than the pixels is held, and the range they were read in.
fn float_pixels<T: npyz::Deserialize + Into<f64>>(
    bytes: &[u8],
    path: &Path,
) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let name = path.display();
    let values = || -> anyhow::Result<_> {
        let npy = npyz::NpyFile::new(bytes)?;
        Ok(npy.data::<T>()?.map(|v| v.map(Into::into)))
    };
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, value) in values()?.enumerate() {
        let value: f64 = value?;
        anyhow::ensure!(
            value.is_finite(),
            "{name}: value {i} is {value}; nothing scored"
        );
        (min, max) = (min.min(value), max.max(value));
    }
    // A little past the ends is rounding; more is another range, or no images at all.
    const SLACK: f64 = 1e-3;
    type ToPixel = fn(f64) -> u8;
    let (range, low, high, to_pixel): (&'static str, f64, f64, ToPixel) = if min < 0.0 {
        // As the runner turns its own generators' output into pixels.
        ("[-1, 1]", -1.0, 1.0, |v| unit_to_byte(v as f32))
    } else if max <= 1.0 + SLACK {
        ("[0, 1]", 0.0, 1.0, |v| {
            (v * 255.0).round().clamp(0.0, 255.0) as u8
        })
    } else {
        ("[0, 255]", 0.0, 255.0, |v| {
            v.round().clamp(0.0, 255.0) as u8
        })
    };
    anyhow::ensure!(
        min >= low - SLACK && max <= high + SLACK,
        "{name}: values from {min} to {max}; images should lie in [-1, 1], [0, 1] or [0, 255]"
    );
    let pixels = values()?
        .map(|v| v.map(to_pixel))
        .collect::<std::io::Result<_>>()?;
    Ok((pixels, range))
}

/// The values of a `.npy` vector of integers (uint8, int32 or int64: what numpy and
/// `torch.long` save), and its shape.
pub fn read_integers(path: &Path) -> anyhow::Result<(Vec<u64>, Vec<i64>)> {
    let (bytes, shape, dtype) = open_npy(path)?;
    let values = match (dtype.type_char(), dtype.num_bytes()) {
        (npyz::TypeChar::Uint, Some(1)) => npy_values::<u8>(&bytes)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (npyz::TypeChar::Int, Some(4)) => npy_values::<i32>(&bytes)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (npyz::TypeChar::Int, Some(8)) => npy_values::<i64>(&bytes)?,
        _ => anyhow::bail!(
            "{}: labels of type {dtype}; use uint8, int32 or int64",
            path.display()
        ),
    };
    Ok((shape, values))
}
