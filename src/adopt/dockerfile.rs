//! What a project's own Dockerfile promises, read before `init` writes anything: its
//! base image, WORKDIR, USER, port, the command it runs, and whether that command
//! migrates or collects static files by itself. Read as text (the final stage of a
//! multi-stage build), never built.

use std::path::Path;

/// The contract of the final stage.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Contract {
    pub from: Option<String>,
    /// The last WORKDIR, relative ones resolved against the one before.
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// The first port declared (EXPOSE, or `ENV PORT`).
    pub port: Option<u16>,
    pub entrypoint: Option<String>,
    pub cmd: Option<String>,
    /// ENTRYPOINT and CMD as the engine runs them: the exec form's words, or
    /// `/bin/sh -c <text>` for the shell form.
    pub entrypoint_argv: Option<Vec<String>>,
    pub cmd_argv: Option<Vec<String>>,
    /// The command (ENTRYPOINT + CMD) runs `migrate` at start.
    pub migrates_at_start: bool,
    /// `collectstatic` runs at build (a RUN) or at start (the command).
    pub collects_static: bool,
}

impl Contract {
    /// One line for `init`'s report.
    pub fn describe(&self) -> String {
        let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
        format!(
            "FROM {}, WORKDIR {}, USER {}, port {}, runs `{}`{}{}",
            or(&self.from, "?"),
            or(&self.workdir, "/"),
            or(&self.user, "root"),
            self.port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "none declared".into()),
            [self.entrypoint.as_deref(), self.cmd.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
            if self.migrates_at_start {
                "; migrates at start"
            } else {
                ""
            },
            if self.collects_static {
                "; collects static files"
            } else {
                ""
            },
        )
    }
}

/// `["a", "b"]` → `a b`; a shell form is kept as written.
fn command_text(arg: &str) -> String {
    let arg = arg.trim();
    match serde_json::from_str::<Vec<String>>(arg) {
        Ok(words) => words.join(" "),
        Err(_) => arg.to_string(),
    }
}

/// The words the engine runs for an ENTRYPOINT or CMD argument.
fn argv(arg: &str) -> Vec<String> {
    let arg = arg.trim();
    serde_json::from_str::<Vec<String>>(arg)
        .unwrap_or_else(|_| vec!["/bin/sh".into(), "-c".into(), arg.to_string()])
}

/// Read the Dockerfile at `path`; None when there is none.
pub fn read_file(path: &Path) -> Option<Contract> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(parse(&text))
}

