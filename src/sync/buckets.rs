//! Bucket pairs, incrementally: list both sides, decide per object ([`decide`]), then
//! copy what changed, keeping first, in the target's store, every destination object
//! the sync replaces or deletes (`record`).
//!
//! Unchanged is: both ETags plain MD5s (single-part uploads) and equal with the sizes;
//! or the pair's record says this source ETag and size were copied and the destination
//! still has the ETag the copy got (multipart ETags are no MD5s, and a copy of a
//! multipart object gets another ETag). A destination object whose ETag is not the
//! recorded one was changed by someone else: it is copied over (and kept for undo) and
//! counted as such.
//!
//! One credential for both sides copies server-side (CopyObject; UploadPartCopy above
//! 5 GiB): no byte passes through here. Two credentials stream: a GET into a PUT (up to
//! 8 MiB, which keeps the MD5 ETag) or a multipart upload, with two clients and no local
//! copy. At most [`PARALLEL`] objects move at once, and the streams together hold at
//! most [`BUDGET`] bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use super::config::{Access, Buckets};
use super::record::{BucketUndo, Copied, Created, Kept};
use crate::store::bucket::{is_plain_md5, Bucket, Object};
use crate::store::{Store, Upload};
use crate::ui::Printer;

/// Objects moved at once.
pub const PARALLEL: usize = 8;
/// Bytes the streams of one bucket pair may hold at once.
pub const BUDGET: u64 = 48 << 20;
/// Objects up to this size go in one PUT (read into memory); larger ones in parts.
const ONE_PUT: u64 = 8 << 20;
/// What a multipart stream holds at most (`store::parts`: 4 parts of 8 MiB in flight
/// plus the one filling).
const MULTIPART_HOLD: u64 = 40 << 20;

/// Why an object is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Not at the destination.
    New,
    /// The source changed since the last sync.
    SourceChanged,
    /// The destination is not what the last sync wrote: someone else changed it.
    ChangedAtDestination,
    /// No record, and the ETags cannot prove them equal.
    Differs,
}

/// What to do with one bucket pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    /// Source object, the destination object it replaces, why.
    pub copy: Vec<(Object, Option<Object>, Why)>,
    /// Source object and its unchanged copy.
    pub skip: Vec<(Object, Object)>,
    /// Destination objects the source does not have: deleted with `delete: true`…
    pub delete: Vec<Object>,
    /// …else kept.
    pub extra: Vec<Object>,
}

/// Decide per object (see the module doc). `src` and `dst` are keyed relative to their
/// prefixes; `known` is the pair's record.
pub fn decide(
    src: &[Object],
    dst: &[Object],
    known: &BTreeMap<String, Copied>,
    delete: bool,
) -> Decisions {
    let dst_by: BTreeMap<&str, &Object> = dst.iter().map(|o| (o.key.as_str(), o)).collect();
    let mut d = Decisions::default();
    for s in src {
        let Some(t) = dst_by.get(s.key.as_str()).copied() else {
            d.copy.push((s.clone(), None, Why::New));
            continue;
        };
        let same_md5 =
            is_plain_md5(&s.etag) && is_plain_md5(&t.etag) && s.etag == t.etag && s.size == t.size;
        let why = match known.get(&s.key) {
            _ if same_md5 => None,
            Some(k) if k.dest_etag == t.etag => {
                (k.source_etag != s.etag || k.size != s.size).then_some(Why::SourceChanged)
            }
            Some(_) => Some(Why::ChangedAtDestination),
            None => Some(Why::Differs),
        };
        match why {
            None => d.skip.push((s.clone(), t.clone())),
            Some(w) => d.copy.push((s.clone(), Some(t.clone()), w)),
        }
    }
    let src_keys: std::collections::BTreeSet<&str> = src.iter().map(|o| o.key.as_str()).collect();
    for t in dst.iter().filter(|t| !src_keys.contains(t.key.as_str())) {
        if delete {
            d.delete.push(t.clone());
        } else {
            d.extra.push(t.clone());
        }
    }
    d
}

/// Counts and bytes of a plan (or of what was done).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Counts {
    pub copy: usize,
    pub copy_bytes: u64,
    pub skip: usize,
    pub skip_bytes: u64,
    pub delete: usize,
    pub delete_bytes: u64,
    /// Destination-only objects left in place (`delete: false`).
    pub kept_extra: usize,
    /// Copied because someone else had changed the destination object.
    pub changed_at_destination: usize,
}

