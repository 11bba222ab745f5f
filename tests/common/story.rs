//! Stories: an integration test as chapters run in order on one setup (a test binary
//! with `harness = false`), each building on the state the one before left, as a real
//! environment's history does. The setup (test hosts, servers) is made once.
//!
//! `cargo test --test NAME -- WORD` runs the chapters up to and including the first
//! whose name contains WORD; `--list` lists them (as libtest does, for tooling).

use std::time::Instant;

/// A chapter: its name and what it does to the story.
pub type Chapter<S> = (&'static str, fn(&mut S));

/// Run `chapters` of story `name` on what `setup` makes, stopping at the first that
/// fails; `finish` gets the story afterwards, failed or not. Exits 1 on a failure.
pub fn run<S>(
    name: &str,
    chapters: &[Chapter<S>],
    setup: impl FnOnce() -> S,
    finish: impl FnOnce(S),
) {
    if std::env::args().any(|a| a == "--list") {
        for (n, _) in chapters {
            println!("{n}: test");
        }
        return;
    }
    let last = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|w| chapters.iter().position(|(n, _)| n.contains(w.as_str())));
    let started = Instant::now();
    let mut story = setup();
    eprintln!("{name}: setup ({:.0} s)", started.elapsed().as_secs_f64());
    let mut failed = None;
    for (i, (chapter, f)) in chapters.iter().enumerate() {
        if last.is_some_and(|l| i > l) {
            break;
        }
        let started = Instant::now();
        eprintln!("test {name}::{chapter} ...");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut story)));
        match r {
            Ok(()) => eprintln!(
                "test {name}::{chapter} ... ok ({:.0} s)",
                started.elapsed().as_secs_f64()
            ),
            Err(_) => {
                eprintln!("test {name}::{chapter} ... FAILED");
                failed = Some(*chapter);
                break;
            }
        }
    }
    finish(story);
    if let Some(chapter) = failed {
        eprintln!("{name}: {chapter} failed; later chapters did not run");
        std::process::exit(1);
    }
    eprintln!("test result: ok");
}
