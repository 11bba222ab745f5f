//! `countable sync` and `undo-sync` between two environments on two test hosts
//! (tests/hosts: a dockerd and an sshd each, reached over ssh://), with bucket pairs on
//! real S3-protocol servers: two moto servers as two accounts (the streamed path, two
//! credentials) and one moto for both sides of another pair (server-side copies, one
//! credential). One story, in order, on one setup: each chapter builds on the state
//! the one before left. `harness = false`: the hosts come up once.
//!
//! `cargo test --test sync -- NAME` runs the chapters up to and including NAME.

#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::hosts::TestHost;
use common::story::Chapter;
use common::*;
use sha2::{Digest, Sha256};

const PAIR: &str = "prod-to-staging";
/// The staging OAuth values the fixup writes: hostile on purpose.
const CLIENT_ID: &str = "staging-client-1234567890";
const SECRET: &str = "st4g'ing\"$ecret:x\\y #=\n-line2-Zq9";

/// The environments' compose file (test-only): a db, and a stand-in app service whose
/// container the sync must stop for the swap and start again.
const ENV_COMPOSE: &str = "services:
  db:
    image: countable-test/postgres:15
    environment:
      POSTGRES_USER: ${DB_USER}
      POSTGRES_PASSWORD: pw
      POSTGRES_DB: shop
    healthcheck:
      test: [\"CMD-SHELL\", \"pg_isready -U ${DB_USER} -d shop\"]
      interval: 1s
      retries: 120
  web:
    image: countable-test/postgres:15
    # Ends on SIGTERM at once, as gunicorn does (a bare `sleep` as PID 1 would not).
    entrypoint: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep infinity & wait\"]
";

struct Env {
    host: TestHost,
    project: &'static str,
    user: &'static str,
}

impl Env {
    fn container(&self) -> String {
        format!("{}-db-1", self.project)
    }

    /// SQL in the environment's database, on its host's engine; the answer trimmed.
    fn sql(&self, query: &str) -> String {
        let r = self.host.docker(&[
            "exec",
            &self.container(),
            "sh",
            "-c",
            "psql -X -qAt -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"$1\"",
            "sh",
            query,
        ]);
        assert_eq!(r.code, 0, "psql on {}: {}", self.host.name(), r.stderr);
        r.stdout.trim_end_matches('\n').to_string()
    }

    fn script(&self, sql: &str) {
        let mut cmd = Command::new("docker");
        cmd.env(
            "DOCKER_HOST",
            format!("unix://{}", self.host.sock().display()),
        )
        .args(["exec", "-i", &self.container(), "sh", "-c"])
        .arg("psql -X -q -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"");
        let r = run_with_stdin(&mut cmd, sql.as_bytes());
        assert_eq!(r.code, 0, "seeding {}: {}", self.host.name(), r.stderr);
    }

    /// Every user table as `name=count:md5 of its rows` (one line each), except `skip`.
    fn tables(&self, skip: &[&str]) -> String {
        let listed = self.sql("SELECT string_agg(format('%s=%s', tablename, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) || '':'' || coalesce(md5(string_agg(t::text, '','' ORDER BY t::text)), '''') AS c FROM %I.%I t', schemaname, tablename), false, true, '')))[1]::text), E'\\n' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'");
        listed
            .lines()
            .filter(|l| !skip.iter().any(|s| l.starts_with(&format!("{s}="))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// When the stand-in app container last started.
    fn web_started(&self) -> String {
        let r = self.host.docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.StartedAt}}",
            &format!("{}-web-1", self.project),
        ]);
        r.stdout.trim().to_string()
    }
}

struct Story {
    prod: Env,
    staging: Env,
    /// A: prod's account, B: staging's, C: one account with both docs buckets.
    a: Moto,
    b: Moto,
    c: Moto,
    tmp: tempfile::TempDir,
    root: PathBuf,
    key: PathBuf,
    printed: String,
    /// The staging database and buckets before the first sync (what undo brings back).
    before: Option<(String, Objects)>,
}

type Objects = BTreeMap<String, BTreeMap<String, String>>;

impl Story {
    fn countable(&self, args: &[&str]) -> Command {
        let mut c = countable(&self.root);
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ] {
            c.env_remove(k);
        }
        c.args(args)
            .env("PATH", self.prod.host.path_env())
            .env("COUNTABLE_AGE_KEY_FILE", &self.key)
            .env("HOME", self.tmp.path().join("home"))
            .env("AWS_CONFIG_FILE", self.tmp.path().join("aws/config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.tmp.path().join("aws/credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // The 9 MiB document goes server-side in parts (UploadPartCopy), as
            // objects over 5 GiB do.
            .env("COUNTABLE_S3_COPY_IN_PARTS_ABOVE", (8u64 << 20).to_string());
        c
    }

    fn run(&mut self, args: &[&str]) -> Run {
        let t = Instant::now();
        let r = run(&mut self.countable(args));
        eprintln!(
            "    countable {} ({:.1} s)",
            args.iter().take(3).cloned().collect::<Vec<_>>().join(" "),
            t.elapsed().as_secs_f64()
        );
        self.printed.push_str(&r.stdout);
        self.printed.push_str(&r.stderr);
        r
    }

    fn json(&mut self, args: &[&str]) -> serde_json::Value {
        let r = self.run(args);
        assert_eq!(r.code, 0, "countable {args:?}:\n{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    }

    /// key → SHA-256 of every object of the staging buckets (downloaded).
    fn staging_objects(&self) -> Objects {
        BTreeMap::from([
            (
                "staging-media".to_string(),
                objects(&self.b, "staging-media", ""),
            ),
            (
                "staging-docs".to_string(),
                objects(&self.c, "staging-docs", ""),
            ),
        ])
    }

    fn staging_state(&self) -> (String, Objects) {
        (self.staging.tables(&[]), self.staging_objects())
    }

    fn staging_backups(&self) -> usize {
        std::fs::read_dir(self.root.join("backups/staging"))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .map(|e| e.file_name().to_string_lossy().ends_with(".backup"))
                        .unwrap_or(false)
                })
                .count()
            })
            .unwrap_or(0)
    }
}

