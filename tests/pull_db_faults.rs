//! Every fault pull-db/import-db must survive: a clear error with a hint, exit 1, and
//! the current database unchanged (row checksums before and after), with no partial
//! database, temp file or relaxed server setting left behind.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Fixture {
    s: Scratch,
    fx: tempfile::TempDir,
    before: String,
    dbs: Vec<String>,
    settings: String,
}

/// Every server setting a restore touches, and the file `ALTER SYSTEM` writes.
/// Poll `done` every 100 ms; fail with `never` after 60 s.
fn wait_until(never: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(60), "{never}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server_settings(s: &Scratch) -> String {
    let shown = s.sql_in(
        "postgres",
        "SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'autovacuum', 'max_wal_size', 'maintenance_work_mem')",
    );
    let auto = s.compose(&[
        "exec",
        "-T",
        "db",
        "sh",
        "-c",
        "cat \"$PGDATA/postgresql.auto.conf\"",
    ]);
    format!("{shown}\n{}", auto.stdout)
}

impl Fixture {
    /// A db at PostgreSQL's default `wal_level=replica` (a team's own compose file, a
    /// server of its own): there every restore relaxes the server's durability, and
    /// these tests prove it is always put back.
    fn new(prefix: &str, rows: u32) -> Self {
        Self::build(prefix, rows, false)
    }

    /// A db as `countable new` writes it, at `wal_level=minimal`: a restore in one
    /// transaction relaxes nothing there.
    fn minimal(prefix: &str, rows: u32) -> Self {
        Self::build(prefix, rows, true)
    }

    fn build(prefix: &str, rows: u32, minimal: bool) -> Self {
        let s = Scratch::new(prefix);
        if !minimal {
            let file = s.root().join("compose.override.yaml");
            let text = std::fs::read_to_string(&file).unwrap();
            let replica = text.replace(
                r#"command: ["postgres", "-c", "wal_level=minimal", "-c", "max_wal_senders=0"]"#,
                r#"command: ["postgres"]"#,
            );
            assert_ne!(replica, text, "the dev override sets wal_level no more?");
            std::fs::write(&file, replica).unwrap();
        }
        s.db_up();
        let wal = s.sql_in("postgres", "SHOW wal_level");
        assert_eq!(wal == "minimal", minimal, "wal_level={wal}");
        s.seed("seed", rows);
        let fx = tempfile::tempdir().unwrap();
        s.dump("seed", &[], &fx.path().join("plain.sql"));
        s.dump("seed", &["-Fc"], &fx.path().join("custom.backup"));
        // The current local database: the seed plus local work of its own.
        run(s
            .countable()
            .arg("import-db")
            .arg(fx.path().join("custom.backup")))
        .ok();
        s.sql_in(
            &s.name,
            "CREATE TABLE local_work (v text); INSERT INTO local_work VALUES ('do not lose me')",
        );
        // A setting of the user's own, which every restore must put back as it was.
        s.sql_in("postgres", "ALTER SYSTEM SET max_wal_size = '2GB'");
        s.sql_in("postgres", "SELECT pg_reload_conf()");
        let before = s.fingerprint(&s.name);
        let dbs = s.databases();
        let settings = server_settings(&s);
        assert!(settings.contains("max_wal_size = '2GB'"), "{settings}");
        Self {
            s,
            fx,
            before,
            dbs,
            settings,
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.fx.path().join(name)
    }

    /// The current database and the server are as before.
    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            self.s.fingerprint(&self.s.name),
            self.before,
            "{what}: the current database changed"
        );
        assert_eq!(
            self.s.databases(),
            self.dbs,
            "{what}: databases were left behind or lost"
        );
        assert_eq!(
            server_settings(&self.s),
            self.settings,
            "{what}: server settings not put back"
        );
        let left = self.s.compose(&[
            "exec",
            "-T",
            "db",
            "sh",
            "-c",
            "ls /tmp \"$PGDATA\" | grep countable || true",
        ]);
        assert_eq!(
            left.stdout.trim(),
            "",
            "{what}: temp files left in the container"
        );
    }

    /// `import-db -` fed the first `len` bytes of `dump`, once its new database exists;
    /// stdin stays open, so the restore waits for more.
    fn import_part_of(
        &self,
        dump: &[u8],
        len: usize,
    ) -> (std::process::Child, std::process::ChildStdin) {
        let (child, stdin) = self.start_import(&[], dump, len);
        let new = format!("{}__countable_new", self.s.name);
        wait_until("the restore never started", || {
            self.s.databases().contains(&new)
        });
        (child, stdin)
    }

    /// `import-db - EXTRA…` fed the first `len` bytes of `dump`, stdin kept open.
    fn start_import(
        &self,
        extra: &[&str],
        dump: &[u8],
        len: usize,
    ) -> (std::process::Child, std::process::ChildStdin) {
        let mut child = self
            .s
            .countable()
            .args(["import-db", "-"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&dump[..len]).unwrap();
        stdin.flush().unwrap();
        (child, stdin)
    }

    fn import_fails(&self, file: &str, want: &str) -> Run {
        let r = run(self.s.countable().arg("import-db").arg(self.path(file))).fails();
        assert!(
            r.stderr.contains(want),
            "{file}: expected `{want}` in:\n{}",
            r.stderr
        );
        self.assert_untouched(file);
        r
    }
}

