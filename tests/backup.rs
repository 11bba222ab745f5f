//! backup → manifest → verify-backup round trips on the real engine, against a directory
//! store and a real S3-protocol server (moto); damage detection; retention. The
//! "production" database is the same project's db service under another compose
//! project (`<project>-prod`), reached through `docker_host` like a remote engine.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;

use common::*;

/// A project whose `prod` environment is the db service under compose project
/// `<name>-prod`, seeded; returns the project and the prod compose project.
fn with_prod(prefix: &str, rows: u32) -> (Scratch, Prod) {
    let s = Scratch::new(prefix);
    let prod = s.start_prod();
    // Seed through the same helper, aimed at the prod project.
    ProdView(&s, prod.to_string()).seed(rows);
    (s, prod)
}

/// The prod db, for seeding and checks.
struct ProdView<'a>(&'a Scratch, String);

impl ProdView<'_> {
    fn psql(&self, sql: &str) -> String {
        let r = run_with_stdin(
            Command::new("docker")
                .args([
                    "compose",
                    "-p",
                    &self.1,
                    "exec",
                    "-T",
                    "db",
                    "sh",
                    "-c",
                    "psql -X -qAt -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"",
                ])
                .current_dir(self.0.root()),
            sql.as_bytes(),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout.trim().to_string()
    }

    fn seed(&self, rows: u32) {
        self.psql(&format!(
            "CREATE SCHEMA shop; CREATE TABLE shop.items (id serial PRIMARY KEY, name text); INSERT INTO shop.items (name) SELECT 'item ' || g FROM generate_series(1, {rows}) g; CREATE TABLE public.notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 50) g; CREATE VIEW shop.v AS SELECT * FROM shop.items;"
        ));
    }
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

#[test]
fn backup_manifest_verify_round_trip_in_a_directory() {
    let (s, prod) = with_prod("bkdir", 1200);
    s.set_environments("environments:\n  prod:\n    backups: backups/prod/\n    docker_host: unix:///var/run/docker.sock\n");
    let r = run(s.countable().args(["backup", "prod", "--json"])).ok();
    let manifest = json(&r);
    let key = manifest["key"].as_str().unwrap().to_string();
    assert!(
        key.ends_with(".backup") && key.len() == "2026-11-30T021500Z.backup".len(),
        "{key}"
    );
    let stored = s.root().join("backups/prod").join(&key);
    assert_eq!(
        manifest["sha256"],
        sha256_of(&stored),
        "the manifest's checksum is the stored file's"
    );
    assert_eq!(manifest["size"], std::fs::metadata(&stored).unwrap().len());
    assert_eq!(manifest["format"], "custom");
    assert_eq!(manifest["census"]["tables"], 2);
    assert_eq!(manifest["census"]["rows"]["shop.items"], 1200);
    assert_eq!(manifest["census"]["rows"]["public.notes"], 50);
    assert!(s
        .root()
        .join("backups/prod")
        .join(format!("{key}.manifest.json"))
        .is_file());
    // The drill restores it in a disposable container and finds every count.
    let v = run(s.countable().args(["verify-backup", "prod", "--json"])).ok();
    let results = json(&v);
    assert_eq!(results[0]["outcome"], "passed", "{}", v.stdout);
    assert_eq!(results[0]["image"], DB_IMAGE);
    assert!(s
        .root()
        .join("backups/prod")
        .join(format!("{key}.verified.json"))
        .is_file());
    let listed = run(s.countable().args(["backups", "prod"])).ok();
    assert!(listed.stdout.contains("passed"), "{}", listed.stdout);
    // No disposable container is left behind.
    let prod_db = run(Command::new("docker")
        .args(["compose", "-p", &prod, "ps", "-q", "--no-trunc", "db"])
        .current_dir(s.root()));
    let label = format!("label=countable.drill.for={}", prod_db.stdout.trim());
    let left = run(Command::new("docker").args(["ps", "-aq", "--filter", &label]));
    assert_eq!(left.stdout.trim(), "", "drill containers left");
    // A backup compressed with lrzip, for teams that keep .lrz; verified too.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = run(s
        .countable()
        .args(["backup", "prod", "--compress", "lrzip", "--json"]))
    .ok();
    let lrz = json(&r)["key"].as_str().unwrap().to_string();
    assert!(lrz.ends_with(".backup.lrz"));
    assert_eq!(
        &std::fs::read(s.root().join("backups/prod").join(&lrz)).unwrap()[..4],
        b"LRZI"
    );
    run(s
        .countable()
        .args(["verify-backup", "prod", "--backup", &lrz]))
    .ok();
    // And pull-db takes the same backups (the local db is another one).
    s.set_environments("data_from: prod\nenvironments:\n  prod:\n    backups: backups/prod/\n");
    run(s.countable().args(["pull-db", "--backup", &key])).ok();
    assert_eq!(s.sql("SELECT count(*) FROM shop.items"), "1200");
}

