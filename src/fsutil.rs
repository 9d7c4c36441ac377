//! File-system helpers shared by every module that writes outputs.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `std::fs::create_dir_all`, whose error, when a file stands where a directory must go,
/// names that file ("results is a file, not a directory") instead of saying "File exists".
pub fn create_dir_all(dir: impl AsRef<Path>) -> std::io::Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|err| match file_in_the_way(dir) {
        Some(file) => std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is a file, not a directory", file.display()),
        ),
        None => err,
    })
}

/// Whether two paths name one file or directory (`results/x` and `./results/x`, or through a
/// link); paths that do not exist, when they are equal.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The file (or other non-directory) at `dir` or at one of its ancestors, where a directory
/// would have to be for `dir` to be one.
pub fn file_in_the_way(dir: &Path) -> Option<&Path> {
    (dir.ancestors())
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| a.exists() && !a.is_dir())
}

/// Reads `path` whole when it is a regular file (or a link to one) of at most `max` bytes:
/// for the files of run directories (grids, checkpoints, records, annotations), which users
/// can replace, where a link to a device or a pipe would never end (or never start) and a
/// huge file would exhaust memory. `u64::MAX` bounds nothing.
pub fn read_regular_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let mut bytes = Vec::new();
    open_regular_file(path)?
        .0
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(
            ErrorKind::FileTooLarge,
            format!("larger than {} MiB", max >> 20),
        ));
    }
    Ok(bytes)
}

/// Opens `path` for reading, with its length, when it is a regular file (or a link to one);
/// anything else is an `InvalidInput` error, decided before opening: opening a FIFO waits for
/// a writer.
pub fn open_regular_file(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((std::fs::File::open(path)?, metadata.len()))
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so that a reader (or a
/// crash) never sees a half-written file. Creates the parent directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `write` into the temporary file. A
/// symlink at `path` is written through: the file it points to is replaced, not the link.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let linked;
    let path = if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        // A dangling link names the file to make.
        linked = std::fs::canonicalize(path).or_else(|_| {
            let target = std::fs::read_link(path)?;
            Ok::<_, std::io::Error>(path.parent().unwrap_or(Path::new("")).join(target))
        })?;
        // The rename would put a regular file in place of a device, a pipe or a folder.
        if std::fs::metadata(&linked).is_ok_and(|m| !m.is_file()) {
            return Err(std::io::Error::other(format!(
                "links to {}, which is not a regular file",
                linked.display()
            )));
        }
        linked.as_path()
    } else {
        path
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
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

/// Where `path` is or would be: its deepest existing ancestor with symlinks followed, and the
/// rest of it with `.` and `..` taken as the directories that creating it would make.
pub fn resolve_path(path: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let absolute = std::path::absolute(path)?;
    let components: Vec<Component> = absolute.components().collect();
    for existing in (1..=components.len()).rev() {
        let Ok(mut resolved) =
            std::fs::canonicalize(components[..existing].iter().collect::<PathBuf>())
        else {
            continue;
        };
        for component in &components[existing..] {
            match component {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => resolved.push(name),
                _ => {}
            }
        }
        return Ok(resolved);
    }
    Ok(absolute)
}

/// The file a run directory's lock is taken on; every training attempt creates it first.
pub const LOCK_FILE: &str = ".lock";

/// A run directory's lock, held while this lives: whoever writes into a run directory
/// (`train`, a sweep's worker, a Slurm task) or deletes it (`runner rm`) holds it first, so
/// two processes never do so at once. The lock goes with the process, however it ends.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    _file: std::fs::File,
}

impl DirLock {
    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Empties the locked directory but for its lock and the entries named in `keep`, moving
    /// what it held into `to` (a new directory), so the lock stays held on the directory that
    /// keeps its name.
    pub fn move_contents(&self, to: &Path, keep: &[&str]) -> std::io::Result<()> {
        create_dir_all(to)?;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name != LOCK_FILE && !keep.iter().any(|k| name == *k) {
                std::fs::rename(entry.path(), to.join(entry.file_name()))?;
            }
        }
        Ok(())
    }

    /// Removes the locked directory when it holds nothing but its lock, then its parents below
    /// `keep` that that leaves empty: undoes the directories a run made when it failed before
    /// writing anything. What cannot be removed stays (it is harmless).
    pub fn remove_if_unused(self, keep: &Path) {
        let only_lock = std::fs::read_dir(&self.dir)
            .is_ok_and(|mut entries| entries.all(|e| e.is_ok_and(|e| e.file_name() == LOCK_FILE)));
        if !only_lock || std::fs::remove_dir_all(&self.dir).is_err() {
            return;
        }
        let parents = self.dir.ancestors().skip(1);
        for parent in parents.take_while(|p| *p != keep && !p.as_os_str().is_empty()) {
            if std::fs::remove_dir(parent).is_err() {
                break;
            }
        }
    }

    /// Deletes everything in the locked directory but its lock and the entries named in `keep`
    /// (a run started over), and what an earlier clear killed half-way left beside it.
    pub fn clear(&self, keep: &[&str]) -> anyhow::Result<()> {
        let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
        if let Some(parent) = self.dir.parent() {
            remove_temp_dirs(parent, &format!("{name}."))?;
        }
        let doomed = doomed_sibling(&self.dir);
        self.move_contents(&doomed, keep)?;
        std::fs::remove_dir_all(&doomed)
            .map_err(|e| anyhow::anyhow!("removing {}: {e}", doomed.display()))
    }
}

