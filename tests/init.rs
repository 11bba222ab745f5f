//! `countable init` refuses what it cannot adopt, writing nothing. The shapes it adopts
//! (startproject, `wagtail start`, a team's own compose file) are in tests/init_corpus.rs.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

#[test]
fn init_refuses_a_directory_without_django() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(countable(tmp.path()).args(["init", "--yes"])).fails();
    assert!(r.stderr.contains("has no manage.py"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn init_with_a_bad_name_suggests_init_not_new() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("manage.py"),
        "import os\nos.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"mysite.settings\")\n",
    )
    .unwrap();
    let r = run(countable(tmp.path()).args(["init", "--yes", "--name", "My-Shop"])).fails();
    assert!(
        r.stderr.contains("not a valid project name"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint: countable init --name my_shop"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("countable new"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "wrote nothing"
    );
}

/// A team compose file countable cannot map (no PostgreSQL service) is refused before
/// anything is written, with the way out.
#[test]
fn init_refuses_a_team_compose_file_without_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(
        root.join("manage.py"),
        "import os\nos.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"mysite.settings\")\n",
    )
    .unwrap();
    std::fs::write(
        root.join("docker-compose.yml"),
        "services:\n  db:\n    image: mysql:8\n  web:\n    build: .\n",
    )
    .unwrap();
    let r = run(countable(root).args(["init", "--yes", "--name", "shop"])).fails();
    assert!(
        r.stderr
            .contains("docker-compose.yml has no PostgreSQL service"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("hint: add a db service with a postgres image"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_dir(root).unwrap().count(), 2, "wrote nothing");
}
