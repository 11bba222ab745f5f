//! Who can read an environment's secrets: the age identities countable decrypts with
//! and the X25519 recipients it encrypts to, and making a new key.
//!
//! Identities, first match wins: `COUNTABLE_AGE_KEY_FILE` (alone, when set: Jenkins'
//! credential file), else every one of `secrets/<env>.key` (the project's own key file,
//! gitignored, like a vault key) and `~/.config/countable/age.key` (yours) that exists.
//! Recipients: `secrets/<env>.recipients.txt` if it exists, else
//! `secrets/recipients.txt`, plus the public half of `secrets/<env>.key`.
//!
//! It never prints, logs or puts into an error a secret key or a line of a key file.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519;
use anyhow::Context;
use zeroize::Zeroizing;

use super::SecretsError;
use crate::names::EnvName;

/// The variable that names the identity file (Jenkins: a secret file credential).
pub const KEY_FILE_VAR: &str = "COUNTABLE_AGE_KEY_FILE";

/// One secret key and the file it came from.
pub struct Key {
    pub path: PathBuf,
    pub identity: x25519::Identity,
}

impl Key {
    /// Its public half, `age1…`.
    pub fn public(&self) -> String {
        self.identity.to_public().to_string()
    }
}

/// The recipients of an environment's file and where countable found them.
pub struct Recipients {
    /// The recipients file in force (it may not exist).
    pub file: PathBuf,
    pub list: Vec<x25519::Recipient>,
}

impl Recipients {
    pub fn contains(&self, public: &str) -> bool {
        self.list.iter().any(|r| r.to_string() == public)
    }
}

pub fn secrets_dir(root: &Path) -> PathBuf {
    root.join("secrets")
}

/// `secrets/<env>.key`: the project's key file for `env`, kept out of git.
pub fn env_key_path(root: &Path, env: &EnvName) -> PathBuf {
    secrets_dir(root).join(format!("{env}.key"))
}

/// `$XDG_CONFIG_HOME/countable/age.key`, else `~/.config/countable/age.key`.
pub fn user_key_path() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("countable").join("age.key"))
}

/// The identity file named by `COUNTABLE_AGE_KEY_FILE`, if set.
pub fn key_file_var() -> Option<PathBuf> {
    std::env::var_os(KEY_FILE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The keys countable decrypts `env`'s secrets with (see the module doc for the order).
pub fn identities(root: &Path, env: &EnvName, file: &Path) -> Result<Vec<Key>, SecretsError> {
    if let Some(path) = key_file_var() {
        if !path.is_file() {
            return Err(SecretsError::MissingKey {
                env: env.clone(),
                file: file.to_path_buf(),
                tried: vec![path],
                from_var: true,
            });
        }
        return read_key_file(&path);
    }
    let tried: Vec<PathBuf> = [Some(env_key_path(root, env)), user_key_path()]
        .into_iter()
        .flatten()
        .collect();
    let mut keys = Vec::new();
    for path in tried.iter().filter(|p| p.is_file()) {
        keys.extend(read_key_file(path)?);
    }
    if keys.is_empty() {
        return Err(SecretsError::MissingKey {
            env: env.clone(),
            file: file.to_path_buf(),
            tried,
            from_var: false,
        });
    }
    Ok(keys)
}

/// The secret keys in an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments).
pub fn read_key_file(path: &Path) -> Result<Vec<Key>, SecretsError> {
    let bad = |why: &str| SecretsError::BadKey {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| bad(&e.to_string()))?);
    let text = std::str::from_utf8(&text).map_err(|_| bad("it is not text"))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let why = if line.starts_with("AGE-SECRET-KEY-1") {
            match x25519::Identity::from_str(line) {
                Ok(identity) => {
                    keys.push(Key {
                        path: path.to_path_buf(),
                        identity,
                    });
                    continue;
                }
                Err(_) => format!("line {} is a damaged AGE-SECRET-KEY-1… key", i + 1),
            }
        } else if line.starts_with("age1") {
            "it holds a public key (age1…); the public key belongs in secrets/recipients.txt, the secret key (AGE-SECRET-KEY-1…) in this file".into()
        } else if line.starts_with("-----BEGIN") || line.starts_with("ssh-") {
            "it is an SSH or PEM key; countable reads age X25519 keys".into()
        } else if line.starts_with("AGE-PLUGIN-") {
            "it is an age plugin identity; countable reads age X25519 keys".into()
        } else {
            format!("line {} is not an age secret key", i + 1)
        };
        return Err(bad(&why));
    }
    if keys.is_empty() {
        return Err(bad("it holds no key"));
    }
    Ok(keys)
}

