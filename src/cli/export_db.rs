//! `countable export-db [FILE|-]`: dump the local database.

use std::path::PathBuf;

use crate::backup::Compress;
use crate::daily::export::{self, Format, Target};
use crate::environment::Local;
use crate::ui::Printer;

/// Dump the local database into FILE (default `<project>-<time>.dump`), or to stdout
/// with `-`. Custom format unless `--format plain`; the compression follows the file
/// name (.gz, .zst, .xz, .bz2, .lrz). `countable import-db FILE` restores it.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable export-db\n  countable export-db shop.dump.zst\n  countable export-db shop.sql.gz --format plain\n  countable export-db - | ssh elsewhere 'cat > shop.dump'"
)]
pub struct Args {
    /// The file to write, or `-` for stdout
    pub file: Option<PathBuf>,
    /// custom (pg_restore) or plain (SQL)
    #[arg(long, value_enum, default_value_t = Format::Custom)]
    pub format: Format,
    /// Compression, instead of what the file name says
    #[arg(long, value_enum)]
    pub compress: Option<Compress>,
    /// Replace FILE if it exists
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let file = args.file.unwrap_or_else(|| {
        export::default_name(
            local.project.compose_name(),
            args.format,
            time::OffsetDateTime::now_utc(),
        )
    });
    let target = Target::parse(&file);
    if target == Target::Stdout && args.json {
        return Err(crate::error::Hinted::new(
            "--json needs a FILE: stdout carries the dump",
            "name a file: `countable export-db shop.dump --json`",
        )
        .into());
    }
    let done = export::export(
        &mut local,
        printer,
        &target,
        args.format,
        args.compress,
        args.force,
    )
    .await?;
    if args.json {
        printer.data(&serde_json::to_string_pretty(&done)?);
    } else {
        printer.success(&export::describe(&done));
        if target != Target::Stdout {
            printer.note(&format!(
                "   restore it with: countable import-db {}",
                done.file
            ));
        }
    }
    Ok(())
}
