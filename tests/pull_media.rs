//! pull-media on the real engine, the real stand-in images and a real S3-protocol
//! server (moto) on loopback: an environment's bucket, its volume and its backup's
//! media into the local media volume (made as compose makes it), checked by SHA-256
//! inside the volume; a second run moves nothing; a real Ctrl-C (SIGINT to the process
//! group) mid-run stops it, and the same command copies only what was missing; `up` on
//! a fresh clone fills media from the backup it fills the database from.
//!
//! Two stories, each on one project, run side by side.

// Tests observe the engine from outside, with the docker and aws CLIs; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// path → SHA-256 of every file below `dir`.
fn host_sums(dir: &Path) -> BTreeMap<String, String> {
    let r = run(Command::new("sh")
        .args(["-c", "find . -type f -exec sha256sum {} +"])
        .current_dir(dir));
    assert_eq!(r.code, 0, "{}", r.stderr);
    parse_sums(&r.stdout)
}

fn remove_volume(name: &str) {
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", name])
        .output();
}

/// Volumes go when the test ends, also when it fails.
struct Volumes(Vec<String>);

impl Drop for Volumes {
    fn drop(&mut self) {
        for v in &self.0 {
            remove_volume(v);
        }
    }
}

fn pull(s: &Scratch, args: &[&str]) -> serde_json::Value {
    json(
        &run(s
            .countable()
            .arg("pull-media")
            .args(args)
            .arg("--json")
            .envs(aws_env()))
        .ok(),
    )
}

/// Fixture files below `dir`: nested directories, a name with spaces, an empty file, a
/// path longer than a tar header's 100 bytes, thumbnails and one large file.
fn make_fixtures(dir: &Path) {
    sh(
        dir,
        "set -e; mkdir -p 'photos/2026/11' thumbs/a docs/deep/er \
         'a-rather-long-directory-name-to-pass-one-hundred-bytes/and-another-level-below-it'; \
         head -c 300000 /dev/urandom > 'photos/2026/11/big picture.jpg'; \
         echo 'a name with spaces' > 'a name with spaces.txt'; : > empty.txt; \
         echo pdf > docs/deep/er/x.pdf; \
         echo long > 'a-rather-long-directory-name-to-pass-one-hundred-bytes/and-another-level-below-it/file name.txt'; \
         echo t1 > thumbs/a/t1.jpg; echo t2 > thumbs/t2.jpg; \
         head -c 2000000 /dev/urandom > huge.bin",
    );
}