/// key (under `prefix`) → SHA-256 of every object in `bucket` on `moto`.
fn objects(moto: &Moto, bucket: &str, prefix: &str) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let r = moto.aws(&[
        "s3",
        "cp",
        "--recursive",
        "--quiet",
        &format!("s3://{bucket}/{prefix}"),
        &dir.path().display().to_string(),
    ]);
    assert_eq!(r.code, 0, "aws s3 cp: {}", r.stderr);
    let mut out = BTreeMap::new();
    walk(dir.path(), dir.path(), &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(base, &p, out);
        } else {
            let hash = Sha256::digest(std::fs::read(&p).unwrap());
            let key = p.strip_prefix(base).unwrap().display().to_string();
            out.insert(key, hash.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
}

/// Deterministic bytes of `len`, different per `seed` (SHA-256 of a counter).
fn bytes(seed: u32, len: usize) -> Vec<u8> {
    (0u64..)
        .flat_map(|block| Sha256::digest(format!("{seed}:{block}")))
        .take(len)
        .collect()
}

fn put(moto: &Moto, dir: &Path, url: &str, data: &[u8]) {
    let file = dir.join("upload");
    std::fs::write(&file, data).unwrap();
    let r = moto.aws(&["s3", "cp", "--quiet", &file.display().to_string(), url]);
    assert_eq!(r.code, 0, "aws s3 cp to {url}: {}", r.stderr);
}

fn bring_up(env: &Env, dir: &Path) {
    let file = dir.join("envs.yaml");
    std::fs::write(&file, ENV_COMPOSE).unwrap();
    let r = run(Command::new("docker")
        .env(
            "DOCKER_HOST",
            format!("unix://{}", env.host.sock().display()),
        )
        .env("DB_USER", env.user)
        .args(["compose", "-p", env.project, "-f"])
        .arg(&file)
        .args(["up", "-d", "--wait", "--wait-timeout", "180"]));
    assert_eq!(r.code, 0, "compose up on {}: {}", env.host.name(), r.stderr);
}

const SCHEMA: &str = "
CREATE TABLE django_migrations (id serial PRIMARY KEY, app varchar(255) NOT NULL, name varchar(255) NOT NULL, applied timestamptz NOT NULL DEFAULT now());
INSERT INTO django_migrations (app, name) VALUES ('contenttypes', '0001_initial'), ('auth', '0001_initial'), ('sites', '0001_initial'), ('socialaccount', '0001_initial'), ('shop', '0001_initial');
CREATE TABLE auth_user (id serial PRIMARY KEY, username text UNIQUE NOT NULL, email text NOT NULL DEFAULT '');
CREATE TABLE django_site (id serial PRIMARY KEY, domain varchar(100) NOT NULL UNIQUE, name varchar(50) NOT NULL);
CREATE TABLE socialaccount_socialapp (id serial PRIMARY KEY, provider varchar(30) NOT NULL, name varchar(40) NOT NULL, client_id varchar(191) NOT NULL, secret varchar(191) NOT NULL);
CREATE TABLE shop_item (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2), data jsonb, owner_id int REFERENCES auth_user(id));
CREATE INDEX shop_item_name ON shop_item (name);
CREATE VIEW shop_cheap AS SELECT id, name FROM shop_item WHERE price < 10;
";