/// The recipients file in force for `env`.
pub fn recipients_file(root: &Path, env: &EnvName) -> PathBuf {
    let own = secrets_dir(root).join(format!("{env}.recipients.txt"));
    if own.is_file() {
        own
    } else {
        secrets_dir(root).join("recipients.txt")
    }
}

/// Everyone `env`'s secrets are encrypted to (deduplicated; may be empty).
pub fn recipients(root: &Path, env: &EnvName) -> Result<Recipients, SecretsError> {
    let file = recipients_file(root, env);
    let mut list: Vec<x25519::Recipient> = Vec::new();
    if file.is_file() {
        let text = std::fs::read_to_string(&file).map_err(|e| SecretsError::Io {
            path: file.clone(),
            source: e,
        })?;
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let r = x25519::Recipient::from_str(entry).map_err(|_| SecretsError::BadRecipient {
                path: file.clone(),
                line: i + 1,
            })?;
            list.push(r);
        }
    }
    let env_key = env_key_path(root, env);
    if env_key.is_file() {
        list.extend(
            read_key_file(&env_key)?
                .iter()
                .map(|k| k.identity.to_public()),
        );
    }
    let mut seen = std::collections::HashSet::new();
    list.retain(|r| seen.insert(r.to_string()));
    Ok(Recipients { file, list })
}

/// Create a new key at `path` (mode 0600, its directory 0700 when countable makes it),
/// in the format of `age-keygen`; returns its public key. Never overwrites.
pub fn generate(path: &Path) -> anyhow::Result<String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            b.create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let identity = x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let secret = identity.to_string();
    let text = Zeroizing::new(format!(
        "# created: {created}\n# public key: {public}\n{}\n",
        secret.expose_secret()
    ));
    crate::envfile::write_secret_file(path, &text)?;
    Ok(public)
}

/// Add `public` (with `# label`) to the recipients file unless it is there already;
/// true when it was added.
pub fn add_recipient(file: &Path, public: &str, label: &str) -> anyhow::Result<bool> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    if text
        .lines()
        .any(|l| l.split('#').next().unwrap_or("").trim() == public)
    {
        return Ok(false);
    }
    let mut out = text;
    if out.is_empty() {
        out.push_str("# age public keys (age1…) that can read this project's secrets, one a line.\n# Add one with `countable secrets keygen`, then an existing recipient runs\n# `countable secrets rekey <env>` for every environment.\n");
    } else if !out.ends_with('\n') {
        out.push('\n');
    }
    let label = label.replace('\n', " ");
    out.push_str(&format!("{public} # {label}\n"));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    super::write_atomically(file, out.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_read_or_refused_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.key");
        let public = generate(&good).unwrap();
        assert!(generate(&good).is_err(), "never overwrites");
        let keys = read_key_file(&good).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].public(), public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&good).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let cases = [
            (public.clone(), "public key"),
            ("ssh-ed25519 AAAAC3Nz s3cret".into(), "SSH"),
            ("AGE-SECRET-KEY-1S3CRET".into(), "damaged"),
            ("s3cret\n".into(), "line 1 is not"),
            ("# only a comment\n".into(), "no key"),
        ];
        for (text, want) in cases {
            let p = dir.path().join("bad.key");
            std::fs::write(&p, &text).unwrap();
            let err = read_key_file(&p).err().expect("refused").to_string();
            assert!(err.contains(want), "{err}");
            assert!(!err.to_lowercase().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn recipients_come_from_the_file_and_the_env_key() {
        let root = tempfile::tempdir().unwrap();
        let env = EnvName::parse("prod").unwrap();
        assert!(recipients(root.path(), &env).unwrap().list.is_empty());
        let a = x25519::Identity::generate().to_public().to_string();
        let file = secrets_dir(root.path()).join("recipients.txt");
        assert!(add_recipient(&file, &a, "alice").unwrap());
        assert!(!add_recipient(&file, &a, "alice").unwrap(), "idempotent");
        let env_key = generate(&env_key_path(root.path(), &env)).unwrap();
        let r = recipients(root.path(), &env).unwrap();
        assert_eq!(r.list.len(), 2);
        assert!(r.contains(&a) && r.contains(&env_key));
        // A per-environment list replaces the team's.
        let own = secrets_dir(root.path()).join("prod.recipients.txt");
        std::fs::write(&own, "# ops only\n\n").unwrap();
        let r = recipients(root.path(), &env).unwrap();
        assert_eq!(r.file, own);
        assert_eq!(r.list.len(), 1);
        std::fs::write(&own, "age1notakey # bob\n").unwrap();
        let err = recipients(root.path(), &env).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
