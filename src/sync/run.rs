//! The sync, in the order the module doc of `sync` gives, and the pieces `undo` shares
//! with it: which pair the command line names, the target's restore target, the
//! ledger entry.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use super::buckets::{self, Decisions, Ends, Keeper};
use super::config::{Buckets, Pair};
use super::preflight::{self, Sides};
use super::record::{self, DatabaseMark, State, Undo};
use super::report::{self, Report};
use super::{database, fixups, SyncError};
use crate::deploy::ledger::{Kind, Ledger, Outcome, Record};
use crate::deploy::lock::DeployLock;
use crate::environment::Local;
use crate::project::Config;
use crate::restore::{self, Apps, Db, Target};
use crate::store::Store;
use crate::ui::Printer;

/// How a sync behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The source's newest backup instead of a fresh dump.
    pub from_backup: bool,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Refuse when a bucket pair would delete more objects than this.
    pub max_delete: Option<usize>,
    /// A fixup (or scrub) that changes no row is an error, not a warning.
    pub strict: bool,
    /// Copy the database even when neither side changed since the last sync.
    pub force: bool,
}

/// The pair the command line names: `<pair>`, or `<from> <to>`.
pub fn find_pair<'a>(
    config: &'a Config,
    first: &str,
    second: Option<&str>,
) -> Result<&'a Pair, SyncError> {
    match second {
        None => config.sync.get(first).ok_or_else(|| SyncError::NoPair {
            name: first.to_string(),
            known: if config.sync.is_empty() {
                "none".into()
            } else {
                config.sync.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        }),
        Some(to) => {
            let found: Vec<&Pair> = config
                .sync
                .values()
                .filter(|p| p.from.as_str() == first && p.to.as_str() == to)
                .collect();
            match found.as_slice() {
                [one] => Ok(one),
                [] => Err(SyncError::NoPairFor {
                    from: first.to_string(),
                    to: to.to_string(),
                }),
                many => Err(SyncError::Ambiguous {
                    from: first.to_string(),
                    to: to.to_string(),
                    names: many
                        .iter()
                        .map(|p| p.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
    }
}

/// The target's database as the restore engine's target: its app services (every
/// running service but the db and nginx, which holds no connection and keeps
/// answering) are stopped through its engine for the swap alone. What an interrupted
/// restore left there is put right first.
pub async fn restore_target(
    local: &Local,
    sides_engine: &crate::engine::Engine,
    project: &str,
    db: &Db,
    printer: &Printer,
) -> anyhow::Result<Target> {
    let recovered = restore::recover(db).await?;
    if !recovered.is_empty() {
        printer.warn(&recovered.describe());
    }
    let services = &local.project.config.services;
    let mut app_services: Vec<String> = sides_engine
        .project_services(project)
        .await?
        .into_iter()
        .filter(|s| s.state == "running" && s.service != services.db && s.service != services.nginx)
        .map(|s| s.service)
        .collect();
    app_services.dedup();
    Ok(Target {
        db: db.clone(),
        apps: Apps::Engine {
            engine: sides_engine.clone(),
            project: project.to_string(),
        },
        app_services,
        keep_stopped: Vec::new(),
        migrate_in: None,
    })
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `2026-12-01T021500Z`, for the keys of kept objects.
fn stamp() -> String {
    crate::backup::new_key(
        time::OffsetDateTime::now_utc(),
        crate::backup::Compress::None,
    )
    .trim_end_matches(".backup")
    .to_string()
}

/// Who runs this: git's user, else the login.
pub(super) fn who(local: &Local) -> String {
    crate::git::Repo::open(&local.project.root)
        .map(|r| r.user())
        .unwrap_or_else(|_| std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// Add a sync's (or undo's) record to the target's ledger.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_ledger(
    local: &Local,
    store: &Store,
    kind: Kind,
    pair: &Pair,
    started_at: String,
    backup_key: Option<String>,
    migrations: Vec<String>,
    outcome: &anyhow::Result<Report>,
) -> anyhow::Result<()> {
    let mut ledger = Ledger::load(store).await?;
    let record = Record {
        release: ledger.next_number(),
        kind,
        outcome: if outcome.is_ok() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        },
        git_sha: String::new(),
        git_ref: format!("{} from {}", pair.name, pair.from),
        image: String::new(),
        image_id: String::new(),
        by: who(local),
        started_at,
        finished_at: Some(now()),
        backup_key,
        migrations_before: migrations.clone(),
        migrations_after: migrations,
        bytes_shipped: 0,
        steps: Vec::new(),
        error: outcome.as_ref().err().map(|e| {
            crate::error::render(e)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        }),
        rollback_to: None,
        report: outcome
            .as_ref()
            .ok()
            .and_then(|r| serde_json::to_value(r).ok()),
    };
    ledger.put(record);
    ledger.save(store).await
}

/// The plan of one bucket pair.
struct Planned<'a> {
    buckets: &'a Buckets,
    ends: Ends,
    decisions: Decisions,
}

fn bucket_report(b: &Buckets, ends: &Ends, counts: buckets::Counts) -> report::Bucket {
    report::Bucket {
        description: b.description.clone(),
        from: b.from.to_string(),
        to: b.to.to_string(),
        mode: if ends.server_side {
            "server-side"
        } else {
            "streamed"
        }
        .into(),
        delete: b.delete,
        counts,
    }
}

/// Sync `pair` (see the module doc of `sync`); the report.
pub async fn sync(
    local: &Local,
    pair: &Pair,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let sides = preflight::check(local, pair, opts.from_backup).await?;
    let state: State = record::load(&sides.to_store, &record::state_key(&pair.name)).await?;
    let empty = BTreeMap::new();
    let mut planned = Vec::new();
    for b in &pair.buckets {
        let ends = Ends::open(b).await;
        let decisions = ends
            .plan(b, state.buckets.get(&b.id()).unwrap_or(&empty))
            .await?;
        if let Some(max) = opts.max_delete {
            if decisions.delete.len() > max {
                return Err(SyncError::TooManyDeletes {
                    description: b.description.clone(),
                    to: b.to.to_string(),
                    would: decisions.delete.len(),
                    max,
                }
                .into());
            }
        }
        planned.push(Planned {
            buckets: b,
            ends,
            decisions,
        });
    }
    let plan = fixups::Plan::new(pair, &sides.secrets, sides.site_domain.as_deref());
    let marks = marks(&sides, &plan).await?;
    let unchanged = match (&state.database, opts.force) {
        (Some(last), false) => match marks.compare(last, pair.from.as_str(), pair.to.as_str()) {
            Ok(why) => Some(why),
            Err(changed) => {
                printer.note(&format!("   {changed}: it is copied"));
                None
            }
        },
        _ => None,
    };
    let mut report = Report {
        pair: pair.name.clone(),
        from: pair.from.to_string(),
        to: pair.to.to_string(),
        action: "sync".into(),
        backup_key: None,
        database: None,
        buckets: planned
            .iter()
            .map(|p| bucket_report(p.buckets, &p.ends, p.decisions.counts()))
            .collect(),
        fixups: Vec::new(),
        plan: Vec::new(),
        database_unchanged: unchanged.clone(),
        seconds: 0.0,
    };
    if opts.dry_run {
        report.action = "dry-run".into();
        report.plan = if unchanged.is_some() {
            Vec::new()
        } else {
            dry_run_plan(local, pair, &sides, &plan)
        };
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let copies: usize = planned.iter().map(|p| p.decisions.copy.len()).sum();
    let deletes: usize = planned.iter().map(|p| p.decisions.delete.len()).sum();
    let started_at = now();
    let migrations: Vec<String> = sides.migrations.iter().cloned().collect();
    if let (Some(why), 0, 0) = (&unchanged, copies, deletes) {
        // Nothing to do: the last sync's undo record stays the way back.
        printer.success(&format!("{} is as the last sync left it: {why}", pair.to));
        report.seconds = started.elapsed().as_secs_f64();
        let outcome = Ok(report);
        write_ledger(
            local,
            &sides.to_store,
            Kind::Sync,
            pair,
            started_at,
            None,
            migrations,
            &outcome,
        )
        .await?;
        return outcome;
    }
    let question = if unchanged.is_some() {
        format!(
            "Copy {copies} object(s) into {}'s buckets, delete {deletes}? ({}'s database is unchanged and left alone; `countable undo-sync {}` goes back)",
            pair.to, pair.to, pair.name
        )
    } else {
        format!(
            "Replace {}'s database with {}'s and copy {copies} object(s), delete {deletes}? (a backup of {} is taken first; `countable undo-sync {}` goes back)",
            pair.to, pair.from, pair.to, pair.name
        )
    };
    if !printer.confirm(&question, true)? {
        anyhow::bail!("nothing was changed");
    }
    // No deploy, rollback or other sync of the target meanwhile.
    let lock = DeployLock::take_for(
        &sides.to_db,
        pair.to.as_str(),
        &format!("sync {} by {}", pair.name, who(local)),
    )
    .await?;
    let outcome = apply(
        local, pair, opts, &sides, planned, &plan, &marks, report, started, printer,
    )
    .await;
    let backup_key = match &outcome {
        Ok(r) => r.backup_key.clone(),
        Err(_) => record::load::<Undo>(&sides.to_store, &record::undo_key(&pair.name))
            .await
            .ok()
            .and_then(|u| u.backup_key),
    };
    let logged = write_ledger(
        local,
        &sides.to_store,
        Kind::Sync,
        pair,
        started_at,
        backup_key,
        migrations,
        &outcome,
    )
    .await;
    let _ = lock.release().await;
    let report = outcome?;
    logged?;
    Ok(report)
}

/// What `--dry-run` lists for the database part.
fn dry_run_plan(local: &Local, pair: &Pair, sides: &Sides, plan: &fixups::Plan) -> Vec<String> {
    let host = |env: &crate::names::EnvName| {
        local.project.config.environments[env]
            .docker_host
            .clone()
            .unwrap_or_else(|| "the local engine".into())
    };
    let mut v = vec![format!(
        "countable backup {} (into {})",
        pair.to,
        sides.to_store.location()
    )];
    v.push(if let Some((store, newest)) = &sides.from_backup {
        format!(
            "read {}'s newest backup, {}{}",
            pair.from,
            store.location(),
            newest.key
        )
    } else {
        format!(
            "pg_dump -Fc -Z1 --snapshot=<exported> {} in {}'s db container on {}, streamed",
            sides.from_db.name,
            pair.from,
            host(&pair.from)
        )
    });
    v.push(format!(
        "restore beside {}'s {} on {} (pg_restore --no-owner --no-acl as {}), compare every table's row count with the source's",
        pair.to,
        sides.to_db.name,
        host(&pair.to),
        sides.to_db.user
    ));
    for step in plan.describe() {
        v.push(format!("in one transaction: {step}"));
    }
    v.push(format!(
        "stop {}'s app services, swap the databases (the replaced one kept as {}), start them",
        pair.to,
        restore::previous_name(&sides.to_db.name)
    ));
    v
}

impl DatabaseMark {
    /// `self` being where things stand now: why the database part can be skipped, when neither side was written since the
    /// last sync and its fixups were these; else, when there was a last sync, which
    /// side changed (a note).
    fn compare(&self, last: &DatabaseMark, from: &str, to: &str) -> Result<String, String> {
        let source_same = match (&self.source, &last.source, &self.backup, &last.backup) {
            (Some(now), Some(then), _, _) => now.unchanged_since(then),
            (_, _, Some(now), Some(then)) => now == then,
            _ => false,
        };
        if !source_same {
            return Err(if self.backup.is_some() {
                format!("{from}'s newest backup is not the one the last sync restored")
            } else {
                format!("{from}'s database has changed since the last sync")
            });
        }
        if !self.target.unchanged_since(&last.target) {
            return Err(format!(
                "{to}'s database has changed since the last sync left it"
            ));
        }
        if self.fixups != last.fixups {
            return Err(
                "the fixups (or the secrets they use) have changed since the last sync".into(),
            );
        }
        Ok(format!(
            "neither database has changed since the last sync ({}), and its fixups are the same; the database is left alone (--force copies it anyway)",
            last.at
        ))
    }
}

/// Where both databases stand now, and the fixups' fingerprint.
async fn marks(sides: &Sides, plan: &fixups::Plan) -> anyhow::Result<DatabaseMark> {
    let source = async {
        match &sides.from_backup {
            Some(_) => Ok(None),
            None => sides.from_db.position(&sides.from_db.name).await.map(Some),
        }
    };
    let (source, target) = tokio::join!(source, sides.to_db.position(&sides.to_db.name));
    Ok(DatabaseMark {
        source: source?,
        backup: sides.from_backup.as_ref().map(|(_, b)| b.key.clone()),
        target: target?,
        fixups: plan.fingerprint(),
        at: now(),
    })
}

/// Back up the target, copy the database, then the buckets; the undo record is kept
/// current at each step, so `undo-sync` knows all that changed even after a failure.
#[allow(clippy::too_many_arguments)]
async fn apply(
    local: &Local,
    pair: &Pair,
    opts: &Options,
    sides: &Sides,
    planned: Vec<Planned<'_>>,
    plan: &fixups::Plan,
    marks: &DatabaseMark,
    mut report: Report,
    started: Instant,
    printer: &Printer,
) -> anyhow::Result<Report> {
    let store = &sides.to_store;
    let undo_key = record::undo_key(&pair.name);
    let previous: Undo = record::load(store, &undo_key).await?;
    let undo = Undo {
        pair: pair.name.clone(),
        from: pair.from.to_string(),
        to: pair.to.to_string(),
        started_at: now(),
        ..Default::default()
    };
    let state_key = record::state_key(&pair.name);
    let mut state: State = record::load(store, &state_key).await?;
    let copy_db = report.database_unchanged.is_none();
    if copy_db {
        // Whatever happens next, the last sync's mark no longer describes the target.
        state.database = None;
        record::save(store, &state_key, &state).await?;
    }
    let recorded = Recorded {
        store,
        key: &undo_key,
        undo: tokio::sync::Mutex::new(undo),
    };
    // The database and the buckets are independent: both at once. Each runs to its
    // end even when the other fails, so that all that was done is recorded.
    let database = async {
        if copy_db {
            copy_database(local, pair, opts, sides, plan, &recorded, printer)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    let buckets = async {
        let stamp = stamp();
        let next = AtomicUsize::new(0);
        let keeper = Keeper {
            store,
            pair: &pair.name,
            stamp: &stamp,
            next: &next,
        };
        let mut reports = Vec::new();
        for p in &planned {
            let applied = buckets::apply(p.buckets, &p.ends, &p.decisions, &keeper, printer).await;
            recorded.update(|u| u.buckets.push(applied.undo)).await?;
            state.buckets.insert(p.buckets.id(), applied.state);
            record::save(store, &state_key, &state).await?;
            reports.push(bucket_report(p.buckets, &p.ends, applied.done));
            if let Some(e) = applied.error {
                return Err(e.context(format!(
                    "copying {} failed part way; what was done is recorded, and `countable undo-sync {}` puts it back",
                    p.buckets.description, pair.name
                )));
            }
        }
        anyhow::Ok(reports)
    };
    let (database, buckets) = tokio::join!(database, buckets);
    report.buckets.clear();
    if let Ok(done) = &buckets {
        report.buckets = done.clone();
    }
    let database = match (database, &buckets) {
        (Err(e), Ok(done)) if done.iter().any(|b| b.counts.copy + b.counts.delete > 0) => {
            Err(e.context(format!(
                "the database part failed; {}'s bucket pairs were copied meanwhile (recorded: `countable undo-sync {}` puts them back)",
                pair.to, pair.name
            )))
        }
        (d, _) => d,
    };
    if let Some(done) = database? {
        let r = &done.database;
        printer.success(&format!(
            "{}'s database is now {} ({} tables, {} rows){}",
            pair.to,
            r.source,
            r.tables,
            r.rows,
            if r.census_checked {
                ", every table's rows counted equal to the source's"
            } else {
                ""
            }
        ));
        report.backup_key = Some(done.backup_key);
        report.database = Some(done.database);
        report.fixups = done.fixups;
    }
    buckets?;
    let mut undo = recorded.undo.into_inner();
    undo.finished_at = Some(now());
    record::save(store, &undo_key, &undo).await?;
    if report.database_unchanged.is_none() {
        // The source as it was dumped; the target as this sync leaves it.
        state.database = Some(DatabaseMark {
            target: sides.to_db.position(&sides.to_db.name).await?,
            at: now(),
            ..marks.clone()
        });
        record::save(store, &state_key, &state).await?;
    }
    // The sync before this one can no longer be undone: its kept objects go.
    for key in previous.kept_keys() {
        let _ = store.delete(&key).await;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The undo record, shared by the database and bucket parts running at once: each
/// change is saved as it is made.
struct Recorded<'a> {
    store: &'a Store,
    key: &'a str,
    undo: tokio::sync::Mutex<Undo>,
}

impl Recorded<'_> {
    async fn update(&self, change: impl FnOnce(&mut Undo)) -> anyhow::Result<()> {
        let mut undo = self.undo.lock().await;
        change(&mut undo);
        record::save(self.store, self.key, &*undo).await
    }
}

/// What the database part did, for the report.
struct DatabaseDone {
    backup_key: String,
    database: report::Database,
    fixups: Vec<fixups::Outcome>,
}

/// The database part: back up the target (what `undo-sync` restores), then stream the
/// source into it (see `database`).
#[allow(clippy::too_many_arguments)]
async fn copy_database(
    local: &Local,
    pair: &Pair,
    opts: &Options,
    sides: &Sides,
    plan: &fixups::Plan,
    undo: &Recorded<'_>,
    printer: &Printer,
) -> anyhow::Result<DatabaseDone> {
    // The database is what the sync replaces; bucket pairs keep their own undo copies
    // (below), and no media volume is touched.
    let untouched = crate::media::Media::Undeclared {
        why: "not changed by a sync (its bucket pairs keep undo copies of what they replace)"
            .into(),
    };
    let backed = crate::backup::backup(
        &sides.to_db,
        pair.to.as_str(),
        &sides.to_store,
        crate::backup::Compress::None,
        &untouched,
        printer,
    )
    .await?;
    let manifest = backed.manifest;
    undo.update(|u| u.backup_key = Some(manifest.key.clone()))
        .await?;

    let (source, expected) = if let Some((store, newest)) = &sides.from_backup {
        database::backup_source(pair.from.as_str(), store, newest).await?
    } else {
        let (s, c) = database::fresh_dump(pair.from.as_str(), &sides.from_db).await?;
        (s, Some(c))
    };
    let target = restore_target(
        local,
        &sides.to_engine,
        &sides.to_project,
        &sides.to_db,
        printer,
    )
    .await?;
    let copied = database::copy(
        &target,
        source,
        database::Copy {
            from: pair.from.as_str(),
            to: pair.to.as_str(),
            expected,
            fixups: plan,
            strict: opts.strict,
            template: local.project.config.db_template.clone(),
        },
        printer,
    )
    .await?;
    undo.update(|u| u.database_replaced = true).await?;
    let r = &copied.restore;
    let database = report::Database {
        source: r.source.clone(),
        tables: r.tables,
        rows: r.rows,
        database_bytes: r.database_bytes,
        transferred_bytes: r.transferred_bytes,
        census_checked: copied.census_checked,
        restore_seconds: r.restore_seconds,
        swap_seconds: r.swap_seconds,
    };
    Ok(DatabaseDone {
        backup_key: manifest.key,
        database,
        fixups: copied.fixups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_by_name_or_by_environments() {
        let c = Config::parse(
            "project: shop\nenvironments:\n  prod: {branch: master}\n  staging: {}\n  qa: {}\nsync:\n  prod-to-staging: {from: prod, to: staging}\n  prod-to-qa: {from: prod, to: qa}\n  prod-to-qa-2: {from: prod, to: qa}\n",
            std::path::Path::new("countable.yml"),
        )
        .unwrap();
        assert_eq!(
            find_pair(&c, "prod-to-staging", None).unwrap().to.as_str(),
            "staging"
        );
        assert_eq!(
            find_pair(&c, "prod", Some("staging")).unwrap().name,
            "prod-to-staging"
        );
        assert!(matches!(
            find_pair(&c, "prod", Some("qa")),
            Err(SyncError::Ambiguous { .. })
        ));
        assert!(matches!(
            find_pair(&c, "staging", Some("prod")),
            Err(SyncError::NoPairFor { .. })
        ));
        let e = find_pair(&c, "nope", None).unwrap_err();
        assert!(
            e.to_string()
                .contains("known: prod-to-qa, prod-to-qa-2, prod-to-staging"),
            "{e}"
        );
    }
}
