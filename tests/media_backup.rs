//! Media in backups, on the real engine and a real S3-protocol server (moto): the
//! scaffolded project's media volume (read through a helper container and the engine's
//! archive endpoint) and a bucket prefix go into the backup store beside the database
//! dump, under its stamp; a second backup sends only what changed; `verify-backup`
//! reads every file back and fails on one flipped byte, naming the file; `prune`
//! deletes the media no remaining backup refers to, and nothing else.
//!
//! Each test is one story on one project and one "production" database
//! (`<project>-prod`, as in tests/backup.rs), to keep the wall time small.

// Tests observe the engine from outside, with the docker and aws CLIs; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = run_with_stdin(&mut Command::new("sha256sum"), bytes);
    out.stdout.split_whitespace().next().unwrap().to_string()
}

/// The media volume of the prod compose project, made the way compose makes it (its
/// labels), removed when dropped.
struct MediaVolume(String);

impl MediaVolume {
    fn create(prod: &str) -> Self {
        let name = format!("{prod}_media");
        let r = run(Command::new("docker").args([
            "volume",
            "create",
            "--label",
            &format!("com.docker.compose.project={prod}"),
            "--label",
            "com.docker.compose.volume=media",
            &name,
        ]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        Self(name)
    }

    /// path → SHA-256 of every file in the volume.
    fn checksums(&self) -> BTreeMap<String, String> {
        volume_sums(&self.0)
    }
}

impl Drop for MediaVolume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

/// Every file below `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// path → object of a media manifest.
fn objects(manifest: &serde_json::Value) -> BTreeMap<String, String> {
    manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["object"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn stamp_of(key: &str) -> &str {
    key.split('.').next().unwrap()
}

/// `backup prod --json`, after the second turned (keys carry the time to the second).
fn backup(s: &Scratch, envs: &[(&str, &str)]) -> serde_json::Value {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    json(
        &run(s
            .countable()
            .args(["backup", "prod", "--json"])
            .envs(envs.iter().copied()))
        .ok(),
    )
}

#[test]
fn volume_media_is_backed_up_incrementally_verified_and_pruned() {
    let s = Scratch::new("mvol");
    let prod = s.start_prod();
    s.set_environments("environments:\n  prod:\n    backups: backups/\n");
    let store = s.root().join("backups");

    // The engine has no media volume yet: a backup with an empty media part.
    let first = backup(&s, &[]);
    assert_eq!(first["media"]["count"], 0, "{first}");
    assert!(store
        .join(format!(
            "{}.media.json",
            stamp_of(first["key"].as_str().unwrap())
        ))
        .is_file());

    // The volume, with a nested directory, a name with spaces, an empty file, one of
    // 3 MiB and a few small ones; times set, as uploads' are.
    let volume = MediaVolume::create(&prod);
    in_volume(
        &volume.0,
        "set -e; cd /m; mkdir -p 'photos/2026/11'; \
         head -c 3145728 /dev/urandom > 'photos/2026/11/big picture.jpg'; \
         echo 'a name with spaces' > 'a name with spaces.txt'; : > empty.txt; \
         for i in 1 2 3 4 5; do echo \"file $i\" > \"photos/f$i.txt\"; done; \
         echo old > changes.txt; echo bye > goes.txt; \
         find . -type f -exec touch -d @1767225600 {} +",
    );
    let volume_sums = volume.checksums();
    assert_eq!(volume_sums.len(), 10);

    let second = backup(&s, &[]);
    let stamp2 = stamp_of(second["key"].as_str().unwrap()).to_string();
    let media = &second["media"];
    assert_eq!(media["count"], 10, "{second}");
    assert_eq!(
        media["new"], 10,
        "the first backup of these files sends them all"
    );
    assert_eq!(media["source"], "volume media");
    let manifest2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join(format!("{stamp2}.media.json"))).unwrap())
            .unwrap();
    assert_eq!(manifest2["environment"], "prod");
    assert_eq!(manifest2["count"], 10);
    // Each stored object is the file, byte for byte; the manifest says so too.
    for f in manifest2["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        let stored = std::fs::read(store.join(f["object"].as_str().unwrap())).unwrap();
        assert_eq!(sha256_hex(&stored), volume_sums[path], "{path}");
        assert_eq!(f["sha256"], volume_sums[path], "{path}");
        assert_eq!(f["size"], stored.len());
        assert_eq!(f["mtime"], 1767225600, "{path}");
    }
    assert_eq!(
        files_under(&store.join(format!("{stamp2}.media"))),
        volume_sums.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        manifest2["files"][0]["path"], "a name with spaces.txt",
        "sorted by path"
    );

    // One file changed, one new, one deleted: only two files travel.
    in_volume(
        &volume.0,
        "set -e; cd /m; echo 'new content, longer' > changes.txt; echo hello > 'photos/2026/new one.txt'; rm goes.txt",
    );
    let third = backup(&s, &[]);
    let stamp3 = stamp_of(third["key"].as_str().unwrap()).to_string();
    assert_eq!(third["media"]["count"], 10, "{third}");
    assert_eq!(third["media"]["new"], 2, "{third}");
    assert_eq!(
        third["media"]["sent"],
        "new content, longer\n".len() + "hello\n".len()
    );
    assert_eq!(
        files_under(&store.join(format!("{stamp3}.media"))),
        ["changes.txt", "photos/2026/new one.txt"],
        "only what changed was sent"
    );
    let manifest3: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join(format!("{stamp3}.media.json"))).unwrap())
            .unwrap();
    let objects3 = objects(&manifest3);
    assert_eq!(
        objects3["photos/2026/11/big picture.jpg"],
        format!("{stamp2}.media/photos/2026/11/big picture.jpg"),
        "an unchanged file points at the earlier backup's object"
    );
    assert_eq!(
        objects3["changes.txt"],
        format!("{stamp3}.media/changes.txt")
    );
    assert!(!objects3.contains_key("goes.txt"));

