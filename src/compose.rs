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

const INSTALL_V2: &str = "install Compose v2 (`apt-get install docker-compose-plugin` from Docker's repository, see https://docs.docker.com/compose/install/), or point COUNTABLE_COMPOSE at a Compose v2 program";

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("Docker Compose v2 was not found (tried `docker compose` and `docker-compose`)")]
    NotFound,
    #[error("only Docker Compose {0} was found; countable needs Compose v2")]
    V1Only(String),
    #[error("`{command}` failed ({status})")]
    Failed { command: String, status: String },
    #[error("{0}")]
    Up(Failure),
}

impl Hint for ComposeError {
    fn hint(&self) -> Option<String> {
        match self {
            ComposeError::NotFound | ComposeError::V1Only(_) => Some(INSTALL_V2.into()),
            ComposeError::Failed { .. } => None,
            ComposeError::Up(f) => Some(f.hint()),
        }
    }
}
crate::register_hint!(ComposeError);

/// Why compose could not start a service, read from what it printed.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// The service's image could not be pulled (no such image, no access, no registry).
    Pull,
    /// A port the service publishes is taken on the host.
    Port(Option<u16>),
    /// Building the service's image failed.
    Build,
}

/// A service compose failed to start, and compose's own words for why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The compose service, when compose's output names it.
    pub service: Option<String>,
    pub reason: Reason,
    /// Compose's line that says what went wrong.
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let svc = self
            .service
            .as_deref()
            .map(|s| format!("`{s}`"))
            .unwrap_or_else(|| "a service".into());
        match &self.reason {
            Reason::Pull => write!(
                f,
                "compose could not pull the image of {svc}: {}",
                self.detail
            ),
            Reason::Port(Some(p)) => write!(
                f,
                "compose could not start {svc}: port {p} is already in use: {}",
                self.detail
            ),
            Reason::Port(None) => write!(
                f,
                "compose could not start {svc}: a port it publishes is already in use: {}",
                self.detail
            ),
            Reason::Build => write!(
                f,
                "compose could not build the image of {svc}: {}",
                self.detail
            ),
        }
    }
}

impl Failure {
    fn hint(&self) -> String {
        let svc = self.service.as_deref().unwrap_or("the service");
        match &self.reason {
            Reason::Pull => format!("check the `image:` of {svc} in compose.yaml (`countable new`/`init` take --db-image, --python-image and --nginx-image); if the image is private, `docker login` to its registry first"),
            Reason::Port(p) => {
                let p = p.map(|p| p.to_string()).unwrap_or_else(|| "it".into());
                format!("stop the program that listens on port {p} (`ss -ltnp`), or publish another port: change `ports:` of {svc} in compose.yaml and `port:` in countable.yml")
            }
            Reason::Build => format!("fix the build of {svc} (its Dockerfile step that failed is shown above; `docker compose build {svc}` repeats it), then `countable up`"),
        }
    }
}

/// Read compose's stderr for a failure: an image that cannot be pulled, a port in use,
/// a failed build. `project` is the compose project (container names start with it).
/// Compose's exit code is not enough: some builds of it exit 0 after such failures.
pub fn diagnose(stderr: &str, project: &str) -> Option<Failure> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    // ` db Pulling` then ` db Error <why>` (or `Error response from daemon: pull access denied…`).
    for line in &lines {
        let mut words = line.splitn(3, ' ');
        if let (Some(svc), Some("Error"), Some(why)) = (words.next(), words.next(), words.next()) {
            if lines.iter().any(|l| *l == format!("{svc} Pulling")) {
                return Some(Failure {
                    service: Some(svc.to_string()),
                    reason: Reason::Pull,
                    detail: why.trim().to_string(),
                });
            }
        }
    }
    if let Some(line) = lines.iter().find(|l| {
        l.contains("pull access denied")
            || l.contains("manifest unknown")
            || l.contains("failed to resolve reference")
    }) {
        return Some(Failure {
            service: None,
            reason: Reason::Pull,
            detail: line.to_string(),
        });
    }
    if let Some(line) = lines
        .iter()
        .find(|l| l.contains("address already in use") || l.contains("port is already allocated"))
    {
        return Some(Failure {
            service: container_service(line, project),
            reason: Reason::Port(published_port(line)),
            detail: line.to_string(),
        });
    }
    if let Some(line) = lines
        .iter()
        .find(|l| l.starts_with("failed to solve") || l.contains("failed to build"))
    {
        // BuildKit's step lines name the service: `#8 [web 4/6] RUN …` then `#8 ERROR: …`.
        let service = lines
            .iter()
            .filter(|l| l.starts_with('#') && l.contains(" ERROR"))
            .filter_map(|l| l.split_whitespace().next())
            .find_map(|step| {
                lines.iter().find_map(|l| {
                    l.strip_prefix(step)?
                        .trim_start()
                        .strip_prefix('[')?
                        .split_whitespace()
                        .next()
                        .map(|s| s.trim_end_matches(']').to_string())
                })
            });
        return Some(Failure {
            service,
            reason: Reason::Build,
            detail: line.to_string(),
        });
    }
    None
}

