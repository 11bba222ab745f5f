//! One ssh connection per remote engine for the whole run. An `ssh://` engine is
//! reached through a unix socket here, forwarded by one ssh master process to the
//! socket the remote's own docker CLI uses (its `DOCKER_HOST` or context, asked once).
//! The API client and every `docker compose` run then talk to that socket: no new ssh
//! handshake per API connection, as the client library's own ssh transport (one ssh
//! master per connection, and every exec takes a connection of its own) and the docker
//! CLI's (`ssh … docker system dial-stdio` per connection) both make.
//!
//! The master is our child in its own process group (Ctrl-C at the terminal does not
//! cut the engine off in the middle of a clean-up), dies with us (parent-death signal,
//! and kill on drop), and its socket lives in a private temporary directory.
//!
//! An engine whose remote endpoint is not a unix socket is left to the client library's
//! ssh transport (`open` answers `None`).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::process::async_command;

/// How long the master may take to log in.
const LOGIN: Duration = Duration::from_secs(30);

/// A running master and its forwarded socket.
struct Tunnel {
    _master: Child,
    _dir: tempfile::TempDir,
    local: String,
}

/// Open tunnels, by `ssh://` address, for the life of the process.
static TUNNELS: Mutex<Option<HashMap<String, Arc<Tunnel>>>> = Mutex::new(None);

/// The local address (`unix://…`) that stands for `host` in this run, once `open` has
/// made one.
pub fn local_for(host: &str) -> Option<String> {
    let tunnels = TUNNELS.lock().ok()?;
    tunnels.as_ref()?.get(host).map(|t| t.local.clone())
}

/// The `ssh` command line, with options every use shares.
fn ssh(args: &[&str]) -> Command {
    let mut cmd = async_command("ssh");
    cmd.args(["-o", "BatchMode=yes"]).args(args);
    cmd.stdin(Stdio::null());
    cmd
}

/// Run a client of the master at `ctl`; its stdout, or ssh's complaint.
async fn through(ctl: &Path, args: &[&str]) -> Result<String, String> {
    let ctl = ctl.display().to_string();
    let mut full = vec!["-S", &ctl];
    full.extend_from_slice(args);
    let out = ssh(&full)
        .output()
        .await
        .map_err(|e| format!("running ssh: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A tunnel to `host` (`ssh://[user@]name`), made once per run: `Ok(Some(unix://…))`;
/// `Ok(None)` when the remote engine is not behind a unix socket; `Err(why)` when ssh
/// cannot log in.
pub async fn open(host: &str) -> Result<Option<String>, String> {
    if let Some(local) = local_for(host) {
        return Ok(Some(local));
    }
    let dest = host.strip_prefix("ssh://").unwrap_or(host);
    let dir = tempfile::Builder::new()
        .prefix("countable-ssh-")
        .tempdir()
        .map_err(|e| format!("making a directory for the ssh socket: {e}"))?;
    let ctl = dir.path().join("ctl");
    let ctl_arg = ctl.display().to_string();
    let mut master = ssh(&[
        "-M",
        "-S",
        &ctl_arg,
        "-N",
        "-T",
        "-o",
        "ControlPersist=no",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ExitOnForwardFailure=yes",
        "--",
        dest,
    ]);
    master
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        master.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .map_err(std::io::Error::from)
        });
    }
    let mut master = master.spawn().map_err(|e| format!("running ssh: {e}"))?;
    let started = Instant::now();
    while !ctl.exists() {
        if let Some(status) = master.try_wait().map_err(|e| e.to_string())? {
            let mut err = String::new();
            if let Some(mut e) = master.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            let err = err.trim();
            return Err(if err.is_empty() {
                format!("ssh {dest} exited ({status})")
            } else {
                err.to_string()
            });
        }
        if started.elapsed() > LOGIN {
            return Err(format!(
                "ssh {dest} did not log in within {} s",
                LOGIN.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What the remote's own docker CLI would talk to.
    let remote = through(
        &ctl,
        &[
            "-T",
            "none",
            "--",
            "docker context inspect --format '{{.Endpoints.docker.Host}}'",
        ],
    )
    .await?;
    let Some(remote_path) = remote.strip_prefix("unix://") else {
        return Ok(None);
    };
    let local = dir.path().join("docker.sock");
    let forward = format!("{}:{remote_path}", local.display());
    through(&ctl, &["-O", "forward", "-L", &forward, "none"]).await?;
    let local_url = format!("unix://{}", local.display());
    let tunnel = Arc::new(Tunnel {
        _master: master,
        _dir: dir,
        local: local_url.clone(),
    });
    if let Ok(mut tunnels) = TUNNELS.lock() {
        tunnels
            .get_or_insert_with(HashMap::new)
            .insert(host.to_string(), tunnel);
    }
    Ok(Some(local_url))
}
