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
    /// Settings module for deploys (default: a settings package's `production`, else
    /// the one wsgi.py or manage.py sets); development keeps a package's `dev`
    #[arg(long, value_name = "MODULE")]
    pub settings: Option<String>,
    /// Whose Dockerfile web is built from: `theirs` (an existing Dockerfile, kept as it
    /// is) or `countable` (countable's own, written as Dockerfile.countable beside it,
    /// theirs untouched)
    #[arg(long, value_enum, default_value_t = DockerfileChoice::Theirs)]
    pub dockerfile: DockerfileChoice,
    /// Show every file init would add or keep, the settings it chose and what it read,
    /// and write nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub choices: ChoiceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DockerfileChoice {
    Theirs,
    Countable,
}

pub fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let root = std::env::current_dir()?;
    let layout = adopt::detect(&root, args.settings.as_deref())?;
    let raw = match &args.name {
        Some(n) => n.clone(),
        None => names::suggest(&root.file_name().unwrap_or_default().to_string_lossy()),
    };
    let name = names::parse_project_or(&raw, |ok| format!("countable init --name {ok}"))?;
    let mut choices = args.choices.resolve(name.clone(), printer)?;
    // The team's own Dockerfile and compose file, read before anything is written.
    let theirs = adopt::dockerfile::read(&root);
    let beside = theirs.is_some() && args.dockerfile == DockerfileChoice::Countable;
    if beside {
        choices.dockerfile = "Dockerfile.countable".into();
    }
    let existing = adopt::compose::read(&root)?;
    if let Some(e) = &existing {
        printer.note(&format!("   {}: {}", e.file.display(), e.mapping()));
    }
    // Their Dockerfile's contract, when web is built from it.
    let dockerfile = if beside { None } else { theirs };
    if let Some(c) = &dockerfile {
        printer.note(&format!(
            "   Dockerfile (kept, web is built from it): {}",
            c.describe()
        ));
    } else if beside {
        printer.note(&format!(
            "   Dockerfile (kept, not used): web is built from countable's {}",
            choices.dockerfile
        ));
    }
    if let Some(e) = existing
        .as_ref()
        .filter(|_| !root.join("compose.yaml").exists())
    {
        // compose.yaml would be a second base file, and compose prefers it: a plain
        // `docker compose` would silently stop reading the team's.
        return Err(crate::error::Hinted::new(
            format!(
                "this project already has {} ({}); countable does not adopt an existing compose file yet, and its compose.yaml would shadow yours (compose prefers compose.yaml)",
                e.file.display(),
                e.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            format!(
                "move it aside (`git mv {} {}.old`), run `countable init`, then carry the services countable does not make (redis, workers) into compose.yaml",
                e.file.display(),
                e.file.display()
            ),
        )
        .into());
    }
    let files = scaffold::plan(&choices, &layout, &Secrets::random(), false)?;
    if args.dry_run {
        for f in &files {
            if root.join(&f.path).exists() {
                printer.data(&format!("keep {} (it exists)", f.path.display()));
            } else {
                printer.data(&format!("add {}", f.path.display()));
            }
        }
    } else {
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
    }
    printer.note(&format!(
        "   settings: {} for deploys (compose.yaml), {} locally{}",
        layout.settings_module,
        layout.local_settings_module,
        if layout.local_settings_module != layout.settings_module {
            " (compose.override.yaml)"
        } else {
            ""
        }
    ));
    printer.note(&format!(
        "   database: {}",
        if layout.database_url {
            "the settings read DATABASE_URL; .env sets it to the db service"
        } else {
            "POSTGRES_* in .env (the db service reads them too)"
        }
    ));
    let gitignore = std::fs::read_to_string(root.join(".gitignore"));
    // (On a dry run without one, init would write its own, which lists .env.)
    if gitignore.is_ok_and(|g| !g.lines().any(|l| l.trim() == ".env" || l.trim() == "/.env")) {
        printer.warn("add `.env` to .gitignore: it holds secrets");
    }
    let reqs = adopt::requirements::read(&root);
    if !reqs.files.is_empty() {
        let read: Vec<String> = reqs.files.iter().map(|f| f.display().to_string()).collect();
        printer.note(&format!("   requirements read: {}", read.join(", ")));
    }
    for (file, named) in &reqs.missing {
        printer.warn(&format!(
            "{} includes {named}, which does not exist",
            file.display()
        ));
    }
    for (pkgs, why) in [
        (&["gunicorn"][..], "the web server the Dockerfile runs"),
        (
            &["psycopg", "psycopg-binary", "psycopg2", "psycopg2-binary"][..],
            "the PostgreSQL driver",
        ),
    ] {
        if !reqs.has_any(pkgs) {
            let whence = if reqs.files.is_empty() {
                "no requirements.txt or pyproject.toml"
            } else {
                "the requirements"
            };
            printer.warn(&format!("{whence} lack {} ({why})", pkgs[0]));
        }
    }
    for gap in adopt::contract_gaps(&root, &layout, &choices.dockerfile) {
        printer.warn(&gap);
    }
    if let Some(workdir) = dockerfile
        .as_ref()
        .and_then(|c| c.workdir.as_deref())
        .filter(|w| w.trim_end_matches('/') != "/app")
    {
        printer.warn(&format!(
            "the kept Dockerfile works in {workdir}, but compose.yaml mounts static files at /app/staticfiles and media at /app/media: set DJANGO_STATIC_ROOT, DJANGO_MEDIA_ROOT and the mounts to {workdir}/…, or `countable init --dockerfile countable`"
        ));
    }
    let advice = adopt::settings_advice(&root, &layout);
    if !advice.is_empty() {
        printer.note(&format!(
            "\nadd these lines to {} (countable does not edit your code):",
            adopt::module_file(&root, &layout.settings_module)
                .and_then(|p| p.strip_prefix(&root).ok().map(|p| p.display().to_string()))
                .unwrap_or_else(|| layout.settings_module.clone())
        ));
        for line in advice {
            printer.data(&line);
        }
    }
    if args.dry_run {
        printer.note("\nnothing written (--dry-run); without it, init writes the files marked add");
        return Ok(());
    }
    printer.note(&format!("\nproject `{name}` adopted; then: countable up"));
    Ok(())
}
