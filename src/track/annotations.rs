//! A run's tags and note: what its user says of it (`runner tag`), as W&B's tags and notes.
//!
//! They live in the database (`tags`, `runs.note`) and in the run's own `annotations.json`, the
//! durable copy a sweep replays into a new or deleted database, as it replays `records.jsonl`.
//! A change writes both in one write-locked transaction: two `runner tag` at once are applied
//! one after the other, and a file that cannot be written leaves the database as it was.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

/// The annotations file's name in a run directory.
pub const FILE: &str = "annotations.json";

/// The annotations file of a run directory.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join(FILE)
}

/// A run's tags and note.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    pub tags: BTreeSet<String>,
    pub note: Option<String>,
}

/// What `runner tag` changes: tags to add and remove, and the note to set (`Some("")` clears it).
#[derive(Debug, Default)]
pub struct Change {
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub note: Option<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.note.is_none()
    }
}

/// The longest note kept: a paragraph, not a file pasted by mistake.
const MAX_NOTE: usize = 10_000;

/// Refuses a tag that would not read as one word in `runner runs`, a URL or a shell.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = (1..=64).contains(&tag.chars().count())
        && tag
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.:/+".contains(c));
    if !ok {
        bail!(
            "tag `{}`: a tag is 1 to 64 letters, digits and `-_.:/+` (no spaces; repeat --add for several)",
            crate::console::clipped(tag)
        );
    }
    Ok(())
}

/// Refuses a note longer than [`MAX_NOTE`] characters.
fn check_note(note: &str) -> Result<()> {
    let length = note.chars().count();
    if length > MAX_NOTE {
        bail!("the note has {length} characters; a note keeps at most {MAX_NOTE}");
    }
    Ok(())
}

/// Refuses a new note with control characters other than line breaks and tabs: `runs` and
/// `show` print notes to terminals, where an escape sequence acts (clears the screen,
/// retitles the window) instead of showing. (Notes kept by earlier releases stay readable.)
fn check_new_note(note: &str) -> Result<()> {
    check_note(note)?;
    if let Some((at, c)) =
        (note.chars().enumerate()).find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        bail!(
            "the note has a control character ({:?}, character {}): a note is text, with line \
             breaks and tabs at most",
            c,
            at + 1
        );
    }
    Ok(())
}

/// The annotations `run_dir` holds (`None` without a file); a damaged file is an error naming it.
pub fn read(run_dir: &Path) -> Result<Option<Annotations>> {
    let path = path(run_dir);
    // Tags and a note of at most 10 000 characters: a megabyte is far more than a whole file.
    let text = match crate::fsutil::read_regular_file(&path, 1 << 20) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let annotations: Annotations =
        serde_json::from_slice(&text).with_context(|| format!("{}: damaged", path.display()))?;
    // A file edited by hand gets the checks `runner tag` makes.
    annotations
        .tags
        .iter()
        .try_for_each(|tag| check_tag(tag))
        .and_then(|()| check_note(annotations.note.as_deref().unwrap_or_default()))
        .with_context(|| format!("{}: damaged", path.display()))?;
    Ok(Some(annotations))
}

/// The annotations the database holds for `run_id`.
pub fn load(conn: &Connection, run_id: &str) -> Result<Annotations> {
    if !super::has_table(conn, "tags")? {
        return Ok(Annotations::default());
    }
    let note = conn
        .query_row("SELECT note FROM runs WHERE id = ?1", [run_id], |r| {
            r.get::<_, Option<String>>(0)
        })
        .optional()?
        .flatten();
    let mut statement = conn.prepare("SELECT tag FROM tags WHERE run_id = ?1")?;
    let tags = statement
        .query_map([run_id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Annotations { tags, note })
}

/// Replaces the database's annotations of `run_id` with `annotations`; `false` (and nothing
/// stored) when the database has no such run.
pub fn store(tx: &Transaction<'_>, run_id: &str, annotations: &Annotations) -> Result<bool> {
    let known: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
        [run_id],
        |r| r.get(0),
    )?;
    if !known {
        return Ok(false);
    }
    tx.execute("DELETE FROM tags WHERE run_id = ?1", [run_id])?;
    for tag in &annotations.tags {
        tx.execute(
            "INSERT INTO tags (run_id, tag) VALUES (?1, ?2)",
            [run_id, tag],
        )?;
    }
    tx.execute(
        "UPDATE runs SET note = ?2 WHERE id = ?1",
        rusqlite::params![run_id, annotations.note],
    )?;
    Ok(true)
}

