//! The only place that talks to the Docker API (bollard): connect and ping, find a
//! compose project's containers by their labels, and exec commands inside them with
//! stdin/stdout streamed (no TTY). The database is reached this way, never via a port.
//!
//! It knows nothing of projects or configs: callers pass compose project and service names.

// This is the seam: the one module allowed to do what clippy.toml forbids elsewhere.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;

use crate::error::Hint;

pub mod attach;
mod layers;
mod release;
pub mod ssh;
pub mod swarm;
mod volume;
pub use release::{FileEntry, Health, ImageInfo, Shipped};
pub use volume::TarStream;

const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";

/// Where the engine's address came from, so a hint can point at the right setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HostFrom {
    /// The local default socket.
    Default,
    /// The `DOCKER_HOST` environment variable.
    Env,
    /// An environment's `docker_host` in countable.yml.
    Config,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {host}")]
    Unreachable {
        host: String,
        from: HostFrom,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("the Docker engine at {host} did not answer within {secs} s")]
    Timeout {
        host: String,
        from: HostFrom,
        secs: u64,
    },
    #[error("cannot reach the Docker engine at {host}: {why}")]
    Ssh { host: String, why: String },
    #[error("no running `{service}` container in compose project `{project}`")]
    NoContainer { project: String, service: String },
    #[error("Docker API call failed: {0}")]
    Api(#[from] bollard::errors::Error),
    #[error(
        "countable cannot reach a Docker engine at `{0}` (it speaks unix://, tcp:// and ssh://)"
    )]
    Scheme(String),
    #[error("`{0}`: countable cannot take an ssh port in docker_host")]
    SshPort(String),
    #[error("a program in a container printed a line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("the image's new layers need more than the {} the engine's disk can spare ({} sent so far)", crate::ui::human_bytes(*budget), crate::ui::human_bytes(*needed))]
    NoRoom { needed: u64, budget: u64 },
}

impl Hint for EngineError {
    fn hint(&self) -> Option<String> {
        match self {
            EngineError::Unreachable { host, from, .. } | EngineError::Timeout { host, from, .. } => {
                Some(unreachable_hint(host, *from))
            }
            EngineError::Ssh { host, .. } => Some(unreachable_hint(host, HostFrom::Config)),
            EngineError::NoContainer { project, .. } => Some(format!(
                "see what compose project `{project}` runs on this engine: `docker compose -p {project} ps -a`"
            )),
            EngineError::Scheme(_) => Some("set docker_host in countable.yml to ssh://user@host (the engine over ssh, as the docker CLI does) or unix:///path/to/docker.sock".into()),
            EngineError::SshPort(_) => Some("give the host a name with its port in ~/.ssh/config (`Host prod` / `HostName …` / `Port 2222`) and set `docker_host: ssh://user@prod`".into()),
            EngineError::Api(_) | EngineError::LineTooLong(_) => None,
            EngineError::NoRoom { .. } => Some("make room on the engine's disk (`docker image prune` there), then try again".into()),
        }
    }
}
crate::register_hint!(EngineError);

/// The fix for an engine that does not answer, by where its address came from.
fn unreachable_hint(host: &str, from: HostFrom) -> String {
    match from {
        HostFrom::Default => "start the Docker daemon (`sudo systemctl start docker`) and check you may use it (`docker info`)".into(),
        HostFrom::Env => format!("DOCKER_HOST is set to {host}: check it points at a running engine (`docker info`), or `unset DOCKER_HOST`"),
        HostFrom::Config => match host.strip_prefix("ssh://") {
            Some(dest) => format!("check that `ssh {dest} docker info` works without a prompt (keys, agent, ~/.ssh/config), or fix `docker_host` of this environment in countable.yml"),
            None => format!("check that `docker_host` of this environment in countable.yml points at a running engine (`DOCKER_HOST={host} docker info`)"),
        },
    }
}

/// One container of a compose project, as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceState {
    pub service: String,
    pub container: String,
    pub id: String,
    /// `running`, `exited`, `restarting`, …
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or none without a healthcheck.
    pub health: Option<String>,
    /// Published host ports.
    pub ports: Vec<u16>,
    pub started_at: Option<String>,
    /// The exit code of a container that stopped.
    pub exit_code: Option<i64>,
}

impl ServiceState {
    /// Running (and healthy, when it has a healthcheck), or a one-shot that exited 0.
    pub fn is_good(&self) -> bool {
        match self.state.as_str() {
            "running" => self.health.as_deref().is_none_or(|h| h == "healthy"),
            "exited" => self.exit_code == Some(0),
            _ => false,
        }
    }
}

