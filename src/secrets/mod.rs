//! An environment's secrets: its `.env`, kept in the repository encrypted with age as
//! `secrets/<env>.env.age` (ASCII-armored), to every recipient of `keys`.
//!
//! Decryption happens in memory only; the plaintext is zeroed when dropped; re-encryption
//! is written atomically (temporary file, then rename). Nothing here prints: callers get
//! keys and counts, and values only through [`EnvSecrets::entries`] and
//! [`EnvSecrets::render`]. No error ever carries a value.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::{Zeroize, Zeroizing};

use crate::envfile::{self, Line, SyntaxError};
use crate::error::Hint;
use crate::names::EnvName;

pub mod edit;
pub mod keys;

pub use keys::KEY_FILE_VAR;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("no age key to decrypt {} with: {}", file.display(), tried_list(tried, *from_var))]
    MissingKey {
        env: EnvName,
        file: PathBuf,
        tried: Vec<PathBuf>,
        from_var: bool,
    },
    #[error("{} is not an age identity: {why}", path.display())]
    BadKey { path: PathBuf, why: String },
    #[error("cannot decrypt {}: it is not encrypted to your key ({})", file.display(), public.join(", "))]
    NotRecipient {
        env: EnvName,
        file: PathBuf,
        public: Vec<String>,
        recipients_file: PathBuf,
        listed: bool,
    },
    #[error("{} is damaged or not an age file: {why}", file.display())]
    Corrupt { file: PathBuf, why: String },
    #[error("nobody to encrypt {env}'s secrets to: {} lists no age public key", file.display())]
    NoRecipients { env: EnvName, file: PathBuf },
    #[error("{}, line {line}: not an age public key (age1…)", path.display())]
    BadRecipient { path: PathBuf, line: usize },
    #[error("{env} has no secrets yet ({} does not exist)", file.display())]
    NoSecrets { env: EnvName, file: PathBuf },
    #[error("`{key}` is not set in {env}'s secrets")]
    NoSuchKey { env: EnvName, key: String },
    #[error("argument {0}: expected KEY=VALUE or KEY, where KEY is a variable name (letters, digits and `_`, not starting with a digit)")]
    BadArgument(usize),
    #[error("{env}'s secrets are not a valid .env: {error}")]
    Syntax { env: EnvName, error: SyntaxError },
    #[error("the editor `{editor}` {why}; nothing was changed")]
    Editor { editor: String, why: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn tried_list(tried: &[PathBuf], from_var: bool) -> String {
    let names: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    if from_var {
        format!(
            "{KEY_FILE_VAR} names {}, which does not exist",
            names.join("")
        )
    } else {
        format!("none of {} exists", names.join(", "))
    }
}

impl Hint for SecretsError {
    fn hint(&self) -> Option<String> {
        let rekey = |env: &EnvName| {
            format!("ask a teammate who can read it to run `countable secrets rekey {env}` and commit the result")
        };
        Some(match self {
            SecretsError::MissingKey { from_var: true, .. } => format!(
                "point {KEY_FILE_VAR} at your age key file (in Jenkins: the secret file credential's binding), or unset it to use the default ~/.config/countable/age.key"
            ),
            SecretsError::MissingKey { env, .. } => format!(
                "run `countable secrets keygen` (creates ~/.config/countable/age.key and adds its public key to secrets/recipients.txt), commit it and {}; or set {KEY_FILE_VAR} to a key that can read it",
                rekey(env)
            ),
            SecretsError::BadKey { path, .. } => format!(
                "{} must hold an age secret key (a line AGE-SECRET-KEY-1…, as `countable secrets keygen` or `age-keygen` writes): point {KEY_FILE_VAR} at the right file",
                path.display()
            ),
            SecretsError::NotRecipient { env, recipients_file, listed: true, .. } => format!(
                "your key is in {} but the file was encrypted before it was added: {}",
                recipients_file.display(),
                rekey(env)
            ),
            SecretsError::NotRecipient { env, recipients_file, .. } => format!(
                "add your public key to {} (`countable secrets keygen` does it), commit it and {}; or set {KEY_FILE_VAR} to a key that can read it",
                recipients_file.display(),
                rekey(env)
            ),
            SecretsError::Corrupt { file, .. } => {
                format!("restore it from git: `git checkout -- {}`", file.display())
            }
            SecretsError::NoRecipients { file, .. } => format!(
                "run `countable secrets keygen` (adds your public key to {}), or add the team's age1… keys there",
                file.display()
            ),
            SecretsError::BadRecipient { .. } => "each line is one public key (age1…, from `countable secrets keygen` or `age-keygen -y KEYFILE`), optionally followed by `# name`".into(),
            SecretsError::NoSecrets { env, .. } => format!(
                "add one: `countable secrets set {env} KEY` (the value on stdin) or `countable secrets edit {env}`"
            ),
            SecretsError::NoSuchKey { env, .. } => {
                format!("`countable secrets show {env}` lists its keys")
            }
            SecretsError::BadArgument(_) => "e.g. `countable secrets set prod DJANGO_DEBUG=0`, or `countable secrets set prod SECRET_KEY` with the value on stdin".into(),
            SecretsError::Syntax { env, .. } => {
                format!("fix that line: `countable secrets edit {env}`")
            }
            SecretsError::Editor { .. } => {
                "set VISUAL or EDITOR to an editor that waits until you close the file, e.g. `export EDITOR=nano` or `EDITOR='code --wait'`".into()
            }
            SecretsError::Io { .. } => return None,
        })
    }
}
crate::register_hint!(SecretsError);

/// An environment's decrypted `.env`: its lines (comments kept) and its entries.
/// Zeroed when dropped; its `Debug` shows keys only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EnvSecrets {
    lines: Vec<Line>,
    entries: Vec<(String, String)>,
}

