//! The restore's steps, in order: claim the server, decode, restore beside, verify,
//! make durable, analyse, swap, release. Any failure before the swap commits undoes
//! what was made (`undo_partial`); see the module doc of `restore` for the guarantees.

use std::time::Instant;

use super::container;
use super::db::Db;
use super::durability::Claim;
use super::load::restore_into;
use super::swap::swap;
use super::{new_name, previous_name, Options, RestoreError, Source, Summary, Target};
use crate::archive;
use crate::ui::{self, Printer};

/// Restore `source` into the target's database. See the module doc for the guarantees.
pub async fn restore(
    target: &Target,
    source: Source,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<Summary> {
    let nothing = async |_: &Db, _: &str| Ok(());
    Ok(restore_then(target, source, opts, printer, nothing)
        .await?
        .0)
}

/// [`restore`], with `before_swap` run on the restored database (its name is the
/// second argument) once it is verified and before it becomes current: a check or a
/// change of the new data the app must never see otherwise (`sync`'s fixups). Its
/// failure is the restore's: the new database is dropped, the current one untouched.
pub async fn restore_then<T, F>(
    target: &Target,
    source: Source,
    opts: &Options,
    printer: &Printer,
    before_swap: F,
) -> anyhow::Result<(Summary, T)>
where
    F: AsyncFnOnce(&Db, &str) -> anyhow::Result<T>,
{
    let db = &target.db;
    let new = new_name(&db.name);
    if db.name.len() + "__countable_prev".len() > 63 {
        anyhow::bail!(
            "the database name `{}` is too long to restore beside it (PostgreSQL names have at most 63 bytes)",
            db.name
        );
    }
    let bar = printer.bytes_bar(source.size, &format!("restoring {}", source.label));
    let (reader, transferred) = ui::ProgressReader::new(source.reader, bar.clone());
    let started = Instant::now();
    let decoded = archive::decode(Box::pin(reader))
        .await
        .inspect_err(|_| bar.finish_and_clear())?;
    let format = decoded.describe();
    let kind = decoded.kind;
    bar.set_message(format!("restoring {} ({format})", source.label));
    let baseline = match opts.template.as_deref() {
        Some(t) if t != "template0" => db.table_count(t).await?,
        _ => 0,
    };
    // Listening from before the claim: a Ctrl-C (or SIGTERM) from here on is never lost,
    // and never ends the process before what was made is undone.
    let interrupt = crate::interrupt::Interrupt::get()?;
    // Relaxed settings pay only where no COMMIT syncs the data itself. On a
    // `wal_level=minimal` server every restore's does: one transaction's COMMIT syncs
    // the tables it created (see `load::one_transaction`), and `pg_restore -j` loads each
    // table it created in a transaction that TRUNCATEs it first, so the same holds per
    // table; an archive too large for one transaction's locks (a commit per object)
    // writes its data through the WAL, synced at each commit. Relaxing there would only
    // add a CHECKPOINT and `sync` (0.6-1.0 s at 1 GB, measured). Autovacuum, which relaxing also stops, may then start on a table `-j`
    // has committed: the ANALYZE after the swap skips a table it holds.
    let relax = opts.fast && !db.wal_minimal;
    let mut claim = Claim::claim(db, &new, relax).await?;
    // A leftover from a crash: never the user's database, always ours to drop.
    if let Err(e) = db.drop_database(&new).await {
        return Err(undo_partial(db, &new, &claim, e).await);
    }
    // Everything up to the swap can be interrupted and is undone on failure.
    let work = async {
        let restored = restore_into(db, decoded, &new, opts, source.size).await?;
        let restore_seconds = started.elapsed().as_secs_f64();
        if let Some(note) = &restored.note {
            printer.note(&format!("   {note}"));
        }
        let t = Instant::now();
        let got = db.table_count(&new).await?;
        let expected = restored.expected_tables + baseline;
        if got != expected {
            return Err(RestoreError::Verify { expected, got }.into());
        }
        // Rows as the stream counted them (plain COPY data), else as the server's
        // statistics did, else counted now; before `before_swap` changes anything.
        let rows = match restored.rows {
            Some(r) => r,
            None => match db.rows_inserted(&new).await? {
                Some(r) => r,
                None => db.row_count(&new).await?,
            },
        };
        let verify_seconds = t.elapsed().as_secs_f64();
        // The restored data already has every migration the current database has (the
        // running code migrated it at start): then `migrate` after the swap would apply
        // nothing, and its Django start (about 1.5 s) is saved.
        let migrated = match &target.migrate_in {
            Some(_) => match db.applied_migrations(&new).await {
                Some(m) => db
                    .applied_migrations(&db.name)
                    .await
                    .is_some_and(|c| c == m),
                None => false,
            },
            None => true,
        };
        let extra = before_swap(db, &new).await?;
        // Written while fsync was off: durable and flushed before it becomes current.
        let t = Instant::now();
        claim.durable(db).await?;
        let durable_seconds = t.elapsed().as_secs_f64();
        let counts = (got, rows, db.size_bytes(&new).await?);
        Ok::<_, anyhow::Error>((
            restore_seconds,
            verify_seconds,
            durable_seconds,
            counts,
            migrated,
            extra,
        ))
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = interrupt.wait() => Err(RestoreError::Interrupted.into()),
    };
    bar.finish_and_clear();
    let (restore_seconds, verify_seconds, durable_seconds, counts, migrated, extra) = match outcome
    {
        Ok(v) => v,
        Err(e) => return Err(undo_partial(db, &new, &claim, e).await),
    };
    let (tables, rows, database_bytes) = counts;
    let t = Instant::now();
    if let Err(e) = swap(target, &new, printer).await {
        // The renames are one transaction: current and previous are as they were.
        return Err(undo_partial(db, &new, &claim, e).await);
    }
    let swap_seconds = t.elapsed().as_secs_f64();
    // The database is the app's from here on. Its statistics are gathered while it
    // already answers, and meanwhile the replaced one goes (unless kept), the claim
    // ends and the app's code gets its schema (ANALYZE locks no writer out).
    let t = Instant::now();
    let analyze = async {
        let t = Instant::now();
        // A table autovacuum is already at is left to it (it analyzes a table just
        // loaded too) rather than waited for.
        let analyze = if db.server_major() >= 12 {
            "ANALYZE (SKIP_LOCKED)"
        } else {
            "ANALYZE"
        };
        db.sql_apart(&db.name, analyze).await?;
        Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64())
    };
    let tail = async {
        if !opts.keep_previous {
            db.drop_database(&previous_name(&db.name)).await?;
        }
        claim.release(db).await?;
        match (&target.migrate_in, migrated) {
            (Some((engine, container)), false) => {
                let t = Instant::now();
                migrate(engine, container, printer).await;
                Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64())
            }
            _ => Ok(0.0),
        }
    };
    let (analyzed, tailed) = tokio::join!(analyze, tail);
    let (analyze_seconds, migrate_seconds) = (analyzed?, tailed?);
    let finish_seconds = t.elapsed().as_secs_f64();
    let summary = Summary {
        source: source.label,
        format,
        kind,
        tables,
        rows,
        database_bytes,
        transferred_bytes: transferred.load(std::sync::atomic::Ordering::Relaxed),
        restore_seconds,
        verify_seconds,
        durable_seconds,
        swap_seconds,
        finish_seconds,
        migrate_seconds,
        analyze_seconds,
        previous_kept: opts.keep_previous,
    };
    Ok((summary, extra))
}

