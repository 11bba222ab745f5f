//! `pull-media`: an environment's media (its bucket, its volume, or a backup's media)
//! into the local project's media volume, incrementally: list both sides, [`plan`]
//! (copy what is missing or differs; keep what only the volume has), then write
//! through [`VolumeWriter`], several uploads at once from a bucket or a store, one tar
//! stream from a volume. The volume is made the way compose makes it when it does not
//! exist yet. Ctrl-C stops it cleanly; what was copied stays, and the same command
//! resumes (a half-written file has another size and mtime, so it is copied again).
//!
//! It never deletes a file at the destination, except one it wrote wrong itself.

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::file::MediaFile;
use super::plan::{plan, Counts, Filter, Tally};
use super::source::MediaSource;
use super::volume::VolumeMedia;
use super::write::{Progress, VolumeWriter, Written, MAX_BYTES, MAX_FILES};
use super::MediaError;
use crate::engine::Engine;
use crate::interrupt::Interrupt;
use crate::ui::{self, Printer};

/// The local media volume, and what is needed to write into it.
pub struct Target {
    pub engine: Engine,
    /// The local compose project.
    pub project: String,
    /// The compose volume key (`media_volume`, default `media`).
    pub volume: String,
    /// The engine's name when the compose files give one (`name:`).
    pub named: Option<String>,
    /// The image the writing helper runs (the local db's).
    pub image: String,
    /// For the `com.docker.compose.version` label of a volume made here.
    pub compose_version: String,
    /// Web's image and the path it mounts the volume at, when that image is built: a
    /// volume made here is first mounted there, so that the engine gives it the owner
    /// (and content) of web's media root, as when compose makes it for web.
    pub prime: Option<(String, String)>,
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct Options {
    pub filter: Filter,
    /// Uploads at once (from a bucket or a store).
    pub jobs: usize,
    pub dry_run: bool,
    /// The command that resumes, for the message after Ctrl-C.
    pub retry: String,
}

/// What a pull did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PullSummary {
    pub source: String,
    /// The local volume's name on the engine.
    pub volume: String,
    pub dry_run: bool,
    /// Files the volume held before.
    pub existing: u64,
    /// The plan: copy, skip, excluded, too big.
    pub plan: Counts,
    /// Files written (and their bytes).
    pub copied: Tally,
    /// Files whose source gave another size than listed: removed, not copied.
    pub mismatched: Vec<String>,
    /// Files listed that were gone when their turn came.
    pub vanished: Vec<String>,
    /// Names at the source that are no valid media path: not copied.
    pub unusable: Vec<String>,
    pub seconds: f64,
}