impl std::fmt::Debug for EnvSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvSecrets")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for EnvSecrets {
    fn drop(&mut self) {
        for line in &mut self.lines {
            if let Line::Entry(_, v) | Line::Comment(v) = line {
                v.zeroize();
            }
        }
        for (_, v) in &mut self.entries {
            v.zeroize();
        }
    }
}

impl EnvSecrets {
    /// Parse `.env` text strictly ([`envfile::parse_strict`]).
    pub fn parse(env: &EnvName, text: &str) -> Result<Self, SecretsError> {
        let lines = envfile::parse_strict(text).map_err(|error| SecretsError::Syntax {
            env: env.clone(),
            error,
        })?;
        Ok(Self::from_lines(lines))
    }

    fn from_lines(lines: Vec<Line>) -> Self {
        let entries = lines
            .iter()
            .filter_map(|l| match l {
                Line::Entry(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect();
        Self { lines, entries }
    }

    /// `KEY, value` in file order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `.env` text, comments kept, every value quoted so compose reads it verbatim.
    pub fn render(&self) -> String {
        envfile::render_lines(&self.lines)
    }

    /// Set `key` (in place when present, else appended).
    pub fn set(&mut self, key: &str, value: &str) {
        let mut lines = std::mem::take(&mut self.lines);
        match lines
            .iter_mut()
            .find(|l| matches!(l, Line::Entry(k, _) if k == key))
        {
            Some(Line::Entry(_, v)) => {
                v.zeroize();
                v.push_str(value);
            }
            _ => lines.push(Line::Entry(key.to_string(), value.to_string())),
        }
        *self = Self::from_lines(lines);
    }

    /// Remove `key`; false when it was not set.
    pub fn unset(&mut self, key: &str) -> bool {
        let mut lines = std::mem::take(&mut self.lines);
        let before = lines.len();
        lines.retain(|l| !matches!(l, Line::Entry(k, _) if k == key));
        let removed = lines.len() != before;
        *self = Self::from_lines(lines);
        removed
    }
}

/// `secrets/<env>.env.age`.
pub fn secrets_file(root: &Path, env: &EnvName) -> PathBuf {
    keys::secrets_dir(root).join(format!("{env}.env.age"))
}

/// Decrypt `env`'s secrets in memory; `None` when the environment has no secrets file.
pub fn load(root: &Path, env: &EnvName) -> Result<Option<EnvSecrets>, SecretsError> {
    let file = secrets_file(root, env);
    if !file.is_file() {
        return Ok(None);
    }
    let ids = keys::identities(root, env, &file)?;
    let bytes = std::fs::read(&file).map_err(|source| SecretsError::Io {
        path: file.clone(),
        source,
    })?;
    let text = decrypt(&bytes, &ids).map_err(|e| classify(e, root, env, &file, &ids))?;
    let text = std::str::from_utf8(&text).map_err(|_| SecretsError::Corrupt {
        file: file.clone(),
        why: "its contents are not UTF-8 text".into(),
    })?;
    EnvSecrets::parse(env, text).map(Some)
}

fn decrypt(bytes: &[u8], ids: &[keys::Key]) -> Result<Zeroizing<Vec<u8>>, age::DecryptError> {
    let decryptor = age::Decryptor::new_buffered(ArmoredReader::new(bytes))?;
    let mut reader = decryptor.decrypt(ids.iter().map(|k| &k.identity as &dyn age::Identity))?;
    let mut out = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut out)?;
    Ok(out)
}

/// A decryption failure as the user's problem: not a recipient, or a damaged file.
fn classify(
    e: age::DecryptError,
    root: &Path,
    env: &EnvName,
    file: &Path,
    ids: &[keys::Key],
) -> SecretsError {
    match e {
        age::DecryptError::NoMatchingKeys => {
            let public: Vec<String> = ids.iter().map(keys::Key::public).collect();
            let (recipients_file, listed) = match keys::recipients(root, env) {
                Ok(r) => {
                    let listed = public.iter().any(|p| r.contains(p));
                    (r.file, listed)
                }
                Err(_) => (keys::recipients_file(root, env), false),
            };
            SecretsError::NotRecipient {
                env: env.clone(),
                file: file.to_path_buf(),
                public,
                recipients_file,
                listed,
            }
        }
        other => SecretsError::Corrupt {
            file: file.to_path_buf(),
            why: match other {
                age::DecryptError::UnknownFormat => "an unknown age format".into(),
                age::DecryptError::InvalidHeader => "its header is invalid".into(),
                age::DecryptError::InvalidMac
                | age::DecryptError::DecryptionFailed
                | age::DecryptError::KeyDecryptionFailed => {
                    "it was altered after it was encrypted".into()
                }
                age::DecryptError::Io(e) => e.to_string(),
                _ => "it is not encrypted to age X25519 keys".into(),
            },
        },
    }
}

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub file: PathBuf,
    pub recipients: usize,
    /// None when countable has no key of yours to check; false: you locked yourself out.
    pub readable_by_you: Option<bool>,
}

/// Encrypt `secrets` to every recipient of `env` and replace the file atomically.
pub fn save(root: &Path, env: &EnvName, secrets: &EnvSecrets) -> Result<Saved, SecretsError> {
    let recipients = keys::recipients(root, env)?;
    if recipients.list.is_empty() {
        return Err(SecretsError::NoRecipients {
            env: env.clone(),
            file: recipients.file,
        });
    }
    let file = secrets_file(root, env);
    let io = |source| SecretsError::Io {
        path: file.clone(),
        source,
    };
    let plain = Zeroizing::new(secrets.render());
    let encryptor =
        age::Encryptor::with_recipients(recipients.list.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let mut armored = Vec::new();
    let out = ArmoredWriter::wrap_output(&mut armored, Format::AsciiArmor).map_err(io)?;
    let mut w = encryptor.wrap_output(out).map_err(io)?;
    w.write_all(plain.as_bytes()).map_err(io)?;
    w.finish().and_then(|a| a.finish()).map_err(io)?;
    std::fs::create_dir_all(keys::secrets_dir(root)).map_err(io)?;
    write_atomically(&file, &armored).map_err(|e| io(std::io::Error::other(format!("{e:#}"))))?;
    let readable_by_you = keys::identities(root, env, &file)
        .ok()
        .map(|ids| ids.iter().any(|k| recipients.contains(&k.public())));
    Ok(Saved {
        file,
        recipients: recipients.list.len(),
        readable_by_you,
    })
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".countable-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// What a change did: nothing (the content is the same) or a save.
#[derive(Debug)]
pub enum Change {
    Unchanged,
    Saved(Saved),
}

/// Save `next` unless it equals `before` (a new file is always written).
pub fn save_if_changed(
    root: &Path,
    env: &EnvName,
    before: Option<&EnvSecrets>,
    next: &EnvSecrets,
) -> Result<Change, SecretsError> {
    if before == Some(next) {
        return Ok(Change::Unchanged);
    }
    save(root, env, next).map(Change::Saved)
}

/// Parse `set` arguments: `KEY=VALUE`, or `KEY` alone whose value `stdin(KEY)` gives
/// (at most one). One trailing newline of that value is dropped.
pub fn parse_assignments(
    args: &[String],
    stdin: impl FnOnce(&str) -> std::io::Result<String>,
) -> Result<Vec<(String, Zeroizing<String>)>, SecretsError> {
    let mut out = Vec::new();
    let mut bare = None;
    for (i, arg) in args.iter().enumerate() {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (arg.as_str(), None),
        };
        if !envfile::valid_key(key) || (value.is_none() && bare.is_some()) {
            return Err(SecretsError::BadArgument(i + 1));
        }
        if value.is_none() {
            bare = Some(out.len());
        }
        out.push((
            key.to_string(),
            Zeroizing::new(value.unwrap_or_default().to_string()),
        ));
    }
    if let Some(i) = bare {
        let mut v = Zeroizing::new(stdin(&out[i].0).map_err(|source| SecretsError::Io {
            path: PathBuf::from("<stdin>"),
            source,
        })?);
        if v.ends_with('\n') {
            v.pop();
            if v.ends_with('\r') {
                v.pop();
            }
        }
        out[i].1 = v;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
