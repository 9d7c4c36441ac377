//! Folders of PNG files, one image each: what pytorch-fid, torch-fidelity and clean-fid read
//! and what a script saving `torchvision.utils.save_image` per sample writes. A conditional
//! GAN's images go in one subfolder per class (`3/000012.png`), torchvision's `ImageFolder`
//! layout, which also gives them their labels when read back.

use std::cmp::Ordering;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::Context;
use image::codecs::png::PngDecoder;
use image::{DynamicImage, GrayImage, ImageDecoder};

use super::{ImageBatch, Loaded, check_side};
use crate::model::CLASSES;

/// Whether `generate --out PATH` means a folder: an existing folder, or a name ending in `/`.
pub fn names_folder(path: &Path) -> bool {
    path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/')
}

/// Writes each image to `dir` as a PNG file numbered in order (`000000.png`, ...), in the
/// subfolder of its class when `labels` are given. `dir` must be new or empty: a folder is
/// scored whole, so older images left in it would mix with these. The files are written to
/// a hidden sibling first and renamed into place, so an interrupted run leaves no half-folder.
pub fn write_folder(images: &ImageBatch, labels: Option<&[u8]>, dir: &Path) -> anyhow::Result<()> {
    let dir: PathBuf = dir.components().collect();
    let name = dir.display();
    if let Ok(meta) = std::fs::metadata(&dir) {
        anyhow::ensure!(meta.is_dir(), "{name}: exists and is not a folder");
        let held = std::fs::read_dir(&dir)
            .with_context(|| name.to_string())?
            .count();
        anyhow::ensure!(
            held == 0,
            "{name}: already holds {held} entries; name a new or empty folder (a folder of \
             images is scored whole: the older ones would mix with these)"
        );
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsutil::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    let staging = crate::fsutil::temp_sibling(&dir);
    let written = write_files(images, labels, &staging, &dir)
        .and_then(|()| std::fs::rename(&staging, &dir).with_context(|| name.to_string()));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written
}

/// Writes the files into `staging`, naming them in errors as they would be in `dir`.
fn write_files(
    images: &ImageBatch,
    labels: Option<&[u8]>,
    staging: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let width = 6.max(images.len().saturating_sub(1).to_string().len());
    let side = images.side as u32;
    for i in 0..images.len() {
        let folder = labels.map_or(PathBuf::new(), |labels| {
            PathBuf::from(labels[i].to_string())
        });
        let file = folder.join(format!("{i:0width$}.png"));
        let shown = || dir.join(&file).display().to_string();
        crate::fsutil::create_dir_all(staging.join(&folder)).with_context(shown)?;
        let image = GrayImage::from_raw(side, side, images.image(i).to_vec())
            .expect("an image's pixels fill its side");
        let mut out =
            BufWriter::new(std::fs::File::create(staging.join(&file)).with_context(shown)?);
        image
            .write_to(&mut out, image::ImageFormat::Png)
            .with_context(shown)?;
        // Flushed here, not on drop, which would swallow a full disk's error.
        out.into_inner()
            .map_err(|e| e.into_error())
            .with_context(shown)?;
    }
    Ok(())
}

/// A PNG file to read, and the class of the folder it is in.
struct Entry {
    path: PathBuf,
    name: String,
    class: Option<u8>,
}

/// Reads a folder of PNG files, or of class folders `0` to `9` of them (their labels), in
/// the order people number files (`2.png` before `10.png`; across class folders by name,
/// then class). Hidden files are skipped; any other file or folder is refused by name, as
/// scoring only some of the images would go unnoticed. Colour images are made gray.
pub fn read(dir: &Path) -> anyhow::Result<Loaded> {
    let (mut entries, folders) = listing(dir, None)?;
    let by_class = !folders.is_empty();
    if by_class {
        anyhow::ensure!(
            entries.is_empty(),
            "{}: holds both folders and files ({} beside {}); give it PNG files, or one folder \
             per class (0 to 9) of them",
            dir.display(),
            entries[0].name,
            folders[0].1
        );
        for (path, name) in &folders {
            let class = name
                .parse::<u8>()
                .ok()
                .filter(|&c| (c as usize) < CLASSES && c.to_string() == *name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: a folder among the images; class folders are named 0 to 9 \
                         (torchvision's ImageFolder layout)",
                        path.display()
                    )
                })?;
            let (files, inner) = listing(path, Some(class))?;
            if let Some((inner, _)) = inner.first() {
                anyhow::bail!(
                    "{}: a folder inside a class folder; each class folder holds PNG files",
                    inner.display()
                );
            }
            entries.extend(files);
        }
    }
    anyhow::ensure!(!entries.is_empty(), "{}: holds no PNG files", dir.display());
    entries.sort_by(|a, b| match natord::compare(&a.name, &b.name) {
        Ordering::Equal => a.class.cmp(&b.class),
        order => order,
    });

    let first = decode(&entries[0].path, None)?;
    let side = first.image.width() as usize;
    crate::budget::check_images(entries.len(), side, "--images")?;
    let mut pixels = Vec::with_capacity(entries.len() * side * side);
    let mut coloured = first.coloured;
    pixels.extend_from_slice(first.image.as_raw());
    for entry in &entries[1..] {
        let decoded = decode(&entry.path, Some((side, &entries[0].path)))?;
        coloured |= decoded.coloured;
        pixels.extend_from_slice(decoded.image.as_raw());
    }
    let images = ImageBatch { pixels, side };
    let how = format!(
        "{} of {side}x{side} (PNG files{}{})",
        crate::console::counted(images.len(), "image"),
        if by_class { " in class folders" } else { "" },
        if coloured { ", colour made gray" } else { "" }
    );
    let labels = by_class.then(|| entries.iter().filter_map(|e| e.class).collect());
    Ok(Loaded {
        images,
        labels,
        how,
    })
}