impl Decisions {
    pub fn counts(&self) -> Counts {
        Counts {
            copy: self.copy.len(),
            copy_bytes: self.copy.iter().map(|(s, _, _)| s.size).sum(),
            skip: self.skip.len(),
            skip_bytes: self.skip.iter().map(|(s, _)| s.size).sum(),
            delete: self.delete.len(),
            delete_bytes: self.delete.iter().map(|o| o.size).sum(),
            kept_extra: self.extra.len(),
            changed_at_destination: self
                .copy
                .iter()
                .filter(|(_, _, w)| *w == Why::ChangedAtDestination)
                .count(),
        }
    }
}

/// Both ends of a bucket pair, with their clients.
pub struct Ends {
    pub from: Bucket,
    pub to: Bucket,
    /// One credential: copy server-side.
    pub server_side: bool,
}

impl Ends {
    pub async fn open(b: &Buckets) -> Self {
        match &b.access {
            Access::One(profile) => {
                let from = Bucket::open(&b.from, profile.as_deref()).await;
                let to = from.sibling(&b.to);
                Self {
                    from,
                    to,
                    server_side: true,
                }
            }
            Access::Two { from, to } => Self {
                from: Bucket::open(&b.from, Some(from)).await,
                to: Bucket::open(&b.to, Some(to)).await,
                server_side: false,
            },
        }
    }

    /// List both sides and decide.
    pub async fn plan(
        &self,
        b: &Buckets,
        known: &BTreeMap<String, Copied>,
    ) -> anyhow::Result<Decisions> {
        let (src, dst) = tokio::try_join!(self.from.list(), self.to.list())?;
        Ok(decide(&src, &dst, known, b.delete))
    }
}

/// What applying a plan did (also when it failed part way: what did complete).
pub struct Applied {
    pub undo: BucketUndo,
    /// The pair's new record.
    pub state: BTreeMap<String, Copied>,
    pub done: Counts,
    pub error: Option<anyhow::Error>,
}

/// Where a pair's kept objects go: `record::kept_key(pair, stamp, n)`.
pub struct Keeper<'a> {
    pub store: &'a Store,
    pub pair: &'a str,
    pub stamp: &'a str,
    pub next: &'a AtomicUsize,
}

/// One finished piece of work.
enum Done {
    Copied {
        key: String,
        copied: Copied,
        replaced: Option<Kept>,
    },
    Deleted(Kept),
    NotStarted,
}

/// Copy and delete as `plan` says. Work already started finishes even after a failure
/// (so the undo record knows all that changed); nothing new starts.
pub async fn apply(
    b: &Buckets,
    ends: &Ends,
    plan: &Decisions,
    keeper: &Keeper<'_>,
    printer: &Printer,
) -> Applied {
    let mut applied = Applied {
        undo: BucketUndo {
            description: b.description.clone(),
            to: b.to.to_string(),
            profile: b.to_profile().map(String::from),
            ..Default::default()
        },
        state: plan
            .skip
            .iter()
            .map(|(s, t)| {
                (
                    s.key.clone(),
                    Copied {
                        size: s.size,
                        source_etag: s.etag.clone(),
                        dest_etag: t.etag.clone(),
                    },
                )
            })
            .collect(),
        done: Counts {
            skip: plan.skip.len(),
            skip_bytes: plan.skip.iter().map(|(s, _)| s.size).sum(),
            kept_extra: plan.extra.len(),
            ..Default::default()
        },
        error: None,
    };
    let total = plan.counts();
    if total.copy + total.delete == 0 {
        return applied;
    }
    let bar = printer.bytes_bar(
        Some(total.copy_bytes.max(1)),
        &format!(
            "{}: copying {} object(s), deleting {}{}",
            b.description,
            total.copy,
            total.delete,
            if ends.server_side {
                " (server-side)"
            } else {
                ""
            }
        ),
    );
    let budget = Arc::new(Semaphore::new((BUDGET >> 10) as usize));
    let failed = AtomicBool::new(false);
    // Ctrl-C (or SIGTERM) starts nothing new; what runs finishes and is recorded.
    let interrupt = crate::interrupt::Interrupt::get().ok();
    let stopped = || interrupt.as_ref().is_some_and(|i| i.hit());
    let work = plan
        .copy
        .iter()
        .map(|(s, t, _)| Job::Copy(s, t.as_ref()))
        .chain(plan.delete.iter().map(Job::Delete));
    let mut results = futures_util::stream::iter(work)
        .map(|job| {
            let (budget, failed, bar, stopped) = (budget.clone(), &failed, bar.clone(), &stopped);
            async move {
                if failed.load(Ordering::Relaxed) || stopped() {
                    return Ok(Done::NotStarted);
                }
                let r = run_job(job, ends, keeper, &budget).await;
                match &r {
                    Err(_) => failed.store(true, Ordering::Relaxed),
                    Ok(Done::Copied { copied, .. }) => bar.inc(copied.size),
                    _ => {}
                }
                r
            }
        })
        .buffer_unordered(PARALLEL);
    while let Some(r) = results.next().await {
        match r {
            Ok(Done::Copied {
                key,
                copied,
                replaced,
            }) => {
                applied.done.copy += 1;
                applied.done.copy_bytes += copied.size;
                match replaced {
                    Some(k) => applied.undo.replaced.push(k),
                    None => applied.undo.created.push(Created {
                        key: key.clone(),
                        etag: copied.dest_etag.clone(),
                    }),
                }
                applied.state.insert(key, copied);
            }
            Ok(Done::Deleted(k)) => {
                applied.done.delete += 1;
                applied.done.delete_bytes += k.size;
                applied.undo.deleted.push(k);
            }
            Ok(Done::NotStarted) => {}
            Err(e) => {
                applied.error.get_or_insert(e);
            }
        }
    }
    bar.finish_and_clear();
    if stopped() && applied.error.is_none() {
        applied.error = Some(anyhow::anyhow!("interrupted"));
    }
    applied.done.changed_at_destination = plan
        .copy
        .iter()
        .filter(|(s, _, w)| *w == Why::ChangedAtDestination && applied.state.contains_key(&s.key))
        .count();
    applied
}

