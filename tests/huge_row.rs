//! import-db of plain dumps holding one huge row (a 150 MB bytea value), made by the
//! real pg_dump in both shapes, COPY and `--inserts`: countable's own peak memory stays
//! bounded while the row streams through its SQL filter into psql.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// The bytea value's size.
const VALUE: u64 = 150 * 1024 * 1024;
/// The most countable itself may hold, whatever the row.
const PEAK_LIMIT_KIB: u64 = 64 * 1024;

/// The peak resident memory of `pid` itself (not its children), from the kernel's
/// high-water mark, while it lives.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `countable import-db FILE` in the project; its exit status, stderr and own peak RSS.
fn import_measured(s: &Scratch, file: &Path) -> (Run, u64) {
    let mut child = s
        .countable()
        .arg("import-db")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn countable");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).map(|_| s)
    });
    let mut peak = 0;
    let status = loop {
        // VmHWM only grows; the last reading before exit is the peak.
        if let Some(kib) = vm_hwm_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap().unwrap_or_default(),
        stderr: err.join().unwrap().unwrap_or_default(),
    };
    (run, peak)
}

#[test]
fn a_huge_row_restores_in_bounded_memory() {
    let s = Scratch::new("huge");
    s.db_up();
    s.sql_in("postgres", "CREATE DATABASE big");
    s.sql_in(
        "big",
        &format!(
            "CREATE TABLE public.blob (id int PRIMARY KEY, data bytea);
             INSERT INTO public.blob SELECT 1, convert_to(repeat('countable', {}) || repeat('x', {}), 'UTF8')",
            VALUE / 9,
            VALUE % 9
        ),
    );
    let want = s.sql_in(
        "big",
        "SELECT length(data) || ':' || md5(data) FROM public.blob",
    );
    assert!(want.starts_with(&format!("{VALUE}:")), "{want}");
    let fx = tempfile::tempdir().unwrap();
    s.dump("big", &[], &fx.path().join("copy.sql"));
    // The same value in a second shape, with another id so each import shows.
    s.sql_in("big", "UPDATE public.blob SET id = 2");
    s.dump("big", &["--inserts"], &fx.path().join("inserts.sql"));
    let name = s.name.clone();
    for (file, id, shape) in [
        ("copy.sql", "1", "COPY public.blob"),
        ("inserts.sql", "2", "INSERT INTO public.blob"),
    ] {
        let path = fx.path().join(file);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 2 * VALUE, "{file}: the value is hex in one line");
        sh(fx.path(), &format!("grep -q '^{shape}' {file}"));
        let (r, peak) = import_measured(&s, &path);
        let r = r.ok();
        eprintln!(
            "{file} ({} MiB, {shape}): countable's peak RSS {} MiB",
            size >> 20,
            peak >> 10
        );
        assert!(
            peak <= PEAK_LIMIT_KIB,
            "{file}: countable's peak RSS was {peak} KiB (limit {PEAK_LIMIT_KIB} KiB)\n{}",
            r.stderr
        );
        assert!(peak > 0, "no VmHWM reading for countable");
        let got = s.sql_in(
            &name,
            "SELECT id || ' ' || length(data) || ':' || md5(data) FROM public.blob",
        );
        assert_eq!(got, format!("{id} {want}"), "{file} did not round-trip");
    }
}