    // The listing shows each backup's media.
    let listed = run(s.countable().args(["backups", "prod"])).ok();
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&stamp3))
        .unwrap_or_else(|| panic!("{}", listed.stdout));
    assert!(line.contains("media 10 files"), "{line}");

    // The drill reads every file back.
    let v = run(s.countable().args(["verify-backup", "prod", "--json"])).ok();
    let results = json(&v);
    assert_eq!(results[0]["outcome"], "passed", "{}", v.stdout);
    assert_eq!(results[0]["media"]["files"], 10);
    assert_eq!(results[0]["media"]["damaged"], 0);
    assert!(v.stderr.contains("media: 10 files"), "{}", v.stderr);

    // One flipped byte in a stored object (the earlier backup's, which the newest
    // refers to) fails it, and the file is named.
    let damaged = store.join(&objects3["photos/2026/11/big picture.jpg"]);
    let good = std::fs::read(&damaged).unwrap();
    let mut bad = good.clone();
    bad[1_000_000] ^= 0x01;
    std::fs::write(&damaged, &bad).unwrap();
    let r = run(s.countable().args(["verify-backup", "prod", "--json"])).fails();
    let results = json(&r);
    assert_eq!(results[0]["outcome"], "failed");
    assert_eq!(results[0]["media"]["damaged"], 1);
    let problems = results[0]["problems"].to_string();
    assert!(
        problems.contains("photos/2026/11/big picture.jpg: SHA-256"),
        "{problems}"
    );
    assert!(
        r.stderr.contains("big picture.jpg"),
        "named on the terminal: {}",
        r.stderr
    );
    std::fs::write(&damaged, &good).unwrap();

    // Keep the newest: the older backups' media manifests go, and of their objects
    // only those the newest does not refer to (the old changes.txt and goes.txt).
    let before = files_under(&store);
    let dry = run(s
        .countable()
        .args(["backups", "prune", "prod", "--keep-last", "1"]))
    .ok();
    assert_eq!(files_under(&store), before, "a dry run deletes nothing");
    assert!(
        dry.stderr
            .contains("media: 2 manifests and 2 files (8 B) would be deleted; 8 files"),
        "{}",
        dry.stderr
    );
    run(s
        .countable()
        .args(["backups", "prune", "prod", "--keep-last", "1", "--apply"]))
    .ok();
    let left = files_under(&store);
    let stamp1 = stamp_of(first["key"].as_str().unwrap());
    assert!(!left.iter().any(|f| f.starts_with(stamp1)), "{left:?}");
    assert!(!left.contains(&format!("{stamp2}.media.json")), "{left:?}");
    assert!(
        !left.contains(&format!("{stamp2}.media/goes.txt")),
        "{left:?}"
    );
    assert!(
        !left.contains(&format!("{stamp2}.media/changes.txt")),
        "{left:?}"
    );
    for object in objects3.values() {
        assert!(left.contains(object), "{object} is referenced: {left:?}");
    }
    let v = run(s.countable().args(["verify-backup", "prod", "--json"])).ok();
    assert_eq!(json(&v)[0]["media"]["damaged"], 0);

    // A compose file without the volume named: said once, and no media part.
    s.set_environments(
        "environments:\n  prod:\n    backups: backups/\n    media_volume: uploads\n",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = run(s.countable().args(["backup", "prod", "--json"])).ok();
    assert!(json(&r)["media"].is_null(), "{}", r.stdout);
    assert_eq!(
        r.stderr.matches("declare no volume `uploads`").count(),
        1,
        "{}",
        r.stderr
    );
    // No helper container is left behind.
    let helpers = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        &format!("name={}-countable-media", *prod),
    ]));
    assert_eq!(helpers.stdout.trim(), "");
}