#[test]
fn bucket_media_full_copy_then_nothing_then_resume_after_ctrl_c() {
    let moto = Moto::start(false);
    moto.aws(&["s3", "mb", "s3://shop-media"]).ok();
    let fx = tempfile::tempdir().unwrap();
    make_fixtures(fx.path());
    moto.aws(&[
        "s3",
        "cp",
        "--recursive",
        "--quiet",
        fx.path().to_str().unwrap(),
        "s3://shop-media/files/",
    ])
    .ok();
    let s = Scratch::new("pmb");
    let volume = format!("{}_media", s.name);
    let _cleanup = Volumes(vec![volume.clone()]);
    s.set_environments(&format!(
        "data_from: prod\nenvironments:\n  prod:\n    backups: backups/\n    media: s3://shop-media/files/\n    endpoint_url: {}\n",
        moto.url()
    ));

    // The dry run: a table, nothing written (no volume made).
    let dry = run(s
        .countable()
        .args([
            "pull-media",
            "--dry-run",
            "--exclude",
            "thumbs/**",
            "--max-size",
            "1M",
        ])
        .envs(aws_env()))
    .ok();
    assert!(
        dry.stdout.contains("copy") && dry.stdout.contains("too big"),
        "{}",
        dry.stdout
    );
    let inspect = run(Command::new("docker").args(["volume", "inspect", &volume]));
    assert_ne!(inspect.code, 0, "a dry run makes no volume");

    // The first run: everything but the excluded and the too big.
    let first = pull(&s, &["--exclude", "thumbs/**", "--max-size", "1M"]);
    let mut want = host_sums(fx.path());
    want.retain(|p, _| !p.starts_with("thumbs/") && p != "huge.bin");
    assert_eq!(want.len(), 5);
    assert_eq!(first["plan"]["copy"]["files"], 5, "{first}");
    assert_eq!(first["copied"]["files"], 5, "{first}");
    assert_eq!(first["plan"]["excluded"]["files"], 2, "{first}");
    assert_eq!(first["plan"]["too_big"]["files"], 1, "{first}");
    assert_eq!(first["plan"]["too_big"]["bytes"], 2000000, "{first}");
    assert_eq!(first["volume"], volume.as_str());
    assert_eq!(volume_sums(&volume), want);
    // Made as compose makes it, so that `docker compose up` adopts it.
    let labels =
        run(Command::new("docker").args(["volume", "inspect", "-f", "{{json .Labels}}", &volume]))
            .ok();
    let labels: serde_json::Value = serde_json::from_str(labels.stdout.trim()).unwrap();
    assert_eq!(labels["com.docker.compose.project"], s.name.as_str());
    assert_eq!(labels["com.docker.compose.volume"], "media");
    assert!(labels["com.docker.compose.version"].is_string(), "{labels}");
    // nginx mounts the media volume and needs no build: compose adopts it silently.
    let adopted = s.compose(&["up", "--no-start", "--no-deps", "nginx"]);
    assert_eq!(adopted.code, 0, "{}", adopted.stderr);
    assert!(
        !adopted.stderr.contains("already exists"),
        "{}",
        adopted.stderr
    );

    // The second run moves nothing: every file kept the source's mtime.
    let second = pull(&s, &["--exclude", "thumbs/**", "--max-size", "1M"]);
    assert_eq!(second["copied"]["files"], 0, "{second}");
    assert_eq!(second["plan"]["copy"]["files"], 0, "{second}");
    assert_eq!(second["plan"]["skip"]["files"], 5, "{second}");

    // Resume after Ctrl-C: enough files that one at a time it is mid-run; the volume's
    // root belongs to the app user, and so does what is written.
    in_volume(
        &volume,
        "chown 1000:1001 /m && echo mine > /m/only-here.txt",
    );
    sh(
        fx.path(),
        "mkdir bulk && for i in $(seq 1 400); do head -c 65536 /dev/urandom > bulk/f$i; done",
    );
    moto.aws(&[
        "s3",
        "cp",
        "--recursive",
        "--quiet",
        fx.path().join("bulk").to_str().unwrap(),
        "s3://shop-media/files/bulk/",
    ])
    .ok();
    let child = s
        .countable()
        .args([
            "pull-media",
            "--jobs",
            "1",
            "--exclude",
            "thumbs/**",
            "--max-size",
            "1M",
        ])
        .envs(aws_env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let helper = format!("{}-countable-pull-{}", s.name, child.id());
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no bulk file arrived"
        );
        let r = run(Command::new("docker").args([
            "exec",
            &helper,
            "sh",
            "-c",
            "ls /countable-media/bulk 2>/dev/null | wc -l",
        ]));
        if r.stdout.trim().parse::<u32>().unwrap_or(0) >= 70 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ctrl-C: SIGINT to countable's own process group, and nothing else.
    let group = rustix::process::Pid::from_raw(child.id() as i32).expect("a child's pid");
    assert_eq!(
        rustix::process::getpgid(Some(group)).unwrap(),
        group,
        "countable leads its own process group"
    );
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pull-media was interrupted"), "{stderr}");
    assert!(
        stderr.contains("hint: resume with `countable pull-media --jobs 1"),
        "{stderr}"
    );
    let left =
        run(Command::new("docker").args(["ps", "-aq", "--filter", &format!("name={helper}")]));
    assert_eq!(left.stdout.trim(), "", "the helper container is removed");

    let resumed = pull(&s, &["--exclude", "thumbs/**", "--max-size", "1M"]);
    let copied = resumed["copied"]["files"].as_u64().unwrap();
    assert!(
        copied > 0 && copied < 400,
        "only what was missing is copied: {resumed}"
    );
    assert_eq!(
        resumed["plan"]["skip"]["files"].as_u64().unwrap(),
        405 - copied
    );
    want = host_sums(fx.path());
    want.retain(|p, _| !p.starts_with("thumbs/") && p != "huge.bin");
    let mut got = volume_sums(&volume);
    assert!(
        got.remove("only-here.txt").is_some(),
        "a file only the volume has is kept"
    );
    assert_eq!(got, want);
    let owners = in_volume(&volume, "stat -c '%u:%g' /m/bulk /m/bulk/f1 /m/empty.txt").stdout;
    assert_eq!(
        owners.lines().collect::<Vec<_>>()[..2],
        ["1000:1001", "1000:1001"]
    );
}

