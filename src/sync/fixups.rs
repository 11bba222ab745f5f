//! A pair's scrubs and fixups, run in ONE transaction on the restored database before
//! it becomes the target's current one: the target's app never sees production's
//! unscrubbed data, and a failure (or `--strict` with a fixup that changed no row)
//! drops the restored database and leaves the target's as it was.
//!
//! Scrubs first (`emails`, `site`; `mail` is a check made in preflight), then the
//! fixups in their order. Each reports the rows its last statement affected (psql's
//! `ROW_COUNT`). Parameters are psql variables set on psql's stdin and quoted by psql
//! (see `sql`); psql's error text is redacted before anyone sees it.

use std::io::Cursor;

use serde::Serialize;

use super::config::{Pair, Scrub};
use super::sql::meta_quote;
use super::SyncError;
use crate::restore::Db;
use crate::ui::Printer;

/// What one scrub or fixup did.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub description: String,
    /// `scrub`, `fixup` or `check` (a scrub that changes nothing: `mail`).
    pub kind: String,
    /// Rows its (last) statement affected; none for a check.
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One step of the transaction.
#[derive(Debug, Clone)]
struct Step {
    description: String,
    kind: &'static str,
    /// A table the step needs; missing, the step changes 0 rows.
    table: Option<&'static str>,
    sql: Option<String>,
    /// psql variable → (value, shown as), set before the SQL and unset after.
    vars: Vec<(String, String, String)>,
    note: Option<String>,
}

/// The steps of a pair, with the values they need.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    steps: Vec<Step>,
}

pub const EMAILS_SQL: &str = "UPDATE auth_user SET email = 'user+' || id || '@example.invalid'";
pub const SITE_SQL: &str = "UPDATE django_site SET domain = :'countable_site_domain' WHERE id = (SELECT min(id) FROM django_site)";

impl Plan {
    /// The steps of `pair`, with `secrets` (secret name → value) and the target's
    /// first domain for the `site` scrub.
    pub fn new(pair: &Pair, secrets: &[(String, String)], site_domain: Option<&str>) -> Self {
        let mut steps = Vec::new();
        if pair.scrub.contains(&Scrub::Emails) {
            steps.push(Step {
                description: "emails → user+<id>@example.invalid".into(),
                kind: "scrub",
                table: Some("auth_user"),
                sql: Some(EMAILS_SQL.into()),
                vars: vec![],
                note: None,
            });
        }
        if let (true, Some(domain)) = (pair.scrub.contains(&Scrub::Site), site_domain) {
            steps.push(Step {
                description: format!("django_site.domain → {domain}"),
                kind: "scrub",
                table: Some("django_site"),
                sql: Some(SITE_SQL.into()),
                vars: vec![(
                    "countable_site_domain".into(),
                    domain.to_string(),
                    domain.to_string(),
                )],
                note: None,
            });
        }
        if pair.scrub.contains(&Scrub::Mail) {
            steps.push(Step {
                description: "outgoing mail off".into(),
                kind: "check",
                table: None,
                sql: None,
                vars: vec![],
                note: Some(format!(
                    "{}'s secrets configure no SMTP (EMAIL_URL console:// or unset, no EMAIL_HOST): its app prints mail to its log",
                    pair.to
                )),
            });
        }
        for f in &pair.fixups {
            let vars = f
                .params
                .iter()
                .map(|(param, secret)| {
                    let value = secrets
                        .iter()
                        .find(|(k, _)| k == secret)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    (param.clone(), value, format!("<{secret}>"))
                })
                .collect();
            steps.push(Step {
                description: f.description.clone(),
                kind: "fixup",
                table: None,
                sql: Some(f.sql.clone()),
                vars,
                note: None,
            });
        }
        Self { steps }
    }

