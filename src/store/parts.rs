//! The parts of an S3 multipart upload: how big each one is, and how many are sent at
//! once. S3 allows 10,000 parts of 5 MiB to 5 GiB (the last may be smaller) and 5 TiB
//! per object; a backup's size is not known before it ends, so parts grow as the
//! upload goes.
//!
//! Memory is bounded: at most [`in_flight`] parts are being sent while the next one
//! fills, so the upload holds at most `in_flight(p) × p + p ≤ max(128 MiB, p) + p` bytes
//! for the current part size `p`: 40 MiB for the first 7.8 GiB of a backup, 192 MiB up
//! to 117 GiB, 512 MiB up to 492 GiB, and 4 GiB (2 × 2 GiB) past 3.9 TiB, the price of
//! fitting 5 TiB into 10,000 parts. Nothing here knows about
//! the S3 API; it cuts a byte stream into numbered parts and hands them to a sender.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::StoreError;

const MIB: usize = 1024 * 1024;

/// S3's limits for one multipart upload.
pub const MAX_PARTS: u32 = 10_000;
pub const MIN_PART: usize = 5 * MIB;
pub const MAX_PART: usize = 5 * 1024 * MIB;
pub const MAX_OBJECT: u64 = 5 * 1024 * 1024 * MIB as u64;

/// The first parts' size.
const FIRST_PART: usize = 8 * MIB;
/// Parts double in size every this many parts…
const PARTS_PER_STEP: u32 = 1000;
/// …this many times at most (8 MiB × 2⁸ = 2 GiB).
const MAX_DOUBLINGS: u32 = 8;
/// At most this many parts are sent at once…
pub const PARALLEL: usize = 4;
/// …and no more than fit in this many bytes (but always one).
pub const IN_FLIGHT_BYTES: usize = 128 * MIB;

/// The size of part `n` (1-based): 8 MiB for parts 1–1000, 16 MiB for 1001–2000, …,
/// doubling every 1000 parts up to 2 GiB (parts 8001–10000). 10,000 parts hold 5.85 TiB.
pub fn part_size(n: u32) -> usize {
    let step = (n.max(1) - 1) / PARTS_PER_STEP;
    FIRST_PART << step.min(MAX_DOUBLINGS)
}

/// How many parts of `part` bytes may be in flight at once.
pub fn in_flight(part: usize) -> usize {
    (IN_FLIGHT_BYTES / part).clamp(1, PARALLEL)
}

/// One part sent: its number and the store's ETag for it.
pub type SentPart = (i32, Option<String>);

