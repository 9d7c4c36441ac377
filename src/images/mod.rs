//! Generated images as files: PNG grids for people; `.npy` arrays, IDX files and folders of
//! PNG files for other tools; and the images (and labels) other programs wrote, read for
//! scoring.

mod folder;
mod npy;

use std::path::Path;

use image::GrayImage;

use crate::data::{idx, resize_images, unit_to_byte};
use crate::fsutil::write_atomic;

pub use folder::{names_folder, write_folder};

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
            npy::encode(self)?
        } else if name.ends_with("idx3-ubyte") {
            idx::encode(&idx::IdxArray {
                dims: vec![self.len(), self.side, self.side],
                data: self.pixels.clone(),
            })
        } else {
            anyhow::bail!(
                "{}: unknown output format; use a name ending in .png, .npy or idx3-ubyte, \
                 or in / for a folder of PNG files",
                path.display()
            );
        };
        write_atomic(path, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Reads images another program made: a `.npy` array or an IDX file (`*idx3-ubyte`,
    /// optionally `.gz`) of N square grayscale images shaped (N, S, S), (N, 1, S, S),
    /// (N, S, S, 1) or (N, S*S), or a folder of PNG files (or of class folders 0-9 of
    /// them, which give their labels). Bytes are
    /// pixels; floats are read as [-1, 1] (a tanh output: any value below 0) or [0, 1] (else,
    /// up to 1) or [0, 255].
    pub fn load(path: &Path) -> anyhow::Result<Loaded> {
        let name = path.display();
        if path.is_dir() {
            return folder::read(path);
        }
        refuse_special_file(path)?;
        let file_name = file_name(path);
        let (shape, pixels, how) = if file_name.ends_with(".npy") {
            npy::read_images(path)?
        } else if file_name.ends_with("idx3-ubyte") || file_name.ends_with("idx3-ubyte.gz") {
            let array = idx::read(path)?;
            let shape = array.dims.iter().map(|&d| d as u64).collect();
            (shape, array.data, "bytes".to_string())
        } else if file_name.to_ascii_lowercase().ends_with(".png") {
            anyhow::bail!(
                "{name}: one PNG file (a grid?) is not split into images; use a folder of PNG \
                 files, one image each, a .npy array or an IDX file (*idx3-ubyte)"
            );
        } else {
            anyhow::bail!(
                "{name}: unknown image file; use a .npy array, an IDX file (*idx3-ubyte) or a \
                 folder of PNG files"
            );
        };
        let side = square_side(&shape).ok_or_else(|| {
            anyhow::anyhow!(
                "{name}: shape {shape:?} is not a batch of square grayscale images; \
                 use (N, S, S), (N, 1, S, S), (N, S, S, 1) or (N, S*S)"
            )
        })?;
        check_side(&name.to_string(), side)?;
        let images = ImageBatch { pixels, side };
        let how = format!(
            "{} of {side}x{side} ({how})",
            crate::console::counted(images.len(), "image")
        );
        Ok(Loaded {
            images,
            labels: None,
            how,
        })
    }
}

/// Images read by [`ImageBatch::load`].
pub struct Loaded {
    pub images: ImageBatch,
    /// The class of each image, where the files say it (a folder per class).
    pub labels: Option<Vec<u8>>,
    /// How they were read, for the log: "200 images of 32x32 (<f4 in [-1, 1])".
    pub how: String,
}

/// Refuses a pipe, socket or device, whose reading would block or never end (a missing file
/// is left to the reader's own error).
fn refuse_special_file(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path);
    anyhow::ensure!(
        meta.is_err() || meta.is_ok_and(|m| m.is_file()),
        "{}: not a regular file",
        path.display()
    );
    Ok(())
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

/// Refuses images of a side the evaluator does not take.
fn check_side(name: &str, side: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        (MIN_SIDE..=MAX_SIDE).contains(&side),
        "{name}: images of {side}x{side} pixels; the evaluator takes {MIN_SIDE} to {MAX_SIDE}"
    );
    Ok(())
}

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

/// Reads the class of each image of a file another program made: a `.npy` vector of
/// integers (uint8, int32 or int64: what numpy and `torch.long` save) or an IDX label file
/// (`*idx1-ubyte`, optionally `.gz`), each a digit 0-9.
pub fn load_labels(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.display();
    refuse_special_file(path)?;
    let file_name = file_name(path);
    let (shape, values): (Vec<u64>, Vec<i64>) = if file_name.ends_with(".npy") {
        npy::read_integers(path)?
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