fn setup() -> Story {
    require_images();
    let prod = Env {
        host: TestHost::start("sync-prod", 4, &[DB_IMAGE]),
        project: "shop-prod",
        user: "produser",
    };
    let staging = Env {
        host: TestHost::start("sync-staging", 5, &[DB_IMAGE]),
        project: "shop-staging",
        user: "stageuser",
    };
    let tmp = tempfile::tempdir().unwrap();
    for d in [
        "home",
        "aws",
        "shop/backups/staging",
        "shop/backups/prod",
        "files",
    ] {
        std::fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    bring_up(&prod, tmp.path());
    bring_up(&staging, tmp.path());
    prod.script(&format!("{SCHEMA}
INSERT INTO auth_user (username, email) SELECT 'user' || g, 'person' || g || '@gmail.com' FROM generate_series(1, 200) g;
INSERT INTO django_site (domain, name) VALUES ('shop.example.com', 'Shop');
INSERT INTO socialaccount_socialapp (provider, name, client_id, secret) VALUES ('google', 'Google', 'prod-client', 'prod-secret-value'), ('github', 'GitHub', 'gh-client', 'gh-secret');
INSERT INTO shop_item (name, price, data, owner_id) SELECT 'item ' || g || E' tab\\there', g * 1.5, jsonb_build_object('g', g, 'q', 'it''s'), 1 + g % 200 FROM generate_series(1, 5000) g;
"));
    staging.script(&format!("{SCHEMA}
INSERT INTO auth_user (username, email) VALUES ('tester', 'tester@staging.test'), ('qa', 'qa@staging.test');
INSERT INTO django_site (domain, name) VALUES ('staging.old', 'Old');
INSERT INTO socialaccount_socialapp (provider, name, client_id, secret) VALUES ('google', 'Google', 'old-client', 'old-secret');
INSERT INTO shop_item (name, price) SELECT 'staging item ' || g, g FROM generate_series(1, 10) g;
"));
    let (a, b, c) = (Moto::start(false), Moto::start(false), Moto::start(false));
    let files = tmp.path().join("files");
    for (moto, bucket) in [
        (&a, "prod-media"),
        (&b, "staging-media"),
        (&c, "prod-docs"),
        (&c, "staging-docs"),
    ] {
        assert_eq!(moto.aws(&["s3", "mb", &format!("s3://{bucket}")]).code, 0);
    }
    for i in 0..20u32 {
        put(
            &a,
            &files,
            &format!("s3://prod-media/files/img-{i:02}.jpg"),
            &bytes(i, 1000 + 997 * i as usize),
        );
    }
    put(
        &a,
        &files,
        "s3://prod-media/files/thumbs/a b+ü.jpg",
        &bytes(99, 4321),
    );
    // Over the CLI's 8 MiB threshold: uploaded in parts, its ETag is no MD5.
    put(
        &a,
        &files,
        "s3://prod-media/files/video.mp4",
        &bytes(100, 9 << 20),
    );
    put(
        &b,
        &files,
        "s3://staging-media/files/img-03.jpg",
        b"staging's own img-03",
    );
    for i in 0..3 {
        put(
            &b,
            &files,
            &format!("s3://staging-media/files/staging-only-{i}.txt"),
            b"only on staging",
        );
    }
    put(
        &b,
        &files,
        "s3://staging-media/other/keep.txt",
        b"outside the pair's prefix",
    );
    for i in 0..10u32 {
        put(
            &c,
            &files,
            &format!("s3://prod-docs/doc-{i}.pdf"),
            &bytes(200 + i, 3000),
        );
    }
    put(&c, &files, "s3://prod-docs/big.pdf", &bytes(300, 9 << 20));
    put(
        &c,
        &files,
        "s3://staging-docs/staging-notes.txt",
        b"kept: the docs pair does not delete",
    );
    let profile = |name: &str, m: &Moto| {
        format!(
            "[profile {name}]\nregion = us-east-1\nendpoint_url = {}\n",
            m.url()
        )
    };
    std::fs::write(
        tmp.path().join("aws/config"),
        [
            profile("prod", &a),
            profile("stage", &b),
            profile("shared", &c),
        ]
        .concat(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("aws/credentials"),
        ["prod", "stage", "shared"]
            .iter()
            .map(|p| {
                format!("[{p}]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
            })
            .collect::<String>(),
    )
    .unwrap();
    let root = tmp.path().join("shop");
    std::fs::write(
        root.join("countable.yml"),
        format!(
            "project: shop
environments:
  prod:
    branch: master
    docker_host: {}
    backups: backups/prod/
    domains: [shop.example.com]
  staging:
    branch: develop
    docker_host: {}
    backups: backups/staging/
    domains: [staging.shop.test]
sync:
  {PAIR}:
    from: prod
    to: staging
    buckets:
      - description: media (two accounts)
        from: s3://prod-media/files/
        to: s3://staging-media/files/
        from_profile: prod
        to_profile: stage
        delete: true
      - description: documents (one account)
        from: s3://prod-docs/
        to: s3://staging-docs/
        aws_profile: shared
    fixups:
      - description: staging OAuth app
        sql: UPDATE socialaccount_socialapp SET client_id = :client_id, secret = :secret WHERE provider = 'google'
        params: {{ client_id: STAGING_GOOGLE_CLIENT_ID, secret: STAGING_GOOGLE_SECRET }}
    scrub: [emails, mail, site]
  staging-to-prod:
    from: staging
    to: prod
  needs-a-secret:
    from: prod
    to: staging
    fixups:
      - description: payment sandbox key
        sql: UPDATE shop_item SET data = jsonb_build_object('key', :key) WHERE id = 1
        params: {{ key: STAGING_PAYMENT_KEY }}
  strict-check:
    from: prod
    to: staging
    fixups:
      - description: an app nobody has
        sql: UPDATE socialaccount_socialapp SET name = 'x' WHERE provider = 'nobody'
",
            prod.host.docker_host(),
            staging.host.docker_host()
        ),
    )
    .unwrap();
    let key = tmp.path().join("age.key");
    let mut s = Story {
        prod,
        staging,
        a,
        b,
        c,
        root,
        key,
        tmp,
        printed: String::new(),
        before: None,
    };
    let key_s = s.key.display().to_string();
    s.run(&["secrets", "keygen", "--output", &key_s, "--name", "ci"])
        .ok();
    let id = format!("STAGING_GOOGLE_CLIENT_ID={CLIENT_ID}");
    let secret = format!("STAGING_GOOGLE_SECRET={SECRET}");
    s.run(&["secrets", "set", "staging", &id, &secret]).ok();
    s
}

/// Every refusal happens before anything changes: no backup, the same database, the
/// same objects.
fn refusals_change_nothing(s: &mut Story) {
    let before = s.staging_state();
    let prod_before = s.prod.tables(&[]);
    // Production as the target.
    let r = s.run(&["sync", "staging-to-prod"]).fails();
    assert!(
        r.stderr
            .contains("`prod` is the environment `master` deploys to"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("sync_target: true"), "{}", r.stderr);
    // A secret the fixups name that the target's secrets do not have.
    let r = s.run(&["sync", "needs-a-secret"]).fails();
    assert!(r.stderr.contains("STAGING_PAYMENT_KEY"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("countable secrets set staging STAGING_PAYMENT_KEY"),
        "{}",
        r.stderr
    );
    // `<from> <to>` names a pair only when one pair goes that way.
    let r = s.run(&["sync", "prod", "staging"]).fails();
    assert!(
        r.stderr
            .contains("several sync pairs go from `prod` to `staging`"),
        "{}",
        r.stderr
    );
    // A migration only the source has applied.
    s.prod
        .sql("INSERT INTO django_migrations (app, name) VALUES ('shop', '0002_extra')");
    let r = s.run(&["sync", PAIR]);
    s.prod
        .sql("DELETE FROM django_migrations WHERE name = '0002_extra'");
    let r = r.fails();
    assert!(
        r.stderr.contains("only prod has [shop.0002_extra]"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("countable deploy staging"),
        "{}",
        r.stderr
    );
    // More deletions than --max-delete allows (three objects only staging has).
    let r = s.run(&["sync", PAIR, "--max-delete", "2"]).fails();
    assert!(
        r.stderr.contains(
            "3 object(s) would be deleted from s3://staging-media/files/, more than --max-delete 2"
        ),
        "{}",
        r.stderr
    );
    // The `mail` scrub and a target that sends mail.
    s.run(&[
        "secrets",
        "set",
        "staging",
        "EMAIL_URL=smtp+tls://u:p@smtp.example.com:587",
    ])
    .ok();
    let r = s.run(&["sync", PAIR]);
    s.run(&["secrets", "unset", "staging", "EMAIL_URL"]).ok();
    let r = r.fails();
    assert!(r.stderr.contains("EMAIL_URL=console://"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("smtp.example.com"),
        "a secret value was printed"
    );
    assert_eq!(s.staging_backups(), 0, "no backup was taken");
    assert!(s.staging_state() == before, "staging changed");
    assert_eq!(s.prod.tables(&[]), prod_before);
    s.before = Some(before);
}

fn dry_run_plans_and_changes_nothing(s: &mut Story) {
    let plan = s.json(&["sync", PAIR, "--dry-run", "--json"]);
    assert_eq!(plan["action"], "dry-run");
    let media = &plan["buckets"][0];
    assert_eq!(media["mode"], "streamed");
    // 22 objects; img-03 differs, the rest are new; three staging-only ones go.
    assert_eq!(
        (
            media["copy"].as_u64(),
            media["skip"].as_u64(),
            media["delete"].as_u64()
        ),
        (Some(22), Some(0), Some(3)),
        "{media}"
    );
    let docs = &plan["buckets"][1];
    assert_eq!(docs["mode"], "server-side");
    assert_eq!(
        (docs["copy"].as_u64(), docs["kept_extra"].as_u64()),
        (Some(11), Some(1)),
        "{docs}"
    );
    let steps = plan["plan"].to_string();
    assert!(
        steps.contains("secret = <STAGING_GOOGLE_SECRET>"),
        "{steps}"
    );
    let table = s.run(&["sync", PAIR, "--dry-run"]).ok().stdout;
    assert!(
        table.contains("nothing was changed") && table.contains("BUCKETS"),
        "{table}"
    );
    assert!(s.staging_state() == *s.before.as_ref().unwrap());
    assert_eq!(s.staging_backups(), 0);
}

fn first_sync_copies_the_database_and_buckets(s: &mut Story) {
    let web_before = s.staging.web_started();
    let prod_web = s.prod.web_started();
    let started = Instant::now();
    let report = s.json(&["sync", PAIR, "--json"]);
    eprintln!("    first sync: {:.1} s", started.elapsed().as_secs_f64());
    assert!(report["backup_key"].as_str().unwrap().ends_with(".backup"));
    assert_eq!(s.staging_backups(), 1);
    let db = &report["database"];
    assert_eq!(db["census_checked"], true, "{db}");
    // The database: every table but the fixed-up ones equals the source's.
    let fixed = ["auth_user", "django_site", "socialaccount_socialapp"];
    assert_eq!(s.staging.tables(&fixed), s.prod.tables(&fixed));
    assert_eq!(
        s.staging
            .sql("SELECT string_agg(id || ':' || username, ',' ORDER BY id) FROM auth_user"),
        s.prod
            .sql("SELECT string_agg(id || ':' || username, ',' ORDER BY id) FROM auth_user")
    );
    assert_eq!(
        s.staging.sql(
            "SELECT count(*) FROM auth_user WHERE email = 'user+' || id || '@example.invalid'"
        ),
        "200"
    );
    assert_eq!(
        s.staging.sql("SELECT domain FROM django_site"),
        "staging.shop.test"
    );
    assert_eq!(
        s.staging
            .sql("SELECT client_id FROM socialaccount_socialapp WHERE provider = 'google'"),
        CLIENT_ID
    );
    assert_eq!(
        s.staging
            .sql("SELECT secret FROM socialaccount_socialapp WHERE provider = 'google'"),
        SECRET
    );
    assert_eq!(
        s.staging
            .sql("SELECT secret FROM socialaccount_socialapp WHERE provider = 'github'"),
        "gh-secret"
    );
    // Owners are the target's user; the replaced database is kept beside it.
    assert_eq!(
        s.staging
            .sql("SELECT tableowner FROM pg_tables WHERE tablename = 'shop_item'"),
        "stageuser"
    );
    assert_eq!(
        s.staging
            .sql("SELECT count(*) FROM pg_database WHERE datname = 'shop__countable_prev'"),
        "1"
    );
    let rows: Vec<(String, Option<u64>)> = report["fixups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_string(), f["rows"].as_u64()))
        .collect();
    assert_eq!(
        rows,
        [
            ("scrub".into(), Some(200)),
            ("scrub".into(), Some(1)),
            ("check".into(), None),
            ("fixup".into(), Some(1))
        ]
    );
    // The buckets: the media pair mirrors the source (staging-only objects deleted),
    // the docs pair adds the source's objects and keeps staging's own.
    let prod_media = objects(&s.a, "prod-media", "files/");
    assert_eq!(objects(&s.b, "staging-media", "files/"), prod_media);
    assert_eq!(
        objects(&s.b, "staging-media", "other/").len(),
        1,
        "outside the prefix: untouched"
    );
    let mut docs = objects(&s.c, "prod-docs", "");
    let staging_docs = objects(&s.c, "staging-docs", "");
    assert_eq!(staging_docs.len(), docs.len() + 1);
    docs.retain(|k, v| staging_docs.get(k) != Some(v));
    assert!(docs.is_empty(), "not copied: {docs:?}");
    let media = &report["buckets"][0];
    assert_eq!(
        (media["copy"].as_u64(), media["delete"].as_u64()),
        (Some(22), Some(3))
    );
    // The 9 MiB document was copied server-side in parts (UploadPartCopy).
    let head = s.c.aws(&[
        "s3api",
        "head-object",
        "--bucket",
        "staging-docs",
        "--key",
        "big.pdf",
    ]);
    assert!(head.stdout.contains("-2\\\""), "{}", head.stdout);
    // The app was stopped for the swap and runs again; prod's was not touched.
    let web_after = s.staging.web_started();
    assert!(
        web_after.starts_with("true ") && web_after != web_before,
        "{web_before} → {web_after}"
    );
    assert_eq!(s.prod.web_started(), prod_web);
    // The ledger of staging has the sync, which is no release.
    let list: serde_json::Value =
        serde_json::from_str(&s.run(&["releases", "staging", "--json"]).ok().stdout).unwrap();
    assert_eq!(list[0]["kind"], "sync");
    assert_eq!(list[0]["outcome"], "succeeded");
    assert_eq!(list[0]["report"]["buckets"][1]["copy"], 11);
}

fn undo_sync_brings_the_earlier_state_back(s: &mut Story) {
    let dry = s.run(&["undo-sync", PAIR, "--dry-run"]).ok();
    assert!(
        dry.stdout
            .contains("put back 1 it replaced and 3 it deleted"),
        "{}",
        dry.stdout
    );
    let web_before = s.staging.web_started();
    s.run(&["undo-sync", PAIR]).ok();
    assert!(
        s.staging_state() == *s.before.as_ref().unwrap(),
        "staging is as it was"
    );
    assert_eq!(
        s.staging.sql("SELECT secret FROM socialaccount_socialapp"),
        "old-secret"
    );
    assert!(s.staging.web_started().starts_with("true "));
    assert_ne!(s.staging.web_started(), web_before);
    let r = s.run(&["undo-sync", PAIR]).fails();
    assert!(r.stderr.contains("nothing to undo"), "{}", r.stderr);
    let list: serde_json::Value =
        serde_json::from_str(&s.run(&["releases", "staging", "--json"]).ok().stdout).unwrap();
    assert_eq!(list[0]["kind"], "undo_sync");
}

fn an_unchanged_second_sync_copies_nothing(s: &mut Story) {
    s.json(&["sync", PAIR, "--json"]);
    // From prod's newest backup this time (its manifest's counts are compared).
    s.run(&["backup", "prod"]).ok();
    let report = s.json(&["sync", PAIR, "--from-backup", "--json"]);
    assert!(
        report["database"]["source"]
            .as_str()
            .unwrap()
            .contains("prod's backup"),
        "{report}"
    );
    assert_eq!(report["database"]["census_checked"], true);
    for (i, skipped) in [(0, 22), (1, 11)] {
        let b = &report["buckets"][i];
        assert_eq!(
            (b["copy"].as_u64(), b["delete"].as_u64(), b["skip"].as_u64()),
            (Some(0), Some(0), Some(skipped)),
            "{b}"
        );
    }
    let fixed = ["auth_user", "django_site", "socialaccount_socialapp"];
    assert_eq!(s.staging.tables(&fixed), s.prod.tables(&fixed));
}

fn an_unchanged_database_is_left_alone(s: &mut Story) {
    // The last sync read a backup; a fresh dump is another source: copied.
    let first = s.json(&["sync", PAIR, "--json"]);
    assert!(first["database"].is_object(), "{first}");
    let backups = s.staging_backups();
    let web = s.staging.web_started();
    let undo_plan = s.run(&["undo-sync", PAIR, "--dry-run"]).ok().stdout;
    // Neither side has written since: no backup, no copy, no restart, undo unchanged.
    let second = s.json(&["sync", PAIR, "--json"]);
    assert!(second["database"].is_null(), "{second}");
    assert!(second["backup_key"].is_null(), "{second}");
    assert!(
        second["database_unchanged"]
            .as_str()
            .unwrap()
            .contains("neither database has changed since the last sync"),
        "{second}"
    );
    assert_eq!(s.staging_backups(), backups);
    assert_eq!(s.staging.web_started(), web);
    assert_eq!(
        s.run(&["undo-sync", PAIR, "--dry-run"]).ok().stdout,
        undo_plan
    );
    let list: serde_json::Value =
        serde_json::from_str(&s.run(&["releases", "staging", "--json"]).ok().stdout).unwrap();
    assert_eq!(list[0]["kind"], "sync");
    assert_eq!(list[0]["outcome"], "succeeded");
    // --force plans the copy anyway.
    let forced = s.json(&["sync", PAIR, "--dry-run", "--force", "--json"]);
    assert!(forced["database_unchanged"].is_null(), "{forced}");
    assert!(!forced["plan"].as_array().unwrap().is_empty(), "{forced}");
    // A write in the source: the next sync copies the database again.
    s.prod
        .script("INSERT INTO shop_item (name, price) VALUES ('written after the sync', 1);");
    let third = s.json(&["sync", PAIR, "--json"]);
    assert!(third["database"].is_object(), "{third}");
    assert_eq!(
        s.staging
            .sql("SELECT count(*) FROM shop_item WHERE name = 'written after the sync'"),
        "1"
    );
    // A write in the target, too.
    s.staging
        .script("DELETE FROM shop_item WHERE name = 'written after the sync';");
    let fourth = s.json(&["sync", PAIR, "--dry-run", "--json"]);
    assert!(fourth["database_unchanged"].is_null(), "{fourth}");
}

fn a_sync_waits_for_no_deploy_of_the_target(s: &mut Story) {
    // Something to copy: a write in prod.
    s.prod
        .script("INSERT INTO shop_item (name, price) VALUES ('while staging deploys', 2);");
    // A deploy of staging holds its lock (the key and place `countable deploy` uses).
    let holder = Command::new("docker")
        .env(
            "DOCKER_HOST",
            format!("unix://{}", s.staging.host.sock().display()),
        )
        .args(["exec", &s.staging.container(), "sh", "-c"])
        .arg("PGAPPNAME='countable deploy staging release 7 by ci' psql -X -qAt -U \"$POSTGRES_USER\" -d postgres -c \"SELECT pg_advisory_lock(hashtext('countable:deploy:' || '$POSTGRES_DB')), pg_sleep(120)\"")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while s
        .staging
        .sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        == "0"
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the holder took no lock"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let backups = s.staging_backups();
    let before = s.staging.tables(&[]);
    let r = s.run(&["sync", PAIR]).fails();
    assert!(
        r.stderr.contains(
            "staging is being deployed or synced: countable deploy staging release 7 by ci"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(s.staging_backups(), backups, "no backup was taken");
    assert_eq!(s.staging.tables(&[]), before);
    // The deploy ends: the sync goes ahead.
    s.staging.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'countable deploy%'");
    let mut holder = holder;
    let _ = holder.wait();
    let done = s.json(&["sync", PAIR, "--json"]);
    assert!(done["database"].is_object(), "{done}");
    assert_eq!(
        s.staging
            .sql("SELECT count(*) FROM shop_item WHERE name = 'while staging deploys'"),
        "1"
    );
}

fn a_destination_changed_by_someone_else_is_copied_again(s: &mut Story) {
    // The big document's copy (multipart source: no MD5 to compare) is overwritten.
    put(
        &s.c,
        &s.tmp.path().join("files"),
        "s3://staging-docs/big.pdf",
        b"edited on staging",
    );
    let plan = s.json(&["sync", PAIR, "--dry-run", "--json"]);
    let docs = &plan["buckets"][1];
    assert_eq!(
        (
            docs["copy"].as_u64(),
            docs["changed_at_destination"].as_u64()
        ),
        (Some(1), Some(1)),
        "{docs}"
    );
    assert_eq!(plan["buckets"][0]["copy"], 0);
}

fn strict_fixup_with_no_rows_leaves_the_target_as_it_was(s: &mut Story) {
    let before = s.staging.tables(&[]);
    let r = s.run(&["sync", "strict-check", "--strict"]).fails();
    assert!(
        r.stderr
            .contains("fixup `an app nobody has` changed no row (--strict)"),
        "{}",
        r.stderr
    );
    assert_eq!(
        s.staging.tables(&[]),
        before,
        "the restored copy was dropped before the swap"
    );
    assert_eq!(
        s.staging
            .sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%countable_new'"),
        "0"
    );
}

fn no_secret_in_any_output(s: &mut Story) {
    for v in [SECRET, CLIENT_ID, "smtp.example.com"] {
        assert!(!s.printed.contains(v), "a secret value was printed: {v}");
    }
    for line in SECRET.lines() {
        assert!(
            !s.printed.contains(line),
            "part of a secret value was printed"
        );
    }
}

fn main() {
    let chapters: &[Chapter<Story>] = &[
        ("refusals_change_nothing", refusals_change_nothing),
        (
            "dry_run_plans_and_changes_nothing",
            dry_run_plans_and_changes_nothing,
        ),
        (
            "first_sync_copies_the_database_and_buckets",
            first_sync_copies_the_database_and_buckets,
        ),
        (
            "undo_sync_brings_the_earlier_state_back",
            undo_sync_brings_the_earlier_state_back,
        ),
        (
            "an_unchanged_second_sync_copies_nothing",
            an_unchanged_second_sync_copies_nothing,
        ),
        (
            "an_unchanged_database_is_left_alone",
            an_unchanged_database_is_left_alone,
        ),
        (
            "a_sync_waits_for_no_deploy_of_the_target",
            a_sync_waits_for_no_deploy_of_the_target,
        ),
        (
            "a_destination_changed_by_someone_else_is_copied_again",
            a_destination_changed_by_someone_else_is_copied_again,
        ),
        (
            "strict_fixup_with_no_rows_leaves_the_target_as_it_was",
            strict_fixup_with_no_rows_leaves_the_target_as_it_was,
        ),
        ("no_secret_in_any_output", no_secret_in_any_output),
    ];
    common::story::run("sync", chapters, setup, drop);
}