/// Locks run directory `dir` (creating it), failing when another process holds it.
pub fn lock_dir(dir: &Path) -> anyhow::Result<DirLock> {
    try_lock_dir_patiently(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: another process is training in this directory",
            dir.display()
        )
    })
}

/// Like [`try_lock_dir`], looking again for a second before answering `None`: a lock held
/// for a moment may be a copy that a child process of this one holds between its fork and
/// its exec (a lock goes with the open file), not another process's.
pub fn try_lock_dir_patiently(dir: &Path) -> anyhow::Result<Option<DirLock>> {
    create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    try_lock_existing_dir_patiently(dir)
}

/// Like [`try_lock_dir_patiently`] for a directory that must exist already: never creates
/// it, and fails (an [`std::io::ErrorKind::NotFound`] inside) when it is gone, e.g. deleted
/// by `runner rm` meanwhile.
pub fn try_lock_existing_dir_patiently(dir: &Path) -> anyhow::Result<Option<DirLock>> {
    for _ in 0..20 {
        if let Some(lock) = try_lock_existing_dir(dir)? {
            return Ok(Some(lock));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    try_lock_existing_dir(dir)
}

/// Like [`lock_dir`], answering `None` when another process holds the lock.
pub fn try_lock_dir(dir: &Path) -> anyhow::Result<Option<DirLock>> {
    create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    try_lock_existing_dir(dir)
}

fn try_lock_existing_dir(dir: &Path) -> anyhow::Result<Option<DirLock>> {
    let (file, locked) = try_lock_file(&dir.join(LOCK_FILE))?;
    Ok(locked.then(|| DirLock {
        dir: dir.to_path_buf(),
        _file: file,
    }))
}

/// Holds `.<name>.lock` next to `path` exclusively while the returned file lives, waiting
/// for another process that holds it (`waiting` is called once if it must wait).
pub fn lock_beside(path: &Path, waiting: impl FnOnce()) -> anyhow::Result<std::fs::File> {
    let lock = hidden_sibling(path, "lock");
    let (file, locked) = try_lock_file(&lock)?;
    if !locked {
        waiting();
        file.lock()
            .map_err(|e| anyhow::anyhow!("{}: cannot be locked: {e}", lock.display()))?;
    }
    Ok(file)
}

/// Opens (creating) the lock file `path` and tries to lock it: the file, and whether this
/// process now holds the lock (`false`: another does).
fn try_lock_file(path: &Path) -> anyhow::Result<(std::fs::File, bool)> {
    let file =
        std::fs::File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok((file, true)),
        Err(std::fs::TryLockError::WouldBlock) => Ok((file, false)),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("{}: cannot be locked: {e}", path.display())
        }
    }
}

/// A hidden name next to `path`: `.<name>.<tag>`.
pub fn hidden_sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}"))
}

/// A temporary name next to `path`: `.name.tmp-<pid>`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    hidden_sibling(path, &format!("tmp-{}", std::process::id()))
}

/// Where [`remove_dir`] and [`replace_dir`] put a directory on its way out: a temporary name
/// (`.name.old.tmp-<pid>`), so [`remove_temp_dirs`] clears it after a kill.
fn doomed_sibling(path: &Path) -> PathBuf {
    hidden_sibling(path, &format!("old.tmp-{}", std::process::id()))
}

/// Deletes a directory so that it vanishes at once: a reader finds it whole or gone, never
/// emptying (renamed away first, then deleted).
pub fn remove_dir(dir: &Path) -> std::io::Result<()> {
    let doomed = doomed_sibling(dir);
    std::fs::rename(dir, &doomed)?;
    std::fs::remove_dir_all(doomed)
}

/// Puts directory `new` in place of `target` by two renames, so a reader finds the old one or
/// the new one (the old put back if the second rename fails), then deletes the old.
pub fn replace_dir(new: &Path, target: &Path) -> std::io::Result<()> {
    if !target.exists() {
        return std::fs::rename(new, target);
    }
    let old = doomed_sibling(target);
    std::fs::rename(target, &old)?;
    if let Err(err) = std::fs::rename(new, target) {
        let _ = std::fs::rename(&old, target);
        return Err(err);
    }
    std::fs::remove_dir_all(old)
}