/// Applies `change` to run `run_id` in `conn`'s database and in `run_dir`'s file (when the
/// directory is there), and answers the run's annotations after it.
pub fn apply(
    conn: &mut Connection,
    run_id: &str,
    run_dir: Option<&Path>,
    change: &Change,
) -> Result<Annotations> {
    for tag in change.add.iter().chain(&change.remove) {
        check_tag(tag)?;
    }
    if let Some(tag) = change.add.iter().find(|tag| change.remove.contains(tag)) {
        bail!("tag `{tag}` is both added (--add) and removed (--remove): which is meant?");
    }
    check_new_note(change.note.as_deref().unwrap_or_default())?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut annotations = load(&tx, run_id)?;
    for tag in &change.remove {
        annotations.tags.remove(tag);
    }
    annotations.tags.extend(change.add.iter().cloned());
    if let Some(note) = &change.note {
        annotations.note = Some(note.trim().to_string()).filter(|n| !n.is_empty());
    }
    // (`runner rm` may have deleted it since it was looked up.)
    anyhow::ensure!(
        store(&tx, run_id, &annotations)?,
        "run {run_id} is no longer in the database"
    );
    if let Some(dir) = run_dir.filter(|dir| dir.is_dir()) {
        write(dir, &annotations)?;
    }
    tx.commit()?;
    Ok(annotations)
}

/// Writes `annotations` to `run_dir`'s file, whole or not at all; no annotations, no file.
pub fn write(run_dir: &Path, annotations: &Annotations) -> Result<()> {
    let path = path(run_dir);
    if annotations == &Annotations::default() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    let json = serde_json::to_string_pretty(annotations).expect("annotations serialize");
    crate::fsutil::write_atomic(&path, json.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_one_word() {
        for good in ["good", "baseline-v2", "fid_100", "été", "a:b/c+d"] {
            check_tag(good).unwrap();
        }
        for bad in ["", "two words", "a,b", "x\n", &"t".repeat(65), "semi;colon"] {
            let err = check_tag(bad).unwrap_err().to_string();
            assert!(err.contains("a tag is 1 to 64"), "{err}");
        }
        // A pasted page is named by its start, not echoed whole.
        let err = check_tag(&"t".repeat(100_000)).unwrap_err().to_string();
        assert!(err.len() < 300 && err.contains("t…`"), "{err}");
    }

    #[test]
    fn notes_are_text() {
        check_new_note("sharp 7s,\n\tfew 1s: été").unwrap();
        for bad in ["\u{1b}[2J", "a\rb", "bell\u{7}", "\u{9b}31m"] {
            let err = check_new_note(bad).unwrap_err().to_string();
            assert!(err.contains("control character"), "{err}");
            // One that an earlier release kept is read as it is.
            check_note(bad).unwrap();
        }
        let err = check_new_note(&"n".repeat(MAX_NOTE + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 10000"), "{err}");
    }

    #[test]
    fn a_tag_both_added_and_removed_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::track::open(&dir.path().join("runs.sqlite")).unwrap();
        let change = Change {
            add: vec!["good".into(), "sharp".into()],
            remove: vec!["sharp".into()],
            note: Some("kept?".into()),
        };
        let err = apply(&mut conn, "0123456789ab", Some(dir.path()), &change).unwrap_err();
        assert!(
            err.to_string()
                .contains("tag `sharp` is both added (--add) and removed (--remove)"),
            "{err}"
        );
        assert!(!path(dir.path()).exists());
    }

    #[test]
    fn a_run_the_database_lost_is_not_annotated() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::track::open(&dir.path().join("runs.sqlite")).unwrap();
        let change = Change {
            note: Some("deleted meanwhile".into()),
            ..Default::default()
        };
        let err = apply(&mut conn, "0123456789ab", Some(dir.path()), &change).unwrap_err();
        assert!(
            err.to_string().contains("no longer in the database"),
            "{err}"
        );
        assert!(!path(dir.path()).exists());
    }

    #[test]
    fn a_damaged_file_is_named_and_none_is_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        for damaged in [
            r#"{"tags": ["#,
            r#"{"tags": ["two words"], "note": null}"#,
            r#"{"tags": [], "note": null, "extra": 1}"#,
        ] {
            std::fs::write(path(dir.path()), damaged).unwrap();
            let err = format!("{:#}", read(dir.path()).unwrap_err());
            assert!(err.contains("annotations.json: damaged"), "{err}");
        }
        let a = Annotations {
            tags: ["good".to_string()].into(),
            note: Some("sharp 7s".into()),
        };
        write(dir.path(), &a).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(a));
        write(dir.path(), &Annotations::default()).unwrap();
        assert!(!path(dir.path()).exists());
    }
}
