//! `countable exec [SERVICE] -- CMD…`: a command in a running service (web by default).

use crate::environment::Local;

/// Run a command in a running service of the local environment: web unless another is
/// named. A TTY when this is a terminal; without a command, a shell. The command's
/// exit code is countable's.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable exec                      a shell in web\n  countable exec -- ls -l /app\n  countable exec --user \"$(id -u):$(id -g)\" -- python manage.py makemigrations\n  countable exec db -- pg_isready\n  echo 'print(1)' | countable exec -- python -"
)]
pub struct Args {
    /// The service (default: web)
    pub service: Option<String>,
    /// Run as this user (`uid[:gid]` or a name; default: the container's user)
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The command and its arguments, after `--` (default: a shell)
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let service = args
        .service
        .unwrap_or_else(|| local.project.config.services.web.clone());
    crate::daily::exec(&mut local, &service, &args.command, args.user.as_deref()).await
}
