//! Refusals and environment faults: each exits 1 with an error, a `hint:`, and writes
//! nothing. Runs the real binary; the fault cases need no running project.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;

use common::*;

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn new_refuses_bad_names_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in [
        "My-Shop", "2shop", "shop.io", "class", "django", "my shop", "",
    ] {
        let r = run(countable(tmp.path()).args(["new", bad, "--yes"])).fails();
        assert!(
            r.stderr.contains("not a valid project name"),
            "{bad}: {}",
            r.stderr
        );
        assert!(
            listing(tmp.path()).is_empty(),
            "{bad} wrote {:?}",
            listing(tmp.path())
        );
    }
    let r = run(countable(tmp.path()).args(["new", "My-Shop"])).fails();
    assert!(
        r.stderr.contains("hint: countable new my_shop"),
        "{}",
        r.stderr
    );
}

#[test]
fn new_refuses_a_non_empty_directory_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("shop")).unwrap();
    std::fs::write(tmp.path().join("shop/notes.txt"), "mine").unwrap();
    let r = run(countable(tmp.path()).args(["new", "shop", "--yes"])).fails();
    assert!(r.stderr.contains("exists and is not empty"), "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(listing(&tmp.path().join("shop")), vec!["notes.txt"]);

    run(countable(tmp.path()).args(["new", "shop", "--yes", "--force"])).ok();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("shop/notes.txt")).unwrap(),
        "mine"
    );
    assert!(tmp.path().join("shop/compose.yaml").is_file());
}

#[test]
fn new_refuses_an_unwritable_location() {
    // /proc refuses new directories even to root.
    let r = run(countable(Path::new("/proc")).args(["new", "shop", "--yes"])).fails();
    assert!(r.stderr.contains("cannot write in /proc"), "{}", r.stderr);
    assert!(!Path::new("/proc/shop").exists());
}

