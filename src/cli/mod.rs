//! The command line: clap definitions and one thin file per command. `main` parses,
//! runs, prints errors with their hints, and maps them to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error;
use crate::ui::Printer;

mod backup;
mod backups;
mod choices;
mod completions;
mod deploy;
mod doctor;
mod down;
mod exec;
mod export_db;
mod import_db;
mod init;
mod logs;
mod manage;
mod new;
mod open;
mod psql;
mod pull_db;
mod pull_media;
mod releases;
mod restore_args;
mod rollback;
mod secrets;
mod status;
mod sync;
mod undo_db;
mod undo_sync;
mod up;
mod verify_backup;

/// Environments for web projects that live in docker compose, the 12-factor way.
#[derive(Debug, Parser)]
#[command(
    name = "countable",
    version,
    propagate_version = true,
    after_long_help = "Examples:\n  countable new shop          scaffold a Django project in ./shop\n  cd shop && countable up     build, start and wait until healthy\n  countable status --json     what runs, as JSON\n  countable logs web -f       follow the app's log"
)]
pub struct Cli {
    /// Answer every prompt with its default (also implied without a terminal)
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Print only errors and data
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    New(new::Args),
    Init(init::Args),
    Up(up::Args),
    Down(down::Args),
    Status(status::Args),
    Logs(logs::Args),
    Exec(exec::Args),
    Manage(manage::Args),
    Shell(manage::ShellArgs),
    Psql(psql::Args),
    ExportDb(export_db::Args),
    Open(open::Args),
    Doctor(doctor::Args),
    PullDb(pull_db::Args),
    PullMedia(pull_media::Args),
    ImportDb(import_db::Args),
    UndoDb(undo_db::Args),
    Backups(backups::Args),
    Backup(backup::Args),
    VerifyBackup(verify_backup::Args),
    Deploy(deploy::Args),
    Releases(releases::Args),
    Rollback(rollback::Args),
    Sync(sync::Args),
    UndoSync(undo_sync::Args),
    Secrets(secrets::Args),
    Completions(completions::Args),
}

async fn run(cli: Cli, printer: &Printer) -> anyhow::Result<()> {
    match cli.command {
        Command::New(a) => new::run(a, printer),
        Command::Init(a) => init::run(a, printer),
        Command::Up(a) => up::run(a, printer).await,
        Command::Down(a) => down::run(a, printer),
        Command::Status(a) => status::run(a, printer).await,
        Command::Logs(a) => logs::run(a).await,
        Command::Exec(a) => exec::run(a).await,
        Command::Manage(a) => manage::run(a).await,
        Command::Shell(a) => manage::shell(a).await,
        Command::Psql(a) => psql::run(a, printer).await,
        Command::ExportDb(a) => export_db::run(a, printer).await,
        Command::Open(a) => open::run(a, printer).await,
        Command::Doctor(a) => doctor::run(a, printer).await,
        Command::PullDb(a) => pull_db::run(a, printer).await,
        Command::PullMedia(a) => pull_media::run(a, printer).await,
        Command::ImportDb(a) => import_db::run(a, printer).await,
        Command::UndoDb(a) => undo_db::run(a, printer).await,
        Command::Backups(a) => backups::run(a, printer).await,
        Command::Backup(a) => backup::run(a, printer).await,
        Command::VerifyBackup(a) => verify_backup::run(a, printer).await,
        Command::Deploy(a) => deploy::run(a, printer).await,
        Command::Releases(a) => releases::run(a, printer).await,
        Command::Rollback(a) => rollback::run(a, printer).await,
        Command::Sync(a) => sync::run(a, printer).await,
        Command::UndoSync(a) => undo_sync::run(a, printer).await,
        Command::Secrets(a) => secrets::run(a, printer).await,
        Command::Completions(a) => completions::run(a),
    }
}

/// Parse, run, report. Usage errors and failures exit 1; bugs (and panics) exit 2.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let printer = Printer::new(cli.yes, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run(cli, &printer))
    }));
    // A blocking read of stdin (import-db -) cannot be cancelled: do not wait for it.
    runtime.shutdown_background();
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            if let Some(error::PassThrough(code)) = err.downcast_ref() {
                return ExitCode::from(*code);
            }
            printer.error(&error::render(&err));
            ExitCode::from(error::exit_code(&err))
        }
        Err(_) => {
            printer.error(
                "error: countable crashed (a bug); please report it with the command you ran",
            );
            ExitCode::from(2)
        }
    }
}
