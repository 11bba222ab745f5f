//! What `pull-media` copies, decided from two listings alone: a source file is copied
//! when the destination lacks it or has it with another size or mtime; files only the
//! destination has are kept; `--exclude` globs and `--max-size` set files aside first.
//! Plain values in, plain values out: the [`plan`] is a pure function.
//!
//! Nothing here reads or writes a file.

use std::collections::HashMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use super::file::MediaFile;
use crate::error::Hint;
use crate::ui;

/// A bad `--exclude` or `--max-size`.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("--exclude `{glob}` is not a glob: {message}")]
    Glob { glob: String, message: String },
    #[error("--max-size `{0}` is not a size")]
    Size(String),
}

impl Hint for FilterError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            FilterError::Glob { .. } => "write globs like `thumbs/**` or `*.webp` (matched against the path below the media root; `*` also matches `/`)".into(),
            FilterError::Size(_) => "write a size like `20M`, `1G`, `512K` or a number of bytes".into(),
        })
    }
}
crate::register_hint!(FilterError);

/// Which files are set aside before comparing: by path (`--exclude`) or by size.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    exclude: Option<GlobSet>,
    max_size: Option<u64>,
}

impl Filter {
    pub fn new(globs: &[String], max_size: Option<u64>) -> Result<Self, FilterError> {
        let exclude = if globs.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for g in globs {
                set.add(Glob::new(g).map_err(|e| FilterError::Glob {
                    glob: g.clone(),
                    message: e.kind().to_string(),
                })?);
            }
            Some(set.build().map_err(|e| FilterError::Glob {
                glob: globs.join(" "),
                message: e.to_string(),
            })?)
        };
        Ok(Self { exclude, max_size })
    }

    fn excludes(&self, path: &str) -> bool {
        self.exclude.as_ref().is_some_and(|s| s.is_match(path))
    }
}

/// `20M`, `1G`, `512k`, `1.5G`, `100` (bytes); binary multiples (`1K` = 1024).
pub fn parse_size(text: &str) -> Result<u64, FilterError> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let factor: u64 = match unit {
        ' ' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        _ => return Err(FilterError::Size(text.into())),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| FilterError::Size(text.into()))?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(FilterError::Size(text.into()));
    }
    Ok((n * factor as f64).round() as u64)
}

/// A number of files and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, f: &MediaFile) {
        self.files += 1;
        self.bytes += f.size;
    }
}

/// The plan's counts, as the dry-run table and `--json` show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// New or changed: to be copied.
    pub copy: Tally,
    /// At the destination with the same size and mtime already.
    pub skip: Tally,
    /// Matched by `--exclude`.
    pub excluded: Tally,
    /// Larger than `--max-size`.
    pub too_big: Tally,
}

impl Counts {
    /// The dry-run table: one line a kind, files and bytes.
    pub fn table(&self) -> Vec<String> {
        let row = |what: &str, t: &Tally| {
            format!(
                "{what:<10} {:>10} {:>12}",
                ui::count(t.files),
                ui::human_bytes(t.bytes)
            )
        };
        vec![
            format!("{:<10} {:>10} {:>12}", "", "files", "bytes"),
            row("copy", &self.copy),
            row("skip", &self.skip),
            row("excluded", &self.excluded),
            row("too big", &self.too_big),
        ]
    }
}

/// The files to copy, sorted by path, and the counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub copy: Vec<MediaFile>,
    pub counts: Counts,
}

/// Compare the `source` listing with the `destination` one under `filter`.
pub fn plan(source: Vec<MediaFile>, destination: &[MediaFile], filter: &Filter) -> Plan {
    let there: HashMap<&str, &MediaFile> =
        destination.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut p = Plan::default();
    for f in source {
        if filter.excludes(&f.path) {
            p.counts.excluded.add(&f);
        } else if filter.max_size.is_some_and(|max| f.size > max) {
            p.counts.too_big.add(&f);
        } else if there
            .get(f.path.as_str())
            .is_some_and(|d| d.size == f.size && d.mtime == f.mtime)
        {
            p.counts.skip.add(&f);
        } else {
            p.counts.copy.add(&f);
            p.copy.push(f);
        }
    }
    p.copy.sort_by(|a, b| a.path.cmp(&b.path));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64, mtime: i64) -> MediaFile {
        MediaFile {
            path: path.into(),
            size,
            mtime,
            sha256: None,
            etag: None,
        }
    }

    fn paths(p: &Plan) -> Vec<&str> {
        p.copy.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn copies_what_is_missing_or_differs_and_keeps_what_only_the_destination_has() {
        let source = vec![
            f("same.jpg", 3, 10),
            f("new.jpg", 4, 10),
            f("bigger.jpg", 5, 10),
            f("touched.jpg", 3, 11),
            f("a/deep/empty", 0, 10),
        ];
        let dest = [
            f("same.jpg", 3, 10),
            f("bigger.jpg", 4, 10),
            f("touched.jpg", 3, 10),
            f("only-here.jpg", 9, 1),
        ];
        let p = plan(source, &dest, &Filter::default());
        assert_eq!(
            paths(&p),
            ["a/deep/empty", "bigger.jpg", "new.jpg", "touched.jpg"]
        );
        assert_eq!(
            p.counts.copy,
            Tally {
                files: 4,
                bytes: 12
            }
        );
        assert_eq!(p.counts.skip, Tally { files: 1, bytes: 3 });
        // Nothing is ever planned for a file only the destination has.
        assert!(!paths(&p).contains(&"only-here.jpg"));
    }

    #[test]
    fn a_second_run_after_a_full_copy_moves_nothing() {
        let source = vec![f("a", 1, 1), f("b/c d", 2, 2)];
        let p = plan(source.clone(), &source, &Filter::default());
        assert!(p.copy.is_empty());
        assert_eq!(p.counts.skip.files, 2);
    }

    #[test]
    fn excludes_and_max_size_come_first() {
        let filter = Filter::new(
            &["thumbs/**".to_string(), "*.webp".to_string()],
            Some(parse_size("1K").unwrap()),
        )
        .unwrap();
        let source = vec![
            f("thumbs/a/x.jpg", 10, 1),
            f("photos/a.webp", 10, 1),
            f("photos/big.jpg", 1025, 1),
            f("photos/edge.jpg", 1024, 1),
            f("mythumbs/x.jpg", 10, 1),
        ];
        // Excluded even where the destination lacks it; too big even when unchanged.
        let dest = [f("photos/big.jpg", 1025, 1)];
        let p = plan(source, &dest, &filter);
        assert_eq!(paths(&p), ["mythumbs/x.jpg", "photos/edge.jpg"]);
        assert_eq!(
            p.counts.excluded,
            Tally {
                files: 2,
                bytes: 20
            }
        );
        assert_eq!(
            p.counts.too_big,
            Tally {
                files: 1,
                bytes: 1025
            }
        );
        assert_eq!(p.counts.skip.files, 0);
    }

    #[test]
    fn sizes_and_bad_input() {
        assert_eq!(parse_size("20M").unwrap(), 20 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        for bad in ["", "M", "-1M", "3X", "ten"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(Filter::new(&["a[".to_string()], None).is_err());
    }

    #[test]
    fn the_dry_run_table() {
        let p = plan(vec![f("a", 2048, 1)], &[], &Filter::default());
        let t = p.counts.table();
        assert_eq!(t.len(), 5);
        assert!(
            t[1].starts_with("copy") && t[1].contains("2.0 KiB"),
            "{t:?}"
        );
    }
}