/// What an exec printed and how it ended.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// How a streamed exec ended: its exit code, the tails of its output, and how feeding
/// its stdin went (a source that failed mid-way shows up here, not as the exit code).
#[derive(Debug)]
pub struct StreamedExec {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
    pub fed: std::io::Result<u64>,
    /// Output beyond `cap` was dropped (the kept text is the tail).
    pub truncated: bool,
}

/// Keep the last `cap` bytes of a growing buffer; true when something was dropped.
fn push_capped(buf: &mut Vec<u8>, bytes: &[u8], cap: usize) -> bool {
    buf.extend_from_slice(bytes);
    if buf.len() > cap {
        let cut = buf.len() - cap;
        buf.drain(..cut);
        return true;
    }
    false
}

type ExecOutputStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;
type ExecInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// An exec whose stdin stays open for as long as the caller likes: write to it as you
/// go, read its stdout line by line, then `finish`. Dropping it closes the connection,
/// which the program in the container sees as EOF on its stdin.
pub struct ExecSession {
    docker: Docker,
    exec_id: String,
    output: ExecOutputStream,
    input: ExecInput,
    /// Stdout received but not yet returned as a line.
    pending: Vec<u8>,
    /// The last 64 KiB of stderr.
    stderr: Vec<u8>,
}

impl ExecSession {
    /// Write `bytes` to the program's stdin (flushed).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.input.write_all(bytes).await?;
        self.input.flush().await
    }

    /// The next line of stdout, without its newline; `None` once the output has ended.
    /// A line longer than `max` bytes is an error (a bounded buffer, whatever runs).
    pub async fn read_line(&mut self, max: usize) -> Result<Option<String>, EngineError> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                ));
            }
            if self.pending.len() > max {
                return Err(EngineError::LineTooLong(max));
            }
            match self.output.next().await {
                None => return Ok(None),
                Some(chunk) => match chunk? {
                    bollard::container::LogOutput::StdOut { message } => {
                        self.pending.extend_from_slice(&message)
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        push_capped(&mut self.stderr, &message, 64 * 1024);
                    }
                    _ => {}
                },
            }
        }
    }

    /// Forget the stderr received so far (what comes after is a new request's).
    pub fn clear_stderr(&mut self) {
        self.stderr.clear();
    }

    /// What the program wrote to stderr so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Send EOF, drain the rest of the output (the last 64 KiB kept) and read the exit code.
    pub async fn finish(mut self) -> Result<ExecOutput, EngineError> {
        use tokio::io::AsyncWriteExt;
        let _ = self.input.shutdown().await;
        let mut out = std::mem::take(&mut self.pending);
        while let Some(chunk) = self.output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdOut { message } => {
                    push_capped(&mut out, &message, 64 * 1024);
                }
                bollard::container::LogOutput::StdErr { message } => {
                    push_capped(&mut self.stderr, &message, 64 * 1024);
                }
                _ => {}
            }
        }
        let inspect = self.docker.inspect_exec(&self.exec_id).await?;
        Ok(ExecOutput {
            code: inspect.exit_code.unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
        })
    }
}

/// A connected, version-negotiated Docker client.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

fn host_label() -> (String, HostFrom) {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => (h, HostFrom::Env),
        _ => ("unix:///var/run/docker.sock".into(), HostFrom::Default),
    }
}

impl Engine {
    /// Connect (honouring `DOCKER_HOST`), negotiate the API version down to the
    /// engine's, and ping, with a bounded wait.
    pub async fn connect() -> Result<Self, EngineError> {
        let (host, from) = host_label();
        let docker =
            Docker::connect_with_defaults().map_err(|source| EngineError::Unreachable {
                host: host.clone(),
                from,
                source,
            })?;
        Self::ready(docker, &host, from).await
    }

    /// Negotiate the API version and ping, within 10 s.
    async fn ready(docker: Docker, host: &str, from: HostFrom) -> Result<Self, EngineError> {
        let secs = 10;
        let docker = tokio::time::timeout(Duration::from_secs(secs), async {
            let docker = docker.negotiate_version().await?;
            docker.ping().await?;
            Ok::<_, bollard::errors::Error>(docker)
        })
        .await
        .map_err(|_| EngineError::Timeout {
            host: host.to_string(),
            from,
            secs,
        })?
        .map_err(|source| EngineError::Unreachable {
            host: host.to_string(),
            from,
            source,
        })?;
        Ok(Self { docker })
    }

