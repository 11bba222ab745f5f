//! The daily loop of a developer in a running project: a command in a service
//! (`exec`, `manage`, `shell`), a database prompt on any environment (`psql`), a dump
//! of the local data (`export-db`), the app in a browser (`open`), and a check of
//! everything countable needs (`doctor`).
//!
//! Programs run where the project runs, in its containers, through the engine's exec
//! (`engine::attach`). Nothing here talks to a database port.

pub mod doctor;
pub mod export;
pub mod open;
pub mod psql;

use crate::engine::EngineError;
use crate::environment::Local;
use crate::error::Hinted;

/// What `exec` runs when no command is given: bash where there is one, else sh.
const LOGIN_SHELL: &[&str] = &[
    "sh",
    "-c",
    "command -v bash >/dev/null && exec bash || exec sh",
];

/// The command `exec` runs: the user's, or a shell.
pub fn command_or_shell(cmd: &[String]) -> Vec<String> {
    if cmd.is_empty() {
        LOGIN_SHELL.iter().map(|s| s.to_string()).collect()
    } else {
        cmd.to_vec()
    }
}

/// `python manage.py ARGS…`, as `manage` and `shell` run it in web.
pub fn manage_command(args: &[String]) -> Vec<String> {
    let mut v = vec!["python".to_string(), "manage.py".to_string()];
    v.extend(args.iter().cloned());
    v
}

/// Run `cmd` in the local `service` (attached to this terminal), as `user` (None: the
/// container's own); the program's exit code becomes ours. A service that is not
/// running is an error that says how to start it.
pub async fn exec(
    local: &mut Local,
    service: &str,
    cmd: &[String],
    user: Option<&str>,
) -> anyhow::Result<()> {
    let project = local.project.compose_name().to_string();
    let s = &local.project.config.services;
    let known = [s.db.clone(), s.web.clone(), s.nginx.clone()];
    let engine = local.engine().await?.clone();
    let container = match engine.service_container(&project, service).await {
        Ok(c) => c,
        Err(e @ EngineError::NoContainer { .. }) => {
            let hint = if known.iter().any(|s| s == service) {
                "`countable up`".to_string()
            } else {
                format!(
                    "is `{service}` a service of the compose files? countable.yml names {}; `docker compose config --services` lists them all; then `countable up`",
                    known.join(", ")
                )
            };
            return Err(Hinted::wrap(
                e.into(),
                format!("`{service}` of {project} is not running"),
                hint,
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let cmd = command_or_shell(cmd);
    let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
    // Through the engine, not `docker compose exec`: compose 2.40 exits 0 whatever the
    // command's code (docker/compose#8982 came back), and scripts need that code.
    let code = engine
        .exec_attached(
            &container,
            &refs,
            &[],
            crate::engine::attach::on_terminal(),
            user,
        )
        .await?;
    crate::error::pass_through(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_command_is_a_shell() {
        let cmd = strings(&["ls", "-l"]);
        assert_eq!(command_or_shell(&cmd), cmd);
        let shell = command_or_shell(&[]);
        assert_eq!(shell[0], "sh");
        assert!(shell.last().unwrap().contains("exec bash || exec sh"));
    }

    #[test]
    fn manage_runs_manage_py() {
        assert_eq!(
            manage_command(&strings(&["migrate", "--plan"])),
            strings(&["python", "manage.py", "migrate", "--plan"])
        );
    }
}