/// Pull `source` (described as `label`) into `target`.
pub async fn pull(
    source: &MediaSource,
    label: &str,
    target: &Target,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<PullSummary> {
    let interrupt = Interrupt::get()?;
    let started = Instant::now();
    let spinner = printer.spinner(&format!("listing {label} and the local media"));
    let listing = source.list().await?;
    let existing = target
        .engine
        .compose_volume(&target.project, &target.volume, target.named.as_deref())
        .await?;
    let name = match existing {
        Some(n) => Some(n),
        None if opts.dry_run => None,
        None => Some(create(target, printer).await?),
    };
    let writer = match &name {
        Some(n) => {
            let helper = format!("{}-countable-pull-{}", target.project, std::process::id());
            let volume =
                VolumeMedia::open_writable(&target.engine, n, &target.image, &helper).await?;
            Some(VolumeWriter::new(volume).await?)
        }
        None => None,
    };
    let there = match &writer {
        Some(w) => w.list().await,
        None => Ok(Default::default()),
    };
    spinner.finish_and_clear();
    let (planned, existing) = match there {
        Ok(there) => (
            plan(listing.files.clone(), &there.files, &opts.filter),
            there.files.len() as u64,
        ),
        Err(e) => {
            close(writer).await;
            return Err(e);
        }
    };
    let mut summary = PullSummary {
        source: label.to_string(),
        volume: name.clone().unwrap_or_else(|| {
            target
                .named
                .clone()
                .unwrap_or_else(|| format!("{}_{}", target.project, target.volume))
        }),
        dry_run: opts.dry_run,
        existing,
        plan: planned.counts,
        copied: Tally::default(),
        mismatched: Vec::new(),
        vanished: Vec::new(),
        unusable: listing.skipped.clone(),
        seconds: 0.0,
    };
    let writer = match writer {
        Some(w) if !opts.dry_run && !planned.copy.is_empty() => Some(w),
        other => {
            close(other).await;
            None
        }
    };
    let Some(writer) = writer else {
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    };
    let total = planned.copy.len() as u64;
    let progress = Progress::default();
    let bar = printer.bytes_bar(
        Some(planned.counts.copy.bytes.max(1)),
        &format!(
            "copying {} ({}) into volume {}",
            ui::counted(total, "file"),
            ui::human_bytes(planned.counts.copy.bytes),
            summary.volume
        ),
    );
    let on_progress = || {
        bar.set_position(progress.bytes.load(Ordering::Relaxed));
        bar.set_message(format!(
            "media: {}/{} files",
            ui::count(progress.files.load(Ordering::Relaxed)),
            ui::count(total)
        ));
    };
    let jobs = if source.sequential() {
        1
    } else {
        opts.jobs.max(1)
    };
    let transfer = transfer(
        source,
        &writer,
        planned.copy,
        listing.bytes(),
        jobs,
        &progress,
        &on_progress,
    );
    let result = tokio::select! {
        r = transfer => r,
        _ = interrupt.wait() => Err(MediaError::PullInterrupted {
            copied: progress.files.load(Ordering::Relaxed),
            total,
            retry: opts.retry.clone(),
        }.into()),
    };
    bar.finish_and_clear();
    writer.close().await;
    let (written, vanished) = result?;
    summary.copied = Tally {
        files: written.files,
        bytes: written.bytes,
    };
    summary.mismatched = written.mismatched;
    summary.vanished = vanished;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Make the volume as compose would, primed with web's media root when web's image
/// is built (else its root belongs to root, and the user is told).
async fn create(target: &Target, printer: &Printer) -> anyhow::Result<String> {
    let engine = &target.engine;
    let name = engine
        .create_compose_volume(
            &target.project,
            &target.volume,
            target.named.as_deref(),
            &target.compose_version,
        )
        .await?;
    match &target.prime {
        Some((image, path)) => {
            let helper = format!("{}-countable-prime-{}", target.project, std::process::id());
            let id = engine
                .run_helper(&helper, image, &[format!("{name}:{path}")])
                .await?;
            engine.remove(&id).await?;
        }
        None => printer.note(&format!(
            "   made volume {name}; web's image is not built yet, so its root belongs to root (`countable up` before pull-media gives it web's owner)"
        )),
    }
    Ok(name)
}

async fn close(writer: Option<VolumeWriter>) {
    if let Some(w) = writer {
        w.close().await;
    }
}

/// Write `files` (of a listing of `listed_bytes`), `jobs` uploads at once.
async fn transfer(
    source: &MediaSource,
    writer: &VolumeWriter,
    files: Vec<MediaFile>,
    listed_bytes: u64,
    jobs: usize,
    progress: &Progress,
    on_progress: &(dyn Fn() + Sync),
) -> anyhow::Result<(Written, Vec<String>)> {
    let groups = if jobs == 1 {
        vec![files]
    } else {
        groups(files, jobs)
    };
    futures_util::stream::iter(groups)
        .map(|group| async move {
            let mut batch = source.read(group, listed_bytes).await?;
            let written = writer.write_all(&mut batch, progress, on_progress).await?;
            anyhow::Ok((written, std::mem::take(&mut batch.vanished)))
        })
        .buffer_unordered(jobs)
        .try_fold(
            (Written::default(), Vec::new()),
            |(mut all, mut gone), (w, v)| async move {
                all.files += w.files;
                all.bytes += w.bytes;
                all.mismatched.extend(w.mismatched);
                gone.extend(v);
                Ok((all, gone))
            },
        )
        .await
}

/// `files` in groups of one upload each: up to [`MAX_FILES`] files, and no more than
/// an even share of `jobs` (so that a few hundred small files still keep every job
/// busy), closed once they hold [`MAX_BYTES`].
fn groups(files: Vec<MediaFile>, jobs: usize) -> Vec<Vec<MediaFile>> {
    let most = files.len().div_ceil(jobs.max(1)).clamp(1, MAX_FILES);
    let mut out: Vec<Vec<MediaFile>> = Vec::new();
    let mut bytes = 0;
    for f in files {
        let full = out
            .last()
            .is_none_or(|g| g.len() >= most || bytes >= MAX_BYTES);
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += f.size;
        out.last_mut().expect("pushed above").push(f);
    }
    out
}

/// Say what a pull did: the dry-run table or a summary on stdout as data, or status
/// lines on stderr; JSON on stdout with `json`.
pub fn report(printer: &Printer, s: &PullSummary, json: bool) -> anyhow::Result<()> {
    if json {
        printer.data(&serde_json::to_string_pretty(s)?);
    } else if s.dry_run {
        printer.note(&format!("{} → volume {} (dry run)", s.source, s.volume));
        for line in s.plan.table() {
            printer.data(&line);
        }
    } else {
        printer.success(&format!(
            "copied {} ({}) from {} into volume {} in {:.1} s",
            ui::counted(s.copied.files, "file"),
            ui::human_bytes(s.copied.bytes),
            s.source,
            s.volume,
            s.seconds
        ));
        let p = &s.plan;
        printer.note(&format!(
            "   {} unchanged, {} excluded, {} over --max-size",
            ui::count(p.skip.files),
            ui::count(p.excluded.files),
            ui::count(p.too_big.files)
        ));
    }
    for path in &s.mismatched {
        printer.warn(&format!(
            "{path}: the source gave another size than it listed; not copied (run again)"
        ));
    }
    for path in &s.vanished {
        printer.warn(&format!("{path}: gone at the source before it was read"));
    }
    for name in &s.unusable {
        printer.warn(&format!(
            "{name:?}: not a media path countable takes; not copied"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64) -> MediaFile {
        MediaFile {
            path: path.into(),
            size,
            mtime: 0,
            sha256: None,
            etag: None,
        }
    }

    #[test]
    fn groups_by_count_and_bytes() {
        let small: Vec<MediaFile> = (0..130).map(|i| f(&format!("s{i}"), 10)).collect();
        let sizes: Vec<usize> = groups(small.clone(), 1).iter().map(Vec::len).collect();
        assert_eq!(sizes, [64, 64, 2]);
        let sizes: Vec<usize> = groups(small, 8).iter().map(Vec::len).collect();
        assert_eq!(sizes, [17, 17, 17, 17, 17, 17, 17, 11]);
        let mixed = vec![
            f("a", MAX_BYTES - 1),
            f("b", 1),
            f("c", 1),
            f("huge", 5 * MAX_BYTES),
            f("d", 1),
        ];
        let names: Vec<Vec<String>> = groups(mixed, 1)
            .into_iter()
            .map(|g| g.into_iter().map(|f| f.path).collect())
            .collect();
        assert_eq!(names, [vec!["a", "b"], vec!["c", "huge"], vec!["d"]]);
    }
}
