//! `countable init`: adopt the Django project in the current directory.

use crate::adopt;
use crate::names;
use crate::scaffold::{self, Secrets};
use crate::ui::Printer;

use super::choices::ChoiceArgs;

/// Add what is missing for countable (compose file, Dockerfile, entrypoint, nginx
/// config, .env, Jenkinsfile, countable.yml) to the Django project in the current
/// directory. Existing files are never overwritten; settings you must add by hand are
/// printed on stdout.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable init\n  countable init --name shop --settings shop.settings.production --yes"
)]
pub struct Args {
    /// Project name (default: from the directory name)
    #[arg(long)]
    pub name: Option<String>,
    /// Settings module (default: the one manage.py sets)
    #[arg(long, value_name = "MODULE")]
    pub settings: Option<String>,
    #[command(flatten)]
    pub choices: ChoiceArgs,
}

pub fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let root = std::env::current_dir()?;
    let layout = adopt::detect(&root, args.settings.as_deref())?;
    let raw = match &args.name {
        Some(n) => n.clone(),
        None => names::suggest(&root.file_name().unwrap_or_default().to_string_lossy()),
    };
    let name = names::parse_project_or(&raw, |ok| format!("countable init --name {ok}"))?;
    let choices = args.choices.resolve(name.clone(), printer)?;
    let files = scaffold::plan(&choices, &layout, &Secrets::random(), false)?;
    let report = scaffold::write_missing(&root, &files)?;
    for p in &report.written {
        printer.success(&format!("added {}", p.display()));
    }
    for p in &report.skipped {
        printer.note(&format!(
            "   kept {} (it exists; countable never overwrites it)",
            p.display()
        ));
    }
    let gitignore = std::fs::read_to_string(root.join(".gitignore")).unwrap_or_default();
    if !gitignore
        .lines()
        .any(|l| l.trim() == ".env" || l.trim() == "/.env")
    {
        printer.warn("add `.env` to .gitignore: it holds secrets");
    }
    let reqs = std::fs::read_to_string(root.join("requirements.txt"))
        .unwrap_or_default()
        .to_lowercase();
    for (pkg, why) in [
        ("gunicorn", "the web server the Dockerfile runs"),
        ("psycopg", "the PostgreSQL driver"),
    ] {
        if !reqs.contains(pkg) {
            printer.warn(&format!("requirements.txt lacks {pkg} ({why})"));
        }
    }
    for gap in adopt::contract_gaps(&root, &layout) {
        printer.warn(&gap);
    }
    let advice = adopt::settings_advice(&root, &layout);
    if !advice.is_empty() {
        printer.note(&format!(
            "\nadd these lines to {} (countable does not edit your code):",
            layout.settings_module
        ));
        for line in advice {
            printer.data(&line);
        }
    }
    printer.note(&format!("\nproject `{name}` adopted; then: countable up"));
    Ok(())
}
