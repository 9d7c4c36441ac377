//! Generated images as files: PNG grids for people, `.npy` and IDX for other tools; and the
//! images (and labels) other programs wrote, read for scoring.

use std::path::Path;

use image::GrayImage;
use npyz::WriterBuilder;

use crate::data::{idx, resize_images, unit_to_byte};
use crate::fsutil::write_atomic;

/// Pixels between tiles of a grid, as torchvision's `make_grid` (padding 2).
const GRID_PADDING: usize = 2;

/// A batch of generated images as bytes: `len` square images of `side` pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    pub pixels: Vec<u8>,
    pub side: usize,
}

impl ImageBatch {
    /// From generator output values in [-1, 1], image after image.
    pub fn from_unit(values: &[f32], side: usize) -> Self {
        ImageBatch {
            pixels: values.iter().map(|&v| unit_to_byte(v)).collect(),
            side,
        }
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / (self.side * self.side)
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.side * self.side;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The same images at `side` x `side` (bilinear), e.g. 32 -> 28 for MNIST tools.
    pub fn resized(&self, side: usize) -> ImageBatch {
        if side == self.side {
            return self.clone();
        }
        let pixels = resize_images(&self.pixels, self.side, side);
        ImageBatch { pixels, side }
    }

    /// The images tiled `cols` per row on a black background, row after row.
    pub fn grid(&self, cols: usize) -> GrayImage {
        let cols = cols.max(1);
        let rows = self.len().div_ceil(cols);
        let cell = self.side + GRID_PADDING;
        let (w, h) = (cols * cell + GRID_PADDING, rows * cell + GRID_PADDING);
        let mut img = GrayImage::new(w as u32, h as u32);
        for i in 0..self.len() {
            let (x0, y0) = (
                (i % cols) * cell + GRID_PADDING,
                (i / cols) * cell + GRID_PADDING,
            );
            for (j, &p) in self.image(i).iter().enumerate() {
                img.put_pixel(
                    (x0 + j % self.side) as u32,
                    (y0 + j / self.side) as u32,
                    image::Luma([p]),
                );
            }
        }
        img
    }

    /// Writes the images to `path`, in the format its name asks for:
    /// `*.png` a grid, `*.npy` a uint8 (N, side, side) array, `*idx3-ubyte` an IDX file.
    pub fn save(&self, path: &Path, grid_cols: usize) -> anyhow::Result<()> {
        let name = file_name(path);
        let bytes = if name.ends_with(".png") {
            let mut out = std::io::Cursor::new(Vec::new());
            self.grid(grid_cols)
                .write_to(&mut out, image::ImageFormat::Png)?;
            out.into_inner()
        } else if name.ends_with(".npy") {
            let mut out = Vec::new();
            let shape = [self.len() as u64, self.side as u64, self.side as u64];
            let mut writer = npyz::WriteOptions::<u8>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()?;
            writer.extend(self.pixels.iter().copied())?;
            writer.finish()?;
            out
        } else if name.ends_with("idx3-ubyte") {
            idx::encode(&idx::IdxArray {
                dims: vec![self.len(), self.side, self.side],
                data: self.pixels.clone(),
            })
        } else {
            anyhow::bail!(
                "{}: unknown output format; use a name ending in .png, .npy or idx3-ubyte",
                path.display()
            );
        };
        write_atomic(path, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Reads images another program made: a `.npy` array or an IDX file (`*idx3-ubyte`,
    /// optionally `.gz`), N square grayscale images shaped (N, S, S), (N, 1, S, S),
    /// (N, S, S, 1) or (N, S*S). Bytes are pixels; floats are read as [-1, 1] (a tanh
    /// output: any value below 0) or [0, 1] (else, up to 1) or [0, 255]. Returns the images
    /// and a phrase saying how they were read.
    pub fn load(path: &Path) -> anyhow::Result<(ImageBatch, String)> {
        let name = path.display();
        let file_name = file_name(path);
        let (shape, pixels, how) = if file_name.ends_with(".npy") {
            read_npy(path)?
        } else if file_name.ends_with("idx3-ubyte") || file_name.ends_with("idx3-ubyte.gz") {
            let array = idx::read(path)?;
            let shape = array.dims.iter().map(|&d| d as u64).collect();
            (shape, array.data, "bytes".to_string())
        } else {
            anyhow::bail!(
                "{name}: unknown image file; use a .npy array or an IDX file (*idx3-ubyte)"
            );
        };
        let side = square_side(&shape).ok_or_else(|| {
            anyhow::anyhow!(
                "{name}: shape {shape:?} is not a batch of square grayscale images; \
                 use (N, S, S), (N, 1, S, S), (N, S, S, 1) or (N, S*S)"
            )
        })?;
        anyhow::ensure!(
            (MIN_SIDE..=MAX_SIDE).contains(&side),
            "{name}: images of {side}x{side} pixels; the evaluator takes {MIN_SIDE} to {MAX_SIDE}"
        );
        let batch = ImageBatch { pixels, side };
        let how = format!("{} images of {side}x{side} ({how})", batch.len());
        Ok((batch, how))
    }
}

/// The last part of `path`, whose ending names an image file's format.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The image sides [`ImageBatch::load`] takes (MNIST's digits are 28, the DCGANs' 32).
const MIN_SIDE: usize = 8;
const MAX_SIDE: usize = 256;

/// The side S of images shaped (N, S, S), (N, 1, S, S), (N, S, S, 1) or (N, S*S).
fn square_side(shape: &[u64]) -> Option<usize> {
    let side = match shape {
        [_, h, w] | [_, 1, h, w] | [_, h, w, 1] if h == w => *h,
        [_, pixels] => {
            let side = (*pixels as f64).sqrt().round() as u64;
            (side * side == *pixels).then_some(side)?
        }
        _ => return None,
    };
    usize::try_from(side).ok()
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
fn read_npy(path: &Path) -> anyhow::Result<(Vec<u64>, Vec<u8>, String)> {
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

/// Reads the class of each image of a file another program made: a `.npy` vector of
/// integers (uint8, int32 or int64: what numpy and `torch.long` save) or an IDX label file
/// (`*idx1-ubyte`, optionally `.gz`), each a digit 0-9.
pub fn load_labels(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.display();
    let file_name = file_name(path);
    let (shape, values): (Vec<u64>, Vec<i64>) = if file_name.ends_with(".npy") {
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
            _ => anyhow::bail!("{name}: labels of type {dtype}; use uint8, int32 or int64"),
        };
        (shape, values)
    } else if file_name.ends_with("idx1-ubyte") || file_name.ends_with("idx1-ubyte.gz") {
        let array = idx::read(path)?;
        let shape = array.dims.iter().map(|&d| d as u64).collect();
        (shape, array.data.into_iter().map(i64::from).collect())
    } else {
        anyhow::bail!("{name}: unknown label file; use a .npy vector or an IDX file (*idx1-ubyte)");
    };
    anyhow::ensure!(
        matches!(shape.as_slice(), [_] | [_, 1]),
        "{name}: shape {shape:?}; labels are one number per image, shaped (N,)"
    );
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            u8::try_from(v)
                .ok()
                .filter(|&v| (v as usize) < crate::model::CLASSES)
                .ok_or_else(|| anyhow::anyhow!("{name}: label {i} is {v}; labels are digits 0-9"))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_tiles_with_padding() {
        let batch = ImageBatch {
            pixels: vec![255; 3 * 4],
            side: 2,
        };
        let img = batch.grid(2);
        assert_eq!(img.dimensions(), (2 * 4 + 2, 2 * 4 + 2));
        assert_eq!(img.get_pixel(2, 2).0, [255]);
        assert_eq!(img.get_pixel(0, 0).0, [0]);
        assert_eq!(img.get_pixel(6, 6).0, [0], "the fourth cell is empty");
    }

    #[test]
    fn npy_and_idx_files_carry_shape() {
        let dir = tempfile::tempdir().unwrap();
        let batch = ImageBatch {
            pixels: (0..18).collect(),
            side: 3,
        };
        batch.save(&dir.path().join("s.npy"), 5).unwrap();
        let bytes = std::fs::read(dir.path().join("s.npy")).unwrap();
        let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(npy.shape(), &[2, 3, 3]);
        assert_eq!(npy.into_vec::<u8>().unwrap(), (0..18).collect::<Vec<u8>>());
        batch.save(&dir.path().join("s-idx3-ubyte"), 5).unwrap();
        let back = idx::parse(&std::fs::read(dir.path().join("s-idx3-ubyte")).unwrap()).unwrap();
        assert_eq!(back.dims, vec![2, 3, 3]);
        assert!(batch.save(&dir.path().join("s.jpg"), 5).is_err());
    }
}