    /// A digest of every step, its SQL and its parameter values: equal when the same
    /// fixups would write the same values. (The values only enter a SHA-256, kept in
    /// the target's own backup store beside the dumps that hold them anyway.)
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for s in &self.steps {
            for part in [
                s.description.as_str(),
                s.kind,
                s.sql.as_deref().unwrap_or(""),
            ] {
                h.update(part.len().to_le_bytes());
                h.update(part.as_bytes());
            }
            for (k, v, _) in &s.vars {
                for part in [k, v] {
                    h.update(part.len().to_le_bytes());
                    h.update(part.as_bytes());
                }
            }
        }
        crate::digest::hex(&h.finalize())
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// One line per step, for `--dry-run` (values never shown).
    pub fn describe(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| {
                let sql = s.sql.as_deref().unwrap_or("(checked before the sync)");
                let params: Vec<String> = s
                    .vars
                    .iter()
                    .map(|(k, _, shown)| format!("{k} = {shown}"))
                    .collect();
                let with = if params.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", params.join(", "))
                };
                format!(
                    "{} `{}`: {}{with}",
                    s.kind,
                    s.description,
                    sql.replace('\n', " ")
                )
            })
            .collect()
    }

    /// The psql script: one transaction, each step's variables set before its SQL and
    /// unset after it, a marker line with its row count after each.
    fn script(&self, runnable: &[usize]) -> String {
        let mut out = String::from("BEGIN;\n");
        for &i in runnable {
            let step = &self.steps[i];
            let Some(sql) = &step.sql else { continue };
            for (name, value, _) in &step.vars {
                out.push_str(&format!("\\set {name} {}\n", meta_quote(value)));
            }
            let sql = sql.trim_end();
            out.push_str(sql);
            out.push_str(if sql.ends_with(';') { "\n" } else { "\n;\n" });
            out.push_str(&format!("\\echo countable-step {i} :ROW_COUNT\n"));
            for (name, _, _) in &step.vars {
                out.push_str(&format!("\\unset {name}\n"));
            }
        }
        out.push_str("COMMIT;\n");
        out
    }

    /// `text` with every variable's value (raw, and as SQL quotes it) replaced by what
    /// it is shown as.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (_, value, shown) in self.steps.iter().flat_map(|s| &s.vars) {
            if value.is_empty() {
                continue;
            }
            for form in [value.replace('\'', "''"), value.clone()] {
                out = out.replace(&form, shown);
            }
        }
        out
    }

    /// Run the steps in `database` of `db`, in one transaction; each step's outcome. A
    /// step that changed no row warns, or fails the run with `strict`.
    pub async fn run(
        &self,
        db: &Db,
        database: &str,
        to: &str,
        strict: bool,
        printer: &Printer,
    ) -> anyhow::Result<Vec<Outcome>> {
        let mut outcomes: Vec<Outcome> = self
            .steps
            .iter()
            .map(|s| Outcome {
                description: s.description.clone(),
                kind: s.kind.into(),
                rows: s.sql.as_ref().map(|_| 0),
                note: s.note.clone(),
            })
            .collect();
        let needed: Vec<&str> = self.steps.iter().filter_map(|s| s.table).collect();
        let missing = missing_tables(db, database, &needed).await?;
        let mut runnable = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            if s.sql.is_none() {
                continue;
            }
            match s.table {
                Some(t) if missing.contains(&t) => {
                    outcomes[i].note = Some(format!("no table {t} in the database"));
                }
                _ => runnable.push(i),
            }
        }
        if !runnable.is_empty() {
            let script = self.script(&runnable);
            let input: crate::archive::Reader = Box::pin(Cursor::new(script.into_bytes()));
            let r = db
                .exec_capped(&db.psql_args(database), Some(input), 1024 * 1024)
                .await?;
            if r.code != 0 {
                return Err(SyncError::Fixups {
                    to: to.to_string(),
                    message: self.redact(r.stderr.trim()),
                }
                .into());
            }
            for line in r.stdout.lines() {
                let mut words = line.split_whitespace();
                if words.next() != Some("countable-step") {
                    continue;
                }
                if let (Some(i), Some(n)) = (
                    words.next().and_then(|w| w.parse::<usize>().ok()),
                    words.next().and_then(|w| w.parse::<u64>().ok()),
                ) {
                    if let Some(o) = outcomes.get_mut(i) {
                        o.rows = Some(n);
                    }
                }
            }
        }
        for o in &outcomes {
            if o.rows == Some(0) {
                if strict {
                    return Err(SyncError::NoRows(o.description.clone()).into());
                }
                printer.warn(&format!(
                    "{} `{}` changed no row{}",
                    o.kind,
                    o.description,
                    o.note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(outcomes)
    }
}

/// Which of `tables` the database does not have (one query).
async fn missing_tables<'a>(
    db: &Db,
    database: &str,
    tables: &[&'a str],
) -> anyhow::Result<Vec<&'a str>> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let checks: Vec<String> = tables
        .iter()
        .map(|t| format!("to_regclass({}) IS NULL", crate::restore::db::literal(t)))
        .collect();
    let out = db
        .sql(database, &format!("SELECT {}", checks.join(", ")))
        .await?;
    Ok(tables
        .iter()
        .zip(out.trim().split('|'))
        .filter(|(_, missing)| *missing == "t")
        .map(|(t, _)| *t)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::config::{validate, RawPair};

    fn pair() -> Pair {
        let envs = ["prod", "staging"]
            .iter()
            .map(|e| (crate::names::EnvName::parse(e).unwrap(), Default::default()))
            .collect();
        let raw: RawPair = serde_yaml_ng::from_str("from: prod\nto: staging\nscrub: [site, emails, mail]\nfixups:\n  - description: oauth\n    sql: UPDATE socialaccount_socialapp SET secret = :secret WHERE provider = 'google'\n    params: {secret: STAGING_GOOGLE_SECRET}\n").unwrap();
        validate("p", raw, &envs).unwrap()
    }

    #[test]
    fn one_transaction_with_values_only_in_set_lines() {
        let value = "it's \\ a \"secret\"\n:x";
        let plan = Plan::new(
            &pair(),
            &[("STAGING_GOOGLE_SECRET".into(), value.into())],
            Some("staging.example.com"),
        );
        let script = plan.script(&[0, 1, 3]);
        assert!(script.starts_with("BEGIN;\n") && script.ends_with("COMMIT;\n"));
        assert!(script.contains(EMAILS_SQL));
        assert!(script.contains("\\set countable_site_domain 'staging.example.com'\n"));
        assert!(script.contains(
            "\\set secret 'it''s \\\\ a \"secret\"\\n:x'\nUPDATE socialaccount_socialapp SET secret = :'secret' WHERE provider = 'google'\n;\n\\echo countable-step 3 :ROW_COUNT\n\\unset secret\n"
        ));
        // Scrubs come first, in a fixed order; the mail check has no SQL.
        let described = plan.describe();
        assert!(described[0].starts_with("scrub `emails"));
        assert!(described[1].starts_with("scrub `django_site.domain"));
        assert!(described[2].starts_with("check `outgoing mail off`"));
        assert!(described[3].contains("[secret = <STAGING_GOOGLE_SECRET>]"));
        assert!(!described.concat().contains("it's"));
    }

    #[test]
    fn errors_are_redacted() {
        let plan = Plan::new(
            &pair(),
            &[("STAGING_GOOGLE_SECRET".into(), "o'hara-42".into())],
            None,
        );
        let said = "ERROR:  invalid input syntax for type integer: \"o'hara-42\"\nLINE 1: UPDATE x SET secret = 'o''hara-42'";
        let shown = plan.redact(said);
        assert!(!shown.contains("hara"), "{shown}");
        assert!(shown.contains("<STAGING_GOOGLE_SECRET>"));
    }
}
