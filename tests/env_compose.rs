//! `.env` values reach a container verbatim through compose's own env-file parsing:
//! countable's writer, the real `docker compose`, a real container.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

#[test]
fn hostile_env_values_reach_the_container_verbatim() {
    require_images();
    let values: Vec<(String, String)> = [
        "a=b=c",
        "$HOME and ${HOME} and $$ and $(id)",
        "# not a comment",
        "x #y",
        "it's",
        "say \"hi\"",
        "both ' and \" and $x",
        "ends with backslash\\",
        "back\\slash\\n not a newline",
        "multi\nline",
        "",
        " spaces around ",
        "ünïcødé ✓",
        "`cmd`;|&<>*?",
    ]
    .iter()
    .enumerate()
    .map(|(i, v)| (format!("HOSTILE_{i}"), v.to_string()))
    .chain((0..5).map(|i| (format!("RANDOM_{i}"), countable::envfile::random_secret(64))))
    .collect();
    let entries: Vec<(&str, String)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();

    let tmp = tempfile::tempdir().unwrap();
    countable::envfile::write_secret_file(
        &tmp.path().join(".env"),
        &countable::envfile::render(&entries),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("compose.yaml"),
        format!(
            "services:\n  probe:\n    image: {PYTHON_IMAGE}\n    env_file: .env\n    command: [\"python\", \"-c\", \"import json, os; print(json.dumps({{k: v for k, v in os.environ.items() if k.startswith(('HOSTILE_', 'RANDOM_'))}}))\"]\n"
        ),
    )
    .unwrap();
    let name = unique_name("envprobe");
    let r = run(std::process::Command::new("docker")
        .args(["compose", "-p", &name, "run", "--rm", "-T", "probe"])
        .current_dir(tmp.path()));
    let _ = std::process::Command::new("docker")
        .args(["compose", "-p", &name, "down", "--remove-orphans"])
        .current_dir(tmp.path())
        .output();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = r.stdout.lines().last().unwrap();
    let got: std::collections::BTreeMap<String, String> = serde_json::from_str(line).unwrap();
    for (k, v) in &values {
        assert_eq!(
            got.get(k),
            Some(v),
            "{k} did not survive compose's env-file parsing"
        );
    }
}
