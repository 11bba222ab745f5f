//! Errors that reach the user: what failed, why, and a `hint:` with the fix.
//!
//! Domain modules return their own `thiserror` enums and implement [`Hint`]; the edge
//! (`cli::main`) walks an `anyhow` chain, prints every cause, then the first hint it
//! finds. Exit codes: 0 ok, 1 the user's input or environment, 2 a bug in countable.
//!
//! An `anyhow` chain only hands out `&dyn Error`, so each hinted type registers a
//! downcast of itself, next to its `impl Hint` ([`register_hint!`]); `hint_of` tries
//! every registered one. `Hint` requires [`Registered`], which only that macro
//! implements: a new error type whose hint is not registered does not compile, so no
//! hint is lost silently, and this module never lists the domain's types.

use std::fmt;

/// A domain error that knows the command that fixes it. Register the type with
/// [`register_hint!`] beside the impl (the compiler asks for it).
pub trait Hint: Registered {
    fn hint(&self) -> Option<String>;
}

/// Proof that a [`Hint`] type is registered: implemented by [`register_hint!`] only.
#[diagnostic::on_unimplemented(
    message = "the hint of `{Self}` is not registered",
    note = "add `crate::register_hint!({Self});` beside its `impl Hint`"
)]
pub trait Registered {}

/// One registered hinted type: is this error one of them, and what is its hint?
pub struct HintOf(pub fn(&(dyn std::error::Error + 'static)) -> Option<Option<String>>);

inventory::collect!(HintOf);

/// Register `T`'s [`Hint`] so that [`hint_of`] finds it anywhere in an error chain.
#[macro_export]
macro_rules! register_hint {
    ($t:ty) => {
        impl $crate::error::Registered for $t {}
        ::inventory::submit! {
            $crate::error::HintOf(|e| e.downcast_ref::<$t>().map($crate::error::Hint::hint))
        }
    };
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
crate::register_hint!(Hinted);

/// Marks an error as countable's own fault (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("internal error: {0}")]
pub struct Bug(pub String);

/// A program countable ran for the user (`exec`, `manage`, `psql`) ended with this
/// code: countable exits with it too, and prints nothing (the program has spoken).
#[derive(Debug, thiserror::Error)]
#[error("the command exited with code {0}")]
pub struct PassThrough(pub u8);

/// `Err(PassThrough)` for a non-zero exit code (clamped to 1..=255), else `Ok`.
pub fn pass_through(code: i64) -> anyhow::Result<()> {
    match code {
        0 => Ok(()),
        c => Err(PassThrough(u8::try_from(c).ok().filter(|c| *c != 0).unwrap_or(1)).into()),
    }
}

/// The first hint anywhere in the chain: the outermost error that has one wins.
pub fn hint_of(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|e| {
        inventory::iter::<HintOf>
            .into_iter()
            .find_map(|HintOf(of)| of(e))
            .flatten()
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

    /// A type this module has never heard of: its hint is found once it implements
    /// `Hint` (which makes the compiler demand the registration line beside it).
    #[derive(Debug, thiserror::Error)]
    #[error("the flux capacitor is cold")]
    struct BrandNew;

    impl Hint for BrandNew {
        fn hint(&self) -> Option<String> {
            Some("countable warm-up".into())
        }
    }
    crate::register_hint!(BrandNew);

    #[test]
    fn a_new_error_type_keeps_its_hint() {
        let err = Err::<(), _>(BrandNew)
            .context("starting the time machine")
            .unwrap_err();
        assert_eq!(
            render(&err),
            "error: starting the time machine\n  caused by: the flux capacitor is cold\n\nhint: countable warm-up"
        );
    }

    #[test]
    fn every_domain_error_type_is_found() {
        let cases: Vec<anyhow::Error> = vec![
            crate::compose::ComposeError::NotFound.into(),
            crate::engine::EngineError::Scheme("ftp://x".into()).into(),
            crate::names::NameError::Env("Prod".into()).into(),
        ];
        for err in cases {
            assert!(hint_of(&err).is_some(), "{err}");
        }
    }

    /// Errors of another environment (its engine, its db) point there, not at the
    /// local commands.
    #[test]
    fn environment_errors_do_not_suggest_local_commands() {
        let cases: Vec<anyhow::Error> = vec![
            crate::backup::BackupError::DumpFailed("pg_dump: error".into()).into(),
            crate::engine::EngineError::NoContainer {
                project: "shop-prod".into(),
                service: "db".into(),
            }
            .into(),
        ];
        for err in cases {
            let hint = hint_of(&err).unwrap();
            for local in ["countable up", "countable status"] {
                assert!(!hint.contains(local), "{err}: {hint}");
            }
        }
    }
}