enum Job<'a> {
    Copy(&'a Object, Option<&'a Object>),
    Delete(&'a Object),
}

async fn run_job(
    job: Job<'_>,
    ends: &Ends,
    keeper: &Keeper<'_>,
    budget: &Semaphore,
) -> anyhow::Result<Done> {
    match job {
        Job::Copy(s, t) => {
            let replaced = match t {
                Some(t) => Some(keep(&ends.to, t, keeper, budget).await?),
                None => None,
            };
            let dest_etag = transfer(ends, s, budget).await?;
            Ok(Done::Copied {
                key: s.key.clone(),
                copied: Copied {
                    size: s.size,
                    source_etag: s.etag.clone(),
                    dest_etag: dest_etag.clone(),
                },
                replaced: replaced.map(|k| Kept {
                    etag_after: Some(dest_etag),
                    ..k
                }),
            })
        }
        Job::Delete(t) => {
            let kept = keep(&ends.to, t, keeper, budget).await?;
            ends.to.delete(&t.key).await?;
            Ok(Done::Deleted(kept))
        }
    }
}

/// The bytes a stream of an object of `size` holds at most, in KiB permits.
fn cost(size: u64) -> u32 {
    (size.clamp(64 << 10, MULTIPART_HOLD) >> 10) as u32
}

/// Copy `s` from the source to the destination; the destination's new ETag.
async fn transfer(ends: &Ends, s: &Object, budget: &Semaphore) -> anyhow::Result<String> {
    if ends.server_side {
        let etag = ends
            .to
            .copy_from(&ends.from, &s.key, &s.key, s.size)
            .await?;
        if !etag.is_empty() {
            return Ok(etag);
        }
        return checked(&ends.to, s).await;
    }
    let _held = budget.acquire_many(cost(s.size)).await?;
    let opened = ends.from.get(&s.key).await?;
    if opened.size <= ONE_PUT {
        let mut bytes = Vec::with_capacity(opened.size as usize);
        opened
            .reader
            .take(ONE_PUT + 1)
            .read_to_end(&mut bytes)
            .await?;
        anyhow::ensure!(
            bytes.len() as u64 == s.size,
            "{}{}: read {} bytes, the listing said {}",
            ends.from.url(),
            s.key,
            bytes.len(),
            s.size
        );
        let etag = ends.to.put(&s.key, bytes, &opened.headers).await?;
        return Ok(etag);
    }
    let upload = ends.to.upload(&s.key, &opened.headers).await?;
    stream_into(opened.reader, upload).await?;
    checked(&ends.to, s).await
}