    /// Connect to `host` (`unix://…`, `tcp://…`, `ssh://…`), or as `connect` does
    /// when `None`.
    pub async fn connect_to(host: Option<&str>) -> Result<Self, EngineError> {
        let Some(host) = host else {
            return Self::connect().await;
        };
        let unreachable = |source| EngineError::Unreachable {
            host: host.to_string(),
            from: HostFrom::Config,
            source,
        };
        let docker = if host.starts_with("unix://") {
            Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
        } else if let Some(rest) = host.strip_prefix("ssh://") {
            // The system's ssh (keys, agent, ~/.ssh/config) and `docker system
            // dial-stdio` on the remote, as the docker CLI does. The client library
            // drops a port given in the URL, so refuse one rather than dial port 22.
            if rest
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                return Err(EngineError::SshPort(host.to_string()));
            }
            match ssh::open(host).await {
                Ok(Some(local)) => {
                    Docker::connect_with_unix(&local, 120, bollard::API_DEFAULT_VERSION)
                }
                Ok(None) => Docker::connect_with_ssh(host, 120, bollard::API_DEFAULT_VERSION),
                Err(why) => {
                    return Err(EngineError::Ssh {
                        host: host.to_string(),
                        why,
                    })
                }
            }
        } else {
            return Err(EngineError::Scheme(host.to_string()));
        }
        .map_err(unreachable)?;
        Self::ready(docker, host, HostFrom::Config).await
    }

    /// The engine's version, its API version, and its data root (for free disk).
    pub async fn describe(&self) -> Result<(String, String, Option<String>), EngineError> {
        let v = self.docker.version().await?;
        let info = self.docker.info().await?;
        Ok((
            v.version.unwrap_or_else(|| "?".into()),
            v.api_version.unwrap_or_else(|| "?".into()),
            info.docker_root_dir,
        ))
    }

    /// The image a container runs.
    pub async fn image_of(&self, container: &str) -> Result<String, EngineError> {
        let c = self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await?;
        Ok(c.config.and_then(|c| c.image).unwrap_or_default())
    }

    /// Start a throwaway container of `image` with `env` (no ports published), named
    /// `name`; remove it with `remove`.
    pub async fn run_disposable(
        &self,
        name: &str,
        image: &str,
        env: &[String],
        labels: &[(&str, &str)],
    ) -> Result<String, EngineError> {
        use bollard::query_parameters::CreateContainerOptions;
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                bollard::models::ContainerCreateBody {
                    image: Some(image.to_string()),
                    env: Some(env.to_vec()),
                    labels: Some(
                        labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .chain([("countable.disposable".to_string(), "true".to_string())])
                            .collect(),
                    ),
                    ..Default::default()
                },
            )
            .await?;
        self.start_or_remove(created.id).await
    }

    /// Start a stopped container (one already running is fine).
    pub async fn start(&self, container: &str) -> Result<(), EngineError> {
        use bollard::query_parameters::StartContainerOptions;
        match self
            .docker
            .start_container(container, None::<StartContainerOptions>)
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Start a container just created; one that does not start (a missing entrypoint,
    /// a bad option) is removed here: nobody else knows it exists.
    async fn start_or_remove(&self, id: String) -> Result<String, EngineError> {
        use bollard::query_parameters::StartContainerOptions;
        if let Err(e) = self
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            let _ = self.remove(&id).await;
            return Err(e.into());
        }
        Ok(id)
    }

    /// The ID (`sha256:…`) of the image a container runs.
    pub async fn image_id_of(&self, container: &str) -> Result<String, EngineError> {
        let c = self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await?;
        Ok(c.image.unwrap_or_default())
    }

    /// Does this engine hold `image` (a name or an ID)?
    pub async fn has_image(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Copy `image` (a name or an ID) from engine `from` into this one, streamed
    /// (`docker save | docker load`); the bytes sent. An image copied by ID arrives
    /// untagged, so no name on this engine is changed.
    pub async fn copy_image_from(&self, from: &Engine, image: &str) -> Result<u64, EngineError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let failed: Arc<Mutex<Option<bollard::errors::Error>>> = Arc::default();
        let sent = Arc::new(AtomicU64::new(0));
        let (failed_in, sent_in) = (failed.clone(), sent.clone());
        let source = from.docker.export_image(image).scan((), move |_, chunk| {
            futures_util::future::ready(match chunk {
                Ok(bytes) => {
                    sent_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    Some(bytes)
                }
                Err(e) => {
                    *failed_in.lock().expect("not poisoned") = Some(e);
                    None
                }
            })
        });
        let options = bollard::query_parameters::ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut loaded = self.docker.import_image_stream(options, source, None);
        let mut outcome = Ok(());
        while let Some(r) = loaded.next().await {
            if let Err(e) = r {
                outcome = Err(e);
                break;
            }
        }
        if let Some(e) = failed.lock().expect("not poisoned").take() {
            return Err(e.into());
        }
        outcome?;
        Ok(sent.load(Ordering::Relaxed))
    }

    /// Remove a container and its anonymous volumes, running or not.
    pub async fn remove(&self, container: &str) -> Result<(), EngineError> {
        use bollard::query_parameters::RemoveContainerOptions;
        self.docker
            .remove_container(
                container,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await?;
        Ok(())
    }

    /// Run `cmd` in `container` with its stdout streamed into `sink` (stderr kept, last
    /// 64 KiB). A sink that fails stops the stream; its error is returned beside the
    /// exit code.
    pub async fn exec_to_writer<W>(
        &self,
        container: &str,
        cmd: &[&str],
        sink: &mut W,
    ) -> Result<(i64, String, std::io::Result<u64>), EngineError>
    where
        W: tokio::io::AsyncWrite + Unpin + Send + ?Sized,
    {
        use tokio::io::AsyncWriteExt;
        let (exec_id, mut output, _) = self
            .start_attached(container, cmd, &[], false, false, None)
            .await?;
        let mut err = Vec::new();
        let mut written = Ok(0u64);
        {
            while let Some(chunk) = output.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdOut { message } => {
                        if let Ok(n) = &mut written {
                            match sink.write_all(&message).await {
                                Ok(()) => *n += message.len() as u64,
                                Err(e) => {
                                    written = Err(e);
                                    break;
                                }
                            }
                        }
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        push_capped(&mut err, &message, 64 * 1024);
                    }
                    _ => {}
                }
            }
        }
        let inspect = self.docker.inspect_exec(&exec_id).await?;
        Ok((
            inspect.exit_code.unwrap_or(-1),
            String::from_utf8_lossy(&err).into_owned(),
            written,
        ))
    }

    /// Every container (running or not) of compose project `project`, by service name.
    pub async fn project_services(&self, project: &str) -> Result<Vec<ServiceState>, EngineError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={project}")],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        let mut out = Vec::new();
        for c in list {
            // countable's own helpers (drills, deploy's file writer) may carry the
            // project's labels through their image: they are not the project's.
            if c.labels
                .as_ref()
                .is_some_and(|l| l.contains_key("countable.disposable"))
            {
                continue;
            }
            // A Swarm task's container carries them the same way (web's image was
            // built by compose): it is the stack's, not the compose project's.
            if c.labels
                .as_ref()
                .is_some_and(|l| l.contains_key("com.docker.swarm.task.id"))
            {
                continue;
            }
            let id = c.id.clone().unwrap_or_default();
            let service = c
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_LABEL).cloned())
                .unwrap_or_default();
            let container = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let mut ports: Vec<u16> = c
                .ports
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.public_port)
                .collect();
            ports.sort_unstable();
            ports.dedup();
            let inspect = self
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await?;
            let st = inspect.state.unwrap_or_default();
            out.push(ServiceState {
                service,
                container,
                id,
                state: st
                    .status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                health: st
                    .health
                    .and_then(|h| h.status)
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty() && s != "none"),
                ports,
                started_at: st.started_at,
                exit_code: (st.status.is_some_and(|s| s.to_string() == "exited"))
                    .then_some(st.exit_code)
                    .flatten(),
            });
        }
        out.sort_by(|a, b| {
            a.service
                .cmp(&b.service)
                .then(a.container.cmp(&b.container))
        });
        Ok(out)
    }

    /// The running container of `service` in `project`.
    pub async fn service_container(
        &self,
        project: &str,
        service: &str,
    ) -> Result<String, EngineError> {
        self.project_services(project)
            .await?
            .into_iter()
            .find(|s| s.service == service && s.state == "running")
            .map(|s| s.id)
            .ok_or_else(|| EngineError::NoContainer {
                project: project.into(),
                service: service.into(),
            })
    }

    /// Create and start an exec of `cmd` (a TTY when `tty`) as `user` (`uid[:gid]` or a
    /// name; None: the container's user), attached: its id, its output, its stdin.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_attached(
        &self,
        container: &str,
        cmd: &[&str],
        env: &[String],
        stdin: bool,
        tty: bool,
        user: Option<&str>,
    ) -> Result<(String, ExecOutputStream, ExecInput), EngineError> {
        let exec = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    env: Some(env.to_vec()),
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    user: user.map(str::to_string),
                    ..Default::default()
                },
            )
            .await?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty,
                    output_capacity: Some(1024 * 1024),
                }),
            )
            .await?;
        match started {
            StartExecResults::Attached { output, input } => Ok((exec.id, output, input)),
            StartExecResults::Detached => Err(EngineError::Api(
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 500,
                    message: "exec started detached".into(),
                },
            )),
        }
    }

    /// Start `cmd` in `container` (no TTY) with its stdin kept open: a conversation.
    pub async fn exec_session(
        &self,
        container: &str,
        cmd: &[&str],
        env: &[String],
    ) -> Result<ExecSession, EngineError> {
        let (exec_id, output, input) = self
            .start_attached(container, cmd, env, true, false, None)
            .await?;
        Ok(ExecSession {
            docker: self.docker.clone(),
            exec_id,
            output,
            input,
            pending: Vec::new(),
            stderr: Vec::new(),
        })
    }

    /// Run `cmd` in `container` (no TTY) with `stdin` streamed in while its output is
    /// drained (bounded: the last `cap` bytes of each are kept). Stdin is shut down at the
    /// end of the source to send EOF; the exit code is read after the output ends.
    pub async fn exec_stream<R>(
        &self,
        container: &str,
        cmd: &[&str],
        env: &[String],
        stdin: Option<R>,
        cap: usize,
    ) -> Result<StreamedExec, EngineError>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        use tokio::io::AsyncWriteExt;
        let (exec_id, mut output, mut input) = self
            .start_attached(container, cmd, env, stdin.is_some(), false, None)
            .await?;
        // Stdin goes in writes of up to 256 KiB (tokio's `copy` writes 8 KiB at a time).
        let feed = async move {
            let result = match stdin {
                Some(source) => {
                    let mut source = tokio::io::BufReader::with_capacity(256 * 1024, source);
                    tokio::io::copy_buf(&mut source, &mut input).await
                }
                None => Ok(0),
            };
            let _ = input.shutdown().await;
            drop(input);
            result
        };
        // The output is drained on a task of its own: polled beside the feed, the
        // upgraded connection's read would be polled again at every write of the feed,
        // clearing its buffer each time (a seventh of countable's CPU in a restore).
        let mut drain = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = output.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdOut { message } => {
                        truncated |= push_capped(&mut out, &message, cap)
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        push_capped(&mut err, &message, cap);
                    }
                    _ => {}
                }
            }
            Ok::<_, EngineError>((out, err, truncated))
        }));
        let (fed, drained) = tokio::join!(feed, &mut drain);
        // The task is never cancelled while awaited: an error is its panic, passed on.
        let drained = drained.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let (out, err, truncated) = drained?;
        let inspect = self.docker.inspect_exec(&exec_id).await?;
        Ok(StreamedExec {
            code: inspect.exit_code.unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            fed,
            truncated,
        })
    }

    /// Run `cmd` in `container` (no TTY, no stdin) and collect its output and exit code.
    /// A missing binary shows up as a non-zero code with the shell's text in stderr.
    pub async fn exec_capture(
        &self,
        container: &str,
        cmd: &[&str],
        env: &[String],
    ) -> Result<ExecOutput, EngineError> {
        let r = self
            .exec_stream(
                container,
                cmd,
                env,
                None::<tokio::io::Empty>,
                4 * 1024 * 1024,
            )
            .await?;
        Ok(ExecOutput {
            code: r.code,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_fit_where_the_host_came_from() {
        let ssh = unreachable_hint("ssh://deploy@prod", HostFrom::Config);
        assert!(!ssh.contains("DOCKER_HOST"), "{ssh}");
        assert!(ssh.contains("ssh deploy@prod docker info"), "{ssh}");
        let env = unreachable_hint("tcp://10.0.0.5:2376", HostFrom::Env);
        assert!(env.contains("DOCKER_HOST is set"), "{env}");
        let local = unreachable_hint("unix:///var/run/docker.sock", HostFrom::Default);
        assert!(local.contains("systemctl start docker"), "{local}");
    }

    #[test]
    fn no_hint_suggests_an_open_engine_port() {
        let errors = [
            EngineError::Scheme("ftp://x".into()),
            EngineError::SshPort("ssh://a@b:2222".into()),
            EngineError::NoContainer {
                project: "shop-prod".into(),
                service: "db".into(),
            },
        ];
        for e in errors {
            let hint = e.hint().unwrap();
            assert!(!hint.contains("tcp://"), "{e}: {hint}");
            assert!(!hint.contains("2375"), "{e}: {hint}");
            assert!(!hint.contains("countable up"), "{e}: {hint}");
        }
    }
}