#[test]
fn new_refuses_bad_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(countable(tmp.path()).args(["new", "shop", "--yes", "--python", "three"])).fails();
    assert!(r.stderr.contains("not a Python version"));
    let r = run(countable(tmp.path()).args(["new", "shop", "--yes", "--db-image", "has space"]))
        .fails();
    assert!(r.stderr.contains("not an image name"));
    let r = run(countable(tmp.path()).args(["new", "shop", "--port", "0"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn new_without_terminal_takes_defaults_and_writes_a_private_env() {
    let tmp = tempfile::tempdir().unwrap();
    run(countable(tmp.path()).args(["new", "shop"])).ok();
    let root = tmp.path().join("shop");
    let compose = std::fs::read_to_string(root.join("compose.yaml")).unwrap();
    assert!(
        compose.contains("image: postgres:17"),
        "official images by default"
    );
    assert!(compose.contains("image: nginx:1.28"));
    assert!(compose.contains("\"8000:80\""));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.starts_with("# ") && dockerfile.contains("FROM python:3.12-slim"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join(".env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let gitignore = std::fs::read_to_string(root.join(".gitignore")).unwrap();
    assert!(gitignore.lines().any(|l| l == ".env"));
    let secret = countable::envfile::read_value(&root.join(".env"), "DJANGO_SECRET_KEY")
        .unwrap()
        .unwrap();
    assert!(secret.len() >= 50);
    let example = countable::envfile::read_value(&root.join(".env.example"), "DJANGO_SECRET_KEY")
        .unwrap()
        .unwrap();
    assert_eq!(example, "");
    // Another project gets other secrets.
    run(countable(tmp.path()).args(["new", "shop2"])).ok();
    let other = countable::envfile::read_value(&tmp.path().join("shop2/.env"), "DJANGO_SECRET_KEY")
        .unwrap()
        .unwrap();
    assert_ne!(secret, other);
}

#[test]
fn commands_outside_a_project_say_where_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in [&["up"][..], &["status"], &["down"], &["logs"]] {
        let r = run(countable(tmp.path()).args(cmd)).fails();
        assert!(r.stderr.contains("no countable.yml"), "{}", r.stderr);
        assert!(r.stderr.contains("countable new"), "{}", r.stderr);
    }
}

#[test]
fn invalid_config_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("countable.yml"),
        "project: shop\nprot: 80\n",
    )
    .unwrap();
    let r = run(countable(tmp.path()).arg("status")).fails();
    assert!(r.stderr.contains("unknown field `prot`"), "{}", r.stderr);
}

#[test]
fn compose_v1_or_none_is_refused_with_the_way_to_v2() {
    let tmp = tempfile::tempdir().unwrap();
    run(countable(tmp.path()).args(["new", "shop", "--yes"])).ok();
    let root = tmp.path().join("shop");
    let fake = tmp.path().join("docker-compose-v1");
    std::fs::write(&fake, "#!/bin/sh\necho 1.29.2\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = run(countable(&root).arg("up").env("COUNTABLE_COMPOSE", &fake)).fails();
    assert!(
        r.stderr.contains("only Docker Compose 1.29.2 was found"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint: install Compose v2"),
        "{}",
        r.stderr
    );
    let r = run(countable(&root)
        .arg("up")
        .env("COUNTABLE_COMPOSE", "/nonexistent/compose"))
    .fails();
    assert!(
        r.stderr.contains("Docker Compose v2 was not found"),
        "{}",
        r.stderr
    );
}

#[test]
fn daemon_down_is_reported_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    run(countable(tmp.path()).args(["new", "shop", "--yes"])).ok();
    let r = run(countable(&tmp.path().join("shop"))
        .arg("status")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"))
    .fails();
    assert!(
        r.stderr
            .contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("DOCKER_HOST"), "{}", r.stderr);
    // `up` pings before it starts anything.
    let r = run(countable(&tmp.path().join("shop"))
        .arg("up")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"))
    .fails();
    assert!(
        r.stderr.contains("cannot reach the Docker engine"),
        "{}",
        r.stderr
    );
}

#[test]
fn usage_errors_exit_1_and_version_and_completions_work() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(countable(tmp.path()).arg("bogus"));
    assert_eq!(r.code, 1);
    let r = run(countable(tmp.path()).arg("--version")).ok();
    assert_eq!(
        r.stdout.trim(),
        format!("countable {}", env!("CARGO_PKG_VERSION"))
    );
    for shell in ["bash", "zsh", "fish"] {
        let r = run(countable(tmp.path()).args(["completions", shell])).ok();
        for sub in ["new", "init", "status", "logs"] {
            assert!(r.stdout.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(r.stdout.len() > 500, "{shell} completion is too short");
    }
}

#[test]
fn dry_run_prints_the_exact_commands() {
    let tmp = tempfile::tempdir().unwrap();
    run(countable(tmp.path()).args(["new", "shop", "--yes"])).ok();
    let root = tmp.path().join("shop");
    let r = run(countable(&root).args(["up", "--dry-run"])).ok();
    let root_s = root.display().to_string();
    assert!(r.stdout.contains(&format!("docker compose -p shop --project-directory {root_s} -f {root_s}/compose.yaml -f {root_s}/compose.override.yaml up --detach --wait")), "{}", r.stdout);
    assert!(
        r.stdout.contains("up --build --detach --wait"),
        "{}",
        r.stdout
    );
    let r = run(countable(&root).args(["down", "--volumes", "--dry-run"])).ok();
    assert!(
        r.stdout.trim().ends_with("down --remove-orphans --volumes"),
        "{}",
        r.stdout
    );
}

/// A project made by `countable new` in `tmp` whose `prod` environment is `env_yaml`,
/// with a directory store holding one backup.
fn project_with_prod(tmp: &Path, env_yaml: &str) -> std::path::PathBuf {
    run(countable(tmp).args(["new", "shop", "--yes"])).ok();
    let root = tmp.join("shop");
    std::fs::create_dir(root.join("backups")).unwrap();
    std::fs::write(root.join("backups/2026-11-30T020000Z.backup"), b"PGDMP").unwrap();
    let path = root.join("countable.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let head = &text[..text.find("environments:").unwrap()];
    std::fs::write(
        &path,
        format!("{head}environments:\n  prod:\n    backups: backups/\n{env_yaml}"),
    )
    .unwrap();
    root
}

#[test]
fn a_remote_environment_without_its_db_does_not_suggest_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = project_with_prod(
        tmp.path(),
        "    docker_host: unix:///var/run/docker.sock\n    compose_project: nothing-runs-as-this\n",
    );
    let r = run(countable(&root).args(["backup", "prod"])).fails();
    assert!(
        r.stderr
            .contains("environment `prod` has no running `db` container"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("compose_project"), "{}", r.stderr);
    assert!(!r.stderr.contains("countable up"), "{}", r.stderr);
}

#[test]
fn an_ssh_docker_host_failure_does_not_blame_docker_host() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens for ssh on loopback here: the connection is refused at once.
    let root = project_with_prod(tmp.path(), "    docker_host: ssh://nobody@127.0.0.1\n");
    let t = std::time::Instant::now();
    let r = run(countable(&root)
        .args(["backup", "prod"])
        .env("DOCKER_HOST", "unix:///var/run/docker.sock"))
    .fails();
    assert!(t.elapsed().as_secs() < 30, "took {:?}", t.elapsed());
    assert!(r.stderr.contains("ssh://nobody@127.0.0.1"), "{}", r.stderr);
    let hint = &r.stderr[r.stderr.find("\n\nhint: ").unwrap()..];
    assert!(!hint.contains("DOCKER_HOST"), "{}", r.stderr);
    assert!(
        hint.contains("ssh nobody@127.0.0.1 docker info"),
        "{}",
        r.stderr
    );
}

#[test]
fn backups_of_an_environment_need_no_compose() {
    let tmp = tempfile::tempdir().unwrap();
    let root = project_with_prod(tmp.path(), "");
    // No compose plugin (an empty docker config) and only Debian's Compose v1 on PATH.
    let empty = tempfile::tempdir().unwrap();
    let without = |cmd: &mut std::process::Command| {
        cmd.env("DOCKER_CONFIG", empty.path())
            .env("PATH", "/usr/bin:/bin");
    };
    let mut up = countable(&root);
    up.arg("up");
    without(&mut up);
    let r = run(&mut up).fails();
    assert!(
        r.stderr.contains("Compose"),
        "compose is really missing: {}",
        r.stderr
    );
    let mut list = countable(&root);
    list.args(["backups", "prod"]);
    without(&mut list);
    let r = run(&mut list).ok();
    assert!(
        r.stdout.contains("2026-11-30T020000Z.backup"),
        "{}",
        r.stdout
    );
}

#[test]
fn import_db_no_keep_without_a_terminal_needs_yes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = project_with_prod(tmp.path(), "");
    let dump = root.join("backups/2026-11-30T020000Z.backup");
    let r = run(countable(&root)
        .arg("import-db")
        .arg(&dump)
        .arg("--no-keep"))
    .fails();
    assert!(
        r.stderr.contains("no terminal is here to confirm it"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--no-keep --yes"), "{}", r.stderr);
    // Nothing was started: no container of the project exists.
    let ps = run(std::process::Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        "label=com.docker.compose.project=shop",
    ]));
    assert_eq!(ps.stdout.trim(), "", "a container was made");
    // The same from stdin.
    let r = run(countable(&root).args(["import-db", "-", "--no-keep"])).fails();
    assert!(r.stderr.contains("--no-keep --yes"), "{}", r.stderr);
}
