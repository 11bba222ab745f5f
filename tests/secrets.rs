//! `countable secrets`: the real binary on a scratch project, with the age CLI (Debian's
//! `age`) as the independent reader of what it writes. No Docker.
//!
//! Every command but `show --reveal` is checked to print no value, on either stream.

// Tests run the age CLI and an editor script from outside; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Hostile values, each with a token no message would contain by chance.
const VALUES: &[(&str, &str)] = &[
    ("PLAIN", "tok-plain-value"),
    ("EQUALS", "tok-eq=a=b=="),
    ("DOLLAR", "tok-dollar $HOME ${HOME} $$ $(id)"),
    ("HASH", "tok-hash #not-a-comment x #y"),
    ("SINGLE", "tok-single it's 'quoted'"),
    ("DOUBLE", "tok-double say \"hi\" \\\" end\\"),
    ("EMPTY", ""),
];
/// Given through stdin: newlines and everything else at once.
const MULTI: &str = "tok-multi-1 = $X # 'a'\ntok-multi-2 \"b\" \\n\n\ntok-multi-3";

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("countable.yml"),
            "project: shop\nenvironments:\n  prod: {}\n  staging: {}\n",
        )
        .unwrap();
        for d in ["home", "run"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The user's own key (the default place under this test's HOME).
    fn user_key(&self) -> PathBuf {
        self.root().join("home/.config/countable/age.key")
    }

    fn file(&self, env: &str) -> PathBuf {
        self.root().join(format!("secrets/{env}.env.age"))
    }

    /// countable with this project's HOME and runtime dir, no key variable, no editor.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = countable(self.root());
        c.args(args)
            .env("HOME", self.root().join("home"))
            .env("XDG_RUNTIME_DIR", self.root().join("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("COUNTABLE_AGE_KEY_FILE")
            .env_remove("VISUAL")
            .env_remove("EDITOR");
        c
    }

    fn json(&self, env: &str, key_file: Option<&Path>) -> BTreeMap<String, String> {
        let mut c = self.cmd(&["secrets", "show", env, "--reveal", "--json"]);
        if let Some(k) = key_file {
            c.env("COUNTABLE_AGE_KEY_FILE", k);
        }
        serde_json::from_str(&run(&mut c).ok().stdout).unwrap()
    }

    /// A project with your key and every value set, through arguments and stdin.
    fn with_values() -> Self {
        let p = Project::new();
        quiet(run(&mut p.cmd(&["secrets", "keygen", "--name", "alice"])).ok());
        let mut args = vec!["secrets".to_string(), "set".into(), "prod".into()];
        args.extend(VALUES.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        quiet(run(&mut p.cmd(&args)).ok());
        let piped = format!("{MULTI}\n");
        quiet(
            run_with_stdin(
                &mut p.cmd(&["secrets", "set", "prod", "MULTI"]),
                piped.as_bytes(),
            )
            .ok(),
        );
        p
    }
}

fn expected() -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = VALUES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.insert("MULTI".into(), MULTI.into());
    m
}

/// No value (nor any line of one) on stdout or stderr.
fn quiet(r: Run) -> Run {
    for v in expected().values().chain([&EDITED.to_string()]) {
        for part in v.lines().filter(|l| l.len() >= 6) {
            assert!(
                !r.stdout.contains(part) && !r.stderr.contains(part),
                "a value leaked: {part:?}\nstdout:\n{}\nstderr:\n{}",
                r.stdout,
                r.stderr
            );
        }
    }
    r
}

