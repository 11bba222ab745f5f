//! The database part of a sync. The source is a fresh dump (pg_dump -Fc in the source's
//! db container, on its engine, of a snapshot exported first, whose census is read in
//! that same snapshot) or the source's newest backup (`--from-backup`, its manifest's
//! census). Either streams through countable, never to disk, into the pull-db restore
//! engine on the target's engine: restored beside the target's database with
//! `--no-owner --no-acl` (the target's user owns everything), its census compared with
//! the source's, the scrubs and fixups run in it, and only then swapped in, with the
//! target's app services stopped for the swap alone.
//!
//! The source is only read.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;

use super::fixups;
use super::SyncError;
use crate::backup::{dump_command_args, manifest_key, BackupError, Manifest};
use crate::restore::{self, Census, Db, Options, Source, Target};
use crate::store::{Backup, Store};
use crate::ui::Printer;

/// What the database part did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub restore: restore::Summary,
    /// Was the restored copy's census compared with the source's (always for a fresh
    /// dump; for a backup, when it has a manifest)?
    pub census_checked: bool,
    pub fixups: Vec<fixups::Outcome>,
}

/// A stream that ends in an error when the task producing it failed (pg_dump's exit
/// status, not only its bytes, decides whether the dump is whole).
struct Checked {
    rx: DuplexStream,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl AsyncRead for Checked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.rx).poll_read(cx, buf))?;
        if buf.filled().len() > before || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(task) = self.task.as_mut() {
            let outcome = ready!(Pin::new(task).poll(cx));
            self.task = None;
            let failed = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(crate::error::render(&e)),
                Err(e) => Some(format!("the dump stopped: {e}")),
            };
            if let Some(why) = failed {
                return Poll::Ready(Err(std::io::Error::other(why)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A fresh dump of `db`, as a stream, and the census of the very snapshot it dumps.
pub async fn fresh_dump(env: &str, db: &Db) -> anyhow::Result<(Source, Census)> {
    let snapshot = db.export_snapshot(&db.name).await?;
    let census = db.census_at(&db.name, Some(&snapshot.id)).await?;
    // -Z1: the stream crosses two connections; light compression saves most of the
    // bytes for little of the source's CPU.
    let argv = dump_command_args(&db.user, &db.name, "-Z1", &snapshot.id);
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    let dumper = db.clone();
    let task = tokio::spawn(async move {
        let cmd: Vec<&str> = argv.iter().map(String::as_str).collect();
        let r = dumper.dump_to(&cmd, &mut tx).await;
        let _ = tx.shutdown().await;
        drop(tx);
        // pg_dump has read all it needs; the read-only transaction only has to end.
        let _ = snapshot.release().await;
        let (code, stderr, written) = r?;
        if code != 0 {
            return Err(BackupError::DumpFailed(stderr.trim().to_string()).into());
        }
        written.context("streaming the dump")?;
        Ok(())
    });
    let source = Source {
        label: format!("a fresh dump of {env}'s {}", db.name),
        reader: Box::pin(Checked {
            rx,
            task: Some(task),
        }),
        size: None,
    };
    Ok((source, census))
}

/// `backup` of `env` in `store`, as a stream, and its manifest's census when it has
/// one.
pub async fn backup_source(
    env: &str,
    store: &Store,
    backup: &Backup,
) -> anyhow::Result<(Source, Option<Census>)> {
    let census = match store.get_small(&manifest_key(&backup.key)).await? {
        Some(bytes) => serde_json::from_slice::<Manifest>(&bytes)
            .ok()
            .map(|m| m.census),
        None => None,
    };
    let opened = store.open(backup).await?;
    Ok((
        Source {
            label: format!("{env}'s backup {}{}", store.location(), backup.key),
            reader: opened.reader,
            size: opened.size.or(Some(backup.size)),
        },
        census,
    ))
}

/// What the restore needs besides the source.
pub struct Copy<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub expected: Option<Census>,
    pub fixups: &'a fixups::Plan,
    pub strict: bool,
    pub template: Option<String>,
}

/// Restore `source` into `target` (see the module doc).
pub async fn copy(
    target: &Target,
    source: Source,
    c: Copy<'_>,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let opts = Options {
        keep_previous: true,
        jobs: 1,
        // A deployed environment, not a throwaway local database: durable throughout.
        fast: false,
        template: c.template.clone(),
    };
    let census_checked = c.expected.is_some();
    let before_swap = async |db: &Db, new: &str| {
        if let Some(expected) = &c.expected {
            let got = db.census(new).await?;
            let differences = expected.differences(&got);
            if !differences.is_empty() {
                return Err(SyncError::Census {
                    from: c.from.to_string(),
                    differences,
                }
                .into());
            }
        }
        if c.fixups.is_empty() {
            return Ok(Vec::new());
        }
        printer.status(&format!(
            "running the scrubs and fixups in {}'s new database",
            c.to
        ));
        c.fixups.run(db, new, c.to, c.strict, printer).await
    };
    let (summary, fixups) =
        restore::restore_then(target, source, &opts, printer, before_swap).await?;
    Ok(Outcome {
        restore: summary,
        census_checked,
        fixups,
    })
}