/// `… endpoint shop-nginx-1 …` → `nginx` (compose names containers `<project>-<service>-<n>`).
fn container_service(line: &str, project: &str) -> Option<String> {
    line.split(|c: char| c.is_whitespace() || c == '"' || c == '(')
        .filter_map(|w| w.strip_prefix(project)?.strip_prefix('-'))
        .find_map(|rest| {
            let (svc, n) = rest.rsplit_once('-')?;
            n.parse::<u32>().ok().map(|_| svc.to_string())
        })
}

/// `listen tcp4 0.0.0.0:8000: bind: …` / `Bind for 0.0.0.0:8000 failed` → 8000.
fn published_port(line: &str) -> Option<u16> {
    line.split(|c: char| c.is_whitespace() || c == '/')
        .filter_map(|w| w.trim_end_matches(':').rsplit_once(':'))
        .find_map(|(host, port)| {
            (host.contains('.') || host.ends_with(']'))
                .then(|| port.parse::<u16>().ok())
                .flatten()
        })
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
    /// Variables for compose's own environment (interpolation; `environment: [KEY]`
    /// entries). Never shown by `display`.
    env: Vec<(String, String)>,
    /// Where compose runs, when the project directory is a path on another host.
    cwd: Option<PathBuf>,
    /// Read no `.env` of the project directory for interpolation.
    no_env_file: bool,
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

pub fn version_of(program: &[String]) -> Option<String> {
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
            project.local_compose_files(),
        ))
    }

    pub fn new(program: Vec<String>, project: &str, dir: &Path, files: Vec<String>) -> Self {
        Self {
            program,
            project: project.to_string(),
            dir: dir.to_path_buf(),
            files,
            docker_host: None,
            env: Vec::new(),
            cwd: None,
            no_env_file: false,
        }
    }

    /// Compose's own version (`2.40.3`), as `version --short` prints it; what compose
    /// writes into the `com.docker.compose.version` label of what it creates.
    pub fn version(&self) -> Option<String> {
        version_of(&self.program).map(|v| v.trim_start_matches('v').to_string())
    }

    /// A project whose directory is `dir` on the environment's host (a path that need
    /// not exist here): compose runs in `cwd`, reads no `.env` for interpolation, and
    /// takes its variables from `env` (secrets stay off every command line).
    pub fn remote(mut self, cwd: &Path, env: Vec<(String, String)>) -> Self {
        self.cwd = Some(cwd.to_path_buf());
        self.env = env;
        self.no_env_file = true;
        self
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
        if self.no_env_file {
            v.extend(["--env-file".into(), "/dev/null".into()]);
        }
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
            .current_dir(self.cwd.as_ref().unwrap_or(&self.dir))
            .stdin(Stdio::null());
        if let Some(host) = &self.docker_host {
            // An ssh engine this run has a tunnel to: through it (engine::ssh).
            let host = crate::engine::ssh::local_for(host).unwrap_or_else(|| host.clone());
            cmd.env("DOCKER_HOST", host);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Run `docker compose <args>` with its stderr shown (when `echo`) and kept (the
    /// last 64 KiB) for [`diagnose`]; its stdout goes to our stderr, or nowhere when
    /// not `echo`. Errors only when it cannot be started.
    pub fn run_teed(&self, args: &[&str], echo: bool) -> anyhow::Result<Teed> {
        use std::io::{BufRead, Write};
        let mut cmd = self.process(args);
        cmd.stdout(if echo { stderr_stdio()? } else { Stdio::null() })
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", self.display(args)))?;
        let mut kept: Vec<u8> = Vec::new();
        let mut reader = std::io::BufReader::new(child.stderr.take().expect("piped"));
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .context("reading compose's output")?
            > 0
        {
            if echo {
                let _ = std::io::stderr().write_all(&line);
            }
            kept.extend_from_slice(&line);
            if kept.len() > 64 * 1024 {
                kept.drain(..kept.len() - 64 * 1024);
            }
            line.clear();
        }
        let status = child.wait().context("waiting for compose")?;
        Ok(Teed {
            command: self.display(args),
            status,
            stderr: String::from_utf8_lossy(&kept).into_owned(),
        })
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

    /// Run `docker compose <args>` in the foreground (`watch`): our stdin, its output
    /// on our stderr (stdout is for data). Returns its exit code (a signal: 128 + n).
    pub fn attached(&self, args: &[&str]) -> anyhow::Result<i64> {
        use std::os::unix::process::ExitStatusExt;
        let status = self
            .process(args)
            .stdin(Stdio::inherit())
            .stdout(stderr_stdio()?)
            .status()
            .with_context(|| format!("starting `{}`", self.display(args)))?;
        Ok(status
            .code()
            .map(i64::from)
            .or_else(|| status.signal().map(|s| 128 + i64::from(s)))
            .unwrap_or(1))
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

/// How a teed compose run ended, with the tail of its stderr.
#[derive(Debug)]
pub struct Teed {
    pub command: String,
    pub status: std::process::ExitStatus,
    pub stderr: String,
}

impl Teed {
    /// The failure compose reported (even when it exited 0), else its exit status.
    pub fn result(&self, project: &str) -> Result<(), ComposeError> {
        if let Some(f) = diagnose(&self.stderr, project) {
            return Err(ComposeError::Up(f));
        }
        if self.status.success() {
            return Ok(());
        }
        let tail: Vec<&str> = self.stderr.trim_end().lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(ComposeError::Failed {
            command: self.command.clone(),
            status: format!("{}: {}", self.status, tail.join(" / ")),
        })
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
        .map(|a| match shlex::try_quote(a) {
            Ok(q) => q.into_owned(),
            // Only a NUL byte fails, and no program argument can hold one.
            Err(_) => format!("{a:?}"),
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

    // Compose's own words, as captured on this machine's engine.
    const PULL: &str = " db Pulling \n db Error Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host\nError response from daemon: Get \"https://registry-1.docker.io/v2/\": no such host\n";
    const PORT: &str = " Container shop-web-1  Healthy\n Container shop-nginx-1  Starting\nError response from daemon: driver failed programming external connectivity on endpoint shop-nginx-1 (e657720f): Error starting userland proxy: listen tcp4 0.0.0.0:18777: bind: address already in use\n";
    const BUILD: &str = "#7 [web 3/6] COPY requirements.txt ./\n#7 CACHED\n\n#8 [web 4/6] RUN exit 3\n#8 ERROR: executor failed running [/bin/sh -c exit 3]: exit code: 3\n------\nfailed to solve: executor failed running [/bin/sh -c exit 3]: exit code: 3\n";

    #[test]
    fn diagnoses_what_compose_said() {
        let f = diagnose(PULL, "shop").unwrap();
        assert_eq!(f.service.as_deref(), Some("db"));
        assert_eq!(f.reason, Reason::Pull);
        assert!(f.hint().contains("docker login"), "{}", f.hint());
        assert!(f.hint().contains("--db-image"), "{}", f.hint());

        let f = diagnose(PORT, "shop").unwrap();
        assert_eq!(f.service.as_deref(), Some("nginx"));
        assert_eq!(f.reason, Reason::Port(Some(18777)));
        assert!(
            f.to_string().contains("port 18777 is already in use"),
            "{f}"
        );
        assert!(
            f.hint().contains("`port:` in countable.yml"),
            "{}",
            f.hint()
        );
        let docker =
            "Error response from daemon: Bind for 0.0.0.0:8000 failed: port is already allocated";
        assert_eq!(
            diagnose(docker, "shop").unwrap().reason,
            Reason::Port(Some(8000))
        );

        let f = diagnose(BUILD, "shop").unwrap();
        assert_eq!(f.service.as_deref(), Some("web"));
        assert_eq!(f.reason, Reason::Build);

        assert_eq!(diagnose(" Container shop-db-1  Healthy\n", "shop"), None);
    }

    #[test]
    fn a_failure_wins_over_exit_code_zero() {
        use std::os::unix::process::ExitStatusExt;
        let teed = Teed {
            command: "docker compose up".into(),
            status: std::process::ExitStatus::from_raw(0),
            stderr: PULL.into(),
        };
        assert!(matches!(teed.result("shop"), Err(ComposeError::Up(_))));
    }

    #[test]
    fn install_hint_is_for_users() {
        let hint = ComposeError::NotFound.hint().unwrap();
        assert!(!hint.contains("pip"), "{hint}");
        assert!(hint.contains("docker-compose-plugin"), "{hint}");
    }
}