/// The destination's ETag of `s` after a copy, checking its size.
async fn checked(to: &Bucket, s: &Object) -> anyhow::Result<String> {
    let now = to
        .head(&s.key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{}{} is missing right after its copy", to.url(), s.key))?;
    anyhow::ensure!(
        now.size == s.size,
        "{}{}: {} bytes after the copy, the source has {}",
        to.url(),
        s.key,
        now.size,
        s.size
    );
    Ok(now.etag)
}

/// Copy `reader` into `upload` and commit it; abort it on any failure.
pub async fn stream_into(
    mut reader: crate::archive::Reader,
    mut upload: Upload,
) -> anyhow::Result<()> {
    match tokio::io::copy(&mut reader, &mut upload).await {
        Ok(_) => Ok(upload.commit().await?),
        Err(e) => {
            upload.abort().await;
            Err(e.into())
        }
    }
}

/// Keep destination object `t` in the target's store before the sync touches it.
async fn keep(
    to: &Bucket,
    t: &Object,
    keeper: &Keeper<'_>,
    budget: &Semaphore,
) -> anyhow::Result<Kept> {
    let _held = budget.acquire_many(cost(t.size)).await?;
    let n = keeper.next.fetch_add(1, Ordering::Relaxed);
    let kept = super::record::kept_key(keeper.pair, keeper.stamp, n);
    let opened = to.get(&t.key).await?;
    let upload = keeper.store.upload(&kept).await?;
    stream_into(opened.reader, upload).await?;
    Ok(Kept {
        key: t.key.clone(),
        kept,
        size: t.size,
        etag_before: t.etag.clone(),
        etag_after: None,
        headers: opened.headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    fn o(key: &str, size: u64, etag: &str) -> Object {
        Object {
            key: key.into(),
            size,
            etag: etag.into(),
        }
    }

    fn keys<T>(v: &[T], f: impl Fn(&T) -> &Object) -> Vec<String> {
        v.iter().map(|x| f(x).key.clone()).collect()
    }

    #[test]
    fn plain_md5s_decide_without_a_record() {
        let src = [o("a", 1, A), o("b", 1, B), o("new", 1, A)];
        let dst = [o("a", 1, A), o("b", 1, A), o("only-here", 9, B)];
        let d = decide(&src, &dst, &BTreeMap::new(), false);
        assert_eq!(keys(&d.skip, |x| &x.0), ["a"]);
        assert_eq!(
            d.copy
                .iter()
                .map(|(s, _, w)| (s.key.as_str(), *w))
                .collect::<Vec<_>>(),
            [("b", Why::Differs), ("new", Why::New)]
        );
        assert_eq!(keys(&d.extra, |x| x), ["only-here"]);
        assert!(d.delete.is_empty());
        let d = decide(&src, &dst, &BTreeMap::new(), true);
        assert_eq!(keys(&d.delete, |x| x), ["only-here"]);
        let c = d.counts();
        assert_eq!(
            (c.copy, c.copy_bytes, c.skip, c.delete, c.delete_bytes),
            (2, 2, 1, 1, 9)
        );
    }

    #[test]
    fn multipart_etags_need_the_record() {
        let src = [o("big", 20, "aaaa-3"), o("big2", 20, "bbbb-3")];
        // The streamed copy got another multipart ETag; a server-side copy an MD5.
        let dst = [o("big", 20, "cccc-3"), o("big2", 20, A)];
        let none = decide(&src, &dst, &BTreeMap::new(), false);
        assert_eq!(
            none.copy.len(),
            2,
            "without a record nothing proves them equal"
        );
        let known: BTreeMap<String, Copied> = [
            (
                "big".to_string(),
                Copied {
                    size: 20,
                    source_etag: "aaaa-3".into(),
                    dest_etag: "cccc-3".into(),
                },
            ),
            (
                "big2".to_string(),
                Copied {
                    size: 20,
                    source_etag: "bbbb-3".into(),
                    dest_etag: A.into(),
                },
            ),
        ]
        .into();
        let d = decide(&src, &dst, &known, false);
        assert_eq!(d.skip.len(), 2, "{d:?}");
        // The source changed since.
        let changed = [o("big", 21, "dddd-3"), o("big2", 20, "bbbb-3")];
        let d = decide(&changed, &dst, &known, false);
        assert_eq!(d.copy[0].2, Why::SourceChanged);
        // Someone else wrote the destination.
        let theirs = [o("big", 20, "eeee-3"), o("big2", 20, B)];
        let d = decide(&src, &theirs, &known, false);
        assert!(d
            .copy
            .iter()
            .all(|(_, _, w)| *w == Why::ChangedAtDestination));
        assert_eq!(d.counts().changed_at_destination, 2);
    }

    #[test]
    fn stream_memory_is_bounded() {
        assert_eq!(cost(1), 64);
        assert_eq!(cost(5 << 20), 5 << 10);
        assert_eq!(cost(100 << 30), (MULTIPART_HOLD >> 10) as u32);
        assert!(u64::from(cost(u64::MAX)) << 10 <= BUDGET);
    }
}
