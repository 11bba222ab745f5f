//! pull-db / import-db against the real engine, the real postgres stand-in, real
//! pg_dump fixtures compressed with the real gzip, zstd, xz, bzip2, lrzip and tar, a
//! local directory store and a real S3-protocol server (moto) on loopback.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A project whose db holds a seeded `seed` database, with plain and custom dumps of it.
fn seeded(prefix: &str, rows: u32) -> (Scratch, tempfile::TempDir) {
    let s = Scratch::new(prefix);
    s.db_up();
    s.seed("seed", rows);
    let fx = tempfile::tempdir().unwrap();
    s.dump("seed", &[], &fx.path().join("plain.sql"));
    s.dump("seed", &["-Fc"], &fx.path().join("custom.backup"));
    (s, fx)
}

fn import(s: &Scratch, file: &Path, extra: &[&str]) -> Run {
    let mut cmd = s.countable();
    cmd.arg("import-db").arg(file).args(extra);
    run(&mut cmd)
}

#[test]
fn every_format_and_dump_kind_restores_identically() {
    let (s, fx) = seeded("fmt", 3000);
    let want = s.fingerprint("seed");
    assert!(want.contains("shop.items=3000:"), "{want}");
    // Tar-format, and directory-format tarred up (pg_dump -Fd writes a directory).
    s.dump("seed", &["-Ft"], &fx.path().join("dump.tar"));
    s.exec_to_file(
        "mkdir -p /tmp/fx && pg_dump -U \"$POSTGRES_USER\" -Fd -j 2 -f /tmp/fx/dump seed && tar -C /tmp/fx -cf - dump && rm -rf /tmp/fx",
        &fx.path().join("dir.tar"),
    );
    sh(fx.path(), "tar tf dir.tar | grep -q dump/toc.dat");
    assert!(
        want.contains("audit.log=3000:"),
        "the trigger fired while seeding: {want}"
    );
    // Every compression × bare or tarred × plain or custom, made with the real tools
    // the way a team would; plus multi-member gzip, tar-format and directory-format.
    let compressions: [(&str, &str, &str); 6] = [
        ("", "", "cat"),
        ("gzip", ".gz", "gzip -c"),
        ("zstd", ".zst", "zstd -q -c"),
        ("xz", ".xz", "xz -c"),
        ("bzip2", ".bz2", "bzip2 -c"),
        ("lrzip", ".lrz", "lrzip -q -o -"),
    ];
    let mut cases: Vec<(String, String)> = Vec::new();
    for (src, inner, kind) in [
        ("plain.sql", "db.sql", "plain SQL dump"),
        ("custom.backup", "db.backup", "custom-format dump"),
    ] {
        sh(
            fx.path(),
            &format!("cp {src} {inner} && tar cf {src}.tar {inner} && rm {inner}"),
        );
        for tarred in [false, true] {
            let base = if tarred {
                format!("{src}.tar")
            } else {
                src.to_string()
            };
            for (name, ext, cmd) in compressions {
                let file = format!("{base}{ext}");
                if !ext.is_empty() {
                    sh(fx.path(), &format!("{cmd} < {base} > {file}"));
                }
                let mut layers: Vec<String> = Vec::new();
                if !name.is_empty() {
                    layers.push(name.to_string());
                }
                if tarred {
                    layers.push(format!("tar: {inner}"));
                }
                layers.push(kind.to_string());
                cases.push((file, layers.join(" → ")));
            }
        }
    }
    sh(fx.path(), "split -b 100000 plain.sql part. && for p in part.*; do gzip -c $p >> multi.sql.gz; done && rm part.* && gzip -k dir.tar");
    cases.push(("multi.sql.gz".into(), "gzip → plain SQL dump".into()));
    cases.push(("dump.tar".into(), "tar-format dump".into()));
    cases.push((
        "dir.tar.gz".into(),
        "gzip → directory-format dump (in a tar)".into(),
    ));
    assert_eq!(cases.len(), 27);
    let name = s.name.clone();
    // Each case starts from a database that differs from the dump (a marker table), so a
    // restore that never swapped, or swapped the wrong database in, fails its case.
    let differ = |case: &str| {
        s.sql_in(
            &name,
            &format!("CREATE TABLE countable_marker (v text); INSERT INTO countable_marker VALUES ('{case}')"),
        );
        assert_ne!(
            s.fingerprint(&name),
            want,
            "{case}: the marker makes a difference"
        );
    };
    for (file, format) in &cases {
        differ(file);
        let r = import(&s, &fx.path().join(file), &["--json"]).ok();
        let summary: serde_json::Value = serde_json::from_str(&r.stdout).expect("--json summary");
        assert_eq!(summary["format"], format.as_str(), "{file}");
        assert_eq!(summary["tables"], 3, "{file}");
        assert_eq!(summary["rows"], 3000 + 3000 + 500, "{file}");
        assert_eq!(s.fingerprint(&name), want, "{file} did not round-trip");
    }
    // Parallel restore of a custom archive (spooled into the container's volume).
    differ("--jobs 2");
    let r = import(
        &s,
        &fx.path().join("custom.backup.zst"),
        &["--jobs", "2", "--json"],
    )
    .ok();
    let summary: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(summary["tables"], 3);
    // Exact rows from several pg_restore sessions' statistics.
    assert_eq!(summary["rows"], 3000 + 3000 + 500, "--jobs 2");
    assert_eq!(s.fingerprint(&name), want, "--jobs 2");
    differ("dir.tar --jobs 2");
    let r = import(&s, &fx.path().join("dir.tar"), &["--jobs", "2", "--json"]).ok();
    let summary: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(summary["format"], "directory-format dump (in a tar)");
    assert_eq!(summary["rows"], 3000 + 3000 + 500, "dir.tar --jobs 2");
    assert_eq!(s.fingerprint(&name), want, "directory format, --jobs 2");
    let leftovers = s.compose(&[
        "exec",
        "-T",
        "db",
        "sh",
        "-c",
        "ls /tmp \"$PGDATA\" | grep countable || true",
    ]);
    assert_eq!(
        leftovers.stdout.trim(),
        "",
        "temp files left in the container"
    );
    // stdin.
    differ("stdin");
    let plain = std::fs::read(fx.path().join("plain.sql.gz")).unwrap();
    let r = run_with_stdin(s.countable().args(["import-db", "-"]), &plain);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.fingerprint(&name), want, "stdin");
    // The plain dump's ownership lines named a role that does not exist here: filtered.
    assert!(std::fs::read_to_string(fx.path().join("plain.sql"))
        .unwrap()
        .contains("OWNER TO"));
}

