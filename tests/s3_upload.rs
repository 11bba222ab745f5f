//! The S3 store's multipart upload against a real S3-protocol server (moto): an upload
//! of several parts round-trips byte-exact, an abandoned one leaves nothing behind, and
//! a part the server refuses stops the writer with an error instead of hanging it.
//! Driven through the library (`Store::upload`), as `countable backup` drives it.

// Tests observe from outside with the docker and aws CLIs; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use countable::project::Environment;
use countable::store::{parts, Store};
use tokio::io::AsyncWriteExt;

use common::*;

/// Bytes that do not compress and do not repeat within a part.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Write `data` in uneven slices, as a compressor would.
async fn feed(upload: &mut countable::store::Upload, data: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    let mut step = 100_000;
    while at < data.len() {
        let end = (at + step).min(data.len());
        upload.write_all(&data[at..end]).await?;
        at = end;
        step = step * 7 % 900_001 + 1;
    }
    Ok(())
}

fn pending_uploads(moto: &Moto) -> String {
    moto.aws(&[
        "s3api",
        "list-multipart-uploads",
        "--bucket",
        "countable",
        "--query",
        "Uploads[].Key",
        "--output",
        "text",
    ])
    .ok()
    .stdout
    .trim()
    .to_string()
}

fn exists(moto: &Moto, key: &str) -> bool {
    moto.aws(&[
        "s3api",
        "head-object",
        "--bucket",
        "countable",
        "--key",
        &format!("backups/shop/{key}"),
    ])
    .code
        == 0
}

// One test: the credentials go into the process environment, read by the AWS SDK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_round_trip_abort_and_fail_cleanly() {
    let moto = Moto::start(false);
    moto.aws(&["s3", "mb", "s3://countable"]).ok();
    for (k, v) in aws_env() {
        std::env::set_var(k, v);
    }
    let env = Environment {
        backups: Some("s3://countable/backups/shop/".into()),
        endpoint_url: Some(moto.url()),
        ..Default::default()
    };
    let store = Store::for_environment("prod", &env, std::path::Path::new("/"))
        .await
        .unwrap();

    // Five full parts and a short one, byte-exact, as one object of six parts.
    let first = parts::part_size(1);
    let data = noise(5 * first + 1_234_567, 7);
    let mut upload = store.upload("big.backup").await.unwrap();
    feed(&mut upload, &data).await.unwrap();
    upload.commit().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("big.backup");
    moto.aws(&[
        "s3",
        "cp",
        "s3://countable/backups/shop/big.backup",
        local.to_str().unwrap(),
    ])
    .ok();
    let stored = std::fs::read(&local).unwrap();
    assert_eq!(stored.len(), data.len());
    assert!(
        stored == data,
        "the stored object differs from what was sent"
    );
    let etag = moto
        .aws(&[
            "s3api",
            "head-object",
            "--bucket",
            "countable",
            "--key",
            "backups/shop/big.backup",
            "--query",
            "ETag",
            "--output",
            "text",
        ])
        .ok()
        .stdout;
    assert!(etag.trim().trim_matches('"').ends_with("-6"), "{etag}");
    assert_eq!(
        store.size_of("big.backup").await.unwrap(),
        Some(data.len() as u64)
    );

    // Abandoned after three parts: no object, no upload left open (no parts billed).
    let mut upload = store.upload("abandoned.backup").await.unwrap();
    feed(&mut upload, &data[..3 * first]).await.unwrap();
    upload.abort().await;
    assert!(!exists(&moto, "abandoned.backup"));
    assert_eq!(
        pending_uploads(&moto),
        "None",
        "the multipart upload was aborted"
    );

    // Another writer stores the same key while the upload runs: the upload does not
    // replace it, fails, and leaves no open upload behind.
    let mut upload = store.upload("raced.backup").await.unwrap();
    feed(&mut upload, &data[..2 * first + 5]).await.unwrap();
    let theirs = tmp.path().join("theirs");
    std::fs::write(&theirs, b"someone else's backup").unwrap();
    moto.aws(&[
        "s3",
        "cp",
        theirs.to_str().unwrap(),
        "s3://countable/backups/shop/raced.backup",
    ])
    .ok();
    let err = upload.commit().await.unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");
    assert_eq!(store.size_of("raced.backup").await.unwrap(), Some(21));
    assert_eq!(
        pending_uploads(&moto),
        "None",
        "the failed upload was aborted"
    );

    // The server drops the upload midway (a lifecycle rule, an operator): the writer
    // gets an error soon, committing fails, and nothing is stored.
    let mut upload = store.upload("refused.backup").await.unwrap();
    feed(&mut upload, &data[..first + 10]).await.unwrap();
    let id = moto
        .aws(&[
            "s3api",
            "list-multipart-uploads",
            "--bucket",
            "countable",
            "--query",
            "Uploads[0].UploadId",
            "--output",
            "text",
        ])
        .ok()
        .stdout;
    moto.aws(&[
        "s3api",
        "abort-multipart-upload",
        "--bucket",
        "countable",
        "--key",
        "backups/shop/refused.backup",
        "--upload-id",
        id.trim(),
    ])
    .ok();
    let more = noise(16 * first, 11);
    let written = tokio::time::timeout(Duration::from_secs(60), feed(&mut upload, &more)).await;
    match written {
        Err(_) => panic!("the writer hung after the server refused a part"),
        Ok(r) => assert!(r.is_err(), "writing on after a refused part must fail"),
    }
    let committed = upload.commit().await;
    assert!(committed.is_err(), "a refused upload must not commit");
    assert!(!exists(&moto, "refused.backup"));
}