/// Deletes the temporary directories in `parent` whose name starts with `.<prefix>` (those of
/// [`temp_sibling`], [`remove_dir`] and [`replace_dir`], left by a process killed while
/// writing or deleting). Only a process that holds the lock on what they belong to may call
/// it: no other is writing there.
pub fn remove_temp_dirs(parent: &Path, prefix: &str) -> anyhow::Result<()> {
    let prefix = format!(".{prefix}");
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && name.starts_with(&prefix) && name.contains(".tmp-") {
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| anyhow::anyhow!("removing {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Makes a named pipe at `path`, for tests of what must never be opened.
#[cfg(test)]
pub fn make_fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.unwrap().success(), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_the_way_of_a_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("taken");
        std::fs::write(&file, "mine").unwrap();
        for wanted in [file.join("sub/deeper"), file.clone()] {
            let err = create_dir_all(&wanted).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{} is a file, not a directory", file.display())
            );
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
        create_dir_all(dir.path().join("new/sub")).unwrap();
    }

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
    fn only_regular_files_up_to_the_bound_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("grid.png");
        std::fs::write(&file, [7u8; 100]).unwrap();
        assert_eq!(read_regular_file(&file, 100).unwrap(), [7u8; 100]);
        let err = read_regular_file(&file, 99).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        let device = dir.path().join("device.png");
        std::os::unix::fs::symlink("/dev/zero", &device).unwrap();
        let pipe = dir.path().join("pipe.png");
        make_fifo(&pipe);
        // Neither is opened: reading the first never ends, opening the second never returns.
        for path in [&device, &pipe, &dir.path().to_path_buf()] {
            let err = read_regular_file(path, 100).unwrap_err();
            assert_eq!(err.to_string(), "not a regular file", "{}", path.display());
        }
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_regular_file(&link, 100).unwrap().len(), 100);
    }

    #[test]
    fn a_deleted_directory_is_not_made_again_to_lock_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        drop(lock_dir(&run).unwrap());
        std::fs::remove_dir_all(&run).unwrap();
        let err = try_lock_existing_dir_patiently(&run)
            .unwrap_err()
            .to_string();
        assert!(err.contains("No such file"), "{err}");
        assert!(!run.exists());
        assert!(try_lock_dir_patiently(&run).unwrap().is_some());
        assert!(run.join(LOCK_FILE).is_file());
    }

    #[test]
    fn a_lock_that_a_starting_child_inherited_for_a_moment_is_waited_for() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let held = lock_dir(&run).unwrap();
        let mut command = std::process::Command::new("true");
        // The child holds a copy of every open file, the lock's too, from its fork to its exec.
        // SAFETY: the hook only sleeps, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                std::thread::sleep(std::time::Duration::from_millis(300));
                Ok(())
            });
        }
        let spawning = std::thread::spawn(move || command.status().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(held);
        assert!(try_lock_dir(&run).unwrap().is_none(), "the child holds it");
        lock_dir(&run).unwrap();
        assert!(spawning.join().unwrap().success());
    }

    #[test]
    fn clearing_a_locked_directory_keeps_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let held = lock_dir(&run).unwrap();
        std::fs::create_dir_all(run.join("checkpoints/step-1")).unwrap();
        std::fs::write(run.join("records.jsonl"), "x").unwrap();
        std::fs::write(run.join("mine.json"), "x").unwrap();
        held.move_contents(&dir.path().join("aside"), &["mine.json"])
            .unwrap();
        assert!(dir.path().join("aside/checkpoints/step-1").is_dir());
        assert!(dir.path().join("aside/records.jsonl").is_file());
        std::fs::write(run.join("losses.csv"), "x").unwrap();
        let killed_clear = dir.path().join(".run.old.tmp-999999");
        std::fs::create_dir_all(killed_clear.join("checkpoints")).unwrap();
        held.clear(&["mine.json"]).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, [LOCK_FILE, "mine.json"]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary left"
        );
        assert!(try_lock_dir(&run).unwrap().is_none(), "still held");
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

    #[test]
    fn a_symlink_is_written_through_to_a_regular_file_only() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("kept/target.png");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A dangling link makes its target.
        std::fs::remove_file(&target).unwrap();
        write_atomic(&link, b"made").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"made");

        let device = dir.path().join("null.png");
        std::os::unix::fs::symlink("/dev/null", &device).unwrap();
        let err = write_atomic(&device, b"x").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(
            Path::new("/dev/null")
                .metadata()
                .unwrap()
                .file_type()
                .is_char_device()
        );
        let folder = dir.path().join("folder.png");
        std::os::unix::fs::symlink(dir.path().join("kept"), &folder).unwrap();
        assert!(write_atomic(&folder, b"x").is_err());
        assert!(dir.path().join("kept").is_dir());
    }
}
