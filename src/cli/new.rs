//! `countable new <name>`: scaffold a Django project ready for `countable up`.

use std::path::PathBuf;

use crate::names;
use crate::scaffold::{self, DjangoLayout, Secrets};
use crate::ui::Printer;

use super::choices::ChoiceArgs;

/// Create ./<name>/: compose file, Dockerfile, entrypoint, nginx config, a minimal
/// Django project configured from the environment, .env (fresh secrets), Jenkinsfile,
/// countable.yml
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable new shop\n  countable new shop --yes --port 8080\n  countable new maps --postgres 16 --postgis\n\nWithout a terminal (or with --yes) nothing is asked: flags or defaults apply."
)]
pub struct Args {
    /// Project name: lowercase letters, digits and `_`, starting with a letter
    pub name: String,
    /// Write into an existing non-empty directory (files with the same names are replaced)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub choices: ChoiceArgs,
}

pub fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let name = names::parse_project_or(&args.name, |ok| format!("countable new {ok}"))?;
    let target = PathBuf::from(name.as_str());
    if !args.force
        && target.exists()
        && std::fs::read_dir(&target)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(scaffold::ScaffoldError::NotEmpty(target).into());
    }
    let choices = args.choices.resolve(name.clone(), printer)?;
    let layout = DjangoLayout::conventional(&name);
    let files = scaffold::plan(&choices, &layout, &Secrets::random(), true)?;
    scaffold::write_new(&target, &files, args.force)?;
    printer.success(&format!(
        "created {name}/ ({} files; secrets in {name}/.env, mode 0600)",
        files.len()
    ));
    printer.note(&format!("\nnext:\n  cd {name} && countable up"));
    Ok(())
}
