//! Stamps the runner with its version and the commit it is built from
//! (`GANRUNNER_VERSION`, e.g. `0.1.0 (58e9a61c2)`), which every run records (`runs.version`),
//! as W&B and MLflow record a run's commit: sweeps skip finished runs by config, so after a
//! change to the code only the version tells the runs trained before it from those after.
//!
//! A build whose sources differ from the commit is `+modified.<hash of the differences>`:
//! researchers rerun sweeps on uncommitted edits, and two builds with different edits must not
//! pass for one. The script runs again when the sources change (which rebuilds the crate
//! anyway) and when HEAD moves. vergen-gitcl reruns on HEAD alone, so its dirty flag goes
//! stale as sources change, and it hashes no differences. Outside its own git checkout (a
//! source tarball, a vendor tree) or without git, the runner records its crate version alone.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What the binary is built from: a change to these makes the build "modified".
const SOURCES: &[&str] = &[
    "src",
    "build.rs",
    "Cargo.toml",
    "Cargo.lock",
    "crates",
    "evaluators",
];

fn main() {
    println!("cargo::rerun-if-env-changed=GIT_DIR");
    for source in SOURCES {
        println!("cargo::rerun-if-changed={source}");
    }
    let crate_version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let version = match commit() {
        Some(commit) => format!("{crate_version} ({commit})"),
        None => crate_version,
    };
    println!("cargo::rustc-env=GANRUNNER_VERSION={version}");
}

/// The checkout's commit, with `+modified.<hash>` when [`SOURCES`] differ from it.
fn commit() -> Option<String> {
    // Only this crate's own checkout: not one it was unpacked inside, such as a vendor tree.
    let root = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let toplevel = text(git(&["rev-parse", "--show-toplevel"], None)?);
    if !same_dir(Path::new(&toplevel), Path::new(&root)) {
        return None;
    }
    let commit = text(git(&["rev-parse", "--short=9", "HEAD"], None)?);
    // HEAD, the branch it names and packed refs move on a commit or a checkout (only files
    // that exist: cargo reruns the script on every build for a missing one).
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    refs.extend(git(&["symbolic-ref", "-q", "HEAD"], None).map(text));
    for file in refs {
        if let Some(path) = git(&["rev-parse", "--git-path", &file], None).map(text)
            && Path::new(&path).exists()
        {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    let changes = changes();
    if changes.as_ref().is_some_and(Vec::is_empty) {
        return Some(commit);
    }
    let hash = changes
        .and_then(|changes| git(&["hash-object", "--stdin"], Some(&changes)))
        .and_then(|hash| text(hash).get(..7).map(|short| format!(".{short}")));
    Some(format!("{commit}+modified{}", hash.unwrap_or_default()))
}

/// How the sources differ from HEAD: the diff of tracked files, then each new file's path and
/// bytes (a new file may be compiled in). Empty when they do not; none when git cannot tell.
fn changes() -> Option<Vec<u8>> {
    let with_sources = |args: &[&'static str]| [args, &["--"], SOURCES].concat();
    let mut changes = git(&with_sources(&["diff", "HEAD", "--binary"]), None)?;
    let new = git(
        &with_sources(&["ls-files", "--others", "--exclude-standard", "-z"]),
        None,
    )?;
    for path in new.split(|&b| b == 0).filter(|p| !p.is_empty()) {
        changes.extend_from_slice(path);
        changes.push(0);
        changes.extend(std::fs::read(String::from_utf8_lossy(path).as_ref()).ok()?);
    }
    Some(changes)
}

/// `git args`, fed `input`: its output when it succeeds.
fn git(args: &[&str], input: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut child = Command::new("git")
        .args(args)
        // Never take the index's lock to refresh it: a git command of the user's at that
        // moment would fail on it.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if let Some(input) = input {
        child.stdin.take()?.write_all(input).ok()?;
    }
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_string()
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
