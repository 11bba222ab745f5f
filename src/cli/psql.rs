//! `countable psql [<env>]`: a psql session on an environment's database.

use crate::environment::Local;
use crate::ui::Printer;

/// psql on the local database, or on a deployed environment's (read-only unless
/// `--write`, which asks first on a terminal). psql's own options go after `--`, or
/// as `-c SQL`; SQL on stdin works too. Reached through the Docker API: no port.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable psql\n  countable psql -c 'select count(*) from auth_user'\n  countable psql prod                 read-only\n  countable psql prod --write         asks first\n  countable psql < fix.sql\n  countable psql -- -A -t -c 'select 1'"
)]
pub struct Args {
    /// The environment (default: the local database)
    pub env: Option<String>,
    /// Run this SQL and exit (psql's -c)
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub command: Vec<String>,
    /// Allow changes on a deployed environment (asks first on a terminal)
    #[arg(long)]
    pub write: bool,
    /// More arguments for psql, after `--`
    #[arg(last = true)]
    pub psql_args: Vec<String>,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let env = match &args.env {
        Some(e) => Some(crate::data::resolve_env(&local, Some(e))?),
        None => None,
    };
    let mut psql_args = Vec::new();
    for sql in args.command {
        psql_args.extend(["-c".to_string(), sql]);
    }
    psql_args.extend(args.psql_args);
    crate::daily::psql::run(&mut local, printer, env.as_ref(), args.write, &psql_args).await
}