/// A folder's PNG files and its folders (path and name).
type Listing = (Vec<Entry>, Vec<(PathBuf, String)>);

/// The PNG files in `dir` (of class `class`) and its folders, hidden entries skipped; any
/// other file is refused.
fn listing(dir: &Path, class: Option<u8>) -> anyhow::Result<Listing> {
    let (mut files, mut folders) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let entry = entry.with_context(|| dir.display().to_string())?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if name.starts_with('.') {
            continue;
        }
        // Links are followed; a pipe or a device would block or never end.
        let meta = std::fs::metadata(&path).with_context(|| path.display().to_string())?;
        if meta.is_dir() {
            folders.push((path, name));
        } else if !meta.is_file() {
            anyhow::bail!("{}: not a regular file", path.display());
        } else if name.to_ascii_lowercase().ends_with(".png") {
            files.push(Entry { path, name, class });
        } else {
            anyhow::bail!(
                "{}: not a PNG file; a folder of images is read as PNG files only (JPEG's \
                 artifacts would move the scores), so convert it or move it out",
                path.display()
            );
        }
    }
    folders.sort_by(|a, b| natord::compare(&a.1, &b.1));
    Ok((files, folders))
}

struct Decoded {
    image: GrayImage,
    coloured: bool,
}

/// One PNG file as gray pixels, its size checked from its header before it is decoded:
/// square, a side the evaluator takes, and the side of `like`'s first image when given.
fn decode(path: &Path, like: Option<(usize, &Path)>) -> anyhow::Result<Decoded> {
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| name.to_string())?;
    let decoder = PngDecoder::new(BufReader::new(file))
        .with_context(|| format!("{name}: not a readable PNG file"))?;
    let (width, height) = decoder.dimensions();
    anyhow::ensure!(
        width == height,
        "{name}: {width}x{height} pixels; the images must be square"
    );
    let side = width as usize;
    match like {
        Some((first_side, first)) => anyhow::ensure!(
            side == first_side,
            "{name}: {side}x{side} pixels, where {} has {first_side}x{first_side}; a folder's \
             images share one size",
            first.display()
        ),
        None => check_side(&name.to_string(), side)?,
    }
    let coloured = decoder.color_type().has_color();
    let image = DynamicImage::from_decoder(decoder)
        .with_context(|| format!("{name}: not a readable PNG file"))?;
    Ok(Decoded {
        image: image.into_luma8(),
        coloured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, side: usize) -> ImageBatch {
        ImageBatch {
            pixels: (0..n * side * side).map(|i| (i * 7 % 256) as u8).collect(),
            side,
        }
    }

    #[test]
    fn a_folder_reads_back_what_was_written_in_order_with_its_classes() {
        let root = tempfile::tempdir().unwrap();
        let images = batch(12, 9);
        let plain = root.path().join("plain/");
        write_folder(&images, None, &plain).unwrap();
        assert!(plain.join("000011.png").is_file());
        let back = read(&plain).unwrap();
        assert_eq!(back.images, images);
        assert_eq!(back.labels, None);
        assert_eq!(back.how, "12 images of 9x9 (PNG files)");

        let labels: Vec<u8> = (0..12).map(|i| (i * 3 % 10) as u8).collect();
        let by_class = root.path().join("by-class");
        write_folder(&images, Some(&labels), &by_class).unwrap();
        assert!(by_class.join("3/000001.png").is_file());
        let back = read(&by_class).unwrap();
        assert_eq!(
            back.images, images,
            "files are ordered by name across classes"
        );
        assert_eq!(back.labels, Some(labels));
        assert_eq!(back.how, "12 images of 9x9 (PNG files in class folders)");
        let hidden: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "no staging folder is left: {hidden:?}");
    }

    #[test]
    fn files_numbered_without_padding_are_read_in_number_order_and_colour_is_made_gray() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..12u8 {
            let rgb = image::RgbImage::from_pixel(8, 8, image::Rgb([i * 20, i * 20, i * 20]));
            rgb.save(dir.path().join(format!("{i}.png"))).unwrap();
        }
        std::fs::write(dir.path().join(".DS_Store"), b"junk").unwrap();
        let back = read(dir.path()).unwrap();
        let firsts: Vec<u8> = (0..12).map(|i| back.images.image(i)[0]).collect();
        assert_eq!(firsts, (0..12).map(|i| i * 20).collect::<Vec<u8>>());
        assert!(
            back.how.ends_with("(PNG files, colour made gray)"),
            "{}",
            back.how
        );
    }

    #[test]
    fn a_folder_that_holds_anything_already_is_not_written_into() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.png"), b"x").unwrap();
        let err = write_folder(&batch(2, 8), None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("already holds 1 entries"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("old.png")).unwrap(), b"x");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_folder(&batch(2, 8), None, &empty).unwrap();
        assert_eq!(read(&empty).unwrap().images, batch(2, 8));
    }

    #[test]
    fn what_is_not_a_folder_of_same_sized_square_pngs_is_named() {
        type Make = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Make, &str)> = vec![
            ("empty", Box::new(|_| {}), "holds no PNG files"),
            (
                "jpeg",
                Box::new(|d| std::fs::write(d.join("a.jpg"), b"x").unwrap()),
                "a.jpg: not a PNG file",
            ),
            (
                "junk",
                Box::new(|d| std::fs::write(d.join("a.png"), b"not a png").unwrap()),
                "a.png: not a readable PNG file",
            ),
            (
                "wide",
                Box::new(|d| GrayImage::new(10, 8).save(d.join("w.png")).unwrap()),
                "w.png: 10x8 pixels; the images must be square",
            ),
            (
                "tiny",
                Box::new(|d| GrayImage::new(4, 4).save(d.join("t.png")).unwrap()),
                "images of 4x4 pixels; the evaluator takes 8 to 256",
            ),
            (
                "mixed",
                Box::new(|d| {
                    GrayImage::new(8, 8).save(d.join("1.png")).unwrap();
                    GrayImage::new(9, 9).save(d.join("2.png")).unwrap();
                }),
                "2.png: 9x9 pixels, where",
            ),
            (
                "both",
                Box::new(|d| {
                    GrayImage::new(8, 8).save(d.join("1.png")).unwrap();
                    std::fs::create_dir(d.join("3")).unwrap();
                }),
                "holds both folders and files",
            ),
            (
                "not-a-class",
                Box::new(|d| std::fs::create_dir(d.join("cats")).unwrap()),
                "cats: a folder among the images; class folders are named 0 to 9",
            ),
            (
                "pipe",
                Box::new(|d| {
                    crate::fsutil::make_fifo(&d.join("p.png"));
                }),
                "p.png: not a regular file",
            ),
            (
                "dangling",
                Box::new(|d| std::os::unix::fs::symlink(d.join("gone"), d.join("l.png")).unwrap()),
                "l.png: No such file",
            ),
            (
                "padded-class",
                Box::new(|d| std::fs::create_dir(d.join("03")).unwrap()),
                "03: a folder among the images",
            ),
        ];
        for (case, make, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            make(dir.path());
            let err = read(dir.path()).err().map(|e| format!("{e:#}"));
            assert!(
                err.as_deref().is_some_and(|e| e.contains(expected)),
                "{case}: {err:?}"
            );
        }
    }
}
