//! `countable pull-media [<env>]`: an environment's media (its bucket, its volume, or a
//! backup's media) into the local media volume, incrementally and resumably.

use crate::data;
use crate::environment::Local;
use crate::media::plan::{parse_size, Filter};
use crate::media::pull::{self, Options};
use crate::media::{MediaError, MediaSource, StoredMedia};
use crate::ui::Printer;

/// Copy an environment's media into the local media volume: only files the volume
/// lacks or has with another size or mtime move, each written with the source's mtime,
/// so a second run moves nothing. Files only the volume has are kept. Ctrl-C stops;
/// the same command resumes
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable pull-media                         from `data_from` (countable.yml)\n  countable pull-media prod --exclude 'thumbs/**' --exclude '*.webp'\n  countable pull-media prod --max-size 20M --jobs 16\n  countable pull-media prod --from-backup      the newest backup's media\n  countable pull-media prod --from-backup 2026-11-30T021500Z.backup\n  countable pull-media prod --dry-run          what would be copied, skipped, excluded"
)]
pub struct Args {
    /// The environment whose media to copy (default: `data_from`)
    pub env: Option<String>,
    /// Read a backup's media instead of the live media: the newest backup that has
    /// media, or the backup KEY (see `countable backups <env>`)
    #[arg(long, value_name = "KEY", num_args = 0..=1, default_missing_value = "")]
    pub from_backup: Option<String>,
    /// Leave out files whose path (below the media root) matches GLOB, e.g.
    /// `thumbs/**` or `*.webp` (`*` also matches `/`); repeatable
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Leave out files larger than SIZE (`20M`, `1G`, `512K`, bytes)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Files transferred at once from a bucket or a backup store (a volume is read as
    /// one stream)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Print a table of what would be copied, skipped, excluded and too big; write
    /// nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print what was done (or would be) as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, args.env.as_deref())?;
    let filter = Filter::new(&args.exclude, args.max_size)?;
    let (source, label) = match args.from_backup.as_deref() {
        Some(key) => {
            let store = data::store_of(&local, &env).await?;
            let key = Some(key).filter(|k| !k.is_empty());
            let stored = StoredMedia::find(&store, key)
                .await?
                .ok_or_else(|| MediaError::NoBackupMedia(store.location()))?;
            let label = format!("{}{}", store.location(), stored.manifest);
            (MediaSource::Backup(stored), label)
        }
        None => {
            let media = local.env_media_to_read(&env).await?;
            let label = format!(
                "{env}'s {}",
                media.describe().unwrap_or("media (none declared)")
            );
            (media.open().await?, label)
        }
    };
    let target = match local.media_target(printer, &env).await {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(e);
        }
    };
    let opts = Options {
        filter,
        jobs: args.jobs.into(),
        dry_run: args.dry_run,
        retry: retry_command(),
    };
    let pulled = pull::pull(&source, &label, &target, &opts, printer).await;
    source.close().await;
    pull::report(printer, &pulled?, args.json)
}

/// This very command line, to run again.
fn retry_command() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quoted =
        shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| args.join(" "));
    format!("countable {quoted}")
}