fn cut(from: &Path, to: &Path, keep: f64) {
    let bytes = std::fs::read(from).unwrap();
    std::fs::write(to, &bytes[..(bytes.len() as f64 * keep) as usize]).unwrap();
}

#[test]
fn bad_backups_never_touch_the_current_database() {
    let f = Fixture::new("badbk", 2000);
    sh(
        f.fx.path(),
        "gzip -k plain.sql && lrzip -q -o plain.sql.lrz plain.sql",
    );
    cut(&f.path("plain.sql.gz"), &f.path("cut.sql.gz"), 0.5);
    f.import_fails("cut.sql.gz", "damaged or cut off");
    cut(&f.path("custom.backup"), &f.path("cut.backup"), 0.6);
    f.import_fails("cut.backup", "pg_restore failed");
    cut(&f.path("plain.sql.lrz"), &f.path("cut.sql.lrz"), 0.5);
    f.import_fails("cut.sql.lrz", "damaged or cut off");
    // A plain dump cut at a line boundary: psql alone would exit 0.
    let plain = std::fs::read_to_string(f.path("plain.sql")).unwrap();
    let at = plain.find("COPY shop.items").unwrap();
    std::fs::write(f.path("cut.sql"), &plain[..at]).unwrap();
    f.import_fails("cut.sql", "the dump is truncated");
    std::fs::write(
        f.path("photo.png"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR not a dump at all",
    )
    .unwrap();
    f.import_fails("photo.png", "not a database dump");
    std::fs::write(f.path("empty.sql"), b"").unwrap();
    f.import_fails("empty.sql", "the backup is empty");
    // A custom archive in the format PostgreSQL 17's pg_dump writes (archive 1.16): the
    // stand-in's pg_restore 15 reads up to 1.14. (The header is what pg_restore checks.)
    let mut custom = std::fs::read(f.path("custom.backup")).unwrap();
    custom[5..8].copy_from_slice(&[1, 16, 0]);
    std::fs::write(f.path("pg17.backup"), &custom).unwrap();
    f.import_fails("pg17.backup", "newer than the local pg_restore 15");
    // A dump needing an extension the image lacks.
    std::fs::write(
        f.path("gis.sql"),
        plain.replacen(
            "CREATE SCHEMA audit;",
            "CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public;\nCREATE SCHEMA audit;",
            1,
        ),
    )
    .unwrap();
    f.import_fails(
        "gis.sql",
        "extension(s) the local database image does not have: postgis",
    );
    // A statement that fails half-way (a role that does not exist, say).
    std::fs::write(
        f.path("broken.sql"),
        plain.replacen(
            "CREATE SCHEMA audit;",
            "CREATE SCHEMA audit AUTHORIZATION nobody_here;",
            1,
        ),
    )
    .unwrap();
    f.import_fails("broken.sql", "psql failed while restoring");
    // pg_dumpall output switches databases with \connect: refused, not run.
    std::fs::write(
        f.path("all.sql"),
        format!("--\n-- PostgreSQL database cluster dump\n--\n\\connect template1\n{plain}"),
    )
    .unwrap();
    f.import_fails("all.sql", "psql command countable will not run");
    let r = run(f.s.countable().arg("import-db").arg(f.path("missing.sql"))).fails();
    assert!(r.stderr.contains("cannot open"), "{}", r.stderr);
}

#[test]
fn lrzip_missing_is_named_with_its_package() {
    let f = Fixture::new("nolrz", 50);
    sh(f.fx.path(), "lrzip -q -o plain.sql.lrz plain.sql");
    let bin = tempfile::tempdir().unwrap();
    for tool in ["docker", "sh"] {
        let path = String::from_utf8(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::os::unix::fs::symlink(path.trim(), bin.path().join(tool)).unwrap();
    }
    let r = run(f
        .s
        .countable()
        .arg("import-db")
        .arg(f.path("plain.sql.lrz"))
        .env("PATH", bin.path()))
    .fails();
    assert!(
        r.stderr.contains("the `lrzip` program is not installed"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("apt-get install lrzip"), "{}", r.stderr);
    f.assert_untouched("lrzip missing");
}

/// A TCP proxy to `upstream` that cuts every connection after `budget` response bytes.
fn cutting_proxy(upstream: u16, budget: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
            });
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let mut sent = 0;
                let mut buf = [0u8; 8192];
                while let Ok(n) = server.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let n = n.min(budget - sent);
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= budget {
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn s3_faults_never_touch_the_current_database() {
    let f = Fixture::new("s3bad", 3000);
    let moto = Moto::start(false);
    moto.aws(&["s3", "mb", "s3://countable"]).ok();
    moto.aws(&[
        "s3",
        "cp",
        f.path("plain.sql").to_str().unwrap(),
        "s3://countable/backups/shop/2026-11-30T000000Z.sql",
    ])
    .ok();
    let size = std::fs::metadata(f.path("plain.sql")).unwrap().len();
    assert!(
        size > 300_000,
        "the fixture must be bigger than the cut ({size} bytes)"
    );
    let proxy = cutting_proxy(moto.port, 150_000);
    let guarded = Moto::start(true);
    f.s.set_environments(&format!(
        "environments:\n  prod:\n    backups: s3://countable/backups/shop/\n    endpoint_url: {url}\n  nobucket:\n    backups: s3://no-such-bucket/backups/shop/\n    endpoint_url: {url}\n  cut:\n    backups: s3://countable/backups/shop/\n    endpoint_url: http://127.0.0.1:{proxy}\n  badcreds:\n    backups: s3://countable/backups/shop/\n    endpoint_url: {guarded}\n",
        url = moto.url(),
        guarded = guarded.url(),
    ));
    let pull = |args: &[&str]| run(f.s.countable().arg("pull-db").args(args).envs(aws_env()));
    let r = pull(&["prod", "--backup", "2026-01-01T000000Z.sql"]).fails();
    assert!(
        r.stderr.contains("no backup `2026-01-01T000000Z.sql`"),
        "{}",
        r.stderr
    );
    f.assert_untouched("missing key");
    let r = pull(&["nobucket"]).fails();
    assert!(
        r.stderr.contains("bucket `no-such-bucket` does not exist"),
        "{}",
        r.stderr
    );
    f.assert_untouched("missing bucket");
    let r = pull(&["badcreds"]).fails();
    assert!(
        r.stderr.contains("S3 refused the credentials"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("aws sts get-caller-identity"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("testing"),
        "no secret in the output: {}",
        r.stderr
    );
    f.assert_untouched("wrong credentials");
    let r = pull(&["cut"]).fails();
    assert!(
        r.stderr.contains("damaged or cut off") || r.stderr.contains("truncated"),
        "{}",
        r.stderr
    );
    f.assert_untouched("connection cut mid-download");
    // And the same store, uncut, works.
    pull(&["prod"]).ok();
    assert_eq!(f.s.fingerprint(&f.s.name), f.s.fingerprint("seed"));
}

#[test]
fn daemon_down_and_ctrl_c_never_touch_the_current_database() {
    let f = Fixture::new("sigint", 40000);
    let r = run(f
        .s
        .countable()
        .arg("import-db")
        .arg(f.path("plain.sql"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"))
    .fails();
    assert!(
        r.stderr.contains("cannot reach the Docker engine"),
        "{}",
        r.stderr
    );
    f.assert_untouched("daemon down");

    // Ctrl-C while the restore runs: feed part of the dump on stdin, wait until the new
    // database exists, interrupt.
    let plain = std::fs::read(f.path("plain.sql")).unwrap();
    assert!(
        plain.len() > 3 * 1024 * 1024,
        "fixture too small: {}",
        plain.len()
    );
    let (child, stdin) = f.import_part_of(&plain, plain.len() * 2 / 3);
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stderr.contains("your database is unchanged"), "{stderr}");
    f.assert_untouched("Ctrl-C");
}

#[test]
fn kill_9_mid_restore_is_put_right_by_the_next_command() {
    let f = Fixture::new("kill9", 40000);
    let plain = std::fs::read(f.path("plain.sql")).unwrap();
    let (mut child, stdin) = f.import_part_of(&plain, plain.len() * 2 / 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        f.s.sql_in("postgres", "SHOW fsync"),
        "off",
        "the restore runs non-durable (else this test proves nothing)"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert_ne!(
        server_settings(&f.s),
        f.settings,
        "kill -9 left settings relaxed"
    );
    // A second restore meanwhile would be refused only while the owner lives: it is dead.
    let status = run(f.s.countable().arg("status")).ok();
    assert!(
        status
            .stderr
            .contains("an earlier countable restore was interrupted"),
        "{}",
        status.stderr
    );
    assert!(status.stderr.contains("fsync"), "{}", status.stderr);
    f.assert_untouched("kill -9, then status");
    // And it is said once: the next command finds nothing to put right.
    let again = run(f.s.countable().arg("status")).ok();
    assert!(!again.stderr.contains("interrupted"), "{}", again.stderr);
}

#[test]
fn on_a_minimal_wal_server_a_restore_relaxes_nothing_and_a_kill_leaves_only_its_database() {
    let f = Fixture::minimal("minwal", 40000);
    let plain = std::fs::read(f.path("plain.sql")).unwrap();
    let (mut child, stdin) = f.import_part_of(&plain, plain.len() * 2 / 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server_settings(&f.s),
        f.settings,
        "mid-restore, the server's settings are the user's (its COMMIT syncs the data)"
    );
    assert_eq!(f.s.sql_in("postgres", "SHOW fsync"), "on");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let status = run(f.s.countable().arg("status")).ok();
    assert!(
        status
            .stderr
            .contains("an earlier countable restore was interrupted; dropped the half-made"),
        "{}",
        status.stderr
    );
    assert!(!status.stderr.contains("fsync"), "{}", status.stderr);
    f.assert_untouched("minimal wal: kill -9, then status");
    // A whole restore there: durable when it ends, with nothing to put back.
    let r = run(f.s.countable().arg("import-db").arg(f.path("plain.sql"))).ok();
    assert!(r.stderr.contains("flush 0.0 s"), "{}", r.stderr);
    assert_eq!(server_settings(&f.s), f.settings);
    assert_eq!(f.s.fingerprint(&f.s.name), f.s.fingerprint("seed"));
    // `pg_restore -j` too: each table's load, after its TRUNCATE, syncs at its commit.
    let custom = std::fs::read(f.path("custom.backup")).unwrap();
    let (child, mut stdin) = f.start_import(&["--jobs", "2"], &custom, custom.len() / 2);
    // The claim is made (its marker written) before the archive is read further.
    let claimed = "SELECT (pg_stat_file('countable-durability', true)).size IS NOT NULL";
    wait_until("the restore never claimed", || {
        f.s.sql_in("postgres", claimed) == "t"
    });
    assert_eq!(
        server_settings(&f.s),
        f.settings,
        "mid-restore with --jobs 2"
    );
    // The claim itself says it relaxed nothing (its marker precedes any ALTER SYSTEM).
    let marker =
        f.s.sql_in("postgres", "SELECT pg_read_file('countable-durability')");
    assert!(marker.contains("\"relaxed\": false"), "{marker}");
    stdin.write_all(&custom[custom.len() / 2..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("flush 0.0 s"), "{err}");
    assert_eq!(server_settings(&f.s), f.settings);
    assert_eq!(f.s.fingerprint(&f.s.name), f.s.fingerprint("seed"));
}

/// A dump that creates more relations than the server's lock table holds cannot be
/// restored in one transaction ("out of shared memory" part-way): a custom archive is
/// restored with a commit per object instead, and a plain dump fails with what to do.
#[test]
fn a_dump_larger_than_the_lock_table_restores_per_object_or_says_what_to_do() {
    let mut f = Fixture::minimal("locks", 2000);
    f.s.sql_in("postgres", "CREATE DATABASE many");
    let script: String = (1..=300)
        .map(|i| format!("CREATE TABLE t{i} (id bigserial PRIMARY KEY, name varchar(100), body text);\nINSERT INTO t{i} (name, body) SELECT 'n' || g, repeat('b', {i}) FROM generate_series(1, {i}) g;\n"))
        .collect();
    let made = run_with_stdin(
        &mut f.s.db_command(&[
            "sh",
            "-c",
            "psql -X -q -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d many",
        ]),
        script.as_bytes(),
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    f.s.dump("many", &[], &f.path("many.sql"));
    f.s.dump("many", &["-Fc"], &f.path("many.backup"));
    f.s.dump("many", &["-Ft"], &f.path("many.tar"));
    // Then the server gets a small lock table: 10 locks × (20 connections, 3
    // autovacuum workers and their launcher, 8 worker processes), 320 slots. The dump
    // takes 5 locks per table (the table, its TOAST table and index, a sequence, a
    // key): 1,500 in one transaction.
    let file = f.s.root().join("compose.override.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let small = text.replace(
        r#""max_wal_senders=0"]"#,
        r#""max_wal_senders=0", "-c", "max_locks_per_transaction=10", "-c", "max_connections=20"]"#,
    );
    assert_ne!(small, text);
    std::fs::write(&file, small).unwrap();
    f.s.db_up();
    assert_eq!(
        f.s.sql_in("postgres", "SHOW max_locks_per_transaction"),
        "10"
    );
    f.dbs = f.s.databases();
    // Plain: streamed, so its size is known only when it fails; nothing is lost.
    let r = f.import_fails("many.sql", "max_locks_per_transaction=1024");
    assert!(r.stderr.contains("ran out of lock slots"), "{}", r.stderr);
    // Tar, then custom: the TOC says so up front; restored whole, a commit per object.
    for archive in ["many.tar", "many.backup"] {
        let r = run(f.s.countable().arg("import-db").arg(f.path(archive))).ok();
        assert!(
            r.stderr.contains("restored with a commit per object: the archive takes up to 1,500 locks, more than one transaction can hold on this server (its lock table: 320,"),
            "{archive}: {}",
            r.stderr
        );
        assert_eq!(server_settings(&f.s), f.settings, "{archive}");
    }
    // The fingerprint reads every table in one statement: on the default lock table.
    std::fs::write(&file, text).unwrap();
    f.s.db_up();
    let many = f.s.fingerprint("many");
    assert_eq!(f.s.fingerprint(&f.s.name), many, "custom");
    let prev = format!("{}__countable_prev", f.s.name);
    assert_eq!(f.s.fingerprint(&prev), many, "tar");
}

#[test]
fn a_second_restore_is_refused_while_one_runs() {
    let f = Fixture::new("busy", 40000);
    let plain = std::fs::read(f.path("plain.sql")).unwrap();
    let (child, mut stdin) = f.import_part_of(&plain, plain.len() / 2);
    let new = format!("{}__countable_new", f.s.name);
    let second = run(f
        .s
        .countable()
        .arg("import-db")
        .arg(f.path("custom.backup")))
    .fails();
    assert!(
        second
            .stderr
            .contains("another countable restore into this database is running"),
        "{}",
        second.stderr
    );
    // `status` meanwhile leaves the running restore alone.
    run(f.s.countable().arg("status")).ok();
    assert!(
        f.s.databases().contains(&new),
        "status dropped a live restore's database"
    );
    stdin.write_all(&plain[plain.len() / 2..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.s.fingerprint(&f.s.name), f.s.fingerprint("seed"));
    assert_eq!(server_settings(&f.s), f.settings);
}
