//! Reading and writing the IDX format of the standard MNIST files.
//!
//! An IDX file is a big-endian header (`0x00 0x00 type ndims`, then one u32 per dimension)
//! followed by the raw bytes. Only the unsigned-byte type (0x08) is used by MNIST.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use super::DataError;

/// The unsigned-byte element type code of the IDX format.
const UBYTE: u8 = 0x08;

/// An IDX array of unsigned bytes: its dimensions and its data in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file, gunzipping it first when its name ends in `.gz`.
pub fn read(path: &Path) -> Result<IdxArray, DataError> {
    Ok(read_with_header(path)?.1)
}

/// The (uncompressed) header bytes of an IDX file and its array. The header is read first and
/// the data after it no further than the header declares, so a file that claims or holds more
/// than memory can take (a huge file given as a data set, a small `.gz` that inflates without
/// end) is refused without being read whole.
pub fn read_with_header(path: &Path) -> Result<(Vec<u8>, IdxArray), DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let unreadable = |e: std::io::Error| corrupt(format!("cannot be read or decompressed: {e}"));
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|ext| ext == "gz") {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut head = Vec::new();
    let mut reader = reader.take(4);
    reader.read_to_end(&mut head).map_err(unreadable)?;
    if let [_, _, _, ndims] = head[..] {
        reader.set_limit(4 * u64::from(ndims));
        reader.read_to_end(&mut head).map_err(unreadable)?;
    }
    let (dims, _, expected) = header(&head).map_err(corrupt)?;
    if let Some(available) = crate::budget::available_bytes()
        && expected as f64 > available
    {
        return Err(corrupt(format!(
            "dimensions {dims:?} need {} of memory and {} is available",
            crate::budget::human(expected as f64),
            crate::budget::human(available)
        )));
    }
    // Sized once: growing a 47 MB buffer by doubling copied it and faulted in fresh pages
    // each time (a quarter of a second of `runner eval` here).
    let mut data = Vec::new();
    data.try_reserve_exact(expected)
        .map_err(|e| corrupt(format!("dimensions {dims:?}: {e}")))?;
    // One byte more than declared tells a file with trailing bytes from a whole one.
    reader.set_limit(expected as u64 + 1);
    reader.read_to_end(&mut data).map_err(unreadable)?;
    check_body(&dims, expected, data.len()).map_err(corrupt)?;
    Ok((head, IdxArray { dims, data }))
}

/// Parses the bytes of an (uncompressed) IDX file; the error says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<IdxArray, String> {
    let (dims, header_len, expected) = header(bytes)?;
    check_body(&dims, expected, bytes.len() - header_len)?;
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// The dimensions, the header's length and the data bytes they need, from the start of a
/// file (at least its header).
fn header(bytes: &[u8]) -> Result<(Vec<usize>, usize, usize), String> {
    if bytes.len() < 4 {
        return Err(format!(
            "too short for an IDX header ({} bytes)",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != UBYTE {
        return Err(format!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err("zero dimensions".into());
    }
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(format!(
            "truncated header: {ndims} dimensions need {header_len} bytes"
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} hold more bytes than can be addressed"))?;
    Ok((dims, header_len, expected))
}

/// Whether the data after the header, `held` bytes, is what the dimensions need.
fn check_body(dims: &[usize], expected: usize, held: usize) -> Result<(), String> {
    if held < expected {
        return Err(format!(
            "dimensions {dims:?} need {expected} data bytes but the file holds {held} (truncated)"
        ));
    }
    if held > expected {
        return Err(format!(
            "dimensions {dims:?} need {expected} data bytes and the file holds more after them"
        ));
    }
    Ok(())
}

/// Serializes an array as an uncompressed IDX file.
pub fn encode(array: &IdxArray) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * array.dims.len() + array.data.len());
    out.extend_from_slice(&[0, 0, UBYTE, array.dims.len() as u8]);
    for &d in &array.dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IdxArray {
        IdxArray {
            dims: vec![2, 2, 3],
            data: (0..12).collect(),
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(parse(&encode(&sample())).unwrap(), sample());
    }

    #[test]
    fn rejects_wrong_magic() {
        let mut bytes = encode(&sample());
        bytes[0] = 0x1f;
        assert!(parse(&bytes).unwrap_err().contains("magic"));
        let mut bytes = encode(&sample());
        bytes[2] = 0x0d; // float
        assert!(parse(&bytes).unwrap_err().contains("unsigned byte"));
    }

    #[test]
    fn rejects_truncation_and_trailing_bytes() {
        let bytes = encode(&sample());
        assert!(
            parse(&bytes[..bytes.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(parse(&bytes[..9]).unwrap_err().contains("truncated header"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse(&longer).unwrap_err().contains("holds more"));
    }

    /// A header of `dims` and `body` bytes after it, as a file.
    fn file_with(dir: &Path, name: &str, dims: &[u32], body: &[u8]) -> std::path::PathBuf {
        let mut bytes = vec![0, 0, UBYTE, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(body);
        let path = dir.join(name);
        if name.ends_with(".gz") {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(
                std::fs::File::create(&path).unwrap(),
                flate2::Compression::fast(),
            );
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap();
        } else {
            std::fs::write(&path, bytes).unwrap();
        }
        path
    }

    #[test]
    fn files_read_whole_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a-idx3-ubyte", "a-idx3-ubyte.gz"] {
            let path = file_with(dir.path(), name, &[2, 2, 3], &sample().data);
            assert_eq!(read(&path).unwrap(), sample());
            let (header, array) = read_with_header(&path).unwrap();
            assert_eq!([header, array.data].concat(), encode(&sample()));
            let path = file_with(dir.path(), name, &[2, 2, 3], &[0; 13]);
            let err = read(&path).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("holds more"), "{err}");
            let path = file_with(dir.path(), name, &[2, 2, 3], &[0; 11]);
            let err = read(&path).unwrap_err().to_string();
            assert!(err.contains("holds 11 (truncated)"), "{err}");
        }
    }

    #[test]
    fn dimensions_beyond_memory_or_addresses_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        // Their product wraps to 0 in 64 bits: an empty body must not pass for 2^64 bytes.
        let path = file_with(
            dir.path(),
            "wrap-idx3-ubyte",
            &[1 << 16, 1 << 24, 1 << 24],
            &[],
        );
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("more bytes than can be addressed"), "{err}");
        // 1 TiB declared, and a body that would inflate to it: refused before reading it.
        let path = file_with(
            dir.path(),
            "big-idx3-ubyte.gz",
            &[1 << 20, 1 << 10, 1 << 10],
            &[0; 4096],
        );
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("need 1.0 TiB of memory"), "{err}");
    }
}
