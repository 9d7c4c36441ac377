//! Printing that a closed pipe cannot stop. Rust's `println!` and `eprintln!` panic when the
//! reader has gone (`runner query ... | head`, `runner sweep ... 2>&1 | head`), which killed a
//! run half-way with no checkpoint. Here a stream whose reader left is dropped silently and
//! the command finishes its work and stores its results; the macros [`outln!`](crate::outln),
//! [`out!`](crate::out) and [`errln!`](crate::errln) replace the standard ones everywhere.

use std::fmt::Arguments;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// Writes to standard output. A reader that went away is not an error; any other failure (a
/// full disk behind `> file`) is, since the output is what the command was for.
pub fn write_out(args: Arguments) -> Result<()> {
    write_to(&mut io::stdout().lock(), &STDOUT_GONE, args).context("writing to standard output")
}

/// Whether standard output's reader has gone (`runner query ... | head`): work done only to
/// print can stop.
pub fn stdout_gone() -> bool {
    STDOUT_GONE.load(Ordering::Relaxed)
}

/// Writes to standard error, ignoring every failure: diagnostics never stop a command.
pub fn write_err(args: Arguments) {
    let _ = write_to(&mut io::stderr().lock(), &STDERR_GONE, args);
}

fn write_to(stream: &mut impl Write, gone: &AtomicBool, args: Arguments) -> io::Result<()> {
    if gone.load(Ordering::Relaxed) {
        return Ok(());
    }
    match stream.write_fmt(args).and_then(|()| stream.flush()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
            gone.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// `println!` to standard output, returning `anyhow::Result<()>` (use `?`).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::console::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to standard output, returning `anyhow::Result<()>` (use `?`).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::console::write_out(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `n` and a noun, in the plural unless `n` is 1: "1 run", "3 runs", "0 samples".
pub fn counted(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `text` for an error message: whole up to 80 characters, else its first 80 and an ellipsis
/// (a script's 100 000-character argument came back as a 100 000-character error).
pub fn clipped(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(clipped("3f9a"), "3f9a");
        let long = "é".repeat(100);
        assert_eq!(clipped(&long), format!("{}…", "é".repeat(80)));
        assert_eq!(clipped(&"x".repeat(80)), "x".repeat(80));
    }

    #[test]
    fn counted_says_one_thing_and_many_things() {
        assert_eq!(counted(1, "run"), "1 run");
        assert_eq!(counted(0, "sample"), "0 samples");
        assert_eq!(counted(12, "experiment"), "12 experiments");
    }

    /// A stream whose reader has gone, or that is full.
    struct Failing(io::ErrorKind, usize);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.1 += 1;
            Err(self.0.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_broken_pipe_is_dropped_once_and_for_all() {
        let gone = AtomicBool::new(false);
        let mut stream = Failing(io::ErrorKind::BrokenPipe, 0);
        assert!(write_to(&mut stream, &gone, format_args!("a\n")).is_ok());
        assert!(write_to(&mut stream, &gone, format_args!("b\n")).is_ok());
        assert_eq!(stream.1, 1, "nothing is written after the reader left");
        assert!(gone.load(Ordering::Relaxed));
    }

    #[test]
    fn other_write_failures_are_errors() {
        let gone = AtomicBool::new(false);
        let mut stream = Failing(io::ErrorKind::StorageFull, 0);
        assert!(write_to(&mut stream, &gone, format_args!("a\n")).is_err());
        assert!(!gone.load(Ordering::Relaxed));
    }
}