#[test]
fn verify_catches_damage_and_reports_backups_without_manifest() {
    let (s, prod) = with_prod("bkbad", 800);
    s.set_environments("environments:\n  prod:\n    backups: backups/\n");
    let store = s.root().join("backups");
    let key = json(&run(s.countable().args(["backup", "prod", "--json"])).ok())["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = store.join(&key);
    let good = std::fs::read(&path).unwrap();

    // One byte flipped in the stored object.
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    let r = run(s.countable().args(["verify-backup", "prod", "--json"])).fails();
    let v = json(&r);
    assert_eq!(v[0]["outcome"], "failed");
    assert!(
        v[0]["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("checksum"),
        "{}",
        r.stdout
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join(format!("{key}.verified.json"))).unwrap())
            .unwrap();
    assert_eq!(
        record["outcome"], "failed",
        "the failure is recorded beside the backup"
    );

    // Truncated.
    std::fs::write(&path, &good[..good.len() * 2 / 3]).unwrap();
    let r = run(s.countable().args(["verify-backup", "prod", "--json"])).fails();
    let problems = json(&r)[0]["problems"].to_string();
    assert!(
        problems.contains("checksum") && problems.contains("restore failed"),
        "{problems}"
    );

    // A manifest whose counts disagree: the table is named.
    std::fs::write(&path, &good).unwrap();
    let mpath = store.join(format!("{key}.manifest.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    manifest["census"]["rows"]["shop.items"] = serde_json::json!(801);
    std::fs::write(&mpath, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let r = run(s.countable().args(["verify-backup", "prod"])).fails();
    assert!(
        r.stderr
            .contains("table shop.items: expected 801 rows, restored 800"),
        "{}",
        r.stderr
    );

    // A hand-made .tar.lrz without manifest (the team's old way) is restored, with a warning.
    let dump = store.join("db.sql");
    let out = Command::new("docker")
        .args([
            "compose",
            "-p",
            &prod,
            "exec",
            "-T",
            "db",
            "sh",
            "-c",
            "pg_dump -U \"$POSTGRES_USER\" \"$POSTGRES_DB\"",
        ])
        .current_dir(s.root())
        .stdout(std::fs::File::create(&dump).unwrap())
        .status()
        .unwrap();
    assert!(out.success());
    sh(
        &store,
        "tar cf - db.sql | lrzip -q -o 2027-01-01T000000Z.tar.lrz && rm db.sql",
    );
    let r = run(s.countable().args([
        "verify-backup",
        "prod",
        "--backup",
        "2027-01-01T000000Z.tar.lrz",
        "--json",
    ]))
    .ok();
    assert!(r.stderr.contains("has no manifest"), "{}", r.stderr);
    assert_eq!(json(&r)[0]["outcome"], "restored_without_manifest");
}

#[test]
fn backup_to_s3_is_uploaded_checked_and_verified() {
    let (s, _prod) = with_prod("bks3", 500);
    let moto = Moto::start(false);
    moto.aws(&["s3", "mb", "s3://countable"]).ok();
    s.set_environments(&format!(
        "environments:\n  prod:\n    backups: s3://countable/backups/shop\n    endpoint_url: {}\n",
        moto.url()
    ));
    let r = run(s
        .countable()
        .args(["backup", "prod", "--compress", "zstd", "--json"])
        .envs(aws_env()))
    .ok();
    let manifest = json(&r);
    let key = manifest["key"].as_str().unwrap();
    let fetched = tempfile::tempdir().unwrap();
    let local = fetched.path().join("b");
    moto.aws(&[
        "s3",
        "cp",
        &format!("s3://countable/backups/shop/{key}"),
        local.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(manifest["sha256"], sha256_of(&local));
    let listing = moto.aws(&["s3", "ls", "s3://countable/backups/shop/"]).ok();
    assert!(
        listing.stdout.contains(&format!("{key}.manifest.json")),
        "{}",
        listing.stdout
    );
    let v = run(s
        .countable()
        .args(["verify-backup", "prod", "--json"])
        .envs(aws_env()))
    .ok();
    assert_eq!(json(&v)[0]["outcome"], "passed");
    // Kinds of engine countable does not speak are named, with the way around.
    s.set_environments("environments:\n  prod:\n    backups: backups/\n    docker_host: npipe:////./pipe/docker_engine\n");
    let r = run(s.countable().args(["backup", "prod"])).fails();
    assert!(
        r.stderr.contains("speaks unix://, tcp:// and ssh://"),
        "{}",
        r.stderr
    );
}

#[test]
fn prune_keeps_the_right_set_and_only_deletes_with_apply() {
    let s = Scratch::new("prune");
    let store = s.root().join("backups");
    std::fs::create_dir(&store).unwrap();
    // Every day at 02:00 from 2026-09-01 to 2026-11-30, with manifests.
    let start = time::macros::date!(2026 - 09 - 01);
    let mut keys = Vec::new();
    for d in 0..91 {
        let day = start + time::Duration::days(d);
        let key = format!("{}T020000Z.backup", day);
        std::fs::write(store.join(&key), b"x").unwrap();
        std::fs::write(store.join(format!("{key}.manifest.json")), b"{}").unwrap();
        keys.push(key);
    }
    s.set_environments("data_from: prod\nenvironments:\n  prod:\n    backups: backups/\n");
    let r = run(s.countable().args([
        "backups",
        "prune",
        "--keep-daily",
        "3",
        "--keep-monthly",
        "3",
    ]))
    .ok();
    let kept: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("keep   "))
        .collect();
    assert_eq!(
        kept,
        [
            "2026-11-30T020000Z.backup",
            "2026-11-29T020000Z.backup",
            "2026-11-28T020000Z.backup",
            "2026-10-31T020000Z.backup",
            "2026-09-30T020000Z.backup"
        ]
    );
    assert_eq!(
        std::fs::read_dir(&store).unwrap().count(),
        182,
        "a dry run deletes nothing"
    );
    run(s.countable().args([
        "backups",
        "prune",
        "prod",
        "--keep-daily",
        "3",
        "--keep-monthly",
        "3",
        "--apply",
    ]))
    .ok();
    let mut left: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 10, "5 backups and their manifests: {left:?}");
    let r = run(s.countable().args(["backups", "prune"])).fails();
    assert!(r.stderr.contains("--keep-last"), "{}", r.stderr);
}

/// An sshd on a loopback port, with a key of its own, and an `ssh` on PATH that uses a
/// config of its own (the machine's ~/.ssh is left alone). Root is needed for sshd.
struct Sshd {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Sshd {
    const HOST: &'static str = "countable-test-sshd";

    fn start() -> Self {
        let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
        assert_eq!(
            uid.trim(),
            "0",
            "this test runs sshd and needs root (CI runs as root)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sh(d, "ssh-keygen -q -t ed25519 -N '' -f host && ssh-keygen -q -t ed25519 -N '' -f client && cp client.pub authorized_keys && chmod 600 authorized_keys && mkdir -p /run/sshd bin");
        let port = free_port();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string()])
            .args([
                "-o",
                "ListenAddress=127.0.0.1",
                "-o",
                "StrictModes=no",
                "-o",
                "UsePAM=no",
            ])
            .args([
                "-o",
                "PermitRootLogin=prohibit-password",
                "-o",
                "PasswordAuthentication=no",
            ])
            .arg("-o")
            .arg(format!("HostKey={}", d.join("host").display()))
            .arg("-o")
            .arg(format!(
                "AuthorizedKeysFile={}",
                d.join("authorized_keys").display()
            ))
            .arg("-o")
            .arg(format!("PidFile={}", d.join("pid").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sshd (openssh-server, tests/setup installs it)");
        std::fs::write(
            d.join("config"),
            format!(
                "Host {}\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                Self::HOST,
                d.join("client").display()
            ),
        )
        .unwrap();
        let ssh = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v ssh"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::fs::write(
            d.join("bin/ssh"),
            format!(
                "#!/bin/sh\nexec {} -F {} \"$@\"\n",
                ssh.trim(),
                d.join("config").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("bin/ssh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self { child, dir }
    }

    /// PATH with the configured `ssh` first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn backup_of_an_environment_reached_over_ssh() {
    let (s, prod) = with_prod("bkssh", 300);
    let sshd = Sshd::start();
    s.set_environments(&format!(
        "environments:\n  prod:\n    backups: backups/\n    docker_host: ssh://root@{}\n",
        Sshd::HOST
    ));
    let r = run(s
        .countable()
        .args(["backup", "prod", "--json"])
        .env("PATH", sshd.path()))
    .ok();
    let manifest = json(&r);
    assert_eq!(manifest["census"]["rows"]["shop.items"], 300);
    let key = manifest["key"].as_str().unwrap();
    assert_eq!(
        manifest["sha256"],
        sha256_of(&s.root().join("backups").join(key))
    );
    // A port in the URL is refused with the way around (the client library drops it).
    s.set_environments("environments:\n  prod:\n    backups: backups/\n    docker_host: ssh://root@127.0.0.1:2222\n");
    let r = run(s.countable().args(["backup", "prod"])).fails();
    assert!(r.stderr.contains("~/.ssh/config"), "{}", r.stderr);
    drop(sshd);
    drop(prod);
}

/// A psql session in the prod db that commits a row into `shop.items` about every
/// millisecond until it is dropped (its backend is then terminated).
struct Writer<'a> {
    view: ProdView<'a>,
    child: std::process::Child,
}

impl<'a> Writer<'a> {
    const APP: &'static str = "countable-test-writer";

    fn start(s: &'a Scratch, prod: &str) -> Self {
        use std::io::Write;
        let mut child = Command::new("docker")
            .args(["compose", "-p", prod, "exec", "-T", "-e"])
            .arg(format!("PGAPPNAME={}", Self::APP))
            .args([
                "db",
                "sh",
                "-c",
                "psql -X -q -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"",
            ])
            .current_dir(s.root())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"DO $$ BEGIN LOOP INSERT INTO shop.items (name) VALUES ('live'); COMMIT; PERFORM pg_sleep(0.001); END LOOP; END $$;\n")
            .unwrap();
        drop(stdin);
        Self {
            view: ProdView(s, prod.to_string()),
            child,
        }
    }

    fn rows(&self) -> u64 {
        self.view
            .psql("SELECT count(*) FROM shop.items")
            .parse()
            .unwrap()
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.view.psql(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{}'",
                Self::APP
            ))
        }));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn backup_counts_come_from_the_dumps_own_snapshot_while_rows_are_written() {
    let (s, prod) = with_prod("bklive", 2000);
    s.set_environments("environments:\n  prod:\n    backups: backups/\n");
    let writer = Writer::start(&s, &prod);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while writer.rows() < 2100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer does not write"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let before = writer.rows();
    let manifest = json(&run(s.countable().args(["backup", "prod", "--json"])).ok());
    let after = writer.rows();
    let counted = manifest["census"]["rows"]["shop.items"].as_u64().unwrap();
    assert!(
        before < counted && counted < after,
        "rows were written before and after the snapshot: {before} < {counted} < {after}"
    );
    // The drill restores the dump and finds exactly the manifest's counts.
    let v = run(s.countable().args(["verify-backup", "prod", "--json"]));
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    assert_eq!(json(&v)[0]["outcome"], "passed", "{}", v.stdout);
    drop(writer);
    drop(prod);
}

/// The entries of `dir`, as names.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn lrzip_temporary_file_is_private_and_gone_after_ctrl_c() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (s, prod) = with_prod("bklrz", 10);
    // Enough data that pg_dump and lrzip take a few seconds.
    ProdView(&s, prod.to_string()).psql("CREATE TABLE public.bulk AS SELECT g, md5(g::text) || md5((g * 7)::text) AS t FROM generate_series(1, 400000) g");
    s.set_environments("environments:\n  prod:\n    backups: backups/\n");
    let tmp = tempfile::tempdir().unwrap();
    // In a process group of its own, so a signal to the group is what Ctrl-C in a
    // terminal does: countable and its lrzip both get SIGINT.
    let mut child = s
        .countable()
        .args(["backup", "prod", "--compress", "lrzip"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // The first file under TMPDIR (in a directory of its own, or not).
    let file = loop {
        let found = entries(tmp.path()).into_iter().find_map(|name| {
            let path = tmp.path().join(name);
            if path.is_file() {
                return Some(path);
            }
            entries(&path).first().map(|f| path.join(f))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before its temporary file was seen"
        );
        assert!(std::time::Instant::now() < deadline, "no temporary file");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let dir = file.parent().unwrap().to_path_buf();
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    let file_mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    let pgid = child.id().to_string();
    run(Command::new("kill").args(["-INT", "--", &format!("-{pgid}")]));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        out.status.code().is_some(),
        "killed by the signal: {stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(
        entries(tmp.path()),
        Vec::<String>::new(),
        "TMPDIR is left empty"
    );
    assert_eq!(
        entries(&s.root().join("backups")),
        Vec::<String>::new(),
        "nothing is stored"
    );
    assert_ne!(dir, tmp.path(), "the file is in a directory of its own");
    assert_eq!(
        (dir_mode, file_mode),
        (0o700, 0o600),
        "{} in {}",
        file.display(),
        dir.display()
    );
    drop(prod);
}

/// A unix socket forwarding to the machine's Docker engine that records what clients
/// send: an engine "elsewhere" whose API calls a test can read.
struct EngineProxy {
    path: std::path::PathBuf,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl EngineProxy {
    fn start() -> Self {
        use std::io::{Read, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let log: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = Default::default();
        let shared = log.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let log = shared.clone();
                std::thread::spawn(move || {
                    let Ok(server) = UnixStream::connect("/var/run/docker.sock") else {
                        return;
                    };
                    let (mut from_client, mut to_server) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let up = std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match from_client.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    let mut l = log.lock().unwrap();
                                    if l.len() < 64 << 20 {
                                        l.extend_from_slice(&buf[..n]);
                                    }
                                    drop(l);
                                    if to_server.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to_server.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut from_server, mut to_client) = (server, client);
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        Self {
            path,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Everything clients sent so far, as text.
    fn sent(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

#[test]
fn the_drill_runs_on_the_drill_engine_never_on_the_environments() {
    let (s, prod) = with_prod("bkwhere", 300);
    let env_engine = EngineProxy::start();
    let drill_engine = EngineProxy::start();
    let envs = format!(
        "environments:\n  prod:\n    backups: backups/\n    docker_host: {}\n",
        env_engine.url()
    );
    s.set_environments(&envs);
    run(s.countable().args(["backup", "prod"])).ok();
    assert!(env_engine.sent().contains("/exec"), "the backup used it");
    // By default the drill runs on the engine countable runs with (the local socket).
    let before = env_engine.sent().len();
    let v = run(s.countable().args(["verify-backup", "prod", "--json"])).ok();
    assert_eq!(json(&v)[0]["outcome"], "passed", "{}", v.stdout);
    let asked = env_engine.sent()[before..].to_string();
    assert!(
        asked.contains("/exec"),
        "the environment's engine was asked about its db"
    );
    assert!(
        !asked.contains("/containers/create"),
        "no container was created on the environment's engine"
    );
    // With drill_host, there.
    s.set_environments(&format!("{envs}    drill_host: {}\n", drill_engine.url()));
    let before = env_engine.sent().len();
    let v = run(s.countable().args(["verify-backup", "prod", "--json"])).ok();
    assert_eq!(json(&v)[0]["outcome"], "passed", "{}", v.stdout);
    assert!(
        drill_engine
            .sent()
            .contains("/containers/create?name=countable-drill-"),
        "the drill container was created on drill_host"
    );
    assert!(!env_engine.sent()[before..].contains("/containers/create"));
    drop(prod);
}

/// The full ID of the prod db container.
fn prod_db_id(s: &Scratch, prod: &str) -> String {
    run(Command::new("docker")
        .args(["compose", "-p", prod, "ps", "-q", "--no-trunc", "db"])
        .current_dir(s.root()))
    .stdout
    .trim()
    .to_string()
}

/// Containers (running or not) labelled as drills of `db`.
fn drill_containers(db: &str) -> String {
    run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        &format!("label=countable.drill.for={db}"),
    ]))
    .stdout
    .trim()
    .to_string()
}

#[test]
fn ctrl_c_during_the_drill_leaves_no_container() {
    use std::os::unix::process::CommandExt;
    let (s, prod) = with_prod("bkdrillint", 200);
    s.set_environments("environments:\n  prod:\n    backups: backups/\n");
    run(s.countable().args(["backup", "prod"])).ok();
    let db = prod_db_id(&s, &prod);
    let child = s
        .countable()
        .args(["verify-backup", "prod"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while drill_containers(&db).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no drill container appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run(Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(drill_containers(&db), "", "the drill container is removed");
    assert!(
        !s.root().join("backups").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".verified.json")),
        "an interrupted drill records no verdict"
    );
    drop(prod);
}

/// A db container made by hand with compose's labels, from an image whose own
/// entrypoint is missing (the container is started with the working one): a drill of
/// that image is created but cannot start. Removed (with the image) when dropped.
struct BrokenImageDb {
    container: String,
    image: String,
}

impl BrokenImageDb {
    fn start(project: &str) -> Self {
        let image = format!("countable-test/postgres-noentry-{}:15", std::process::id());
        let built = run_with_stdin(
            Command::new("docker").args(["build", "-q", "-t", &image, "-"]),
            format!("FROM {DB_IMAGE}\nENTRYPOINT [\"/countable-test-missing-entrypoint\"]\n")
                .as_bytes(),
        );
        assert_eq!(built.code, 0, "{}", built.stderr);
        let container = format!("{project}-db-by-hand");
        let me = Self {
            container: container.clone(),
            image: image.clone(),
        };
        run(Command::new("docker")
            .args(["run", "-d", "--name", &container])
            .args(["--label", &format!("com.docker.compose.project={project}")])
            .args(["--label", "com.docker.compose.service=db"])
            .args([
                "-e",
                "POSTGRES_USER=app",
                "-e",
                "POSTGRES_PASSWORD=app",
                "-e",
                "POSTGRES_DB=app",
            ])
            .args(["--entrypoint", "docker-entrypoint.sh", &image, "postgres"]))
        .ok();
        for _ in 0..300 {
            let r = run(Command::new("docker").args([
                "exec",
                &container,
                "pg_isready",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "app",
                "-d",
                "app",
            ]));
            if r.code == 0 {
                return me;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("the hand-made db did not start");
    }

    fn id(&self) -> String {
        run(Command::new("docker").args(["inspect", "-f", "{{.Id}}", &self.container]))
            .stdout
            .trim()
            .to_string()
    }
}

impl Drop for BrokenImageDb {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.container])
            .output();
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

#[test]
fn a_drill_container_that_fails_to_start_is_removed() {
    let s = Scratch::new("bkstart");
    let db = BrokenImageDb::start(&format!("{}-prod", s.name));
    let r = run_with_stdin(
        Command::new("docker").args([
            "exec",
            "-i",
            &db.container,
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "app",
            "-d",
            "app",
        ]),
        b"CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    s.set_environments("environments:\n  prod:\n    backups: backups/\n");
    run(s.countable().args(["backup", "prod"])).ok();
    let r = run(s.countable().args(["verify-backup", "prod"]));
    assert_eq!(
        drill_containers(&db.id()),
        "",
        "the container that did not start is removed"
    );
    let r = r.fails();
    assert!(r.stderr.contains("did not start"), "{}", r.stderr);
}

/// A second Docker engine on this machine: a `dockerd` in a network namespace of its
/// own, with its own data root and no images, reached at a unix socket. Stopped and
/// removed when dropped. Root is needed (CI runs as root).
struct SecondEngine {
    dir: tempfile::TempDir,
    netns: String,
    child: std::process::Child,
}

impl SecondEngine {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let netns = format!("countable-test-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &netns])).ok();
        let ns = format!("--net=/var/run/netns/{netns}");
        run(Command::new("nsenter").args([&ns, "ip", "link", "set", "lo", "up"])).ok();
        std::fs::write(d.join("empty.json"), "{}").unwrap();
        // nsenter, not `ip netns exec` (which remounts /sys, and dockerd then dies).
        let child = Command::new("nsenter")
            .args([&ns, "dockerd", "--config-file"])
            .arg(d.join("empty.json"))
            .args(["--storage-driver", "fuse-overlayfs", "--data-root"])
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .args(["--bip", "172.31.97.1/24"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("log")).unwrap())
            .spawn()
            .expect("dockerd");
        let me = Self { dir, netns, child };
        for _ in 0..120 {
            if me.docker(&["info"]).code == 0 {
                return me;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!(
            "the second dockerd did not start: {}",
            std::fs::read_to_string(me.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn docker(&self, args: &[&str]) -> Run {
        run(Command::new("docker").arg("-H").arg(self.url()).args(args))
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        // dockerd's own pid (nsenter execs it, so it is the child's).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn a_drill_engine_without_the_image_gets_it_from_the_environments_engine() {
    let (s, prod) = with_prod("bkship", 150);
    let second = SecondEngine::start();
    let db_image_id =
        run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", DB_IMAGE]))
            .ok()
            .stdout
            .trim()
            .to_string();
    assert_ne!(second.docker(&["image", "inspect", &db_image_id]).code, 0);
    s.set_environments(&format!(
        "environments:\n  prod:\n    backups: backups/\n    drill_host: {}\n",
        second.url()
    ));
    run(s.countable().args(["backup", "prod"])).ok();
    let v = run(s.countable().args(["verify-backup", "prod", "--json"])).ok();
    assert_eq!(json(&v)[0]["outcome"], "passed", "{}", v.stdout);
    assert_eq!(json(&v)[0]["image"], DB_IMAGE);
    assert!(v.stderr.contains("copied"), "{}", v.stderr);
    // The very image, by ID, untagged there; the drill ran there and left nothing.
    let there = second
        .docker(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{len .RepoTags}}",
            &db_image_id,
        ])
        .ok();
    assert_eq!(there.stdout.trim(), format!("{db_image_id} 0"));
    let events = second.docker(&["ps", "-aq"]).ok();
    assert_eq!(
        events.stdout.trim(),
        "",
        "no container left on the drill engine"
    );
    let db = prod_db_id(&s, &prod);
    assert_eq!(
        drill_containers(&db),
        "",
        "none on the environment's engine"
    );
    // A second drill finds the image there and copies nothing.
    let v = run(s.countable().args(["verify-backup", "prod"])).ok();
    assert!(!v.stderr.contains("copied"), "{}", v.stderr);
    drop(second);
    drop(prod);
}
