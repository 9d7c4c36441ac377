//! Square grayscale images resized bilinearly, byte for byte as the `image` crate's
//! `imageops::resize` with `FilterType::Triangle` resizes them (as torchvision's `Resize` does;
//! the training data, the evaluator's reference digits and every run's scores depend on each
//! byte). The crate works out the filter's weights again for every image and carries four
//! channels through both passes; here the weights are worked out once for all the images and
//! one channel goes through, in the crate's arithmetic: the same products, summed in the same
//! order, so the same floats.

use rayon::prelude::*;

/// Every `from` x `from` image of `pixels` (one after the other) resized to `to` x `to`, in
/// parallel.
pub fn resize_images(pixels: &[u8], from: usize, to: usize) -> Vec<u8> {
    if from == to || from == 0 {
        return pixels.to_vec();
    }
    let taps = taps(from, to);
    let mut resized = vec![0; pixels.len() / (from * from) * to * to];
    (resized.par_chunks_mut(to * to))
        .zip(pixels.par_chunks(from * from))
        .for_each_init(Vec::new, |rows, (out, image)| {
            resize_image(image, from, &taps, rows, out)
        });
    resized
}

/// The input pixels one output row (or column) reads, and their weights.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// Each output row's taps, as `imageops::sample::vertical_sample` (and `horizontal_sample`,
/// the same for columns) computes them for the Triangle filter, whose support is 1.
fn taps(from: usize, to: usize) -> Vec<Taps> {
    let ratio = from as f32 / to as f32;
    let scale = if ratio < 1.0 { 1.0 } else { ratio };
    let support = 1.0 * scale;
    (0..to)
        .map(|out| {
            let centre = (out as f32 + 0.5) * ratio;
            let first = ((centre - support).floor() as i64).clamp(0, from as i64 - 1);
            let end = ((centre + support).ceil() as i64).clamp(first + 1, from as i64);
            // The kernel puts a pixel's centre at 0.
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (first..end)
                .map(|i| triangle((i as f32 - centre) / scale))
                .collect();
            let sum = weights.iter().fold(0.0f32, |sum, w| sum + w);
            for w in &mut weights {
                *w /= sum;
            }
            Taps {
                first: first as usize,
                weights,
            }
        })
        .collect()
}

/// `x.round() as u8` for `x` in [0, 255] without a call to libm's `roundf` (a run's start
/// spent 8% of its time there): the fraction `x - trunc(x)` is exact, and a half rounds up,
/// as `round` rounds it.
fn round_byte(x: f32) -> u8 {
    let whole = x as u8;
    whole + u8::from(x - f32::from(whole) >= 0.5)
}

fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 }
}

/// One image into `out`: rows first (into `rows`, `from` wide and `to` tall, in floats), then
/// columns, each sum taken from 0 in the taps' order; the result clamped to [0, 255] and
/// rounded.
fn resize_image(pixels: &[u8], from: usize, taps: &[Taps], rows: &mut Vec<f32>, out: &mut [u8]) {
    let to = taps.len();
    rows.resize(from * to, 0.0);
    for (out_y, tap) in taps.iter().enumerate() {
        let row = &mut rows[out_y * from..(out_y + 1) * from];
        for (x, value) in row.iter_mut().enumerate() {
            let mut sum = 0.0f32;
            for (i, w) in tap.weights.iter().enumerate() {
                sum += f32::from(pixels[(tap.first + i) * from + x]) * w;
            }
            *value = sum;
        }
    }
    for (row, out_row) in rows.chunks(from).zip(out.chunks_mut(to)) {
        for (tap, value) in taps.iter().zip(out_row) {
            let mut sum = 0.0f32;
            for (i, w) in tap.weights.iter().enumerate() {
                sum += row[tap.first + i] * w;
            }
            *value = round_byte(sum.clamp(0.0, 255.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::{self, FilterType};
    use rand::{RngExt, SeedableRng};

    /// The `image` crate's resize, which this one must match.
    fn reference(pixels: &[u8], from: usize, to: usize) -> Vec<u8> {
        let img = image::GrayImage::from_raw(from as u32, from as u32, pixels.to_vec()).unwrap();
        imageops::resize(&img, to as u32, to as u32, FilterType::Triangle).into_raw()
    }

    #[test]
    fn bytes_round_as_round_does() {
        let mut x = 0.0f32;
        while x <= 255.0 {
            assert_eq!(round_byte(x), x.round() as u8, "{x}");
            x = x.next_up();
        }
    }

    #[test]
    fn every_byte_is_the_image_crates() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // The runner's sizes (28 <-> 32, 28 -> 64 for grids) and every pair up to 40 pixels,
        // on random pixels, flat ones and digit-like ones (mostly 0 and 255).
        let mut sizes: Vec<(usize, usize)> = vec![(28, 32), (32, 28), (28, 64), (64, 28)];
        sizes.extend((1..=40).flat_map(|from| (1..=40).map(move |to| (from, to))));
        for (from, to) in sizes {
            let noise: Vec<u8> = (0..3 * from * from).map(|_| rng.random()).collect();
            let strokes: Vec<u8> = (0..from * from)
                .map(|_| [0, 0, 0, 255, 128][rng.random_range(0..5)])
                .collect();
            let flat = vec![200; from * from];
            for pixels in [&noise, &strokes, &flat] {
                let expected: Vec<u8> = pixels
                    .chunks(from * from)
                    .flat_map(|image| reference(image, from, to))
                    .collect();
                assert_eq!(resize_images(pixels, from, to), expected, "{from} -> {to}");
            }
        }
    }
}
