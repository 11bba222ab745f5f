//! `countable undo-sync <pair>`: the target as it was before the pair's last sync.
//! The database comes back from the backup the sync took first, through the restore
//! engine (beside, verified, swapped; the replaced one kept as the previous database).
//! Per bucket pair, the objects the sync created are deleted and those it replaced or
//! deleted are put back from the copies kept in the target's store, each only if the
//! destination still holds what the sync left there: an object someone changed since
//! is left as it is, and named.
//!
//! The pair's copy record is cleared for those buckets (the next sync compares afresh),
//! and the undo record is marked done, so undoing twice is refused.

use std::time::Instant;

use tokio::io::AsyncReadExt;

use super::buckets::{stream_into, Counts};
use super::config::Pair;
use super::record::{self, Kept, State, Undo};
use super::report::{self, Report};
use super::run::{now, restore_target, write_ledger};
use super::SyncError;
use crate::deploy::ledger::Kind;
use crate::environment::Local;
use crate::store::bucket::{Bucket, S3Url};
use crate::store::{Backup, Store};
use crate::ui::Printer;

/// Undo `pair`'s last sync (or, with `dry_run`, say what that would do).
pub async fn undo_sync(
    local: &Local,
    pair: &Pair,
    dry_run: bool,
    printer: &Printer,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let config = &local.project.config;
    let store = crate::data::store_of(local, &pair.to).await?;
    let undo: Undo = record::load(&store, &record::undo_key(&pair.name)).await?;
    let nothing = |why: String| SyncError::NothingToUndo {
        pair: pair.name.clone(),
        why,
    };
    if undo.pair.is_empty() {
        return Err(nothing(format!("no sync of it is recorded in {}", store.location())).into());
    }
    if let Some(at) = &undo.undone_at {
        return Err(nothing(format!(
            "its last sync ({}) was undone at {at}",
            undo.started_at
        ))
        .into());
    }
    let restore_db = undo
        .database_replaced
        .then_some(undo.backup_key.clone())
        .flatten();
    let mut report = Report {
        pair: pair.name.clone(),
        from: undo.from.clone(),
        to: undo.to.clone(),
        action: if dry_run { "dry-run" } else { "undo-sync" }.into(),
        backup_key: restore_db.clone(),
        database: None,
        database_unchanged: None,
        buckets: Vec::new(),
        fixups: Vec::new(),
        plan: Vec::new(),
        seconds: 0.0,
    };
    if dry_run {
        if let Some(k) = &restore_db {
            report.plan.push(format!(
                "restore {}{k} into {}'s database (beside, verified, swapped)",
                store.location(),
                pair.to
            ));
        }
        for b in &undo.buckets {
            report.plan.push(format!(
                "{}: delete {} object(s) the sync created, put back {} it replaced and {} it deleted",
                b.description,
                b.created.len(),
                b.replaced.len(),
                b.deleted.len()
            ));
        }
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if !printer.confirm(
        &format!(
            "Put {}'s database and bucket objects back as they were before the sync of {}?",
            pair.to, undo.started_at
        ),
        true,
    )? {
        anyhow::bail!("nothing was changed");
    }
    let (_, lock_db) = local.env_db(&pair.to).await?;
    let lock = crate::deploy::lock::DeployLock::take_for(
        &lock_db,
        pair.to.as_str(),
        &format!("undo-sync {} by {}", pair.name, super::run::who(local)),
    )
    .await?;
    let started_at = now();
    let outcome = async {
        if let Some(key) = &restore_db {
            let (engine, db) = local.env_db(&pair.to).await?;
            let project = local.compose_project_of(&pair.to);
            let target = restore_target(local, &engine, &project, &db, printer).await?;
            let s = crate::deploy::restore_db::restore(
                &target,
                &store,
                key,
                config.db_template.clone(),
                printer,
            )
            .await?;
            printer.success(&format!("{}'s database is back as of {key}", pair.to));
            report.database = Some(report::Database {
                source: s.source,
                tables: s.tables,
                rows: s.rows,
                database_bytes: s.database_bytes,
                transferred_bytes: s.transferred_bytes,
                census_checked: false,
                restore_seconds: s.restore_seconds,
                swap_seconds: s.swap_seconds,
            });
        }
        for b in undo.buckets.iter().rev() {
            let url = S3Url::parse(&b.to).map_err(anyhow::Error::msg)?;
            let bucket = Bucket::open(&url, b.profile.as_deref()).await;
            let counts = put_back(&bucket, &store, b, printer).await?;
            report.buckets.push(report::Bucket {
                description: b.description.clone(),
                from: String::new(),
                to: b.to.clone(),
                mode: "undo".into(),
                delete: true,
                counts,
            });
        }
        forget(&store, &pair.name, &undo).await?;
        report.seconds = started.elapsed().as_secs_f64();
        anyhow::Ok(report)
    }
    .await;
    let logged = write_ledger(
        local,
        &store,
        Kind::UndoSync,
        pair,
        started_at,
        restore_db,
        Vec::new(),
        &outcome,
    )
    .await;
    let _ = lock.release().await;
    let report = outcome?;
    logged?;
    Ok(report)
}

/// Mark the undo record done (its kept objects removed) and clear the copy record of
/// the buckets it touched.
async fn forget(store: &Store, pair: &str, undo: &Undo) -> anyhow::Result<()> {
    let mut done = undo.clone();
    done.undone_at = Some(now());
    for key in undo.kept_keys() {
        let _ = store.delete(&key).await;
    }
    for b in &mut done.buckets {
        b.replaced.clear();
        b.deleted.clear();
        b.created.clear();
    }
    record::save(store, &record::undo_key(pair), &done).await?;
    let key = record::state_key(pair);
    let mut state: State = record::load(store, &key).await?;
    state.buckets.retain(|id, _| {
        !undo
            .buckets
            .iter()
            .any(|b| id.ends_with(&format!("→ {}", b.to)))
    });
    record::save(store, &key, &state).await
}

/// Undo one bucket pair: delete what the sync created, put back what it replaced or
/// deleted, where the destination still holds what the sync left.
async fn put_back(
    bucket: &Bucket,
    store: &Store,
    b: &record::BucketUndo,
    printer: &Printer,
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let mut changed = Vec::new();
    for c in &b.created {
        match bucket.head(&c.key).await? {
            Some(now) if now.etag == c.etag => {
                bucket.delete(&c.key).await?;
                counts.delete += 1;
                counts.delete_bytes += now.size;
            }
            None => {}
            Some(_) => changed.push(c.key.clone()),
        }
    }
    for k in b.replaced.iter().chain(&b.deleted) {
        let now = bucket.head(&k.key).await?;
        let untouched = match (&now, &k.etag_after) {
            (None, _) => true,
            (Some(n), Some(after)) => &n.etag == after,
            (Some(_), None) => false,
        };
        if !untouched {
            changed.push(k.key.clone());
            continue;
        }
        restore_object(bucket, store, k).await?;
        counts.copy += 1;
        counts.copy_bytes += k.size;
    }
    if !changed.is_empty() {
        counts.changed_at_destination = changed.len();
        printer.warn(&format!(
            "{}: left {} object(s) someone changed after the sync: {}{}",
            b.description,
            changed.len(),
            changed
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if changed.len() > 5 { ", …" } else { "" }
        ));
    }
    Ok(counts)
}

/// Copy a kept object back to its key, with its headers.
async fn restore_object(bucket: &Bucket, store: &Store, k: &Kept) -> anyhow::Result<()> {
    let opened = store
        .open(&Backup {
            key: k.kept.clone(),
            size: k.size,
            modified: 0,
        })
        .await?;
    if k.size <= 8 << 20 {
        let mut bytes = Vec::with_capacity(k.size as usize);
        opened
            .reader
            .take(k.size + 1)
            .read_to_end(&mut bytes)
            .await?;
        anyhow::ensure!(
            bytes.len() as u64 == k.size,
            "the kept copy {}{} has {} bytes, {} were kept",
            store.location(),
            k.kept,
            bytes.len(),
            k.size
        );
        bucket.put(&k.key, bytes, &k.headers).await?;
    } else {
        let upload = bucket.upload(&k.key, &k.headers).await?;
        stream_into(opened.reader, upload).await?;
    }
    Ok(())
}