#[test]
fn bucket_media_is_backed_up_by_etag_with_a_multipart_object() {
    let s = Scratch::new("mbkt");
    let _prod = s.start_prod();
    let moto = Moto::start(false);
    moto.aws(&["s3", "mb", "s3://countable"]).ok();
    moto.aws(&["s3", "mb", "s3://shop-media"]).ok();
    let tmp = tempfile::tempdir().unwrap();
    let put = |name: &str, bytes: &[u8], key: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        moto.aws(&[
            "s3",
            "cp",
            path.to_str().unwrap(),
            &format!("s3://shop-media/files/{key}"),
        ])
        .ok();
    };
    // 11 MiB: the CLI uploads it in two parts (8 MiB threshold and part size).
    let big: Vec<u8> = (0..11 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    put("big", &big, "videos/big film.mp4");
    put("small", b"small", "docs/small.txt");
    put("other", b"other", "other.txt");
    let head = moto.aws(&[
        "s3api",
        "head-object",
        "--bucket",
        "shop-media",
        "--key",
        "files/videos/big film.mp4",
    ]);
    let etag = json(&head.ok())["ETag"]
        .as_str()
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert!(etag.ends_with("-2"), "a multipart ETag: {etag}");
    s.set_environments(&format!(
        "environments:\n  prod:\n    backups: s3://countable/backups/shop/\n    media: s3://shop-media/files/\n    endpoint_url: {}\n",
        moto.url()
    ));
    let envs = aws_env();

    let first = backup(&s, &envs);
    let stamp1 = stamp_of(first["key"].as_str().unwrap()).to_string();
    assert_eq!(first["media"]["count"], 3, "{first}");
    assert_eq!(first["media"]["new"], 3);
    assert_eq!(first["media"]["source"], "s3://shop-media/files/");
    assert!(
        moto.read(&format!(
            "s3://countable/backups/shop/{stamp1}.media/videos/big film.mp4"
        )) == big,
        "the stored copy is the file"
    );
    let manifest1: serde_json::Value = serde_json::from_slice(
        &moto.read(&format!("s3://countable/backups/shop/{stamp1}.media.json")),
    )
    .unwrap();
    let entry = manifest1["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "videos/big film.mp4")
        .unwrap()
        .clone();
    assert_eq!(entry["etag"], etag.as_str(), "kept verbatim");
    assert_eq!(
        entry["sha256"],
        sha256_hex(&big),
        "computed, never the ETag"
    );

    // The big file copied in again (same bytes, a new time, the same multipart ETag)
    // and a small one changed: only the small one travels.
    put("big", &big, "videos/big film.mp4");
    put("small", b"smaller!", "docs/small.txt");
    let second = backup(&s, &envs);
    let stamp2 = stamp_of(second["key"].as_str().unwrap()).to_string();
    assert_eq!(second["media"]["new"], 1, "{second}");
    assert_eq!(second["media"]["sent"], 8);
    assert_eq!(
        moto.keys("countable", &format!("backups/shop/{stamp2}.media/")),
        [format!("backups/shop/{stamp2}.media/docs/small.txt")],
        "only what changed was sent"
    );

    // The drill reads both backups' objects back through S3.
    let v = run(s
        .countable()
        .args(["verify-backup", "prod", "--json"])
        .envs(envs.iter().copied()))
    .ok();
    let results = json(&v);
    assert_eq!(results[0]["outcome"], "passed", "{}", v.stdout);
    assert_eq!(results[0]["media"]["files"], 3);
    // Both listed as backups, with their media; the media objects are not backups.
    let list = json(
        &run(s
            .countable()
            .args(["backups", "prod", "--json"])
            .envs(envs.iter().copied()))
        .ok(),
    );
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{list}");
    assert_eq!(list[0]["media"]["count"], 3);
}