fn age_decrypt(key: &Path, file: &Path) -> String {
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(key)
        .arg(file)
        .output()
        .expect("the age CLI (tests/setup installs Debian's age)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn set_show_unset_keep_values_verbatim_and_never_print_them() {
    let p = Project::with_values();
    let recipients = std::fs::read_to_string(p.root().join("secrets/recipients.txt")).unwrap();
    assert!(recipients.contains("# alice"), "{recipients}");
    assert_eq!(p.json("prod", None), expected());

    // Masked: keys only, no value on either stream.
    let shown = quiet(run(&mut p.cmd(&["secrets", "show", "prod"])).ok());
    let mut keys: Vec<&str> = VALUES.iter().map(|(k, _)| *k).collect();
    keys.push("MULTI");
    let want: Vec<String> = keys.iter().map(|k| format!("{k}=********")).collect();
    assert_eq!(shown.stdout.lines().collect::<Vec<_>>(), want);
    let masked: BTreeMap<String, Option<String>> = serde_json::from_str(
        &quiet(run(&mut p.cmd(&["secrets", "show", "prod", "--json"])).ok()).stdout,
    )
    .unwrap();
    assert!(masked.values().all(Option::is_none) && masked.len() == keys.len());

    // The committed file is armored age, readable by the age CLI, and it is exactly
    // the .env `show --reveal` prints.
    let cipher = std::fs::read_to_string(p.file("prod")).unwrap();
    assert!(cipher.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!cipher.contains("tok-") && !cipher.contains("PLAIN"));
    let plain = age_decrypt(&p.user_key(), &p.file("prod"));
    let reveal = run(&mut p.cmd(&["secrets", "show", "prod", "--reveal"])).ok();
    assert_eq!(plain, format!("{}\n", reveal.stdout.trim_end_matches('\n')));
    assert!(plain.contains("MULTI=\"tok-multi-1 = \\$X"), "{plain}");

    // Replace one value, remove another; an unknown key is refused and changes nothing.
    quiet(
        run_with_stdin(
            &mut p.cmd(&["secrets", "set", "prod", "PLAIN"]),
            b"tok-plain-new",
        )
        .ok(),
    );
    quiet(run(&mut p.cmd(&["secrets", "unset", "prod", "HASH", "EMPTY"])).ok());
    let before = std::fs::read(p.file("prod")).unwrap();
    let r = quiet(run(&mut p.cmd(&["secrets", "unset", "prod", "NOPE"])).fails());
    assert!(
        r.stderr.contains("`NOPE` is not set")
            && r.stderr.contains("hint: `countable secrets show prod`")
    );
    assert_eq!(std::fs::read(p.file("prod")).unwrap(), before);
    let mut want = expected();
    want.insert("PLAIN".into(), "tok-plain-new".into());
    want.remove("HASH");
    want.remove("EMPTY");
    assert_eq!(p.json("prod", None), want);

    // A bad name is refused without echoing the argument.
    let r = quiet(run(&mut p.cmd(&["secrets", "set", "prod", "BAD-NAME=tok-plain-value"])).fails());
    assert!(r.stderr.contains("argument 1"), "{}", r.stderr);
    let r = run(&mut p.cmd(&["secrets", "show", "staging"])).fails();
    assert!(
        r.stderr
            .contains("hint: add one: `countable secrets set staging KEY`"),
        "{}",
        r.stderr
    );
}

const EDITED: &str = "tok-edited line one\n  indented \"two\" $HOME";

/// An editor script: logs the modes of its file and directory, then does `$MODE`.
fn editor(p: &Project) -> String {
    let script = p.root().join("editor.sh");
    std::fs::write(
        &script,
        r#"f="$1"; d=$(dirname "$f")
echo "$(stat -c %a "$d") $(stat -c %a "$f") $d" >> "$LOG"
case "$MODE" in
  keep) : ;;
  fail) exit 3 ;;
  bad) printf 'PLAIN=1\ntok-bad-line-without-equals\n' > "$f" ;;
  edit) sed -i '/^PLAIN=/d' "$f"
        printf '# rotated by alice\nEDITED="tok-edited line one\n  indented \\"two\\" $HOME" # three\n' >> "$f" ;;
esac
"#,
    )
    .unwrap();
    format!("sh {}", script.display())
}

fn edit(p: &Project, mode: &str) -> Run {
    let log = p.root().join("editor.log");
    let editor = editor(p);
    run(p
        .cmd(&["secrets", "edit", "prod"])
        .env("EDITOR", editor)
        .env("MODE", mode)
        .env("LOG", &log))
}

