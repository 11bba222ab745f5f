//! On a terminal, pull-db asks before replacing the local database: `n` changes nothing,
//! `y` restores. Driven through a real pseudo-terminal (tmux), as a person would.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn tmux(args: &[&str]) -> Run {
    run(Command::new("tmux").args(args))
}

/// Wait until the pane shows `text`; returns the screen.
fn wait_for(session: &str, text: &str) -> String {
    let t = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]).stdout;
        if screen.contains(text) {
            return screen;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "`{text}` never showed; the screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.0]);
    }
}

#[test]
fn pull_db_asks_on_a_terminal() {
    let s = Scratch::new("prompt");
    s.db_up();
    s.seed("seed", 100);
    let store = s.root().join("backups");
    std::fs::create_dir(&store).unwrap();
    s.dump("seed", &["-Fc"], &store.join("2026-11-30T000000Z.backup"));
    s.set_environments("data_from: prod\nenvironments:\n  prod:\n    backups: backups/\n");
    s.sql_in(
        &s.name,
        "CREATE TABLE mine (v text); INSERT INTO mine VALUES ('local')",
    );
    let before = s.fingerprint(&s.name);
    let session = Session(s.name.clone());
    let script = format!(
        "cd '{}' && {} pull-db; echo EXIT=$?; sleep 600",
        s.root().display(),
        env!("CARGO_BIN_EXE_countable")
    );
    let screen = answer(&session.0, &script, "n");
    assert!(screen.contains("nothing changed"), "{screen}");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(
        s.fingerprint(&s.name),
        before,
        "answering no changed the database"
    );

    let screen = answer(&session.0, &script, "y");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("restored"), "{screen}");
    assert_eq!(s.fingerprint(&s.name), s.fingerprint("seed"));
}

/// Run `script` in a fresh tmux session, answer the prompt with `key`, return the
/// screen once the command has ended.
fn answer(session: &str, script: &str, key: &str) -> String {
    let _ = tmux(&["kill-session", "-t", session]);
    let r = tmux(&[
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "200",
        "-y",
        "50",
        script,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    wait_for(session, "Replace the local database");
    tmux(&["send-keys", "-t", session, key]);
    wait_for(session, "EXIT=")
}
