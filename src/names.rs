//! Validated names: a project name must be both a compose project name and a Python
//! package name, and an environment name must be safe in keys, paths and compose names.
//!
//! Raw strings become these types at the edge; nothing downstream re-checks them.

use std::fmt;

use crate::error::Hint;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NameError {
    #[error("`{0}` is not a valid project name: it is empty")]
    Empty(String),
    #[error("`{name}` is not a valid project name: {why}")]
    Invalid { name: String, why: &'static str },
    #[error(
        "`{0}` is not a valid project name: it would shadow the Python module of the same name"
    )]
    Shadows(String),
    #[error("`{0}` is not a valid environment name: use lowercase letters, digits and `-`, starting with a letter (e.g. prod, staging, qa-2)")]
    Env(String),
}

impl Hint for NameError {
    fn hint(&self) -> Option<String> {
        match self {
            NameError::Env(_) => {
                Some("rename the environment in countable.yml, e.g. `prod`".into())
            }
            // Not a command: the name may come from `new`, `init --name` or a directory;
            // the command line adds its own (see `cli::new` and `cli::init`).
            NameError::Empty(n) | NameError::Invalid { name: n, .. } | NameError::Shadows(n) => {
                Some(format!("a valid name would be `{}`", suggest(n)))
            }
        }
    }
}
crate::register_hint!(NameError);

/// `raw` as a project name, or the error with `fix(suggestion)` as its hint: the command
/// line that would work where the name came from.
pub fn parse_project_or(
    raw: &str,
    fix: impl FnOnce(&str) -> String,
) -> Result<ProjectName, crate::error::Hinted> {
    ProjectName::parse(raw)
        .map_err(|e| crate::error::Hinted::new(e.to_string(), fix(&suggest(raw))))
}

/// A lowercase, underscore-separated version of `raw` that passes validation.
pub fn suggest(raw: &str) -> String {
    let mut s: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    let s = s.trim_matches('_').to_string();
    let s = if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
        format!("site_{s}")
    } else {
        s
    };
    if ProjectName::parse(&s).is_ok() {
        s
    } else {
        format!("{s}_site")
    }
}

const PY_KEYWORDS: &[&str] = &[
    "false", "none", "true", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield", "match", "case", "type",
];

/// Modules a project package must not shadow (stdlib names Django projects trip on, and
/// the packages the scaffold itself imports).
const SHADOWED: &[&str] = &[
    "django",
    "gunicorn",
    "psycopg",
    "psycopg2",
    "sentry_sdk",
    "test",
    "tests",
    "site",
    "os",
    "sys",
    "json",
    "email",
    "http",
    "logging",
    "typing",
    "types",
    "string",
    "random",
    "socket",
    "select",
    "signal",
    "code",
    "io",
    "time",
    "calendar",
    "collections",
    "config",
    "secrets",
    "static",
    "media",
    "templates",
    "nginx",
    "compose",
    "manage",
];

/// A project name: `[a-z][a-z0-9_]*`, at most 40 characters, not a Python keyword and
/// not a module the project would shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let invalid = |why| NameError::Invalid {
            name: raw.to_string(),
            why,
        };
        if raw.is_empty() {
            return Err(NameError::Empty(raw.to_string()));
        }
        if raw.len() > 40 {
            return Err(invalid("it is longer than 40 characters"));
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(invalid("it must start with a lowercase letter"));
        }
        if raw.contains('-') {
            return Err(invalid(
                "`-` is not allowed in a Python package name; use `_`",
            ));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(invalid(
                "use only lowercase letters, digits and `_` (a compose project name and a Python package name)",
            ));
        }
        if PY_KEYWORDS.contains(&raw) {
            return Err(invalid("it is a Python keyword"));
        }
        if SHADOWED.contains(&raw) {
            return Err(NameError::Shadows(raw.to_string()));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An environment name from `countable.yml` (`prod`, `staging`, `qa-2`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let ok = raw.len() <= 32
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !raw.ends_with('-');
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(NameError::Env(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_conventional_names() {
        for ok in ["demo", "my_shop", "shop2", "a"] {
            assert_eq!(ProjectName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_what_compose_or_python_cannot_take() {
        for bad in [
            "",
            "My",
            "my-shop",
            "2shop",
            "_x",
            "shop.io",
            "shop name",
            "ünï",
            "class",
            "django",
            "test",
            "import",
            &"x".repeat(41),
        ] {
            assert!(
                ProjectName::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn hint_suggests_a_valid_name() {
        let err = ProjectName::parse("My-Shop").unwrap_err();
        assert_eq!(err.hint().unwrap(), "a valid name would be `my_shop`");
        for raw in ["2shop", "django", "--", "class"] {
            let s = suggest(raw);
            assert!(ProjectName::parse(&s).is_ok(), "{raw} -> {s}");
        }
    }

    /// The error with the hint that fits the command the name came from.
    #[test]
    fn project_name_errors_name_no_command() {
        let err = ProjectName::parse("My-Shop").unwrap_err();
        let hint = err.hint().unwrap();
        assert!(!hint.contains("countable"), "{hint}");
    }

    #[test]
    fn env_names() {
        for ok in ["prod", "staging", "qa-2"] {
            assert!(EnvName::parse(ok).is_ok());
        }
        for bad in ["", "Prod", "-x", "x-", "a_b", "a/b"] {
            assert!(EnvName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
