//! `countable manage ARGS…` and `countable shell`: Django's manage.py in web.

use crate::daily;
use crate::environment::Local;

/// Run `python manage.py ARGS…` in the running web service; its exit code is ours.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable manage createsuperuser\n  countable manage migrate --plan\n  countable manage --user \"$(id -u):$(id -g)\" makemigrations\n  countable manage dumpdata auth.user --indent 2 > users.json"
)]
pub struct Args {
    /// Run as this user (`uid[:gid]`; default: the container's user). With live code on
    /// Linux, commands that write into the project (makemigrations, startapp) need
    /// your own: `--user "$(id -u):$(id -g)"`
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// manage.py's command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub args: Vec<String>,
}

/// Django's interactive shell (`python manage.py shell`) in the running web service.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable shell\n  echo 'from django.contrib.auth.models import User; print(User.objects.count())' | countable shell"
)]
pub struct ShellArgs {
    /// More arguments for `manage.py shell` (e.g. `-c CODE`)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    in_web(daily::manage_command(&args.args), args.user.as_deref()).await
}

pub async fn shell(args: ShellArgs) -> anyhow::Result<()> {
    let mut all = vec!["shell".to_string()];
    all.extend(args.args);
    in_web(daily::manage_command(&all), None).await
}

async fn in_web(command: Vec<String>, user: Option<&str>) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let web = local.project.config.services.web.clone();
    daily::exec(&mut local, &web, &command, user).await
}
