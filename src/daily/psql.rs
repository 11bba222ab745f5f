//! `countable psql [<env>]`: psql in an environment's db container, as the user the
//! image was initialised with, on the application's database. The local database by
//! default. A deployed environment's session is read-only
//! (`default_transaction_read_only`) unless `--write`, which asks first on a terminal:
//! a guard against a slip of the keyboard, not a permission (a superuser can
//! `SET default_transaction_read_only = off`).

use crate::environment::Local;
use crate::error::Hinted;
use crate::names::EnvName;
use crate::ui::Printer;

/// The psql setting that makes every transaction of the session read-only.
pub const READ_ONLY: &str = "PGOPTIONS=-c default_transaction_read_only=on";

/// psql's command line in the container: `user` on `database`, then the user's `args`.
/// A `script` (SQL on stdin, not a person) stops at its first error and exits 3, as
/// scripts need (psql itself goes on and exits 0).
pub fn command(user: &str, database: &str, args: &[String], script: bool) -> Vec<String> {
    let mut v: Vec<String> = ["psql", "-U", user, "-d", database]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if script {
        v.extend(["-v".to_string(), "ON_ERROR_STOP=1".to_string()]);
    }
    v.extend(args.iter().cloned());
    v
}

/// Is a session on `env` (None: local) read-only, given `--write`?
pub fn read_only(env: Option<&EnvName>, write: bool) -> bool {
    env.is_some() && !write
}

/// Run psql on `env`'s database (None: the local one) attached to this terminal.
pub async fn run(
    local: &mut Local,
    printer: &Printer,
    env: Option<&EnvName>,
    write: bool,
    args: &[String],
) -> anyhow::Result<()> {
    let (db, label) = match env {
        None => (
            local.local_db(printer).await?,
            format!("the local database of {}", local.project.compose_name()),
        ),
        Some(env) => {
            let (_, db) = local.env_db(env).await?;
            (db, format!("{env}'s database"))
        }
    };
    if let (Some(env), true) = (env, write) {
        if printer.interactive()
            && !printer.confirm(
                &format!("Open a session on {env} that can change its data?"),
                false,
            )?
        {
            return Err(Hinted::new(
                format!("no session opened on {env}"),
                format!("`countable psql {env}` opens a read-only one"),
            )
            .into());
        }
    }
    let read_only = read_only(env, write);
    let env_vars: Vec<String> = if read_only {
        vec![READ_ONLY.to_string()]
    } else {
        Vec::new()
    };
    printer.status(&format!(
        "psql on {label} `{}`{}",
        db.name,
        if read_only {
            " (read-only; --write to change data)"
        } else if env.is_some() {
            " (WRITABLE)"
        } else {
            ""
        }
    ));
    use std::io::IsTerminal;
    let cmd = command(&db.user, &db.name, args, !std::io::stdin().is_terminal());
    let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let code = db
        .engine()
        .exec_attached(
            &db.container,
            &refs,
            &env_vars,
            crate::engine::attach::on_terminal(),
            None,
        )
        .await?;
    crate::error::pass_through(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployed_environments_are_read_only_unless_write() {
        let prod = EnvName::parse("prod").unwrap();
        assert!(read_only(Some(&prod), false));
        assert!(!read_only(Some(&prod), true));
        assert!(
            !read_only(None, false),
            "the local database is the developer's own"
        );
        assert_eq!(
            command("shop", "shop", &["-c".into(), "select 1".into()], false),
            ["psql", "-U", "shop", "-d", "shop", "-c", "select 1"]
        );
        let script = command("shop", "shop", &[], true);
        assert!(script.ends_with(&["-v".to_string(), "ON_ERROR_STOP=1".to_string()]));
    }
}
