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
    parse(&read_bytes(path)?).map_err(|reason| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

/// The uncompressed bytes of an IDX file (gunzipped when its name ends in `.gz`).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut bytes = Vec::new();
    let result = if path.extension().is_some_and(|ext| ext == "gz") {
        GzDecoder::new(file).read_to_end(&mut bytes)
    } else {
        std::io::BufReader::new(file).read_to_end(&mut bytes)
    };
    result.map_err(|e| DataError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot be read or decompressed: {e}"),
    })?;
    Ok(bytes)
}

/// Parses the bytes of an (uncompressed) IDX file; the error says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<IdxArray, String> {
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
    let expected: usize = dims.iter().product();
    let body = &bytes[header_len..];
    if body.len() != expected {
        return Err(format!(
            "dimensions {dims:?} need {expected} data bytes but the file holds {}{}",
            body.len(),
            if body.len() < expected {
                " (truncated)"
            } else {
                ""
            }
        ));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
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
        assert!(parse(&longer).unwrap_err().contains("holds 13"));
    }
}
