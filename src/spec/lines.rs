//! Where a key or an error stands in a spec's text: the line a dotted key is written at
//! (in a table, as a dotted key, inside an inline table, in the n-th `[[sweep]]` entry), and
//! toml's parse errors quoted around their column.

/// toml's message for an error in `text`. It quotes the whole offending line, and a
/// generated spec's line of thousands of values filled the screen: a long line is quoted
/// around the error alone.
pub(super) fn toml_error(text: &str, err: &toml::de::Error) -> String {
    const AROUND: usize = 60;
    let full = err.to_string().trim_end().to_string();
    let Some(start) = err.span().map(|span| span.start.min(text.len())) else {
        return full;
    };
    let Some(start) = (0..=start).rev().find(|&i| text.is_char_boundary(i)) else {
        return full;
    };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or_default();
    if line_text.chars().count() <= 2 * AROUND {
        return full;
    }
    let column = text[line_start..start].chars().count();
    let first = column.saturating_sub(AROUND);
    let excerpt: String = line_text.chars().skip(first).take(2 * AROUND).collect();
    let before = if first > 0 { "…" } else { "" };
    let after = if first + 2 * AROUND < line_text.chars().count() {
        "…"
    } else {
        ""
    };
    format!(
        "TOML parse error at line {}, column {}: {}\n  near: {before}{excerpt}{after}",
        text[..start].matches('\n').count() + 1,
        column + 1,
        err.message().trim_end()
    )
}

/// serde's type errors in the words of a spec's author: `expected u64` is a whole number of
/// 0 or more, `f64` a number, a float serde writes out in full (`1e99` as a hundred digits) is
/// shown in exponent form, an integer too large for TOML is named as such (toml read it
/// as an `i128` that no TOML value holds), and a string given for a number is quoted clipped.
pub(super) fn plain_types(message: &str) -> String {
    let mut text = message.replace(
        " as i128, expected any valid TOML value",
        &format!(" is beyond TOML's integers, {} to {}", i64::MIN, i64::MAX),
    );
    for (rust, words) in [
        ("usize", "a whole number (0 or more)"),
        ("u64", "a whole number (0 or more)"),
        ("u32", "a whole number (0 or more)"),
        ("f64", "a number"),
        ("f32", "a number"),
    ] {
        text = text.replace(&format!("expected {rust}"), &format!("expected {words}"));
    }
    let text = rewrite_quoted(&text, "floating point `", '`', |written| {
        match written.parse::<f64>() {
            Ok(value) if written.len() > 20 => format!("{value:e}"),
            _ => written.to_string(),
        }
    });
    // A long string given where a number goes is quoted clipped, as every other echo of input.
    rewrite_quoted(&text, "string \"", '"', crate::console::clipped)
}

/// `text` with what stands between each `open` and the next unescaped `close` rewritten.
fn rewrite_quoted(text: &str, open: &str, close: char, rewrite: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        let (before, after) = rest.split_at(at + open.len());
        out.push_str(before);
        let mut escaped = false;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                let ends = c == close && !escaped;
                escaped = c == '\\' && !escaped;
                ends
            })
            .map_or(after.len(), |(i, _)| i);
        out.push_str(&rewrite(&after[..end]));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The line of `dotted` or, when the file writes it inside an inline table (`"train.seed" = {
/// int = [0, 9] }` is `sweep.train.seed.int`), of the nearest key above it of two parts or more.
pub(super) fn line_of_written(text: &str, dotted: &str) -> Option<usize> {
    if let Some((grid, path)) = dotted
        .strip_prefix("sweep[")
        .and_then(|rest| rest.split_once("]."))
    {
        return line_in_sweep_entry(text, grid.parse().ok()?, path);
    }
    let mut key = dotted;
    loop {
        if let Some(line) = line_of(text, key) {
            return Some(line);
        }
        key = key.rsplit_once('.').map(|(parent, _)| parent)?;
        if !key.contains('.') {
            return None;
        }
    }
}

/// The line of `path` in the `n`-th `[[sweep]]` entry (from 1): its lines up to the next
/// header of another table, read as a `[sweep]` table.
fn line_in_sweep_entry(text: &str, n: usize, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let is_entry = |line: &&str| {
        line.trim()
            .strip_prefix("[[")
            .and_then(|l| l.split("]]").next())
            .is_some_and(|name| name.trim() == "sweep")
    };
    let start = (lines.iter().enumerate())
        .filter(|(_, line)| is_entry(line))
        .nth(n.checked_sub(1)?)?
        .0;
    // Its own subtables (`[sweep.train]`) belong to it; any other header ends it.
    let end = lines[start + 1..]
        .iter()
        .position(|line| {
            let line = line.trim_start();
            line.starts_with('[') && !line.starts_with("[sweep.")
        })
        .map_or(lines.len(), |i| start + 1 + i);
    let entry: Vec<&str> = std::iter::once("[sweep]")
        .chain(lines[start + 1..end].iter().copied())
        .collect();
    line_of_written(&entry.join("\n"), &format!("sweep.{path}")).map(|line| start + line)
}

/// The 1-based line where a dotted key (`train.lr`) is set in TOML text, if it can be found:
/// either `lr = ...` inside a `[train]` table or `train.lr = ...` at the top level; a table's
/// own name (`sweep`) finds its header, or the first header or dotted key that writes into it
/// (`base.x = 1` and `[base.x]` write a table `base`).
pub(super) fn line_of(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let writes = |name: &str| {
        name.strip_prefix(dotted)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = header.trim().to_string();
            if writes(&current) {
                return Some(i + 1);
            }
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().trim_matches('"').trim_matches('\'');
        let full = if current.is_empty() {
            lhs.to_string()
        } else {
            format!("{current}.{lhs}")
        };
        if writes(&full) || (current == table && lhs == key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_on_the_line_that_writes_them() {
        let text = "name = \"x\"\ntrain.lr = 1e-3\n\n[model]\n\"arch\" = \"dcgan\"\n\
                    [sweep]\n\"train.seed\" = { int = [0, 9] }\n[log.extra]\nx = 1\n";
        assert_eq!(line_of(text, "train.lr"), Some(2));
        // A table is written by its header, a subtable's header or a dotted key.
        assert_eq!(line_of(text, "train"), Some(2));
        assert_eq!(line_of(text, "model"), Some(4));
        assert_eq!(line_of(text, "log"), Some(8));
        assert_eq!(line_of(text, "model.arch"), Some(5));
        assert_eq!(line_of(text, "sweep.train.seed"), Some(7));
        // Inside an inline table: the key that holds it.
        assert_eq!(line_of_written(text, "sweep.train.seed.int"), Some(7));
        // A key's prefix is not the key, and an absent key has no line.
        assert_eq!(line_of(text, "trai"), None);
        assert_eq!(line_of(text, "data"), None);
    }
}
