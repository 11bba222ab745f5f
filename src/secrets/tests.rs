use super::*;

const HOSTILE: &str = "p=q $HOME ${X} # not a comment 'single' \"double\" \\ end\nsecond line";

fn env() -> EnvName {
    EnvName::parse("prod").unwrap()
}

fn sample() -> EnvSecrets {
    EnvSecrets::parse(&env(), "# note\nA=1\n\nB='two'\n").unwrap()
}

/// A project root whose `secrets/prod.key` is a recipient and the identity.
fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    keys::generate(&keys::env_key_path(root.path(), &env())).unwrap();
    root
}

#[test]
fn set_unset_keep_order_and_comments() {
    let mut s = sample();
    s.set("A", HOSTILE);
    s.set("C", "3");
    assert!(s.unset("B"));
    assert!(!s.unset("B"));
    assert_eq!(s.keys().collect::<Vec<_>>(), ["A", "C"]);
    assert_eq!(s.get("A"), Some(HOSTILE));
    let text = s.render();
    assert!(text.starts_with("# note\n"), "{text}");
    assert_eq!(EnvSecrets::parse(&env(), &text).unwrap(), s);
    assert_eq!(crate::envfile::parse(&text), s.entries().to_vec());
}

#[test]
fn debug_shows_keys_never_values() {
    let mut s = sample();
    s.set("SECRET_KEY", "s3cret-value");
    let shown = format!("{s:?}");
    assert!(shown.contains("SECRET_KEY"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn save_and_load_round_trip_to_every_recipient() {
    let root = project();
    assert!(
        load(root.path(), &env()).unwrap().is_none(),
        "no file: None"
    );
    let other = age::x25519::Identity::generate();
    let recipients = keys::secrets_dir(root.path()).join("recipients.txt");
    keys::add_recipient(&recipients, &other.to_public().to_string(), "bob").unwrap();
    let mut s = sample();
    s.set("HOSTILE", HOSTILE);
    let saved = save(root.path(), &env(), &s).unwrap();
    assert_eq!(saved.recipients, 2);
    assert_eq!(saved.readable_by_you, Some(true));
    let bytes = std::fs::read(&saved.file).unwrap();
    assert!(bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!String::from_utf8_lossy(&bytes).contains("HOSTILE"));
    assert_eq!(load(root.path(), &env()).unwrap().unwrap(), s);
    // The other recipient reads the same text.
    let bob = [keys::Key {
        path: PathBuf::from("bob.key"),
        identity: other,
    }];
    let plain = decrypt(&bytes, &bob).unwrap();
    assert_eq!(std::str::from_utf8(&plain).unwrap(), s.render());
    // Unchanged content writes nothing.
    let before = std::fs::metadata(&saved.file).unwrap().modified().unwrap();
    let again = load(root.path(), &env()).unwrap().unwrap();
    let change = save_if_changed(root.path(), &env(), Some(&s), &again).unwrap();
    assert!(matches!(change, Change::Unchanged));
    assert_eq!(
        std::fs::metadata(&saved.file).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn nobody_to_encrypt_to_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let err = save(root.path(), &env(), &sample()).unwrap_err();
    assert!(matches!(err, SecretsError::NoRecipients { .. }), "{err}");
    assert!(err.hint().unwrap().contains("countable secrets keygen"));
    assert!(!secrets_file(root.path(), &env()).exists());
}

#[test]
fn a_file_for_someone_else_names_your_key_and_who_can_fix_it() {
    let root = project();
    save(root.path(), &env(), &sample()).unwrap();
    let bytes = std::fs::read(secrets_file(root.path(), &env())).unwrap();
    let stranger = age::x25519::Identity::generate();
    let public = stranger.to_public().to_string();
    let ids = [keys::Key {
        path: PathBuf::from("mine.key"),
        identity: stranger,
    }];
    let e = decrypt(&bytes, &ids).unwrap_err();
    let file = secrets_file(root.path(), &env());
    let err = classify(e, root.path(), &env(), &file, &ids);
    assert!(
        matches!(err, SecretsError::NotRecipient { listed: false, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&public), "{err}");
    let hint = err.hint().unwrap();
    assert!(hint.contains("recipients.txt") && hint.contains("countable secrets rekey prod"));
    // Once listed, the hint says the file only needs re-encrypting.
    let list = keys::secrets_dir(root.path()).join("recipients.txt");
    keys::add_recipient(&list, &public, "me").unwrap();
    let e = decrypt(&bytes, &ids).unwrap_err();
    let err = classify(e, root.path(), &env(), &file, &ids);
    assert!(matches!(
        err,
        SecretsError::NotRecipient { listed: true, .. }
    ));
    assert!(err
        .hint()
        .unwrap()
        .contains("encrypted before it was added"));
}

#[test]
fn damaged_files_are_told_apart_from_foreign_ones() {
    let root = project();
    let file = secrets_file(root.path(), &env());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "A=plaintext by mistake\n").unwrap();
    let err = load(root.path(), &env()).unwrap_err();
    assert!(matches!(err, SecretsError::Corrupt { .. }), "{err}");
    assert!(err.hint().unwrap().contains("git checkout -- "));
    save(root.path(), &env(), &sample()).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let mut body: Vec<char> = lines[1].chars().collect();
    body[10] = if body[10] == 'A' { 'B' } else { 'A' };
    let flipped: String = body.into_iter().collect();
    lines[1] = &flipped;
    std::fs::write(&file, lines.join("\n")).unwrap();
    let err = load(root.path(), &env()).unwrap_err();
    assert!(matches!(err, SecretsError::Corrupt { .. }), "{err}");
}

#[test]
fn assignments_take_one_value_from_stdin_and_never_echo_it() {
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let got = parse_assignments(&args(&["A=x=y", "B"]), |_| Ok("s3cret\n".into())).unwrap();
    assert_eq!(got[0].0, "A");
    assert_eq!(got[0].1.as_str(), "x=y");
    assert_eq!(got[1].1.as_str(), "s3cret");
    let multi = parse_assignments(&args(&["PEM"]), |_| Ok("l1\nl2\n\n".into())).unwrap();
    assert_eq!(multi[0].1.as_str(), "l1\nl2\n", "only one newline dropped");
    for bad in [
        &["A", "B"][..],
        &["9A=s3cret"],
        &["A-B=s3cret"],
        &["=s3cret"],
    ] {
        let err = parse_assignments(&args(bad), |_| Ok(String::new())).unwrap_err();
        assert!(matches!(err, SecretsError::BadArgument(_)), "{err}");
        assert!(!err.to_string().contains("s3cret"));
    }
}