#[test]
fn local_directory_store_lists_newest_first_and_pulls() {
    let (s, fx) = seeded("dirstore", 200);
    let store = s.root().join("backups");
    std::fs::create_dir(&store).unwrap();
    std::fs::copy(
        fx.path().join("custom.backup"),
        store.join("2026-11-29T020000Z.backup"),
    )
    .unwrap();
    sh(&store, &format!("gzip -c {} > 2026-11-30T020000Z.sql.gz && touch -d '2026-11-30 02:00' 2026-11-30T020000Z.sql.gz && touch -d '2026-11-29 02:00' 2026-11-29T020000Z.backup", fx.path().join("plain.sql").display()));
    std::fs::write(store.join("2026-11-30T020000Z.sql.gz.manifest.json"), "{}").unwrap();
    s.set_environments("data_from: prod\nenvironments:\n  prod:\n    backups: backups/\n");
    let list = run(s.countable().args(["backups", "--json"])).ok();
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["2026-11-30T020000Z.sql.gz", "2026-11-29T020000Z.backup"],
        "manifests are not backups"
    );
    let r = run(s.countable().args(["pull-db", "--json"])).ok();
    let summary: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(summary["source"]
        .as_str()
        .unwrap()
        .ends_with("2026-11-30T020000Z.sql.gz"));
    assert_eq!(s.fingerprint(&s.name), s.fingerprint("seed"));
    let r = run(s.countable().args([
        "pull-db",
        "prod",
        "--backup",
        "2026-11-29T020000Z.backup",
        "--json",
    ]))
    .ok();
    assert!(r.stdout.contains("custom-format dump"));
    let r = run(s.countable().args(["pull-db", "prod", "--dry-run"])).ok();
    assert!(r.stdout.contains("ALTER DATABASE"), "{}", r.stdout);
    let r = run(s.countable().args(["pull-db", "qa"])).fails();
    assert!(r.stderr.contains("no environment `qa`"), "{}", r.stderr);
}