#[test]
fn volume_media_live_and_from_backup_and_up_on_a_fresh_clone() {
    let s = Scratch::new("pmv");
    let prod = s.start_prod();
    let prod_volume = format!("{}_media", *prod);
    let local_volume = format!("{}_media", s.name);
    let _cleanup = Volumes(vec![prod_volume.clone(), local_volume.clone()]);
    s.set_environments("data_from: prod\nenvironments:\n  prod:\n    backups: backups/\n");
    let made = run(Command::new("docker").args([
        "volume",
        "create",
        "--label",
        &format!("com.docker.compose.project={}", *prod),
        "--label",
        "com.docker.compose.volume=media",
        &prod_volume,
    ]));
    assert_eq!(made.code, 0, "{}", made.stderr);
    in_volume(
        &prod_volume,
        "set -e; cd /m; mkdir -p 'photos/2026/11'; \
         head -c 500000 /dev/urandom > 'photos/2026/11/big picture.jpg'; \
         echo 'a name with spaces' > 'a name with spaces.txt'; : > empty.txt; \
         for i in 1 2 3 4 5; do echo \"file $i\" > \"photos/f$i.txt\"; done; \
         find . -type f -exec touch -d @1767225600 {} +",
    );
    let prod_sums = volume_sums(&prod_volume);
    assert_eq!(prod_sums.len(), 8);

    // The live volume, through prod's engine (one tar stream).
    let live = pull(&s, &[]);
    assert_eq!(live["copied"]["files"], 8, "{live}");
    assert_eq!(live["source"], "prod's volume media");
    assert_eq!(volume_sums(&local_volume), prod_sums);
    assert_eq!(pull(&s, &[])["copied"]["files"], 0);

    // A backup's media, not the live one: a file added after the backup stays out.
    std::thread::sleep(Duration::from_millis(1100));
    let backed = json(&run(s.countable().args(["backup", "prod", "--json"])).ok());
    assert_eq!(backed["media"]["count"], 8, "{backed}");
    in_volume(&prod_volume, "echo late > /m/after-backup.txt");
    remove_volume(&local_volume);
    let restored = pull(&s, &["--from-backup"]);
    assert_eq!(restored["copied"]["files"], 8, "{restored}");
    assert_eq!(volume_sums(&local_volume), prod_sums);
    let key = backed["key"].as_str().unwrap();
    let again = pull(&s, &["--from-backup", key]);
    assert_eq!(again["copied"]["files"], 0, "{again}");
    assert_eq!(again["plan"]["skip"]["files"], 8, "{again}");

    // A fresh clone: `up` fills the empty database and the empty media volume from the
    // same backup.
    s.compose(&["down", "--volumes"]);
    remove_volume(&local_volume);
    let up = run(s.countable().arg("up")).ok();
    assert!(
        up.stderr
            .contains("the media volume is empty: filling it from prod's backup"),
        "{}",
        up.stderr
    );
    assert_eq!(volume_sums(&local_volume), prod_sums);
    // The app user (web's media root) owns the files, so uploads still work.
    let owners = in_volume(&local_volume, "stat -c '%u' /m /m/photos /m/empty.txt").stdout;
    let owners: Vec<&str> = owners.lines().collect();
    assert!(
        owners[0] != "0" && owners.iter().all(|o| *o == owners[0]),
        "{owners:?}"
    );
    // With web's image built, a volume pull-media makes gets web's owner as well.
    let app_user = owners[0].to_string();
    s.compose(&["down"]);
    remove_volume(&local_volume);
    assert_eq!(pull(&s, &["--from-backup"])["copied"]["files"], 8);
    let owners = in_volume(&local_volume, "stat -c '%u' /m /m/photos /m/empty.txt").stdout;
    assert!(owners.lines().all(|o| o == app_user), "{owners}");
    s.compose(&["down", "--volumes"]);
}
