//! Stamps the runner with its version and the commit it is built from
//! (`GANRUNNER_VERSION`, e.g. `0.1.0 (58e9a61c2)`), which every run records (`runs.version`),
//! as W&B and MLflow record a run's commit: sweeps skip finished runs by config, so after a fix
//! in the code only the version tells the runs trained before it from those after.
//!
//! `+modified` marks a build whose sources differ from the commit. The script runs again when
//! the sources change (which rebuilds the crate anyway) and when HEAD moves. vergen-gitcl
//! reruns on HEAD alone, so its dirty flag goes stale as sources change, and these few git
//! calls are all it would do here. Outside its own git checkout (a source tarball, a vendor
//! tree) or without git, the runner records its crate version alone.

use std::path::Path;
use std::process::Command;

/// What the binary is built from: a change to these makes the build "modified".
const SOURCES: &[&str] = &[
    "src",
    "build.rs",
    "Cargo.toml",
    "Cargo.lock",
    "crates",
    "evaluators",
];

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| text.trim().to_string())
}

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

/// The checkout's commit, `+modified` when [`SOURCES`] differ from it.
fn commit() -> Option<String> {
    // Only this crate's own checkout: not one it was unpacked inside, such as a vendor tree.
    let root = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let toplevel = git(&["rev-parse", "--show-toplevel"])?;
    if !same_dir(Path::new(&toplevel), Path::new(&root)) {
        return None;
    }
    let commit = git(&["rev-parse", "--short=9", "HEAD"])?;
    // HEAD, the branch it names and packed refs move on a commit or a checkout (only files
    // that exist: cargo reruns the script on every build for a missing one).
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    refs.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for file in refs {
        if let Some(path) = git(&["rev-parse", "--git-path", &file])
            && Path::new(&path).exists()
        {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    // (New files count: one may be compiled in.)
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(SOURCES);
    let modified = git(&status).is_none_or(|changes| !changes.is_empty());
    Some(format!(
        "{commit}{}",
        if modified { "+modified" } else { "" }
    ))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
