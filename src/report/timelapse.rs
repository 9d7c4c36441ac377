//! A run's sample grids as one animated GIF: the fixed-noise grids in step order, so that
//! the digits are seen forming (as PyTorch's DCGAN tutorial animates its `img_list`), a file
//! to drop into slides as it is.
//!
//! The grids are grayscale, so each pixel's gray level is its own palette index: the frames
//! are the grids' exact pixels, with nothing quantized. Encoding costs far more than the rest
//! of a run's page (GIF's LZW), so each GIF carries a hash of its grids in a comment, and a
//! report takes the last report's GIF of a run whose grids are the same (a sweep's live
//! report encodes only the runs in training).

use std::io::Cursor;

use anyhow::{Context, Result, bail};
use image::ImageFormat;
use xxhash_rust::xxh3::Xxh3;

/// How long each frame shows, in hundredths of a second (GIF's unit).
const FRAME_DELAY: u16 = 20;
/// How long the last grid (the trained model's) is held before the animation starts over.
const LAST_FRAME_DELAY: u16 = 200;

/// A decoder of one PNG file's bytes.
fn reader(png: &[u8]) -> image::ImageReader<Cursor<&[u8]>> {
    image::ImageReader::with_format(Cursor::new(png), ImageFormat::Png)
}

/// The comment that names the grids a GIF animates (the hash of their files, in order).
fn signature(grids: &[&[u8]]) -> Vec<u8> {
    let mut hasher = Xxh3::new();
    for png in grids {
        hasher.update(&(png.len() as u64).to_le_bytes());
        hasher.update(png);
    }
    format!("ganrunner grids {:032x}", hasher.digest128()).into_bytes()
}

/// Whether `gif` (a file an earlier report wrote) animates exactly `grids`.
pub fn animates(gif: &[u8], grids: &[&[u8]]) -> bool {
    // The comment follows the header, the palette and the loop count (800 bytes).
    let head = &gif[..gif.len().min(1024)];
    let signature = signature(grids);
    gif.ends_with(&[0x3b]) && head.windows(signature.len()).any(|w| w == signature)
}

/// Encodes the PNG `grids` (in step order, all of one size) as a looping GIF, one grid in
/// memory at a time.
pub fn encode(grids: &[&[u8]]) -> Result<Vec<u8>> {
    let unreadable = |i: usize| format!("grid {}: not a readable PNG", i + 1);
    let sizes = (grids.iter().enumerate())
        .map(|(i, png)| reader(png).into_dimensions().with_context(|| unreadable(i)))
        .collect::<Result<Vec<_>>>()?;
    let Some(&(width, height)) = sizes.first() else {
        bail!("no grids to animate");
    };
    if let Some(i) = sizes.iter().position(|&size| size != (width, height)) {
        let (w, h) = sizes[i];
        bail!(
            "grid {} is {w}x{h}, where the first is {width}x{height}",
            i + 1
        );
    }
    let side = |n: u32| u16::try_from(n).context("a grid wider or taller than a GIF can be");
    let (gif_width, gif_height) = (side(width)?, side(height)?);
    let grays: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
    let mut encoder = gif::Encoder::new(Vec::new(), gif_width, gif_height, &grays)?;
    encoder.set_repeat(gif::Repeat::Infinite)?;
    encoder.write_raw_extension(gif::Extension::Comment.into(), &[&signature(grids)])?;
    for (i, png) in grids.iter().enumerate() {
        let pixels = (reader(png).decode())
            .with_context(|| unreadable(i))?
            .into_luma8()
            .into_raw();
        let mut frame = gif::Frame::from_indexed_pixels(gif_width, gif_height, pixels, None);
        frame.delay = if i + 1 == grids.len() {
            LAST_FRAME_DELAY
        } else {
            FRAME_DELAY
        };
        encoder.write_frame(&frame)?;
    }
    Ok(encoder.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, fill: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let image = image::GrayImage::from_fn(width, height, |x, y| image::Luma([fill(x, y)]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn the_frames_are_the_grids_exact_pixels_in_order() {
        let grids: Vec<Vec<u8>> = (0..3u8)
            .map(|k| png(7, 5, move |x, y| (x * 31 + y * 7) as u8 ^ (k * 85)))
            .collect();
        let refs: Vec<&[u8]> = grids.iter().map(Vec::as_slice).collect();
        let bytes = encode(&refs).unwrap();

        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        let mut decoder = options.read_info(bytes.as_slice()).unwrap();
        assert_eq!((decoder.width(), decoder.height()), (7, 5));
        let mut delays = Vec::new();
        for (k, grid) in grids.iter().enumerate() {
            let frame = decoder
                .read_next_frame()
                .unwrap()
                .expect("a frame per grid");
            delays.push(frame.delay);
            let want = image::load_from_memory(grid).unwrap().into_luma8();
            let got: Vec<u8> = frame.buffer.chunks(4).map(|rgba| rgba[0]).collect();
            assert_eq!(got, want.as_raw().as_slice(), "frame {k}");
            assert!(frame.buffer.chunks(4).all(|p| p[0] == p[1] && p[1] == p[2]));
        }
        assert!(decoder.read_next_frame().unwrap().is_none());
        assert_eq!(delays, [FRAME_DELAY, FRAME_DELAY, LAST_FRAME_DELAY]);
    }

    #[test]
    fn a_gif_is_known_by_the_grids_it_animates() {
        let grids: Vec<Vec<u8>> = (0..3u8)
            .map(|k| png(6, 6, move |x, _| x as u8 * k))
            .collect();
        let refs: Vec<&[u8]> = grids.iter().map(Vec::as_slice).collect();
        let gif = encode(&refs).unwrap();
        assert!(animates(&gif, &refs));
        assert!(!animates(&gif, &refs[..2]), "one grid fewer");
        assert!(
            !animates(&gif, &[refs[0], refs[2], refs[1]]),
            "another order"
        );
        let other = png(6, 6, |x, y| (x + y) as u8);
        assert!(!animates(&gif, &[refs[0], refs[1], &other]), "another grid");
        assert!(!animates(&gif[..gif.len() - 1], &refs), "a truncated file");
        assert!(!animates(b"", &refs));
    }

    #[test]
    fn grids_of_other_sizes_or_no_grids_are_refused() {
        let (a, b) = (png(4, 4, |_, _| 0), png(4, 5, |_, _| 0));
        let err = encode(&[&a, &b]).unwrap_err().to_string();
        assert_eq!(err, "grid 2 is 4x5, where the first is 4x4");
        assert!(encode(&[]).is_err());
        let err = encode(&[&a, b"not a png"]).unwrap_err().to_string();
        assert_eq!(err, "grid 2: not a readable PNG");
    }
}
