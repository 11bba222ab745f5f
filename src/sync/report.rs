//! What a sync (or its dry run, or an undo) did: one value, printed as a table on
//! stdout or as JSON with `--json`, and kept in the target's release ledger.
//!
//! It formats; it never decides.

use serde::Serialize;

use super::buckets::Counts;
use super::fixups;
use crate::ui::human_bytes;

/// The database part.
#[derive(Debug, Clone, Serialize)]
pub struct Database {
    pub source: String,
    pub tables: u64,
    pub rows: u64,
    pub database_bytes: u64,
    pub transferred_bytes: u64,
    /// Was the copy's census compared with the source's?
    pub census_checked: bool,
    /// Seconds: dump+restore, swap.
    pub restore_seconds: f64,
    pub swap_seconds: f64,
}

/// One bucket pair.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub description: String,
    pub from: String,
    pub to: String,
    /// `server-side` (one credential) or `streamed` (two).
    pub mode: String,
    pub delete: bool,
    #[serde(flatten)]
    pub counts: Counts,
}

/// A sync, a dry run or an undo.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pair: String,
    pub from: String,
    pub to: String,
    /// `sync`, `dry-run` or `undo-sync`.
    pub action: String,
    /// The target's backup taken before the sync (what `undo-sync` restores), or the
    /// backup an undo restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,
    /// Why the database was left alone (neither side changed since the last sync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_unchanged: Option<String>,
    pub buckets: Vec<Bucket>,
    pub fixups: Vec<fixups::Outcome>,
    /// For a dry run: the steps the database part would take.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
    pub seconds: f64,
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

impl Report {
    /// On stdout: the JSON with `json`, else the table.
    pub fn print(&self, printer: &crate::ui::Printer, json: bool) -> anyhow::Result<()> {
        if json {
            printer.data(&serde_json::to_string_pretty(self)?);
        } else {
            for line in self.table() {
                printer.data(&line);
            }
        }
        Ok(())
    }

    /// The table, line by line.
    pub fn table(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{} {} ({} → {}){}",
            self.action,
            self.pair,
            self.from,
            self.to,
            if self.action == "dry-run" {
                ": nothing was changed"
            } else {
                ""
            }
        )];
        if let Some(k) = &self.backup_key {
            out.push(format!("backup of {}: {k}", self.to));
        }
        for step in &self.plan {
            out.push(format!("  {step}"));
        }
        if let Some(d) = &self.database {
            out.push(format!(
                "database  {}: {}, {}, {}{}",
                d.source,
                plural(d.tables, "table"),
                plural(d.rows, "row"),
                human_bytes(d.database_bytes),
                if d.census_checked {
                    ", every table's rows counted equal"
                } else {
                    ""
                }
            ));
        }
        if let Some(why) = &self.database_unchanged {
            out.push(format!("database  unchanged: {why}"));
        }
        if !self.buckets.is_empty() {
            out.push(format!(
                "{:<28} {:<11} {:>6} {:>10} {:>6} {:>10} {:>6} {:>10} {:>6} {:>8}",
                "BUCKETS",
                "MODE",
                "COPY",
                "BYTES",
                "SKIP",
                "BYTES",
                "DELETE",
                "BYTES",
                "KEPT",
                "CHANGED"
            ));
            for b in &self.buckets {
                let c = &b.counts;
                let name: String = b.description.chars().take(28).collect();
                out.push(format!(
                    "{:<28} {:<11} {:>6} {:>10} {:>6} {:>10} {:>6} {:>10} {:>6} {:>8}",
                    name,
                    b.mode,
                    c.copy,
                    human_bytes(c.copy_bytes),
                    c.skip,
                    human_bytes(c.skip_bytes),
                    c.delete,
                    human_bytes(c.delete_bytes),
                    c.kept_extra,
                    c.changed_at_destination
                ));
            }
        }
        if !self.fixups.is_empty() {
            out.push(format!("{:<6} {:<48} {:>8}", "FIXUPS", "", "ROWS"));
            for f in &self.fixups {
                let name: String = f.description.chars().take(48).collect();
                out.push(format!(
                    "{:<6} {:<48} {:>8}{}",
                    f.kind,
                    name,
                    f.rows.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    f.note
                        .as_deref()
                        .map(|n| format!("  {n}"))
                        .unwrap_or_default()
                ));
            }
        }
        out.push(format!("{:.1} s", self.seconds));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_line_per_part() {
        let r = Report {
            pair: "prod-to-staging".into(),
            from: "prod".into(),
            to: "staging".into(),
            action: "dry-run".into(),
            backup_key: None,
            database: None,
            buckets: vec![Bucket {
                description: "media".into(),
                from: "s3://a/".into(),
                to: "s3://b/".into(),
                mode: "streamed".into(),
                delete: true,
                counts: Counts {
                    copy: 3,
                    copy_bytes: 3 << 20,
                    skip: 2,
                    delete: 1,
                    delete_bytes: 12,
                    ..Default::default()
                },
            }],
            fixups: vec![fixups::Outcome {
                description: "oauth".into(),
                kind: "fixup".into(),
                rows: Some(1),
                note: None,
            }],
            plan: vec!["pg_dump …".into()],
            database_unchanged: None,
            seconds: 1.25,
        };
        let t = r.table();
        assert!(t[0].contains("nothing was changed"));
        let media = t.iter().find(|l| l.starts_with("media")).unwrap();
        assert!(
            media.contains("streamed") && media.contains("3.0 MiB") && media.contains("12 B"),
            "{media}"
        );
        assert!(t
            .iter()
            .any(|l| l.starts_with("fixup") && l.contains("oauth")));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["buckets"][0]["copy"], 3);
        assert_eq!(json["buckets"][0]["mode"], "streamed");
    }
}