#[test]
fn s3_store_pulls_the_newest_backup() {
    let (s, fx) = seeded("s3pull", 300);
    let moto = Moto::start(false);
    moto.aws(&["s3", "mb", "s3://countable"]).ok();
    sh(fx.path(), "lrzip -q -o plain.sql.lrz plain.sql && cp plain.sql db.sql && tar cf - db.sql | lrzip -q -o team.tar.lrz && rm db.sql");
    let older = fx.path().join("custom.backup");
    let newer = fx.path().join("team.tar.lrz");
    moto.aws(&[
        "s3",
        "cp",
        older.to_str().unwrap(),
        "s3://countable/backups/shop/2026-11-28T010000Z.backup",
    ])
    .ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    moto.aws(&[
        "s3",
        "cp",
        newer.to_str().unwrap(),
        "s3://countable/backups/shop/2026-11-30T010000Z.tar.lrz",
    ])
    .ok();
    moto.aws(&[
        "s3",
        "cp",
        older.to_str().unwrap(),
        "s3://countable/backups/other/2026-12-01T010000Z.backup",
    ])
    .ok();
    s.set_environments(&format!(
        "data_from: prod\nenvironments:\n  prod:\n    backups: s3://countable/backups/shop/\n    endpoint_url: {}\n    region: us-east-1\n",
        moto.url()
    ));
    let list = run(s
        .countable()
        .args(["backups", "prod", "--json"])
        .envs(aws_env()))
    .ok();
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["2026-11-30T010000Z.tar.lrz", "2026-11-28T010000Z.backup"]
    );
    let r = run(s
        .countable()
        .args(["pull-db", "prod", "--json"])
        .envs(aws_env()))
    .ok();
    let summary: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(summary["format"], "lrzip → tar: db.sql → plain SQL dump");
    assert_eq!(s.fingerprint(&s.name), s.fingerprint("seed"));
    let r = run(s
        .countable()
        .args([
            "pull-db",
            "prod",
            "--backup",
            "backups/shop/2026-11-28T010000Z.backup",
        ])
        .envs(aws_env()))
    .ok();
    assert!(r.stderr.contains("custom-format dump"), "{}", r.stderr);
    assert_eq!(s.fingerprint(&s.name), s.fingerprint("seed"));
}

#[test]
fn undo_swaps_back_and_no_keep_drops_the_previous() {
    let (s, fx) = seeded("undo", 100);
    let name = s.name.clone();
    s.sql_in(
        &name,
        "CREATE TABLE mine (v text); INSERT INTO mine VALUES ('local work')",
    );
    let before = s.fingerprint(&name);
    import(&s, &fx.path().join("custom.backup"), &[]).ok();
    assert_eq!(s.fingerprint(&name), s.fingerprint("seed"));
    let prev = format!("{name}__countable_prev");
    assert!(s.databases().contains(&prev));
    run(s.countable().arg("undo-db")).ok();
    assert_eq!(
        s.fingerprint(&name),
        before,
        "undo brought the local work back"
    );
    run(s.countable().arg("undo-db")).ok();
    assert_eq!(
        s.fingerprint(&name),
        s.fingerprint("seed"),
        "undo again redoes"
    );
    import(&s, &fx.path().join("plain.sql"), &["--no-keep", "--yes"]).ok();
    assert!(
        !s.databases().contains(&prev),
        "--no-keep dropped the previous database"
    );
    let r = run(s.countable().arg("undo-db")).fails();
    assert!(r.stderr.contains("no previous database"), "{}", r.stderr);
}

#[test]
fn up_fills_an_empty_database_from_data_from() {
    let s = Scratch::new("fill");
    // The backup comes from another database server: a throwaway project's db.
    let (src, fx) = seeded("fillsrc", 50);
    let store = s.root().join("backups");
    std::fs::create_dir(&store).unwrap();
    std::fs::copy(
        fx.path().join("custom.backup"),
        store.join("2026-11-30T000000Z.backup"),
    )
    .unwrap();
    s.set_environments("data_from: prod\nenvironments:\n  prod:\n    backups: backups/\n");
    let up = run(s.countable().arg("up")).ok();
    assert!(
        up.stderr
            .contains("the database is empty: filling it from `prod`"),
        "{}",
        up.stderr
    );
    assert_eq!(s.sql("SELECT count(*) FROM shop.items"), "50");
    let migrations: u64 = s
        .sql("SELECT count(*) FROM django_migrations")
        .parse()
        .unwrap();
    assert!(migrations > 10, "migrations ran on the restored database");
    assert_eq!(s.get("/", &[]).status, 200);
    // A second up finds tables and leaves them alone.
    let again = run(s.countable().arg("up")).ok();
    assert!(!again.stderr.contains("filling"), "{}", again.stderr);
    drop(src);
}

/// The web container's start time: unchanged when it was never restarted.
fn started_at(s: &Scratch) -> String {
    run(Command::new("docker").args([
        "inspect",
        "--format",
        "{{.State.StartedAt}}",
        &format!("{}-web-1", s.name),
    ]))
    .ok()
    .stdout
    .trim()
    .to_string()
}

