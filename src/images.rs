//! Generated images as files: PNG grids for people, `.npy` and IDX for other tools.

use std::path::Path;

use image::GrayImage;
use npyz::WriterBuilder;

use crate::data::{idx, resize_image, unit_to_byte};
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
        let pixels = (0..self.len())
            .flat_map(|i| resize_image(self.image(i), self.side, side))
            .collect();
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
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
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