/// `manage.py migrate` in the app's running container after the swap; a failure is
/// reported (the restored data is in place, and undo-db can bring the old one back).
async fn migrate(engine: &crate::engine::Engine, container: &str, printer: &Printer) {
    let cmd = ["python", "manage.py", "migrate", "--noinput"];
    match engine.exec_capture(container, &cmd, &[]).await {
        Ok(out) if out.code == 0 => {
            let applied = out.stdout.matches("... OK").count();
            if applied > 0 {
                printer.note(&format!(
                    "   applied {applied} migration(s) of this code to the restored database"
                ));
            }
        }
        Ok(out) => printer.warn(&format!(
            "`manage.py migrate` failed on the restored database: {}; see `countable manage migrate`, or `countable undo-db`",
            crate::environment::summarize_log(&out.stderr, 3).join(" / ")
        )),
        Err(e) => printer.warn(&format!(
            "`manage.py migrate` could not run after the swap: {e}; run `countable manage migrate`"
        )),
    }
}

/// After a failure: drop the half-made database, remove our files in the container, put
/// the server settings back; `e` is returned, with a note if dropping failed.
async fn undo_partial(db: &Db, new: &str, claim: &Claim, e: anyhow::Error) -> anyhow::Error {
    let dropped = db.drop_database(new).await;
    container::remove_all_scratch(db).await;
    let released = claim.release(db).await;
    let e = match released {
        Err(r) => e.context(format!(
            "(and putting the server's settings back failed: {r}; the next countable command retries)"
        )),
        Ok(()) => e,
    };
    match dropped {
        Err(d) => e.context(format!(
            "(and dropping the half-restored {new} failed: {d})"
        )),
        Ok(()) => e,
    }
}

/// Restore `source` into a new database `name` on `db`, verified, with no swap and no
/// previous database: for drills in a disposable container. Returns the format.
pub async fn restore_fresh(
    db: &Db,
    source: Source,
    name: &str,
    opts: &Options,
) -> anyhow::Result<String> {
    let decoded = archive::decode(source.reader).await?;
    let format = decoded.describe();
    db.drop_database(name).await?;
    // The container is thrown away afterwards: the claim is never released.
    let _claim = Claim::claim(db, name, opts.fast).await?;
    let restored = restore_into(db, decoded, name, opts, source.size).await?;
    let got = db.table_count(name).await?;
    if got != restored.expected_tables {
        return Err(RestoreError::Verify {
            expected: restored.expected_tables,
            got,
        }
        .into());
    }
    Ok(format)
}
