//! The only place that runs the docker CLI's Swarm commands (`stack deploy`, `service
//! logs`, `config ls/rm`) against a manager: the CLI is Swarm's own converter from the
//! compose format to service specs, and `service logs` gathers a service's tasks'
//! logs from every node. The stack file goes in on stdin (it holds the environment's
//! secrets), never on a command line or in a file.

use std::path::Path;
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::process;

/// The docker CLI aimed at one manager.
#[derive(Debug, Clone)]
pub struct Docker {
    host: Option<String>,
}

impl Docker {
    pub fn new(host: Option<String>) -> Self {
        Self { host }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = process::async_command("docker");
        cmd.args(args).env_remove("DOCKER_CONTEXT");
        if let Some(host) = &self.host {
            // An ssh engine this run has a tunnel to: through it (engine::ssh).
            let host = crate::engine::ssh::local_for(host).unwrap_or_else(|| host.clone());
            cmd.env("DOCKER_HOST", host);
        }
        cmd
    }

    /// The line a person would type (without the stack file, which is stdin).
    pub fn display(&self, args: &[&str]) -> String {
        let mut v = vec!["docker".to_string()];
        v.extend(args.iter().map(|a| a.to_string()));
        let line = crate::compose::shell_line(&v);
        match &self.host {
            Some(h) => format!("DOCKER_HOST={h} {line}"),
            None => line,
        }
    }

    /// The arguments of `docker stack deploy` for `stack` (the stack file on stdin):
    /// what runs, and what `--dry-run` prints. `prune` removes services the file no
    /// longer has.
    pub fn stack_deploy_args(stack: &str, resolve_image: &str, prune: bool) -> Vec<String> {
        let mut v: Vec<String> = [
            "stack",
            "deploy",
            "--detach=false",
            "--with-registry-auth",
            "--resolve-image",
            resolve_image,
        ]
        .map(String::from)
        .to_vec();
        if prune {
            v.push("--prune".into());
        }
        v.extend(["--compose-file".into(), "-".into(), stack.into()]);
        v
    }

    /// `docker stack deploy` ([`Self::stack_deploy_args`]) with `doc` on stdin, run in
    /// `dir` (configs' files are read from there); each line of its output goes to
    /// `on_line`. The error carries its last lines.
    pub async fn stack_deploy(
        &self,
        stack: &str,
        doc: &[u8],
        dir: &Path,
        resolve_image: &str,
        prune: bool,
        on_line: impl Fn(&str),
    ) -> anyhow::Result<()> {
        // "update out of sequence": a service's spec changed between the CLI reading
        // it and writing it (Swarm's own rollback or reconciliation, an update still
        // settling). The deploy reads every spec again, so running it again is safe.
        let mut attempt = 1;
        loop {
            match self
                .stack_deploy_once(stack, doc, dir, resolve_image, prune, &on_line)
                .await
            {
                Err(e) if attempt < 3 && e.to_string().contains("update out of sequence") => {
                    on_line("a service changed under the deploy (update out of sequence); deploying again");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                r => return r,
            }
        }
    }

    async fn stack_deploy_once(
        &self,
        stack: &str,
        doc: &[u8],
        dir: &Path,
        resolve_image: &str,
        prune: bool,
        on_line: &impl Fn(&str),
    ) -> anyhow::Result<()> {
        let argv = Self::stack_deploy_args(stack, resolve_image, prune);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut child = self
            .command(&args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{}`", self.display(&args)))?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(doc)
            .await
            .context("writing the stack file to docker")?;
        drop(stdin);
        let out = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
        let err = tokio::io::BufReader::new(child.stderr.take().expect("piped"));
        let (mut out, mut err) = (out.lines(), err.lines());
        let mut tail: Vec<String> = Vec::new();
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            let line = tokio::select! {
                l = out.next_line(), if !out_done => match l? {
                    Some(l) => Some(l),
                    None => { out_done = true; None }
                },
                l = err.next_line(), if !err_done => match l? {
                    Some(l) => Some(l),
                    None => { err_done = true; None }
                },
            };
            if let Some(line) = line {
                on_line(&line);
                tail.push(line);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
        }
        let status = child
            .wait()
            .await
            .context("waiting for docker stack deploy")?;
        if !status.success() {
            return Err(crate::error::Hinted::new(
                format!("`{}` failed ({status}):\n{}", self.display(&args), tail.join("\n")),
                format!("its last lines above say why; `docker service ps --no-trunc {stack}_<service>` on the manager shows each task's error"),
            )
            .into());
        }
        Ok(())
    }

    /// `docker service logs` of `service`, on our stdout.
    pub async fn service_logs(
        &self,
        service: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> anyhow::Result<()> {
        let tail = tail.map(|t| t.to_string());
        let mut args = vec!["service", "logs", "--timestamps"];
        if follow {
            args.push("--follow");
        }
        if let Some(t) = &tail {
            args.extend(["--tail", t.as_str()]);
        }
        args.push(service);
        let status = self
            .command(&args)
            .stdin(Stdio::null())
            .status()
            .await
            .with_context(|| format!("starting `{}`", self.display(&args)))?;
        if !status.success() {
            return Err(crate::error::Hinted::new(
                format!("`{}` failed ({status})", self.display(&args)),
                format!("check the service's name (`countable status <env>` lists them) and that {} is a manager", self.host.as_deref().unwrap_or("the engine")),
            )
            .into());
        }
        Ok(())
    }

    /// Remove the configs of `stack` not in `keep` (stack deploy never does); one in
    /// use by a task is refused by the engine and stays. Best effort.
    pub async fn prune_configs(&self, stack: &str, keep: &[String]) {
        let filter = format!("label=com.docker.stack.namespace={stack}");
        let args = ["config", "ls", "--filter", &filter, "--format", "{{.Name}}"];
        let Ok(out) = self.command(&args).stdin(Stdio::null()).output().await else {
            return;
        };
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .filter(|n| !keep.iter().any(|k| k == n || format!("{stack}_{k}") == *n))
            .map(String::from)
            .collect();
        for name in names {
            let _ = self
                .command(&["config", "rm", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
}