/// Cut `input` into parts by [`part_size`] and send them through `send`, up to
/// [`in_flight`] at once; the sent parts in order. The first failure stops the upload
/// once the parts in flight have ended. An empty input is one empty part.
pub async fn send_parts<R, F, Fut>(input: R, send: F) -> Result<Vec<SentPart>, StoreError>
where
    R: AsyncRead + Unpin,
    F: Fn(i32, Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Option<String>, StoreError>> + Send + 'static,
{
    let mut running: JoinSet<Result<SentPart, StoreError>> = JoinSet::new();
    let result = cut_and_send(input, send, &mut running).await;
    if result.is_err() {
        // Let the parts in flight land (or fail) before the caller aborts the upload:
        // a part that arrived after the abort would be stored, and billed, forever.
        while running.join_next().await.is_some() {}
    }
    result
}

async fn cut_and_send<R, F, Fut>(
    mut input: R,
    send: F,
    running: &mut JoinSet<Result<SentPart, StoreError>>,
) -> Result<Vec<SentPart>, StoreError>
where
    R: AsyncRead + Unpin,
    F: Fn(i32, Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Option<String>, StoreError>> + Send + 'static,
{
    let mut sent = Vec::new();
    let mut n: u32 = 0;
    loop {
        // A part that failed meanwhile stops the upload now, not parts later.
        while let Some(done) = running.try_join_next() {
            sent.push(joined(Some(done))?);
        }
        n += 1;
        let size = part_size(n);
        let mut buf = Vec::with_capacity(size);
        (&mut input)
            .take(size as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| failed(format!("reading the backup: {e}")))?;
        if buf.is_empty() && n > 1 {
            break;
        }
        if n > MAX_PARTS {
            return Err(failed(format!(
                "the backup is larger than S3 takes in one object ({} TiB)",
                MAX_OBJECT >> 40
            )));
        }
        let last = buf.len() < size;
        while running.len() >= in_flight(size) {
            sent.push(joined(running.join_next().await)?);
        }
        let part = send(n as i32, buf);
        let number = n as i32;
        running.spawn(async move { part.await.map(|etag| (number, etag)) });
        if last {
            break;
        }
    }
    while let Some(r) = running.join_next().await {
        sent.push(joined(Some(r))?);
    }
    sent.sort_by_key(|(n, _)| *n);
    Ok(sent)
}

fn joined(
    r: Option<Result<Result<SentPart, StoreError>, tokio::task::JoinError>>,
) -> Result<SentPart, StoreError> {
    match r {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(failed(format!("a part's upload stopped: {e}"))),
        None => Err(failed("no part was in flight".into())),
    }
}

fn failed(message: String) -> StoreError {
    StoreError::S3 {
        location: String::new(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[test]
    fn parts_reach_five_tib_within_s3_limits() {
        let mut total: u64 = 0;
        let mut prev = 0;
        for n in 1..=MAX_PARTS {
            let p = part_size(n);
            assert!((MIN_PART..=MAX_PART).contains(&p), "part {n}: {p} bytes");
            assert!(p >= prev, "part sizes never shrink");
            prev = p;
            total += p as u64;
            // Memory stays bounded by the documented formula, and within 4 GiB.
            let held = in_flight(p) * p + p;
            assert!(in_flight(p) >= 1);
            assert!(held <= IN_FLIGHT_BYTES.max(p) + p, "part {n}");
            assert!(held as u64 <= 4 << 30, "part {n}: {held} bytes held");
        }
        assert!(
            total >= MAX_OBJECT,
            "10,000 parts hold {total} bytes, less than 5 TiB"
        );
        // Small backups pay nothing for it: the first 7.8 GiB go in 8 MiB parts, 4 at a
        // time (40 MiB of memory), and about 78 GiB (the old ceiling) in 4,000 parts.
        assert_eq!(part_size(1), 8 * MIB);
        assert_eq!(part_size(1000), 8 * MIB);
        assert_eq!(part_size(1001), 16 * MIB);
        assert_eq!(in_flight(8 * MIB), PARALLEL);
        let first_4000: u64 = (1..=4000).map(|n| part_size(n) as u64).sum();
        assert!(first_4000 > 78 << 30);
    }

    /// A fake store that takes `delay` per part and records what it saw.
    #[derive(Default)]
    struct Fake {
        now: AtomicUsize,
        most: AtomicUsize,
        parts: Mutex<Vec<(i32, Vec<u8>)>>,
        fail_at: Option<i32>,
    }

    async fn upload(fake: Arc<Fake>, data: Vec<u8>) -> Result<Vec<SentPart>, StoreError> {
        send_parts(&data[..], |n, bytes| {
            let fake = fake.clone();
            async move {
                let now = fake.now.fetch_add(1, Ordering::SeqCst) + 1;
                fake.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                fake.now.fetch_sub(1, Ordering::SeqCst);
                if fake.fail_at == Some(n) {
                    return Err(failed(format!("part {n} refused")));
                }
                fake.parts.lock().unwrap().push((n, bytes));
                Ok(Some(format!("etag-{n}")))
            }
        })
        .await
    }

    fn bytes(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn parts_go_out_in_parallel_and_come_back_in_order() {
        let data = bytes(6 * 8 * MIB + 12345);
        let fake = Arc::new(Fake::default());
        let sent = upload(fake.clone(), data.clone()).await.unwrap();
        assert_eq!(
            sent.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(sent[6].1.as_deref(), Some("etag-7"));
        let most = fake.most.load(Ordering::SeqCst);
        assert!(
            (2..=PARALLEL).contains(&most),
            "{most} parts were in flight at once"
        );
        let mut parts = fake.parts.lock().unwrap().clone();
        parts.sort_by_key(|(n, _)| *n);
        assert!(parts[..6].iter().all(|(_, b)| b.len() == 8 * MIB));
        let joined: Vec<u8> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        assert!(joined == data, "the parts are the input");
    }

    #[tokio::test]
    async fn exact_multiples_and_empty_inputs() {
        let fake = Arc::new(Fake::default());
        let sent = upload(fake.clone(), bytes(2 * 8 * MIB)).await.unwrap();
        assert_eq!(sent.len(), 2, "no empty part after an exact multiple");
        let fake = Arc::new(Fake::default());
        let sent = upload(fake.clone(), Vec::new()).await.unwrap();
        assert_eq!(sent.len(), 1, "an empty backup is one empty part");
    }

    #[tokio::test]
    async fn a_failed_part_fails_the_upload() {
        let fake = Arc::new(Fake {
            fail_at: Some(2),
            ..Default::default()
        });
        let err = upload(fake, bytes(5 * 8 * MIB)).await.unwrap_err();
        assert!(err.to_string().contains("part 2 refused"), "{err}");
    }
}