/// A request loop on `/healthz` (through nginx, gunicorn or runserver, to the db) while
/// `work` runs: (requests, failed, longest time between two good answers).
fn under_load(s: &Scratch, work: impl FnOnce()) -> (usize, usize, f64) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = s.port;
    let flag = stop.clone();
    let looper = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let r = http_get(port, "/healthz", &[]);
            seen.push((std::time::Instant::now(), r.status == 200));
        }
        seen
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    work();
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = looper.join().unwrap();
    let failed = seen.iter().filter(|(_, ok)| !ok).count();
    let goods: Vec<_> = seen.iter().filter(|(_, ok)| *ok).map(|(t, _)| *t).collect();
    let gap = goods
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .fold(0.0, f64::max);
    (seen.len(), failed, gap)
}

#[test]
fn a_running_app_keeps_answering_through_the_swap() {
    let s = Scratch::new("online");
    run(s.countable().arg("up")).ok();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("before.dump");
    run(s.countable().args(["export-db", dump.to_str().unwrap()])).ok();
    s.sql("CREATE TABLE after_the_dump (i int)");
    let started = started_at(&s);

    // The request loop runs through the whole import: only requests at the instant of
    // the swap may fail (the one in flight, and the few a single client sends in the
    // milliseconds the databases are closed before the commit): the app is never
    // unavailable for as long as a second (the bound).
    let mut import = None;
    let (requests, failed, gap) = under_load(&s, || {
        import = Some(run(s.countable().args([
            "import-db",
            dump.to_str().unwrap(),
            "--yes",
        ])));
    });
    let import = import.unwrap();
    assert_eq!(import.code, 0, "{}", import.stderr);
    eprintln!("import-db under a request loop: {requests} requests, {failed} failed, longest gap {gap:.2} s");
    assert!(requests > 20, "the loop ran: {requests}");
    assert!(failed <= 4, "{failed} of {requests} requests failed");
    assert!(gap < 1.0, "the app was unavailable for {gap:.2} s");
    assert!(!import.stderr.contains("stopping"), "{}", import.stderr);
    assert_eq!(started_at(&s), started, "web was never restarted");
    // The restored database is the current one, and the app uses it.
    assert_eq!(s.sql("SELECT to_regclass('after_the_dump') IS NULL"), "t");
    assert_eq!(s.get("/", &[]).status, 200);
    assert_eq!(
        s.sql("SELECT count(*) FROM pg_database WHERE NOT datallowconn AND datname NOT LIKE 'template%'"),
        "0",
        "every database is open again"
    );

    // undo-db swaps back the same way.
    let (requests, failed, gap) = under_load(&s, || {
        run(s.countable().args(["undo-db", "--yes"])).ok();
    });
    eprintln!("undo-db under a request loop: {requests} requests, {failed} failed, longest gap {gap:.2} s");
    assert!(failed <= 4, "{failed} of {requests} requests failed");
    assert!(gap < 1.0, "the app was unavailable for {gap:.2} s");
    assert_eq!(s.sql("SELECT to_regclass('after_the_dump') IS NULL"), "f");
    assert_eq!(started_at(&s), started);

    // migrate runs in the running web only when the restored data's migrations differ
    // from the current database's (which the running code migrated at its start).
    let same = run(s
        .countable()
        .args(["import-db", dump.to_str().unwrap(), "--yes", "--json"]))
    .ok();
    let same: serde_json::Value = serde_json::from_str(&same.stdout).unwrap();
    assert_eq!(
        same["migrate_seconds"], 0.0,
        "the same migrations: skipped ({same})"
    );
    // A dump from before the sessions app: restored under the current code, it gets it.
    s.sql("DROP TABLE django_session; DELETE FROM django_migrations WHERE app = 'sessions'");
    let older = dir.path().join("older.dump");
    run(s.countable().args(["export-db", older.to_str().unwrap()])).ok();
    run(s
        .countable()
        .args(["import-db", dump.to_str().unwrap(), "--yes"]))
    .ok();
    assert_eq!(s.sql("SELECT to_regclass('django_session') IS NULL"), "f");
    let behind = run(s
        .countable()
        .args(["import-db", older.to_str().unwrap(), "--yes"]))
    .ok();
    assert!(
        behind
            .stderr
            .contains("applied 1 migration(s) of this code to the restored database"),
        "{}",
        behind.stderr
    );
    assert_eq!(s.sql("SELECT to_regclass('django_session') IS NULL"), "f");
    assert_eq!(s.get("/", &[]).status, 200);
    assert_eq!(started_at(&s), started, "web was never restarted");
}