/// The editor saw a 0600 file in a 0700 directory, gone now, and nothing is left behind.
fn check_private(p: &Project) {
    let log = std::fs::read_to_string(p.root().join("editor.log")).unwrap();
    let last = log.lines().last().unwrap();
    let mut parts = last.splitn(3, ' ');
    assert_eq!(parts.next(), Some("700"), "{last}");
    assert_eq!(parts.next(), Some("600"), "{last}");
    let dir = PathBuf::from(parts.next().unwrap());
    assert!(dir.starts_with(p.root().join("run")), "{last}");
    assert!(!dir.exists(), "the private directory was removed");
    assert_eq!(std::fs::read_dir(p.root().join("run")).unwrap().count(), 0);
}

#[test]
fn edit_validates_reencrypts_and_leaves_nothing_behind() {
    let p = Project::with_values();
    let before = std::fs::read(p.file("prod")).unwrap();

    // Unchanged content: nothing written (age output is random, so any rewrite shows).
    let r = quiet(edit(&p, "keep").ok());
    assert!(r.stderr.contains("no change"), "{}", r.stderr);
    assert_eq!(std::fs::read(p.file("prod")).unwrap(), before);
    check_private(&p);

    // A failing editor and an invalid file change nothing, and say why without values.
    let r = quiet(edit(&p, "fail").fails());
    assert!(
        r.stderr.contains("exited with") && r.stderr.contains("hint: set VISUAL or EDITOR"),
        "{}",
        r.stderr
    );
    check_private(&p);
    let r = quiet(edit(&p, "bad").fails());
    assert!(
        r.stderr.contains("line 2: expected KEY=value"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("tok-bad"), "{}", r.stderr);
    check_private(&p);
    assert_eq!(std::fs::read(p.file("prod")).unwrap(), before);

    // A real edit: a value removed, a multi-line one written raw, a comment kept.
    let r = quiet(edit(&p, "edit").ok());
    assert!(r.stderr.contains("prod: edited"), "{}", r.stderr);
    check_private(&p);
    let mut want = expected();
    want.remove("PLAIN");
    want.insert("EDITED".into(), EDITED.into());
    assert_eq!(p.json("prod", None), want);
    let plain = age_decrypt(&p.user_key(), &p.file("prod"));
    assert!(
        plain.contains("# rotated by alice\nEDITED=\"tok-edited line one\\n"),
        "{plain}"
    );
}

#[test]
fn key_errors_say_what_to_do_and_change_nothing() {
    let p = Project::with_values();
    let before = std::fs::read(p.file("prod")).unwrap();
    let show = |key: Option<&Path>| {
        let mut c = p.cmd(&["secrets", "show", "prod"]);
        if let Some(k) = key {
            c.env("COUNTABLE_AGE_KEY_FILE", k);
        }
        quiet(run(&mut c).fails())
    };

    // A missing key: named by the variable, or none at the defaults.
    let r = show(Some(&p.root().join("jenkins.key")));
    assert!(
        r.stderr.contains("COUNTABLE_AGE_KEY_FILE names")
            && r.stderr.contains("jenkins.key, which does not exist"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("hint: point COUNTABLE_AGE_KEY_FILE at your age key file"),
        "{}",
        r.stderr
    );
    std::fs::rename(p.user_key(), p.root().join("moved.key")).unwrap();
    let r = show(None);
    assert!(
        r.stderr.contains("no age key to decrypt") && r.stderr.contains("age.key"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint: run `countable secrets keygen`"),
        "{}",
        r.stderr
    );
    std::fs::rename(p.root().join("moved.key"), p.user_key()).unwrap();

    // A wrong identity: not a secret key at all.
    let public = p.root().join("public.key");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(p.user_key())
        .output()
        .unwrap();
    std::fs::write(&public, &out.stdout).unwrap();
    let r = show(Some(&public));
    assert!(
        r.stderr
            .contains("is not an age identity: it holds a public key"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint: ") && r.stderr.contains("AGE-SECRET-KEY-1"),
        "{}",
        r.stderr
    );

    // Encrypted to someone else: a valid key that is no recipient.
    let stranger = p.root().join("stranger.key");
    assert!(Command::new("age-keygen")
        .arg("-o")
        .arg(&stranger)
        .output()
        .unwrap()
        .status
        .success());
    let r = show(Some(&stranger));
    assert!(
        r.stderr.contains("it is not encrypted to your key (age1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("countable secrets rekey prod"),
        "{}",
        r.stderr
    );
    // The same refusals stop a write, and nothing was written.
    let r = quiet(
        run(p
            .cmd(&["secrets", "set", "prod", "X=1"])
            .env("COUNTABLE_AGE_KEY_FILE", &stranger))
        .fails(),
    );
    assert!(
        r.stderr.contains("not encrypted to your key"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(p.file("prod")).unwrap(), before);

    // A damaged file.
    std::fs::write(
        p.file("staging"),
        "STAGING=plaintext committed by mistake\n",
    )
    .unwrap();
    let r = run(&mut p.cmd(&["secrets", "show", "staging"])).fails();
    assert!(
        r.stderr.contains("is damaged or not an age file")
            && r.stderr.contains("hint: restore it from git"),
        "{}",
        r.stderr
    );
}

#[test]
fn two_recipients_both_read_after_a_rekey() {
    let p = Project::with_values();
    // Bob made his key with age-keygen; keygen on an existing key only adds it.
    let bob = p.root().join("bob.key");
    assert!(Command::new("age-keygen")
        .arg("-o")
        .arg(&bob)
        .output()
        .unwrap()
        .status
        .success());
    let r = quiet(
        run(&mut p.cmd(&[
            "secrets",
            "keygen",
            "--output",
            bob.to_str().unwrap(),
            "--name",
            "bob",
        ]))
        .ok(),
    );
    assert!(r.stderr.contains("exists; keeping it"), "{}", r.stderr);
    let recipients = std::fs::read_to_string(p.root().join("secrets/recipients.txt")).unwrap();
    assert_eq!(
        recipients.lines().filter(|l| l.starts_with("age1")).count(),
        2,
        "{recipients}"
    );

    // Listed but not yet a recipient of the file: the hint says to re-encrypt.
    let r = quiet(
        run(p
            .cmd(&["secrets", "show", "prod"])
            .env("COUNTABLE_AGE_KEY_FILE", &bob))
        .fails(),
    );
    assert!(
        r.stderr.contains("encrypted before it was added") && r.stderr.contains("rekey prod"),
        "{}",
        r.stderr
    );
    let r = quiet(run(&mut p.cmd(&["secrets", "rekey", "prod"])).ok());
    assert!(
        r.stderr.contains("encrypted to 2 recipients"),
        "{}",
        r.stderr
    );

    assert_eq!(p.json("prod", Some(&bob)), expected());
    assert_eq!(p.json("prod", None), expected());
    assert_eq!(
        age_decrypt(&bob, &p.file("prod")),
        age_decrypt(&p.user_key(), &p.file("prod"))
    );

    // A project key file (gitignored, like a vault key) is a recipient and an identity.
    let vault = p.root().join("secrets/staging.key");
    quiet(
        run(&mut p.cmd(&[
            "secrets",
            "keygen",
            "--output",
            vault.to_str().unwrap(),
            "--no-add",
        ]))
        .ok(),
    );
    quiet(
        run_with_stdin(
            &mut p.cmd(&["secrets", "set", "staging", "PLAIN"]),
            b"tok-plain-value",
        )
        .ok(),
    );
    let r = quiet(run(&mut p.cmd(&["secrets", "show", "staging"])).ok());
    assert_eq!(r.stdout, "PLAIN=********\n");
    // Encrypted to the team and the vault key: bob, alice and the vault key each read it.
    assert_eq!(
        age_decrypt(&vault, &p.file("staging")),
        "PLAIN='tok-plain-value'\n"
    );
    assert_eq!(
        age_decrypt(&bob, &p.file("staging")),
        "PLAIN='tok-plain-value'\n"
    );
}
