//! `backups prune --apply` deletes only what it knows is a backup, on a directory store
//! and on a real S3-protocol server (moto), and "newest" means the same in `backups`,
//! `pull-db` and `prune`: the time in the key, never the store's modification time.
//! The fixtures are made the way a team would: files copied in, a README beside them.

// Tests observe from outside with the docker and aws CLIs; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;

const OLD: &str = "2026-11-29T020000Z.backup";
const NEW: &str = "2026-11-30T020000Z.backup";
const STRANGERS: [&str; 2] = ["README.txt", "old-dump.sql.gz"];

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// `OLD` and `NEW` with their manifests, then a README and an undated dump written
/// after them, into `dir`; `age` sets the strangers' modification time back.
fn fill(dir: &Path, age: Option<Duration>) {
    std::fs::create_dir_all(dir).unwrap();
    for key in [OLD, NEW] {
        std::fs::write(dir.join(key), b"PGDMP not really").unwrap();
        std::fs::write(dir.join(format!("{key}.manifest.json")), b"{}").unwrap();
    }
    for key in STRANGERS {
        let f = std::fs::File::create(dir.join(key)).unwrap();
        if let Some(age) = age {
            f.set_modified(SystemTime::now() - age).unwrap();
        }
    }
}

/// The prune output's lines that start with `prefix`, the prefix taken off.
fn lines<'a>(r: &'a Run, prefix: &str) -> Vec<&'a str> {
    r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

/// Dry run, then `--keep-last 1 --apply`: only `OLD` (and its manifest) goes; the
/// README and the undated dump are listed as not backups. Then the listing and
/// pull-db's pick agree on the newest.
fn prune_and_check(s: &Scratch, envs: &[(&str, &str)], names: impl Fn() -> Vec<String>) {
    let before = names();
    let dry = run(s
        .countable()
        .args(["backups", "prune", "prod", "--keep-last", "1"])
        .envs(envs.iter().copied()))
    .ok();
    assert_eq!(names(), before, "a dry run deletes nothing");
    assert_eq!(lines(&dry, "delete "), [OLD], "{}", dry.stdout);
    let r = run(s
        .countable()
        .args(["backups", "prune", "prod", "--keep-last", "1", "--apply"])
        .envs(envs.iter().copied()))
    .ok();
    assert_eq!(lines(&r, "keep   "), [NEW], "{}", r.stdout);
    assert_eq!(lines(&r, "delete "), [OLD], "{}", r.stdout);
    let mut strangers = lines(&r, "kept: not a backup  ");
    strangers.sort();
    assert_eq!(strangers, STRANGERS, "{}", r.stdout);
    let mut want: Vec<String> = [NEW.to_string(), format!("{NEW}.manifest.json")]
        .into_iter()
        .chain(STRANGERS.iter().map(|s| s.to_string()))
        .collect();
    want.sort();
    assert_eq!(names(), want);

    // The same newest everywhere: first in the listing, the one pull-db would restore.
    let list = run(s
        .countable()
        .args(["backups", "prod", "--json"])
        .envs(envs.iter().copied()))
    .ok();
    let list = json(&list);
    assert_eq!(list[0]["key"], NEW, "{list}");
    assert_eq!(list[0]["taken_at"], "2026-11-30T02:00:00Z", "{list}");
    for row in &list.as_array().unwrap()[1..] {
        assert!(row["taken_at"].is_null(), "only NEW is a backup: {list}");
    }
    let plan = run(s
        .countable()
        .args(["pull-db", "prod", "--dry-run"])
        .envs(envs.iter().copied()))
    .ok();
    assert!(
        plan.stdout.lines().next().unwrap_or("").contains(NEW),
        "pull-db picks the newest backup: {}",
        plan.stdout
    );
}

#[test]
fn prune_in_a_directory_deletes_only_backups() {
    let s = Scratch::new("prunedir");
    let store = s.root().join("backups");
    // Strangers older than every backup: retention by stored time would delete them.
    fill(&store, Some(Duration::from_secs(3 * 365 * 86400)));
    s.set_environments("environments:\n  prod:\n    backups: backups/\n");
    prune_and_check(&s, &[], || {
        let mut v: Vec<String> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    });

    // With nothing but strangers left, pull-db names them instead of guessing.
    for key in [NEW.to_string(), format!("{NEW}.manifest.json")] {
        std::fs::remove_file(store.join(key)).unwrap();
    }
    let r = run(s.countable().args(["pull-db", "prod", "--dry-run"])).fails();
    assert!(
        r.stderr.contains("--backup old-dump.sql.gz"),
        "the hint names the object that looks like a dump: {}",
        r.stderr
    );
    let r = run(s.countable().args([
        "pull-db",
        "prod",
        "--dry-run",
        "--backup",
        "old-dump.sql.gz",
    ]))
    .ok();
    assert!(r.stdout.contains("old-dump.sql.gz"), "{}", r.stdout);
}

#[test]
fn prune_on_s3_deletes_only_backups() {
    let s = Scratch::new("prunes3");
    let moto = Moto::start(false);
    moto.aws(&["s3", "mb", "s3://countable"]).ok();
    let staging = s.root().join("staging");
    fill(&staging, None);
    // The backups first, then the README and the undated dump: in S3 the strangers are
    // as new as the newest backup, or newer.
    for key in [OLD, NEW] {
        for name in [key.to_string(), format!("{key}.manifest.json")] {
            moto.aws(&[
                "s3",
                "cp",
                staging.join(&name).to_str().unwrap(),
                &format!("s3://countable/backups/shop/{name}"),
            ])
            .ok();
        }
    }
    for name in STRANGERS {
        moto.aws(&[
            "s3",
            "cp",
            staging.join(name).to_str().unwrap(),
            &format!("s3://countable/backups/shop/{name}"),
        ])
        .ok();
    }
    s.set_environments(&format!(
        "environments:\n  prod:\n    backups: s3://countable/backups/shop/\n    endpoint_url: {}\n",
        moto.url()
    ));
    prune_and_check(&s, &aws_env(), || {
        let mut v: Vec<String> = moto
            .keys("countable", "backups/shop/")
            .into_iter()
            .map(|k| k.trim_start_matches("backups/shop/").to_string())
            .collect();
        v.sort();
        v
    });
}
