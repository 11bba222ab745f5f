//! `countable status`: services, state, health and URL of the local environment.

use crate::environment::Local;
use crate::ui::Printer;

/// Show each service's state and health, and the URL.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable status\n  countable status --json | jq '.services[].health'\n  countable status prod      # a Swarm environment: replicas, nodes, last update"
)]
pub struct Args {
    /// A Swarm environment (mode: swarm) instead of the local one
    pub env: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    if let Some(env) = &args.env {
        let env = crate::data::resolve_env(&local, Some(env))?;
        let status = crate::swarm::env_status(&local, &env).await?;
        if args.json {
            printer.data(&serde_json::to_string_pretty(&status)?);
        } else {
            for line in status.lines() {
                printer.data(&line);
            }
        }
        return Ok(());
    }
    local.recover_db(printer).await?;
    let states = local.status().await?;
    let url = local.url_from(&states);
    let project = local.project.compose_name().to_string();
    if args.json {
        let doc = serde_json::json!({ "project": project, "url": url, "services": states });
        printer.data(&serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if states.is_empty() {
        printer.note(&format!("{project} is not running (countable up)"));
        return Ok(());
    }
    printer.data(&format!(
        "{:<12} {:<12} {:<10} PORTS",
        "SERVICE", "STATE", "HEALTH"
    ));
    for s in &states {
        let ports = if s.ports.is_empty() {
            "-".to_string()
        } else {
            s.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        printer.data(&format!(
            "{:<12} {:<12} {:<10} {ports}",
            s.service,
            s.state,
            s.health.as_deref().unwrap_or("-")
        ));
    }
    printer.data(&format!("\n{url}"));
    Ok(())
}
