//! `countable logs [service] [-f]`: the services' logs, on stdout.

use crate::environment::Local;

/// Show the logs of every service, or of one.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable logs\n  countable logs web -f\n  countable logs db --tail 50\n  countable logs web --env prod -f   # a Swarm environment: every node's tasks"
)]
pub struct Args {
    /// Only this service (db, web, nginx)
    pub service: Option<String>,
    /// Keep following new lines
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines of each service
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// A Swarm environment (mode: swarm) instead of the local one
    #[arg(long)]
    pub env: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    if let Some(env) = &args.env {
        let env = crate::data::resolve_env(&local, Some(env))?;
        return crate::swarm::env_logs(
            &local,
            &env,
            args.service.as_deref(),
            args.follow,
            args.tail,
        )
        .await;
    }
    local.logs(args.service.as_deref(), args.follow, args.tail)
}
