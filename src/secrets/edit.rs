//! `secrets edit`: the decrypted `.env` in the user's editor, on a private temporary
//! file (0600 in a 0700 directory, in `$XDG_RUNTIME_DIR` when there is one), which is
//! overwritten and removed afterwards whatever happens (an error, a refusal, Ctrl-C).
//!
//! It never prints the file's contents, and it never writes when the content did not
//! change.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Change, EnvSecrets, SecretsError};
use crate::names::EnvName;

/// The editor command: `$VISUAL`, else `$EDITOR`, else `vi` (as git does), split like a
/// shell would (`code --wait`).
pub fn editor_command() -> Vec<String> {
    let raw = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".into());
    shlex::split(&raw)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![raw])
}

/// A private directory for the plaintext: removed (with whatever the editor left in it,
/// swap and backup files included) when dropped.
pub fn private_dir() -> std::io::Result<tempfile::TempDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let mut b = tempfile::Builder::new();
    b.prefix("countable-secrets-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o700));
    }
    b.tempdir_in(base)
}

/// The file the editor works on; overwritten with zeros before the directory goes.
struct Scratch {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::metadata(&self.path) {
            let _ = std::fs::write(&self.path, vec![0u8; meta.len() as usize]);
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

/// What the user decides after an invalid edit: open the editor again, or give up.
pub trait Retry {
    fn again(&self, error: &SecretsError) -> anyhow::Result<bool>;
}

/// Edit `env`'s secrets; `retry` is asked after an edit that does not parse.
pub async fn edit(root: &Path, env: &EnvName, retry: &dyn Retry) -> anyhow::Result<Change> {
    let before = super::load(root, env)?;
    let text = Zeroizing::new(before.as_ref().map(EnvSecrets::render).unwrap_or_default());
    let dir = private_dir().map_err(|source| SecretsError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let scratch = Scratch {
        path: dir.path().join(format!("{env}.env")),
        dir,
    };
    crate::envfile::write_secret_file(&scratch.path, &text)?;
    let interrupt = crate::interrupt::Interrupt::get()?;
    let next = loop {
        run_editor(&scratch.path).await?;
        if interrupt.hit() {
            anyhow::bail!("interrupted; nothing was changed");
        }
        let edited =
            Zeroizing::new(
                std::fs::read(&scratch.path).map_err(|source| SecretsError::Io {
                    path: scratch.path.clone(),
                    source,
                })?,
            );
        let edited = std::str::from_utf8(&edited).map_err(|_| SecretsError::Editor {
            editor: editor_command().join(" "),
            why: "left a file that is not UTF-8 text".into(),
        })?;
        match EnvSecrets::parse(env, edited) {
            Ok(next) => break next,
            Err(e) if retry.again(&e)? => continue,
            Err(e) => return Err(e.into()),
        }
    };
    drop(scratch);
    Ok(super::save_if_changed(root, env, before.as_ref(), &next)?)
}

/// Run the editor on `path` with the terminal, off the runtime's thread (so a Ctrl-C
/// meant for the editor is noticed, not fatal).
async fn run_editor(path: &Path) -> Result<(), SecretsError> {
    let argv = editor_command();
    let shown = argv.join(" ");
    let path = path.to_path_buf();
    let status = tokio::task::spawn_blocking(move || {
        crate::process::command(&argv[0])
            .args(&argv[1..])
            .arg(&path)
            .status()
    })
    .await
    .map_err(|e| SecretsError::Editor {
        editor: shown.clone(),
        why: format!("could not be waited for ({e})"),
    })?;
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(SecretsError::Editor {
            editor: shown,
            why: format!("exited with {s}"),
        }),
        Err(e) => Err(SecretsError::Editor {
            editor: shown,
            why: format!("could not be started ({e})"),
        }),
    }
}
