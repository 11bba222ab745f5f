//! Errors that reach the user: what failed, why, and a `hint:` with the fix.
//!
//! Domain modules return their own `thiserror` enums and implement [`Hint`]; the edge
//! (`cli::main`) walks an `anyhow` chain, prints every cause, then the first hint it
//! finds. Exit codes: 0 ok, 1 the user's input or environment, 2 a bug in countable.

use std::fmt;

/// A domain error that knows the command that fixes it.
pub trait Hint {
    fn hint(&self) -> Option<String>;
}

/// An ad-hoc user-facing failure with a hint, for the few cases no domain enum owns,
/// optionally wrapping the error that caused it (kept in the chain).
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
    pub source: Option<anyhow::Error>,
}

impl Hinted {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
            source: None,
        }
    }

    /// `cause`, explained by `message` and fixed by `hint`.
    pub fn wrap(cause: anyhow::Error, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            source: Some(cause),
            ..Self::new(message, hint)
        }
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl Hint for Hinted {
    fn hint(&self) -> Option<String> {
        Some(self.hint.clone())
    }
}

/// Marks an error as countable's own fault (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("internal error: {0}")]
pub struct Bug(pub String);

/// The first hint anywhere in the chain.
pub fn hint_of(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|e| {
        macro_rules! try_hint {
            ($($t:ty),*) => {$(
                if let Some(h) = e.downcast_ref::<$t>() { return h.hint(); }
            )*};
        }
        try_hint!(
            Hinted,
            crate::names::NameError,
            crate::project::ProjectError,
            crate::compose::ComposeError,
            crate::engine::EngineError,
            crate::scaffold::ScaffoldError,
            crate::store::StoreError,
            crate::archive::ArchiveError,
            crate::restore::RestoreError,
            crate::backup::BackupError
        );
        None
    })
}

/// 2 for a bug, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.downcast_ref::<Bug>().is_some()) {
        2
    } else {
        1
    }
}

/// The text the user sees: the error, its causes, a blank line and the hint.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    if let Some(hint) = hint_of(err) {
        out.push_str(&format!("\n\nhint: {hint}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn hint_is_found_under_context() {
        let err = Err::<(), _>(Hinted::new("no daemon", "sudo systemctl start docker"))
            .context("pinging the engine")
            .unwrap_err();
        let text = render(&err);
        assert!(text.starts_with("error: pinging the engine"), "{text}");
        assert!(text.contains("caused by: no daemon"));
        assert!(text.ends_with("\n\nhint: sudo systemctl start docker"));
        assert_eq!(exit_code(&err), 1);
    }

    #[test]
    fn wrapped_cause_stays_in_the_chain() {
        let err = anyhow::Error::new(Hinted::wrap(
            anyhow::anyhow!("exit status 1"),
            "up failed",
            "countable logs web",
        ));
        assert_eq!(
            render(&err),
            "error: up failed\n  caused by: exit status 1\n\nhint: countable logs web"
        );
    }

    #[test]
    fn bugs_exit_2() {
        let err = anyhow::Error::new(Bug("unreachable state".into()));
        assert_eq!(exit_code(&err), 2);
    }
}