pub fn parse(text: &str) -> Contract {
    let mut c = Contract::default();
    let mut runs = String::new();
    // Each named stage's contract: `FROM base AS final` starts from `base`'s.
    let mut stages: std::collections::HashMap<String, (Contract, String)> = Default::default();
    let mut name: Option<String> = None;
    // Continuation lines (a trailing backslash) belong to the instruction above.
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for line in joined.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, arg) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let arg = arg.trim();
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                // A new stage: only the last one is the image that runs.
                if let Some(n) = name.take() {
                    stages.insert(n, (c.clone(), runs.clone()));
                }
                let words: Vec<&str> = arg
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let image = words.first().map(|w| w.to_string());
                name = match words.as_slice() {
                    [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
                    _ => None,
                };
                match image
                    .as_deref()
                    .and_then(|i| stages.get(&i.to_ascii_lowercase()))
                {
                    Some((base, base_runs)) => {
                        c = base.clone();
                        runs = base_runs.clone();
                    }
                    None => {
                        c = Contract {
                            from: image,
                            ..Contract::default()
                        };
                        runs.clear();
                    }
                }
            }
            "WORKDIR" => {
                c.workdir = Some(match (&c.workdir, arg.starts_with('/')) {
                    (Some(base), false) => format!("{}/{arg}", base.trim_end_matches('/')),
                    _ => arg.to_string(),
                });
            }
            "USER" => c.user = Some(arg.to_string()),
            "EXPOSE" if c.port.is_none() => {
                c.port = arg
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok());
            }
            "ENV" => {
                for pair in arg.split_whitespace() {
                    if let Some(v) = pair.strip_prefix("PORT=") {
                        c.port = c.port.or(v.trim_matches('"').parse().ok());
                    }
                }
                if let Some(v) = arg.strip_prefix("PORT ") {
                    c.port = c.port.or(v.trim().parse().ok());
                }
            }
            "ENTRYPOINT" => {
                c.entrypoint = Some(command_text(arg));
                c.entrypoint_argv = Some(argv(arg));
            }
            "CMD" => {
                c.cmd = Some(command_text(arg));
                c.cmd_argv = Some(argv(arg));
            }
            "RUN" => {
                runs.push_str(arg);
                runs.push('\n');
            }
            _ => {}
        }
    }
    let command = format!(
        "{} {}",
        c.entrypoint.as_deref().unwrap_or(""),
        c.cmd.as_deref().unwrap_or("")
    );
    c.migrates_at_start = command.contains("migrate");
    c.collects_static = command.contains("collectstatic") || runs.contains("collectstatic");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_stage() {
        let c = parse(
            "FROM node:20 AS assets\nWORKDIR /build\nRUN npm ci\n\nFROM python:3.12-slim-bookworm\nRUN useradd wagtail\nEXPOSE 8000/tcp\nENV PYTHONUNBUFFERED=1 \\\n    PORT=8000\nWORKDIR /app\nWORKDIR code\nCOPY --chown=wagtail:wagtail . .\nRUN python manage.py collectstatic --noinput --clear\nUSER wagtail\nCMD set -xe; python manage.py migrate --noinput; gunicorn mysite.wsgi:application\n",
        );
        assert_eq!(c.from.as_deref(), Some("python:3.12-slim-bookworm"));
        assert_eq!(c.workdir.as_deref(), Some("/app/code"));
        assert_eq!(c.user.as_deref(), Some("wagtail"));
        assert_eq!(c.port, Some(8000));
        assert!(c.migrates_at_start && c.collects_static);
        assert_eq!(
            c.cmd_argv.as_deref().unwrap()[..2],
            ["/bin/sh".to_string(), "-c".to_string()]
        );
        assert!(c.describe().contains("runs `set -xe; python manage.py migrate --noinput; gunicorn mysite.wsgi:application`"), "{}", c.describe());
    }

    #[test]
    fn a_stage_from_an_earlier_one_inherits_its_contract() {
        let c = parse("FROM python:3.12 AS base\nWORKDIR /srv\nENTRYPOINT [\"/entry.sh\"]\nFROM base AS final\nCMD [\"gunicorn\"]\n");
        assert_eq!(c.from.as_deref(), Some("python:3.12"));
        assert_eq!(c.workdir.as_deref(), Some("/srv"));
        assert_eq!(c.entrypoint_argv.unwrap(), ["/entry.sh"]);
        assert_eq!(c.cmd_argv.unwrap(), ["gunicorn"]);
    }

    #[test]
    fn exec_form_and_port_from_env() {
        let c = parse("FROM python\nENV PORT 5000\nENTRYPOINT [\"/entrypoint.sh\"]\nCMD [\"uwsgi\", \"--ini\", \"uwsgi.ini\"]\n");
        assert_eq!(c.port, Some(5000));
        assert_eq!(c.entrypoint.as_deref(), Some("/entrypoint.sh"));
        assert_eq!(c.cmd.as_deref(), Some("uwsgi --ini uwsgi.ini"));
        assert_eq!(c.entrypoint_argv.unwrap(), ["/entrypoint.sh"]);
        assert_eq!(c.cmd_argv.unwrap(), ["uwsgi", "--ini", "uwsgi.ini"]);
        assert!(!c.migrates_at_start && !c.collects_static);
        assert_eq!(c.user, None);
    }
}
