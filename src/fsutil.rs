//! File-system helpers shared by every module that writes outputs.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary sibling and a rename, so that a reader (or a
/// crash) never sees a half-written file. Creates the parent directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `write` into the temporary file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The file a run directory's lock is taken on; every training attempt creates it first.
pub const LOCK_FILE: &str = ".lock";

/// Holds `<dir>/.lock` exclusively while the returned file lives, so two processes never
/// write into one run directory at once (whatever started them: `train`, sweeps, Slurm
/// tasks); the lock goes with the process, however it ends.
pub fn lock_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    try_lock_dir(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: another process is training in this directory",
            dir.display()
        )
    })
}

/// Like [`lock_dir`], answering `None` when another process holds the lock.
pub fn try_lock_dir(dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let path = dir.join(LOCK_FILE);
    let file =
        std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("{}: cannot be locked: {e}", path.display())
        }
    }
}

/// Holds `.<name>.lock` next to `path` exclusively while the returned file lives, waiting
/// for another process that holds it (`waiting` is called once if it must wait).
pub fn lock_beside(path: &Path, waiting: impl FnOnce()) -> anyhow::Result<std::fs::File> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let lock = path.with_file_name(format!(".{name}.lock"));
    let file =
        std::fs::File::create(&lock).map_err(|e| anyhow::anyhow!("{}: {e}", lock.display()))?;
    let locked = match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => {
            waiting();
            file.lock()
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
        Ok(()) => Ok(()),
    };
    locked.map_err(|e| anyhow::anyhow!("{}: cannot be locked: {e}", lock.display()))?;
    Ok(file)
}

/// A temporary name next to `path`: `.name.tmp-<pid>`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_directory_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another process is training"), "{err}");
        drop(held);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.bin");
        let err = write_atomic_with(&path, |_| Err(std::io::Error::other("boom")));
        assert!(err.is_err());
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            0
        );
        write_atomic(&path, b"ok").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ok");
    }
}
